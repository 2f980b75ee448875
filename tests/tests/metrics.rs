//! The metrics endpoint of a process-mode node, scraped and parsed by the
//! official Python Prometheus client (`prometheus_client`'s Prometheus text
//! and OpenMetrics parsers, in `tests/python/parse_metrics.py`): names,
//! types and values of the node, service, plugin, time and API figures; no
//! listener unless the config asks, one that follows the live config; and
//! with `mtls: true`, a scraper without a certificate from the API's CA (or
//! without a role) is refused.

use bronze_api::v1 as pb;
use bronze_tests::plugins::{bundle, config_with_plugins, install, instance_yaml};
use bronze_tests::{Node, Pki, free_port, python, python_script};
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const ADMIN: &[&str] = &["os:admin"];
const READER: &[&str] = &["os:reader"];

/// Runs `parse_metrics.py ARGS` and returns what it printed.
fn scrape(args: &[&str]) -> Value {
    let output = Command::new(python()).arg(python_script("parse_metrics.py")).args(args).output().expect("run python");
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "parse_metrics.py {args:?} failed ({}):\n{text}", output.status);
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| panic!("parse_metrics.py printed no JSON ({e}):\n{text}"))
}

/// `config` with `machine.metrics` set to `yaml` (a flow mapping body).
fn with_metrics(config: &str, yaml: &str) -> String {
    assert!(config.ends_with('\n') && config.contains("\n  logging:"), "the template ends with machine.logging");
    format!("{config}  metrics: {{ {yaml} }}\n")
}

/// `config` with `machine.services` holding `services_yaml`.
fn with_services(config: &str, services_yaml: &str) -> String {
    assert!(config.contains("  services: []\n"));
    config.replacen("  services: []\n", &format!("  services:\n{services_yaml}"), 1)
}

/// The TCP ports process `pid` listens on (its sockets in LISTEN state).
fn listening_ports(pid: u32) -> BTreeSet<u16> {
    let inodes: BTreeSet<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter_map(|l| l.to_str()?.strip_prefix("socket:[")?.strip_suffix(']').map(str::to_string))
        .collect();
    let mut ports = BTreeSet::new();
    for table in ["tcp", "tcp6"] {
        let text = std::fs::read_to_string(format!("/proc/{pid}/net/{table}")).unwrap_or_default();
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // local_address is ADDR:PORT in hex, st 0A is LISTEN, inode is field 9.
            if fields.len() > 9 && fields[3] == "0A" && inodes.contains(fields[9]) {
                let port = fields[1].rsplit(':').next().unwrap();
                ports.insert(u16::from_str_radix(port, 16).unwrap());
            }
        }
    }
    ports
}

fn api_port(node: &Node) -> u16 {
    node.addr.rsplit(':').next().unwrap().parse().unwrap()
}

fn family<'a>(scraped: &'a Value, name: &str) -> &'a Value {
    let f = &scraped["families"][name];
    assert!(f.is_object(), "no family {name} in {}", scraped["families"]);
    f
}

/// The value of the sample `name` with exactly `labels`, if present.
fn sample(scraped: &Value, family_name: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let samples = scraped["families"][family_name]["samples"].as_array()?;
    samples.iter().find_map(|s| {
        let got = s[1].as_object()?;
        let matches = s[0] == name
            && got.len() == labels.len()
            && labels.iter().all(|(k, v)| got.get(*k).and_then(Value::as_str) == Some(*v));
        matches.then(|| s[2].as_f64()).flatten()
    })
}

fn now_unix() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs_f64()
}

