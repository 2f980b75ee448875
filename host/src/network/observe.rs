//! Reads the kernel's links, addresses and main-table routes and publishes
//! them as `LinkStatus`, `AddressStatus` and `RouteStatus` resources.
//!
//! Read-only: a netlink dump needs no privilege, so process mode shows the
//! host's network too. Turning netlink messages into specs is pure
//! ([`link_status`], [`address_status`], [`route_status`]); [`Publisher`]
//! makes the store match a [`Snapshot`], removing what disappeared.

use super::NetError;
use super::netlink::{Netlink, RtNetlink};
use super::resources::{AddressStatusSpec, LinkStatusSpec, RouteStatusSpec};
use crate::state::{ResourceSpec, Store, StoreError, Writer};
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::packet_route::address::{AddressAttribute, AddressMessage};
use rtnetlink::packet_route::link::{
    BondMode, InfoBond, InfoData, InfoVlan, LinkAttribute, LinkExtentMask, LinkFlags, LinkInfo, LinkMessage,
};
use rtnetlink::packet_route::route::{RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteType, RouteVia};
use rtnetlink::{Handle, MulticastGroup, RouteMessageBuilder};
use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

/// The network as the kernel reports it at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Ordered by index.
    pub links: Vec<LinkStatusSpec>,
    /// Ordered by link, then address.
    pub addresses: Vec<AddressStatusSpec>,
    /// Ordered by family, destination, metric.
    pub routes: Vec<RouteStatusSpec>,
}

impl Snapshot {
    /// Builds a snapshot from dumped messages; messages that cannot be
    /// described (no name, other tables, non-unicast routes) are skipped.
    pub fn from_messages(links: &[LinkMessage], addresses: &[AddressMessage], routes: &[RouteMessage]) -> Self {
        let mut out = Snapshot { links: links.iter().filter_map(link_status).collect(), ..Default::default() };
        out.links.sort_by_key(|l| l.index);
        let names: HashMap<u32, String> = out.links.iter().map(|l| (l.index, l.name.clone())).collect();
        let masters: HashMap<u32, u32> =
            links.iter().filter_map(|l| master_index(l).map(|master| (l.header.index, master))).collect();
        let parents: HashMap<u32, u32> =
            links.iter().filter_map(|l| lower_index(l).map(|lower| (l.header.index, lower))).collect();
        for link in &mut out.links {
            if let Some(master) = masters.get(&link.index) {
                link.master = link_name(*master, &names);
            }
            // IFLA_LINK of a veth is its peer, maybe in another namespace:
            // only a VLAN's is its parent here.
            if link.kind == "vlan"
                && let Some(parent) = parents.get(&link.index)
            {
                link.parent = link_name(*parent, &names);
            }
        }
        out.addresses = addresses.iter().filter_map(|a| address_status(a, &names)).collect();
        out.addresses.sort_by(|a, b| (&a.link, &a.family, &a.address).cmp(&(&b.link, &b.family, &b.address)));
        out.routes = routes.iter().filter_map(|r| route_status(r, &names)).collect();
        out.routes.sort_by(|a, b| {
            (&a.family, &a.destination, a.metric, &a.link).cmp(&(&b.family, &b.destination, b.metric, &b.link))
        });
        out
    }

    pub fn link(&self, name: &str) -> Option<&LinkStatusSpec> {
        self.links.iter().find(|l| l.name == name)
    }

    /// Routes with their resource ids. Two routes that differ only in
    /// metric would share an id; the lowest metric (the one in use) keeps
    /// the plain id and the others get ` metric N` appended.
    pub fn route_ids(&self) -> Vec<(String, &RouteStatusSpec)> {
        let mut by_metric: Vec<&RouteStatusSpec> = self.routes.iter().collect();
        by_metric.sort_by_key(|r| r.metric);
        let mut seen = HashSet::new();
        by_metric
            .into_iter()
            .map(|r| {
                let id = r.id();
                if seen.insert(id.clone()) { (id, r) } else { (format!("{id} metric {}", r.metric), r) }
            })
            .collect()
    }
}

