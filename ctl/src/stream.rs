//! Streaming commands (`get -w`, `events -f`): print each item as it
//! arrives from any node, one line each.

use crate::client::{NodeClient, describe_status};
use crate::commands;
use crate::commands::{RESOURCE_COLUMNS, event_output, resource_json, resource_row};
use crate::connect::Auth;
use crate::output::{self, Format, NodeResult, Output};
use bronze_api::v1 as pb;
use serde_json::Value;
use std::process::ExitCode;
use tokio::sync::mpsc;

enum Line {
    Item { node: String, fields: Value, row: Vec<String> },
    Failed { node: String, error: String },
}

fn emit(format: Format, columns: &[&str], header_done: &mut bool, line: Line) -> bool {
    let (node, outcome) = match line {
        Line::Item { node, fields, row } => {
            let fields = fields.as_object().cloned().unwrap_or_default();
            (node, Ok(Output { fields, rows: vec![row] }))
        }
        Line::Failed { node, error } => (node, Err(error)),
    };
    let failed = outcome.is_err();
    let text = output::render(format, columns, &[NodeResult { node: node.clone(), outcome: outcome.clone() }]);
    let text = match format {
        Format::Table if *header_done => text.lines().skip(1).map(|l| format!("{l}\n")).collect(),
        _ => text,
    };
    *header_done = true;
    print!("{text}");
    if let Err(e) = outcome {
        eprintln!("node {node}: {e}");
    }
    failed
}

async fn drain(mut rx: mpsc::Receiver<Line>, format: Format, columns: &[&str]) -> ExitCode {
    let mut header_done = false;
    let mut failed = false;
    while let Some(line) = rx.recv().await {
        failed |= emit(format, columns, &mut header_done, line);
    }
    if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS }
}

pub async fn watch(
    nodes: &[String],
    auth: &Auth,
    type_name: &str,
    id: Option<String>,
    format: Format,
) -> anyhow::Result<ExitCode> {
    let (tx, rx) = mpsc::channel(64);
    for node in nodes {
        let (tx, node, auth, type_name, id) =
            (tx.clone(), node.clone(), auth.clone(), type_name.to_string(), id.clone());
        tokio::spawn(async move {
            let result = async {
                let mut c = NodeClient::connect(&node, &auth).await?;
                let req = pb::WatchRequest { namespace: String::new(), r#type: type_name, id: id.unwrap_or_default() };
                let mut stream = c.resources.watch(req).await.map_err(|s| describe_status(&s))?.into_inner();
                while let Some(ev) = stream.message().await.map_err(|s| describe_status(&s))? {
                    let kind = pb::EventType::try_from(ev.event).map(|e| e.as_str_name()).unwrap_or("UNKNOWN");
                    let kind = kind.trim_start_matches("EVENT_TYPE_").to_lowercase();
                    let Some(res) = ev.resource else { continue };
                    let mut fields = resource_json(&res);
                    fields["event"] = Value::String(kind.clone());
                    let mut row = vec![kind];
                    row.extend(resource_row(&res));
                    if tx.send(Line::Item { node: node.clone(), fields, row }).await.is_err() {
                        break;
                    }
                }
                Ok::<(), String>(())
            }
            .await;
            if let Err(error) = result {
                let _ = tx.send(Line::Failed { node, error }).await;
            }
        });
    }
    drop(tx);
    let mut columns = vec!["event"];
    columns.extend_from_slice(RESOURCE_COLUMNS);
    Ok(drain(rx, format, &columns).await)
}

pub async fn follow_events(nodes: &[String], auth: &Auth, tail: i32, format: Format) -> anyhow::Result<ExitCode> {
    let (tx, rx) = mpsc::channel(64);
    for node in nodes {
        let (tx, node, auth) = (tx.clone(), node.clone(), auth.clone());
        tokio::spawn(async move {
            let result = async {
                let mut c = NodeClient::connect(&node, &auth).await?;
                let req = pb::EventsRequest { tail_events: tail, follow: true };
                let mut stream = c.machine.events(req).await.map_err(|s| describe_status(&s))?.into_inner();
                while let Some(e) = stream.message().await.map_err(|s| describe_status(&s))? {
                    let (fields, row) = event_output(&e);
                    if tx.send(Line::Item { node: node.clone(), fields, row }).await.is_err() {
                        break;
                    }
                }
                Ok::<(), String>(())
            }
            .await;
            if let Err(error) = result {
                let _ = tx.send(Line::Failed { node, error }).await;
            }
        });
    }
    drop(tx);
    Ok(drain(rx, format, commands::EVENT_COLUMNS).await)
}

/// `logs NAME -f`: the tail, then every new line, from every node.
pub async fn follow_logs(
    nodes: &[String],
    auth: &Auth,
    service: &str,
    tail: i32,
    format: Format,
) -> anyhow::Result<ExitCode> {
    let (tx, rx) = mpsc::channel(256);
    for node in nodes {
        let (tx, node, auth, service) = (tx.clone(), node.clone(), auth.clone(), service.to_string());
        tokio::spawn(async move {
            let result = async {
                let mut c = NodeClient::connect(&node, &auth).await?;
                let req = pb::LogsRequest { service, tail_lines: tail, follow: true };
                let mut stream = c.machine.logs(req).await.map_err(|s| describe_status(&s))?.into_inner();
                while let Some(l) = stream.message().await.map_err(|s| describe_status(&s))? {
                    let fields = serde_json::json!({ "time": l.time, "line": l.line });
                    if tx.send(Line::Item { node: node.clone(), fields, row: vec![l.time, l.line] }).await.is_err() {
                        break;
                    }
                }
                Ok::<(), String>(())
            }
            .await;
            if let Err(error) = result {
                let _ = tx.send(Line::Failed { node, error }).await;
            }
        });
    }
    drop(tx);
    Ok(drain(rx, format, commands::LOG_COLUMNS).await)
}

/// `dmesg -f`.
pub async fn follow_dmesg(nodes: &[String], auth: &Auth, format: Format) -> anyhow::Result<ExitCode> {
    let (tx, rx) = mpsc::channel(256);
    for node in nodes {
        let (tx, node, auth) = (tx.clone(), node.clone(), auth.clone());
        tokio::spawn(async move {
            let result = async {
                let mut c = NodeClient::connect(&node, &auth).await?;
                let mut stream =
                    c.machine.dmesg(pb::DmesgRequest { follow: true }).await.map_err(|s| describe_status(&s))?.into_inner();
                while let Some(d) = stream.message().await.map_err(|s| describe_status(&s))? {
                    let fields = serde_json::json!({ "uptimeSeconds": d.uptime_seconds, "priority": d.priority, "message": d.message });
                    let row = vec![format!("{:.6}", d.uptime_seconds), d.priority.to_string(), d.message];
                    if tx.send(Line::Item { node: node.clone(), fields, row }).await.is_err() {
                        break;
                    }
                }
                Ok::<(), String>(())
            }
            .await;
            if let Err(error) = result {
                let _ = tx.send(Line::Failed { node, error }).await;
            }
        });
    }
    drop(tx);
    Ok(drain(rx, format, commands::DMESG_COLUMNS).await)
}
