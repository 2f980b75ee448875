//! The upcloud provider plugin end to end: the real component built from
//! `plugins/providers/upcloud`, installed over the API of a real `bronzed`
//! whose DMI comes from a fake sysfs, fetching from the UpCloud mock over
//! loopback HTTP.

use bronze_tests::mockcloud::upcloud::{DEFAULT_DOCUMENT, UpCloud};
use bronze_tests::mockcloud::{MockServer, shared_fixture, skip_without_fixtures};
use bronze_tests::provider::MockedNode;
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::Ordering;

const PLUGIN: &str = "upcloud";

fn grants(base: &str) -> String {
    format!(
        r#"config: true, facts: [dmi, links], http: [{{ url: "{base}/metadata/v1.json" }}, {{ url: "{base}/metadata/v1/user_data" }}]"#
    )
}

async fn setup(sys_vendor: &str, mocks: &[(&str, &MockServer)]) -> MockedNode {
    MockedNode::start(PLUGIN, "upcloud", &[("sys_vendor", sys_vendor), ("product_name", "Cloud Server")], grants, mocks)
        .await
}

async fn mock(cloud: UpCloud) -> MockServer {
    MockServer::loopback(Arc::new(cloud)).await
}

#[tokio::test]
async fn a_server_reports_identity_addresses_dhcp_and_user_data() {
    let server = mock(UpCloud::new()).await;
    let s = setup("UpCloud", &[("upcloud", &server)]).await;
    let got = s.result("upcloud").await;
    assert_eq!(got["detected"], true, "{got}");
    let m = &got["fetch"]["ok"];
    assert_eq!(m["platform"], "upcloud", "{got}");
    assert_eq!(m["hostname"], "bronze-upcloud-1");
    assert_eq!(m["instanceId"], "00aabbcc-1111-4222-8333-444455556666");
    assert_eq!(m["providerId"], "upcloud://00aabbcc-1111-4222-8333-444455556666");
    assert_eq!(m["region"], "de-fra1");
    assert_eq!(m["tags"], json!({ "bronze": "" }));
    assert_eq!(m["nameservers"], json!(["198.51.100.53", "198.51.100.54", "2001:db8:53::1"]));
    assert_eq!(m["publicIpv4"], json!(["198.51.100.20"]));
    assert_eq!(m["privateIpv4"], json!(["10.6.0.5"]));
    assert_eq!(m["publicIpv6"], json!(["2001:db8:8000:1000:0:aaaa:bbbb:cccc"]));
    assert_eq!(m["externalIps"], json!(["198.51.100.20", "2001:db8:8000:1000:0:aaaa:bbbb:cccc"]));
    assert_eq!(m["attributes"]["floating-ip"], "198.51.100.99");
    assert_eq!(m["userDataBytes"], "#cloud-config\n".len());
    let ifaces = m["interfaces"].as_array().unwrap();
    assert_eq!(ifaces.len(), 3, "{m}");
    assert_eq!(ifaces[0]["mac"], "5e:bf:5e:aa:00:01");
    assert_eq!(ifaces[0]["addresses"], json!(["198.51.100.99/32"]), "the floating IP only; DHCP gives the rest");
    assert_eq!(ifaces[0]["dhcp"], json!([{ "family": "ipv4" }]));
    assert_eq!(ifaces[1]["dhcp"], json!([{ "family": "ipv4" }]));
    assert_eq!(ifaces[2]["addresses"], json!(["2001:db8:8000:1000:0:aaaa:bbbb:cccc/64"]));
    assert_eq!(ifaces[2]["routes"], json!([{ "to": "::/0", "gateway": "2001:db8:8000:1000::1" }]));
    assert_eq!(server.hits(), ["GET /metadata/v1.json", "GET /metadata/v1/user_data"]);
}

#[tokio::test]
async fn other_vendors_are_not_detected_and_nothing_is_asked() {
    let server = mock(UpCloud::new()).await;
    let s = setup("QEMU", &[("upcloud", &server)]).await;
    let got = s.result("upcloud").await;
    assert_eq!(got["detected"], false, "{got}");
    assert!(got["fetch"].is_null(), "{got}");
    assert!(server.hits().is_empty(), "{:?}", server.hits());
}

