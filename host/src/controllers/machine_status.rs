//! Computes `MachineStatus` (stage, ready, unmet conditions) from the node's
//! lifecycle stage, the presence of a machine config and unhealthy checks.

use super::{Controller, ControllerError};
use crate::platform::resources::{PLATFORM_ID, PLATFORM_METADATA, PlatformMetadataSpec};
use crate::plugins::resources::{HEALTH_CHECK, HealthCheckSpec};
use crate::state::types::{MACHINE_CONFIG, MachineStatusSpec, Stage, UnmetCondition};
use crate::state::{Store, WatchEvent, Writer};
use futures::future::BoxFuture;
use std::sync::Arc;
use tokio::sync::watch;

/// Id of the one `MachineStatus` resource.
pub const MACHINE_ID: &str = "machine";

pub struct MachineStatusController {
    pub writer: Writer<MachineStatusSpec>,
    pub stage: watch::Receiver<Stage>,
    pub mode: &'static str,
    /// Where state lives (a state disk, memory, a state dir).
    pub storage: String,
}

impl MachineStatusController {
    fn compute(&self, store: &Store) -> MachineStatusSpec {
        let stage = *self.stage.borrow();
        let mut unmet = Vec::new();
        if store.get(&MACHINE_CONFIG, crate::config::CONFIG_ID).is_none() {
            let invalid_user_data = store
                .get_typed::<PlatformMetadataSpec>(PLATFORM_ID)
                .filter(|(_, spec)| spec.user_data.action == "invalid")
                .map(|(_, spec)| (spec.platform, spec.user_data.message));
            let reason = match invalid_user_data {
                Some((platform, error)) => {
                    format!("no machine config: the {platform} user data is not a valid machine config: {error}")
                }
                None => "no machine config: apply one".into(),
            };
            unmet.push(UnmetCondition { name: "config".into(), reason });
        }
        // Checks that report unhealthy; a failing *plugin* reports unknown
        // and is not listed (the check could not tell).
        for (_, check) in store.list_typed::<HealthCheckSpec>() {
            if check.status == "unhealthy" {
                unmet.push(UnmetCondition {
                    name: format!("healthcheck/{}", check.instance),
                    reason: format!("unhealthy: {}", check.summary),
                });
            }
        }
        if stage != Stage::Running {
            unmet.push(UnmetCondition { name: "stage".into(), reason: format!("machine is {}", stage.as_str()) });
        }
        MachineStatusSpec {
            stage,
            ready: unmet.is_empty(),
            unmet_conditions: unmet,
            mode: self.mode.to_string(),
            storage: self.storage.clone(),
        }
    }
}

impl Controller for MachineStatusController {
    fn name(&self) -> &'static str {
        "machine-status"
    }

    fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) -> BoxFuture<'static, Result<(), ControllerError>> {
        Box::pin(async move {
            let store = self.writer.store().clone();
            let mut config_watch = store.watch(&MACHINE_CONFIG, None);
            let mut health_watch = store.watch(&HEALTH_CHECK, None);
            let mut platform_watch = store.watch(&PLATFORM_METADATA, None);
            let mut stage = self.stage.clone();
            loop {
                self.writer.put(MACHINE_ID, &self.compute(&store))?;
                tokio::select! {
                    _ = stop.wait_for(|s| *s) => return Ok(()),
                    changed = stage.changed() => if changed.is_err() { return Ok(()) },
                    event = config_watch.next() => { let _: WatchEvent = event?; }
                    event = health_watch.next() => { let _: WatchEvent = event?; }
                    event = platform_watch.next() => { let _: WatchEvent = event?; }
                }
            }
        })
    }
}
