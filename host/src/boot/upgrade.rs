//! Writing a signed system to the inactive boot slot.
//!
//! An [`Upload`] is fed an upgrade's header (the manifest and its
//! signature), then its parts as they arrive. Nothing on the ESP changes
//! until the manifest is signed by a key of `machine.upgrade.trustedKeys`,
//! built for this architecture and small enough for a slot; the parts go to
//! temporary files, each checked against the manifest's size as it grows
//! and its sha256 at its end. Only then is the slot switched: its old entry
//! removed (nothing boots a half-written slot), the parts renamed into
//! place, and a new entry written with the next generation and a boot
//! counter. A bundle that is refused, truncated or cut off (a dropped
//! connection, a power cut) leaves both slots and their entries as they
//! were; its temporary files are removed (or overwritten by the next try).

use bronze_boot::{Counter, Entry, Esp, INITRD_FILE, KERNEL_FILE, MAX_TRIES, Slot};
use bronze_bundle::upgrade::{UpgradeManifest, verify_upgrade};
use bronze_config::TrustedKey;
use sha2::{Digest, Sha256};
use std::io::Write;
use std::path::PathBuf;

/// Room kept free on the ESP beyond the new parts.
const ESP_MARGIN: u64 = 1 << 20;
/// Reserved per slot for the loader, the entries and FAT's own tables
/// (as `bronze_images::bootdisk::slot_capacity` reckons).
const SLOT_RESERVE: u64 = 8 << 20;

/// Why an upgrade was refused; every message says what was expected.
#[derive(Debug, thiserror::Error)]
pub enum UpgradeRefused {
    #[error("{0}")]
    Precondition(String),
    #[error(transparent)]
    Bundle(#[from] bronze_bundle::upgrade::UpgradeError),
    #[error("{0}")]
    Data(String),
    #[error("cannot write the slot: {0}")]
    Io(String),
}

impl UpgradeRefused {
    /// Whether the caller sent something wrong (vs. the node failing).
    pub fn is_caller_error(&self) -> bool {
        !matches!(self, UpgradeRefused::Io(_))
    }
}

fn io(what: &str, path: &std::path::Path) -> impl FnOnce(std::io::Error) -> UpgradeRefused + use<> {
    let what = format!("{what} {}", path.display());
    move |e| UpgradeRefused::Io(format!("{what}: {e}"))
}

/// The running slot's kernel command line for the new slot, with its health
/// timeout replaced when one is asked for (0: kept as it is).
fn with_health_timeout(options: &str, seconds: u32) -> String {
    if seconds == 0 {
        return options.to_string();
    }
    let prefix = format!("{}=", crate::boot::controller::HEALTH_TIMEOUT_ARG);
    let mut words: Vec<String> =
        options.split_ascii_whitespace().filter(|w| !w.starts_with(&prefix)).map(str::to_owned).collect();
    words.push(format!("{prefix}{seconds}"));
    words.join(" ")
}

/// What [`Upload::finish`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    pub slot: Slot,
    pub release: String,
    pub generation: u64,
    pub tries: u32,
}

/// The parts, in the order they are sent.
const PARTS: [&str; 2] = [KERNEL_FILE, INITRD_FILE];

/// An upgrade being received into the inactive slot.
#[derive(Debug)]
pub struct Upload {
    esp: Esp,
    slot: Slot,
    manifest: UpgradeManifest,
    options: String,
    tries: u32,
    /// The slot the node runs, and its release, for the record.
    running: Slot,
    running_release: String,
    /// Index into [`PARTS`] of the part being written.
    part: usize,
    file: Option<std::fs::File>,
    hasher: Sha256,
    written: u64,
    temps: Vec<PathBuf>,
    finished: bool,
}

