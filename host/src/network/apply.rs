//! Makes the kernel match a [`NetworkPlan`]: logical links (bonds and their
//! members, VLANs), links up with their MTU, addresses, routes,
//! `resolv.conf` and `/etc/hosts`; and takes back what an earlier plan
//! added that the new one no longer wants.
//!
//! Each apply reads one kernel snapshot and writes only what differs from
//! the plan, so applying the same plan again makes no netlink write
//! ([`ApplyReport::writes`]). (After creating or enslaving links it reads
//! again: the kernel changes members' state and MTU on its own.)
//!
//! Ownership is kept simple: the [`Applier`] remembers the addresses,
//! routes and logical links *it* added and only ever removes those. Things
//! that were already there (an address from the initramfs, a kernel prefix
//! route, an IPv6 link-local address) are never touched. A logical link
//! the plan names that already exists with the planned kind is adopted (a
//! restarted bronzed finds its bond). Individual failures (a missing link,
//! a refused route) do not stop the rest of the plan; they are listed in
//! the [`ApplyReport`].
//!
//! Before creating a bond or a VLAN the applier asks its
//! [`OnDemandModules`] for the kernel module (`bonding`, `8021q`): the
//! image ships them but does not load them at boot. PID 1 passes init's
//! loader ([`Applier::with_modules`]); the default asks nothing. The
//! module's owner is init; a module it cannot load leaves the create to
//! fail with the kernel's error.
//!
//! This module must only be used where bronzed owns the network (pid1
//! mode); the caller decides.

use super::hosts::{self, RenderError};
use super::netlink::Netlink;
use super::observe::Snapshot;
use super::plan::{AddressPlan, LinkKind, LinkPlan, NetworkPlan, RoutePlan};
use super::resources::LinkStatusSpec;
use super::{NetError, NetlinkError};
use crate::init::{NoModules, OnDemandModules};
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use tokio::sync::{Mutex, Notify};

/// Where resolvers are written, under the applier's root.
pub const RESOLV_CONF: &str = "etc/resolv.conf";
/// Where the hostname's address is written, under the applier's root.
pub const HOSTS: &str = "etc/hosts";
/// Mode of both files: everyone resolves names.
const ETC_MODE: u32 = 0o644;
/// The kernel module bonds need.
pub const BOND_MODULE: &str = "bonding";
/// The kernel module 802.1Q VLANs need.
pub const VLAN_MODULE: &str = "8021q";

/// A failure of one item of a plan; the rest was still applied.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error(transparent)]
    Net(#[from] NetError),
    #[error("cannot create {kind} {link}: {error}")]
    CreateLink { link: String, kind: &'static str, error: NetlinkError },
    #[error("cannot create {kind} {link}: a link of that name exists and is not a {kind} (kind {found:?})")]
    LinkInTheWay { link: String, kind: &'static str, found: String },
    #[error("cannot delete link {link}: {error}")]
    DeleteLink { link: String, error: NetlinkError },
    #[error("cannot render {path}: {error}")]
    Render { path: PathBuf, error: RenderError },
    #[error("cannot write {path}: {error}")]
    Write { path: PathBuf, error: std::io::Error },
}

/// What one [`Applier::apply`] did.
#[derive(Debug, Default)]
pub struct ApplyReport {
    /// Mutating netlink calls made (including refused ones); 0 when the
    /// kernel already matched the plan.
    pub writes: u32,
    /// Links whose MTU or up/down state this apply changed.
    pub links: Vec<String>,
    /// Logical links (bonds, VLANs) this apply created.
    pub created_links: Vec<String>,
    /// Logical links an earlier plan created that this one dropped.
    pub deleted_links: Vec<String>,
    /// Planned links (or a VLAN's parent, a bond's member) the kernel does
    /// not have; what needs them was skipped and is tried again on the
    /// next apply.
    pub missing_links: Vec<String>,
    /// Addresses and routes this apply added (not the ones already there).
    pub added_addresses: Vec<AddressPlan>,
    pub added_routes: Vec<RoutePlan>,
    /// Addresses and routes an earlier plan added that this one dropped.
    pub removed_addresses: Vec<AddressPlan>,
    pub removed_routes: Vec<RoutePlan>,
    /// Whether `resolv.conf` was (re)written.
    pub resolv_conf_written: bool,
    /// Whether `/etc/hosts` was (re)written.
    pub hosts_written: bool,
    /// Everything that failed; the rest of the plan was still applied.
    pub errors: Vec<ApplyError>,
}

impl ApplyReport {
    /// The kernel matches the plan: nothing failed, no link missing.
    pub fn is_complete(&self) -> bool {
        self.errors.is_empty() && self.missing_links.is_empty()
    }

    fn missing(&mut self, link: &str) {
        if !self.missing_links.iter().any(|l| l == link) {
            self.missing_links.push(link.to_string());
        }
    }

    fn changed(&mut self, link: &str) {
        if !self.links.iter().any(|l| l == link) {
            self.links.push(link.to_string());
        }
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
    /// Logical links by name, with their kernel kind (`bond`, `vlan`).
    links: BTreeMap<String, &'static str>,
}

/// The kernel's kind name of a logical link.
fn kind_name(kind: &LinkKind) -> &'static str {
    match kind {
        LinkKind::Bond(_) => "bond",
        LinkKind::Vlan(_) => "vlan",
    }
}

/// The kernel as one snapshot, indexed for the lookups an apply makes.
struct Kernel {
    snapshot: Snapshot,
    addresses: HashSet<(String, String)>,
    routes: HashSet<(String, String, String, u32)>,
}

impl Kernel {
    fn new(snapshot: Snapshot) -> Self {
        let addresses = snapshot.addresses.iter().map(|a| (a.link.clone(), a.address.clone())).collect();
        let routes = snapshot
            .routes
            .iter()
            .map(|r| (r.link.clone(), r.destination.clone(), r.gateway.clone(), r.metric))
            .collect();
        Self { snapshot, addresses, routes }
    }

    fn link(&self, name: &str) -> Option<&LinkStatusSpec> {
        self.snapshot.link(name)
    }

    fn has_address(&self, address: &AddressPlan) -> bool {
        self.addresses.contains(&(address.link.clone(), address.address.to_string()))
    }

    fn has_route(&self, route: &RoutePlan) -> bool {
        let gateway = route.gateway.map(|g| g.to_string()).unwrap_or_default();
        self.routes.contains(&(route.link.clone(), route.destination.to_string(), gateway, route.metric))
    }
}

/// Applies plans through a [`Netlink`] and writes `resolv.conf` and
/// `/etc/hosts` under a root directory (`/` on a node, a temp dir in tests).
pub struct Applier {
    netlink: Arc<dyn Netlink>,
    root: PathBuf,
    /// Also serialises applies: two at once would race on what is owned.
    owned: Mutex<Owned>,
    /// Woken after every apply so the status controller re-observes.
    applied: Option<Arc<Notify>>,
    /// Asked for a link kind's kernel module before the first create.
    modules: Arc<dyn OnDemandModules>,
}

impl std::fmt::Debug for Applier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Applier").field("root", &self.root).finish_non_exhaustive()
    }
}

