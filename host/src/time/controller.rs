//! The time controller: the I/O shell around the pure SNTP logic. It owns
//! the sockets (through [`exchange`]) and the kernel clock (through
//! [`kernel`], only when allowed to discipline), follows the live config and
//! switches servers the moment a new config arrives, and publishes
//! `TimeStatus` and `TimeServerStatus`.
//!
//! It starts with the node and never blocks anything: failures are logged,
//! recorded and retried with backoff.

use super::discipline::{Decision, Discipline, Peers, agrees, leap_due};
use super::exchange::{self, ExchangeError, Measurement};
use super::filter::{FilterVerdict, SpikeFilter, best_of_burst};
use super::kernel;
use super::poll::{Poll, PollPolicy};
use super::servers::{DEFAULT_DENY_HOLD_OFF, HoldOffs, ServerSet};
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

/// Kiss-o'-death hold-offs, shared by the controller (which sets them) and
/// the API's TimeCheck (which must not ask a held-off address either).
pub type SharedHoldOffs = Arc<Mutex<HoldOffs>>;

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
    /// From the live config's `machine.time` (`None` before any config).
    /// When it names no servers, the mode's default servers are used: in
    /// pid1 mode `bronze.ntp=` from the kernel command line, else
    /// `pool.ntp.org` (as in Talos; `disabled: true` is the way to turn
    /// sync off); in process mode only the servers given explicitly, so it
    /// never contacts a default. The platform's servers (from its metadata)
    /// sit between the two: below the config's, above the default.
    pub fn from(
        time: Option<&bronze_config::Time>,
        platform_servers: &[HostPort],
        default_servers: &[HostPort],
    ) -> Self {
        let time = time.cloned().unwrap_or_default();
        let servers = if !time.servers.is_empty() {
            time.servers.clone()
        } else if !platform_servers.is_empty() {
            platform_servers.to_vec()
        } else {
            default_servers.to_vec()
        };
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
    /// The platform layer of servers (PID 1 only).
    pub platform_servers: Option<watch::Receiver<Vec<HostPort>>>,
    /// Adjust the kernel clock (pid1 with CAP_SYS_TIME); otherwise observe only.
    pub discipline_clock: bool,
    /// When the node started, for `bootTimeout`.
    pub started: Instant,
    persistent: Mutex<Persistent>,
    /// Outlive any one config and any restart of the controller.
    holds: SharedHoldOffs,
}

