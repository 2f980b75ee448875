//! Bronze's boot slots on the EFI system partition, and the systemd-boot
//! entries that choose between them.
//!
//! A Bronze disk has two slots, `a` and `b`, each a directory on the ESP
//! holding a kernel (`vmlinuz`, the EFI stub bzImage) and an initramfs
//! (`initrd`), and one [Boot Loader Specification] entry per slot in
//! `/loader/entries/`. systemd-boot (Debian's `systemd-boot-efi`) boots the
//! first entry in its order, which is:
//!
//! 1. entries with tries left first, entries whose tries ran out (`+0-N`) last;
//! 2. then by `version`, newest first (every Bronze entry has `sort-key
//!    bronze`, which is what makes systemd-boot compare versions): Bronze
//!    writes the slot's **generation** there, one more than the highest on the
//!    disk each time a slot is written or chosen.
//!
//! [Automatic Boot Assessment]: an entry written with `+3` in its file name
//! is tried: systemd-boot renames it `+2-1`, `+1-2`, `+0-3` on each boot
//! *before* starting the kernel, so a kernel that never comes up runs the
//! counter down and the other slot boots. `bronzed` **blesses** the entry
//! it runs from (renames it without a counter) once the node is healthy.
//!
//! `loader.conf` names no `default`: systemd-boot's `default` pattern would
//! match an entry whose tries ran out and boot it anyway.
//!
//! This crate owns the names, the texts and the order, for the image builder
//! (the first entry), for `bronzed` (upgrades, blessing, rollback, status) and
//! for the tests (which read a disk's entries to say what will boot). It does
//! no I/O beyond [`Esp`], a directory (the mounted ESP, or a plain directory
//! in process mode and in tests).
//!
//! [Boot Loader Specification]: https://uapi-group.org/specifications/specs/boot_loader_specification/
//! [Automatic Boot Assessment]: https://systemd.io/AUTOMATIC_BOOT_ASSESSMENT/

#![forbid(unsafe_code)]

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};

/// The GPT partition name (and vfat label) of Bronze's ESP.
pub const ESP_LABEL: &str = "BRONZE_EFI";
/// The ESP's directory of entries.
pub const ENTRIES_DIR: &str = "loader/entries";
/// The boot loader's own configuration.
pub const LOADER_CONF: &str = "loader/loader.conf";
/// Where the firmware looks for a boot loader on a disk with no boot
/// variables (removable-media path): systemd-boot is installed there.
pub const FALLBACK_LOADER: &str = "EFI/BOOT/BOOTX64.EFI";
/// A slot's kernel, inside its directory.
pub const KERNEL_FILE: &str = "vmlinuz";
/// A slot's initramfs, inside its directory.
pub const INITRD_FILE: &str = "initrd";
/// The kernel argument naming the slot a kernel was booted from.
pub const SLOT_ARG: &str = "bronze.slot";
/// The `sort-key` of every Bronze entry.
pub const SORT_KEY: &str = "bronze";
/// The tries a newly written slot gets unless told otherwise.
pub const DEFAULT_TRIES: u32 = 3;
/// The most tries a slot may be given.
pub const MAX_TRIES: u32 = 9;
/// The largest entry file read (a Bronze entry is a few hundred bytes).
pub const MAX_ENTRY_BYTES: u64 = 4096;
/// The longest kernel command line an entry may carry (x86's
/// `COMMAND_LINE_SIZE` is 2048).
pub const MAX_OPTIONS_LEN: usize = 2048;

/// `loader.conf`: boot at once, no editor (no one changes the kernel command
/// line at the console), no automatic entries (firmware setup, other OSes),
/// and no `default` (see the crate documentation).
pub const LOADER_CONF_TEXT: &str = "timeout 0\neditor no\nauto-entries no\nauto-firmware no\nconsole-mode keep\n";

/// One of the two boot slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Slot {
    A,
    B,
}

impl Slot {
    /// Both, in order.
    pub const ALL: [Slot; 2] = [Slot::A, Slot::B];