impl Upload {
    /// Checks the header and opens the first part's temporary file. `running`
    /// is the slot this system booted from; its entry must be good (a system
    /// still being tried cannot be upgraded: it may yet fall back).
    pub fn begin(
        esp: &Esp,
        running: Option<Slot>,
        manifest_bytes: &[u8],
        signature: &[u8],
        keys: &[TrustedKey],
        tries: u32,
        health_timeout_seconds: u32,
    ) -> Result<Upload, UpgradeRefused> {
        let refuse = |m: String| Err(UpgradeRefused::Precondition(m));
        let Some(running) = running else {
            return refuse("this node was not booted from a Bronze disk (no bronze.slot= on its kernel command line): there is no slot to upgrade".into());
        };
        let tries = if tries == 0 { bronze_boot::DEFAULT_TRIES } else { tries };
        if tries > MAX_TRIES {
            return refuse(format!("tries {tries}: expected 1 to {MAX_TRIES}"));
        }
        if health_timeout_seconds != 0 && !(5..=3600).contains(&health_timeout_seconds) {
            return refuse(format!("health timeout {health_timeout_seconds} s: expected 5 to 3600"));
        }
        let manifest = UpgradeManifest::parse(manifest_bytes)?;
        verify_upgrade(manifest_bytes, signature, keys)?;
        if manifest.arch != std::env::consts::ARCH {
            return refuse(format!(
                "the bundle is built for {}, this node is {}",
                manifest.arch,
                std::env::consts::ARCH
            ));
        }
        let entries = esp.entries().map_err(|e| UpgradeRefused::Io(e.to_string()))?;
        let mine = entries.iter().find(|f| f.name.slot == running);
        let (options, running_release) = match mine {
            Some(found) if found.name.is_blessed() => match &found.entry {
                Ok(entry) => (with_health_timeout(&entry.options, health_timeout_seconds), entry.release.clone()),
                Err(e) => return refuse(format!("the running slot's entry is unreadable: {e}")),
            },
            Some(_) => {
                return refuse(format!(
                    "slot {running} is still being tried (not marked good yet): wait until the node is healthy"
                ));
            }
            None => return refuse(format!("slot {running} has no boot entry")),
        };
        let target = running.other();
        let needed = manifest.kernel.size + manifest.initrd.size;
        let (size, _, available) = crate::api::storage::statvfs(&esp.root).map_err(UpgradeRefused::Io)?;
        let capacity = (size / 2).saturating_sub(SLOT_RESERVE);
        if needed > capacity {
            return refuse(format!(
                "the bundle's kernel and initramfs are {needed} bytes, larger than a boot slot ({capacity} bytes)"
            ));
        }
        if needed + ESP_MARGIN > available {
            return refuse(format!(
                "the bundle needs {needed} bytes and the EFI system partition has {available} free"
            ));
        }
        let dir = esp.slot_dir(target);
        std::fs::create_dir_all(&dir).map_err(io("create", &dir))?;
        let mut upload = Upload {
            esp: esp.clone(),
            slot: target,
            manifest,
            options,
            tries,
            running,
            running_release,
            part: 0,
            file: None,
            hasher: Sha256::new(),
            written: 0,
            temps: Vec::new(),
            finished: false,
        };
        upload.open_part()?;
        Ok(upload)
    }

    /// The slot being written.
    pub fn slot(&self) -> Slot {
        self.slot
    }

    /// The manifest it was checked against.
    pub fn manifest(&self) -> &UpgradeManifest {
        &self.manifest
    }

    fn declared(&self, part: usize) -> &bronze_bundle::upgrade::Part {
        if part == 0 { &self.manifest.kernel } else { &self.manifest.initrd }
    }

    fn temp(&self, part: usize) -> PathBuf {
        bronze_boot::temp_path(&self.esp.slot_dir(self.slot).join(PARTS[part]))
    }

    fn open_part(&mut self) -> Result<(), UpgradeRefused> {
        let path = self.temp(self.part);
        let file = std::fs::File::create(&path).map_err(io("create", &path))?;
        self.temps.push(path);
        self.file = Some(file);
        self.hasher = Sha256::new();
        self.written = 0;
        Ok(())
    }

