//! The node's network from the real `bronzectl` against real `bronzed`s in
//! process mode (the spec computed, not applied: `applied: false`):
//!
//! - `get networkspec -o yaml` names layer `config` for the interface the
//!   config names, and every network alias (`links`, `addresses`, `routes`,
//!   `networkspec`, `dhcpleases` and their other names) resolves.
//! - `network plan` (operator; a reader is refused) asks the configurator
//!   afresh and prints the diff against the live spec, nothing applied: a
//!   `net-hostile` instance (case `ok`) gives its address to the first link
//!   that has one; an address added behind the node's back moves it, which
//!   only a fresh plan sees (addresses are not what makes the node re-plan);
//!   a plan the node refuses is shown as a warning naming the field.
//! - `apply-config --dry-run` with a config adding an address prints the
//!   `network:` diff line with the address and layer `config`, and changes
//!   neither the stored config nor the live spec.

use bronze_tests::netns::NetNs;
use bronze_tests::plugins::{bundle, config_with_plugins, install, instance_yaml};
use bronze_tests::provider::node_in;
use bronze_tests::{CtlRun, Node, Pki, bronzectl};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// How long the spec may take to show a change: a config change is seen
/// at once, but a network controller in restart backoff (30 s at most)
/// sees it only when it runs again.
const CONVERGE: Duration = Duration::from_secs(40);

/// `config` (from the embedded template) with `machine.network.interfaces`
/// set to `interfaces_yaml` (list items indented six spaces; empty: none)
/// and, when given, the configurator instance.
fn with_network(config: &str, interfaces_yaml: &str, configurator: Option<&str>) -> String {
    assert!(config.contains("\n    interfaces: []\n"), "the template has no empty interfaces list");
    let list = if interfaces_yaml.is_empty() { " []\n".to_string() } else { format!("\n{interfaces_yaml}") };
    let mut network = format!("\n    interfaces:{list}");
    if let Some(instance) = configurator {
        network = format!("\n    configurator: {{ instance: {instance} }}{network}");
    }
    config.replacen("\n    interfaces: []\n", &network, 1)
}

/// A bronzeconfig for `node` with `roles`.
fn client_config(pki: &Pki, dir: &Path, node: &Node, roles: &[&str]) -> PathBuf {
    let path = dir.join(roles.join("+"));
    pki.write_bronzeconfig(&path, std::slice::from_ref(&node.addr), roles);
    path
}

