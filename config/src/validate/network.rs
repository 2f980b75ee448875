//! Rules for `machine.network`: unique interfaces, routes whose gateway
//! can reach their network, MTUs Linux accepts.

use std::collections::HashSet;

use crate::schema::Network;
use crate::validate::Validation;

const MTU_RANGE: std::ops::RangeInclusive<u32> = 68..=65535;

pub(super) fn check(network: &Network, out: &mut Validation) {
    let mut names = HashSet::new();
    for (i, iface) in network.interfaces.iter().enumerate() {
        let at = format!("machine.network.interfaces[{i}]");
        if !names.insert(iface.name.as_str()) {
            out.error(
                format!("{at}.name"),
                format!("interface {:?} is configured more than once", iface.name.as_str()),
            );
        }
        if let Some(mtu) = iface.mtu
            && !MTU_RANGE.contains(&mtu)
        {
            out.error(format!("{at}.mtu"), format!("{mtu} is outside 68..=65535"));
        }
        for (j, route) in iface.routes.iter().enumerate() {
            if let Some(gateway) = route.gateway
                && gateway.is_ipv4() != route.network.is_ipv4()
            {
                out.error(
                    format!("{at}.routes[{j}].gateway"),
                    format!("gateway {gateway} and network {} are of different IP families", route.network),
                );
            }
        }
    }
}
