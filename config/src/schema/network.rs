//! `machine.network`: interfaces (matched by name or by a selector), their
//! addresses, routes, DHCP, bonds and VLANs; DNS settings; and the
//! network-configurator plugin that turns the platform's network document
//! into the platform layer.

use serde::{Deserialize, Serialize};

use crate::types::serde_util::nullable;
use crate::types::{Cidr, Hostname, IpAddress, LinkName, PluginId};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, expecting = "a mapping")]
pub struct Network {
    #[serde(default, deserialize_with = "nullable", skip_serializing_if = "Vec::is_empty")]
    pub interfaces: Vec<Interface>,
    #[serde(default, deserialize_with = "nullable", skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<IpAddress>,
    #[serde(default, deserialize_with = "nullable", skip_serializing_if = "Vec::is_empty")]
    pub search_domains: Vec<Hostname>,
    /// The plugin instance (world `network-configurator`) whose plan is the
    /// platform layer. Absent: the image's `network-cloudinit` when the
    /// platform serves a network document.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub configurator: Option<Configurator>,
    /// DHCPv4 on every physical link with carrier that nothing else
    /// configures (the built-in default layer). On by default.
    #[serde(default = "default_true", skip_serializing_if = "is_true")]
    pub default_dhcp: bool,
}

impl Default for Network {
    fn default() -> Self {
        Network {
            interfaces: Vec::new(),
            nameservers: Vec::new(),
            search_domains: Vec::new(),
            configurator: None,
            default_dhcp: true,
        }
    }
}

fn default_true() -> bool {
    true
}

fn is_true(b: &bool) -> bool {
    *b
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, expecting = "a mapping")]
pub struct Configurator {
    /// A plugin instance of `machine.plugins.instances`.
    pub instance: PluginId,
    /// Let the plan change the addresses or routes of the link the API
    /// is reached through (refused by default, so a bad plan cannot cut the
    /// operator off).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_api_link_change: bool,
}

/// Which existing link an interface entry configures, when not by name.
/// Every given field must match.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, expecting = "a mapping")]
pub struct Selector {
    /// `aa:bb:cc:dd:ee:ff`, any case.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hardware_addr: Option<String>,
    /// The kernel driver, like `virtio_net`; `*` globs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub driver: Option<String>,
    /// The bus path, like `0000:00:03.0`; `*` globs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bus_path: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, expecting = "a mapping")]
pub struct DhcpOptions {
    /// Metric of the routes the lease installs (default 1024).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route_metric: Option<u32>,
}

/// The Linux bonding modes, named as the kernel names them (sysfs
/// `bonding/mode`). The one definition: the network plan and the applier use it too.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum BondMode {
    #[serde(rename = "balance-rr")]
    BalanceRr,
    #[serde(rename = "active-backup")]
    ActiveBackup,
    #[serde(rename = "balance-xor")]
    BalanceXor,
    #[serde(rename = "broadcast")]
    Broadcast,
    #[serde(rename = "802.3ad")]
    Lacp,
    #[serde(rename = "balance-tlb")]
    BalanceTlb,
    #[serde(rename = "balance-alb")]
    BalanceAlb,
}

impl BondMode {
    /// Every mode, in the kernel's numbering (0–6).
    pub const ALL: [BondMode; 7] = [
        BondMode::BalanceRr,
        BondMode::ActiveBackup,
        BondMode::BalanceXor,
        BondMode::Broadcast,
        BondMode::Lacp,
        BondMode::BalanceTlb,
        BondMode::BalanceAlb,
    ];

    /// The kernel's name of the mode, which is also how a config spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            BondMode::BalanceRr => "balance-rr",
            BondMode::ActiveBackup => "active-backup",
            BondMode::BalanceXor => "balance-xor",
            BondMode::Broadcast => "broadcast",
            BondMode::Lacp => "802.3ad",
            BondMode::BalanceTlb => "balance-tlb",
            BondMode::BalanceAlb => "balance-alb",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LacpRate {
    Slow,
    Fast,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum XmitHashPolicy {
    #[serde(rename = "layer2")]
    Layer2,
    #[serde(rename = "layer2+3")]
    Layer23,
    #[serde(rename = "layer3+4")]
    Layer34,
    #[serde(rename = "encap2+3")]
    Encap23,
    #[serde(rename = "encap3+4")]
    Encap34,
}

impl XmitHashPolicy {
    /// Every policy.
    pub const ALL: [XmitHashPolicy; 5] = [
        XmitHashPolicy::Layer2,
        XmitHashPolicy::Layer23,
        XmitHashPolicy::Layer34,
        XmitHashPolicy::Encap23,
        XmitHashPolicy::Encap34,
    ];

    /// The kernel's name of the policy, which is also how a config spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            XmitHashPolicy::Layer2 => "layer2",
            XmitHashPolicy::Layer23 => "layer2+3",
            XmitHashPolicy::Layer34 => "layer3+4",
            XmitHashPolicy::Encap23 => "encap2+3",
            XmitHashPolicy::Encap34 => "encap3+4",
        }
    }

