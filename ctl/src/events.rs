//! `events [--tail N] [-f]`: the audit and system events of every node.

use crate::cli::Globals;
use crate::client::{CALL_TIMEOUT, NodeClient, call, describe_status};
use crate::output::{Output, cell, obj};
use bronze_api::v1 as pb;
use clap::Args;
use serde_json::{Value, json};
use std::process::ExitCode;

#[derive(Debug, Args)]
pub struct EventsArgs {
    /// How many of the latest events to show.
    #[arg(long, default_value_t = 20)]
    pub tail: i32,
    /// Keep the stream open and print new events.
    #[arg(short = 'f', long)]
    pub follow: bool,
}

pub async fn run(args: &EventsArgs, g: &Globals) -> anyhow::Result<ExitCode> {
    if args.follow {
        let target = g.target()?;
        return Ok(crate::stream::follow_events(&target.nodes, &target.auth, args.tail, g.format()).await);
    }
    g.each_node(EVENT_COLUMNS, |c| events(c, args.tail)).await
}

pub const EVENT_COLUMNS: &[&str] = &["time", "kind", "subject", "method", "result", "message"];

/// One event as JSON and as a table row.
pub fn event_output(e: &pb::Event) -> (Value, Vec<String>) {
    let value = match &e.audit {
        Some(a) => json!({
            "id": e.id, "time": e.time, "kind": e.kind, "subject": a.subject, "roles": a.roles,
            "method": a.method, "result": a.result, "message": a.message, "peer": a.peer,
        }),
        None => json!({ "id": e.id, "time": e.time, "kind": e.kind, "severity": e.severity, "message": e.message }),
    };
    let row = EVENT_COLUMNS.iter().map(|c| cell(value.get(*c))).collect();
    (value, row)
}

/// The last `tail` events (all kept when negative), without following.
pub async fn events(mut c: NodeClient, tail: i32) -> Result<Output, String> {
    let mut stream = call(c.machine.events(pb::EventsRequest { tail_events: tail, follow: false })).await?;
    let mut values = Vec::new();
    let mut rows = Vec::new();
    loop {
        match tokio::time::timeout(CALL_TIMEOUT, stream.message()).await {
            Ok(Ok(Some(e))) => {
                let (v, row) = event_output(&e);
                values.push(v);
                rows.push(row);
            }
            Ok(Ok(None)) => break,
            Ok(Err(status)) => return Err(describe_status(&status)),
            Err(_) => return Err("event stream stalled".into()),
        }
    }
    Ok(Output { fields: obj(json!({ "events": values })), rows })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audit_and_system_events_share_the_columns() {
        let audit = pb::Event {
            id: "7".into(),
            time: "t".into(),
            kind: "audit".into(),
            audit: Some(pb::AuditEvent {
                subject: "admin".into(),
                method: "/bronze.v1.MachineService/Reboot".into(),
                result: "ok".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let (value, row) = event_output(&audit);
        assert_eq!(row, ["t", "audit", "admin", "/bronze.v1.MachineService/Reboot", "ok", ""]);
        assert_eq!(value["id"], "7");
        let system = pb::Event { kind: "system".into(), message: "booted".into(), ..Default::default() };
        assert_eq!(event_output(&system).1, ["", "system", "", "", "", "booted"]);
    }
}
