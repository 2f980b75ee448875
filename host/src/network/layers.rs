//! The node's network as five layers merged into one spec, and why each
//! value is there.
//!
//! Layers, lowest first: [`Layer::Default`] (every physical link up, DHCPv4
//! on those with carrier that nothing else configures) < [`Layer::Cmdline`]
//! (`bronze.ip=`) < [`Layer::Platform`] (the platform's metadata, or a
//! network-configurator plugin's plan) < [`Layer::Dhcp`] (lease values) <
//! [`Layer::Config`] (`machine.network`).
//!
//! Merging is per key, the higher layer winning:
//! - a link's MTU and kind: the highest layer that sets them;
//! - a link's static addressing (addresses, routes, whether DHCP runs): the
//!   highest static layer that names the link, as a whole, so the config's
//!   `eth0` replaces the command line's `eth0` rather than adding to it;
//! - lease addresses and routes are added on the links whose winning
//!   addressing runs DHCP;
//! - routes are keyed by destination and metric across links: a higher
//!   layer's route replaces a lower one's with the same key (with a warning);
//! - resolvers, search domains and time servers: the highest layer that
//!   sets any; the hostname likewise, except that a lease's hostname ranks
//!   below the platform's (a DHCP server names hosts only when nothing more
//!   specific does).
//!
//! Pure: no netlink, no files. The result, [`NetworkSpecSpec`], is the
//! `NetworkSpec` resource (`bronzectl get networkspec`) and yields the
//! [`NetworkPlan`] the applier makes the kernel match.

use super::cmdline::CmdlineIp;
use super::plan::{
    AddressPlan, BondPlan, DEFAULT_ROUTE_METRIC, LinkKind, LinkPlan, MAX_RESOLVERS, NetworkPlan, PlanError, RoutePlan,
    VlanPlan,
};
use super::resources::{LinkStatusSpec, NS_NETWORK};
use crate::state::types::resource;
use bronze_config::{Cidr, Network};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Where a value came from; later variants win.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Layer {
    Default,
    Cmdline,
    Platform,
    Dhcp,
    Config,
}

impl Layer {
    pub const ALL: [Layer; 5] = [Layer::Default, Layer::Cmdline, Layer::Platform, Layer::Dhcp, Layer::Config];

    pub fn as_str(self) -> &'static str {
        match self {
            Layer::Default => "default",
            Layer::Cmdline => "cmdline",
            Layer::Platform => "platform",
            Layer::Dhcp => "dhcp",
            Layer::Config => "config",
        }
    }

    /// Rank for the hostname: a lease's name ranks below the platform's.
    fn hostname_rank(self) -> u8 {
        match self {
            Layer::Default => 0,
            Layer::Cmdline => 1,
            Layer::Dhcp => 2,
            Layer::Platform => 3,
            Layer::Config => 4,
        }
    }
}

impl fmt::Display for Layer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// DHCPv4 on a link, and how its lease's routes are installed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DhcpRequest {
    pub route_metric: u32,
}

impl Default for DhcpRequest {
    fn default() -> Self {
        Self { route_metric: DEFAULT_ROUTE_METRIC }
    }
}

/// One route as a layer gives it (metric optional).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteLayer {
    pub destination: Cidr,
    pub gateway: Option<IpAddr>,
    pub metric: Option<u32>,
    pub on_link: bool,
}

/// A link's static addressing, as one layer gives it: it replaces a lower
/// layer's as a whole.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Addressing {
    pub addresses: Vec<Cidr>,
    pub routes: Vec<RouteLayer>,
    /// `Some`: run DHCPv4 on the link.
    pub dhcp4: Option<DhcpRequest>,
}

/// One link as one layer sees it (already resolved to a name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkLayer {
    pub name: String,
    pub mtu: Option<u32>,
    pub kind: Option<LinkKind>,
    /// `None`: the layer says nothing about the link's addressing (it only
    /// brings it up, sets its MTU, or creates it).
    pub addressing: Option<Addressing>,
}

impl LinkLayer {
    pub fn named(name: impl Into<String>) -> Self {
        Self { name: name.into(), mtu: None, kind: None, addressing: None }
    }
}

/// Everything one layer contributes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LayerSpec {
    pub links: Vec<LinkLayer>,
    pub hostname: Option<String>,
    pub resolvers: Vec<IpAddr>,
    pub search: Vec<String>,
    /// NTP servers, names or addresses.
    pub time_servers: Vec<String>,
    /// Accepted but worth telling an operator.
    pub warnings: Vec<String>,
}

impl LayerSpec {
    /// Whether this layer names `link` at all.
    pub fn names(&self, link: &str) -> bool {
        self.links.iter().any(|l| l.name == link)
    }
}

/// The five layers' inputs.
#[derive(Debug, Clone, Default)]
pub struct Layers {
    pub default: LayerSpec,
    pub cmdline: LayerSpec,
    pub platform: LayerSpec,
    pub dhcp: LayerSpec,
    pub config: LayerSpec,
}

