//! OpenStack `network_data.json` (metadata service or config drive) into
//! the same [`NetworkSettings`] the cloud-init parser gives, so one
//! translation makes the plan.
//!
//! - `links`: `phy`, `vif`, `ovs`, `tap` and the other physical types are
//!   matched by `ethernet_mac_address`; `bond` (`bond_links`, `bond_mode`,
//!   `bond_miimon`, `bond_xmit_hash_policy`) becomes `bond0`, `bond1`, ...
//!   in document order; `vlan` (`vlan_link`, `vlan_id`) becomes
//!   `<parent>.<id>`; `bridge` is kept as a bridge (skipped by the plan,
//!   but usable as a bond member through its MAC, as Talos does).
//! - `networks`: `ipv4`/`ipv6` static (`ip_address` with `netmask` or a
//!   `/prefix`; `gateway` as a default route; `routes`), `ipv4_dhcp`,
//!   `ipv6_dhcp`/`ipv6_dhcpv6-stateful`/`ipv6_dhcpv6-stateless` (DHCPv6,
//!   plus the address when one is given), `ipv6_slaac` (the address when
//!   given; SLAAC itself is the kernel's); `dns_nameservers` and `dns`
//!   services, per network and top level.
//!
//! Errors name the field: `links[3].bond_mode: "fastest" is not a bonding
//! mode ...`, `networks[2].netmask: netmask 255.0.255.0 is not contiguous`.

use crate::cloudinit::{
    self, BondParams, LinkInfo, LinkKind, MAX_ENTRIES, MAX_ITEMS, NetworkSettings, cidr, cidr_host, ip, normalize_mac,
};
use bronze_plugin_sdk::{DhcpOperator, IpFamily, PlatformInterface, PlatformRoute};
use serde_json::Value;

/// Link types that are an existing NIC (cloud-init's list).
const PHYSICAL: [&str; 14] = [
    "phy",
    "vif",
    "ovs",
    "tap",
    "dvs",
    "hw_veb",
    "hyperv",
    "vhostuser",
    "vrouter",
    "bgpovs",
    "cascading",
    "ethernet",
    "macvtap",
    "",
];

/// Whether `text` is a JSON object with `links` or `networks`.
pub fn looks_like(text: &str) -> bool {
    text.trim_start().starts_with('{')
        && serde_json::from_str::<Value>(text).is_ok_and(|v| v.get("links").is_some() || v.get("networks").is_some())
}

