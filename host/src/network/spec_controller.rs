//! The network spec controller: gathers the five layers, merges them,
//! publishes the `NetworkSpec` resource, and (where bronzed owns the
//! network) makes the kernel match it and runs DHCP on the links it names.
//!
//! It re-plans when the config, the platform's metadata, the DHCP leases
//! or the links (names, MACs, carrier, kinds) change. The platform layer
//! comes from a network-configurator plugin when the config names one (or,
//! when the platform serves a network document, the image's
//! `network-cloudinit`), else from the metadata itself. A plugin's plan is
//! hostile: it is checked field by field, and refused when it would change
//! the link the API is reached through; a refused or failed plan keeps the
//! last accepted one and says why in the resource.
//!
//! A supervised controller: its state (the last accepted plan, the DHCP
//! runners) lives outside it, so a restart re-plans and changes nothing.

use super::apply::Applier;
use super::cmdline::CmdlineIp;
use super::dhcp::{DhcpManager, DhcpOptions, Lease};
use super::layers::{
    LayerSpec, Layers, NETWORK_SPEC_ID, NetworkSpecSpec, cmdline_layer, config_layer, default_layer, dhcp_layer, merge,
};
use super::links::LinkSelector;
use super::observe::Snapshot;
use super::platform_layer::{PlanRejection, api_links, check_api_links, metadata_layer, plan_layer};
use super::resources::LinkStatusSpec;
use crate::config::LiveConfig;
use crate::controllers::{Controller, ControllerError};
use crate::platform::metadata::PlatformMetadata;
use crate::plugins::instance::Trigger;
use crate::plugins::manager::PluginManager;
use crate::plugins::worlds::network::Network as NetworkWorld;
use crate::state::Writer;
use bronze_config::{HostPort, MachineConfig};
use futures::future::BoxFuture;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use tokio::sync::{Mutex, watch};

/// The image's first-party configurator, used when the platform serves a
/// network document and the config names no configurator.
pub const IMAGE_CONFIGURATOR: &str = "network-cloudinit";

/// What other controllers read of the merged network.
#[derive(Clone)]
pub struct NetworkHandle {
    spec: watch::Sender<Option<Arc<NetworkSpecSpec>>>,
    /// Time servers of the layers below the config (the time controller
    /// applies the config's own servers first).
    time_servers: watch::Sender<Vec<HostPort>>,
}

impl Default for NetworkHandle {
    fn default() -> Self {
        Self { spec: watch::channel(None).0, time_servers: watch::channel(Vec::new()).0 }
    }
}

impl NetworkHandle {
    pub fn subscribe(&self) -> watch::Receiver<Option<Arc<NetworkSpecSpec>>> {
        self.spec.subscribe()
    }

    pub fn time_servers(&self) -> watch::Receiver<Vec<HostPort>> {
        self.time_servers.subscribe()
    }

    /// The merged hostname (config > platform > DHCP > command line).
    pub fn hostname(&self) -> Option<String> {
        self.spec.borrow().as_ref()?.hostname.as_ref().map(|h| h.value.clone())
    }

    fn publish(&self, spec: Arc<NetworkSpecSpec>, below_config: Vec<HostPort>) {
        self.time_servers.send_if_modified(|current| {
            let changed = *current != below_config;
            *current = below_config;
            changed
        });
        self.spec.send_replace(Some(spec));
    }
}

/// Names or addresses as `HostPort`s (bare IPv6 bracketed); what does not
/// parse is dropped (layers validated it already).
pub fn host_ports(servers: &[String]) -> Vec<HostPort> {
    servers
        .iter()
        .filter_map(|s| {
            let text = if s.contains(':') && !s.starts_with('[') { format!("[{s}]") } else { s.clone() };
            text.parse::<HostPort>().ok()
        })
        .collect()
}

/// The last plan a configurator gave and whether it was taken.
#[derive(Default)]
struct PlanState {
    /// What the plan was computed from: instance, metadata, links.
    key: Option<String>,
    /// The last accepted plugin plan, as a layer.
    accepted: Option<LayerSpec>,
    /// Why the last plan was refused or failed.
    error: Option<String>,
}

