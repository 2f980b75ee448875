//! The aws provider plugin end to end: the real wasm plugin (built from
//! `plugins/providers/aws`) in a real bronzed (process mode), against the
//! mock IMDS over real HTTP:
//!
//! - the repo's own instance over IMDSv2, every request with the token;
//! - IMDSv1 only when configured, and only when the token PUT is refused;
//! - conformance: Talos's three aws test structs served through the mock
//!   and compared with Talos's expected output; the AEMM defaults document
//!   served as is;
//! - the real endpoints: in a network namespace, 169.254.169.254 and
//!   fd00:ec2::254 are local addresses served by `mockcloud`, bronzed runs
//!   there too, and the plugin runs with no endpoint override (also
//!   IPv6-only);
//! - moto (an IMDS nobody here wrote) in the same namespace setup.

use bronze_tests::mockcloud::aws::Aws;
use bronze_tests::mockcloud::{Cloud, MockServer, Request, Response, shared_fixture, skip_without_fixtures};
use bronze_tests::netns::NetNs;
use bronze_tests::plugins::{bundle, config_with_plugins, install, run};
use bronze_tests::provider::{NsMock, fake_sysfs};
use bronze_tests::{Node, NodeOptions, Pki, talos};
use serde_json::Value;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

const ADMIN: &[&str] = &["os:admin"];

/// The `[grants]` of the plugin's manifest, as an instance's grants (a
/// YAML flow body): what the image's first-party plugin runs with before
/// any config exists. They must name exactly IMDS's two endpoints.
fn manifest_grants() -> String {
    let grants = bundle("aws").manifest.grants.expect("the aws manifest has [grants]");
    let json = serde_json::to_value(&grants).unwrap();
    let urls: Vec<&str> = json["http"].as_array().unwrap().iter().map(|g| g["url"].as_str().unwrap()).collect();
    assert_eq!(urls, ["http://169.254.169.254/latest/", "http://[fd00:ec2::254]/latest/"], "{json}");
    for grant in json["http"].as_array().unwrap() {
        assert_eq!(grant["methods"], serde_json::json!(["GET", "PUT"]), "{json}");
    }
    let flow = json.to_string();
    flow[1..flow.len() - 1].to_string()
}

/// A fake sysfs whose DMI says "Amazon EC2" (what a Nitro instance shows).
fn ec2_sysfs() -> tempfile::TempDir {
    fake_sysfs(&[
        ("sys_vendor", "Amazon EC2"),
        ("product_name", "t3.micro"),
        ("product_uuid", "ec2e1916-9099-7caf-fd21-012345abcdef"),
    ])
}

/// One instance of the aws plugin: config and grants as YAML flow bodies.
fn instance(id: &str, config: &str, grants: &str) -> String {
    format!("\n      - id: {id}\n        plugin: aws\n        config: {{ {config} }}\n        grants: {{ {grants} }}")
}

/// An instance reading the mock at `base` (granted exactly `/latest/`).
fn mock_instance(id: &str, base: &str, extra_config: &str) -> String {
    instance(
        id,
        &format!("endpoint: \"{base}\"{extra_config}"),
        &format!("config: true, facts: [dmi, links], http: [{{ url: \"{base}/latest/\", methods: [GET, PUT] }}]"),
    )
}

/// A node with the given instances and the EC2 DMI, the aws bundle
/// installed.
async fn node_with(pki: &Pki, sysfs: &Path, instances: &[String], wrap: Option<(&mut NetNs, u16)>) -> Node {
    let plugins = format!("allowUnsigned: true\n    instances:{}", instances.concat());
    let config = config_with_plugins(pki, "aws-node", &plugins);
    let args = vec!["--sysfs".to_string(), sysfs.display().to_string()];
    let node = match wrap {
        None => Node::start_with(NodeOptions { config: Some(config), args, ..Default::default() }).await,
        Some((ns, port)) => {
            // bronzed inside the namespace; the API reached through a relay.
            let mut node = Node::spawn(NodeOptions {
                config: Some(config),
                args,
                port: Some(port),
                wrapper: vec!["ip".into(), "netns".into(), "exec".into(), ns.name().into()],
                ..Default::default()
            });
            node.addr = format!("127.0.0.1:{}", ns.tcp_into(port).unwrap());
            node.wait_ready().await;
            node
        }
    };
    let c = node.client(&pki.auth(ADMIN)).await;
    install(c.channel.clone(), &bundle("aws")).await.unwrap_or_else(|e| panic!("install aws: {e}\n{}", node.log()));
    node
}

