//! One configured plugin instance: what it currently runs (swapped whole on
//! upgrade or config change), its schedule, backoff and quarantine, and the
//! record of its calls.

use super::call::{CallLimits, call};
use super::context::InstanceContext;
use super::engine::PluginEngine;
use super::failures::{Failures, QUARANTINE_WINDOW};
use super::loaded::LoadedPlugin;
use super::log::PluginLog;
use super::outcome::{Outcome, OutcomeKind};
use super::resources::HealthCheckSpec;
use super::worlds::health::{Health, HealthReport};
use super::worlds::metadata::{Metadata, MetadataInput};
use super::worlds::network::Network;
use super::worlds::{Prepared, World};
use crate::state::Writer;
use arc_swap::ArcSwapOption;
use bronze_bundle::Capability;
use bronze_bundle::text::printable;
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::{Notify, Semaphore};

/// Everything one instance needs to make calls; replaced as a whole.
pub struct Armed {
    pub plugin: Arc<LoadedPlugin>,
    pub prepared: Arc<Prepared>,
    pub cx: Arc<InstanceContext>,
    pub limits: CallLimits,
    pub capabilities: BTreeSet<Capability>,
    pub interval: Option<Duration>,
}

/// Why a call was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    Schedule,
    /// An operator asked (`plugins run`): clears quarantine and backoff.
    Operator,
    /// A controller calls it (the platform controller): waits for a slot
    /// like an operator, but keeps the record's backoff.
    Controller,
}

#[derive(Debug, Default)]
struct Record {
    runs: u64,
    failures: u64,
    /// CPU time of every call so far, and the most linear memory one held.
    cpu_total: std::time::Duration,
    memory_peak: u64,
    backoff: Failures,
    /// Runs in a row that did not report healthy/degraded.
    consecutive_unhealthy: u32,
    last: Option<Outcome>,
    /// Why the instance cannot run (missing grant, not installed, ...).
    refused: Option<String>,
    disabled: bool,
    running: u32,
    next_run: Option<SystemTime>,
}

/// A snapshot for `plugins list/status`.
#[derive(Debug, Clone)]
pub struct InstanceView {
    pub id: String,
    pub plugin: String,
    pub state: &'static str,
    pub reason: String,
    pub runs: u64,
    pub failures: u64,
    /// CPU time of every call so far (see [`Outcome::cpu`]).
    pub cpu_total: std::time::Duration,
    /// The most linear memory one call held.
    pub memory_peak_bytes: u64,
    pub consecutive_failures: u32,
    pub last: Option<Outcome>,
    pub next_run: Option<SystemTime>,
    pub capabilities: Vec<String>,
    pub log_dropped: u64,
}

pub struct Instance {
    pub id: String,
    pub plugin_id: String,
    armed: ArcSwapOption<Armed>,
    record: Mutex<Record>,
    permits: Arc<Semaphore>,
    concurrency: std::sync::atomic::AtomicU32,
    pub log: Arc<PluginLog>,
    engine: PluginEngine,
    health: Arc<Writer<HealthCheckSpec>>,
    /// Wakes the scheduler: new schedule, quarantine cleared, removal.
    wake: Notify,
    /// Orders publishing a result against disarming, so a call that ends
    /// after its plugin was removed cannot bring its check back.
    publish: Mutex<()>,
}

impl Instance {
    pub fn new(
        id: &str,
        plugin_id: &str,
        engine: PluginEngine,
        health: Arc<Writer<HealthCheckSpec>>,
        log: Arc<PluginLog>,
    ) -> Arc<Instance> {
        Arc::new(Instance {
            id: id.to_string(),
            plugin_id: plugin_id.to_string(),
            armed: ArcSwapOption::empty(),
            record: Mutex::new(Record::default()),
            permits: Arc::new(Semaphore::new(1)),
            concurrency: std::sync::atomic::AtomicU32::new(1),
            log,
            engine,
            health,
            wake: Notify::new(),
            publish: Mutex::new(()),
        })
    }

    fn record(&self) -> std::sync::MutexGuard<'_, Record> {
        self.record.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Installs what the instance runs from now on. Calls in flight finish
    /// with what they started with; the schedule is not interrupted.
    /// `fresh` (a reinstall) clears quarantine and backoff in the same step,
    /// before the new plugin can run: cleared afterwards, a failure of its
    /// first run would be lost.
    pub fn arm(&self, armed: Armed, concurrency: u32, fresh: bool) {
        self.set_concurrency(concurrency);
        {
            let mut record = self.record();
            record.refused = None;
            record.disabled = false;
            if fresh {
                record.backoff.clear();
            }
        }
        self.armed.store(Some(Arc::new(armed)));
        self.wake.notify_one();
    }

