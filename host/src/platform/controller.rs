//! The platform controller: picks the platform (pinned by
//! `bronze.platform=` or `machine.platform.name`, else every provider's
//! `detect()` within [`DETECT_BUDGET`]), fetches its metadata with capped,
//! jittered retries, caches the answer atomically, and publishes it
//! (`PlatformDetection`, `PlatformMetadata`, [`PlatformHandle`]). It applies
//! user data that is a machine config when the node has none.
//!
//! It never blocks the API, time sync or services: they start without it
//! and take the platform's hostname and time servers when they come.

use super::PlatformHandle;
use super::cache::{self, Cached};
use super::metadata::PlatformMetadata;
use super::resources::{DetectionAnswer, PLATFORM_ID, PlatformDetectionSpec, PlatformMetadataSpec, UserDataStatus};
use super::userdata::{self, Kind};
use crate::api::audit::AuditLog;
use crate::config::ConfigManager;
use crate::controllers::{Controller, ControllerError};
use crate::plugins::PluginManager;
use crate::plugins::instance::{Instance, Trigger};
use crate::plugins::worlds::metadata::{FetchFailure, Metadata, MetadataInput, MetadataOutput};
use crate::state::Writer;
use crate::state::ring::Ring;
use crate::state::types::MachineEventSpec;
use crate::statedir::StateDir;
use bronze_bundle::text::printable;
use bronze_config::PlatformSettings;
use futures::future::BoxFuture;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Every provider's `detect()` together must answer within this.
pub const DETECT_BUDGET: Duration = Duration::from_secs(3);
/// The platform when no provider says yes.
pub const METAL: &str = "metal";

/// Retry delays between fetch attempts: doubling from `initial` to `max`,
/// each with ±`jitter` of itself.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub initial: Duration,
    pub max: Duration,
    pub jitter: f64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy { initial: Duration::from_millis(250), max: Duration::from_secs(30), jitter: 0.2 }
    }
}

impl RetryPolicy {
    /// The delay before attempt `n + 1` after `n` failures (n ≥ 1).
    pub fn delay(&self, failures: u32) -> Duration {
        let base = self.initial.saturating_mul(1u32 << failures.saturating_sub(1).min(16)).min(self.max);
        let spread = rand::random_range(-self.jitter..=self.jitter);
        base.mul_f64(1.0 + spread).min(self.max.mul_f64(1.0 + self.jitter))
    }
}

pub struct PlatformController {
    pub plugins: Arc<PluginManager>,
    pub config: Arc<ConfigManager>,
    /// The kernel command line file (for `bronze.platform=`).
    pub cmdline: PathBuf,
    pub dir: Arc<StateDir>,
    pub detection: Writer<PlatformDetectionSpec>,
    pub metadata: Writer<PlatformMetadataSpec>,
    pub handle: PlatformHandle,
    pub events: Arc<Ring<MachineEventSpec>>,
    pub audit: Arc<AuditLog>,
    pub retry: RetryPolicy,
    /// `--platform`: `auto` (detect), `none` (metal unless the config pins
    /// a platform), or a name to pin (below the kernel command line).
    pub flag: String,
    /// When the node started: the fetch budget counts from here until the
    /// first answer; after that, each fetch (a refresh) counts from its own
    /// start.
    pub started: Instant,
}

/// What detection chose.
enum Choice {
    Provider { platform: String, instance: Arc<Instance> },
    Metal,
    Failed,
}

/// How a fetch session ended.
enum Fetched {
    Answer,
    /// Stop, a refresh, or a change that needs a new choice.
    Interrupted,
}

impl PlatformController {
    /// `bronze.platform=` from the kernel command line.
    fn cmdline_platform(&self) -> Option<String> {
        let text = std::fs::read_to_string(&self.cmdline).ok()?;
        let words: Vec<String> = text.split_whitespace().map(String::from).collect();
        crate::plugins::facts::cmdline_value(&words, "bronze.platform").filter(|v| !v.is_empty())
    }

    fn settings(&self) -> PlatformSettings {
        self.config.live().map(|c| c.config.machine.platform.clone()).unwrap_or_default()
    }