    /// Closes the current part: its size and digest must be the manifest's.
    fn close_part(&mut self) -> Result<(), UpgradeRefused> {
        let name = PARTS[self.part];
        let declared = self.declared(self.part).clone();
        if self.written != declared.size {
            return Err(UpgradeRefused::Data(format!(
                "{name}: {} bytes received, upgrade.toml says {} (truncated bundle?)",
                self.written, declared.size
            )));
        }
        let digest: [u8; 32] = std::mem::take(&mut self.hasher).finalize().into();
        if digest != declared.sha256 {
            return Err(UpgradeRefused::Data(format!(
                "{name}: sha256 {} does not match upgrade.toml's {}",
                hex::encode(digest),
                hex::encode(declared.sha256)
            )));
        }
        let file = self.file.take().expect("a part is open");
        let path = self.temp(self.part);
        file.sync_all().map_err(io("sync", &path))?;
        Ok(())
    }

    /// Appends `data` to `part` (`vmlinuz`, then `initrd`); the first chunk
    /// of `initrd` closes `vmlinuz`.
    pub fn write(&mut self, part: &str, data: &[u8]) -> Result<(), UpgradeRefused> {
        if part != PARTS[self.part] {
            if self.part == 0 && part == PARTS[1] {
                self.close_part()?;
                self.part = 1;
                self.open_part()?;
            } else {
                return Err(UpgradeRefused::Data(format!(
                    "unexpected part {:?} while receiving {}: expected vmlinuz, then initrd",
                    bronze_bundle::text::escape_within(part, 40),
                    PARTS[self.part]
                )));
            }
        }
        let declared = self.declared(self.part).size;
        if self.written + data.len() as u64 > declared {
            return Err(UpgradeRefused::Data(format!("{part}: more than the {declared} bytes upgrade.toml declares")));
        }
        let path = self.temp(self.part);
        self.file.as_mut().expect("a part is open").write_all(data).map_err(io("write", &path))?;
        self.hasher.update(data);
        self.written += data.len() as u64;
        Ok(())
    }

    /// Checks the last part and switches the slot: old entry out, parts in,
    /// new entry (generation above every other, `tries` boots) in.
    pub fn finish(mut self) -> Result<Written, UpgradeRefused> {
        if self.part == 0 {
            return Err(UpgradeRefused::Data("the bundle ended before its initrd (truncated bundle?)".into()));
        }
        self.close_part()?;
        let boot = |e: bronze_boot::BootError| UpgradeRefused::Io(e.to_string());
        let generation = self.esp.max_generation().map_err(boot)? + 1;
        self.esp.remove_entries(self.slot).map_err(boot)?;
        let dir = self.esp.slot_dir(self.slot);
        for (i, name) in PARTS.iter().enumerate() {
            let to = dir.join(name);
            std::fs::rename(self.temp(i), &to).map_err(io("rename into place", &to))?;
        }
        bronze_boot::sync_dir(&dir).map_err(boot)?;
        let entry = Entry {
            slot: self.slot,
            generation,
            release: self.manifest.release.clone(),
            options: self.options.clone(),
        };
        self.esp.write_entry(&entry, Some(Counter { left: self.tries, done: 0 })).map_err(boot)?;
        self.finished = true;
        // The slot is switched; the record only lets later boots say how
        // it ended, so failing to write it does not undo the upgrade.
        let record = super::history::UpgradeRecord {
            slot: self.slot.name().into(),
            release: entry.release.clone(),
            generation,
            tries: self.tries,
            from_slot: self.running.name().into(),
            from_release: self.running_release.clone(),
            time: crate::state::now_rfc3339(),
        };
        if let Err(e) = super::history::record(&self.esp, &record) {
            tracing::warn!(error = %e, "the upgrade is written but its record is not: its outcome will not be shown");
        }
        Ok(Written { slot: self.slot, release: entry.release, generation, tries: self.tries })
    }
}

