//! cloud-init network config, version 1 and version 2 (netplan), bare or
//! wrapped in a top-level `network:` key, turned into the platform's view
//! of the network: [`PlatformInterface`]s (addresses, routes with default
//! routes and on-link gateways, MTU, DHCP operators), resolvers and search
//! domains.
//!
//! Used by the nocloud and hetzner providers, and meant for the host's
//! network configurator too, so it is strict where it reads: every address,
//! prefix, netmask, gateway and MAC must parse (the error names the entry,
//! like `config[2].subnets[0].netmask`), a v1 entry or subnet type it does
//! not know is an error, and a document that is neither v1 nor v2 is
//! refused. Keys it does not use (`params`, `parameters`, `wakeonlan`,
//! `accept-ra`, ...) are ignored: they describe the bond or the link, not
//! addresses or routes, and the raw document is passed on whole for them.
//!
//! Links: an entry that names a MAC (`mac_address` in v1, `match:
//! macaddress` in v2) is matched to the host's link with that MAC through
//! the lookup the caller gives (the plugin's `links` fact); when no link has
//! it, or the entry has no MAC, the document's name is used (v2: `set-name`,
//! then a glob-free `match: name`, then the entry's key). Bonds, bridges and
//! VLANs are logical: they are reported by name only (their `macaddress` is
//! one to set, not one to match).
//!
//! [`NetworkSettings::links`] says what each interface is (physical, bond
//! with its members and parameters, bridge, VLAN with its id and parent),
//! by the document's own names, for the network configurator, which turns
//! a document into bonds and VLANs; the providers use only `interfaces`.
//!
//! Metrics are reported only where the document sets one: the configurator
//! picks defaults (Talos uses 1024 for IPv4 and 2048 for IPv6). A gateway is
//! `on-link` only when the document says so (v2 `on-link: true`).

use bronze_plugin_sdk::{DhcpOperator, IpFamily, NetworkConfigFormat, PlatformInterface, PlatformRoute};
use serde_yaml::Value;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Largest document accepted (the host keeps at most 256 KiB of it).
pub const MAX_DOCUMENT: usize = 256 << 10;
/// Most entries (links) a document may describe.
pub const MAX_ENTRIES: usize = 64;
/// Most items in any one list (addresses, routes, subnets, resolvers).
pub const MAX_ITEMS: usize = 256;

/// What a network config document says.
#[derive(Debug, Clone)]
pub struct NetworkSettings {
    /// 1 or 2.
    pub version: u8,
    /// One per physical, bond, bridge or VLAN entry, in document order (v2:
    /// ethernets, then bonds, bridges, VLANs).
    pub interfaces: Vec<PlatformInterface>,
    /// Resolvers of every entry, in order, without repeats.
    pub nameservers: Vec<String>,
    /// Search domains of every entry, in order, without repeats.
    pub search_domains: Vec<String>,
    /// What each of `interfaces` is, in the same order.
    pub links: Vec<LinkInfo>,
}

/// What one interface of a document is, by the document's own names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkInfo {
    /// The name other entries use for it: v1 `name`, v2 the device key.
    pub id: String,
    pub kind: LinkKind,
}

/// The kind of an interface, with what the document says about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkKind {
    /// An existing link. v2's `match` keys, besides a MAC (which is the
    /// interface's `mac`), and `set-name` (which Bronze does not apply).
    Physical { match_name: Option<String>, driver: Option<String>, set_name: Option<String> },
    /// A bond of the entries named `members` (their ids).
    Bond { members: Vec<String>, params: BondParams },
    /// A bridge of the entries named `members`.
    Bridge { members: Vec<String> },
    /// An 802.1Q VLAN `id` on the entry named `link`.
    Vlan { id: u16, link: String },
}

/// A bond's parameters as the document gives them (validated, canonical).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BondParams {
    /// The kernel's mode name: `balance-rr`, `active-backup`,
    /// `balance-xor`, `broadcast`, `802.3ad`, `balance-tlb`, `balance-alb`.
    pub mode: Option<String>,
    pub miimon: Option<u32>,
    pub updelay: Option<u32>,
    pub downdelay: Option<u32>,
    /// LACP rate: true for `fast`, false for `slow`.
    pub lacp_rate_fast: Option<bool>,
    /// `layer2`, `layer2+3`, `layer3+4`, `encap2+3`, `encap3+4` or `vlan+srcmac`.
    pub transmit_hash_policy: Option<String>,
}

/// The bonding modes, by name and by number (cloud-init accepts both).
const BOND_MODES: [&str; 7] =
    ["balance-rr", "active-backup", "balance-xor", "broadcast", "802.3ad", "balance-tlb", "balance-alb"];
const HASH_POLICIES: [&str; 6] = ["layer2", "layer2+3", "layer3+4", "encap2+3", "encap3+4", "vlan+srcmac"];

/// A bonding mode as the kernel names it (`4` and `lacp` are `802.3ad`).
pub fn bond_mode(at: &str, text: &str) -> Result<String, String> {
    let t = text.trim().to_ascii_lowercase();
    if let Ok(n) = t.parse::<usize>() {
        return BOND_MODES
            .get(n)
            .map(|m| m.to_string())
            .ok_or_else(|| format!("{at}: {text:?} is not a bonding mode (0 to 6)"));
    }
    match t.as_str() {
        "lacp" => Ok("802.3ad".into()),
        m if BOND_MODES.contains(&m) => Ok(m.to_string()),
        _ => Err(format!("{at}: {text:?} is not a bonding mode (one of {})", BOND_MODES.join(", "))),
    }
}