/// Parses a `network_data.json` document; `link_of` gives the current
/// link's name for a MAC (to name a VLAN on a NIC `<link>.<id>`).
pub fn parse(text: &str, link_of: &dyn Fn(&str) -> Option<String>) -> Result<NetworkSettings, String> {
    if text.len() > cloudinit::MAX_DOCUMENT {
        return Err(format!("network_data.json is {} bytes, more than {}", text.len(), cloudinit::MAX_DOCUMENT));
    }
    let root: Value = serde_json::from_str(text).map_err(|e| format!("network_data.json is not JSON: {e}"))?;
    if !root.is_object() {
        return Err("network_data.json: expected an object with `links`, `networks` and `services`".into());
    }
    let links = list(&root, "links", "links", MAX_ENTRIES)?;
    let networks = list(&root, "networks", "networks", MAX_ITEMS)?;

    // Names: bonds bond0.., then VLANs <parent>.<id> (a parent may follow).
    let mut ids: Vec<String> = Vec::new();
    let mut kinds: Vec<String> = Vec::new();
    for (i, link) in links.iter().enumerate() {
        let at = format!("links[{i}]");
        let id = text_of(link.get("id"), &format!("{at}.id"))?.ok_or_else(|| format!("{at}: a link without `id`"))?;
        if ids.contains(&id) {
            return Err(format!("{at}.id: {id:?} is used twice"));
        }
        ids.push(id);
        kinds.push(text_of(link.get("type"), &format!("{at}.type"))?.unwrap_or_default());
    }
    let mut bonds = 0;
    let mut names: Vec<Option<String>> = vec![None; links.len()];
    for (i, kind) in kinds.iter().enumerate() {
        if kind == "bond" {
            names[i] = Some(format!("bond{bonds}"));
            bonds += 1;
        }
    }

    let mut interfaces = Vec::new();
    let mut infos = Vec::new();
    for (i, link) in links.iter().enumerate() {
        let at = format!("links[{i}]");
        let kind = kinds[i].as_str();
        let mac = text_of(link.get("ethernet_mac_address"), &format!("{at}.ethernet_mac_address"))?
            .map(|m| normalize_mac(&format!("{at}.ethernet_mac_address"), &m))
            .transpose()?;
        let (mut iface, info_kind) = match kind {
            "bond" => {
                let members = strings(link.get("bond_links"), &format!("{at}.bond_links"))?;
                let mode = text_of(link.get("bond_mode"), &format!("{at}.bond_mode"))?
                    .map(|m| cloudinit::bond_mode(&format!("{at}.bond_mode"), &m))
                    .transpose()?;
                let miimon = number(link.get("bond_miimon"), &format!("{at}.bond_miimon"))?;
                let hash = text_of(link.get("bond_xmit_hash_policy"), &format!("{at}.bond_xmit_hash_policy"))?
                    .map(|h| hash_policy(&format!("{at}.bond_xmit_hash_policy"), &h))
                    .transpose()?;
                for (k, m) in members.iter().enumerate() {
                    if !ids.contains(m) {
                        return Err(format!("{at}.bond_links[{k}]: {m:?} is not the id of a link"));
                    }
                }
                let params = BondParams { mode, miimon, transmit_hash_policy: hash, ..BondParams::default() };
                (named(names[i].clone().unwrap_or_default()), LinkKind::Bond { members, params })
            }
            "vlan" => {
                let parent = text_of(link.get("vlan_link"), &format!("{at}.vlan_link"))?
                    .ok_or_else(|| format!("{at}: a vlan link without `vlan_link`"))?;
                let id = number(link.get("vlan_id"), &format!("{at}.vlan_id"))?
                    .ok_or_else(|| format!("{at}: a vlan link without `vlan_id`"))?;
                if !(1..=4094).contains(&id) {
                    return Err(format!("{at}.vlan_id: {id} is not a VLAN id (1 to 4094)"));
                }
                let p = ids
                    .iter()
                    .position(|x| *x == parent)
                    .ok_or_else(|| format!("{at}.vlan_link: {parent:?} is not the id of a link"))?;
                // `<parent>.<id>` with the parent's name (a bond's, or the
                // current link's with the parent's MAC), else `vlan<id>`.
                let parent_mac =
                    text_of(links[p].get("ethernet_mac_address"), "")?.and_then(|m| normalize_mac("", &m).ok());
                let name = names[p]
                    .clone()
                    .or_else(|| parent_mac.as_deref().and_then(link_of))
                    .map(|n| format!("{n}.{id}"))
                    .filter(|n| n.len() <= 15)
                    .unwrap_or_else(|| format!("vlan{id}"));
                (named(name), LinkKind::Vlan { id: id as u16, link: parent })
            }
            "bridge" => {
                let mut iface = named(ids[i].clone());
                iface.mac = mac.clone();
                (iface, LinkKind::Bridge { members: Vec::new() })
            }
            k if PHYSICAL.contains(&k) => {
                let mac = mac.ok_or_else(|| format!("{at}: a {k:?} link without ethernet_mac_address"))?;
                (
                    PlatformInterface::with_mac(mac),
                    LinkKind::Physical { match_name: None, driver: None, set_name: None },
                )
            }
            other => return Err(format!("{at}.type: {other:?} is not a link type OpenStack defines")),
        };
        iface.mtu = match number(link.get("mtu"), &format!("{at}.mtu"))? {
            None => None,
            Some(m) if (68..=65535).contains(&m) => Some(m),
            Some(m) => return Err(format!("{at}.mtu: {m} is not an MTU (68 to 65535)")),
        };
        interfaces.push(iface);
        infos.push(LinkInfo { id: ids[i].clone(), kind: info_kind });
    }

    let mut dns: Vec<String> = Vec::new();
    let mut add_dns = |v: &str, at: &str| -> Result<(), String> {
        let addr = ip(at, v)?.to_string();
        if !dns.contains(&addr) {
            dns.push(addr);
        }
        Ok(())
    };
    services(&root, "services", &mut add_dns)?;
    for (i, net) in networks.iter().enumerate() {
        let at = format!("networks[{i}]");
        let link = text_of(net.get("link"), &format!("{at}.link"))?
            .ok_or_else(|| format!("{at}: a network without `link`"))?;
        let l = ids
            .iter()
            .position(|x| *x == link)
            .ok_or_else(|| format!("{at}.link: {link:?} is not the id of a link"))?;
        let kind = text_of(net.get("type"), &format!("{at}.type"))?
            .ok_or_else(|| format!("{at}: a network without `type`"))?;
        let iface = &mut interfaces[l];
        match kind.as_str() {
            "ipv4_dhcp" => dhcp(iface, IpFamily::Ipv4),
            "ipv6_dhcp" | "ipv6_dhcpv6-stateful" | "ipv6_dhcpv6-stateless" => {
                dhcp(iface, IpFamily::Ipv6);
                address(iface, net, &at, false, false)?;
            }
            "ipv6_slaac" => address(iface, net, &at, false, false)?,
            "ipv4" => address(iface, net, &at, true, true)?,
            "ipv6" => address(iface, net, &at, true, false)?,
            other => return Err(format!("{at}.type: {other:?} is not a network type OpenStack defines")),
        }
        for (k, route) in list(net, "routes", &format!("{at}.routes"), MAX_ITEMS)?.iter().enumerate() {
            let r_at = format!("{at}.routes[{k}]");
            let network = text_of(route.get("network"), &format!("{r_at}.network"))?
                .ok_or_else(|| format!("{r_at}: a route without `network`"))?;
            let to = match network.split_once('/') {
                Some((a, p)) => cidr(&format!("{r_at}.network"), a, p)?,
                None => {
                    let mask = text_of(route.get("netmask"), &format!("{r_at}.netmask"))?
                        .ok_or_else(|| format!("{r_at}: a route without `netmask`"))?;
                    cidr(&format!("{r_at}.netmask"), &network, &mask)?
                }
            };
            let gateway = text_of(route.get("gateway"), &format!("{r_at}.gateway"))?
                .map(|g| ip(&format!("{r_at}.gateway"), &g))
                .transpose()?;
            if gateway.is_some_and(|g| g.is_ipv6() != to.contains(':')) {
                return Err(format!("{r_at}.gateway: not of the family of {to}"));
            }
            iface.routes.push(PlatformRoute {
                to,
                gateway: gateway.map(|g| g.to_string()),
                on_link: false,
                metric: None,
            });
        }
        for (k, server) in strings(net.get("dns_nameservers"), &format!("{at}.dns_nameservers"))?.iter().enumerate() {
            add_dns(server, &format!("{at}.dns_nameservers[{k}]"))?;
        }
        services(net, &format!("{at}.services"), &mut add_dns)?;
        if iface.addresses.len() > MAX_ITEMS || iface.routes.len() > MAX_ITEMS {
            return Err(format!("{at}: more than {MAX_ITEMS} addresses or routes on link {link:?}"));
        }
    }
    Ok(NetworkSettings { version: 0, interfaces, nameservers: dns, search_domains: Vec::new(), links: infos })
}

