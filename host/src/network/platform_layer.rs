//! The platform layer, from either source: the platform's metadata as the
//! provider normalised it ([`metadata_layer`]), or a network-configurator
//! plugin's plan ([`plan_layer`]), which is hostile until checked: at most
//! [`MAX_ENTRIES`] entries of each kind, every name, CIDR, gateway, MTU,
//! VLAN id and bond parameter parsed, each error naming the field.
//!
//! And the guard that keeps a plan away from the link the API is reached
//! through ([`check_api_links`]).

use super::layers::{Addressing, DhcpRequest, LayerSpec, LinkLayer, NetworkSpecSpec, RouteLayer};
use super::links::LinkSelector;
use super::plan::{BondPlan, DEFAULT_ROUTE_METRIC, LinkKind, MTU_RANGE, VlanPlan, XmitHashPolicy};
use super::resources::LinkStatusSpec;
use crate::platform::metadata::PlatformMetadata;
use crate::plugins::worlds::network as wit;
use bronze_config::Cidr;
use std::collections::BTreeSet;
use std::net::IpAddr;

/// The most entries of one kind (links, addresses, routes, nameservers,
/// ...) a plan may hold.
pub const MAX_ENTRIES: usize = 1000;
/// The longest string in a plan (a hostname is at most 253).
pub const MAX_TEXT: usize = 253;

/// The link `selector` means: a name is taken as given (it may name a
/// link this plan creates); other selectors must match one existing link.
fn resolve_selector(selector: &LinkSelector, links: &[LinkStatusSpec]) -> Result<Option<String>, String> {
    match selector {
        LinkSelector::Name(name) => Ok(Some(name.clone())),
        other => other.resolve(links).map_err(|e| e.to_string()),
    }
}

/// The platform layer from the provider's metadata: interfaces matched to
/// links by name or MAC (one the node does not have is a warning), their
/// addresses, routes, MTU and DHCP; resolvers, search domains, time
/// servers and the hostname.
pub fn metadata_layer(m: &PlatformMetadata, links: &[LinkStatusSpec]) -> LayerSpec {
    let mut out = LayerSpec {
        hostname: m.hostname.clone(),
        resolvers: m.nameservers.iter().filter_map(|n| n.parse().ok()).collect(),
        search: m.search_domains.clone(),
        time_servers: m.time_servers.clone(),
        ..Default::default()
    };
    for (i, iface) in m.interfaces.iter().enumerate() {
        let matched = match (&iface.name, &iface.mac) {
            (Some(name), _) if links.iter().any(|l| l.name == *name) => Ok(Some(name.clone())),
            (_, Some(mac)) => resolve_selector(&LinkSelector::Mac(mac.clone()), links),
            (Some(name), None) => Ok(Some(name.clone())),
            (None, None) => Ok(None),
        };
        let name = match matched {
            Ok(Some(name)) => name,
            Ok(None) => {
                out.warnings.push(format!(
                    "interfaces[{i}] ({}): the node has no such link",
                    iface.mac.as_deref().or(iface.name.as_deref()).unwrap_or("no MAC or name")
                ));
                continue;
            }
            Err(e) => {
                out.warnings.push(format!("interfaces[{i}]: {e}"));
                continue;
            }
        };
        let mut addressing = Addressing::default();
        for a in &iface.addresses {
            match a.parse::<Cidr>() {
                Ok(c) => addressing.addresses.push(c),
                Err(e) => out.warnings.push(format!("interfaces[{i}].addresses: {a:?}: {e}")),
            }
        }
        for r in &iface.routes {
            let destination = r.to.parse::<Cidr>();
            let gateway = r.gateway.as_deref().map(str::parse::<IpAddr>).transpose();
            match (destination, gateway) {
                (Ok(destination), Ok(gateway)) => addressing.routes.push(RouteLayer {
                    destination,
                    gateway,
                    metric: r.metric,
                    on_link: r.on_link && gateway.is_some(),
                }),
                _ => out.warnings.push(format!("interfaces[{i}].routes: {:?} is not a route", r.to)),
            }
        }
        if let Some(d) = iface.dhcp.iter().find(|d| d.family == "ipv4") {
            addressing.dhcp4 = Some(DhcpRequest { route_metric: d.route_metric.unwrap_or(DEFAULT_ROUTE_METRIC) });
        }
        out.links.push(LinkLayer { name, mtu: iface.mtu, kind: None, addressing: Some(addressing) });
    }
    out
}