impl BondParams {
    /// Reads the parameters from `map` (v1 `params`, v2 `parameters`), each
    /// under the first of its `keys` present.
    fn read(map: Option<&Value>, at: &str, keys: &BondKeys) -> Result<BondParams, String> {
        let Some(map) = map.filter(|v| !v.is_null()) else { return Ok(BondParams::default()) };
        if !map.is_mapping() {
            return Err(format!("{at}: expected a mapping"));
        }
        let find = |names: &[&'static str]| names.iter().find(|k| map.get(**k).is_some()).copied();
        let text = |names: &[&'static str]| -> Result<Option<(String, String)>, String> {
            let Some(key) = find(names) else { return Ok(None) };
            let k_at = format!("{at}.{key}");
            Ok(string(map.get(key), &k_at)?.map(|v| (k_at, v)))
        };
        let millis = |names: &[&'static str]| -> Result<Option<u32>, String> {
            let Some(key) = find(names) else { return Ok(None) };
            let k_at = format!("{at}.{key}");
            number(map.get(key), &k_at)?.map(to_u32(&k_at)).transpose()
        };
        let mode = text(keys.mode)?.map(|(k_at, v)| bond_mode(&k_at, &v)).transpose()?;
        let lacp_rate_fast = match text(keys.lacp_rate)? {
            None => None,
            Some((k_at, v)) => Some(match v.to_ascii_lowercase().as_str() {
                "fast" | "1" => true,
                "slow" | "0" => false,
                _ => return Err(format!("{k_at}: {v:?} is not an LACP rate (fast or slow)")),
            }),
        };
        let transmit_hash_policy = match text(keys.hash)? {
            None => None,
            Some((k_at, v)) => {
                let v = v.to_ascii_lowercase();
                if !HASH_POLICIES.contains(&v.as_str()) {
                    return Err(format!(
                        "{k_at}: {v:?} is not a transmit hash policy (one of {})",
                        HASH_POLICIES.join(", ")
                    ));
                }
                Some(v)
            }
        };
        Ok(BondParams {
            mode,
            miimon: millis(keys.miimon)?,
            updelay: millis(keys.updelay)?,
            downdelay: millis(keys.downdelay)?,
            lacp_rate_fast,
            transmit_hash_policy,
        })
    }
}

/// Where each bond parameter is, in v1 and v2 spelling.
struct BondKeys {
    mode: &'static [&'static str],
    miimon: &'static [&'static str],
    updelay: &'static [&'static str],
    downdelay: &'static [&'static str],
    lacp_rate: &'static [&'static str],
    hash: &'static [&'static str],
}

const V1_BOND: BondKeys = BondKeys {
    mode: &["bond-mode", "mode"],
    miimon: &["bond-miimon", "miimon"],
    updelay: &["bond-updelay", "up-delay", "updelay"],
    downdelay: &["bond-downdelay", "down-delay", "downdelay"],
    lacp_rate: &["bond-lacp-rate", "lacp-rate", "lacp_rate"],
    hash: &["bond-xmit-hash-policy", "xmit-hash-policy", "xmit_hash_policy"],
};

const V2_BOND: BondKeys = BondKeys {
    mode: &["mode"],
    miimon: &["mii-monitor-interval"],
    updelay: &["up-delay"],
    downdelay: &["down-delay"],
    lacp_rate: &["lacp-rate"],
    hash: &["transmit-hash-policy"],
};

/// A list of entry names (bond members, bridge ports).
fn names(v: Option<&Value>, at: &str) -> Result<Vec<String>, String> {
    let list = strings(v, at)?;
    for (i, name) in list.iter().enumerate() {
        if name.is_empty() || name.len() > 255 || name.chars().any(|c| c.is_control()) {
            return Err(format!("{at}[{i}]: {name:?} is not an entry name"));
        }
    }
    Ok(list)
}

impl NetworkSettings {
    /// The raw document's format for `InstanceMetadata.network_config`.
    pub fn format(&self) -> NetworkConfigFormat {
        if self.version == 1 { NetworkConfigFormat::CloudInitV1 } else { NetworkConfigFormat::CloudInitV2 }
    }
}

/// A MAC → host link name lookup that reads the `links` fact once.
///
/// A bond or bridge usually carries the MAC of one of its members, so when
/// several links have the MAC, one whose name does not look logical
/// (`bond*`, `team*`, `br*`, `virbr*`, `vlan*`, or a `.` VLAN suffix) wins.
/// (The fact has no link kind; with one, this would not need names.)
pub fn host_links() -> impl Fn(&str) -> Option<String> {
    let links: Vec<(String, String)> = bronze_plugin_sdk::facts::links()
        .into_iter()
        .filter_map(|l| Some((l.name, l.mac?.to_ascii_lowercase())))
        .collect();
    move |mac: &str| link_for_mac(&links, mac)
}

/// The link of `links` (name, MAC) with `mac`, physical-looking names first.
pub fn link_for_mac(links: &[(String, String)], mac: &str) -> Option<String> {
    let logical =
        |name: &str| ["bond", "team", "br", "virbr", "vlan"].iter().any(|p| name.starts_with(p)) || name.contains('.');
    let mut found = links.iter().filter(|(_, m)| m.eq_ignore_ascii_case(mac)).map(|(n, _)| n.as_str());
    let first = found.next()?;
    if !logical(first) {
        return Some(first.to_string());
    }
    Some(found.find(|n| !logical(n)).unwrap_or(first).to_string())
}

/// A lookup that knows no link (every entry keeps the document's name).
pub fn no_links(_: &str) -> Option<String> {
    None
}

/// Parses a cloud-init network config document (v1 or v2, bare or under
/// `network:`). `link_of` maps a lower-case MAC to the host's link name.
pub fn parse(document: &str, link_of: &dyn Fn(&str) -> Option<String>) -> Result<NetworkSettings, String> {
    if document.len() > MAX_DOCUMENT {
        return Err(format!("network config is {} bytes, more than {MAX_DOCUMENT}", document.len()));
    }
    let root: Value = serde_yaml::from_str(document).map_err(|e| format!("network config is not YAML: {e}"))?;
    let root = match root.get("network") {
        Some(inner) if root.get("version").is_none() => inner.clone(),
        _ => root,
    };
    if !root.is_mapping() {
        return Err("network config: expected a mapping with `version: 1` or `version: 2`".into());
    }
    // `network: {config: disabled}`: cloud-init configures no network.
    if root.get("config").and_then(Value::as_str) == Some("disabled") {
        return Ok(NetworkSettings {
            version: 1,
            interfaces: Vec::new(),
            nameservers: Vec::new(),
            search_domains: Vec::new(),
            links: Vec::new(),
        });
    }
    match root.get("version").map(version_number) {
        Some(Some(1)) => v1(&root, link_of),
        Some(Some(2)) => v2(&root, link_of),
        Some(_) => Err(format!("network config: unsupported version {}", show(&root["version"]))),
        None => Err("network config: no `version` key (expected 1 or 2)".into()),
    }
}

