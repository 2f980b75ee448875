//! Hostile metadata services against the real aws plugin in a real
//! bronzed: a 100 MB body, an identity document that is not JSON, one with
//! a number where a string belongs, a 10 kB host name, 10,000 addresses, 2 MiB of user data, a
//! server that trickles one byte a second, and 503 five times before it
//! answers. Each call must come back within the instance's timeout with a
//! clear error naming the field (`invalid`) or `unavailable`; bronzed's
//! memory stays bounded and its API keeps answering.

use bronze_tests::mockcloud::aws::Aws;
use bronze_tests::mockcloud::{MockServer, Response};
use bronze_tests::plugins::{bundle, config_with_plugins, install, rss_bytes, run};
use bronze_tests::{Node, NodeOptions, Pki};
use serde_json::Value;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

const ADMIN: &[&str] = &["os:admin"];
/// `[limits] timeout` of the aws plugin's manifest.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

fn ec2_sysfs() -> tempfile::TempDir {
    bronze_tests::provider::fake_sysfs(&[("sys_vendor", "Amazon EC2")])
}

fn mock_instance(id: &str, base: &str) -> String {
    format!(
        "\n      - id: {id}\n        plugin: aws\n        config: {{ endpoint: \"{base}\" }}\n        grants: {{ \
         config: true, facts: [dmi, links], http: [{{ url: \"{base}/latest/\", methods: [GET, PUT] }}] }}"
    )
}

/// One `plugins run`, timed; the node must still answer afterwards.
async fn fetch(node: &Node, pki: &Pki, id: &str) -> (Value, Duration) {
    let c = node.client(&pki.auth(ADMIN)).await;
    let started = Instant::now();
    let r = run(&c, id).await;
    let took = started.elapsed();
    let mut c = node.client(&pki.auth(ADMIN)).await;
    c.machine.version(bronze_api::v1::VersionRequest {}).await.unwrap_or_else(|e| panic!("after {id}: {e}"));
    (serde_json::from_str(&r.result_json).unwrap(), took)
}

/// The error kind and message of a failed fetch.
fn failure(result: &Value) -> (&str, &str) {
    assert_eq!(result["detected"], true, "{result:#}");
    let error = result["fetch"]["error"].as_str().unwrap_or_else(|| panic!("the fetch did not fail: {result:#}"));
    (error, result["fetch"]["message"].as_str().unwrap_or_default())
}

