//! Makes the kernel match a [`NetworkPlan`]: links up with their MTU,
//! addresses, routes, and `resolv.conf`; and takes back what an earlier
//! plan added that the new one no longer wants.
//!
//! Ownership is kept simple: the [`Applier`] remembers the addresses and
//! routes *it* added and only ever removes those. Things that were already
//! there (an address from the initramfs, a kernel prefix route) are never
//! touched. Individual failures (a missing link, a refused route) do not
//! stop the rest of the plan; they are listed in the [`ApplyReport`].
//!
//! This module must only be used where bronzed owns the network (pid1
//! mode); the caller decides.

use super::netlink::Netlink;
use super::plan::{AddressPlan, NetworkPlan, RoutePlan};
use super::{NetError, NetlinkError};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::sync::{Mutex, Notify};

/// Where resolvers are written, under the applier's root.
pub const RESOLV_CONF: &str = "etc/resolv.conf";

/// What one [`Applier::apply`] did.
#[derive(Debug, Default)]
pub struct ApplyReport {
    /// Links set up (and their MTU set).
    pub links: Vec<String>,
    /// Planned links the kernel does not have; their addresses and routes
    /// were skipped and are tried again on the next apply.
    pub missing_links: Vec<String>,
    /// Addresses and routes this apply added (not the ones already there).
    pub added_addresses: Vec<AddressPlan>,
    pub added_routes: Vec<RoutePlan>,
    /// Addresses and routes an earlier plan added that this one dropped.
    pub removed_addresses: Vec<AddressPlan>,
    pub removed_routes: Vec<RoutePlan>,
    /// Whether `resolv.conf` was (re)written.
    pub resolv_conf_written: bool,
    /// Everything that failed; the rest of the plan was still applied.
    pub errors: Vec<NetError>,
}

impl ApplyReport {
    /// The kernel matches the plan: nothing failed, no link missing.
    pub fn is_complete(&self) -> bool {
        self.errors.is_empty() && self.missing_links.is_empty()
    }
}

/// What one [`Applier::links_down`] did.
#[derive(Debug, Default)]
pub struct LinksDownReport {
    pub down: Vec<String>,
    pub errors: Vec<NetError>,
}

/// What this applier added and therefore may remove.
#[derive(Debug, Default)]
struct Owned {
    addresses: BTreeSet<AddressPlan>,
    routes: BTreeSet<RoutePlan>,
}

/// Applies plans through a [`Netlink`] and writes `resolv.conf` under a
/// root directory (`/` on a node, a temp dir in tests).
pub struct Applier {
    netlink: Arc<dyn Netlink>,
    root: PathBuf,
    /// Also serialises applies: two at once would race on what is owned.
    owned: Mutex<Owned>,
    /// Woken after every apply so the status controller re-observes.
    applied: Option<Arc<Notify>>,
}

impl std::fmt::Debug for Applier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Applier").field("root", &self.root).finish_non_exhaustive()
    }
}

impl Applier {
    pub fn new(netlink: Arc<dyn Netlink>, root: impl Into<PathBuf>) -> Self {
        Self { netlink, root: root.into(), owned: Mutex::new(Owned::default()), applied: None }
    }

    /// Wakes `notify` after each apply and `links_down` (pass the status
    /// controller's trigger so `get links` shows the result at once).
    pub fn notify_after_apply(mut self, notify: Arc<Notify>) -> Self {
        self.applied = Some(notify);
        self
    }

    /// Makes the kernel match `plan` (which must have passed validation;
    /// [`super::plan::plan`] only returns valid plans). Returns `Err` only
    /// when netlink itself fails (a link cannot even be looked up);
    /// per-item failures are in the report.
    pub async fn apply(&self, plan: &NetworkPlan) -> Result<ApplyReport, NetError> {
        let result = self.apply_locked(plan).await;
        if let Some(notify) = &self.applied {
            notify.notify_one();
        }
        result
    }

