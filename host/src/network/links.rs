//! Which link a config means: by name, MAC, driver or bus path (Talos's
//! `deviceSelector`), resolved against the observed links.
//!
//! Pure: selectors are matched against [`LinkStatusSpec`]s (which the
//! observer fills from netlink and sysfs), so every rule is tested without
//! a kernel. A selector other than a name matches only physical links:
//! never loopback, never a link bronzed or anyone stacks on another (bond,
//! VLAN, bridge, ...), whose MAC is copied from the link under it.

use super::resources::LinkStatusSpec;
use std::fmt;

/// Link kinds that sit on other links and copy their MAC; a MAC, driver or
/// bus-path selector never picks one of them.
const STACKED_KINDS: [&str; 9] = ["bond", "vlan", "bridge", "team", "macvlan", "macvtap", "ipvlan", "vrf", "vxlan"];

/// How a config names a link.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum LinkSelector {
    /// The link's name, exactly.
    Name(String),
    /// The MAC address, `aa:bb:cc:dd:ee:ff`, compared case-insensitively
    /// with the permanent address when the driver reports one (a bond
    /// member's current MAC is the bond's), else the current one.
    Mac(String),
    /// The kernel driver (`virtio_net`); `*` matches any run of characters
    /// (`e1000*`).
    Driver(String),
    /// The bus address (`0000:00:03.0`); `*` globs like `0000:00:*`.
    BusPath(String),
}

impl fmt::Display for LinkSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Name(name) => write!(f, "name {name}"),
            Self::Mac(mac) => write!(f, "hardware address {mac}"),
            Self::Driver(driver) => write!(f, "driver {driver}"),
            Self::BusPath(bus_path) => write!(f, "bus path {bus_path}"),
        }
    }
}

/// Why a selector does not name one link.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LinkMatchError {
    #[error("link selector {selector} matches more than one link: {first} and {second}")]
    Ambiguous { selector: String, first: String, second: String },
}

impl LinkSelector {
    /// Whether `link` is one this selector means.
    pub fn matches(&self, link: &LinkStatusSpec) -> bool {
        match self {
            Self::Name(name) => link.name == *name,
            _ if !is_physical(link) => false,
            Self::Mac(mac) => {
                let own =
                    if link.permanent_address.is_empty() { &link.hardware_address } else { &link.permanent_address };
                !own.is_empty() && own.eq_ignore_ascii_case(mac)
            }
            Self::Driver(pattern) => !link.driver.is_empty() && glob(pattern, &link.driver),
            Self::BusPath(pattern) => !link.bus_path.is_empty() && glob(pattern, &link.bus_path),
        }
    }

    /// The name of the one link in `links` this selector means; `None`
    /// when none does (yet: a NIC may appear later). Two matches are an
    /// error naming both: a config must not depend on probe order.
    pub fn resolve(&self, links: &[LinkStatusSpec]) -> Result<Option<String>, LinkMatchError> {
        let mut found = links.iter().filter(|l| self.matches(l));
        let Some(first) = found.next() else { return Ok(None) };
        if let Some(second) = found.next() {
            return Err(LinkMatchError::Ambiguous {
                selector: self.to_string(),
                first: first.name.clone(),
                second: second.name.clone(),
            });
        }
        Ok(Some(first.name.clone()))
    }
}

/// Not loopback and not stacked on another link.
fn is_physical(link: &LinkStatusSpec) -> bool {
    link.link_type != "loopback" && link.name != "lo" && !STACKED_KINDS.contains(&link.kind.as_str())
}

