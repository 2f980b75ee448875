//! The kernel's network configuration behind a small trait: the handful of
//! netlink operations [`super::apply`] needs, so the apply logic (what to
//! add, what to remove, what counts as "already there") is tested with a
//! recording fake, and the real [`RtNetlink`] is tested in a network
//! namespace.
//!
//! Operations return the raw [`NetlinkError`] (with its errno); the caller
//! decides which errnos are fine and names the link and value in its error.

use super::observe::{self, Snapshot};
use super::plan::{BondMode, BondPlan, RoutePlan, XmitHashPolicy};
use super::{NetError, NetlinkError};
use bronze_config::Cidr;
use futures::TryStreamExt;
use futures::future::BoxFuture;
use rtnetlink::packet_route::link::{self as rtlink, BondLacpRate, BondXmitHashPolicy};
use rtnetlink::packet_route::route::{RouteMessage, RouteScope};
use rtnetlink::{AddressMessageBuilder, Handle, LinkBond, LinkUnspec, LinkVlan, RouteMessageBuilder};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The netlink operations bronzed uses. Object-safe so the node picks the
/// implementation once (`Arc<dyn Netlink>`).
pub trait Netlink: Send + Sync {
    /// The index of link `name`, `None` when there is no such link.
    fn link_index<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Option<u32>, NetlinkError>>;
    /// Sets the link administratively up or down.
    fn set_link(&self, index: u32, up: bool) -> BoxFuture<'_, Result<(), NetlinkError>>;
    /// Sets the link's MTU.
    fn set_mtu(&self, index: u32, mtu: u32) -> BoxFuture<'_, Result<(), NetlinkError>>;
    /// Adds an address; `EEXIST` when it is already there.
    fn add_address(&self, index: u32, address: Cidr) -> BoxFuture<'_, Result<(), NetlinkError>>;
    /// Removes an address; `EADDRNOTAVAIL` when it is not there.
    fn remove_address(&self, index: u32, address: Cidr) -> BoxFuture<'_, Result<(), NetlinkError>>;
    /// Adds a main-table route out of link `index`; `EEXIST` when one with
    /// the same destination and metric is already there.
    fn add_route<'a>(&'a self, index: u32, route: &'a RoutePlan) -> BoxFuture<'a, Result<(), NetlinkError>>;
    /// Removes a route added by [`Netlink::add_route`]; `ESRCH` when it is not there.
    fn remove_route<'a>(&'a self, index: u32, route: &'a RoutePlan) -> BoxFuture<'a, Result<(), NetlinkError>>;
    /// Creates bond `name` (down, no members) with the plan's mode and
    /// options; `EEXIST` when a link of that name exists.
    fn create_bond<'a>(&'a self, name: &'a str, bond: &'a BondPlan) -> BoxFuture<'a, Result<(), NetlinkError>>;
    /// Creates VLAN `name` with 802.1Q id `id` on link `parent` (down).
    fn create_vlan<'a>(&'a self, name: &'a str, parent: u32, id: u16) -> BoxFuture<'a, Result<(), NetlinkError>>;
    /// Enslaves link `index` to `master` (`ip link set .. master ..`), or
    /// releases it from its master with `None` (`nomaster`). A bond member
    /// must be down to be enslaved.
    fn set_master(&self, index: u32, master: Option<u32>) -> BoxFuture<'_, Result<(), NetlinkError>>;
    /// Deletes link `index`; `ENODEV` when it is gone.
    fn delete_link(&self, index: u32) -> BoxFuture<'_, Result<(), NetlinkError>>;
    /// Every link, address and main-table route.
    fn snapshot(&self) -> BoxFuture<'_, Result<Snapshot, NetError>>;
}

/// The kernel, through one rtnetlink socket.
#[derive(Clone)]
pub struct RtNetlink {
    handle: Handle,
}

impl std::fmt::Debug for RtNetlink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RtNetlink").finish_non_exhaustive()
    }
}

