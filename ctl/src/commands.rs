//! One function per remote command: call the node, shape the answer into
//! an [`Output`]. Fan-out and rendering live elsewhere.

use crate::client::{NodeClient, describe_status};
use crate::output::{Output, cell};
use bronze_api::v1 as pb;
use serde_json::{Map, Value, json};
use std::time::Duration;

/// Deadline of one unary call.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);

fn obj(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

async fn call<T, F>(fut: F) -> Result<T, String>
where
    F: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
{
    call_within(CALL_TIMEOUT, fut).await
}

/// A unary call with its own deadline, its failure as a sentence.
pub async fn call_within<T, F>(deadline: Duration, fut: F) -> Result<T, String>
where
    F: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
{
    match tokio::time::timeout(deadline, fut).await {
        Ok(Ok(resp)) => Ok(resp.into_inner()),
        Ok(Err(status)) => Err(describe_status(&status)),
        Err(_) => Err(format!("no answer within {}s", deadline.as_secs())),
    }
}

pub const VERSION_COLUMNS: &[&str] = &["tag", "mode", "maintenance", "arch"];
pub const VERSION_REASON_COLUMNS: &[&str] = &["tag", "mode", "maintenance", "arch", "maintenanceReason"];

pub async fn version(mut c: NodeClient) -> Result<Output, String> {
    let v = call(c.machine.version(pb::VersionRequest {})).await?;
    let fields = obj(json!({
        "tag": v.tag, "commit": v.commit, "mode": v.mode, "maintenance": v.maintenance, "arch": v.arch, "os": v.os,
        "maintenanceReason": v.maintenance_reason,
    }));
    // Why a node sits in maintenance mode is worth a column only then.
    let columns = if v.maintenance_reason.is_empty() { VERSION_COLUMNS } else { VERSION_REASON_COLUMNS };
    Ok(Output::single(fields, columns))
}

pub const APPLY_COLUMNS: &[&str] = &["mode", "message"];

pub async fn apply_config(
    mut c: NodeClient,
    data: Vec<u8>,
    mode: pb::ApplyMode,
    try_timeout: Option<Duration>,
    dry_run: bool,
) -> Result<Output, String> {
    let req = pb::ApplyConfigurationRequest {
        data,
        mode: mode as i32,
        dry_run,
        try_timeout_ms: try_timeout.map_or(0, |d| d.as_millis() as u64),
    };
    let r = call(c.machine.apply_configuration(req)).await?;
    let mut fields = obj(json!({ "mode": r.mode, "message": r.message, "warnings": r.warnings, "diff": r.diff }));
    if dry_run {
        fields.insert("networkDiff".into(), json!(r.network_diff));
        fields.insert("networkNotes".into(), json!(r.network_notes));
    }
    let mut out = Output::single(fields, APPLY_COLUMNS);
    for w in &r.warnings {
        out.rows.push(vec![String::new(), format!("warning: {w}")]);
    }
    if dry_run {
        for line in r.diff.lines() {
            out.rows.push(vec![String::new(), line.to_string()]);
        }
        for line in crate::network::dry_run_lines(&r.network_diff, &r.network_notes) {
            out.rows.push(vec![String::new(), line]);
        }
    }
    Ok(out)
}

pub const MESSAGE_COLUMNS: &[&str] = &["message"];

pub async fn reboot(mut c: NodeClient) -> Result<Output, String> {
    let r = call(c.machine.reboot(pb::RebootRequest {})).await?;
    Ok(Output::single(obj(json!({ "message": r.message })), MESSAGE_COLUMNS))
}

pub const PLATFORM_REFRESH_COLUMNS: &[&str] = &["platform", "message"];

pub async fn platform_refresh(mut c: NodeClient) -> Result<Output, String> {
    let r = call(c.machine.platform_refresh(pb::PlatformRefreshRequest {})).await?;
    Ok(Output::single(obj(json!({ "platform": r.platform, "message": r.message })), PLATFORM_REFRESH_COLUMNS))
}

pub async fn shutdown(mut c: NodeClient) -> Result<Output, String> {
    let r = call(c.machine.shutdown(pb::ShutdownRequest {})).await?;
    Ok(Output::single(obj(json!({ "message": r.message })), MESSAGE_COLUMNS))
}

pub const HEALTH_COLUMNS: &[&str] = &["status"];

pub async fn health(c: NodeClient) -> Result<Output, String> {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_client::HealthClient;
    let mut client = HealthClient::new(c.channel.clone());
    let r = call(client.check(HealthCheckRequest { service: String::new() })).await?;
    let status = tonic_health::pb::health_check_response::ServingStatus::try_from(r.status)
        .map(|s| s.as_str_name().to_string())
        .unwrap_or_else(|_| format!("UNKNOWN({})", r.status));
    let serving = status == "SERVING";
    let out = Output::single(obj(json!({ "status": status })), HEALTH_COLUMNS);
    if serving { Ok(out) } else { Err(format!("not serving: {status}")) }
}

pub const RESOURCE_COLUMNS: &[&str] = &["namespace", "type", "id", "version", "spec"];

/// A resource as JSON: `{metadata, spec}` with the spec decoded.
pub fn resource_json(r: &pb::Resource) -> Value {
    let m = r.metadata.clone().unwrap_or_default();
    let spec: Value = serde_json::from_str(&r.spec_json).unwrap_or(Value::String(r.spec_json.clone()));
    json!({
        "metadata": { "namespace": m.namespace, "type": m.r#type, "id": m.id, "version": m.version,
                      "created": m.created, "updated": m.updated },
        "spec": spec,
    })
}

/// The table row of a resource; the spec is compact JSON.
pub fn resource_row(r: &pb::Resource) -> Vec<String> {
    let m = r.metadata.clone().unwrap_or_default();
    vec![m.namespace, m.r#type, m.id, m.version.to_string(), r.spec_json.clone()]
}

pub async fn get(mut c: NodeClient, type_name: String, id: Option<String>) -> Result<Output, String> {
    match id {
        Some(id) => {
            let r = call(c.resources.get(pb::GetRequest { namespace: String::new(), r#type: type_name, id })).await?;
            let res = r.resource.unwrap_or_default();
            Ok(Output { fields: obj(resource_json(&res)), rows: vec![resource_row(&res)] })
        }
        None => {
            let r = call(c.resources.list(pb::ListRequest { namespace: String::new(), r#type: type_name })).await?;
            let items: Vec<Value> = r.resources.iter().map(resource_json).collect();
            Ok(Output {
                fields: obj(json!({ "resources": items })),
                rows: r.resources.iter().map(resource_row).collect(),
            })
        }
    }
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

pub const CLIENT_CONFIG_COLUMNS: &[&str] = &["roles", "path"];

/// Asks the node for a client certificate with `roles` and a `key_type` key.
pub async fn generate_client(
    mut c: NodeClient,
    roles: Vec<String>,
    ttl: Option<Duration>,
    key_type: bronze_pki::KeyType,
) -> Result<pb::GenerateClientConfigurationResponse, String> {
    let key_type = match key_type {
        bronze_pki::KeyType::EcdsaP256 => pb::KeyType::EcdsaP256,
        bronze_pki::KeyType::Ed25519 => pb::KeyType::Ed25519,
    };
    call(c.machine.generate_client_configuration(pb::GenerateClientConfigurationRequest {
        roles,
        ttl_seconds: ttl.map_or(0, |d| d.as_secs().max(1)),
        key_type: key_type.into(),
    }))
    .await
}

pub const TIME_COLUMNS: &[&str] = &["server", "synced", "offset", "rtt", "poll", "decision", "mode"];

pub async fn time(c: NodeClient) -> Result<Output, String> {
    let mut client = bronze_api::v1::time_service_client::TimeServiceClient::new(c.channel.clone());
    let t = call(client.time(pb::TimeRequest {})).await?;
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
    Ok(Output { fields, rows: vec![row] })
}

pub const TIME_CHECK_COLUMNS: &[&str] = &["server", "address", "offset", "rtt", "stratum", "local", "remote"];

pub async fn time_check(c: NodeClient, server: String) -> Result<Output, String> {
    let mut client = bronze_api::v1::time_service_client::TimeServiceClient::new(c.channel.clone());
    let t = call(client.time_check(pb::TimeCheckRequest { server })).await?;
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
    Ok(Output { fields, rows: vec![row] })
}

pub const SERVICE_COLUMNS: &[&str] = &["service", "state", "health", "pid", "restarts", "last exit", "message"];

pub async fn services(mut c: NodeClient) -> Result<Output, String> {
    let r = call(c.machine.service_list(pb::ServiceListRequest {})).await?;
    let mut values = Vec::new();
    let mut rows = Vec::new();
    for s in r.services {
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
    Ok(Output { fields: obj(json!({ "services": values })), rows })
}

/// `service NAME start|stop|restart`.
pub async fn service_action(mut c: NodeClient, name: String, action: &str) -> Result<Output, String> {
    let req = pb::ServiceRequest { name };
    let r = match action {
        "start" => call(c.machine.service_start(req)).await?,
        "stop" => call(c.machine.service_stop(req)).await?,
        "restart" => call(c.machine.service_restart(req)).await?,
        other => return Err(format!("unknown action {other:?}: expected start, stop or restart")),
    };
    Ok(Output::single(obj(json!({ "message": r.message })), MESSAGE_COLUMNS))
}

pub const LOG_COLUMNS: &[&str] = &["time", "line"];

/// The last `tail` lines of a service's output (all kept when negative).
pub async fn logs(mut c: NodeClient, service: String, tail: i32) -> Result<Output, String> {
    let mut stream = call(c.machine.logs(pb::LogsRequest { service, tail_lines: tail, follow: false })).await?;
    let mut rows = Vec::new();
    let mut values = Vec::new();
    while let Some(l) = stream.message().await.map_err(|s| describe_status(&s))? {
        rows.push(vec![l.time.clone(), l.line.clone()]);
        values.push(json!({ "time": l.time, "line": l.line }));
    }
    Ok(Output { fields: obj(json!({ "lines": values })), rows })
}

pub const DMESG_COLUMNS: &[&str] = &["uptime", "priority", "message"];

/// The kernel log buffer.
pub async fn dmesg(mut c: NodeClient) -> Result<Output, String> {
    let mut stream = call(c.machine.dmesg(pb::DmesgRequest { follow: false })).await?;
    let mut rows = Vec::new();
    let mut values = Vec::new();
    while let Some(d) = stream.message().await.map_err(|s| describe_status(&s))? {
        rows.push(vec![format!("{:.6}", d.uptime_seconds), d.priority.to_string(), d.message.clone()]);
        values.push(json!({ "uptimeSeconds": d.uptime_seconds, "priority": d.priority, "facility": d.facility, "message": d.message }));
    }
    Ok(Output { fields: obj(json!({ "entries": values })), rows })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::{Format, NodeResult, render};

    fn health_check() -> pb::Resource {
        pb::Resource {
            metadata: Some(pb::ResourceMetadata {
                namespace: "plugins".into(),
                r#type: "HealthChecks.bronze.dev".into(),
                id: "health-tcp".into(),
                version: 3,
                ..Default::default()
            }),
            spec_json: r#"{"plugin":"health-tcp","instance":"health-tcp","status":"healthy","summary":"open","details":{},"lastRun":"2025-01-01T00:00:00Z","durationMs":2,"consecutiveFailures":0}"#.into(),
        }
    }

    /// `get` has no per-type columns: any type, health checks included,
    /// renders as metadata plus the spec.
    #[test]
    fn types_the_cli_does_not_know_render_generically() {
        let res = health_check();
        let out = Output { fields: obj(json!({ "resources": [resource_json(&res)] })), rows: vec![resource_row(&res)] };
        let results = [NodeResult { node: "n1".into(), outcome: Ok(out) }];
        let text = render(Format::Table, RESOURCE_COLUMNS, &results);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0].split_whitespace().collect::<Vec<_>>(),
            ["NODE", "NAMESPACE", "TYPE", "ID", "VERSION", "SPEC"]
        );
        assert!(
            lines[1].starts_with("n1     plugins     HealthChecks.bronze.dev   health-tcp   3         {\"plugin\""),
            "{text}"
        );
        let json: Value = serde_json::from_str(render(Format::Json, RESOURCE_COLUMNS, &results).trim()).unwrap();
        assert_eq!(json["resources"][0]["spec"]["status"], "healthy");
        assert_eq!(json["resources"][0]["spec"]["consecutiveFailures"], 0);
        assert_eq!(json["resources"][0]["metadata"]["type"], "HealthChecks.bronze.dev");
    }

    /// What a hostile node could send: terminal controls, an 8-bit CSI, a
    /// bidi override and a newline that starts a fake row, raw in the
    /// metadata and in the spec (once as JSON that does not parse).
    #[test]
    fn a_hostile_node_cannot_draw_on_the_terminal() {
        let hostile = "\x1b[2J\x1b]0;owned\x07\u{9b}31mred\rover\u{202e}rev\nn1     fake   row\x7f";
        let mut res = health_check();
        res.metadata.as_mut().unwrap().id = hostile.into();
        let mut broken = res.clone();
        res.spec_json = json!({ "summary": hostile, hostile: 1 }).to_string();
        broken.spec_json = format!("{{\"summary\": \"{hostile}\"}}");
        let out = Output {
            fields: obj(json!({ "resources": [resource_json(&res), resource_json(&broken)] })),
            rows: vec![resource_row(&res), resource_row(&broken)],
        };
        let results = [
            NodeResult { node: "n1".into(), outcome: Ok(out) },
            NodeResult { node: "n2".into(), outcome: Err(format!("internal: {hostile}")) },
        ];
        let unsafe_chars =
            |text: &str| text.chars().filter(|&c| bronze_bundle::text::is_unsafe(c) && c != '\n').count();

        let table = render(Format::Table, RESOURCE_COLUMNS, &results);
        assert_eq!(unsafe_chars(&table), 0, "{table:?}");
        assert_eq!(table.lines().count(), 4, "a header, two resources, one error: {table}");
        assert!(!table.lines().any(|l| l.starts_with("n1     fake")), "{table}");
        let shown = "\\x1b[2J\\x1b]0;owned\\x07\\u{9b}31mred\\rover\\u{202e}rev\\nn1     fake   row\\x7f";
        assert_eq!(table.matches(shown).count(), 4, "both ids, the unparsed spec, the error: {table}");
        assert!(table.contains(&format!("n2     error: internal: {shown}")), "{table}");

        let yaml = render(Format::Yaml, RESOURCE_COLUMNS, &results);
        assert_eq!(unsafe_chars(&yaml), 0, "{yaml:?}");
        assert!(yaml.contains(shown), "{yaml}");

        // JSON stays exact for programs, with the escapes JSON has.
        let json_text = render(Format::Json, RESOURCE_COLUMNS, &results);
        assert_eq!(unsafe_chars(&json_text), 0, "{json_text:?}");
        assert!(json_text.contains("\\u009b31mred") && json_text.contains("\\u202erev"), "{json_text}");
        let lines: Vec<Value> = json_text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(lines[0]["resources"][0]["spec"]["summary"], hostile);
        assert_eq!(lines[0]["resources"][0]["spec"][hostile], 1);
        assert_eq!(lines[0]["resources"][1]["metadata"]["id"], hostile);
        assert_eq!(lines[1]["error"], format!("internal: {hostile}"));
    }
}
