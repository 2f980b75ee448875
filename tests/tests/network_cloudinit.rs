//! The `network-cloudinit` configurator end to end: the real component
//! built from `plugins/network-cloudinit`, installed over the API of a real
//! `bronzed` in process mode that runs inside a fresh network namespace
//! holding links with the MACs of Talos's tests (veth pairs), one plugin
//! instance per document (its `format` and `document` config keys), each
//! run with `plugins run`, which calls `plan(links, none)`.
//!
//! - Conformance: the nocloud (v1, v1-pnap, v2 nocloud and cloud-init,
//!   v2 serverscom, v2 ipv6-on-link), hetzner (v1) and openstack
//!   (network_data.json) documents of `../shared/fixtures/platforms/`, read
//!   in place, against Talos's `talos-expected*.yaml` through
//!   `bronze_tests::talos_network`; the differences must be exactly the
//!   documented ones (each says why it remains; `docs/network-cloudinit.md`
//!   has the table). Skipped loudly without the folder.
//! - The repository's own v1 and v2 documents (bond, VLAN, static, DHCP,
//!   on-link routes), compared with the whole expected plan.
//! - Bad documents: refused, the error naming the field.
//! - The `net-hostile` fixture answers each case (for the host's plan
//!   validation tests, which use it).

use bronze_tests::mockcloud::{shared_fixture, skip_without_fixtures};
use bronze_tests::netns::NetNs;
use bronze_tests::plugins::{bundle, config_with_plugins, install, instance_yaml, run};
use bronze_tests::provider::node_in;
use bronze_tests::talos_network::{compare, expected, is_default_metric};
use bronze_tests::{Node, Pki};
use bronzectl::client::NodeClient;
use serde_json::{Value, json};
use std::time::Instant;

const PLUGIN: &str = "network-cloudinit";

/// Talos's nocloud test links (name, MAC): eth1's permanent MAC is f8 (its
/// hardware MAC f9 is eth2's), so each MAC is one veth here.
const NOCLOUD_LINKS: &[(&str, &str)] = &[
    ("eth0", "68:05:ca:b8:f1:f7"),
    ("eth1", "68:05:ca:b8:f1:f8"),
    ("eth2", "68:05:ca:b8:f1:f9"),
    ("eno1np0", "3c:ec:ef:e0:45:28"),
    ("eno2np1", "3c:ec:ef:e0:45:29"),
    // The repository's own documents.
    ("lan0", "02:42:00:00:00:01"),
    ("lan1", "02:42:00:00:00:02"),
];

/// Talos's openstack test links.
const OPENSTACK_LINKS: &[(&str, &str)] = &[
    ("eth0", "a4:bf:00:10:20:30"),
    ("eth1", "a4:bf:00:10:20:31"),
    ("eth2", "a4:bf:00:10:20:33"),
    ("eth3", "4c:d9:8f:b3:34:f8"),
    ("eth4", "4c:d9:8f:b3:34:f7"),
];

/// Talos's hcloud test takes the name from the document; the link here has
/// the document's MAC under that name.
const HETZNER_LINKS: &[(&str, &str)] = &[("eth0", "96:00:00:01:02:03")];

/// A node in a fresh namespace holding `links` (veth pairs, peers named
/// `peerN`) and, on request, a bridge `bond0` with eth0's MAC (Talos's
/// nocloud test has a bond with that MAC that must not be taken for
/// eth0), running one instance per (id, format, document).
struct Setup {
    node: Node,
    client: NodeClient,
    _ns: NetNs,
}

async fn setup(what: &str, links: &[(&str, &str)], bond0: bool, instances: &[(&str, &str, &str)]) -> Option<Setup> {
    let instances: Vec<(&str, String)> = instances
        .iter()
        .map(|(id, format, document)| {
            (*id, format!("format: {format}, document: {}", serde_json::to_string(document).unwrap()))
        })
        .collect();
    setup_plugin(what, links, bond0, PLUGIN, &instances).await
}