fn version_number(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// Collects resolvers and search domains without repeats.
#[derive(Default)]
struct Dns {
    nameservers: Vec<String>,
    search: Vec<String>,
}

impl Dns {
    fn add_server(&mut self, at: &str, v: &str) -> Result<(), String> {
        let ip = ip(at, v)?.to_string();
        if !self.nameservers.contains(&ip) {
            self.nameservers.push(ip);
        }
        Ok(())
    }
    fn add_search(&mut self, at: &str, v: &str) -> Result<(), String> {
        let domain = v.trim().trim_end_matches('.').to_string();
        if domain.is_empty() || domain.len() > 253 || domain.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(format!("{at}: {v:?} is not a domain name"));
        }
        if !self.search.contains(&domain) {
            self.search.push(domain);
        }
        Ok(())
    }
}

// ---------------------------------------------------------------- version 1

fn v1(root: &Value, link_of: &dyn Fn(&str) -> Option<String>) -> Result<NetworkSettings, String> {
    let entries = seq(root.get("config"), "config")?;
    if entries.len() > MAX_ENTRIES * 2 {
        return Err(format!("config: {} entries, more than {}", entries.len(), MAX_ENTRIES * 2));
    }
    let mut interfaces: Vec<PlatformInterface> = Vec::new();
    let mut links: Vec<LinkInfo> = Vec::new();
    let mut dns = Dns::default();
    let mut global_routes: Vec<(String, PlatformRoute)> = Vec::new();
    for (i, entry) in entries.iter().enumerate() {
        let at = format!("config[{i}]");
        let kind = string(entry.get("type"), &format!("{at}.type"))?
            .ok_or_else(|| format!("{at}: an entry without `type`"))?;
        match kind.as_str() {
            "physical" | "bond" | "bridge" | "vlan" => {
                let name = string(entry.get("name"), &format!("{at}.name"))?
                    .ok_or_else(|| format!("{at}: a {kind} entry without `name`"))?;
                let mut iface = if kind == "physical" {
                    match string(entry.get("mac_address"), &format!("{at}.mac_address"))? {
                        Some(mac) => {
                            let mac = normalize_mac(&format!("{at}.mac_address"), &mac)?;
                            let mut iface = PlatformInterface::with_mac(mac.clone());
                            iface.name = Some(link_of(&mac).unwrap_or(name.clone()));
                            iface
                        }
                        None => named(&name),
                    }
                } else {
                    named(&name)
                };
                let link_kind = match kind.as_str() {
                    "vlan" => {
                        let link = string(entry.get("vlan_link"), &format!("{at}.vlan_link"))?
                            .ok_or_else(|| format!("{at}: a vlan entry without `vlan_link`"))?;
                        let id = number(entry.get("vlan_id"), &format!("{at}.vlan_id"))?
                            .ok_or_else(|| format!("{at}: a vlan entry without `vlan_id`"))?;
                        if !(1..=4094).contains(&id) {
                            return Err(format!("{at}.vlan_id: {id} is not a VLAN id (1 to 4094)"));
                        }
                        LinkKind::Vlan { id: id as u16, link }
                    }
                    "bond" => LinkKind::Bond {
                        members: names(entry.get("bond_interfaces"), &format!("{at}.bond_interfaces"))?,
                        params: BondParams::read(entry.get("params"), &format!("{at}.params"), &V1_BOND)?,
                    },
                    "bridge" => LinkKind::Bridge {
                        members: names(entry.get("bridge_interfaces"), &format!("{at}.bridge_interfaces"))?,
                    },
                    _ => LinkKind::Physical { match_name: None, driver: None, set_name: None },
                };
                links.push(LinkInfo { id: name.clone(), kind: link_kind });
                iface.mtu = mtu(entry.get("mtu"), &format!("{at}.mtu"))?;
                let subnets = match entry.get("subnets") {
                    None | Some(Value::Null) => Vec::new(),
                    Some(v) => seq(Some(v), &format!("{at}.subnets"))?.to_vec(),
                };
                for (j, subnet) in subnets.iter().enumerate() {
                    v1_subnet(&mut iface, &mut dns, subnet, &format!("{at}.subnets[{j}]"))?;
                }
                interfaces.push(iface);
            }
            "nameserver" => {
                for server in strings(entry.get("address"), &format!("{at}.address"))? {
                    dns.add_server(&format!("{at}.address"), &server)?;
                }
                for domain in strings(entry.get("search"), &format!("{at}.search"))? {
                    dns.add_search(&format!("{at}.search"), &domain)?;
                }
            }
            "route" => {
                let route = v1_route(entry, &at)?;
                let via = string(entry.get("interface"), &format!("{at}.interface"))?.unwrap_or_default();
                global_routes.push((via, route));
            }
            other => return Err(format!("{at}.type: unknown entry type {other:?}")),
        }
        if interfaces.len() > MAX_ENTRIES {
            return Err(format!("config: more than {MAX_ENTRIES} links"));
        }
    }
    // A top-level route goes to the link it names, else to the link with a
    // prefix holding its gateway, else to the first link.
    for (via, route) in global_routes {
        let target = interfaces
            .iter()
            .position(|i| !via.is_empty() && i.name.as_deref() == Some(via.as_str()))
            .or_else(|| {
                let gw = route.gateway.as_deref().and_then(|g| g.parse::<IpAddr>().ok())?;
                interfaces.iter().position(|i| i.addresses.iter().any(|a| in_prefix(a, gw)))
            })
            .or(if interfaces.is_empty() { None } else { Some(0) });
        match target {
            Some(t) => interfaces[t].routes.push(route),
            None => return Err("config: a route entry but no link to put it on".into()),
        }
    }
    Ok(NetworkSettings { version: 1, interfaces, nameservers: dns.nameservers, search_domains: dns.search, links })
}

