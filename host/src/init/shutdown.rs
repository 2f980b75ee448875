//! The shutdown and reboot sequence of PID 1, as a plan of steps run
//! against traits and callbacks:
//!
//! 1. stop services (the supervisor's TERM, grace, KILL),
//! 2. stop plugins,
//! 3. persist what must survive,
//! 4. `sync()`,
//! 5. unmount, children before parents (a busy filesystem is remounted
//!    read-only instead, so it is clean),
//! 6. bring every network link down (a virtio-net link left up makes
//!    poweroff hang now and then),
//! 7. `reboot(2)`: restart, power off or halt.
//!
//! Every step before the last logs its failure and the sequence goes on: a
//! half-done shutdown that still reboots beats a node stuck on a hung
//! service. Each callback has a deadline for the same reason. Only the final
//! `reboot(2)` failing is returned, so the caller (which must not exit: it
//! is PID 1) can report it.

use super::mounts::Mounter;
use super::power::{Power, PowerTarget};
use futures::future::BoxFuture;
use std::fmt;
use std::future::Future;
use std::io;
use std::path::PathBuf;
use std::time::Duration;

/// One step of a shutdown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    StopServices,
    StopPlugins,
    Persist,
    Sync,
    Unmount(PathBuf),
    LinksDown,
    Enter(PowerTarget),
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::StopServices => f.write_str("stop services"),
            Step::StopPlugins => f.write_str("stop plugins"),
            Step::Persist => f.write_str("persist state"),
            Step::Sync => f.write_str("sync"),
            Step::Unmount(p) => write!(f, "unmount {}", p.display()),
            Step::LinksDown => f.write_str("links down"),
            Step::Enter(t) => f.write_str(t.as_str()),
        }
    }
}

/// The steps for `target`, given the unmount order (see
/// [`super::mounts::unmount_plan`]).
pub fn shutdown_plan(target: PowerTarget, unmounts: &[PathBuf]) -> Vec<Step> {
    let mut steps = vec![Step::StopServices, Step::StopPlugins, Step::Persist, Step::Sync];
    steps.extend(unmounts.iter().cloned().map(Step::Unmount));
    steps.push(Step::LinksDown);
    steps.push(Step::Enter(target));
    steps
}

type Hook = Box<dyn FnOnce() -> BoxFuture<'static, anyhow::Result<()>> + Send>;

/// The callbacks other subsystems provide. A hook not set is a step that
/// succeeds at once.
#[derive(Default)]
pub struct ShutdownHooks {
    stop_services: Option<Hook>,
    stop_plugins: Option<Hook>,
    persist: Option<Hook>,
    links_down: Option<Hook>,
}

impl fmt::Debug for ShutdownHooks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShutdownHooks")
            .field("stop_services", &self.stop_services.is_some())
            .field("stop_plugins", &self.stop_plugins.is_some())
            .field("persist", &self.persist.is_some())
            .field("links_down", &self.links_down.is_some())
            .finish()
    }
}

fn hook<F, Fut>(f: F) -> Option<Hook>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
{
    Some(Box::new(move || Box::pin(f())))
}

impl ShutdownHooks {
    pub fn new() -> Self {
        Self::default()
    }

    /// Stops every service: TERM, its grace period, KILL. Should finish
    /// within [`Deadlines::services`].
    pub fn stop_services<F, Fut>(mut self, f: F) -> Self
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        self.stop_services = hook(f);
        self
    }

    pub fn stop_plugins<F, Fut>(mut self, f: F) -> Self
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        self.stop_plugins = hook(f);
        self
    }

    pub fn persist<F, Fut>(mut self, f: F) -> Self
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        self.persist = hook(f);
        self
    }

    /// Brings every link down (the network subsystem's; fall back on
    /// [`super::setup::all_links_down`]).
    pub fn links_down<F, Fut>(mut self, f: F) -> Self
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        self.links_down = hook(f);
        self
    }
}

/// How long each callback may take before the sequence moves on without it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadlines {
    pub services: Duration,
    pub plugins: Duration,
    pub persist: Duration,
    pub links_down: Duration,
}

impl Default for Deadlines {
    fn default() -> Self {
        Self {
            // Above a service's usual TERM grace (10-30 s) plus the KILL.
            services: Duration::from_secs(45),
            plugins: Duration::from_secs(10),
            persist: Duration::from_secs(10),
            links_down: Duration::from_secs(5),
        }
    }
}