/// [`setup`] for any configurator `plugin`, each instance with its config
/// (a YAML flow-mapping body).
async fn setup_plugin(
    what: &str,
    links: &[(&str, &str)],
    bond0: bool,
    plugin: &str,
    instances: &[(&str, String)],
) -> Option<Setup> {
    if let Some(why) = bronze_tests::netns::unavailable() {
        eprintln!("\n!!!!!!!! SKIPPED network_cloudinit::{what}: {why} !!!!!!!!\n");
        return None;
    }
    let mut ns = NetNs::new().expect("netns");
    for (i, (name, mac)) in links.iter().enumerate() {
        ip(&ns, &["link", "add", name, "type", "veth", "peer", "name", &format!("peer{i}")]);
        ip(&ns, &["link", "set", name, "address", mac]);
    }
    if bond0 {
        ip(&ns, &["link", "add", "bond0", "type", "bridge"]);
        ip(&ns, &["link", "set", "bond0", "address", links[0].1]);
    }
    let yaml: String =
        instances.iter().map(|(id, config)| instance_yaml(id, plugin, config, "config: true", None)).collect();
    let pki = Pki::new();
    let config = config_with_plugins(&pki, "cloudinit", &format!("allowUnsigned: true\n    instances:{yaml}"));
    let node = node_in(&mut ns, config, Vec::new()).await;
    let client = node.client(&pki.auth(&["os:admin"])).await;
    install(client.channel.clone(), &bundle(plugin)).await.unwrap_or_else(|e| panic!("install: {e}\n{}", node.log()));
    Some(Setup { node, client, _ns: ns })
}

impl Setup {
    /// `plugins run <id>`: `{"ok": plan}` or `{"error": message}`.
    async fn run(&self, id: &str) -> Value {
        let done = run(&self.client, id).await;
        serde_json::from_str(&done.result_json)
            .unwrap_or_else(|e| panic!("{id}: result {:?}: {e}\n{}", done.result_json, self.node.log()))
    }

    async fn plan(&self, id: &str) -> Value {
        let got = self.run(id).await;
        assert!(got["ok"].is_object(), "{id}: {got}\n{}", self.node.log());
        got["ok"].clone()
    }
}

