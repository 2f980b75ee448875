//! [`NetworkSettings`] (what a document says) into a [`NetworkPlan`].
//!
//! - A physical entry with a MAC is matched by the current link's name
//!   when a link has that MAC (a physical-looking name wins over a bond
//!   sharing it), else by the MAC; without a MAC, by v2's glob-free
//!   `match: name`, then `match: driver`, then the entry's own name. v2
//!   `set-name` is not applied (the host does not rename links): the entry
//!   is still matched as above, and bonds and VLANs may name it by its
//!   set-name as well as by its key.
//! - A bond's members and a VLAN's parent are the document's names of
//!   other entries, resolved to those entries' matches (a bond or VLAN
//!   parent by its name); a name the document does not define is taken as
//!   a current link's name.
//! - Bridges are skipped with a note: Bronze does not create bridges. A
//!   bridge listed as a bond member (OpenStack does this) is the link with
//!   the bridge's MAC.

use crate::cloudinit::{LinkKind, NetworkSettings, link_for_mac};
use bronze_plugin_sdk::{
    Addressing, Bond, BondMode, Ethernet, IpFamily, LinkMatch, NetworkPlan, PlatformInterface, Route, Vlan,
};
use std::collections::BTreeMap;

/// Longest link name the kernel accepts.
const IFNAMSIZ: usize = 15;

/// The plan for `settings` on a node with `links` (name, lower-case MAC),
/// and notes on what was skipped.
pub fn plan(settings: &NetworkSettings, links: &[(String, String)]) -> Result<(NetworkPlan, Vec<String>), String> {
    if settings.links.len() != settings.interfaces.len() {
        return Err("internal: link kinds do not match interfaces".into());
    }
    let mut notes = Vec::new();
    // The match of every entry, by the names the document uses for it.
    let mut by_id: BTreeMap<&str, (LinkMatch, &LinkKind)> = BTreeMap::new();
    for (iface, info) in settings.interfaces.iter().zip(&settings.links) {
        let matched = match &info.kind {
            LinkKind::Physical { match_name, driver, .. } => {
                physical_match(iface, &info.id, match_name.as_deref(), driver.as_deref(), links)?
            }
            LinkKind::Bridge { .. } => match &iface.mac {
                Some(mac) => mac_match(mac, links),
                None => LinkMatch::Name(info.id.clone()),
            },
            LinkKind::Bond { .. } | LinkKind::Vlan { .. } => LinkMatch::Name(logical_name(iface, &info.id)?),
        };
        by_id.insert(&info.id, (matched.clone(), &info.kind));
        if let LinkKind::Physical { set_name: Some(alias), .. } = &info.kind {
            by_id.entry(alias).or_insert((matched, &info.kind));
        }
    }
    let lookup = |id: &str, what: &str| -> Result<(LinkMatch, Option<&LinkKind>), String> {
        match by_id.get(id) {
            Some((m, kind)) => Ok((m.clone(), Some(*kind))),
            None if valid_name(id) => Ok((LinkMatch::Name(id.to_string()), None)),
            None => Err(format!("{what}: {id:?} is neither an entry of the document nor a link name")),
        }
    };

    let mut plan = NetworkPlan::new();
    for (iface, info) in settings.interfaces.iter().zip(&settings.links) {
        let addressing = addressing(iface);
        let (matched, _) = &by_id[info.id.as_str()];
        match &info.kind {
            LinkKind::Physical { .. } => plan.ethernets.push(Ethernet { match_: matched.clone(), addressing }),
            LinkKind::Bridge { members } => {
                let mut note =
                    format!("bridge {:?} (ports {members:?}) skipped: Bronze does not create bridges", info.id);
                if has_config(&addressing) {
                    note.push_str("; its addresses, routes and DHCP are not applied");
                }
                notes.push(note);
            }
            LinkKind::Bond { members, params } => {
                let name = name_of(matched);
                let mut matches = Vec::new();
                for member in members {
                    let what = format!("bond {name} member");
                    match lookup(member, &what)? {
                        (_, Some(LinkKind::Bond { .. } | LinkKind::Vlan { .. })) => {
                            return Err(format!("{what} {member:?} is a bond or VLAN, not a link to enslave"));
                        }
                        (m, _) => matches.push(m),
                    }
                }
                plan.bonds.push(Bond {
                    name,
                    members: matches,
                    mode: params.mode.as_deref().map_or(BondMode::BalanceRr, bond_mode),
                    miimon: params.miimon,
                    updelay: params.updelay,
                    downdelay: params.downdelay,
                    lacp_rate_fast: params.lacp_rate_fast.unwrap_or(false),
                    transmit_hash_policy: params.transmit_hash_policy.clone(),
                    addressing,
                });
            }
            LinkKind::Vlan { id, link } => {
                let name = name_of(matched);
                if *id == 0 {
                    return Err(format!("VLAN {name}: id 0 is not a VLAN id (1 to 4094)"));
                }
                let parent = match lookup(link, &format!("VLAN {name} link"))? {
                    (_, Some(LinkKind::Bridge { .. })) => {
                        return Err(format!("VLAN {name} link: {link:?} is a bridge, which Bronze does not create"));
                    }
                    (m, _) => m,
                };
                plan.vlans.push(Vlan { name, id: *id, parent, addressing });
            }
        }
    }
    plan.nameservers = settings.nameservers.clone();
    plan.search = settings.search_domains.clone();
    Ok((plan, notes))
}

