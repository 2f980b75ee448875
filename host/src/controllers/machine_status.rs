//! Computes `MachineStatus` (stage, ready, unmet conditions, boot slots)
//! from the node's lifecycle stage, the presence of a machine config, the
//! services, the health checks and `BootStatus`.
//!
//! Ready means healthy enough to keep this system: the boot controller
//! marks a tried slot good on it. So a service that is not up (waiting,
//! starting, failed, restarting) or whose probe has not passed yet, and a
//! health check that has not run yet, are unmet like an unhealthy one. A
//! service an operator stopped, or a one-shot that finished, is not.

use super::{Controller, ControllerError};
use crate::boot::{BOOT_ID, BOOT_STATUS, BootStatusSpec};
use crate::platform::resources::{PLATFORM_ID, PLATFORM_METADATA, PlatformMetadataSpec};
use crate::plugins::resources::{HEALTH_CHECK, HealthCheckSpec};
use crate::services::status::{HealthState, SERVICE_STATUS, ServiceState, ServiceStatusSpec};
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
        for (_, service) in store.list_typed::<ServiceStatusSpec>() {
            if let Some(reason) = service_unmet(&service) {
                unmet.push(UnmetCondition { name: format!("service/{}", service.name), reason });
            }
        }
        // Checks that report unhealthy or have not run yet; a failing
        // *plugin* reports unknown and is not listed (the check could not
        // tell).
        for (_, check) in store.list_typed::<HealthCheckSpec>() {
            let reason = if check.last_run.is_empty() {
                "not run yet".to_string()
            } else if check.status == "unhealthy" {
                format!("unhealthy: {}", check.summary)
            } else {
                continue;
            };
            unmet.push(UnmetCondition { name: format!("healthcheck/{}", check.instance), reason });
        }
        if stage != Stage::Running {
            unmet.push(UnmetCondition { name: "stage".into(), reason: format!("machine is {}", stage.as_str()) });
        }
        let boot = store.get_typed::<BootStatusSpec>(BOOT_ID).map(|(_, b)| b);
        MachineStatusSpec {
            stage,
            ready: unmet.is_empty(),
            unmet_conditions: unmet,
            mode: self.mode.to_string(),
            storage: self.storage.clone(),
            slot: boot.as_ref().map(|b| b.running.clone()).unwrap_or_default(),
            slots: boot.as_ref().map(|b| b.slots.clone()).unwrap_or_default(),
            last_upgrade: boot.and_then(|b| b.last_upgrade),
        }
    }
}