/// `ip -n NS ...`, which must succeed.
fn ip(ns: &NetNs, args: &[&str]) {
    let out = std::process::Command::new("ip").args(["-n", ns.name()]).args(args).output().expect("run ip");
    assert!(out.status.success(), "ip {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

fn fixture(provider: &str, file: &str) -> String {
    std::fs::read_to_string(shared_fixture(provider, file).expect("fixture")).expect("read fixture")
}

/// The differences between the plan and Talos's expectation, Talos's
/// per-family default metrics set aside (the plan leaves metrics to the
/// host, which uses 1024).
fn differences(provider: &str, expected_file: &str, plan: &Value, aliases: &[(&str, &str)]) -> Vec<String> {
    let expected = expected(shared_fixture(provider, expected_file).expect("expected fixture")).expect("load");
    let mut out = compare(&expected, plan, aliases);
    out.retain(|l| !is_default_metric(l));
    out
}

/// Every conformance case's differences that `plugins run` cannot avoid:
/// it passes no metadata, so the plan has no hostname (from metadata; the
/// plugin's unit test `metadata_document_wins_and_gives_hostname_and_time_servers`
/// covers it), while Talos's tests give one.
const NO_METADATA_HOSTNAME: &str = "hostnames: talos \"talos.fqdn\" bronze none";

/// Talos drops the search domains of cloud-init documents; the plan keeps
/// them.
const SEARCH_FOO_BAR: [&str; 2] = [
    "resolvers.searchDomains: bronze has bar.local, talos does not",
    "resolvers.searchDomains: bronze has foo.local, talos does not",
];

/// (instance id, format, input, expected, documented differences beyond
/// [`NO_METADATA_HOSTNAME`]).
type Case = (&'static str, &'static str, &'static str, &'static str, &'static [&'static str]);

const NOCLOUD_CASES: &[Case] = &[
    (
        "nocloud-v1",
        "v1",
        "talos-in-v1.yaml",
        "talos-expected-v1.yaml",
        // The nameserver entry's `search: [lan]`: Talos keeps no search domains.
        &["resolvers.searchDomains: bronze has lan, talos does not"],
    ),
    ("nocloud-v1-pnap", "v1", "talos-in-v1-pnap.yaml", "talos-expected-v1-pnap.yaml", &[]),
    (
        "nocloud-v2",
        "v2",
        "talos-in-v2-nocloud.yaml",
        "talos-expected-v2.yaml",
        &[
            // eth0 and eth1 are matched by MACs no link here (or in Talos's
            // test) has: the plan keeps the MAC match, Talos falls back to
            // the document's key as the name.
            "links.match: eth0: bronze matches mac 00:20:6e:1f:f9:a8 (no current link has it)",
            "links.match: eth1: bronze matches mac 00:20:6e:1f:f9:a9 (no current link has it)",
            SEARCH_FOO_BAR[0],
            SEARCH_FOO_BAR[1],
        ],
    ),
    (
        "nocloud-v2-cloud-init",
        "auto",
        "talos-in-v2-cloud-init.yaml",
        "talos-expected-v2.yaml",
        &[
            "links.match: eth0: bronze matches mac 00:20:6e:1f:f9:a8 (no current link has it)",
            "links.match: eth1: bronze matches mac 00:20:6e:1f:f9:a9 (no current link has it)",
            SEARCH_FOO_BAR[0],
            SEARCH_FOO_BAR[1],
        ],
    ),
    ("nocloud-v2-serverscom", "v2", "talos-in-v2-serverscom.yaml", "talos-expected-v2-serverscom.yaml", &[]),
    (
        "nocloud-v2-on-link",
        "v2",
        "talos-in-v2-nocloud-ipv6-on-link.yaml",
        "talos-expected-v2-nocloud-ipv6-on-link.yaml",
        // Its placeholder MAC 02:xx:xx:xx:xx:xx is replaced by 02:00:00:00:00:01
        // (the placeholder itself is refused: see the test).
        &["links.match: nic0: bronze matches mac 02:00:00:00:00:01 (no current link has it)"],
    ),
];

/// MAC → the name Talos gives a link no current link has that MAC of.
const NOCLOUD_ALIASES: &[(&str, &str)] =
    &[("00:20:6e:1f:f9:a8", "eth0"), ("00:20:6e:1f:f9:a9", "eth1"), ("02:00:00:00:00:01", "nic0")];

fn nocloud_input(input: &str) -> String {
    fixture("nocloud", input).replace("02:xx:xx:xx:xx:xx", "02:00:00:00:00:01")
}

// ------------------------------------------------------------ documents

/// A v1 document: DHCP on a NIC, a bond of two NICs (one not present)
/// with a static address, gateway and route, a VLAN on the bond with a
/// static IPv6 address, resolvers.
const V1_DOC: &str = r#"version: 1
config:
  - type: physical
    name: nic0
    mac_address: "02:42:00:00:00:01"
    mtu: 1500
    subnets:
      - type: dhcp
  - type: physical
    name: nic1
    mac_address: "02:42:00:00:00:02"
  - type: physical
    name: nic2
    mac_address: "02:42:00:00:00:03"
  - type: bond
    name: bond1
    bond_interfaces: [nic1, nic2]
    mtu: 9000
    params:
      bond-mode: active-backup
      bond-miimon: 100
      bond-updelay: 200
      bond-downdelay: 400
    subnets:
      - type: static
        address: 192.0.2.10
        netmask: 255.255.255.0
        gateway: 192.0.2.1
        routes:
          - network: 198.51.100.0
            netmask: 255.255.255.0
            gateway: 192.0.2.254
            metric: 50
  - type: vlan
    name: bond1.42
    vlan_link: bond1
    vlan_id: 42
    subnets:
      - type: static6
        address: 2001:db8:42::10/64
        gateway: 2001:db8:42::1
  - type: nameserver
    address: [192.0.2.53, 2001:db8::53]
    search: [example.test]
"#;

/// A v2 document: the same shape with 802.3ad, DHCP with a route metric,
/// an on-link default route, `set-name` (not applied), a VLAN on a NIC.
const V2_DOC: &str = r#"network:
  version: 2
  ethernets:
    uplink:
      match: {macaddress: "02:42:00:00:00:01"}
      set-name: wan0
      dhcp4: true
      dhcp4-overrides: {route-metric: 200}
      mtu: 1500
    m1:
      match: {macaddress: "02:42:00:00:00:02"}
    m2:
      match: {driver: e1000e}
  bonds:
    bond2:
      interfaces: [m1, m2]
      parameters:
        mode: 802.3ad
        lacp-rate: fast
        mii-monitor-interval: 100
        transmit-hash-policy: layer3+4
      addresses: [10.20.0.5/32]
      routes:
        - {to: default, via: 10.20.0.1, on-link: true, metric: 10}
      nameservers:
        addresses: [10.20.0.53]
        search: [corp.test]
  vlans:
    wan0.7:
      id: 7
      link: wan0
      addresses: ["2001:db8:7::5/64"]
      gateway6: "2001:db8:7::1"
"#;

fn addressing(dhcp4: bool, metric: Option<u32>, addresses: &[&str], routes: Value, mtu: Option<u32>) -> Value {
    json!({"dhcp4": dhcp4, "dhcp6": false, "dhcpRouteMetric": metric, "addresses": addresses, "routes": routes, "mtu": mtu})
}

fn v1_plan() -> Value {
    json!({
        "ethernets": [
            {"match": {"name": "lan0"}, "addressing": addressing(true, None, &[], json!([]), Some(1500))},
            {"match": {"name": "lan1"}, "addressing": addressing(false, None, &[], json!([]), None)},
            {"match": {"macaddress": "02:42:00:00:00:03"}, "addressing": addressing(false, None, &[], json!([]), None)},
        ],
        "bonds": [{
            "name": "bond1",
            "members": [{"name": "lan1"}, {"macaddress": "02:42:00:00:00:03"}],
            "mode": "active-backup", "miimon": 100, "updelay": 200, "downdelay": 400,
            "lacpRateFast": false, "transmitHashPolicy": null,
            "addressing": addressing(false, None, &["192.0.2.10/24"], json!([
                {"to": "0.0.0.0/0", "via": "192.0.2.1", "metric": null, "onLink": false},
                {"to": "198.51.100.0/24", "via": "192.0.2.254", "metric": 50, "onLink": false},
            ]), Some(9000)),
        }],
        "vlans": [{
            "name": "bond1.42", "id": 42, "parent": {"name": "bond1"},
            "addressing": addressing(false, None, &["2001:db8:42::10/64"], json!([
                {"to": "::/0", "via": "2001:db8:42::1", "metric": null, "onLink": false},
            ]), None),
        }],
        "nameservers": ["192.0.2.53", "2001:db8::53"],
        "search": ["example.test"],
        "hostname": null,
        "timeServers": [],
    })
}

fn v2_plan() -> Value {
    json!({
        "ethernets": [
            {"match": {"name": "lan0"}, "addressing": addressing(true, Some(200), &[], json!([]), Some(1500))},
            {"match": {"name": "lan1"}, "addressing": addressing(false, None, &[], json!([]), None)},
            {"match": {"driver": "e1000e"}, "addressing": addressing(false, None, &[], json!([]), None)},
        ],
        "bonds": [{
            "name": "bond2",
            "members": [{"name": "lan1"}, {"driver": "e1000e"}],
            "mode": "802.3ad", "miimon": 100, "updelay": null, "downdelay": null,
            "lacpRateFast": true, "transmitHashPolicy": "layer3+4",
            "addressing": addressing(false, None, &["10.20.0.5/32"], json!([
                {"to": "0.0.0.0/0", "via": "10.20.0.1", "metric": 10, "onLink": true},
            ]), None),
        }],
        "vlans": [{
            "name": "wan0.7", "id": 7, "parent": {"name": "lan0"},
            "addressing": addressing(false, None, &["2001:db8:7::5/64"], json!([
                {"to": "::/0", "via": "2001:db8:7::1", "metric": null, "onLink": false},
            ]), None),
        }],
        "nameservers": ["10.20.0.53"],
        "search": ["corp.test"],
        "hostname": null,
        "timeServers": [],
    })
}

/// (instance id, format, document, what the error must contain).
const BAD: &[(&str, &str, &str, &[&str])] = &[
    (
        "bad-netmask",
        "v1",
        "version: 1\nconfig:\n- type: physical\n  name: e0\n  subnets:\n  - {type: static, address: 10.0.0.2, netmask: 255.0.255.0}\n",
        &["config key `document`", "config[0].subnets[0].netmask", "255.0.255.0", "contiguous"],
    ),
    (
        "bad-vlan-id",
        "v2",
        "version: 2\nethernets:\n  e0: {dhcp4: true}\nvlans:\n  v: {id: 5000, link: e0}\n",
        &["vlans.v.id", "5000"],
    ),
    (
        "bad-bond-mode",
        "v1",
        "version: 1\nconfig:\n- {type: bond, name: b0, bond_interfaces: [], params: {bond-mode: fastest}}\n",
        &["config[0].params.bond-mode", "fastest"],
    ),
    (
        "bad-route-family",
        "v2",
        "version: 2\nethernets:\n  e0:\n    routes: [{to: 10.0.0.0/8, via: 'fe80::1'}]\n",
        &["ethernets.e0.routes[0]", "family"],
    ),
    (
        "bad-link-name",
        "v1",
        "version: 1\nconfig:\n- {type: vlan, name: a-vlan-name-too-long, vlan_link: e0, vlan_id: 3}\n",
        &["a-vlan-name-too-long", "1 to 15 bytes"],
    ),
    (
        "bad-openstack",
        "openstack",
        r#"{"links": [{"id": "l0", "type": "phy", "ethernet_mac_address": "02:00:00:00:00:01"}], "networks": [{"link": "l0", "type": "ipv4", "ip_address": "10.0.0.300", "netmask": "255.255.255.0"}]}"#,
        &["networks[0].netmask", "10.0.0.300"],
    ),
    ("bad-version", "v2", "version: 3\n", &["unsupported version 3"]),
    ("bad-format", "v3", "version: 1\nconfig: []\n", &["config key `format`", "v3"]),
];

#[tokio::test]
async fn nocloud_documents_conform_to_talos_and_own_documents_give_their_plans() {
    let started = Instant::now();
    let with_fixtures = shared_fixture("nocloud", "talos-in-v1.yaml").is_some();
    if !with_fixtures {
        skip_without_fixtures("network_cloudinit::nocloud_documents_conform_to_talos (the own documents still run)");
    }
    let inputs: Vec<(String, &str, String)> = if with_fixtures {
        NOCLOUD_CASES.iter().map(|(id, format, input, ..)| (id.to_string(), *format, nocloud_input(input))).collect()
    } else {
        Vec::new()
    };
    let placeholder = with_fixtures.then(|| fixture("nocloud", "talos-in-v2-nocloud-ipv6-on-link.yaml"));
    let mut instances: Vec<(&str, &str, &str)> =
        inputs.iter().map(|(id, f, d)| (id.as_str(), *f, d.as_str())).collect();
    if let Some(text) = &placeholder {
        instances.push(("nocloud-placeholder-mac", "v2", text));
    }
    instances.push(("own-v1", "v1", V1_DOC));
    instances.push(("own-v2", "auto", V2_DOC));
    instances.extend(BAD.iter().map(|(id, format, doc, _)| (*id, *format, *doc)));
    instances.push(("empty", "auto", ""));
    let Some(s) = setup("nocloud_documents_conform_to_talos", NOCLOUD_LINKS, true, &instances).await else { return };

    // The repository's own documents: the whole plan.
    assert_eq!(s.plan("own-v1").await, v1_plan());
    assert_eq!(s.plan("own-v2").await, v2_plan());
    // No document (and no metadata): nothing to configure, not an error.
    let empty = s.plan("empty").await;
    assert_eq!(empty["ethernets"], json!([]), "{empty}");
    assert_eq!(empty["bonds"], json!([]), "{empty}");

    // Bad documents: refused, naming the field.
    for (id, _, _, wanted) in BAD {
        let got = s.run(id).await;
        let message = got["error"].as_str().unwrap_or_else(|| panic!("{id}: not refused: {got}"));
        for w in *wanted {
            assert!(message.contains(w), "{id}: {message:?} does not contain {w:?}");
        }
    }

    if with_fixtures {
        // The placeholder MAC of the ipv6-on-link document is refused by name.
        let got = s.run("nocloud-placeholder-mac").await;
        let message = got["error"].as_str().unwrap_or_else(|| panic!("placeholder MAC accepted: {got}"));
        assert!(message.contains("ethernets.nic0.match.macaddress") && message.contains("02:xx"), "{message}");

        let mut failures = Vec::new();
        for (id, _, input, expected_file, documented) in NOCLOUD_CASES {
            let plan = s.plan(id).await;
            let got = differences("nocloud", expected_file, &plan, NOCLOUD_ALIASES);
            let mut want: Vec<String> = documented.iter().map(|l| l.to_string()).collect();
            want.push(NO_METADATA_HOSTNAME.into());
            want.sort();
            if got != want {
                failures.push(format!("{input}: {got:#?}\nplan: {plan:#}"));
            }
        }
        assert!(failures.is_empty(), "undocumented differences:\n{}", failures.join("\n"));
    }
    eprintln!("network_cloudinit nocloud + own documents: {:.1} s", started.elapsed().as_secs_f64());
}

#[tokio::test]
async fn openstack_network_data_conforms_to_talos() {
    if shared_fixture("openstack", "talos-network.json").is_none() {
        skip_without_fixtures("network_cloudinit::openstack_network_data_conforms_to_talos");
        return;
    }
    let started = Instant::now();
    let text = fixture("openstack", "talos-network.json");
    let instances = [("openstack", "openstack", text.as_str()), ("openstack-auto", "auto", text.as_str())];
    let Some(s) = setup("openstack_network_data_conforms_to_talos", OPENSTACK_LINKS, false, &instances).await else {
        return;
    };
    let plan = s.plan("openstack").await;
    assert_eq!(s.plan("openstack-auto").await, plan, "format auto finds network_data.json");
    let mut got = differences("openstack", "talos-expected.yaml", &plan, &[]);
    got.sort();
    let documented = [
        // Talos's test gives the hostname from meta_data.json; `plugins run`
        // passes no metadata.
        "hostnames: talos \"talos\" bronze none",
        // Talos fills bond defaults the document does not set (LACP rate
        // fast, up/down delay 200); the plan carries only what the document
        // says, and the host keeps the kernel's defaults.
        "links.bond.downdelay: bond0: talos 200 bronze none",
        "links.bond.lacpRate: bond0: talos fast bronze slow",
        "links.bond.updelay: bond0: talos 200 bronze none",
        // Talos reads only the top-level `services`; the plan also takes the
        // networks' `dns_nameservers` and `services`, as cloud-init does.
        "resolvers.dnsServers: bronze has 2000:0:100::1, talos does not",
        "resolvers.dnsServers: bronze has 8.8.4.4, talos does not",
    ];
    assert_eq!(got, documented, "plan: {plan:#}");
    eprintln!("network_cloudinit openstack: {:.1} s", started.elapsed().as_secs_f64());
}

#[tokio::test]
async fn hetzner_network_config_conforms_to_talos() {
    if shared_fixture("hetzner", "talos-metadata.yaml").is_none() {
        skip_without_fixtures("network_cloudinit::hetzner_network_config_conforms_to_talos");
        return;
    }
    let started = Instant::now();
    let text = fixture("hetzner", "talos-metadata.yaml");
    let instances = [("hetzner", "v1", text.as_str())];
    let Some(s) = setup("hetzner_network_config_conforms_to_talos", HETZNER_LINKS, false, &instances).await else {
        return;
    };
    let plan = s.plan("hetzner").await;
    let got = differences("hetzner", "talos-expected.yaml", &plan, &[]);
    let documented = [
        NO_METADATA_HOSTNAME,
        // Talos ignores the v1 nameserver entry on Hetzner (its resolvers
        // come from DHCP there); the plan takes the document's.
        "resolvers.dnsServers: bronze has 185.12.64.1, talos does not",
        "resolvers.dnsServers: bronze has 185.12.64.2, talos does not",
    ];
    assert_eq!(got, documented, "plan: {plan:#}");
    eprintln!("network_cloudinit hetzner: {:.1} s", started.elapsed().as_secs_f64());
}

/// The `net-hostile` fixture (the host's plan validation tests use it)
/// answers each case with the plan its docs describe; `plugins run` only
/// escapes and caps a plan, so what it prints is the fixture's own.
#[tokio::test]
async fn net_hostile_fixture_answers_each_case() {
    let cases =
        ["routes-10000", "long-name", "bad-cidr", "unreachable-gateway", "cut-api-link", "huge-strings", "ok", "nope"];
    let instances: Vec<(&str, String)> = cases.iter().map(|c| (*c, format!("case: {c}, link: lan0"))).collect();
    let links = &NOCLOUD_LINKS[5..6];
    let Some(s) = setup_plugin("net_hostile_fixture_answers_each_case", links, false, "net-hostile", &instances).await
    else {
        return;
    };
    let lan0 = json!({"name": "lan0"});
    let plan = s.plan("routes-10000").await;
    assert_eq!(plan["ethernets"][0]["match"], lan0);
    assert_eq!(plan["ethernets"][0]["addressing"]["routes"].as_array().unwrap().len(), 10_000);
    let plan = s.plan("long-name").await;
    assert_eq!(plan["vlans"][0]["name"], "vlan-name-of-22-bytes!");
    assert_eq!(plan["vlans"][0]["parent"], lan0);
    let plan = s.plan("bad-cidr").await;
    assert_eq!(plan["ethernets"][0]["addressing"]["addresses"], json!(["10.0.0.300/24", "10.0.0.1/33"]));
    let plan = s.plan("unreachable-gateway").await;
    assert_eq!(plan["ethernets"][0]["addressing"]["routes"][0]["via"], "192.0.2.1");
    let plan = s.plan("cut-api-link").await;
    assert_eq!(plan["ethernets"][0]["match"], lan0);
    assert_eq!(plan["ethernets"][0]["addressing"]["addresses"], json!(["198.51.100.7/24"]));
    let plan = s.plan("ok").await;
    assert_eq!(plan["ethernets"][0]["addressing"]["addresses"], json!(["10.99.0.2/24"]));
    assert_eq!(plan["nameservers"], json!(["10.99.0.53"]));
    // 1 MiB of hostname alone: the host stops it at the boundary.
    let huge = run(&s.client, "huge-strings").await;
    let outcome = huge.outcome.expect("an outcome");
    assert_eq!((outcome.kind.as_str(), huge.result_json.as_str()), ("limit", ""), "{outcome:?}");
    let nope = s.run("nope").await;
    assert!(nope["error"].as_str().is_some_and(|e| e.contains("config key `case`")), "{nope}");
}