/// `plugins run ID` as JSON.
async fn fetch(node: &Node, pki: &Pki, id: &str) -> Value {
    let c = node.client(&pki.auth(ADMIN)).await;
    let r = run(&c, id).await;
    serde_json::from_str(&r.result_json).unwrap_or_else(|e| panic!("{id}: {e}: {}", r.result_json))
}

/// The `fetch.ok` answer, or a panic with what came back.
fn ok(result: &Value) -> &Value {
    assert_eq!(result["detected"], true, "{result:#}");
    let ok = &result["fetch"]["ok"];
    assert!(ok.is_object(), "fetch failed: {result:#}");
    ok
}

fn attribute<'a>(m: &'a Value, key: &str) -> &'a str {
    m["attributes"][key].as_str().unwrap_or_else(|| panic!("no attribute {key}: {m:#}"))
}

#[tokio::test]
async fn reads_the_repo_instance_over_imdsv2() {
    let pki = Pki::new();
    let sysfs = ec2_sysfs();
    let mock = MockServer::loopback(Arc::new(Aws::new())).await;
    let node = node_with(&pki, sysfs.path(), &[mock_instance("aws", &mock.base(), "")], None).await;
    let result = fetch(&node, &pki, "aws").await;
    let m = ok(&result);
    assert_eq!(m["platform"], "aws");
    assert_eq!(m["instanceId"], "i-0b22a22eec53b9321");
    assert_eq!(m["instanceType"], "t3.micro");
    assert_eq!(m["hostname"], "ip-10-1-2-3.eu-west-1.compute.internal");
    assert_eq!(m["region"], "eu-west-1");
    assert_eq!(m["zone"], "eu-west-1b");
    assert_eq!(m["providerId"], "aws:///eu-west-1b/i-0b22a22eec53b9321");
    assert_eq!(m["spot"], true);
    assert_eq!(m["tags"], serde_json::json!({"Name": "bronze-node-1", "cluster": "prod"}));
    assert_eq!(m["externalIps"], serde_json::json!(["203.0.113.7"]));
    assert_eq!(m["publicIpv4"], serde_json::json!(["203.0.113.7"]));
    assert_eq!(m["privateIpv4"], serde_json::json!(["10.1.2.3", "10.1.2.4"]));
    assert_eq!(m["publicIpv6"], serde_json::json!(["2001:db8:100::7"]));
    assert_eq!(m["nameservers"], serde_json::json!(["fd00:ec2::253"]));
    assert_eq!(m["timeServers"], serde_json::json!(["169.254.169.123", "fd00:ec2::123"]));
    let ifaces = m["interfaces"].as_array().unwrap();
    assert_eq!(ifaces.len(), 1, "only the primary interface: {m:#}");
    assert_eq!(ifaces[0]["mac"], "0a:1b:2c:3d:4e:5f");
    assert_eq!(
        ifaces[0]["dhcp"],
        serde_json::json!([{"family": "ipv4", "routeMetric": 1024}, {"family": "ipv6", "routeMetric": 1024}])
    );
    assert_eq!(m["userDataBytes"], bronze_tests::mockcloud::aws::DEFAULT_USER_DATA.len());
    assert_eq!(attribute(m, "account-id"), "123456789012");
    assert_eq!(attribute(m, "subnet-ipv4-cidr-block"), "10.1.2.0/24");
    assert_eq!(attribute(m, "local-hostname"), "ip-10-1-2-3.eu-west-1.compute.internal");
    assert_eq!(attribute(m, "imds"), "v2");

    // IMDSv2: one token PUT with the longest TTL first, then every request
    // carries that token (the mock refuses anything else with 401).
    let requests = mock.requests();
    assert_eq!((requests[0].method.as_str(), requests[0].path.as_str()), ("PUT", "/latest/api/token"));
    assert_eq!(requests[0].header("x-aws-ec2-metadata-token-ttl-seconds"), Some("21600"));
    assert!(requests.len() > 10, "{:?}", mock.hits());
    for r in &requests[1..] {
        assert_eq!(r.method, "GET", "{:?}", mock.hits());
        assert!(r.path.starts_with("/latest/"), "{}", r.path);
        assert!(r.header("x-aws-ec2-metadata-token").is_some_and(|t| t.starts_with("AQAEAMock")), "{}", r.path);
    }
    // The secondary interface is never read.
    assert!(!mock.hits().iter().any(|h| h.contains("0a:1b:2c:3d:4e:60")), "{:?}", mock.hits());
}

