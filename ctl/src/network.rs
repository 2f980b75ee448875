//! `bronzectl network ...`: what a node's network would become, shown as a
//! diff against its live spec; nothing is applied. The network section of
//! `apply-config --dry-run` is rendered here too. Shaping answers into
//! [`Output`] is kept in pure functions so rendering is tested without a
//! node.

use crate::cli::Globals;
use crate::client::{NodeClient, call_within};
use crate::output::{Output, obj};
use bronze_api::v1 as pb;
use bronze_api::v1::network_service_client::NetworkServiceClient;
use clap::Subcommand;
use serde_json::{Value, json};
use std::process::ExitCode;
use std::time::Duration;

/// Deadline of `network plan`: the node bounds the configurator's call;
/// this only guards against a node that never answers.
pub const PLAN_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, Subcommand)]
pub enum NetworkCommand {
    /// The network spec the node would have now (its configurator plugin asked afresh) as a diff against the live
    /// spec, with its warnings; nothing is applied (operator). With -o json|yaml: the candidate spec.
    Plan,
}

pub async fn run(what: &NetworkCommand, g: &Globals) -> anyhow::Result<ExitCode> {
    match what {
        NetworkCommand::Plan => g.each_node(PLAN_COLUMNS, plan).await,
    }
}

pub const PLAN_COLUMNS: &[&str] = &["plan"];

/// `network plan` on one node.
pub async fn plan(c: NodeClient) -> Result<Output, String> {
    let mut client = NetworkServiceClient::new(c.channel.clone()).max_decoding_message_size(64 << 20);
    let r = call_within(PLAN_TIMEOUT, client.plan(pb::NetworkPlanRequest {})).await?;
    Ok(plan_output(&r))
}

/// The answer as fields (the candidate spec, its warnings, the diff) and
/// table rows (a summary, the warnings, the diff lines).
pub fn plan_output(r: &pb::NetworkPlanResponse) -> Output {
    let spec: Value = serde_json::from_str(&r.candidate_json).unwrap_or(Value::String(r.candidate_json.clone()));
    let has_live = !r.live_json.is_empty();
    let fields = obj(json!({ "spec": spec, "warnings": r.warnings, "diff": r.diff, "live": has_live }));
    let summary = match (has_live, r.diff.is_empty()) {
        (false, _) => "the node has no live network spec yet: the diff shows the whole spec; nothing applied",
        (true, true) => "no change against the live network spec; nothing applied",
        (true, false) => "changes against the live network spec; nothing applied",
    };
    let mut rows = vec![vec![summary.to_string()]];
    rows.extend(r.warnings.iter().map(|w| vec![format!("warning: {w}")]));
    rows.extend(r.diff.lines().map(|l| vec![l.to_string()]));
    Output { fields, rows }
}

/// The network section of an `apply-config --dry-run` table: a
/// `network:` line, the notes, then the diff (or that nothing changes).
pub fn dry_run_lines(diff: &str, notes: &[String]) -> Vec<String> {
    let mut lines = vec!["network:".to_string()];
    lines.extend(notes.iter().map(|n| format!("note: {n}")));
    if diff.is_empty() {
        if notes.is_empty() {
            lines.push("no network change".into());
        }
    } else {
        lines.extend(diff.lines().map(str::to_string));
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::{Format, NodeResult, render};

    fn answer() -> pb::NetworkPlanResponse {
        pb::NetworkPlanResponse {
            candidate_json:
                r#"{"links":[{"name":"eth0","up":true,"layer":"config"}],"addresses":[],"routes":[],"applied":false}"#
                    .into(),
            live_json: r#"{"links":[],"addresses":[],"routes":[],"applied":false}"#.into(),
            diff: "--- live\n+++ new\n@@ -1 +1,2 @@\n-links: []\n+links:\n+- {name: eth0, up: true, layer: config}\n"
                .into(),
            warnings: vec!["the plan of net refused: link \x1b[31meth9 is unknown".into()],
        }
    }

    #[test]
    fn the_table_shows_a_summary_the_warnings_and_the_diff() {
        let out = plan_output(&answer());
        let text = render(Format::Table, PLAN_COLUMNS, &[NodeResult { node: "n1".into(), outcome: Ok(out) }]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "NODE   PLAN");
        assert_eq!(lines[1], "n1     changes against the live network spec; nothing applied");
        // What a plugin says cannot draw on the terminal.
        assert_eq!(lines[2], "n1     warning: the plan of net refused: link \\x1b[31meth9 is unknown");
        assert_eq!(lines[3], "n1     --- live");
        assert_eq!(lines[8], "n1     +- {name: eth0, up: true, layer: config}");
        assert_eq!(lines.len(), 9, "{text}");
    }

    #[test]
    fn json_and_yaml_carry_the_candidate_spec() {
        let out = plan_output(&answer());
        let results = [NodeResult { node: "n1".into(), outcome: Ok(out) }];
        let json: Value = serde_json::from_str(render(Format::Json, PLAN_COLUMNS, &results).trim()).unwrap();
        assert_eq!(json["spec"]["links"][0]["name"], "eth0");
        assert_eq!(json["spec"]["links"][0]["layer"], "config");
        assert_eq!(json["live"], true);
        let yaml = render(Format::Yaml, PLAN_COLUMNS, &results);
        let doc: serde_yaml::Value = serde_yaml::from_str(yaml.trim_start_matches("---\n")).unwrap();
        assert_eq!(doc["spec"]["links"][0]["name"].as_str(), Some("eth0"));
    }

    #[test]
    fn no_live_spec_and_no_change_are_said() {
        let none = pb::NetworkPlanResponse { live_json: String::new(), ..answer() };
        assert!(plan_output(&none).rows[0][0].starts_with("the node has no live network spec yet"));
        let same = pb::NetworkPlanResponse { diff: String::new(), warnings: vec![], ..answer() };
        assert_eq!(plan_output(&same).rows, [["no change against the live network spec; nothing applied"]]);
    }

    #[test]
    fn the_dry_run_section() {
        assert_eq!(dry_run_lines("", &[]), ["network:", "no network change"]);
        let notes = vec!["the node has no live network spec yet: the diff shows the whole spec".to_string()];
        assert_eq!(
            dry_run_lines("--- live\n+++ new\n+a\n", &notes),
            [
                "network:",
                "note: the node has no live network spec yet: the diff shows the whole spec",
                "--- live",
                "+++ new",
                "+a"
            ]
        );
        assert_eq!(dry_run_lines("", &["no network preview: x".into()]), ["network:", "note: no network preview: x"]);
    }
}