fn v1_subnet(iface: &mut PlatformInterface, dns: &mut Dns, subnet: &Value, at: &str) -> Result<(), String> {
    let kind =
        string(subnet.get("type"), &format!("{at}.type"))?.ok_or_else(|| format!("{at}: a subnet without `type`"))?;
    match kind.as_str() {
        "dhcp" | "dhcp4" => add_dhcp(iface, IpFamily::Ipv4, None, false),
        "dhcp6" | "ipv6_dhcpv6-stateful" | "ipv6_dhcpv6-stateless" => add_dhcp(iface, IpFamily::Ipv6, None, false),
        // SLAAC is the kernel's; `manual` configures nothing.
        "ipv6_slaac" | "manual" => {}
        "static" | "static6" => {
            let address = string(subnet.get("address"), &format!("{at}.address"))?
                .ok_or_else(|| format!("{at}: a static subnet without `address`"))?;
            let (addr, prefix) = match address.split_once('/') {
                Some((a, p)) => (ip(&format!("{at}.address"), a)?, prefix_len(&format!("{at}.address"), a, p)?),
                None => {
                    let addr = ip(&format!("{at}.address"), &address)?;
                    let prefix = match (string(subnet.get("netmask"), &format!("{at}.netmask"))?, addr) {
                        (Some(mask), _) => prefix_len(&format!("{at}.netmask"), &address, &mask)?,
                        (None, IpAddr::V6(_)) => 64,
                        (None, IpAddr::V4(_)) => {
                            return Err(format!("{at}: IPv4 address {address} without a prefix or netmask"));
                        }
                    };
                    (addr, prefix)
                }
            };
            if kind == "static6" && addr.is_ipv4() {
                return Err(format!("{at}.address: static6 with IPv4 address {addr}"));
            }
            push_unique(&mut iface.addresses, format!("{addr}/{prefix}"));
            if let Some(gw) = string(subnet.get("gateway"), &format!("{at}.gateway"))? {
                let gw = ip(&format!("{at}.gateway"), &gw)?;
                if gw.is_ipv4() != addr.is_ipv4() {
                    return Err(format!("{at}.gateway: {gw} is not of the address's family"));
                }
                iface.routes.push(PlatformRoute::default_via(gw.to_string()));
            }
        }
        other => return Err(format!("{at}.type: unknown subnet type {other:?}")),
    }
    for server in strings(subnet.get("dns_nameservers"), &format!("{at}.dns_nameservers"))? {
        dns.add_server(&format!("{at}.dns_nameservers"), &server)?;
    }
    for domain in strings(subnet.get("dns_search"), &format!("{at}.dns_search"))? {
        dns.add_search(&format!("{at}.dns_search"), &domain)?;
    }
    if let Some(routes) = subnet.get("routes").filter(|v| !v.is_null()) {
        let routes = seq(Some(routes), &format!("{at}.routes"))?;
        for (k, route) in routes.iter().enumerate() {
            iface.routes.push(v1_route(route, &format!("{at}.routes[{k}]"))?);
        }
    }
    if iface.routes.len() > MAX_ITEMS || iface.addresses.len() > MAX_ITEMS {
        return Err(format!("{at}: more than {MAX_ITEMS} addresses or routes on one link"));
    }
    Ok(())
}

/// A v1 route: `network`/`destination` with `netmask`/`prefix` (or a CIDR),
/// `gateway`, `metric`.
fn v1_route(route: &Value, at: &str) -> Result<PlatformRoute, String> {
    let network = match string(route.get("network"), &format!("{at}.network"))? {
        Some(n) => n,
        None => string(route.get("destination"), &format!("{at}.destination"))?
            .ok_or_else(|| format!("{at}: a route without `network` or `destination`"))?,
    };
    let gateway = string(route.get("gateway"), &format!("{at}.gateway"))?
        .map(|g| ip(&format!("{at}.gateway"), &g))
        .transpose()?;
    let to = if network == "default" {
        match gateway {
            Some(IpAddr::V6(_)) => "::/0".to_string(),
            _ => "0.0.0.0/0".to_string(),
        }
    } else if let Some((a, p)) = network.split_once('/') {
        cidr(&format!("{at}.network"), a, p)?
    } else if let Some(mask) = string(route.get("netmask"), &format!("{at}.netmask"))? {
        cidr(&format!("{at}.netmask"), &network, &mask)?
    } else if let Some(prefix) = number(route.get("prefix"), &format!("{at}.prefix"))? {
        cidr(&format!("{at}.prefix"), &network, &prefix.to_string())?
    } else {
        let addr = ip(&format!("{at}.network"), &network)?;
        format!("{addr}/{}", if addr.is_ipv4() { 32 } else { 128 })
    };
    check_family(at, &to, gateway)?;
    let metric =
        number(route.get("metric"), &format!("{at}.metric"))?.map(to_u32(&format!("{at}.metric"))).transpose()?;
    Ok(PlatformRoute { to, gateway: gateway.map(|g| g.to_string()), on_link: false, metric })
}

// ---------------------------------------------------------------- version 2

fn v2(root: &Value, link_of: &dyn Fn(&str) -> Option<String>) -> Result<NetworkSettings, String> {
    let mut interfaces = Vec::new();
    let mut links = Vec::new();
    let mut dns = Dns::default();
    for section in ["ethernets", "bonds", "bridges", "vlans"] {
        let Some(devices) = root.get(section).filter(|v| !v.is_null()) else { continue };
        let devices = devices.as_mapping().ok_or_else(|| format!("{section}: expected a mapping of devices"))?;
        for (key, device) in devices {
            let key = key.as_str().ok_or_else(|| format!("{section}: a device id that is not a string"))?;
            let at = format!("{section}.{key}");
            if !device.is_mapping() && !device.is_null() {
                return Err(format!("{at}: expected a mapping"));
            }
            let mut iface = if section == "ethernets" {
                v2_ethernet_link(device, key, &at, link_of)?
            } else {
                named(&string(device.get("set-name"), &format!("{at}.set-name"))?.unwrap_or_else(|| key.to_string()))
            };
            let kind = match section {
                "vlans" => {
                    let id = number(device.get("id"), &format!("{at}.id"))?
                        .ok_or_else(|| format!("{at}: a VLAN without `id`"))?;
                    if id > 4094 {
                        return Err(format!("{at}.id: {id} is not a VLAN id (0 to 4094)"));
                    }
                    let link = string(device.get("link"), &format!("{at}.link"))?
                        .ok_or_else(|| format!("{at}: a VLAN without `link`"))?;
                    LinkKind::Vlan { id: id as u16, link }
                }
                "bonds" => LinkKind::Bond {
                    members: names(device.get("interfaces"), &format!("{at}.interfaces"))?,
                    params: BondParams::read(device.get("parameters"), &format!("{at}.parameters"), &V2_BOND)?,
                },
                "bridges" => {
                    LinkKind::Bridge { members: names(device.get("interfaces"), &format!("{at}.interfaces"))? }
                }
                _ => {
                    let matcher = device.get("match").filter(|m| m.is_mapping());
                    let field = |key: &str| -> Result<Option<String>, String> {
                        matcher
                            .map(|m| string(m.get(key), &format!("{at}.match.{key}")))
                            .transpose()
                            .map(Option::flatten)
                    };
                    LinkKind::Physical {
                        match_name: field("name")?,
                        driver: field("driver")?,
                        set_name: string(device.get("set-name"), &format!("{at}.set-name"))?,
                    }
                }
            };
            links.push(LinkInfo { id: key.to_string(), kind });
            v2_settings(&mut iface, &mut dns, device, &at)?;
            interfaces.push(iface);
            if interfaces.len() > MAX_ENTRIES {
                return Err(format!("network config: more than {MAX_ENTRIES} links"));
            }
        }
    }
    Ok(NetworkSettings { version: 2, interfaces, nameservers: dns.nameservers, search_domains: dns.search, links })
}