/// IMDS with the token endpoint switched off (as an instance with
/// `HttpTokens: optional` behind a proxy that strips PUT would be).
struct NoTokens(Aws, u16);

impl Cloud for NoTokens {
    fn handle(&self, request: &Request) -> Response {
        if request.method == "PUT" {
            return bronze_tests::mockcloud::aws::error(self.1, "Forbidden");
        }
        self.0.handle(request)
    }
}

#[tokio::test]
async fn imdsv1_only_when_configured_and_only_when_the_token_is_refused() {
    let pki = Pki::new();
    let sysfs = ec2_sysfs();
    let v1 = MockServer::loopback(Arc::new(NoTokens(Aws::new().imdsv1(), 403))).await;
    let v2 = MockServer::loopback(Arc::new(Aws::new())).await;
    let instances = [
        mock_instance("v1-denied", &v1.base(), ""),
        mock_instance("v1-allowed", &v1.base(), ", imdsv1: allow"),
        mock_instance("v2-allowed", &v2.base(), ", imdsv1: allow"),
        mock_instance("bad-setting", &v2.base(), ", imdsv1: maybe"),
    ];
    let node = node_with(&pki, sysfs.path(), &instances, None).await;

    let denied = fetch(&node, &pki, "v1-denied").await;
    assert_eq!(denied["fetch"]["error"], "invalid", "{denied:#}");
    let message = denied["fetch"]["message"].as_str().unwrap();
    assert!(message.contains("HTTP 403") && message.contains("imdsv1"), "{message}");
    assert_eq!(v1.hits(), ["PUT /latest/api/token"], "nothing is read without a token");

    let allowed = fetch(&node, &pki, "v1-allowed").await;
    let m = ok(&allowed);
    assert_eq!(m["instanceId"], "i-0b22a22eec53b9321");
    assert_eq!(attribute(m, "imds"), "v1");
    assert!(v1.requests().iter().all(|r| r.header("x-aws-ec2-metadata-token").is_none()));

    // Allowed but not needed: v2 is used when the service gives tokens.
    let v2_result = fetch(&node, &pki, "v2-allowed").await;
    assert_eq!(attribute(ok(&v2_result), "imds"), "v2");

    let bad = fetch(&node, &pki, "bad-setting").await;
    assert_eq!(bad["fetch"]["error"], "invalid", "{bad:#}");
    assert!(bad["fetch"]["message"].as_str().unwrap().contains("config imdsv1"), "{bad:#}");
}

/// The Talos cases: (input struct, expected output, the differences
/// docs/platforms/aws.md lists for that case).
const TALOS_CASES: &[(&str, &str, &[&str])] = &[
    ("talos-metadata.json", "talos-expected.yaml", &[]),
    ("talos-metadata-v6.json", "talos-expected-v6.yaml", &[]),
    ("talos-metadata-v6only.json", "talos-expected-v6only.yaml", &[]),
];

/// The host link of Talos's aws tests.
const TALOS_LINKS: &[(&str, &str)] = &[("eth0", "06:17:04:d7:f0:6b")];

