//! Streaming commands (`get -w`, `events -f`, `logs -f`, `dmesg -f`): open
//! a stream on every node and print each item as it arrives, one line each.

use crate::client::{NodeClient, describe_status};
use crate::connect::Auth;
use crate::events::{EVENT_COLUMNS, event_output};
use crate::output::{self, Format, NodeResult, Output};
use crate::resources::{RESOURCE_COLUMNS, resource_json, resource_row};
use crate::services::{DMESG_COLUMNS, LOG_COLUMNS};
use bronze_api::v1 as pb;
use serde_json::Value;
use std::future::Future;
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
        eprintln!("{}", output::error_line(&node, &e));
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

/// Opens a stream with `open` on every node and prints what `map` makes of
/// each item (None skips it) until every stream ends.
async fn stream_all<T, Open, Fut, Map>(
    nodes: &[String],
    auth: &Auth,
    columns: &[&str],
    format: Format,
    open: Open,
    map: Map,
) -> ExitCode
where
    T: Send + 'static,
    Open: Fn(NodeClient) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<tonic::Response<tonic::Streaming<T>>, tonic::Status>> + Send,
    Map: Fn(T) -> Option<(Value, Vec<String>)> + Clone + Send + Sync + 'static,
{
    let (tx, rx) = mpsc::channel(256);
    for node in nodes {
        let (tx, node, auth, open, map) = (tx.clone(), node.clone(), auth.clone(), open.clone(), map.clone());
        tokio::spawn(async move {
            let result = async {
                let client = NodeClient::connect(&node, &auth).await?;
                let mut stream = open(client).await.map_err(|s| describe_status(&s))?.into_inner();
                while let Some(item) = stream.message().await.map_err(|s| describe_status(&s))? {
                    let Some((fields, row)) = map(item) else { continue };
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
    drain(rx, format, columns).await
}

/// `get TYPE [ID] -w`.
pub async fn watch(nodes: &[String], auth: &Auth, type_name: &str, id: Option<String>, format: Format) -> ExitCode {
    let mut columns = vec!["event"];
    columns.extend_from_slice(RESOURCE_COLUMNS);
    let req = pb::WatchRequest { namespace: String::new(), r#type: type_name.to_string(), id: id.unwrap_or_default() };
    let open = move |mut c: NodeClient| {
        let req = req.clone();
        async move { c.resources.watch(req).await }
    };
    let map = |ev: pb::WatchResponse| {
        let kind = pb::EventType::try_from(ev.event).map(|e| e.as_str_name()).unwrap_or("UNKNOWN");
        let kind = kind.trim_start_matches("EVENT_TYPE_").to_lowercase();
        let res = ev.resource?;
        let mut fields = resource_json(&res);
        fields["event"] = Value::String(kind.clone());
        let mut row = vec![kind];
        row.extend(resource_row(&res));
        Some((fields, row))
    };
    stream_all(nodes, auth, &columns, format, open, map).await
}

/// `events -f`.
pub async fn follow_events(nodes: &[String], auth: &Auth, tail: i32, format: Format) -> ExitCode {
    let open = move |mut c: NodeClient| async move {
        c.machine.events(pb::EventsRequest { tail_events: tail, follow: true }).await
    };
    stream_all(nodes, auth, EVENT_COLUMNS, format, open, |e: pb::Event| Some(event_output(&e))).await
}

/// `logs NAME -f`: the tail, then every new line.
pub async fn follow_logs(nodes: &[String], auth: &Auth, service: &str, tail: i32, format: Format) -> ExitCode {
    let service = service.to_string();
    let open = move |mut c: NodeClient| {
        let req = pb::LogsRequest { service: service.clone(), tail_lines: tail, follow: true };
        async move { c.machine.logs(req).await }
    };
    let map = |l: pb::LogEntry| Some((serde_json::json!({ "time": l.time, "line": l.line }), vec![l.time, l.line]));
    stream_all(nodes, auth, LOG_COLUMNS, format, open, map).await
}

/// `dmesg -f`.
pub async fn follow_dmesg(nodes: &[String], auth: &Auth, format: Format) -> ExitCode {
    let open = |mut c: NodeClient| async move { c.machine.dmesg(pb::DmesgRequest { follow: true }).await };
    let map = |d: pb::DmesgEntry| {
        let fields =
            serde_json::json!({ "uptimeSeconds": d.uptime_seconds, "priority": d.priority, "message": d.message });
        Some((fields, vec![format!("{:.6}", d.uptime_seconds), d.priority.to_string(), d.message]))
    };
    stream_all(nodes, auth, DMESG_COLUMNS, format, open, map).await
}
