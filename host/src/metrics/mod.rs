//! The figures a Prometheus scrape gets: node, services, plugins, time sync
//! and API, rendered with the official `prometheus-client` encoder in the
//! Prometheus text format or, when the scraper asks for it, OpenMetrics.
//!
//! Most figures are read at scrape time from where they already live: the
//! node's from procfs, the services' and time sync's from their resources in
//! the store, the plugin instances' from the plugin manager. Only what no one
//! kept before is counted here: each plugin call by outcome with its
//! duration ([`record_plugin_call`]) and each API request by method and code
//! ([`ApiMetricsLayer`]).
//!
//! Label values are escaped by the encoder, cut to [`MAX_LABEL_VALUE`] bytes,
//! and a family fed with outside names holds at most [`MAX_SERIES`] of them
//! (further names share the label value `other`).

pub mod api;
pub mod server;

use crate::plugins::PluginManager;
use crate::plugins::outcome::{Outcome, OutcomeKind};
use crate::services::status::{ServiceState, ServiceStatusSpec};
use crate::state::Store;
use crate::state::types::TimeStatusSpec;
use crate::sysinfo::SystemPaths;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};
use std::collections::BTreeSet;
use std::path::Path;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, LazyLock, Mutex};

pub use api::ApiMetricsLayer;

/// Labels of one series, in order.
pub type Labels = Vec<(&'static str, String)>;
type FloatGauge = Gauge<f64, AtomicU64>;

/// Longest label value kept, in bytes.
pub const MAX_LABEL_VALUE: usize = 128;
/// Most distinct outside names (plugins, services) one family holds.
pub const MAX_SERIES: usize = 256;
/// The label value shared by names past [`MAX_SERIES`].
pub const OVERFLOW: &str = "other";

/// `text` cut to [`MAX_LABEL_VALUE`] bytes at a character boundary, control
/// characters replaced (the encoder escapes `\`, `"` and newlines itself).
pub fn label_value(text: &str) -> String {
    let mut end = text.len().min(MAX_LABEL_VALUE);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].chars().map(|c| if c.is_control() && c != '\n' { '?' } else { c }).collect()
}

/// Admits at most [`MAX_SERIES`] distinct names; later ones become
/// [`OVERFLOW`].
#[derive(Debug, Default)]
struct Names(Mutex<BTreeSet<String>>);

impl Names {
    fn admit(&self, name: &str) -> String {
        let name = label_value(name);
        let mut seen = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if seen.contains(&name) {
            return name;
        }
        if seen.len() >= MAX_SERIES {
            return OVERFLOW.to_string();
        }
        seen.insert(name.clone());
        name
    }
}

/// The exposition format of a scrape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Prometheus text 0.0.4: the default.
    Prometheus,
    /// OpenMetrics 1.0 text, when the `Accept` header names it.
    OpenMetrics,
}

impl Format {
    pub const OPENMETRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

    /// The format an `Accept` header asks for.
    pub fn from_accept(accept: Option<&str>) -> Format {
        match accept {
            Some(a) if a.to_ascii_lowercase().contains("application/openmetrics-text") => Format::OpenMetrics,
            _ => Format::Prometheus,
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::Prometheus => prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
            Format::OpenMetrics => Self::OPENMETRICS_CONTENT_TYPE,
        }
    }
}

/// Where a scrape reads its figures.
#[derive(Clone)]
pub struct Sources {
    pub store: Store,
    pub plugins: Arc<PluginManager>,
    pub paths: SystemPaths,
}

impl std::fmt::Debug for Sources {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sources").field("paths", &self.paths).finish_non_exhaustive()
    }
}

/// Every figure, encoded in `format`.
pub fn render(sources: &Sources, format: Format) -> String {
    let mut registry = Registry::with_prefix("bronze");
    node(&mut registry, &sources.paths.proc);
    services(&mut registry, &sources.store);
    plugins(&mut registry, &sources.plugins);
    time(&mut registry, &sources.store);
    api::register(&mut registry);
    let mut out = String::new();
    // Encoding into a String cannot fail: the writer never errors.
    let _ = match format {
        Format::Prometheus => prometheus_client::encoding::prometheus_text::encode(&mut out, &registry),
        Format::OpenMetrics => prometheus_client::encoding::text::encode(&mut out, &registry),
    };
    out
}