/// Which host link a v2 ethernet is.
fn v2_ethernet_link(
    device: &Value,
    key: &str,
    at: &str,
    link_of: &dyn Fn(&str) -> Option<String>,
) -> Result<PlatformInterface, String> {
    let matcher = device.get("match").filter(|m| !m.is_null());
    if let Some(m) = matcher
        && !m.is_mapping()
    {
        return Err(format!("{at}.match: expected a mapping"));
    }
    let mac = matcher
        .map(|m| string(m.get("macaddress"), &format!("{at}.match.macaddress")))
        .transpose()?
        .flatten()
        .map(|mac| normalize_mac(&format!("{at}.match.macaddress"), &mac))
        .transpose()?;
    let match_name = matcher.map(|m| string(m.get("name"), &format!("{at}.match.name"))).transpose()?.flatten();
    let set_name = string(device.get("set-name"), &format!("{at}.set-name"))?;
    let host = mac.as_deref().and_then(link_of);
    let name =
        set_name.or(host).or(match_name.filter(|n| !n.contains(['*', '?', '[']))).unwrap_or_else(|| key.to_string());
    let mut iface = match mac {
        Some(mac) => PlatformInterface::with_mac(mac),
        None => named(&name),
    };
    iface.name = Some(name);
    Ok(iface)
}

/// Addresses, gateways, routes, resolvers, DHCP and MTU of one v2 device.
fn v2_settings(iface: &mut PlatformInterface, dns: &mut Dns, device: &Value, at: &str) -> Result<(), String> {
    iface.mtu = mtu(device.get("mtu"), &format!("{at}.mtu"))?;
    for (family, key) in [(IpFamily::Ipv4, "dhcp4"), (IpFamily::Ipv6, "dhcp6")] {
        if boolean(device.get(key), &format!("{at}.{key}"))?.unwrap_or(false) {
            let overrides = device.get(format!("{key}-overrides").as_str()).filter(|v| !v.is_null());
            let o_at = format!("{at}.{key}-overrides");
            let metric = overrides
                .map(|o| number(o.get("route-metric"), &format!("{o_at}.route-metric")))
                .transpose()?
                .flatten()
                .map(to_u32(&format!("{o_at}.route-metric")))
                .transpose()?;
            let use_hostname = overrides
                .map(|o| boolean(o.get("use-hostname"), &format!("{o_at}.use-hostname")))
                .transpose()?
                .flatten();
            add_dhcp(iface, family, metric, use_hostname == Some(false));
        }
    }
    if let Some(addresses) = device.get("addresses").filter(|v| !v.is_null()) {
        let list = seq(Some(addresses), &format!("{at}.addresses"))?;
        for (k, entry) in list.iter().enumerate() {
            let a_at = format!("{at}.addresses[{k}]");
            // An address is a string, or a one-key mapping `"cidr": {lifetime, label}`.
            let text = match entry {
                Value::String(s) => s.clone(),
                Value::Mapping(m) if m.len() == 1 => m
                    .keys()
                    .next()
                    .and_then(Value::as_str)
                    .map(String::from)
                    .ok_or_else(|| format!("{a_at}: expected an address in CIDR notation"))?,
                other => return Err(format!("{a_at}: expected an address in CIDR notation, got {}", show(other))),
            };
            let (a, p) = text.split_once('/').ok_or_else(|| format!("{a_at}: {text:?} has no /prefix"))?;
            push_unique(&mut iface.addresses, cidr_host(&a_at, a, p)?);
        }
    }
    for (key, v4) in [("gateway4", true), ("gateway6", false)] {
        if let Some(gw) = string(device.get(key), &format!("{at}.{key}"))? {
            let gw = ip(&format!("{at}.{key}"), &gw)?;
            if gw.is_ipv4() != v4 {
                return Err(format!("{at}.{key}: {gw} is of the wrong family"));
            }
            iface.routes.push(PlatformRoute::default_via(gw.to_string()));
        }
    }
    if let Some(routes) = device.get("routes").filter(|v| !v.is_null()) {
        let routes = seq(Some(routes), &format!("{at}.routes"))?;
        for (k, route) in routes.iter().enumerate() {
            let r_at = format!("{at}.routes[{k}]");
            let via = string(route.get("via"), &format!("{r_at}.via"))?
                .map(|g| ip(&format!("{r_at}.via"), &g))
                .transpose()?;
            let to = string(route.get("to"), &format!("{r_at}.to"))?
                .ok_or_else(|| format!("{r_at}: a route without `to`"))?;
            let to = if to == "default" {
                if matches!(via, Some(IpAddr::V6(_))) { "::/0".to_string() } else { "0.0.0.0/0".to_string() }
            } else if let Some((a, p)) = to.split_once('/') {
                cidr(&format!("{r_at}.to"), a, p)?
            } else {
                let addr = ip(&format!("{r_at}.to"), &to)?;
                format!("{addr}/{}", if addr.is_ipv4() { 32 } else { 128 })
            };
            check_family(&r_at, &to, via)?;
            let metric = number(route.get("metric"), &format!("{r_at}.metric"))?
                .map(to_u32(&format!("{r_at}.metric")))
                .transpose()?;
            let on_link = boolean(route.get("on-link"), &format!("{r_at}.on-link"))?.unwrap_or(false);
            iface.routes.push(PlatformRoute { to, gateway: via.map(|v| v.to_string()), on_link, metric });
        }
    }
    if let Some(ns) = device.get("nameservers").filter(|v| !v.is_null()) {
        for server in strings(ns.get("addresses"), &format!("{at}.nameservers.addresses"))? {
            dns.add_server(&format!("{at}.nameservers.addresses"), &server)?;
        }
        for domain in strings(ns.get("search"), &format!("{at}.nameservers.search"))? {
            dns.add_search(&format!("{at}.nameservers.search"), &domain)?;
        }
    }
    if iface.routes.len() > MAX_ITEMS || iface.addresses.len() > MAX_ITEMS {
        return Err(format!("{at}: more than {MAX_ITEMS} addresses or routes"));
    }
    Ok(())
}

