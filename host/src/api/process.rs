//! `ProcessService`: the node's processes (`bronzectl processes`) and what
//! bronzed, its services and plugins use (`bronzectl stats`), from procfs
//! ([`crate::procs`]). Reading /proc is blocking work: it runs off the
//! async workers. The last reading is kept so that CPU % can be measured
//! since it (`--watch` calls once a second) instead of by waiting.

use crate::api::context::ApiContext;
use crate::cgroup::Usage;
use crate::procs::{self, CommandCache, CpuBase, Owner, Snapshot, Units};
use crate::services::status::{SERVICE_STATUS, ServiceStatusSpec};
use bronze_api::v1 as pb;
use bronze_api::v1::process_service_server::{ProcessService, ProcessServiceServer};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tonic::{Request, Response, Status};

/// Longest CPU sampling window a caller may ask for.
pub const MAX_SAMPLE: Duration = Duration::from_secs(5);
/// A previous reading older than this is not used as the base of CPU %.
pub const MAX_BASE_AGE: Duration = Duration::from_secs(60);

pub struct ProcessApi {
    node: Arc<ApiContext>,
    units: Units,
    /// CPU ticks at the last reading.
    last: Mutex<Option<Arc<CpuBase>>>,
    /// Command lines of the last reading, so that a refresh reads only
    /// each process's `stat`.
    commands: Arc<Mutex<CommandCache>>,
    /// Services' cgroup CPU time (µs) at the last `stats` reading as PID 1.
    last_cgroups: Mutex<Option<CpuCounters>>,
    /// Plugin instances' CPU time (µs) at the last `stats` reading.
    last_plugins: Mutex<Option<CpuCounters>>,
}

/// CPU time (µs) by name at one moment: services' cgroups, plugin instances.
#[derive(Clone)]
struct CpuCounters {
    taken: std::time::Instant,
    cpu_usec: HashMap<String, u64>,
}

/// A reading, and the base and window CPU % is measured over (none: each
/// process's lifetime).
struct Reading {
    snapshot: Snapshot,
    base: Option<(Arc<CpuBase>, Duration)>,
}

impl Reading {
    fn cpu_percent(&self, p: &procs::Process, units: Units) -> f64 {
        let base = self.base.as_ref().map(|(b, w)| (b.as_ref(), *w));
        procs::cpu_percent(&p.stat, units, self.snapshot.uptime, base)
    }

    fn window_ms(&self) -> u64 {
        self.base.as_ref().map_or(0, |(_, w)| w.as_millis() as u64)
    }
}

impl ProcessApi {
    pub fn new(node: Arc<ApiContext>) -> ProcessApi {
        ProcessApi {
            node,
            units: Units::of_system(),
            last: Mutex::new(None),
            commands: Arc::default(),
            last_cgroups: Mutex::new(None),
            last_plugins: Mutex::new(None),
        }
    }

    async fn read_proc(&self) -> Result<Snapshot, Status> {
        let root = self.node.paths.proc.clone();
        let commands = self.commands.clone();
        tokio::task::spawn_blocking(move || {
            let mut commands = commands.lock().unwrap_or_else(|p| p.into_inner());
            procs::read_cached(&root, &mut commands)
        })
        .await
        .map_err(|e| Status::internal(format!("reading processes: {e}")))?
        .map_err(|e| Status::internal(e.to_string()))
    }

