//! The whole node's network end to end: a real `bronzed --own-network` in
//! a network namespace of the test's own, joined by veth pairs to a peer
//! namespace, configured through its API and checked in the kernel (`ip -n`)
//! and in its resources (`bronzectl get networkspec|dhcpleases`).
//!
//! - Layering: the kernel command line (`bronze.ip=`) says one address, the
//!   config another: the config's is on the link, `networkspec` names layer
//!   `config`; a new config moves the kernel, and a config that no longer
//!   names the link gives it back to the command line.
//! - DHCP against dnsmasq in the peer namespace: the lease's address,
//!   option 121 routes and DNS reach the kernel and resolv.conf, with layer
//!   `dhcp`; `get dhcpleases` shows the lease.
//! - Configurator plans from the `net-hostile` fixture: each hostile case
//!   refused with the field named, the network unchanged and the API still
//!   answering; a plan that cuts the API's link refused, then applied once
//!   the config allows it; a valid plan applied as layer `platform`.
//! - `network-cloudinit` as the configurator with a v2 document in its
//!   config: the kernel has its VLAN and addresses, layer `platform`.

use bronze_tests::dnsmasq::{self, CLIENT_LINK, Dnsmasq, Pair, SERVER_ADDR, ServerConfig};
use bronze_tests::netnode::{
    CONVERGE, NodeNet, Relay, Start, address_layer, addresses, config_with_network, link_details, routes, skipped,
    veth, wait_for, warnings,
};
use bronze_tests::netns::NetNs;
use bronze_tests::plugins::{bundle, install, instance_yaml};
use bronze_tests::{Pki, bronzectl};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

/// Layering: cmdline < config, and removal of what the config no longer
/// names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_configs_address_wins_over_the_cmdlines_and_the_kernel_follows_new_configs() {
    if skipped("network_node layering") {
        return;
    }
    let started = Instant::now();
    let mut ns = NetNs::new().expect("netns");
    let peer = NetNs::new().expect("peer netns");
    veth(&ns, "veth0", &peer, "peer0", Some("10.70.0.1/24"));
    let pki = Pki::new();
    let with_address = |address: &str| {
        config_with_network(
            &pki,
            "layers",
            &format!("interfaces:\n      - name: veth0\n        addresses: [{address}]"),
            None,
        )
    };
    let (config, second) = (with_address("10.70.0.3/24"), with_address("10.70.0.4/24"));
    let without = config_with_network(&pki, "layers", "interfaces: []", None);
    let net = NodeNet::start(
        &mut ns,
        pki,
        config,
        Start { cmdline: Some("bronze.ip=veth0:10.70.0.2/24:10.70.0.1".into()), ..Default::default() },
    )
    .await;

    // 1. The config's address, not the command line's, and the layer named.
    wait_for(
        "10.70.0.3/24 alone on veth0",
        CONVERGE,
        || (addresses(&ns, "veth0") == ["10.70.0.3/24"]).then_some(()),
        || format!("{:?}\n{}", addresses(&ns, "veth0"), net.node.log()),
    )
    .await;
    let spec = net.network_spec().await;
    assert_eq!(address_layer(&spec, "veth0", "10.70.0.3/24").as_deref(), Some("config"), "{spec:#}");
    assert_eq!(address_layer(&spec, "veth0", "10.70.0.2/24"), None, "{spec:#}");
    assert!(
        !routes(&ns).iter().any(|r| r.starts_with("default")),
        "the command line's gateway went with its addressing: {:?}",
        routes(&ns)
    );
    // What an operator reads: `get networkspec -o yaml`.
    let yaml = net.ctl(&["-o", "yaml", "get", "networkspec"]).await;
    let shown: Value = serde_yaml::from_str(&yaml).unwrap_or_else(|e| panic!("{e}: {yaml}"));
    let shown = shown["resources"][0]["spec"].clone();
    assert_eq!(address_layer(&shown, "veth0", "10.70.0.3/24").as_deref(), Some("config"), "{yaml}");
    // The link is up (the node brought it up) and carries traffic.
    assert!(link_details(&ns, "veth0").is_some_and(|d| d.contains("state UP")), "{:?}", link_details(&ns, "veth0"));

    // 2. Another address: the kernel follows, the old one is removed.
    net.apply(&second).await;
    wait_for(
        "10.70.0.4/24 alone on veth0",
        CONVERGE,
        || (addresses(&ns, "veth0") == ["10.70.0.4/24"]).then_some(()),
        || format!("{:?}\n{}", addresses(&ns, "veth0"), net.node.log()),
    )
    .await;

    // 3. A config without the interface: the command line's address and
    // default route come back, with their layer.
    net.apply(&without).await;
    wait_for(
        "the command line's address and gateway",
        CONVERGE,
        || {
            (addresses(&ns, "veth0") == ["10.70.0.2/24"]
                && routes(&ns).iter().any(|r| r.starts_with("default via 10.70.0.1 dev veth0")))
            .then_some(())
        },
        || format!("{:?} {:?}\n{}", addresses(&ns, "veth0"), routes(&ns), net.node.log()),
    )
    .await;
    let spec = net.network_spec().await;
    assert_eq!(address_layer(&spec, "veth0", "10.70.0.2/24").as_deref(), Some("cmdline"), "{spec:#}");
    let default: Vec<&Value> =
        spec["routes"].as_array().unwrap().iter().filter(|r| r["destination"] == "0.0.0.0/0").collect();
    assert_eq!(default.len(), 1, "{spec:#}");
    assert_eq!((&default[0]["gateway"], &default[0]["layer"]), (&Value::from("10.70.0.1"), &Value::from("cmdline")));
    eprintln!("layering: {:.1} s", started.elapsed().as_secs_f64());
}