fn gauge(value: f64) -> FloatGauge {
    let g = FloatGauge::default();
    g.set(value);
    g
}

fn counter(value: u64) -> Counter {
    let c = Counter::default();
    c.inc_by(value);
    c
}

/// Node figures from procfs; one that cannot be read is left out.
fn node(registry: &mut Registry, proc: &Path) {
    let node = registry.sub_registry_with_prefix("node");
    if let Some(uptime) = std::fs::read_to_string(proc.join("uptime")).ok().as_deref().and_then(parse_uptime) {
        node.register_with_unit("uptime", "Time since the kernel booted", Unit::Seconds, gauge(uptime));
    }
    if let Some(btime) = std::fs::read_to_string(proc.join("stat")).ok().as_deref().and_then(parse_btime) {
        node.register_with_unit(
            "boot_time",
            "When the kernel booted, in seconds since the Unix epoch",
            Unit::Seconds,
            gauge(btime as f64),
        );
    }
    if let Ok(mem) = crate::sysinfo::memory(proc) {
        let memory = node.sub_registry_with_prefix("memory");
        memory.register_with_unit("total", "Memory the kernel manages", Unit::Bytes, gauge(mem.total as f64));
        memory.register_with_unit("free", "Memory unused", Unit::Bytes, gauge(mem.free as f64));
        memory.register_with_unit(
            "available",
            "Memory available to new work without swapping",
            Unit::Bytes,
            gauge(mem.available as f64),
        );
    }
    if let Ok((l1, l5, l15)) = crate::sysinfo::loadavg(proc) {
        node.register("load1", "Load average over 1 minute", gauge(l1));
        node.register("load5", "Load average over 5 minutes", gauge(l5));
        node.register("load15", "Load average over 15 minutes", gauge(l15));
    }
    if let Ok(rss) = crate::sysinfo::own_rss(proc) {
        registry.register_with_unit(
            "bronzed_resident_memory",
            "Resident memory of bronzed itself",
            Unit::Bytes,
            gauge(rss as f64),
        );
    }
}

/// `/proc/uptime`: the first field.
fn parse_uptime(text: &str) -> Option<f64> {
    text.split_whitespace().next()?.parse().ok().filter(|v: &f64| v.is_finite())
}

/// `/proc/stat`: the `btime` line.
fn parse_btime(text: &str) -> Option<u64> {
    text.lines().find_map(|l| l.strip_prefix("btime ")).and_then(|v| v.trim().parse().ok())
}

const SERVICE_STATES: &[(ServiceState, &str)] = &[
    (ServiceState::Waiting, "waiting"),
    (ServiceState::Starting, "starting"),
    (ServiceState::Running, "running"),
    (ServiceState::Stopping, "stopping"),
    (ServiceState::Stopped, "stopped"),
    (ServiceState::Finished, "finished"),
    (ServiceState::Failed, "failed"),
    (ServiceState::Backoff, "backoff"),
];

/// Services from their `ServiceStatus` resources.
fn services(registry: &mut Registry, store: &Store) {
    let up = Family::<Labels, FloatGauge>::default();
    let state = Family::<Labels, FloatGauge>::default();
    let restarts = Family::<Labels, Counter>::default();
    let names = Names::default();
    for (_, s) in store.list_typed::<ServiceStatusSpec>() {
        let name = names.admit(&s.name);
        let service = || vec![("service", name.clone())];
        up.get_or_create(&service()).set(f64::from(u8::from(s.state == ServiceState::Running)));
        restarts.get_or_create(&service()).inc_by(s.restarts);
        for (st, label) in SERVICE_STATES {
            let labels = vec![("service", name.clone()), ("state", (*label).to_string())];
            let g = state.get_or_create(&labels);
            if *st == s.state {
                g.set(1.0);
            }
        }
    }
    let services = registry.sub_registry_with_prefix("service");
    services.register("up", "1 when the service is running", up);
    services.register("state", "1 for the state the service is in, 0 for the others", state);
    services.register("restarts", "Exits of the service so far, whatever its policy did next", restarts);
}

