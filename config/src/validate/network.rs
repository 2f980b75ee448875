//! Rules for `machine.network`: unique interfaces, routes whose gateway
//! can reach their network, MTUs Linux accepts.

use std::collections::HashSet;

use crate::schema::Network;
use crate::validate::Validation;

const MTU_RANGE: std::ops::RangeInclusive<u32> = 68..=65535;

/// VLAN ids 802.1Q leaves usable.
const VLAN_IDS: std::ops::RangeInclusive<u16> = 1..=4094;
const MAX_LINK_NAME: usize = 15;

pub(super) fn check(network: &Network, out: &mut Validation) {
    let mut names = HashSet::new();
    let mut bond_members: HashSet<&str> = HashSet::new();
    for (i, iface) in network.interfaces.iter().enumerate() {
        let at = format!("machine.network.interfaces[{i}]");
        match (&iface.name, &iface.selector) {
            (None, None) => out.error(&at, "give the link's `name` or a `selector`"),
            (Some(_), Some(_)) => out.error(format!("{at}.selector"), "give either `name` or `selector`, not both"),
            (None, Some(selector)) => {
                if selector.hardware_addr.is_none() && selector.driver.is_none() && selector.bus_path.is_none() {
                    out.error(format!("{at}.selector"), "it selects nothing: give hardwareAddr, driver or busPath");
                }
                if let Some(mac) = &selector.hardware_addr
                    && !is_mac(mac)
                {
                    out.error(
                        format!("{at}.selector.hardwareAddr"),
                        format!("{mac:?} is not a hardware address; expected six hex pairs like aa:bb:cc:dd:ee:ff"),
                    );
                }
                if iface.bond.is_some() {
                    out.error(format!("{at}.bond"), "a bond is created under its `name`; give `name`, not a selector");
                }
                if !iface.vlans.is_empty() {
                    out.error(format!("{at}.vlans"), "VLANs are named after their parent; give the parent's `name`");
                }
            }
            (Some(name), None) => {
                if !names.insert(name.as_str()) {
                    out.error(
                        format!("{at}.name"),
                        format!("interface {:?} is configured more than once", name.as_str()),
                    );
                }
            }
        }
        if let Some(mtu) = iface.mtu
            && !MTU_RANGE.contains(&mtu)
        {
            out.error(format!("{at}.mtu"), format!("{mtu} is outside 68..=65535"));
        }
        check_routes(&at, &iface.routes, out);
        if let Some(bond) = &iface.bond {
            if bond.interfaces.is_empty() {
                out.error(format!("{at}.bond.interfaces"), "a bond needs at least one member");
            }
            for (j, member) in bond.interfaces.iter().enumerate() {
                if Some(member) == iface.name.as_ref() {
                    out.error(format!("{at}.bond.interfaces[{j}]"), "a bond cannot be its own member");
                } else if !bond_members.insert(member.as_str()) {
                    out.error(
                        format!("{at}.bond.interfaces[{j}]"),
                        format!("link {:?} is a member of more than one bond", member.as_str()),
                    );
                }
            }
            if bond.lacp_rate.is_some() && bond.mode != crate::schema::BondMode::Lacp {
                out.error(format!("{at}.bond.lacpRate"), "lacpRate applies to mode 802.3ad only");
            }
        }
        let mut ids = HashSet::new();
        for (j, vlan) in iface.vlans.iter().enumerate() {
            let vat = format!("{at}.vlans[{j}]");
            if !VLAN_IDS.contains(&vlan.vlan_id) {
                out.error(format!("{vat}.vlanId"), format!("{} is outside 1..=4094", vlan.vlan_id));
            }
            if !ids.insert(vlan.vlan_id) {
                out.error(format!("{vat}.vlanId"), format!("VLAN {} is configured twice", vlan.vlan_id));
            }
            if let Some(name) = &iface.name {
                let vname = format!("{}.{}", name.as_str(), vlan.vlan_id);
                if vname.len() > MAX_LINK_NAME {
                    out.error(
                        format!("{vat}.vlanId"),
                        format!("the VLAN's link name {vname:?} would be {} bytes; the limit is 15", vname.len()),
                    );
                }
            }
            if let Some(mtu) = vlan.mtu
                && !MTU_RANGE.contains(&mtu)
            {
                out.error(format!("{vat}.mtu"), format!("{mtu} is outside 68..=65535"));
            }
            check_routes(&vat, &vlan.routes, out);
        }
    }
    // A bond member configured with its own addresses would fight the bond.
    for (i, iface) in network.interfaces.iter().enumerate() {
        if let Some(name) = &iface.name
            && bond_members.contains(name.as_str())
            && (!iface.addresses.is_empty() || iface.dhcp || !iface.routes.is_empty())
        {
            out.error(
                format!("machine.network.interfaces[{i}]"),
                format!("{:?} is a bond member; its addresses, routes and DHCP belong on the bond", name.as_str()),
            );
        }
    }
}

fn check_routes(at: &str, routes: &[crate::schema::Route], out: &mut Validation) {
    for (j, route) in routes.iter().enumerate() {
        if let Some(gateway) = route.gateway
            && gateway.is_ipv4() != route.network.is_ipv4()
        {
            out.error(
                format!("{at}.routes[{j}].gateway"),
                format!("gateway {gateway} and network {} are of different IP families", route.network),
            );
        }
        if route.on_link && route.gateway.is_none() {
            out.error(format!("{at}.routes[{j}].onLink"), "onLink needs a gateway");
        }
    }
}

fn is_mac(text: &str) -> bool {
    let parts: Vec<&str> = text.split(':').collect();
    parts.len() == 6 && parts.iter().all(|p| p.len() == 2 && p.chars().all(|c| c.is_ascii_hexdigit()))
}