    /// Reads the processes; with `sample_ms` > 0, CPU % over at least that
    /// long (since the last reading if that is recent enough, else by
    /// reading twice).
    async fn reading(&self, sample_ms: u32) -> Result<Reading, Status> {
        let sample = Duration::from_millis(sample_ms.into()).min(MAX_SAMPLE);
        let lock = |m: &Mutex<Option<Arc<CpuBase>>>| m.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let mut snapshot = self.read_proc().await?;
        let base = if sample.is_zero() {
            None
        } else {
            let previous = lock(&self.last).filter(|b| {
                let age = snapshot.taken.saturating_duration_since(b.taken);
                age >= sample && age <= MAX_BASE_AGE
            });
            let base = match previous {
                Some(b) => b,
                None => {
                    let b = Arc::new(CpuBase::of(&snapshot));
                    tokio::time::sleep(sample).await;
                    snapshot = self.read_proc().await?;
                    b
                }
            };
            let window = snapshot.taken.saturating_duration_since(base.taken);
            Some((base, window))
        };
        *self.last.lock().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(CpuBase::of(&snapshot)));
        Ok(Reading { snapshot, base })
    }

    /// Each service's cgroup figures, with CPU % since the last reading
    /// when it is at least `sample_ms` old (else over a fresh window), the
    /// way [`Self::reading`] measures processes.
    async fn cgroup_reading(&self, names: Vec<String>, sample_ms: u32) -> HashMap<String, (Usage, f64)> {
        if names.is_empty() {
            return HashMap::new();
        }
        let cgroups = self.node.services.cgroups();
        let read = || {
            let (cgroups, names) = (cgroups.clone(), names.clone());
            async move {
                tokio::task::spawn_blocking(move || {
                    let taken = std::time::Instant::now();
                    let usage: HashMap<String, Usage> =
                        names.iter().filter_map(|n| cgroups.usage(n).map(|u| (n.clone(), u))).collect();
                    (taken, usage)
                })
                .await
                .unwrap_or_else(|_| (std::time::Instant::now(), HashMap::new()))
            }
        };
        over_window(&self.last_cgroups, sample_ms, read, |u: &Usage| u.cpu_usec).await
    }

    /// Each plugin instance's CPU time (µs, of its calls), with CPU % over
    /// a window the way [`Self::cgroup_reading`] measures services.
    async fn plugin_reading(&self, sample_ms: u32) -> HashMap<String, (u64, f64)> {
        let read = || async {
            let taken = std::time::Instant::now();
            let cpu: HashMap<String, u64> = self
                .node
                .plugins
                .list()
                .into_iter()
                .flat_map(|p| p.instances)
                .map(|i| (i.id, i.cpu_total.as_micros().try_into().unwrap_or(u64::MAX)))
                .collect();
            (taken, cpu)
        };
        over_window(&self.last_plugins, sample_ms, read, |cpu: &u64| *cpu).await
    }

    /// As PID 1, every pid in a service's cgroup, with the service's name;
    /// empty in process mode.
    async fn cgroup_members(&self) -> HashMap<i32, String> {
        let cgroups = self.node.services.cgroups();
        if cgroups.source() != "cgroup" {
            return HashMap::new();
        }
        let names: Vec<String> = self.services().into_iter().map(|s| s.name).collect();
        tokio::task::spawn_blocking(move || {
            names.iter().flat_map(|n| cgroups.members(n).into_iter().map(move |pid| (pid, n.clone()))).collect()
        })
        .await
        .unwrap_or_default()
    }

    /// Each running service's main pid.
    fn service_pids(&self) -> HashMap<i32, String> {
        self.services().into_iter().filter(|s| s.pid > 0).map(|s| (s.pid, s.name)).collect()
    }

    fn services(&self) -> Vec<ServiceStatusSpec> {
        self.node
            .store
            .list(&SERVICE_STATUS)
            .iter()
            .filter_map(|r| serde_json::from_value::<ServiceStatusSpec>(r.spec.clone()).ok())
            .collect()
    }
}

/// The service, for `api::serve`.
pub fn server(node: Arc<ApiContext>) -> ProcessServiceServer<ProcessApi> {
    ProcessServiceServer::new(ProcessApi::new(node))
}

fn bronzed_pid() -> i32 {
    std::process::id() as i32
}

/// One process as the API shows it.
pub fn to_pb_process(
    p: &procs::Process,
    owner: &Owner,
    cpu_percent: f64,
    units: Units,
    uptime: Duration,
) -> pb::ProcessInfo {
    let s = &p.stat;
    pb::ProcessInfo {
        pid: s.pid,
        parent: s.ppid,
        state: s.state.to_string(),
        threads: s.threads,
        cpu_seconds: units.seconds(s.cpu_ticks),
        cpu_percent,
        rss_bytes: s.rss_pages.saturating_mul(units.page_size),
        name: bronze_bundle::text::escape(&s.comm).into_owned(),
        command: p.command.clone(),
        command_truncated: p.command_truncated,
        owner_kind: owner.kind().into(),
        owner: owner.name().into(),
        uid: p.uid,
        age_seconds: (uptime.as_secs_f64() - units.seconds(s.start_ticks)).max(0.0),
    }
}