/// Plugin calls (counted here) and armed instances (from the manager).
fn plugins(registry: &mut Registry, manager: &PluginManager) {
    let armed = Family::<Labels, FloatGauge>::default();
    let names = Names::default();
    for view in manager.list() {
        let plugin = names.admit(view.entry.id.as_str());
        let count =
            view.instances.iter().filter(|i| manager.instance(&i.id).is_some_and(|inst| inst.is_armed())).count();
        armed.get_or_create(&vec![("plugin", plugin)]).set(count as f64);
    }
    let plugins = registry.sub_registry_with_prefix("plugin");
    plugins.register("instances_armed", "Instances of the plugin ready to be called", armed);
    let calls = &*PLUGIN_CALLS;
    plugins.register("calls", "Finished plugin calls by outcome", calls.calls.clone());
    plugins.register_with_unit("call_duration", "How long plugin calls took", Unit::Seconds, calls.seconds.clone());
    plugins.register_with_unit("cpu", "CPU time plugin calls used", Unit::Seconds, calls.cpu.clone());
}

/// Time sync from the `TimeStatus` resource.
fn time(registry: &mut Registry, store: &Store) {
    let Some((_, t)) = store.get_typed::<TimeStatusSpec>("node") else { return };
    let time = registry.sub_registry_with_prefix("time");
    time.register("enabled", "1 when time sync runs (servers known, not disabled)", gauge(bool_f64(t.enabled)));
    time.register("synced", "1 when the clock is synchronised", gauge(bool_f64(t.synced)));
    time.register_with_unit(
        "offset",
        "Offset of the last accepted sample (server minus local)",
        Unit::Seconds,
        gauge(t.last_offset_seconds),
    );
    if let Some(last) = parse_rfc3339_utc(&t.last_sync) {
        time.register_with_unit(
            "last_sync_timestamp",
            "When the last sample was accepted, in seconds since the Unix epoch",
            Unit::Seconds,
            gauge(last),
        );
    }
    time.register("steps", "Clock steps so far", counter(t.steps));
    time.register("spikes", "Samples rejected as spikes so far", counter(t.spikes));
}

fn bool_f64(b: bool) -> f64 {
    if b { 1.0 } else { 0.0 }
}

/// Seconds since the epoch of an RFC 3339 UTC time as [`crate::state::now_rfc3339`]
/// writes it (`2026-12-05T19:20:00.123456789Z`); None for anything else.
fn parse_rfc3339_utc(text: &str) -> Option<f64> {
    let text = text.strip_suffix('Z')?;
    let (date, clock) = text.split_once('T')?;
    let mut d = date.splitn(3, '-').map(|p| p.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let (hms, frac) = clock.split_once('.').unwrap_or((clock, ""));
    let mut c = hms.splitn(3, ':').map(|p| p.parse::<i64>().ok());
    let (h, min, s) = (c.next()??, c.next()??, c.next()??);
    if !(1..=12).contains(&m) || !(1..=31).contains(&day) || h > 23 || min > 59 || s > 60 {
        return None;
    }
    let frac = if frac.is_empty() { 0.0 } else { format!("0.{frac}").parse::<f64>().ok()? };
    // Days from civil (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some((days * 86_400 + h * 3600 + min * 60 + s) as f64 + frac)
}

/// Plugin call figures: kept here because nothing else counts calls by
/// outcome or keeps their durations.
struct PluginCalls {
    calls: Family<Labels, Counter>,
    /// CPU time of the calls (each call's task timed per poll).
    cpu: Family<Labels, Counter<f64, std::sync::atomic::AtomicU64>>,
    seconds: Family<Labels, Histogram, fn() -> Histogram>,
    names: Names,
}

/// From 1 ms to about 33 s: plugin calls are bounded by their deadline.
fn call_buckets() -> Histogram {
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(0.001, 2.0, 16))
}

static PLUGIN_CALLS: LazyLock<PluginCalls> = LazyLock::new(|| PluginCalls {
    calls: Family::default(),
    cpu: Family::default(),
    seconds: Family::new_with_constructor(call_buckets),
    names: Names::default(),
});

const OUTCOMES: &[OutcomeKind] =
    &[OutcomeKind::Ok, OutcomeKind::Timeout, OutcomeKind::Trap, OutcomeKind::Limit, OutcomeKind::HostError];

