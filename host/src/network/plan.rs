//! The network plan: what links, addresses, routes and resolvers the node
//! should have, as the applier takes it ([`super::layers`] merges the
//! layers into one), and the rules every plan passes before anything
//! touches the kernel ([`NetworkPlan::validate`]: link names, MTUs, gateway
//! families and reachability, routes the kernel would take as one).
//!
//! Pure: no netlink, no files. [`super::apply`] makes the kernel match a
//! plan.

use bronze_config::Cidr;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

/// Metric of planned routes that name none. Explicit (rather than the
/// kernel's per-family default) so a route can be deleted exactly as it
/// was added.
pub const DEFAULT_ROUTE_METRIC: u32 = 1024;
/// `IFNAMSIZ - 1`: the longest link name Linux accepts.
pub const MAX_LINK_NAME: usize = 15;
/// MTUs Linux accepts for an IPv4-capable link.
pub const MTU_RANGE: std::ops::RangeInclusive<u32> = 68..=65535;
/// Nameservers the glibc and musl resolvers use; more are ignored.
pub const MAX_RESOLVERS: usize = 3;

/// Why a plan (or one of its layers) is refused; each names the interface
/// and the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("link name {name:?} is not valid: {reason}")]
    LinkName { name: String, reason: String },
    #[error("interface {link} is configured more than once")]
    DuplicateLink { link: String },
    #[error("interface {link}: mtu {mtu} is outside 68..=65535")]
    Mtu { link: String, mtu: u32 },
    #[error("interface {link}: gateway {gateway} and destination {destination} are of different IP families")]
    FamilyMismatch { link: String, destination: Cidr, gateway: IpAddr },
    #[error(
        "interface {link}: gateway {gateway} of route {destination} is unreachable: it is in the subnet of \
         none of the link's addresses ({addresses}) and no direct host route on the link leads to it"
    )]
    UnreachableGateway { link: String, destination: Cidr, gateway: IpAddr, addresses: String },
    #[error(
        "route {destination} metric {metric} is planned twice (on {first} and on {second}); give one another metric"
    )]
    DuplicateRoute { destination: Cidr, metric: u32, first: String, second: String },
    #[error("bronze.ip entry {entry:?}: {reason}")]
    Cmdline { entry: String, reason: String },
    #[error("cannot read {path}: {error}")]
    ReadCmdline { path: String, error: String },
}

/// The desired state of the node's network.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetworkPlan {
    pub links: Vec<LinkPlan>,
    pub addresses: Vec<AddressPlan>,
    pub routes: Vec<RoutePlan>,
    pub resolvers: Vec<IpAddr>,
    pub search: Vec<String>,
    /// The node's hostname, for `/etc/hosts` (the hostname itself is set
    /// by the machine settings controller).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// Accepted but worth telling an operator (dhcp not supported, extra
    /// nameservers ignored, host bits in a route's network).
    pub warnings: Vec<String>,
}

/// A link to configure. Links the plan does not name are left alone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LinkPlan {
    pub name: String,
    pub up: bool,
    /// `None` keeps the link's current MTU.
    pub mtu: Option<u32>,
    /// `None`: a link that exists by itself (a NIC, a veth); `Some`: a
    /// logical link bronzed creates (and deletes when no plan names it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<LinkKind>,
}

impl LinkPlan {
    /// An existing link, up, its MTU left alone.
    pub fn up(name: impl Into<String>) -> Self {
        Self { name: name.into(), up: true, mtu: None, kind: None }
    }
}

/// A logical link bronzed creates.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum LinkKind {
    Bond(BondPlan),
    Vlan(VlanPlan),
}

/// A bond and its members (link names; each is enslaved to the bond).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BondPlan {
    pub mode: BondMode,
    pub members: Vec<String>,
    /// MII monitoring interval, milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub miimon: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updelay: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub downdelay: Option<u32>,
    /// LACP rate fast (802.3ad only).
    #[serde(default)]
    pub lacp_rate_fast: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub xmit_hash_policy: Option<XmitHashPolicy>,
}