    /// `a` or `b`: the directory on the ESP and the value of [`SLOT_ARG`].
    pub fn name(self) -> &'static str {
        match self {
            Slot::A => "a",
            Slot::B => "b",
        }
    }

    /// The other slot.
    pub fn other(self) -> Slot {
        match self {
            Slot::A => Slot::B,
            Slot::B => Slot::A,
        }
    }

    /// Parses [`Slot::name`].
    pub fn parse(text: &str) -> Option<Slot> {
        Slot::ALL.into_iter().find(|s| s.name() == text)
    }

    /// The entry id (`bronze-a`), the file name without counter and `.conf`.
    pub fn entry_id(self) -> String {
        format!("bronze-{}", self.name())
    }

    /// The slot a kernel command line says it was booted from.
    pub fn from_cmdline(cmdline: &str) -> Option<Slot> {
        let prefix = format!("{SLOT_ARG}=");
        cmdline.split_ascii_whitespace().rev().find_map(|w| w.strip_prefix(&prefix)).and_then(Slot::parse)
    }
}

impl fmt::Display for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The boot counter in an entry's file name (`+LEFT` or `+LEFT-DONE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counter {
    /// Boots left before the entry is bad.
    pub left: u32,
    /// Boots tried so far.
    pub done: u32,
}

/// An entry file's name, parsed: the slot and its boot counter, if any (an
/// entry without one is **blessed**: it booted fine and is never counted).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntryName {
    pub slot: Slot,
    pub counter: Option<Counter>,
}

impl EntryName {
    /// Parses `bronze-a.conf`, `bronze-b+3.conf`, `bronze-b+2-1.conf`; `None`
    /// for anything else (the entries directory may hold other files).
    pub fn parse(file_name: &str) -> Option<EntryName> {
        let stem = file_name.strip_suffix(".conf")?;
        let (id, counter) = match stem.split_once('+') {
            None => (stem, None),
            Some((id, count)) => {
                let (left, done) = match count.split_once('-') {
                    Some((left, done)) => (left, done),
                    None => (count, "0"),
                };
                let number = |s: &str| {
                    (!s.is_empty() && s.len() <= 4 && s.bytes().all(|b| b.is_ascii_digit()))
                        .then(|| s.parse().ok())
                        .flatten()
                };
                (id, Some(Counter { left: number(left)?, done: number(done)? }))
            }
        };
        let slot = Slot::parse(id.strip_prefix("bronze-")?)?;
        Some(EntryName { slot, counter })
    }

    /// The file name: `bronze-a.conf`, `bronze-a+3.conf` (nothing tried yet),
    /// `bronze-a+2-1.conf`.
    pub fn file_name(&self) -> String {
        match self.counter {
            None => format!("{}.conf", self.slot.entry_id()),
            Some(Counter { left, done: 0 }) => format!("{}+{left}.conf", self.slot.entry_id()),
            Some(Counter { left, done }) => format!("{}+{left}-{done}.conf", self.slot.entry_id()),
        }
    }

    /// Tries ran out: systemd-boot boots it only when nothing else is left.
    pub fn is_bad(&self) -> bool {
        matches!(self.counter, Some(Counter { left: 0, .. }))
    }

    /// Booted fine once and was blessed.
    pub fn is_blessed(&self) -> bool {
        self.counter.is_none()
    }
}

/// What an entry says: which slot, its generation, the Bronze version in it,
/// and the kernel command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub slot: Slot,
    /// Higher boots first (the entry's `version`).
    pub generation: u64,
    /// The Bronze version the slot holds (in the title).
    pub release: String,
    /// Kernel arguments before [`SLOT_ARG`], which is always last.
    pub options: String,
}

/// Why an entry or a slot description could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum BootError {
    #[error("{path}: {reason}", path = .path.display())]
    Malformed { path: PathBuf, reason: String },
    #[error("cannot {action} {path}: {error}", path = .path.display())]
    Io { action: &'static str, path: PathBuf, error: std::io::Error },
}

fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> BootError + use<> {
    let path = path.to_path_buf();
    move |error| BootError::Io { action, path, error }
}

impl Entry {
    /// The entry's text: what systemd-boot reads.
    pub fn render(&self) -> String {
        let dir = self.slot.name();
        format!(
            "title Bronze {release} (slot {dir})\nsort-key {SORT_KEY}\nversion {generation}\nlinux /{dir}/{KERNEL_FILE}\ninitrd /{dir}/{INITRD_FILE}\noptions {options}{space}{SLOT_ARG}={dir}\n",
            release = self.release,
            generation = self.generation,
            options = self.options,
            space = if self.options.is_empty() { "" } else { " " },
        )
    }