/// Scrapes `url` until `done` holds, for at most 30 s.
fn scrape_until(url: &str, what: &str, node: &Node, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let scraped = scrape(&[url]);
        if scraped.get("families").is_some() && done(&scraped) {
            return scraped;
        }
        assert!(Instant::now() < deadline, "{what} never showed up:\n{scraped}\n{}", node.log());
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[tokio::test]
async fn a_scrape_parses_with_prometheus_client_and_shows_node_services_plugins_time_and_api() {
    let pki = Pki::new();
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}/metrics");
    // A plugin instance probing a port the test holds open, every 200 ms.
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let probe = tcp.local_addr().unwrap().port();
    let check = instance_yaml(
        "health-tcp",
        "health-tcp",
        &format!("host: 127.0.0.1, port: \"{probe}\""),
        &format!("config: true, probe: [\"tcp://127.0.0.1:{probe}\"]"),
        Some("200ms"),
    );
    let config = config_with_plugins(&pki, "metrics", &format!("allowUnsigned: true\n    instances:{check}"));
    let services = "  - name: sleeper\n    command: /bin/sleep\n    args: [\"600\"]\n  - name: crasher\n    command: /bin/sh\n    args: [\"-c\", \"exit 3\"]\n    restart: never\n";
    let config = with_metrics(&with_services(&config, services), &format!("listen: \"127.0.0.1:{port}\""));
    let node = Node::start_configured(&config).await;
    let mut admin = node.client(&pki.auth(ADMIN)).await;
    install(admin.channel.clone(), &bundle("health-tcp")).await.unwrap();
    admin.machine.version(pb::VersionRequest {}).await.unwrap();
    // A refused call is counted with its code.
    let mut reader = node.client(&pki.auth(READER)).await;
    let denied = reader.machine.reboot(pb::RebootRequest::default()).await.unwrap_err();
    assert_eq!(denied.code(), tonic::Code::PermissionDenied);

    let ok_calls = |s: &Value| {
        sample(s, "bronze_plugin_calls", "bronze_plugin_calls_total", &[("plugin", "health-tcp"), ("outcome", "ok")])
    };
    let scraped = scrape_until(&url, "the service, the plugin calls and the crasher's exit", &node, |s| {
        sample(s, "bronze_service_up", "bronze_service_up", &[("service", "sleeper")]) == Some(1.0)
            && ok_calls(s).is_some_and(|n| n >= 2.0)
            && sample(s, "bronze_service_state", "bronze_service_state", &[("service", "crasher"), ("state", "failed")])
                == Some(1.0)
    });
    assert_eq!(scraped["status"], 200);
    assert_eq!(scraped["content_type"], "text/plain; version=0.0.4; charset=utf-8");

    // Every family has the right type (the parser names counters without
    // `_total` and checks it on their samples).
    let types = [
        ("bronze_node_uptime_seconds", "gauge"),
        ("bronze_node_boot_time_seconds", "gauge"),
        ("bronze_node_memory_total_bytes", "gauge"),
        ("bronze_node_memory_free_bytes", "gauge"),
        ("bronze_node_memory_available_bytes", "gauge"),
        ("bronze_node_load1", "gauge"),
        ("bronze_node_load5", "gauge"),
        ("bronze_node_load15", "gauge"),
        ("bronze_bronzed_resident_memory_bytes", "gauge"),
        ("bronze_service_up", "gauge"),
        ("bronze_service_state", "gauge"),
        ("bronze_service_restarts", "counter"),
        ("bronze_plugin_calls", "counter"),
        ("bronze_plugin_call_duration_seconds", "histogram"),
        ("bronze_plugin_instances_armed", "gauge"),
        ("bronze_time_enabled", "gauge"),
        ("bronze_time_synced", "gauge"),
        ("bronze_time_offset_seconds", "gauge"),
        ("bronze_time_steps", "counter"),
        ("bronze_api_requests", "counter"),
        ("bronze_api_requests_in_flight", "gauge"),
    ];
    for (name, kind) in types {
        assert_eq!(family(&scraped, name)["type"], kind, "{name}");
    }
    for name in scraped["families"].as_object().unwrap().keys() {
        assert!(name.starts_with("bronze_"), "{name} lacks the bronze_ prefix");
    }

    // Node figures agree with procfs.
    let one = |name: &str| sample(&scraped, name, name, &[]).unwrap_or_else(|| panic!("{name} has no sample"));
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap();
    let total_kb: f64 = meminfo.lines().next().unwrap().split_whitespace().nth(1).unwrap().parse().unwrap();
    assert_eq!(one("bronze_node_memory_total_bytes"), total_kb * 1024.0);
    let booted = one("bronze_node_boot_time_seconds") + one("bronze_node_uptime_seconds");
    assert!((booted - now_unix()).abs() < 10.0, "boot time + uptime = {booted}, now {}", now_unix());
    assert!(one("bronze_bronzed_resident_memory_bytes") > 1e6);

    // Services: one series per state, the current one at 1.
    let state = |svc: &str, st: &str| {
        sample(&scraped, "bronze_service_state", "bronze_service_state", &[("service", svc), ("state", st)])
    };
    assert_eq!(state("sleeper", "running"), Some(1.0));
    assert_eq!(state("sleeper", "failed"), Some(0.0));
    assert_eq!(state("crasher", "running"), Some(0.0));
    let restarts = |svc: &str| {
        sample(&scraped, "bronze_service_restarts", "bronze_service_restarts_total", &[("service", svc)]).unwrap()
    };
    assert_eq!(restarts("sleeper"), 0.0);
    assert_eq!(restarts("crasher"), 1.0, "the exit is counted");
    assert_eq!(sample(&scraped, "bronze_service_up", "bronze_service_up", &[("service", "crasher")]), Some(0.0));

    // Plugins: calls by outcome, their durations, the armed instance.
    let calls = ok_calls(&scraped).unwrap();
    let trap = sample(
        &scraped,
        "bronze_plugin_calls",
        "bronze_plugin_calls_total",
        &[("plugin", "health-tcp"), ("outcome", "trap")],
    );
    assert_eq!(trap, Some(0.0), "every outcome is listed once a plugin made a call");
    let hist = "bronze_plugin_call_duration_seconds";
    let count = sample(&scraped, hist, &format!("{hist}_count"), &[("plugin", "health-tcp")]).unwrap();
    assert_eq!(count, calls, "one duration per call");
    let inf = sample(&scraped, hist, &format!("{hist}_bucket"), &[("plugin", "health-tcp"), ("le", "+Inf")]);
    assert_eq!(inf, Some(count));
    let armed =
        sample(&scraped, "bronze_plugin_instances_armed", "bronze_plugin_instances_armed", &[("plugin", "health-tcp")]);
    assert_eq!(armed, Some(1.0));
    let cpu =
        sample(&scraped, "bronze_plugin_cpu_seconds", "bronze_plugin_cpu_seconds_total", &[("plugin", "health-tcp")]);
    let wall = sample(&scraped, hist, &format!("{hist}_sum"), &[("plugin", "health-tcp")]).unwrap();
    assert!(
        cpu.is_some_and(|s| s > 0.0 && s <= wall + 0.01),
        "calls use some CPU, at most their wall time: {cpu:?} vs {wall}"
    );

    // stats: the instance's CPU and memory, from its calls.
    let mut processes = bronze_api::v1::process_service_client::ProcessServiceClient::new(reader.channel.clone());
    let stats = processes.stats(pb::StatsRequest { sample_ms: 0 }).await.unwrap().into_inner();
    let plugin = stats.entries.iter().find(|e| e.kind == "plugin" && e.name == "health-tcp").expect("the instance");
    assert!(plugin.runs >= 2 && plugin.cpu_seconds > 0.0, "{plugin:?}");
    assert!(plugin.rss_bytes >= 64 << 10 && plugin.rss_bytes <= plugin.memory_peak_bytes, "linear memory: {plugin:?}");
    // CPU % over a window: since the reading above once it is a second old
    // (the check runs every second, so its calls used some CPU in it).
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let later = processes.stats(pb::StatsRequest { sample_ms: 1000 }).await.unwrap().into_inner();
    let now = later.entries.iter().find(|e| e.kind == "plugin" && e.name == "health-tcp").expect("the instance");
    assert!(now.cpu_percent.is_finite() && (0.0..=100.0).contains(&now.cpu_percent), "{now:?}");
    if now.cpu_seconds > plugin.cpu_seconds {
        assert!(now.cpu_percent > 0.0, "CPU used in the window but 0 %: {plugin:?} then {now:?}");
    }

    // Time sync: process mode without servers does not sync.
    assert_eq!(one("bronze_time_enabled"), 0.0);
    assert_eq!(one("bronze_time_synced"), 0.0);

    // API: requests by method and code.
    let api = |method: &str, code: &str| {
        sample(&scraped, "bronze_api_requests", "bronze_api_requests_total", &[("method", method), ("code", code)])
    };
    assert!(
        api("bronze.v1.MachineService/Version", "Ok").is_some_and(|n| n >= 1.0),
        "{}",
        scraped["families"]["bronze_api_requests"]
    );
    assert_eq!(api("bronze.v1.MachineService/Reboot", "PermissionDenied"), Some(1.0));
    assert!(api("bronze.v1.PluginService/Install", "Ok").is_some_and(|n| n >= 1.0));
    assert!(one("bronze_api_requests_in_flight") >= 0.0);

    // OpenMetrics when asked, parsed by the stricter OpenMetrics parser.
    let om = scrape(&[&url, "--openmetrics"]);
    assert_eq!(om["status"], 200, "{om}");
    assert_eq!(om["content_type"], "application/openmetrics-text; version=1.0.0; charset=utf-8");
    assert_eq!(family(&om, "bronze_service_restarts")["type"], "counter");
    assert_eq!(family(&om, "bronze_plugin_call_duration_seconds")["type"], "histogram");
    assert_eq!(family(&om, "bronze_plugin_call_duration_seconds")["unit"], "seconds");
    assert_eq!(family(&om, "bronze_node_memory_total_bytes")["unit"], "bytes");

    // Only /metrics is served.
    let other = scrape(&[&format!("http://127.0.0.1:{port}/debug")]);
    assert_eq!(other["status"], 404, "{other}");
    drop(tcp);
}

