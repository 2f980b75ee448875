//! `bronzectl plugins ...` against real nodes: keys and signatures, the
//! install → list → status → run → upgrade → remove lifecycle, fan-out
//! with a stopped node, roles, and a hostile plugin's outcome.

use bronze_tests::plugins::{bundle_dir, config_with_plugins};
use bronze_tests::{CtlRun, Node, Pki, bronzectl, free_port};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::Duration;

const ADMIN: &[&str] = &["os:admin"];

/// Copies the built bundle `id` into `dst` (tests never write into target/).
fn copy_bundle(id: &str, dst: &Path) -> PathBuf {
    std::fs::create_dir_all(dst).unwrap();
    for entry in std::fs::read_dir(bundle_dir(id)).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dst.join(entry.file_name())).unwrap();
    }
    assert!(!dst.join("plugin.sig").exists(), "the built bundle {id} is unsigned");
    dst.to_path_buf()
}

/// A `machine.plugins.instances` entry running health-tcp against `port`.
fn tcp_instance(id: &str, port: u16) -> String {
    format!(
        r#"
      - id: {id}
        plugin: health-tcp
        config: {{ host: 127.0.0.1, port: "{port}" }}
        grants: {{ config: true, probe: ["tcp://127.0.0.1:{port}"] }}
        schedule: {{ interval: 200ms }}"#
    )
}

fn unsigned_tcp_config(pki: &Pki, hostname: &str, port: u16) -> String {
    config_with_plugins(
        pki,
        hostname,
        &format!("allowUnsigned: true\n    instances:{}", tcp_instance("health-tcp", port)),
    )
}

fn s(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// Table rows (header excluded) that belong to `node`.
fn rows<'a>(run: &'a CtlRun, node: &str) -> Vec<&'a str> {
    run.stdout.lines().skip(1).filter(|l| l.strip_prefix(node).is_some_and(|rest| rest.starts_with(' '))).collect()
}

/// The value of the `label` row in a FIELD/VALUE detail table for `node`.
fn field(run: &CtlRun, node: &str, label: &str) -> String {
    rows(run, node)
        .into_iter()
        .filter_map(|l| l[node.len()..].trim_start().strip_prefix(label))
        .find(|rest| rest.starts_with("   "))
        .map(|rest| rest.trim().to_string())
        .unwrap_or_else(|| panic!("no {label:?} row for {node} in\n{}", run.stdout))
}

/// The single JSON object of a one-node `-o json` answer.
fn json(run: &CtlRun) -> Value {
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(lines.len(), 1, "one JSON object per node: {run:?}");
    serde_json::from_str(lines[0]).unwrap_or_else(|e| panic!("{e}: {run:?}"))
}

fn ok(run: &CtlRun) {
    assert_eq!(run.code, 0, "{run:?}");
}

