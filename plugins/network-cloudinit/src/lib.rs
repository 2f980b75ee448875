//! `network-cloudinit`: the first-party network configurator. It turns a
//! platform's network document into a network plan:
//!
//! - the document: the platform metadata's `network-config` (Hetzner,
//!   OpenStack, nocloud and Proxmox serve one) or, when there is none, the
//!   instance's config keys `format` (`v1`, `v2`, `openstack`, `auto`) and
//!   `document`; neither gives a plan with no links (nothing to configure);
//! - cloud-init network config v1 and v2 through the parser the nocloud and
//!   hetzner providers share (`plugins/providers/common/src/cloudinit.rs`),
//!   OpenStack `network_data.json` in [`openstack`];
//! - links matched by MAC in the document become `name` matches when a
//!   current link has the MAC, else `mac` matches; bonds and VLANs become
//!   plan bonds and VLANs ([`plan`]);
//! - hostname and time servers come from the metadata when it has them.
//!
//! Everything is bounded (256 KiB documents, at most 64 links and 256
//! items per list) and every refusal names the field, like
//! `config[3].subnets[0].netmask: netmask 255.0.255.0 is not contiguous`.

use bronze_plugin_sdk::{InstanceMetadata, Link, NetworkConfigFormat, NetworkConfigurator, NetworkPlan};

// The shared parser, compiled in by path (see Cargo.toml for why it is not
// a dependency). Only part of it is used here.
#[allow(dead_code)]
#[path = "../../providers/common/src/cloudinit.rs"]
pub mod cloudinit;
pub mod openstack;
pub mod plan;

/// A document's format, from the metadata or the `format` config key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    V1,
    V2,
    OpenStack,
    /// By the document: JSON with `links` or `networks` is OpenStack's,
    /// else cloud-init by its `version`.
    Auto,
}

impl Format {
    /// The `format` config key's value.
    pub fn parse(text: &str) -> Result<Format, String> {
        match text.trim().to_ascii_lowercase().as_str() {
            "v1" | "1" | "cloud-init-v1" => Ok(Format::V1),
            "v2" | "2" | "cloud-init-v2" => Ok(Format::V2),
            "openstack" | "network_data.json" => Ok(Format::OpenStack),
            "auto" | "" => Ok(Format::Auto),
            _ => Err(format!("config key `format`: {text:?} is not a format (v1, v2, openstack or auto)")),
        }
    }

    fn of(format: NetworkConfigFormat) -> Format {
        match format {
            NetworkConfigFormat::CloudInitV1 => Format::V1,
            NetworkConfigFormat::CloudInitV2 => Format::V2,
            NetworkConfigFormat::Openstack => Format::OpenStack,
        }
    }
}

/// Where the document came from, for messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Metadata,
    Config,
}

/// The document to plan from: the metadata's, else the config's.
pub fn document(
    metadata: Option<&InstanceMetadata>,
    format: Option<&str>,
    document: Option<&str>,
) -> Result<Option<(Source, Format, String)>, String> {
    if let Some(nc) = metadata.and_then(|m| m.network_config.as_ref()) {
        return Ok(Some((Source::Metadata, Format::of(nc.format), nc.body.clone())));
    }
    let format = Format::parse(format.unwrap_or("auto"))?;
    match document {
        Some(text) if !text.trim().is_empty() => Ok(Some((Source::Config, format, text.to_string()))),
        _ => Ok(None),
    }
}

/// The whole translation, without imports: `links` are the current links
/// (name, lower-case MAC). Returns the plan and notes on what was skipped.
pub fn translate(
    links: &[(String, String)],
    metadata: Option<&InstanceMetadata>,
    doc: Option<(Source, Format, String)>,
) -> Result<(NetworkPlan, Vec<String>), String> {
    let (mut plan, notes) = match doc {
        None => (NetworkPlan::new(), Vec::new()),
        Some((source, format, text)) => {
            let prefix = match source {
                Source::Metadata => "metadata network-config",
                Source::Config => "config key `document`",
            };
            settings(links, format, &text).and_then(|s| plan::plan(&s, links)).map_err(|e| format!("{prefix}: {e}"))?
        }
    };
    if let Some(m) = metadata {
        if plan.nameservers.is_empty() && plan.search.is_empty() {
            plan.nameservers = m.nameservers.clone();
            plan.search = m.search_domains.clone();
        }
        plan.hostname = m.hostname.clone().filter(|h| !h.is_empty());
        plan.time_servers = m.time_servers.clone();
    }
    Ok((plan, notes))
}

