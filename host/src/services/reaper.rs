//! The one reaper: `waitpid(-1, WNOHANG)` in a loop on every SIGCHLD (and
//! once at start). It owns every exit status of every child — supervised
//! services and orphans re-parented to us alike — and hands those of
//! registered processes to whoever registered them. Nothing else may wait
//! for children (no `Child::wait`, no tokio::process): the reaper would
//! steal their status, or they would steal the reaper's.
//!
//! In process mode bronzed makes itself a child subreaper, so orphaned
//! grandchildren of its services are re-parented to it and reaped here
//! exactly as PID 1 would.

use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::oneshot;

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Code(i32),
    Signal(i32),
}

impl Exit {
    pub fn success(self) -> bool {
        self == Exit::Code(0)
    }
}

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Exit::Code(c) => write!(f, "exit code {c}"),
            Exit::Signal(s) => {
                let name = nix::sys::signal::Signal::try_from(*s).map(|s| s.as_str()).unwrap_or("unknown");
                write!(f, "killed by signal {s} ({name})")
            }
        }
    }
}

/// Statuses that arrived before anyone registered for them, bounded so
/// a flood of orphans cannot grow it.
const UNCLAIMED_LIMIT: usize = 4096;

#[derive(Default)]
struct Table {
    waiting: HashMap<i32, oneshot::Sender<Exit>>,
    /// Exits of pids nobody has registered (yet): a service that exits
    /// before its supervisor registers it must not lose its status.
    unclaimed: HashMap<i32, Exit>,
    /// Orphans reaped, for observability and tests.
    orphans: u64,
}

/// Hands out exit statuses. Cheap to clone.
#[derive(Clone, Default)]
pub struct Reaper {
    table: Arc<Mutex<Table>>,
}

impl std::fmt::Debug for Reaper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reaper").finish_non_exhaustive()
    }
}

impl Reaper {
    /// Starts the reaper task. In process mode `subreaper` makes bronzed
    /// the reaper of its services' orphans.
    pub fn start(subreaper: bool) -> std::io::Result<Reaper> {
        if subreaper {
            nix::sys::prctl::set_child_subreaper(true)?;
        }
        let reaper = Reaper::default();
        let mut sigchld = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::child())?;
        let task = reaper.clone();
        tokio::spawn(async move {
            loop {
                task.reap_all();
                if sigchld.recv().await.is_none() {
                    return;
                }
            }
        });
        Ok(reaper)
    }

    /// Collects every exited child.
    pub fn reap_all(&self) {
        loop {
            let (pid, exit) = match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) => (pid, Exit::Code(code)),
                Ok(WaitStatus::Signaled(pid, signal, _)) => (pid, Exit::Signal(signal as i32)),
                Ok(WaitStatus::StillAlive) | Err(nix::errno::Errno::ECHILD) => return,
                Ok(_) => continue,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => {
                    tracing::warn!(error = %e, "waitpid failed");
                    return;
                }
            };
            self.deliver(pid.as_raw(), exit);
        }
    }

    fn deliver(&self, pid: i32, exit: Exit) {
        let mut table = self.table.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(tx) = table.waiting.remove(&pid) {
            let _ = tx.send(exit);
        } else {
            table.orphans += 1;
            if table.unclaimed.len() >= UNCLAIMED_LIMIT {
                table.unclaimed.clear();
            }
            table.unclaimed.insert(pid, exit);
        }
    }

    /// Registers interest in `pid`'s exit. Call right after spawning; a
    /// status that already arrived is handed over at once.
    pub fn register(&self, pid: i32) -> oneshot::Receiver<Exit> {
        let (tx, rx) = oneshot::channel();
        let mut table = self.table.lock().unwrap_or_else(|p| p.into_inner());
        match table.unclaimed.remove(&pid) {
            Some(exit) => {
                table.orphans = table.orphans.saturating_sub(1);
                let _ = tx.send(exit);
            }
            None => {
                table.waiting.insert(pid, tx);
            }
        }
        rx
    }

    /// Children reaped that nobody registered (re-parented orphans).
    pub fn orphans_reaped(&self) -> u64 {
        self.table.lock().unwrap_or_else(|p| p.into_inner()).orphans
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exits_read_as_sentences() {
        assert_eq!(Exit::Code(3).to_string(), "exit code 3");
        assert_eq!(Exit::Signal(9).to_string(), "killed by signal 9 (SIGKILL)");
        assert!(Exit::Code(0).success() && !Exit::Signal(15).success());
    }

    #[test]
    fn early_exits_are_kept_for_late_registration() {
        let reaper = Reaper::default();
        reaper.deliver(4242, Exit::Code(7));
        let mut rx = reaper.register(4242);
        assert_eq!(rx.try_recv().unwrap(), Exit::Code(7));
        assert_eq!(reaper.orphans_reaped(), 0);
        let mut rx = reaper.register(4343);
        reaper.deliver(4343, Exit::Signal(15));
        assert_eq!(rx.try_recv().unwrap(), Exit::Signal(15));
    }
}