/// Reads the network of the calling thread's namespace through a
/// short-lived netlink socket (closed on return, so a failed socket never
/// lingers between observations).
pub async fn observe() -> Result<Snapshot, NetError> {
    RtNetlink::connect()?.snapshot().await
}

/// Where the status controller gets snapshots from: the kernel, or a
/// scripted fake in tests.
pub trait Observe: Send + Sync {
    fn snapshot(&self) -> BoxFuture<'_, Result<Snapshot, NetError>>;

    /// A stream that yields whenever links, addresses or routes may have
    /// changed (bursts are not coalesced; the caller debounces). The
    /// default never yields: the caller's timer is all there is.
    fn changes(&self) -> Result<BoxStream<'static, ()>, NetError> {
        Ok(futures::stream::pending().boxed())
    }
}

/// The rtnetlink groups whose notifications mean "observe again".
pub const CHANGE_GROUPS: [MulticastGroup; 5] = [
    MulticastGroup::Link,
    MulticastGroup::Ipv4Ifaddr,
    MulticastGroup::Ipv6Ifaddr,
    MulticastGroup::Ipv4Route,
    MulticastGroup::Ipv6Route,
];

/// Observes the kernel with [`observe`] (a fresh socket per snapshot) and
/// adds each link's driver and bus path from sysfs.
#[derive(Debug, Clone)]
pub struct KernelObserver {
    sysfs: PathBuf,
}

impl KernelObserver {
    /// `sysfs` is the sysfs root (`/sys` on a node; bronzed's `--sysfs`).
    pub fn new(sysfs: impl Into<PathBuf>) -> Self {
        Self { sysfs: sysfs.into() }
    }
}

impl Observe for KernelObserver {
    fn snapshot(&self) -> BoxFuture<'_, Result<Snapshot, NetError>> {
        Box::pin(async move {
            let mut snapshot = observe().await?;
            for link in &mut snapshot.links {
                read_device(&self.sysfs, link);
            }
            Ok(snapshot)
        })
    }

    /// Subscribes a netlink socket (opened in the calling thread's network
    /// namespace) to [`CHANGE_GROUPS`]; the stream ends if the socket dies.
    fn changes(&self) -> Result<BoxStream<'static, ()>, NetError> {
        let (connection, handle, messages) =
            rtnetlink::new_multicast_connection(&CHANGE_GROUPS).map_err(|error| NetError::Connect { error })?;
        tokio::spawn(connection);
        // The handle lives as long as the stream: dropping the stream
        // drops the last handle and ends the connection task.
        Ok(messages
            .map(move |_| {
                let _keep = &handle;
            })
            .boxed())
    }
}

/// Fills `link`'s driver and bus path from `<sysfs>/class/net/<name>/device`
/// (a symlink to the device, whose `driver` is a symlink to the driver).
/// Virtual links have no `device`: both stay empty.
pub fn read_device(sysfs: &Path, link: &mut LinkStatusSpec) {
    // Kernel link names cannot hold '/', but this is a path: be sure.
    if link.name.is_empty() || link.name.contains('/') || link.name == "." || link.name == ".." {
        return;
    }
    let device = sysfs.join("class/net").join(&link.name).join("device");
    let basename = |path: &Path| {
        std::fs::read_link(path).ok().and_then(|target| target.file_name().map(|n| n.to_string_lossy().into_owned()))
    };
    link.bus_path = basename(&device).unwrap_or_default();
    link.driver = basename(&device.join("driver")).unwrap_or_default();
}

/// The link dump every snapshot takes, without the IPv6 statistics
/// (`IFLA_EXT_MASK` with `RTEXT_FILTER_SKIP_STATS`, as `ip link show`
/// asks): no status reads them, and they are a quarter of each link's
/// message for the kernel to fill and for the parser to walk (`lo` on
/// Linux 6.18: 1,468 → 1,100 bytes). The kernel sends `IFLA_STATS64`
/// regardless.
pub(crate) fn link_dump(handle: &Handle) -> rtnetlink::LinkGetRequest {
    handle.link().get().set_filter_mask(AddressFamily::Unspec, vec![LinkExtentMask::SkipStats])
}