#[tokio::test]
async fn conformance_with_talos_and_aemm() {
    let Some(aemm_path) = shared_fixture("aws", "aemm-metadata-default-values.json") else {
        skip_without_fixtures("provider_aws::conformance_with_talos_and_aemm");
        return;
    };
    let pki = Pki::new();
    let sysfs = ec2_sysfs();
    let mut mocks = Vec::new();
    let mut instances = Vec::new();
    for (i, (input, _, _)) in TALOS_CASES.iter().enumerate() {
        let aws = Aws::from_talos(&shared_fixture("aws", input).expect(input)).unwrap();
        let mock = MockServer::loopback(Arc::new(aws)).await;
        instances.push(mock_instance(&format!("talos-{i}"), &mock.base(), ""));
        mocks.push(mock);
    }
    let aemm = MockServer::loopback(Arc::new(Aws::from_aemm(&aemm_path).unwrap())).await;
    instances.push(mock_instance("aemm", &aemm.base(), ""));
    let node = node_with(&pki, sysfs.path(), &instances, None).await;

    for (i, (input, expected, documented)) in TALOS_CASES.iter().enumerate() {
        let result = fetch(&node, &pki, &format!("talos-{i}")).await;
        let expected = talos::expected(shared_fixture("aws", expected).expect(expected)).unwrap();
        let differences = talos::compare(&expected, ok(&result), TALOS_LINKS);
        assert_eq!(differences, *documented, "{input}: {:#}", result["fetch"]["ok"]);
    }
    // The comparison is not vacuous: the IPv4-only answer against the
    // dual-stack expectation shows exactly what IPv6 adds.
    let v4 = fetch(&node, &pki, "talos-0").await;
    let v6 = talos::expected(shared_fixture("aws", "talos-expected-v6.yaml").unwrap()).unwrap();
    assert_eq!(
        talos::compare(&v6, ok(&v4), TALOS_LINKS),
        [
            "metadata.spot: talos \"true\" bronze \"false\"",
            "metadata.tags: bronze has cluster=\"mycluster\", talos does not",
            "operators: talos has dhcp6 on eth0, bronze does not",
            "resolvers.dnsServers: talos has fd00:ec2::253, bronze does not",
        ]
    );

    // AEMM's defaults served as AEMM serves them (tab-indented identity
    // document, base64-decoded user data, two tags, IPv6 on eth0).
    let result = fetch(&node, &pki, "aemm").await;
    let m = ok(&result);
    assert_eq!(m["instanceId"], "i-1234567890abcdef0");
    assert_eq!(m["instanceType"], "m4.xlarge");
    assert_eq!(m["hostname"], "ip-172-16-34-43.ec2.internal");
    assert_eq!(m["region"], "us-east-1");
    assert_eq!(m["zone"], "us-east-1a");
    assert_eq!(m["providerId"], "aws:///us-east-1a/i-1234567890abcdef0");
    assert_eq!(m["spot"], false);
    assert_eq!(m["tags"], serde_json::json!({"Name": "test-instance", "Test": "test-tag"}));
    assert_eq!(m["externalIps"], serde_json::json!(["192.0.2.54"]));
    assert_eq!(m["privateIpv4"], serde_json::json!(["172.16.34.43"]));
    assert_eq!(m["publicIpv6"], serde_json::json!(["2001:db8:8:4::2"]));
    assert_eq!(m["interfaces"][0]["mac"], "0e:49:61:0f:c3:11");
    assert_eq!(m["interfaces"][0]["dhcp"].as_array().unwrap().len(), 2);
    assert_eq!(m["userDataBytes"], "1234,john,reboot,true\n".len());
    assert_eq!(attribute(m, "account-id"), "0123456789");
    assert_eq!(attribute(m, "architecture"), "x86_64");
    assert_eq!(attribute(m, "subnet-ipv6-cidr-blocks"), "2001:db8::/32");
}

