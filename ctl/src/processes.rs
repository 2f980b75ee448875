//! `processes` (`ps`) and `stats`: the node's processes with the service or
//! plugin each belongs to, `--watch` refreshing like `top`; and what
//! bronzed, each service and each plugin instance use.

use crate::cli::{Globals, parse_duration};
use crate::client::{NodeClient, call};
use crate::output::{self, Format, NodeResult, Output, obj};
use bronze_api::v1 as pb;
use bronze_api::v1::process_service_client::ProcessServiceClient;
use clap::{Args, ValueEnum};
use serde_json::json;
use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::Duration;

#[derive(Debug, Args)]
pub struct ProcessesArgs {
    /// Refresh until interrupted, like top.
    #[arg(short = 'w', long)]
    pub watch: bool,
    /// Time between refreshes with --watch.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub interval: Duration,
    /// Order of the rows.
    #[arg(long, value_enum, default_value_t = Sort::Cpu)]
    pub sort: Sort,
    /// Measure CPU % over at least this long (0s: the average since each
    /// process started, as ps shows it). With --watch, since the last refresh.
    #[arg(long, default_value = "250ms", value_parser = parse_duration)]
    pub sample: Duration,
    /// Show at most this many processes per node (the first in --sort order).
    #[arg(long)]
    pub limit: Option<usize>,
}

#[derive(Debug, Args)]
pub struct StatsArgs {
    /// Measure CPU % over at least this long (0s: since each process started).
    #[arg(long, default_value = "250ms", value_parser = parse_duration)]
    pub sample: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Sort {
    /// Highest CPU % first.
    Cpu,
    /// Largest resident set first.
    Memory,
    /// Lowest pid first.
    Pid,
}

pub const PROCESS_COLUMNS: &[&str] =
    &["pid", "parent", "state", "threads", "cpu time", "cpu%", "rss", "service", "command"];

pub const STATS_COLUMNS: &[&str] =
    &["kind", "name", "processes", "cpu time", "cpu%", "memory", "runs", "last call", "limits", "state"];

fn millis(d: Duration) -> u32 {
    u32::try_from(d.as_millis()).unwrap_or(u32::MAX)
}

pub async fn run(args: &ProcessesArgs, g: &Globals) -> anyhow::Result<ExitCode> {
    let (sort, limit) = (args.sort, args.limit);
    if !args.watch {
        let sample_ms = millis(args.sample);
        return g.each_node(PROCESS_COLUMNS, |c| processes(c, sample_ms, sort, limit)).await;
    }
    // Each refresh measures CPU since the node's previous reading, which is
    // the previous refresh once it is at least `sample` old.
    let sample_ms = millis(args.sample.min(args.interval));
    let terminal = std::io::stdout().is_terminal();
    loop {
        let results = g.fan_out(|c| processes(c, sample_ms, sort, limit)).await?;
        let mut frame = String::new();
        if terminal {
            // Home and clear, as top does.
            frame.push_str("\x1b[H\x1b[2J");
        }
        if g.format() == Format::Table {
            frame.push_str(&frame_header(&results, args.interval, sort));
        }
        frame.push_str(&output::render(g.format(), PROCESS_COLUMNS, &results));
        let mut out = std::io::stdout().lock();
        if out.write_all(frame.as_bytes()).and_then(|()| out.flush()).is_err() {
            // The reader went away (a closed pipe): stop like top would.
            return Ok(ExitCode::SUCCESS);
        }
        drop(out);
        for r in &results {
            if let Err(e) = &r.outcome {
                eprintln!("{}", output::error_line(&r.node, e));
            }
        }
        tokio::time::sleep(args.interval).await;
    }
}

/// `# 12:00:01 every 1s by cpu; cpu over a:1 1003 ms` above a table frame.
pub fn frame_header(results: &[NodeResult], interval: Duration, sort: Sort) -> String {
    let now = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    // "2026-12-05T19:40:01Z" → "19:40:01".
    let clock = now.get(11..19).unwrap_or(&now).to_string();
    let windows: Vec<String> = results
        .iter()
        .filter_map(|r| r.outcome.as_ref().ok().map(|o| (r, o)))
        .map(|(r, o)| format!("{} {} ms", r.node, o.fields.get("cpuWindowMs").and_then(|v| v.as_u64()).unwrap_or(0)))
        .collect();
    format!(
        "# {clock} UTC every {} by {}; cpu over {}\n",
        humantime::format_duration(interval),
        format!("{sort:?}").to_lowercase(),
        windows.join(", ")
    )
}

pub async fn processes(c: NodeClient, sample_ms: u32, sort: Sort, limit: Option<usize>) -> Result<Output, String> {
    let mut client = ProcessServiceClient::new(c.channel).max_decoding_message_size(256 << 20);
    let mut r = call(client.processes(pb::ProcessesRequest { sample_ms })).await?;
    sort_processes(&mut r.processes, sort);
    if let Some(limit) = limit {
        r.processes.truncate(limit);
    }
    Ok(processes_output(&r))
}

pub fn sort_processes(list: &mut [pb::ProcessInfo], sort: Sort) {
    match sort {
        Sort::Cpu => list.sort_by(|a, b| b.cpu_percent.total_cmp(&a.cpu_percent).then(a.pid.cmp(&b.pid))),
        Sort::Memory => list.sort_by(|a, b| b.rss_bytes.cmp(&a.rss_bytes).then(a.pid.cmp(&b.pid))),
        Sort::Pid => list.sort_by_key(|p| p.pid),
    }
}

/// What a process belongs to, as one word: the service's name, bronzed,
/// plugin-compile, or nothing.
fn owner(p: &pb::ProcessInfo) -> String {
    match p.owner_kind.as_str() {
        "service" => p.owner.clone(),
        "" => String::new(),
        kind => kind.to_string(),
    }
}

/// 1536 → "1.5 KiB".
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 { format!("{n} B") } else { format!("{value:.1} {}", UNITS[unit]) }
}

