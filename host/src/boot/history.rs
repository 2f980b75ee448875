//! The last upgrade: what was written where, kept on the ESP beside the
//! entries so it outlives the reboot it causes (and a `reset`, which wipes
//! only the state partition), and its outcome, read from the slots as they
//! are now: the boot loader's counting and the boot controller's blessing
//! decide it, so there is one writer of the record (the upgrade) and no
//! second place that could disagree with the entries.

use super::BootStatusSpec;
use bronze_boot::{Esp, Slot};
use serde::{Deserialize, Serialize};

/// The record, on the ESP.
pub const RECORD_FILE: &str = "loader/bronze-last-upgrade.json";

/// What the last upgrade wrote, as the upgrade recorded it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpgradeRecord {
    /// The slot written.
    pub slot: String,
    pub release: String,
    pub generation: u64,
    pub tries: u32,
    /// The slot the upgrade was sent to, and what it ran.
    pub from_slot: String,
    pub from_release: String,
    /// RFC 3339, when the slot was switched.
    pub time: String,
}

/// The last upgrade and how it ended; in `BootStatus`, `MachineStatus`
/// and `Version`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LastUpgradeSpec {
    pub slot: String,
    pub release: String,
    pub generation: u64,
    pub from_slot: String,
    pub from_release: String,
    pub time: String,
    /// `succeeded` (the new slot was marked good), `rolled-back` (its tries
    /// ran out), `trying` (running it, not marked good yet), `staged`
    /// (written, not booted yet), `superseded` (the slot was written again
    /// since), `removed` (the slot's entry is gone), `unreadable` (the
    /// record is damaged).
    pub outcome: String,
    /// The outcome for people (escaped).
    pub message: String,
}

/// Writes the record of an upgrade that just switched `record.slot`.
pub fn record(esp: &Esp, record: &UpgradeRecord) -> Result<(), bronze_boot::BootError> {
    let json = serde_json::to_vec_pretty(record).expect("a record serialises");
    bronze_boot::write_atomic(&esp.root.join(RECORD_FILE), &json)
}

/// The record on `esp` (bounded like an entry: 4 KiB of UTF-8): none, or
/// what it says, or why it cannot be read.
pub fn read(esp: &Esp) -> Option<Result<UpgradeRecord, String>> {
    let path = esp.root.join(RECORD_FILE);
    let text = match bronze_boot::read_bounded(&path) {
        Ok(text) => text,
        Err(bronze_boot::BootError::Io { error, .. }) if error.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => return Some(Err(e.to_string())),
    };
    Some(serde_json::from_str::<UpgradeRecord>(&text).map_err(|e| format!("{}: {e}", path.display())).and_then(|r| {
        match (Slot::parse(&r.slot), bronze_bundle::upgrade::check_release(&r.release)) {
            (Some(_), Ok(())) => Ok(r),
            (None, _) => Err(format!("{}: slot {:?} is not a or b", path.display(), r.slot)),
            (_, Err(e)) => Err(format!("{}: release {e}", path.display())),
        }
    }))
}

