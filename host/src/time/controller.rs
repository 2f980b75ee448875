//! The time controller: the I/O shell around the pure SNTP logic. It owns
//! the sockets (through [`exchange`]) and the kernel clock (through
//! [`kernel`], only when allowed to discipline), follows the live config and
//! switches servers the moment a new config arrives, and publishes
//! `TimeStatus` and `TimeServerStatus`.
//!
//! It starts with the node and never blocks anything: failures are logged,
//! recorded and retried with backoff.

use super::discipline::{Decision, Discipline, agrees, leap_due};
use super::exchange::{self, ExchangeError, Measurement};
use super::filter::{FilterVerdict, SpikeFilter, best_of_burst};
use super::kernel;
use super::poll::{Poll, PollPolicy};
use super::servers::{DEFAULT_DENY_HOLD_OFF, ServerSet};
use super::types::Sample;
use crate::config::LiveConfig;
use crate::controllers::{Controller, ControllerError};
use crate::state::ring::Ring;
use crate::state::types::{MachineEventSpec, TimeServerStatusSpec, TimeStatusSpec};
use crate::state::{Writer, now_rfc3339};
use bronze_config::{Host, HostPort};
use futures::future::BoxFuture;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

/// Id of the one `TimeStatus` resource.
pub const TIME_STATUS_ID: &str = "node";
/// How long one exchange may wait for its reply (replies slower than
/// `MAX_RTT` are rejected anyway).
pub const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(1);
/// Requests in the burst that starts every server's use.
const BURST: usize = 4;
/// How long resolving a server name may take.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);
/// Servers asked for a second opinion on a huge offset.
const SECOND_OPINIONS: usize = 3;

/// Effective time settings, from the config or the boot defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct TimeSettings {
    pub servers: Vec<HostPort>,
    pub disabled: bool,
    pub boot_timeout: Duration,
    pub poll: PollPolicy,
    pub step_threshold: f64,
}

impl TimeSettings {
    /// From the live config; before any config (or when it names no
    /// servers) the boot servers are used. Process mode's boot servers are
    /// only the ones given explicitly, so it never contacts a default.
    pub fn from(config: Option<&LiveConfig>, boot_servers: &[HostPort]) -> Self {
        let time = config.map(|c| c.config.machine.time.clone()).unwrap_or_default();
        let servers = if time.servers.is_empty() { boot_servers.to_vec() } else { time.servers.clone() };
        Self {
            servers,
            disabled: time.disabled,
            boot_timeout: time.boot_timeout.as_std(),
            poll: PollPolicy { min: time.min_poll.as_std(), max: time.max_poll.as_std() },
            step_threshold: time.step_threshold.as_std().as_secs_f64(),
        }
    }

    pub fn enabled(&self) -> bool {
        !self.disabled && !self.servers.is_empty()
    }
}

/// State that outlives one run of the loop (config switches, restarts).
struct Persistent {
    discipline: Discipline,
    status: TimeStatusSpec,
}

pub struct TimeController {
    pub status: Writer<TimeStatusSpec>,
    pub server_status: Writer<TimeServerStatusSpec>,
    pub events: Arc<Ring<MachineEventSpec>>,
    pub config: watch::Receiver<Option<LiveConfig>>,
    pub boot_servers: Vec<HostPort>,
    /// Adjust the kernel clock (pid1 with CAP_SYS_TIME); otherwise observe only.
    pub discipline_clock: bool,
    /// When the node started, for `bootTimeout`.
    pub started: Instant,
    persistent: Mutex<Persistent>,
}

impl TimeController {
    pub fn new(
        status: Writer<TimeStatusSpec>,
        server_status: Writer<TimeServerStatusSpec>,
        events: Arc<Ring<MachineEventSpec>>,
        config: watch::Receiver<Option<LiveConfig>>,
        boot_servers: Vec<HostPort>,
        discipline_clock: bool,
    ) -> Self {
        let status_spec = TimeStatusSpec {
            mode: if discipline_clock { "discipline" } else { "observe-only" }.into(),
            ..Default::default()
        };
        Self {
            status,
            server_status,
            events,
            config,
            boot_servers,
            discipline_clock,
            started: Instant::now(),
            persistent: Mutex::new(Persistent { discipline: Discipline::new(0.4), status: status_spec }),
        }
    }

