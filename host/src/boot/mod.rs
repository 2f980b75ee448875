//! Boot slots as the running node sees them: which slot it booted from,
//! what each slot holds and which boots next ([`BootStatusSpec`], id
//! `boot`), and the [`controller::BootController`] that blesses a tried slot
//! once the machine is healthy, reboots it when it does not get healthy in
//! time, and reports a fall-back to the other slot as a machine event.
//!
//! The entries' grammar and order belong to [`bronze_boot`]; this module
//! only reads the ESP PID 1 mounted
//! ([`crate::init::mounts::ESP_MOUNT_POINT`]) and renames one
//! entry. A node not booted from a Bronze disk (qemu's `-kernel`, process
//! mode) has no slots and says so.

pub mod controller;
pub mod history;
pub mod upgrade;

use crate::state::types::{NS_RUNTIME, resource};
use bronze_boot::{Esp, FoundEntry, Slot};
use serde::{Deserialize, Serialize};

/// Id of the one `BootStatus` resource.
pub const BOOT_ID: &str = "boot";
/// The kind of the machine events this module records.
pub const EVENT_KIND: &str = "boot";

/// Records a boot-slot event: in the machine events and on the console
/// (the events do not outlive the reboot that usually follows).
pub fn record_event(
    events: &crate::state::ring::Ring<crate::state::types::MachineEventSpec>,
    severity: &str,
    message: String,
) {
    tracing::info!(severity, "{message}");
    events.push(&crate::state::types::MachineEventSpec {
        time: crate::state::now_rfc3339(),
        kind: EVENT_KIND.into(),
        severity: severity.into(),
        message,
    });
}

/// What the node knows of the disk it booted from, shared by the boot
/// controller and the API.
#[derive(Debug)]
pub struct BootDisk {
    /// The mounted ESP and how to describe it, or why there is none.
    pub esp: Result<(Esp, String), String>,
    /// The slot on the kernel command line.
    pub running: Option<Slot>,
    /// One upgrade or rollback at a time.
    pub writing: tokio::sync::Mutex<()>,
    /// Counts the writes to the slots ([`BootDisk::wrote`]): the boot
    /// controller publishes `BootStatus` again after each.
    changes: tokio::sync::watch::Sender<u64>,
}

impl BootDisk {
    pub fn new(esp: Result<(Esp, String), String>, running: Option<Slot>) -> BootDisk {
        BootDisk { esp, running, writing: tokio::sync::Mutex::new(()), changes: tokio::sync::watch::Sender::new(0) }
    }

    /// Says that an upgrade, rollback or reset wrote the slots (a staged
    /// one is visible before the reboot).
    pub fn wrote(&self) {
        self.changes.send_modify(|n| *n += 1);
    }

    /// Changes to the slots from now on.
    pub fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// The ESP, or why this node has none.
    pub fn esp(&self) -> Result<&Esp, String> {
        self.esp.as_ref().map(|(esp, _)| esp).map_err(Clone::clone)
    }

    /// The status of the slots now.
    pub fn status(&self) -> BootStatusSpec {
        match &self.esp {
            Ok((esp, description)) => BootStatusSpec::read(esp, description, self.running),
            Err(why) => BootStatusSpec::none(why),
        }
    }
}

/// One slot: what its entry says, or that it has none.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SlotStatusSpec {
    /// `a` or `b`.
    pub slot: String,
    /// `good` (blessed: booted fine), `trying` (tries left), `bad` (its tries
    /// ran out), `empty` (no entry), `malformed` (an entry that cannot be read).
    pub state: String,
    /// The Bronze version the slot holds (empty without an entry).
    pub release: String,
    /// The entry's generation: the higher boots first.
    pub generation: u64,
    pub tries_left: Option<u32>,
    pub tries_done: Option<u32>,
    /// Why the entry is malformed (escaped), else empty.
    pub problem: String,
}

/// The node's boot slots; id `boot`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BootStatusSpec {
    /// The slot this system booted from (`bronze.slot=` on the kernel
    /// command line); empty when it was not booted from a Bronze disk.
    pub running: String,
    /// The slot systemd-boot will start next, by its rules.
    pub next: String,
    /// Where the ESP is, or why there is none.
    pub esp: String,
    pub slots: Vec<SlotStatusSpec>,
    /// The running slot's health gate: `blessed` (it was good already),
    /// `waiting` (tried; blessed once the machine is ready), `timed-out`
    /// (not ready in time: rebooting), `none` (no slots).
    pub health: String,
    /// The last upgrade written to this disk and its outcome, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_upgrade: Option<history::LastUpgradeSpec>,
}
resource!(
    BootStatusSpec,
    BOOT_STATUS,
    "BootStatuses.bronze.dev",
    NS_RUNTIME,
    sensitive = false,
    aliases = ["bootstatus", "bootstatuses", "boot"]
);

