//! How bronzed runs and the power actions it can take: shared by the node's
//! wiring and the API, so neither imports the other.

/// How bronzed runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The node's init: owns the machine.
    Pid1,
    /// An unprivileged process: no mounts, no clock changes, no reboot(2).
    Process,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Pid1 => "pid1",
            Mode::Process => "process",
        }
    }
}

/// A request to change the machine's power state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PowerAction {
    Reboot,
    /// A reboot that does not wait for anyone: every service is killed at
    /// once (no SIGTERM grace period) and DHCP leases are not released
    /// (`reset --graceful=false`).
    RebootNow,
    Shutdown,
}

impl PowerAction {
    /// Whether the machine comes back (a reboot of either kind).
    pub fn reboots(self) -> bool {
        matches!(self, PowerAction::Reboot | PowerAction::RebootNow)
    }
}