    /// The policy the kernel calls `name`.
    pub fn from_name(name: &str) -> Option<XmitHashPolicy> {
        XmitHashPolicy::ALL.into_iter().find(|p| p.as_str() == name)
    }
}

/// A bond bronzed creates under the interface's `name`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, expecting = "a mapping")]
pub struct Bond {
    pub mode: BondMode,
    /// Member links by name.
    pub interfaces: Vec<LinkName>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub miimon: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updelay: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub downdelay: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lacp_rate: Option<LacpRate>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub xmit_hash_policy: Option<XmitHashPolicy>,
}

/// An 802.1Q VLAN on the interface, named `<interface>.<vlanId>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, expecting = "a mapping")]
pub struct Vlan {
    pub vlan_id: u16,
    #[serde(default, deserialize_with = "nullable", skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<Cidr>,
    #[serde(default, deserialize_with = "nullable", skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<Route>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dhcp: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dhcp_options: Option<DhcpOptions>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, expecting = "a mapping")]
pub struct Interface {
    /// The link's name (for a bond: the name it is created with). Absent
    /// when `selector` picks the link.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<LinkName>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<Selector>,
    #[serde(default, deserialize_with = "nullable", skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<Cidr>,
    #[serde(default, deserialize_with = "nullable", skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<Route>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dhcp: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dhcp_options: Option<DhcpOptions>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bond: Option<Bond>,
    #[serde(default, deserialize_with = "nullable", skip_serializing_if = "Vec::is_empty")]
    pub vlans: Vec<Vlan>,
}

impl Interface {
    pub fn new(name: LinkName) -> Self {
        Interface {
            name: Some(name),
            selector: None,
            addresses: Vec::new(),
            routes: Vec::new(),
            mtu: None,
            dhcp: false,
            dhcp_options: None,
            bond: None,
            vlans: Vec::new(),
        }
    }

    /// How the entry is named in messages: its name, or its selector.
    pub fn label(&self) -> String {
        match (&self.name, &self.selector) {
            (Some(name), _) => name.to_string(),
            (None, Some(s)) => {
                let mut parts = Vec::new();
                if let Some(m) = &s.hardware_addr {
                    parts.push(format!("hardwareAddr {m}"));
                }
                if let Some(d) = &s.driver {
                    parts.push(format!("driver {d}"));
                }
                if let Some(b) = &s.bus_path {
                    parts.push(format!("busPath {b}"));
                }
                format!("selector ({})", parts.join(", "))
            }
            (None, None) => "an unnamed interface".into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, expecting = "a mapping")]
pub struct Route {
    pub network: Cidr,
    /// Absent: the network is directly reachable on the link.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<IpAddress>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric: Option<u32>,
    /// The gateway is on the link though no address's subnet holds it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub on_link: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `as_str` is the serde name, both ways, for every variant `ALL` lists,
    /// and `ALL` lists each variant once.
    #[test]
    fn kernel_names_are_the_config_names() {
        fn check<T: Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug + Copy>(
            all: &[T],
            name: fn(T) -> &'static str,
        ) {
            let mut names: Vec<&str> = all.iter().map(|v| name(*v)).collect();
            for (value, expected) in all.iter().zip(&names) {
                assert_eq!(serde_yaml::to_string(value).unwrap().trim(), *expected);
                assert_eq!(serde_yaml::from_str::<T>(expected).unwrap(), *value);
            }
            names.sort();
            names.dedup();
            assert_eq!(names.len(), all.len(), "a variant is listed twice");
        }
        check(&BondMode::ALL, BondMode::as_str);
        check(&XmitHashPolicy::ALL, XmitHashPolicy::as_str);
        assert_eq!(XmitHashPolicy::from_name("layer3+4"), Some(XmitHashPolicy::Layer34));
        assert_eq!(XmitHashPolicy::from_name("layer3"), None);
    }
}