impl Applier {
    pub fn new(netlink: Arc<dyn Netlink>, root: impl Into<PathBuf>) -> Self {
        Self {
            netlink,
            root: root.into(),
            owned: Mutex::new(Owned::default()),
            applied: None,
            modules: Arc::new(NoModules),
        }
    }

    /// Asks `modules` for `bonding` / `8021q` before creating a bond / VLAN
    /// (PID 1: init's [`crate::init::OnDemandLoader`]).
    pub fn with_modules(mut self, modules: Arc<dyn OnDemandModules>) -> Self {
        self.modules = modules;
        self
    }

    /// Has the kernel module `name` loaded, off the async threads
    /// (`finit_module` blocks).
    async fn ensure_module(&self, name: &'static str) {
        let modules = self.modules.clone();
        if let Err(e) = tokio::task::spawn_blocking(move || modules.ensure(name)).await {
            tracing::warn!(module = name, error = %e, "kernel module on demand");
        }
    }

    /// Wakes `notify` when asked after an apply ([`Self::observe`]) and
    /// after `links_down` (pass the status controller's trigger so `get
    /// links` shows the result at once).
    pub fn notify_after_apply(mut self, notify: Arc<Notify>) -> Self {
        self.applied = Some(notify);
        self
    }

    /// Makes the kernel match `plan` (which must have passed validation:
    /// link names resolved, gateways reachable). Returns `Err` only when
    /// the kernel cannot even be read; per-item failures are in the report.
    /// The caller wakes the observer with [`Self::observe`] once it has
    /// published what the apply means: on one CPU the observer's snapshot
    /// would otherwise run first (a woken idle thread preempts), holding
    /// "network ready" back by a whole netlink dump.
    pub async fn apply(&self, plan: &NetworkPlan) -> Result<ApplyReport, NetError> {
        self.apply_locked(plan).await
    }

    /// Wakes the status controller (see [`Self::notify_after_apply`]).
    pub fn observe(&self) {
        if let Some(notify) = &self.applied {
            notify.notify_one();
        }
    }

    async fn apply_locked(&self, plan: &NetworkPlan) -> Result<ApplyReport, NetError> {
        let mut owned = self.owned.lock().await;
        let mut report = ApplyReport::default();
        // How long each part took, for the debug log: the boot waits on it.
        let mut laps = crate::laps::Laps::new();
        let mut kernel = Kernel::new(self.netlink.snapshot().await?);
        laps.lap("snapshot");

        // Take back what is no longer planned first: IPv6 keys addresses
        // without their prefix (fd00::5/64 -> fd00::5/56 would be refused
        // as existing), and deleting a primary IPv4 address also deletes
        // its subnet's secondaries, which a new address would be.
        let doomed = stale_links(plan, &owned);
        self.remove_stale(plan, &mut owned, &kernel, &doomed, &mut report).await;
        laps.lap("stale");

        // Logical links, in dependency order; the kernel changes members'
        // state on its own, so read again after any change.
        let mut structure_changed = self.remove_stale_links(plan, &mut owned, &kernel, &doomed, &mut report).await;
        if structure_changed {
            kernel = Kernel::new(self.netlink.snapshot().await?);
            structure_changed = false;
        }
        structure_changed |= self.create_links(plan, &mut owned, &kernel, &mut report, "bond").await;
        if structure_changed {
            kernel = Kernel::new(self.netlink.snapshot().await?);
            structure_changed = false;
        }
        structure_changed |= self.enslave(plan, &kernel, &mut report).await;
        structure_changed |= self.create_links(plan, &mut owned, &kernel, &mut report, "vlan").await;
        if structure_changed {
            kernel = Kernel::new(self.netlink.snapshot().await?);
        }
        laps.lap("logical links");

        self.configure_links(plan, &kernel, &mut report).await;
        laps.lap("links");
        self.add_addresses(plan, &mut owned, &kernel, &mut report).await;
        laps.lap("addresses");
        self.add_routes(plan, &mut owned, &kernel, &mut report).await;
        laps.lap("routes");

        self.write_files(plan, &mut report).await;
        laps.lap("files");
        tracing::debug!(writes = report.writes, "network apply: {laps}");
        Ok(report)
    }