impl Layers {
    fn ordered(&self) -> [(Layer, &LayerSpec); 5] {
        [
            (Layer::Default, &self.default),
            (Layer::Cmdline, &self.cmdline),
            (Layer::Platform, &self.platform),
            (Layer::Dhcp, &self.dhcp),
            (Layer::Config, &self.config),
        ]
    }
}

/// A value and the layer it came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Sourced<T> {
    pub value: T,
    pub layer: Layer,
}

/// A link of the merged spec.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SpecLink {
    pub name: String,
    pub up: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<Sourced<u32>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<Sourced<LinkKind>>,
    /// DHCPv4 runs on the link.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dhcp4: Option<Sourced<DhcpRequest>>,
    /// The highest layer that names the link.
    pub layer: Layer,
    /// The layer whose addressing the link has (none: no layer gave any).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub addressing_layer: Option<Layer>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SpecAddress {
    pub link: String,
    pub address: Cidr,
    pub layer: Layer,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SpecRoute {
    #[serde(flatten)]
    pub route: RoutePlan,
    pub layer: Layer,
}

/// The merged network: what bronzed makes the kernel match, each value
/// with the layer it came from. Resource `NetworkSpecs.bronze.dev`, id
/// [`NETWORK_SPEC_ID`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetworkSpecSpec {
    pub links: Vec<SpecLink>,
    pub addresses: Vec<SpecAddress>,
    pub routes: Vec<SpecRoute>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<Sourced<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolvers: Option<Sourced<Vec<IpAddr>>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub search: Option<Sourced<Vec<String>>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_servers: Option<Sourced<Vec<String>>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// Whether the kernel is being made to match it (PID 1, or a process
    /// that owns its namespace's network), or it is only computed.
    #[serde(default)]
    pub applied: bool,
}

/// The id of the one `NetworkSpec`.
pub const NETWORK_SPEC_ID: &str = "current";

resource!(
    NetworkSpecSpec,
    NETWORK_SPEC,
    "NetworkSpecs.bronze.dev",
    NS_NETWORK,
    sensitive = false,
    aliases = ["networkspec", "networkspecs", "netspec"]
);

impl NetworkSpecSpec {
    /// The plan the applier takes (layers dropped).
    pub fn plan(&self) -> NetworkPlan {
        NetworkPlan {
            links: self
                .links
                .iter()
                .map(|l| LinkPlan {
                    name: l.name.clone(),
                    up: l.up,
                    mtu: l.mtu.as_ref().map(|m| m.value),
                    kind: l.kind.as_ref().map(|k| k.value.clone()),
                })
                .collect(),
            addresses: self
                .addresses
                .iter()
                .map(|a| AddressPlan { link: a.link.clone(), address: a.address })
                .collect(),
            routes: self.routes.iter().map(|r| r.route.clone()).collect(),
            resolvers: self.resolvers.as_ref().map(|r| r.value.clone()).unwrap_or_default(),
            search: self.search.as_ref().map(|s| s.value.clone()).unwrap_or_default(),
            hostname: self.hostname.as_ref().map(|h| h.value.clone()),
            warnings: self.warnings.clone(),
        }
    }

    /// Links DHCPv4 runs on, with their requests.
    pub fn dhcp_links(&self) -> Vec<(String, DhcpRequest)> {
        self.links.iter().filter_map(|l| l.dhcp4.as_ref().map(|d| (l.name.clone(), d.value))).collect()
    }

    pub fn link(&self, name: &str) -> Option<&SpecLink> {
        self.links.iter().find(|l| l.name == name)
    }

    /// What the spec wants on `link`: its addresses, routes, MTU and DHCP,
    /// layers dropped; for comparing two specs.
    pub fn link_view(&self, link: &str) -> LinkView {
        let l = self.link(link);
        LinkView {
            addresses: self.addresses.iter().filter(|a| a.link == link).map(|a| a.address).collect(),
            routes: self.routes.iter().filter(|r| r.route.link == link).map(|r| r.route.clone()).collect(),
            mtu: l.and_then(|l| l.mtu.as_ref().map(|m| m.value)),
            dhcp4: l.is_some_and(|l| l.dhcp4.is_some()),
            up: l.map(|l| l.up),
        }
    }
}

/// What a spec wants of one link, layers dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkView {
    pub addresses: BTreeSet<Cidr>,
    pub routes: BTreeSet<RoutePlan>,
    pub mtu: Option<u32>,
    pub dhcp4: bool,
    pub up: Option<bool>,
}