impl Drop for Upload {
    fn drop(&mut self) {
        if !self.finished {
            for temp in &self.temps {
                let _ = std::fs::remove_file(temp);
            }
            // A refused upload leaves the disk as it found it, on the disk
            // and not only in the page cache (the first part was synced).
            let _ = bronze_boot::sync_dir(&self.esp.slot_dir(self.slot));
        }
    }
}

/// Empties `slot`: its entry first (nothing boots it), then its files
/// (`reset --wipe all`).
pub fn empty_slot(esp: &Esp, slot: Slot) -> Result<(), UpgradeRefused> {
    esp.remove_entries(slot).map_err(|e| UpgradeRefused::Io(e.to_string()))?;
    for name in PARTS {
        let path = esp.slot_dir(slot).join(name);
        if path.exists() {
            std::fs::remove_file(&path).map_err(io("remove", &path))?;
        }
    }
    Ok(())
}

/// Makes the other slot the next boot, with `tries` boots to prove itself:
/// it must hold a system that booted fine (a good entry).
pub fn rollback(esp: &Esp, running: Option<Slot>, tries: u32) -> Result<Written, UpgradeRefused> {
    let refuse = |m: String| Err(UpgradeRefused::Precondition(m));
    let Some(running) = running else {
        return refuse("this node was not booted from a Bronze disk: there is no other slot".into());
    };
    let other = running.other();
    let entries = esp.slot_entries(other).map_err(|e| UpgradeRefused::Io(e.to_string()))?;
    let Some(found) = entries.first() else {
        return refuse(format!("slot {other} is empty: nothing to roll back to"));
    };
    let entry = match &found.entry {
        Ok(entry) if found.name.is_blessed() => entry.clone(),
        Ok(_) => {
            return refuse(format!(
                "slot {other} never booted fine (its entry is {}): refusing to boot it",
                found.name.file_name()
            ));
        }
        Err(e) => return refuse(format!("slot {other}'s entry is unreadable: {e}")),
    };
    let tries = if tries == 0 { bronze_boot::DEFAULT_TRIES } else { tries.min(MAX_TRIES) };
    let boot = |e: bronze_boot::BootError| UpgradeRefused::Io(e.to_string());
    let generation = esp.max_generation().map_err(boot)? + 1;
    let entry = Entry { generation, ..entry };
    esp.write_entry(&entry, Some(Counter { left: tries, done: 0 })).map_err(boot)?;
    Ok(Written { slot: other, release: entry.release, generation, tries })
}

#[cfg(test)]
mod tests {
    use super::*;
    use bronze_bundle::SigningKey;
    use bronze_bundle::upgrade::UpgradeBundle;

    struct Disk {
        _dir: tempfile::TempDir,
        esp: Esp,
    }

    fn disk() -> Disk {
        let dir = tempfile::tempdir().unwrap();
        let esp = Esp::new(dir.path());
        std::fs::create_dir_all(esp.slot_dir(Slot::A)).unwrap();
        std::fs::write(esp.slot_dir(Slot::A).join(KERNEL_FILE), b"old kernel").unwrap();
        std::fs::write(esp.slot_dir(Slot::A).join(INITRD_FILE), b"old initrd").unwrap();
        let a =
            Entry { slot: Slot::A, generation: 1, release: "v0.1.0".into(), options: "console=ttyS0 panic=5".into() };
        esp.write_entry(&a, None).unwrap();
        Disk { _dir: dir, esp }
    }

    fn snapshot(esp: &Esp) -> Vec<(String, Vec<u8>)> {
        let mut files = Vec::new();
        for dir in ["a", "b", "loader/entries"] {
            if let Ok(read) = std::fs::read_dir(esp.root.join(dir)) {
                for f in read {
                    let f = f.unwrap();
                    files
                        .push((format!("{dir}/{}", f.file_name().to_string_lossy()), std::fs::read(f.path()).unwrap()));
                }
            }
        }
        files.sort();
        files
    }