// ---------------------------------------------------------------- helpers

fn named(name: &str) -> PlatformInterface {
    PlatformInterface {
        mac: None,
        name: Some(name.to_string()),
        addresses: Vec::new(),
        routes: Vec::new(),
        mtu: None,
        dhcp: Vec::new(),
    }
}

fn add_dhcp(iface: &mut PlatformInterface, family: IpFamily, route_metric: Option<u32>, skip_hostname: bool) {
    if !iface.dhcp.iter().any(|d| d.family == family) {
        iface.dhcp.push(DhcpOperator { family, route_metric, skip_hostname });
    }
}

fn push_unique(list: &mut Vec<String>, value: String) {
    if !list.contains(&value) {
        list.push(value);
    }
}

fn show(v: &Value) -> String {
    let text = serde_yaml::to_string(v).unwrap_or_default();
    let text = text.trim();
    if text.len() > 60 { format!("{}...", &text[..text.floor_char_boundary(60)]) } else { text.to_string() }
}

fn seq<'a>(v: Option<&'a Value>, at: &str) -> Result<&'a Vec<Value>, String> {
    match v {
        Some(Value::Sequence(s)) if s.len() <= MAX_ITEMS => Ok(s),
        Some(Value::Sequence(s)) => Err(format!("{at}: {} items, more than {MAX_ITEMS}", s.len())),
        Some(other) => Err(format!("{at}: expected a list, got {}", show(other))),
        None => Err(format!("{at}: missing (expected a list)")),
    }
}

/// A scalar as text (YAML numbers and booleans too, as cloud-init's loose
/// typing allows `vlan_id: "4"` and `mtu: 9000` alike).
fn string(v: Option<&Value>, at: &str) -> Result<Option<String>, String> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.trim().to_string())),
        Some(Value::Number(n)) => Ok(Some(n.to_string())),
        Some(Value::Bool(b)) => Ok(Some(b.to_string())),
        Some(other) => Err(format!("{at}: expected a value, got {}", show(other))),
    }
}

/// A string or a list of strings (v1 `address: 8.8.8.8` and `address: [..]`).
fn strings(v: Option<&Value>, at: &str) -> Result<Vec<String>, String> {
    match v {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Sequence(_)) => {
            let items = seq(v, at)?;
            items
                .iter()
                .enumerate()
                .map(|(i, item)| string(Some(item), &format!("{at}[{i}]"))?.ok_or_else(|| format!("{at}[{i}]: empty")))
                .collect()
        }
        Some(_) => Ok(string(v, at)?.map(|s| s.split_whitespace().map(String::from).collect()).unwrap_or_default()),
    }
}

fn number(v: Option<&Value>, at: &str) -> Result<Option<u64>, String> {
    match string(v, at)? {
        None => Ok(None),
        Some(s) => s.parse().map(Some).map_err(|_| format!("{at}: {s:?} is not a whole number")),
    }
}

fn to_u32(at: &str) -> impl Fn(u64) -> Result<u32, String> + '_ {
    move |n| u32::try_from(n).map_err(|_| format!("{at}: {n} is too large"))
}

fn mtu(v: Option<&Value>, at: &str) -> Result<Option<u32>, String> {
    match number(v, at)? {
        None => Ok(None),
        Some(n) if (68..=65535).contains(&n) => Ok(Some(n as u32)),
        Some(n) => Err(format!("{at}: {n} is not an MTU (68 to 65535)")),
    }
}

/// netplan's booleans: true/false, yes/no, on/off, y/n.
fn boolean(v: Option<&Value>, at: &str) -> Result<Option<bool>, String> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(Value::String(s)) => match s.trim().to_ascii_lowercase().as_str() {
            "true" | "yes" | "on" | "y" => Ok(Some(true)),
            "false" | "no" | "off" | "n" => Ok(Some(false)),
            _ => Err(format!("{at}: {s:?} is not a boolean")),
        },
        Some(other) => Err(format!("{at}: expected a boolean, got {}", show(other))),
    }
}

/// An IP address (canonical form when printed); zone ids are refused.
pub fn ip(at: &str, text: &str) -> Result<IpAddr, String> {
    text.trim().parse::<IpAddr>().map_err(|_| format!("{at}: {text:?} is not an IP address"))
}

/// A MAC as six lower-case, two-digit octets (`96:00:00:1:2:3` becomes
/// `96:00:00:01:02:03`; `-` separators are accepted).
pub fn normalize_mac(at: &str, text: &str) -> Result<String, String> {
    let parts: Vec<&str> = text.trim().split([':', '-']).collect();
    let ok = parts.len() == 6
        && parts.iter().all(|p| (1..=2).contains(&p.len()) && p.chars().all(|c| c.is_ascii_hexdigit()));
    if !ok {
        return Err(format!("{at}: {text:?} is not a MAC address"));
    }
    Ok(parts.iter().map(|p| format!("{:0>2}", p.to_ascii_lowercase())).collect::<Vec<_>>().join(":"))
}