/// Merges the layers into one validated spec.
pub fn merge(layers: &Layers) -> Result<NetworkSpecSpec, PlanError> {
    let mut links: BTreeMap<String, SpecLink> = BTreeMap::new();
    // Per link, the static layer whose addressing wins.
    let mut addressing: BTreeMap<String, (Layer, &Addressing)> = BTreeMap::new();
    let mut out = NetworkSpecSpec::default();
    for (layer, spec) in layers.ordered() {
        out.warnings.extend(spec.warnings.iter().map(|w| format!("{layer}: {w}")));
        let mut seen = BTreeSet::new();
        for link in &spec.links {
            if let Some(problem) = super::plan::link_name_problem(&link.name) {
                return Err(PlanError::LinkName { name: link.name.clone(), reason: problem });
            }
            if !seen.insert(link.name.as_str()) {
                return Err(PlanError::DuplicateLink { link: format!("{} ({layer} layer)", link.name) });
            }
            let entry = links.entry(link.name.clone()).or_insert_with(|| SpecLink {
                name: link.name.clone(),
                up: true,
                mtu: None,
                kind: None,
                dhcp4: None,
                layer,
                addressing_layer: None,
            });
            entry.layer = layer;
            if let Some(mtu) = link.mtu {
                entry.mtu = Some(Sourced { value: mtu, layer });
            }
            if let Some(kind) = &link.kind {
                entry.kind = Some(Sourced { value: kind.clone(), layer });
            }
            if layer != Layer::Dhcp
                && let Some(a) = &link.addressing
            {
                addressing.insert(link.name.clone(), (layer, a));
            }
        }
    }

    // Static addressing, then what the leases add.
    let mut routes: BTreeMap<(Cidr, u32), SpecRoute> = BTreeMap::new();
    let mut addresses: Vec<SpecAddress> = Vec::new();
    let mut add_route = |route: RoutePlan, layer: Layer, out: &mut NetworkSpecSpec| {
        let key = (route.destination, route.metric);
        match routes.get(&key) {
            Some(existing) if existing.layer > layer => out.warnings.push(format!(
                "{layer}: route {route} is overridden by the {} layer's {}",
                existing.layer, existing.route
            )),
            Some(existing) if existing.layer == layer && existing.route != route => {
                // Same layer, same key: validation names both.
                out.routes.push(SpecRoute { route, layer });
            }
            Some(existing) if existing.layer == layer => {}
            Some(existing) => {
                out.warnings.push(format!(
                    "{}: route {} is overridden by the {layer} layer's {route}",
                    existing.layer, existing.route
                ));
                routes.insert(key, SpecRoute { route, layer });
            }
            None => {
                routes.insert(key, SpecRoute { route, layer });
            }
        }
    };
    for (name, (layer, a)) in &addressing {
        let link = links.get_mut(name).expect("every addressed link is in the map");
        link.addressing_layer = Some(*layer);
        link.dhcp4 = a.dhcp4.map(|d| Sourced { value: d, layer: *layer });
        for address in &a.addresses {
            push_address(&mut addresses, name, *address, *layer);
        }
        for r in &a.routes {
            let route = route_plan(name, r, &mut out.warnings, *layer);
            add_route(route, *layer, &mut out);
        }
    }
    for lease_link in &layers.dhcp.links {
        let Some(link) = links.get(&lease_link.name) else { continue };
        if link.dhcp4.is_none() {
            out.warnings
                .push(format!("dhcp: a lease on {} is ignored: no layer runs DHCP on it any more", lease_link.name));
            continue;
        }
        if let Some(a) = &lease_link.addressing {
            for address in &a.addresses {
                push_address(&mut addresses, &lease_link.name, *address, Layer::Dhcp);
            }
            for r in &a.routes {
                let route = route_plan(&lease_link.name, r, &mut out.warnings, Layer::Dhcp);
                add_route(route, Layer::Dhcp, &mut out);
            }
        }
    }
    out.links = links.into_values().collect();
    out.addresses = addresses;
    let mut merged: Vec<SpecRoute> = routes.into_values().collect();
    merged.append(&mut out.routes);
    out.routes = merged;

    // Node-wide values: the highest layer that sets any.
    for (layer, spec) in layers.ordered() {
        if !spec.resolvers.is_empty() {
            out.resolvers = Some(Sourced { value: spec.resolvers.clone(), layer });
        }
        if !spec.search.is_empty() {
            out.search = Some(Sourced { value: spec.search.clone(), layer });
        }
        if !spec.time_servers.is_empty() {
            out.time_servers = Some(Sourced { value: spec.time_servers.clone(), layer });
        }
        if let Some(hostname) = &spec.hostname
            && out.hostname.as_ref().is_none_or(|h| h.layer.hostname_rank() <= layer.hostname_rank())
        {
            out.hostname = Some(Sourced { value: hostname.clone(), layer });
        }
    }
    if let Some(resolvers) = &out.resolvers
        && resolvers.value.len() > MAX_RESOLVERS
    {
        let ignored = resolvers.value[MAX_RESOLVERS..].iter().map(IpAddr::to_string).collect::<Vec<_>>();
        out.warnings.push(format!(
            "{}: {} nameservers; resolvers use the first {MAX_RESOLVERS} and ignore {}",
            resolvers.layer,
            resolvers.value.len(),
            ignored.join(", ")
        ));
    }
    out.plan().validate()?;
    Ok(out)
}

fn push_address(addresses: &mut Vec<SpecAddress>, link: &str, address: Cidr, layer: Layer) {
    match addresses.iter_mut().find(|a| a.link == link && a.address == address) {
        Some(existing) => existing.layer = existing.layer.max(layer),
        None => addresses.push(SpecAddress { link: link.to_string(), address, layer }),
    }
}