    async fn apply_locked(&self, plan: &NetworkPlan) -> Result<ApplyReport, NetError> {
        let mut owned = self.owned.lock().await;
        let mut report = ApplyReport::default();
        let mut links = LinkIndexes::default();
        // How long each part took, for the debug log: the boot waits on it.
        let mut laps = crate::laps::Laps::new();

        // Take back what is no longer planned first: IPv6 keys addresses
        // without their prefix (fd00::5/64 -> fd00::5/56 would be refused
        // as existing), and deleting a primary IPv4 address also deletes
        // its subnet's secondaries, which a new address would be.
        let stale_routes: Vec<RoutePlan> = owned.routes.iter().filter(|r| !plan.routes.contains(r)).cloned().collect();
        for route in stale_routes {
            if let Some(index) = links.index(&*self.netlink, &route.link).await? {
                match self.netlink.remove_route(index, &route).await {
                    Ok(()) => report.removed_routes.push(route.clone()),
                    Err(e) if gone(&e, libc::ESRCH) => {}
                    Err(error) => {
                        report.errors.push(NetError::RemoveRoute { route, error });
                        continue;
                    }
                }
            }
            owned.routes.remove(&route);
        }
        let stale_addresses: Vec<AddressPlan> =
            owned.addresses.iter().filter(|a| !plan.addresses.contains(a)).cloned().collect();
        for address in stale_addresses {
            if let Some(index) = links.index(&*self.netlink, &address.link).await? {
                match self.netlink.remove_address(index, address.address).await {
                    Ok(()) => report.removed_addresses.push(address.clone()),
                    Err(e) if gone(&e, libc::EADDRNOTAVAIL) => {}
                    Err(error) => {
                        report.errors.push(NetError::RemoveAddress { address, error });
                        continue;
                    }
                }
            }
            owned.addresses.remove(&address);
        }

        laps.lap("stale");
        for link in &plan.links {
            let Some(index) = links.index(&*self.netlink, &link.name).await? else {
                report.missing_links.push(link.name.clone());
                continue;
            };
            // MTU and state separately: a refused MTU must not keep the
            // link down.
            let mut configured = true;
            if let Some(mtu) = link.mtu
                && let Err(error) = self.netlink.set_mtu(index, mtu).await
            {
                configured = false;
                report.errors.push(NetError::SetLink { link: link.name.clone(), change: format!("mtu {mtu}"), error });
            }
            if let Err(error) = self.netlink.set_link(index, link.up).await {
                configured = false;
                let change = if link.up { "up" } else { "down" }.to_string();
                report.errors.push(NetError::SetLink { link: link.name.clone(), change, error });
            }
            if configured {
                report.links.push(link.name.clone());
            }
        }

        laps.lap("links");
        for address in &plan.addresses {
            let Some(index) = links.index(&*self.netlink, &address.link).await? else { continue };
            match self.netlink.add_address(index, address.address).await {
                Ok(()) => {
                    owned.addresses.insert(address.clone());
                    report.added_addresses.push(address.clone());
                }
                // Already there: ours if an earlier apply added it, else
                // someone else's, and it stays that way.
                Err(e) if e.is(libc::EEXIST) => {}
                Err(error) => report.errors.push(NetError::AddAddress { address: address.clone(), error }),
            }
        }

        laps.lap("addresses");
        // Direct routes first: a gateway may be reachable only through one
        // (`gw/32 dev eth0`, then `default via gw`).
        let mut routes: Vec<&RoutePlan> = plan.routes.iter().collect();
        routes.sort_by_key(|r| r.gateway.is_some());
        for route in routes {
            let Some(index) = links.index(&*self.netlink, &route.link).await? else { continue };
            match self.netlink.add_route(index, route).await {
                Ok(()) => {
                    owned.routes.insert(route.clone());
                    report.added_routes.push(route.clone());
                }
                Err(e) if e.is(libc::EEXIST) => {}
                Err(error) => report.errors.push(NetError::AddRoute { route: route.clone(), error }),
            }
        }

        laps.lap("routes");
        if !plan.resolvers.is_empty() || !plan.search.is_empty() {
            let path = self.root.join(RESOLV_CONF);
            let text = render_resolv_conf(plan);
            match write_if_changed(path.clone(), text).await {
                Ok(written) => report.resolv_conf_written = written,
                Err(error) => report.errors.push(NetError::WriteResolvConf { path, error }),
            }
        }
        laps.lap("resolv.conf");
        tracing::debug!("network apply: {laps}");
        Ok(report)
    }