/// Bond modes and transmit hash policies are the config's own types, which
/// carry the kernel's names.
pub use bronze_config::{BondMode, XmitHashPolicy};

/// An 802.1Q VLAN on a parent link.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VlanPlan {
    pub parent: String,
    /// 1..=4094.
    pub id: u16,
}

/// An address on a link (host bits kept: `10.0.2.15/24`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AddressPlan {
    pub link: String,
    pub address: Cidr,
}

/// A main-table route out of a link.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RoutePlan {
    pub link: String,
    /// The destination network (host bits cleared).
    pub destination: Cidr,
    /// `None`: the destination is directly reachable on the link.
    pub gateway: Option<IpAddr>,
    pub metric: u32,
    /// The gateway is on the link although no address's subnet holds it
    /// (`RTNH_F_ONLINK`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub on_link: bool,
}

impl fmt::Display for RoutePlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.destination)?;
        if let Some(gw) = self.gateway {
            write!(f, " via {gw}")?;
        }
        write!(f, " dev {} metric {}", self.link, self.metric)
    }
}

impl NetworkPlan {
    /// Checks what the kernel would refuse or silently get wrong: link
    /// names, MTUs, gateway families and reachability, and two routes the
    /// kernel would treat as one.
    pub fn validate(&self) -> Result<(), PlanError> {
        let mut seen = std::collections::HashSet::new();
        for link in &self.links {
            if let Some(reason) = link_name_problem(&link.name) {
                return Err(PlanError::LinkName { name: link.name.clone(), reason });
            }
            if !seen.insert(link.name.as_str()) {
                return Err(PlanError::DuplicateLink { link: link.name.clone() });
            }
            if let Some(mtu) = link.mtu
                && !MTU_RANGE.contains(&mtu)
            {
                return Err(PlanError::Mtu { link: link.name.clone(), mtu });
            }
        }
        for a in &self.addresses {
            if let Some(reason) = link_name_problem(&a.link) {
                return Err(PlanError::LinkName { name: a.link.clone(), reason });
            }
        }
        let mut by_key: BTreeMap<(Cidr, u32), &str> = BTreeMap::new();
        for route in &self.routes {
            if let Some(reason) = link_name_problem(&route.link) {
                return Err(PlanError::LinkName { name: route.link.clone(), reason });
            }
            if let Some(gateway) = route.gateway {
                let link = route.link.clone();
                // RTNH_F_ONLINK: the kernel takes the gateway as on the link.
                let on_link = route.on_link;
                if gateway.is_ipv4() != route.destination.is_ipv4() {
                    return Err(PlanError::FamilyMismatch { link, destination: route.destination, gateway });
                }
                let addresses: Vec<Cidr> =
                    self.addresses.iter().filter(|a| a.link == route.link).map(|a| a.address).collect();
                let host_routes: Vec<Cidr> = self
                    .routes
                    .iter()
                    .filter(|r| r.link == route.link && r.gateway.is_none())
                    .map(|r| r.destination)
                    .collect();
                if !on_link && !gateway_reachable(gateway, &addresses, &host_routes) {
                    let addresses = if addresses.is_empty() {
                        "none".to_string()
                    } else {
                        addresses.iter().map(Cidr::to_string).collect::<Vec<_>>().join(", ")
                    };
                    return Err(PlanError::UnreachableGateway {
                        link,
                        destination: route.destination,
                        gateway,
                        addresses,
                    });
                }
            }
            // The kernel keys IPv4 routes by destination and metric: a
            // second one is refused with EEXIST, which apply treats as
            // "already there", so it would silently never be installed.
            if let Some(first) = by_key.insert((route.destination, route.metric), &route.link) {
                return Err(PlanError::DuplicateRoute {
                    destination: route.destination,
                    metric: route.metric,
                    first: first.to_string(),
                    second: route.link.clone(),
                });
            }
        }
        Ok(())
    }
}

