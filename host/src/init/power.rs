//! Power control: `reboot(2)` behind the [`Power`] trait, and the policy
//! for an unrecoverable error in PID 1 (reboot after 10 s, or halt when the
//! kernel command line says `panic=0`, the operator's "stay up so I can
//! read the console").
//!
//! PID 1 must never exit (the kernel panics when it does), so every
//! function here returns the error when `reboot(2)` fails and leaves the
//! caller alive to report it. With the real [`KernelPower`] a successful
//! call does not return.

use std::io;
use std::time::Duration;

/// How long PID 1 waits before rebooting on an unrecoverable error: long
/// enough to read the console, short enough to recover on its own.
pub const FATAL_REBOOT_DELAY: Duration = Duration::from_secs(10);

/// What the machine does at the end of a shutdown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PowerTarget {
    Reboot,
    PowerOff,
    /// Stop the CPUs and stay: nothing more runs, the console stays.
    Halt,
}

impl PowerTarget {
    pub fn as_str(self) -> &'static str {
        match self {
            PowerTarget::Reboot => "reboot",
            PowerTarget::PowerOff => "power off",
            PowerTarget::Halt => "halt",
        }
    }
}

/// `sync(2)` and `reboot(2)`.
pub trait Power: Send + Sync {
    /// Flushes every filesystem; `reboot(2)` does not.
    fn sync(&self);
    /// `RB_AUTOBOOT`.
    fn reboot(&self) -> io::Result<()>;
    /// `RB_POWER_OFF`.
    fn power_off(&self) -> io::Result<()>;
    /// `RB_HALT_SYSTEM`.
    fn halt(&self) -> io::Result<()>;

    fn enter(&self, target: PowerTarget) -> io::Result<()> {
        match target {
            PowerTarget::Reboot => self.reboot(),
            PowerTarget::PowerOff => self.power_off(),
            PowerTarget::Halt => self.halt(),
        }
    }
}

/// The kernel's `reboot(2)`. Only PID 1 (or CAP_SYS_BOOT) may call it;
/// process mode never builds one.
#[derive(Debug, Default, Clone, Copy)]
pub struct KernelPower;

impl KernelPower {
    fn reboot_with(how: nix::sys::reboot::RebootMode) -> io::Result<()> {
        match nix::sys::reboot::reboot(how) {
            Ok(never) => match never {},
            Err(e) => Err(io::Error::from(e)),
        }
    }
}

impl Power for KernelPower {
    fn sync(&self) {
        nix::unistd::sync();
    }

    fn reboot(&self) -> io::Result<()> {
        Self::reboot_with(nix::sys::reboot::RebootMode::RB_AUTOBOOT)
    }

    fn power_off(&self) -> io::Result<()> {
        Self::reboot_with(nix::sys::reboot::RebootMode::RB_POWER_OFF)
    }

    fn halt(&self) -> io::Result<()> {
        Self::reboot_with(nix::sys::reboot::RebootMode::RB_HALT_SYSTEM)
    }
}

/// Whether the kernel command line asks to stay halted on a fatal error:
/// `panic=0`, the kernel's own "wait forever" (the last `panic=` wins, as
/// in the kernel; other values, like `panic=-1`, mean reboot).
pub fn halt_on_fatal(cmdline: &str) -> bool {
    cmdline
        .split_whitespace()
        .filter_map(|p| p.trim_matches('"').strip_prefix("panic="))
        .next_back()
        .and_then(|v| v.trim_matches('"').parse::<i64>().ok())
        == Some(0)
}

/// What to do on an unrecoverable error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FatalAction {
    Halt,
    RebootAfter(Duration),
}

pub fn fatal_action(cmdline: &str, delay: Duration) -> FatalAction {
    if halt_on_fatal(cmdline) { FatalAction::Halt } else { FatalAction::RebootAfter(delay) }
}

/// PID 1's answer to an unrecoverable error: sync, wait `delay` (blocking
/// the calling thread, so it works outside the async runtime and from a
/// panic handler), then reboot; or halt at once when `cmdline` has
/// `panic=0`. Returns only if `reboot(2)` failed (or with a fake).
pub fn fatal_reboot(power: &dyn Power, cmdline: &str, delay: Duration) -> io::Result<()> {
    fatal_reboot_with(power, cmdline, delay, &mut std::thread::sleep)
}

fn fatal_reboot_with(
    power: &dyn Power,
    cmdline: &str,
    delay: Duration,
    sleep: &mut dyn FnMut(Duration),
) -> io::Result<()> {
    power.sync();
    match fatal_action(cmdline, delay) {
        FatalAction::Halt => {
            tracing::error!("unrecoverable error; halting (panic=0 on the kernel command line)");
            power.halt()
        }
        FatalAction::RebootAfter(delay) => {
            tracing::error!("unrecoverable error; rebooting in {} s", delay.as_secs());
            sleep(delay);
            power.sync();
            power.reboot()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::init::fake::RecordingPower;

    #[test]
    fn panic_zero_means_halt() {
        assert!(halt_on_fatal("console=ttyS0 panic=0"));
        assert!(halt_on_fatal("panic=5 quiet panic=0"));
        assert!(!halt_on_fatal("panic=0 panic=-1"));
        assert!(!halt_on_fatal("console=ttyS0 panic=-1"));
        assert!(!halt_on_fatal("console=ttyS0"));
        assert!(!halt_on_fatal("oops=panic panic_on_warn=0 foo.panic=0"));
        assert!(!halt_on_fatal("panic=x"));
        assert!(halt_on_fatal("\"panic=0\"\n"));
    }

    #[test]
    fn fatal_reboots_after_the_delay() {
        let power = RecordingPower::default();
        let mut slept = Vec::new();
        fatal_reboot_with(&power, "console=ttyS0 panic=-1", FATAL_REBOOT_DELAY, &mut |d| slept.push(d)).unwrap();
        assert_eq!(slept, [Duration::from_secs(10)]);
        assert_eq!(power.calls(), ["sync", "sync", "reboot"]);
    }

    #[test]
    fn fatal_halts_at_once_with_panic_zero() {
        let power = RecordingPower::default();
        let mut slept = Vec::new();
        fatal_reboot_with(&power, "panic=0", FATAL_REBOOT_DELAY, &mut |d| slept.push(d)).unwrap();
        assert!(slept.is_empty());
        assert_eq!(power.calls(), ["sync", "halt"]);
    }

    #[test]
    fn a_failing_reboot_is_returned() {
        let power = RecordingPower::default();
        power.fail(libc::EPERM);
        let err = fatal_reboot_with(&power, "", Duration::ZERO, &mut |_| {}).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EPERM));
    }

    #[test]
    fn enter_picks_the_call() {
        let power = RecordingPower::default();
        for t in [PowerTarget::PowerOff, PowerTarget::Reboot, PowerTarget::Halt] {
            power.enter(t).unwrap();
        }
        assert_eq!(power.calls(), ["power-off", "reboot", "halt"]);
    }
}