    /// Parses an entry [`Entry::render`] wrote for `slot` (`path` is for
    /// errors). Strict: every key Bronze writes must be there and point at
    /// the slot's own files, so a mangled entry is reported, never booted
    /// into by a rollback.
    pub fn parse(text: &str, slot: Slot, path: &Path) -> Result<Entry, BootError> {
        let bad = |reason: String| BootError::Malformed { path: path.to_path_buf(), reason };
        let mut title = None;
        let mut version = None;
        let mut options = None;
        let mut sort_key = None;
        let (mut linux, mut initrd) = (None, None);
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (key, value) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
            let value = value.trim();
            let field = match key {
                "title" => &mut title,
                "version" => &mut version,
                "options" => &mut options,
                "sort-key" => &mut sort_key,
                "linux" => &mut linux,
                "initrd" => &mut initrd,
                other => return Err(bad(format!("line {}: unexpected key {other:?}", n + 1))),
            };
            if field.replace(value.to_string()).is_some() {
                return Err(bad(format!("line {}: {key} given twice", n + 1)));
            }
        }
        let dir = slot.name();
        let need = |field: Option<String>, key: &str| field.ok_or_else(|| bad(format!("no {key} line")));
        let expect = |field: Option<String>, key: &str, want: String| -> Result<(), BootError> {
            let got = need(field, key)?;
            if got == want { Ok(()) } else { Err(bad(format!("{key} is {got:?}, expected {want:?}"))) }
        };
        expect(sort_key, "sort-key", SORT_KEY.to_string())?;
        expect(linux, "linux", format!("/{dir}/{KERNEL_FILE}"))?;
        expect(initrd, "initrd", format!("/{dir}/{INITRD_FILE}"))?;
        let version = need(version, "version")?;
        let generation =
            version.parse().map_err(|_| bad(format!("version is {version:?}, expected a generation number")))?;
        let title = need(title, "title")?;
        let release = title
            .strip_prefix("Bronze ")
            .and_then(|t| t.strip_suffix(&format!(" (slot {dir})")))
            .ok_or_else(|| bad(format!("title is {title:?}, expected \"Bronze VERSION (slot {dir})\"")))?
            .to_string();
        let options = need(options, "options")?;
        let slot_arg = format!("{SLOT_ARG}={dir}");
        let options = match options.strip_suffix(&slot_arg) {
            Some(rest) => rest.trim_end().to_string(),
            None => return Err(bad(format!("options do not end with {slot_arg}"))),
        };
        Ok(Entry { slot, generation, release, options })
    }
}

/// An entry on the disk: its file name and what it says (or why it could
/// not be read).
#[derive(Debug)]
pub struct FoundEntry {
    pub name: EntryName,
    pub entry: Result<Entry, BootError>,
}

/// The slot systemd-boot will boot, by its rules (see the crate
/// documentation), among entries that could be read; `None` if there is none.
pub fn next_boot(entries: &[FoundEntry]) -> Option<Slot> {
    entries
        .iter()
        .filter_map(|f| f.entry.as_ref().ok().map(|e| (f.name, e)))
        // Not bad first, then the highest generation, then the highest id.
        .min_by_key(|(name, entry)| (name.is_bad(), std::cmp::Reverse(entry.generation), std::cmp::Reverse(name.slot)))
        .map(|(name, _)| name.slot)
}

/// The ESP (or a directory standing in for it): the slots' files and the
/// entries. Every write is a temporary file, `fsync`, rename, `fsync` of the
/// directory, so a power cut leaves the old file or the new one.
#[derive(Debug, Clone)]
pub struct Esp {
    pub root: PathBuf,
}

impl Esp {
    pub fn new(root: impl Into<PathBuf>) -> Esp {
        Esp { root: root.into() }
    }

    /// A slot's directory.
    pub fn slot_dir(&self, slot: Slot) -> PathBuf {
        self.root.join(slot.name())
    }

    fn entries_dir(&self) -> PathBuf {
        self.root.join(ENTRIES_DIR)
    }

    /// Every Bronze entry on the ESP, in file-name order. Entries larger than
    /// [`MAX_ENTRY_BYTES`] or not UTF-8 are reported as malformed.
    pub fn entries(&self) -> Result<Vec<FoundEntry>, BootError> {
        let dir = self.entries_dir();
        let mut found = Vec::new();
        let read = std::fs::read_dir(&dir).map_err(io("read", &dir))?;
        for item in read {
            let item = item.map_err(io("read", &dir))?;
            let Some(name) = item.file_name().to_str().and_then(EntryName::parse) else { continue };
            let path = item.path();
            let entry = read_bounded(&path).and_then(|text| Entry::parse(&text, name.slot, &path));
            found.push(FoundEntry { name, entry });
        }
        found.sort_by_key(|f| f.name.file_name());
        Ok(found)
    }

