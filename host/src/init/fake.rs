//! Recording fakes of init's system traits, for unit tests here and for the
//! node's own tests: they perform nothing, remember every call, and fail on
//! request with a chosen errno. Fakes given the same [`Journal`] record
//! into one ordered list, so a test can check the order across traits
//! (unmount before links down before reboot).

use super::kmod::{LoadStep, ModuleLoader};
use super::mounts::{MountSpec, Mounter};
use super::power::Power;
use super::setup::SystemControl;
use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

/// An ordered list of calls shared by several fakes.
#[derive(Debug, Clone, Default)]
pub struct Journal(Arc<Mutex<Vec<String>>>);

impl Journal {
    pub fn push(&self, entry: impl Into<String>) {
        lock(&self.0).push(entry.into());
    }

    pub fn entries(&self) -> Vec<String> {
        lock(&self.0).clone()
    }
}

/// A poisoned lock only means another test thread panicked; the data is
/// still a list of calls.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn errno(code: i32) -> io::Error {
    io::Error::from_raw_os_error(code)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MountCall {
    Mount(MountSpec),
    Unmount(PathBuf),
    RemountReadOnly(PathBuf),
}

#[derive(Debug, Default)]
pub struct RecordingMounter {
    journal: Journal,
    calls: Mutex<Vec<MountCall>>,
    failures: Mutex<BTreeMap<PathBuf, i32>>,
    mounted: Mutex<BTreeSet<PathBuf>>,
}

impl RecordingMounter {
    pub fn with_journal(journal: Journal) -> Self {
        Self { journal, ..Self::default() }
    }

    /// Every operation on `target` fails with `code`.
    pub fn fail(&self, target: &Path, code: i32) {
        lock(&self.failures).insert(target.to_path_buf(), code);
    }

    /// `target` reports as a mount point.
    pub fn set_mounted(&self, target: &Path) {
        lock(&self.mounted).insert(target.to_path_buf());
    }

    pub fn calls(&self) -> Vec<MountCall> {
        lock(&self.calls).clone()
    }

    fn check(&self, target: &Path) -> io::Result<()> {
        match lock(&self.failures).get(target) {
            Some(&code) => Err(errno(code)),
            None => Ok(()),
        }
    }
}

impl Mounter for RecordingMounter {
    fn mount(&self, m: &MountSpec) -> io::Result<()> {
        lock(&self.calls).push(MountCall::Mount(m.clone()));
        self.journal.push(format!("mount {}", m.target.display()));
        self.check(&m.target)
    }

    fn unmount(&self, target: &Path) -> io::Result<()> {
        lock(&self.calls).push(MountCall::Unmount(target.to_path_buf()));
        self.journal.push(format!("unmount {}", target.display()));
        self.check(target)
    }

    fn is_mount_point(&self, target: &Path) -> io::Result<bool> {
        Ok(lock(&self.mounted).contains(target))
    }

    fn remount_read_only(&self, target: &Path) -> io::Result<()> {
        lock(&self.calls).push(MountCall::RemountReadOnly(target.to_path_buf()));
        self.journal.push(format!("remount-ro {}", target.display()));
        Ok(())
    }
}

/// Records each load as `(module name, parameters)`.
#[derive(Debug, Default)]
pub struct RecordingLoader {
    journal: Journal,
    loads: Mutex<Vec<(String, String)>>,
    failures: Mutex<BTreeMap<String, i32>>,
}

impl RecordingLoader {
    pub fn with_journal(journal: Journal) -> Self {
        Self { journal, ..Self::default() }
    }

    /// Loading `module` fails with `code` (`EEXIST` = already loaded).
    pub fn fail(&self, module: &str, code: i32) {
        lock(&self.failures).insert(module.to_string(), code);
    }

    pub fn loads(&self) -> Vec<(String, String)> {
        lock(&self.loads).clone()
    }

    pub fn names(&self) -> Vec<String> {
        self.loads().into_iter().map(|(n, _)| n).collect()
    }
}

impl ModuleLoader for RecordingLoader {
    fn load(&self, step: &LoadStep) -> io::Result<()> {
        lock(&self.loads).push((step.name.clone(), step.parameters.clone()));
        self.journal.push(format!("load {}", step.name));
        match lock(&self.failures).get(&step.name) {
            Some(&code) => Err(errno(code)),
            None => Ok(()),
        }
    }
}

#[derive(Debug, Default)]
pub struct RecordingPower {
    journal: Journal,
    calls: Mutex<Vec<&'static str>>,
    failure: Mutex<Option<i32>>,
}

impl RecordingPower {
    pub fn with_journal(journal: Journal) -> Self {
        Self { journal, ..Self::default() }
    }

    /// reboot, power off and halt fail with `code`.
    pub fn fail(&self, code: i32) {
        *lock(&self.failure) = Some(code);
    }

    /// `"sync"`, `"reboot"`, `"power-off"`, `"halt"` in call order.
    pub fn calls(&self) -> Vec<&'static str> {
        lock(&self.calls).clone()
    }

    fn record(&self, call: &'static str) -> io::Result<()> {
        lock(&self.calls).push(call);
        self.journal.push(call);
        match *lock(&self.failure) {
            Some(code) if call != "sync" => Err(errno(code)),
            _ => Ok(()),
        }
    }
}

impl Power for RecordingPower {
    fn sync(&self) {
        let _ = self.record("sync");
    }

    fn reboot(&self) -> io::Result<()> {
        self.record("reboot")
    }

    fn power_off(&self) -> io::Result<()> {
        self.record("power-off")
    }

    fn halt(&self) -> io::Result<()> {
        self.record("halt")
    }
}

/// Records `"cad off"`, `"cad on"`, `"lo up"`, `"hostname NAME"`.
#[derive(Debug, Default)]
pub struct RecordingSystem {
    journal: Journal,
    calls: Mutex<Vec<String>>,
    failures: Mutex<BTreeMap<&'static str, i32>>,
}

impl RecordingSystem {
    pub fn with_journal(journal: Journal) -> Self {
        Self { journal, ..Self::default() }
    }

    /// `op` is `"cad"`, `"lo"` or `"hostname"`.
    pub fn fail(&self, op: &'static str, code: i32) {
        lock(&self.failures).insert(op, code);
    }

    pub fn calls(&self) -> Vec<String> {
        lock(&self.calls).clone()
    }

    fn record(&self, op: &'static str, entry: String) -> io::Result<()> {
        lock(&self.calls).push(entry.clone());
        self.journal.push(entry);
        match lock(&self.failures).get(op) {
            Some(&code) => Err(errno(code)),
            None => Ok(()),
        }
    }
}

impl SystemControl for RecordingSystem {
    fn set_cad_enabled(&self, enabled: bool) -> io::Result<()> {
        self.record("cad", format!("cad {}", if enabled { "on" } else { "off" }))
    }

    fn loopback_up(&self) -> io::Result<()> {
        self.record("lo", "lo up".into())
    }

    fn set_hostname(&self, name: &str) -> io::Result<()> {
        self.record("hostname", format!("hostname {name}"))
    }

    fn set_fd_limit(&self, soft: u64, hard: u64) -> io::Result<()> {
        self.record("nofile", format!("nofile {soft} {hard}"))
    }
}
