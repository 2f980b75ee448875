//! The controller runtime: each controller is an async loop that reads its
//! inputs and writes its outputs; when it fails or panics it is restarted
//! with exponential backoff. A controller never takes the node down.

pub mod machine_settings;
pub mod machine_status;

use futures::future::BoxFuture;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Why a controller's loop ended early.
pub type ControllerError = anyhow::Error;

/// A reconcile loop. `run` returns when `stop` turns true (Ok) or when it
/// hits an error it cannot handle itself (Err, then it is restarted).
pub trait Controller: Send + Sync + 'static {
    fn name(&self) -> &'static str;
    fn run(self: Arc<Self>, stop: watch::Receiver<bool>) -> BoxFuture<'static, Result<(), ControllerError>>;
}

/// Restart delays: first, cap, and how long a run must last to reset them.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
    pub reset_after: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self { initial: Duration::from_millis(100), max: Duration::from_secs(30), reset_after: Duration::from_secs(60) }
    }
}

/// Runs a set of controllers until `stop`.
pub struct Runtime {
    stop_tx: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    backoff: Backoff,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime").field("controllers", &self.tasks.len()).finish()
    }
}

impl Default for Runtime {
    fn default() -> Self {
        Self::new(Backoff::default())
    }
}

impl Runtime {
    pub fn new(backoff: Backoff) -> Self {
        let (stop_tx, _) = watch::channel(false);
        Self { stop_tx, tasks: Vec::new(), backoff }
    }

    /// Starts `controller` under supervision.
    pub fn spawn(&mut self, controller: Arc<dyn Controller>) {
        let stop = self.stop_tx.subscribe();
        let backoff = self.backoff;
        self.tasks.push(tokio::spawn(supervise(controller, stop, backoff)));
    }

    /// Signals every controller to stop and waits for them.
    pub async fn stop(self) {
        let _ = self.stop_tx.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

async fn supervise(controller: Arc<dyn Controller>, mut stop: watch::Receiver<bool>, backoff: Backoff) {
    let name = controller.name();
    let mut delay = backoff.initial;
    loop {
        let started = tokio::time::Instant::now();
        // Its own task, so a panic is caught by the JoinHandle instead of
        // unwinding through the supervisor.
        let outcome = tokio::spawn(controller.clone().run(stop.clone())).await;
        if *stop.borrow() {
            return;
        }
        match outcome {
            Ok(Ok(())) => tracing::warn!(controller = name, "controller returned without being stopped; restarting"),
            Ok(Err(e)) => tracing::error!(controller = name, error = %format!("{e:#}"), "controller failed"),
            Err(join) => tracing::error!(controller = name, panic = %panic_message(join), "controller panicked"),
        }
        if started.elapsed() >= backoff.reset_after {
            delay = backoff.initial;
        }
        tracing::info!(controller = name, delay_ms = delay.as_millis() as u64, "restarting controller");
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        delay = (delay * 2).min(backoff.max);
    }
}

fn panic_message(join: tokio::task::JoinError) -> String {
    if !join.is_panic() {
        return join.to_string();
    }
    payload_message(join.into_panic().as_ref())
}

/// The message a panic carried (`panic!` with a literal or a format).
pub(crate) fn payload_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic payload".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicU32, Ordering};

    /// Fails (or panics) a number of times, recording when each run starts.
    struct Flaky {
        runs: AtomicU32,
        fail_times: u32,
        panic: bool,
        starts: Mutex<Vec<tokio::time::Instant>>,
    }

    impl Controller for Flaky {
        fn name(&self) -> &'static str {
            "flaky"
        }
        fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) -> BoxFuture<'static, Result<(), ControllerError>> {
            Box::pin(async move {
                self.starts.lock().unwrap().push(tokio::time::Instant::now());
                let n = self.runs.fetch_add(1, Ordering::SeqCst);
                if n < self.fail_times {
                    if self.panic {
                        panic!("boom {n}");
                    }
                    anyhow::bail!("fail {n}");
                }
                let _ = stop.wait_for(|s| *s).await;
                Ok(())
            })
        }
    }

    async fn run_flaky(panic: bool) -> Vec<Duration> {
        let flaky = Arc::new(Flaky { runs: AtomicU32::new(0), fail_times: 4, panic, starts: Mutex::new(vec![]) });
        let mut rt = Runtime::default();
        rt.spawn(flaky.clone());
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(flaky.runs.load(Ordering::SeqCst), 5, "restarted after each failure");
        rt.stop().await;
        let starts = flaky.starts.lock().unwrap().clone();
        starts.windows(2).map(|w| w[1] - w[0]).collect()
    }

    #[tokio::test(start_paused = true)]
    async fn failing_controller_restarts_with_doubling_backoff() {
        let gaps = run_flaky(false).await;
        assert_eq!(gaps, [100, 200, 400, 800].map(Duration::from_millis));
    }

    #[tokio::test(start_paused = true)]
    async fn panicking_controller_is_caught_and_restarted() {
        let gaps = run_flaky(true).await;
        assert_eq!(gaps.len(), 4);
    }

    #[tokio::test(start_paused = true)]
    async fn stop_ends_a_controller_in_backoff() {
        let flaky =
            Arc::new(Flaky { runs: AtomicU32::new(0), fail_times: 100, panic: false, starts: Mutex::new(vec![]) });
        let mut rt = Runtime::new(Backoff { initial: Duration::from_secs(3600), ..Backoff::default() });
        rt.spawn(flaky.clone());
        tokio::time::sleep(Duration::from_millis(10)).await;
        tokio::time::timeout(Duration::from_secs(1), rt.stop()).await.expect("stop returns promptly");
        assert_eq!(flaky.runs.load(Ordering::SeqCst), 1);
    }
}
