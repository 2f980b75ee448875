//! The service supervisor: the services declared in the machine config,
//! each run by its own [`runner`] task, with exits delivered by the one
//! [`reaper`]. The supervisor owns `ServiceStatus` and every service's log
//! buffer; the API starts, stops and restarts through it. It works the same
//! in process mode (bronzed is the parent and subreaper of its services)
//! and as PID 1.

pub mod probe;
pub mod reaper;
pub mod runner;
pub mod status;

use crate::config::LiveConfig;
use crate::controllers::{Controller, ControllerError};
use crate::logs::LogBuffer;
use crate::state::{Store, Writer};
use bronze_config::Service;
use futures::future::BoxFuture;
use reaper::Reaper;
use runner::{Context, Request, Runner};
use status::ServiceStatusSpec;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ServiceError {
    #[error("unknown service {0:?}")]
    Unknown(String),
    #[error("service {0:?} is being replaced; try again")]
    Gone(String),
}

struct Managed {
    service: Service,
    requests: mpsc::Sender<Request>,
    logs: Arc<LogBuffer>,
    task: JoinHandle<()>,
}

pub struct Supervisor {
    ctx: Context,
    services: Mutex<BTreeMap<String, Managed>>,
}

impl std::fmt::Debug for Supervisor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Supervisor").finish_non_exhaustive()
    }
}

impl Supervisor {
    pub fn new(
        reaper: Reaper,
        store: Store,
        writer: Writer<ServiceStatusSpec>,
        network_ready: watch::Receiver<bool>,
        cgroups: Arc<dyn crate::cgroup::ServiceCgroups>,
    ) -> Self {
        let ctx =
            Context { reaper, store, writer: Arc::new(writer), network_ready, cgroups, ungraceful: Default::default() };
        Self { ctx, services: Mutex::new(BTreeMap::new()) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Managed>> {
        self.services.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes the running set match `wanted`: new services start, removed
    /// ones stop, changed ones are replaced.
    pub async fn reconcile(&self, wanted: &[Service]) {
        let mut retired = Vec::new();
        {
            let mut services = self.lock();
            let names: Vec<String> = services.keys().cloned().collect();
            for name in names {
                let keep = wanted.iter().any(|w| w.name.as_str() == name && services[&name].service == *w);
                if !keep && let Some(old) = services.remove(&name) {
                    retired.push(old);
                }
            }
        }
        for old in retired {
            self.retire(old).await;
        }
        let mut services = self.lock();
        for service in wanted {
            let name = service.name.as_str().to_string();
            if services.contains_key(&name) {
                continue;
            }
            let logs = Arc::new(LogBuffer::new(service.log_buffer_size.as_u64() as usize));
            let (tx, rx) = mpsc::channel(16);
            let runner = Arc::new(Runner::new(service.clone(), self.ctx.clone(), logs.clone()));
            let task = tokio::spawn(runner.run(rx));
            services.insert(name, Managed { service: service.clone(), requests: tx, logs, task });
        }
    }

    /// Stops a removed or replaced service and drops its status.
    async fn retire(&self, old: Managed) {
        let (done, wait) = oneshot::channel();
        if old.requests.send(Request::Stop(done)).await.is_ok() {
            let _ = wait.await;
        }
        drop(old.requests);
        let _ = old.task.await;
        self.ctx.writer.remove(old.service.name.as_str());
        // Kills what outlived the service in its cgroup and removes the
        // group (waiting up to a second for the kernel to let it go).
        let cgroups = self.ctx.cgroups.clone();
        let name = old.service.name.as_str().to_string();
        let _ = tokio::task::spawn_blocking(move || cgroups.remove(&name)).await;
    }

    async fn request(&self, name: &str, make: impl FnOnce(oneshot::Sender<()>) -> Request) -> Result<(), ServiceError> {
        let requests =
            self.lock().get(name).map(|m| m.requests.clone()).ok_or_else(|| ServiceError::Unknown(name.into()))?;
        let (done, wait) = oneshot::channel();
        requests.send(make(done)).await.map_err(|_| ServiceError::Gone(name.into()))?;
        wait.await.map_err(|_| ServiceError::Gone(name.into()))
    }

    pub async fn start(&self, name: &str) -> Result<(), ServiceError> {
        let requests =
            self.lock().get(name).map(|m| m.requests.clone()).ok_or_else(|| ServiceError::Unknown(name.into()))?;
        requests.send(Request::Start).await.map_err(|_| ServiceError::Gone(name.into()))
    }

    /// Stops a service (SIGTERM, grace, SIGKILL); it stays stopped until started.
    pub async fn stop(&self, name: &str) -> Result<(), ServiceError> {
        self.request(name, Request::Stop).await
    }

    pub async fn restart(&self, name: &str) -> Result<(), ServiceError> {
        self.request(name, Request::Restart).await
    }

    /// The services' cgroups, for `stats`.
    pub fn cgroups(&self) -> Arc<dyn crate::cgroup::ServiceCgroups> {
        self.ctx.cgroups.clone()
    }

    pub fn logs(&self, name: &str) -> Result<Arc<LogBuffer>, ServiceError> {
        self.lock().get(name).map(|m| m.logs.clone()).ok_or_else(|| ServiceError::Unknown(name.into()))
    }

    /// Kills every service at once: SIGKILL to its process group and to
    /// what is in its cgroup, no grace period (an ungraceful reset). From
    /// now on a stop kills at once too, so a service its policy restarted
    /// meanwhile does not get a grace period from [`Supervisor::stop_all`].
    pub fn kill_all(&self) {
        self.ctx.ungraceful.store(true, std::sync::atomic::Ordering::SeqCst);
        let names: Vec<String> = self.lock().keys().cloned().collect();
        let store = self.ctx.writer.store().clone();
        for name in names {
            if let Some((_, status)) = store.get_typed::<ServiceStatusSpec>(&name)
                && status.pid > 0
            {
                let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(status.pid), nix::sys::signal::SIGKILL);
            }
            self.ctx.cgroups.kill(&name);
            tracing::info!(service = name, "killed (ungraceful reboot)");
        }
    }

    /// Stops every service (shutdown and reboot), in parallel.
    pub async fn stop_all(&self) {
        let all: Vec<Managed> = std::mem::take(&mut *self.lock()).into_values().collect();
        futures::future::join_all(all.into_iter().map(|m| self.retire(m))).await;
    }
}

/// Keeps the supervisor in step with the live config.
pub struct ServicesController {
    pub supervisor: Arc<Supervisor>,
    pub config: watch::Receiver<Option<LiveConfig>>,
}

impl Controller for ServicesController {
    fn name(&self) -> &'static str {
        "services"
    }

    fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) -> BoxFuture<'static, Result<(), ControllerError>> {
        Box::pin(async move {
            let mut config = self.config.clone();
            loop {
                let wanted =
                    config.borrow_and_update().as_ref().map(|c| c.config.machine.services.clone()).unwrap_or_default();
                self.supervisor.reconcile(&wanted).await;
                tokio::select! {
                    changed = config.changed() => if changed.is_err() { return Ok(()) },
                    _ = stop.wait_for(|s| *s) => return Ok(()),
                }
            }
        })
    }
}