/// A network's `ip_address` (with `netmask` or a `/prefix`) and its
/// `gateway` as a default route.
fn address(iface: &mut PlatformInterface, net: &Value, at: &str, required: bool, v4: bool) -> Result<(), String> {
    let Some(address) = text_of(net.get("ip_address"), &format!("{at}.ip_address"))? else {
        return if required { Err(format!("{at}: a static network without `ip_address`")) } else { Ok(()) };
    };
    let netmask = text_of(net.get("netmask"), &format!("{at}.netmask"))?;
    let cidr = match (address.split_once('/'), netmask) {
        (Some((a, p)), _) => cidr_host(&format!("{at}.ip_address"), a, p)?,
        (None, Some(mask)) => cidr_host(&format!("{at}.netmask"), &address, &mask)?,
        (None, None) => match ip(&format!("{at}.ip_address"), &address)? {
            addr @ std::net::IpAddr::V6(_) => format!("{addr}/64"),
            addr => return Err(format!("{at}: IPv4 address {addr} without a netmask")),
        },
    };
    if cidr.contains(':') == v4 && required {
        return Err(format!("{at}.ip_address: {address:?} is not of the network's family"));
    }
    if !iface.addresses.contains(&cidr) {
        iface.addresses.push(cidr.clone());
    }
    if let Some(gw) = text_of(net.get("gateway"), &format!("{at}.gateway"))? {
        let gw = ip(&format!("{at}.gateway"), &gw)?;
        if gw.is_ipv6() != cidr.contains(':') {
            return Err(format!("{at}.gateway: {gw} is not of the address's family"));
        }
        iface.routes.push(PlatformRoute::default_via(gw.to_string()));
    }
    Ok(())
}