    fn send(upload: &mut Upload, bundle: &UpgradeBundle) -> Result<(), UpgradeRefused> {
        for chunk in bundle.kernel.chunks(3) {
            upload.write(KERNEL_FILE, chunk)?;
        }
        for chunk in bundle.initrd.chunks(5) {
            upload.write(INITRD_FILE, chunk)?;
        }
        Ok(())
    }

    #[test]
    fn a_signed_bundle_lands_in_the_other_slot_with_a_counted_entry() {
        let d = disk();
        let key = SigningKey::generate().unwrap();
        let bundle = UpgradeBundle::create(
            "v0.2.0",
            std::env::consts::ARCH,
            b"new kernel".to_vec(),
            b"new initrd!".to_vec(),
            &key,
        );
        let mut upload =
            Upload::begin(&d.esp, Some(Slot::A), &bundle.manifest_bytes, &bundle.signature, &[key.public_key()], 2, 0)
                .unwrap();
        assert_eq!(upload.slot(), Slot::B);
        send(&mut upload, &bundle).unwrap();
        let written = upload.finish().unwrap();
        assert_eq!(written, Written { slot: Slot::B, release: "v0.2.0".into(), generation: 2, tries: 2 });
        assert_eq!(std::fs::read(d.esp.slot_dir(Slot::B).join(KERNEL_FILE)).unwrap(), b"new kernel");
        assert_eq!(std::fs::read(d.esp.slot_dir(Slot::B).join(INITRD_FILE)).unwrap(), b"new initrd!");
        let entries = d.esp.entries().unwrap();
        let names: Vec<String> = entries.iter().map(|f| f.name.file_name()).collect();
        assert_eq!(names, ["bronze-a.conf", "bronze-b+2.conf"]);
        assert_eq!(entries[1].entry.as_ref().unwrap().options, "console=ttyS0 panic=5", "the running slot's options");
        assert_eq!(
            with_health_timeout("console=ttyS0 bronze.health_timeout=9 panic=5", 60),
            "console=ttyS0 panic=5 bronze.health_timeout=60"
        );
        assert_eq!(with_health_timeout("console=ttyS0", 0), "console=ttyS0");
        assert_eq!(bronze_boot::next_boot(&entries), Some(Slot::B));
        let record = super::super::history::read(&d.esp).expect("recorded").unwrap();
        assert_eq!(
            (record.slot.as_str(), record.release.as_str(), record.generation, record.tries),
            ("b", "v0.2.0", 2, 2)
        );
        assert_eq!((record.from_slot.as_str(), record.from_release.as_str()), ("a", "v0.1.0"));
        // Slot b is being tried: no upgrade on top of it, and a rollback to
        // it is refused until it is good.
        let err = rollback(&d.esp, Some(Slot::A), 0).unwrap_err().to_string();
        assert!(err.contains("slot b never booted fine"), "{err}");
    }

