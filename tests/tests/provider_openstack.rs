//! The openstack provider plugin end to end: the real component built from
//! `plugins/providers/openstack`, installed over the API of a real
//! `bronzed` whose DMI comes from a fake sysfs, reading the metadata
//! service mock over loopback HTTP or a `config-2` drive directory.

use bronze_tests::mockcloud::openstack::{DEFAULT_META_DATA, DEFAULT_NETWORK_DATA, OpenStack};
use bronze_tests::mockcloud::{MockServer, Response, shared_fixture, skip_without_fixtures};
use bronze_tests::provider::MockedNode;
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::Ordering;

const PLUGIN: &str = "openstack";

fn grants(base: &str) -> String {
    format!(
        r#"config: true, facts: [dmi, links], volumes: [config-2], http: [{{ url: "{base}/openstack/latest/" }}, {{ url: "{base}/latest/meta-data/" }}]"#
    )
}

/// A node whose DMI product name is `product`, with a `config-2` drive
/// holding `drive`'s files when given, and one instance per `(id, mock)`.
async fn setup(product: &str, drive: Option<&OpenStack>, mocks: &[(&str, &MockServer)]) -> MockedNode {
    let vendor = if product == "OpenStack Nova" { "OpenStack Foundation" } else { "QEMU" };
    let dmi = [("sys_vendor", vendor), ("product_name", product)];
    MockedNode::start_with(PLUGIN, "os", &dmi, grants, mocks, |dir| match drive {
        Some(drive) => {
            let path = dir.join("config-2");
            drive.write_config_drive(&path).unwrap();
            vec!["--volume".to_string(), format!("config-2={}", path.display())]
        }
        None => Vec::new(),
    })
    .await
}

async fn mock(cloud: OpenStack) -> MockServer {
    MockServer::loopback(Arc::new(cloud)).await
}

/// The host escapes every provider string before keeping it, line breaks
/// of the raw network document included (`\\n`); undo that to compare.
fn unescaped(body: &Value) -> String {
    body.as_str().unwrap_or_default().replace("\\n", "\n")
}

fn check_default_instance(m: &Value) {
    assert_eq!(m["platform"], "openstack", "{m}");
    assert_eq!(m["instanceId"], "7c3e1f0a-5b2d-4e6f-8a9b-0c1d2e3f4a5b");
    assert_eq!(m["providerId"], "openstack:///7c3e1f0a-5b2d-4e6f-8a9b-0c1d2e3f4a5b");
    assert_eq!(m["hostname"], "bronze-os-1.novalocal");
    assert_eq!(m["zone"], "az-1");
    assert_eq!(m["tags"], json!({ "cluster": "bronze", "role": "worker" }));
    assert_eq!(m["nameservers"], json!(["192.0.2.53"]));
    assert_eq!(m["userDataBytes"], "#cloud-config\n".len());
    assert_eq!(m["networkConfig"]["format"], "openstack");
    assert_eq!(unescaped(&m["networkConfig"]["body"]), DEFAULT_NETWORK_DATA);
    let ifaces = m["interfaces"].as_array().unwrap();
    assert_eq!(ifaces.len(), 1, "{m}");
    let port = &ifaces[0];
    assert_eq!(port["mac"], "fa:16:3e:12:34:56");
    assert_eq!(port["mtu"], 1442);
    assert_eq!(port["addresses"], json!(["192.0.2.15/24", "2001:db8:42:0:f816:3eff:fe12:3456/64"]));
    assert_eq!(
        port["routes"],
        json!([{ "to": "0.0.0.0/0", "gateway": "192.0.2.1" }, { "to": "::/0", "gateway": "2001:db8:42::1" }])
    );
    assert_eq!(port["dhcp"], json!([{ "family": "ipv6", "skipHostname": true }]));
}

#[tokio::test]
async fn the_metadata_service_gives_identity_network_and_user_data() {
    let server = mock(OpenStack::new()).await;
    let s = setup("OpenStack Nova", None, &[("openstack", &server)]).await;
    let got = s.result("openstack").await;
    assert_eq!(got["detected"], true, "{got}");
    let m = &got["fetch"]["ok"];
    check_default_instance(m);
    assert_eq!(m["instanceType"], "m1.small");
    assert_eq!(m["publicIpv4"], json!(["203.0.113.15"]));
    assert_eq!(m["externalIps"], json!(["203.0.113.15"]));
    assert_eq!(
        server.hits(),
        [
            "GET /openstack/latest/meta_data.json",
            "GET /openstack/latest/network_data.json",
            "GET /openstack/latest/user_data",
            "GET /latest/meta-data/public-ipv4",
            "GET /latest/meta-data/instance-type",
        ]
    );
}