    /// The providers detection asks: the image's, with the config's
    /// replacements.
    fn candidates(&self, settings: &PlatformSettings) -> Vec<(String, Result<Arc<Instance>, String>)> {
        let mut candidates: Vec<(String, Result<Arc<Instance>, String>)> =
            self.plugins.image_providers().into_iter().map(|(p, i)| (p, Ok(i))).collect();
        for (platform, instance_id) in &settings.providers {
            let replacement = match self.plugins.instance(instance_id.as_str()) {
                Some(instance) if instance.is_armed() => Ok(instance),
                Some(instance) => Err(format!("instance {} is not running: {}", instance.id, instance.view().reason)),
                None => Err(format!("instance {} does not exist", instance_id.as_str())),
            };
            candidates.retain(|(p, _)| p != platform.as_str());
            candidates.push((platform.as_str().to_string(), replacement));
        }
        candidates.sort_by(|a, b| a.0.cmp(&b.0));
        candidates
    }

    /// Picks the platform and publishes `PlatformDetection`.
    async fn choose(&self, settings: &PlatformSettings) -> Choice {
        let started = Instant::now();
        // Requests made from here on are answered by the next round.
        let refresh = self.handle.requested();
        let candidates = self.candidates(settings);
        let flag_pin = match self.flag.as_str() {
            "auto" | "none" | "" => None,
            name => Some((name.to_string(), "--platform flag")),
        };
        let pinned = self
            .cmdline_platform()
            .map(|p| (p, "kernel command line"))
            .or(flag_pin)
            .or_else(|| settings.name.as_ref().map(|p| (p.as_str().to_string(), "config")));
        let (choice, spec) = if let Some((platform, source)) = pinned {
            let mut spec =
                PlatformDetectionSpec { platform: platform.clone(), source: source.into(), ..Default::default() };
            let choice = if platform == METAL {
                Choice::Metal
            } else {
                match candidates.into_iter().find(|(p, _)| *p == platform) {
                    Some((_, Ok(instance))) => Choice::Provider { platform, instance },
                    Some((_, Err(why))) => {
                        spec.error = format!("platform {platform} (from the {source}): {why}");
                        spec.platform = String::new();
                        Choice::Failed
                    }
                    None => {
                        spec.error =
                            format!("platform {platform} (from the {source}): no provider is installed for it");
                        spec.platform = String::new();
                        Choice::Failed
                    }
                }
            };
            (choice, spec)
        } else if self.flag == "none" {
            (
                Choice::Metal,
                PlatformDetectionSpec {
                    platform: METAL.into(),
                    source: "--platform none".into(),
                    ..Default::default()
                },
            )
        } else if !settings.detect {
            (
                Choice::Metal,
                PlatformDetectionSpec { platform: METAL.into(), source: "config".into(), ..Default::default() },
            )
        } else {
            self.detect(candidates).await
        };
        let spec = PlatformDetectionSpec {
            duration_ms: started.elapsed().as_millis() as u64,
            chosen_at: crate::state::now_rfc3339(),
            refresh,
            ..spec
        };
        match &choice {
            Choice::Failed => tracing::error!(error = %spec.error, "platform detection failed"),
            _ => {
                tracing::info!(platform = %spec.platform, source = %spec.source, ms = spec.duration_ms, "platform chosen")
            }
        }
        if let Err(e) = self.detection.put(PLATFORM_ID, &spec) {
            tracing::error!(error = %e, "cannot publish PlatformDetection");
        }
        choice
    }

