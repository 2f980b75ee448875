//! The boot controller: publishes [`BootStatusSpec`], and gates a tried
//! slot on the machine's health.
//!
//! systemd-boot has already counted this boot down when the kernel starts.
//! If the running slot's entry still carries a counter, this boot is a try:
//! once `MachineStatus` is ready (config applied, stage running, no
//! unhealthy check) the controller blesses the entry, and the slot is good
//! for good. If the machine is not ready within the health timeout, it
//! reboots: the next try, or, with no tries left, the other slot. Booting
//! from the older slot while the newer one has run out of tries is a
//! rollback, reported once as a warning event.

use super::{BOOT_ID, BootDisk, BootStatusSpec};
use crate::controllers::machine_status::MACHINE_ID;
use crate::controllers::{Controller, ControllerError};
use crate::lifecycle::PowerAction;
use crate::state::Writer;
use crate::state::ring::Ring;
use crate::state::types::{MACHINE_STATUS, MachineEventSpec, MachineStatusSpec};
use bronze_boot::Slot;
use futures::future::BoxFuture;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// How long a tried slot has to become ready unless the kernel command line
/// says otherwise (`bronze.health_timeout=SECONDS`).
pub const DEFAULT_HEALTH_TIMEOUT: Duration = Duration::from_secs(300);
/// How long the machine must stay ready before a tried slot is marked
/// good (at most half the health timeout).
pub const READY_FOR: Duration = Duration::from_secs(30);
/// The kernel argument that sets the health timeout, in seconds.
pub const HEALTH_TIMEOUT_ARG: &str = "bronze.health_timeout";
/// The shortest and longest health timeouts accepted from the command line.
const HEALTH_TIMEOUT_RANGE: std::ops::RangeInclusive<u64> = 5..=3600;

/// The health timeout the kernel command line asks for, or the default;
/// values outside 5..=3600 s are ignored with a warning.
pub fn health_timeout(cmdline: &str) -> Duration {
    let prefix = format!("{HEALTH_TIMEOUT_ARG}=");
    let Some(value) = cmdline.split_ascii_whitespace().rev().find_map(|w| w.strip_prefix(&prefix)) else {
        return DEFAULT_HEALTH_TIMEOUT;
    };
    match value.parse::<u64>() {
        Ok(secs) if HEALTH_TIMEOUT_RANGE.contains(&secs) => Duration::from_secs(secs),
        _ => {
            tracing::warn!(
                value = %bronze_bundle::text::escape(value),
                "{HEALTH_TIMEOUT_ARG}= is not a number of seconds in 5..=3600; using {} s",
                DEFAULT_HEALTH_TIMEOUT.as_secs()
            );
            DEFAULT_HEALTH_TIMEOUT
        }
    }
}

pub struct BootController {
    pub disk: Arc<BootDisk>,
    pub writer: Writer<BootStatusSpec>,
    pub events: Arc<Ring<MachineEventSpec>>,
    pub power: mpsc::UnboundedSender<PowerAction>,
    pub health_timeout: Duration,
    /// The rollback event is recorded once per boot, not per controller restart.
    reported_rollback: AtomicBool,
}

impl BootController {
    pub fn new(
        disk: Arc<BootDisk>,
        writer: Writer<BootStatusSpec>,
        events: Arc<Ring<MachineEventSpec>>,
        power: mpsc::UnboundedSender<PowerAction>,
        health_timeout: Duration,
    ) -> BootController {
        BootController { disk, writer, events, power, health_timeout, reported_rollback: AtomicBool::new(false) }
    }

    fn event(&self, severity: &str, message: String) {
        super::record_event(&self.events, severity, message);
    }

    /// A rollback: this slot runs while the other is newer and ran out of tries.
    fn report_rollback(&self, status: &BootStatusSpec, running: Slot) {
        let (Some(mine), Some(other)) = (status.slot(running), status.slot(running.other())) else { return };
        if other.state == "bad"
            && other.generation > mine.generation
            && !self.reported_rollback.swap(true, Ordering::SeqCst)
        {
            self.event(
                "warning",
                format!(
                    "rollback: slot {} ({}) did not come up in {} tries; running slot {running} ({})",
                    other.slot,
                    other.release,
                    other.tries_done.unwrap_or(0),
                    mine.release
                ),
            );
        }
    }

    async fn wait_stop(stop: &mut watch::Receiver<bool>) -> Result<(), ControllerError> {
        let _ = stop.wait_for(|s| *s).await;
        Ok(())
    }

