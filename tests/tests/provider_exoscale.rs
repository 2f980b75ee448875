//! The exoscale provider plugin end to end: the real component built from
//! `plugins/providers/exoscale`, installed over the API of a real `bronzed`
//! whose DMI comes from a fake sysfs, fetching plain-text values from the
//! Exoscale mock over loopback HTTP.

use bronze_tests::mockcloud::exoscale::{Exoscale, USER_DATA, VALUES};
use bronze_tests::mockcloud::{Cloud, MockServer, shared_fixture, skip_without_fixtures};
use bronze_tests::provider::MockedNode;
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::Ordering;

const PLUGIN: &str = "exoscale";

fn grants(base: &str) -> String {
    format!(r#"config: true, facts: [dmi], http: [{{ url: "{base}/1.0/" }}]"#)
}

/// A node with the given DMI fields, with one instance of the plugin per
/// `(instance id, mock)`; the plugin installed.
async fn setup(fields: &[(&str, &str)], mocks: &[(&str, &MockServer)]) -> MockedNode {
    MockedNode::start(PLUGIN, "exo", fields, grants, mocks).await
}

async fn mock(cloud: impl Cloud) -> MockServer {
    MockServer::loopback(Arc::new(cloud)).await
}

const EXOSCALE: &[(&str, &str)] = &[("sys_vendor", "Exoscale"), ("product_name", "Exoscale")];

fn values(replace: &[(&str, &str)], drop: &[&str]) -> Vec<(String, String)> {
    VALUES
        .iter()
        .filter(|(k, _)| !drop.contains(k))
        .map(|(k, v)| {
            let v = replace.iter().find(|(r, _)| r == k).map_or(*v, |(_, n)| *n);
            (k.to_string(), v.to_string())
        })
        .collect()
}

#[tokio::test]
async fn an_instance_reports_its_values_and_user_data() {
    let server = mock(Exoscale::new()).await;
    let s = setup(EXOSCALE, &[("exoscale", &server)]).await;
    let got = s.result("exoscale").await;
    assert_eq!(got["detected"], true, "{got}");
    let m = &got["fetch"]["ok"];
    assert_eq!(m["platform"], "exoscale", "{got}");
    assert_eq!(m["instanceId"], "9a3c2e41-6f0b-4d1e-8b2a-4c5d6e7f8091");
    assert_eq!(m["providerId"], "exoscale://9a3c2e41-6f0b-4d1e-8b2a-4c5d6e7f8091");
    assert_eq!(m["hostname"], "bronze-exo-1.example.net");
    assert_eq!(m["instanceType"], "standard.small");
    assert_eq!(m["zone"], "ch-gva-2");
    assert_eq!(m["region"], "ch-gva-2");
    assert_eq!(m["publicIpv4"], json!(["194.182.160.23"]));
    assert_eq!(m["privateIpv4"], json!(["194.182.160.23"]));
    assert_eq!(m["externalIps"], json!(["194.182.160.23"]));
    assert_eq!(m["userDataBytes"], USER_DATA.len());
    assert!(m["interfaces"].as_array().unwrap().is_empty(), "the network is DHCP's: {m}");
    let paths: Vec<String> = server.hits();
    assert!(paths.iter().all(|p| p.starts_with("GET /1.0/")), "{paths:?}");
    assert_eq!(paths.last().map(String::as_str), Some("GET /1.0/user-data"));
    assert!(!paths.iter().any(|p| p.ends_with("public-keys")), "keys are not asked for: {paths:?}");
}

#[tokio::test]
async fn detection_by_vendor_or_product_and_nothing_sent_otherwise() {
    let by_vendor = mock(Exoscale::new()).await;
    let s = setup(&[("sys_vendor", "Exoscale")], &[("exoscale", &by_vendor)]).await;
    assert_eq!(s.result("exoscale").await["detected"], true);
    drop(s);
    let by_product = mock(Exoscale::new()).await;
    let s = setup(
        &[("sys_vendor", "Apache Software Foundation"), ("product_name", "Exoscale")],
        &[("exoscale", &by_product)],
    )
    .await;
    assert_eq!(s.result("exoscale").await["detected"], true);
    drop(s);
    let other = mock(Exoscale::new()).await;
    let s = setup(&[("sys_vendor", "QEMU"), ("product_name", "Standard PC")], &[("exoscale", &other)]).await;
    let got = s.result("exoscale").await;
    assert_eq!(got["detected"], false, "{got}");
    assert!(other.hits().is_empty(), "detect() must not send anything: {:?}", other.hits());
}

#[tokio::test]
async fn hostile_values_are_refused_and_a_trickle_times_out() {
    let bad_ip = mock(Exoscale::with_values(&values(&[("public-ipv4", "1.2.3.4\nX-Injected: yes")], &[]), None)).await;
    let no_id = mock(Exoscale::with_values(&values(&[], &["instance-id"]), None)).await;
    let binary = mock(Exoscale::with_values(&values(&[("local-hostname", "bad\u{1b}[31mname")], &[]), None)).await;
    let trickle = mock(Exoscale::new()).await;
    trickle.faults.trickle.store(true, Ordering::SeqCst);
    let down = mock(Exoscale::new()).await;
    down.faults.down.store(true, Ordering::SeqCst);
    let s = setup(
        EXOSCALE,
        &[("bad-ip", &bad_ip), ("no-id", &no_id), ("binary", &binary), ("trickle", &trickle), ("down", &down)],
    )
    .await;
    let got = s.result("bad-ip").await;
    assert_eq!(got["fetch"]["error"], "invalid", "{got}");
    assert!(got["fetch"]["message"].as_str().unwrap().contains("public-ipv4"), "{got}");
    let got = s.result("no-id").await;
    assert_eq!(got["fetch"]["error"], "invalid", "{got}");
    assert!(got["fetch"]["message"].as_str().unwrap().contains("instance-id"), "{got}");
    // A control character in the host name: the host refuses the answer.
    let got = s.result("binary").await;
    assert_eq!(got["fetch"]["error"], "invalid", "{got}");
    assert!(got["fetch"]["message"].as_str().unwrap().contains("hostname"), "{got}");
    assert!(!got.to_string().contains('\u{1b}'), "escaped: {got}");
    let started = std::time::Instant::now();
    let got = s.result("trickle").await;
    assert_eq!(got["fetch"]["error"], "unavailable", "{got}");
    assert!(started.elapsed() < std::time::Duration::from_secs(15), "bounded: {:?}", started.elapsed());
    let got = s.result("down").await;
    assert_eq!(got["fetch"]["error"], "unavailable", "{got}");
}

#[tokio::test]
async fn conformance_with_talos() {
    let (Some(values), Some(expected)) =
        (shared_fixture("exoscale", "talos-metadata.json"), shared_fixture("exoscale", "talos-expected.yaml"))
    else {
        skip_without_fixtures("provider_exoscale::conformance_with_talos");
        return;
    };
    // Talos's file is its struct of four values, not a served document:
    // serve each value at its key, as the metadata server does.
    let values: serde_json::Map<String, Value> =
        serde_json::from_str(&std::fs::read_to_string(values).unwrap()).unwrap();
    let values: Vec<(String, String)> = values.into_iter().map(|(k, v)| (k, v.as_str().unwrap().to_string())).collect();
    let server = mock(Exoscale::with_values(&values, None)).await;
    let s = setup(EXOSCALE, &[("exoscale", &server)]).await;
    let got = s.result("exoscale").await;
    let ours = &got["fetch"]["ok"];
    assert!(ours.is_object(), "{got}");
    let expected = bronze_tests::talos::expected(&expected).unwrap();
    // No differences: the four values map the same way in both.
    let differences = bronze_tests::talos::compare(&expected, ours, &[]);
    assert_eq!(differences, Vec::<String>::new(), "\nours: {ours:#}");
}