/// Whether `text` matches `pattern`, where each `*` stands for any run of
/// characters (possibly empty) and everything else is literal.
pub fn glob(pattern: &str, text: &str) -> bool {
    let mut parts = pattern.split('*');
    // `split` always yields at least one part.
    let first = parts.next().unwrap_or_default();
    let Some(mut rest) = text.strip_prefix(first) else { return false };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else { return rest.is_empty() };
    for part in middle {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nic(name: &str, mac: &str, driver: &str, bus_path: &str) -> LinkStatusSpec {
        LinkStatusSpec {
            name: name.into(),
            link_type: "ether".into(),
            hardware_address: mac.into(),
            driver: driver.into(),
            bus_path: bus_path.into(),
            ..Default::default()
        }
    }

    fn machine() -> Vec<LinkStatusSpec> {
        vec![
            LinkStatusSpec {
                name: "lo".into(),
                link_type: "loopback".into(),
                hardware_address: "00:00:00:00:00:00".into(),
                ..Default::default()
            },
            nic("eth0", "52:54:00:12:34:56", "virtio_net", "0000:00:03.0"),
            nic("eth1", "52:54:00:ab:cd:ef", "e1000e", "0000:01:00.0"),
            nic("eth2", "52:54:00:ab:cd:f0", "e1000e", "0000:01:00.1"),
            LinkStatusSpec {
                name: "bond0".into(),
                kind: "bond".into(),
                link_type: "ether".into(),
                hardware_address: "52:54:00:12:34:56".into(),
                ..Default::default()
            },
            LinkStatusSpec {
                name: "veth0".into(),
                kind: "veth".into(),
                link_type: "ether".into(),
                hardware_address: "0a:00:00:00:00:01".into(),
                ..Default::default()
            },
        ]
    }

    fn resolve(selector: LinkSelector) -> Result<Option<String>, LinkMatchError> {
        selector.resolve(&machine())
    }

    #[test]
    fn by_mac_case_insensitively_and_never_the_bond_that_copied_it() {
        assert_eq!(resolve(LinkSelector::Mac("52:54:00:12:34:56".into())), Ok(Some("eth0".into())));
        assert_eq!(resolve(LinkSelector::Mac("52:54:00:AB:CD:EF".into())), Ok(Some("eth1".into())));
        assert_eq!(resolve(LinkSelector::Mac("0A:00:00:00:00:01".into())), Ok(Some("veth0".into())));
        assert_eq!(resolve(LinkSelector::Mac("52:54:00:00:00:99".into())), Ok(None));
    }

    #[test]
    fn by_mac_prefers_the_permanent_address_of_a_bond_member() {
        let mut links = machine();
        // eth1 enslaved: its current MAC is now the bond's (eth0's).
        links[2].hardware_address = "52:54:00:12:34:56".into();
        links[2].permanent_address = "52:54:00:ab:cd:ef".into();
        links[2].master = "bond0".into();
        assert_eq!(LinkSelector::Mac("52:54:00:ab:cd:ef".into()).resolve(&links), Ok(Some("eth1".into())));
        assert_eq!(LinkSelector::Mac("52:54:00:12:34:56".into()).resolve(&links), Ok(Some("eth0".into())));
    }

    #[test]
    fn by_driver_with_a_glob() {
        assert_eq!(resolve(LinkSelector::Driver("virtio_net".into())), Ok(Some("eth0".into())));
        assert_eq!(resolve(LinkSelector::Driver("virtio*".into())), Ok(Some("eth0".into())));
        assert_eq!(resolve(LinkSelector::Driver("virtio".into())), Ok(None), "no implicit prefix match");
        assert!(resolve(LinkSelector::Driver("*".into())).unwrap_err().to_string().contains("eth0 and eth1"));
    }

    #[test]
    fn by_bus_path_with_trailing_and_inner_globs() {
        assert_eq!(resolve(LinkSelector::BusPath("0000:00:*".into())), Ok(Some("eth0".into())));
        assert_eq!(resolve(LinkSelector::BusPath("0000:01:00.1".into())), Ok(Some("eth2".into())));
        assert_eq!(resolve(LinkSelector::BusPath("0000:*:00.1".into())), Ok(Some("eth2".into())));
        assert_eq!(resolve(LinkSelector::BusPath("0000:02:*".into())), Ok(None));
    }

    #[test]
    fn two_physical_matches_are_an_error_naming_both() {
        assert_eq!(
            resolve(LinkSelector::Driver("e1000e".into())).unwrap_err().to_string(),
            "link selector driver e1000e matches more than one link: eth1 and eth2"
        );
        assert_eq!(
            resolve(LinkSelector::BusPath("0000:01:*".into())),
            Err(LinkMatchError::Ambiguous {
                selector: "bus path 0000:01:*".into(),
                first: "eth1".into(),
                second: "eth2".into()
            })
        );
    }

    #[test]
    fn loopback_only_by_name() {
        assert_eq!(resolve(LinkSelector::Mac("00:00:00:00:00:00".into())), Ok(None));
        assert_eq!(resolve(LinkSelector::Name("lo".into())), Ok(Some("lo".into())));
        assert_eq!(resolve(LinkSelector::Name("bond0".into())), Ok(Some("bond0".into())));
        assert_eq!(resolve(LinkSelector::Name("eth9".into())), Ok(None));
    }

    #[test]
    fn glob_rules() {
        assert!(glob("abc", "abc") && !glob("abc", "abcd") && !glob("abc", "ab"));
        assert!(glob("*", "") && glob("*", "anything"));
        assert!(glob("a*", "a") && glob("a*c", "abc") && glob("a*c", "ac") && !glob("a*c", "ab"));
        assert!(glob("*:00.1", "0000:01:00.1") && glob("0*:*:*.1", "0000:01:00.1"));
        assert!(!glob("a*bc*bc", "abc"), "overlapping parts are not reused");
        assert!(glob("a*b*c", "aXbYc") && !glob("a*b*c", "aXcYb"));
    }
}