impl TimeController {
    pub fn new(
        status: Writer<TimeStatusSpec>,
        server_status: Writer<TimeServerStatusSpec>,
        events: Arc<Ring<MachineEventSpec>>,
        config: watch::Receiver<Option<LiveConfig>>,
        boot_servers: Vec<HostPort>,
        discipline_clock: bool,
        holds: SharedHoldOffs,
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
            platform_servers: None,
            discipline_clock,
            started: Instant::now(),
            persistent: Mutex::new(Persistent { discipline: Discipline::new(0.4), status: status_spec }),
            holds,
        }
    }

    /// Takes the platform's servers from `servers` (None: never).
    pub fn with_platform_servers(mut self, servers: Option<watch::Receiver<Vec<HostPort>>>) -> Self {
        self.platform_servers = servers;
        self
    }

    fn update(&self, f: impl FnOnce(&mut TimeStatusSpec)) {
        let mut p = self.persistent.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut p.status);
        p.status.kernel = kernel::read_state().unwrap_or_default();
        if let Err(e) = self.status.put(TIME_STATUS_ID, &p.status) {
            tracing::error!(error = %e, "cannot publish TimeStatus");
        }
    }

    /// A machine event, also logged (the console shows time corrections).
    fn event(&self, severity: &str, message: String) {
        if severity == "warning" {
            tracing::warn!("{message}");
        } else {
            tracing::info!("{message}");
        }
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

        let mut statuses: BTreeMap<String, TimeServerStatusSpec> = names
            .iter()
            .map(|n| (n.clone(), TimeServerStatusSpec { server: n.clone(), ..Default::default() }))
            .collect();
        // Hold-offs from earlier configs and runs stay in force.
        let mut set = ServerSet::named(&names).with_holds(self.holds.lock().unwrap_or_else(|e| e.into_inner()).clone());
        let mut poll = Poll::new(settings.poll);
        let mut filter = SpikeFilter::new();
        let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::from_os_rng();
        let mut last_addr: Option<SocketAddr> = None;

        loop {
            self.check_boot_timeout(settings);
            self.resolve_due(settings, &mut set, &mut statuses).await?;
            let now = std::time::Instant::now();
            let Some((index, addr)) = set.current(now) else {
                // Nothing to ask: wait for the first hold-off to end or the
                // next resolution, never less (a held-off address is not
                // asked early, whatever else happens).
                let wait = set
                    .next_change(now)
                    .map_or_else(|| poll.on_error(&mut rng), |at| at.saturating_duration_since(now));
                let why = unusable_reason(&set, now, wait);
                tracing::debug!(%why, "waiting for a usable time server");
                self.update(|s| {
                    s.last_error = why;
                    s.current_server.clear();
                    s.current_address.clear();
                });
                self.sleep(wait, settings).await;
                continue;
            };
            let name = set.name(index).unwrap_or_default().to_string();
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
            let mut outvoted = false;
            for i in 0..burst {
                if i > 0 {
                    tokio::time::sleep(spacing).await;
                }
                let result = exchange::exchange(addr, EXCHANGE_TIMEOUT).await;
                let now = std::time::Instant::now();
                let status = statuses.entry(name.clone()).or_default();
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
                            match self.process(m.sample, &name, &mut filter, &mut poll, &mut set).await {
                                Processed::Stepped => samples.clear(), // taken before a step: stale
                                Processed::Outvoted(reason) => {
                                    outvoted = true;
                                    statuses.entry(name.clone()).or_default().last_error = reason;
                                    break;
                                }
                                Processed::Adjusted | Processed::Ignored => {}
                            }
                        }
                    }
                    Err(ExchangeError::KissOfDeath(code)) => {
                        let message = self.on_kiss(&mut set, &mut poll, addr, &name, &code, now);
                        status.kiss_code = code.clone();
                        status.last_error = message.clone();
                        self.update(|s| s.last_error = message);
                        delay = Some(match code.as_str() {
                            // Held off: the loop moves on, or waits for the hold-off to end.
                            "RATE" | "DENY" | "RSTR" => Duration::ZERO,
                            _ => failover_delay(&set, addr, now, &mut poll, &mut rng),
                        });
                        break;
                    }
                    Err(e) => {
                        status.last_error = e.to_string();
                        tracing::warn!(server = %name, address = %addr, error = %e, "time exchange failed");
                        self.update(|s| s.last_error = format!("{name} ({addr}): {e}"));
                        set.on_failure(addr, now);
                        delay = Some(failover_delay(&set, addr, now, &mut poll, &mut rng));
                        break;
                    }
                }
            }
            if !outvoted
                && samples.len() > 1
                && let Some(best) = best_of_burst(&samples)
                && let Processed::Outvoted(reason) = self.process(best, &name, &mut filter, &mut poll, &mut set).await
            {
                outvoted = true;
                statuses.entry(name.clone()).or_default().last_error = reason;
            }
            if outvoted {
                // A falseticker: ask the others from now on.
                let now = std::time::Instant::now();
                set.on_failure(addr, now);
                delay = Some(failover_delay(&set, addr, now, &mut poll, &mut rng));
            }
            self.save_holds(&set, &mut statuses);
            for (server, status) in &statuses {
                self.server_status.put(server, status)?;
            }
            self.update(|s| s.poll_interval_seconds = poll.interval().as_secs_f64());
            self.sleep(delay.unwrap_or_else(|| poll.interval()), settings).await;
        }
    }

    /// Resolves the names that are due (at the start, and again with
    /// backoff while a name does not resolve) and records the outcome.
    async fn resolve_due(
        &self,
        settings: &TimeSettings,
        set: &mut ServerSet,
        statuses: &mut BTreeMap<String, TimeServerStatusSpec>,
    ) -> Result<(), ControllerError> {
        for index in set.resolutions_due(std::time::Instant::now()) {
            let Some(server) = settings.servers.get(index) else { continue };
            let name = server.as_str().to_string();
            let (addrs, error) = match resolve(server).await {
                Ok(addrs) => (addrs, None),
                Err(e) => (Vec::new(), Some(e)),
            };
            let retry = set.on_resolved(index, addrs.clone(), std::time::Instant::now());
            let status = statuses.entry(name.clone()).or_default();
            status.addresses = addrs.iter().map(SocketAddr::to_string).collect();
            match (error, retry) {
                (Some(e), Some(retry)) => {
                    tracing::warn!(server = %name, error = %e, retry_in = ?retry, "cannot resolve time server");
                    status.last_error = format!("{e}; retrying in {}", seconds(retry));
                }
                _ => {
                    tracing::info!(server = %name, addresses = ?status.addresses, "time server resolved");
                    status.last_error.clear();
                }
            }
            self.server_status.put(&name, status)?;
        }
        Ok(())
    }

    /// Applies a kiss-o'-death `code` from `addr` (RFC 5905 §7.4) and
    /// returns what the status says about it. RATE: poll less often and
    /// hold the address off for a while that grows with each RATE; DENY and
    /// RSTR: hold it off for an hour. Either way the node fails over when
    /// another server is usable. Other codes have no protocol meaning: the
    /// exchange simply failed, and the node fails over as after any failure.
    fn on_kiss(
        &self,
        set: &mut ServerSet,
        poll: &mut Poll,
        addr: SocketAddr,
        name: &str,
        code: &str,
        now: std::time::Instant,
    ) -> String {
        let (what, hold) = match code {
            "RATE" => {
                poll.on_kod_rate();
                let hold = set.on_kod_rate(addr, now, poll.interval(), poll.policy().max);
                ("asked us to slow down", Some(hold))
            }
            "DENY" | "RSTR" => {
                set.on_kod_deny(addr, code, now, DEFAULT_DENY_HOLD_OFF);
                ("refused us", Some(DEFAULT_DENY_HOLD_OFF))
            }
            _ => {
                set.on_failure(addr, now);
                ("sent an unknown kiss code", None)
            }
        };
        let next = match set.current(now) {
            Some((index, other)) if other != addr => {
                format!("failing over to {} ({other})", set.name(index).unwrap_or_default())
            }
            _ => "no other server to ask".to_string(),
        };
        let held = hold.map(|h| format!("held off for {}; ", seconds(h))).unwrap_or_default();
        let message = format!("{name} ({addr}) {what}: kiss-o'-death {code}; {held}{next}");
        tracing::warn!("{message}");
        self.save_holds_only(set);
        message
    }

    /// Keeps the hold-offs beyond this set (config changes, restarts, the
    /// API's TimeCheck) and shows each server's in its status.
    fn save_holds(&self, set: &ServerSet, statuses: &mut BTreeMap<String, TimeServerStatusSpec>) {
        self.save_holds_only(set);
        let now = std::time::Instant::now();
        for status in statuses.values_mut() {
            status.held_off_until = status
                .addresses
                .iter()
                .filter_map(|a| a.parse().ok())
                .filter_map(|a| set.holds().active(a, now))
                .map(|h| {
                    h.until.map_or("forever".to_string(), |until| rfc3339_after(until.saturating_duration_since(now)))
                })
                .max()
                .unwrap_or_default();
        }
    }

    fn save_holds_only(&self, set: &ServerSet) {
        *self.holds.lock().unwrap_or_else(|e| e.into_inner()) = set.holds().clone();
    }

    /// Filters, decides and applies one sample from `name`.
    async fn process(
        &self,
        sample: Sample,
        name: &str,
        filter: &mut SpikeFilter,
        poll: &mut Poll,
        set: &mut ServerSet,
    ) -> Processed {
        let addr = sample.server;
        if let FilterVerdict::Spike { median, limit } = filter.check(sample) {
            tracing::info!(server = %name, offset = sample.offset, median, limit, "spike ignored");
            self.update(|s| s.spikes += 1);
            return Processed::Ignored;
        }
        let jitter = filter.jitter();
        poll.on_sample(sample.offset, jitter);
        let discipline = self.discipline();
        let others = set.others(addr, std::time::Instant::now());
        let mut peers = if others.is_empty() { Peers::None } else { Peers::NotAsked };
        let mut decision = discipline.decide(sample.offset, peers);
        let mut opinions = Vec::new();
        if matches!(decision, Decision::AskOthers { .. }) {
            // A step that needs a vote: ask the other servers.
            let (mut agree, mut disagree) = (0, 0);
            for other in others.into_iter().take(SECOND_OPINIONS) {
                let other_name = set.name_of(other).unwrap_or_default().to_string();
                match exchange::exchange(other, EXCHANGE_TIMEOUT).await {
                    Ok(m) => {
                        if agrees(m.sample.offset, sample.offset) {
                            agree += 1;
                        } else {
                            disagree += 1;
                        }
                        opinions.push(format!("{other_name} ({other}) {:+.3} s", m.sample.offset));
                    }
                    Err(ExchangeError::KissOfDeath(code)) => {
                        opinions.push(format!("{other_name} ({other}) kiss-o'-death {code}"));
                        self.on_second_opinion_kiss(set, poll, other, &code);
                    }
                    Err(e) => opinions.push(format!("{other_name} ({other}) no answer: {e}")),
                }
            }
            peers = Peers::Asked { agree, disagree };
            decision = discipline.decide(sample.offset, peers);
        }
        let said = if opinions.is_empty() { String::new() } else { format!("; others: {}", opinions.join(", ")) };
        let (label, offset) = match &decision {
            Decision::Step { offset } => ("step", *offset),
            Decision::Slew { offset } => ("slew", *offset),
            Decision::Refuse { offset, reason } => {
                let message = format!("{name} ({addr}): {reason}{said}");
                self.event("warning", message.clone());
                self.update(|s| {
                    s.last_decision = "refused".into();
                    s.last_error = message.clone();
                    s.last_offset_seconds = *offset;
                });
                return if matches!(peers, Peers::Asked { disagree: 1.., .. }) {
                    Processed::Outvoted(message)
                } else {
                    Processed::Ignored
                };
            }
            Decision::AskOthers { .. } => return Processed::Ignored, // decided again above; never here
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
                Decision::Refuse { .. } | Decision::AskOthers { .. } => Ok(()),
            };
            let now_unix =
                std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
            let error_us = ((sample.rtt / 2.0 + jitter) * 1e6) as i64;
            let marked = applied
                .and_then(|_| kernel::mark_synchronised(error_us + 1000, error_us, leap_due(sample.leap, now_unix)));
            if let Err(e) = marked {
                tracing::error!(error = %e, decision = label, "cannot adjust the kernel clock");
                self.update(|s| s.last_error = format!("cannot adjust the kernel clock: {e}"));
                return Processed::Ignored;
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
            // Who vouched for the step, so the event says on whose word the clock moved.
            let basis = match peers {
                Peers::Asked { agree: 1.., .. } => {
                    format!(", confirmed by {} of {} other servers", peers_agree(peers), peers.answered())
                }
                Peers::Asked { .. } => ", trusted alone: no other server answered".to_string(),
                Peers::None if !discipline.synced() => ", trusted alone: no other server to ask".to_string(),
                _ => String::new(),
            };
            let epoch = if epoch_changed { "; beyond 15 minutes: epoch bumped" } else { "" };
            let severity = if epoch_changed { "warning" } else { "info" };
            self.event(severity, format!("time stepped by {offset:+.6} s from {name} ({addr}){basis}{said}{epoch}"));
        }
        tracing::debug!(server = %name, offset, rtt = sample.rtt, decision = label, "time sample");
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
        if stepped { Processed::Stepped } else { Processed::Adjusted }
    }

    /// A kiss-o'-death from a server asked for a second opinion holds it
    /// off just as if it were the current server (without touching the
    /// current server's poll interval).
    fn on_second_opinion_kiss(&self, set: &mut ServerSet, poll: &Poll, addr: SocketAddr, code: &str) {
        let now = std::time::Instant::now();
        match code {
            "RATE" => {
                set.on_kod_rate(addr, now, poll.policy().min, poll.policy().max);
            }
            "DENY" | "RSTR" => set.on_kod_deny(addr, code, now, DEFAULT_DENY_HOLD_OFF),
            _ => {}
        }
        self.save_holds_only(set);
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

/// What became of one sample.
#[derive(Debug, Clone, PartialEq)]
enum Processed {
    /// A spike, a refusal not caused by other servers, or a failed adjustment.
    Ignored,
    /// Slewed (or would have been, observe-only).
    Adjusted,
    /// Stepped (or would have been).
    Stepped,
    /// A step the other servers voted down: this server is a falseticker.
    Outvoted(String),
}

fn peers_agree(peers: Peers) -> usize {
    match peers {
        Peers::Asked { agree, .. } => agree,
        _ => 0,
    }
}

/// After `addr` failed: at once when another address is usable, else the
/// error backoff.
fn failover_delay(
    set: &ServerSet,
    addr: SocketAddr,
    now: std::time::Instant,
    poll: &mut Poll,
    rng: &mut impl rand::Rng,
) -> Duration {
    if set.current(now).is_some_and(|(_, a)| a != addr) { Duration::ZERO } else { poll.on_error(rng) }
}

/// Why no server can be asked right now, naming the servers.
fn unusable_reason(set: &ServerSet, now: std::time::Instant, wait: Duration) -> String {
    let held: Vec<String> = set
        .held_addresses(now)
        .into_iter()
        .map(|(name, addr, hold)| {
            let left = hold.until.map_or("for good".to_string(), |until| {
                format!("for another {}", seconds(until.saturating_duration_since(now)))
            });
            format!("{name} ({addr}) after kiss-o'-death {} {left}", hold.code)
        })
        .collect();
    let unresolved = set.unresolved_names();
    let mut parts = Vec::new();
    if !unresolved.is_empty() {
        parts.push(format!("cannot resolve {}", unresolved.join(", ")));
    }
    if !held.is_empty() {
        parts.push(format!("held off: {}", held.join(", ")));
    }
    if parts.is_empty() {
        return format!("no usable time server; next try in {}", seconds(wait));
    }
    format!("no usable time server ({}); next try in {}", parts.join("; "), seconds(wait))
}

/// A duration in seconds for messages ("2 s", "0.25 s").
fn seconds(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s >= 10.0 || s.fract() == 0.0 { format!("{s:.0} s") } else { format!("{s:.2} s") }
}

/// The wall-clock time `d` from now, RFC 3339.
fn rfc3339_after(d: Duration) -> String {
    time::OffsetDateTime::now_utc()
        .checked_add(time::Duration::try_from(d).unwrap_or(time::Duration::MAX))
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_else(|| "far in the future".to_string())
}

fn record_sample(status: &mut TimeServerStatusSpec, m: &Measurement) {
    status.last_offset_seconds = m.sample.offset;
    status.last_rtt_seconds = m.sample.rtt;
    status.stratum = m.sample.stratum;
    status.last_error.clear();
    status.last_sample = now_rfc3339();
}

/// Every address of `server`, or why there is none (naming the server).
pub async fn resolve(server: &HostPort) -> Result<Vec<SocketAddr>, String> {
    let host = match server.host() {
        Host::Ip(ip) => return Ok(vec![SocketAddr::new(*ip, server.port())]),
        Host::Name(name) => name.as_str().to_string(),
    };
    match tokio::time::timeout(RESOLVE_TIMEOUT, tokio::net::lookup_host((host.as_str(), server.port()))).await {
        Ok(Ok(addrs)) => {
            let addrs: Vec<SocketAddr> = addrs.collect();
            if addrs.is_empty() { Err(format!("{} resolved to no address", server.as_str())) } else { Ok(addrs) }
        }
        Ok(Err(e)) => Err(format!("cannot resolve {}: {e}", server.as_str())),
        Err(_) => Err(format!("cannot resolve {}: no answer within {RESOLVE_TIMEOUT:?}", server.as_str())),
    }
}

impl Controller for TimeController {
    fn name(&self) -> &'static str {
        "time"
    }

    fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) -> BoxFuture<'static, Result<(), ControllerError>> {
        Box::pin(async move {
            let mut config = self.config.clone();
            let (_keep, unused) = watch::channel(Vec::new());
            let mut platform = self.platform_servers.clone().unwrap_or(unused);
            loop {
                let live = config.borrow_and_update().clone();
                let from_platform = platform.borrow_and_update().clone();
                let settings = TimeSettings::from(
                    live.as_ref().map(|c| &c.config.machine.time),
                    &from_platform,
                    &self.boot_servers,
                );
                tokio::select! {
                    result = self.sync(&settings) => result?,
                    // A new config switches servers at once, mid-poll.
                    changed = config.changed() => if changed.is_err() { return Ok(()) },
                    // So do the platform's servers when its metadata comes.
                    changed = platform.changed() => if changed.is_err() { return Ok(()) },
                    _ = stop.wait_for(|s| *s) => return Ok(()),
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hp(s: &str) -> HostPort {
        s.parse().unwrap()
    }

    #[test]
    fn a_config_without_servers_keeps_the_modes_default_servers() {
        // pid1: the boot default (pool.ntp.org unless bronze.ntp= says otherwise).
        let pid1_default = [hp(crate::time::DEFAULT_NTP_SERVER)];
        let before_config = TimeSettings::from(None, &[], &pid1_default);
        assert_eq!(before_config.servers, pid1_default);
        assert!(before_config.enabled());
        let no_servers = bronze_config::Time::default();
        let with_config = TimeSettings::from(Some(&no_servers), &[], &pid1_default);
        assert_eq!(with_config.servers, pid1_default);
        assert!(with_config.enabled());
        // Servers in the config replace the default.
        let named = bronze_config::Time { servers: vec![hp("10.0.0.1:123")], ..Default::default() };
        assert_eq!(TimeSettings::from(Some(&named), &[], &pid1_default).servers, vec![hp("10.0.0.1:123")]);
        // disabled: true turns sync off, default or not.
        let disabled = bronze_config::Time { disabled: true, ..Default::default() };
        assert!(!TimeSettings::from(Some(&disabled), &[], &pid1_default).enabled());
        // Process mode has no default: nothing to contact.
        assert!(!TimeSettings::from(Some(&no_servers), &[], &[]).enabled());
        assert!(!TimeSettings::from(None, &[], &[]).enabled());
        // The platform's servers come between the config's and the default.
        let platform = vec![hp("169.254.169.123:123")];
        assert_eq!(TimeSettings::from(None, &platform, &pid1_default).servers, platform);
        assert_eq!(TimeSettings::from(Some(&no_servers), &platform, &pid1_default).servers, platform);
        assert_eq!(TimeSettings::from(Some(&named), &platform, &pid1_default).servers, vec![hp("10.0.0.1:123")]);
        assert_eq!(TimeSettings::from(None, &platform, &[]).servers, platform);
    }

    #[test]
    fn messages_name_the_servers_and_the_wait() {
        let t0 = std::time::Instant::now();
        let a: SocketAddr = "192.0.2.1:123".parse().unwrap();
        let mut set = ServerSet::new(vec![("a.example:123".into(), vec![a]), ("b.example:123".into(), vec![])]);
        set.on_resolved(1, vec![], t0);
        set.on_kod_deny(a, "DENY", t0, DEFAULT_DENY_HOLD_OFF);
        assert_eq!(
            unusable_reason(&set, t0, Duration::from_secs(1)),
            "no usable time server (cannot resolve b.example:123; held off: a.example:123 (192.0.2.1:123) after \
             kiss-o'-death DENY for another 3600 s); next try in 1 s"
        );
        assert_eq!(seconds(Duration::from_millis(250)), "0.25 s");
        assert_eq!(seconds(Duration::from_secs(64)), "64 s");
    }
}