/// How one step ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Done,
    /// Unmount failed but the read-only remount worked.
    RemountedReadOnly(String),
    Failed(String),
    TimedOut(Duration),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepOutcome {
    pub step: Step,
    pub outcome: Outcome,
}

/// `reboot(2)` failed at the end of a shutdown; every earlier step ran.
#[derive(Debug, thiserror::Error)]
#[error("{} failed after shutdown: {error}", .target.as_str())]
pub struct ShutdownError {
    pub target: PowerTarget,
    pub error: io::Error,
    pub steps: Vec<StepOutcome>,
}

/// Runs the shutdown sequence and enters `target`. With the real
/// [`super::power::KernelPower`] it returns only on failure; with a fake,
/// `Ok` carries what each step did.
pub async fn shutdown(
    target: PowerTarget,
    mut hooks: ShutdownHooks,
    mounter: &dyn Mounter,
    power: &dyn Power,
    unmounts: &[PathBuf],
    deadlines: Deadlines,
) -> Result<Vec<StepOutcome>, ShutdownError> {
    tracing::info!(target = target.as_str(), "shutdown sequence starting");
    let mut outcomes = Vec::new();
    for step in shutdown_plan(target, unmounts) {
        let outcome = match &step {
            Step::StopServices => run_hook(hooks.stop_services.take(), deadlines.services).await,
            Step::StopPlugins => run_hook(hooks.stop_plugins.take(), deadlines.plugins).await,
            Step::Persist => run_hook(hooks.persist.take(), deadlines.persist).await,
            Step::LinksDown => run_hook(hooks.links_down.take(), deadlines.links_down).await,
            Step::Sync => {
                power.sync();
                Outcome::Done
            }
            Step::Unmount(target) => match mounter.unmount(target) {
                Ok(()) => Outcome::Done,
                Err(e) => match mounter.remount_read_only(target) {
                    Ok(()) => Outcome::RemountedReadOnly(e.to_string()),
                    Err(ro) => Outcome::Failed(format!("{e}; read-only remount: {ro}")),
                },
            },
            Step::Enter(t) => {
                tracing::info!("{}", t.as_str());
                if let Err(error) = power.enter(*t) {
                    tracing::error!(error = %error, "{} failed", t.as_str());
                    return Err(ShutdownError { target: *t, error, steps: outcomes });
                }
                Outcome::Done
            }
        };
        match &outcome {
            Outcome::Done => tracing::debug!(step = %step, "shutdown step done"),
            Outcome::RemountedReadOnly(e) => {
                tracing::warn!(step = %step, error = %e, "cannot unmount; remounted read-only")
            }
            Outcome::Failed(e) => tracing::warn!(step = %step, error = %e, "shutdown step failed; going on"),
            Outcome::TimedOut(d) => {
                tracing::warn!(step = %step, "shutdown step took longer than {} s; going on", d.as_secs())
            }
        }
        outcomes.push(StepOutcome { step, outcome });
    }
    Ok(outcomes)
}