fn route_plan(link: &str, r: &RouteLayer, warnings: &mut Vec<String>, layer: Layer) -> RoutePlan {
    let destination = Cidr::from(r.destination.net().trunc());
    if destination != r.destination {
        warnings.push(format!(
            "{layer}: interface {link}: route {} has host bits set; using the network {destination}",
            r.destination
        ));
    }
    RoutePlan {
        link: link.to_string(),
        destination,
        gateway: r.gateway,
        metric: r.metric.unwrap_or(DEFAULT_ROUTE_METRIC),
        on_link: r.on_link,
    }
}

/// `0.0.0.0/0` or `::/0`, matching the gateway's family.
pub fn default_route(gateway: IpAddr) -> Cidr {
    let any = match gateway {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    };
    // Cannot fail: an unspecified address with prefix 0 is a valid CIDR of
    // either family (pinned by the tests).
    format!("{any}/0").parse().expect("an unspecified address with prefix 0 is a valid CIDR")
}

/// The command line's layer: each `bronze.ip=` link with its addresses,
/// and a default route per gateway.
pub fn cmdline_layer(cmdline: &[CmdlineIp]) -> LayerSpec {
    let mut out = LayerSpec::default();
    for entry in cmdline {
        let idx = match out.links.iter().position(|l| l.name == entry.link) {
            Some(idx) => idx,
            None => {
                out.links.push(LinkLayer {
                    name: entry.link.clone(),
                    mtu: None,
                    kind: None,
                    addressing: Some(Addressing::default()),
                });
                out.links.len() - 1
            }
        };
        let a = out.links[idx].addressing.get_or_insert_with(Addressing::default);
        a.addresses.push(entry.address);
        if let Some(gateway) = entry.gateway {
            a.routes.push(RouteLayer {
                destination: default_route(gateway),
                gateway: Some(gateway),
                metric: None,
                on_link: false,
            });
        }
    }
    out
}

/// The DHCP layer from the bound leases of the links DHCP runs on: each
/// lease's address, its routes (option 121, else a default route per
/// router) with the link's DHCP route metric, and its MTU; node-wide, the
/// leases' DNS servers, search domains, NTP servers and hostname, links in
/// name order.
pub fn dhcp_layer(leases: &BTreeMap<String, super::dhcp::Lease>, requests: &[(String, DhcpRequest)]) -> LayerSpec {
    let mut out = LayerSpec::default();
    for (link, request) in requests {
        let Some(lease) = leases.get(link) else { continue };
        let subnet = lease.address.net();
        let route = |destination: Cidr, gateway: Option<Ipv4Addr>| RouteLayer {
            destination,
            gateway: gateway.map(IpAddr::V4),
            metric: Some(request.route_metric),
            // A router outside the leased subnet (a /32 lease) is on the link.
            on_link: gateway.is_some_and(|g| !subnet.contains(&IpAddr::V4(g))),
        };
        let routes: Vec<RouteLayer> = if lease.routes.is_empty() {
            lease.routers.first().map(|r| route(default_route(IpAddr::V4(*r)), Some(*r))).into_iter().collect()
        } else {
            lease.routes.iter().map(|r| route(r.destination, r.gateway)).collect()
        };
        out.links.push(LinkLayer {
            name: link.clone(),
            mtu: lease.mtu,
            kind: None,
            addressing: Some(Addressing { addresses: vec![lease.address], routes, dhcp4: None }),
        });
        for dns in &lease.dns {
            let dns = IpAddr::V4(*dns);
            if !out.resolvers.contains(&dns) {
                out.resolvers.push(dns);
            }
        }
        let search =
            if lease.search.is_empty() { lease.domain.iter().cloned().collect() } else { lease.search.clone() };
        for domain in search {
            if !out.search.contains(&domain) {
                out.search.push(domain);
            }
        }
        for ntp in &lease.ntp {
            let ntp = ntp.to_string();
            if !out.time_servers.contains(&ntp) {
                out.time_servers.push(ntp);
            }
        }
        if out.hostname.is_none() {
            out.hostname = lease.hostname.clone();
        }
    }
    out
}

/// Resolves an interface selector to a link name, or says why not.
pub type SelectorResolver<'a> = dyn Fn(&bronze_config::Selector) -> Result<Option<String>, String> + 'a;

