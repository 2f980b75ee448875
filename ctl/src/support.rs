//! `bronzectl support --output-file bundle.tar.gz`: the node's support
//! bundle (`SupportService.Bundle`, operator; audited on the node), written
//! atomically with mode 0600. With several nodes each gets its own file,
//! the node's name before the extension.

use crate::cli::Globals;
use crate::client::{NodeClient, describe_status};
use crate::clientconfig::write_atomic;
use crate::output::{Output, obj};
use crate::pcap::per_node;
use bronze_api::v1 as pb;
use bronze_api::v1::support_service_client::SupportServiceClient;
use clap::Args;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// The largest bundle accepted from a node (the node caps it at 32 MiB
/// before compression).
pub const MAX_BUNDLE_BYTES: usize = 64 << 20;

#[derive(Debug, Args)]
pub struct SupportArgs {
    /// The .tar.gz to write.
    #[arg(long = "output-file", visible_alias = "out", value_name = "PATH", default_value = "support.tar.gz")]
    pub output_file: PathBuf,
    /// Log lines per service and plugin (0: the node's default, 1,000; at most 10,000).
    #[arg(long, default_value_t = 0)]
    pub log_lines: u32,
}

pub const COLUMNS: &[&str] = &["file", "bytes", "members", "notes"];

pub async fn run(args: &SupportArgs, g: &Globals) -> anyhow::Result<ExitCode> {
    let several = g.target()?.nodes.len() > 1;
    let (output_file, log_lines) = (&args.output_file, args.log_lines);
    g.each_node(COLUMNS, |c| {
        let path = if several { per_node(output_file, &c.node) } else { output_file.clone() };
        bundle(c, log_lines, path)
    })
    .await
}

/// Fetches one node's bundle and writes it to `path`.
pub async fn bundle(c: NodeClient, log_lines: u32, path: PathBuf) -> Result<Output, String> {
    let mut client = SupportServiceClient::new(c.channel.clone()).max_decoding_message_size(16 << 20);
    let mut stream =
        client.bundle(pb::BundleRequest { log_lines }).await.map_err(|s| describe_status(&s))?.into_inner();
    let (mut data, mut members, mut notes) = (Vec::new(), Vec::new(), Vec::new());
    while let Some(chunk) = stream.message().await.map_err(|s| describe_status(&s))? {
        if data.len() + chunk.data.len() > MAX_BUNDLE_BYTES {
            return Err(format!("the bundle is larger than {MAX_BUNDLE_BYTES} bytes; nothing written"));
        }
        data.extend_from_slice(&chunk.data);
        if !chunk.members.is_empty() {
            members = chunk.members;
            notes = chunk.notes;
        }
    }
    if members.is_empty() {
        return Err("the node ended the bundle without its list of members; nothing written".into());
    }
    write_atomic(&path, &data, 0o600).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    Ok(summary(&path, data.len(), &members, &notes))
}

/// Pure: what was written, as fields and one row.
pub fn summary(path: &Path, bytes: usize, members: &[String], notes: &[String]) -> Output {
    let file = path.display().to_string();
    let row = vec![file.clone(), bytes.to_string(), members.len().to_string(), notes.join("; ")];
    Output { fields: obj(json!({ "file": file, "bytes": bytes, "members": members, "notes": notes })), rows: vec![row] }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_row_and_fields() {
        let out = summary(
            Path::new("b.tar.gz"),
            1234,
            &["README.txt".into(), "dmesg.txt".into()],
            &["config.yaml: left out".into()],
        );
        assert_eq!(out.rows, [["b.tar.gz", "1234", "2", "config.yaml: left out"]]);
        assert_eq!(out.fields["members"][1], "dmesg.txt");
    }
}