/// The route of `spec` to `destination` on `link`: (gateway, layer).
fn route_of(spec: &Value, link: &str, destination: &str) -> Option<(String, String)> {
    spec["routes"]
        .as_array()?
        .iter()
        .find(|r| r["link"] == link && r["destination"] == destination)
        .map(|r| (r["gateway"].as_str().unwrap_or("").to_string(), r["layer"].as_str().unwrap_or("").to_string()))
}

/// A node whose config asks for DHCP on [`CLIENT_LINK`], and dnsmasq in
/// the peer namespace answering with DNS, a search domain, classless
/// static routes (option 121 replaces option 3, RFC 3442: the default
/// route is in it).
async fn dhcp_node(dir: &std::path::Path) -> (Pair, Dnsmasq, NodeNet) {
    let mut pair = Pair::new().expect("namespaces");
    let options: Vec<String> = vec![
        "option:dns-server,10.77.0.53".into(),
        "option:domain-search,e2e.example.test".into(),
        "option:classless-static-route,10.88.0.0/16,10.77.0.254,0.0.0.0/0,10.77.0.1".into(),
    ];
    let server =
        Dnsmasq::start(&pair.server, dir, &ServerConfig { options, ..Default::default() }).expect("dnsmasq starts");
    let pki = Pki::new();
    let config = config_with_network(
        &pki,
        "dhcp-node",
        &format!("interfaces:\n      - name: {CLIENT_LINK}\n        dhcp: true"),
        None,
    );
    let net = NodeNet::start(&mut pair.client, pki, config, Start::default()).await;
    (pair, server, net)
}