pub fn processes_output(r: &pb::ProcessesResponse) -> Output {
    let mut rows = Vec::with_capacity(r.processes.len());
    let mut values = Vec::with_capacity(r.processes.len());
    for p in &r.processes {
        rows.push(vec![
            p.pid.to_string(),
            p.parent.to_string(),
            p.state.clone(),
            p.threads.to_string(),
            format!("{:.2}s", p.cpu_seconds),
            format!("{:.1}", p.cpu_percent),
            bytes(p.rss_bytes),
            owner(p),
            p.command.clone(),
        ]);
        values.push(json!({
            "pid": p.pid, "parent": p.parent, "state": p.state, "threads": p.threads,
            "cpuSeconds": p.cpu_seconds, "cpuPercent": p.cpu_percent, "rssBytes": p.rss_bytes,
            "service": owner(p), "ownerKind": p.owner_kind, "name": p.name, "command": p.command,
            "commandTruncated": p.command_truncated, "uid": p.uid, "ageSeconds": p.age_seconds,
        }));
    }
    let fields = obj(json!({ "processes": values, "cpuWindowMs": r.cpu_window_ms, "truncated": r.truncated }));
    Output { fields, rows }
}

pub async fn run_stats(args: &StatsArgs, g: &Globals) -> anyhow::Result<ExitCode> {
    let sample_ms = millis(args.sample);
    g.each_node(STATS_COLUMNS, |c| stats(c, sample_ms)).await
}

pub async fn stats(c: NodeClient, sample_ms: u32) -> Result<Output, String> {
    let mut client = ProcessServiceClient::new(c.channel);
    Ok(stats_output(&call(client.stats(pb::StatsRequest { sample_ms })).await?))
}

pub fn stats_output(r: &pb::StatsResponse) -> Output {
    let mut rows = Vec::with_capacity(r.entries.len());
    let mut values = Vec::with_capacity(r.entries.len());
    for e in &r.entries {
        let in_process = e.kind == "plugin";
        rows.push(vec![
            e.kind.clone(),
            e.name.clone(),
            if in_process { String::new() } else { e.processes.to_string() },
            format!("{:.2}s", e.cpu_seconds),
            if in_process { String::new() } else { format!("{:.1}", e.cpu_percent) },
            if in_process && e.runs == 0 { String::new() } else { bytes(e.rss_bytes) },
            if in_process { e.runs.to_string() } else { String::new() },
            if in_process && e.runs > 0 { format!("{:.1} ms", e.last_call_us as f64 / 1e3) } else { String::new() },
            limits(e),
            e.state.clone(),
        ]);
        values.push(json!({
            "kind": e.kind, "name": e.name, "processes": e.processes, "cpuSeconds": e.cpu_seconds,
            "cpuPercent": e.cpu_percent, "rssBytes": e.rss_bytes, "runs": e.runs, "lastCallUs": e.last_call_us,
            "state": e.state, "cpuMax": e.cpu_max, "memoryMax": e.memory_max, "oomKills": e.oom_kills,
            "memoryPeakBytes": e.memory_peak_bytes,
        }));
    }
    Output { fields: obj(json!({ "entries": values, "cpuWindowMs": r.cpu_window_ms, "source": r.source })), rows }
}

