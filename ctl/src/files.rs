//! `bronzectl read PATH` and `bronzectl ls PATH [-r]`: files under the
//! node's allowed roots (/proc, /sys, /var/log, /var/lib/bronze, /etc;
//! FileService). The node decides what may be read; this module fetches,
//! and prints.
//!
//! `read` with the default format writes the file's bytes to stdout as they
//! are when stdout is not a terminal (so `> file` keeps them exact); on a
//! terminal, control characters and escape sequences are shown escaped, like
//! any text from a node. With several nodes each file is headed by
//! `==> NODE <==`. `-o json|yaml` gives the text (or hex when it is not
//! UTF-8) with the flags the node set.

use crate::cli::Globals;
use crate::client::{CALL_TIMEOUT, NodeClient, call, describe_status};
use crate::output::{self, Format, Output, obj};
use bronze_api::v1 as pb;
use bronze_api::v1::file_service_client::FileServiceClient;
use bronze_bundle::text::printable;
use clap::Args;
use serde_json::json;
use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::Duration;

/// The most a reply of `read` may take.
const READ_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Debug, Args)]
pub struct ReadArgs {
    /// Absolute path under /proc, /sys, /var/log, /var/lib/bronze or /etc.
    pub path: String,
    /// Stop after this many bytes (the node's limit, 16 MiB, when absent).
    #[arg(long)]
    pub max_bytes: Option<u64>,
}

#[derive(Debug, Args)]
pub struct LsArgs {
    /// Absolute path under /proc, /sys, /var/log, /var/lib/bronze or /etc.
    pub path: String,
    /// List subdirectories too (symlinks are never followed).
    #[arg(short, long)]
    pub recursive: bool,
    /// Levels below PATH with -r (at most 8, the default).
    #[arg(long, requires = "recursive")]
    pub depth: Option<u32>,
}

pub const READ_COLUMNS: &[&str] = &["path", "bytes", "truncated", "redactedKeys"];
pub const LS_COLUMNS: &[&str] = &["mode", "type", "size", "modified", "path", "note"];

/// What one node sent for `read`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FileBytes {
    pub data: Vec<u8>,
    pub truncated: bool,
    pub redacted_keys: u32,
}