/// Which link a physical entry is.
fn physical_match(
    iface: &PlatformInterface,
    id: &str,
    match_name: Option<&str>,
    driver: Option<&str>,
    links: &[(String, String)],
) -> Result<LinkMatch, String> {
    let glob = |n: &str| n.contains(['*', '?', '[']);
    if let Some(mac) = &iface.mac {
        return Ok(mac_match(mac, links));
    }
    if let Some(name) = match_name.filter(|n| !glob(n)) {
        return checked_name(name, &format!("ethernet {id:?} match.name"));
    }
    if let Some(driver) = driver {
        if driver.is_empty() || driver.len() > 64 || glob(driver) || driver.chars().any(|c| c.is_control()) {
            return Err(format!(
                "ethernet {id:?} match.driver: {driver:?} is not a driver name (globs are not supported)"
            ));
        }
        return Ok(LinkMatch::Driver(driver.to_string()));
    }
    if let Some(name) = match_name {
        return Err(format!(
            "ethernet {id:?} match.name: {name:?} is a glob, which Bronze does not match: match by macaddress, driver or a name"
        ));
    }
    checked_name(id, &format!("ethernet {id:?}"))
}

fn mac_match(mac: &str, links: &[(String, String)]) -> LinkMatch {
    match link_for_mac(links, mac) {
        Some(name) => LinkMatch::Name(name),
        None => LinkMatch::Mac(mac.to_string()),
    }
}

/// A bond's or VLAN's name: the document's (`set-name` for v2 when given).
fn logical_name(iface: &PlatformInterface, id: &str) -> Result<String, String> {
    let name = iface.name.as_deref().unwrap_or(id);
    match checked_name(name, &format!("link {id:?}"))? {
        LinkMatch::Name(n) => Ok(n),
        _ => unreachable!("checked_name gives a name"),
    }
}

fn checked_name(name: &str, what: &str) -> Result<LinkMatch, String> {
    if valid_name(name) {
        Ok(LinkMatch::Name(name.to_string()))
    } else {
        Err(format!("{what}: {name:?} is not a link name (1 to {IFNAMSIZ} bytes, no '/', ':' or whitespace)"))
    }
}

/// What the kernel accepts as a link name.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= IFNAMSIZ
        && name != "."
        && name != ".."
        && !name.chars().any(|c| c == '/' || c == ':' || c.is_whitespace() || c.is_control())
}

fn name_of(m: &LinkMatch) -> String {
    match m {
        LinkMatch::Name(n) | LinkMatch::Mac(n) | LinkMatch::Driver(n) | LinkMatch::BusPath(n) => n.clone(),
    }
}

fn bond_mode(name: &str) -> BondMode {
    match name {
        "active-backup" => BondMode::ActiveBackup,
        "balance-xor" => BondMode::BalanceXor,
        "broadcast" => BondMode::Broadcast,
        "802.3ad" => BondMode::Lacp,
        "balance-tlb" => BondMode::BalanceTlb,
        "balance-alb" => BondMode::BalanceAlb,
        _ => BondMode::BalanceRr,
    }
}

fn addressing(iface: &PlatformInterface) -> Addressing {
    let mut a = Addressing::new();
    for op in &iface.dhcp {
        match op.family {
            IpFamily::Ipv4 => a.dhcp4 = true,
            IpFamily::Ipv6 => a.dhcp6 = true,
        }
        a.dhcp_route_metric = a.dhcp_route_metric.or(op.route_metric);
    }
    a.addresses = iface.addresses.clone();
    a.routes = iface
        .routes
        .iter()
        .map(|r| Route { to: r.to.clone(), via: r.gateway.clone(), metric: r.metric, on_link: r.on_link })
        .collect();
    a.mtu = iface.mtu;
    a
}

fn has_config(a: &Addressing) -> bool {
    a.dhcp4 || a.dhcp6 || !a.addresses.is_empty() || !a.routes.is_empty()
}
