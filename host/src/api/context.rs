//! What the API services work with: handles onto the node's subsystems,
//! built by `node.rs` (which the API never imports).

use crate::api::audit::AuditLog;
use crate::api::security::Security;
use crate::config::ConfigManager;
use crate::lifecycle::{Mode, PowerAction};
use crate::platform::PlatformHandle;
use crate::plugins::PluginManager;
use crate::services::Supervisor;
use crate::state::Store;
use crate::state::ring::Ring;
use crate::state::types::MachineEventSpec;
use crate::sysinfo::SystemPaths;
use crate::time::controller::SharedHoldOffs;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::sync::mpsc;

pub struct ApiContext {
    pub mode: Mode,
    /// The release this system reports ([`crate::release`]).
    pub release: String,
    pub store: Store,
    pub config: Arc<ConfigManager>,
    pub security: Arc<Security>,
    pub audit: Arc<AuditLog>,
    /// Machine events (time corrections, refusals, ...).
    pub events: Arc<Ring<MachineEventSpec>>,
    pub services: Arc<Supervisor>,
    pub plugins: Arc<PluginManager>,
    /// The platform controller: its metadata and `platform refresh`.
    pub platform: PlatformHandle,
    pub power: mpsc::UnboundedSender<PowerAction>,
    /// The disk the node booted from: its slots, upgrades and rollbacks.
    pub boot: Arc<crate::boot::BootDisk>,
    /// The node's (locked) state dir: `reset` asks it to be wiped.
    pub state_dir: Arc<crate::statedir::StateDir>,
    pub paths: SystemPaths,
    pub listen: SocketAddr,
    /// Time servers held off after a kiss-o'-death: set by the time
    /// controller, respected by TimeCheck.
    pub time_holds: SharedHoldOffs,
    /// The network spec controller (set once it is built, right after the
    /// API context): `network plan` and `apply-config --dry-run` preview
    /// specs with it.
    pub network: std::sync::OnceLock<Arc<crate::network::spec_controller::NetworkSpecController>>,
    /// Kernel modules loaded when first needed (PID 1: the image's
    /// on-demand list; a process: none): `netstat` asks for sock_diag's.
    pub modules: Arc<dyn crate::init::OnDemandModules>,
}

impl std::fmt::Debug for ApiContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiContext").field("mode", &self.mode).field("listen", &self.listen).finish_non_exhaustive()
    }
}

impl ApiContext {
    /// The configured hostname (read from the live config, so a reply right
    /// after `apply-config` has it), else the network spec's (platform >
    /// DHCP), else the platform's, else the kernel's.
    pub fn hostname(&self) -> String {
        let live = self.config.live();
        live.as_ref()
            .and_then(|c| c.config.machine.hostname.as_ref().map(|h| h.as_str().to_string()))
            .or_else(|| self.network.get().and_then(|n| n.handle.hostname()))
            .or_else(|| self.platform.effective_hostname(live.as_ref()))
            .or_else(|| nix::unistd::gethostname().ok().map(|h| h.to_string_lossy().into_owned()))
            .unwrap_or_default()
    }
}