async fn run_hook(hook: Option<Hook>, deadline: Duration) -> Outcome {
    let Some(hook) = hook else { return Outcome::Done };
    // A panicking hook must not take the shutdown down with it: run it as
    // its own task so a panic is an error, and abandon it at the deadline.
    let task = tokio::spawn(hook());
    let abort = task.abort_handle();
    match tokio::time::timeout(deadline, task).await {
        Ok(Ok(Ok(()))) => Outcome::Done,
        Ok(Ok(Err(e))) => Outcome::Failed(format!("{e:#}")),
        Ok(Err(join)) => Outcome::Failed(format!("panicked: {join}")),
        Err(_) => {
            abort.abort();
            Outcome::TimedOut(deadline)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::init::fake::{Journal, RecordingMounter, RecordingPower};
    use std::path::Path;

    fn hooks(j: &Journal) -> ShutdownHooks {
        let (a, b, c, d) = (j.clone(), j.clone(), j.clone(), j.clone());
        ShutdownHooks::new()
            .stop_services(move || async move {
                a.push("stop services");
                Ok(())
            })
            .stop_plugins(move || async move {
                b.push("stop plugins");
                Ok(())
            })
            .persist(move || async move {
                c.push("persist");
                Ok(())
            })
            .links_down(move || async move {
                d.push("links down");
                Ok(())
            })
    }

    fn unmounts() -> Vec<PathBuf> {
        vec!["/var/lib/bronze".into(), "/dev/pts".into(), "/dev".into()]
    }

    #[test]
    fn plan_order() {
        let plan: Vec<String> =
            shutdown_plan(PowerTarget::PowerOff, &unmounts()).iter().map(|s| s.to_string()).collect();
        assert_eq!(
            plan,
            [
                "stop services",
                "stop plugins",
                "persist state",
                "sync",
                "unmount /var/lib/bronze",
                "unmount /dev/pts",
                "unmount /dev",
                "links down",
                "power off"
            ]
        );
    }

    #[tokio::test]
    async fn runs_every_step_in_order_and_reboots() {
        let j = Journal::default();
        let mounter = RecordingMounter::with_journal(j.clone());
        let power = RecordingPower::with_journal(j.clone());
        let steps = shutdown(PowerTarget::Reboot, hooks(&j), &mounter, &power, &unmounts(), Deadlines::default())
            .await
            .unwrap();
        assert_eq!(
            j.entries(),
            [
                "stop services",
                "stop plugins",
                "persist",
                "sync",
                "unmount /var/lib/bronze",
                "unmount /dev/pts",
                "unmount /dev",
                "links down",
                "reboot"
            ]
        );
        assert!(steps.iter().all(|s| s.outcome == Outcome::Done), "{steps:?}");
    }

    #[tokio::test]
    async fn failures_are_logged_and_the_sequence_goes_on() {
        let j = Journal::default();
        let mounter = RecordingMounter::with_journal(j.clone());
        mounter.fail(Path::new("/dev"), libc::EBUSY);
        let power = RecordingPower::with_journal(j.clone());
        let hooks = hooks(&j).stop_plugins(|| async { Err(anyhow::anyhow!("plugin engine gone")) }).persist(|| async {
            if true {
                panic!("persist exploded");
            }
            Ok(())
        });
        let steps =
            shutdown(PowerTarget::PowerOff, hooks, &mounter, &power, &unmounts(), Deadlines::default()).await.unwrap();
        let outcome = |s: &str| steps.iter().find(|o| o.step.to_string() == s).unwrap().outcome.clone();
        assert_eq!(outcome("stop plugins"), Outcome::Failed("plugin engine gone".into()));
        assert!(matches!(outcome("persist state"), Outcome::Failed(m) if m.starts_with("panicked")));
        assert_eq!(outcome("unmount /dev"), Outcome::RemountedReadOnly("Device or resource busy (os error 16)".into()));
        assert_eq!(j.entries().last().map(String::as_str), Some("power-off"));
        assert!(j.entries().contains(&"remount-ro /dev".to_string()));
    }

    #[tokio::test(start_paused = true)]
    async fn a_hung_hook_is_abandoned_at_its_deadline() {
        let j = Journal::default();
        let mounter = RecordingMounter::with_journal(j.clone());
        let power = RecordingPower::with_journal(j.clone());
        let hooks = hooks(&j).stop_services(std::future::pending);
        let started = tokio::time::Instant::now();
        let deadlines = Deadlines { services: Duration::from_secs(30), ..Deadlines::default() };
        let steps = shutdown(PowerTarget::Reboot, hooks, &mounter, &power, &[], deadlines).await.unwrap();
        assert_eq!(steps[0].outcome, Outcome::TimedOut(Duration::from_secs(30)));
        assert_eq!(started.elapsed(), Duration::from_secs(30));
        assert_eq!(j.entries(), ["stop plugins", "persist", "sync", "links down", "reboot"]);
    }

    #[tokio::test]
    async fn a_failing_reboot_is_returned_with_the_steps() {
        let mounter = RecordingMounter::default();
        let power = RecordingPower::default();
        power.fail(libc::EPERM);
        let err =
            shutdown(PowerTarget::PowerOff, ShutdownHooks::new(), &mounter, &power, &unmounts(), Deadlines::default())
                .await
                .unwrap_err();
        assert_eq!(err.to_string(), "power off failed after shutdown: Operation not permitted (os error 1)");
        assert_eq!(err.steps.len(), 8);
        assert_eq!(power.calls(), ["sync", "power-off"]);
    }
}