#[tokio::test]
async fn a_config_drive_is_detected_and_read_without_any_request() {
    let server = mock(OpenStack::new()).await;
    let s = setup("Standard PC (Q35 + ICH9, 2009)", Some(&OpenStack::new()), &[("openstack", &server)]).await;
    let got = s.result("openstack").await;
    assert_eq!(got["detected"], true, "the config-2 drive alone says OpenStack: {got}");
    let m = &got["fetch"]["ok"];
    check_default_instance(m);
    assert!(m["instanceType"].is_null() && m["publicIpv4"] == json!([]), "a drive has no EC2 values: {m}");
    assert!(server.hits().is_empty(), "{:?}", server.hits());
}

#[tokio::test]
async fn other_platforms_are_not_detected_and_nothing_is_asked() {
    let server = mock(OpenStack::new()).await;
    let s = setup("Standard PC (Q35 + ICH9, 2009)", None, &[("openstack", &server)]).await;
    let got = s.result("openstack").await;
    assert_eq!(got["detected"], false, "{got}");
    assert!(got["fetch"].is_null(), "{got}");
    assert!(server.hits().is_empty(), "{:?}", server.hits());
}

#[tokio::test]
async fn hostile_answers_are_refused_with_the_field_named_or_retried() {
    let with = |meta: &str, network: &str| OpenStack::from_documents(meta, Some(network));
    let bad_json = mock(with("{\"uuid\": ", DEFAULT_NETWORK_DATA)).await;
    let no_uuid = mock(with("{\"hostname\": \"x\"}", DEFAULT_NETWORK_DATA)).await;
    let bad_mask = mock(with(DEFAULT_META_DATA, &DEFAULT_NETWORK_DATA.replace("255.255.255.0", "255.0.255.0"))).await;
    let bad_link =
        mock(with(DEFAULT_META_DATA, &DEFAULT_NETWORK_DATA.replace("\"link\": \"tap1a", "\"link\": \"nope"))).await;
    let bad_type =
        mock(with(DEFAULT_META_DATA, &DEFAULT_NETWORK_DATA.replace("\"ipv4\", \"link\"", "\"ipx\", \"link\""))).await;
    let long_name = mock(with(&DEFAULT_META_DATA.replace("bronze-os-1.novalocal", &"x".repeat(10_000)), "{}")).await;
    let flaky = mock(OpenStack::new()).await;
    flaky.faults.fail_next.store(5, Ordering::SeqCst);
    let huge = mock(OpenStack::new()).await;
    huge.faults.huge.store(true, Ordering::SeqCst);
    let mut no_network = OpenStack::new();
    no_network.docs.insert("/openstack/latest/network_data.json", Response::not_found());
    let no_network = mock(no_network).await;
    let s = setup(
        "OpenStack Nova",
        None,
        &[
            ("bad-json", &bad_json),
            ("no-uuid", &no_uuid),
            ("bad-mask", &bad_mask),
            ("bad-link", &bad_link),
            ("bad-type", &bad_type),
            ("long-name", &long_name),
            ("flaky", &flaky),
            ("huge", &huge),
            ("no-network", &no_network),
        ],
    )
    .await;
    let error = |v: &Value| (v["fetch"]["error"].as_str().unwrap_or("").to_string(), v["fetch"]["message"].to_string());
    for (id, words) in [
        ("bad-json", &["meta_data.json", "invalid JSON"][..]),
        ("no-uuid", &["meta_data.json", "uuid"][..]),
        ("bad-mask", &["network_data.json", "netmask", "255.0.255.0"][..]),
        ("bad-link", &["network_data.json", "nope", "not in links"][..]),
        ("bad-type", &["network_data.json", "ipx"][..]),
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
    assert_eq!(s.result("flaky").await["fetch"]["ok"]["hostname"], "bronze-os-1.novalocal");
    let (kind, message) = error(&s.result("huge").await);
    assert!(kind == "unavailable" || kind == "invalid", "{kind}: {message}");
    assert!(message.contains("larger than") || message.contains("too large"), "{message}");
    // network_data.json is optional (old clouds): identity still comes.
    let got = s.result("no-network").await;
    assert_eq!(got["fetch"]["ok"]["interfaces"], json!([]), "{got}");
    assert!(got["fetch"]["ok"]["networkConfig"].is_null(), "{got}");
}

/// Talos's test links (the document's MACs are upper case).
const TALOS_LINKS: &[(&str, &str)] = &[
    ("eth0", "a4:bf:00:10:20:30"),
    ("eth1", "a4:bf:00:10:20:31"),
    ("eth2", "a4:bf:00:10:20:33"),
    ("eth3", "4c:d9:8f:b3:34:f8"),
    ("eth4", "4c:d9:8f:b3:34:f7"),
];

/// Every difference from Talos's expected output, and why (see
/// docs/platforms/openstack.md).
const DOCUMENTED: &[&str] = &[
    // Talos's DHCP operators carry its default metrics (1024 / 2048).
    "operators: dhcp4 on bond0.100: talos routeMetric 1024 bronze none",
    "operators: dhcp4 on eth0: talos routeMetric 1024 bronze none",
    "operators: dhcp6 on eth2: talos routeMetric 2048 bronze none",
    // Talos keeps only the top-level dns services; Bronze also keeps each
    // network's (cloud-init does too).
    "resolvers.dnsServers: bronze has 2000:0:100::1, talos does not",
    "resolvers.dnsServers: bronze has 8.8.4.4, talos does not",
    // Talos fills its default metrics; the document has none.
    "routes: 0.0.0.0/0 via 10.184.0.1 on eth1: talos metric 1024 bronze none",
    "routes: 0.0.0.0/0 via 94.156.45.1 on bond0: talos metric 1024 bronze none",
    "routes: 192.168.0.0/16 via 10.184.0.1 on eth1: talos metric 1024 bronze none",
    "routes: 2000:0:100:2f00::/58 via 2000:0:100:2fff:ff:ff:ff:f0 on eth0: talos metric 1024 bronze none",
    "routes: ::/0 via 2000:0:100:2fff:ff:ff:ff:ff on eth0: talos metric 2048 bronze none",
    "routes: ::/0 via fd00::1 on eth1: talos metric 2048 bronze none",
];

#[tokio::test]
async fn conformance_with_talos() {
    let (Some(meta), Some(network), Some(expected)) = (
        shared_fixture("openstack", "talos-metadata.json"),
        shared_fixture("openstack", "talos-network.json"),
        shared_fixture("openstack", "talos-expected.yaml"),
    ) else {
        skip_without_fixtures("provider_openstack::conformance_with_talos");
        return;
    };
    let meta = std::fs::read_to_string(meta).unwrap();
    let network = std::fs::read_to_string(network).unwrap();
    let mut cloud = OpenStack::from_documents(&meta, Some(&network));
    // Talos's test: external IP 1.2.3.4.
    cloud.docs.insert("/latest/meta-data/public-ipv4", Response::text("1.2.3.4"));
    let server = mock(cloud).await;
    let s = setup("OpenStack Nova", None, &[("openstack", &server)]).await;
    let got = s.result("openstack").await;
    let ours = &got["fetch"]["ok"];
    assert!(ours.is_object(), "{got}");
    assert_eq!(unescaped(&ours["networkConfig"]["body"]), network, "the raw document is passed on");
    let expected = bronze_tests::talos::expected(&expected).unwrap();
    let differences = bronze_tests::talos::compare(&expected, ours, TALOS_LINKS);
    assert_eq!(differences, DOCUMENTED, "\nours: {ours:#}");
}

/// The unchanged plugin against the cloud's real address: in a network
/// namespace 169.254.169.254 is a local address served by `mockcloud
/// --cloud openstack` on port 80, bronzed runs there with DMI product_name =
/// `OpenStack Nova`, and the instance has no config and exactly the manifest's
/// `[grants]` (what the image's built-in instance runs with). None (and a
/// loud line) where namespaces cannot be made.
async fn real_endpoint() -> Option<Value> {
    bronze_tests::provider::real_endpoint(PLUGIN, &[("product_name", "OpenStack Nova")]).await
}

#[tokio::test]
async fn the_unchanged_plugin_reads_the_real_endpoint_with_the_manifest_grants() {
    let Some(got) = real_endpoint().await else { return };
    assert_eq!(got["detected"], true, "{got}");
    let m = &got["fetch"]["ok"];
    assert_eq!(m["providerId"], "openstack:///7c3e1f0a-5b2d-4e6f-8a9b-0c1d2e3f4a5b", "{got}");
    // The EC2-style values come through the second granted prefix.
    assert_eq!(m["instanceType"], "m1.small", "{got}");
    assert_eq!(m["externalIps"], json!(["203.0.113.15"]), "{got}");
}