/// Parses `text` as `format`.
fn settings(links: &[(String, String)], format: Format, text: &str) -> Result<cloudinit::NetworkSettings, String> {
    if text.len() > cloudinit::MAX_DOCUMENT {
        return Err(format!("the document is {} bytes, more than {}", text.len(), cloudinit::MAX_DOCUMENT));
    }
    let link_of = |mac: &str| cloudinit::link_for_mac(links, mac);
    let format = match format {
        Format::Auto if openstack::looks_like(text) => Format::OpenStack,
        other => other,
    };
    if format == Format::OpenStack {
        return openstack::parse(text, &link_of);
    }
    let settings = cloudinit::parse(text, &link_of)?;
    match (format, settings.version) {
        (Format::V1, 2) => Err("format v1 was given, but the document is version 2".into()),
        (Format::V2, 1) if !settings.interfaces.is_empty() => {
            Err("format v2 was given, but the document is version 1".into())
        }
        _ => Ok(settings),
    }
}

/// The current links as (name, lower-case MAC), without MAC-less links and
/// the all-zero MAC of loopback.
pub fn current(links: &[Link]) -> Vec<(String, String)> {
    links
        .iter()
        .filter_map(|l| Some((l.name.clone(), l.mac.as_ref()?.to_ascii_lowercase())))
        .filter(|(_, mac)| mac != "00:00:00:00:00:00")
        .collect()
}

struct CloudInit;

impl NetworkConfigurator for CloudInit {
    fn plan(current_links: Vec<Link>, metadata: Option<InstanceMetadata>) -> Result<NetworkPlan, String> {
        let format = bronze_plugin_sdk::config::get("format");
        let text = bronze_plugin_sdk::config::get("document");
        let doc = document(metadata.as_ref(), format.as_deref(), text.as_deref())?;
        let (plan, notes) = translate(&current(&current_links), metadata.as_ref(), doc)?;
        for note in notes {
            bronze_plugin_sdk::log::warn(&note);
        }
        Ok(plan)
    }
}

bronze_plugin_sdk::export_network_configurator!(CloudInit);

#[cfg(test)]
mod tests {
    use super::*;
    use bronze_plugin_sdk::{BondMode, LinkMatch, NetworkConfig};

    fn links() -> Vec<(String, String)> {
        [("eth0", "68:05:ca:b8:f1:f7"), ("bond0", "68:05:ca:b8:f1:f7"), ("eth1", "68:05:ca:b8:f1:f8")]
            .iter()
            .map(|(n, m)| (n.to_string(), m.to_string()))
            .collect()
    }

    /// A match as text (the WIT type has no `PartialEq`).
    fn m(m: &LinkMatch) -> String {
        match m {
            LinkMatch::Name(n) => format!("name {n}"),
            LinkMatch::Mac(n) => format!("mac {n}"),
            LinkMatch::Driver(n) => format!("driver {n}"),
            LinkMatch::BusPath(n) => format!("bus-path {n}"),
        }
    }

    fn ms(list: &[LinkMatch]) -> Vec<String> {
        list.iter().map(m).collect()
    }

    fn run(format: &str, doc: &str) -> Result<NetworkPlan, String> {
        let d = document(None, Some(format), Some(doc))?;
        translate(&links(), None, d).map(|(plan, _)| plan)
    }

    const V1: &str = "version: 1\nconfig:\n- {type: physical, name: a, mac_address: '68:05:CA:B8:F1:F7', mtu: 9000}\n- {type: physical, name: b, mac_address: '02:00:00:00:00:02'}\n- type: bond\n  name: bond1\n  bond_interfaces: [a, b]\n  params: {bond-mode: 802.3ad, bond-miimon: 100, bond-lacp-rate: fast, bond-xmit-hash-policy: layer3+4}\n  subnets: [{type: dhcp}]\n- type: vlan\n  name: bond1.7\n  vlan_link: bond1\n  vlan_id: 7\n  subnets:\n  - {type: static, address: 10.0.7.2, netmask: 255.255.255.0, gateway: 10.0.7.1}\n- {type: nameserver, address: [10.0.0.53], search: [example.test]}\n";