pub struct NetworkSpecController {
    pub config: watch::Receiver<Option<LiveConfig>>,
    pub platform: watch::Receiver<Option<Arc<PlatformMetadata>>>,
    pub snapshots: watch::Receiver<Arc<Snapshot>>,
    pub leases: watch::Receiver<BTreeMap<String, Lease>>,
    pub cmdline: Vec<CmdlineIp>,
    pub plugins: Arc<PluginManager>,
    /// `None`: the spec is computed and published, never applied.
    pub applier: Option<Arc<Applier>>,
    pub dhcp: Option<Arc<Mutex<DhcpManager>>>,
    pub writer: Writer<NetworkSpecSpec>,
    pub handle: NetworkHandle,
    /// Set after the first applied plan.
    pub ready: watch::Sender<bool>,
    /// The API's listen address (to know which link carries it).
    pub api_listen: Option<IpAddr>,
    plan: Mutex<PlanState>,
}

/// The links' identity as far as planning cares; a change re-plans.
fn fingerprint(links: &[LinkStatusSpec]) -> String {
    links
        .iter()
        .map(|l| {
            format!(
                "{}|{}|{}|{}|{}|{}|{}",
                l.name, l.hardware_address, l.kind, l.carrier, l.driver, l.bus_path, l.master
            )
        })
        .collect::<Vec<_>>()
        .join(";")
}

/// What a round computed.
pub struct Planned {
    pub spec: NetworkSpecSpec,
    /// The plugin plan this round took, if it took a new one.
    accepted: Option<(String, LayerSpec)>,
}