/// Why `name` is not a link name Linux accepts, if it is not.
pub(crate) fn link_name_problem(name: &str) -> Option<String> {
    if name.is_empty() {
        return Some("it is empty".into());
    }
    if name.len() > MAX_LINK_NAME {
        return Some(format!("it is {} bytes long; the limit is {MAX_LINK_NAME}", name.len()));
    }
    if name == "." || name == ".." {
        return Some("it cannot be \".\" or \"..\"".into());
    }
    if name.chars().any(|c| c == '/' || c == ':' || c.is_whitespace() || c.is_control()) {
        return Some("it cannot contain '/', ':', whitespace or control characters".into());
    }
    None
}

/// Whether a next hop can be reached without another router: it is in the
/// subnet of one of the link's addresses, it is IPv6 link-local (always
/// on-link), or a direct host route on the link leads to it (the common
/// cloud setup: `gw/32 dev eth0` then `default via gw`).
pub(crate) fn gateway_reachable(gateway: IpAddr, addresses: &[Cidr], direct_routes: &[Cidr]) -> bool {
    let link_local = matches!(gateway, IpAddr::V6(v6) if v6.segments()[0] & 0xffc0 == 0xfe80);
    link_local
        || addresses.iter().any(|a| a.net().contains(&gateway))
        || direct_routes.iter().any(|r| r.net().contains(&gateway) && r.prefix_len() == max_prefix(gateway))
}

