//! PID 1 duties: what the node's init does that an ordinary process never
//! does. It owns
//!
//! - the early mounts (`/proc`, `/sys`, `/dev`, ..., cgroup2) and the state
//!   disk at `/var/lib/bronze` ([`mounts`]),
//! - kernel modules in dependency order ([`kmod`]) and `machine.sysctls`
//!   ([`sysctl`]),
//! - init's logging to the console and the kernel log ([`console`]),
//! - Ctrl-Alt-Del, the loopback link and the hostname call ([`setup`]),
//! - the shutdown sequence and `reboot(2)` ([`shutdown`], [`power`]),
//!   including the reboot after an unrecoverable error.
//!
//! What it must not do: decide anything about services, plugins or the
//! network (it calls the callbacks their owners provide); panic or exit
//! (every step's failure lands in a report, and PID 1 exiting panics the
//! kernel); touch the system except through [`mounts::Mounter`],
//! [`kmod::ModuleLoader`], [`setup::SystemControl`] and [`power::Power`]
//! (whose fakes in [`fake`] record calls), and paths under a `root`
//! parameter, so all of it runs unprivileged in tests on temp trees.
//! Process mode never calls into this module: `main.rs` picks it for pid1
//! only.

pub mod console;
mod elf;
pub mod fake;
pub mod kmod;
pub mod mounts;
pub mod power;
pub mod setup;
pub mod shutdown;
mod sys;
pub mod sysctl;

pub use console::{Pid1Log, pid1_log_writer};
pub use kmod::{
    KernelModuleLoader, LoadReport, ModuleLoader, ModuleRequest, NoModules, OnDemandLoader, OnDemandModules,
};
pub use mounts::{KernelMounter, MountSpec, Mounter, find_state_disk, mount_all, unmount_plan};
pub use power::{FATAL_REBOOT_DELAY, KernelPower, Power, PowerTarget, fatal_reboot, halt_on_fatal};
pub use setup::{KernelSystem, SystemControl, all_links_down, disable_cad, loopback_up, set_hostname};
pub use shutdown::{Deadlines, ShutdownHooks, shutdown};
pub use sys::boottime;
pub use sysctl::{SysctlReport, apply_sysctls};

use kmod::KmodError;
use mounts::MountError;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Drivers a Bronze VM needs before its config can be read (NIC, disk,
/// ext4 for the state disk, pvpanic so a test harness sees a kernel panic),
/// after notes/vm-boot.md, for a root that does not list its own
/// ([`EarlyOptions::for_image`]). Dependencies (virtio_ring, failover,
/// jbd2, ...) and ext4's crc32c follow on their own.
pub const DEFAULT_BOOT_MODULES: &[&str] =
    &["virtio_pci", "virtio_net", "virtio_blk", "virtio_rng", "ext4", "pvpanic_pci"];

/// What [`early_boot`] should do beyond the fixed mounts.
#[derive(Debug, Clone)]
pub struct EarlyOptions {
    /// Modules to load before anything reads the disk or the network.
    pub boot_modules: Vec<ModuleRequest>,
    /// Look for the `BRONZE_STATE` filesystem and mount it at
    /// `/var/lib/bronze`. Without it, state lives in the initramfs (lost at
    /// reboot).
    pub mount_state_disk: bool,
    /// How long to keep looking for the state disk: its device node can
    /// trail the driver load by a moment.
    pub state_disk_wait: Duration,
    /// Look for the GPT partition named `BRONZE_EFI` (a Bronze disk's boot
    /// slots) and mount it at `/boot`.
    pub mount_esp: bool,
}

impl Default for EarlyOptions {
    fn default() -> Self {
        Self {
            boot_modules: DEFAULT_BOOT_MODULES.iter().map(|m| ModuleRequest::new(*m)).collect(),
            mount_state_disk: true,
            state_disk_wait: Duration::from_secs(2),
            mount_esp: true,
        }
    }
}

impl EarlyOptions {
    /// The defaults, with the boot modules the image under `root` lists
    /// ([`kmod::IMAGE_LOAD_ORDER`]) when it lists them.
    pub fn for_image(root: &Path) -> Self {
        let mut opts = Self::default();
        if let Some(modules) = kmod::image_boot_modules(root) {
            opts.boot_modules = modules;
        }
        opts
    }
}

/// The system interfaces early boot uses.
#[derive(Clone, Copy)]
pub struct EarlySystem<'a> {
    pub mounter: &'a dyn Mounter,
    pub loader: &'a dyn ModuleLoader,
    pub system: &'a dyn SystemControl,
}

