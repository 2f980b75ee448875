//! The platform controller end to end: the real bronzed (process mode) in a
//! network namespace this test makes, so nothing can reach a real metadata
//! service; the image's real provider plugins (`--image-plugins`, every
//! first-party bundle built from `plugins/`); mocks served inside the
//! namespace, IMDS at its real address 169.254.169.254:80.
//!
//! - detection: a fake sysfs rewritten for each provider, `PlatformRefresh`
//!   after each rewrite; exactly that provider says yes; blank DMI is
//!   `metal`; two providers' marks at once are an error naming both. The
//!   `detect-network` fixture (a replacement provider from the config) has
//!   every request of its `detect()` denied, and the mock it aims at sees
//!   none, while the same grants let `fetch()` through;
//! - user data: a config the test made comes in as aws user data and the
//!   node leaves maintenance mode with no client; an invalid one leaves it
//!   there with the field and line in the log and the events;
//!   `#cloud-config` is ignored with a warning; a stored config is never
//!   replaced;
//! - the cache: the service down at the next boot → the cached answer,
//!   marked stale; back up → refreshed;
//! - retries: five 503s then success is six attempts; a service down past
//!   `fetchTimeout` is a warning and a machine event; the API answers all
//!   along; hostile answers (100 MB, trickling) are bounded;
//! - `bronzectl platform refresh` through the real CLI; a reader is denied.

use bronze_api::v1 as pb;
use bronze_tests::mockcloud::aws::Aws;
use bronze_tests::mockcloud::{Cloud, MockServer, Request, Response};
use bronze_tests::netns::NetNs;
use bronze_tests::plugins::{bundle, bundle_dir, client as plugin_client, config_with_plugins, install, run};
use bronze_tests::{Node, NodeOptions, Pki, bronzectl};
use bronzectl::client::NodeClient;
use bronzectl::connect::Auth;
use serde_json::Value;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const ADMIN: &[&str] = &["os:admin"];
/// bronzed's API port inside each namespace.
const INNER_PORT: u16 = 50000;
/// The DMI files the host reports (all removed before each rewrite).
const DMI_FIELDS: [&str; 9] = [
    "sys_vendor",
    "product_name",
    "product_serial",
    "product_uuid",
    "board_vendor",
    "board_name",
    "chassis_asset_tag",
    "bios_vendor",
    "bios_version",
];
/// What the aws mock's instance is called (`meta-data/hostname`).
const AWS_HOSTNAME: &str = "ip-10-1-2-3.eu-west-1.compute.internal";

/// The namespace, the fake sysfs and command line, and a state dir of one
/// scenario.
struct Env {
    ns: NetNs,
    /// The host port relayed to bronzed's API in the namespace.
    relay: u16,
    tmp: tempfile::TempDir,
}

impl Env {
    fn new() -> Env {
        if let Some(why) = bronze_tests::netns::unavailable() {
            panic!("the platform tests need a network namespace: {why}");
        }
        let mut ns = NetNs::new().expect("network namespace");
        let relay = ns.tcp_into(INNER_PORT).expect("relay into the namespace");
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(tmp.path().join("sys/class/dmi/id")).unwrap();
        std::fs::write(tmp.path().join("cmdline"), "console=ttyS0 quiet\n").unwrap();
        Env { ns, relay, tmp }
    }

    fn sysfs(&self) -> PathBuf {
        self.tmp.path().join("sys")
    }

    fn state_dir(&self) -> PathBuf {
        self.tmp.path().join("state")
    }

    /// Replaces every DMI field with `fields`.
    fn set_dmi(&self, fields: &[(&str, &str)]) {
        let dir = self.sysfs().join("class/dmi/id");
        for field in DMI_FIELDS {
            let _ = std::fs::remove_file(dir.join(field));
        }
        for (field, value) in fields {
            std::fs::write(dir.join(field), format!("{value}\n")).unwrap();
        }
    }

    /// What an EC2 Nitro instance shows.
    fn ec2(&self) {
        self.set_dmi(&[
            ("sys_vendor", "Amazon EC2"),
            ("product_name", "t3.micro"),
            ("product_uuid", "ec2e1916-9099-7caf-fd21-012345abcdef"),
        ]);
    }

    /// The aws mock at IMDS's real address inside the namespace.
    async fn imds(&self, cloud: Arc<dyn Cloud>) -> MockServer {
        let listener = self.ns.listen("169.254.169.254:80".parse().unwrap()).expect("listen on 169.254.169.254:80");
        MockServer::from_listener(listener, cloud).await.expect("serve the mock")
    }

    /// Starts bronzed in the namespace (image plugins, the fake sysfs and
    /// command line, this env's state dir), without waiting for anything.
    fn spawn(&self, config: Option<String>) -> Node {
        let image = bundle_dir("aws").parent().expect("target/plugins").to_path_buf();
        let args = vec![
            // Process mode asks no metadata service unless told to.
            "--platform".to_string(),
            "auto".to_string(),
            "--image-plugins".to_string(),
            image.display().to_string(),
            "--sysfs".to_string(),
            self.sysfs().display().to_string(),
            "--cmdline-file".to_string(),
            self.tmp.path().join("cmdline").display().to_string(),
        ];
        let mut node = Node::spawn(NodeOptions {
            config,
            state_dir: Some(self.state_dir()),
            port: Some(INNER_PORT),
            args,
            wrapper: vec!["ip".into(), "netns".into(), "exec".into(), self.ns.name().into()],
        });
        node.addr = format!("127.0.0.1:{}", self.relay);
        node
    }