/// Dumps links, addresses and both families' routes over `handle`.
pub(crate) async fn dump(handle: &Handle) -> Result<Snapshot, NetError> {
    let links: Vec<LinkMessage> =
        link_dump(handle).execute().try_collect().await.map_err(|e| NetError::ListLinks { error: e.into() })?;
    let addresses: Vec<AddressMessage> = handle
        .address()
        .get()
        .execute()
        .try_collect()
        .await
        .map_err(|e| NetError::ListAddresses { error: e.into() })?;
    let list_routes = |e: rtnetlink::Error| NetError::ListRoutes { error: e.into() };
    let mut routes: Vec<RouteMessage> = handle
        .route()
        .get(RouteMessageBuilder::<Ipv4Addr>::new().build())
        .execute()
        .try_collect()
        .await
        .map_err(list_routes)?;
    // A kernel without IPv6 answers an IPv6 dump with every family's
    // routes (or an error); the family filter in `route_status` and this
    // tolerance keep the IPv4 view intact.
    match handle.route().get(RouteMessageBuilder::<Ipv6Addr>::new().build()).execute().try_collect::<Vec<_>>().await {
        Ok(v6) => routes.extend(v6.into_iter().filter(|r| r.header.address_family == AddressFamily::Inet6)),
        Err(e) => tracing::debug!(error = %e, "no IPv6 routes"),
    }
    routes.retain(|r| matches!(r.header.address_family, AddressFamily::Inet | AddressFamily::Inet6));
    Ok(Snapshot::from_messages(&links, &addresses, &routes))
}