/// Why a plugin's plan is refused; names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct PlanRejection {
    pub field: String,
    pub reason: String,
}

fn reject<T>(field: impl Into<String>, reason: impl Into<String>) -> Result<T, PlanRejection> {
    Err(PlanRejection { field: field.into(), reason: reason.into() })
}

fn count<T>(field: &str, list: &[T]) -> Result<(), PlanRejection> {
    if list.len() > MAX_ENTRIES {
        return reject(field, format!("{} entries; at most {MAX_ENTRIES} are allowed", list.len()));
    }
    Ok(())
}

fn text(field: &str, value: &str) -> Result<(), PlanRejection> {
    if value.len() > MAX_TEXT {
        return reject(field, format!("{} bytes; at most {MAX_TEXT} are allowed", value.len()));
    }
    Ok(())
}

fn link_name(field: &str, name: &str) -> Result<(), PlanRejection> {
    match super::plan::link_name_problem(name) {
        Some(reason) => reject(field, format!("link name {name:?} is not valid: {reason}")),
        None => Ok(()),
    }
}

fn wit_match(field: &str, m: &wit::LinkMatch) -> Result<LinkSelector, PlanRejection> {
    Ok(match m {
        wit::LinkMatch::Name(n) => {
            link_name(field, n)?;
            LinkSelector::Name(n.clone())
        }
        wit::LinkMatch::Mac(m) => {
            let parts: Vec<&str> = m.split(':').collect();
            if parts.len() != 6 || !parts.iter().all(|p| p.len() == 2 && p.chars().all(|c| c.is_ascii_hexdigit())) {
                return reject(field, format!("{m:?} is not a MAC address; expected aa:bb:cc:dd:ee:ff"));
            }
            LinkSelector::Mac(m.to_ascii_lowercase())
        }
        wit::LinkMatch::Driver(d) => {
            text(field, d)?;
            LinkSelector::Driver(d.clone())
        }
        wit::LinkMatch::BusPath(p) => {
            text(field, p)?;
            LinkSelector::BusPath(p.clone())
        }
    })
}

fn addressing(field: &str, a: &wit::Addressing, total_routes: &mut usize) -> Result<Addressing, PlanRejection> {
    count(&format!("{field}.addresses"), &a.addresses)?;
    count(&format!("{field}.routes"), &a.routes)?;
    let mut out = Addressing::default();
    for (i, address) in a.addresses.iter().enumerate() {
        let at = format!("{field}.addresses[{i}]");
        text(&at, address)?;
        match address.parse::<Cidr>() {
            Ok(c) => out.addresses.push(c),
            Err(e) => return reject(at, format!("{address:?} is not an address in CIDR notation: {e}")),
        }
    }
    *total_routes += a.routes.len();
    if *total_routes > MAX_ENTRIES {
        return reject(format!("{field}.routes"), format!("the plan has more than {MAX_ENTRIES} routes"));
    }
    for (i, r) in a.routes.iter().enumerate() {
        let at = format!("{field}.routes[{i}]");
        text(&at, &r.to)?;
        let destination = match r.to.parse::<Cidr>() {
            Ok(c) => c,
            Err(e) => return reject(format!("{at}.to"), format!("{:?} is not a network in CIDR notation: {e}", r.to)),
        };
        let gateway = match &r.via {
            None => None,
            Some(via) => match via.parse::<IpAddr>() {
                Ok(ip) if ip.is_ipv4() == destination.is_ipv4() => Some(ip),
                Ok(ip) => return reject(format!("{at}.via"), format!("{ip} is not of {}'s IP family", r.to)),
                Err(_) => return reject(format!("{at}.via"), format!("{via:?} is not an IP address")),
            },
        };
        if r.on_link && gateway.is_none() {
            return reject(format!("{at}.on-link"), "on-link needs a gateway (`via`)");
        }
        out.routes.push(RouteLayer { destination, gateway, metric: r.metric, on_link: r.on_link });
    }
    if let Some(mtu) = a.mtu
        && !MTU_RANGE.contains(&mtu)
    {
        return reject(format!("{field}.mtu"), format!("{mtu} is outside 68..=65535"));
    }
    if a.dhcp4 {
        out.dhcp4 = Some(DhcpRequest { route_metric: a.dhcp_route_metric.unwrap_or(DEFAULT_ROUTE_METRIC) });
    }
    Ok(out)
}