    /// The slots as they are now, with this boot's `health`.
    fn publish(&self, health: &str) -> Result<(), ControllerError> {
        let mut status = self.disk.status();
        status.health = health.into();
        self.writer.put(BOOT_ID, &status)?;
        Ok(())
    }

    /// Publishes the slots again after each write to them (a staged
    /// upgrade or rollback), until stopped.
    async fn follow(
        &self,
        health: &str,
        stop: &mut watch::Receiver<bool>,
        changes: &mut watch::Receiver<u64>,
    ) -> Result<(), ControllerError> {
        loop {
            let changed = tokio::select! {
                _ = stop.wait_for(|s| *s) => return Ok(()),
                changed = changes.changed() => changed.is_ok(),
            };
            if !changed {
                return Self::wait_stop(stop).await;
            }
            self.publish(health)?;
        }
    }
}

impl Controller for BootController {
    fn name(&self) -> &'static str {
        "boot"
    }

    fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) -> BoxFuture<'static, Result<(), ControllerError>> {
        Box::pin(async move {
            let (esp, description) = match &self.disk.esp {
                Ok(esp) => esp,
                Err(why) => {
                    self.writer.put(BOOT_ID, &BootStatusSpec::none(why))?;
                    return Self::wait_stop(&mut stop).await;
                }
            };
            let mut changes = self.disk.changes();
            let mut status = BootStatusSpec::read(esp, description, self.disk.running);
            let Some(running) = self.disk.running else {
                self.writer.put(BOOT_ID, &status)?;
                return self.follow("none", &mut stop, &mut changes).await;
            };
            self.report_rollback(&status, running);
            let state = status.slot(running).map(|s| s.state.clone()).unwrap_or_default();
            // A bad entry boots only when nothing else can: if it comes up
            // healthy, it is blessed like a tried one.
            if state != "trying" && state != "bad" {
                let health = if state == "good" { "blessed" } else { "none" };
                status.health = health.into();
                self.writer.put(BOOT_ID, &status)?;
                return self.follow(health, &mut stop, &mut changes).await;
            }
            status.health = "waiting".into();
            self.writer.put(BOOT_ID, &status)?;
            let store = self.writer.store().clone();
            let mut machine = store.watch(&MACHINE_STATUS, Some(MACHINE_ID.to_string()));
            let deadline = tokio::time::sleep(self.health_timeout);
            tokio::pin!(deadline);
            // Ready must hold for a while: right after boot the machine is
            // ready before its health checks have run once (the plugins
            // load in the background), and a check may fail on its first
            // runs.
            let settle = (self.health_timeout / 2).min(READY_FOR);
            let mut ready_since: Option<tokio::time::Instant> = None;
            loop {
                let ready = store.get_typed::<MachineStatusSpec>(MACHINE_ID).is_some_and(|(_, m)| m.ready);
                ready_since = if ready { Some(ready_since.unwrap_or_else(tokio::time::Instant::now)) } else { None };
                if ready_since.is_some_and(|since| since.elapsed() >= settle) {
                    let blessed = esp.bless(running);
                    let mut status = self.disk.status();
                    match blessed {
                        Ok(_) => {
                            status.health = "blessed".into();
                            let release = status.slot(running).map(|s| s.release.clone()).unwrap_or_default();
                            self.event("info", format!("slot {running} ({release}) is healthy: marked good"));
                        }
                        // The entry stays counted: the next boot tries again.
                        Err(e) => {
                            status.health = "waiting".into();
                            self.event("warning", format!("slot {running} is healthy but cannot be marked good: {e}"));
                        }
                    }
                    let health = status.health.clone();
                    self.writer.put(BOOT_ID, &status)?;
                    return self.follow(&health, &mut stop, &mut changes).await;
                }
                let settled = ready_since.map(|since| since + settle);
                let timed_out = tokio::select! {
                    _ = stop.wait_for(|s| *s) => return Ok(()),
                    changed = changes.changed() => { if changed.is_ok() { self.publish("waiting")?; } false }
                    event = machine.next() => { event?; false }
                    _ = tokio::time::sleep_until(settled.unwrap_or_else(tokio::time::Instant::now)), if settled.is_some() => false,
                    _ = &mut deadline => true,
                };
                if timed_out {
                    self.publish("timed-out")?;
                    let unmet = store
                        .get_typed::<MachineStatusSpec>(MACHINE_ID)
                        .map(|(_, m)| m.unmet_conditions.iter().map(|c| c.name.clone()).collect::<Vec<_>>().join(", "))
                        .unwrap_or_default();
                    self.event(
                        "warning",
                        format!(
                            "slot {running} is not healthy after {} s (unmet: {unmet}): rebooting to try again or fall back",
                            self.health_timeout.as_secs()
                        ),
                    );
                    let _ = self.power.send(PowerAction::Reboot);
                    return self.follow("timed-out", &mut stop, &mut changes).await;
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::Store;
    use crate::state::types::{MACHINE_EVENT, Stage};
    use bronze_boot::{Counter, Entry, Esp};

    fn entry(slot: Slot, generation: u64) -> Entry {
        Entry { slot, generation, release: format!("v0.{generation}"), options: String::new() }
    }

    struct Fixture {
        _dir: tempfile::TempDir,
        esp: Esp,
        store: Store,
        machine: crate::state::Writer<MachineStatusSpec>,
        power: mpsc::UnboundedReceiver<PowerAction>,
        controller: Arc<BootController>,
    }

    fn fixture(running: Slot, timeout: Duration, setup: impl FnOnce(&Esp)) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let esp = Esp::new(dir.path());
        setup(&esp);
        let store = Store::new();
        let (tx, power) = mpsc::unbounded_channel();
        let events = Arc::new(Ring::new(store.writer().unwrap(), 100));
        let controller = Arc::new(BootController::new(
            Arc::new(BootDisk::new(Ok((esp.clone(), "test esp".into())), Some(running))),
            store.writer().unwrap(),
            events,
            tx,
            timeout,
        ));
        let machine = store.writer().unwrap();
        Fixture { _dir: dir, esp, store, machine, power, controller }
    }

    fn set_ready(machine: &crate::state::Writer<MachineStatusSpec>, ready: bool) {
        let spec = MachineStatusSpec {
            stage: Stage::Running,
            ready,
            unmet_conditions: vec![],
            mode: "pid1".into(),
            storage: String::new(),
            slot: String::new(),
            slots: vec![],
            last_upgrade: None,
        };
        machine.put(MACHINE_ID, &spec).unwrap();
    }

    async fn boot_status(store: &Store, health: &str) -> BootStatusSpec {
        // Up to a minute (of paused time, in the timeout test).
        for _ in 0..6000 {
            if let Some((_, s)) = store.get_typed::<BootStatusSpec>(BOOT_ID)
                && s.health == health
            {
                return s;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("no boot status with health {health}: {:?}", store.get_typed::<BootStatusSpec>(BOOT_ID));
    }

    fn events(store: &Store) -> Vec<String> {
        store.list_typed::<MachineEventSpec>().into_iter().map(|(_, e)| e.message).collect()
    }

    #[tokio::test(start_paused = true)]
    async fn a_tried_slot_is_blessed_once_the_machine_stays_ready() {
        let mut f = fixture(Slot::B, Duration::from_secs(600), |esp| {
            esp.write_entry(&entry(Slot::A, 1), None).unwrap();
            esp.write_entry(&entry(Slot::B, 2), Some(Counter { left: 2, done: 1 })).unwrap();
        });
        let (stop_tx, stop) = watch::channel(false);
        let task = tokio::spawn(f.controller.clone().run(stop));
        let waiting = boot_status(&f.store, "waiting").await;
        assert_eq!((waiting.running.as_str(), waiting.slot(Slot::B).unwrap().state.as_str()), ("b", "trying"));
        set_ready(&f.machine, false);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(
            f.esp.slot_entries(Slot::B).unwrap()[0].name.file_name(),
            "bronze-b+2-1.conf",
            "not ready: not blessed"
        );
        // Ready for less than the settle time, then not: not blessed.
        set_ready(&f.machine, true);
        tokio::time::sleep(READY_FOR - Duration::from_secs(1)).await;
        set_ready(&f.machine, false);
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(
            f.esp.slot_entries(Slot::B).unwrap()[0].name.file_name(),
            "bronze-b+2-1.conf",
            "a blip is not healthy"
        );
        set_ready(&f.machine, true);
        let ready_at = tokio::time::Instant::now();
        let blessed = boot_status(&f.store, "blessed").await;
        assert!(ready_at.elapsed() >= READY_FOR, "blessed after {:?}", ready_at.elapsed());
        assert_eq!(blessed.slot(Slot::B).unwrap().state, "good");
        assert_eq!(f.esp.slot_entries(Slot::B).unwrap()[0].name.file_name(), "bronze-b.conf");
        assert!(
            events(&f.store).iter().any(|m| m == "slot b (v0.2) is healthy: marked good"),
            "{:?}",
            events(&f.store)
        );
        assert!(f.power.try_recv().is_err(), "no reboot");
        stop_tx.send(true).unwrap();
        task.await.unwrap().unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_staged_write_to_the_slots_is_published_before_any_reboot() {
        let f = fixture(Slot::A, Duration::from_secs(600), |esp| {
            esp.write_entry(&entry(Slot::A, 1), None).unwrap();
        });
        let (stop_tx, stop) = watch::channel(false);
        let task = tokio::spawn(f.controller.clone().run(stop));
        let blessed = boot_status(&f.store, "blessed").await;
        assert_eq!((blessed.next.as_str(), blessed.slot(Slot::B).unwrap().state.as_str()), ("a", "empty"));
        // What an upload does: the entry, the record, then the word.
        f.esp.write_entry(&entry(Slot::B, 2), Some(Counter { left: 3, done: 0 })).unwrap();
        let record = crate::boot::history::UpgradeRecord {
            slot: "b".into(),
            release: "v0.2".into(),
            generation: 2,
            tries: 3,
            from_slot: "a".into(),
            from_release: "v0.1".into(),
            time: String::new(),
        };
        crate::boot::history::record(&f.esp, &record).unwrap();
        f.controller.disk.wrote();
        for _ in 0..100 {
            tokio::time::sleep(Duration::from_millis(10)).await;
            if f.store.get_typed::<BootStatusSpec>(BOOT_ID).is_some_and(|(_, s)| s.next == "b") {
                break;
            }
        }
        let (_, now) = f.store.get_typed::<BootStatusSpec>(BOOT_ID).unwrap();
        assert_eq!((now.next.as_str(), now.health.as_str()), ("b", "blessed"), "{now:?}");
        assert_eq!(now.last_upgrade.map(|l| l.outcome), Some("staged".to_string()));
        stop_tx.send(true).unwrap();
        task.await.unwrap().unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_slot_that_never_gets_ready_reboots_and_a_fall_back_is_reported() {
        let mut f = fixture(Slot::B, Duration::from_secs(30), |esp| {
            esp.write_entry(&entry(Slot::A, 1), None).unwrap();
            esp.write_entry(&entry(Slot::B, 2), Some(Counter { left: 1, done: 2 })).unwrap();
        });
        set_ready(&f.machine, false);
        let (_stop_tx, stop) = watch::channel(false);
        tokio::spawn(f.controller.clone().run(stop));
        let status = boot_status(&f.store, "timed-out").await;
        assert_eq!(status.slot(Slot::B).unwrap().state, "trying", "left for the boot loader to count down");
        assert_eq!(f.power.recv().await, Some(PowerAction::Reboot));
        assert!(
            events(&f.store).iter().any(|m| m.starts_with("slot b is not healthy after 30 s")),
            "{:?}",
            events(&f.store)
        );

        // The boot loader ran the tries out and started slot a: a rollback.
        let entries = f.esp.root.join(bronze_boot::ENTRIES_DIR);
        std::fs::rename(entries.join("bronze-b+1-2.conf"), entries.join("bronze-b+0-3.conf")).unwrap();
        let f = fixture(Slot::A, Duration::from_secs(30), |esp| {
            for file in std::fs::read_dir(&entries).unwrap() {
                let file = file.unwrap();
                let to = esp.root.join(bronze_boot::ENTRIES_DIR);
                std::fs::create_dir_all(&to).unwrap();
                std::fs::copy(file.path(), to.join(file.file_name())).unwrap();
            }
        });
        let (_stop_tx, stop) = watch::channel(false);
        tokio::spawn(f.controller.clone().run(stop.clone()));
        let status = boot_status(&f.store, "blessed").await;
        assert_eq!((status.running.as_str(), status.next.as_str()), ("a", "a"));
        let rollback = "rollback: slot b (v0.2) did not come up in 3 tries; running slot a (v0.1)";
        assert_eq!(events(&f.store), [rollback]);
        // A restarted controller does not report it again.
        tokio::spawn(f.controller.clone().run(stop));
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(f.store.list(&MACHINE_EVENT).len(), 1);
    }

    #[test]
    fn the_health_timeout_comes_from_the_command_line_within_bounds() {
        assert_eq!(health_timeout("console=ttyS0"), DEFAULT_HEALTH_TIMEOUT);
        assert_eq!(health_timeout("bronze.health_timeout=20 x"), Duration::from_secs(20));
        assert_eq!(health_timeout("bronze.health_timeout=1"), DEFAULT_HEALTH_TIMEOUT);
        assert_eq!(health_timeout("bronze.health_timeout=ten"), DEFAULT_HEALTH_TIMEOUT);
    }
}