fn failed(run: &CtlRun) {
    assert_ne!(run.code, 0, "{run:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keygen_sign_and_install_with_trusted_and_untrusted_keys() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let key = tmp.path().join("keys/key");
    let other = tmp.path().join("keys/other");

    let run = bronzectl(None, &["plugins", "keygen", "--output-file", s(&key)]).await;
    ok(&run);
    assert_eq!(std::fs::metadata(&key).unwrap().permissions().mode() & 0o777, 0o600);
    let public = std::fs::read_to_string(tmp.path().join("keys/key.pub")).unwrap();
    assert_eq!(public.len(), 65, "{public:?}");
    assert!(public.ends_with('\n') && public[..64].chars().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
    let public = public.trim_end().to_string();
    assert!(run.stdout.contains(&format!("public key: {public}")), "{run:?}");
    assert!(!run.stdout.contains("PRIVATE KEY") && !run.stderr.contains("PRIVATE KEY"), "{run:?}");

    let private = std::fs::read(&key).unwrap();
    let again = bronzectl(None, &["plugins", "keygen", "--output-file", s(&key)]).await;
    failed(&again);
    assert!(again.stderr.contains("already exists; refusing to overwrite a key"), "{again:?}");
    assert_eq!(std::fs::read(&key).unwrap(), private, "the key was overwritten");
    ok(&bronzectl(None, &["plugins", "keygen", "--output-file", s(&other)]).await);

    // Sign a copy; the built bundle stays unsigned.
    let signed = copy_bundle("health-tcp", &tmp.path().join("signed"));
    let run = bronzectl(None, &["plugins", "sign", "--key", s(&key), s(&signed)]).await;
    ok(&run);
    assert!(run.stdout.contains(&format!("wrote {}", signed.join("plugin.sig").display())), "{run:?}");
    assert!(run.stdout.contains(&format!("public key: {public}")), "{run:?}");
    assert_eq!(std::fs::metadata(signed.join("plugin.sig")).unwrap().len(), bronze_bundle::SIGNATURE_FILE_LEN as u64);
    assert!(!bundle_dir("health-tcp").join("plugin.sig").exists());
    let trusted: bronze_config::TrustedKey = public.parse().unwrap();
    let verified = bronze_bundle::Bundle::load(&signed).unwrap().verify(std::slice::from_ref(&trusted));
    assert_eq!(verified, Ok(Some(trusted.clone())));

    let stranger = copy_bundle("health-tcp", &tmp.path().join("stranger"));
    ok(&bronzectl(None, &["plugins", "sign", "--key", s(&other), s(&stranger)]).await);
    let unsigned = copy_bundle("health-tcp", &tmp.path().join("unsigned"));

    // The node trusts `key` only.
    let pki = Pki::new();
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = tcp.local_addr().unwrap().port();
    let plugins = format!("trustedKeys: [\"{public}\"]\n    instances:{}", tcp_instance("health-tcp", port));
    let node = Node::start_configured(&config_with_plugins(&pki, "keys", &plugins)).await;
    let bc = tmp.path().join("bronzeconfig");
    pki.write_bronzeconfig(&bc, std::slice::from_ref(&node.addr), ADMIN);
    let prefix = &public[..12];

    let run = bronzectl(Some(&bc), &["plugins", "install", s(&unsigned)]).await;
    failed(&run);
    assert!(
        run.stderr.contains(&format!("node {}: invalid argument: health-tcp: the bundle is unsigned", node.addr)),
        "{run:?}"
    );

    let run = bronzectl(Some(&bc), &["plugins", "install", s(&signed)]).await;
    ok(&run);
    assert!(run.stderr.is_empty(), "no progress bars or noise when stderr is not a terminal: {run:?}");
    let row = rows(&run, &node.addr);
    assert_eq!(row.len(), 1, "{run:?}");
    let cells: Vec<&str> = row[0].split("   ").map(str::trim).filter(|c| !c.is_empty()).collect();
    assert_eq!(cells[..4], [node.addr.as_str(), "health-tcp", "installed 0.1.0", &sha256_prefix(&signed)], "{run:?}");
    assert_eq!(cells[4], prefix, "signed by the trusted key: {run:?}");
    assert_eq!(cells.last().copied(), Some("health-tcp"), "{run:?}");

    let run = bronzectl(Some(&bc), &["plugins", "install", s(&stranger)]).await;
    failed(&run);
    let sentence =
        format!("node {}: invalid argument: health-tcp: plugin.sig: the signature does not verify", node.addr);
    assert!(run.stderr.contains(&sentence), "{run:?}");
    assert!(rows(&run, &node.addr)[0].contains("error: invalid argument: health-tcp: plugin.sig:"), "{run:?}");

    // --sign-key signs on the fly, over a missing or a foreign plugin.sig.
    for dir in [&unsigned, &stranger] {
        let run = bronzectl(Some(&bc), &["-o", "json", "plugins", "install", s(dir), "--sign-key", s(&key)]).await;
        ok(&run);
        let v = json(&run);
        assert_eq!(v["change"], "reinstalled 0.1.0", "{v}");
        assert_eq!(v["signedBy"], public.as_str(), "{v}");
    }
    assert!(!unsigned.join("plugin.sig").exists(), "--sign-key writes nothing");

    // A signature breaks when plugin.toml changes after signing.
    let edited = std::fs::read_to_string(signed.join("plugin.toml")).unwrap().replace("Healthy when", "OK when");
    std::fs::write(signed.join("plugin.toml"), edited).unwrap();
    let run = bronzectl(Some(&bc), &["plugins", "install", s(&signed)]).await;
    failed(&run);
    assert!(run.stderr.contains("plugin.sig: the signature does not verify"), "{run:?}");

    let run = bronzectl(Some(&bc), &["-o", "json", "plugins", "list"]).await;
    ok(&run);
    assert_eq!(json(&run)["plugins"][0]["signedBy"], public.as_str(), "{run:?}");
    drop(tcp);
}

/// The first 12 hex digits of the sha256 of `dir/plugin.wasm`.
fn sha256_prefix(dir: &Path) -> String {
    bronze_bundle::sha256_hex(&std::fs::read(dir.join("plugin.wasm")).unwrap())[..12].to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn install_list_status_run_watch_upgrade_remove() {
    use tokio::io::AsyncBufReadExt;
    let pki = Pki::new();
    let tmp = tempfile::tempdir().unwrap();
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = tcp.local_addr().unwrap().port();
    let node = Node::start_configured(&unsigned_tcp_config(&pki, "lifecycle", port)).await;
    let addr = node.addr.as_str();
    let bc = tmp.path().join("bronzeconfig");
    pki.write_bronzeconfig(&bc, std::slice::from_ref(&node.addr), ADMIN);
    let v1 = copy_bundle("health-tcp", &tmp.path().join("v1"));

    let run = bronzectl(Some(&bc), &["plugins", "install", s(&v1)]).await;
    ok(&run);
    assert!(rows(&run, addr)[0].contains("installed 0.1.0"), "{run:?}");
    assert!(rows(&run, addr)[0].contains("unsigned"), "{run:?}");

    // list: a table and JSON.
    let run = bronzectl(Some(&bc), &["plugins", "list"]).await;
    ok(&run);
    let header: Vec<&str> = run.stdout.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["NODE", "ID", "VERSION", "WORLD", "INSTANCES", "SIGNED"], "{run:?}");
    let row = rows(&run, addr);
    assert_eq!(row.len(), 1, "{run:?}");
    let cells: Vec<&str> = row[0].split_whitespace().collect();
    assert_eq!(cells[..4], [addr, "health-tcp", "0.1.0", "health-check"], "{run:?}");
    assert!(row[0].contains("health-tcp (") && row[0].ends_with("unsigned"), "{run:?}");

    let run = bronzectl(Some(&bc), &["-o", "json", "plugins", "list"]).await;
    ok(&run);
    let v = json(&run);
    assert_eq!(v["node"], addr);
    let plugins = v["plugins"].as_array().unwrap();
    assert_eq!(plugins.len(), 1, "{v}");
    assert_eq!(plugins[0]["id"], "health-tcp");
    assert_eq!(plugins[0]["version"], "0.1.0");
    assert_eq!(plugins[0]["world"], "health-check");
    assert_eq!(plugins[0]["instances"][0]["id"], "health-tcp", "{v}");
    assert_eq!(plugins[0]["instances"][0]["plugin"], "health-tcp", "{v}");
    assert_eq!(plugins[0]["sha256"], bronze_bundle::sha256_hex(&std::fs::read(v1.join("plugin.wasm")).unwrap()));

    // status: state and effective capabilities.
    let run = bronzectl(Some(&bc), &["plugins", "status", "health-tcp"]).await;
    ok(&run);
    assert_eq!(field(&run, addr, "version"), "0.1.0");
    assert_eq!(field(&run, addr, "instance"), "health-tcp");
    let state = field(&run, addr, "state");
    assert!(["idle", "running"].contains(&state.as_str()), "a healthy scheduled check: {state:?}\n{run:?}");
    let capabilities = field(&run, addr, "capabilities");
    assert!(capabilities.split(',').any(|c| c == "bronze:host/probe"), "{capabilities}");
    assert!(!capabilities.contains("http"), "not granted: {capabilities}");
    assert!(field(&run, addr, "imports").contains("bronze:host/probe"), "{run:?}");
    let run = bronzectl(Some(&bc), &["-o", "json", "plugins", "status", "health-tcp"]).await;
    ok(&run);
    let v = json(&run);
    assert_eq!(v["plugin"]["instances"][0]["state"].as_str().map(|s| s == "idle" || s == "running"), Some(true));

    // run: exit 0 and the healthy report.
    let run = bronzectl(Some(&bc), &["plugins", "run", "health-tcp"]).await;
    ok(&run);
    assert_eq!(field(&run, addr, "instance"), "health-tcp");
    assert_eq!(field(&run, addr, "outcome"), "ok");
    assert!(run.stdout.contains("\"status\": \"healthy\""), "{run:?}");
    assert!(run.stdout.contains(&format!("connected to 127.0.0.1:{port}")), "{run:?}");
    let run = bronzectl(Some(&bc), &["-o", "json", "plugins", "run", "health-tcp"]).await;
    ok(&run);
    let v = json(&run);
    assert_eq!(v["outcome"]["kind"], "ok", "{v}");
    assert_eq!(v["result"]["status"], "healthy", "{v}");

    // The check as a resource.
    let run = bronzectl(Some(&bc), &["-o", "json", "get", "healthchecks"]).await;
    ok(&run);
    let v = json(&run);
    let check = v["resources"].as_array().unwrap().iter().find(|r| r["metadata"]["id"] == "health-tcp");
    let check = check.unwrap_or_else(|| panic!("no health-tcp check: {v}"));
    assert_eq!(check["spec"]["status"], "healthy", "{check}");
    assert_eq!(check["spec"]["plugin"], "health-tcp", "{check}");

    // get -w streams: the current check, then the scheduled runs' updates.
    let mut watch = tokio::process::Command::new(bronze_tests::bin("bronzectl"))
        .args(["-o", "json", "get", "healthchecks", "-w"])
        .env("BRONZECONFIG", &bc)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(watch.stdout.take().unwrap()).lines();
    let mut events = Vec::new();
    while events.len() < 3 {
        let line = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
            .await
            .unwrap_or_else(|_| panic!("watch stalled after {events:?}"))
            .unwrap()
            .unwrap_or_else(|| panic!("watch ended after {events:?}"));
        let v: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert_eq!(v["node"], addr, "{v}");
        assert_eq!(v["metadata"]["id"], "health-tcp", "{v}");
        assert_eq!(v["spec"]["status"], "healthy", "{v}");
        events.push(v);
    }
    assert_eq!(events[0]["event"], "created", "the current state first: {events:?}");
    assert!(events[1..].iter().all(|e| e["event"] == "updated"), "{events:?}");
    assert_ne!(events[1]["spec"]["lastRun"], events[2]["spec"]["lastRun"], "new runs stream in: {events:?}");
    assert!(watch.try_wait().unwrap().is_none(), "a watch keeps running");
    watch.kill().await.unwrap();

    // Upgrade from a copy whose manifest says 0.2.0.
    let v2 = copy_bundle("health-tcp", &tmp.path().join("v2"));
    let manifest = std::fs::read_to_string(v2.join("plugin.toml")).unwrap();
    assert!(manifest.contains("version = \"0.1.0\""));
    std::fs::write(v2.join("plugin.toml"), manifest.replace("version = \"0.1.0\"", "version = \"0.2.0\"")).unwrap();
    let run = bronzectl(Some(&bc), &["plugins", "install", s(&v2)]).await;
    ok(&run);
    assert!(rows(&run, addr)[0].contains("upgraded 0.1.0 → 0.2.0"), "{run:?}");
    let run = bronzectl(Some(&bc), &["plugins", "list"]).await;
    ok(&run);
    assert_eq!(rows(&run, addr)[0].split_whitespace().nth(2), Some("0.2.0"), "{run:?}");

    // Remove: no plugin, no check.
    let run = bronzectl(Some(&bc), &["plugins", "remove", "health-tcp"]).await;
    ok(&run);
    assert_eq!(rows(&run, addr), [format!("{addr}   removed health-tcp 0.2.0")], "{run:?}");
    let run = bronzectl(Some(&bc), &["plugins", "list"]).await;
    ok(&run);
    assert!(rows(&run, addr).is_empty(), "{run:?}");
    let run = bronzectl(Some(&bc), &["-o", "json", "plugins", "list"]).await;
    assert_eq!(json(&run)["plugins"], serde_json::json!([]), "{run:?}");
    // Twice: right away, and after several schedule intervals, so a run
    // that was in flight at the removal cannot bring the check back.
    for wait in [Duration::ZERO, Duration::from_secs(1)] {
        tokio::time::sleep(wait).await;
        let run = bronzectl(Some(&bc), &["-o", "json", "get", "healthchecks"]).await;
        ok(&run);
        let v = json(&run);
        assert!(!v["resources"].as_array().unwrap().iter().any(|r| r["metadata"]["id"] == "health-tcp"), "{v}");
    }

    // The instance is still configured, but refused: run says why.
    let run = bronzectl(Some(&bc), &["plugins", "run", "health-tcp"]).await;
    failed(&run);
    let sentence =
        format!("node {addr}: failed precondition: instance health-tcp cannot run: plugin health-tcp is not installed");
    assert!(run.stderr.contains(&sentence), "{run:?}");
    let run = bronzectl(Some(&bc), &["plugins", "status", "health-tcp"]).await;
    failed(&run);
    assert!(run.stderr.contains("not found: plugin health-tcp is not installed"), "{run:?}");
    let run = bronzectl(Some(&bc), &["plugins", "remove", "health-tcp"]).await;
    failed(&run);
    assert!(run.stderr.contains("not found: plugin health-tcp is not installed"), "{run:?}");
    drop(tcp);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fan_out_to_two_nodes_and_one_stopped() {
    let pki = Pki::new();
    let tmp = tempfile::tempdir().unwrap();
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = tcp.local_addr().unwrap().port();
    let a = Node::start_configured(&unsigned_tcp_config(&pki, "a", port)).await;
    let mut b = Node::start_configured(&unsigned_tcp_config(&pki, "b", port)).await;
    let bc = tmp.path().join("bronzeconfig");
    pki.write_bronzeconfig(&bc, std::slice::from_ref(&a.addr), ADMIN);
    let both = format!("{},{}", a.addr, b.addr);
    let bundle = copy_bundle("health-tcp", &tmp.path().join("bundle"));

    // -n overrides the context's single node.
    let run = bronzectl(Some(&bc), &["-n", &both, "plugins", "install", s(&bundle)]).await;
    ok(&run);
    for node in [&a.addr, &b.addr] {
        let row = rows(&run, node);
        assert!(row.len() == 1 && row[0].contains("health-tcp") && row[0].contains("installed 0.1.0"), "{run:?}");
    }
    let run = bronzectl(Some(&bc), &["-n", &both, "plugins", "list"]).await;
    ok(&run);
    assert_eq!(run.stdout.lines().count(), 3, "a header and a row per node: {run:?}");
    for node in [&a.addr, &b.addr] {
        assert_eq!(rows(&run, node)[0].split_whitespace().nth(1), Some("health-tcp"), "{run:?}");
    }
    let run = bronzectl(Some(&bc), &["-n", &both, "plugins", "run", "health-tcp"]).await;
    ok(&run);
    assert_eq!((field(&run, &a.addr, "outcome"), field(&run, &b.addr, "outcome")), ("ok".into(), "ok".into()));

    b.kill();
    let down = b.addr.clone();
    let run = bronzectl(Some(&bc), &["-n", &both, "plugins", "list"]).await;
    failed(&run);
    assert!(rows(&run, &a.addr)[0].contains("health-tcp"), "{run:?}");
    let row = rows(&run, &down);
    assert!(row.len() == 1 && row[0].contains("error: cannot connect"), "{run:?}");
    assert!(run.stderr.contains(&format!("node {down}: cannot connect")), "{run:?}");

    let run = bronzectl(Some(&bc), &["-n", &both, "-o", "json", "plugins", "install", s(&bundle)]).await;
    failed(&run);
    let objects: Vec<Value> = run.stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(objects.len(), 2, "{run:?}");
    assert_eq!(objects[0]["node"], a.addr.as_str(), "{run:?}");
    assert_eq!(objects[0]["change"], "reinstalled 0.1.0", "{run:?}");
    assert_eq!(objects[1]["node"], down.as_str());
    assert!(objects[1]["error"].as_str().unwrap().starts_with("cannot connect"), "{run:?}");

    let run = bronzectl(Some(&bc), &["-n", &both, "plugins", "run", "health-tcp"]).await;
    failed(&run);
    assert_eq!(field(&run, &a.addr, "outcome"), "ok", "{run:?}");
    assert!(run.stderr.contains(&format!("node {down}: cannot connect")), "{run:?}");
    assert!(!run.stderr.contains(&format!("node {}:", a.addr)), "{run:?}");
    drop(tcp);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_look_operators_run_admins_install() {
    let pki = Pki::new();
    let tmp = tempfile::tempdir().unwrap();
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = tcp.local_addr().unwrap().port();
    let node = Node::start_configured(&unsigned_tcp_config(&pki, "roles", port)).await;
    let addr = node.addr.as_str();
    let [admin, operator, reader] = ["admin", "operator", "reader"].map(|role| {
        let path = tmp.path().join(role);
        pki.write_bronzeconfig(&path, std::slice::from_ref(&node.addr), &[&format!("os:{role}")]);
        path
    });
    let bundle = copy_bundle("health-tcp", &tmp.path().join("bundle"));

    let denied = |run: &CtlRun, role: &str, method: &str| {
        failed(run);
        let sentence = format!("node {addr}: permission denied: os:{role} may not call {method}");
        assert!(run.stderr.contains(&sentence), "{sentence:?} in {run:?}");
        assert!(rows(run, addr)[0].contains("error: permission denied"), "{run:?}");
    };
    denied(&bronzectl(Some(&reader), &["plugins", "install", s(&bundle)]).await, "reader", "Install");
    denied(&bronzectl(Some(&operator), &["plugins", "install", s(&bundle)]).await, "operator", "Install");
    let run = bronzectl(Some(&admin), &["plugins", "list"]).await;
    assert!(rows(&run, addr).is_empty(), "refused installs installed nothing: {run:?}");
    ok(&bronzectl(Some(&admin), &["plugins", "install", s(&bundle)]).await);

    for role in [&reader, &operator] {
        let run = bronzectl(Some(role), &["plugins", "list"]).await;
        ok(&run);
        assert!(rows(&run, addr)[0].contains("health-tcp"), "{run:?}");
        let run = bronzectl(Some(role), &["plugins", "status", "health-tcp"]).await;
        ok(&run);
        assert_eq!(field(&run, addr, "id"), "health-tcp");
    }
    denied(&bronzectl(Some(&reader), &["plugins", "run", "health-tcp"]).await, "reader", "Run");
    let run = bronzectl(Some(&operator), &["plugins", "run", "health-tcp"]).await;
    ok(&run);
    assert_eq!(field(&run, addr, "outcome"), "ok");
    denied(&bronzectl(Some(&reader), &["plugins", "remove", "health-tcp"]).await, "reader", "Remove");
    denied(&bronzectl(Some(&operator), &["plugins", "remove", "health-tcp"]).await, "operator", "Remove");

    // Still installed; the admin can remove it.
    let run = bronzectl(Some(&reader), &["plugins", "list"]).await;
    assert!(rows(&run, addr)[0].contains("health-tcp"), "{run:?}");
    ok(&bronzectl(Some(&admin), &["plugins", "remove", "health-tcp"]).await);
    drop(tcp);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trapping_plugin_run_fails_and_says_trap() {
    let pki = Pki::new();
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let plugins = format!(
        r#"allowUnsigned: true
    instances:
      - id: h-trap
        plugin: hostile
        config: {{ mode: trap, url: "http://127.0.0.1:{port}/slow" }}
        grants: {{ config: true, http: [{{ url: "http://127.0.0.1:{port}/" }}] }}"#
    );
    let node = Node::start_configured(&config_with_plugins(&pki, "trap", &plugins)).await;
    let addr = node.addr.as_str();
    let bc = tmp.path().join("bronzeconfig");
    pki.write_bronzeconfig(&bc, std::slice::from_ref(&node.addr), ADMIN);
    let bundle = copy_bundle("hostile", &tmp.path().join("hostile"));
    ok(&bronzectl(Some(&bc), &["plugins", "install", s(&bundle)]).await);

    // By instance id, and by the id of a plugin with one instance.
    for id in ["h-trap", "hostile"] {
        let run = bronzectl(Some(&bc), &["plugins", "run", id]).await;
        assert_eq!(run.code, 1, "{run:?}");
        assert_eq!(field(&run, addr, "instance"), "h-trap");
        assert_eq!(field(&run, addr, "outcome"), "trap", "{run:?}");
        assert!(field(&run, addr, "message").contains("unreachable"), "{run:?}");
        assert!(!run.stdout.contains("result"), "a trap returns nothing: {run:?}");
    }
    let run = bronzectl(Some(&bc), &["-o", "json", "plugins", "run", "h-trap"]).await;
    assert_eq!(run.code, 1, "{run:?}");
    let v = json(&run);
    assert_eq!(v["outcome"]["kind"], "trap", "{v}");
    assert_eq!(v["result"], Value::Null, "{v}");

    // The node keeps the record, and its health check says unknown.
    let run = bronzectl(Some(&bc), &["plugins", "status", "hostile"]).await;
    ok(&run);
    let last = field(&run, addr, "last outcome");
    assert!(last.starts_with("trap in ") && last.contains("unreachable"), "{last}");
    assert!(field(&run, addr, "runs").starts_with("3 (3 failed"), "{run:?}");
    let run = bronzectl(Some(&bc), &["-o", "json", "get", "healthchecks", "h-trap"]).await;
    ok(&run);
    let v = json(&run);
    assert_eq!(v["spec"]["status"], "unknown", "{v}");
    assert_eq!(v["spec"]["outcome"], "trap", "{v}");
}

/// A call still running when its plugin is removed must not publish its
/// check afterwards: nothing would ever delete it, and an unhealthy one
/// keeps the machine not ready.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_in_flight_during_remove_leaves_no_health_check() {
    use bronze_tests::plugins::TestHttpServer;
    let pki = Pki::new();
    let tmp = tempfile::tempdir().unwrap();
    let server = TestHttpServer::start().await;
    let url = server.url("/slow");
    let plugins = format!(
        r#"allowUnsigned: true
    instances:
      - id: h-slow
        plugin: hostile
        config: {{ mode: slow-http, url: "{url}" }}
        grants: {{ config: true, http: [{{ url: "{url}" }}] }}"#
    );
    let node = Node::start_configured(&config_with_plugins(&pki, "inflight", &plugins)).await;
    let bc = tmp.path().join("bronzeconfig");
    pki.write_bronzeconfig(&bc, std::slice::from_ref(&node.addr), ADMIN);
    let bundle = copy_bundle("hostile", &tmp.path().join("hostile"));
    ok(&bronzectl(Some(&bc), &["plugins", "install", s(&bundle)]).await);

    let running = tokio::spawn({
        let bc = bc.clone();
        async move { bronzectl(Some(&bc), &["plugins", "run", "h-slow"]).await }
    });
    // The call is waiting on the slow server when the plugin goes away.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !server.hits().iter().any(|p| p == "/slow") {
        assert!(std::time::Instant::now() < deadline, "the run never reached the server");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    ok(&bronzectl(Some(&bc), &["plugins", "remove", "hostile"]).await);
    let run = running.await.unwrap();
    ok(&run);
    assert!(run.stdout.contains("/slow: timed out"), "the call outlived the removal: {run:?}");
    let run = bronzectl(Some(&bc), &["-o", "json", "get", "healthchecks"]).await;
    ok(&run);
    let v = json(&run);
    assert!(
        !v["resources"].as_array().unwrap().iter().any(|r| r["metadata"]["id"] == "h-slow"),
        "the plugin is removed but its check is back: {v}"
    );
}

/// Characters that must never reach a terminal raw, as the CLI sees them
/// (an invalid byte such as a lone 0x9b shows up as U+FFFD).
fn raw_controls(text: &str) -> Vec<char> {
    text.chars().filter(|&c| (bronze_bundle::text::is_unsafe(c) && c != '\n') || c == '\u{fffd}').collect()
}

/// The `forge` mode of the hostile fixture writes terminal controls (ESC
/// [2J, an OSC title ended by BEL, the 8-bit CSI U+009B), a CR overwrite, a
/// bidi override and an embedded newline followed by a line in the node's
/// own log format, through the log import, stdout and stderr, and returns
/// all of it as its report. None of it may forge a line of the node's log
/// or reach the operator's terminal raw.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_cannot_forge_log_lines_or_draw_on_the_terminal() {
    const FORGED: &str = "2026-12-05T12:00:00.000000Z  INFO bronze_host::api: admin authenticated";
    let pki = Pki::new();
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let plugins = format!(
        r#"allowUnsigned: true
    instances:
      - id: h-forge
        plugin: hostile
        config: {{ mode: forge }}
        grants: {{ config: true, http: [{{ url: "http://127.0.0.1:{port}/" }}] }}"#
    );
    let node = Node::start_configured(&config_with_plugins(&pki, "forge", &plugins)).await;
    let addr = node.addr.as_str();
    let bc = tmp.path().join("bronzeconfig");
    pki.write_bronzeconfig(&bc, std::slice::from_ref(&node.addr), ADMIN);
    let bundle = copy_bundle("hostile", &tmp.path().join("hostile"));
    ok(&bronzectl(Some(&bc), &["plugins", "install", s(&bundle)]).await);
    let run = bronzectl(Some(&bc), &["plugins", "run", "h-forge"]).await;
    ok(&run);
    assert_eq!(field(&run, addr, "outcome"), "ok", "{run:?}");

    // What the host keeps: the plugin's text, escaped, exact (JSON output
    // is lossless).
    let escaped = [
        r"\x1b[2J\x1b[Hscreen cleared",
        r"\x1b]0;owned\x07title set",
        r"\u{9b}31m8-bit csi",
        r"check failed\rcheck passed",
        r"\u{202e}txt.exe\x07",
        &format!(r"harmless\n{FORGED}"),
    ];
    let got = bronzectl(Some(&bc), &["-o", "json", "get", "healthchecks", "h-forge"]).await;
    ok(&got);
    assert_eq!(raw_controls(&got.stdout), [] as [char; 0], "{got:?}");
    let spec = &json(&got)["spec"];
    assert_eq!(spec["summary"], escaped.concat(), "{spec}");
    assert_eq!(spec["details"][format!("5{}", escaped[5])], escaped[5], "{spec}");

    // (b) What the operator's terminal gets: escapes, never the controls,
    // and no row that is not the node's.
    for args in [
        &["plugins", "run", "h-forge"][..],
        &["plugins", "status", "hostile"],
        &["get", "healthchecks"],
        &["-o", "yaml", "get", "healthchecks"],
    ] {
        let shown = bronzectl(Some(&bc), args).await;
        ok(&shown);
        assert_eq!(raw_controls(&shown.stdout), [] as [char; 0], "{args:?}: {shown:?}");
        assert!(shown.stdout.contains(r"\x1b[2J"), "{args:?}: {}", shown.stdout);
        assert!(shown.stdout.contains(r"\u{9b}31m"), "{args:?}: {}", shown.stdout);
        if args[0] != "-o" {
            let foreign: Vec<&str> =
                shown.stdout.lines().filter(|l| !l.starts_with("NODE") && !l.starts_with(addr)).collect();
            assert!(foreign.is_empty(), "{args:?}: rows that are not the node's: {foreign:?}");
        }
    }
    let status = bronzectl(Some(&bc), &["plugins", "status", "hostile"]).await;
    let log_rows: Vec<String> = rows(&status, addr)
        .into_iter()
        .filter_map(|l| l[addr.len()..].trim_start().strip_prefix("log"))
        .map(|l| l.trim_start().split_once(' ').map_or(String::new(), |(_time, rest)| rest.to_string()))
        .collect();
    for text in escaped {
        // Through the log import (warn): one row each, with the whole text.
        let want = format!("h-forge warn {text}");
        assert!(log_rows.contains(&want), "no log row {want:?} in {log_rows:#?}");
    }
    // stdout is line-buffered: a newline there ends the line, and the rest
    // is a new line of the plugin's, not of the host.
    assert!(log_rows.contains(&format!("h-forge info {FORGED}")), "{log_rows:#?}");

    // (a) The node's own log: every plugin line is one line, prefixed with
    // its plugin and instance; nothing the plugin wrote starts a line.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while node.log().matches("admin authenticated").count() < 3 {
        assert!(std::time::Instant::now() < deadline, "the plugin's lines never reached the log:\n{}", node.log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let log = node.log();
    assert_eq!(raw_controls(&log), [] as [char; 0], "{log}");
    for line in log.lines() {
        assert!(!line.starts_with("2026-12-05T12:00:00"), "a forged line in the node's log: {line:?}");
        if line.contains("admin authenticated") || line.contains("screen cleared") {
            assert!(line.contains(" plugin{plugin=hostile instance=h-forge}: "), "unattributed: {line:?}");
        }
    }
    for text in escaped {
        assert!(
            log.contains(&format!(
                "WARN plugin{{plugin=hostile instance=h-forge}}: bronze_host::plugins::log: {text}\n"
            )),
            "{text:?} not logged as one line:\n{log}"
        );
    }
}
