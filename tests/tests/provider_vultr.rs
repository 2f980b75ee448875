//! The vultr provider plugin end to end: the real component built from
//! `plugins/providers/vultr`, installed over the API of a real `bronzed`
//! whose DMI comes from a fake sysfs, fetching from the Vultr mock over
//! loopback HTTP.

use bronze_tests::mockcloud::vultr::{DEFAULT_DOCUMENT, Vultr};
use bronze_tests::mockcloud::{MockServer, shared_fixture, skip_without_fixtures};
use bronze_tests::provider::MockedNode;
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::Ordering;

const PLUGIN: &str = "vultr";

fn grants(base: &str) -> String {
    format!(
        r#"config: true, facts: [dmi, links], http: [{{ url: "{base}/v1.json" }}, {{ url: "{base}/latest/meta-data/public-ipv4" }}, {{ url: "{base}/latest/user-data" }}]"#
    )
}

async fn setup(sys_vendor: &str, mocks: &[(&str, &MockServer)]) -> MockedNode {
    MockedNode::start(PLUGIN, "vultr", &[("sys_vendor", sys_vendor), ("product_name", "VC2")], grants, mocks).await
}

async fn mock(cloud: Vultr) -> MockServer {
    MockServer::loopback(Arc::new(cloud)).await
}

#[tokio::test]
async fn an_instance_reports_identity_addresses_routes_and_user_data() {
    let server = mock(Vultr::new()).await;
    let s = setup("Vultr", &[("vultr", &server)]).await;
    let got = s.result("vultr").await;
    assert_eq!(got["detected"], true, "{got}");
    let m = &got["fetch"]["ok"];
    assert_eq!(m["platform"], "vultr", "{got}");
    assert_eq!(m["hostname"], "bronze-vultr-1");
    assert_eq!(m["instanceId"], "5f1c3a52-8c4e-4f7a-9d21-0b6e1f9a7c33");
    assert_eq!(m["providerId"], "vultr://5f1c3a52-8c4e-4f7a-9d21-0b6e1f9a7c33");
    assert_eq!(m["attributes"]["instanceid"], "61234567");
    assert_eq!(m["region"], "FRA");
    assert_eq!(m["tags"], json!({ "bronze": "", "test": "" }));
    assert_eq!(m["publicIpv4"], json!(["203.0.113.10"]));
    assert_eq!(m["privateIpv4"], json!(["10.8.96.4"]));
    assert_eq!(m["publicIpv6"], json!(["2001:db8:5001:2095::10"]));
    assert_eq!(m["externalIps"], json!(["203.0.113.10", "2001:db8:5001:2095::10"]));
    assert_eq!(m["userDataBytes"], "#cloud-config\n".len());
    let ifaces = m["interfaces"].as_array().unwrap();
    assert_eq!(ifaces.len(), 2, "{m}");
    assert_eq!(ifaces[0]["mac"], "56:00:04:aa:bb:01");
    assert_eq!(ifaces[0]["addresses"], json!(["203.0.113.10/23", "203.0.113.77/32"]));
    assert_eq!(ifaces[0]["routes"], json!([{ "to": "0.0.0.0/0", "gateway": "203.0.113.1" }]));
    assert!(ifaces[0]["mtu"].is_null(), "{m}");
    assert_eq!(ifaces[1]["addresses"], json!(["10.8.96.4/20"]));
    assert_eq!(ifaces[1]["routes"], json!([]));
    assert_eq!(ifaces[1]["mtu"], 1450, "the VPC's MTU");
    assert_eq!(server.hits(), ["GET /v1.json", "GET /latest/meta-data/public-ipv4", "GET /latest/user-data"]);
}

#[tokio::test]
async fn other_vendors_are_not_detected_and_nothing_is_asked() {
    let server = mock(Vultr::new()).await;
    let s = setup("QEMU", &[("vultr", &server)]).await;
    let got = s.result("vultr").await;
    assert_eq!(got["detected"], false, "{got}");
    assert!(got["fetch"].is_null(), "{got}");
    assert!(server.hits().is_empty(), "{:?}", server.hits());
}