impl RtNetlink {
    /// Opens a netlink socket in the calling thread's network namespace and
    /// runs its connection on the current tokio runtime. The connection
    /// ends when the last clone of this value is dropped.
    pub fn connect() -> Result<Self, NetError> {
        let (connection, handle, _unsolicited) =
            rtnetlink::new_connection().map_err(|error| NetError::Connect { error })?;
        tokio::spawn(connection);
        Ok(Self { handle })
    }

    /// The raw handle, for tests that create links.
    pub fn handle(&self) -> &Handle {
        &self.handle
    }
}

impl Netlink for RtNetlink {
    fn link_index<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Option<u32>, NetlinkError>> {
        Box::pin(async move {
            let mut links = self.handle.link().get().match_name(name.to_string()).execute();
            match links.try_next().await {
                Ok(found) => Ok(found.map(|link| link.header.index)),
                Err(e) => {
                    let e = NetlinkError::from(e);
                    if e.is(libc::ENODEV) { Ok(None) } else { Err(e) }
                }
            }
        })
    }

    fn set_link(&self, index: u32, up: bool) -> BoxFuture<'_, Result<(), NetlinkError>> {
        Box::pin(async move {
            let builder = LinkUnspec::new_with_index(index);
            let builder = if up { builder.up() } else { builder.down() };
            Ok(self.handle.link().set(builder.build()).execute().await?)
        })
    }

    fn set_mtu(&self, index: u32, mtu: u32) -> BoxFuture<'_, Result<(), NetlinkError>> {
        Box::pin(async move {
            Ok(self.handle.link().set(LinkUnspec::new_with_index(index).mtu(mtu).build()).execute().await?)
        })
    }

    fn add_address(&self, index: u32, address: Cidr) -> BoxFuture<'_, Result<(), NetlinkError>> {
        Box::pin(
            async move { Ok(self.handle.address().add(index, address.addr(), address.prefix_len()).execute().await?) },
        )
    }

    fn remove_address(&self, index: u32, address: Cidr) -> BoxFuture<'_, Result<(), NetlinkError>> {
        Box::pin(async move {
            let message = match address.addr() {
                IpAddr::V4(v4) => {
                    AddressMessageBuilder::<Ipv4Addr>::new().index(index).address(v4, address.prefix_len()).build()
                }
                IpAddr::V6(v6) => {
                    AddressMessageBuilder::<Ipv6Addr>::new().index(index).address(v6, address.prefix_len()).build()
                }
            };
            Ok(self.handle.address().del(message).execute().await?)
        })
    }

    fn add_route<'a>(&'a self, index: u32, route: &'a RoutePlan) -> BoxFuture<'a, Result<(), NetlinkError>> {
        Box::pin(async move { Ok(self.handle.route().add(route_message(index, route)?).execute().await?) })
    }

    fn remove_route<'a>(&'a self, index: u32, route: &'a RoutePlan) -> BoxFuture<'a, Result<(), NetlinkError>> {
        Box::pin(async move { Ok(self.handle.route().del(route_message(index, route)?).execute().await?) })
    }

    fn create_bond<'a>(&'a self, name: &'a str, bond: &'a BondPlan) -> BoxFuture<'a, Result<(), NetlinkError>> {
        Box::pin(async move { Ok(self.handle.link().add(bond_message(name, bond)).execute().await?) })
    }

    fn create_vlan<'a>(&'a self, name: &'a str, parent: u32, id: u16) -> BoxFuture<'a, Result<(), NetlinkError>> {
        Box::pin(async move { Ok(self.handle.link().add(LinkVlan::new(name, parent, id).build()).execute().await?) })
    }

    fn set_master(&self, index: u32, master: Option<u32>) -> BoxFuture<'_, Result<(), NetlinkError>> {
        Box::pin(async move {
            let builder = LinkUnspec::new_with_index(index);
            let builder = match master {
                Some(master) => builder.controller(master),
                None => builder.nocontroller(),
            };
            Ok(self.handle.link().set(builder.build()).execute().await?)
        })
    }

    fn delete_link(&self, index: u32) -> BoxFuture<'_, Result<(), NetlinkError>> {
        Box::pin(async move { Ok(self.handle.link().del(index).execute().await?) })
    }

    fn snapshot(&self) -> BoxFuture<'_, Result<Snapshot, NetError>> {
        Box::pin(observe::dump(&self.handle))
    }
}

