//! Plugins end to end on a real `bronzed`: real components compiled from
//! `plugins/`, installed over the real API, calling real local servers.

use bronze_api::v1 as pb;
use bronze_bundle::SigningKey;
use bronze_tests::plugins::{TestHttpServer, bundle, client, config_with_plugins, install, instance_yaml, run, signed};
use bronze_tests::{Node, Pki};
use bronzectl::client::NodeClient;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

const ADMIN: &[&str] = &["os:admin"];

/// HealthCheck resources by instance id.
async fn health_checks(c: &mut NodeClient) -> BTreeMap<String, serde_json::Value> {
    let list = c
        .resources
        .list(pb::ListRequest { namespace: String::new(), r#type: "healthchecks".into() })
        .await
        .expect("list healthchecks")
        .into_inner();
    list.resources.into_iter().map(|r| (r.metadata.unwrap().id, serde_json::from_str(&r.spec_json).unwrap())).collect()
}

/// Waits until every instance in `want` reports the wanted status.
async fn wait_statuses(c: &mut NodeClient, want: &[(&str, &str)], node: &Node) -> BTreeMap<String, serde_json::Value> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let checks = health_checks(c).await;
        if want.iter().all(|(id, status)| checks.get(*id).is_some_and(|c| c["status"] == *status)) {
            return checks;
        }
        assert!(Instant::now() < deadline, "health checks never reached {want:?}: {checks:#?}\n{}", node.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn health_plugins_report_healthy_unhealthy_and_unreachable() {
    let pki = Pki::new();
    let key = SigningKey::generate().unwrap();
    let server = TestHttpServer::start().await;
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let tcp_port = tcp.local_addr().unwrap().port();
    let closed_port = bronze_tests::closed_port();
    let closed = closed_port.port;
    let port = server.port;
    let plugins = format!(
        r#"trustedKeys: ["{key}"]
    instances:
      - id: http-ok
        plugin: health-http
        config: {{ url: "http://127.0.0.1:{port}/ok/" }}
        grants: {{ config: true, http: [{{ url: "http://127.0.0.1:{port}/" }}] }}
        schedule: {{ interval: 200ms }}
      - id: http-bad
        plugin: health-http
        config: {{ url: "http://127.0.0.1:{port}/bad" }}
        grants: {{ config: true, http: [{{ url: "http://127.0.0.1:{port}/" }}] }}
        schedule: {{ interval: 200ms }}
      - id: http-down
        plugin: health-http
        config: {{ url: "http://127.0.0.1:{closed}/ok/" }}
        grants: {{ config: true, http: [{{ url: "http://127.0.0.1:{closed}/" }}] }}
        schedule: {{ interval: 200ms }}
      - id: tcp-ok
        plugin: health-tcp
        config: {{ host: 127.0.0.1, port: "{tcp_port}" }}
        grants: {{ config: true, probe: ["tcp://127.0.0.1:{tcp_port}"] }}
        schedule: {{ interval: 200ms }}
      - id: tcp-down
        plugin: health-tcp
        config: {{ host: 127.0.0.1, port: "{closed}" }}
        grants: {{ config: true, probe: ["tcp://127.0.0.1:{closed}"] }}
        schedule: {{ interval: 200ms }}
      - id: health-time
        grants: {{ facts: [time] }}
        schedule: {{ interval: 200ms }}"#,
        key = key.public_key()
    );
    let node = Node::start_configured(&config_with_plugins(&pki, "plugins", &plugins)).await;
    let mut c = node.client(&pki.auth(ADMIN)).await;
    for id in ["health-http", "health-tcp", "health-time"] {
        let done = install(c.channel.clone(), &signed(bundle(id), &key)).await.unwrap_or_else(|e| panic!("{id}: {e}"));
        assert_eq!(done.id, id);
        assert_eq!(done.signed_by, key.public_key().to_string());
    }
    let checks = wait_statuses(
        &mut c,
        &[
            ("http-ok", "healthy"),
            ("http-bad", "unhealthy"),
            ("http-down", "unhealthy"),
            ("tcp-ok", "healthy"),
            ("tcp-down", "unhealthy"),
            // Process mode without time servers never syncs.
            ("health-time", "unhealthy"),
        ],
        &node,
    )
    .await;
    assert!(checks["http-bad"]["summary"].as_str().unwrap().contains("500"), "{checks:#?}");
    assert!(checks["tcp-down"]["summary"].as_str().unwrap().contains(&closed.to_string()), "{checks:#?}");
    assert_eq!(checks["http-ok"]["plugin"], "health-http");
    assert_eq!(checks["http-ok"]["outcome"], "ok");
    assert!(server.hits().iter().any(|p| p == "/ok/"));

    // Failing checks are unmet conditions of the machine.
    let spec = bronze_tests::resource_spec(&mut c, "machinestatus", "machine").await;
    let unmet = spec["unmetConditions"].to_string();
    assert!(unmet.contains("healthcheck/http-bad") && unmet.contains("healthcheck/tcp-down"), "{unmet}");
    assert!(!unmet.contains("healthcheck/http-ok"), "{unmet}");
    assert_eq!(spec["ready"], false);

    // Status shows effective capabilities: imports ∩ manifest ∩ grant.
    let status = client(c.channel.clone())
        .status(pb::PluginStatusRequest { id: "health-tcp".into() })
        .await
        .unwrap()
        .into_inner();
    let info = status.plugin.unwrap();
    let tcp_ok = info.instances.iter().find(|i| i.id == "tcp-ok").unwrap();
    assert!(tcp_ok.capabilities.contains(&"bronze:host/probe".to_string()), "{tcp_ok:?}");
    assert!(!tcp_ok.capabilities.iter().any(|c| c.contains("http")), "{tcp_ok:?}");
    assert!(tcp_ok.runs >= 1);
    drop(tcp);
}

fn report(run: &pb::PluginRunResponse) -> serde_json::Value {
    serde_json::from_str(&run.result_json).unwrap_or_else(|e| panic!("result json {:?}: {e}", run.result_json))
}

#[tokio::test]
async fn an_import_without_a_grant_refuses_the_install_and_names_it() {
    let pki = Pki::new();
    let plugins = r#"allowUnsigned: true
    instances:
      - id: health-http
        config: { url: "http://127.0.0.1:1/ok/" }
        grants: { config: true }"#;
    let node = Node::start_configured(&config_with_plugins(&pki, "grants", plugins)).await;
    let c = node.client(&pki.auth(ADMIN)).await;
    let before = bronze_tests::plugins::files_under(&node.state_dir.join("plugins"));
    let err = install(c.channel.clone(), &bundle("health-http")).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err}");
    assert!(err.message().contains("bronze:host/http is imported but not granted"), "{err}");
    assert!(err.message().contains("machine.plugins.instances[0].grants.http"), "{err}");
    assert_eq!(bronze_tests::plugins::files_under(&node.state_dir.join("plugins")), before);
    let list = client(c.channel.clone()).list(pb::PluginListRequest {}).await.unwrap().into_inner();
    assert!(list.plugins.is_empty(), "{list:?}");
}

#[tokio::test]
async fn http_grants_allow_only_their_prefix_port_host_and_addresses() {
    let pki = Pki::new();
    let server = TestHttpServer::start().await;
    let port = server.port;
    let other_port = bronze_tests::free_port();
    let grant = format!(r#"config: true, http: [{{ url: "http://127.0.0.1:{port}/ok/" }}]"#);
    let cases = [
        ("allowed", format!("http://127.0.0.1:{port}/ok/")),
        ("redirect-in", format!("http://127.0.0.1:{port}/ok/redirect-in")),
        ("other-path", format!("http://127.0.0.1:{port}/other")),
        ("other-port", format!("http://127.0.0.1:{other_port}/ok/")),
        ("other-host", format!("http://127.0.0.2:{port}/ok/")),
        ("redirect-out", format!("http://127.0.0.1:{port}/ok/redirect-out")),
    ];
    let mut instances: String = cases
        .iter()
        .map(|(id, url)| instance_yaml(id, "health-http", &format!("url: \"{url}\""), &grant, None))
        .collect();
    // A name is granted, but it resolves to an address no grant names.
    let by_name = format!("http://localhost:{port}/ok/");
    instances.push_str(&instance_yaml(
        "by-name",
        "health-http",
        &format!("url: \"{by_name}\""),
        &format!("config: true, http: [{{ url: \"{by_name}\" }}]"),
        None,
    ));
    let plugins = format!("allowUnsigned: true\n    instances:{instances}");
    let node = Node::start_configured(&config_with_plugins(&pki, "http-grants", &plugins)).await;
    let c = node.client(&pki.auth(ADMIN)).await;
    install(c.channel.clone(), &bundle("health-http")).await.unwrap();

    for id in ["allowed", "redirect-in"] {
        let done = run(&c, id).await;
        assert_eq!(done.outcome.as_ref().unwrap().kind, "ok");
        assert_eq!(report(&done)["status"], "healthy", "{id}: {done:?}");
    }
    for (id, why) in [
        ("other-path", "/other"),
        ("other-port", &other_port.to_string()),
        ("other-host", "127.0.0.2"),
        ("redirect-out", "redirect"),
        ("by-name", "127.0.0.1"),
    ] {
        let done = run(&c, id).await;
        // A denial is an error value for the guest, never a trap.
        assert_eq!(done.outcome.as_ref().unwrap().kind, "ok", "{id}: {done:?}");
        let report = report(&done);
        let summary = report["summary"].as_str().unwrap();
        assert_eq!(report["status"], "unknown", "{id}: {report}");
        assert!(summary.contains("denied") && summary.contains(why), "{id}: {summary}");
    }
    let hits = server.hits();
    assert!(!hits.iter().any(|p| p == "/other"), "a denied request reached the server: {hits:?}");
    assert!(hits.iter().any(|p| p == "/ok/redirect-out"), "{hits:?}");
}

#[tokio::test]
async fn bad_bundles_are_refused_with_a_reason_and_leave_nothing_behind() {
    use bronze_tests::plugins::{files_under, install_raw};
    let pki = Pki::new();
    let trusted = SigningKey::generate().unwrap();
    let stranger = SigningKey::generate().unwrap();
    let plugins = format!(
        r#"trustedKeys: ["{}"]
    instances:
      - id: health-http
        config: {{ url: "http://127.0.0.1:1/ok/" }}
        grants: {{ config: true, http: [{{ url: "http://127.0.0.1:1/" }}] }}
      - id: metadata-static
        config: {{ platform: test }}
        grants: {{ config: true }}"#,
        trusted.public_key()
    );
    let node = Node::start_configured(&config_with_plugins(&pki, "bad-bundles", &plugins)).await;
    let c = node.client(&pki.auth(ADMIN)).await;
    let before = files_under(&node.state_dir.join("plugins"));
    let good = bundle("health-http");

    let mut corrupted = good.clone();
    let middle = corrupted.wasm.len() / 2;
    corrupted.wasm[middle..middle + 64].fill(0xff);
    let mut core_module = good.clone();
    core_module.wasm = b"\0asm\x01\0\0\0".to_vec();
    let mut wrong_world = bundle("metadata-static");
    wrong_world.manifest_bytes = String::from_utf8(wrong_world.manifest_bytes)
        .unwrap()
        .replace("metadata-provider", "health-check")
        .into_bytes();
    let mut tampered = signed(good.clone(), &trusted);
    tampered.wasm.push(0);
    let mut mismatch = good.clone();
    mismatch.manifest_bytes =
        String::from_utf8(mismatch.manifest_bytes).unwrap().replace("http = true", "").into_bytes();
    let cases = [
        ("corrupted wasm", signed(corrupted, &trusted), "not a valid component"),
        ("core module", signed(core_module, &trusted), "core WebAssembly module, not a component"),
        (
            "wrong world",
            signed(wrong_world, &trusted),
            "says world health-check but the component does not implement it",
        ),
        ("bad signature", tampered, "plugin.sig"),
        ("untrusted key", signed(good.clone(), &stranger), "plugin.sig"),
        ("unsigned", good.clone(), "unsigned"),
        (
            "manifest/import mismatch",
            signed(mismatch, &trusted),
            "imports bronze:host/http but plugin.toml does not request it",
        ),
    ];
    for (what, bundle, expected) in cases {
        let err = install(c.channel.clone(), &bundle).await.expect_err(what);
        assert!(matches!(err.code(), tonic::Code::InvalidArgument | tonic::Code::FailedPrecondition), "{what}: {err}");
        assert!(err.message().contains(expected), "{what}: {}", err.message());
        assert_eq!(files_under(&node.state_dir.join("plugins")), before, "{what} left files behind");
    }

    // Oversized: refused from the header, before any byte is sent.
    let header = pb::PluginInstallHeader {
        manifest: good.manifest_bytes.clone(),
        signature: vec![],
        wasm_size: bronze_bundle::MAX_WASM_BYTES + 1,
        wasm_sha256: String::new(),
    };
    let err = install_raw(c.channel.clone(), header, vec![]).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("the limit is"), "{err}");
    // More bytes than announced.
    let header = pb::PluginInstallHeader {
        manifest: good.manifest_bytes.clone(),
        signature: vec![],
        wasm_size: 10,
        wasm_sha256: String::new(),
    };
    let err = install_raw(c.channel.clone(), header, vec![vec![0; 64]]).await.unwrap_err();
    assert!(err.message().contains("exceeds header.wasm_size"), "{err}");
    assert_eq!(files_under(&node.state_dir.join("plugins")), before);

    // The node keeps working, and a good bundle still installs.
    install(c.channel.clone(), &signed(good, &trusted)).await.unwrap();
}

async fn status_of(c: &NodeClient, plugin: &str, instance: &str) -> pb::PluginInstanceStatus {
    let status = client(c.channel.clone())
        .status(pb::PluginStatusRequest { id: plugin.into() })
        .await
        .unwrap_or_else(|e| panic!("status {plugin}: {e}"))
        .into_inner();
    status.plugin.unwrap().instances.into_iter().find(|i| i.id == instance).unwrap()
}

#[tokio::test]
async fn hostile_plugins_are_contained_and_recorded() {
    use bronze_tests::plugins::rss_bytes;
    let pki = Pki::new();
    let server = TestHttpServer::start().await;
    let port = server.port;
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let tcp_port = tcp.local_addr().unwrap().port();
    let modes = ["ok", "loop", "alloc", "recurse", "trap", "log-flood", "huge-return", "slow-http"];
    let mut instances: String = modes
        .iter()
        .map(|mode| {
            let slow = format!("http://127.0.0.1:{port}/slow");
            let config = format!("mode: {mode}, url: \"{slow}\"");
            instance_yaml(
                &format!("h-{mode}"),
                "hostile",
                &config,
                &format!("config: true, http: [{{ url: \"{slow}\" }}]"),
                None,
            )
        })
        .collect();
    instances.push_str(&instance_yaml(
        "steady",
        "health-tcp",
        &format!("host: 127.0.0.1, port: \"{tcp_port}\""),
        &format!("config: true, probe: [\"tcp://127.0.0.1:{tcp_port}\"]"),
        Some("200ms"),
    ));
    let plugins = format!("allowUnsigned: true\n    instances:{instances}");
    let node = Node::start_configured(&config_with_plugins(&pki, "hostile", &plugins)).await;
    let c = node.client(&pki.auth(ADMIN)).await;
    install(c.channel.clone(), &bundle("health-tcp")).await.unwrap();
    install(c.channel.clone(), &bundle("hostile")).await.unwrap();
    // Warm up every code path once before the baseline.
    let first = run(&c, "h-ok").await;
    assert_eq!(report(&first)["status"], "healthy");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let baseline = rss_bytes(node.pid());
    let steady_before = status_of(&c, "health-tcp", "steady").await.runs;
    let started = Instant::now();

    let expected = [
        ("h-loop", "timeout", "deadline"),
        ("h-alloc", "limit", "memory limit"),
        // Rust guests keep their stack in linear memory: running off its
        // end is an out-of-bounds access rather than a wasm stack overflow.
        ("h-recurse", "trap", "wasm trap"),
        ("h-trap", "trap", "unreachable"),
        ("h-log-flood", "ok", ""),
        ("h-huge-return", "limit", ""),
    ];
    for round in 0..2 {
        for (id, kind, text) in expected {
            // The API answers while the plugin misbehaves.
            let call = tokio::spawn({
                let c = node.client(&pki.auth(ADMIN)).await;
                let id = id.to_string();
                async move { run(&c, &id).await }
            });
            let mut machine = node.client(&pki.auth(ADMIN)).await.machine;
            let asked = Instant::now();
            machine.version(pb::VersionRequest {}).await.expect("version during a hostile call");
            assert!(asked.elapsed() < Duration::from_secs(1), "API slow during {id}: {:?}", asked.elapsed());
            let done = call.await.unwrap();
            let outcome = done.outcome.unwrap();
            assert_eq!(outcome.kind, kind, "{id} round {round}: {outcome:?}");
            assert!(outcome.message.contains(text), "{id}: {outcome:?}");
            assert!(outcome.duration_us < 3_000_000, "{id} ran past its 2 s deadline: {outcome:?}");
        }
    }
    // A slow server: the plugin's request gives up in time and it says so.
    let slow = run(&c, "h-slow-http").await;
    assert_eq!(slow.outcome.as_ref().unwrap().kind, "ok", "{slow:?}");
    let slow_report = report(&slow);
    assert_eq!(slow_report["status"], "unhealthy", "{slow_report}");
    assert!(slow_report["summary"].as_str().unwrap().contains("timed out"), "{slow_report}");
    assert!(slow.outcome.unwrap().duration_us < 2_000_000);

    let flood = status_of(&c, "hostile", "h-log-flood").await;
    assert!(flood.log_dropped > 90_000, "log flood not rate limited: {flood:?}");
    let huge = status_of(&c, "hostile", "h-huge-return").await;
    assert_eq!(huge.last_outcome.unwrap().kind, "limit");

    // The well-behaved check kept its schedule throughout.
    let elapsed = started.elapsed();
    let steady = status_of(&c, "health-tcp", "steady").await;
    let expected_runs = (elapsed.as_millis() / 200) as u64;
    assert!(
        steady.runs - steady_before >= expected_runs / 2,
        "steady ran {} times in {elapsed:?} (every 200 ms expected)",
        steady.runs - steady_before
    );
    assert_eq!(steady.consecutive_failures, 0);

    // Memory comes back.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = rss_bytes(node.pid());
    assert!(after < baseline + (10 << 20), "RSS grew from {} to {} MiB", baseline >> 20, after >> 20);
    drop(tcp);
}

async fn artifacts(c: &NodeClient) -> BTreeMap<String, String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let list = client(c.channel.clone()).list(pb::PluginListRequest {}).await.unwrap().into_inner();
        let map: BTreeMap<String, String> = list.plugins.into_iter().map(|p| (p.id, p.artifact)).collect();
        if !map.values().any(|a| a == "loading") {
            return map;
        }
        assert!(Instant::now() < deadline, "plugins still loading: {map:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A TCP listener on 127.0.0.1 (keep it alive) and the YAML of a
/// `health-tcp` instance, id `health-tcp`, that probes it every `interval`.
async fn tcp_check(interval: &str) -> (tokio::net::TcpListener, String) {
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = tcp.local_addr().unwrap().port();
    let config = format!("host: 127.0.0.1, port: \"{port}\"");
    let grants = format!("config: true, probe: [\"tcp://127.0.0.1:{port}\"]");
    (tcp, instance_yaml("health-tcp", "health-tcp", &config, &grants, Some(interval)))
}

#[tokio::test]
async fn installed_plugins_come_back_from_the_aot_cache_and_a_corrupted_cache_is_recompiled() {
    use bronze_tests::NodeOptions;
    let pki = Pki::new();
    let (tcp, tcp_check) = tcp_check("200ms").await;
    let plugins = format!(
        "allowUnsigned: true\n    instances:{tcp_check}\n      - id: health-time\n        grants: {{ facts: [time] }}"
    );
    let config = config_with_plugins(&pki, "restart", &plugins);
    let tmp = tempfile::tempdir().unwrap();
    let state_dir = tmp.path().join("state");
    let start = |config: Option<String>| {
        Node::start_with(NodeOptions { config, state_dir: Some(state_dir.clone()), ..Default::default() })
    };
    let mut node = start(Some(config.clone())).await;
    let c = node.client(&pki.auth(ADMIN)).await;
    for id in ["health-tcp", "health-time"] {
        install(c.channel.clone(), &bundle(id)).await.unwrap();
    }
    assert_eq!(artifacts(&c).await.values().collect::<Vec<_>>(), ["compiled", "compiled"]);
    node.signal_and_wait(nix::sys::signal::Signal::SIGTERM, Duration::from_secs(10));

    let mut node = start(None).await;
    let mut c = node.client(&pki.auth(ADMIN)).await;
    let loaded = artifacts(&c).await;
    assert_eq!(loaded.values().collect::<Vec<_>>(), ["cache", "cache"], "{loaded:?}\n{}", node.log());
    wait_statuses(&mut c, &[("health-tcp", "healthy")], &node).await;
    node.signal_and_wait(nix::sys::signal::Signal::SIGTERM, Duration::from_secs(10));

    // Damage one artifact: detected, recompiled, and cached again.
    let cache = state_dir.join("plugins/cache");
    let damaged = std::fs::read_dir(&cache)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            let index = std::fs::read_to_string(state_dir.join("plugins/index.json")).unwrap();
            let index: serde_json::Value = serde_json::from_str(&index).unwrap();
            let sha = index["plugins"]["health-tcp"]["sha256"].as_str().unwrap().to_string();
            p.file_name().unwrap().to_string_lossy().starts_with(&sha)
        })
        .expect("health-tcp artifact");
    let mut bytes = std::fs::read(&damaged).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0xff;
    std::fs::write(&damaged, &bytes).unwrap();

    let mut node = start(None).await;
    let mut c = node.client(&pki.auth(ADMIN)).await;
    let loaded = artifacts(&c).await;
    assert_eq!(loaded["health-tcp"], "compiled", "{loaded:?}");
    assert_eq!(loaded["health-time"], "cache", "{loaded:?}");
    assert!(node.log().contains("corrupted"), "{}", node.log());
    wait_statuses(&mut c, &[("health-tcp", "healthy")], &node).await;
    node.signal_and_wait(nix::sys::signal::Signal::SIGTERM, Duration::from_secs(10));

    let node = start(None).await;
    let c = node.client(&pki.auth(ADMIN)).await;
    assert_eq!(artifacts(&c).await["health-tcp"], "cache");
    drop(tcp);
}

#[tokio::test]
async fn an_upgrade_under_a_100ms_schedule_loses_no_run_and_never_reports_unknown() {
    use tokio_stream::StreamExt;
    let pki = Pki::new();
    let (tcp, tcp_check) = tcp_check("100ms").await;
    let plugins = format!("allowUnsigned: true\n    instances:{tcp_check}");
    let node = Node::start_configured(&config_with_plugins(&pki, "upgrade", &plugins)).await;
    let mut c = node.client(&pki.auth(ADMIN)).await;
    let v1 = bundle("health-tcp");
    install(c.channel.clone(), &v1).await.unwrap();
    wait_statuses(&mut c, &[("health-tcp", "healthy")], &node).await;

    let mut watch = c
        .resources
        .watch(pb::WatchRequest { r#type: "healthchecks".into(), id: "health-tcp".into(), ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    let mut v2 = v1.clone();
    v2.manifest_bytes = String::from_utf8(v2.manifest_bytes)
        .unwrap()
        .replace("version = \"0.1.0\"", "version = \"0.2.0\"")
        .into_bytes();
    let upgrade = tokio::spawn({
        let channel = c.channel.clone();
        async move {
            tokio::time::sleep(Duration::from_millis(1000)).await;
            install(channel, &v2).await
        }
    });
    let window = Instant::now();
    let mut runs = Vec::new();
    while window.elapsed() < Duration::from_secs(4) {
        let Ok(Some(event)) = tokio::time::timeout(Duration::from_secs(1), watch.next()).await else { continue };
        let event = event.unwrap();
        let Some(resource) = event.resource else { continue };
        let spec: serde_json::Value = serde_json::from_str(&resource.spec_json).unwrap();
        assert_eq!(spec["status"], "healthy", "during the upgrade: {spec}");
        runs.push(spec["lastRun"].as_str().unwrap().to_string());
    }
    let done = upgrade.await.unwrap().unwrap();
    assert_eq!((done.version.as_str(), done.previous_version.as_str()), ("0.2.0", "0.1.0"));
    runs.dedup();
    // 4 s at one run per 100 ms; allow for a loaded machine but not for a
    // stall: no gap between runs over 600 ms.
    assert!(runs.len() >= 25, "only {} runs in 4 s", runs.len());
    let times: Vec<time::OffsetDateTime> = runs
        .iter()
        .map(|t| time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).unwrap())
        .collect();
    let worst = times.windows(2).map(|w| w[1] - w[0]).max().unwrap();
    assert!(worst < time::Duration::milliseconds(600), "a {worst} gap between runs");
    let list = client(c.channel.clone()).list(pb::PluginListRequest {}).await.unwrap().into_inner();
    assert_eq!(list.plugins[0].version, "0.2.0");
    drop(tcp);
}

#[tokio::test]
async fn repeated_failures_back_off_then_quarantine_until_an_operator_run_or_reinstall() {
    let pki = Pki::new();
    let plugins = r#"allowUnsigned: true
    instances:
      - id: h-trap
        plugin: hostile
        config: { mode: trap }
        grants: { config: true, http: [{ url: "http://127.0.0.1:1/" }] }
        schedule: { interval: 100ms }"#;
    let node = Node::start_configured(&config_with_plugins(&pki, "quarantine", plugins)).await;
    let mut c = node.client(&pki.auth(ADMIN)).await;
    let hostile = bundle("hostile");
    install(c.channel.clone(), &hostile).await.unwrap();

    // Backoff: after the first failure the instance waits 1 s, not 100 ms.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let s = status_of(&c, "hostile", "h-trap").await;
        if s.runs >= 1 {
            assert_eq!(s.state, "backoff", "{s:?}");
            break;
        }
        assert!(Instant::now() < deadline, "never ran: {s:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Backoffs of 1 + 2 + 4 + 8 s: the fifth failure quarantines.
    let deadline = Instant::now() + Duration::from_secs(40);
    let quarantined = loop {
        let s = status_of(&c, "hostile", "h-trap").await;
        if s.state == "quarantined" {
            break s;
        }
        assert!(Instant::now() < deadline, "never quarantined: {s:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(quarantined.runs, 5, "{quarantined:?}");
    assert!(quarantined.reason.contains("5 failures") && quarantined.reason.contains("trap"), "{quarantined:?}");
    // A failing plugin makes its check unknown, never unhealthy.
    let checks = health_checks(&mut c).await;
    assert_eq!(checks["h-trap"]["status"], "unknown", "{checks:?}");
    assert_eq!(checks["h-trap"]["outcome"], "trap");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(status_of(&c, "hostile", "h-trap").await.runs, 5, "a quarantined instance kept running");

    // An operator run clears the quarantine and the schedule resumes.
    let done = run(&c, "h-trap").await;
    assert_eq!(done.outcome.unwrap().kind, "trap");
    let after = status_of(&c, "hostile", "h-trap").await;
    assert_ne!(after.state, "quarantined", "{after:?}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while status_of(&c, "hostile", "h-trap").await.runs < 7 {
        assert!(Instant::now() < deadline, "the schedule did not resume");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A reinstall clears the failure count as well (it is ≥ 2 here; the
    // schedule may fail once more right after the reinstall).
    assert!(status_of(&c, "hostile", "h-trap").await.consecutive_failures >= 2);
    install(c.channel.clone(), &hostile).await.unwrap();
    let reinstalled = status_of(&c, "hostile", "h-trap").await;
    assert!(reinstalled.consecutive_failures <= 1, "{reinstalled:?}");
    assert_ne!(reinstalled.state, "quarantined");
}

#[tokio::test]
async fn image_plugins_are_installed_at_start_and_cached_for_the_next_boot() {
    use bronze_tests::NodeOptions;
    let pki = Pki::new();
    let image_dir = bronze_tests::plugins::bundle_dir("health-time").parent().unwrap().to_path_buf();
    let plugins = r#"instances:
      - id: health-time
        grants: { facts: [time] }
        schedule: { interval: 200ms }"#;
    let tmp = tempfile::tempdir().unwrap();
    let state_dir = tmp.path().join("state");
    let start = |config: Option<String>| {
        Node::start_with(NodeOptions {
            config,
            state_dir: Some(state_dir.clone()),
            args: vec!["--image-plugins".into(), image_dir.display().to_string()],
            ..Default::default()
        })
    };
    // Image plugins need no signature even though unsigned bundles are
    // refused over the API here.
    // Every first-party plugin the image ships: health checks and the
    // metadata providers.
    let mut shipped: Vec<String> =
        std::fs::read_dir(&image_dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    shipped.sort();
    assert!(shipped.len() > 3 && shipped.contains(&"health-time".to_string()), "{shipped:?}");
    let mut node = start(Some(config_with_plugins(&pki, "image", plugins))).await;
    let mut c = node.client(&pki.auth(ADMIN)).await;
    let deadline = Instant::now() + Duration::from_secs(120);
    let list = loop {
        let list = client(c.channel.clone()).list(pb::PluginListRequest {}).await.unwrap().into_inner();
        if list.plugins.len() == shipped.len() && list.plugins.iter().all(|p| p.artifact != "loading") {
            break list;
        }
        assert!(Instant::now() < deadline, "image plugins not installed: {list:?}\n{}", node.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let ids: Vec<String> = list.plugins.iter().map(|p| p.id.clone()).collect();
    assert_eq!(ids, shipped);
    assert!(list.plugins.iter().all(|p| p.source == "image" && p.signed_by.is_empty()), "{list:?}");
    wait_statuses(&mut c, &[("health-time", "unhealthy")], &node).await;
    node.signal_and_wait(nix::sys::signal::Signal::SIGTERM, Duration::from_secs(10));

    let node = start(None).await;
    let c = node.client(&pki.auth(ADMIN)).await;
    let loaded = artifacts(&c).await;
    assert_eq!(loaded.len(), shipped.len(), "{loaded:?}\n{}", node.log());
    assert!(loaded.values().all(|a| a == "cache"), "{loaded:?}\n{}", node.log());
}

#[tokio::test]
async fn revoking_the_signing_key_stops_its_plugins_and_restoring_it_resumes_them() {
    let pki = Pki::new();
    let key = SigningKey::generate().unwrap();
    let (tcp, tcp_check) = tcp_check("200ms").await;
    let plugins = |keys: &str| format!("trustedKeys: [{keys}]\n    instances:{tcp_check}");
    let trusted = config_with_plugins(&pki, "revoke", &plugins(&format!("\"{}\"", key.public_key())));
    let node = Node::start_configured(&trusted).await;
    let mut c = node.client(&pki.auth(ADMIN)).await;
    install(c.channel.clone(), &signed(bundle("health-tcp"), &key)).await.unwrap();
    wait_statuses(&mut c, &[("health-tcp", "healthy")], &node).await;

    let apply = |text: String| pb::ApplyConfigurationRequest { data: text.into_bytes(), ..Default::default() };
    c.machine.apply_configuration(apply(config_with_plugins(&pki, "revoke", &plugins("")))).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let refused = loop {
        let s = status_of(&c, "health-tcp", "health-tcp").await;
        if s.state == "refused" {
            break s;
        }
        assert!(Instant::now() < deadline, "still running after its key was revoked: {s:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(refused.reason.contains("no longer in machine.plugins.trustedKeys"), "{refused:?}");
    assert!(!health_checks(&mut c).await.contains_key("health-tcp"));

    c.machine.apply_configuration(apply(trusted)).await.unwrap();
    wait_statuses(&mut c, &[("health-tcp", "healthy")], &node).await;
    drop(tcp);
}

#[tokio::test]
async fn metadata_providers_and_network_configurators_run_on_demand() {
    let pki = Pki::new();
    let plugins = r#"allowUnsigned: true
    instances:
      - id: metadata-static
        config: { platform: test-cloud, instance-id: i-123, hostname: node-7 }
        grants: { config: true }
      - id: metadata-absent
        plugin: metadata-static
        grants: { config: true }
      - id: net-static"#;
    let node = Node::start_configured(&config_with_plugins(&pki, "worlds", plugins)).await;
    let c = node.client(&pki.auth(ADMIN)).await;
    for id in ["metadata-static", "net-static"] {
        let done = install(c.channel.clone(), &bundle(id)).await.unwrap_or_else(|e| panic!("{id}: {e}"));
        assert_eq!(done.id, id);
    }
    let list = client(c.channel.clone()).list(pb::PluginListRequest {}).await.unwrap().into_inner();
    let worlds: Vec<&str> = list.plugins.iter().map(|p| p.world.as_str()).collect();
    assert_eq!(worlds, ["metadata-provider", "network-configurator"]);

    let fetched = report(&run(&c, "metadata-static").await);
    assert_eq!(fetched["detected"], true, "{fetched}");
    assert_eq!(fetched["fetch"]["ok"]["platform"], "test-cloud", "{fetched}");
    assert_eq!(fetched["fetch"]["ok"]["instanceId"], "i-123");
    assert_eq!(fetched["fetch"]["ok"]["hostname"], "node-7");
    let absent = report(&run(&c, "metadata-absent").await);
    assert_eq!(absent["detected"], false, "{absent}");
    assert!(absent["fetch"].is_null(), "fetch is not called when detect says no: {absent}");

    // The configurator returns a plan (the host's links as input); it has no
    // import that could change anything.
    let planned = run(&c, "net-static").await;
    assert_eq!(planned.outcome.as_ref().unwrap().kind, "ok", "{planned:?}");
    let plan = report(&planned);
    assert!(plan["ok"]["ethernets"].is_array(), "{plan}");
    // No HealthCheck resources for worlds other than health-check.
    let mut c = c;
    assert!(health_checks(&mut c).await.is_empty());
}

#[tokio::test]
async fn image_plugins_load_the_artifacts_the_image_build_compiled() {
    use bronze_host::plugins::compile_worker::WorkerReport;
    use bronze_host::plugins::manager::{IMAGE_ARTIFACT, IMAGE_ARTIFACT_REPORT, ImageArtifact};
    use bronze_tests::NodeOptions;
    // An image with two bundles, each with what `cargo xtask image` adds:
    // the artifact bronzed's compile worker wrote and its report.
    let image = tempfile::tempdir().unwrap();
    for id in ["health-time", "aws"] {
        let from = bronze_tests::plugins::bundle_dir(id);
        let dir = image.path().join(id);
        std::fs::create_dir_all(&dir).unwrap();
        for file in ["plugin.toml", "plugin.wasm"] {
            std::fs::copy(from.join(file), dir.join(file)).unwrap();
        }
        let out = std::process::Command::new(bronze_tests::bin("bronzed"))
            .args(["compile-worker", "--input"])
            .arg(dir.join("plugin.wasm"))
            .arg("--output")
            .arg(dir.join(IMAGE_ARTIFACT))
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let worker: WorkerReport = serde_json::from_slice(&out.stdout).unwrap();
        let wasm = std::fs::read(dir.join("plugin.wasm")).unwrap();
        let mut report = ImageArtifact { wasm_sha256: bronze_bundle::sha256_hex(&wasm), worker };
        if id == "aws" {
            // Made by another engine: the node compiles instead.
            report.worker.fingerprint = "wasmtime48-0000000000000000".into();
        }
        std::fs::write(dir.join(IMAGE_ARTIFACT_REPORT), serde_json::to_vec(&report).unwrap()).unwrap();
    }
    let state = tempfile::tempdir().unwrap();
    let options = || NodeOptions {
        args: vec!["--image-plugins".into(), image.path().display().to_string()],
        state_dir: Some(state.path().join("state")),
        ..Default::default()
    };
    let mut node = Node::start_with(options()).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    let loaded = |log: &str| {
        log.contains("plugin compiled in a worker plugin=\"aws\"")
            && log.contains("image plugin loaded precompiled plugin=\"health-time\"")
    };
    while !loaded(&node.log()) {
        assert!(Instant::now() < deadline, "{}", node.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let log = node.log();
    assert!(log.contains("image plugin loaded precompiled plugin=\"health-time\""), "{log}");
    assert!(!log.contains("plugin compiled in a worker plugin=\"health-time\""), "{log}");
    assert!(log.contains("precompiled artifact is for another wasm or engine; compiling"), "{log}");
    while !node.log().contains("image plugin installed plugin=aws") {
        assert!(Instant::now() < deadline, "{}", node.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    node.signal_and_wait(nix::sys::signal::Signal::SIGTERM, Duration::from_secs(10));

    // The next start maps the image's own artifact again (the image still
    // ships what was installed); aws, which the node compiled, comes from
    // its cache. Neither is installed again.
    let node = Node::start_with(options()).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    let started = |log: &str| log.matches("plugin loaded plugin=").count() >= 2;
    while !started(&node.log()) {
        assert!(Instant::now() < deadline, "{}", node.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let log = node.log();
    let line = |id: &str| log.lines().find(|l| l.contains(&format!("plugin loaded plugin={id} "))).unwrap_or_default();
    assert!(line("health-time").contains("artifact=\"image\""), "{log}");
    assert!(line("aws").contains("artifact=\"cache\""), "{log}");
    assert!(!log.contains("image plugin installed"), "{log}");
    drop(node);

    // An upgrade: the state was written by an older bronzed (health-time's
    // entry records another engine's artifact), and the new image now
    // ships aws compiled by this engine too. Both load the image's artifact:
    // nothing compiles, and the index records what the image ships.
    let index_path = state.path().join("state/plugins/index.json");
    let mut index: serde_json::Value = serde_json::from_slice(&std::fs::read(&index_path).unwrap()).unwrap();
    let entry = &mut index["plugins"]["health-time"];
    entry["fingerprint"] = "wasmtime47-0000000000000000".into();
    entry["cwasmSha256"] = "0".repeat(64).into();
    std::fs::write(&index_path, serde_json::to_vec(&index).unwrap()).unwrap();
    let aws_report = image.path().join("aws").join(IMAGE_ARTIFACT_REPORT);
    let mut report: ImageArtifact = serde_json::from_slice(&std::fs::read(&aws_report).unwrap()).unwrap();
    let health_report: ImageArtifact =
        serde_json::from_slice(&std::fs::read(image.path().join("health-time").join(IMAGE_ARTIFACT_REPORT)).unwrap())
            .unwrap();
    report.worker.fingerprint = health_report.worker.fingerprint.clone();
    std::fs::write(&aws_report, serde_json::to_vec(&report).unwrap()).unwrap();
    for round in ["after the upgrade", "the start after"] {
        let node = Node::start_with(options()).await;
        let deadline = Instant::now() + Duration::from_secs(60);
        while !started(&node.log()) {
            assert!(Instant::now() < deadline, "{round}: {}", node.log());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let log = node.log();
        let line =
            |id: &str| log.lines().find(|l| l.contains(&format!("plugin loaded plugin={id} "))).unwrap_or_default();
        assert!(line("health-time").contains("artifact=\"image\""), "{round}: {log}");
        assert!(line("aws").contains("artifact=\"image\""), "{round}: {log}");
        assert!(!log.contains("plugin compiled in a worker"), "{round}: {log}");
        assert!(!log.contains("image plugin installed"), "{round}: {log}");
        let index: serde_json::Value = serde_json::from_slice(&std::fs::read(&index_path).unwrap()).unwrap();
        let entry = &index["plugins"]["health-time"];
        assert_eq!(entry["fingerprint"], health_report.worker.fingerprint.as_str(), "{round}: {index:#}");
        assert_eq!(entry["cwasmSha256"], health_report.worker.cwasm_sha256.as_str(), "{round}: {index:#}");
    }
}