    async fn start(&self, config: Option<String>) -> Node {
        let mut node = self.spawn(config);
        node.wait_ready().await;
        node
    }
}

/// An mTLS admin client, once the node's API takes one (a node in
/// maintenance mode does not: its certificate is self-signed).
async fn wait_mtls(node: &Node, pki: &Pki, within: Duration) -> NodeClient {
    let deadline = Instant::now() + within;
    loop {
        if let Ok(mut c) = NodeClient::connect(&node.addr, &pki.auth(ADMIN)).await
            && c.machine.version(pb::VersionRequest {}).await.is_ok()
        {
            return c;
        }
        assert!(Instant::now() < deadline, "no mTLS admin access within {within:?}:\n{}", node.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A resource's spec, None when it does not exist.
async fn spec(c: &mut NodeClient, r#type: &str) -> Option<Value> {
    let got = c
        .resources
        .get(pb::GetRequest { namespace: String::new(), r#type: r#type.into(), id: "platform".into() })
        .await;
    match got {
        Ok(r) => Some(serde_json::from_str(&r.into_inner().resource.expect("resource").spec_json).expect("spec json")),
        Err(status) if status.code() == tonic::Code::NotFound => None,
        Err(status) => panic!("get {type}: {status}"),
    }
}

/// Waits until `PlatformMetadata` satisfies `ok`; returns it.
async fn wait_metadata(c: &mut NodeClient, node: &Node, what: &str, ok: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let current = spec(c, "platformmetadata").await;
        if let Some(m) = &current
            && ok(m)
        {
            return m.clone();
        }
        assert!(Instant::now() < deadline, "PlatformMetadata never {what}: {current:#?}\n{}", node.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Every event (audit and machine) the node keeps.
async fn events(c: &mut NodeClient) -> Vec<pb::Event> {
    let mut stream =
        c.machine.events(pb::EventsRequest { tail_events: -1, follow: false }).await.expect("events").into_inner();
    let mut out = Vec::new();
    while let Some(e) =
        tokio::time::timeout(Duration::from_secs(5), stream.message()).await.expect("events stall").unwrap()
    {
        out.push(e);
    }
    out
}

/// The machine events that say the metadata service missed its budget.
async fn budget_events(c: &mut NodeClient) -> Vec<pb::Event> {
    let all = events(c).await;
    all.into_iter().filter(|e| e.kind == "platform" && e.message.contains("did not answer within 2 s")).collect()
}

async fn refresh(c: &mut NodeClient) -> pb::PlatformRefreshResponse {
    c.machine.platform_refresh(pb::PlatformRefreshRequest {}).await.expect("PlatformRefresh").into_inner()
}

/// `config` with a `machine.platform` section (`yaml` indented for it).
fn with_platform(config: &str, yaml: &str) -> String {
    let at = config.find("\n  logging:").expect("the template has a logging section");
    format!("{}\n  platform:\n    {yaml}{}", &config[..at], &config[at..])
}

/// Answers 200 to everything and records it (through [`MockServer`]).
struct Anything;

impl Cloud for Anything {
    fn handle(&self, _request: &Request) -> Response {
        Response::text("ok")
    }
}

/// The platform the rows' DMI marks, and the marks.
const TABLE: &[(&str, &[(&str, &str)])] = &[
    ("aws", &[("sys_vendor", "Amazon EC2"), ("product_uuid", "ec2e1916-9099-7caf-fd21-012345abcdef")]),
    ("aws", &[("product_uuid", "EC2E1916-9099-7CAF-FD21-012345ABCDEF"), ("sys_vendor", "Xen")]),
    ("gcp", &[("sys_vendor", "Google"), ("product_name", "Google Compute Engine")]),
    ("azure", &[("sys_vendor", "Microsoft Corporation"), ("chassis_asset_tag", "7783-7084-3265-9085-8269-3286-77")]),
    ("digitalocean", &[("sys_vendor", "DigitalOcean"), ("product_name", "Droplet")]),
    ("hetzner", &[("sys_vendor", "Hetzner"), ("product_name", "vServer")]),
    ("oracle", &[("sys_vendor", "QEMU"), ("chassis_asset_tag", "OracleCloud.com")]),
    ("openstack", &[("sys_vendor", "OpenStack Foundation"), ("product_name", "OpenStack Nova")]),
    ("vultr", &[("sys_vendor", "Vultr"), ("product_name", "VC2")]),
    ("upcloud", &[("sys_vendor", "UpCloud"), ("product_name", "Cloud Server")]),
    ("exoscale", &[("sys_vendor", "Exoscale"), ("product_name", "Exoscale Compute Instance")]),
    ("akamai", &[("sys_vendor", "Linode"), ("product_name", "Compute Instance")]),
    ("akamai", &[("sys_vendor", "Akamai")]),
    ("nocloud", &[("sys_vendor", "QEMU"), ("product_serial", "ds=nocloud;h=node-7")]),
    ("metal", &[]),
    ("metal", &[("sys_vendor", "QEMU"), ("product_name", "Standard PC (Q35 + ICH9, 2009)")]),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn detection_picks_exactly_the_marked_provider_and_sends_no_packet() {
    let pki = Pki::new();
    let env = Env::new();
    env.set_dmi(&[]);
    // A mock on the namespace's loopback that the detect-network fixture
    // aims at, with grants that would let it through.
    let listener = env.ns.listen("127.0.0.1:0".parse().unwrap()).unwrap();
    let mock = MockServer::from_listener(listener, Arc::new(Anything)).await.unwrap();
    let port = mock.addr.port();
    let net_instance = |id: &str, platform: &str| {
        format!(
            "\n      - id: {id}\n        plugin: detect-network\n        config: {{ url: \"http://127.0.0.1:{port}\", \
             probe-host: 127.0.0.1, probe-port: \"{port}\"{platform} }}\n        grants: {{ config: true, http: [{{ url: \
             \"http://127.0.0.1:{port}/\" }}], probe: [\"tcp://127.0.0.1:{port}\", \"http://127.0.0.1:{port}/\"] }}"
        )
    };
    let plugins = format!(
        "allowUnsigned: true\n    instances:{}{}",
        net_instance("detect-net", ""),
        net_instance("net-control", ", platform: control")
    );
    let config =
        with_platform(&config_with_plugins(&pki, "detect", &plugins), "providers:\n      detectnet: detect-net\n");
    let node = env.start(Some(config)).await;
    let mut c = wait_mtls(&node, &pki, Duration::from_secs(30)).await;
    install(c.channel.clone(), &bundle("detect-network")).await.expect("install detect-network");
    // Wait for the round the install started: a refresh during a round
    // may answer with that round.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let detection = spec(&mut c, "platformdetection").await;
        let answers = detection.as_ref().and_then(|d| d["answers"].as_array().cloned()).unwrap_or_default();
        if answers.iter().any(|a| a["provider"] == "detectnet" && a["answer"] == "no") {
            break;
        }
        assert!(Instant::now() < deadline, "the replacement never answered: {detection:#?}\n{}", node.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Every shipped provider and the replacement answer (the first
    // detection may have run before the fixture was installed).
    let shipped = [
        "akamai",
        "aws",
        "azure",
        "digitalocean",
        "exoscale",
        "gcp",
        "hetzner",
        "nocloud",
        "openstack",
        "oracle",
        "upcloud",
        "vultr",
    ];
    for (want, marks) in TABLE {
        env.set_dmi(marks);
        let answer = refresh(&mut c).await;
        assert_eq!(answer.platform, *want, "{marks:?}: {answer:?}\n{}", node.log());
        let detection = spec(&mut c, "platformdetection").await.expect("PlatformDetection");
        assert_eq!(detection["platform"], *want, "{detection:#}");
        assert_eq!(detection["source"], "detection", "{detection:#}");
        assert!(detection.get("error").is_none(), "{detection:#}");
        let answers = detection["answers"].as_array().unwrap();
        let mut providers: Vec<&str> = answers.iter().map(|a| a["provider"].as_str().unwrap()).collect();
        providers.sort();
        let mut expected: Vec<&str> = shipped.iter().copied().chain(["detectnet"]).collect();
        expected.sort();
        assert_eq!(providers, expected, "{detection:#}");
        let yes: Vec<&str> =
            answers.iter().filter(|a| a["answer"] == "yes").map(|a| a["provider"].as_str().unwrap()).collect();
        let wanted: &[&str] = if *want == "metal" { &[] } else { &[*want] };
        assert_eq!(yes, wanted, "{marks:?}: {detection:#}");
        for a in answers {
            assert!(a["answer"] == "yes" || a["answer"] == "no", "{marks:?}: every provider answers: {a}");
        }
        let replacement = answers.iter().find(|a| a["provider"] == "detectnet").unwrap();
        assert_eq!(replacement["instance"], "detect-net", "{replacement}");
        let aws = answers.iter().find(|a| a["provider"] == "aws").unwrap();
        assert_eq!(aws["instance"], "platform-aws", "{aws}");
    }

    // Two providers' marks at once: an error naming both, no platform.
    env.set_dmi(&[("sys_vendor", "Hetzner"), ("chassis_asset_tag", "OracleCloud.com")]);
    let answer = refresh(&mut c).await;
    assert_eq!(answer.platform, "", "{answer:?}");
    assert!(answer.message.contains("hetzner") && answer.message.contains("oracle"), "{answer:?}");
    let detection = spec(&mut c, "platformdetection").await.unwrap();
    assert_eq!(detection["platform"], "", "{detection:#}");
    let error = detection["error"].as_str().unwrap();
    assert!(error.contains("several providers") && error.contains("hetzner, oracle"), "{error}");
    assert!(spec(&mut c, "platformmetadata").await.is_none(), "no platform, no metadata");

    // The fixture's detect() asked the network every time and was denied
    // every time; nothing reached the mock.
    assert_eq!(mock.hits(), Vec::<String>::new(), "detection sent requests");
    let status = plugin_client(c.channel.clone())
        .status(pb::PluginStatusRequest { id: "detect-network".into() })
        .await
        .unwrap()
        .into_inner();
    let lines: Vec<&str> =
        status.log.iter().filter(|l| l.instance == "detect-net").map(|l| l.message.as_str()).collect();
    for what in ["http-get", "http-status", "tcp-connect"] {
        let denied =
            lines.iter().filter(|l| l.starts_with(&format!("detect {what}: denied: no network during detect")));
        assert!(denied.count() >= TABLE.len(), "{what}: {lines:#?}");
    }
    assert!(!lines.iter().any(|l| l.contains("NOT denied")), "{lines:#?}");

    // The control: the same grants let fetch() through to the same mock.
    let control = run(&c, "net-control").await;
    let result: Value = serde_json::from_str(&control.result_json).unwrap();
    assert_eq!(result["detected"], true, "{result:#}");
    assert_eq!(result["fetch"]["ok"]["platform"], "control", "{result:#}");
    assert_eq!(mock.hits(), ["GET /fetch"], "the grants reach the mock outside detect()");
    let status = plugin_client(c.channel.clone())
        .status(pb::PluginStatusRequest { id: "detect-network".into() })
        .await
        .unwrap()
        .into_inner();
    let control_lines: Vec<&str> =
        status.log.iter().filter(|l| l.instance == "net-control").map(|l| l.message.as_str()).collect();
    assert!(control_lines.iter().any(|l| l.starts_with("detect http-get: denied")), "{control_lines:#?}");
    assert!(control_lines.contains(&"fetch http-get: HTTP 200"), "{control_lines:#?}");

    // The replacement is chosen when it alone says yes: pinned by config,
    // it runs instead of nothing shipped.
    env.set_dmi(&[]);
    let pinned = with_platform(
        &config_with_plugins(&pki, "detect", &plugins),
        "name: detectnet\n    providers:\n      detectnet: net-control\n",
    );
    c.machine
        .apply_configuration(pb::ApplyConfigurationRequest { data: pinned.into_bytes(), ..Default::default() })
        .await
        .expect("apply the pinned config");
    let m = wait_metadata(&mut c, &node, "from net-control", |m| m["instance"] == "net-control").await;
    assert_eq!(m["platform"], "detectnet", "{m:#}");
    assert_eq!(m["metadata"]["hostname"], "detect-network", "{m:#}");
    let detection = spec(&mut c, "platformdetection").await.unwrap();
    assert_eq!(detection["source"], "config", "{detection:#}");
    // A refresh of a pinned platform answers at once, twice in a row (the
    // same choice is still a new round).
    for _ in 0..2 {
        let asked = Instant::now();
        let answer = refresh(&mut c).await;
        assert_eq!(answer.platform, "detectnet", "{answer:?}");
        assert!(answer.message.contains("from config"), "{answer:?}");
        assert!(asked.elapsed() < Duration::from_secs(5), "{:?}", asked.elapsed());
    }

    // The kernel command line wins over the config, and over detection.
    let cmdline = env.tmp.path().join("cmdline");
    for (line, want, message) in [
        ("console=ttyS0 bronze.platform=gcp quiet", "gcp", "from kernel command line"),
        ("bronze.platform=metal", "metal", "from kernel command line"),
        ("bronze.platform=nosuch", "", "platform nosuch (from the kernel command line): no provider is installed"),
    ] {
        std::fs::write(&cmdline, format!("{line}\n")).unwrap();
        let answer = refresh(&mut c).await;
        assert_eq!(answer.platform, want, "{line}: {answer:?}");
        assert!(answer.message.contains(message), "{line}: {answer:?}");
        let detection = spec(&mut c, "platformdetection").await.unwrap();
        assert_eq!(detection["answers"], serde_json::json!([]), "a pin asks no provider: {detection:#}");
    }
    assert!(spec(&mut c, "platformmetadata").await.is_none(), "no platform, no metadata");
    // `detect: false` without a pin: metal, even on EC2.
    std::fs::write(&cmdline, "console=ttyS0\n").unwrap();
    env.ec2();
    let off = with_platform(&config_with_plugins(&pki, "detect", &plugins), "detect: false\n");
    c.machine
        .apply_configuration(pb::ApplyConfigurationRequest { data: off.into_bytes(), ..Default::default() })
        .await
        .expect("apply detect: false");
    let answer = refresh(&mut c).await;
    assert_eq!(answer.platform, "metal", "{answer:?}");
    let detection = spec(&mut c, "platformdetection").await.unwrap();
    assert_eq!(
        (&detection["source"], &detection["answers"]),
        (&"config".into(), &serde_json::json!([])),
        "{detection:#}"
    );
}

/// A config as user data: the node leaves maintenance mode by itself.
/// Then the cache (service down at the next boot) and the CLI.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_data_config_is_applied_then_cached_metadata_serves_a_boot_without_the_service() {
    let pki = Pki::new();
    let env = Env::new();
    env.ec2();
    let config = pki.node_config("from-user-data");
    let mock = env.imds(Arc::new(Aws::new().set("user-data", config.clone()))).await;
    // No --config and no client until mTLS works.
    let mut node = env.spawn(None);
    let mut c = wait_mtls(&node, &pki, Duration::from_secs(60)).await;
    assert_eq!(node.stored_config().as_deref(), Some(config.as_bytes()), "the user data is the stored config");
    assert!(node.log().contains("maintenance mode"), "it started in maintenance mode:\n{}", node.log());
    let m = wait_metadata(&mut c, &node, "fetched", |m| m["cached"] == false).await;
    assert_eq!(m["platform"], "aws", "{m:#}");
    assert_eq!(m["instance"], "platform-aws", "{m:#}");
    assert_eq!(m["metadata"]["hostname"], AWS_HOSTNAME, "{m:#}");
    assert_eq!(m["attempts"], 1, "{m:#}");
    assert_eq!(m["userData"]["kind"], "machine-config", "{m:#}");
    assert_eq!(m["userData"]["action"], "applied", "{m:#}");
    assert_eq!(m["userData"]["bytes"], config.len(), "{m:#}");
    assert!(m["metadata"].get("userData").is_none(), "user data is never published: {m:#}");
    let events = events(&mut c).await;
    let audit = events
        .iter()
        .filter_map(|e| e.audit.as_ref())
        .find(|a| a.subject == "platform")
        .unwrap_or_else(|| panic!("no audit event from the platform: {events:#?}"));
    assert_eq!(audit.result, "ok", "{audit:?}");
    assert!(
        events.iter().any(|e| e.kind == "platform" && e.message.contains("machine config applied from aws user data")),
        "{events:#?}"
    );
    // The token flow against the real address, through the manifest grants.
    assert_eq!(mock.hits()[0], "PUT /latest/api/token", "{:?}", mock.hits());
    assert!(mock.hits().contains(&"GET /latest/user-data".to_string()), "{:?}", mock.hits());

    // The cache is written atomically in the state dir.
    let cached: Value = serde_json::from_slice(&std::fs::read(env.state_dir().join("platform-metadata.json")).unwrap())
        .expect("the cache is JSON");
    assert_eq!(cached["metadata"]["hostname"], AWS_HOSTNAME, "{cached:#}");
    // It holds the user data (a config with the CA key): owner only.
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(env.state_dir().join("platform-metadata.json")).unwrap().permissions(),
    );
    assert_eq!(mode & 0o777, 0o600, "{mode:o}");

    // The real CLI: an operator refreshes, a reader may not.
    let dir = tempfile::tempdir().unwrap();
    let admin = dir.path().join("admin");
    let reader = dir.path().join("reader");
    pki.write_bronzeconfig(&admin, std::slice::from_ref(&node.addr), ADMIN);
    pki.write_bronzeconfig(&reader, std::slice::from_ref(&node.addr), &["os:reader"]);
    let ran = bronzectl(Some(&admin), &["platform", "refresh"]).await;
    assert_eq!(ran.code, 0, "{ran:?}");
    let line = ran.stdout.lines().nth(1).unwrap_or_else(|| panic!("{ran:?}"));
    assert!(line.starts_with(&node.addr) && line.contains("aws") && line.contains("detection"), "{ran:?}");
    let ran = bronzectl(Some(&admin), &["-o", "json", "platform", "refresh"]).await;
    assert_eq!(ran.code, 0, "{ran:?}");
    let json: Value = serde_json::from_str(ran.stdout.trim()).unwrap_or_else(|e| panic!("{e}: {ran:?}"));
    assert_eq!(json["platform"], "aws", "{json:#}");
    let denied = bronzectl(Some(&reader), &["platform", "refresh"]).await;
    assert_ne!(denied.code, 0, "{denied:?}");
    assert!(denied.stdout.contains("PermissionDenied") || denied.stdout.contains("permission denied"), "{denied:?}");
    let mut reader_client = NodeClient::connect(&node.addr, &pki.auth(&["os:reader"])).await.unwrap();
    let status = reader_client.machine.platform_refresh(pb::PlatformRefreshRequest {}).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status}");
    let got = bronzectl(Some(&reader), &["-o", "json", "get", "platformmetadata"]).await;
    assert_eq!(got.code, 0, "a reader reads it: {got:?}");
    assert!(got.stdout.contains(AWS_HOSTNAME), "{got:?}");

    // Second boot, same state dir, the service down: the cached answer,
    // marked stale, at once.
    node.signal_and_wait(nix::sys::signal::Signal::SIGTERM, Duration::from_secs(15));
    mock.faults.down.store(true, std::sync::atomic::Ordering::SeqCst);
    let before = mock.hits().len();
    let node = env.start(None).await;
    let mut c = wait_mtls(&node, &pki, Duration::from_secs(30)).await;
    let m = wait_metadata(&mut c, &node, "cached", |m| m["cached"] == true).await;
    assert_eq!(m["metadata"]["hostname"], AWS_HOSTNAME, "{m:#}");
    assert_eq!(m["platform"], "aws", "{m:#}");
    assert!(m["ageSeconds"].as_u64().is_some(), "{m:#}");
    assert!(!m["fetchedAt"].as_str().unwrap().is_empty(), "{m:#}");
    let m = wait_metadata(&mut c, &node, "retrying with the cache", |m| m["lastError"].is_string()).await;
    assert_eq!(m["cached"], true, "{m:#}");
    assert_eq!(m["metadata"]["hostname"], AWS_HOSTNAME, "a failed retry keeps the cached answer: {m:#}");
    assert!(m["attempts"].as_u64().unwrap() >= 1, "{m:#}");
    assert_eq!(mock.hits().len(), before, "the mock was down");
    // The stored config stays; the node is the same.
    assert_eq!(node.stored_config().as_deref(), Some(config.as_bytes()));

    // Back up: a refresh fetches again.
    mock.faults.down.store(false, std::sync::atomic::Ordering::SeqCst);
    let answer = refresh(&mut c).await;
    assert_eq!(answer.platform, "aws", "{answer:?}");
    let m = wait_metadata(&mut c, &node, "fresh again", |m| m["cached"] == false).await;
    assert_eq!(m["metadata"]["hostname"], AWS_HOSTNAME, "{m:#}");
    assert_eq!(m["ageSeconds"], 0, "{m:#}");
    assert!(m.get("lastError").is_none(), "{m:#}");
    assert_eq!(m["userData"]["action"], "kept-stored-config", "{m:#}");
    assert!(mock.hits().len() > before, "{:?}", mock.hits());

    // Another platform: the cached answer of the old one is forgotten.
    env.set_dmi(&[("product_name", "Google Compute Engine")]);
    let answer = refresh(&mut c).await;
    assert_eq!(answer.platform, "gcp", "{answer:?}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while spec(&mut c, "platformmetadata").await.is_some() {
        assert!(Instant::now() < deadline, "aws metadata still published on gcp");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!env.state_dir().join("platform-metadata.json").exists(), "the aws cache stays on gcp");
}

/// The aws mock whose user data the test switches while it runs.
struct SwitchableUserData {
    aws: Aws,
    user_data: Mutex<Vec<u8>>,
}

impl Cloud for SwitchableUserData {
    fn handle(&self, request: &Request) -> Response {
        let response = self.aws.handle(request);
        if request.path == "/latest/user-data" && response.status == 200 {
            return Response::new(200, "application/octet-stream", self.user_data.lock().unwrap().clone());
        }
        response
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_user_data_keeps_maintenance_cloud_config_is_ignored_and_a_stored_config_stays() {
    let pki = Pki::new();
    let env = Env::new();
    env.ec2();
    let good = pki.node_config("good");
    // An unknown field in an otherwise valid config.
    let bad = good.replacen("  sysctls: {}\n", "  sysctls: {}\n  sysctlz: {}\n", 1);
    assert_ne!(bad, good);
    let bad_line = bad.lines().position(|l| l == "  sysctlz: {}").unwrap() + 1;
    let cloud = Arc::new(SwitchableUserData { aws: Aws::new(), user_data: Mutex::new(bad.clone().into_bytes()) });
    let _mock = env.imds(cloud.clone()).await;
    let node = env.start(None).await;

    // The node stays in maintenance mode, the error in its log.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !node.log().contains("user data is not a valid machine config") {
        assert!(Instant::now() < deadline, "no user data error in the log:\n{}", node.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let log = node.log();
    let error = log.lines().find(|l| l.contains("user data is not a valid machine config")).unwrap();
    assert!(error.contains("sysctlz"), "the field: {error}");
    assert!(error.contains(&format!("line {bad_line}")), "the line {bad_line}: {error}");
    assert!(node.stored_config().is_none());
    assert!(
        NodeClient::connect(&node.addr, &pki.auth(ADMIN)).await.is_err()
            || NodeClient::connect(&node.addr, &pki.auth(ADMIN))
                .await
                .unwrap()
                .machine
                .version(pb::VersionRequest {})
                .await
                .is_err(),
        "still in maintenance mode"
    );
    // MachineStatus's reason, readable in maintenance mode (Version): the
    // decode error with its field and line.
    let deadline = Instant::now() + Duration::from_secs(10);
    let reason = loop {
        let mut insecure = NodeClient::connect(&node.addr, &Auth::Insecure { fingerprint: None }).await.unwrap();
        let v = insecure.machine.version(pb::VersionRequest {}).await.unwrap().into_inner();
        assert!(v.maintenance);
        if !v.maintenance_reason.is_empty() {
            break v.maintenance_reason;
        }
        assert!(Instant::now() < deadline, "no maintenance reason in Version");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(reason.contains("user data is not a valid machine config"), "{reason}");
    assert!(reason.contains("sysctlz") && reason.contains(&format!("line {bad_line}")), "{reason}");

    // A person applies a valid config; the events keep the warning.
    node.apply_maintenance(&good).await;
    let mut c = wait_mtls(&node, &pki, Duration::from_secs(30)).await;
    let all = events(&mut c).await;
    let warning = all
        .iter()
        .find(|e| e.kind == "platform" && e.message.contains("not a valid machine config"))
        .unwrap_or_else(|| panic!("no platform warning: {all:#?}"));
    assert_eq!(warning.severity, "warning", "{warning:?}");
    assert!(
        warning.message.contains("sysctlz") && warning.message.contains(&format!("line {bad_line}")),
        "{warning:?}"
    );
    assert!(
        all.iter().filter_map(|e| e.audit.as_ref()).any(|a| a.subject == "platform" && a.result == "invalid-argument"),
        "{all:#?}"
    );
    let m = spec(&mut c, "platformmetadata").await.expect("PlatformMetadata");
    assert_eq!(m["userData"]["action"], "invalid", "{m:#}");
    assert_eq!(m["metadata"]["hostname"], AWS_HOSTNAME, "{m:#}");

    // A different valid config as user data never replaces the stored one.
    *cloud.user_data.lock().unwrap() = pki.node_config("other").into_bytes();
    refresh(&mut c).await;
    let m = wait_metadata(&mut c, &node, "kept", |m| m["userData"]["action"] == "kept-stored-config").await;
    assert_eq!(m["userData"]["kind"], "machine-config", "{m:#}");
    assert_eq!(node.stored_config().as_deref(), Some(good.as_bytes()), "the stored config stays");

    // #cloud-config is not for Bronze: ignored, with a warning.
    *cloud.user_data.lock().unwrap() = b"#cloud-config\nusers:\n  - name: alice\n".to_vec();
    refresh(&mut c).await;
    let m = wait_metadata(&mut c, &node, "ignored", |m| m["userData"]["action"] == "ignored").await;
    assert_eq!(m["userData"]["kind"], "cloud-config", "{m:#}");
    let all = events(&mut c).await;
    let ignored = all
        .iter()
        .find(|e| e.kind == "platform" && e.message.contains("cloud-config user data from aws ignored"))
        .unwrap_or_else(|| panic!("no warning: {all:#?}"));
    assert_eq!(ignored.severity, "warning");
    assert_eq!(node.stored_config().as_deref(), Some(good.as_bytes()));
}

/// Calls `Version` every 100 ms from start to [`ApiProbe::finish`]: the API
/// must answer all along, quickly.
struct ApiProbe {
    stop: Arc<std::sync::atomic::AtomicBool>,
    task: tokio::task::JoinHandle<(Duration, u32)>,
}

impl ApiProbe {
    fn start(node: &Node, pki: &Pki) -> ApiProbe {
        let addr = node.addr.clone();
        let auth = pki.auth(ADMIN);
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let task = tokio::spawn(async move {
            let mut c = NodeClient::connect(&addr, &auth).await.expect("connect");
            let mut worst = Duration::ZERO;
            let mut calls = 0u32;
            while !flag.load(std::sync::atomic::Ordering::SeqCst) {
                let started = Instant::now();
                c.machine.version(pb::VersionRequest {}).await.expect("the API answers");
                worst = worst.max(started.elapsed());
                calls += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            (worst, calls)
        });
        ApiProbe { stop, task }
    }

    /// Stops; asserts every call was answered within a second.
    async fn finish(self, ran: Duration) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let (worst, calls) = self.task.await.expect("the API probe panicked: a call failed");
        let expected = (ran.as_millis() / 1100) as u32;
        assert!(calls >= expected, "{calls} calls in {ran:?}: the API stalled");
        assert!(worst < Duration::from_secs(1), "the API took {worst:?} to answer");
        eprintln!("API probe: {calls} Version calls over {ran:?}, the slowest {worst:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_past_the_budget_five_503s_and_hostile_answers() {
    use std::sync::atomic::Ordering::SeqCst;
    let pki = Pki::new();
    let env = Env::new();
    env.ec2();
    // Its user data is another valid config: the one given with --config
    // stays.
    let other = pki.node_config("other");
    let mock = env.imds(Arc::new(Aws::new().set("user-data", other.clone()))).await;
    mock.faults.down.store(true, SeqCst);
    let config = with_platform(&pki.node_config("retries"), "fetchTimeout: 2s\n");
    let node = env.start(Some(config.clone())).await;
    let mut c = wait_mtls(&node, &pki, Duration::from_secs(30)).await;
    let probe = ApiProbe::start(&node, &pki);
    let probing = Instant::now();

    // Down past the 2 s budget: a warning in the log and a machine event.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !node.log().contains("did not answer within the boot budget") {
        assert!(Instant::now() < deadline, "no budget warning:\n{}", node.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let over = budget_events(&mut c).await;
    assert_eq!(over.len(), 1, "said once: {over:#?}");
    assert_eq!(over[0].severity, "warning");
    assert!(over[0].message.contains("using no platform metadata"), "{:?}", over[0]);
    assert!(spec(&mut c, "platformmetadata").await.is_none(), "nothing fetched, nothing cached");
    assert!(mock.hits().is_empty(), "{:?}", mock.hits());

    // Back up: a refresh fetches.
    mock.faults.down.store(false, SeqCst);
    refresh(&mut c).await;
    let m = wait_metadata(&mut c, &node, "fetched", |m| m["cached"] == false).await;
    assert_eq!(m["metadata"]["hostname"], AWS_HOSTNAME, "{m:#}");
    assert_eq!(m["userData"]["kind"], "machine-config", "{m:#}");
    assert_eq!(m["userData"]["action"], "kept-stored-config", "{m:#}");
    assert_eq!(m["userData"]["bytes"], other.len(), "{m:#}");
    assert_eq!(node.stored_config().as_deref(), Some(config.as_bytes()), "the --config one stays");

    // Five 503s then success: six attempts, each failing at its first
    // request (the token PUT). The controller is idle after its answer, so
    // every 503 goes to this refresh.
    let before = mock.hits().len();
    let said = budget_events(&mut c).await.len();
    mock.faults.fail_next.store(5, SeqCst);
    let started = Instant::now();
    refresh(&mut c).await;
    // After an answer, a refresh has a budget of its own: its first failed
    // attempt is no warning yet.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(mock.faults.fail_next.load(SeqCst) < 5, "the refresh did not fetch");
    let early = budget_events(&mut c).await;
    assert_eq!(early.len(), said, "a refresh's first failure warned of the boot budget: {early:#?}");
    let m = wait_metadata(&mut c, &node, "fetched after the 503s", |m| m["attempts"] == 6 || m["attempts"] == 1).await;
    let took = started.elapsed();
    assert_eq!(m["attempts"], 6, "{m:#}");
    assert!(m.get("lastError").is_none(), "{m:#}");
    assert_eq!(m["metadata"]["hostname"], AWS_HOSTNAME, "{m:#}");
    let hits = mock.hits()[before..].to_vec();
    assert_eq!(&hits[..6], vec!["PUT /latest/api/token"; 6], "{hits:?}");
    assert!(hits[6].starts_with("GET /latest/"), "{hits:?}");
    // Backoff: 250 + 500 + 1000 + 2000 + 4000 ms, each ±20 %.
    assert!(took >= Duration::from_millis(6200), "retried too fast: {took:?}");
    assert!(took < Duration::from_secs(25), "{took:?}");
    // Past its own 2 s (the fifth failure, at about 3.75 s) it warned, and
    // said the last answer stays in use.
    let over = budget_events(&mut c).await;
    assert_eq!(over.len(), said + 1, "{over:#?}");
    let last = over.last().unwrap();
    assert!(last.message.contains("HTTP 503") && last.message.contains("using the last answer"), "{last:?}");

    // Hostile: a 100 MB body, bounded; the last answer stays, the error shows.
    mock.faults.huge.store(true, SeqCst);
    let rss_before = bronze_tests::plugins::rss_bytes(node.pid());
    refresh(&mut c).await;
    let m = wait_metadata(&mut c, &node, "failing on the huge body", |m| m["lastError"].is_string()).await;
    let error = m["lastError"].as_str().unwrap();
    eprintln!("the 100 MB body: {error}");
    assert!(error.contains("/latest/api/token") && error.contains("larger than 4096 bytes"), "{error}");
    assert_eq!(m["metadata"]["hostname"], AWS_HOSTNAME, "the last answer stays: {m:#}");
    let rss_after = bronze_tests::plugins::rss_bytes(node.pid());
    assert!(rss_after < rss_before + (64 << 20), "RSS grew from {rss_before} to {rss_after}");

    // Trickling one byte a second: the request's timeout ends it.
    mock.faults.huge.store(false, SeqCst);
    mock.faults.trickle.store(true, SeqCst);
    let first = m["lastError"].as_str().unwrap().to_string();
    let started = Instant::now();
    refresh(&mut c).await;
    let deadline = Instant::now() + Duration::from_secs(40);
    let m = loop {
        let m = spec(&mut c, "platformmetadata").await.unwrap();
        if m["lastError"].as_str().is_some_and(|e| e != first) {
            break m;
        }
        assert!(Instant::now() < deadline, "the trickle never failed: {m:#}\n{}", node.log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let error = m["lastError"].as_str().unwrap();
    eprintln!("the trickle, after {:?}: {error}", started.elapsed());
    assert!(error.contains("169.254.169.254: timed out"), "{error}");
    assert!(started.elapsed() < Duration::from_secs(30), "{:?}", started.elapsed());
    assert_eq!(m["metadata"]["hostname"], AWS_HOSTNAME, "{m:#}");
    probe.finish(probing.elapsed()).await;
}

/// Process mode asks no metadata service unless told to: with the image's
/// providers and a machine whose DMI says EC2, a node started without
/// `--platform` is `metal` and never calls a provider.
#[tokio::test]
async fn process_mode_detects_nothing_unless_told_to() {
    use bronze_tests::NodeOptions;
    let tmp = tempfile::tempdir().unwrap();
    let dmi = tmp.path().join("sys/class/dmi/id");
    std::fs::create_dir_all(&dmi).unwrap();
    std::fs::write(dmi.join("sys_vendor"), "Amazon EC2\n").unwrap();
    std::fs::write(dmi.join("product_uuid"), "ec2e1916-9099-7caf-fd21-012345abcdef\n").unwrap();
    let image = bundle_dir("aws").parent().expect("target/plugins").to_path_buf();
    let pki = Pki::new();
    let node = Node::start_with(NodeOptions {
        config: Some(pki.node_config("no-detect")),
        args: vec![
            "--image-plugins".into(),
            image.display().to_string(),
            "--sysfs".into(),
            tmp.path().join("sys").display().to_string(),
        ],
        ..Default::default()
    })
    .await;
    let mut c = node.client(&pki.auth(ADMIN)).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    let detection = loop {
        if let Some(spec) = spec(&mut c, "platformdetection").await {
            break spec;
        }
        assert!(Instant::now() < deadline, "no PlatformDetection:\n{}", node.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(detection["platform"], "metal", "{detection}");
    assert_eq!(detection["source"], "--platform none", "{detection}");
    assert_eq!(detection["answers"], serde_json::json!([]), "no provider was asked: {detection}");
    assert!(!node.log().contains("platform metadata fetch"), "{}", node.log());
}
