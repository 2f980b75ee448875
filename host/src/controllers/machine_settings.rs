//! PID 1: applies the live config's kernel modules and sysctls, and the
//! hostname (the network spec's: config > platform > DHCP), whenever any
//! of them changes.

use super::{Controller, ControllerError};
use crate::config::LiveConfig;
use crate::platform::PlatformHandle;
use futures::future::BoxFuture;
use std::sync::Arc;
use tokio::sync::watch;

pub struct MachineSettingsController {
    pub config: watch::Receiver<Option<LiveConfig>>,
    pub platform: PlatformHandle,
    /// The merged network spec's hostname (config > platform > DHCP).
    pub network: crate::network::spec_controller::NetworkHandle,
}

impl MachineSettingsController {
    fn apply(&self, current: Option<&LiveConfig>, kernel: bool) {
        if kernel && let Some(cfg) = current {
            let machine = &cfg.config.machine;
            let report = crate::init::apply_kernel_settings(
                std::path::Path::new("/"),
                &machine.kernel,
                &machine.sysctls,
                &crate::init::KernelModuleLoader,
            );
            for e in &report.modules.errors {
                tracing::warn!(error = %e, "kernel module");
            }
            for e in &report.sysctls.errors {
                tracing::warn!(error = %e, "sysctl");
            }
        }
        // The config's first (the spec catches up a round later), then the
        // spec's (platform > DHCP).
        let hostname = current
            .and_then(|c| c.config.machine.hostname.as_ref().map(|h| h.as_str().to_string()))
            .or_else(|| self.network.hostname())
            .or_else(|| self.platform.effective_hostname(current));
        if let Some(hostname) = hostname
            && let Err(e) = crate::init::set_hostname(&hostname)
        {
            tracing::warn!(error = %e, "cannot set the hostname");
        }
    }
}

impl Controller for MachineSettingsController {
    fn name(&self) -> &'static str {
        "machine-settings"
    }

    fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) -> BoxFuture<'static, Result<(), ControllerError>> {
        Box::pin(async move {
            let mut live = self.config.clone();
            let mut platform = self.platform.subscribe();
            let mut network = self.network.subscribe();
            let mut kernel = true;
            loop {
                let current = live.borrow_and_update().clone();
                platform.borrow_and_update();
                network.borrow_and_update();
                self.apply(current.as_ref(), kernel);
                kernel = tokio::select! {
                    _ = stop.wait_for(|s| *s) => return Ok(()),
                    changed = live.changed() => if changed.is_err() { return Ok(()) } else { true },
                    changed = platform.changed() => if changed.is_err() { return Ok(()) } else { false },
                    changed = network.changed() => if changed.is_err() { return Ok(()) } else { false },
                };
            }
        })
    }
}