/// The live `NetworkSpec` once `ready` holds for it, through `bronzectl`.
async fn spec_when(config: &Path, what: &str, ready: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + CONVERGE;
    loop {
        let run = bronzectl(Some(config), &["-o", "json", "get", "networkspec", "current"]).await;
        let spec = serde_json::from_str::<Value>(run.stdout.trim()).map(|v| v["spec"].clone()).unwrap_or(Value::Null);
        if run.code == 0 && ready(&spec) {
            return spec;
        }
        assert!(Instant::now() < deadline, "no NetworkSpec with {what} within {CONVERGE:?}: {run:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Whether `spec` holds `address` on `link` from `layer`.
fn has_address(spec: &Value, link: &str, address: &str, layer: &str) -> bool {
    spec["addresses"]
        .as_array()
        .is_some_and(|all| all.iter().any(|a| a["link"] == link && a["address"] == address && a["layer"] == layer))
}

/// The last column of a run's table rows (diff lines keep their first
/// character: ` `, `+` or `-`).
fn cells(run: &CtlRun, node: &str) -> Vec<String> {
    let header = run.stdout.lines().next().unwrap_or_default();
    let start = header.rfind(' ').map_or(0, |i| i + 1);
    run.stdout.lines().filter(|l| l.starts_with(node)).map(|l| l.get(start..).unwrap_or_default().to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn networkspec_aliases_plan_roles_and_a_dry_run_through_the_cli() {
    let started = Instant::now();
    let pki = Pki::new();
    let interfaces = "      - name: bzcfg0\n        addresses: [192.0.2.10/24]\n";
    let config = with_network(&pki.node_config("netcli"), interfaces, None);
    let node = Node::start_configured(&config).await;
    let dir = tempfile::tempdir().unwrap();
    let admin = client_config(&pki, dir.path(), &node, &["os:admin"]);
    let operator = client_config(&pki, dir.path(), &node, &["os:operator"]);
    let reader = client_config(&pki, dir.path(), &node, &["os:reader"]);

    // 1. `get networkspec -o yaml`: the config's link and address, layer config.
    spec_when(&reader, "bzcfg0's address", |s| has_address(s, "bzcfg0", "192.0.2.10/24", "config")).await;
    let run = bronzectl(Some(&reader), &["get", "networkspec", "-o", "yaml"]).await;
    assert_eq!(run.code, 0, "{run:?}");
    let doc: serde_yaml::Value = serde_yaml::from_str(run.stdout.trim_start_matches("---\n")).expect("yaml");
    let spec = serde_json::to_value(&doc["resources"][0]["spec"]).unwrap();
    assert_eq!(doc["resources"][0]["metadata"]["type"].as_str(), Some("NetworkSpecs.bronze.dev"), "{}", run.stdout);
    let link = spec["links"].as_array().unwrap().iter().find(|l| l["name"] == "bzcfg0").expect("bzcfg0 in the spec");
    assert_eq!(link["layer"], "config", "{link}");
    assert_eq!(link["addressingLayer"], "config", "{link}");
    assert!(has_address(&spec, "bzcfg0", "192.0.2.10/24", "config"), "{}", run.stdout);
    assert_eq!(spec["applied"], false, "process mode without --own-network only computes the spec");

    // Every network alias resolves to its type.
    for (alias, type_name) in [
        ("link", "LinkStatuses.bronze.dev"),
        ("links", "LinkStatuses.bronze.dev"),
        ("address", "AddressStatuses.bronze.dev"),
        ("addresses", "AddressStatuses.bronze.dev"),
        ("route", "RouteStatuses.bronze.dev"),
        ("routes", "RouteStatuses.bronze.dev"),
        ("networkspec", "NetworkSpecs.bronze.dev"),
        ("networkspecs", "NetworkSpecs.bronze.dev"),
        ("netspec", "NetworkSpecs.bronze.dev"),
        ("dhcplease", "DhcpLeases.bronze.dev"),
        ("dhcpleases", "DhcpLeases.bronze.dev"),
    ] {
        let run = bronzectl(Some(&reader), &["-o", "json", "get", alias]).await;
        assert_eq!(run.code, 0, "get {alias}: {run:?}");
        let out: Value = serde_json::from_str(run.stdout.trim()).unwrap();
        for r in out["resources"].as_array().unwrap() {
            assert_eq!(r["metadata"]["type"], type_name, "get {alias}: {r}");
        }
        // The loopback link and the spec are always there; no lease in process mode.
        if matches!(alias, "links" | "netspec") {
            assert!(!out["resources"].as_array().unwrap().is_empty(), "get {alias}: {out}");
        }
    }
    let run = bronzectl(Some(&reader), &["get", "nosuchnetworkthing"]).await;
    assert_ne!(run.code, 0, "an unknown type is an error: {run:?}");

    // 2. `network plan`: operator yes, reader no.
    let run = bronzectl(Some(&operator), &["network", "plan"]).await;
    assert_eq!(run.code, 0, "{run:?}");
    let lines = cells(&run, &node.addr);
    assert!(lines[0].ends_with("; nothing applied"), "{run:?}");
    let run = bronzectl(Some(&operator), &["-o", "json", "network", "plan"]).await;
    assert_eq!(run.code, 0, "{run:?}");
    let out: Value = serde_json::from_str(run.stdout.trim()).unwrap();
    assert!(has_address(&out["spec"], "bzcfg0", "192.0.2.10/24", "config"), "the candidate spec: {out}");
    assert_eq!(out["live"], true, "{out}");
    let run = bronzectl(Some(&reader), &["network", "plan"]).await;
    assert_ne!(run.code, 0, "{run:?}");
    let sentence = format!("node {}: permission denied: os:reader may not call Plan", node.addr);
    assert!(run.stderr.contains(&sentence), "want {sentence:?} in {run:?}");

    // 3. A dry run adding an address: the network section names it and its
    //    layer; nothing changes.
    let stored = node.stored_config().expect("a stored config");
    let interfaces = "      - name: bzcfg0\n        addresses: [192.0.2.10/24, 198.51.100.20/24]\n";
    let candidate = dir.path().join("candidate.yaml");
    std::fs::write(&candidate, with_network(&pki.node_config("netcli"), interfaces, None)).unwrap();
    let file = candidate.to_str().unwrap();
    let run = bronzectl(Some(&admin), &["apply-config", "--dry-run", "-f", file]).await;
    assert_eq!(run.code, 0, "{run:?}");
    let lines = cells(&run, &node.addr);
    let config_line = lines.iter().position(|l| l == "+        addresses: [192.0.2.10/24, 198.51.100.20/24]");
    let network = lines.iter().position(|l| l == "network:");
    let added = lines.iter().position(|l| l == "+- {link: bzcfg0, address: 198.51.100.20/24, layer: config}");
    assert!(
        matches!((config_line, network, added), (Some(c), Some(n), Some(a)) if c < n && n < a),
        "the config diff, then network:, then the new address with its layer: {run:?}"
    );
    // Only the new address changes.
    let changed: Vec<&String> = lines[network.unwrap()..]
        .iter()
        .filter(|l| (l.starts_with('+') && !l.starts_with("+++")) || (l.starts_with('-') && !l.starts_with("---")))
        .collect();
    assert_eq!(changed, ["+- {link: bzcfg0, address: 198.51.100.20/24, layer: config}"], "{run:?}");
    let run = bronzectl(Some(&admin), &["-o", "json", "apply-config", "--dry-run", "-f", file]).await;
    let out: Value = serde_json::from_str(run.stdout.trim()).unwrap();
    assert_eq!(out["mode"], "dry-run", "{out}");
    assert!(out["networkDiff"].as_str().unwrap().contains("198.51.100.20/24, layer: config}"), "{out}");
    assert_eq!(out["networkNotes"], serde_json::json!([]), "{out}");

    assert_eq!(node.stored_config().expect("a stored config"), stored, "a dry run stores nothing");
    let run = bronzectl(Some(&admin), &["-o", "json", "get", "networkspec", "current"]).await;
    let live: Value = serde_json::from_str(run.stdout.trim()).unwrap();
    assert!(!run.stdout.contains("198.51.100.20"), "the live spec is unchanged: {live}");
    assert!(has_address(&live["spec"], "bzcfg0", "192.0.2.10/24", "config"), "{live}");
    eprintln!("network_cli: spec, aliases, plan, roles and dry run in {:?}", started.elapsed());
}

/// `ip -n NS ARGS`, panicking with its error.
fn ip(ns: &NetNs, args: &[&str]) {
    let out = Command::new("ip").args(["-n", ns.name()]).args(args).output().expect("run ip");
    assert!(out.status.success(), "ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn network_plan_diffs_a_fresh_configurator_plan_against_the_live_spec() {
    if let Some(why) = bronze_tests::netns::unavailable() {
        eprintln!("SKIPPED network plan with a configurator: {why}");
        return;
    }
    let started = Instant::now();
    let mut ns = NetNs::new().expect("netns");
    // Two veths whose peers are elsewhere: the node sees lo, bzd0, bzd1.
    let peers = NetNs::new().expect("peer netns");
    for (link, peer) in [("bzd0", "bzp0"), ("bzd1", "bzp1")] {
        ip(&ns, &["link", "add", link, "type", "veth", "peer", "name", peer, "netns", peers.name()]);
        ip(&ns, &["link", "set", link, "up"]);
    }
    let pki = Pki::new();
    // The instance exists from the start (an install needs one to run it);
    // it becomes the configurator once its plugin is installed.
    let plugins = format!(
        "allowUnsigned: true\n    instances:{}",
        instance_yaml("net", "net-hostile", "case: ok", "config: true", None)
    );
    let base = config_with_plugins(&pki, "netplan", &plugins);
    let node = node_in(&mut ns, base.clone(), Vec::new()).await;
    let dir = tempfile::tempdir().unwrap();
    let admin = client_config(&pki, dir.path(), &node, &["os:admin"]);
    let operator = client_config(&pki, dir.path(), &node, &["os:operator"]);

    // No configurator yet: a plan is the live spec again.
    spec_when(&admin, "anything", |s| s["applied"] == false).await;
    let run = bronzectl(Some(&operator), &["network", "plan"]).await;
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(cells(&run, &node.addr), ["no change against the live network spec; nothing applied"], "{run:?}");

    let c = node.client(&pki.auth(&["os:admin"])).await;
    install(c.channel.clone(), &bundle("net-hostile")).await.expect("install net-hostile");
    let with_configurator = dir.path().join("configurator.yaml");
    std::fs::write(&with_configurator, with_network(&base, "", Some("net"))).unwrap();
    let run = bronzectl(Some(&admin), &["apply-config", "-f", with_configurator.to_str().unwrap()]).await;
    assert_eq!(run.code, 0, "{run:?}");

    // No link has an address: the plan gives one to the first, bzd0.
    spec_when(&admin, "the plan's address on bzd0", |s| has_address(s, "bzd0", "10.99.0.2/24", "platform")).await;
    // bzd1 gets an address behind the node's back: a fresh plan moves the
    // plan's address there; the live spec stays.
    ip(&ns, &["addr", "add", "192.0.2.5/24", "dev", "bzd1"]);
    let deadline = Instant::now() + CONVERGE;
    loop {
        let run = bronzectl(Some(&admin), &["get", "addresses"]).await;
        if run.stdout.contains("bzd1/192.0.2.5/24") {
            break;
        }
        assert!(Instant::now() < deadline, "the node does not see bzd1's address: {run:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let run = bronzectl(Some(&operator), &["network", "plan"]).await;
    assert_eq!(run.code, 0, "{run:?}");
    let lines = cells(&run, &node.addr);
    assert_eq!(lines[0], "changes against the live network spec; nothing applied", "{run:?}");
    assert!(lines.contains(&"--- live".to_string()) && lines.contains(&"+++ new".to_string()), "{run:?}");
    for line in [
        "-- {link: bzd0, address: 10.99.0.2/24, layer: platform}",
        "+- {link: bzd1, address: 10.99.0.2/24, layer: platform}",
    ] {
        assert!(lines.iter().any(|l| l == line), "want {line:?} in {run:?}");
    }
    let run = bronzectl(Some(&operator), &["-o", "yaml", "network", "plan"]).await;
    assert_eq!(run.code, 0, "{run:?}");
    let doc: serde_yaml::Value = serde_yaml::from_str(run.stdout.trim_start_matches("---\n")).expect("yaml");
    let candidate = serde_json::to_value(&doc["spec"]).unwrap();
    assert!(has_address(&candidate, "bzd1", "10.99.0.2/24", "platform"), "{}", run.stdout);
    assert!(!has_address(&candidate, "bzd0", "10.99.0.2/24", "platform"), "{}", run.stdout);

    // Nothing applied: the live spec still has the address on bzd0.
    let run = bronzectl(Some(&admin), &["-o", "json", "get", "networkspec", "current"]).await;
    let live: Value = serde_json::from_str(run.stdout.trim()).unwrap();
    assert!(has_address(&live["spec"], "bzd0", "10.99.0.2/24", "platform"), "{live}");
    assert!(!has_address(&live["spec"], "bzd1", "10.99.0.2/24", "platform"), "{live}");

    // A plan the node refuses: the warning says why, the spec keeps the
    // last accepted plan.
    let bad = base.replace("case: ok", "case: bad-cidr");
    assert_ne!(bad, base);
    std::fs::write(&with_configurator, with_network(&bad, "", Some("net"))).unwrap();
    let run = bronzectl(Some(&admin), &["apply-config", "-f", with_configurator.to_str().unwrap()]).await;
    assert_eq!(run.code, 0, "{run:?}");
    let want = "warning: the plan of net is refused: ethernets[0].addressing.addresses[0]: \"10.0.0.300/24\" is not an \
                address";
    let deadline = Instant::now() + CONVERGE;
    let lines = loop {
        let run = bronzectl(Some(&operator), &["network", "plan"]).await;
        assert_eq!(run.code, 0, "{run:?}");
        let lines = cells(&run, &node.addr);
        if lines.iter().any(|l| l.starts_with(want)) {
            break lines;
        }
        assert!(Instant::now() < deadline, "no refusal within {CONVERGE:?}: {run:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(lines[0].ends_with("; nothing applied"), "{lines:?}");
    eprintln!("network_cli: network plan with a configurator in {:?}", started.elapsed());
}