/// The last upgrade's outcome, given the slots now.
pub fn outcome(record: Result<UpgradeRecord, String>, status: &BootStatusSpec) -> LastUpgradeSpec {
    let escape = |s: &str| bronze_bundle::text::escape_within(s, 80).into_owned();
    let record = match record {
        Ok(record) => record,
        Err(why) => {
            let message = bronze_bundle::text::escape_within(&why, 400).into_owned();
            return LastUpgradeSpec { outcome: "unreadable".into(), message, ..Default::default() };
        }
    };
    let slot = status.slots.iter().find(|s| s.slot == record.slot);
    let (outcome, message) = match slot {
        None => ("removed", format!("slot {} has no entry any more", record.slot)),
        Some(s) if s.state == "empty" || s.state == "malformed" => {
            ("removed", format!("slot {}'s entry is {} now", record.slot, s.state))
        }
        Some(s) if s.generation != record.generation => (
            "superseded",
            format!(
                "slot {} was written again since (generation {} now, {} then)",
                s.slot, s.generation, record.generation
            ),
        ),
        Some(s) if s.state == "good" => {
            ("succeeded", format!("slot {} ({}) booted and was marked good", s.slot, s.release))
        }
        Some(s) if s.state == "bad" => (
            "rolled-back",
            format!(
                "slot {} ({}) did not become healthy in {} tries; the node went back to slot {}",
                s.slot,
                s.release,
                s.tries_done.unwrap_or(record.tries),
                record.from_slot
            ),
        ),
        Some(s) if status.running == s.slot => {
            let done = s.tries_done.unwrap_or(0);
            let total = done + s.tries_left.unwrap_or(0);
            (
                "trying",
                format!("running slot {} ({}), boot {done} of {total}: marked good once healthy", s.slot, s.release),
            )
        }
        Some(s) => (
            "staged",
            if status.next == s.slot {
                format!("slot {} ({}) boots at the next reboot", s.slot, s.release)
            } else {
                format!("slot {} ({}) is written but slot {} boots next", s.slot, s.release, status.next)
            },
        ),
    };
    LastUpgradeSpec {
        slot: record.slot.clone(),
        release: escape(&record.release),
        generation: record.generation,
        from_slot: escape(&record.from_slot),
        from_release: escape(&record.from_release),
        time: escape(&record.time),
        outcome: outcome.into(),
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bronze_boot::{Counter, Entry};

    fn entry(slot: Slot, generation: u64, release: &str) -> Entry {
        Entry { slot, generation, release: release.into(), options: "console=ttyS0".into() }
    }

    fn written(esp: &Esp) -> UpgradeRecord {
        let record = UpgradeRecord {
            slot: "b".into(),
            release: "v0.2.0".into(),
            generation: 2,
            tries: 3,
            from_slot: "a".into(),
            from_release: "v0.1.0".into(),
            time: "2026-12-06T07:00:00Z".into(),
        };
        super::record(esp, &record).unwrap();
        record
    }

    fn last(esp: &Esp, running: Slot) -> LastUpgradeSpec {
        BootStatusSpec::read(esp, "esp", Some(running)).last_upgrade.expect("a last upgrade")
    }

    #[test]
    fn the_outcome_follows_the_slots_from_staged_to_succeeded_or_rolled_back() {
        let dir = tempfile::tempdir().unwrap();
        let esp = Esp::new(dir.path());
        esp.write_entry(&entry(Slot::A, 1, "v0.1.0"), None).unwrap();
        assert_eq!(BootStatusSpec::read(&esp, "esp", Some(Slot::A)).last_upgrade, None, "no upgrade yet");

        // Written and not booted yet.
        let record = written(&esp);
        assert_eq!(read(&esp), Some(Ok(record.clone())));
        esp.write_entry(&entry(Slot::B, 2, "v0.2.0"), Some(Counter { left: 3, done: 0 })).unwrap();
        let l = last(&esp, Slot::A);
        assert_eq!((l.outcome.as_str(), l.from_release.as_str()), ("staged", "v0.1.0"));
        assert_eq!(l.message, "slot b (v0.2.0) boots at the next reboot");

        // Booted once (systemd-boot counted it), not marked good yet.
        esp.remove_entries(Slot::B).unwrap();
        esp.write_entry(&entry(Slot::B, 2, "v0.2.0"), Some(Counter { left: 2, done: 1 })).unwrap();
        let l = last(&esp, Slot::B);
        assert_eq!(l.outcome, "trying");
        assert_eq!(l.message, "running slot b (v0.2.0), boot 1 of 3: marked good once healthy");

        // Marked good.
        esp.bless(Slot::B).unwrap();
        assert_eq!(last(&esp, Slot::B).outcome, "succeeded");

        // Or its tries ran out and the node is back on a.
        esp.remove_entries(Slot::B).unwrap();
        esp.write_entry(&entry(Slot::B, 2, "v0.2.0"), Some(Counter { left: 0, done: 3 })).unwrap();
        let l = last(&esp, Slot::A);
        assert_eq!(l.outcome, "rolled-back");
        assert_eq!(l.message, "slot b (v0.2.0) did not become healthy in 3 tries; the node went back to slot a");

        // Written again since, or emptied.
        esp.remove_entries(Slot::B).unwrap();
        esp.write_entry(&entry(Slot::B, 4, "v0.3.0"), None).unwrap();
        assert_eq!(last(&esp, Slot::A).outcome, "superseded");
        esp.remove_entries(Slot::B).unwrap();
        assert_eq!(last(&esp, Slot::A).outcome, "removed");
    }

    #[test]
    fn a_damaged_record_is_reported_not_trusted() {
        let dir = tempfile::tempdir().unwrap();
        let esp = Esp::new(dir.path());
        esp.write_entry(&entry(Slot::A, 1, "v0.1.0"), None).unwrap();
        let path = dir.path().join(RECORD_FILE);
        let good = serde_json::to_string(&written(&esp)).unwrap();
        for (bad, expected) in [
            ("{".to_string(), "EOF while parsing"),
            (good.replace("\"b\"", "\"c\""), "slot \"c\" is not a or b"),
            (good.replace("v0.2.0", "v0.2.0\\u001b[2J"), "release"),
            (good.replace("\"tries\"", "\"extra\":1,\"tries\""), "unknown field `extra`"),
            (format!("{good}{}", " ".repeat(5000)), "larger than 4096 bytes"),
        ] {
            std::fs::write(&path, &bad).unwrap();
            let l = last(&esp, Slot::A);
            assert_eq!(l.outcome, "unreadable", "{bad:?}");
            assert!(l.message.contains(expected), "{bad:?}: {}", l.message);
            assert!(!l.message.contains('\u{1b}'), "escaped: {}", l.message);
        }
    }
}
