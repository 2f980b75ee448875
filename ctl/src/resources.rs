//! `get TYPE [ID] [-w]`: read resources from every node. There are no
//! per-type columns: any type renders as its metadata plus the spec, so a
//! new resource type needs nothing here.

use crate::cli::Globals;
use crate::client::{NodeClient, call};
use crate::output::{Output, obj};
use bronze_api::v1 as pb;
use clap::Args;
use serde_json::{Value, json};
use std::process::ExitCode;

#[derive(Debug, Args)]
pub struct GetArgs {
    /// Resource type, e.g. machinestatus, machineconfig, auditevents, healthchecks.
    #[arg(value_name = "TYPE")]
    pub type_name: String,
    pub id: Option<String>,
    /// Keep watching and print changes.
    #[arg(short = 'w', long)]
    pub watch: bool,
}

pub async fn run(args: &GetArgs, g: &Globals) -> anyhow::Result<ExitCode> {
    if args.watch {
        let target = g.target()?;
        return Ok(
            crate::stream::watch(&target.nodes, &target.auth, &args.type_name, args.id.clone(), g.format()).await
        );
    }
    g.each_node(RESOURCE_COLUMNS, |c| get(c, args.type_name.clone(), args.id.clone())).await
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
            Ok(resource_output(&r.resource.unwrap_or_default()))
        }
        None => {
            let r = call(c.resources.list(pb::ListRequest { namespace: String::new(), r#type: type_name })).await?;
            Ok(list_output(&r.resources))
        }
    }
}

/// One resource: its JSON as the fields, one row.
pub fn resource_output(r: &pb::Resource) -> Output {
    Output { fields: obj(resource_json(r)), rows: vec![resource_row(r)] }
}

/// A list: `{resources: [...]}`, a row each.
pub fn list_output(resources: &[pb::Resource]) -> Output {
    let items: Vec<Value> = resources.iter().map(resource_json).collect();
    Output { fields: obj(json!({ "resources": items })), rows: resources.iter().map(resource_row).collect() }
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
        let out = list_output(&[res]);
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
        let out = list_output(&[res, broken]);
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