/// The prefix length of `mask`: a number (`24`), or a netmask in the
/// address's family (`255.255.255.0`, `ffff:ffff:ffff:ffc0::`), which must
/// be contiguous.
pub fn prefix_len(at: &str, address: &str, mask: &str) -> Result<u8, String> {
    let addr = ip(at, address)?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let mask = mask.trim();
    if let Ok(n) = mask.parse::<u8>() {
        return if n <= max { Ok(n) } else { Err(format!("{at}: prefix /{n} is longer than {max}")) };
    }
    let bits: u128 = match (addr, mask.parse::<IpAddr>()) {
        (IpAddr::V4(_), Ok(IpAddr::V4(m))) => u128::from(u32::from(m)) << 96,
        (IpAddr::V6(_), Ok(IpAddr::V6(m))) => u128::from(m),
        _ => return Err(format!("{at}: {mask:?} is not a netmask or prefix length for {addr}")),
    };
    let ones = bits.leading_ones();
    if bits.checked_shl(ones).unwrap_or(0) != 0 {
        return Err(format!("{at}: netmask {mask} is not contiguous"));
    }
    Ok(ones as u8)
}

/// `address/prefix` with the address canonical (host bits kept: this is an
/// interface address).
pub fn cidr_host(at: &str, address: &str, mask: &str) -> Result<String, String> {
    let addr = ip(at, address)?;
    Ok(format!("{addr}/{}", prefix_len(at, address, mask)?))
}

/// A route destination: `network/prefix` with the host bits cleared.
pub fn cidr(at: &str, address: &str, mask: &str) -> Result<String, String> {
    let prefix = prefix_len(at, address, mask)?;
    let network = match ip(at, address)? {
        IpAddr::V4(a) => {
            let m = if prefix == 0 { 0 } else { u32::MAX << (32 - prefix) };
            IpAddr::V4(Ipv4Addr::from(u32::from(a) & m))
        }
        IpAddr::V6(a) => {
            let m = if prefix == 0 { 0 } else { u128::MAX << (128 - prefix) };
            IpAddr::V6(Ipv6Addr::from(u128::from(a) & m))
        }
    };
    Ok(format!("{network}/{prefix}"))
}

/// Whether `ip` is inside the prefix of interface address `cidr`.
pub fn in_prefix(cidr: &str, ip: IpAddr) -> bool {
    let Some((a, p)) = cidr.split_once('/') else { return false };
    let (Ok(a), Ok(p)) = (a.parse::<IpAddr>(), p.parse::<u32>()) else { return false };
    match (a, ip) {
        (IpAddr::V4(a), IpAddr::V4(b)) if p <= 32 => {
            let m = if p == 0 { 0 } else { u32::MAX << (32 - p) };
            u32::from(a) & m == u32::from(b) & m
        }
        (IpAddr::V6(a), IpAddr::V6(b)) if p <= 128 => {
            let m = if p == 0 { 0 } else { u128::MAX << (128 - p) };
            u128::from(a) & m == u128::from(b) & m
        }
        _ => false,
    }
}

