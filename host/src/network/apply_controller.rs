//! PID 1's network: plans (kernel command line < config) and applies
//! whenever the live config changes; `network-ready` after the first
//! apply. A supervised controller: a panic or error restarts it, and an
//! in-process reboot runs it again.

use super::apply::Applier;
use super::cmdline::CmdlineIp;
use crate::config::LiveConfig;
use crate::controllers::{Controller, ControllerError};
use futures::future::BoxFuture;
use std::sync::Arc;
use tokio::sync::watch;

pub struct NetworkApplyController {
    pub config: watch::Receiver<Option<LiveConfig>>,
    pub applier: Arc<Applier>,
    pub cmdline: Vec<CmdlineIp>,
    /// Set after the first applied plan.
    pub ready: watch::Sender<bool>,
}

impl NetworkApplyController {
    async fn apply(&self, current: Option<&LiveConfig>) {
        let started = std::time::Instant::now();
        tracing::debug!("network: planning and applying");
        let layers = super::layers::Layers {
            cmdline: super::layers::cmdline_layer(&self.cmdline),
            config: current
                .map(|c| super::layers::config_layer(&c.config.machine.network, None, &[], &|_| Ok(None)))
                .unwrap_or_default(),
            ..Default::default()
        };
        match super::layers::merge(&layers).map(|s| s.plan()) {
            Err(e) => tracing::error!(error = %e, "network plan refused; keeping the current network"),
            Ok(plan) => {
                for w in &plan.warnings {
                    tracing::warn!(warning = %w, "network plan");
                }
                match self.applier.apply(&plan).await {
                    Ok(report) => {
                        for e in &report.errors {
                            tracing::warn!(error = %e, "network apply");
                        }
                        for link in &report.missing_links {
                            tracing::warn!(%link, "planned link does not exist");
                        }
                        if !*self.ready.borrow() {
                            let ms = started.elapsed().as_millis() as u64;
                            tracing::info!(apply_ms = ms, "network ready: the first plan is applied");
                        }
                        self.ready.send_replace(true);
                    }
                    Err(e) => tracing::error!(error = %e, "network apply failed"),
                }
            }
        }
    }
}

impl Controller for NetworkApplyController {
    fn name(&self) -> &'static str {
        "network-apply"
    }

    fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) -> BoxFuture<'static, Result<(), ControllerError>> {
        Box::pin(async move {
            let mut live = self.config.clone();
            loop {
                let current = live.borrow_and_update().clone();
                self.apply(current.as_ref()).await;
                tokio::select! {
                    _ = stop.wait_for(|s| *s) => return Ok(()),
                    changed = live.changed() => if changed.is_err() { return Ok(()) },
                }
            }
        })
    }
}