    /// The entries of `slot` (normally one).
    pub fn slot_entries(&self, slot: Slot) -> Result<Vec<FoundEntry>, BootError> {
        Ok(self.entries()?.into_iter().filter(|f| f.name.slot == slot).collect())
    }

    /// The highest generation of any readable entry (0 if none).
    pub fn max_generation(&self) -> Result<u64, BootError> {
        Ok(self.entries()?.iter().filter_map(|f| f.entry.as_ref().ok()).map(|e| e.generation).max().unwrap_or(0))
    }

    /// Removes every entry of `slot`, so nothing boots it (before its files
    /// are rewritten).
    pub fn remove_entries(&self, slot: Slot) -> Result<(), BootError> {
        let dir = self.entries_dir();
        for found in self.slot_entries(slot)? {
            let path = dir.join(found.name.file_name());
            std::fs::remove_file(&path).map_err(io("remove", &path))?;
        }
        sync_dir(&dir)
    }

    /// Writes `entry` with `counter` (tries for a new slot, `None` for a
    /// blessed one), replacing the slot's entries.
    pub fn write_entry(&self, entry: &Entry, counter: Option<Counter>) -> Result<EntryName, BootError> {
        let dir = self.entries_dir();
        std::fs::create_dir_all(&dir).map_err(io("create", &dir))?;
        let name = EntryName { slot: entry.slot, counter };
        let old = self.slot_entries(entry.slot)?;
        let path = dir.join(name.file_name());
        write_atomic(&path, entry.render().as_bytes())?;
        for found in old.into_iter().filter(|f| f.name != name) {
            let stale = dir.join(found.name.file_name());
            std::fs::remove_file(&stale).map_err(io("remove", &stale))?;
        }
        sync_dir(&dir)?;
        Ok(name)
    }

    /// Blesses `slot`'s entry: renames it without its counter, so it is never
    /// counted down again. `Ok(false)` if it was blessed already; an error if
    /// the slot has no entry.
    pub fn bless(&self, slot: Slot) -> Result<bool, BootError> {
        let dir = self.entries_dir();
        let entries = self.slot_entries(slot)?;
        let Some(found) = entries.first() else {
            return Err(BootError::Malformed { path: dir, reason: format!("no entry for slot {slot}") });
        };
        if found.name.is_blessed() {
            return Ok(false);
        }
        let from = dir.join(found.name.file_name());
        let to = dir.join(EntryName { slot, counter: None }.file_name());
        std::fs::rename(&from, &to).map_err(io("rename", &from))?;
        sync_dir(&dir)?;
        Ok(true)
    }

    /// `loader.conf` and the boot loader at the fallback path (for a new disk).
    pub fn install_loader(&self, systemd_boot: &Path) -> Result<(), BootError> {
        let bytes = std::fs::read(systemd_boot).map_err(io("read", systemd_boot))?;
        let loader = self.root.join(FALLBACK_LOADER);
        let parent = loader.parent().expect("the fallback path has a directory");
        std::fs::create_dir_all(parent).map_err(io("create", parent))?;
        write_atomic(&loader, &bytes)?;
        let conf = self.root.join(LOADER_CONF);
        std::fs::create_dir_all(self.entries_dir()).map_err(io("create", &self.entries_dir()))?;
        write_atomic(&conf, LOADER_CONF_TEXT.as_bytes())
    }
}

/// Reads a file of the ESP of at most [`MAX_ENTRY_BYTES`] as UTF-8 (an
/// entry, the last upgrade's record).
pub fn read_bounded(path: &Path) -> Result<String, BootError> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(io("open", path))?;
    let mut bytes = Vec::new();
    file.take(MAX_ENTRY_BYTES + 1).read_to_end(&mut bytes).map_err(io("read", path))?;
    if bytes.len() as u64 > MAX_ENTRY_BYTES {
        return Err(BootError::Malformed {
            path: path.to_path_buf(),
            reason: format!("larger than {MAX_ENTRY_BYTES} bytes"),
        });
    }
    String::from_utf8(bytes).map_err(|e| BootError::Malformed {
        path: path.to_path_buf(),
        reason: format!("not UTF-8 at byte {}", e.utf8_error().valid_up_to()),
    })
}

/// `path.tmp` written, `fsync`ed and renamed over `path`.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), BootError> {
    let tmp = temp_path(path);
    let mut file = std::fs::File::create(&tmp).map_err(io("create", &tmp))?;
    file.write_all(bytes).map_err(io("write", &tmp))?;
    file.sync_all().map_err(io("sync", &tmp))?;
    drop(file);
    std::fs::rename(&tmp, path).map_err(io("rename", &tmp))?;
    if let Some(parent) = path.parent() {
        sync_dir(parent)?;
    }
    Ok(())
}

