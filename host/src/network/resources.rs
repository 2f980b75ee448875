//! The network status resource types: what the kernel reports about links,
//! addresses and routes, as last observed. They describe the machine, not
//! the config, so they are published whether or not bronzed applied them
//! (and in process mode, where it applies nothing).
//!
//! The lead registers [`LINK_STATUS`], [`ADDRESS_STATUS`] and
//! [`ROUTE_STATUS`] in `state::types::ALL`.

use crate::state::types::resource;
use serde::{Deserialize, Serialize};

/// Namespace of observed network state.
pub const NS_NETWORK: &str = "network";

/// One link (network interface); id = its name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LinkStatusSpec {
    pub name: String,
    pub index: u32,
    /// The driver kind for virtual links (`dummy`, `veth`, `bridge`, ...);
    /// empty for physical NICs and loopback.
    pub kind: String,
    /// The link layer (`ether`, `loopback`, `none`, ...).
    pub link_type: String,
    /// MAC address, `aa:bb:cc:dd:ee:ff`; empty when the link has none.
    pub hardware_address: String,
    pub mtu: u32,
    /// Administratively up (`IFF_UP`).
    pub up: bool,
    /// Carrier present (`IFF_LOWER_UP`).
    pub carrier: bool,
    /// RFC 2863 operational state as the kernel reports it: `up`, `down`,
    /// `lowerlayerdown`, `dormant`, `unknown`, ...
    pub operational_state: String,
    /// The MAC the device was made with (`IFLA_PERM_ADDRESS`), when the
    /// driver reports one; a bond member's `hardware_address` is the bond's.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub permanent_address: String,
    /// The kernel driver (`virtio_net`, `e1000e`): the basename of
    /// `/sys/class/net/<name>/device/driver`; empty for virtual links.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub driver: String,
    /// The device's bus address (`0000:00:03.0` for PCI, `virtio0`): the
    /// basename of `/sys/class/net/<name>/device`; empty for virtual links.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub bus_path: String,
    /// The link this one is enslaved to (a bond), from `IFLA_MASTER`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub master: String,
    /// A VLAN's 802.1Q id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vlan_id: Option<u16>,
    /// A VLAN's parent link, from `IFLA_LINK`; empty for other links.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub parent: String,
    /// A bond's mode as `/sys/class/net/<bond>/bonding/mode` names it
    /// (`active-backup`, `802.3ad`, ...); empty for other links.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub bond_mode: String,
}

resource!(
    LinkStatusSpec,
    LINK_STATUS,
    "LinkStatuses.bronze.dev",
    NS_NETWORK,
    sensitive = false,
    aliases = ["link", "links"]
);

impl LinkStatusSpec {
    /// The resource id: the link name.
    pub fn id(&self) -> String {
        self.name.clone()
    }
}

/// One address on a link; id = `link/cidr`, e.g. `eth0/10.0.2.15/24`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AddressStatusSpec {
    pub link: String,
    /// The address with its prefix length, host bits kept.
    pub address: String,
    /// `inet` or `inet6`.
    pub family: String,
    /// `universe` (global), `link`, `host`, ...
    pub scope: String,
}

resource!(
    AddressStatusSpec,
    ADDRESS_STATUS,
    "AddressStatuses.bronze.dev",
    NS_NETWORK,
    sensitive = false,
    aliases = ["address", "addresses"]
);

impl AddressStatusSpec {
    /// The resource id, `link/cidr`.
    pub fn id(&self) -> String {
        format!("{}/{}", self.link, self.address)
    }
}

/// One route of the main table; id = `destination via gateway dev link`
/// (`destination dev link` without a gateway).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RouteStatusSpec {
    /// The destination network, e.g. `0.0.0.0/0` for the IPv4 default route.
    pub destination: String,
    /// Empty for routes directly on the link.
    pub gateway: String,
    /// Empty for routes without an output link (blackhole, multipath).
    pub link: String,
    pub metric: u32,
    /// `inet` or `inet6`.
    pub family: String,
    /// Who installed it: `kernel` (prefix routes), `static` (bronzed), `boot`, `ra`, ...
    pub protocol: String,
    /// `universe`, `link`, `host`, ...
    pub scope: String,
}

resource!(
    RouteStatusSpec,
    ROUTE_STATUS,
    "RouteStatuses.bronze.dev",
    NS_NETWORK,
    sensitive = false,
    aliases = ["route", "routes"]
);

impl RouteStatusSpec {
    /// The resource id, `destination via gateway dev link`.
    pub fn id(&self) -> String {
        let mut id = self.destination.clone();
        if !self.gateway.is_empty() {
            id.push_str(" via ");
            id.push_str(&self.gateway);
        }
        if !self.link.is_empty() {
            id.push_str(" dev ");
            id.push_str(&self.link);
        }
        id
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_follow_the_documented_shapes() {
        let addr = AddressStatusSpec { link: "eth0".into(), address: "10.0.2.15/24".into(), ..Default::default() };
        assert_eq!(addr.id(), "eth0/10.0.2.15/24");
        let route = RouteStatusSpec {
            destination: "0.0.0.0/0".into(),
            gateway: "10.0.2.2".into(),
            link: "eth0".into(),
            ..Default::default()
        };
        assert_eq!(route.id(), "0.0.0.0/0 via 10.0.2.2 dev eth0");
        let direct = RouteStatusSpec { destination: "10.0.2.0/24".into(), link: "eth0".into(), ..Default::default() };
        assert_eq!(direct.id(), "10.0.2.0/24 dev eth0");
    }

    #[test]
    fn aliases_do_not_clash_with_the_other_types() {
        let ours = [&LINK_STATUS, &ADDRESS_STATUS, &ROUTE_STATUS];
        // Still correct once these types are registered in `ALL`: a type
        // is not compared with itself.
        for def in crate::state::types::ALL.iter().filter(|d| !ours.iter().any(|o| o.type_name == d.type_name)) {
            for alias in def.aliases {
                for mine in ours {
                    assert!(!mine.aliases.contains(alias), "{alias} is already used by {}", def.type_name);
                }
            }
        }
    }
}
