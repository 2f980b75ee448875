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

use bronze_tests::Pki;
use bronze_tests::dnsmasq::{self, CLIENT_LINK, Dnsmasq, Pair, SERVER_ADDR, ServerConfig};
use bronze_tests::netnode::{
    CONVERGE, NodeNet, Start, address_layer, addresses, config_with_network, link_details, routes, skipped, veth,
    wait_for,
};
use bronze_tests::netns::NetNs;
use serde_json::Value;
use std::time::Instant;

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
    let yaml = net.ctl(&["-o", "yaml", "get", "networkspec"]).await;
    assert!(yaml.contains("address: 10.70.0.3/24\n") && yaml.contains("layer: config"), "{yaml}");
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
    let mut pair = Pair::new().expect("namespaces");
    // Option 121 replaces option 3 (RFC 3442): the default route is in it.
    let options = vec![
        "option:dns-server,10.77.0.53".into(),
        "option:domain-search,e2e.example.test".into(),
        "option:classless-static-route,10.88.0.0/16,10.77.0.254,0.0.0.0/0,10.77.0.1".into(),
    ];
    let server = Dnsmasq::start(&pair.server, tmp.path(), &ServerConfig { options, ..Default::default() })
        .expect("dnsmasq starts");
    let pki = Pki::new();
    let config = config_with_network(
        &pki,
        "dhcp-node",
        &format!("interfaces:\n      - name: {CLIENT_LINK}\n        dhcp: true"),
        None,
    );
    let net = NodeNet::start(&mut pair.client, pki, config, Start::default()).await;
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