/// DHCP end to end: the config asks for DHCP on the link; dnsmasq in the
/// peer namespace answers with DNS and classless static routes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dhcp_lease_from_dnsmasq_configures_the_link_routes_and_resolv_conf() {
    if let Some(why) = dnsmasq::unavailable() {
        eprintln!("\n!!!!!!!! SKIPPED network_node DHCP: {why} !!!!!!!!\n");
        return;
    }
    let started = Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    let (pair, server, net) = dhcp_node(tmp.path()).await;
    let ns = &pair.client;

    // The lease's address on the link, in dnsmasq's pool.
    let address = wait_for(
        "a lease address on the link",
        CONVERGE,
        || addresses(ns, CLIENT_LINK).into_iter().find(|a| a.starts_with("10.77.0.")),
        || format!("{:?}\n{}\n{}", addresses(ns, CLIENT_LINK), server.log(), net.node.log()),
    )
    .await;
    let host: u8 = address.trim_end_matches("/24").rsplit('.').next().unwrap().parse().unwrap();
    assert!(address.ends_with("/24") && (50..=99).contains(&host), "{address} is not in dnsmasq's pool");
    assert_eq!(server.messages(), ["DHCPDISCOVER", "DHCPOFFER", "DHCPREQUEST", "DHCPACK"]);

    // Option 121's routes in the kernel.
    let kernel = wait_for(
        "option 121's routes in the kernel",
        CONVERGE,
        || {
            let r = routes(ns);
            (r.iter().any(|r| r.starts_with(&format!("default via 10.77.0.1 dev {CLIENT_LINK}")))
                && r.iter().any(|r| r.starts_with(&format!("10.88.0.0/16 via 10.77.0.254 dev {CLIENT_LINK}"))))
            .then_some(r)
        },
        || format!("{:?}\n{}", routes(ns), net.node.log()),
    )
    .await;
    eprintln!("routes: {kernel:?}");

    // The resource: bound, this address, dnsmasq as the server.
    let leases = net.resources("dhcpleases").await;
    let lease = leases.iter().find(|l| l["spec"]["link"] == CLIENT_LINK).unwrap_or_else(|| panic!("{leases:#?}"));
    assert_eq!(lease["spec"]["state"], "bound", "{lease:#}");
    assert_eq!(lease["spec"]["address"], address.as_str(), "{lease:#}");
    assert_eq!(lease["spec"]["server"], SERVER_ADDR, "{lease:#}");
    assert!(!lease["spec"]["expiresAt"].as_str().unwrap_or("").is_empty(), "{lease:#}");
    let table = net.ctl(&["get", "dhcpleases"]).await;
    assert!(table.contains(CLIENT_LINK) && table.contains(&address), "{table}");

    // The spec names the DHCP layer for each.
    let spec = net.network_spec().await;
    assert_eq!(address_layer(&spec, CLIENT_LINK, &address).as_deref(), Some("dhcp"), "{spec:#}");
    assert_eq!(route_of(&spec, CLIENT_LINK, "0.0.0.0/0"), Some(("10.77.0.1".into(), "dhcp".into())), "{spec:#}");
    assert_eq!(route_of(&spec, CLIENT_LINK, "10.88.0.0/16"), Some(("10.77.0.254".into(), "dhcp".into())), "{spec:#}");
    assert_eq!(
        spec["links"].as_array().unwrap().iter().find(|l| l["name"] == CLIENT_LINK).unwrap()["dhcp4"]["layer"],
        "config"
    );
    assert_eq!(spec["resolvers"], serde_json::json!({"value": ["10.77.0.53"], "layer": "dhcp"}), "{spec:#}");

    // resolv.conf (under the state dir in process mode) has the lease's DNS.
    let resolv = wait_for(
        "resolv.conf with the lease's DNS server",
        CONVERGE,
        || Some(net.resolv_conf()).filter(|r| r.contains("nameserver 10.77.0.53")),
        || format!("{:?}\n{}", net.resolv_conf(), net.node.log()),
    )
    .await;
    assert!(resolv.contains("e2e.example.test"), "the search domain: {resolv}");

    eprintln!("DHCP: {:.1} s", started.elapsed().as_secs_f64());
}

/// A config that no longer asks for DHCP: the client stops and releases
/// its lease (from the leased address, so the server takes it back), and
/// the address and routes leave the kernel.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leaving_dhcp_releases_the_lease_and_removes_its_address_and_routes() {
    if let Some(why) = dnsmasq::unavailable() {
        eprintln!("\n!!!!!!!! SKIPPED network_node DHCP release: {why} !!!!!!!!\n");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (pair, server, net) = dhcp_node(tmp.path()).await;
    let ns = &pair.client;
    let address = wait_for(
        "the lease's address and default route",
        CONVERGE,
        || {
            let address = addresses(ns, CLIENT_LINK).into_iter().next()?;
            routes(ns).iter().any(|r| r.starts_with("default via 10.77.0.1")).then_some(address)
        },
        || format!("{:?} {:?}\n{}", addresses(ns, CLIENT_LINK), routes(ns), net.node.log()),
    )
    .await;
    let without = config_with_network(&net.pki, "dhcp-node", "interfaces: []", None);
    net.apply(&without).await;
    wait_for(
        "the lease's address and routes removed",
        CONVERGE,
        || (addresses(ns, CLIENT_LINK).is_empty() && !routes(ns).iter().any(|r| r.contains(CLIENT_LINK))).then_some(()),
        || format!("{:?} {:?}\n{}", addresses(ns, CLIENT_LINK), routes(ns), net.node.log()),
    )
    .await;
    assert!(server.wait_log("DHCPRELEASE", CONVERGE), "no DHCPRELEASE: {}\n{}", server.log(), net.node.log());
    let ip = address.trim_end_matches("/24");
    let released = server.log().lines().find(|l| l.contains("DHCPRELEASE")).unwrap_or_default().to_string();
    assert!(released.contains(&format!(") {ip} ")) && !released.contains("unknown lease"), "{released}");
    let spec = net.network_spec().await;
    assert!(spec["addresses"].as_array().unwrap().is_empty(), "{spec:#}");
}