    fn update(&self, f: impl FnOnce(&mut TimeStatusSpec)) {
        let mut p = self.persistent.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut p.status);
        p.status.kernel = kernel::read_state().unwrap_or_default();
        if let Err(e) = self.status.put(TIME_STATUS_ID, &p.status) {
            tracing::error!(error = %e, "cannot publish TimeStatus");
        }
    }

    fn event(&self, severity: &str, message: String) {
        self.events.push(&MachineEventSpec {
            time: now_rfc3339(),
            kind: "time".into(),
            severity: severity.into(),
            message,
        });
    }

    fn synced(&self) -> bool {
        self.persistent.lock().unwrap_or_else(|e| e.into_inner()).status.synced
    }

    /// Marks synced because `bootTimeout` expired, if not synced yet.
    fn check_boot_timeout(&self, settings: &TimeSettings) {
        if !self.synced() && self.started.elapsed() >= settings.boot_timeout {
            tracing::warn!(timeout = ?settings.boot_timeout, "time not synced within bootTimeout; continuing as synced");
            self.update(|s| {
                s.synced = true;
                s.synced_by_timeout = true;
            });
        }
    }

    /// Sleeps `delay`, but wakes for the boot timeout.
    async fn sleep(&self, delay: Duration, settings: &TimeSettings) {
        let until = Instant::now() + delay;
        if !self.synced() {
            let boot_deadline = self.started + settings.boot_timeout;
            if boot_deadline < until {
                tokio::time::sleep_until(boot_deadline).await;
                self.check_boot_timeout(settings);
            }
        }
        tokio::time::sleep_until(until).await;
    }

    /// Runs with `settings` until the task is dropped (a config change).
    async fn sync(&self, settings: &TimeSettings) -> Result<(), ControllerError> {
        let names: Vec<String> = settings.servers.iter().map(|s| s.as_str().to_string()).collect();
        {
            let mut p = self.persistent.lock().unwrap_or_else(|e| e.into_inner());
            p.discipline.set_step_threshold(settings.step_threshold);
        }
        self.update(|s| {
            s.enabled = settings.enabled();
            s.servers = names.clone();
            s.current_server.clear();
            s.current_address.clear();
        });
        self.retire_server_statuses(&names);
        if !settings.enabled() {
            tracing::info!(disabled = settings.disabled, "time sync disabled: no servers configured");
            self.update(|s| s.last_error = "time sync disabled: no servers".into());
            loop {
                self.check_boot_timeout(settings);
                self.sleep(Duration::from_secs(3600), settings).await;
            }
        }

        let mut server_statuses: BTreeMap<String, TimeServerStatusSpec> = BTreeMap::new();
        let mut resolved = Vec::new();
        for server in &settings.servers {
            let addrs = resolve(server).await;
            let status = TimeServerStatusSpec {
                server: server.as_str().into(),
                addresses: addrs.iter().map(|a| a.to_string()).collect(),
                last_error: if addrs.is_empty() {
                    format!("cannot resolve {}", server.as_str())
                } else {
                    String::new()
                },
                ..Default::default()
            };
            self.server_status.put(server.as_str(), &status)?;
            server_statuses.insert(server.as_str().into(), status);
            resolved.push((server.as_str().to_string(), addrs));
        }
        let mut set = ServerSet::new(resolved.clone());
        let name_of = |addr: SocketAddr| {
            resolved.iter().find(|(_, a)| a.contains(&addr)).map(|(n, _)| n.clone()).unwrap_or_default()
        };
        let mut poll = Poll::new(settings.poll);
        let mut filter = SpikeFilter::new();
        let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::from_os_rng();
        let mut last_addr: Option<SocketAddr> = None;

        loop {
            self.check_boot_timeout(settings);
            let Some((_, addr)) = set.current(std::time::Instant::now()) else {
                let delay = poll.on_error(&mut rng);
                self.update(|s| s.last_error = "no usable time server (all failed or refused us)".into());
                self.sleep(delay, settings).await;
                set = ServerSet::new(resolved.clone());
                continue;
            };
            let name = name_of(addr);
            if last_addr != Some(addr) {
                // A new server: its samples are not comparable with the old one's.
                filter.reset();
                self.update(|s| {
                    s.current_server = name.clone();
                    s.current_address = addr.to_string();
                });
            }
            let burst = if last_addr != Some(addr) { BURST } else { 1 };
            last_addr = Some(addr);
            let spacing = (settings.poll.min / 4).min(Duration::from_secs(2));

            let mut samples: Vec<Sample> = Vec::new();
            let mut processed_first = false;
            let mut delay = None;
            for i in 0..burst {
                if i > 0 {
                    tokio::time::sleep(spacing).await;
                }
                let result = exchange::exchange(addr, EXCHANGE_TIMEOUT).await;
                let status = server_statuses.entry(name.clone()).or_default();
                status.reach <<= 1;
                match result {
                    Ok(m) => {
                        status.reach |= 1;
                        record_sample(status, &m);
                        set.on_success(addr);
                        samples.push(m.sample);
                        // The first valid sample counts at once, so a node syncs fast.
                        if !processed_first {
                            processed_first = true;
                            if self.process(m.sample, &mut filter, &mut poll, &set).await {
                                samples.clear(); // taken before a step: stale
                            }
                        }
                    }
                    Err(ExchangeError::KissOfDeath(code)) => {
                        status.kiss_code = code.clone();
                        status.last_error = format!("kiss-o'-death {code}");
                        match code.as_str() {
                            "RATE" => {
                                poll.on_kod_rate();
                                tracing::warn!(server = %addr, "server asked us to slow down (RATE)");
                            }
                            "DENY" | "RSTR" => {
                                tracing::warn!(server = %addr, %code, "server refused us; failing over");
                                set.on_kod_deny(addr, std::time::Instant::now(), DEFAULT_DENY_HOLD_OFF);
                                delay = Some(Duration::ZERO);
                            }
                            // Unknown codes have no protocol meaning: ignored.
                            _ => {}
                        }
                        self.update(|s| s.last_error = format!("{name} ({addr}): kiss-o'-death {code}"));
                        break;
                    }
                    Err(e) => {
                        status.last_error = e.to_string();
                        tracing::warn!(server = %addr, error = %e, "time exchange failed");
                        self.update(|s| s.last_error = format!("{name} ({addr}): {e}"));
                        set.on_failure(addr, std::time::Instant::now());
                        delay = Some(if set.current(std::time::Instant::now()).is_some_and(|(_, a)| a != addr) {
                            // Fail over at once when another address is available.
                            Duration::ZERO
                        } else {
                            poll.on_error(&mut rng)
                        });
                        break;
                    }
                }
            }
            if let Some(status) = server_statuses.get(&name) {
                self.server_status.put(&name, status)?;
            }
            if samples.len() > 1
                && let Some(best) = best_of_burst(&samples)
            {
                self.process(best, &mut filter, &mut poll, &set).await;
            }
            self.update(|s| s.poll_interval_seconds = poll.interval().as_secs_f64());
            self.sleep(delay.unwrap_or_else(|| poll.interval()), settings).await;
        }
    }

    /// Filters, decides and applies one sample. Returns whether it stepped.
    async fn process(&self, sample: Sample, filter: &mut SpikeFilter, poll: &mut Poll, set: &ServerSet) -> bool {
        if let FilterVerdict::Spike { median, limit } = filter.check(sample) {
            tracing::info!(offset = sample.offset, median, limit, "spike ignored");
            self.update(|s| s.spikes += 1);
            return false;
        }
        let jitter = filter.jitter();
        poll.on_sample(sample.offset, jitter);
        let mut decision = self.discipline().decide(sample.offset, 1);
        if matches!(decision, Decision::Refuse { .. }) {
            // Ask other servers whether the huge offset is real.
            let mut agreeing = 1;
            for other in set.others(sample.server, std::time::Instant::now()).into_iter().take(SECOND_OPINIONS) {
                if let Ok(m) = exchange::exchange(other, EXCHANGE_TIMEOUT).await
                    && agrees(m.sample.offset, sample.offset)
                {
                    agreeing += 1;
                }
            }
            decision = self.discipline().decide(sample.offset, agreeing);
        }
        let (label, offset) = match &decision {
            Decision::Step { offset } => ("step", *offset),
            Decision::Slew { offset } => ("slew", *offset),
            Decision::Refuse { offset, reason } => {
                tracing::warn!(%reason, "time correction refused");
                self.event("warning", reason.clone());
                self.update(|s| {
                    s.last_decision = "refused".into();
                    s.last_error = reason.clone();
                    s.last_offset_seconds = *offset;
                });
                return false;
            }
        };
        if self.discipline_clock {
            let applied = match decision {
                Decision::Step { offset } => kernel::step(offset).and_then(|_| {
                    kernel::write_rtc().or_else(|e| {
                        tracing::warn!(error = %e, "cannot write the RTC after a step");
                        Ok(())
                    })
                }),
                Decision::Slew { offset } => kernel::slew(offset, poll.time_constant()),
                Decision::Refuse { .. } => Ok(()),
            };
            let now_unix =
                std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
            let error_us = ((sample.rtt / 2.0 + jitter) * 1e6) as i64;
            let marked = applied
                .and_then(|_| kernel::mark_synchronised(error_us + 1000, error_us, leap_due(sample.leap, now_unix)));
            if let Err(e) = marked {
                tracing::error!(error = %e, decision = label, "cannot adjust the kernel clock");
                self.update(|s| s.last_error = format!("cannot adjust the kernel clock: {e}"));
                return false;
            }
        }
        let (epoch_changed, steps) = {
            let mut p = self.persistent.lock().unwrap_or_else(|e| e.into_inner());
            let changed = p.discipline.applied(&decision);
            (changed, p.discipline.steps())
        };
        let stepped = label == "step";
        if stepped {
            filter.reset();
        }
        if epoch_changed {
            tracing::warn!(offset, "time correction beyond 15 minutes: epoch bumped");
            self.event("warning", format!("time corrected by {offset:+.3} s (beyond 15 minutes): epoch bumped"));
        } else if stepped {
            self.event("info", format!("time stepped by {offset:+.6} s"));
        }
        tracing::debug!(offset, rtt = sample.rtt, decision = label, "time sample");
        let epoch = self.discipline().epoch();
        self.update(|s| {
            s.synced = true;
            s.last_offset_seconds = offset;
            s.last_rtt_seconds = sample.rtt;
            s.jitter_seconds = jitter;
            s.last_sync = now_rfc3339();
            s.last_decision = label.into();
            s.last_error.clear();
            s.steps = steps;
            s.epoch = epoch;
        });
        stepped
    }

    fn discipline(&self) -> Discipline {
        self.persistent.lock().unwrap_or_else(|e| e.into_inner()).discipline.clone()
    }

    /// Drops `TimeServerStatus` of servers no longer configured.
    fn retire_server_statuses(&self, keep: &[String]) {
        for res in self.server_status.store().list(&crate::state::types::TIME_SERVER_STATUS) {
            if !keep.contains(&res.metadata.id) {
                self.server_status.remove(&res.metadata.id);
            }
        }
    }
}