    /// Every candidate's `detect()` at once, facts only, within the budget.
    async fn detect(
        &self,
        candidates: Vec<(String, Result<Arc<Instance>, String>)>,
    ) -> (Choice, PlatformDetectionSpec) {
        let asks = candidates.into_iter().map(|(platform, instance)| async move {
            let started = Instant::now();
            let (answer, message) = match &instance {
                Err(why) => ("error", why.clone()),
                Ok(instance) => {
                    let call = instance.call::<Metadata>(Trigger::Controller, MetadataInput::Detect);
                    match tokio::time::timeout(DETECT_BUDGET, call).await {
                        Ok(Some((_, Some(MetadataOutput { detected: Some(true), .. })))) => ("yes", String::new()),
                        Ok(Some((_, Some(_)))) => ("no", String::new()),
                        Ok(Some((outcome, None))) => ("error", format!("{}: {}", outcome.kind, outcome.message)),
                        Ok(None) => ("error", "the instance is not running".to_string()),
                        Err(_) => ("error", format!("no answer within {} ms", DETECT_BUDGET.as_millis())),
                    }
                }
            };
            let answer = DetectionAnswer {
                provider: platform.clone(),
                instance: instance.as_ref().map(|i| i.id.clone()).unwrap_or_default(),
                answer: answer.into(),
                message,
                duration_ms: started.elapsed().as_millis() as u64,
            };
            (platform, instance.ok(), answer)
        });
        let results = futures::future::join_all(asks).await;
        let yes: Vec<(String, Arc<Instance>)> = results
            .iter()
            .filter(|(_, _, a)| a.answer == "yes")
            .filter_map(|(p, i, _)| i.clone().map(|i| (p.clone(), i)))
            .collect();
        let answers: Vec<DetectionAnswer> = results.into_iter().map(|(_, _, a)| a).collect();
        let mut spec = PlatformDetectionSpec { source: "detection".into(), answers, ..Default::default() };
        let choice = match yes.as_slice() {
            [] => {
                spec.platform = METAL.into();
                Choice::Metal
            }
            [(platform, instance)] => {
                spec.platform = platform.clone();
                Choice::Provider { platform: platform.clone(), instance: instance.clone() }
            }
            several => {
                let names: Vec<&str> = several.iter().map(|(p, _)| p.as_str()).collect();
                spec.error = format!(
                    "several providers detected their platform: {}; pin one with bronze.platform= or machine.platform.name",
                    names.join(", ")
                );
                Choice::Failed
            }
        };
        (choice, spec)
    }

    /// Publishes `metadata` (without its user data) in `spec`; returns the
    /// spec as published, which later retries update and publish again.
    fn publish(&self, spec: PlatformMetadataSpec, metadata: &PlatformMetadata) -> PlatformMetadataSpec {
        let mut without_user_data = metadata.clone();
        without_user_data.user_data = None;
        let spec = PlatformMetadataSpec { metadata: without_user_data.clone(), ..spec };
        if let Err(e) = self.metadata.put(PLATFORM_ID, &spec) {
            tracing::error!(error = %e, "cannot publish PlatformMetadata");
        }
        self.handle.publish(Some(Arc::new(without_user_data)));
        spec
    }

    fn unpublish(&self) {
        self.metadata.remove(PLATFORM_ID);
        self.handle.publish(None);
    }

    fn event(&self, severity: &str, message: String) {
        self.events.push(&MachineEventSpec {
            time: crate::state::now_rfc3339(),
            kind: "platform".into(),
            severity: severity.into(),
            message,
        });
    }

    /// Applies user data that is a machine config when the node has none.
    async fn user_data(&self, platform: &str, bytes: Option<&[u8]>, previous: &UserDataStatus) -> UserDataStatus {
        let bytes = bytes.unwrap_or_default();
        let kind = userdata::classify(bytes);
        let mut status = UserDataStatus { kind: kind.as_str().into(), bytes: bytes.len(), ..Default::default() };
        let repeated = |s: &UserDataStatus| s.kind == previous.kind && s.action == previous.action;
        match kind {
            Kind::None => {}
            Kind::MachineConfig => match self.config.apply_if_unconfigured(bytes).await {
                Ok(Some(warnings)) => {
                    status.action = "applied".into();
                    status.message = format!("applied as the machine config ({} warnings)", warnings.len());
                    for w in &warnings {
                        tracing::warn!(warning = %w, "config from user data");
                    }
                    tracing::info!(%platform, "the platform's user data is a machine config: applied");
                    self.audit.record_source("platform", "platform/user-data", "ok", &status.message);
                    self.event("info", format!("machine config applied from {platform} user data"));
                }
                Ok(None) => {
                    status.action = "kept-stored-config".into();
                    status.message = "a stored machine config is never replaced by user data".into();
                }
                Err(e) => {
                    status.action = "invalid".into();
                    status.message = printable(&e.to_string()).into_owned();
                    if !repeated(&status) {
                        tracing::error!(%platform, error = %status.message, "user data is not a valid machine config; staying in maintenance mode");
                        self.audit.record_source("platform", "platform/user-data", "invalid-argument", &status.message);
                        self.event(
                            "warning",
                            format!("user data from {platform} is not a valid machine config: {}", status.message),
                        );
                    }
                }
            },
            Kind::CloudConfig | Kind::Script | Kind::Other => {
                status.action = "ignored".into();
                status.message = format!("{} user data is not a Bronze machine config", kind.as_str());
                if !repeated(&status) {
                    tracing::warn!(%platform, kind = kind.as_str(), "user data ignored: not a Bronze machine config");
                    self.event("warning", format!("{} user data from {platform} ignored", kind.as_str()));
                }
            }
        }
        status
    }