#[tokio::test]
async fn hostile_answers_are_refused_with_the_field_named_or_retried() {
    let with = |doc: &str| Vultr::from_document(doc);
    let bad_json = mock(with("{\"hostname\": ")).await;
    let wrong_type = mock(with(&DEFAULT_DOCUMENT.replace("\"interfaces\": [", "\"interfaces\": 7, \"x\": ["))).await;
    let bad_mask = mock(with(&DEFAULT_DOCUMENT.replace("255.255.254.0", "255.0.255.0"))).await;
    let bad_mac = mock(with(&DEFAULT_DOCUMENT.replace("56:00:04:aa:bb:01", "56:00:04:aa:bb"))).await;
    let long_name = mock(with(&DEFAULT_DOCUMENT.replace("bronze-vultr-1", &"x".repeat(10_000)))).await;
    let no_id = mock(with("{\"hostname\": \"h\"}")).await;
    let flaky = mock(Vultr::new()).await;
    flaky.faults.fail_next.store(5, Ordering::SeqCst);
    let huge = mock(Vultr::new()).await;
    huge.faults.huge.store(true, Ordering::SeqCst);
    let s = setup(
        "Vultr",
        &[
            ("bad-json", &bad_json),
            ("wrong-type", &wrong_type),
            ("bad-mask", &bad_mask),
            ("bad-mac", &bad_mac),
            ("long-name", &long_name),
            ("no-id", &no_id),
            ("flaky", &flaky),
            ("huge", &huge),
        ],
    )
    .await;
    let error = |v: &Value| (v["fetch"]["error"].as_str().unwrap_or("").to_string(), v["fetch"]["message"].to_string());
    for (id, words) in [
        ("bad-json", &["/v1.json", "invalid JSON"][..]),
        ("wrong-type", &["/v1.json", "invalid type"][..]),
        ("bad-mask", &["interfaces[0].ipv4", "255.0.255.0"][..]),
        ("bad-mac", &["interfaces[0].mac"][..]),
        ("long-name", &["hostname"][..]),
        ("no-id", &["instance-v2-id"][..]),
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
    assert_eq!(s.result("flaky").await["fetch"]["ok"]["region"], "FRA");
    let (kind, message) = error(&s.result("huge").await);
    assert!(kind == "unavailable" || kind == "invalid", "{kind}: {message}");
    assert!(message.contains("larger than") || message.contains("too large"), "{message}");
}

/// Talos names the interfaces by their order: eth0 public, eth1 private.
const TALOS_LINKS: &[(&str, &str)] = &[("eth0", "56:00:03:89:53:e0"), ("eth1", "5a:00:03:89:53:e0")];

/// Every difference from Talos's expected output, and why (see
/// docs/platforms/vultr.md).
const DOCUMENTED: &[&str] = &[];

#[tokio::test]
async fn conformance_with_talos() {
    let (Some(document), Some(expected)) =
        (shared_fixture("vultr", "talos-metadata.json"), shared_fixture("vultr", "talos-expected.yaml"))
    else {
        skip_without_fixtures("provider_vultr::conformance_with_talos");
        return;
    };
    let server = mock(Vultr::from_document(&std::fs::read_to_string(document).unwrap())).await;
    let s = setup("Vultr", &[("vultr", &server)]).await;
    let got = s.result("vultr").await;
    let ours = &got["fetch"]["ok"];
    assert!(ours.is_object(), "{got}");
    let expected = bronze_tests::talos::expected(&expected).unwrap();
    let differences = bronze_tests::talos::compare(&expected, ours, TALOS_LINKS);
    assert_eq!(differences, DOCUMENTED, "\nours: {ours:#}");
}

/// The unchanged plugin against the cloud's real address: in a network
/// namespace 169.254.169.254 is a local address served by `mockcloud
/// --cloud vultr` on port 80, bronzed runs there with DMI sys_vendor =
/// `Vultr`, and the instance has no config and exactly the manifest's
/// `[grants]` (what the image's built-in instance runs with). None (and a
/// loud line) where namespaces cannot be made.
async fn real_endpoint() -> Option<Value> {
    bronze_tests::provider::real_endpoint(PLUGIN, &[("sys_vendor", "Vultr")]).await
}

#[tokio::test]
async fn the_unchanged_plugin_reads_the_real_endpoint_with_the_manifest_grants() {
    let Some(got) = real_endpoint().await else { return };
    assert_eq!(got["detected"], true, "{got}");
    assert_eq!(got["fetch"]["ok"]["providerId"], "vultr://5f1c3a52-8c4e-4f7a-9d21-0b6e1f9a7c33", "{got}");
    assert_eq!(got["fetch"]["ok"]["externalIps"][0], "203.0.113.10", "{got}");
    assert_eq!(got["fetch"]["ok"]["userDataBytes"], "#cloud-config\n".len(), "{got}");
}