/// Why a service keeps the machine from being ready, if it does.
fn service_unmet(service: &ServiceStatusSpec) -> Option<String> {
    let with = |what: &str| {
        if service.message.is_empty() { what.to_string() } else { format!("{what}: {}", service.message) }
    };
    match (service.state, service.health) {
        (ServiceState::Finished | ServiceState::Stopped, _) => None,
        (ServiceState::Running, HealthState::None | HealthState::Healthy) => None,
        (ServiceState::Running, HealthState::Unknown) if service.health_checked.is_empty() => {
            Some("running, not probed yet".into())
        }
        (ServiceState::Running, HealthState::Unknown) => {
            Some(format!("running, its probe cannot tell: {}", service.health_message))
        }
        (ServiceState::Running, HealthState::Unhealthy) => {
            Some(format!("running, unhealthy: {}", service.health_message))
        }
        (ServiceState::Waiting, _) => Some(with("waiting")),
        (ServiceState::Starting, _) => Some(with("starting")),
        (ServiceState::Stopping, _) => Some(with("stopping")),
        (ServiceState::Failed, _) => Some(with("failed")),
        (ServiceState::Backoff, _) => Some(with("restarting")),
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
            let mut service_watch = store.watch(&SERVICE_STATUS, None);
            let mut boot_watch = store.watch(&BOOT_STATUS, None);
            let mut stage = self.stage.clone();
            loop {
                self.writer.put(MACHINE_ID, &self.compute(&store))?;
                tokio::select! {
                    _ = stop.wait_for(|s| *s) => return Ok(()),
                    changed = stage.changed() => if changed.is_err() { return Ok(()) },
                    event = config_watch.next() => { let _: WatchEvent = event?; }
                    event = health_watch.next() => { let _: WatchEvent = event?; }
                    event = platform_watch.next() => { let _: WatchEvent = event?; }
                    event = service_watch.next() => { let _: WatchEvent = event?; }
                    event = boot_watch.next() => { let _: WatchEvent = event?; }
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::boot::history::LastUpgradeSpec;

    fn controller(store: &Store, stage: Stage) -> MachineStatusController {
        let (_tx, rx) = watch::channel(stage);
        MachineStatusController {
            writer: store.writer().unwrap(),
            stage: rx,
            mode: "process",
            storage: "state dir /tmp/x".into(),
        }
    }

    fn service(name: &str, state: ServiceState, health: HealthState, checked: &str) -> ServiceStatusSpec {
        ServiceStatusSpec {
            name: name.into(),
            state,
            health,
            health_checked: checked.into(),
            health_message: "probe says so".into(),
            ..Default::default()
        }
    }

    fn unmet(spec: &MachineStatusSpec) -> Vec<(String, String)> {
        spec.unmet_conditions.iter().map(|c| (c.name.clone(), c.reason.clone())).collect()
    }

    #[test]
    fn services_and_checks_that_are_not_up_yet_keep_the_machine_from_ready() {
        let store = Store::new();
        let c = controller(&store, Stage::Running);
        // No config yet: the one unmet condition.
        assert_eq!(unmet(&c.compute(&store)), [("config".to_string(), "no machine config: apply one".to_string())]);

        let services = store.writer::<ServiceStatusSpec>().unwrap();
        let now = "2026-12-06T07:00:00Z";
        for s in [
            service("up", ServiceState::Running, HealthState::None, ""),
            service("probed", ServiceState::Running, HealthState::Healthy, now),
            service("done", ServiceState::Finished, HealthState::None, ""),
            service("stopped", ServiceState::Stopped, HealthState::Unhealthy, now),
            service("fresh", ServiceState::Running, HealthState::Unknown, ""),
            service("sick", ServiceState::Running, HealthState::Unhealthy, now),
            ServiceStatusSpec {
                message: "exit code 3".into(),
                ..service("crashing", ServiceState::Backoff, HealthState::None, "")
            },
            ServiceStatusSpec {
                message: "needs net".into(),
                ..service("later", ServiceState::Waiting, HealthState::None, "")
            },
        ] {
            services.put(&s.name, &s).unwrap();
        }
        let checks = store.writer::<HealthCheckSpec>().unwrap();
        let check = |instance: &str, status: &str, last_run: &str| HealthCheckSpec {
            plugin: "health-http".into(),
            instance: instance.into(),
            status: status.into(),
            summary: "GET / 503".into(),
            details: Default::default(),
            last_run: last_run.into(),
            duration_ms: 1,
            consecutive_failures: 0,
            outcome: "ok".into(),
        };
        checks.put("ok", &check("ok", "healthy", now)).unwrap();
        checks.put("cannot-tell", &check("cannot-tell", "unknown", now)).unwrap();
        checks.put("new", &check("new", "unknown", "")).unwrap();
        checks.put("bad", &check("bad", "unhealthy", now)).unwrap();
        let spec = c.compute(&store);
        assert!(!spec.ready);
        let names: Vec<String> = unmet(&spec).into_iter().map(|(n, _)| n).collect();
        assert_eq!(
            names,
            [
                "config",
                "service/crashing",
                "service/fresh",
                "service/later",
                "service/sick",
                "healthcheck/bad",
                "healthcheck/new"
            ]
        );
        let reasons: std::collections::HashMap<_, _> = unmet(&spec).into_iter().collect();
        assert_eq!(reasons["service/crashing"], "restarting: exit code 3");
        assert_eq!(reasons["service/fresh"], "running, not probed yet");
        assert_eq!(reasons["service/later"], "waiting: needs net");
        assert_eq!(reasons["service/sick"], "running, unhealthy: probe says so");
        assert_eq!(reasons["healthcheck/new"], "not run yet");
        assert_eq!(reasons["healthcheck/bad"], "unhealthy: GET / 503");
    }

    #[test]
    fn the_boot_slots_and_the_last_upgrade_come_from_boot_status() {
        let store = Store::new();
        let c = controller(&store, Stage::Running);
        let spec = c.compute(&store);
        assert_eq!((spec.slot.as_str(), spec.slots.len(), spec.last_upgrade.is_none()), ("", 0, true));
        let dir = tempfile::tempdir().unwrap();
        let esp = bronze_boot::Esp::new(dir.path());
        let entry = bronze_boot::Entry {
            slot: bronze_boot::Slot::A,
            generation: 1,
            release: "v0.1.0".into(),
            options: String::new(),
        };
        esp.write_entry(&entry, None).unwrap();
        let mut boot = BootStatusSpec::read(&esp, "esp", Some(bronze_boot::Slot::A));
        boot.last_upgrade = Some(LastUpgradeSpec {
            slot: "b".into(),
            release: "v0.2.0".into(),
            generation: 2,
            from_slot: "a".into(),
            from_release: "v0.1.0".into(),
            time: String::new(),
            outcome: "rolled-back".into(),
            message: "slot b did not come up".into(),
        });
        store.writer::<BootStatusSpec>().unwrap().put(BOOT_ID, &boot).unwrap();
        let spec = c.compute(&store);
        assert_eq!(spec.slot, "a");
        let slots: Vec<(&str, &str, &str)> =
            spec.slots.iter().map(|s| (s.slot.as_str(), s.state.as_str(), s.release.as_str())).collect();
        assert_eq!(slots, [("a", "good", "v0.1.0"), ("b", "empty", "")]);
        assert_eq!(spec.last_upgrade.unwrap().outcome, "rolled-back");
    }
}