fn dhcp(iface: &mut PlatformInterface, family: IpFamily) {
    if !iface.dhcp.iter().any(|d| d.family == family) {
        iface.dhcp.push(DhcpOperator { family, route_metric: None, skip_hostname: true });
    }
}

/// `dns` entries of a `services` list.
fn services(v: &Value, at: &str, add: &mut dyn FnMut(&str, &str) -> Result<(), String>) -> Result<(), String> {
    let key = at.rsplit('.').next().unwrap_or(at);
    for (k, s) in list(v, key, at, MAX_ITEMS)?.iter().enumerate() {
        let s_at = format!("{at}[{k}]");
        if text_of(s.get("type"), &format!("{s_at}.type"))?.as_deref() == Some("dns") {
            let addr = text_of(s.get("address"), &format!("{s_at}.address"))?
                .ok_or_else(|| format!("{s_at}: a dns service without `address`"))?;
            add(&addr, &format!("{s_at}.address"))?;
        }
    }
    Ok(())
}

fn hash_policy(at: &str, text: &str) -> Result<String, String> {
    let t = text.trim().to_ascii_lowercase();
    match t.as_str() {
        "layer2" | "layer2+3" | "layer3+4" | "encap2+3" | "encap3+4" | "vlan+srcmac" => Ok(t),
        _ => Err(format!("{at}: {text:?} is not a transmit hash policy")),
    }
}

fn named(name: String) -> PlatformInterface {
    PlatformInterface {
        mac: None,
        name: Some(name),
        addresses: Vec::new(),
        routes: Vec::new(),
        mtu: None,
        dhcp: Vec::new(),
    }
}

/// `v[key]` as a list of at most `max` items (absent or null: empty).
fn list<'a>(v: &'a Value, key: &str, at: &str, max: usize) -> Result<&'a [Value], String> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(&[]),
        Some(Value::Array(items)) if items.len() <= max => Ok(items),
        Some(Value::Array(items)) => Err(format!("{at}: {} items, more than {max}", items.len())),
        Some(_) => Err(format!("{at}: expected a list")),
    }
}

/// A string (or number) value, trimmed; null is absent.
fn text_of(v: Option<&Value>, at: &str) -> Result<Option<String>, String> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.len() <= 4096 => Ok(Some(s.trim().to_string())),
        Some(Value::String(s)) => Err(format!("{at}: {} bytes, more than 4096", s.len())),
        Some(Value::Number(n)) => Ok(Some(n.to_string())),
        Some(_) => Err(format!("{at}: expected a string")),
    }
}

fn number(v: Option<&Value>, at: &str) -> Result<Option<u32>, String> {
    match text_of(v, at)? {
        None => Ok(None),
        Some(s) => s.parse().map(Some).map_err(|_| format!("{at}: {s:?} is not a whole number")),
    }
}

fn strings(v: Option<&Value>, at: &str) -> Result<Vec<String>, String> {
    match v {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) if items.len() <= MAX_ITEMS => items
            .iter()
            .enumerate()
            .map(|(k, item)| text_of(Some(item), &format!("{at}[{k}]"))?.ok_or_else(|| format!("{at}[{k}]: empty")))
            .collect(),
        Some(Value::Array(items)) => Err(format!("{at}: {} items, more than {MAX_ITEMS}", items.len())),
        Some(_) => Err(format!("{at}: expected a list")),
    }
}