    #[test]
    fn v1_bond_and_vlan() {
        let plan = run("v1", V1).unwrap();
        assert_eq!(m(&plan.ethernets[0].match_), "name eth0", "a bond sharing the MAC loses");
        assert_eq!(plan.ethernets[0].addressing.mtu, Some(9000));
        assert_eq!(m(&plan.ethernets[1].match_), "mac 02:00:00:00:00:02");
        let bond = &plan.bonds[0];
        assert_eq!(bond.name, "bond1");
        assert_eq!(ms(&bond.members), ["name eth0", "mac 02:00:00:00:00:02"]);
        assert_eq!(bond.mode, BondMode::Lacp);
        assert_eq!((bond.miimon, bond.lacp_rate_fast), (Some(100), true));
        assert_eq!(bond.transmit_hash_policy.as_deref(), Some("layer3+4"));
        assert!(bond.addressing.dhcp4);
        let vlan = &plan.vlans[0];
        assert_eq!((vlan.name.as_str(), vlan.id), ("bond1.7", 7));
        assert_eq!(m(&vlan.parent), "name bond1");
        assert_eq!(vlan.addressing.addresses, ["10.0.7.2/24"]);
        assert_eq!(vlan.addressing.routes[0].to, "0.0.0.0/0");
        assert_eq!(vlan.addressing.routes[0].via.as_deref(), Some("10.0.7.1"));
        assert_eq!(plan.nameservers, ["10.0.0.53"]);
        assert_eq!(plan.search, ["example.test"]);
        // auto finds the version itself; v2 is refused for a v1 document.
        assert_eq!(run("auto", V1).unwrap().bonds.len(), 1);
        assert!(run("v2", V1).unwrap_err().contains("version 1"));
    }

    #[test]
    fn v2_set_name_driver_and_globs() {
        let doc = "network:\n  version: 2\n  ethernets:\n    lan:\n      match: {macaddress: '68:05:ca:b8:f1:f8'}\n      set-name: uplink\n      dhcp4: true\n      dhcp4-overrides: {route-metric: 50}\n    nic:\n      match: {driver: virtio_net}\n      addresses: ['2001:db8::5/64']\n      gateway6: '2001:db8::1'\n  vlans:\n    v9: {id: 9, link: uplink}\n";
        let plan = run("v2", doc).unwrap();
        assert_eq!(m(&plan.ethernets[0].match_), "name eth1", "set-name is not applied");
        assert_eq!(plan.ethernets[0].addressing.dhcp_route_metric, Some(50));
        assert_eq!(m(&plan.ethernets[1].match_), "driver virtio_net");
        assert_eq!(plan.ethernets[1].addressing.routes[0].to, "::/0");
        assert_eq!(m(&plan.vlans[0].parent), "name eth1", "a VLAN may name the set-name");
        let e = run("v2", "version: 2\nethernets:\n  e: {match: {name: 'en*'}}\n").unwrap_err();
        assert!(e.contains("match.name") && e.contains("glob"), "{e}");
    }

    #[test]
    fn metadata_document_wins_and_gives_hostname_and_time_servers() {
        let mut md = InstanceMetadata::new("hetzner");
        md.hostname = Some("node-1".into());
        md.time_servers = vec!["ntp.example".into()];
        md.nameservers = vec!["192.0.2.53".into()];
        let none = document(Some(&md), Some("v2"), Some(V1)).unwrap();
        assert_eq!(none.as_ref().map(|d| d.0), Some(Source::Config));
        md.network_config = Some(NetworkConfig {
            format: NetworkConfigFormat::CloudInitV1,
            body: "version: 1\nconfig:\n- {type: physical, name: eth9, subnets: [{type: dhcp}]}\n".into(),
        });
        let doc = document(Some(&md), Some("v2"), Some(V1)).unwrap();
        let (plan, _) = translate(&links(), Some(&md), doc).unwrap();
        assert_eq!(plan.ethernets.len(), 1);
        assert_eq!(m(&plan.ethernets[0].match_), "name eth9");
        assert_eq!(plan.hostname.as_deref(), Some("node-1"));
        assert_eq!(plan.time_servers, ["ntp.example"]);
        assert_eq!(plan.nameservers, ["192.0.2.53"], "the metadata's resolvers when the document has none");
        // Nothing at all: an empty plan, not an error.
        let (plan, _) = translate(&links(), None, document(None, None, None).unwrap()).unwrap();
        assert!(plan.ethernets.is_empty() && plan.bonds.is_empty() && plan.hostname.is_none());
    }