fn max_prefix(addr: IpAddr) -> u8 {
    if addr.is_ipv4() { 32 } else { 128 }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::network::layers::{Layers, config_layer, merge};
    use bronze_config::{Interface, Network, Route};

    /// The config as the only layer, merged.
    fn plan(config: Option<&Network>, _cmdline: &[()]) -> Result<NetworkPlan, PlanError> {
        let config = config.map(|n| config_layer(n, None, &[], &|_| Ok(None))).unwrap_or_default();
        merge(&Layers { config, ..Default::default() }).map(|s| s.plan())
    }

    fn cidr(s: &str) -> Cidr {
        s.parse().unwrap()
    }

    fn iface(name: &str, addresses: &[&str], routes: &[(&str, Option<&str>, Option<u32>)]) -> Interface {
        let mut i = Interface::new(name.parse().unwrap());
        i.addresses = addresses.iter().map(|a| cidr(a)).collect();
        i.routes = routes
            .iter()
            .map(|(n, g, m)| Route {
                network: cidr(n),
                gateway: g.map(|g| g.parse().unwrap()),
                metric: *m,
                on_link: false,
            })
            .collect();
        i
    }

    fn network(interfaces: Vec<Interface>) -> Network {
        Network { interfaces, ..Default::default() }
    }

    fn route(link: &str, dest: &str, gw: Option<&str>, metric: u32) -> RoutePlan {
        RoutePlan {
            link: link.into(),
            destination: cidr(dest),
            gateway: gw.map(|g| g.parse().unwrap()),
            metric,
            on_link: false,
        }
    }

    fn address(link: &str, a: &str) -> AddressPlan {
        AddressPlan { link: link.into(), address: cidr(a) }
    }

    #[test]
    fn gateway_must_be_reachable_on_the_link() {
        let net = network(vec![iface("eth0", &["10.0.0.5/24"], &[("0.0.0.0/0", Some("10.0.1.1"), None)])]);
        assert_eq!(
            plan(Some(&net), &[]).unwrap_err().to_string(),
            "interface eth0: gateway 10.0.1.1 of route 0.0.0.0/0 is unreachable: it is in the subnet of none of the link's addresses (10.0.0.5/24) and no direct host route on the link leads to it"
        );
        // An address on another link does not make it reachable.
        let net = network(vec![
            iface("eth0", &[], &[("0.0.0.0/0", Some("10.0.1.1"), None)]),
            iface("eth1", &["10.0.1.5/24"], &[]),
        ]);
        assert!(matches!(
            plan(Some(&net), &[]),
            Err(PlanError::UnreachableGateway { link, addresses, .. }) if link == "eth0" && addresses == "none"
        ));
    }

    #[test]
    fn a_direct_host_route_makes_a_gateway_reachable() {
        let net = network(vec![iface(
            "eth0",
            &["203.0.113.7/32"],
            &[("172.31.1.1/32", None, None), ("0.0.0.0/0", Some("172.31.1.1"), None)],
        )]);
        let p = plan(Some(&net), &[]).unwrap();
        assert_eq!(p.routes.len(), 2);
        // A host route via a gateway does not count: it is not direct.
        let net = network(vec![iface(
            "eth0",
            &["203.0.113.7/32"],
            &[("172.31.1.1/32", Some("203.0.113.7"), None), ("0.0.0.0/0", Some("172.31.1.1"), None)],
        )]);
        assert!(matches!(plan(Some(&net), &[]), Err(PlanError::UnreachableGateway { .. })));
    }

    #[test]
    fn ipv6_link_local_gateways_are_always_on_link() {
        let net = network(vec![iface("eth0", &[], &[("::/0", Some("fe80::1"), None)])]);
        assert!(plan(Some(&net), &[]).is_ok());
    }

    #[test]
    fn bad_values_are_named() {
        let mut p = NetworkPlan {
            links: vec![LinkPlan { name: "eth0".into(), up: true, mtu: Some(40), kind: None }],
            ..Default::default()
        };
        assert_eq!(p.validate().unwrap_err().to_string(), "interface eth0: mtu 40 is outside 68..=65535");
        p.links[0] = LinkPlan { name: "a-name-of-16-chr".into(), up: true, mtu: None, kind: None };
        assert_eq!(
            p.validate().unwrap_err().to_string(),
            "link name \"a-name-of-16-chr\" is not valid: it is 16 bytes long; the limit is 15"
        );
        p.links[0].name = "eth0".into();
        p.addresses = vec![address("eth0", "10.0.0.5/24")];
        p.routes = vec![route("eth0", "0.0.0.0/0", Some("fd00::1"), 1024)];
        assert_eq!(
            p.validate().unwrap_err().to_string(),
            "interface eth0: gateway fd00::1 and destination 0.0.0.0/0 are of different IP families"
        );
        p.links.push(LinkPlan { name: "eth1".into(), up: true, mtu: None, kind: None });
        p.addresses.push(address("eth1", "10.0.1.5/24"));
        p.routes = vec![
            route("eth0", "0.0.0.0/0", Some("10.0.0.1"), 1024),
            route("eth1", "0.0.0.0/0", Some("10.0.1.1"), 1024),
        ];
        assert_eq!(
            p.validate().unwrap_err().to_string(),
            "route 0.0.0.0/0 metric 1024 is planned twice (on eth0 and on eth1); give one another metric"
        );
        p.routes[1].metric = 2048;
        assert!(p.validate().is_ok());
    }

    #[test]
    fn extra_nameservers_are_a_warning() {
        let net = Network {
            nameservers: ["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4"].map(|n| n.parse().unwrap()).to_vec(),
            ..Default::default()
        };
        assert_eq!(
            plan(Some(&net), &[]).unwrap().warnings,
            ["config: 4 nameservers; resolvers use the first 3 and ignore 10.0.0.4"]
        );
    }

    #[test]
    fn an_on_link_gateway_needs_no_subnet() {
        let mut net = network(vec![iface("eth0", &["203.0.113.7/32"], &[("0.0.0.0/0", Some("172.31.1.1"), None)])]);
        assert!(matches!(plan(Some(&net), &[]), Err(PlanError::UnreachableGateway { .. })));
        net.interfaces[0].routes[0].on_link = true;
        assert!(plan(Some(&net), &[]).unwrap().routes[0].on_link);
    }

    #[test]
    fn no_layers_no_plan() {
        assert_eq!(plan(None, &[]).unwrap(), NetworkPlan::default());
        assert_eq!(plan(Some(&Network::default()), &[]).unwrap(), NetworkPlan::default());
    }

    #[test]
    fn route_display_names_every_part() {
        assert_eq!(
            route("eth0", "0.0.0.0/0", Some("10.0.0.1"), 1024).to_string(),
            "0.0.0.0/0 via 10.0.0.1 dev eth0 metric 1024"
        );
        assert_eq!(route("eth0", "10.1.0.0/16", None, 5).to_string(), "10.1.0.0/16 dev eth0 metric 5");
    }
}