/// The machine config's layer: its interfaces (selectors resolved against
/// the current links; an unresolved one is a warning), bonds with their
/// members, VLANs, resolvers, search domains and the hostname.
pub fn config_layer(
    network: &Network,
    hostname: Option<&str>,
    time_servers: &[String],
    resolve: &SelectorResolver<'_>,
) -> LayerSpec {
    let mut out = LayerSpec {
        hostname: hostname.map(str::to_string),
        resolvers: network.nameservers.iter().map(|n| n.addr()).collect(),
        search: network.search_domains.iter().map(|d| d.as_str().to_string()).collect(),
        time_servers: time_servers.to_vec(),
        ..Default::default()
    };
    for iface in &network.interfaces {
        let name = match (&iface.name, &iface.selector) {
            (Some(name), _) => name.as_str().to_string(),
            (None, Some(selector)) => match resolve(selector) {
                Ok(Some(name)) => name,
                Ok(None) => {
                    out.warnings.push(format!("interface {}: no link matches it (yet)", iface.label()));
                    continue;
                }
                Err(e) => {
                    out.warnings.push(format!("interface {}: {e}", iface.label()));
                    continue;
                }
            },
            (None, None) => continue,
        };
        let addressing = Addressing {
            addresses: iface.addresses.clone(),
            routes: iface.routes.iter().map(config_route).collect(),
            dhcp4: iface.dhcp.then(|| DhcpRequest {
                route_metric: iface.dhcp_options.as_ref().and_then(|o| o.route_metric).unwrap_or(DEFAULT_ROUTE_METRIC),
            }),
        };
        let kind = iface.bond.as_ref().map(|b| {
            LinkKind::Bond(BondPlan {
                mode: b.mode,
                members: b.interfaces.iter().map(|m| m.as_str().to_string()).collect(),
                miimon: b.miimon,
                updelay: b.updelay,
                downdelay: b.downdelay,
                lacp_rate_fast: b.lacp_rate == Some(bronze_config::LacpRate::Fast),
                xmit_hash_policy: b.xmit_hash_policy,
            })
        });
        if let Some(bond) = &iface.bond {
            // Members carry no addressing of their own (and so get no
            // default DHCP); the bond does.
            for member in &bond.interfaces {
                if !out.names(member.as_str()) {
                    out.links.push(LinkLayer {
                        name: member.as_str().to_string(),
                        mtu: None,
                        kind: None,
                        addressing: Some(Addressing::default()),
                    });
                }
            }
        }
        for vlan in &iface.vlans {
            out.links.push(LinkLayer {
                name: format!("{name}.{}", vlan.vlan_id),
                mtu: vlan.mtu,
                kind: Some(LinkKind::Vlan(VlanPlan { parent: name.clone(), id: vlan.vlan_id })),
                addressing: Some(Addressing {
                    addresses: vlan.addresses.clone(),
                    routes: vlan.routes.iter().map(config_route).collect(),
                    dhcp4: vlan.dhcp.then(|| DhcpRequest {
                        route_metric: vlan
                            .dhcp_options
                            .as_ref()
                            .and_then(|o| o.route_metric)
                            .unwrap_or(DEFAULT_ROUTE_METRIC),
                    }),
                }),
            });
        }
        match out.links.iter_mut().find(|l| l.name == name) {
            // A member placeholder named before its own entry.
            Some(existing) => {
                existing.mtu = iface.mtu;
                existing.kind = kind;
                existing.addressing = Some(addressing);
            }
            None => out.links.push(LinkLayer { name, mtu: iface.mtu, kind, addressing: Some(addressing) }),
        }
    }
    out
}

fn config_route(r: &bronze_config::Route) -> RouteLayer {
    RouteLayer { destination: r.network, gateway: r.gateway.map(|g| g.addr()), metric: r.metric, on_link: r.on_link }
}

/// Whether a link is physical: an Ethernet NIC (no virtual kind, not
/// loopback).
pub fn is_physical(link: &LinkStatusSpec) -> bool {
    link.kind.is_empty() && link.link_type == "ether"
}