/// Counts one finished plugin call; called where an instance records it.
pub fn record_plugin_call(plugin: &str, outcome: &Outcome) {
    let calls = &*PLUGIN_CALLS;
    let plugin = calls.names.admit(plugin);
    // Every outcome appears (at 0) once a plugin made a call, so rates work.
    for kind in OUTCOMES {
        let c = calls.calls.get_or_create(&vec![("plugin", plugin.clone()), ("outcome", kind.as_str().to_string())]);
        if *kind == outcome.kind {
            c.inc();
        }
    }
    calls.cpu.get_or_create(&vec![("plugin", plugin.clone())]).inc_by(outcome.cpu.as_secs_f64());
    calls.seconds.get_or_create(&vec![("plugin", plugin)]).observe(outcome.duration.as_secs_f64());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_cut_at_a_char_boundary_and_controls_replaced() {
        let long = "é".repeat(100);
        let v = label_value(&long);
        assert!(v.len() <= MAX_LABEL_VALUE && v.chars().all(|c| c == 'é'), "{v}");
        assert_eq!(label_value("a\u{7}b\"c"), "a?b\"c");
    }

    #[test]
    fn names_past_the_cap_share_other() {
        let names = Names::default();
        for i in 0..MAX_SERIES {
            assert_eq!(names.admit(&format!("s{i}")), format!("s{i}"));
        }
        assert_eq!(names.admit("one-more"), OVERFLOW);
        assert_eq!(names.admit("s0"), "s0");
    }

    #[test]
    fn accept_picks_the_format() {
        assert_eq!(Format::from_accept(None), Format::Prometheus);
        assert_eq!(Format::from_accept(Some("text/plain;version=0.0.4")), Format::Prometheus);
        let prom = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert_eq!(Format::from_accept(Some(prom)), Format::OpenMetrics);
        assert!(Format::OpenMetrics.content_type().starts_with("application/openmetrics-text"));
    }

    #[test]
    fn procfs_fields_parse() {
        assert_eq!(parse_uptime("12345.67 54321.00\n"), Some(12345.67));
        assert_eq!(parse_uptime("nan 1"), None);
        assert_eq!(parse_btime("cpu  1 2 3\nbtime 1764950000\nprocesses 5\n"), Some(1_764_950_000));
        assert_eq!(parse_btime("cpu 1\n"), None);
    }

    #[test]
    fn rfc3339_utc_parses_to_epoch_seconds() {
        assert_eq!(parse_rfc3339_utc("1970-01-01T00:00:00Z"), Some(0.0));
        assert_eq!(parse_rfc3339_utc("2000-03-01T00:00:00Z"), Some(951_868_800.0));
        let t = parse_rfc3339_utc("2026-12-05T19:20:00.5Z").unwrap();
        assert!((t - 1_796_498_400.5).abs() < 1e-6, "{t}");
        assert_eq!(parse_rfc3339_utc(""), None);
        assert_eq!(parse_rfc3339_utc("2026-13-05T19:20:00Z"), None);
        let now = crate::state::now_rfc3339();
        let unix = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
        assert!((parse_rfc3339_utc(&now).unwrap() - unix).abs() < 5.0, "{now}");
    }

    #[test]
    fn services_render_state_up_and_restarts() {
        let store = Store::new();
        let writer = store.writer::<ServiceStatusSpec>().unwrap();
        let spec = ServiceStatusSpec {
            name: "web\"x".into(),
            state: ServiceState::Running,
            restarts: 3,
            ..Default::default()
        };
        writer.put("web", &spec).unwrap();
        let mut registry = Registry::with_prefix("bronze");
        services(&mut registry, &store);
        let mut out = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut out, &registry).unwrap();
        assert!(out.contains("# TYPE bronze_service_restarts_total counter"), "{out}");
        assert!(out.contains("bronze_service_restarts_total{service=\"web\\\"x\"} 3"), "{out}");
        assert!(out.contains("bronze_service_up{service=\"web\\\"x\"} 1"), "{out}");
        assert!(out.contains("bronze_service_state{service=\"web\\\"x\",state=\"running\"} 1"), "{out}");
        assert!(out.contains("bronze_service_state{service=\"web\\\"x\",state=\"failed\"} 0"), "{out}");
    }
}