impl std::fmt::Debug for EarlySystem<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EarlySystem").finish_non_exhaustive()
    }
}

impl EarlySystem<'static> {
    /// The real kernel.
    pub fn kernel() -> Self {
        Self { mounter: &KernelMounter, loader: &KernelModuleLoader, system: &KernelSystem }
    }
}

/// One early-boot step that did not work. None of them stops the boot.
#[derive(Debug, thiserror::Error)]
pub enum EarlyProblem {
    #[error(transparent)]
    Mount(#[from] MountError),
    #[error(transparent)]
    Module(#[from] KmodError),
    #[error(transparent)]
    Sysctl(#[from] sysctl::SysctlError),
    #[error("cannot read the kernel command line {path}: {error}")]
    Cmdline { path: PathBuf, error: io::Error },
    #[error("cannot make Ctrl-Alt-Del a signal to init: {0}")]
    Cad(io::Error),
    #[error("cannot bring lo up: {0}")]
    Loopback(io::Error),
    #[error("cannot raise the open-file limit to {limit}: {error}")]
    FdLimit { limit: u64, error: io::Error },
    #[error("cannot wipe the state disk as a reset asked: {0}")]
    Reset(io::Error),
}

/// What [`early_boot`] did.
#[derive(Debug, Default)]
pub struct EarlyReport {
    /// Mounted by early boot, in order (targets under `root`).
    pub mounted: Vec<MountSpec>,
    /// Found already mounted and left alone.
    pub already_mounted: Vec<MountSpec>,
    /// Modules loaded or found loaded.
    pub modules_loaded: Vec<String>,
    /// Each `finit_module` call's duration, in load order.
    pub module_timings: Vec<(String, Duration)>,
    /// How long each early-boot phase took, in order.
    pub phases: crate::laps::Laps,
    /// The kernel's clock (`CLOCK_BOOTTIME`) when early boot began: the
    /// gap from the kernel's "Run /init" line is exec and runtime start.
    pub started_at: Duration,
    /// The state disk's device node, when one was found.
    pub state_disk: Option<PathBuf>,
    /// The EFI system partition's device node, when one was found and
    /// mounted at `/boot`.
    pub esp: Option<PathBuf>,
    /// Entries removed from the state disk because a reset asked for it.
    pub reset: Option<usize>,
    /// `/proc/cmdline`, trimmed; empty if unreadable.
    pub cmdline: String,
    /// PID 1's `RLIMIT_NOFILE` (soft and hard), once raised.
    pub fd_limit: Option<u64>,
    pub problems: Vec<EarlyProblem>,
}

impl EarlyReport {
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }

    /// The kernel command line says `panic=0`: halt instead of rebooting on
    /// an unrecoverable error.
    pub fn halt_on_fatal(&self) -> bool {
        halt_on_fatal(&self.cmdline)
    }

    /// What the shutdown should unmount, children first.
    pub fn unmount_plan(&self) -> Vec<PathBuf> {
        unmount_plan(&self.mounted)
    }

    /// Logs the report; early boot runs before logging is set up.
    pub fn log(&self) {
        for m in &self.mounted {
            tracing::debug!("mounted {m}");
        }
        if let Some(removed) = self.reset {
            tracing::warn!(removed, "reset: the state disk was wiped as asked; the node starts in maintenance mode");
        }
        match &self.state_disk {
            Some(dev) => tracing::info!(device = %dev.display(), "state disk at {}", mounts::STATE_MOUNT_POINT),
            None => tracing::warn!(
                "no filesystem labelled {}: state is kept in memory and lost at reboot",
                mounts::STATE_LABEL
            ),
        }
        if !self.modules_loaded.is_empty() {
            tracing::info!(modules = ?self.modules_loaded, "kernel modules loaded");
        }
        for (name, took) in &self.module_timings {
            tracing::debug!(module = %name, ms = took.as_secs_f64() * 1e3, "finit_module");
        }
        tracing::info!("early boot from {:.3} s: {}", self.started_at.as_secs_f64(), self.phases);
        for p in &self.problems {
            tracing::warn!("early boot: {p}");
        }
    }
}

/// Early boot on the real kernel, `root` being `/`.
pub async fn early_boot(root: &Path, opts: &EarlyOptions) -> EarlyReport {
    early_boot_with(EarlySystem::kernel(), root, opts).await
}

/// The first things PID 1 does, in order: mount the kernel filesystems,
/// read the command line, lift the kmsg rate limit
/// (`kernel.printk_devkmsg=on`, unless the command line sets
/// `printk.devkmsg=`), route Ctrl-Alt-Del to SIGINT, bring `lo` up,
/// load the boot modules, find and mount the state disk. A failing step is
/// recorded and the next one still runs. Logging is set up separately
/// (after this, since `/dev` must be mounted first); call
/// [`EarlyReport::log`] then.
pub async fn early_boot_with(sys: EarlySystem<'_>, root: &Path, opts: &EarlyOptions) -> EarlyReport {
    let mut report = EarlyReport { started_at: sys::boottime(), ..EarlyReport::default() };

    let mounts = mount_all(sys.mounter, root);
    report.mounted = mounts.mounted;
    report.already_mounted = mounts.already_mounted;
    report.problems.extend(mounts.errors.into_iter().map(EarlyProblem::from));

    let cmdline = root.join("proc/cmdline");
    match std::fs::read_to_string(&cmdline) {
        Ok(text) => report.cmdline = text.trim().to_string(),
        Err(error) => report.problems.push(EarlyProblem::Cmdline { path: cmdline, error }),
    }
    // Init's log lines must not be dropped by the kmsg rate limit, unless
    // the operator chose a setting on the command line.
    if !report.cmdline.split_whitespace().any(|p| p.starts_with("printk.devkmsg="))
        && let Err(e) = sysctl::set_sysctl(root, "kernel.printk_devkmsg", "on")
    {
        report.problems.push(e.into());
    }

    if let Err(e) = sys.system.set_cad_enabled(false) {
        report.problems.push(EarlyProblem::Cad(e));
    }
    if let Err(e) = sys.system.loopback_up() {
        report.problems.push(EarlyProblem::Loopback(e));
    }
    // The kernel starts init with 1024 open files (4096 at most): too few
    // for an API server's connections, services' log pipes and plugins'
    // sockets at once. PID 1 takes what the kernel allows any process
    // (`fs.nr_open`); services start again from 1024 (services::runner).
    let limit = fd_limit(root);
    match sys.system.set_fd_limit(limit, limit) {
        Ok(()) => report.fd_limit = Some(limit),
        Err(error) => report.problems.push(EarlyProblem::FdLimit { limit, error }),
    }
    report.phases.lap("mounts and settings");

    let modules = kmod::load_modules(sys.loader, root, &opts.boot_modules);
    report.modules_loaded = modules.loaded.into_iter().chain(modules.already_loaded).collect();
    report.module_timings = modules.timings;
    report.problems.extend(modules.errors.into_iter().map(EarlyProblem::from));
    report.phases.lap("modules");

    if opts.mount_state_disk {
        mount_state_disk(sys.mounter, root, opts.state_disk_wait, &mut report).await;
        // `bronzectl reset` asked for an empty state partition: wiped here,
        // before anything opens it.
        if report.state_disk.is_some() {
            match crate::statedir::wipe_if_reset(&mounts::rooted(root, Path::new(mounts::STATE_MOUNT_POINT))) {
                Ok(removed) => report.reset = removed,
                Err(e) => report.problems.push(EarlyProblem::Reset(e)),
            }
        }
        report.phases.lap("state disk");
    }
    // The disk's partitions appeared with the state disk (same driver, same
    // partition scan): no second wait.
    if opts.mount_esp
        && let Some(device) = mounts::find_partition(root, mounts::ESP_LABEL)
    {
        let done = mounts::mount_each(sys.mounter, root, &[mounts::esp_mount(&device)]);
        if done.is_ok() {
            report.esp = Some(device);
        }
        report.mounted.extend(done.mounted);
        report.already_mounted.extend(done.already_mounted);
        report.problems.extend(done.errors.into_iter().map(EarlyProblem::from));
        report.phases.lap("esp");
    }
    report
}

/// The most open files the kernel allows a process, `fs.nr_open` (its
/// default, 2^20, if unreadable or nonsense).
fn fd_limit(root: &Path) -> u64 {
    const DEFAULT_NR_OPEN: u64 = 1 << 20;
    std::fs::read_to_string(root.join("proc/sys/fs/nr_open"))
        .ok()
        .and_then(|text| text.trim().parse::<u64>().ok())
        .filter(|&n| n >= 1024)
        .unwrap_or(DEFAULT_NR_OPEN)
}

/// How often to look again for the state disk while waiting.
const STATE_DISK_POLL: Duration = Duration::from_millis(100);

async fn mount_state_disk(mounter: &dyn Mounter, root: &Path, wait: Duration, report: &mut EarlyReport) {
    let deadline = tokio::time::Instant::now() + wait;
    let device = loop {
        if let Some(dev) = find_state_disk(root) {
            break dev;
        }
        // No disk at all (a diskless VM): nothing will appear; do not
        // hold the boot up for the whole wait.
        if tokio::time::Instant::now() >= deadline || !mounts::has_block_devices(root) {
            return;
        }
        tokio::time::sleep(STATE_DISK_POLL).await;
    };
    let done = mounts::mount_each(mounter, root, &[mounts::state_mount(&device)]);
    if done.is_ok() {
        report.state_disk = Some(device);
    }
    report.mounted.extend(done.mounted);
    report.already_mounted.extend(done.already_mounted);
    report.problems.extend(done.errors.into_iter().map(EarlyProblem::from));
}

/// What [`apply_kernel_settings`] did.
#[derive(Debug, Default)]
pub struct KernelSettingsReport {
    pub modules: LoadReport,
    pub sysctls: SysctlReport,
}

/// Applies the machine config's `kernel.modules` (already loaded ones
/// count as loaded) and `sysctls`, modules first so their sysctls exist.
/// The hostname is not set here: the network layers decide it (config,
/// platform, DHCP) and call [`set_hostname`].
pub fn apply_kernel_settings(
    root: &Path,
    kernel: &bronze_config::Kernel,
    sysctls: &bronze_config::UniqueMap<bronze_config::SysctlKey, String>,
    loader: &dyn ModuleLoader,
) -> KernelSettingsReport {
    let requests: Vec<ModuleRequest> = kernel.modules.iter().map(ModuleRequest::from).collect();
    KernelSettingsReport { modules: kmod::load_modules(loader, root, &requests), sysctls: apply_sysctls(root, sysctls) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::init::fake::{Journal, MountCall, RecordingLoader, RecordingMounter, RecordingSystem};

    fn fakes(j: &Journal) -> (RecordingMounter, RecordingLoader, RecordingSystem) {
        (
            RecordingMounter::with_journal(j.clone()),
            RecordingLoader::with_journal(j.clone()),
            RecordingSystem::with_journal(j.clone()),
        )
    }

    /// A root with a cmdline, a kernel release and one module.
    fn tree() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("proc/sys/kernel")).unwrap();
        std::fs::write(root.join("proc/cmdline"), "console=ttyS0 panic=0\n").unwrap();
        std::fs::write(root.join("proc/sys/kernel/osrelease"), "6.1.0\n").unwrap();
        std::fs::write(root.join("proc/sys/kernel/printk_devkmsg"), "ratelimit\n").unwrap();
        std::fs::create_dir_all(root.join("proc/sys/fs")).unwrap();
        std::fs::write(root.join("proc/sys/fs/nr_open"), "2097152\n").unwrap();
        let m = root.join("lib/modules/6.1.0");
        std::fs::create_dir_all(&m).unwrap();
        std::fs::write(m.join("modules.dep"), "kernel/a.ko: kernel/b.ko\nkernel/b.ko:\n").unwrap();
        dir
    }

    fn state_disk(root: &Path) {
        std::fs::create_dir_all(root.join("sys/class/block/vda")).unwrap();
        let mut img = vec![0u8; 4096];
        img[1024 + 56..1024 + 58].copy_from_slice(&0xEF53u16.to_le_bytes());
        img[1024 + 120..1024 + 132].copy_from_slice(b"BRONZE_STATE");
        std::fs::create_dir_all(root.join("dev")).unwrap();
        std::fs::write(root.join("dev/vda"), img).unwrap();
    }

    #[tokio::test]
    async fn early_boot_runs_every_step_in_order() {
        let dir = tree();
        let root = dir.path();
        state_disk(root);
        let j = Journal::default();
        let (mounter, loader, system) = fakes(&j);
        let sys = EarlySystem { mounter: &mounter, loader: &loader, system: &system };
        let opts = EarlyOptions { boot_modules: vec![ModuleRequest::new("a")], ..EarlyOptions::default() };
        let report = early_boot_with(sys, root, &opts).await;
        assert!(report.is_ok(), "{:?}", report.problems);
        let r = root.display();
        assert_eq!(
            j.entries(),
            [
                format!("mount {r}/proc"),
                format!("mount {r}/sys"),
                format!("mount {r}/dev"),
                format!("mount {r}/dev/pts"),
                format!("mount {r}/dev/shm"),
                format!("mount {r}/run"),
                format!("mount {r}/tmp"),
                format!("mount {r}/sys/fs/cgroup"),
                "cad off".into(),
                "lo up".into(),
                "nofile 2097152 2097152".into(),
                "load b".into(),
                "load a".into(),
                format!("mount {r}/var/lib/bronze"),
            ]
        );
        assert_eq!(report.cmdline, "console=ttyS0 panic=0");
        assert_eq!(std::fs::read_to_string(root.join("proc/sys/kernel/printk_devkmsg")).unwrap(), "on\n");
        assert!(report.halt_on_fatal());
        assert_eq!(report.modules_loaded, ["b", "a"]);
        assert_eq!(report.fd_limit, Some(2_097_152));
        assert_eq!(report.state_disk, Some(root.join("dev/vda")));
        let Some(MountCall::Mount(state)) = mounter.calls().pop() else { panic!("no state mount") };
        assert_eq!(state.source, root.join("dev/vda").display().to_string());
        assert_eq!(state.fstype, "ext4");
        let plan = report.unmount_plan();
        assert_eq!(plan.first(), Some(&root.join("var/lib/bronze")));
        assert_eq!(plan.last(), Some(&root.join("proc")));
    }

    #[tokio::test(start_paused = true)]
    async fn every_failure_is_recorded_and_boot_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let j = Journal::default();
        let (mounter, loader, system) = fakes(&j);
        mounter.fail(&root.join("sys"), libc::ENODEV);
        system.fail("cad", libc::EPERM);
        system.fail("lo", libc::ENODEV);
        system.fail("nofile", libc::EPERM);
        let sys = EarlySystem { mounter: &mounter, loader: &loader, system: &system };
        let started = tokio::time::Instant::now();
        let report = early_boot_with(sys, root, &EarlyOptions::default()).await;
        let problems: Vec<String> = report.problems.iter().map(ToString::to_string).collect();
        let r = root.display();
        assert_eq!(
            problems,
            [
                format!("cannot mount sysfs on {r}/sys: No such device (os error 19)"),
                format!("cannot read the kernel command line {r}/proc/cmdline: No such file or directory (os error 2)"),
                format!(
                    "cannot set sysctl kernel.printk_devkmsg ({r}/proc/sys/kernel/printk_devkmsg): No such file or directory (os error 2)"
                ),
                "cannot make Ctrl-Alt-Del a signal to init: Operation not permitted (os error 1)".into(),
                "cannot bring lo up: No such device (os error 19)".into(),
                // No fs.nr_open to read: the kernel's default.
                "cannot raise the open-file limit to 1048576: Operation not permitted (os error 1)".into(),
                format!(
                    "cannot read the kernel release from {r}/proc/sys/kernel/osrelease: No such file or directory (os error 2)"
                ),
            ]
        );
        assert_eq!(report.mounted.len(), 7);
        assert_eq!(report.state_disk, None);
        assert!(!report.halt_on_fatal());
        // No block device at all: no wait for one.
        assert_eq!(started.elapsed(), Duration::ZERO);
        assert!(!j.entries().iter().any(|e| e.contains("var/lib/bronze")));
    }

