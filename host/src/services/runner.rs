//! One supervised service: wait for its dependencies, spawn it in its own
//! process group with its output captured, learn its exit from the reaper,
//! restart it by policy with exponential backoff, probe its health, and
//! stop it with SIGTERM, a grace period, then SIGKILL.

use super::probe;
use super::reaper::{Exit, Reaper};
use super::status::{HealthState, ServiceState, ServiceStatusSpec};
use crate::logs::LogBuffer;
use crate::state::types::TimeStatusSpec;
use crate::state::{Store, Writer, now_rfc3339};
use crate::time::controller::TIME_STATUS_ID;
use bronze_config::{RestartPolicy, Service};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use std::os::unix::process::CommandExt;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::AsyncBufReadExt;
use tokio::sync::{mpsc, oneshot, watch};

/// First restart delay; doubles per consecutive failure.
pub const BACKOFF_INITIAL: Duration = Duration::from_millis(100);
/// Longest restart delay.
pub const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// A run this long resets the backoff.
const BACKOFF_RESET: Duration = Duration::from_secs(10);
/// How often unmet dependencies are re-checked.
const DEPENDENCY_POLL: Duration = Duration::from_millis(100);
/// PATH given to services that set none.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Operator requests to a runner.
#[derive(Debug)]
pub enum Request {
    Start,
    Stop(oneshot::Sender<()>),
    Restart(oneshot::Sender<()>),
}

/// Shared context of every runner.
#[derive(Clone)]
pub struct Context {
    pub reaper: Reaper,
    pub store: Store,
    pub writer: Arc<Writer<ServiceStatusSpec>>,
    pub network_ready: watch::Receiver<bool>,
    /// As PID 1, each service's cgroup; in process mode none.
    pub cgroups: Arc<dyn crate::cgroup::ServiceCgroups>,
    /// Set for an ungraceful reboot: a stop sends SIGKILL at once, without
    /// the SIGTERM and its grace period.
    pub ungraceful: Arc<std::sync::atomic::AtomicBool>,
}

pub struct Runner {
    service: Service,
    ctx: Context,
    logs: Arc<LogBuffer>,
    status: Mutex<ServiceStatusSpec>,
}

/// What ended a running process's wait.
enum Ended {
    Exited(Exit),
    Stop(oneshot::Sender<()>),
    Restart(oneshot::Sender<()>),
}

impl Runner {
    pub fn new(service: Service, ctx: Context, logs: Arc<LogBuffer>) -> Self {
        let status = ServiceStatusSpec { name: service.name.as_str().into(), ..Default::default() };
        Self { service, ctx, logs, status: Mutex::new(status) }
    }

    fn name(&self) -> &str {
        self.service.name.as_str()
    }

