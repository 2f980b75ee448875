//! The hetzner provider plugin end to end: the real component built from
//! `plugins/providers/hetzner`, installed over the API of a real `bronzed`
//! whose DMI comes from a fake sysfs, fetching from the Hetzner Cloud mock
//! over loopback HTTP.

use bronze_tests::mockcloud::hetzner::{Hetzner, Values};
use bronze_tests::mockcloud::{MockServer, Response, shared_fixture, skip_without_fixtures};
use bronze_tests::provider::MockedNode;
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::Ordering;

const PLUGIN: &str = "hetzner";

fn grants(base: &str) -> String {
    format!(r#"config: true, facts: [dmi, links], http: [{{ url: "{base}/hetzner/v1/" }}]"#)
}

async fn setup(sys_vendor: &str, mocks: &[(&str, &MockServer)]) -> MockedNode {
    MockedNode::start(PLUGIN, "hcloud", &[("sys_vendor", sys_vendor), ("product_name", "vServer")], grants, mocks).await
}

async fn mock(cloud: Hetzner) -> MockServer {
    MockServer::loopback(Arc::new(cloud)).await
}

#[tokio::test]
async fn a_server_reports_identity_zone_network_and_user_data() {
    let server = mock(Hetzner::new()).await;
    let s = setup("Hetzner", &[("hetzner", &server)]).await;
    let got = s.result("hetzner").await;
    assert_eq!(got["detected"], true, "{got}");
    let m = &got["fetch"]["ok"];
    assert_eq!(m["platform"], "hetzner", "{got}");
    assert_eq!(m["hostname"], "bronze-hetzner-1");
    assert_eq!(m["instanceId"], "41234567");
    assert_eq!(m["providerId"], "hcloud://41234567");
    assert_eq!(m["zone"], "fsn1-dc14");
    assert_eq!(m["region"], "fsn1", "the zone before its first '-'");
    assert_eq!(m["attributes"]["network-zone"], "eu-central");
    assert_eq!(m["publicIpv4"], json!(["203.0.113.44"]));
    assert_eq!(m["publicIpv6"], json!(["2001:db8:f0:1::1"]));
    assert_eq!(m["externalIps"], json!(["203.0.113.44", "2001:db8:f0:1::1"]));
    assert_eq!(m["nameservers"], json!(["185.12.64.2", "185.12.64.1"]));
    assert_eq!(m["networkConfig"]["format"], "cloud-init-v1");
    assert_eq!(m["userDataBytes"], "#cloud-config\n".len());
    let ifaces = m["interfaces"].as_array().unwrap();
    assert_eq!(ifaces.len(), 1, "{m}");
    assert_eq!(ifaces[0]["mac"], "96:00:02:aa:bb:cc");
    assert_eq!(ifaces[0]["addresses"], json!(["2001:db8:f0:1::1/64"]));
    assert_eq!(ifaces[0]["routes"], json!([{ "to": "::/0", "gateway": "fe80::1" }]));
    assert_eq!(ifaces[0]["dhcp"], json!([{ "family": "ipv4" }]));
    assert_eq!(
        server.hits(),
        ["GET /hetzner/v1/metadata", "GET /hetzner/v1/metadata/network-config", "GET /hetzner/v1/userdata"]
    );
}

#[tokio::test]
async fn other_vendors_are_not_detected_and_nothing_is_asked() {
    let server = mock(Hetzner::new()).await;
    let s = setup("QEMU", &[("hetzner", &server)]).await;
    let got = s.result("hetzner").await;
    assert_eq!(got["detected"], false, "{got}");
    assert!(got["fetch"].is_null(), "{got}");
    assert!(server.hits().is_empty(), "{:?}", server.hits());
}

#[tokio::test]
async fn user_data_plain_or_base64_and_hostile_answers() {
    let with_user_data = |bytes: &[u8]| Hetzner::with(Values { user_data: Some(bytes.to_vec()), ..Values::default() });
    // The repo's own: a base64 body (with a line break, as `base64` wraps).
    let plain = b"version: v1alpha1\nmachine:\n  type: worker\n";
    let own_b64 = mock(with_user_data(b"dmVyc2lvbjogdjFhbHBoYTEKbWFjaGluZToKICB0eXBlOiB3b3Jr\nZXIK\n")).await;
    let own_plain = mock(with_user_data(plain)).await;
    let none = mock(Hetzner::with(Values { user_data: None, ..Values::default() })).await;
    let mut bad_yaml = Hetzner::new();
    bad_yaml.docs.insert("/hetzner/v1/metadata", Response::text("hostname: [unclosed\n"));
    let bad_yaml = mock(bad_yaml).await;
    let bad_network = mock(Hetzner::with(Values {
        network_config: "version: 1\nconfig:\n- type: physical\n  name: eth0\n  mac_address: 96:00:00:zz:2:3\n".into(),
        ..Values::default()
    }))
    .await;
    let long_name = mock(Hetzner::with(Values { hostname: "x".repeat(10_000), ..Values::default() })).await;
    let flaky = mock(Hetzner::new()).await;
    flaky.faults.fail_next.store(5, Ordering::SeqCst);
    let huge = mock(Hetzner::new()).await;
    huge.faults.huge.store(true, Ordering::SeqCst);
    let trickle = mock(Hetzner::new()).await;
    trickle.faults.trickle.store(true, Ordering::SeqCst);
    let s = setup(
        "Hetzner",
        &[
            ("own-b64", &own_b64),
            ("own-plain", &own_plain),
            ("none", &none),
            ("bad-yaml", &bad_yaml),
            ("bad-network", &bad_network),
            ("long-name", &long_name),
            ("flaky", &flaky),
            ("huge", &huge),
            ("trickle", &trickle),
        ],
    )
    .await;
    assert_eq!(s.result("own-b64").await["fetch"]["ok"]["userDataBytes"], plain.len());
    assert_eq!(s.result("own-plain").await["fetch"]["ok"]["userDataBytes"], plain.len());
    let got = s.result("none").await;
    assert!(got["fetch"]["ok"].is_object() && got["fetch"]["ok"]["userDataBytes"].is_null(), "{got}");

    let error = |v: &Value| (v["fetch"]["error"].as_str().unwrap_or("").to_string(), v["fetch"]["message"].to_string());
    for (id, words) in [
        ("bad-yaml", &["/hetzner/v1/metadata", "not YAML"][..]),
        ("bad-network", &["network-config", "config[0].mac_address"][..]),
        ("long-name", &["hostname"][..]),
    ] {
        let (kind, message) = error(&s.result(id).await);
        assert_eq!(kind, "invalid", "{id}: {message}");
        assert!(words.iter().all(|w| message.contains(w)), "{id}: {message}");
    }
    for _ in 0..5 {
        let (kind, message) = error(&s.result("flaky").await);
        assert_eq!(kind, "unavailable", "{message}");
        assert!(message.contains("503"), "{message}");
    }
    assert_eq!(s.result("flaky").await["fetch"]["ok"]["instanceId"], "41234567");
    let (kind, message) = error(&s.result("huge").await);
    assert!(kind == "unavailable" || kind == "invalid", "{kind}: {message}");
    assert!(message.contains("larger than") || message.contains("too large"), "{message}");
    // One byte a second: the request's timeout ends it, well inside the
    // plugin's 10 s deadline, and the host retries later.
    let started = std::time::Instant::now();
    let (kind, message) = error(&s.result("trickle").await);
    assert_eq!(kind, "unavailable", "{message}");
    assert!(message.contains("timed out"), "{message}");
    assert!(started.elapsed() < std::time::Duration::from_secs(8), "{:?}", started.elapsed());
}

/// Every difference from Talos's expected output, and why (see
/// docs/platforms/hetzner.md).
const DOCUMENTED: &[&str] = &[
    // Bronze's platform names are the plugin ids; Talos says "hcloud".
    r#"metadata.platform: talos "hcloud" bronze "hetzner""#,
    // Talos's default metric on the DHCP operator and the static route.
    "operators: dhcp4 on eth0: talos routeMetric 1024 bronze none",
    // Talos drops the network config's nameserver entry; Bronze keeps it.
    "resolvers.dnsServers: bronze has 185.12.64.1, talos does not",
    "resolvers.dnsServers: bronze has 185.12.64.2, talos does not",
    "routes: ::/0 via fe80::1 on eth0: talos metric 1024 bronze none",
];

#[tokio::test]
async fn conformance_with_talos() {
    let (Some(network), Some(expected), Some(plain), Some(b64)) = (
        shared_fixture("hetzner", "talos-metadata.yaml"),
        shared_fixture("hetzner", "talos-expected.yaml"),
        shared_fixture("hetzner", "talos-userdata-plain.yaml"),
        shared_fixture("hetzner", "talos-userdata-base64.txt"),
    ) else {
        skip_without_fixtures("provider_hetzner::conformance_with_talos");
        return;
    };
    let plain = std::fs::read(plain).unwrap();
    // Talos's instance values (fixtures README).
    let talos = |user_data: Vec<u8>| Values {
        hostname: "talos.fqdn".into(),
        instance_id: "0".into(),
        availability_zone: "hel1-dc2".into(),
        region: "eu-central".into(),
        public_ipv4: "1.2.3.4".into(),
        network_config: std::fs::read_to_string(&network).unwrap(),
        user_data: Some(user_data),
    };
    let with_plain = mock(Hetzner::with(talos(plain.clone()))).await;
    let with_b64 = mock(Hetzner::with(talos(std::fs::read(b64).unwrap()))).await;
    let s = setup("Hetzner", &[("plain", &with_plain), ("b64", &with_b64)]).await;
    let got = s.result("plain").await;
    let ours = &got["fetch"]["ok"];
    assert!(ours.is_object(), "{got}");
    assert_eq!(ours["userDataBytes"], plain.len());
    // The base64 user data decodes to the same config.
    assert_eq!(s.result("b64").await["fetch"]["ok"]["userDataBytes"], plain.len());
    // The document's MAC 96:00:00:1:2:3 comes back padded.
    assert_eq!(ours["interfaces"][0]["mac"], "96:00:00:01:02:03");
    let expected = bronze_tests::talos::expected(&expected).unwrap();
    let differences = bronze_tests::talos::compare(&expected, ours, &[("eth0", "96:00:00:01:02:03")]);
    assert_eq!(differences, DOCUMENTED, "\nours: {ours:#}");
}

/// The unchanged plugin against the cloud's real address: in a network
/// namespace 169.254.169.254 is a local address served by `mockcloud
/// --cloud hetzner` on port 80, bronzed runs there with DMI sys_vendor =
/// `Hetzner`, and the instance has no config and exactly the manifest's
/// `[grants]` (what the image's built-in instance runs with). None (and a
/// loud line) where namespaces cannot be made.
async fn real_endpoint() -> Option<Value> {
    bronze_tests::provider::real_endpoint(PLUGIN, &[("sys_vendor", "Hetzner")]).await
}

#[tokio::test]
async fn the_unchanged_plugin_reads_the_real_endpoint_with_the_manifest_grants() {
    let Some(got) = real_endpoint().await else { return };
    assert_eq!(got["detected"], true, "{got}");
    assert_eq!(got["fetch"]["ok"]["providerId"], "hcloud://41234567", "{got}");
    assert_eq!(got["fetch"]["ok"]["userDataBytes"], "#cloud-config\n".len(), "{got}");
}