    /// Removes the routes and addresses this applier added that `plan` no
    /// longer has; forgets those the kernel already dropped and those on
    /// links about to be deleted (`doomed`), which go with their link.
    async fn remove_stale(
        &self,
        plan: &NetworkPlan,
        owned: &mut Owned,
        kernel: &Kernel,
        doomed: &[(String, &'static str)],
        report: &mut ApplyReport,
    ) {
        let doomed: HashSet<&str> = doomed.iter().map(|(name, _)| name.as_str()).collect();
        let planned: HashSet<&RoutePlan> = plan.routes.iter().collect();
        let stale: Vec<RoutePlan> = owned.routes.iter().filter(|r| !planned.contains(r)).cloned().collect();
        for route in stale {
            if let Some(link) = kernel.link(&route.link)
                && kernel.has_route(&route)
                && !doomed.contains(route.link.as_str())
            {
                report.writes += 1;
                match self.netlink.remove_route(link.index, &route).await {
                    Ok(()) => report.removed_routes.push(route.clone()),
                    Err(e) if gone(&e, libc::ESRCH) => {}
                    Err(error) => {
                        report.errors.push(NetError::RemoveRoute { route, error }.into());
                        continue;
                    }
                }
            }
            owned.routes.remove(&route);
        }
        let planned: HashSet<&AddressPlan> = plan.addresses.iter().collect();
        let stale: Vec<AddressPlan> = owned.addresses.iter().filter(|a| !planned.contains(a)).cloned().collect();
        for address in stale {
            if let Some(link) = kernel.link(&address.link)
                && kernel.has_address(&address)
                && !doomed.contains(address.link.as_str())
            {
                report.writes += 1;
                match self.netlink.remove_address(link.index, address.address).await {
                    Ok(()) => report.removed_addresses.push(address.clone()),
                    Err(e) if gone(&e, libc::EADDRNOTAVAIL) => {}
                    Err(error) => {
                        report.errors.push(NetError::RemoveAddress { address, error }.into());
                        continue;
                    }
                }
            }
            owned.addresses.remove(&address);
        }
    }

    /// Releases members a planned bond no longer lists, and deletes the
    /// logical links this applier created that the plan no longer names
    /// (or names with another kind): VLANs before bonds, a deleted bond
    /// releases its members. Returns whether it wrote.
    async fn remove_stale_links(
        &self,
        plan: &NetworkPlan,
        owned: &mut Owned,
        kernel: &Kernel,
        stale: &[(String, &'static str)],
        report: &mut ApplyReport,
    ) -> bool {
        let writes = report.writes;
        for link in &plan.links {
            let Some(LinkKind::Bond(bond)) = &link.kind else { continue };
            for member in kernel.snapshot.links.iter().filter(|m| m.master == link.name) {
                if bond.members.contains(&member.name) {
                    continue;
                }
                report.writes += 1;
                if let Err(error) = self.netlink.set_master(member.index, None).await {
                    report
                        .errors
                        .push(NetError::SetLink { link: member.name.clone(), change: "nomaster".into(), error }.into());
                }
            }
        }
        // VLANs first: deleting a bond under one would take it along.
        for wanted in ["vlan", "bond"] {
            for (name, _) in stale.iter().filter(|(_, kind)| *kind == wanted) {
                if let Some(link) = kernel.link(name) {
                    report.writes += 1;
                    match self.netlink.delete_link(link.index).await {
                        Ok(()) => report.deleted_links.push(name.clone()),
                        Err(e) if e.is(libc::ENODEV) => {}
                        Err(error) => {
                            report.errors.push(ApplyError::DeleteLink { link: name.clone(), error });
                            continue;
                        }
                    }
                }
                owned.links.remove(name);
            }
        }
        report.writes != writes
    }

    /// Creates the plan's logical links of kernel kind `kind` that do not
    /// exist, and adopts those that do with that kind. Returns whether it
    /// wrote.
    async fn create_links(
        &self,
        plan: &NetworkPlan,
        owned: &mut Owned,
        kernel: &Kernel,
        report: &mut ApplyReport,
        kind: &'static str,
    ) -> bool {
        let writes = report.writes;
        for link in &plan.links {
            let Some(planned) = link.kind.as_ref().filter(|k| kind_name(k) == kind) else { continue };
            if let Some(existing) = kernel.link(&link.name) {
                if existing.kind != kind {
                    report.errors.push(ApplyError::LinkInTheWay {
                        link: link.name.clone(),
                        kind,
                        found: existing.kind.clone(),
                    });
                    continue;
                }
                owned.links.insert(link.name.clone(), kind);
                if is_as_planned(existing, planned) {
                    continue;
                }
                // Another VLAN id or parent, another bond mode: the kernel
                // cannot change those in place (a bond's mode only without
                // members), so the link is made again.
                report.writes += 1;
                match self.netlink.delete_link(existing.index).await {
                    Ok(()) => report.deleted_links.push(link.name.clone()),
                    Err(error) => {
                        report.errors.push(ApplyError::DeleteLink { link: link.name.clone(), error });
                        continue;
                    }
                }
            }
            let result = match planned {
                LinkKind::Bond(bond) => {
                    self.ensure_module(BOND_MODULE).await;
                    report.writes += 1;
                    self.netlink.create_bond(&link.name, bond).await
                }
                LinkKind::Vlan(vlan) => {
                    let Some(parent) = kernel.link(&vlan.parent) else {
                        report.missing(&vlan.parent);
                        continue;
                    };
                    self.ensure_module(VLAN_MODULE).await;
                    report.writes += 1;
                    self.netlink.create_vlan(&link.name, parent.index, vlan.id).await
                }
            };
            match result {
                Ok(()) => {
                    owned.links.insert(link.name.clone(), kind);
                    report.created_links.push(link.name.clone());
                }
                Err(error) => report.errors.push(ApplyError::CreateLink { link: link.name.clone(), kind, error }),
            }
        }
        report.writes != writes
    }

    /// Enslaves each planned bond's members that are not yet its own: out
    /// of another master, down (the kernel refuses an up member), then
    /// into the bond. Returns whether it wrote.
    async fn enslave(&self, plan: &NetworkPlan, kernel: &Kernel, report: &mut ApplyReport) -> bool {
        let writes = report.writes;
        for link in &plan.links {
            let Some(LinkKind::Bond(bond)) = &link.kind else { continue };
            // Missing (creation failed) or someone else's link of another kind.
            let Some(master) = kernel.link(&link.name).filter(|l| l.kind == "bond") else { continue };
            for name in &bond.members {
                let Some(member) = kernel.link(name) else {
                    report.missing(name);
                    continue;
                };
                if member.master == link.name {
                    continue;
                }
                let fail = |change: String, error: NetlinkError| -> ApplyError {
                    NetError::SetLink { link: name.clone(), change, error }.into()
                };
                if !member.master.is_empty() {
                    report.writes += 1;
                    if let Err(error) = self.netlink.set_master(member.index, None).await {
                        report.errors.push(fail("nomaster".into(), error));
                        continue;
                    }
                }
                if member.up {
                    report.writes += 1;
                    if let Err(error) = self.netlink.set_link(member.index, false).await {
                        report.errors.push(fail("down".into(), error));
                        continue;
                    }
                }
                report.writes += 1;
                if let Err(error) = self.netlink.set_master(member.index, Some(master.index)).await {
                    report.errors.push(fail(format!("master {}", link.name), error));
                }
            }
        }
        report.writes != writes
    }

    /// MTUs first, then up/down state, each only where it differs. MTU and
    /// state separately: a refused MTU must not keep the link down.
    async fn configure_links(&self, plan: &NetworkPlan, kernel: &Kernel, report: &mut ApplyReport) {
        for link in &plan.links {
            let Some(current) = kernel.link(&link.name) else {
                report.missing(&link.name);
                continue;
            };
            if let Some(mtu) = link.mtu.filter(|mtu| *mtu != current.mtu) {
                report.writes += 1;
                match self.netlink.set_mtu(current.index, mtu).await {
                    Ok(()) => report.changed(&link.name),
                    Err(error) => report.errors.push(
                        NetError::SetLink { link: link.name.clone(), change: format!("mtu {mtu}"), error }.into(),
                    ),
                }
            }
        }
        for link in &plan.links {
            let Some(current) = kernel.link(&link.name) else { continue };
            if current.up == link.up {
                continue;
            }
            report.writes += 1;
            match self.netlink.set_link(current.index, link.up).await {
                Ok(()) => report.changed(&link.name),
                Err(error) => {
                    let change = if link.up { "up" } else { "down" }.to_string();
                    report.errors.push(NetError::SetLink { link: link.name.clone(), change, error }.into());
                }
            }
        }
    }

    async fn add_addresses(&self, plan: &NetworkPlan, owned: &mut Owned, kernel: &Kernel, report: &mut ApplyReport) {
        for address in &plan.addresses {
            // Already there: ours if an earlier apply added it, else
            // someone else's, and it stays that way.
            if kernel.has_address(address) {
                continue;
            }
            let Some(link) = kernel.link(&address.link) else {
                report.missing(&address.link);
                continue;
            };
            report.writes += 1;
            match self.netlink.add_address(link.index, address.address).await {
                Ok(()) => {
                    owned.addresses.insert(address.clone());
                    report.added_addresses.push(address.clone());
                }
                Err(e) if e.is(libc::EEXIST) => {}
                Err(error) => report.errors.push(NetError::AddAddress { address: address.clone(), error }.into()),
            }
        }
    }

    /// Direct routes first: a gateway may be reachable only through one
    /// (`gw/32 dev eth0`, then `default via gw`).
    async fn add_routes(&self, plan: &NetworkPlan, owned: &mut Owned, kernel: &Kernel, report: &mut ApplyReport) {
        let mut routes: Vec<&RoutePlan> = plan.routes.iter().collect();
        routes.sort_by_key(|r| r.gateway.is_some());
        for route in routes {
            if kernel.has_route(route) {
                continue;
            }
            let Some(link) = kernel.link(&route.link) else {
                report.missing(&route.link);
                continue;
            };
            report.writes += 1;
            match self.netlink.add_route(link.index, route).await {
                Ok(()) => {
                    owned.routes.insert(route.clone());
                    report.added_routes.push(route.clone());
                }
                Err(e) if e.is(libc::EEXIST) => {}
                Err(error) => report.errors.push(NetError::AddRoute { route: route.clone(), error }.into()),
            }
        }
    }

    /// `resolv.conf` when the plan has resolvers or search domains,
    /// `/etc/hosts` when it has a hostname; each only when its text changed.
    async fn write_files(&self, plan: &NetworkPlan, report: &mut ApplyReport) {
        if !plan.resolvers.is_empty() || !plan.search.is_empty() {
            let path = self.root.join(RESOLV_CONF);
            match hosts::render_resolv_conf(&plan.resolvers, &plan.search) {
                Ok(text) => match hosts::write_if_changed(path.clone(), text, ETC_MODE).await {
                    Ok(written) => report.resolv_conf_written = written,
                    Err(error) => report.errors.push(ApplyError::Write { path, error }),
                },
                Err(error) => report.errors.push(ApplyError::Render { path, error }),
            }
        }
        if let Some(hostname) = &plan.hostname {
            let path = self.root.join(HOSTS);
            match hosts::render_hosts(hostname, None) {
                Ok(text) => match hosts::write_if_changed(path.clone(), text, ETC_MODE).await {
                    Ok(written) => report.hosts_written = written,
                    Err(error) => report.errors.push(ApplyError::Write { path, error }),
                },
                Err(error) => report.errors.push(ApplyError::Render { path, error }),
            }
        }
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
        self.observe();
        Ok(report)
    }
}

/// Whether an existing logical link of the planned kind has the planned
/// VLAN id and parent, or bond mode (what cannot change in place). An
/// attribute the kernel did not report counts as matching.
fn is_as_planned(existing: &LinkStatusSpec, planned: &LinkKind) -> bool {
    match planned {
        LinkKind::Bond(bond) => existing.bond_mode.is_empty() || existing.bond_mode == bond.mode.as_str(),
        LinkKind::Vlan(vlan) => {
            existing.vlan_id.is_none_or(|id| id == vlan.id)
                && (existing.parent.is_empty() || existing.parent == vlan.parent)
        }
    }
}

/// The logical links this applier created that `plan` no longer names, or
/// names with another kind.
fn stale_links(plan: &NetworkPlan, owned: &Owned) -> Vec<(String, &'static str)> {
    let planned: BTreeMap<&str, &LinkPlan> = plan.links.iter().map(|l| (l.name.as_str(), l)).collect();
    owned
        .links
        .iter()
        .filter(|(name, kind)| planned.get(name.as_str()).and_then(|l| l.kind.as_ref()).map(kind_name) != Some(**kind))
        .map(|(name, kind)| (name.clone(), *kind))
        .collect()
}

/// Whether a removal failed only because the thing is already gone (the
/// link vanished, or `absent` from the kernel).
fn gone(e: &NetlinkError, absent: i32) -> bool {
    e.is(absent) || e.is(libc::ENODEV)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::network::observe::Snapshot;
    use crate::network::plan::{BondMode, BondPlan, LinkPlan, VlanPlan};
    use crate::network::resources::{AddressStatusSpec, LinkStatusSpec, RouteStatusSpec};
    use bronze_config::Cidr;
    use futures::future::BoxFuture;
    use std::collections::HashMap;
    use std::sync::Mutex as StdMutex;

    /// Records mutating calls and keeps a small kernel model: links (with
    /// state, MTU, kind and master), addresses and routes, answering
    /// EEXIST/EADDRNOTAVAIL/ESRCH/EBUSY like the kernel. Calls can be made
    /// to fail.
    #[derive(Default)]
    struct FakeNetlink {
        state: StdMutex<FakeState>,
    }

    #[derive(Default)]
    struct FakeState {
        calls: Vec<String>,
        links: BTreeMap<u32, FakeLink>,
        addresses: BTreeSet<(u32, Cidr)>,
        routes: BTreeSet<(u32, RoutePlan)>,
        fail: HashMap<String, i32>,
    }

    #[derive(Clone, Default)]
    struct FakeLink {
        name: String,
        kind: String,
        up: bool,
        mtu: u32,
        master: Option<u32>,
        /// A VLAN's id and parent index.
        vlan: Option<(u16, u32)>,
        bond_mode: String,
    }

    impl FakeState {
        fn name(&self, index: u32) -> String {
            self.links.get(&index).map(|l| l.name.clone()).unwrap_or_else(|| format!("#{index}"))
        }

        fn add_link(&mut self, name: &str, kind: &str) -> u32 {
            let index = self.links.keys().max().copied().unwrap_or(1) + 1;
            let link = FakeLink { name: name.into(), kind: kind.into(), mtu: 1500, ..Default::default() };
            self.links.insert(index, link);
            index
        }
    }

    impl FakeNetlink {
        fn with_links(names: &[&str]) -> Arc<Self> {
            let fake = Self::default();
            {
                let mut state = fake.state.lock().unwrap();
                let lo = FakeLink { name: "lo".into(), up: true, mtu: 65536, ..Default::default() };
                state.links.insert(1, lo);
                for name in names {
                    state.add_link(name, "");
                }
            }
            Arc::new(fake)
        }

        /// Records `call` (with link names for indexes) and fails it if
        /// asked to.
        fn record(&self, call: String) -> Result<(), NetlinkError> {
            let mut s = self.state.lock().unwrap();
            s.calls.push(call.clone());
            match s.fail.get(&call) {
                Some(errno) => Err(NetlinkError::os(*errno)),
                None => Ok(()),
            }
        }

        fn name(&self, index: u32) -> String {
            self.state.lock().unwrap().name(index)
        }

        fn calls(&self) -> Vec<String> {
            std::mem::take(&mut self.state.lock().unwrap().calls)
        }

        fn link(&self, name: &str) -> FakeLink {
            self.state.lock().unwrap().links.values().find(|l| l.name == name).cloned().expect("link exists")
        }

        fn master_of(&self, name: &str) -> Option<String> {
            let master = self.link(name).master?;
            Some(self.name(master))
        }
    }

    impl Netlink for FakeNetlink {
        fn link_index<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Option<u32>, NetlinkError>> {
            Box::pin(async move {
                Ok(self.state.lock().unwrap().links.iter().find(|(_, l)| l.name == name).map(|(i, _)| *i))
            })
        }
        fn set_link(&self, index: u32, up: bool) -> BoxFuture<'_, Result<(), NetlinkError>> {
            Box::pin(async move {
                self.record(format!("set {} {}", self.name(index), if up { "up" } else { "down" }))?;
                self.state.lock().unwrap().links.get_mut(&index).ok_or(NetlinkError::os(libc::ENODEV))?.up = up;
                Ok(())
            })
        }
        fn set_mtu(&self, index: u32, mtu: u32) -> BoxFuture<'_, Result<(), NetlinkError>> {
            Box::pin(async move {
                self.record(format!("set {} mtu {mtu}", self.name(index)))?;
                self.state.lock().unwrap().links.get_mut(&index).ok_or(NetlinkError::os(libc::ENODEV))?.mtu = mtu;
                Ok(())
            })
        }
        fn add_address(&self, index: u32, address: Cidr) -> BoxFuture<'_, Result<(), NetlinkError>> {
            Box::pin(async move {
                self.record(format!("add {} {address}", self.name(index)))?;
                let fresh = self.state.lock().unwrap().addresses.insert((index, address));
                if fresh { Ok(()) } else { Err(NetlinkError::os(libc::EEXIST)) }
            })
        }
        fn remove_address(&self, index: u32, address: Cidr) -> BoxFuture<'_, Result<(), NetlinkError>> {
            Box::pin(async move {
                self.record(format!("del {} {address}", self.name(index)))?;
                let had = self.state.lock().unwrap().addresses.remove(&(index, address));
                if had { Ok(()) } else { Err(NetlinkError::os(libc::EADDRNOTAVAIL)) }
            })
        }
        fn add_route<'a>(&'a self, index: u32, route: &'a RoutePlan) -> BoxFuture<'a, Result<(), NetlinkError>> {
            Box::pin(async move {
                self.record(format!("add {route}"))?;
                let fresh = self.state.lock().unwrap().routes.insert((index, route.clone()));
                if fresh { Ok(()) } else { Err(NetlinkError::os(libc::EEXIST)) }
            })
        }
        fn remove_route<'a>(&'a self, index: u32, route: &'a RoutePlan) -> BoxFuture<'a, Result<(), NetlinkError>> {
            Box::pin(async move {
                self.record(format!("del {route}"))?;
                let had = self.state.lock().unwrap().routes.remove(&(index, route.clone()));
                if had { Ok(()) } else { Err(NetlinkError::os(libc::ESRCH)) }
            })
        }
        fn create_bond<'a>(&'a self, name: &'a str, bond: &'a BondPlan) -> BoxFuture<'a, Result<(), NetlinkError>> {
            Box::pin(async move {
                self.record(format!("create bond {name} {:?}", bond.mode))?;
                let mut state = self.state.lock().unwrap();
                let index = state.add_link(name, "bond");
                state.links.get_mut(&index).unwrap().bond_mode = bond.mode.as_str().into();
                Ok(())
            })
        }
        fn create_vlan<'a>(&'a self, name: &'a str, parent: u32, id: u16) -> BoxFuture<'a, Result<(), NetlinkError>> {
            Box::pin(async move {
                self.record(format!("create vlan {name} on {} id {id}", self.name(parent)))?;
                let mut state = self.state.lock().unwrap();
                let index = state.add_link(name, "vlan");
                state.links.get_mut(&index).unwrap().vlan = Some((id, parent));
                Ok(())
            })
        }
        fn set_master(&self, index: u32, master: Option<u32>) -> BoxFuture<'_, Result<(), NetlinkError>> {
            Box::pin(async move {
                let change = master.map(|m| format!("master {}", self.name(m))).unwrap_or("nomaster".into());
                self.record(format!("set {} {change}", self.name(index)))?;
                let mut state = self.state.lock().unwrap();
                let link = state.links.get_mut(&index).ok_or(NetlinkError::os(libc::ENODEV))?;
                if master.is_some() {
                    if link.up || link.master.is_some() {
                        return Err(NetlinkError::os(libc::EBUSY));
                    }
                    // The bond opens its new member.
                    link.up = true;
                }
                link.master = master;
                Ok(())
            })
        }
        fn delete_link(&self, index: u32) -> BoxFuture<'_, Result<(), NetlinkError>> {
            Box::pin(async move {
                self.record(format!("delete {}", self.name(index)))?;
                let mut state = self.state.lock().unwrap();
                state.links.remove(&index).ok_or(NetlinkError::os(libc::ENODEV))?;
                // VLANs on it go with it, and every address and route.
                let uppers: Vec<u32> = state
                    .links
                    .iter()
                    .filter(|(_, l)| l.vlan.is_some_and(|(_, p)| p == index))
                    .map(|(i, _)| *i)
                    .collect();
                for gone in uppers.iter().chain([&index]) {
                    state.links.remove(gone);
                    state.addresses.retain(|(i, _)| i != gone);
                    state.routes.retain(|(i, _)| i != gone);
                }
                for link in state.links.values_mut().filter(|l| l.master == Some(index)) {
                    link.master = None;
                    link.up = false;
                }
                Ok(())
            })
        }
        fn snapshot(&self) -> BoxFuture<'_, Result<Snapshot, NetError>> {
            Box::pin(async move {
                let state = self.state.lock().unwrap();
                let links = state
                    .links
                    .iter()
                    .map(|(index, l)| LinkStatusSpec {
                        name: l.name.clone(),
                        index: *index,
                        kind: l.kind.clone(),
                        link_type: if *index == 1 { "loopback" } else { "ether" }.into(),
                        up: l.up,
                        mtu: l.mtu,
                        master: l.master.map(|m| state.name(m)).unwrap_or_default(),
                        vlan_id: l.vlan.map(|(id, _)| id),
                        parent: l.vlan.map(|(_, parent)| state.name(parent)).unwrap_or_default(),
                        bond_mode: l.bond_mode.clone(),
                        ..Default::default()
                    })
                    .collect();
                let addresses = state
                    .addresses
                    .iter()
                    .map(|(index, a)| AddressStatusSpec {
                        link: state.name(*index),
                        address: a.to_string(),
                        ..Default::default()
                    })
                    .collect();
                let routes = state
                    .routes
                    .iter()
                    .map(|(index, r)| RouteStatusSpec {
                        destination: r.destination.to_string(),
                        gateway: r.gateway.map(|g| g.to_string()).unwrap_or_default(),
                        link: state.name(*index),
                        metric: r.metric,
                        ..Default::default()
                    })
                    .collect();
                Ok(Snapshot { links, addresses, routes })
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

    fn address(link: &str, a: &str) -> AddressPlan {
        AddressPlan { link: link.into(), address: cidr(a) }
    }

    fn plan_for(link: &str, addresses: &[&str], routes: Vec<RoutePlan>) -> NetworkPlan {
        NetworkPlan {
            links: vec![LinkPlan { name: link.into(), up: true, mtu: Some(1400), kind: None }],
            addresses: addresses.iter().map(|a| address(link, a)).collect(),
            routes,
            ..Default::default()
        }
    }

    /// bond0 over eth0 and eth1, VLAN 100 on it with an address and routes.
    fn bonded_plan() -> NetworkPlan {
        let bond = BondPlan {
            mode: BondMode::ActiveBackup,
            members: vec!["eth0".into(), "eth1".into()],
            miimon: Some(100),
            updelay: None,
            downdelay: None,
            lacp_rate_fast: false,
            xmit_hash_policy: None,
        };
        NetworkPlan {
            links: vec![
                LinkPlan { name: "bond0".into(), up: true, mtu: Some(9000), kind: Some(LinkKind::Bond(bond)) },
                LinkPlan {
                    name: "bond0.100".into(),
                    up: true,
                    mtu: None,
                    kind: Some(LinkKind::Vlan(VlanPlan { parent: "bond0".into(), id: 100 })),
                },
            ],
            addresses: vec![address("bond0.100", "10.100.0.5/24")],
            routes: vec![
                route("bond0.100", "0.0.0.0/0", Some("10.100.0.1")),
                route("bond0.100", "10.101.0.0/16", None),
            ],
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
                "set eth0 mtu 1400",
                "set eth0 up",
                "add eth0 10.0.0.5/24",
                "add 10.9.0.0/16 dev eth0 metric 1024",
                "add 0.0.0.0/0 via 10.0.0.1 dev eth0 metric 1024",
            ]
        );
        assert_eq!(report.writes, 5);
        assert_eq!(report.links, ["eth0"]);
        assert_eq!(report.added_addresses.len(), 1, "the pre-existing address is not ours");
        assert_eq!(report.added_routes.len(), 2);

        // Re-applying the same plan writes nothing at all.
        let report = applier.apply(&first).await.unwrap();
        assert!(report.is_complete(), "{report:?}");
        assert_eq!(report.writes, 0);
        assert_eq!(fake.calls(), Vec::<String>::new());
        assert!(report.links.is_empty() && report.added_addresses.is_empty() && report.added_routes.is_empty());

        // A smaller plan: ours go, someone else's stays even though the
        // plan dropped it too.
        let second = plan_for("eth0", &["10.0.0.6/24"], vec![]);
        let report = applier.apply(&second).await.unwrap();
        assert_eq!(
            fake.calls(),
            [
                "del 0.0.0.0/0 via 10.0.0.1 dev eth0 metric 1024",
                "del 10.9.0.0/16 dev eth0 metric 1024",
                "del eth0 10.0.0.5/24",
                "add eth0 10.0.0.6/24",
            ]
        );
        assert_eq!(report.writes, 4);
        assert_eq!(report.removed_routes.len(), 2);
        assert_eq!(report.removed_addresses, [address("eth0", "10.0.0.5/24")]);
        let kernel: Vec<_> = fake.state.lock().unwrap().addresses.iter().map(|(_, a)| a.to_string()).collect();
        assert_eq!(kernel, ["10.0.0.6/24", "192.168.7.7/24"]);
    }

    #[tokio::test]
    async fn only_what_differs_is_written() {
        let fake = FakeNetlink::with_links(&["eth0"]);
        let applier = Applier::new(fake.clone(), "/nonexistent");
        applier.apply(&plan_for("eth0", &["10.0.0.5/24"], vec![])).await.unwrap();
        fake.calls();
        // Someone set the link down and removed our address behind our back.
        {
            let mut state = fake.state.lock().unwrap();
            state.links.get_mut(&2).unwrap().up = false;
            state.addresses.clear();
        }
        let report = applier.apply(&plan_for("eth0", &["10.0.0.5/24"], vec![])).await.unwrap();
        assert_eq!(fake.calls(), ["set eth0 up", "add eth0 10.0.0.5/24"], "the MTU is still right");
        assert_eq!(report.writes, 2);
        // A route the kernel already dropped is forgotten without a write.
        let with_route = plan_for("eth0", &["10.0.0.5/24"], vec![route("eth0", "10.9.0.0/16", None)]);
        applier.apply(&with_route).await.unwrap();
        fake.state.lock().unwrap().routes.clear();
        fake.calls();
        let report = applier.apply(&plan_for("eth0", &["10.0.0.5/24"], vec![])).await.unwrap();
        assert_eq!((report.writes, report.removed_routes.len()), (0, 0));
    }

    #[tokio::test]
    async fn bonds_members_and_vlans_in_dependency_order_then_nothing() {
        let fake = FakeNetlink::with_links(&["eth0", "eth1"]);
        // eth0 is up already: it must go down to be enslaved.
        fake.state.lock().unwrap().links.get_mut(&2).unwrap().up = true;
        let applier = Applier::new(fake.clone(), "/nonexistent");
        let report = applier.apply(&bonded_plan()).await.unwrap();
        assert!(report.is_complete(), "{report:?}");
        assert_eq!(
            fake.calls(),
            [
                "create bond bond0 ActiveBackup",
                "set eth0 down",
                "set eth0 master bond0",
                "set eth1 master bond0",
                "create vlan bond0.100 on bond0 id 100",
                "set bond0 mtu 9000",
                "set bond0 up",
                "set bond0.100 up",
                "add bond0.100 10.100.0.5/24",
                "add 10.101.0.0/16 dev bond0.100 metric 1024",
                "add 0.0.0.0/0 via 10.100.0.1 dev bond0.100 metric 1024",
            ]
        );
        assert_eq!(report.writes, 11);
        assert_eq!(report.created_links, ["bond0", "bond0.100"]);
        assert_eq!((fake.master_of("eth0"), fake.master_of("eth1")), (Some("bond0".into()), Some("bond0".into())));

        let report = applier.apply(&bonded_plan()).await.unwrap();
        assert!(report.is_complete(), "{report:?}");
        assert_eq!(report.writes, 0, "{:?}", fake.calls());
        assert!(report.created_links.is_empty());
    }

    /// Records each module asked for among the netlink calls, so a test
    /// sees which create it came before.
    struct ModulesIntoCalls(Arc<FakeNetlink>);

    impl OnDemandModules for ModulesIntoCalls {
        fn ensure(&self, name: &str) {
            self.0.record(format!("module {name}")).unwrap();
        }
    }

    #[tokio::test]
    async fn kernel_modules_are_asked_for_right_before_a_bond_or_vlan_is_created() {
        let fake = FakeNetlink::with_links(&["eth0", "eth1"]);
        let applier = Applier::new(fake.clone(), "/nonexistent").with_modules(Arc::new(ModulesIntoCalls(fake.clone())));
        let report = applier.apply(&bonded_plan()).await.unwrap();
        assert!(report.is_complete(), "{report:?}");
        let calls = fake.calls();
        assert_eq!(
            calls[..6],
            [
                "module bonding",
                "create bond bond0 ActiveBackup",
                "set eth0 master bond0",
                "set eth1 master bond0",
                "module 8021q",
                "create vlan bond0.100 on bond0 id 100",
            ]
        );
        assert_eq!(calls.iter().filter(|c| c.starts_with("module")).count(), 2, "{calls:?}");
        // Nothing to create, nothing asked; a restarted applier adopts.
        applier.apply(&bonded_plan()).await.unwrap();
        let adopting =
            Applier::new(fake.clone(), "/nonexistent").with_modules(Arc::new(ModulesIntoCalls(fake.clone())));
        adopting.apply(&bonded_plan()).await.unwrap();
        assert_eq!(fake.calls(), Vec::<String>::new());
        // A VLAN whose parent is missing is not created: no module either.
        let plan = NetworkPlan {
            links: vec![LinkPlan {
                name: "eth9.7".into(),
                up: true,
                mtu: None,
                kind: Some(LinkKind::Vlan(VlanPlan { parent: "eth9".into(), id: 7 })),
            }],
            ..Default::default()
        };
        adopting.apply(&plan).await.unwrap();
        assert!(!fake.calls().iter().any(|c| c.starts_with("module")));
    }

    #[tokio::test]
    async fn dropped_logical_links_are_deleted_vlans_first_and_members_released() {
        let fake = FakeNetlink::with_links(&["eth0", "eth1", "eth2"]);
        let applier = Applier::new(fake.clone(), "/nonexistent");
        let mut plan = bonded_plan();
        let Some(LinkKind::Bond(bond)) = &mut plan.links[0].kind else { unreachable!() };
        bond.members.push("eth2".into());
        applier.apply(&plan).await.unwrap();
        fake.calls();

        // eth2 leaves the bond; the rest stays.
        let report = applier.apply(&bonded_plan()).await.unwrap();
        assert_eq!(fake.calls(), ["set eth2 nomaster"]);
        assert_eq!(report.writes, 1);
        assert_eq!(fake.master_of("eth2"), None);

        // Back to plain eth0: the VLAN and the bond go (VLAN first), eth1
        // is released with the bond and left alone.
        let report = applier.apply(&plan_for("eth0", &[], vec![])).await.unwrap();
        assert!(report.is_complete(), "{report:?}");
        assert_eq!(report.deleted_links, ["bond0.100", "bond0"]);
        assert_eq!(fake.calls(), ["delete bond0.100", "delete bond0", "set eth0 mtu 1400", "set eth0 up"]);
        assert_eq!((fake.master_of("eth0"), fake.master_of("eth1")), (None, None));
        // Its routes went with the VLAN: forgotten, not removed again.
        let report = applier.apply(&plan_for("eth0", &[], vec![])).await.unwrap();
        assert_eq!(report.writes, 0);
    }

    #[tokio::test]
    async fn a_restarted_applier_adopts_the_logical_links_the_plan_still_names() {
        let fake = FakeNetlink::with_links(&["eth0", "eth1"]);
        Applier::new(fake.clone(), "/nonexistent").apply(&bonded_plan()).await.unwrap();
        fake.calls();
        // A new applier (bronzed restarted): nothing to create.
        let applier = Applier::new(fake.clone(), "/nonexistent");
        let report = applier.apply(&bonded_plan()).await.unwrap();
        assert!(report.is_complete(), "{report:?}");
        assert_eq!((report.writes, report.created_links.len()), (0, 0));
        // Adopted, so they are ours to delete.
        let report = applier.apply(&NetworkPlan::default()).await.unwrap();
        assert_eq!(report.deleted_links, ["bond0.100", "bond0"]);
    }

    #[tokio::test]
    async fn a_new_vlan_id_or_bond_mode_makes_the_link_again() {
        let fake = FakeNetlink::with_links(&["eth0", "eth1"]);
        let applier = Applier::new(fake.clone(), "/nonexistent");
        applier.apply(&bonded_plan()).await.unwrap();
        fake.calls();

        let mut plan = bonded_plan();
        let Some(LinkKind::Vlan(vlan)) = &mut plan.links[1].kind else { unreachable!() };
        vlan.id = 200;
        let report = applier.apply(&plan).await.unwrap();
        assert!(report.is_complete(), "{report:?}");
        assert_eq!(
            fake.calls(),
            [
                "delete bond0.100",
                "create vlan bond0.100 on bond0 id 200",
                "set bond0.100 up",
                "add bond0.100 10.100.0.5/24",
                "add 10.101.0.0/16 dev bond0.100 metric 1024",
                "add 0.0.0.0/0 via 10.100.0.1 dev bond0.100 metric 1024",
            ]
        );
        assert_eq!((report.deleted_links, report.created_links), (vec!["bond0.100".into()], vec!["bond0.100".into()]));

        let Some(LinkKind::Bond(bond)) = &mut plan.links[0].kind else { unreachable!() };
        bond.mode = BondMode::Lacp;
        applier.apply(&plan).await.unwrap();
        // The kernel deletes the VLAN with its bond and releases the
        // members (down): all made again.
        assert_eq!(
            fake.calls(),
            [
                "delete bond0",
                "create bond bond0 Lacp",
                "set eth0 master bond0",
                "set eth1 master bond0",
                "create vlan bond0.100 on bond0 id 200",
                "set bond0 mtu 9000",
                "set bond0 up",
                "set bond0.100 up",
                "add bond0.100 10.100.0.5/24",
                "add 10.101.0.0/16 dev bond0.100 metric 1024",
                "add 0.0.0.0/0 via 10.100.0.1 dev bond0.100 metric 1024",
            ]
        );
        assert_eq!(applier.apply(&plan).await.unwrap().writes, 0);
    }

    #[tokio::test]
    async fn a_link_of_the_wrong_kind_is_not_taken_over() {
        let fake = FakeNetlink::with_links(&["eth0", "eth1", "bond0"]);
        let applier = Applier::new(fake.clone(), "/nonexistent");
        let report = applier.apply(&bonded_plan()).await.unwrap();
        assert_eq!(
            report.errors.iter().map(ToString::to_string).collect::<Vec<_>>(),
            ["cannot create bond bond0: a link of that name exists and is not a bond (kind \"\")"]
        );
        assert!(!fake.calls().iter().any(|c| c.contains("master")), "members stay where they are");
        // Not adopted: a plan without it leaves it alone.
        applier.apply(&NetworkPlan::default()).await.unwrap();
        assert!(!fake.calls().contains(&"delete bond0".to_string()));
    }

    #[tokio::test]
    async fn a_vlan_on_a_missing_parent_waits() {
        let fake = FakeNetlink::with_links(&[]);
        let applier = Applier::new(fake.clone(), "/nonexistent");
        let plan = NetworkPlan {
            links: vec![LinkPlan {
                name: "eth0.7".into(),
                up: true,
                mtu: None,
                kind: Some(LinkKind::Vlan(VlanPlan { parent: "eth0".into(), id: 7 })),
            }],
            ..Default::default()
        };
        let report = applier.apply(&plan).await.unwrap();
        assert_eq!(report.missing_links, ["eth0", "eth0.7"]);
        assert_eq!(report.writes, 0);
        fake.state.lock().unwrap().add_link("eth0", "");
        let report = applier.apply(&plan).await.unwrap();
        assert!(report.is_complete(), "{report:?}");
        assert_eq!(fake.calls(), ["create vlan eth0.7 on eth0 id 7", "set eth0.7 up"]);
    }

    #[tokio::test]
    async fn missing_links_and_failures_do_not_stop_the_rest() {
        let fake = FakeNetlink::with_links(&["eth0"]);
        fake.state.lock().unwrap().fail.insert("add eth0 10.0.0.5/24".into(), libc::EPERM);
        let dir = tempfile::tempdir().unwrap();
        let applier = Applier::new(fake.clone(), dir.path());
        let mut plan = plan_for("eth0", &["10.0.0.5/24", "10.0.1.5/24"], vec![]);
        plan.links.push(LinkPlan { name: "eth9".into(), up: true, mtu: None, kind: None });
        plan.addresses.push(address("eth9", "10.0.9.5/24"));
        let report = applier.apply(&plan).await.unwrap();
        assert!(!report.is_complete());
        assert_eq!(report.missing_links, ["eth9"]);
        assert_eq!(
            report.errors.iter().map(ToString::to_string).collect::<Vec<_>>(),
            ["cannot add address 10.0.0.5/24 to link eth0: Operation not permitted (os error 1)"]
        );
        assert_eq!(report.added_addresses, [address("eth0", "10.0.1.5/24")]);
    }

    #[tokio::test]
    async fn a_refused_mtu_still_brings_the_link_up() {
        let fake = FakeNetlink::with_links(&["eth0"]);
        fake.state.lock().unwrap().fail.insert("set eth0 mtu 1400".into(), libc::EINVAL);
        let applier = Applier::new(fake.clone(), "/nonexistent");
        let report = applier.apply(&plan_for("eth0", &[], vec![])).await.unwrap();
        assert_eq!(
            report.errors.iter().map(ToString::to_string).collect::<Vec<_>>(),
            ["cannot set link eth0 mtu 1400: Invalid argument (os error 22)"]
        );
        assert_eq!(fake.calls(), ["set eth0 mtu 1400", "set eth0 up"]);
        assert!(fake.link("eth0").up);
    }

    #[tokio::test]
    async fn a_failed_removal_is_retried_next_time() {
        let fake = FakeNetlink::with_links(&["eth0"]);
        let applier = Applier::new(fake.clone(), "/nonexistent");
        applier.apply(&plan_for("eth0", &["10.0.0.5/24"], vec![])).await.unwrap();
        fake.state.lock().unwrap().fail.insert("del eth0 10.0.0.5/24".into(), libc::EBUSY);
        let report = applier.apply(&plan_for("eth0", &[], vec![])).await.unwrap();
        assert_eq!(report.errors.len(), 1);
        fake.state.lock().unwrap().fail.clear();
        let report = applier.apply(&plan_for("eth0", &[], vec![])).await.unwrap();
        assert_eq!(report.removed_addresses.len(), 1);
    }

    #[tokio::test]
    async fn resolv_conf_and_hosts_are_written_atomically_and_only_on_change() {
        let fake = FakeNetlink::with_links(&[]);
        let dir = tempfile::tempdir().unwrap();
        let notify = Arc::new(Notify::new());
        let applier = Applier::new(fake, dir.path()).notify_after_apply(notify.clone());
        let plan = NetworkPlan {
            resolvers: vec!["10.0.0.53".parse().unwrap(), "fd00::53".parse().unwrap()],
            search: vec!["lan".into(), "example.com".into()],
            hostname: Some("node1.lan".into()),
            ..Default::default()
        };
        let report = applier.apply(&plan).await.unwrap();
        assert!(report.resolv_conf_written && report.hosts_written, "{report:?}");
        // The caller wakes the observer, after publishing the result.
        assert!(futures::FutureExt::now_or_never(notify.notified()).is_none(), "the apply woke the observer");
        applier.observe();
        assert!(futures::FutureExt::now_or_never(notify.notified()).is_some(), "observe() did not wake it");
        let text = std::fs::read_to_string(dir.path().join(RESOLV_CONF)).unwrap();
        assert_eq!(
            text,
            format!("{}nameserver 10.0.0.53\nnameserver fd00::53\nsearch lan example.com\n", hosts::HEADER)
        );
        let text = std::fs::read_to_string(dir.path().join(HOSTS)).unwrap();
        assert!(text.starts_with("# Written by bronzed") && text.ends_with("127.0.1.1\tnode1.lan node1\n"), "{text}");
        let report = applier.apply(&plan).await.unwrap();
        assert!(!report.resolv_conf_written && !report.hosts_written);
        let mut names: Vec<_> =
            std::fs::read_dir(dir.path().join("etc")).unwrap().map(|e| e.unwrap().file_name()).collect();
        names.sort();
        assert_eq!(names, ["hosts", "resolv.conf"], "no temp file left behind");
        // A plan without resolvers or hostname leaves the files alone.
        let report = applier.apply(&NetworkPlan::default()).await.unwrap();
        assert!(!report.resolv_conf_written && !report.hosts_written);
        assert!(dir.path().join(RESOLV_CONF).exists() && dir.path().join(HOSTS).exists());
        // A hostile search domain is refused by name; nothing is written.
        let bad = NetworkPlan { search: vec!["x\nnameserver 6.6.6.6".into()], ..Default::default() };
        let report = applier.apply(&bad).await.unwrap();
        assert!(report.errors[0].to_string().starts_with("cannot render "), "{:?}", report.errors);
        assert!(!std::fs::read_to_string(dir.path().join(RESOLV_CONF)).unwrap().contains("6.6.6.6"));
    }

    #[tokio::test]
    async fn links_down_skips_loopback_and_down_links() {
        let fake = FakeNetlink::with_links(&["eth0", "eth1"]);
        let applier = Applier::new(fake.clone(), "/nonexistent");
        applier.apply(&plan_for("eth0", &[], vec![])).await.unwrap();
        fake.calls();
        let report = applier.links_down().await.unwrap();
        assert_eq!(report.down, ["eth0"]);
        assert_eq!(fake.calls(), ["set eth0 down"]);
    }
}