    #[test]
    fn bad_bundles_change_nothing_and_say_why() {
        let d = disk();
        let key = SigningKey::generate().unwrap();
        let trusted = [key.public_key()];
        let arch = std::env::consts::ARCH;
        let good = UpgradeBundle::create("v0.2.0", arch, vec![7; 100], vec![8; 200], &key);
        let before = snapshot(&d.esp);
        let begin = |b: &UpgradeBundle, keys: &[TrustedKey]| {
            Upload::begin(&d.esp, Some(Slot::A), &b.manifest_bytes, &b.signature, keys, 0, 0)
                .map(|_| ())
                .unwrap_err()
                .to_string()
        };
        // Unsigned, wrong key, no keys, another architecture.
        let unsigned = UpgradeBundle { signature: Vec::new(), ..good.clone() };
        assert!(begin(&unsigned, &trusted).contains("malformed upgrade.sig"));
        let stranger = SigningKey::generate().unwrap();
        let foreign = UpgradeBundle::create("v0.2.0", arch, vec![7; 100], vec![8; 200], &stranger);
        assert!(begin(&foreign, &trusted).contains("does not verify"));
        assert!(begin(&good, &[]).contains("no machine.upgrade.trustedKeys"));
        let other_arch = UpgradeBundle::create("v0.2.0", "riscv64", vec![7; 100], vec![8; 200], &key);
        assert!(begin(&other_arch, &trusted).contains("built for riscv64"), "{}", begin(&other_arch, &trusted));
        // Truncated: the initrd stops short.
        let mut upload =
            Upload::begin(&d.esp, Some(Slot::A), &good.manifest_bytes, &good.signature, &trusted, 0, 0).unwrap();
        upload.write(KERNEL_FILE, &good.kernel).unwrap();
        upload.write(INITRD_FILE, &good.initrd[..150]).unwrap();
        let err = upload.finish().unwrap_err().to_string();
        assert!(err.contains("initrd: 150 bytes received, upgrade.toml says 200"), "{err}");
        // Tampered: same size, other bytes.
        let mut upload =
            Upload::begin(&d.esp, Some(Slot::A), &good.manifest_bytes, &good.signature, &trusted, 0, 0).unwrap();
        let err = upload.write(INITRD_FILE, b"x").unwrap_err();
        assert!(err.to_string().contains("vmlinuz: 0 bytes received"), "{err}");
        let mut upload =
            Upload::begin(&d.esp, Some(Slot::A), &good.manifest_bytes, &good.signature, &trusted, 0, 0).unwrap();
        upload.write(KERNEL_FILE, &[9; 100]).unwrap();
        let err = upload.write(INITRD_FILE, &good.initrd).unwrap_err().to_string();
        assert!(err.contains("vmlinuz: sha256") && err.contains("does not match"), "{err}");
        drop(upload);
        // Oversized: more than declared.
        let mut upload =
            Upload::begin(&d.esp, Some(Slot::A), &good.manifest_bytes, &good.signature, &trusted, 0, 0).unwrap();
        let err = upload.write(KERNEL_FILE, &[7; 101]).unwrap_err().to_string();
        assert!(err.contains("more than the 100 bytes"), "{err}");
        drop(upload);
        // Too many tries; not booted from a disk.
        assert!(
            Upload::begin(&d.esp, Some(Slot::A), &good.manifest_bytes, &good.signature, &trusted, 10, 0)
                .unwrap_err()
                .to_string()
                .contains("tries 10")
        );
        assert!(
            Upload::begin(&d.esp, None, &good.manifest_bytes, &good.signature, &trusted, 0, 0)
                .unwrap_err()
                .to_string()
                .contains("not booted from a Bronze disk")
        );
        // Nothing changed, no temporary file left, no upgrade recorded.
        assert_eq!(snapshot(&d.esp), before);
        assert_eq!(super::super::history::read(&d.esp), None);
    }

    #[test]
    fn an_emptied_slot_has_no_entry_and_no_files() {
        let d = disk();
        empty_slot(&d.esp, Slot::A).unwrap();
        assert!(d.esp.entries().unwrap().is_empty());
        assert_eq!(std::fs::read_dir(d.esp.slot_dir(Slot::A)).unwrap().count(), 0);
        empty_slot(&d.esp, Slot::B).unwrap();
    }

    #[test]
    fn rollback_boots_the_other_good_slot_next() {
        let d = disk();
        assert!(rollback(&d.esp, Some(Slot::A), 0).unwrap_err().to_string().contains("slot b is empty"));
        let b = Entry { slot: Slot::B, generation: 5, release: "v0.2.0".into(), options: String::new() };
        d.esp.write_entry(&b, None).unwrap();
        let written = rollback(&d.esp, Some(Slot::B), 0).unwrap();
        assert_eq!((written.slot, written.generation, written.tries), (Slot::A, 6, 3));
        let entries = d.esp.entries().unwrap();
        assert_eq!(bronze_boot::next_boot(&entries), Some(Slot::A));
        assert_eq!(entries[0].name.file_name(), "bronze-a+3.conf");
    }
}