#[tokio::test]
async fn no_listener_unless_the_config_asks_and_it_follows_the_live_config() {
    let pki = Pki::new();
    let config = pki.node_config("nometrics");
    let node = Node::start_configured(&config).await;
    let api = api_port(&node);
    assert_eq!(listening_ports(node.pid()), BTreeSet::from([api]), "only the API listens by default");

    // Applied live: a listener appears on the port asked for ...
    let port = free_port();
    let mut c = node.client(&pki.auth(ADMIN)).await;
    let with = with_metrics(&config, &format!("listen: \"127.0.0.1:{port}\""));
    let apply = |doc: String| pb::ApplyConfigurationRequest {
        data: doc.into_bytes(),
        mode: pb::ApplyMode::NoReboot as i32,
        dry_run: false,
        try_timeout_ms: 0,
    };
    c.machine.apply_configuration(apply(with)).await.unwrap();
    let url = format!("http://127.0.0.1:{port}/metrics");
    let scraped = scrape_until(&url, "the metrics listener", &node, |s| s["status"] == 200);
    family(&scraped, "bronze_node_uptime_seconds");
    assert_eq!(listening_ports(node.pid()), BTreeSet::from([api, port]));

    // ... and goes away when the section is removed.
    c.machine.apply_configuration(apply(config.clone())).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while listening_ports(node.pid()).contains(&port) {
        assert!(Instant::now() < deadline, "the metrics listener stayed:\n{}", node.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let refused = scrape(&[&url]);
    assert!(refused["error"].as_str().is_some_and(|e| e.contains("refused")), "{refused}");
}

/// Writes `pem` to `dir/name` and returns the path as text.
fn write(dir: &Path, name: &str, pem: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, pem).unwrap();
    path.to_str().unwrap().to_string()
}

#[tokio::test]
async fn with_mtls_only_a_client_certificate_from_the_api_ca_with_a_role_may_scrape() {
    let pki = Pki::new();
    let port = free_port();
    let config = with_metrics(&pki.node_config("mtls"), &format!("listen: \"127.0.0.1:{port}\", mtls: true"));
    let node = Node::start_configured(&config).await;
    let url = format!("https://127.0.0.1:{port}/metrics");
    let dir = tempfile::tempdir().unwrap();
    let ca = write(dir.path(), "ca.pem", &pki.ca.cert_pem);
    let reader = pki.client(READER);
    let (crt, key) = (write(dir.path(), "r.crt", &reader.cert_pem), write(dir.path(), "r.key", &reader.key_pem));

    // A reader's certificate scrapes (the node's certificate verifies
    // against the API's CA for 127.0.0.1).
    let deadline = Instant::now() + Duration::from_secs(20);
    let scraped = loop {
        let s = scrape(&[&url, "--ca", &ca, "--cert", &crt, "--key", &key]);
        if s["status"] == 200 {
            break s;
        }
        assert!(Instant::now() < deadline, "no mTLS scrape: {s}\n{}", node.log());
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(family(&scraped, "bronze_api_requests")["type"], "counter");

    // No client certificate: the handshake fails.
    let anonymous = scrape(&[&url, "--ca", &ca]);
    let error = anonymous["error"].as_str().unwrap_or_else(|| panic!("scraped without a certificate: {anonymous}"));
    assert!(error.to_lowercase().contains("certificate"), "{error}");

    // A certificate from another CA: refused too.
    let stranger = Pki::new().client(READER);
    let (scrt, skey) = (write(dir.path(), "s.crt", &stranger.cert_pem), write(dir.path(), "s.key", &stranger.key_pem));
    let foreign = scrape(&[&url, "--ca", &ca, "--cert", &scrt, "--key", &skey]);
    assert!(foreign["error"].is_string(), "scraped with another CA's certificate: {foreign}");

    // The API's CA but no role: 403 naming why.
    let nobody = pki.client(&[]);
    let (ncrt, nkey) = (write(dir.path(), "n.crt", &nobody.cert_pem), write(dir.path(), "n.key", &nobody.key_pem));
    let roleless = scrape(&[&url, "--ca", &ca, "--cert", &ncrt, "--key", &nkey]);
    assert_eq!(roleless["status"], 403, "{roleless}");
    assert!(roleless["body"].as_str().unwrap().contains("carries no role"), "{roleless}");

    // Plain HTTP on the mTLS port gets nothing.
    let plain = scrape(&[&format!("http://127.0.0.1:{port}/metrics")]);
    assert!(plain.get("families").is_none(), "plain HTTP scraped an mTLS port: {plain}");
}