/// A child process killed and reaped on drop.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits until something inside `ns` listens on `addr` (`ss -ltn`).
fn wait_listening(ns: &NetNs, addr: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let out = Command::new("ip").args(["netns", "exec", ns.name(), "ss", "-Hltn"]).output().expect("ss");
        if String::from_utf8_lossy(&out.stdout).split_whitespace().any(|w| w == addr) {
            return;
        }
        assert!(Instant::now() < deadline, "nothing listens on {addr} in {}", ns.name());
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A namespace whose `lo` holds the given IMDS addresses.
fn imds_namespace(v4: bool, v6: bool) -> Option<NetNs> {
    let addresses = [(v4, "169.254.169.254/32"), (v6, "fd00:ec2::254/128")];
    let wanted: Vec<&str> = addresses.iter().filter(|(on, _)| *on).map(|(_, a)| *a).collect();
    bronze_tests::provider::imds_namespace("a namespace test", &wanted)
}

#[tokio::test]
async fn the_unchanged_plugin_reads_the_real_endpoints_in_a_namespace() {
    // Dual stack: 169.254.169.254 answers, so fd00:ec2::254 is never asked.
    let Some(mut ns) = imds_namespace(true, true) else { return };
    let pki = Pki::new();
    let sysfs = ec2_sysfs();
    let _v4 = NsMock::start_at(&ns, "aws", "169.254.169.254:80");
    let _v6 = NsMock::start_at(&ns, "aws", "[fd00:ec2::254]:80");
    let port = bronze_tests::free_port();
    let node = node_with(&pki, sysfs.path(), &[instance("aws", "", &manifest_grants())], Some((&mut ns, port))).await;
    let result = fetch(&node, &pki, "aws").await;
    let m = ok(&result);
    assert_eq!(m["instanceId"], "i-0b22a22eec53b9321", "{}", node.log());
    assert_eq!(attribute(m, "endpoint"), "http://169.254.169.254");
    assert_eq!(attribute(m, "imds"), "v2");
    drop(node);

    // IPv6 only: nothing at 169.254.169.254 (no such address, no route),
    // the plugin falls back to fd00:ec2::254.
    let Some(mut ns6) = imds_namespace(false, true) else { return };
    let _v6only = NsMock::start_at(&ns6, "aws", "[fd00:ec2::254]:80");
    let port = bronze_tests::free_port();
    let node = node_with(&pki, sysfs.path(), &[instance("aws", "", &manifest_grants())], Some((&mut ns6, port))).await;
    let started = Instant::now();
    let result = fetch(&node, &pki, "aws").await;
    let m = ok(&result);
    assert_eq!(m["instanceId"], "i-0b22a22eec53b9321", "{}", node.log());
    assert_eq!(attribute(m, "endpoint"), "http://[fd00:ec2::254]");
    assert!(started.elapsed() < Duration::from_secs(5), "the fallback took {:?}", started.elapsed());
}

#[tokio::test]
async fn moto_answers_the_plugin_in_a_namespace() {
    let Some(mut ns) = imds_namespace(true, false) else { return };
    let moto = bronze_tests::python().with_file_name("moto_server");
    assert!(moto.is_file(), "{} is missing: tests/python/requirements.txt installs moto[server]", moto.display());
    let child = Command::new("ip")
        .args(["netns", "exec", ns.name()])
        .arg(&moto)
        .args(["-H", "169.254.169.254", "-p", "80"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn moto_server");
    let _moto = KillOnDrop(child);
    wait_listening(&ns, "169.254.169.254:80");
    let pki = Pki::new();
    let sysfs = ec2_sysfs();
    let port = bronze_tests::free_port();
    let node = node_with(&pki, sysfs.path(), &[instance("aws", "", &manifest_grants())], Some((&mut ns, port))).await;
    let result = fetch(&node, &pki, "aws").await;
    let m = ok(&result);
    // moto's INSTANCE_METADATA (moto/instance_metadata/responses.py).
    assert_eq!(m["instanceId"], "i-fake", "{}", node.log());
    assert_eq!(m["instanceType"], "moto.virtual");
    assert_eq!(m["hostname"], "moto-instance.ec2.internal");
    assert_eq!(m["region"], "us-east-1");
    assert_eq!(m["zone"], "us-east-1a");
    assert_eq!(m["providerId"], "aws:///us-east-1a/i-fake");
    assert_eq!(m["externalIps"], serde_json::json!(["198.51.100.1"]));
    assert_eq!(m["privateIpv4"], serde_json::json!(["127.0.0.1"]));
    assert_eq!(m["interfaces"][0]["mac"], "00:de:ad:be:ef:00");
    assert_eq!(m["spot"], false);
    assert_eq!(attribute(m, "imds"), "v2");
    assert!(m.get("userDataBytes").is_none_or(Value::is_null), "moto has no user data: {m:#}");
}