#[tokio::test]
async fn hostile_answers_are_bounded_named_and_harmless() {
    let huge = MockServer::loopback(Arc::new(Aws::new())).await;
    huge.faults.huge.store(true, Ordering::SeqCst);
    let mut not_json = Aws::new();
    not_json.insert("dynamic/instance-identity/document", Response::text("{\"region\": \"eu-west-1\", "));
    let not_json = MockServer::loopback(Arc::new(not_json)).await;
    let mut wrong_type = Aws::new();
    wrong_type.insert("dynamic/instance-identity/document", Response::text(r#"{"instanceId": "i-1", "region": 5}"#));
    let wrong_type = MockServer::loopback(Arc::new(wrong_type)).await;
    let long_name = MockServer::loopback(Arc::new(Aws::new().set("meta-data/hostname", "a".repeat(10_000)))).await;
    let addresses: Vec<String> =
        (0..10_000).map(|i| format!("10.{}.{}.{}", i / 65536, (i / 256) % 256, i % 256)).collect();
    let many = Aws::new().set("meta-data/network/interfaces/macs/0a:1b:2c:3d:4e:5f/local-ipv4s", addresses.join("\n"));
    let many = MockServer::loopback(Arc::new(many)).await;
    let mut big_user_data = Aws::new();
    big_user_data.insert("user-data", Response::new(200, "application/octet-stream", vec![b'x'; 2 << 20]));
    let big_user_data = MockServer::loopback(Arc::new(big_user_data)).await;
    let trickle = MockServer::loopback(Arc::new(Aws::new())).await;
    trickle.faults.trickle.store(true, Ordering::SeqCst);
    let flaky = MockServer::loopback(Arc::new(Aws::new())).await;
    flaky.faults.fail_next.store(5, Ordering::SeqCst);

    let instances = [
        mock_instance("huge", &huge.base()),
        mock_instance("not-json", &not_json.base()),
        mock_instance("wrong-type", &wrong_type.base()),
        mock_instance("long-name", &long_name.base()),
        mock_instance("many", &many.base()),
        mock_instance("big-user-data", &big_user_data.base()),
        mock_instance("trickle", &trickle.base()),
        mock_instance("flaky", &flaky.base()),
    ];
    let pki = Pki::new();
    let sysfs = ec2_sysfs();
    let plugins = format!("allowUnsigned: true\n    instances:{}", instances.concat());
    let node = Node::start_with(NodeOptions {
        config: Some(config_with_plugins(&pki, "hostile", &plugins)),
        args: vec!["--sysfs".into(), sysfs.path().display().to_string()],
        ..Default::default()
    })
    .await;
    let c = node.client(&pki.auth(ADMIN)).await;
    install(c.channel.clone(), &bundle("aws")).await.unwrap_or_else(|e| panic!("install: {e}\n{}", node.log()));
    let rss_before = rss_bytes(node.pid());

    // (instance, error kind, what the message must say)
    let cases = [
        ("huge", "invalid", "PUT /latest/api/token: the answer is larger than 4096 bytes"),
        ("not-json", "invalid", "/latest/dynamic/instance-identity/document: invalid JSON"),
        (
            "wrong-type",
            "invalid",
            "/latest/dynamic/instance-identity/document: field region: expected a string, got a number",
        ),
        ("long-name", "invalid", "GET /latest/meta-data/hostname: the answer is larger than 4096 bytes"),
        ("many", "invalid", "local-ipv4s: the answer is larger than 65536 bytes"),
        ("big-user-data", "invalid", "GET /latest/user-data: the answer is larger than 1048576 bytes"),
        ("trickle", "unavailable", "timed out"),
    ];
    for (id, kind, says) in cases {
        let (result, took) = fetch(&node, &pki, id).await;
        let (error, message) = failure(&result);
        assert_eq!(error, kind, "{id}: {result:#}");
        assert!(message.contains(says), "{id}: {message:?} does not say {says:?}");
        assert!(took < CALL_TIMEOUT, "{id} took {took:?}");
    }
    // The huge body was cut off at the cap: the mock did not get to send
    // 100 MB, and bronzed did not keep it.
    let rss_after = rss_bytes(node.pid());
    assert!(rss_after < rss_before + (64 << 20), "bronzed grew from {} to {} MiB", rss_before >> 20, rss_after >> 20);
    // The trickling token took the per-request timeout (2 s), not longer.
    assert_eq!(trickle.hits(), ["PUT /latest/api/token"]);

    // 503 five times: each call is `unavailable` (the platform controller
    // retries with backoff); once the faults are spent a call succeeds.
    let (first, _) = fetch(&node, &pki, "flaky").await;
    let (error, message) = failure(&first);
    assert_eq!(error, "unavailable", "{first:#}");
    assert!(message.contains("HTTP 503"), "{message}");
    let mut calls = 1;
    let answer = loop {
        let (result, took) = fetch(&node, &pki, "flaky").await;
        assert!(took < CALL_TIMEOUT);
        calls += 1;
        if result["fetch"]["ok"].is_object() {
            break result;
        }
        assert_eq!(failure(&result).0, "unavailable", "{result:#}");
        assert!(calls <= 6, "still failing after {calls} calls: {result:#}");
    };
    assert_eq!(answer["fetch"]["ok"]["instanceId"], "i-0b22a22eec53b9321");
    assert_eq!(flaky.faults.fail_next.load(Ordering::SeqCst), 0);
    assert_eq!(calls, 6, "every failed call spent exactly one 503");
}