/// A cgroup's limits and OOM kills, short: `cpu 0.50, mem 64.0 MiB, oom 1`
/// (nothing when unlimited, or outside cgroups).
pub fn limits(e: &pb::StatsEntry) -> String {
    let mut parts = Vec::new();
    let mut cpu = e.cpu_max.split_whitespace();
    if let (Some(quota), Some(period)) = (cpu.next(), cpu.next())
        && let (Ok(quota), Ok(period)) = (quota.parse::<f64>(), period.parse::<f64>())
        && period > 0.0
    {
        parts.push(format!("cpu {:.2}", quota / period));
    }
    if let Ok(memory) = e.memory_max.trim().parse::<u64>() {
        parts.push(format!("mem {}", bytes(memory)));
    }
    if e.oom_kills > 0 {
        parts.push(format!("oom {}", e.oom_kills));
    }
    parts.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(pid: i32, cpu: f64, rss: u64) -> pb::ProcessInfo {
        pb::ProcessInfo { pid, cpu_percent: cpu, rss_bytes: rss, ..Default::default() }
    }

    #[test]
    fn sorted_by_cpu_memory_or_pid() {
        let mut list = vec![p(3, 1.0, 10), p(1, 50.0, 5), p(2, 1.0, 99)];
        sort_processes(&mut list, Sort::Cpu);
        assert_eq!(list.iter().map(|p| p.pid).collect::<Vec<_>>(), [1, 2, 3]);
        sort_processes(&mut list, Sort::Memory);
        assert_eq!(list.iter().map(|p| p.pid).collect::<Vec<_>>(), [2, 3, 1]);
        sort_processes(&mut list, Sort::Pid);
        assert_eq!(list.iter().map(|p| p.pid).collect::<Vec<_>>(), [1, 2, 3]);
    }

    #[test]
    fn rows_and_fields() {
        let r = pb::ProcessesResponse {
            processes: vec![pb::ProcessInfo {
                pid: 7,
                parent: 1,
                state: "S".into(),
                threads: 2,
                cpu_seconds: 1.234,
                cpu_percent: 12.34,
                rss_bytes: 3 << 20,
                owner_kind: "service".into(),
                owner: "web".into(),
                command: "nginx -g daemon\\x1b".into(),
                ..Default::default()
            }],
            cpu_window_ms: 1000,
            ..Default::default()
        };
        let out = processes_output(&r);
        assert_eq!(out.rows, [["7", "1", "S", "2", "1.23s", "12.3", "3.0 MiB", "web", "nginx -g daemon\\x1b"]]);
        assert_eq!(out.fields["processes"][0]["service"], "web");
        assert_eq!(out.fields["cpuWindowMs"], 1000);
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(1536), "1.5 KiB");
    }

    #[test]
    fn plugin_instances_show_calls_not_processes() {
        let r = pb::StatsResponse {
            entries: vec![
                pb::StatsEntry {
                    kind: "bronzed".into(),
                    name: "bronzed".into(),
                    processes: 1,
                    rss_bytes: 2048,
                    ..Default::default()
                },
                pb::StatsEntry {
                    kind: "plugin".into(),
                    name: "health-tcp".into(),
                    cpu_seconds: 0.012,
                    rss_bytes: 1 << 20,
                    runs: 4,
                    last_call_us: 1500,
                    state: "idle".into(),
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        let out = stats_output(&r);
        assert_eq!(out.rows[0][..6], ["bronzed", "bronzed", "1", "0.00s", "0.0", "2.0 KiB"]);
        assert_eq!(out.rows[1], ["plugin", "health-tcp", "", "0.01s", "", "1.0 MiB", "4", "1.5 ms", "", "idle"]);
    }

    #[test]
    fn cgroup_limits_are_shown_short() {
        let mut e =
            pb::StatsEntry { cpu_max: "50000 100000".into(), memory_max: "67108864".into(), ..Default::default() };
        assert_eq!(limits(&e), "cpu 0.50, mem 64.0 MiB");
        e.oom_kills = 2;
        e.cpu_max = "max 100000".into();
        assert_eq!(limits(&e), "mem 64.0 MiB, oom 2");
        e.memory_max = "max".into();
        e.oom_kills = 0;
        assert_eq!(limits(&e), "");
    }
}