    /// Sets every non-loopback link down, for shutdown: the node stops
    /// answering on its addresses before it powers off. Failures on one
    /// link do not stop the others.
    pub async fn links_down(&self) -> Result<LinksDownReport, NetError> {
        let snapshot = self.netlink.snapshot().await?;
        let mut report = LinksDownReport::default();
        for link in snapshot.links.iter().filter(|l| l.link_type != "loopback" && l.up) {
            match self.netlink.set_link(link.index, false).await {
                Ok(()) => report.down.push(link.name.clone()),
                Err(error) => {
                    report.errors.push(NetError::SetLink { link: link.name.clone(), change: "down".into(), error })
                }
            }
        }
        if let Some(notify) = &self.applied {
            notify.notify_one();
        }
        Ok(report)
    }
}

/// Whether a removal failed only because the thing is already gone (the
/// link vanished, or `absent` from the kernel).
fn gone(e: &NetlinkError, absent: i32) -> bool {
    e.is(absent) || e.is(libc::ENODEV)
}

/// Link indexes looked up once per apply.
#[derive(Default)]
struct LinkIndexes(BTreeMap<String, Option<u32>>);

impl LinkIndexes {
    async fn index(&mut self, netlink: &dyn Netlink, name: &str) -> Result<Option<u32>, NetError> {
        if let Some(index) = self.0.get(name) {
            return Ok(*index);
        }
        let index =
            netlink.link_index(name).await.map_err(|error| NetError::LinkLookup { link: name.to_string(), error })?;
        self.0.insert(name.to_string(), index);
        Ok(index)
    }
}

/// The `resolv.conf` for a plan's resolvers and search domains.
pub fn render_resolv_conf(plan: &NetworkPlan) -> String {
    let mut text = String::from("# Written by bronzed from machine.network; changes here are overwritten.\n");
    for resolver in &plan.resolvers {
        text.push_str(&format!("nameserver {resolver}\n"));
    }
    if !plan.search.is_empty() {
        text.push_str(&format!("search {}\n", plan.search.join(" ")));
    }
    text
}

/// Replaces `path` atomically (temp file, fsync, rename, fsync dir) unless
/// it already holds `text`. Returns whether it wrote.
async fn write_if_changed(path: PathBuf, text: String) -> std::io::Result<bool> {
    // Blocking file I/O with fsyncs: off the runtime's threads.
    tokio::task::spawn_blocking(move || {
        if std::fs::read_to_string(&path).is_ok_and(|current| current == text) {
            return Ok(false);
        }
        write_atomic(&path, text.as_bytes())?;
        Ok(true)
    })
    .await
    .map_err(std::io::Error::other)?
}

fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = path.parent().unwrap_or(Path::new("/"));
    std::fs::create_dir_all(dir)?;
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let temp = dir.join(format!(".{name}.bronzed-tmp"));
    let mut file = std::fs::OpenOptions::new().create(true).truncate(true).write(true).mode(0o644).open(&temp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&temp, path)?;
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::network::observe::Snapshot;
    use crate::network::plan::LinkPlan;
    use crate::network::resources::LinkStatusSpec;
    use bronze_config::Cidr;
    use futures::future::BoxFuture;
    use std::collections::HashMap;
    use std::sync::Mutex as StdMutex;

    /// Records calls and keeps a tiny kernel model: per link, its
    /// addresses and routes, answering EEXIST/EADDRNOTAVAIL/ESRCH like the
    /// kernel. Individual operations can be made to fail.
    #[derive(Default)]
    struct FakeNetlink {
        links: HashMap<String, u32>,
        state: StdMutex<FakeState>,
    }

    #[derive(Default)]
    struct FakeState {
        calls: Vec<String>,
        addresses: BTreeSet<(u32, Cidr)>,
        routes: BTreeSet<(u32, RoutePlan)>,
        up: BTreeMap<u32, bool>,
        fail: HashMap<String, i32>,
    }

    impl FakeNetlink {
        fn with_links(names: &[&str]) -> Arc<Self> {
            let links = names.iter().enumerate().map(|(i, n)| (n.to_string(), i as u32 + 2)).collect();
            Arc::new(Self { links, state: StdMutex::default() })
        }

        fn record(&self, call: String) -> Result<(), NetlinkError> {
            let mut s = self.state.lock().unwrap();
            s.calls.push(call.clone());
            match s.fail.get(&call) {
                Some(errno) => Err(NetlinkError::os(*errno)),
                None => Ok(()),
            }
        }

        fn calls(&self) -> Vec<String> {
            std::mem::take(&mut self.state.lock().unwrap().calls)
        }
    }

    impl Netlink for FakeNetlink {
        fn link_index<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Option<u32>, NetlinkError>> {
            Box::pin(async move { Ok(self.links.get(name).copied()) })
        }
        fn set_link(&self, index: u32, up: bool) -> BoxFuture<'_, Result<(), NetlinkError>> {
            Box::pin(async move {
                self.record(format!("set {index} up={up}"))?;
                self.state.lock().unwrap().up.insert(index, up);
                Ok(())
            })
        }
        fn set_mtu(&self, index: u32, mtu: u32) -> BoxFuture<'_, Result<(), NetlinkError>> {
            Box::pin(async move { self.record(format!("set {index} mtu={mtu}")) })
        }
        fn add_address(&self, index: u32, address: Cidr) -> BoxFuture<'_, Result<(), NetlinkError>> {
            Box::pin(async move {
                self.record(format!("add {index} {address}"))?;
                let fresh = self.state.lock().unwrap().addresses.insert((index, address));
                if fresh { Ok(()) } else { Err(NetlinkError::os(libc::EEXIST)) }
            })
        }
        fn remove_address(&self, index: u32, address: Cidr) -> BoxFuture<'_, Result<(), NetlinkError>> {
            Box::pin(async move {
                self.record(format!("del {index} {address}"))?;
                let had = self.state.lock().unwrap().addresses.remove(&(index, address));
                if had { Ok(()) } else { Err(NetlinkError::os(libc::EADDRNOTAVAIL)) }
            })
        }
        fn add_route<'a>(&'a self, index: u32, route: &'a RoutePlan) -> BoxFuture<'a, Result<(), NetlinkError>> {
            Box::pin(async move {
                self.record(format!("add {index} {route}"))?;
                let fresh = self.state.lock().unwrap().routes.insert((index, route.clone()));
                if fresh { Ok(()) } else { Err(NetlinkError::os(libc::EEXIST)) }
            })
        }
        fn remove_route<'a>(&'a self, index: u32, route: &'a RoutePlan) -> BoxFuture<'a, Result<(), NetlinkError>> {
            Box::pin(async move {
                self.record(format!("del {index} {route}"))?;
                let had = self.state.lock().unwrap().routes.remove(&(index, route.clone()));
                if had { Ok(()) } else { Err(NetlinkError::os(libc::ESRCH)) }
            })
        }
        fn snapshot(&self) -> BoxFuture<'_, Result<Snapshot, NetError>> {
            Box::pin(async move {
                let state = self.state.lock().unwrap();
                let mut links: Vec<LinkStatusSpec> = self
                    .links
                    .iter()
                    .map(|(name, index)| LinkStatusSpec {
                        name: name.clone(),
                        index: *index,
                        link_type: "ether".into(),
                        up: state.up.get(index).is_some_and(|up| *up),
                        ..Default::default()
                    })
                    .collect();
                links.push(LinkStatusSpec {
                    name: "lo".into(),
                    index: 1,
                    link_type: "loopback".into(),
                    up: true,
                    ..Default::default()
                });
                links.sort_by_key(|l| l.index);
                Ok(Snapshot { links, ..Default::default() })
            })
        }
    }

    fn cidr(s: &str) -> Cidr {
        s.parse().unwrap()
    }

    fn route(link: &str, dest: &str, gw: Option<&str>) -> RoutePlan {
        RoutePlan {
            link: link.into(),
            destination: cidr(dest),
            gateway: gw.map(|g| g.parse().unwrap()),
            metric: 1024,
            on_link: false,
        }
    }

    fn plan_for(link: &str, addresses: &[&str], routes: Vec<RoutePlan>) -> NetworkPlan {
        NetworkPlan {
            links: vec![LinkPlan { name: link.into(), up: true, mtu: Some(1400), kind: None }],
            addresses: addresses.iter().map(|a| AddressPlan { link: link.into(), address: cidr(a) }).collect(),
            routes,
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn applies_in_order_and_takes_back_only_what_it_added() {
        let fake = FakeNetlink::with_links(&["eth0"]);
        // Someone else's address, already on the link.
        fake.state.lock().unwrap().addresses.insert((2, cidr("192.168.7.7/24")));
        let dir = tempfile::tempdir().unwrap();
        let applier = Applier::new(fake.clone(), dir.path());

        let first = plan_for(
            "eth0",
            &["10.0.0.5/24", "192.168.7.7/24"],
            vec![route("eth0", "0.0.0.0/0", Some("10.0.0.1")), route("eth0", "10.9.0.0/16", None)],
        );
        let report = applier.apply(&first).await.unwrap();
        assert!(report.is_complete(), "{report:?}");
        assert_eq!(
            fake.calls(),
            [
                "set 2 mtu=1400",
                "set 2 up=true",
                "add 2 10.0.0.5/24",
                "add 2 192.168.7.7/24",
                "add 2 10.9.0.0/16 dev eth0 metric 1024",
                "add 2 0.0.0.0/0 via 10.0.0.1 dev eth0 metric 1024",
            ]
        );
        assert_eq!(report.added_addresses.len(), 1, "the pre-existing address is not ours");
        assert_eq!(report.added_routes.len(), 2);

        // Re-applying the same plan changes nothing and removes nothing.
        let report = applier.apply(&first).await.unwrap();
        assert!(report.added_addresses.is_empty() && report.removed_addresses.is_empty());
        assert!(report.added_routes.is_empty() && report.removed_routes.is_empty());
        fake.calls();

        // A smaller plan: ours go, someone else's stays even though the
        // plan dropped it too.
        let second = plan_for("eth0", &["10.0.0.6/24"], vec![]);
        let report = applier.apply(&second).await.unwrap();
        assert_eq!(
            fake.calls(),
            [
                "del 2 0.0.0.0/0 via 10.0.0.1 dev eth0 metric 1024",
                "del 2 10.9.0.0/16 dev eth0 metric 1024",
                "del 2 10.0.0.5/24",
                "set 2 mtu=1400",
                "set 2 up=true",
                "add 2 10.0.0.6/24",
            ]
        );
        assert_eq!(report.removed_routes.len(), 2);
        assert_eq!(report.removed_addresses, [AddressPlan { link: "eth0".into(), address: cidr("10.0.0.5/24") }]);
        let kernel: Vec<_> = fake.state.lock().unwrap().addresses.iter().map(|(_, a)| a.to_string()).collect();
        assert_eq!(kernel, ["10.0.0.6/24", "192.168.7.7/24"]);
    }

    #[tokio::test]
    async fn missing_links_and_failures_do_not_stop_the_rest() {
        let fake = FakeNetlink::with_links(&["eth0"]);
        fake.state.lock().unwrap().fail.insert("add 2 10.0.0.5/24".into(), libc::EPERM);
        let dir = tempfile::tempdir().unwrap();
        let applier = Applier::new(fake.clone(), dir.path());
        let mut plan = plan_for("eth0", &["10.0.0.5/24", "10.0.1.5/24"], vec![]);
        plan.links.push(LinkPlan { name: "eth9".into(), up: true, mtu: None, kind: None });
        plan.addresses.push(AddressPlan { link: "eth9".into(), address: cidr("10.0.9.5/24") });
        let report = applier.apply(&plan).await.unwrap();
        assert!(!report.is_complete());
        assert_eq!(report.missing_links, ["eth9"]);
        assert_eq!(
            report.errors.iter().map(ToString::to_string).collect::<Vec<_>>(),
            ["cannot add address 10.0.0.5/24 to link eth0: Operation not permitted (os error 1)"]
        );
        assert_eq!(report.added_addresses, [AddressPlan { link: "eth0".into(), address: cidr("10.0.1.5/24") }]);
    }

    #[tokio::test]
    async fn a_refused_mtu_still_brings_the_link_up() {
        let fake = FakeNetlink::with_links(&["eth0"]);
        fake.state.lock().unwrap().fail.insert("set 2 mtu=1400".into(), libc::EINVAL);
        let applier = Applier::new(fake.clone(), "/nonexistent");
        let report = applier.apply(&plan_for("eth0", &[], vec![])).await.unwrap();
        assert_eq!(
            report.errors.iter().map(ToString::to_string).collect::<Vec<_>>(),
            ["cannot set link eth0 mtu 1400: Invalid argument (os error 22)"]
        );
        assert!(report.links.is_empty());
        assert_eq!(fake.calls(), ["set 2 mtu=1400", "set 2 up=true"]);
        assert_eq!(fake.state.lock().unwrap().up.get(&2), Some(&true));
    }

    #[tokio::test]
    async fn a_failed_removal_is_retried_next_time() {
        let fake = FakeNetlink::with_links(&["eth0"]);
        let dir = tempfile::tempdir().unwrap();
        let applier = Applier::new(fake.clone(), dir.path());
        applier.apply(&plan_for("eth0", &["10.0.0.5/24"], vec![])).await.unwrap();
        fake.state.lock().unwrap().fail.insert("del 2 10.0.0.5/24".into(), libc::EBUSY);
        let report = applier.apply(&plan_for("eth0", &[], vec![])).await.unwrap();
        assert_eq!(report.errors.len(), 1);
        fake.state.lock().unwrap().fail.clear();
        let report = applier.apply(&plan_for("eth0", &[], vec![])).await.unwrap();
        assert_eq!(report.removed_addresses.len(), 1);
    }

    #[tokio::test]
    async fn resolv_conf_is_written_atomically_and_only_on_change() {
        let fake = FakeNetlink::with_links(&[]);
        let dir = tempfile::tempdir().unwrap();
        let notify = Arc::new(Notify::new());
        let applier = Applier::new(fake, dir.path()).notify_after_apply(notify.clone());
        let plan = NetworkPlan {
            resolvers: vec!["10.0.0.53".parse().unwrap(), "fd00::53".parse().unwrap()],
            search: vec!["lan".into(), "example.com".into()],
            ..Default::default()
        };
        assert!(applier.apply(&plan).await.unwrap().resolv_conf_written);
        notify.notified().await;
        let text = std::fs::read_to_string(dir.path().join(RESOLV_CONF)).unwrap();
        assert_eq!(
            text,
            "# Written by bronzed from machine.network; changes here are overwritten.\nnameserver 10.0.0.53\nnameserver fd00::53\nsearch lan example.com\n"
        );
        assert!(!applier.apply(&plan).await.unwrap().resolv_conf_written);
        // No temp file left behind.
        let names: Vec<_> =
            std::fs::read_dir(dir.path().join("etc")).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, ["resolv.conf"]);
        // A plan without resolvers leaves the file alone.
        assert!(!applier.apply(&NetworkPlan::default()).await.unwrap().resolv_conf_written);
        assert!(dir.path().join(RESOLV_CONF).exists());
    }

    #[tokio::test]
    async fn links_down_skips_loopback_and_down_links() {
        let fake = FakeNetlink::with_links(&["eth0", "eth1"]);
        let applier = Applier::new(fake.clone(), "/nonexistent");
        applier.apply(&plan_for("eth0", &[], vec![])).await.unwrap();
        fake.calls();
        let report = applier.links_down().await.unwrap();
        assert_eq!(report.down, ["eth0"]);
        assert_eq!(fake.calls(), ["set 2 up=false"]);
    }
}