fn hash_policy(field: &str, p: &str) -> Result<XmitHashPolicy, PlanRejection> {
    if let Some(policy) = XmitHashPolicy::from_name(p) {
        return Ok(policy);
    }
    let names: Vec<&str> = XmitHashPolicy::ALL.iter().map(|p| p.as_str()).collect();
    let (last, rest) = names.split_last().expect("policies");
    reject(field, format!("{p:?} is not a transmit hash policy; expected {} or {last}", rest.join(", ")))
}

/// A plugin's plan as the platform layer, checked field by field. Entries
/// whose link the node does not have are skipped with a warning (the plan
/// may describe hardware that is absent); a bond member or VLAN parent that
/// resolves to nothing is an error.
pub fn plan_layer(plan: &wit::NetworkPlan, links: &[LinkStatusSpec]) -> Result<LayerSpec, PlanRejection> {
    count("ethernets", &plan.ethernets)?;
    count("bonds", &plan.bonds)?;
    count("vlans", &plan.vlans)?;
    count("nameservers", &plan.nameservers)?;
    count("search", &plan.search)?;
    count("time-servers", &plan.time_servers)?;
    let mut out = LayerSpec::default();
    let mut routes = 0;
    let resolve = |field: &str, m: &LinkSelector| -> Result<Option<String>, PlanRejection> {
        resolve_selector(m, links).or_else(|e| reject(field, e))
    };
    let dhcp6: Vec<String> = plan
        .ethernets
        .iter()
        .enumerate()
        .filter(|(_, e)| e.addressing.dhcp6)
        .map(|(i, _)| format!("ethernets[{i}]"))
        .chain(plan.bonds.iter().enumerate().filter(|(_, b)| b.addressing.dhcp6).map(|(i, _)| format!("bonds[{i}]")))
        .chain(plan.vlans.iter().enumerate().filter(|(_, v)| v.addressing.dhcp6).map(|(i, _)| format!("vlans[{i}]")))
        .collect();
    for at in dhcp6 {
        out.warnings.push(format!("{at}.addressing.dhcp6: DHCPv6 is not supported yet; ignored"));
    }
    let mut names = BTreeSet::new();
    let mut claim = |field: &str, name: &str| -> Result<(), PlanRejection> {
        if !names.insert(name.to_string()) {
            return reject(field, format!("link {name:?} is configured more than once"));
        }
        Ok(())
    };
    for (i, e) in plan.ethernets.iter().enumerate() {
        let at = format!("ethernets[{i}]");
        let m = wit_match(&format!("{at}.match"), &e.match_)?;
        let a = addressing(&format!("{at}.addressing"), &e.addressing, &mut routes)?;
        let Some(name) = resolve(&format!("{at}.match"), &m)? else {
            out.warnings.push(format!("{at}: no link matches {m}"));
            continue;
        };
        claim(&format!("{at}.match"), &name)?;
        out.links.push(LinkLayer { name, mtu: e.addressing.mtu, kind: None, addressing: Some(a) });
    }
    for (i, b) in plan.bonds.iter().enumerate() {
        let at = format!("bonds[{i}]");
        link_name(&format!("{at}.name"), &b.name)?;
        claim(&format!("{at}.name"), &b.name)?;
        count(&format!("{at}.members"), &b.members)?;
        if b.members.is_empty() {
            return reject(format!("{at}.members"), "a bond needs at least one member");
        }
        let mut members = Vec::new();
        for (j, member) in b.members.iter().enumerate() {
            let field = format!("{at}.members[{j}]");
            let m = wit_match(&field, member)?;
            match resolve(&field, &m)? {
                Some(name) if links.iter().any(|l| l.name == name) => members.push(name),
                _ => return reject(field, format!("no link matches {m}")),
            }
        }
        let a = addressing(&format!("{at}.addressing"), &b.addressing, &mut routes)?;
        let xmit_hash_policy = match &b.transmit_hash_policy {
            Some(p) => Some(hash_policy(&format!("{at}.transmit-hash-policy"), p)?),
            None => None,
        };
        for member in &members {
            // A member's own addressing would fight the bond's.
            if let Some(existing) = out.links.iter_mut().find(|l| l.name == *member) {
                existing.addressing = Some(Addressing::default());
            } else {
                out.links.push(LinkLayer {
                    name: member.clone(),
                    mtu: None,
                    kind: None,
                    addressing: Some(Addressing::default()),
                });
            }
        }
        out.links.push(LinkLayer {
            name: b.name.clone(),
            mtu: b.addressing.mtu,
            kind: Some(LinkKind::Bond(BondPlan {
                mode: b.mode.into(),
                members,
                miimon: b.miimon,
                updelay: b.updelay,
                downdelay: b.downdelay,
                lacp_rate_fast: b.lacp_rate_fast,
                xmit_hash_policy,
            })),
            addressing: Some(a),
        });
    }
    for (i, v) in plan.vlans.iter().enumerate() {
        let at = format!("vlans[{i}]");
        link_name(&format!("{at}.name"), &v.name)?;
        claim(&format!("{at}.name"), &v.name)?;
        if !(1..=4094).contains(&v.id) {
            return reject(format!("{at}.id"), format!("{} is outside 1..=4094", v.id));
        }
        let field = format!("{at}.parent");
        let m = wit_match(&field, &v.parent)?;
        let parent = match resolve(&field, &m)? {
            Some(name) if links.iter().any(|l| l.name == name) || plan.bonds.iter().any(|b| b.name == name) => name,
            _ => return reject(field, format!("no link matches {m}")),
        };
        let a = addressing(&format!("{at}.addressing"), &v.addressing, &mut routes)?;
        out.links.push(LinkLayer {
            name: v.name.clone(),
            mtu: v.addressing.mtu,
            kind: Some(LinkKind::Vlan(VlanPlan { parent, id: v.id })),
            addressing: Some(a),
        });
    }
    for (i, n) in plan.nameservers.iter().enumerate() {
        match n.parse::<IpAddr>() {
            Ok(ip) => out.resolvers.push(ip),
            Err(_) => return reject(format!("nameservers[{i}]"), format!("{n:?} is not an IP address")),
        }
    }
    for (i, s) in plan.search.iter().enumerate() {
        let at = format!("search[{i}]");
        text(&at, s)?;
        if s.parse::<bronze_config::Hostname>().is_err() {
            return reject(at, format!("{s:?} is not a domain name"));
        }
        out.search.push(s.clone());
    }
    for (i, t) in plan.time_servers.iter().enumerate() {
        let at = format!("time-servers[{i}]");
        text(&at, t)?;
        if t.parse::<IpAddr>().is_err() && t.parse::<bronze_config::Hostname>().is_err() {
            return reject(at, format!("{t:?} is neither an IP address nor a host name"));
        }
        out.time_servers.push(t.clone());
    }
    if let Some(h) = &plan.hostname {
        text("hostname", h)?;
        if h.parse::<bronze_config::Hostname>().is_err() {
            return reject("hostname", format!("{h:?} is not a host name"));
        }
        out.hostname = Some(h.clone());
    }
    // The layer on its own must be a valid network (gateways reachable,
    // no route twice), so a bad plan is refused as the plan's fault.
    let alone = super::layers::Layers { platform: out.clone(), ..Default::default() };
    if let Err(e) = super::layers::merge(&alone) {
        return reject("plan", e.to_string());
    }
    Ok(out)
}