    /// Fetches until an answer, retrying with backoff; past the budget
    /// (counted from `since`) it says so once and keeps retrying.
    async fn fetch(
        &self,
        platform: &str,
        instance: &Arc<Instance>,
        current: &mut Option<PlatformMetadataSpec>,
        interrupt: &mut Interrupts,
        since: Instant,
    ) -> Fetched {
        let budget = self.settings().fetch_timeout.as_std();
        let mut failures = 0u32;
        let mut over_budget_said = false;
        loop {
            let call = instance.call::<Metadata>(Trigger::Controller, MetadataInput::Fetch);
            let result = tokio::select! {
                result = call => result,
                _ = interrupt.wait() => return Fetched::Interrupted,
            };
            let error = match result {
                Some((_, Some(MetadataOutput { fetched: Some(Ok(metadata)), .. }))) => {
                    let previous = current.as_ref().map(|s| s.user_data.clone()).unwrap_or_default();
                    let user_data = self.user_data(platform, metadata.user_data.as_deref(), &previous).await;
                    let now = crate::state::now_rfc3339();
                    cache::write(
                        &self.dir,
                        &Cached {
                            instance: instance.id.clone(),
                            fetched_at: now.clone(),
                            fetched_unix: cache::unix_now(),
                            metadata: metadata.clone(),
                        },
                    );
                    let spec = PlatformMetadataSpec {
                        platform: platform.into(),
                        instance: instance.id.clone(),
                        cached: false,
                        fetched_at: now,
                        age_seconds: 0,
                        attempts: failures + 1,
                        last_error: String::new(),
                        user_data,
                        metadata: Default::default(),
                    };
                    let spec = self.publish(spec, &metadata);
                    tracing::info!(%platform, attempts = failures + 1, "platform metadata fetched");
                    *current = Some(spec);
                    return Fetched::Answer;
                }
                Some((_, Some(MetadataOutput { fetched: Some(Err(e)), .. }))) => e,
                Some((_, Some(_))) => FetchFailure::Invalid("the provider returned no answer".into()),
                Some((outcome, None)) => FetchFailure::Unavailable(format!("{}: {}", outcome.kind, outcome.message)),
                None => FetchFailure::Unavailable("the provider's instance is not running".into()),
            };
            failures += 1;
            let message = printable(&error.to_string()).into_owned();
            tracing::info!(%platform, attempt = failures, error = %message, "platform metadata fetch failed; retrying");
            if let Some(spec) = current.as_mut() {
                spec.attempts = failures;
                spec.last_error = message.clone();
                if let Err(e) = self.metadata.put(PLATFORM_ID, spec) {
                    tracing::error!(error = %e, "cannot publish PlatformMetadata");
                }
            }
            if !over_budget_said && since.elapsed() >= budget {
                over_budget_said = true;
                let using = match current {
                    Some(spec) if spec.cached => "the cached copy (stale)",
                    Some(_) => "the last answer",
                    None => "no platform metadata",
                };
                tracing::warn!(%platform, budget_s = budget.as_secs(), last_error = %message,
                    "the metadata service did not answer within the boot budget; going on with {using} and retrying");
                self.event(
                    "warning",
                    format!(
                        "{platform} metadata service did not answer within {} s ({message}); using {using}, still retrying",
                        budget.as_secs()
                    ),
                );
            }
            tokio::select! {
                _ = tokio::time::sleep(self.retry.delay(failures)) => {}
                _ = interrupt.wait() => return Fetched::Interrupted,
            }
        }
    }
}

/// What ends a fetch session or the wait after an answer.
struct Interrupts {
    stop: watch::Receiver<bool>,
    config: watch::Receiver<Option<crate::config::LiveConfig>>,
    settings: PlatformSettings,
    handle: PlatformHandle,
}

impl Interrupts {
    /// Stop, a refresh request, or a change of `machine.platform`.
    async fn wait(&mut self) {
        loop {
            let config_changed = tokio::select! {
                _ = self.stop.wait_for(|s| *s) => return,
                _ = self.handle.refresh_requested() => return,
                changed = self.config.changed() => changed.is_ok(),
            };
            if !config_changed {
                // The config manager is gone: only stop and refresh remain.
                tokio::select! {
                    _ = self.stop.wait_for(|s| *s) => return,
                    _ = self.handle.refresh_requested() => return,
                }
            }
            let settings =
                self.config.borrow_and_update().as_ref().map(|c| c.config.machine.platform.clone()).unwrap_or_default();
            if settings != self.settings {
                self.settings = settings;
                return;
            }
        }
    }
}