/// The hostile cases: (case, text the refusal must contain).
const HOSTILE: &[(&str, &str)] = &[
    ("routes-10000", "ethernets[0].addressing.routes: 10000 entries; at most 1000 are allowed"),
    (
        "long-name",
        "vlans[0].name: link name \"vlan-name-of-22-bytes!\" is not valid: it is 22 bytes long; the limit is 15",
    ),
    ("bad-cidr", "ethernets[0].addressing.addresses[0]: \"10.0.0.300/24\" is not an address in CIDR notation"),
    ("unreachable-gateway", "gateway 192.0.2.1 of route 0.0.0.0/0 is unreachable"),
    // Stopped at the boundary: more than the host copies out of one call.
    ("huge-strings", "instance hostile-huge-strings's plan call failed (see its logs)"),
];

/// The node's whole network as the kernel has it: every link's addresses,
/// and the routes.
fn kernel_state(ns: &NetNs) -> (Vec<(String, Vec<String>)>, Vec<String>) {
    let links = ["lo", "veth0", "veth2"].iter().map(|l| (l.to_string(), addresses(ns, l))).collect();
    (links, routes(ns))
}

/// A node whose veth0 (address and default route from the command line)
/// carries the API, with veth2 as the plans' target, one `net-hostile`
/// instance per case (`hostile-<case>`, and `cut` for cut-api-link on
/// veth0) and `network` as its `machine.network` section.
struct Configurator {
    net: NodeNet,
    ns: NetNs,
    peer: NetNs,
    plugins: String,
}

/// The configurator section naming `instance`.
fn configurator(instance: &str, allow_api_link_change: bool) -> String {
    format!(
        "interfaces: []\n    configurator:\n      instance: {instance}\n      allowApiLinkChange: {allow_api_link_change}"
    )
}

impl Configurator {
    async fn start(first: &str) -> Configurator {
        let mut ns = NetNs::new().expect("netns");
        let peer = NetNs::new().expect("peer netns");
        veth(&ns, "veth0", &peer, "peer0", Some("10.70.0.1/24"));
        veth(&ns, "veth2", &peer, "peer2", None);
        let mut instances: String = HOSTILE
            .iter()
            .map(|(case, _)| {
                instance_yaml(
                    &format!("hostile-{case}"),
                    "net-hostile",
                    &format!("case: {case}, link: veth2"),
                    "config: true",
                    None,
                )
            })
            .collect();
        instances.push_str(&instance_yaml("ok", "net-hostile", "case: ok, link: veth2", "config: true", None));
        instances.push_str(&instance_yaml(
            "cut",
            "net-hostile",
            "case: cut-api-link, link: veth0",
            "config: true",
            None,
        ));
        let plugins = format!("allowUnsigned: true\n    instances:{instances}");
        let pki = Pki::new();
        let config = config_with_network(&pki, "planned", &configurator(first, false), Some(&plugins));
        let net = NodeNet::start(
            &mut ns,
            pki,
            config,
            Start {
                cmdline: Some("bronze.ip=veth0:10.70.0.2/24:10.70.0.1".into()),
                listen_all: true,
                ..Default::default()
            },
        )
        .await;
        Configurator { net, ns, peer, plugins }
    }

    fn config(&self, network: &str) -> String {
        config_with_network(&self.net.pki, "planned", network, Some(&self.plugins))
    }