    /// Stops calls: the plugin is missing, refused or disabled.
    pub fn disarm(&self, reason: Option<String>, disabled: bool) {
        let _publish = self.publish.lock().unwrap_or_else(|p| p.into_inner());
        self.armed.store(None);
        {
            let mut record = self.record();
            record.refused = reason;
            record.disabled = disabled;
            record.next_run = None;
        }
        let _ = self.health.remove(&self.id);
        self.wake.notify_one();
    }

    pub fn is_armed(&self) -> bool {
        self.armed.load().is_some()
    }

    /// Changes the per-instance concurrency limit in place.
    fn set_concurrency(&self, wanted: u32) {
        use std::sync::atomic::Ordering;
        let wanted = wanted.max(1);
        let current = self.concurrency.swap(wanted, Ordering::SeqCst);
        if wanted > current {
            self.permits.add_permits((wanted - current) as usize);
        } else if wanted < current {
            self.permits.forget_permits((current - wanted) as usize);
        }
    }

    /// Clears quarantine and backoff (reinstall, operator run).
    pub fn clear_failures(&self) {
        self.record().backoff.clear();
        self.wake.notify_one();
    }

    /// Runs the schedule until the task is aborted.
    pub async fn schedule_loop(self: Arc<Self>) {
        let mut next_due: Option<tokio::time::Instant> = None;
        loop {
            let armed = self.armed.load_full();
            let interval = armed.as_ref().and_then(|a| a.interval);
            let (quarantined, backoff_until) = {
                let record = self.record();
                (record.backoff.quarantined.is_some(), record.backoff.backoff_until)
            };
            let Some(interval) = interval.filter(|_| !quarantined) else {
                self.record().next_run = None;
                next_due = None;
                self.wake.notified().await;
                continue;
            };
            let now = tokio::time::Instant::now();
            let mut due = *next_due.get_or_insert(now);
            if let Some(until) = backoff_until {
                due = due.max(tokio::time::Instant::from_std(until));
            }
            self.record().next_run = Some(SystemTime::now() + due.saturating_duration_since(now));
            tokio::select! {
                _ = tokio::time::sleep_until(due) => {}
                _ = self.wake.notified() => continue,
            }
            // The next tick follows the previous one, not the run's end,
            // so a run's duration does not shift the schedule.
            next_due = Some(due + interval);
            if next_due.is_some_and(|d| d < tokio::time::Instant::now()) {
                next_due = Some(tokio::time::Instant::now());
            }
            self.check(Trigger::Schedule).await;
        }
    }

    /// Makes one call of world `W` and records it. `None` when the
    /// instance cannot run (not armed) or a scheduled run found every
    /// permit taken.
    pub async fn call<W: World>(&self, trigger: Trigger, input: W::Input) -> Option<(Outcome, Option<W::Output>)> {
        if trigger == Trigger::Operator {
            self.clear_failures();
        }
        let armed = self.armed.load_full()?;
        let _permit = match trigger {
            Trigger::Schedule => match self.permits.clone().try_acquire_owned() {
                Ok(permit) => permit,
                Err(_) => {
                    tracing::debug!(instance = %self.id, "scheduled run skipped: the previous run is still going");
                    return None;
                }
            },
            Trigger::Operator | Trigger::Controller => {
                match tokio::time::timeout(armed.limits.timeout, self.permits.clone().acquire_owned()).await {
                    Ok(Ok(permit)) => permit,
                    _ => {
                        let outcome = Outcome::new(
                            OutcomeKind::HostError,
                            "every concurrency slot stayed busy for the call's timeout",
                            crate::state::now_rfc3339(),
                            armed.limits.timeout,
                        );
                        return Some((outcome, None));
                    }
                }
            }
        };
        self.record().running += 1;
        let running = RunningGuard(self);
        let (outcome, output) =
            call::<W>(&self.engine, armed.prepared.clone(), armed.cx.clone(), armed.limits, input).await;
        drop(running);
        self.finish(&outcome);
        Some((outcome, output))
    }

    /// Calls a health check and publishes its `HealthCheck` resource.
    pub async fn check(&self, trigger: Trigger) -> Option<(Outcome, Option<HealthReport>)> {
        let armed = self.armed.load_full()?;
        let (outcome, report) = self.call::<Health>(trigger, ()).await?;
        let consecutive_unhealthy = {
            let mut record = self.record();
            let passing = report.as_ref().is_some_and(HealthReport::passing);
            record.consecutive_unhealthy = if passing { 0 } else { record.consecutive_unhealthy + 1 };
            record.consecutive_unhealthy
        };
        let _publish = self.publish.lock().unwrap_or_else(|p| p.into_inner());
        // Disarmed while the call ran (plugin removed, instance gone or
        // refused): its check was deleted and must stay deleted.
        if self.is_armed() {
            self.publish_health(&armed, &outcome, report.clone(), consecutive_unhealthy, outcome.kind);
        }
        Some((outcome, report))
    }

