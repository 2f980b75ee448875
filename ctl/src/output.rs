//! Per-node results and their three renderings: a table with a NODE
//! column, one JSON object per node per line, or YAML documents. Pure
//! functions over data, so formatting is tested without a server.
//!
//! Everything here came from a node, and a node (or a plugin on it) may be
//! hostile: no rendering lets a control character, an escape sequence or a
//! bidi override reach the terminal. Tables and YAML are for people and
//! show such characters as `bronze_bundle::text::printable` escapes (`\x1b`,
//! `\n`, `\u{9b}`); JSON is for programs and stays exact, with them written
//! as JSON's own `\uXXXX` escapes.

use bronze_bundle::text::{is_unsafe, printable};
use serde_json::{Map, Value};
use std::fmt::Write;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Json,
    Yaml,
}

/// What one node answered: JSON fields for json/yaml and rows for the
/// table, or a human error sentence.
#[derive(Debug, Clone)]
pub struct NodeResult {
    pub node: String,
    pub outcome: Result<Output, String>,
}

#[derive(Debug, Clone, Default)]
pub struct Output {
    pub fields: Map<String, Value>,
    pub rows: Vec<Vec<String>>,
}

impl Output {
    /// One row whose cells are the named fields, in order.
    pub fn single(fields: Map<String, Value>, columns: &[&str]) -> Self {
        let row = columns.iter().map(|c| cell(fields.get(*c))).collect();
        Self { fields, rows: vec![row] }
    }
}

/// A JSON object literal as fields (anything else is no fields).
pub fn obj(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

/// Prints results on stdout and each node's failure on stderr; the exit
/// code is success only if every node succeeded.
pub fn print(format: Format, columns: &[&str], results: &[NodeResult]) -> std::process::ExitCode {
    print!("{}", render(format, columns, results));
    for r in results {
        if let Err(e) = &r.outcome {
            eprintln!("{}", error_line(&r.node, e));
        }
    }
    if all_ok(results) { std::process::ExitCode::SUCCESS } else { std::process::ExitCode::FAILURE }
}

/// A JSON value as a table cell.
pub fn cell(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(items)) => items.iter().map(|i| cell(Some(i))).collect::<Vec<_>>().join(","),
        Some(other) => other.to_string(),
    }
}

/// The stderr line for a node that failed.
pub fn error_line(node: &str, error: &str) -> String {
    format!("node {}: {}", printable(node), printable(error))
}

/// Whether every node succeeded (the exit code).
pub fn all_ok(results: &[NodeResult]) -> bool {
    results.iter().all(|r| r.outcome.is_ok())
}

/// Renders results. `columns` are the table's headers after NODE.
pub fn render(format: Format, columns: &[&str], results: &[NodeResult]) -> String {
    match format {
        Format::Table => table(columns, results),
        Format::Json => results.iter().map(|r| format!("{}\n", json_line(&Value::Object(object(r))))).collect(),
        Format::Yaml => results
            .iter()
            .map(|r| {
                let shown = printable_strings(Value::Object(object(r)));
                format!("---\n{}", serde_yaml::to_string(&shown).unwrap_or_default())
            })
            .collect(),
    }
}

/// `value` as one line of JSON with every unsafe character as a `\uXXXX`
/// escape. serde_json escapes only C0 controls; the others (DEL, C1, bidi)
/// can only occur inside strings, where the escape means the same text.
pub fn json_line(value: &Value) -> String {
    let text = value.to_string();
    if !text.contains(is_unsafe) {
        return text;
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        if is_unsafe(c) {
            for unit in c.encode_utf16(&mut [0; 2]) {
                let _ = write!(out, "\\u{unit:04x}");
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// `value` with every string (keys included) made printable.
fn printable_strings(value: Value) -> Value {
    match value {
        Value::String(s) => Value::String(printable(&s).into_owned()),
        Value::Array(items) => Value::Array(items.into_iter().map(printable_strings).collect()),
        Value::Object(map) => {
            Value::Object(map.into_iter().map(|(k, v)| (printable(&k).into_owned(), printable_strings(v))).collect())
        }
        other => other,
    }
}

fn object(r: &NodeResult) -> Map<String, Value> {
    let mut obj = Map::new();
    obj.insert("node".into(), Value::String(r.node.clone()));
    match &r.outcome {
        Ok(out) => obj.extend(out.fields.clone()),
        Err(e) => {
            obj.insert("error".into(), Value::String(e.clone()));
        }
    }
    obj
}

fn table(columns: &[&str], results: &[NodeResult]) -> String {
    let mut header = vec!["NODE".to_string()];
    header.extend(columns.iter().map(|c| c.to_uppercase()));
    let mut rows: Vec<Vec<String>> = Vec::new();
    let shown = |text: &str| printable(text).into_owned();
    for r in results {
        match &r.outcome {
            Ok(out) => rows.extend(out.rows.iter().map(|row| {
                let mut full = vec![shown(&r.node)];
                full.extend(row.iter().map(|c| shown(c)));
                full
            })),
            Err(e) => rows.push(vec![shown(&r.node), format!("error: {}", shown(e))]),
        }
    }
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in &rows {
        // An error row's message spans the remaining columns; it does not widen them.
        let spans = row.len() < header.len();
        for (i, c) in row.iter().enumerate() {
            if i < widths.len() && !(spans && i == row.len() - 1) {
                widths[i] = widths[i].max(c.chars().count());
            }
        }
    }
    let mut out = String::new();
    for row in std::iter::once(&header).chain(rows.iter()) {
        let last = row.len() - 1;
        for (i, c) in row.iter().enumerate() {
            if i == last {
                let _ = write!(out, "{c}");
            } else {
                let _ = write!(out, "{c:<w$}   ", w = widths[i]);
            }
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn results() -> Vec<NodeResult> {
        let fields = json!({"tag": "v0.1.0", "mode": "process"}).as_object().unwrap().clone();
        vec![
            NodeResult { node: "a:1".into(), outcome: Ok(Output::single(fields, &["tag", "mode"])) },
            NodeResult { node: "b:2".into(), outcome: Err("cannot connect: connection refused".into()) },
        ]
    }

    #[test]
    fn table_has_node_column_and_error_row() {
        let text = render(Format::Table, &["tag", "mode"], &results());
        let lines: Vec<_> = text.lines().collect();
        assert_eq!(lines[0], "NODE   TAG      MODE");
        assert_eq!(lines[1], "a:1    v0.1.0   process");
        assert_eq!(lines[2], "b:2    error: cannot connect: connection refused");
    }

    #[test]
    fn json_is_one_object_per_node_per_line() {
        let text = render(Format::Json, &[], &results());
        let lines: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["node"], "a:1");
        assert_eq!(lines[0]["tag"], "v0.1.0");
        assert_eq!(lines[1]["error"], "cannot connect: connection refused");
        assert!(!all_ok(&results()));
    }

    #[test]
    fn yaml_documents_carry_the_node() {
        let text = render(Format::Yaml, &[], &results());
        assert_eq!(text.matches("---\n").count(), 2);
        assert!(text.contains("node: a:1"), "{text}");
    }
}