impl Controller for PlatformController {
    fn name(&self) -> &'static str {
        "platform"
    }

    fn run(self: Arc<Self>, stop: watch::Receiver<bool>) -> BoxFuture<'static, Result<(), ControllerError>> {
        Box::pin(async move {
            let mut stop = stop;
            // The cached answer first: a node whose service is down comes
            // up the same, marked stale.
            let mut current: Option<PlatformMetadataSpec> = None;
            if let Some(cached) = cache::read(&self.dir) {
                let spec = PlatformMetadataSpec {
                    platform: cached.metadata.platform.clone(),
                    instance: cached.instance.clone(),
                    cached: true,
                    fetched_at: cached.fetched_at.clone(),
                    age_seconds: cache::unix_now().saturating_sub(cached.fetched_unix),
                    attempts: 0,
                    last_error: String::new(),
                    user_data: UserDataStatus::default(),
                    metadata: Default::default(),
                };
                tracing::info!(platform = %spec.platform, age_s = spec.age_seconds, "using cached platform metadata until the service answers");
                current = Some(self.publish(spec, &cached.metadata));
            }
            // Detection needs the providers loaded (a first boot compiles them).
            let mut loaded = self.plugins.loaded();
            tokio::select! {
                _ = loaded.wait_for(|l| *l) => {}
                _ = stop.wait_for(|s| *s) => return Ok(()),
            }
            let mut changes = self.plugins.subscribe();
            let mut interrupts = Interrupts {
                stop: stop.clone(),
                config: self.config.subscribe(),
                settings: self.settings(),
                handle: self.handle.clone(),
            };
            let mut chosen: Option<(String, String)> = None;
            // Until the first answer, the boot budget counts from the start.
            let mut answered_once = false;
            loop {
                if *stop.borrow() {
                    return Ok(());
                }
                interrupts.settings = self.settings();
                let choice = self.choose(&interrupts.settings).await;
                match choice {
                    Choice::Provider { platform, instance } => {
                        if current.as_ref().is_some_and(|c| c.platform != platform) {
                            tracing::info!(%platform, "the platform changed; forgetting the cached metadata");
                            cache::remove(&self.dir);
                            self.unpublish();
                            current = None;
                        }
                        let same = chosen.as_ref() == Some(&(platform.clone(), instance.id.clone()));
                        let answered = current.as_ref().is_some_and(|c| !c.cached);
                        if !(same && answered) {
                            chosen = Some((platform.clone(), instance.id.clone()));
                            let since = if answered_once { Instant::now() } else { self.started };
                            match self.fetch(&platform, &instance, &mut current, &mut interrupts, since).await {
                                Fetched::Answer => answered_once = true,
                                Fetched::Interrupted => {
                                    // Refresh or a new setting: choose again at once.
                                    chosen = None;
                                    continue;
                                }
                            }
                        }
                    }
                    Choice::Metal | Choice::Failed => {
                        chosen = None;
                        if current.is_some() {
                            cache::remove(&self.dir);
                            self.unpublish();
                            current = None;
                        }
                    }
                }
                // Choose again on a refresh, a new `machine.platform`, or a
                // changed set of provider instances.
                tokio::select! {
                    _ = interrupts.wait() => { chosen = None; }
                    changed = changes.changed() => if changed.is_err() { return Ok(()) },
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delays_grow_to_the_cap_with_jitter() {
        let policy = RetryPolicy { initial: Duration::from_millis(100), max: Duration::from_secs(2), jitter: 0.2 };
        let d1 = policy.delay(1);
        assert!(d1 >= Duration::from_millis(80) && d1 <= Duration::from_millis(120), "{d1:?}");
        let d3 = policy.delay(3);
        assert!(d3 >= Duration::from_millis(320) && d3 <= Duration::from_millis(480), "{d3:?}");
        for n in 6..40 {
            let d = policy.delay(n);
            assert!(d <= Duration::from_millis(2400) && d >= Duration::from_millis(1600), "{n}: {d:?}");
        }
        let spread: std::collections::BTreeSet<u128> = (0..50).map(|_| policy.delay(2).as_micros()).collect();
        assert!(spread.len() > 10, "jitter spreads the delays");
    }
}