    #[tokio::test(start_paused = true)]
    async fn a_disk_without_the_label_is_waited_on_then_given_up() {
        let dir = tree();
        let root = dir.path();
        std::fs::create_dir_all(root.join("sys/class/block/vda")).unwrap();
        std::fs::write(root.join("sys/class/block/vda/size"), "131072\n").unwrap();
        std::fs::create_dir_all(root.join("dev")).unwrap();
        std::fs::write(root.join("dev/vda"), vec![0u8; 4096]).unwrap();
        let j = Journal::default();
        let (mounter, loader, system) = fakes(&j);
        let sys = EarlySystem { mounter: &mounter, loader: &loader, system: &system };
        let opts = EarlyOptions { boot_modules: vec![], ..EarlyOptions::default() };
        let started = tokio::time::Instant::now();
        let report = early_boot_with(sys, root, &opts).await;
        assert_eq!(started.elapsed(), Duration::from_secs(2));
        assert_eq!(report.state_disk, None);
        assert!(report.is_ok(), "{:?}", report.problems);
    }

    #[tokio::test]
    async fn the_command_line_keeps_its_devkmsg_choice() {
        let dir = tree();
        let root = dir.path();
        std::fs::write(root.join("proc/cmdline"), "console=ttyS0 printk.devkmsg=ratelimit\n").unwrap();
        let j = Journal::default();
        let (mounter, loader, system) = fakes(&j);
        let sys = EarlySystem { mounter: &mounter, loader: &loader, system: &system };
        let opts = EarlyOptions { boot_modules: vec![], mount_state_disk: false, ..EarlyOptions::default() };
        let report = early_boot_with(sys, root, &opts).await;
        assert!(report.is_ok(), "{:?}", report.problems);
        assert_eq!(std::fs::read_to_string(root.join("proc/sys/kernel/printk_devkmsg")).unwrap(), "ratelimit\n");
        assert!(loader.loads().is_empty());
    }

    #[test]
    fn kernel_settings_load_modules_then_sysctls() {
        let dir = tree();
        let root = dir.path();
        std::fs::create_dir_all(root.join("proc/sys/net/ipv4")).unwrap();
        std::fs::write(root.join("proc/sys/net/ipv4/ip_forward"), "0").unwrap();
        let kernel = bronze_config::Kernel {
            modules: vec![bronze_config::KernelModule { name: "a".parse().unwrap(), parameters: vec!["x=1".into()] }],
        };
        let sysctls = [("net.ipv4.ip_forward".parse().unwrap(), "1".to_string())].into_iter().collect();
        let loader = RecordingLoader::default();
        let report = apply_kernel_settings(root, &kernel, &sysctls, &loader);
        assert_eq!(loader.loads(), [("b".to_string(), String::new()), ("a".to_string(), "x=1".to_string())]);
        assert!(report.modules.is_ok() && report.sysctls.is_ok());
        assert_eq!(std::fs::read_to_string(root.join("proc/sys/net/ipv4/ip_forward")).unwrap(), "1\n");
    }
}