impl NetworkSpecController {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        config: watch::Receiver<Option<LiveConfig>>,
        platform: watch::Receiver<Option<Arc<PlatformMetadata>>>,
        snapshots: watch::Receiver<Arc<Snapshot>>,
        leases: watch::Receiver<BTreeMap<String, Lease>>,
        cmdline: Vec<CmdlineIp>,
        plugins: Arc<PluginManager>,
        applier: Option<Arc<Applier>>,
        dhcp: Option<Arc<Mutex<DhcpManager>>>,
        writer: Writer<NetworkSpecSpec>,
        handle: NetworkHandle,
        ready: watch::Sender<bool>,
        api_listen: Option<IpAddr>,
    ) -> Self {
        Self {
            config,
            platform,
            snapshots,
            leases,
            cmdline,
            plugins,
            applier,
            dhcp,
            writer,
            handle,
            ready,
            api_listen,
            plan: Mutex::new(PlanState::default()),
        }
    }

    /// The spec the node would have with `config` (the live one when
    /// `None`), calling the configurator afresh when `fresh_plan`. Changes
    /// nothing: for `network plan` and `apply-config --dry-run`.
    pub async fn preview(&self, config: Option<&MachineConfig>, fresh_plan: bool) -> Result<NetworkSpecSpec, String> {
        let live_config = self.config.borrow().clone();
        let config = config.or(live_config.as_ref().map(|c| c.config.as_ref()));
        // Nothing of a preview is kept: a fresh plan an operator looked at
        // is not taken, the next round asks the plugin itself.
        Ok(self.compute(config, true, fresh_plan).await?.spec)
    }

    /// The live spec, as last published.
    pub fn live(&self) -> Option<Arc<NetworkSpecSpec>> {
        self.handle.spec.borrow().clone()
    }

    /// Computes the spec for `config`; `keep` leaves the plan state alone,
    /// `fresh` asks the configurator even when nothing it plans from
    /// changed.
    async fn compute(&self, config: Option<&MachineConfig>, keep: bool, fresh: bool) -> Result<Planned, String> {
        let snapshot = self.snapshots.borrow().clone();
        let links = &snapshot.links;
        let metadata = self.platform.borrow().clone();
        let leases = self.leases.borrow().clone();
        let network = config.map(|c| c.machine.network.clone()).unwrap_or_default();
        let hostname = config.and_then(|c| c.machine.hostname.as_ref().map(|h| h.as_str().to_string()));
        let config_time: Vec<String> =
            config.map(|c| c.machine.time.servers.iter().map(|s| s.to_string()).collect()).unwrap_or_default();
        let resolve = |s: &bronze_config::Selector| -> Result<Option<String>, String> {
            let mut found: Option<String> = None;
            for (selector, value) in [
                (s.hardware_addr.as_ref().map(|m| LinkSelector::Mac(m.clone())), 0),
                (s.driver.as_ref().map(|d| LinkSelector::Driver(d.clone())), 1),
                (s.bus_path.as_ref().map(|b| LinkSelector::BusPath(b.clone())), 2),
            ] {
                let _ = value;
                let Some(selector) = selector else { continue };
                // Every given field must match: narrow to the links that
                // match this one too.
                let candidates: Vec<LinkStatusSpec> = match &found {
                    Some(name) => links.iter().filter(|l| &l.name == name).cloned().collect(),
                    None => links.clone(),
                };
                match selector.resolve(&candidates).map_err(|e| e.to_string())? {
                    Some(name) => found = Some(name),
                    None => return Ok(None),
                }
            }
            Ok(found)
        };
        let mut layers = Layers {
            cmdline: cmdline_layer(&self.cmdline),
            config: config_layer(&network, hostname.as_deref(), &config_time, &resolve),
            ..Default::default()
        };

        // The platform layer: a configurator's plan, or the metadata.
        let configurator = network.configurator.clone();
        let instance = match &configurator {
            Some(c) => Some((c.instance.as_str().to_string(), self.plugins.instance(c.instance.as_str()))),
            None if metadata.as_ref().is_some_and(|m| m.network_config.is_some()) => {
                self.plugins.image_configurator(IMAGE_CONFIGURATOR).map(|i| (IMAGE_CONFIGURATOR.to_string(), Some(i)))
            }
            None => None,
        };
        let from_metadata = metadata.as_ref().map(|m| metadata_layer(m, links)).unwrap_or_default();
        let mut state = self.plan.lock().await;
        let mut accepted = None;
        // Whether the configurator was asked this time, and why its plan
        // was refused if it was.
        let mut asked = false;
        let mut fresh_error: Option<String> = None;
        match instance {
            None => {
                layers.platform = from_metadata;
                if !keep {
                    *state = PlanState::default();
                }
            }
            Some((id, instance)) => {
                // Everything the plan depends on: the instance (and its
                // config, and the plugin behind it: the manager's generation
                // moves on every install and reconcile), the metadata, the links.
                let instance_config = config
                    .and_then(|c| c.machine.plugins.instances.iter().find(|i| i.id.as_str() == id))
                    .map(|i| format!("{:?}", i.config))
                    .unwrap_or_default();
                let allow = configurator.as_ref().is_some_and(|c| c.allow_api_link_change);
                let key = format!(
                    "{id}|{allow}|{instance_config}|{}|{:p}|{}",
                    *self.plugins.subscribe().borrow(),
                    metadata.as_ref().map_or(std::ptr::null(), Arc::as_ptr),
                    fingerprint(links)
                );
                if fresh || state.key.as_deref() != Some(key.as_str()) {
                    asked = true;
                    let result = match instance {
                        None => Err(format!("instance {id} is not defined or not loaded")),
                        Some(instance) => {
                            match instance.call::<NetworkWorld>(Trigger::Controller, metadata.as_deref().cloned()).await
                            {
                                None => Err(format!("instance {id} is not armed (its plugin is not loaded)")),
                                Some((_, None)) => Err(format!("instance {id}'s plan call failed (see its logs)")),
                                Some((_, Some(Err(e)))) => Err(format!("instance {id} refused to plan: {e}")),
                                Some((_, Some(Ok(plan)))) => plan_layer(&plan, links)
                                    .map_err(|e: PlanRejection| format!("the plan of {id} is refused: {e}")),
                            }
                        }
                    };
                    match result {
                        Ok(layer) => {
                            // The API link guard: against the live spec.
                            let live = self.live();
                            let allow = configurator.as_ref().is_some_and(|c| c.allow_api_link_change);
                            let verdict = match (&live, allow) {
                                (Some(live), false) => {
                                    let candidate = merge(&Layers { platform: layer.clone(), ..layers.clone() });
                                    match candidate {
                                        Ok(candidate) => {
                                            let api = api_links(live, self.api_listen, &[]);
                                            check_api_links(live, &candidate, &api)
                                                .map_err(|e| format!("the plan of {id} is refused: {e}"))
                                        }
                                        Err(e) => Err(format!("the plan of {id} is refused: {e}")),
                                    }
                                }
                                _ => Ok(()),
                            };
                            match verdict {
                                Ok(()) => {
                                    accepted = Some((key.clone(), layer.clone()));
                                    if !keep {
                                        state.accepted = Some(layer);
                                        state.error = None;
                                        state.key = Some(key);
                                    }
                                }
                                Err(e) => {
                                    tracing::warn!(error = %e, "network plan refused; keeping the last accepted one");
                                    fresh_error = Some(e.clone());
                                    if !keep {
                                        state.error = Some(e);
                                        state.key = Some(key);
                                    }
                                }
                            }
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "network plan refused; keeping the last accepted one");
                            fresh_error = Some(e.clone());
                            if !keep {
                                state.error = Some(e);
                                state.key = Some(key);
                            }
                        }
                    }
                }
                layers.platform = match (&accepted, &state.accepted) {
                    (Some((_, layer)), _) => layer.clone(),
                    (None, Some(layer)) => layer.clone(),
                    (None, None) => from_metadata,
                };
            }
        }
        let plan_error = if asked { fresh_error } else { state.error.clone() };
        drop(state);

        // Which links run DHCP decides which leases count.
        layers.default =
            default_layer(links, &[&layers.cmdline, &layers.platform, &layers.config], network.default_dhcp);
        let without_leases = merge(&layers).map_err(|e| e.to_string())?;
        layers.dhcp = dhcp_layer(&leases, &without_leases.dhcp_links());
        let mut spec = merge(&layers).map_err(|e| e.to_string())?;
        if let Some(e) = plan_error {
            spec.warnings.push(e);
        }
        spec.applied = self.applier.is_some();
        Ok(Planned { spec, accepted })
    }

    async fn round(&self) {
        let config = self.config.borrow().clone();
        let planned = match self.compute(config.as_ref().map(|c| c.config.as_ref()), false, false).await {
            Ok(planned) => planned,
            Err(e) => {
                tracing::error!(error = %e, "network spec refused; keeping the current network");
                return;
            }
        };
        let _ = planned.accepted;
        let spec = Arc::new(planned.spec);
        if let Err(e) = self.writer.put(NETWORK_SPEC_ID, &spec) {
            tracing::error!(error = %e, "cannot publish NetworkSpec");
        }
        let below_config: Vec<String> = spec
            .time_servers
            .as_ref()
            .filter(|t| t.layer != super::layers::Layer::Config)
            .map(|t| t.value.clone())
            .unwrap_or_default();
        self.handle.publish(spec.clone(), host_ports(&below_config));
        // Runners first: one that stops releases its lease from the
        // address the apply below is about to remove.
        if let Some(dhcp) = &self.dhcp {
            let links: Vec<(String, DhcpOptions)> = spec
                .dhcp_links()
                .into_iter()
                .map(|(link, _)| (link, DhcpOptions { hostname_to_send: None, release_on_stop: true }))
                .collect();
            dhcp.lock().await.set_links(links).await;
        }
        if let Some(applier) = &self.applier {
            let started = std::time::Instant::now();
            match applier.apply(&spec.plan()).await {
                Ok(report) => {
                    for e in &report.errors {
                        tracing::warn!(error = %e, "network apply");
                    }
                    for link in &report.missing_links {
                        tracing::debug!(%link, "planned link does not exist (yet)");
                    }
                    if !*self.ready.borrow() {
                        let ms = started.elapsed().as_millis() as u64;
                        tracing::info!(apply_ms = ms, "network ready: the first plan is applied");
                    }
                    self.ready.send_replace(true);
                }
                Err(e) => tracing::error!(error = %e, "network apply failed"),
            }
            applier.observe();
        }
    }
}

