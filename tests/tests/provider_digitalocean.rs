//! The digitalocean provider plugin end to end: the real component built
//! from `plugins/providers/digitalocean`, installed over the API of a real
//! `bronzed` whose DMI comes from a fake sysfs, fetching from the
//! DigitalOcean mock over loopback HTTP.

use bronze_tests::mockcloud::digitalocean::{DROPLET, DigitalOcean, USER_DATA};
use bronze_tests::mockcloud::{Cloud, MockServer, shared_fixture, skip_without_fixtures};
use bronze_tests::provider::MockedNode;
use serde_json::Value;
use std::sync::Arc;
use std::sync::atomic::Ordering;

const PLUGIN: &str = "digitalocean";

fn grants(base: &str) -> String {
    format!(
        r#"config: true, facts: [dmi, links], http: [{{ url: "{base}/metadata/v1.json" }}, {{ url: "{base}/metadata/v1/" }}]"#
    )
}

async fn setup(sys_vendor: &str, mocks: &[(&str, &MockServer)]) -> MockedNode {
    MockedNode::start(PLUGIN, "do", &[("sys_vendor", sys_vendor), ("product_name", "Droplet")], grants, mocks).await
}

async fn mock(cloud: impl Cloud) -> MockServer {
    MockServer::loopback(Arc::new(cloud)).await
}

#[tokio::test]
async fn a_droplet_reports_its_names_addresses_routes_and_user_data() {
    let server = mock(DigitalOcean::new()).await;
    let s = setup("DigitalOcean", &[("digitalocean", &server)]).await;
    let got = s.result("digitalocean").await;
    assert_eq!(got["detected"], true, "{got}");
    let m = &got["fetch"]["ok"];
    assert_eq!(m["platform"], "digitalocean", "{got}");
    assert_eq!(m["instanceId"], "2756294");
    assert_eq!(m["providerId"], "digitalocean://2756294");
    assert_eq!(m["hostname"], "bronze-do-1");
    assert_eq!(m["region"], "nyc3");
    assert_eq!(m["nameservers"], serde_json::json!(["67.207.67.2", "67.207.67.3"]));
    assert_eq!(m["publicIpv4"], serde_json::json!(["104.131.20.105"]));
    assert_eq!(m["privateIpv4"], serde_json::json!(["10.132.255.113"]));
    // The document's upper-case, zero-padded IPv6 comes back canonical.
    assert_eq!(m["publicIpv6"], serde_json::json!(["2604:a880:800:10::17d:2001"]));
    assert_eq!(m["externalIps"], serde_json::json!(["104.131.20.105", "2604:a880:800:10::17d:2001", "45.55.96.47"]));
    assert_eq!(m["tags"], serde_json::json!({ "web": "", "env:test": "" }));
    assert_eq!(m["userDataBytes"], USER_DATA.len());

    let ifaces = m["interfaces"].as_array().unwrap();
    assert_eq!(ifaces.len(), 2, "{m}");
    let public = &ifaces[0];
    assert_eq!(public["mac"], "04:01:2a:0f:2a:01", "MACs are lower-cased: {public}");
    assert_eq!(
        public["addresses"],
        serde_json::json!(["104.131.20.105/18", "10.17.0.5/16", "2604:a880:800:10::17d:2001/64"])
    );
    let routes: Vec<(String, String, u64)> = public["routes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (r["to"].as_str().unwrap().into(), r["gateway"].as_str().unwrap().into(), r["metric"].as_u64().unwrap())
        })
        .collect();
    assert_eq!(
        routes,
        [
            ("0.0.0.0/0".into(), "104.131.0.1".into(), 1024),
            ("169.254.169.254/32".into(), "104.131.0.1".into(), 512),
            ("::/0".into(), "2604:a880:800:10::1".into(), 2048),
        ]
    );
    let private = &ifaces[1];
    assert_eq!(private["addresses"], serde_json::json!(["10.132.255.113/16"]));
    assert!(private["routes"].as_array().unwrap().is_empty(), "no default route through the private network");

    // One document and the user data; no header is needed or sent.
    assert_eq!(server.hits(), ["GET /metadata/v1.json", "GET /metadata/v1/user-data"]);
    assert!(server.requests().iter().all(|r| r.header("authorization").is_none()));
}

#[tokio::test]
async fn other_vendors_are_not_detected_and_nothing_is_asked() {
    let server = mock(DigitalOcean::new()).await;
    let s = setup("QEMU", &[("digitalocean", &server)]).await;
    let got = s.result("digitalocean").await;
    assert_eq!(got["detected"], false, "{got}");
    assert!(got["fetch"].is_null(), "{got}");
    assert!(server.hits().is_empty(), "detect() must not send anything: {:?}", server.hits());
}