/// Figures by name read now, each with its CPU % (of one core) from
/// `cpu_usec`: with `sample_ms` > 0, over the window since `last`'s reading
/// when that is at least `sample_ms` old and at most [`MAX_BASE_AGE`], else
/// over a fresh window (read, wait `sample_ms`, read again); 0 with
/// `sample_ms` 0. `last` becomes this reading. A counter that went back (a
/// new instance under an old name) counts from zero.
async fn over_window<T, F, Fut>(
    last: &Mutex<Option<CpuCounters>>,
    sample_ms: u32,
    read: F,
    cpu_usec: fn(&T) -> u64,
) -> HashMap<String, (T, f64)>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = (std::time::Instant, HashMap<String, T>)>,
{
    let sample = Duration::from_millis(sample_ms.into()).min(MAX_SAMPLE);
    let (mut taken, mut usage) = read().await;
    let base_of = |taken, usage: &HashMap<String, T>| CpuCounters {
        taken,
        cpu_usec: usage.iter().map(|(n, u)| (n.clone(), cpu_usec(u))).collect(),
    };
    let base = if sample.is_zero() {
        None
    } else {
        let previous = last.lock().unwrap_or_else(|p| p.into_inner()).clone().filter(|b| {
            let age = taken.saturating_duration_since(b.taken);
            age >= sample && age <= MAX_BASE_AGE
        });
        match previous {
            Some(b) => Some(b),
            None => {
                let b = base_of(taken, &usage);
                tokio::time::sleep(sample).await;
                (taken, usage) = read().await;
                Some(b)
            }
        }
    };
    *last.lock().unwrap_or_else(|p| p.into_inner()) = Some(base_of(taken, &usage));
    usage
        .into_iter()
        .map(|(name, u)| {
            let percent = base.as_ref().map_or(0.0, |b| {
                let window = taken.saturating_duration_since(b.taken).as_secs_f64();
                let before = b.cpu_usec.get(&name).copied().unwrap_or(0);
                let now = cpu_usec(&u);
                let used = if now >= before { now - before } else { now };
                if window > 0.0 { used as f64 / 1e6 / window * 100.0 } else { 0.0 }
            });
            (name, (u, percent))
        })
        .collect()
}

#[tonic::async_trait]
impl ProcessService for ProcessApi {
    async fn processes(&self, req: Request<pb::ProcessesRequest>) -> Result<Response<pb::ProcessesResponse>, Status> {
        let reading = self.reading(req.into_inner().sample_ms).await?;
        let snap = &reading.snapshot;
        let mut owners = procs::owners(&snap.processes, bronzed_pid(), &self.service_pids());
        procs::with_cgroup_members(&mut owners, &snap.processes, &self.cgroup_members().await);
        let processes = snap
            .processes
            .iter()
            .zip(&owners)
            .map(|(p, owner)| to_pb_process(p, owner, reading.cpu_percent(p, self.units), self.units, snap.uptime))
            .collect();
        Ok(Response::new(pb::ProcessesResponse {
            processes,
            cpu_window_ms: reading.window_ms(),
            truncated: snap.truncated,
            clock_ticks: self.units.clock_ticks,
            uptime_seconds: snap.uptime.as_secs_f64(),
        }))
    }