/// The links the API is reached through: with a wildcard listener, the
/// links that hold a default route in the live spec (the way an operator
/// reaches the node from elsewhere) plus those holding an address an API
/// client connected to; with a specific listen address, the link holding
/// it.
pub fn api_links(live: &NetworkSpecSpec, listen: Option<IpAddr>, client_local: &[IpAddr]) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let holds = |ip: IpAddr| {
        live.addresses.iter().filter(move |a| a.address.addr() == ip).map(|a| a.link.clone()).collect::<Vec<_>>()
    };
    match listen {
        Some(ip) if !ip.is_unspecified() => out.extend(holds(ip)),
        _ => {
            out.extend(
                live.routes.iter().filter(|r| r.route.destination.prefix_len() == 0).map(|r| r.route.link.clone()),
            );
        }
    }
    for ip in client_local {
        out.extend(holds(*ip));
    }
    out
}

/// Refuses a candidate spec that changes what an API link has (addresses,
/// routes, MTU, DHCP, up), unless the operator allowed it.
pub fn check_api_links(
    live: &NetworkSpecSpec,
    candidate: &NetworkSpecSpec,
    api_links: &BTreeSet<String>,
) -> Result<(), PlanRejection> {
    for link in api_links {
        let (before, after) = (live.link_view(link), candidate.link_view(link));
        if before != after {
            let mut what = Vec::new();
            if before.addresses != after.addresses {
                what.push("addresses");
            }
            if before.routes != after.routes {
                what.push("routes");
            }
            if before.mtu != after.mtu {
                what.push("MTU");
            }
            if before.dhcp4 != after.dhcp4 {
                what.push("DHCP");
            }
            if before.up != after.up {
                what.push("state");
            }
            return reject(
                "plan",
                format!(
                    "it changes the {} of {link}, the link the API is reached through; set \
                     machine.network.configurator.allowApiLinkChange: true to allow that",
                    what.join(", ")
                ),
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::network::layers::{Layer, Layers, merge};

    fn link(name: &str, mac: &str) -> LinkStatusSpec {
        LinkStatusSpec {
            name: name.into(),
            link_type: "ether".into(),
            hardware_address: mac.into(),
            driver: "virtio_net".into(),
            bus_path: format!("0000:00:0{}.0", name.len()),
            ..Default::default()
        }
    }

    fn links() -> Vec<LinkStatusSpec> {
        vec![
            LinkStatusSpec { name: "lo".into(), link_type: "loopback".into(), ..Default::default() },
            link("eth0", "52:54:00:00:00:01"),
            LinkStatusSpec { bus_path: "0000:00:05.0".into(), ..link("eth1", "52:54:00:00:00:02") },
        ]
    }

    fn addressing(addresses: &[&str], routes: Vec<wit::Route>) -> wit::Addressing {
        wit::Addressing {
            dhcp4: false,
            dhcp6: false,
            dhcp_route_metric: None,
            addresses: addresses.iter().map(|a| a.to_string()).collect(),
            routes,
            mtu: None,
        }
    }

    fn route(to: &str, via: Option<&str>) -> wit::Route {
        wit::Route { to: to.into(), via: via.map(str::to_string), metric: None, on_link: false }
    }

    fn plan(ethernets: Vec<wit::Ethernet>) -> wit::NetworkPlan {
        wit::NetworkPlan {
            ethernets,
            bonds: vec![],
            vlans: vec![],
            nameservers: vec![],
            search: vec![],
            hostname: None,
            time_servers: vec![],
        }
    }

    fn eth(m: wit::LinkMatch, a: wit::Addressing) -> wit::Ethernet {
        wit::Ethernet { match_: m, addressing: a }
    }

    #[test]
    fn a_valid_plan_becomes_the_platform_layer() {
        let mut p = plan(vec![eth(
            wit::LinkMatch::Mac("52:54:00:00:00:01".into()),
            addressing(&["10.0.0.5/24"], vec![route("0.0.0.0/0", Some("10.0.0.1"))]),
        )]);
        p.bonds.push(wit::Bond {
            name: "bond0".into(),
            members: vec![wit::LinkMatch::Name("eth1".into())],
            mode: wit::BondMode::ActiveBackup,
            miimon: Some(100),
            updelay: None,
            downdelay: None,
            lacp_rate_fast: false,
            transmit_hash_policy: Some("layer2+3".into()),
            addressing: addressing(&["10.1.0.5/24"], vec![]),
        });
        p.vlans.push(wit::Vlan {
            name: "bond0.7".into(),
            id: 7,
            parent: wit::LinkMatch::Name("bond0".into()),
            addressing: wit::Addressing { dhcp4: true, ..addressing(&[], vec![]) },
        });
        p.nameservers = vec!["10.0.0.53".into()];
        p.hostname = Some("node-1".into());
        let layer = plan_layer(&p, &links()).unwrap();
        let spec = merge(&Layers { platform: layer, ..Default::default() }).unwrap();
        let names: Vec<&str> = spec.links.iter().map(|l| l.name.as_str()).collect();
        assert_eq!(names, ["bond0", "bond0.7", "eth0", "eth1"]);
        assert!(spec.links.iter().all(|l| l.layer == Layer::Platform));
        assert_eq!(spec.dhcp_links().len(), 1);
        assert_eq!(spec.hostname.unwrap().value, "node-1");
    }

    /// Each bad plan is refused with the field named.
    #[test]
    fn invalid_plans_name_the_field() {
        let ok = || addressing(&["10.0.0.5/24"], vec![]);
        let cases: Vec<(wit::NetworkPlan, &str)> = vec![
            (plan(vec![eth(wit::LinkMatch::Name("a-name-of-16-chr".into()), ok())]), "ethernets[0].match: link name"),
            (plan(vec![eth(wit::LinkMatch::Mac("52:54".into()), ok())]), "ethernets[0].match: \"52:54\" is not a MAC"),
            (
                plan(vec![eth(wit::LinkMatch::Name("eth0".into()), addressing(&["10.0.0.300/24"], vec![]))]),
                "ethernets[0].addressing.addresses[0]: \"10.0.0.300/24\" is not an address",
            ),
            (
                plan(vec![eth(
                    wit::LinkMatch::Name("eth0".into()),
                    addressing(&["10.0.0.5/24"], vec![route("0.0.0.0/0", Some("fd00::1"))]),
                )]),
                "ethernets[0].addressing.routes[0].via: fd00::1 is not of 0.0.0.0/0's IP family",
            ),
            (
                plan(vec![eth(
                    wit::LinkMatch::Name("eth0".into()),
                    addressing(&["10.0.0.5/24"], vec![route("0.0.0.0/0", Some("10.9.9.1"))]),
                )]),
                "plan: interface eth0: gateway 10.9.9.1 of route 0.0.0.0/0 is unreachable",
            ),
            (
                plan(vec![eth(wit::LinkMatch::Name("eth0".into()), wit::Addressing { mtu: Some(10), ..ok() })]),
                "ethernets[0].addressing.mtu: 10 is outside 68..=65535",
            ),
            (
                plan(vec![
                    eth(wit::LinkMatch::Name("eth0".into()), ok()),
                    eth(wit::LinkMatch::Name("eth0".into()), ok()),
                ]),
                "ethernets[1].match: link \"eth0\" is configured more than once",
            ),
        ];
        for (p, want) in cases {
            let err = plan_layer(&p, &links()).unwrap_err().to_string();
            assert!(err.starts_with(want), "{err}\nwant: {want}");
        }
        let mut p = plan(vec![]);
        p.bonds.push(wit::Bond {
            name: "bond0".into(),
            members: vec![wit::LinkMatch::Name("eth1".into())],
            mode: wit::BondMode::Lacp,
            miimon: None,
            updelay: None,
            downdelay: None,
            lacp_rate_fast: true,
            transmit_hash_policy: Some("layer5".into()),
            addressing: ok(),
        });
        assert_eq!(
            plan_layer(&p, &links()).unwrap_err().to_string(),
            "bonds[0].transmit-hash-policy: \"layer5\" is not a transmit hash policy; expected layer2, layer2+3, layer3+4, encap2+3 or encap3+4"
        );
        p.bonds[0].transmit_hash_policy = Some("layer3+4".into());
        let layer = plan_layer(&p, &links()).unwrap();
        let bond = layer.links.iter().find_map(|l| match &l.kind {
            Some(LinkKind::Bond(b)) => Some(b.clone()),
            _ => None,
        });
        let bond = bond.expect("a bond");
        assert_eq!((bond.mode, bond.xmit_hash_policy), (bronze_config::BondMode::Lacp, Some(XmitHashPolicy::Layer34)));
    }

    #[test]
    fn hostile_sizes_are_refused() {
        let routes: Vec<wit::Route> =
            (0..10_000).map(|i| route(&format!("10.{}.{}.0/24", i / 256, i % 256), None)).collect();
        let p = plan(vec![eth(wit::LinkMatch::Name("eth0".into()), addressing(&["10.0.0.5/24"], routes))]);
        assert_eq!(
            plan_layer(&p, &links()).unwrap_err().to_string(),
            "ethernets[0].addressing.routes: 10000 entries; at most 1000 are allowed"
        );
        let mut p = plan(vec![]);
        p.hostname = Some("a".repeat(300));
        assert_eq!(plan_layer(&p, &links()).unwrap_err().to_string(), "hostname: 300 bytes; at most 253 are allowed");
        let p = plan((0..1001).map(|_| eth(wit::LinkMatch::Name("eth0".into()), addressing(&[], vec![]))).collect());
        assert_eq!(plan_layer(&p, &links()).unwrap_err().field, "ethernets");
    }

    #[test]
    fn a_plan_may_not_change_the_api_link() {
        let live_layers = Layers {
            cmdline: LayerSpec {
                links: vec![LinkLayer {
                    name: "eth0".into(),
                    mtu: None,
                    kind: None,
                    addressing: Some(Addressing {
                        addresses: vec!["10.0.0.5/24".parse().unwrap()],
                        routes: vec![RouteLayer {
                            destination: "0.0.0.0/0".parse().unwrap(),
                            gateway: Some("10.0.0.1".parse().unwrap()),
                            metric: None,
                            on_link: false,
                        }],
                        dhcp4: None,
                    }),
                }],
                ..Default::default()
            },
            ..Default::default()
        };
        let live = merge(&live_layers).unwrap();
        let api = api_links(&live, None, &[]);
        assert_eq!(api.iter().collect::<Vec<_>>(), ["eth0"]);
        assert_eq!(api_links(&live, Some("10.0.0.5".parse().unwrap()), &[]).len(), 1);

        let cut = plan(vec![eth(wit::LinkMatch::Name("eth0".into()), addressing(&["10.0.0.99/24"], vec![]))]);
        let candidate =
            merge(&Layers { platform: plan_layer(&cut, &links()).unwrap(), ..live_layers.clone() }).unwrap();
        let err = check_api_links(&live, &candidate, &api).unwrap_err().to_string();
        assert!(err.contains("changes the addresses, routes of eth0, the link the API is reached through"), "{err}");

        // A plan that only touches another link passes.
        let other = plan(vec![eth(wit::LinkMatch::Name("eth1".into()), addressing(&["10.1.0.5/24"], vec![]))]);
        let candidate = merge(&Layers { platform: plan_layer(&other, &links()).unwrap(), ..live_layers }).unwrap();
        check_api_links(&live, &candidate, &api).unwrap();
    }

    #[test]
    fn metadata_interfaces_match_by_mac() {
        let m = PlatformMetadata {
            platform: "test".into(),
            interfaces: vec![crate::platform::metadata::Interface {
                mac: Some("52:54:00:00:00:02".into()),
                addresses: vec!["203.0.113.7/32".into()],
                routes: vec![
                    crate::platform::metadata::Route { to: "172.31.1.1/32".into(), ..Default::default() },
                    crate::platform::metadata::Route {
                        to: "0.0.0.0/0".into(),
                        gateway: Some("172.31.1.1".into()),
                        ..Default::default()
                    },
                ],
                dhcp: vec![crate::platform::metadata::Dhcp {
                    family: "ipv4".into(),
                    route_metric: Some(100),
                    skip_hostname: false,
                }],
                ..Default::default()
            }],
            nameservers: vec!["10.0.0.2".into()],
            ..Default::default()
        };
        let layer = metadata_layer(&m, &links());
        assert_eq!(layer.links[0].name, "eth1");
        let spec = merge(&Layers { platform: layer, ..Default::default() }).unwrap();
        assert_eq!(spec.routes.len(), 2);
        assert_eq!(spec.dhcp_links()[0].1.route_metric, 100);
        assert_eq!(spec.resolvers.unwrap().layer, Layer::Platform);
    }
}
