//! The gcp provider plugin end to end: the real wasm plugin in a real
//! bronzed (process mode) against the mock metadata server over real HTTP:
//! the repo's own instance, the `Metadata-Flavor` rules, detection, and
//! conformance with Talos's gcp test (its struct and interfaces document
//! served through the mock, compared with `talos-expected.yaml`).

use bronze_tests::mockcloud::gcp::Gcp;
use bronze_tests::mockcloud::{Cloud, MockServer, Request, Response, shared_fixture, skip_without_fixtures};
use bronze_tests::provider::MockedNode;
use bronze_tests::talos;
use serde_json::{Value, json};
use std::sync::Arc;

const PLUGIN: &str = "gcp";

fn grants(base: &str) -> String {
    format!(r#"config: true, facts: [dmi, links], http: [{{ url: "{base}/computeMetadata/v1/", methods: [GET] }}]"#)
}

async fn setup(product_name: &str, mocks: &[(&str, &MockServer)]) -> MockedNode {
    MockedNode::start(PLUGIN, "gcp-node", &[("sys_vendor", "Google"), ("product_name", product_name)], grants, mocks)
        .await
}

fn ok(result: &Value) -> &Value {
    assert_eq!(result["detected"], true, "{result:#}");
    let ok = &result["fetch"]["ok"];
    assert!(ok.is_object(), "fetch failed: {result:#}");
    ok
}

/// A server that answers like the metadata server but forgets the
/// `Metadata-Flavor: Google` response header (something else on the
/// address).
struct Impostor(Gcp);

impl Cloud for Impostor {
    fn handle(&self, request: &Request) -> Response {
        let mut r = self.0.handle(request);
        r.headers.retain(|(n, _)| n != "metadata-flavor");
        r
    }
}

#[tokio::test]
async fn reads_the_repo_instance_with_the_flavor_header() {
    let mock = MockServer::loopback(Arc::new(Gcp::new())).await;
    let impostor = MockServer::loopback(Arc::new(Impostor(Gcp::new()))).await;
    let s = setup("Google Compute Engine", &[("gcp", &mock), ("impostor", &impostor)]).await;
    let result = s.result("gcp").await;
    let m = ok(&result);
    assert_eq!(m["platform"], "gcp");
    assert_eq!(m["instanceId"], "4520031799277581759");
    assert_eq!(m["instanceType"], "e2-standard-2");
    assert_eq!(m["hostname"], "bronze-1.europe-west4-b.c.bronze-test-4711.internal");
    assert_eq!(m["region"], "europe-west4");
    assert_eq!(m["zone"], "europe-west4-b");
    assert_eq!(m["providerId"], "gce://bronze-test-4711/europe-west4-b/bronze-1");
    assert_eq!(m["spot"], true, "provisioningModel SPOT");
    assert_eq!(m["tags"], json!({"bronze": "", "http-server": ""}));
    assert_eq!(m["externalIps"], json!(["34.90.1.2"]));
    assert_eq!(m["privateIpv4"], json!(["10.164.0.7"]));
    assert_eq!(m["nameservers"], json!(["169.254.169.254"]));
    assert_eq!(m["timeServers"], json!(["metadata.google.internal"]));
    assert_eq!(
        m["interfaces"],
        json!([{
            "mac": "42:01:0a:a4:00:07",
            "addresses": ["2600:1900:4000:abcd:0:5::/96"],
            "routes": [{"to": "::/0", "gateway": "fe80::56:7ff:fe12:3456", "metric": 2048}],
            "mtu": 1460,
            "dhcp": [{"family": "ipv4", "routeMetric": 1024}]
        }])
    );
    assert_eq!(m["userDataBytes"], "#cloud-config\nhostname: ignored\n".len());
    assert_eq!(m["attributes"]["project-id"], "bronze-test-4711");
    // Two requests, both with the header (the mock answers 403 otherwise).
    assert_eq!(mock.hits(), ["GET /computeMetadata/v1/instance/", "GET /computeMetadata/v1/project/project-id"]);
    assert!(mock.requests().iter().all(|r| r.header("metadata-flavor") == Some("Google")));
    assert_eq!(mock.requests()[0].query.as_deref(), Some("recursive=true&alt=json"));

    let impostor = s.result("impostor").await;
    assert_eq!(impostor["fetch"]["error"], "invalid", "{impostor:#}");
    assert!(impostor["fetch"]["message"].as_str().unwrap().contains("Metadata-Flavor"), "{impostor:#}");
}

#[tokio::test]
async fn not_detected_elsewhere() {
    let mock = MockServer::loopback(Arc::new(Gcp::new())).await;
    let s = setup("Standard PC (Q35 + ICH9, 2009)", &[("gcp", &mock)]).await;
    let result = s.result("gcp").await;
    assert_eq!(result["detected"], false, "{result:#}");
    assert!(mock.hits().is_empty(), "detect() sent nothing: {:?}", mock.hits());
}

/// Differences from Talos that docs/platforms/gcp.md lists.
const DOCUMENTED: &[&str] = &[];

#[tokio::test]
async fn conformance_with_talos() {
    let (Some(metadata), Some(interfaces), Some(expected)) = (
        shared_fixture("gcp", "talos-metadata.json"),
        shared_fixture("gcp", "talos-interfaces.json"),
        shared_fixture("gcp", "talos-expected.yaml"),
    ) else {
        skip_without_fixtures("provider_gcp::conformance_with_talos");
        return;
    };
    let mock = MockServer::loopback(Arc::new(Gcp::from_talos(&metadata, &interfaces).unwrap())).await;
    let s = setup("Google Compute Engine", &[("talos", &mock)]).await;
    let result = s.result("talos").await;
    let expected = talos::expected(expected).unwrap();
    let differences = talos::compare(&expected, ok(&result), &[("eth0", "42:01:ac:10:00:04")]);
    assert_eq!(differences, DOCUMENTED, "{:#}", result["fetch"]["ok"]);
}

#[tokio::test]
async fn hostile_trees_are_refused_naming_the_field() {
    let mut wrong_type = Gcp::new();
    wrong_type.instance["networkInterfaces"][0]["mtu"] = json!("1460");
    let wrong_type = MockServer::loopback(Arc::new(wrong_type)).await;
    let mut long_name = Gcp::new();
    long_name.instance["hostname"] = json!("a".repeat(10_000));
    let long_name = MockServer::loopback(Arc::new(long_name)).await;
    let mut many = Gcp::new();
    many.instance["tags"] = json!((0..10_000).map(|i| format!("t{i}")).collect::<Vec<_>>());
    let many = MockServer::loopback(Arc::new(many)).await;
    let down = MockServer::loopback(Arc::new(Gcp::new())).await;
    down.faults.fail_next.store(1, std::sync::atomic::Ordering::SeqCst);
    let s = setup(
        "Google Compute Engine",
        &[("wrong-type", &wrong_type), ("long-name", &long_name), ("many", &many), ("down", &down)],
    )
    .await;
    let cases = [
        ("wrong-type", "invalid", "instance.networkInterfaces[0].mtu: expected a number"),
        ("long-name", "invalid", "instance.hostname: 10000 bytes, too long"),
        ("many", "invalid", "instance.tags: 10000 entries, too many"),
        ("down", "unavailable", "HTTP 503"),
    ];
    for (id, kind, says) in cases {
        let result = s.result(id).await;
        assert_eq!(result["fetch"]["error"], kind, "{id}: {result:#}");
        let message = result["fetch"]["message"].as_str().unwrap();
        assert!(message.contains(says), "{id}: {message:?} does not say {says:?}");
    }
    // The fault is spent: the next call answers.
    let again = s.result("down").await;
    assert_eq!(ok(&again)["instanceId"], "4520031799277581759");
}