/// A link message as a `LinkStatus` spec; `None` without a name.
pub fn link_status(msg: &LinkMessage) -> Option<LinkStatusSpec> {
    let mut spec = LinkStatusSpec {
        index: msg.header.index,
        link_type: msg.header.link_layer_type.to_string().to_ascii_lowercase(),
        up: msg.header.flags.contains(LinkFlags::Up),
        carrier: msg.header.flags.contains(LinkFlags::LowerUp),
        ..Default::default()
    };
    for attr in &msg.attributes {
        match attr {
            LinkAttribute::IfName(name) => spec.name = name.clone(),
            LinkAttribute::Mtu(mtu) => spec.mtu = *mtu,
            LinkAttribute::Address(mac) => spec.hardware_address = hex_colons(mac),
            LinkAttribute::PermAddress(mac) => spec.permanent_address = hex_colons(mac),
            LinkAttribute::OperState(state) => spec.operational_state = state.to_string().to_ascii_lowercase(),
            LinkAttribute::LinkInfo(infos) => {
                for info in infos {
                    match info {
                        LinkInfo::Kind(kind) => spec.kind = kind.to_string(),
                        LinkInfo::Data(InfoData::Vlan(vlan)) => {
                            spec.vlan_id = vlan.iter().find_map(|v| match v {
                                InfoVlan::Id(id) => Some(*id),
                                _ => None,
                            })
                        }
                        LinkInfo::Data(InfoData::Bond(bond)) => {
                            if let Some(mode) = bond.iter().find_map(|b| match b {
                                InfoBond::Mode(mode) => Some(*mode),
                                _ => None,
                            }) {
                                spec.bond_mode = bond_mode_name(mode);
                            }
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    (!spec.name.is_empty()).then_some(spec)
}

/// A bond mode as the kernel's sysfs names it.
fn bond_mode_name(mode: BondMode) -> String {
    match mode {
        BondMode::BalanceRr => "balance-rr".into(),
        BondMode::ActiveBackup => "active-backup".into(),
        BondMode::BalanceXor => "balance-xor".into(),
        BondMode::Broadcast => "broadcast".into(),
        BondMode::Ieee8023Ad => "802.3ad".into(),
        BondMode::BalanceTlb => "balance-tlb".into(),
        BondMode::BalanceAlb => "balance-alb".into(),
        BondMode::Other(n) => format!("mode {n}"),
        // The enum is non-exhaustive upstream.
        #[allow(unreachable_patterns)]
        _ => "unknown".into(),
    }
}

/// The index of the link under this one (`IFLA_LINK`), if any.
fn lower_index(msg: &LinkMessage) -> Option<u32> {
    msg.attributes.iter().find_map(|attr| match attr {
        LinkAttribute::Link(lower) if *lower != 0 => Some(*lower),
        _ => None,
    })
}

/// The index of the link's master (`IFLA_MASTER`), if it has one.
fn master_index(msg: &LinkMessage) -> Option<u32> {
    msg.attributes.iter().find_map(|attr| match attr {
        LinkAttribute::Controller(master) if *master != 0 => Some(*master),
        _ => None,
    })
}

/// An address message as an `AddressStatus` spec. IPv4 reports the
/// interface's own address as `IFA_LOCAL` (`IFA_ADDRESS` is the peer on
/// point-to-point links), so `Local` wins.
pub fn address_status(msg: &AddressMessage, names: &HashMap<u32, String>) -> Option<AddressStatusSpec> {
    let mut local = None;
    let mut address = None;
    for attr in &msg.attributes {
        match attr {
            AddressAttribute::Local(ip) => local = Some(*ip),
            AddressAttribute::Address(ip) => address = Some(*ip),
            _ => {}
        }
    }
    let ip = local.or(address)?;
    Some(AddressStatusSpec {
        link: link_name(msg.header.index, names),
        address: format!("{ip}/{}", msg.header.prefix_len),
        family: family(ip).into(),
        scope: msg.header.scope.to_string(),
    })
}

/// A route message as a `RouteStatus` spec; `None` for other tables,
/// non-unicast routes (local, broadcast, blackhole, ...) and other
/// families.
pub fn route_status(msg: &RouteMessage, names: &HashMap<u32, String>) -> Option<RouteStatusSpec> {
    let unspecified = match msg.header.address_family {
        AddressFamily::Inet => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        AddressFamily::Inet6 => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        _ => return None,
    };
    if msg.header.kind != RouteType::Unicast {
        return None;
    }
    let mut table = u32::from(msg.header.table);
    let (mut destination, mut gateway, mut oif, mut metric) = (unspecified, None, None, 0);
    for attr in &msg.attributes {
        match attr {
            RouteAttribute::Table(t) => table = *t,
            RouteAttribute::Destination(a) => destination = route_ip(a).unwrap_or(unspecified),
            RouteAttribute::Gateway(a) => gateway = route_ip(a),
            RouteAttribute::Via(RouteVia::Inet6(v6)) => gateway = Some(IpAddr::V6(*v6)),
            RouteAttribute::Via(RouteVia::Inet(v4)) => gateway = Some(IpAddr::V4(*v4)),
            RouteAttribute::Oif(index) => oif = Some(*index),
            RouteAttribute::Priority(p) => metric = *p,
            _ => {}
        }
    }
    if table != u32::from(RouteHeader::RT_TABLE_MAIN) {
        return None;
    }
    Some(RouteStatusSpec {
        destination: format!("{destination}/{}", msg.header.destination_prefix_length),
        gateway: gateway.map(|g| g.to_string()).unwrap_or_default(),
        link: oif.map(|i| link_name(i, names)).unwrap_or_default(),
        metric,
        family: family(unspecified).into(),
        protocol: msg.header.protocol.to_string().to_ascii_lowercase(),
        scope: msg.header.scope.to_string(),
    })
}

fn route_ip(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        RouteAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        _ => None,
    }
}

/// A link's name, or its index when it vanished between the dumps.
fn link_name(index: u32, names: &HashMap<u32, String>) -> String {
    names.get(&index).cloned().unwrap_or_else(|| format!("#{index}"))
}

fn family(ip: IpAddr) -> &'static str {
    if ip.is_ipv4() { "inet" } else { "inet6" }
}

fn hex_colons(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

/// The one writer of each network status type.
pub struct Publisher {
    links: Writer<LinkStatusSpec>,
    addresses: Writer<AddressStatusSpec>,
    routes: Writer<RouteStatusSpec>,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher").finish_non_exhaustive()
    }
}

impl Publisher {
    /// Claims the writers of `LinkStatus`, `AddressStatus` and `RouteStatus`.
    pub fn new(store: &Store) -> Result<Self, StoreError> {
        Ok(Self { links: store.writer()?, addresses: store.writer()?, routes: store.writer()? })
    }

    /// Makes the store match `snapshot`: puts every item (unchanged ones
    /// are no-ops in the store) and removes the ones that disappeared.
    pub fn publish(&self, snapshot: &Snapshot) -> Result<(), StoreError> {
        sync(&self.links, snapshot.links.iter().map(|l| (l.id(), l)))?;
        sync(&self.addresses, snapshot.addresses.iter().map(|a| (a.id(), a)))?;
        sync(&self.routes, snapshot.route_ids())
    }
}

fn sync<'a, T: ResourceSpec>(
    writer: &Writer<T>,
    items: impl IntoIterator<Item = (String, &'a T)>,
) -> Result<(), StoreError> {
    let mut keep = HashSet::new();
    for (id, spec) in items {
        writer.put(&id, spec)?;
        keep.insert(id);
    }
    for stale in writer.store().list(T::DEFINITION) {
        if !keep.contains(&stale.metadata.id) {
            writer.remove(&stale.metadata.id);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::network::resources::{ADDRESS_STATUS, LINK_STATUS, ROUTE_STATUS};
    use rtnetlink::packet_route::link::{InfoKind, LinkLayerType, State};
    use rtnetlink::packet_route::route::{RouteProtocol, RouteScope};

    fn link_msg(index: u32, name: &str, up: bool) -> LinkMessage {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        msg.header.link_layer_type = LinkLayerType::Ether;
        if up {
            msg.header.flags = LinkFlags::Up | LinkFlags::LowerUp;
        }
        msg.attributes = vec![
            LinkAttribute::IfName(name.into()),
            LinkAttribute::Mtu(1500),
            LinkAttribute::Address(vec![0x02, 0, 0, 0, 0, 0x2a]),
            LinkAttribute::OperState(if up { State::Up } else { State::Down }),
            LinkAttribute::LinkInfo(vec![LinkInfo::Kind(InfoKind::Dummy)]),
        ];
        msg
    }

    fn addr_msg(index: u32, ip: &str, prefix: u8) -> AddressMessage {
        let mut msg = AddressMessage::default();
        let ip: IpAddr = ip.parse().unwrap();
        msg.header.index = index;
        msg.header.prefix_len = prefix;
        msg.header.family = if ip.is_ipv4() { AddressFamily::Inet } else { AddressFamily::Inet6 };
        msg.attributes = vec![AddressAttribute::Address(ip), AddressAttribute::Local(ip)];
        msg
    }

    fn route_msg(dest: Option<(&str, u8)>, gateway: Option<&str>, oif: u32, metric: u32, table: u8) -> RouteMessage {
        let mut msg = RouteMessage::default();
        msg.header.address_family = AddressFamily::Inet;
        msg.header.table = table;
        msg.header.kind = RouteType::Unicast;
        msg.header.protocol = RouteProtocol::Static;
        msg.header.scope = RouteScope::Universe;
        if let Some((d, len)) = dest {
            msg.header.destination_prefix_length = len;
            msg.attributes.push(RouteAttribute::Destination(RouteAddress::Inet(d.parse().unwrap())));
        }
        if let Some(g) = gateway {
            msg.attributes.push(RouteAttribute::Gateway(RouteAddress::Inet(g.parse().unwrap())));
        }
        msg.attributes.push(RouteAttribute::Oif(oif));
        msg.attributes.push(RouteAttribute::Priority(metric));
        msg
    }

    #[test]
    fn messages_become_specs() {
        let snapshot = Snapshot::from_messages(
            &[link_msg(2, "dummy0", true), link_msg(1, "lo", false)],
            &[addr_msg(2, "10.0.0.5", 24), addr_msg(2, "fd00::5", 64)],
            &[
                route_msg(None, Some("10.0.0.1"), 2, 1024, RouteHeader::RT_TABLE_MAIN),
                route_msg(Some(("10.0.0.5", 32)), None, 2, 0, 255),
            ],
        );
        assert_eq!(snapshot.links.iter().map(|l| l.name.as_str()).collect::<Vec<_>>(), ["lo", "dummy0"]);
        assert_eq!(
            snapshot.link("dummy0").unwrap(),
            &LinkStatusSpec {
                name: "dummy0".into(),
                index: 2,
                kind: "dummy".into(),
                link_type: "ether".into(),
                hardware_address: "02:00:00:00:00:2a".into(),
                mtu: 1500,
                up: true,
                carrier: true,
                operational_state: "up".into(),
                ..Default::default()
            }
        );
        let ids: Vec<_> = snapshot.addresses.iter().map(|a| (a.id(), a.family.as_str())).collect();
        assert_eq!(ids, [("dummy0/10.0.0.5/24".to_string(), "inet"), ("dummy0/fd00::5/64".to_string(), "inet6")]);
        // The local-table route is not shown.
        assert_eq!(snapshot.routes.len(), 1);
        assert_eq!(snapshot.route_ids()[0].0, "0.0.0.0/0 via 10.0.0.1 dev dummy0");
        assert_eq!((snapshot.routes[0].metric, snapshot.routes[0].protocol.as_str()), (1024, "static"));
    }

    #[test]
    fn routes_differing_only_in_metric_get_distinct_ids() {
        let snapshot = Snapshot::from_messages(
            &[link_msg(2, "eth0", true)],
            &[],
            &[
                route_msg(None, Some("10.0.0.1"), 2, 2048, RouteHeader::RT_TABLE_MAIN),
                route_msg(None, Some("10.0.0.1"), 2, 100, RouteHeader::RT_TABLE_MAIN),
            ],
        );
        let ids: Vec<_> = snapshot.route_ids().into_iter().map(|(id, r)| (id, r.metric)).collect();
        assert_eq!(
            ids,
            [
                ("0.0.0.0/0 via 10.0.0.1 dev eth0".to_string(), 100),
                ("0.0.0.0/0 via 10.0.0.1 dev eth0 metric 2048".to_string(), 2048)
            ]
        );
    }

    #[test]
    fn publish_puts_and_removes() {
        let store = Store::new();
        let publisher = Publisher::new(&store).unwrap();
        let first = Snapshot::from_messages(
            &[link_msg(1, "lo", true), link_msg(2, "eth0", true)],
            &[addr_msg(2, "10.0.0.5", 24)],
            &[route_msg(None, Some("10.0.0.1"), 2, 1024, RouteHeader::RT_TABLE_MAIN)],
        );
        publisher.publish(&first).unwrap();
        assert_eq!(store.list(&LINK_STATUS).len(), 2);
        assert!(store.get(&ADDRESS_STATUS, "eth0/10.0.0.5/24").is_some());
        assert!(store.get(&ROUTE_STATUS, "0.0.0.0/0 via 10.0.0.1 dev eth0").is_some());
        let second = Snapshot::from_messages(&[link_msg(1, "lo", true)], &[], &[]);
        publisher.publish(&second).unwrap();
        assert_eq!(store.list(&LINK_STATUS).iter().map(|r| r.metadata.id.as_str()).collect::<Vec<_>>(), ["lo"]);
        assert!(store.list(&ADDRESS_STATUS).is_empty());
        assert!(store.list(&ROUTE_STATUS).is_empty());
        // Publishing the same snapshot again does not bump versions.
        publisher.publish(&second).unwrap();
        assert_eq!(store.get(&LINK_STATUS, "lo").unwrap().metadata.version, 1);
    }

    #[test]
    fn masters_and_permanent_addresses_are_read() {
        let mut eth1 = link_msg(3, "eth1", true);
        eth1.attributes.push(LinkAttribute::Controller(4));
        eth1.attributes.push(LinkAttribute::PermAddress(vec![0x52, 0x54, 0, 0, 0, 0x01]));
        let snapshot =
            Snapshot::from_messages(&[link_msg(2, "eth0", true), eth1, link_msg(4, "bond0", true)], &[], &[]);
        let eth1 = snapshot.link("eth1").unwrap();
        assert_eq!((eth1.master.as_str(), eth1.permanent_address.as_str()), ("bond0", "52:54:00:00:00:01"));
        assert_eq!(snapshot.link("eth0").unwrap().master, "");
    }

    #[test]
    fn vlan_ids_parents_and_bond_modes_are_read() {
        let without_info = |mut msg: LinkMessage| {
            msg.attributes.retain(|a| !matches!(a, LinkAttribute::LinkInfo(_)));
            msg
        };
        let mut bond = without_info(link_msg(4, "bond0", true));
        bond.attributes.push(LinkAttribute::LinkInfo(vec![
            LinkInfo::Kind(InfoKind::Bond),
            LinkInfo::Data(InfoData::Bond(vec![InfoBond::MiiMon(100), InfoBond::Mode(BondMode::Ieee8023Ad)])),
        ]));
        let mut vlan = without_info(link_msg(5, "bond0.42", true));
        vlan.attributes.push(LinkAttribute::Link(4));
        vlan.attributes.push(LinkAttribute::LinkInfo(vec![
            LinkInfo::Kind(InfoKind::Vlan),
            LinkInfo::Data(InfoData::Vlan(vec![InfoVlan::Id(42)])),
        ]));
        // A veth's IFLA_LINK is its peer, not a parent.
        let mut veth = without_info(link_msg(6, "veth0", true));
        veth.attributes.push(LinkAttribute::Link(4));
        let snapshot = Snapshot::from_messages(&[bond, vlan, veth], &[], &[]);
        let vlan = snapshot.link("bond0.42").unwrap();
        assert_eq!((vlan.kind.as_str(), vlan.vlan_id, vlan.parent.as_str()), ("vlan", Some(42), "bond0"));
        assert_eq!(snapshot.link("bond0").unwrap().bond_mode, "802.3ad");
        assert_eq!(snapshot.link("veth0").unwrap().parent, "");
    }

    #[test]
    fn driver_and_bus_path_come_from_sysfs_symlinks() {
        let sysfs = tempfile::tempdir().unwrap();
        let pci = sysfs.path().join("devices/pci0000:00/0000:00:03.0");
        std::fs::create_dir_all(&pci).unwrap();
        std::fs::create_dir_all(sysfs.path().join("bus/pci/drivers/virtio_net")).unwrap();
        std::os::unix::fs::symlink("../../../bus/pci/drivers/virtio_net", pci.join("driver")).unwrap();
        let class = sysfs.path().join("class/net/eth0");
        std::fs::create_dir_all(&class).unwrap();
        std::os::unix::fs::symlink("../../../devices/pci0000:00/0000:00:03.0", class.join("device")).unwrap();
        std::fs::create_dir_all(sysfs.path().join("class/net/veth0")).unwrap();

        let mut eth0 = LinkStatusSpec { name: "eth0".into(), ..Default::default() };
        read_device(sysfs.path(), &mut eth0);
        assert_eq!((eth0.driver.as_str(), eth0.bus_path.as_str()), ("virtio_net", "0000:00:03.0"));
        let mut veth = LinkStatusSpec { name: "veth0".into(), ..Default::default() };
        read_device(sysfs.path(), &mut veth);
        assert_eq!((veth.driver.as_str(), veth.bus_path.as_str()), ("", ""));
    }

    #[test]
    fn the_writers_are_claimed_once() {
        let store = Store::new();
        let _publisher = Publisher::new(&store).unwrap();
        assert_eq!(Publisher::new(&store).unwrap_err(), StoreError::WriterTaken("LinkStatuses.bronze.dev"));
    }
}