/// The message that creates a planned bond (as `ip link add NAME type bond
/// mode M miimon N ...`). Options the plan leaves out keep the kernel's
/// defaults.
fn bond_message(name: &str, bond: &BondPlan) -> rtnetlink::packet_route::link::LinkMessage {
    let mut builder = LinkBond::new(name).mode(bond_mode(bond.mode));
    if let Some(miimon) = bond.miimon {
        builder = builder.miimon(miimon);
    }
    if let Some(updelay) = bond.updelay {
        builder = builder.updelay(updelay);
    }
    if let Some(downdelay) = bond.downdelay {
        builder = builder.downdelay(downdelay);
    }
    if bond.lacp_rate_fast {
        builder = builder.ad_lacp_rate(BondLacpRate::Fast);
    }
    if let Some(policy) = bond.xmit_hash_policy {
        builder = builder.xmit_hash_policy(xmit_hash_policy(policy));
    }
    builder.build()
}

fn bond_mode(mode: BondMode) -> rtlink::BondMode {
    match mode {
        BondMode::BalanceRr => rtlink::BondMode::BalanceRr,
        BondMode::ActiveBackup => rtlink::BondMode::ActiveBackup,
        BondMode::BalanceXor => rtlink::BondMode::BalanceXor,
        BondMode::Broadcast => rtlink::BondMode::Broadcast,
        BondMode::Lacp => rtlink::BondMode::Ieee8023Ad,
        BondMode::BalanceTlb => rtlink::BondMode::BalanceTlb,
        BondMode::BalanceAlb => rtlink::BondMode::BalanceAlb,
    }
}

fn xmit_hash_policy(policy: XmitHashPolicy) -> BondXmitHashPolicy {
    match policy {
        XmitHashPolicy::Layer2 => BondXmitHashPolicy::Layer2,
        XmitHashPolicy::Layer23 => BondXmitHashPolicy::Layer23,
        XmitHashPolicy::Layer34 => BondXmitHashPolicy::Layer34,
        XmitHashPolicy::Encap23 => BondXmitHashPolicy::Encap23,
        XmitHashPolicy::Encap34 => BondXmitHashPolicy::Encap34,
    }
}

/// The message that adds (and, identical, deletes) a planned route: main
/// table, protocol static, our explicit metric; direct routes get link
/// scope as `ip route add ... dev` gives them, so IPv4 deletion matches.
fn route_message(index: u32, route: &RoutePlan) -> Result<RouteMessage, NetlinkError> {
    // rtnetlink does not export its builder error type; only its text matters.
    fn invalid(e: impl std::fmt::Display) -> NetlinkError {
        NetlinkError { errno: None, message: e.to_string() }
    }
    let dest = route.destination;
    let builder = RouteMessageBuilder::<IpAddr>::new()
        .destination_prefix(dest.addr(), dest.prefix_len())
        .map_err(invalid)?
        .output_interface(index)
        .priority(route.metric);
    let builder = match route.gateway {
        Some(gateway) => builder.gateway(gateway).map_err(invalid)?,
        None => builder.scope(RouteScope::Link),
    };
    // RTNH_F_ONLINK: the kernel takes the gateway as on the link without
    // an address's subnet holding it (`ip route add .. via GW dev L onlink`).
    let builder = if route.on_link && route.gateway.is_some() { builder.onlink() } else { builder };
    Ok(builder.build())
}
