//! `services`, `service NAME start|stop|restart`, `logs NAME [-f]`,
//! `dmesg [-f]`: the supervised services, their output and the kernel log.

use crate::cli::Globals;
use crate::client::{NodeClient, call, describe_status};
use crate::machine::{MESSAGE_COLUMNS, message_output};
use crate::output::{Output, obj};
use bronze_api::v1 as pb;
use clap::{Args, ValueEnum};
use serde_json::json;
use std::process::ExitCode;

#[derive(Debug, Args)]
pub struct ServiceArgs {
    pub name: String,
    #[arg(value_enum)]
    pub action: ServiceAction,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ServiceAction {
    Start,
    Stop,
    Restart,
}

#[derive(Debug, Args)]
pub struct LogsArgs {
    pub service: String,
    /// Keep printing new lines.
    #[arg(short = 'f', long)]
    pub follow: bool,
    /// How many of the latest lines to show (all by default).
    #[arg(long)]
    pub tail: Option<i32>,
}

#[derive(Debug, Args)]
pub struct DmesgArgs {
    /// Keep printing new records.
    #[arg(short = 'f', long)]
    pub follow: bool,
}

pub async fn run_action(args: &ServiceArgs, g: &Globals) -> anyhow::Result<ExitCode> {
    g.each_node(MESSAGE_COLUMNS, |c| service_action(c, args.name.clone(), args.action)).await
}

pub async fn run_logs(args: &LogsArgs, g: &Globals) -> anyhow::Result<ExitCode> {
    let tail = args.tail.unwrap_or(-1);
    if args.follow {
        let target = g.target()?;
        return Ok(crate::stream::follow_logs(&target.nodes, &target.auth, &args.service, tail, g.format()).await);
    }
    g.each_node(LOG_COLUMNS, |c| logs(c, args.service.clone(), tail)).await
}

pub async fn run_dmesg(args: &DmesgArgs, g: &Globals) -> anyhow::Result<ExitCode> {
    if args.follow {
        let target = g.target()?;
        return Ok(crate::stream::follow_dmesg(&target.nodes, &target.auth, g.format()).await);
    }
    g.each_node(DMESG_COLUMNS, dmesg).await
}

pub const SERVICE_COLUMNS: &[&str] = &["service", "state", "health", "pid", "restarts", "last exit", "message"];

pub async fn services(mut c: NodeClient) -> Result<Output, String> {
    Ok(services_output(&call(c.machine.service_list(pb::ServiceListRequest {})).await?))
}

pub fn services_output(r: &pb::ServiceListResponse) -> Output {
    let mut values = Vec::new();
    let mut rows = Vec::new();
    for s in &r.services {
        rows.push(vec![
            s.name.clone(),
            s.state.clone(),
            s.health.clone(),
            if s.pid > 0 { s.pid.to_string() } else { String::new() },
            s.restarts.to_string(),
            s.last_exit.clone(),
            s.message.clone(),
        ]);
        values.push(json!({
            "name": s.name, "state": s.state, "health": s.health, "healthMessage": s.health_message, "pid": s.pid,
            "restarts": s.restarts, "lastExit": s.last_exit, "message": s.message, "since": s.since,
        }));
    }
    Output { fields: obj(json!({ "services": values })), rows }
}

/// `service NAME start|stop|restart`.
pub async fn service_action(mut c: NodeClient, name: String, action: ServiceAction) -> Result<Output, String> {
    let req = pb::ServiceRequest { name };
    let r = match action {
        ServiceAction::Start => call(c.machine.service_start(req)).await?,
        ServiceAction::Stop => call(c.machine.service_stop(req)).await?,
        ServiceAction::Restart => call(c.machine.service_restart(req)).await?,
    };
    Ok(message_output(&r.message))
}

pub const LOG_COLUMNS: &[&str] = &["time", "line"];

/// The last `tail` lines of a service's output (all kept when negative).
pub async fn logs(mut c: NodeClient, service: String, tail: i32) -> Result<Output, String> {
    let mut stream = call(c.machine.logs(pb::LogsRequest { service, tail_lines: tail, follow: false })).await?;
    let mut lines = Vec::new();
    while let Some(l) = stream.message().await.map_err(|s| describe_status(&s))? {
        lines.push(l);
    }
    Ok(logs_output(&lines))
}

pub fn logs_output(lines: &[pb::LogEntry]) -> Output {
    let rows = lines.iter().map(|l| vec![l.time.clone(), l.line.clone()]).collect();
    let values: Vec<_> = lines.iter().map(|l| json!({ "time": l.time, "line": l.line })).collect();
    Output { fields: obj(json!({ "lines": values })), rows }
}

pub const DMESG_COLUMNS: &[&str] = &["uptime", "priority", "message"];

/// The kernel log buffer.
pub async fn dmesg(mut c: NodeClient) -> Result<Output, String> {
    let mut stream = call(c.machine.dmesg(pb::DmesgRequest { follow: false })).await?;
    let mut entries = Vec::new();
    while let Some(d) = stream.message().await.map_err(|s| describe_status(&s))? {
        entries.push(d);
    }
    Ok(dmesg_output(&entries))
}

pub fn dmesg_output(entries: &[pb::DmesgEntry]) -> Output {
    let rows =
        entries.iter().map(|d| vec![format!("{:.6}", d.uptime_seconds), d.priority.to_string(), d.message.clone()]);
    let values: Vec<_> = entries
        .iter()
        .map(|d| {
            json!({ "uptimeSeconds": d.uptime_seconds, "priority": d.priority, "facility": d.facility, "message": d.message })
        })
        .collect();
    Output { fields: obj(json!({ "entries": values })), rows: rows.collect() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stopped_service_has_no_pid_cell() {
        let r = pb::ServiceListResponse {
            services: vec![
                pb::ServiceInfo { name: "a".into(), state: "running".into(), pid: 42, ..Default::default() },
                pb::ServiceInfo { name: "b".into(), state: "stopped".into(), restarts: 3, ..Default::default() },
            ],
        };
        let out = services_output(&r);
        assert_eq!(out.rows[0][..5], ["a", "running", "", "42", "0"]);
        assert_eq!(out.rows[1][..5], ["b", "stopped", "", "", "3"]);
        assert_eq!(out.fields["services"][1]["restarts"], 3);
    }

    #[test]
    fn logs_and_dmesg_rows() {
        let lines = [pb::LogEntry { time: "t1".into(), line: "hello".into() }];
        assert_eq!(logs_output(&lines).rows, [["t1", "hello"]]);
        let entries =
            [pb::DmesgEntry { uptime_seconds: 1.5, priority: 6, message: "eth0 up".into(), ..Default::default() }];
        let out = dmesg_output(&entries);
        assert_eq!(out.rows, [["1.500000", "6", "eth0 up"]]);
        assert_eq!(out.fields["entries"][0]["priority"], 6);
    }
}