fn check_family(at: &str, to: &str, gateway: Option<IpAddr>) -> Result<(), String> {
    if let Some(gw) = gateway
        && to.contains(':') != gw.is_ipv6()
    {
        return Err(format!("{at}: gateway {gw} is not of the destination {to}'s family"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn links(mac: &str) -> Option<String> {
        match mac {
            "68:05:ca:b8:f1:f7" => Some("eth0".into()),
            "68:05:ca:b8:f1:f9" => Some("eth2".into()),
            _ => None,
        }
    }

    #[test]
    fn v1_static_and_dhcp() {
        let doc = "version: 1\nconfig:\n- type: physical\n  name: eth1\n  mac_address: '68:05:CA:b8:f1:f9'\n  mtu: 1450\n  subnets:\n  - type: static\n    address: 192.168.2.11\n    netmask: 255.255.255.0\n    gateway: 192.168.2.1\n  - type: static6\n    address: '2001:2::f9/64'\n    gateway: fe80::2\n  - type: dhcp6\n- type: nameserver\n  address: [192.168.1.1]\n  search: [lan]\n";
        let s = parse(doc, &links).unwrap();
        assert_eq!(s.version, 1);
        let i = &s.interfaces[0];
        assert_eq!(i.name.as_deref(), Some("eth2"));
        assert_eq!(i.mac.as_deref(), Some("68:05:ca:b8:f1:f9"));
        assert_eq!(i.mtu, Some(1450));
        assert_eq!(i.addresses, ["192.168.2.11/24", "2001:2::f9/64"]);
        assert_eq!(i.routes[0].to, "0.0.0.0/0");
        assert_eq!(i.routes[1].gateway.as_deref(), Some("fe80::2"));
        assert_eq!(i.dhcp.len(), 1);
        assert_eq!(s.nameservers, ["192.168.1.1"]);
        assert_eq!(s.search_domains, ["lan"]);
    }

    #[test]
    fn v2_wrapped_with_on_link_and_overrides() {
        let doc = "network:\n  version: 2\n  ethernets:\n    nic0:\n      match: {macaddress: '00:11:22:33:44:55'}\n      set-name: wan0\n      dhcp4: yes\n      dhcp4-overrides: {route-metric: 100, use-hostname: false}\n      addresses: [10.0.0.0/32, '2a0c::1/96']\n      routes:\n      - {to: default, via: 169.254.0.1, on-link: true}\n      - {to: '::/0', via: 'fe80::1', on-link: true, metric: 5}\n      nameservers: {addresses: [1.1.1.1], search: [a.example]}\n";
        let s = parse(doc, &no_links).unwrap();
        assert_eq!(s.format(), NetworkConfigFormat::CloudInitV2);
        let i = &s.interfaces[0];
        assert_eq!(i.name.as_deref(), Some("wan0"));
        assert_eq!(i.dhcp[0].route_metric, Some(100));
        assert!(i.dhcp[0].skip_hostname);
        assert_eq!(i.routes[0].to, "0.0.0.0/0");
        assert!(i.routes[0].on_link && i.routes[1].on_link);
        assert_eq!(i.routes[1].metric, Some(5));
    }

    #[test]
    fn strict_errors_name_the_field() {
        let bad = |doc: &str| parse(doc, &no_links).unwrap_err();
        assert!(bad("version: 3\n").contains("unsupported version"), "{}", bad("version: 3\n"));
        assert!(bad("version: 1\nconfig:\n- type: wifi\n").contains("config[0].type"));
        let e = bad(
            "version: 1\nconfig:\n- type: physical\n  name: e\n  subnets:\n  - {type: static, address: 1.2.3.4, netmask: 255.0.255.0}\n",
        );
        assert!(e.contains("config[0].subnets[0].netmask") && e.contains("contiguous"), "{e}");
        let e = bad("version: 2\nethernets:\n  e:\n    match: {macaddress: zz}\n");
        assert!(e.contains("ethernets.e.match.macaddress"), "{e}");
        let e = bad("version: 2\nethernets:\n  e:\n    addresses: [10.0.0.1]\n");
        assert!(e.contains("no /prefix"), "{e}");
        let e = bad("version: 2\nethernets:\n  e:\n    routes: [{to: 10.0.0.0/8, via: 'fe80::1'}]\n");
        assert!(e.contains("family"), "{e}");
    }

    #[test]
    fn a_bond_sharing_a_mac_is_not_the_link() {
        let links: Vec<(String, String)> =
            [("bond0", "68:05:ca:b8:f1:f7"), ("eth0", "68:05:ca:b8:f1:f7"), ("eth1", "aa:00:00:00:00:01")]
                .iter()
                .map(|(n, m)| (n.to_string(), m.to_string()))
                .collect();
        assert_eq!(link_for_mac(&links, "68:05:CA:b8:f1:f7").as_deref(), Some("eth0"));
        assert_eq!(link_for_mac(&links, "aa:00:00:00:00:01").as_deref(), Some("eth1"));
        assert_eq!(link_for_mac(&links[..1], "68:05:ca:b8:f1:f7").as_deref(), Some("bond0"));
        assert_eq!(link_for_mac(&links, "00:00:00:00:00:00"), None);
    }

    #[test]
    fn bonds_bridges_and_vlans_are_described() {
        let doc = "version: 1\nconfig:\n- {type: physical, name: a, mac_address: '68:05:ca:b8:f1:f7'}\n- {type: physical, name: b}\n- type: bond\n  name: bond0\n  bond_interfaces: [a, b]\n  params: {bond-mode: 4, bond-miimon: 100, bond-lacp-rate: fast, bond-xmit-hash-policy: layer3+4, up-delay: 0, bond-downdelay: '200'}\n- {type: vlan, name: bond0.2, vlan_link: bond0, vlan_id: 2}\n- {type: bridge, name: br0, bridge_interfaces: [b]}\n";
        let s = parse(doc, &links).unwrap();
        assert_eq!(s.links.len(), s.interfaces.len());
        assert_eq!(
            s.links[0],
            LinkInfo { id: "a".into(), kind: LinkKind::Physical { match_name: None, driver: None, set_name: None } }
        );
        let params = BondParams {
            mode: Some("802.3ad".into()),
            miimon: Some(100),
            updelay: Some(0),
            downdelay: Some(200),
            lacp_rate_fast: Some(true),
            transmit_hash_policy: Some("layer3+4".into()),
        };
        assert_eq!(s.links[2].kind, LinkKind::Bond { members: vec!["a".into(), "b".into()], params });
        assert_eq!(s.links[3].kind, LinkKind::Vlan { id: 2, link: "bond0".into() });
        assert_eq!(s.links[4].kind, LinkKind::Bridge { members: vec!["b".into()] });

        let doc = "version: 2\nethernets:\n  e0: {match: {driver: ixgbe, name: 'en*'}, set-name: lan0}\nbonds:\n  bond0:\n    interfaces: [e0]\n    parameters: {mode: active-backup, mii-monitor-interval: 100, up-delay: 200, down-delay: 200, lacp-rate: slow, transmit-hash-policy: layer2}\nvlans:\n  v4: {id: 4, link: bond0}\n";
        let s = parse(doc, &no_links).unwrap();
        assert_eq!(
            s.links[0].kind,
            LinkKind::Physical {
                match_name: Some("en*".into()),
                driver: Some("ixgbe".into()),
                set_name: Some("lan0".into())
            }
        );
        match &s.links[1].kind {
            LinkKind::Bond { members, params } => {
                assert_eq!(members, &["e0"]);
                assert_eq!(params.mode.as_deref(), Some("active-backup"));
                assert_eq!((params.miimon, params.updelay, params.downdelay), (Some(100), Some(200), Some(200)));
                assert_eq!(params.lacp_rate_fast, Some(false));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(s.links[2], LinkInfo { id: "v4".into(), kind: LinkKind::Vlan { id: 4, link: "bond0".into() } });

        let bad = |doc: &str| parse(doc, &no_links).unwrap_err();
        let e = bad("version: 2\nbonds:\n  b: {interfaces: [x], parameters: {mode: fastest}}\n");
        assert!(e.contains("bonds.b.parameters.mode") && e.contains("fastest"), "{e}");
        let e = bad("version: 1\nconfig:\n- {type: bond, name: b, params: {bond-xmit-hash-policy: layer9}}\n");
        assert!(e.contains("config[0].params.bond-xmit-hash-policy"), "{e}");
        let e = bad("version: 1\nconfig:\n- {type: bond, name: b, params: {bond-lacp-rate: medium}}\n");
        assert!(e.contains("config[0].params.bond-lacp-rate"), "{e}");
    }

    #[test]
    fn disabled_configures_nothing() {
        let s = parse("network:\n  config: disabled\n", &no_links).unwrap();
        assert!(s.interfaces.is_empty() && s.nameservers.is_empty());
    }

    #[test]
    fn netmasks_and_macs() {
        assert_eq!(prefix_len("x", "2000::", "ffff:ffff:ffff:ffc0::").unwrap(), 58);
        assert_eq!(cidr("x", "2000:0:100:2f00::", "ffff:ffff:ffff:ffc0::").unwrap(), "2000:0:100:2f00::/58");
        assert_eq!(cidr("x", "0.0.0.0", "0.0.0.0").unwrap(), "0.0.0.0/0");
        assert_eq!(normalize_mac("x", "96:00:00:1:2:3").unwrap(), "96:00:00:01:02:03");
        assert!(normalize_mac("x", "96:00:00:1:2").is_err());
    }
}