    fn update(&self, f: impl FnOnce(&mut ServiceStatusSpec)) {
        let mut s = self.status.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut s);
        if let Err(e) = self.ctx.writer.put(self.name(), &s) {
            tracing::error!(error = %e, "cannot publish ServiceStatus");
        }
    }

    fn set_state(&self, state: ServiceState, message: impl Into<String>) {
        let message = message.into();
        self.update(|s| {
            if s.state != state {
                s.since = now_rfc3339();
            }
            s.state = state;
            s.message = message;
        });
    }

    /// Runs until the request channel closes (the service was removed).
    pub async fn run(self: Arc<Self>, mut requests: mpsc::Receiver<Request>) {
        let mut wanted = true;
        let mut backoff = BACKOFF_INITIAL;
        loop {
            if !wanted {
                match requests.recv().await {
                    Some(Request::Start) => wanted = true,
                    // Restarting a stopped service starts it.
                    Some(Request::Restart(done)) => {
                        wanted = true;
                        let _ = done.send(());
                    }
                    Some(Request::Stop(done)) => {
                        let _ = done.send(());
                    }
                    None => return,
                }
                continue;
            }
            // Dependencies, interruptible by requests.
            loop {
                match self.unmet_dependency() {
                    None => break,
                    Some(why) => self.set_state(ServiceState::Waiting, why),
                }
                tokio::select! {
                    _ = tokio::time::sleep(DEPENDENCY_POLL) => {}
                    req = requests.recv() => match req {
                        Some(Request::Stop(done)) => { wanted = false; let _ = done.send(()); break; }
                        Some(Request::Restart(done)) => { let _ = done.send(()); }
                        Some(Request::Start) => {}
                        None => return,
                    }
                }
            }
            if !wanted {
                self.set_state(ServiceState::Stopped, "stopped by request");
                continue;
            }
            let started = tokio::time::Instant::now();
            let (pid, mut exit_rx, output) = match self.spawn() {
                Ok(spawned) => spawned,
                Err(e) => {
                    self.logs.push(&format!("[bronzed] cannot start: {e}"));
                    self.update(|s| s.last_exit = format!("cannot start: {e}"));
                    if self.service.restart == RestartPolicy::Never {
                        self.set_state(ServiceState::Failed, format!("cannot start: {e}"));
                        wanted = false;
                        continue;
                    }
                    if !self.backoff(&mut backoff, &mut requests, &mut wanted).await {
                        return;
                    }
                    continue;
                }
            };
            self.update(|s| {
                s.pid = pid;
                s.health = if self.service.health.is_some() { HealthState::Unknown } else { HealthState::None };
                s.health_message.clear();
            });
            self.set_state(ServiceState::Running, "");
            let health = self.service.health.clone().map(|h| {
                let me = self.clone();
                let store = self.ctx.store.clone();
                tokio::spawn(async move {
                    probe::run(h, store, move |state, message| me.health_update(state, message)).await
                })
            });
            let ended = self.wait(&mut exit_rx, &mut requests).await;
            if let Some(h) = health {
                h.abort();
            }
            let (exit, reply) = match ended {
                Ended::Exited(exit) => (exit, None),
                Ended::Stop(done) => {
                    wanted = false;
                    (self.terminate(pid, &mut exit_rx).await, Some(done))
                }
                Ended::Restart(done) => (self.terminate(pid, &mut exit_rx).await, Some(done)),
            };
            // Output may still be draining: let it finish before the status says "exited".
            let _ = tokio::time::timeout(Duration::from_millis(200), output).await;
            self.record_exit(exit);
            if let Some(done) = reply {
                if wanted {
                    backoff = BACKOFF_INITIAL;
                } else {
                    self.set_state(ServiceState::Stopped, "stopped by request");
                }
                let _ = done.send(());
                continue;
            }
            if started.elapsed() >= BACKOFF_RESET {
                backoff = BACKOFF_INITIAL;
            }
            let restart = match self.service.restart {
                RestartPolicy::Always => true,
                RestartPolicy::OnFailure => !exit.success(),
                RestartPolicy::Never => false,
            };
            if !restart {
                let state = if exit.success() { ServiceState::Finished } else { ServiceState::Failed };
                self.set_state(state, exit.to_string());
                wanted = false;
                continue;
            }
            if !self.backoff(&mut backoff, &mut requests, &mut wanted).await {
                return;
            }
        }
    }

    /// Sleeps the backoff (doubling it), answering requests meanwhile.
    /// Returns false when the runner must end.
    async fn backoff(&self, backoff: &mut Duration, requests: &mut mpsc::Receiver<Request>, wanted: &mut bool) -> bool {
        self.set_state(ServiceState::Backoff, format!("restarting in {} ms", backoff.as_millis()));
        let sleep = tokio::time::sleep(*backoff);
        *backoff = (*backoff * 2).min(BACKOFF_MAX);
        tokio::select! {
            _ = sleep => true,
            req = requests.recv() => match req {
                Some(Request::Stop(done)) => {
                    *wanted = false;
                    self.set_state(ServiceState::Stopped, "stopped by request");
                    let _ = done.send(());
                    true
                }
                Some(Request::Restart(done)) => {
                    *backoff = BACKOFF_INITIAL;
                    let _ = done.send(());
                    true
                }
                Some(Request::Start) => true,
                None => false,
            }
        }
    }

    async fn wait(&self, exit_rx: &mut oneshot::Receiver<Exit>, requests: &mut mpsc::Receiver<Request>) -> Ended {
        loop {
            tokio::select! {
                exit = &mut *exit_rx => return Ended::Exited(exit.unwrap_or(Exit::Signal(0))),
                req = requests.recv() => match req {
                    Some(Request::Stop(done)) => return Ended::Stop(done),
                    // The request channel closing means the service was removed.
                    None => return Ended::Stop(oneshot::channel().0),
                    Some(Request::Restart(done)) => return Ended::Restart(done),
                    Some(Request::Start) => {}
                }
            }
        }
    }

    /// SIGTERM to the process group, grace period, then SIGKILL.
    async fn terminate(&self, pid: i32, exit_rx: &mut oneshot::Receiver<Exit>) -> Exit {
        self.set_state(ServiceState::Stopping, "");
        let group = Pid::from_raw(pid);
        if self.ctx.ungraceful.load(std::sync::atomic::Ordering::SeqCst) {
            let _ = killpg(group, Signal::SIGKILL);
            self.ctx.cgroups.kill(self.name());
            return exit_rx.await.unwrap_or(Exit::Signal(9));
        }
        let _ = killpg(group, Signal::SIGTERM);
        let grace = self.service.stop_grace_period.as_std();
        match tokio::time::timeout(grace, &mut *exit_rx).await {
            Ok(exit) => exit.unwrap_or(Exit::Signal(15)),
            Err(_) => {
                tracing::warn!(service = self.name(), grace = ?grace, "did not stop in time; killing");
                self.logs.push(&format!("[bronzed] no exit {} ms after SIGTERM: SIGKILL", grace.as_millis()));
                let _ = killpg(group, Signal::SIGKILL);
                // Also what left the process group, in the service's cgroup.
                self.ctx.cgroups.kill(self.name());
                exit_rx.await.unwrap_or(Exit::Signal(9))
            }
        }
    }

    fn record_exit(&self, exit: Exit) {
        tracing::info!(service = self.name(), %exit, "service exited");
        self.logs.push(&format!("[bronzed] {exit}"));
        self.update(|s| {
            s.pid = 0;
            s.restarts += 1;
            s.last_exit = exit.to_string();
            s.last_exit_time = now_rfc3339();
            match exit {
                Exit::Code(c) => {
                    s.last_exit_code = Some(c);
                    s.last_exit_signal = None;
                }
                Exit::Signal(sig) => {
                    s.last_exit_code = None;
                    s.last_exit_signal = Some(sig);
                }
            }
        });
    }

    fn health_update(&self, state: HealthState, message: String) {
        self.update(|s| {
            s.health = state;
            s.health_message = message;
            s.health_checked = now_rfc3339();
        });
    }

    /// The first unmet dependency, as a sentence.
    fn unmet_dependency(&self) -> Option<String> {
        for dep in &self.service.depends_on {
            match dep.as_str() {
                "time-synced" => {
                    let synced =
                        self.ctx.store.get_typed::<TimeStatusSpec>(TIME_STATUS_ID).is_some_and(|(_, t)| t.synced);
                    if !synced {
                        return Some("waiting for time-synced".into());
                    }
                }
                "network-ready" => {
                    if !*self.ctx.network_ready.borrow() {
                        return Some("waiting for network-ready".into());
                    }
                }
                other => {
                    let ready = self.ctx.store.get_typed::<ServiceStatusSpec>(other).is_some_and(|(_, s)| {
                        s.state == ServiceState::Running
                            && s.health != HealthState::Unhealthy
                            && s.health != HealthState::Unknown
                    });
                    if !ready {
                        return Some(format!("waiting for service {other}"));
                    }
                }
            }
        }
        None
    }

    /// Spawns the process and its output readers; returns its pid, its
    /// exit from the reaper, and a future that ends when output is drained.
    fn spawn(&self) -> std::io::Result<(i32, oneshot::Receiver<Exit>, tokio::task::JoinHandle<()>)> {
        let svc = &self.service;
        let program = svc.command.as_path();
        // Checked here so a missing binary is a clear error, not a failed exec.
        let meta = std::fs::metadata(program)
            .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", program.display())))?;
        if std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o111 == 0 || !meta.is_file() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::PermissionDenied,
                format!("{} is not an executable file", program.display()),
            ));
        }
        let mut cmd = std::process::Command::new(program);
        cmd.args(&svc.args)
            .env_clear()
            .env("PATH", DEFAULT_PATH)
            .envs(svc.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .current_dir(svc.working_dir.as_ref().map(|d| d.as_path()).unwrap_or(std::path::Path::new("/")))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own group, so stop signals reach everything it started.
            .process_group(0);
        if let Some(gid) = svc.group {
            cmd.gid(gid);
        }
        if let Some(uid) = svc.user {
            cmd.uid(uid);
        }
        // SAFETY: the hook runs in the forked child and makes two system
        // calls (getrlimit, setrlimit) on stack values; it allocates nothing.
        #[allow(unsafe_code)]
        unsafe {
            cmd.pre_exec(service_fd_limit)
        };
        // As PID 1 the child joins the service's cgroup before it executes,
        // so everything it starts is counted and limited there.
        let cgroup = self.ctx.cgroups.prepare(self.name(), &svc.resources)?;
        if cgroup.is_none() && svc.resources != bronze_config::Resources::default() {
            self.logs.push("[bronzed] resources are not enforced: this node runs services without cgroups");
        }
        if let Some(procs) = cgroup {
            let procs = crate::cgroup::procs_cstring(&procs)?;
            // SAFETY: the hook runs in the forked child; join_in_child makes
            // only open/write/close system calls on a path made before the
            // fork and allocates nothing.
            #[allow(unsafe_code)]
            unsafe {
                cmd.pre_exec(move || crate::cgroup::join_in_child(&procs))
            };
        }
        let mut child = cmd.spawn()?;
        let pid = child.id() as i32;
        // Registered before anything else can happen; the reaper keeps an
        // exit that races ahead of this.
        let exit_rx = self.ctx.reaper.register(pid);
        let stdout = child.stdout.take().map(std::os::fd::OwnedFd::from);
        let stderr = child.stderr.take().map(std::os::fd::OwnedFd::from);
        // Dropping a std Child neither kills nor waits: the reaper owns it.
        drop(child);
        let logs = self.logs.clone();
        let output = tokio::spawn(async move {
            let readers = [stdout, stderr].into_iter().flatten().filter_map(|fd| {
                tokio::net::unix::pipe::Receiver::from_owned_fd(fd).ok().map(|rx| {
                    let logs = logs.clone();
                    tokio::spawn(async move {
                        let mut lines = tokio::io::BufReader::new(rx).lines();
                        while let Ok(Some(line)) = lines.next_line().await {
                            logs.push(&line);
                        }
                    })
                })
            });
            for reader in readers.collect::<Vec<_>>() {
                let _ = reader.await;
            }
        });
        Ok((pid, exit_rx, output))
    }
}

/// The soft open-file limit a service starts with, as under systemd: a
/// program built on select(2) fails on descriptors above `FD_SETSIZE`
/// (1024). The hard limit stays PID 1's (`fs.nr_open`, init::early_boot),
/// so a service that needs more raises its own soft limit.
pub const SERVICE_FD_SOFT_LIMIT: u64 = 1024;

/// Sets the soft `RLIMIT_NOFILE` of a forked service to
/// [`SERVICE_FD_SOFT_LIMIT`] (or the hard limit, if lower). Runs between
/// fork and exec: system calls only.
fn service_fd_limit() -> std::io::Result<()> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    setrlimit(Resource::RLIMIT_NOFILE, SERVICE_FD_SOFT_LIMIT.min(hard), hard)?;
    Ok(())
}