fn record_sample(status: &mut TimeServerStatusSpec, m: &Measurement) {
    status.last_offset_seconds = m.sample.offset;
    status.last_rtt_seconds = m.sample.rtt;
    status.stratum = m.sample.stratum;
    status.last_error.clear();
    status.last_sample = now_rfc3339();
}

/// Every address of `server`; empty when it does not resolve in time.
pub async fn resolve(server: &HostPort) -> Vec<SocketAddr> {
    let host = match server.host() {
        Host::Ip(ip) => return vec![SocketAddr::new(*ip, server.port())],
        Host::Name(name) => name.as_str().to_string(),
    };
    match tokio::time::timeout(RESOLVE_TIMEOUT, tokio::net::lookup_host((host.as_str(), server.port()))).await {
        Ok(Ok(addrs)) => addrs.collect(),
        Ok(Err(e)) => {
            tracing::warn!(server = server.as_str(), error = %e, "cannot resolve time server");
            vec![]
        }
        Err(_) => {
            tracing::warn!(server = server.as_str(), "resolving time server timed out");
            vec![]
        }
    }
}

impl Controller for TimeController {
    fn name(&self) -> &'static str {
        "time"
    }

    fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) -> BoxFuture<'static, Result<(), ControllerError>> {
        Box::pin(async move {
            let mut config = self.config.clone();
            loop {
                let settings = TimeSettings::from(config.borrow_and_update().as_ref(), &self.boot_servers);
                tokio::select! {
                    result = self.sync(&settings) => result?,
                    // A new config switches servers at once, mid-poll.
                    changed = config.changed() => if changed.is_err() { return Ok(()) },
                    _ = stop.wait_for(|s| *s) => return Ok(()),
                }
            }
        })
    }
}