impl BootStatusSpec {
    /// A node without boot slots.
    pub fn none(why: &str) -> BootStatusSpec {
        BootStatusSpec {
            running: String::new(),
            next: String::new(),
            esp: why.to_string(),
            slots: Vec::new(),
            health: "none".into(),
            last_upgrade: None,
        }
    }

    /// The status of the slots on `esp`, running `running`.
    pub fn read(esp: &Esp, esp_description: &str, running: Option<Slot>) -> BootStatusSpec {
        let entries = match esp.entries() {
            Ok(entries) => entries,
            Err(e) => {
                return BootStatusSpec::none(&format!(
                    "{esp_description}: {}",
                    bronze_bundle::text::escape(&e.to_string()).into_owned()
                ));
            }
        };
        let slots = Slot::ALL.into_iter().map(|slot| slot_status(slot, &entries)).collect();
        let mut status = BootStatusSpec {
            running: running.map(|s| s.name().to_string()).unwrap_or_default(),
            next: bronze_boot::next_boot(&entries).map(|s| s.name().to_string()).unwrap_or_default(),
            esp: esp_description.to_string(),
            slots,
            health: "none".into(),
            last_upgrade: None,
        };
        status.last_upgrade = history::read(esp).map(|record| history::outcome(record, &status));
        status
    }

    /// The status of `slot`, if listed.
    pub fn slot(&self, slot: Slot) -> Option<&SlotStatusSpec> {
        self.slots.iter().find(|s| s.slot == slot.name())
    }
}

fn slot_status(slot: Slot, entries: &[FoundEntry]) -> SlotStatusSpec {
    let mut status = SlotStatusSpec {
        slot: slot.name().into(),
        state: "empty".into(),
        release: String::new(),
        generation: 0,
        tries_left: None,
        tries_done: None,
        problem: String::new(),
    };
    // A slot has one entry; if an interrupted write left two, the one
    // systemd-boot prefers (not bad, highest generation) speaks for it.
    let mine: Vec<&FoundEntry> = entries.iter().filter(|f| f.name.slot == slot).collect();
    let best = mine
        .iter()
        .filter(|f| f.entry.is_ok())
        .min_by_key(|f| (f.name.is_bad(), std::cmp::Reverse(f.entry.as_ref().map(|e| e.generation).unwrap_or(0))))
        .or(mine.first());
    let Some(found) = best else { return status };
    status.tries_left = found.name.counter.map(|c| c.left);
    status.tries_done = found.name.counter.map(|c| c.done);
    match &found.entry {
        Ok(entry) => {
            status.release = bronze_bundle::text::escape(&entry.release).into_owned();
            status.generation = entry.generation;
            status.state = if found.name.is_blessed() {
                "good"
            } else if found.name.is_bad() {
                "bad"
            } else {
                "trying"
            }
            .into();
        }
        Err(e) => {
            status.state = "malformed".into();
            status.problem = bronze_bundle::text::escape(&e.to_string()).into_owned();
        }
    }
    status
}

#[cfg(test)]
mod tests {
    use super::*;
    use bronze_boot::{Counter, Entry};

    #[test]
    fn the_status_says_what_each_slot_holds_and_what_boots_next() {
        let dir = tempfile::tempdir().unwrap();
        let esp = Esp::new(dir.path());
        let entry = |slot, generation, release: &str| Entry {
            slot,
            generation,
            release: release.into(),
            options: "console=ttyS0".into(),
        };
        esp.write_entry(&entry(Slot::A, 1, "v0.1.0"), None).unwrap();
        let status = BootStatusSpec::read(&esp, "/dev/vda1 at /boot", Some(Slot::A));
        assert_eq!((status.running.as_str(), status.next.as_str()), ("a", "a"));
        assert_eq!(status.slot(Slot::A).unwrap().state, "good");
        assert_eq!(status.slot(Slot::B).unwrap().state, "empty");

        esp.write_entry(&entry(Slot::B, 2, "v0.2.0\u{1b}[31m"), Some(Counter { left: 0, done: 3 })).unwrap();
        let status = BootStatusSpec::read(&esp, "/dev/vda1 at /boot", Some(Slot::A));
        let b = status.slot(Slot::B).unwrap();
        assert_eq!((b.state.as_str(), b.tries_left, b.tries_done, b.generation), ("bad", Some(0), Some(3), 2));
        assert!(!b.release.contains('\u{1b}'), "escaped: {:?}", b.release);
        assert_eq!(status.next, "a", "a bad entry loses to a good one");

        std::fs::write(dir.path().join("loader/entries/bronze-a.conf"), "title x\n").unwrap();
        let status = BootStatusSpec::read(&esp, "esp", Some(Slot::A));
        let a = status.slot(Slot::A).unwrap();
        assert_eq!(a.state, "malformed");
        assert!(a.problem.contains("no sort-key line"), "{}", a.problem);
        assert_eq!(status.next, "b");

        let none = BootStatusSpec::read(&Esp::new(dir.path().join("missing")), "esp", None);
        assert!(none.esp.starts_with("esp: cannot read "), "{}", none.esp);
        assert!(none.slots.is_empty());
    }
}