    /// Waits for a spec warning containing `text`; returns it.
    async fn refused(&self, text: &str) -> String {
        let deadline = Instant::now() + CONVERGE;
        loop {
            let spec = self.net.network_spec().await;
            if let Some(w) = warnings(&spec).into_iter().find(|w| w.contains(text)) {
                return w;
            }
            assert!(
                Instant::now() < deadline,
                "no warning with {text:?} within {CONVERGE:?}: {spec:#}\n{}",
                self.net.node.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The API answers through veth0 (from the peer namespace, not through
    /// the loopback relay) with the machine's status.
    async fn answers_through_the_veth(&self) -> Result<(), String> {
        let relay = Relay::start(&self.peer, format!("10.70.0.2:{}", self.net.port).parse().unwrap()).expect("relay");
        let run = bronzectl(Some(&self.net.admin), &["-n", &relay.addr(), "-o", "json", "get", "machinestatus"]).await;
        if run.code == 0 && run.stdout.contains("\"spec\"") { Ok(()) } else { Err(format!("{run:?}")) }
    }
}

/// Hostile plans are refused with the field named, and nothing changes; a
/// plan that cuts the API's link is refused until the config allows it; a
/// valid plan is applied as the platform layer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configurator_plans_are_checked_hostile_ones_refused_and_the_api_link_guarded() {
    if skipped("network_node configurator plans") {
        return;
    }
    let started = Instant::now();
    let first = format!("hostile-{}", HOSTILE[0].0);
    let setup = Configurator::start(&first).await;
    let (net, ns) = (&setup.net, &setup.ns);
    // Before the plugin is installed: the command line's network, and the
    // configurator's absence said.
    wait_for(
        "the command line's address",
        CONVERGE,
        || (addresses(ns, "veth0") == ["10.70.0.2/24"]).then_some(()),
        || format!("{:?}\n{}", kernel_state(ns), net.node.log()),
    )
    .await;
    setup.refused(&format!("instance {first}")).await;
    let before = kernel_state(ns);
    setup.answers_through_the_veth().await.expect("the API through veth0 before any plan");
    let client = net.node.client(&net.pki.auth(&["os:admin"])).await;
    install(client.channel.clone(), &bundle("net-hostile"))
        .await
        .unwrap_or_else(|e| panic!("install: {e}\n{}", net.node.log()));

    // Each hostile case: refused, the field named, the kernel unchanged,
    // the API answering through the link.
    for (i, (case, text)) in HOSTILE.iter().enumerate() {
        let instance = format!("hostile-{case}");
        if i > 0 {
            net.apply(&setup.config(&configurator(&instance, false))).await;
        }
        let warning = setup.refused(text).await;
        let refused = format!("the plan of {instance} is refused: ");
        assert!(warning.starts_with(&refused) || *case == "huge-strings", "{case}: {warning}");
        assert!(
            !warning.chars().any(char::is_control),
            "{case}: a control character reached the resource: {warning:?}"
        );
        assert!(warning.len() <= 2048, "{case}: a warning of {} bytes: {}...", warning.len(), &warning[..200]);
        assert_eq!(kernel_state(ns), before, "{case}: the kernel changed\n{}", net.node.log());
        setup.answers_through_the_veth().await.unwrap_or_else(|e| panic!("{case}: the API through veth0: {e}"));
    }
    let log = net.node.log();
    assert!(log.contains("instance=hostile-huge-strings outcome=limit data limit"), "{log}");
    assert!(log.lines().all(|l| l.len() < 16 << 10), "a log line over 16 KiB: the hostile strings reached the log");

    // A valid plan on veth2: applied, layer platform.
    net.apply(&setup.config(&configurator("ok", false))).await;
    wait_for(
        "the ok plan in the kernel",
        CONVERGE,
        || {
            (addresses(ns, "veth2") == ["10.99.0.2/24"]
                && routes(ns)
                    .iter()
                    .any(|r| r.starts_with("10.98.0.0/16 via 10.99.0.1 dev veth2") && r.contains("metric 100")))
            .then_some(())
        },
        || format!("{:?}\n{}", kernel_state(ns), net.node.log()),
    )
    .await;
    let spec = net.network_spec().await;
    assert_eq!(address_layer(&spec, "veth2", "10.99.0.2/24").as_deref(), Some("platform"), "{spec:#}");
    assert_eq!(address_layer(&spec, "veth0", "10.70.0.2/24").as_deref(), Some("cmdline"), "{spec:#}");
    assert_eq!(route_of(&spec, "veth2", "10.98.0.0/16"), Some(("10.99.0.1".into(), "platform".into())), "{spec:#}");
    assert_eq!(spec["resolvers"], serde_json::json!({"value": ["10.99.0.53"], "layer": "platform"}), "{spec:#}");
    assert!(warnings(&spec).iter().all(|w| !w.contains("refused")), "{spec:#}");
    assert!(net.resolv_conf().contains("nameserver 10.99.0.53"), "{}", net.resolv_conf());
    let applied = kernel_state(ns);

    // A plan that takes veth0's address away: refused, veth0 unchanged.
    net.apply(&setup.config(&configurator("cut", false))).await;
    let warning = setup.refused("the link the API is reached through").await;
    assert!(
        warning.starts_with("the plan of cut is refused: plan: it changes the addresses, routes of veth0"),
        "{warning}"
    );
    assert!(warning.contains("allowApiLinkChange: true"), "{warning}");
    assert_eq!(kernel_state(ns), applied, "the refused plan changed the kernel\n{}", net.node.log());
    setup.answers_through_the_veth().await.expect("the API through veth0 after the refusal");

    // Allowed: applied, and veth0 has only the plan's address (the API is
    // then reached through the loopback relay only).
    net.apply(&setup.config(&configurator("cut", true))).await;
    wait_for(
        "the cut plan applied once allowed",
        CONVERGE,
        || (addresses(ns, "veth0") == ["198.51.100.7/24"]).then_some(()),
        || format!("{:?}\n{}", kernel_state(ns), net.node.log()),
    )
    .await;
    let spec = net.network_spec().await;
    assert_eq!(address_layer(&spec, "veth0", "198.51.100.7/24").as_deref(), Some("platform"), "{spec:#}");
    assert!(!routes(ns).iter().any(|r| r.starts_with("default")), "{:?}", routes(ns));
    assert!(setup.answers_through_the_veth().await.is_err(), "veth0 no longer holds 10.70.0.2");
    eprintln!("configurator plans: {:.1} s", started.elapsed().as_secs_f64());
}

/// A cloud-init v2 document: a static link with a route and resolvers, a
/// bond of two veths, and a VLAN on the static link.
const V2: &str = "version: 2
ethernets:
  veth3:
    addresses: [10.71.0.2/24]
    routes: [{to: 10.72.0.0/16, via: 10.71.0.1, metric: 50}]
    nameservers: {addresses: [10.71.0.53], search: [ci.example.test]}
  veth4: {}
  veth5: {}
bonds:
  bond0:
    interfaces: [veth4, veth5]
    parameters: {mode: active-backup, mii-monitor-interval: 100}
    addresses: [10.73.0.2/24]
vlans:
  vlan100:
    id: 100
    link: veth3
    addresses: [10.100.0.2/24]
";

/// Whether this kernel can make a link (`ip link add ARGS`, probe name
/// first or after `name`); says loudly when not: some kernels have
/// neither bonding nor 802.1Q, and then only the spec is checked.
fn kernel_can(ns: &NetNs, args: &[&str]) -> bool {
    let out = std::process::Command::new("ip").args(["-n", ns.name(), "link", "add"]).args(args).output().unwrap();
    let name = args.iter().position(|a| *a == "name").map_or(args[0], |i| args[i + 1]);
    if out.status.success() {
        let _ = std::process::Command::new("ip").args(["-n", ns.name(), "link", "del", name]).status();
        return true;
    }
    eprintln!(
        "\n!!!!!!!! this kernel cannot make {args:?} ({}): bonds and VLANs are checked in the spec only !!!!!!!!\n",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    false
}

/// `network-cloudinit` as the configurator, its document in its config:
/// the kernel gets the VLAN, the bond and the addresses, layer platform.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn network_cloudinit_as_the_configurator_makes_the_vlan_bond_and_addresses() {
    if skipped("network_node network-cloudinit configurator") {
        return;
    }
    let started = Instant::now();
    let mut ns = NetNs::new().expect("netns");
    let peer = NetNs::new().expect("peer netns");
    for (link, other) in [("veth3", "peer3"), ("veth4", "peer4"), ("veth5", "peer5")] {
        veth(&ns, link, &peer, other, None);
    }
    let bonds_and_vlans = kernel_can(&ns, &["probe-bond", "type", "bond"])
        && kernel_can(&ns, &["link", "veth3", "name", "probe-vlan", "type", "vlan", "id", "4000"]);
    let document = serde_json::to_string(V2).unwrap();
    let instance = instance_yaml(
        "cloudinit",
        "network-cloudinit",
        &format!("format: v2, document: {document}"),
        "config: true",
        None,
    );
    let pki = Pki::new();
    let config = config_with_network(
        &pki,
        "cloudinit",
        &configurator("cloudinit", false),
        Some(&format!("allowUnsigned: true\n    instances:{instance}")),
    );
    let net = NodeNet::start(&mut ns, pki, config, Start::default()).await;
    let client = net.node.client(&net.pki.auth(&["os:admin"])).await;
    install(client.channel.clone(), &bundle("network-cloudinit"))
        .await
        .unwrap_or_else(|e| panic!("install: {e}\n{}", net.node.log()));

    let all = [("veth3", "10.71.0.2/24"), ("bond0", "10.73.0.2/24"), ("vlan100", "10.100.0.2/24")];
    let expected = if bonds_and_vlans { &all[..] } else { &all[..1] };
    wait_for(
        "the document's addresses in the kernel",
        CONVERGE,
        || expected.iter().all(|(link, address)| addresses(&ns, link) == [*address]).then_some(()),
        || {
            let now: Vec<_> = expected.iter().map(|(l, _)| (l, addresses(&ns, l))).collect();
            format!("{now:?}\n{}", net.node.log())
        },
    )
    .await;
    if bonds_and_vlans {
        let vlan = link_details(&ns, "vlan100").expect("vlan100 exists");
        assert!(vlan.contains("vlan100@veth3") && vlan.contains("vlan protocol 802.1Q id 100"), "{vlan}");
        let bond = link_details(&ns, "bond0").expect("bond0 exists");
        assert!(bond.contains("bond mode active-backup") && bond.contains("miimon 100"), "{bond}");
        for member in ["veth4", "veth5"] {
            let details = link_details(&ns, member).unwrap();
            assert!(details.contains("master bond0"), "{member}: {details}");
            assert_eq!(addresses(&ns, member), [] as [String; 0], "a bond member has no address of its own");
        }
    } else {
        // The node tried, and said why it could not. The applier reports
        // its refusals after the rest of the plan is in the kernel, so the
        // log is waited for, not read once the addresses are there.
        let said = [
            "cannot create bond bond0: Operation not supported",
            "cannot create vlan vlan100: Operation not supported",
        ];
        wait_for(
            "the node's reasons for the missing bond and VLAN in its log",
            CONVERGE,
            || {
                let log = net.node.log();
                said.iter().all(|what| log.contains(what)).then_some(())
            },
            || format!("{said:?} not all in the log:\n{}", net.node.log()),
        )
        .await;
    }
    assert!(
        routes(&ns).iter().any(|r| r.starts_with("10.72.0.0/16 via 10.71.0.1 dev veth3") && r.contains("metric 50")),
        "{:?}",
        routes(&ns)
    );

    let spec = net.network_spec().await;
    for (link, address) in all {
        assert_eq!(address_layer(&spec, link, address).as_deref(), Some("platform"), "{link}: {spec:#}");
    }
    assert_eq!(route_of(&spec, "veth3", "10.72.0.0/16"), Some(("10.71.0.1".into(), "platform".into())), "{spec:#}");
    assert_eq!(spec["resolvers"], serde_json::json!({"value": ["10.71.0.53"], "layer": "platform"}), "{spec:#}");
    assert_eq!(spec["search"], serde_json::json!({"value": ["ci.example.test"], "layer": "platform"}), "{spec:#}");
    assert!(warnings(&spec).is_empty(), "{spec:#}");
    let kind = |link: &str| {
        let l = spec["links"].as_array().unwrap().iter().find(|l| l["name"] == link).cloned().unwrap_or_default();
        (l["kind"]["value"].clone(), l["kind"]["layer"].clone())
    };
    let (bond, layer) = kind("bond0");
    assert_eq!(
        (&bond["bond"]["mode"], &bond["bond"]["members"], &layer),
        (&json!("active-backup"), &json!(["veth4", "veth5"]), &json!("platform")),
        "{spec:#}"
    );
    assert_eq!(kind("vlan100"), (json!({"vlan": {"parent": "veth3", "id": 100}}), json!("platform")), "{spec:#}");
    let resolv = net.resolv_conf();
    assert!(resolv.contains("nameserver 10.71.0.53") && resolv.contains("ci.example.test"), "{resolv}");
    eprintln!("network-cloudinit configurator: {:.1} s", started.elapsed().as_secs_f64());
}