impl Controller for NetworkSpecController {
    fn name(&self) -> &'static str {
        "network-spec"
    }

    fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) -> BoxFuture<'static, Result<(), ControllerError>> {
        Box::pin(async move {
            let mut config = self.config.clone();
            let mut platform = self.platform.clone();
            let mut snapshots = self.snapshots.clone();
            let mut leases = self.leases.clone();
            let mut plugins = self.plugins.subscribe();
            // A closed input (no DHCP manager, say) never changes again; it
            // does not end the controller.
            let mut open = [true; 4];
            loop {
                config.borrow_and_update();
                platform.borrow_and_update();
                leases.borrow_and_update();
                plugins.borrow_and_update();
                let links = fingerprint(&snapshots.borrow_and_update().links);
                self.round().await;
                // Observations that change nothing about the links (the
                // ones every apply causes) do not re-plan.
                loop {
                    tokio::select! {
                        _ = stop.wait_for(|s| *s) => return Ok(()),
                        r = config.changed(), if open[0] => { if r.is_ok() { break } open[0] = false }
                        r = platform.changed(), if open[1] => { if r.is_ok() { break } open[1] = false }
                        r = leases.changed(), if open[2] => { if r.is_ok() { break } open[2] = false }
                        r = plugins.changed(), if open[3] => { if r.is_ok() { break } open[3] = false }
                        r = snapshots.changed() => {
                            if r.is_err() { return Ok(()) }
                            if fingerprint(&snapshots.borrow_and_update().links) != links { break }
                        }
                    }
                }
            }
        })
    }
}