#[tokio::test]
async fn hostile_answers_are_refused_with_the_field_named_or_retried() {
    let with = |doc: &str| UpCloud::from_document(doc);
    let bad_json = mock(with("{\"instance_id\": ")).await;
    let wrong_family = mock(with(&DEFAULT_DOCUMENT.replace("\"family\": \"IPv6\"", "\"family\": \"IPv4\""))).await;
    let bad_network =
        mock(with(&DEFAULT_DOCUMENT.replace("2001:db8:8000:1000::/64", "2001:db8:8000:1000::/129"))).await;
    let bad_dns = mock(with(&DEFAULT_DOCUMENT.replace("\"2001:db8:53::1\"", "\"ns1.example\""))).await;
    let long_name = mock(with(&DEFAULT_DOCUMENT.replace("bronze-upcloud-1", &"x".repeat(10_000)))).await;
    let many = {
        let iface = r#"{"index": 1, "mac": "5e:bf:5e:aa:00:01", "type": "private", "ip_addresses": []}"#;
        let list = vec![iface; 10_000].join(",");
        mock(with(&format!(r#"{{"instance_id": "x", "network": {{"interfaces": [{list}]}}}}"#))).await
    };
    let flaky = mock(UpCloud::new()).await;
    flaky.faults.fail_next.store(5, Ordering::SeqCst);
    let huge = mock(UpCloud::new()).await;
    huge.faults.huge.store(true, Ordering::SeqCst);
    let s = setup(
        "UpCloud",
        &[
            ("bad-json", &bad_json),
            ("wrong-family", &wrong_family),
            ("bad-network", &bad_network),
            ("bad-dns", &bad_dns),
            ("long-name", &long_name),
            ("many", &many),
            ("flaky", &flaky),
            ("huge", &huge),
        ],
    )
    .await;
    let error = |v: &Value| (v["fetch"]["error"].as_str().unwrap_or("").to_string(), v["fetch"]["message"].to_string());
    for (id, words) in [
        ("bad-json", &["/metadata/v1.json", "invalid JSON"][..]),
        ("wrong-family", &["interfaces[2].ip_addresses[0]", "family"][..]),
        ("bad-network", &["interfaces[2].ip_addresses[0].network"][..]),
        ("bad-dns", &["ns1.example"][..]),
        ("long-name", &["hostname"][..]),
        ("many", &["10000 interfaces"][..]),
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
    assert_eq!(s.result("flaky").await["fetch"]["ok"]["region"], "de-fra1");
    let (kind, message) = error(&s.result("huge").await);
    assert!(kind == "unavailable" || kind == "invalid", "{kind}: {message}");
    assert!(message.contains("larger than") || message.contains("too large"), "{message}");
}

/// Talos names the interfaces by their index: eth0, eth1, eth2.
const TALOS_LINKS: &[(&str, &str)] =
    &[("eth0", "5e:bf:5e:02:28:07"), ("eth1", "5e:bf:5e:02:cd:e0"), ("eth2", "5e:bf:5e:02:78:a4")];

/// Every difference from Talos's expected output, and why (see
/// docs/platforms/upcloud.md).
const DOCUMENTED: &[&str] = &[
    // Talos's default DHCP route metric; the document has none.
    "operators: dhcp4 on eth0: talos routeMetric 1024 bronze none",
    "operators: dhcp4 on eth1: talos routeMetric 1024 bronze none",
    // The static IPv6 address's gateway: Bronze makes it the default route;
    // Talos routes only the address's own /64 through it, so the server has
    // no IPv6 default route unless a router advertisement brings one.
    "routes: bronze has ::/0 via 2a04:3544:8000:1000::1 on eth2, talos does not",
    "routes: talos has 2a04:3544:8000:1000::/64 via 2a04:3544:8000:1000::1 on eth2 metric 1024, bronze does not",
];

#[tokio::test]
async fn conformance_with_talos() {
    let (Some(document), Some(expected)) =
        (shared_fixture("upcloud", "talos-metadata.json"), shared_fixture("upcloud", "talos-expected.yaml"))
    else {
        skip_without_fixtures("provider_upcloud::conformance_with_talos");
        return;
    };
    let server = mock(UpCloud::from_document(&std::fs::read_to_string(document).unwrap())).await;
    let s = setup("UpCloud", &[("upcloud", &server)]).await;
    let got = s.result("upcloud").await;
    let ours = &got["fetch"]["ok"];
    assert!(ours.is_object(), "{got}");
    let expected = bronze_tests::talos::expected(&expected).unwrap();
    let differences = bronze_tests::talos::compare(&expected, ours, TALOS_LINKS);
    assert_eq!(differences, DOCUMENTED, "\nours: {ours:#}");
}

/// The unchanged plugin against the cloud's real address: in a network
/// namespace 169.254.169.254 is a local address served by `mockcloud
/// --cloud upcloud` on port 80, bronzed runs there with DMI sys_vendor =
/// `UpCloud`, and the instance has no config and exactly the manifest's
/// `[grants]` (what the image's built-in instance runs with). None (and a
/// loud line) where namespaces cannot be made.
async fn real_endpoint() -> Option<Value> {
    bronze_tests::provider::real_endpoint(PLUGIN, &[("sys_vendor", "UpCloud")]).await
}

#[tokio::test]
async fn the_unchanged_plugin_reads_the_real_endpoint_with_the_manifest_grants() {
    let Some(got) = real_endpoint().await else { return };
    assert_eq!(got["detected"], true, "{got}");
    assert_eq!(got["fetch"]["ok"]["providerId"], "upcloud://00aabbcc-1111-4222-8333-444455556666", "{got}");
    assert_eq!(got["fetch"]["ok"]["userDataBytes"], "#cloud-config\n".len(), "{got}");
}
