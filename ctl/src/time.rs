//! `time [--check SERVER]`: the node's time sync status, or a one-shot
//! query of an NTP server from the node (changes nothing).

use crate::cli::Globals;
use crate::client::{NodeClient, call};
use crate::output::{Output, obj};
use bronze_api::v1 as pb;
use bronze_api::v1::time_service_client::TimeServiceClient;
use clap::Args;
use serde_json::json;
use std::process::ExitCode;

#[derive(Debug, Args)]
pub struct TimeArgs {
    /// Query this NTP server (host[:port]) once from the node; changes nothing.
    #[arg(long, value_name = "SERVER")]
    pub check: Option<String>,
}

pub async fn run(args: &TimeArgs, g: &Globals) -> anyhow::Result<ExitCode> {
    match &args.check {
        Some(server) => g.each_node(TIME_CHECK_COLUMNS, |c| time_check(c, server.clone())).await,
        None => g.each_node(TIME_COLUMNS, time).await,
    }
}

pub const TIME_COLUMNS: &[&str] = &["server", "synced", "offset", "rtt", "poll", "decision", "mode"];

pub async fn time(c: NodeClient) -> Result<Output, String> {
    let mut client = TimeServiceClient::new(c.channel.clone());
    Ok(time_output(&call(client.time(pb::TimeRequest {})).await?))
}

pub fn time_output(t: &pb::TimeResponse) -> Output {
    let fields = obj(json!({
        "enabled": t.enabled, "synced": t.synced, "syncedByTimeout": t.synced_by_timeout, "epoch": t.epoch,
        "mode": t.mode, "server": t.server, "address": t.address, "offsetSeconds": t.offset_seconds,
        "rttSeconds": t.rtt_seconds, "jitterSeconds": t.jitter_seconds, "pollSeconds": t.poll_seconds,
        "lastSync": t.last_sync, "lastError": t.last_error, "lastDecision": t.last_decision,
        "spikes": t.spikes, "steps": t.steps, "servers": t.servers,
    }));
    let server = if t.enabled { t.server.clone() } else { "(disabled)".into() };
    let row = vec![
        server,
        if t.synced_by_timeout { "by-timeout".into() } else { t.synced.to_string() },
        format!("{:+.6}s", t.offset_seconds),
        format!("{:.6}s", t.rtt_seconds),
        format!("{}s", t.poll_seconds),
        t.last_decision.clone(),
        t.mode.clone(),
    ];
    Output { fields, rows: vec![row] }
}

pub const TIME_CHECK_COLUMNS: &[&str] = &["server", "address", "offset", "rtt", "stratum", "local", "remote"];

pub async fn time_check(c: NodeClient, server: String) -> Result<Output, String> {
    let mut client = TimeServiceClient::new(c.channel.clone());
    Ok(time_check_output(&call(client.time_check(pb::TimeCheckRequest { server })).await?))
}

pub fn time_check_output(t: &pb::TimeCheckResponse) -> Output {
    let fields = obj(json!({
        "server": t.server, "address": t.address, "localTime": t.local_time, "remoteTime": t.remote_time,
        "offsetSeconds": t.offset_seconds, "rttSeconds": t.rtt_seconds, "stratum": t.stratum, "leap": t.leap,
    }));
    let row = vec![
        t.server.clone(),
        t.address.clone(),
        format!("{:+.6}s", t.offset_seconds),
        format!("{:.6}s", t.rtt_seconds),
        t.stratum.to_string(),
        t.local_time.clone(),
        t.remote_time.clone(),
    ];
    Output { fields, rows: vec![row] }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_rows() {
        let t = pb::TimeResponse {
            enabled: true,
            synced: true,
            server: "ntp.example".into(),
            offset_seconds: -0.0015,
            rtt_seconds: 0.02,
            poll_seconds: 64.0,
            last_decision: "slew".into(),
            mode: "adjtimex".into(),
            ..Default::default()
        };
        assert_eq!(
            time_output(&t).rows,
            [["ntp.example", "true", "-0.001500s", "0.020000s", "64s", "slew", "adjtimex"]]
        );
        let off = pb::TimeResponse { enabled: false, synced_by_timeout: true, ..t };
        assert_eq!(time_output(&off).rows[0][..2], ["(disabled)", "by-timeout"]);
    }
}