    /// One call for an operator (`plugins run`), whatever the world, with
    /// its result as JSON: a health check is published as on its schedule,
    /// a metadata provider detects then fetches, a configurator plans
    /// without metadata.
    pub async fn run_json(&self) -> Option<(Outcome, Option<serde_json::Value>)> {
        let world = self.armed.load_full()?.prepared.world();
        let trigger = Trigger::Operator;
        match world {
            bronze_bundle::World::HealthCheck => {
                self.check(trigger).await.map(|(o, r)| (o, r.as_ref().map(Health::to_json)))
            }
            bronze_bundle::World::MetadataProvider => self
                .call::<Metadata>(trigger, MetadataInput::DetectThenFetch)
                .await
                .map(|(o, r)| (o, r.as_ref().map(Metadata::to_json))),
            bronze_bundle::World::NetworkConfigurator => {
                self.call::<Network>(trigger, None).await.map(|(o, r)| (o, r.as_ref().map(Network::to_json)))
            }
        }
    }

    /// Records a finished call: counts, backoff, quarantine.
    fn finish(&self, outcome: &Outcome) {
        crate::metrics::record_plugin_call(&self.plugin_id, outcome);
        let mut record = self.record();
        record.runs += 1;
        record.cpu_total += outcome.cpu;
        record.memory_peak = record.memory_peak.max(outcome.memory_bytes);
        if outcome.kind.is_ok() {
            record.backoff.succeeded();
        } else {
            record.failures += 1;
            let describe = |count: usize| {
                format!(
                    "{count} failures within {} s (last: {}: {}); `bronzectl plugins run {}` or a reinstall clears it",
                    QUARANTINE_WINDOW.as_secs(),
                    outcome.kind,
                    outcome.message,
                    self.id
                )
            };
            let (backoff, quarantined) = record.backoff.failed(Instant::now(), describe);
            // A message's lines (a backtrace) stay on the log's one line.
            if quarantined {
                let reason = printable(record.backoff.quarantined.as_deref().unwrap_or_default());
                tracing::warn!(instance = %self.id, %reason, "plugin instance quarantined");
            }
            let message = printable(&outcome.message);
            tracing::info!(instance = %self.id, outcome = %outcome.kind, %message, backoff_ms = backoff.as_millis() as u64, "plugin call failed");
        }
        record.last = Some(outcome.clone());
    }

    fn publish_health(
        &self,
        armed: &Armed,
        outcome: &Outcome,
        report: Option<HealthReport>,
        consecutive_failures: u32,
        kind: OutcomeKind,
    ) {
        let (status, summary, details) = match report {
            Some(report) => (report.status.to_string(), report.summary, report.details.into_iter().collect()),
            None => (
                "unknown".to_string(),
                // One line: the full message (with any backtrace) is in
                // `plugins status`.
                format!(
                    "the check did not complete: {}: {}",
                    outcome.kind,
                    outcome.message.lines().next().unwrap_or_default()
                ),
                Default::default(),
            ),
        };
        let spec = HealthCheckSpec {
            plugin: armed.plugin.manifest.id.as_str().to_string(),
            instance: self.id.clone(),
            status,
            summary,
            details,
            last_run: outcome.started.clone(),
            duration_ms: outcome.duration.as_millis() as u64,
            consecutive_failures,
            outcome: kind.as_str().to_string(),
        };
        if let Err(e) = self.health.put(&self.id, &spec) {
            tracing::error!(instance = %self.id, error = %e, "cannot publish health check");
        }
    }

    pub fn view(&self) -> InstanceView {
        let armed = self.armed.load_full();
        let record = self.record();
        let (state, reason) = if record.disabled {
            ("disabled", String::new())
        } else if let Some(reason) = &record.refused {
            ("refused", reason.clone())
        } else if let Some(reason) = &record.backoff.quarantined {
            ("quarantined", reason.clone())
        } else if record.running > 0 {
            ("running", String::new())
        } else if record.backoff.in_backoff(Instant::now()) {
            ("backoff", format!("after {} consecutive failures", record.backoff.consecutive))
        } else {
            ("idle", String::new())
        };
        InstanceView {
            id: self.id.clone(),
            plugin: self.plugin_id.clone(),
            state,
            reason,
            runs: record.runs,
            failures: record.failures,
            cpu_total: record.cpu_total,
            memory_peak_bytes: record.memory_peak,
            consecutive_failures: record.backoff.consecutive,
            last: record.last.clone(),
            next_run: record.next_run,
            capabilities: armed
                .as_ref()
                .map(|a| a.capabilities.iter().map(|c| c.interface().to_string()).collect())
                .unwrap_or_default(),
            log_dropped: self.log.dropped(),
        }
    }
}

/// Counts a call as running until dropped, even if the caller goes away.
struct RunningGuard<'a>(&'a Instance);

impl Drop for RunningGuard<'_> {
    fn drop(&mut self) {
        let mut record = self.0.record();
        record.running = record.running.saturating_sub(1);
    }
}