pub async fn run_read(args: &ReadArgs, g: &Globals) -> anyhow::Result<ExitCode> {
    let max = args.max_bytes.unwrap_or(0);
    let results = g.fan_out(|c| read_output(c, args.path.clone(), max)).await?;
    let format = g.format();
    if format != Format::Table {
        return Ok(output::print(format, READ_COLUMNS, &results));
    }
    let terminal = std::io::stdout().is_terminal();
    let several = results.len() > 1;
    let mut stdout = std::io::stdout().lock();
    for r in &results {
        match &r.outcome {
            Ok(out) => {
                if several {
                    writeln!(stdout, "==> {} <==", printable(&r.node))?;
                }
                stdout.write_all(&shown_bytes(&bytes_of(out), terminal))?;
                stdout.flush()?;
                for note in notes(&args.path, out) {
                    eprintln!("{}: {note}", printable(&r.node));
                }
            }
            Err(e) => eprintln!("{}", output::error_line(&r.node, e)),
        }
    }
    Ok(if output::all_ok(&results) { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// `read` on one node, as fields (the bytes travel in `text` or `hex`).
pub async fn read_output(c: NodeClient, path: String, max_bytes: u64) -> Result<Output, String> {
    let got = read(c, &path, max_bytes).await?;
    Ok(read_fields(&path, &got))
}

/// The RPC on one node: every chunk, concatenated.
pub async fn read(c: NodeClient, path: &str, max_bytes: u64) -> Result<FileBytes, String> {
    let mut client = FileServiceClient::new(c.channel.clone()).max_decoding_message_size(1 << 20);
    let request = pb::FileReadRequest { path: path.to_string(), max_bytes };
    let mut stream = crate::client::call_within(CALL_TIMEOUT, client.read(request)).await?;
    let mut out = FileBytes::default();
    let deadline = tokio::time::Instant::now() + READ_TIMEOUT;
    loop {
        let next = tokio::time::timeout_at(deadline, stream.message())
            .await
            .map_err(|_| format!("the file did not arrive within {}s", READ_TIMEOUT.as_secs()))?;
        match next {
            Ok(Some(chunk)) => {
                out.data.extend_from_slice(&chunk.data);
                out.truncated |= chunk.truncated;
                out.redacted_keys += chunk.redacted_keys;
            }
            Ok(None) => return Ok(out),
            Err(status) => return Err(describe_status(&status)),
        }
    }
}

/// Pure: `read`'s answer as fields and the one table row.
pub fn read_fields(path: &str, got: &FileBytes) -> Output {
    let mut fields = obj(json!({
        "path": path,
        "bytes": got.data.len(),
        "truncated": got.truncated,
        "redactedKeys": got.redacted_keys,
    }));
    match std::str::from_utf8(&got.data) {
        Ok(text) => fields.insert("text".into(), json!(text)),
        Err(_) => fields.insert("hex".into(), json!(hex::encode(&got.data))),
    };
    Output::single(fields, READ_COLUMNS)
}

/// The bytes back from [`read_fields`].
fn bytes_of(out: &Output) -> Vec<u8> {
    if let Some(text) = out.fields.get("text").and_then(|t| t.as_str()) {
        return text.as_bytes().to_vec();
    }
    out.fields.get("hex").and_then(|h| h.as_str()).and_then(|h| hex::decode(h).ok()).unwrap_or_default()
}

/// What to say on stderr about a read: truncation and redaction.
pub fn notes(path: &str, out: &Output) -> Vec<String> {
    let mut notes = Vec::new();
    let bytes = out.fields.get("bytes").and_then(|b| b.as_u64()).unwrap_or(0);
    if out.fields.get("truncated").and_then(|t| t.as_bool()).unwrap_or(false) {
        notes.push(format!("{}: stopped after {bytes} bytes; the file goes on (--max-bytes)", printable(path)));
    }
    let keys = out.fields.get("redactedKeys").and_then(|k| k.as_u64()).unwrap_or(0);
    if keys > 0 {
        notes.push(format!("{}: {keys} private key(s) redacted by the node", printable(path)));
    }
    notes
}

/// Pure: the bytes for stdout; a terminal gets every line through
/// `printable` (tabs kept), anything else gets them as they are.
pub fn shown_bytes(data: &[u8], terminal: bool) -> Vec<u8> {
    if !terminal {
        return data.to_vec();
    }
    let text = String::from_utf8_lossy(data);
    let mut out = String::with_capacity(text.len());
    for (i, line) in text.split('\n').enumerate() {
        if i > 0 {
            out.push('\n');
        }
        let parts: Vec<String> = line.split('\t').map(|p| printable(p).into_owned()).collect();
        out.push_str(&parts.join("\t"));
    }
    out.into_bytes()
}

pub async fn run_ls(args: &LsArgs, g: &Globals) -> anyhow::Result<ExitCode> {
    let depth = args.depth.unwrap_or(0);
    g.each_node(LS_COLUMNS, |c| ls(c, args.path.clone(), args.recursive, depth)).await
}

/// The RPC on one node.
pub async fn ls(c: NodeClient, path: String, recursive: bool, max_depth: u32) -> Result<Output, String> {
    let mut client = FileServiceClient::new(c.channel.clone()).max_decoding_message_size(16 << 20);
    Ok(ls_rows(&call(client.list(pb::FileListRequest { path, recursive, max_depth })).await?))
}

/// Pure: `ls`'s answer as fields and rows.
pub fn ls_rows(r: &pb::FileListResponse) -> Output {
    let mut rows = Vec::new();
    let mut items = Vec::new();
    for e in &r.entries {
        let path = if e.link_target.is_empty() { e.path.clone() } else { format!("{} -> {}", e.path, e.link_target) };
        let note = match (e.secret, e.error.is_empty()) {
            (true, _) => "secret: not readable".to_string(),
            (false, false) => format!("error: {}", e.error),
            (false, true) => String::new(),
        };
        rows.push(vec![
            format!("{:04o}", e.mode),
            e.r#type.clone(),
            e.size.to_string(),
            e.modified.clone(),
            printable(&path).into_owned(),
            printable(&note).into_owned(),
        ]);
        items.push(json!({
            "path": e.path,
            "type": e.r#type,
            "size": e.size,
            "mode": format!("{:04o}", e.mode),
            "uid": e.uid,
            "gid": e.gid,
            "modified": e.modified,
            "linkTarget": e.link_target,
            "secret": e.secret,
            "error": e.error,
        }));
    }
    if r.truncated {
        let note = format!("listing stopped at {} entries (the node's limit)", r.entries.len());
        rows.push(vec![String::new(), String::new(), String::new(), String::new(), "…".into(), note]);
    }
    Output { fields: obj(json!({ "entries": items, "truncated": r.truncated })), rows }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::NodeResult;

    #[test]
    fn a_terminal_sees_escapes_a_pipe_the_bytes() {
        let data = b"a\tb\n\x1b[2Jc\n\xff";
        assert_eq!(shown_bytes(data, false), data);
        let shown = String::from_utf8(shown_bytes(data, true)).unwrap();
        assert!(shown.starts_with("a\tb\n") && !shown.contains('\x1b'), "{shown:?}");
    }

    #[test]
    fn read_fields_keep_the_bytes() {
        let got = FileBytes { data: b"hi\n".to_vec(), truncated: true, redacted_keys: 2 };
        let out = read_fields("/var/log/x", &got);
        assert_eq!(bytes_of(&out), b"hi\n");
        assert_eq!(out.rows, [["/var/log/x", "3", "true", "2"]]);
        assert_eq!(notes("/var/log/x", &out).len(), 2);
        let binary = FileBytes { data: vec![0xff, 0], ..Default::default() };
        let out = read_fields("/proc/x", &binary);
        assert_eq!(out.fields["hex"], "ff00");
        assert_eq!(bytes_of(&out), [0xff, 0]);
    }

    #[test]
    fn ls_rows_show_links_secrets_and_the_cap() {
        let r = pb::FileListResponse {
            entries: vec![
                pb::FileEntry {
                    path: "/etc/\x1b[31mx".into(),
                    r#type: "symlink".into(),
                    mode: 0o777,
                    link_target: "shadow".into(),
                    ..Default::default()
                },
                pb::FileEntry { path: "/etc/shadow".into(), r#type: "file".into(), secret: true, ..Default::default() },
            ],
            truncated: true,
        };
        let out = ls_rows(&r);
        assert_eq!(out.rows.len(), 3);
        assert!(!out.rows[0][4].contains('\x1b') && out.rows[0][4].ends_with(" -> shadow"), "{:?}", out.rows[0]);
        assert_eq!(out.rows[1][5], "secret: not readable");
        assert!(out.rows[2][5].contains("stopped at 2 entries"));
        let table = output::render(
            Format::Table,
            LS_COLUMNS,
            &[NodeResult { node: "n1:50000".into(), outcome: Ok(out.clone()) }],
        );
        assert!(!table.contains('\x1b'), "{table}");
        assert_eq!(out.fields["entries"][1]["secret"], true);
    }
}