/// The built-in default layer, given the other layers: every physical link
/// up, and DHCPv4 on each physical link with carrier that no other layer
/// names and no bond holds.
pub fn default_layer(links: &[LinkStatusSpec], others: &[&LayerSpec], dhcp: bool) -> LayerSpec {
    let mut out = LayerSpec::default();
    let members: BTreeSet<&str> = others
        .iter()
        .flat_map(|l| l.links.iter())
        .filter_map(|l| match &l.kind {
            Some(LinkKind::Bond(b)) => Some(b.members.iter().map(String::as_str)),
            _ => None,
        })
        .flatten()
        .collect();
    for link in links.iter().filter(|l| is_physical(l)) {
        let configured = others.iter().any(|l| l.names(&link.name)) || members.contains(link.name.as_str());
        let mut layer = LinkLayer::named(&link.name);
        if dhcp && link.carrier && !configured {
            layer.addressing = Some(Addressing { dhcp4: Some(DhcpRequest::default()), ..Default::default() });
        }
        out.links.push(layer);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use bronze_config::{BondMode, Interface, Route, XmitHashPolicy};

    fn cidr(s: &str) -> Cidr {
        s.parse().unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn static_link(name: &str, addresses: &[&str], routes: &[(&str, Option<&str>)]) -> LinkLayer {
        LinkLayer {
            name: name.into(),
            mtu: None,
            kind: None,
            addressing: Some(Addressing {
                addresses: addresses.iter().map(|a| cidr(a)).collect(),
                routes: routes
                    .iter()
                    .map(|(d, g)| RouteLayer { destination: cidr(d), gateway: g.map(ip), metric: None, on_link: false })
                    .collect(),
                dhcp4: None,
            }),
        }
    }

    fn dhcp_link(name: &str) -> LinkLayer {
        LinkLayer {
            name: name.into(),
            mtu: None,
            kind: None,
            addressing: Some(Addressing { dhcp4: Some(DhcpRequest::default()), ..Default::default() }),
        }
    }

    fn lease(name: &str, address: &str, gateway: &str) -> LayerSpec {
        LayerSpec {
            links: vec![static_link(name, &[address], &[("0.0.0.0/0", Some(gateway))])],
            resolvers: vec![ip("10.0.0.53")],
            hostname: Some("from-dhcp".into()),
            time_servers: vec!["10.0.0.123".into()],
            ..Default::default()
        }
    }

    fn physical(name: &str, carrier: bool) -> LinkStatusSpec {
        LinkStatusSpec { name: name.into(), link_type: "ether".into(), carrier, ..Default::default() }
    }

    fn layer_of(spec: &NetworkSpecSpec, link: &str, address: &str) -> Option<Layer> {
        spec.addresses.iter().find(|a| a.link == link && a.address == cidr(address)).map(|a| a.layer)
    }

    /// The five layers, each setting the same things; every row removes
    /// the layers above it and checks who wins.
    #[test]
    fn each_layer_wins_over_the_ones_below() {
        let default = LayerSpec { links: vec![dhcp_link("eth0")], ..Default::default() };
        let cmdline = LayerSpec {
            links: vec![static_link("eth0", &["10.0.1.5/24"], &[("0.0.0.0/0", Some("10.0.1.1"))])],
            ..Default::default()
        };
        let platform = LayerSpec {
            links: vec![LinkLayer { mtu: Some(1450), ..dhcp_link("eth0") }],
            hostname: Some("from-platform".into()),
            resolvers: vec![ip("10.0.2.53")],
            time_servers: vec!["ntp.platform".into()],
            ..Default::default()
        };
        let dhcp = lease("eth0", "10.0.3.5/24", "10.0.3.1");
        let config = LayerSpec {
            links: vec![LinkLayer {
                mtu: Some(9000),
                ..static_link("eth0", &["10.0.4.5/24"], &[("0.0.0.0/0", Some("10.0.4.1"))])
            }],
            hostname: Some("from-config".into()),
            resolvers: vec![ip("10.0.4.53")],
            time_servers: vec!["ntp.config".into()],
            ..Default::default()
        };
        struct Row {
            layers: Layers,
            addresses: Vec<(&'static str, Layer)>,
            mtu: Option<(u32, Layer)>,
            dhcp: Option<Layer>,
            hostname: Option<(&'static str, Layer)>,
            resolvers: Option<(&'static str, Layer)>,
            time: Option<(&'static str, Layer)>,
        }
        let all = Layers {
            default: default.clone(),
            cmdline: cmdline.clone(),
            platform: platform.clone(),
            dhcp: dhcp.clone(),
            config: config.clone(),
        };
        let rows = vec![
            Row {
                layers: Layers { default: default.clone(), ..Default::default() },
                addresses: vec![],
                mtu: None,
                dhcp: Some(Layer::Default),
                hostname: None,
                resolvers: None,
                time: None,
            },
            Row {
                layers: Layers { default: default.clone(), cmdline: cmdline.clone(), ..Default::default() },
                addresses: vec![("10.0.1.5/24", Layer::Cmdline)],
                mtu: None,
                dhcp: None,
                hostname: None,
                resolvers: None,
                time: None,
            },
            Row {
                layers: Layers {
                    default: default.clone(),
                    cmdline: cmdline.clone(),
                    platform: platform.clone(),
                    ..Default::default()
                },
                addresses: vec![],
                mtu: Some((1450, Layer::Platform)),
                dhcp: Some(Layer::Platform),
                hostname: Some(("from-platform", Layer::Platform)),
                resolvers: Some(("10.0.2.53", Layer::Platform)),
                time: Some(("ntp.platform", Layer::Platform)),
            },
            Row {
                layers: Layers { config: LayerSpec::default(), ..all.clone() },
                addresses: vec![("10.0.3.5/24", Layer::Dhcp)],
                mtu: Some((1450, Layer::Platform)),
                dhcp: Some(Layer::Platform),
                // A lease's hostname ranks below the platform's.
                hostname: Some(("from-platform", Layer::Platform)),
                resolvers: Some(("10.0.0.53", Layer::Dhcp)),
                time: Some(("10.0.0.123", Layer::Dhcp)),
            },
            Row {
                layers: all.clone(),
                // The config's static addressing replaces the DHCP the
                // platform asked for, so the lease is dropped too.
                addresses: vec![("10.0.4.5/24", Layer::Config)],
                mtu: Some((9000, Layer::Config)),
                dhcp: None,
                hostname: Some(("from-config", Layer::Config)),
                resolvers: Some(("10.0.4.53", Layer::Config)),
                time: Some(("ntp.config", Layer::Config)),
            },
        ];
        for (i, row) in rows.into_iter().enumerate() {
            let spec = merge(&row.layers).unwrap_or_else(|e| panic!("row {i}: {e}"));
            let got: Vec<(String, Layer)> = spec.addresses.iter().map(|a| (a.address.to_string(), a.layer)).collect();
            let want: Vec<(String, Layer)> = row.addresses.iter().map(|(a, l)| (a.to_string(), *l)).collect();
            assert_eq!(got, want, "row {i} addresses");
            let link = spec.link("eth0").unwrap();
            assert_eq!(link.mtu.as_ref().map(|m| (m.value, m.layer)), row.mtu, "row {i} mtu");
            assert_eq!(link.dhcp4.as_ref().map(|d| d.layer), row.dhcp, "row {i} dhcp");
            assert_eq!(spec.hostname.as_ref().map(|h| (h.value.as_str(), h.layer)), row.hostname, "row {i} hostname");
            assert_eq!(
                spec.resolvers.as_ref().map(|r| (r.value[0].to_string(), r.layer)),
                row.resolvers.map(|(r, l)| (r.to_string(), l)),
                "row {i} resolvers"
            );
            assert_eq!(
                spec.time_servers.as_ref().map(|t| (t.value[0].as_str(), t.layer)),
                row.time,
                "row {i} time servers"
            );
        }
    }

    #[test]
    fn the_configs_address_wins_over_the_cmdlines_and_names_its_layer() {
        let cmdline = super::super::cmdline::parse("bronze.ip=eth0:10.0.2.15/24:10.0.2.2").unwrap();
        let mut iface = Interface::new("eth0".parse().unwrap());
        iface.addresses = vec![cidr("172.16.0.10/16")];
        let network = Network { interfaces: vec![iface], ..Default::default() };
        let layers = Layers {
            cmdline: cmdline_layer(&cmdline),
            config: config_layer(&network, None, &[], &|_| Ok(None)),
            ..Default::default()
        };
        let spec = merge(&layers).unwrap();
        assert_eq!(layer_of(&spec, "eth0", "172.16.0.10/16"), Some(Layer::Config));
        assert_eq!(layer_of(&spec, "eth0", "10.0.2.15/24"), None, "the cmdline's address is replaced");
        assert!(spec.routes.is_empty(), "the cmdline's gateway went with its addressing: {:?}", spec.routes);
        assert_eq!(spec.link("eth0").unwrap().addressing_layer, Some(Layer::Config));
        let yaml = serde_yaml::to_string(&spec).unwrap();
        assert!(yaml.contains("address: 172.16.0.10/16\n  layer: config"), "{yaml}");
    }

    #[test]
    fn lease_values_are_added_where_dhcp_runs_and_routes_keyed_across_layers() {
        let config = LayerSpec {
            links: vec![
                dhcp_link("eth0"),
                static_link("eth1", &["192.168.9.5/24"], &[("0.0.0.0/0", Some("192.168.9.1"))]),
            ],
            ..Default::default()
        };
        let layers = Layers { dhcp: lease("eth0", "10.0.3.5/24", "10.0.3.1"), config, ..Default::default() };
        let spec = merge(&layers).unwrap();
        assert_eq!(layer_of(&spec, "eth0", "10.0.3.5/24"), Some(Layer::Dhcp));
        // Both default routes have metric 1024: the config's wins.
        let defaults: Vec<_> =
            spec.routes.iter().filter(|r| r.route.destination == cidr("0.0.0.0/0")).map(|r| r.layer).collect();
        assert_eq!(defaults, [Layer::Config]);
        assert!(spec.warnings.iter().any(|w| w.contains("overridden by the config layer")), "{:?}", spec.warnings);
        assert_eq!(spec.dhcp_links(), [("eth0".to_string(), DhcpRequest::default())]);

        // A lease for a link no layer runs DHCP on is ignored.
        let layers = Layers { dhcp: lease("eth5", "10.0.3.5/24", "10.0.3.1"), ..Default::default() };
        let spec = merge(&layers).unwrap();
        assert!(spec.addresses.is_empty());
    }

    #[test]
    fn the_default_layer_runs_dhcp_only_where_nothing_else_does() {
        let links =
            [physical("eth0", true), physical("eth1", false), physical("eth2", true), physical("eth3", true), {
                let mut veth = physical("veth0", true);
                veth.kind = "veth".into();
                veth
            }];
        let config = LayerSpec {
            links: vec![
                static_link("eth2", &["10.0.0.5/24"], &[]),
                LinkLayer {
                    kind: Some(LinkKind::Bond(BondPlan {
                        mode: BondMode::ActiveBackup,
                        members: vec!["eth3".into()],
                        miimon: None,
                        updelay: None,
                        downdelay: None,
                        lacp_rate_fast: false,
                        xmit_hash_policy: None,
                    })),
                    ..LinkLayer::named("bond0")
                },
            ],
            ..Default::default()
        };
        let default = default_layer(&links, &[&config], true);
        let names: Vec<(&str, bool)> =
            default.links.iter().map(|l| (l.name.as_str(), l.addressing.is_some())).collect();
        assert_eq!(names, [("eth0", true), ("eth1", false), ("eth2", false), ("eth3", false)]);
        let off = default_layer(&links, &[&config], false);
        assert!(off.links.iter().all(|l| l.addressing.is_none()));
    }

    #[test]
    fn config_bonds_vlans_and_selectors_become_links() {
        let yaml = r#"
interfaces:
  - name: bond0
    bond: { mode: 802.3ad, interfaces: [eth0, eth1], miimon: 100, lacpRate: fast, xmitHashPolicy: layer3+4 }
    addresses: [10.1.0.5/24]
    vlans:
      - vlanId: 100
        addresses: [10.100.0.5/24]
        routes: [{ network: 0.0.0.0/0, gateway: 10.100.0.1 }]
  - selector: { hardwareAddr: "52:54:00:12:34:56" }
    dhcp: true
    dhcpOptions: { routeMetric: 50 }
"#;
        let network: Network = serde_yaml::from_str(yaml).unwrap();
        let resolve = |s: &bronze_config::Selector| {
            Ok((s.hardware_addr.as_deref() == Some("52:54:00:12:34:56")).then(|| "enp0s3".to_string()))
        };
        let layer = config_layer(&network, None, &[], &resolve);
        let spec = merge(&Layers { config: layer, ..Default::default() }).unwrap();
        let names: Vec<&str> = spec.links.iter().map(|l| l.name.as_str()).collect();
        assert_eq!(names, ["bond0", "bond0.100", "enp0s3", "eth0", "eth1"]);
        match &spec.link("bond0").unwrap().kind.as_ref().unwrap().value {
            LinkKind::Bond(b) => {
                assert_eq!(b.members, ["eth0", "eth1"]);
                assert_eq!((b.mode, b.miimon, b.lacp_rate_fast), (BondMode::Lacp, Some(100), true));
                assert_eq!(b.xmit_hash_policy, Some(XmitHashPolicy::Layer34));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            spec.link("bond0.100").unwrap().kind.as_ref().unwrap().value,
            LinkKind::Vlan(VlanPlan { parent: "bond0".into(), id: 100 })
        );
        assert_eq!(spec.link("enp0s3").unwrap().dhcp4.as_ref().unwrap().value.route_metric, 50);
        assert!(spec.link("eth0").unwrap().dhcp4.is_none(), "bond members get no DHCP");

        // An unresolvable selector is a warning, not an error.
        let layer = config_layer(&network, None, &[], &|_| Ok(None));
        assert!(layer.warnings.iter().any(|w| w.contains("hardwareAddr 52:54:00:12:34:56")), "{:?}", layer.warnings);
    }

    #[test]
    fn invalid_merges_name_the_problem() {
        let bad = LayerSpec {
            links: vec![static_link("eth0", &["10.0.0.5/24"], &[("0.0.0.0/0", Some("10.9.9.1"))])],
            ..Default::default()
        };
        let err = merge(&Layers { platform: bad, ..Default::default() }).unwrap_err();
        assert!(err.to_string().contains("gateway 10.9.9.1"), "{err}");
        let twice = LayerSpec { links: vec![dhcp_link("eth0"), dhcp_link("eth0")], ..Default::default() };
        assert_eq!(
            merge(&Layers { platform: twice, ..Default::default() }).unwrap_err().to_string(),
            "interface eth0 (platform layer) is configured more than once"
        );
        let long = LayerSpec { links: vec![dhcp_link("a-name-of-16-chr")], ..Default::default() };
        assert!(merge(&Layers { platform: long, ..Default::default() }).unwrap_err().to_string().contains("16 bytes"));
    }

    #[test]
    fn cmdline_routes_and_host_bits() {
        let cmdline =
            super::super::cmdline::parse("bronze.ip=eth0:10.0.2.15/24:10.0.2.2,eth0:fd00::5/64:fe80::1").unwrap();
        let spec = merge(&Layers { cmdline: cmdline_layer(&cmdline), ..Default::default() }).unwrap();
        let routes: Vec<String> = spec.routes.iter().map(|r| r.route.to_string()).collect();
        assert_eq!(routes, ["0.0.0.0/0 via 10.0.2.2 dev eth0 metric 1024", "::/0 via fe80::1 dev eth0 metric 1024"]);
        let net = Network {
            interfaces: vec![{
                let mut i = Interface::new("eth0".parse().unwrap());
                i.addresses = vec![cidr("10.0.0.5/24")];
                i.routes = vec![Route {
                    network: cidr("10.9.3.7/16"),
                    gateway: Some("10.0.0.1".parse().unwrap()),
                    metric: None,
                    on_link: false,
                }];
                i
            }],
            ..Default::default()
        };
        let spec =
            merge(&Layers { config: config_layer(&net, None, &[], &|_| Ok(None)), ..Default::default() }).unwrap();
        assert_eq!(spec.routes[0].route.destination, cidr("10.9.0.0/16"));
        assert_eq!(
            spec.warnings,
            ["config: interface eth0: route 10.9.3.7/16 has host bits set; using the network 10.9.0.0/16"]
        );
    }
}