/// The temporary name [`write_atomic`] uses for `path`.
pub fn temp_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".tmp");
    PathBuf::from(name)
}

/// `fsync` of a directory (its renames and removals reach the disk).
pub fn sync_dir(dir: &Path) -> Result<(), BootError> {
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io("sync", dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(slot: Slot, generation: u64) -> Entry {
        Entry { slot, generation, release: format!("0.1.{generation}"), options: "console=ttyS0 panic=5".into() }
    }

    #[test]
    fn entry_names_follow_the_boot_counting_grammar() {
        let cases = [
            ("bronze-a.conf", Some((Slot::A, None))),
            ("bronze-b+3.conf", Some((Slot::B, Some((3, 0))))),
            ("bronze-b+2-1.conf", Some((Slot::B, Some((2, 1))))),
            ("bronze-a+0-3.conf", Some((Slot::A, Some((0, 3))))),
            ("bronze-c.conf", None),
            ("bronze-a", None),
            ("bronze-a+.conf", None),
            ("bronze-a+x.conf", None),
            ("bronze-a+1-.conf", None),
            ("bronze-a+99999.conf", None),
            ("other.conf", None),
        ];
        for (file, want) in cases {
            let got = EntryName::parse(file).map(|n| (n.slot, n.counter.map(|c| (c.left, c.done))));
            assert_eq!(got, want, "{file}");
            if let Some(name) = EntryName::parse(file) {
                assert_eq!(name.file_name(), file, "round trip");
            }
        }
        assert!(EntryName::parse("bronze-a+0-3.conf").unwrap().is_bad());
        assert!(EntryName::parse("bronze-a.conf").unwrap().is_blessed());
        assert!(!EntryName::parse("bronze-a+1-2.conf").unwrap().is_bad());
    }

    #[test]
    fn entries_round_trip_and_mangled_ones_name_what_is_wrong() {
        let e = entry(Slot::B, 7);
        let text = e.render();
        assert_eq!(
            text,
            "title Bronze 0.1.7 (slot b)\nsort-key bronze\nversion 7\nlinux /b/vmlinuz\ninitrd /b/initrd\n\
             options console=ttyS0 panic=5 bronze.slot=b\n"
        );
        let path = Path::new("/esp/loader/entries/bronze-b.conf");
        assert_eq!(Entry::parse(&text, Slot::B, path).unwrap(), e);
        let err = Entry::parse(&text, Slot::A, path).unwrap_err().to_string();
        assert!(err.contains("linux is \"/b/vmlinuz\", expected \"/a/vmlinuz\""), "{err}");
        for (change, reason) in [
            (text.replace("version 7", "version seven"), "expected a generation number"),
            (text.replace("sort-key bronze\n", ""), "no sort-key line"),
            (text.replace(" bronze.slot=b", ""), "options do not end with bronze.slot=b"),
            (format!("{text}devicetree /x\n"), "unexpected key \"devicetree\""),
            (format!("{text}version 8\n"), "version given twice"),
        ] {
            let err = Entry::parse(&change, Slot::B, path).unwrap_err().to_string();
            assert!(err.contains(reason) && err.starts_with("/esp/loader/entries/bronze-b.conf: "), "{err}");
        }
    }

    #[test]
    fn the_next_boot_follows_systemd_boots_order() {
        let found = |file: &str, generation: u64| {
            let name = EntryName::parse(file).unwrap();
            FoundEntry { name, entry: Ok(entry(name.slot, generation)) }
        };
        // The newer generation wins while it has tries left...
        assert_eq!(next_boot(&[found("bronze-a.conf", 1), found("bronze-b+3.conf", 2)]), Some(Slot::B));
        assert_eq!(next_boot(&[found("bronze-a.conf", 1), found("bronze-b+1-2.conf", 2)]), Some(Slot::B));
        // ...and loses once they ran out.
        assert_eq!(next_boot(&[found("bronze-a.conf", 1), found("bronze-b+0-3.conf", 2)]), Some(Slot::A));
        // A bad entry still boots when it is the only one.
        assert_eq!(next_boot(&[found("bronze-b+0-3.conf", 2)]), Some(Slot::B));
        // An unreadable entry is never chosen.
        let broken = FoundEntry {
            name: EntryName::parse("bronze-b.conf").unwrap(),
            entry: Err(BootError::Malformed { path: "x".into(), reason: "y".into() }),
        };
        assert_eq!(next_boot(&[found("bronze-a.conf", 1), broken]), Some(Slot::A));
        assert_eq!(next_boot(&[]), None);
    }

    #[test]
    fn the_esp_writes_blesses_and_removes_entries() {
        let dir = tempfile::tempdir().unwrap();
        let esp = Esp::new(dir.path());
        let loader = dir.path().join("systemd-bootx64.efi");
        std::fs::write(&loader, b"MZ fake loader").unwrap();
        esp.install_loader(&loader).unwrap();
        assert_eq!(std::fs::read(dir.path().join(FALLBACK_LOADER)).unwrap(), b"MZ fake loader");
        assert_eq!(std::fs::read_to_string(dir.path().join(LOADER_CONF)).unwrap(), LOADER_CONF_TEXT);
        assert!(!LOADER_CONF_TEXT.contains("default"), "a default pattern would boot bad entries");

        esp.write_entry(&entry(Slot::A, 1), None).unwrap();
        let name = esp.write_entry(&entry(Slot::B, 2), Some(Counter { left: 3, done: 0 })).unwrap();
        assert_eq!(name.file_name(), "bronze-b+3.conf");
        assert_eq!(esp.max_generation().unwrap(), 2);
        assert_eq!(next_boot(&esp.entries().unwrap()), Some(Slot::B));
        // systemd-boot counts a try down by renaming...
        let entries = dir.path().join(ENTRIES_DIR);
        std::fs::rename(entries.join("bronze-b+3.conf"), entries.join("bronze-b+2-1.conf")).unwrap();
        // ...and bronzed blesses the slot it runs from.
        assert!(esp.bless(Slot::B).unwrap());
        assert!(!esp.bless(Slot::B).unwrap(), "blessing twice changes nothing");
        let files: Vec<String> = esp.entries().unwrap().iter().map(|f| f.name.file_name()).collect();
        assert_eq!(files, ["bronze-a.conf", "bronze-b.conf"]);
        // Rewriting a slot replaces its entry; removing it leaves the other.
        esp.write_entry(&entry(Slot::A, 3), Some(Counter { left: 2, done: 0 })).unwrap();
        let files: Vec<String> = esp.entries().unwrap().iter().map(|f| f.name.file_name()).collect();
        assert_eq!(files, ["bronze-a+2.conf", "bronze-b.conf"]);
        esp.remove_entries(Slot::A).unwrap();
        assert_eq!(next_boot(&esp.entries().unwrap()), Some(Slot::B));
        assert!(esp.bless(Slot::A).unwrap_err().to_string().contains("no entry for slot a"));
        // No temporary file is left behind.
        assert!(
            std::fs::read_dir(&entries).unwrap().all(|e| !e.unwrap().file_name().to_string_lossy().ends_with(".tmp"))
        );
    }

    #[test]
    fn oversized_and_binary_entries_are_reported_not_read() {
        let dir = tempfile::tempdir().unwrap();
        let esp = Esp::new(dir.path());
        let entries = dir.path().join(ENTRIES_DIR);
        std::fs::create_dir_all(&entries).unwrap();
        std::fs::write(entries.join("bronze-a.conf"), vec![b'x'; MAX_ENTRY_BYTES as usize + 1]).unwrap();
        std::fs::write(entries.join("bronze-b.conf"), b"title \xff\n").unwrap();
        std::fs::write(entries.join("notes.txt"), b"ignored").unwrap();
        let found = esp.entries().unwrap();
        assert_eq!(found.len(), 2);
        assert!(found[0].entry.as_ref().unwrap_err().to_string().contains("larger than 4096 bytes"));
        assert!(found[1].entry.as_ref().unwrap_err().to_string().contains("not UTF-8 at byte 6"));
        assert_eq!(next_boot(&found), None);
    }

    #[test]
    fn the_slot_comes_from_the_command_line() {
        assert_eq!(Slot::from_cmdline("console=ttyS0 bronze.slot=b panic=5"), Some(Slot::B));
        assert_eq!(Slot::from_cmdline("bronze.slot=a bronze.slot=b"), Some(Slot::B), "the last one wins");
        assert_eq!(Slot::from_cmdline("bronze.slot=c"), None);
        assert_eq!(Slot::from_cmdline("console=ttyS0"), None);
        assert_eq!(Slot::A.other(), Slot::B);
    }
}