    async fn stats(&self, req: Request<pb::StatsRequest>) -> Result<Response<pb::StatsResponse>, Status> {
        let sample_ms = req.into_inner().sample_ms;
        let services = self.services();
        let source = self.node.services.cgroups().source();
        let names = if source == "cgroup" { services.iter().map(|s| s.name.clone()).collect() } else { Vec::new() };
        let (reading, cgroups, plugins) = tokio::join!(
            self.reading(sample_ms),
            self.cgroup_reading(names, sample_ms),
            self.plugin_reading(sample_ms)
        );
        let reading = reading?;
        let snap = &reading.snapshot;
        let pids = services.iter().filter(|s| s.pid > 0).map(|s| (s.pid, s.name.clone())).collect();
        let owners = procs::owners(&snap.processes, bronzed_pid(), &pids);
        // (kind, name) → entry, summed over the owner's processes.
        let mut sums: BTreeMap<(&'static str, String), pb::StatsEntry> = BTreeMap::new();
        let entry = |kind: &'static str, name: &str| pb::StatsEntry {
            kind: kind.into(),
            name: name.into(),
            ..Default::default()
        };
        sums.insert(("bronzed", "bronzed".into()), entry("bronzed", "bronzed"));
        for s in &services {
            let mut e = entry("service", &s.name);
            e.state =
                serde_json::to_value(s.state).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default();
            sums.insert(("service", s.name.clone()), e);
        }
        for (p, owner) in snap.processes.iter().zip(&owners) {
            if *owner == Owner::None {
                continue;
            }
            let e = sums
                .entry((owner.kind(), owner.name().to_string()))
                .or_insert_with(|| entry(owner.kind(), owner.name()));
            e.processes += 1;
            e.cpu_seconds += self.units.seconds(p.stat.cpu_ticks);
            e.cpu_percent += reading.cpu_percent(p, self.units);
            e.rss_bytes += p.stat.rss_pages.saturating_mul(self.units.page_size);
        }
        // As PID 1 a service's figures are its cgroup's: they count what
        // left its process tree too.
        for ((kind, name), e) in sums.iter_mut() {
            if *kind != "service" {
                continue;
            }
            if let Some((u, percent)) = cgroups.get(name) {
                e.processes = u.processes;
                e.cpu_seconds = u.cpu_usec as f64 / 1e6;
                e.cpu_percent = *percent;
                e.rss_bytes = u.memory_bytes;
                e.cpu_max = u.cpu_max.clone();
                e.memory_max = u.memory_max.clone();
                e.oom_kills = u.oom_kills;
                e.memory_peak_bytes = u.memory_peak_bytes.unwrap_or(0);
            }
        }
        let mut entries: Vec<pb::StatsEntry> = sums.into_values().collect();
        // Plugin instances run inside bronzed: their calls, not processes.
        for plugin in self.node.plugins.list() {
            for i in plugin.instances {
                let mut e = entry("plugin", &i.id);
                e.runs = i.runs;
                // CPU of its calls so far; memory: the last call's linear
                // memory, and the most any call held.
                e.cpu_seconds = i.cpu_total.as_secs_f64();
                e.cpu_percent = plugins.get(&i.id).map_or(0.0, |(_, percent)| *percent);
                e.rss_bytes = i.last.as_ref().map_or(0, |o| o.memory_bytes);
                e.memory_peak_bytes = i.memory_peak_bytes;
                e.last_call_us = i.last.map_or(0, |o| o.duration.as_micros() as u64);
                e.state = i.state.into();
                entries.push(e);
            }
        }
        Ok(Response::new(pb::StatsResponse { entries, cpu_window_ms: reading.window_ms(), source: source.into() }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    /// A counter read at scripted times: (offset from `start`, µs used).
    fn reader<'a>(
        start: Instant,
        script: &'static [(u64, u64)],
        calls: &'a std::sync::atomic::AtomicUsize,
    ) -> impl Fn() -> std::future::Ready<(Instant, HashMap<String, u64>)> + 'a {
        move || {
            let n = calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst).min(script.len() - 1);
            let (at_ms, used) = script[n];
            std::future::ready((start + Duration::from_millis(at_ms), HashMap::from([("i".to_string(), used)])))
        }
    }

    #[tokio::test(start_paused = true)]
    async fn cpu_percent_over_the_last_reading_or_a_fresh_window() {
        let start = Instant::now();
        let last = Mutex::new(None);
        let calls = std::sync::atomic::AtomicUsize::new(0);
        // No sample: figures, no percent, but the reading becomes the base.
        let read = reader(start, &[(0, 1_000), (2_000, 501_000), (2_100, 501_000), (2_600, 2_000)], &calls);
        let got = over_window(&last, 0, &read, |v: &u64| *v).await;
        assert_eq!(got["i"], (1_000, 0.0));
        // 2 s later, sample 1 s: the base is old enough, one read: 0.5 s of
        // CPU in 2 s = 25 %.
        let got = over_window(&last, 1_000, &read, |v: &u64| *v).await;
        assert_eq!(got["i"], (501_000, 25.0));
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 2);
        // 100 ms later the base is too young for a 500 ms sample: a fresh
        // window (read, wait, read) in which the counter went back (a new
        // instance under the old name) counts from zero: 2 ms in 500 ms.
        let got = over_window(&last, 500, &read, |v: &u64| *v).await;
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 4);
        assert!((got["i"].1 - 0.4).abs() < 1e-9, "{got:?}");
    }
}