    #[test]
    fn openstack_bonds_bridges_and_vlans() {
        let doc = r#"{"links": [
            {"id": "p0", "type": "phy", "ethernet_mac_address": "68:05:CA:B8:F1:F7", "mtu": 1450},
            {"id": "br", "type": "bridge", "ethernet_mac_address": "68:05:ca:b8:f1:f8"},
            {"id": "p1", "type": "ovs", "ethernet_mac_address": "02:00:00:00:00:09"},
            {"id": "b", "type": "bond", "bond_links": ["br", "p1"], "bond_mode": "802.3ad", "bond_miimon": "100", "bond_xmit_hash_policy": "layer2+3"},
            {"id": "v", "type": "vlan", "vlan_link": "b", "vlan_id": 100},
            {"id": "v2", "type": "vlan", "vlan_link": "p0", "vlan_id": 5}],
          "networks": [
            {"id": "n0", "link": "p0", "type": "ipv4_dhcp"},
            {"id": "n1", "link": "b", "type": "ipv4", "ip_address": "94.156.45.48", "netmask": "255.255.255.0",
             "routes": [{"network": "0.0.0.0", "netmask": "0.0.0.0", "gateway": "94.156.45.1"}],
             "services": [{"type": "dns", "address": "8.8.4.4"}]},
            {"id": "n2", "link": "p1", "type": "ipv6_dhcpv6-stateless", "ip_address": "fd60::1", "netmask": "ffff:ffff:ffff:ffff::"}],
          "services": [{"type": "dns", "address": "8.8.8.8"}]}"#;
        let d = document(None, None, Some(doc)).unwrap();
        let (plan, notes) = translate(&links(), None, d).unwrap();
        assert_eq!(plan.ethernets.len(), 2, "the bridge is not an ethernet");
        assert_eq!(m(&plan.ethernets[0].match_), "name eth0");
        assert!(plan.ethernets[0].addressing.dhcp4);
        assert_eq!(plan.ethernets[0].addressing.mtu, Some(1450));
        assert!(plan.ethernets[1].addressing.dhcp6);
        assert_eq!(plan.ethernets[1].addressing.addresses, ["fd60::1/64"]);
        let bond = &plan.bonds[0];
        assert_eq!(bond.name, "bond0");
        assert_eq!(ms(&bond.members), ["name eth1", "mac 02:00:00:00:00:09"]);
        assert_eq!((bond.mode, bond.miimon), (BondMode::Lacp, Some(100)));
        assert_eq!(bond.addressing.addresses, ["94.156.45.48/24"]);
        assert_eq!(plan.vlans[0].name, "bond0.100");
        assert_eq!(plan.vlans[1].name, "eth0.5");
        assert_eq!(m(&plan.vlans[1].parent), "name eth0");
        assert_eq!(plan.nameservers, ["8.8.8.8", "8.8.4.4"]);
        assert!(notes.iter().any(|n| n.contains("bridge \"br\"")), "{notes:?}");
    }

    #[test]
    fn bad_documents_name_the_field() {
        let cases = [
            (
                "v1",
                "version: 1\nconfig:\n- type: physical\n  name: e\n  subnets:\n  - {type: static, address: 1.2.3.4, netmask: 255.0.255.0}\n",
                "config[0].subnets[0].netmask",
            ),
            ("v1", "version: 1\nconfig:\n- {type: vlan, name: v, vlan_link: e, vlan_id: 5000}\n", "config[0].vlan_id"),
            (
                "v1",
                "version: 1\nconfig:\n- {type: bond, name: b, bond_interfaces: [x], params: {bond-mode: fastest}}\n",
                "config[0].params.bond-mode",
            ),
            ("v1", "version: 1\nconfig:\n- {type: physical, name: averyveryverylongname}\n", "averyveryverylongname"),
            ("v2", "version: 2\nethernets:\n  e: {addresses: [10.0.0.1/33]}\n", "ethernets.e.addresses[0]"),
            ("v2", "version: 2\nbonds:\n  b: {interfaces: [v]}\nvlans:\n  v: {id: 3, link: x}\n", "is a bond or VLAN"),
            ("openstack", r#"{"links": [{"id": "a", "type": "phy"}]}"#, "links[0]"),
            (
                "openstack",
                r#"{"links": [{"id": "a", "type": "phy", "ethernet_mac_address": "02:00:00:00:00:01"}], "networks": [{"link": "a", "type": "ipv4", "ip_address": "10.0.0.1", "netmask": "255.0.255.0"}]}"#,
                "networks[0].netmask",
            ),
            ("openstack", r#"{"links": [{"id": "a", "type": "wifi"}]}"#, "links[0].type"),
            ("bogus", "version: 1\nconfig: []\n", "config key `format`"),
        ];
        for (format, doc, field) in cases {
            let e = run(format, doc).unwrap_err();
            assert!(e.contains(field), "{format}: {e}");
        }
        let big = format!("version: 1\nconfig: []\n#{}\n", "x".repeat(300 << 10));
        assert!(run("v1", &big).unwrap_err().contains("more than 262144"));
        let many = format!(
            "version: 2\nethernets:\n{}",
            (0..100).map(|i| format!("  e{i}: {{dhcp4: true}}\n")).collect::<String>()
        );
        assert!(run("v2", &many).unwrap_err().contains("more than 64 links"));
    }
}