#[tokio::test]
async fn hostile_answers_are_refused_with_the_field_named_or_retried() {
    let broken = |doc: &str| DigitalOcean::with_document(doc, None);
    let bad_json = mock(broken("{\"droplet_id\": 1, \"hostname\": ")).await;
    let wrong_type = mock(broken(&DROPLET.replace("\"droplet_id\": 2756294", "\"droplet_id\": \"many\""))).await;
    let bad_mask = mock(broken(&DROPLET.replace("255.255.192.0", "255.0.255.0"))).await;
    let bad_ip = mock(broken(&DROPLET.replace("104.131.20.105", "104.131.20.105; rm -rf /"))).await;
    let long_name = mock(broken(&DROPLET.replace("bronze-do-1", &"x".repeat(10_000)))).await;
    let flaky = mock(DigitalOcean::new()).await;
    flaky.faults.fail_next.store(5, Ordering::SeqCst);
    let huge = mock(DigitalOcean::new()).await;
    huge.faults.huge.store(true, Ordering::SeqCst);
    let s = setup(
        "DigitalOcean",
        &[
            ("bad-json", &bad_json),
            ("wrong-type", &wrong_type),
            ("bad-mask", &bad_mask),
            ("bad-ip", &bad_ip),
            ("long-name", &long_name),
            ("flaky", &flaky),
            ("huge", &huge),
        ],
    )
    .await;

    let error = |v: &Value| (v["fetch"]["error"].as_str().unwrap_or("").to_string(), v["fetch"]["message"].to_string());
    let (kind, message) = error(&s.result("bad-json").await);
    assert_eq!(kind, "invalid", "{message}");
    assert!(message.contains("/metadata/v1.json") && message.contains("invalid JSON"), "{message}");
    let (kind, message) = error(&s.result("wrong-type").await);
    assert_eq!(kind, "invalid", "{message}");
    assert!(message.contains("droplet_id") || message.contains("invalid type"), "{message}");
    let (kind, message) = error(&s.result("bad-mask").await);
    assert_eq!(kind, "invalid", "{message}");
    assert!(message.contains("netmask") && message.contains("255.0.255.0"), "{message}");
    let (kind, message) = error(&s.result("bad-ip").await);
    assert_eq!(kind, "invalid", "{message}");
    assert!(message.contains("ip_address"), "{message}");
    // The host refuses a 10 kB host name and names the field.
    let (kind, message) = error(&s.result("long-name").await);
    assert_eq!(kind, "invalid", "{message}");
    assert!(message.contains("hostname"), "{message}");

    // 503 is "unavailable" (the host's controller retries); after five the
    // service answers again and the same plugin succeeds.
    for _ in 0..5 {
        let (kind, message) = error(&s.result("flaky").await);
        assert_eq!(kind, "unavailable", "{message}");
        assert!(message.contains("503"), "{message}");
    }
    let ok = s.result("flaky").await;
    assert_eq!(ok["fetch"]["ok"]["instanceId"], "2756294", "{ok}");

    // A 100 MB body is cut off by the host's cap; the node stays up.
    let (kind, message) = error(&s.result("huge").await);
    assert!(kind == "unavailable" || kind == "invalid", "{kind}: {message}");
    assert!(message.contains("larger than") || message.contains("too large"), "{message}");
    let again = s.result("bad-json").await;
    assert_eq!(again["fetch"]["error"], "invalid", "the node still answers: {again}");
}

/// Talos's test links: the public interface is eth0, the private one eth1.
const TALOS_LINKS: &[(&str, &str)] = &[("eth0", "12:2f:49:0c:eb:c0"), ("eth1", "2a:3c:79:3d:f3:b7")];

/// Every difference from Talos's expected output, and why (see
/// docs/platforms/digitalocean.md).
const DOCUMENTED: &[&str] = &[
    // Bronze's platform names are the plugin ids; Talos says "digital-ocean".
    r#"metadata.platform: talos "digital-ocean" bronze "digitalocean""#,
    // Talos drops droplet tags; Bronze reports them (keys, empty values).
    r#"metadata.tags: bronze has label123="", talos does not"#,
];

#[tokio::test]
async fn conformance_with_talos() {
    let (Some(document), Some(expected)) =
        (shared_fixture("digitalocean", "talos-metadata.json"), shared_fixture("digitalocean", "talos-expected.yaml"))
    else {
        skip_without_fixtures("provider_digitalocean::conformance_with_talos");
        return;
    };
    let document = std::fs::read_to_string(document).unwrap();
    let server = mock(DigitalOcean::with_document(&document, None)).await;
    let s = setup("DigitalOcean", &[("digitalocean", &server)]).await;
    let got = s.result("digitalocean").await;
    let ours = &got["fetch"]["ok"];
    assert!(ours.is_object(), "{got}");
    let expected = bronze_tests::talos::expected(&expected).unwrap();
    let differences = bronze_tests::talos::compare(&expected, ours, TALOS_LINKS);
    assert_eq!(differences, DOCUMENTED, "\nours: {ours:#}");
}
