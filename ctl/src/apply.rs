//! `apply-config -f FILE [--mode M] [--timeout D] [--dry-run]`: send a
//! machine config to every node. The answer, with `--dry-run` its diff and
//! network section, is shaped by [`apply_output`].

use crate::cli::{Globals, parse_duration};
use crate::client::{NodeClient, call};
use crate::output::{Output, obj};
use anyhow::{Context as _, bail};
use bronze_api::v1 as pb;
use clap::{Args, ValueEnum};
use serde_json::json;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// The machine config file.
    #[arg(short = 'f', long = "file")]
    pub file: PathBuf,
    #[arg(long, value_enum, default_value = "auto")]
    pub mode: ApplyModeArg,
    /// Rollback delay for --mode try, e.g. 30s or 2m.
    #[arg(long, value_parser = parse_duration)]
    pub timeout: Option<Duration>,
    /// Validate and show the diff; change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ApplyModeArg {
    Auto,
    NoReboot,
    Staged,
    Try,
}

impl From<ApplyModeArg> for pb::ApplyMode {
    fn from(arg: ApplyModeArg) -> Self {
        match arg {
            ApplyModeArg::Auto => pb::ApplyMode::Auto,
            ApplyModeArg::NoReboot => pb::ApplyMode::NoReboot,
            ApplyModeArg::Staged => pb::ApplyMode::Staged,
            ApplyModeArg::Try => pb::ApplyMode::Try,
        }
    }
}

pub async fn run(args: &ApplyArgs, g: &Globals) -> anyhow::Result<ExitCode> {
    let data = std::fs::read(&args.file).with_context(|| format!("cannot read {}", args.file.display()))?;
    let mode = pb::ApplyMode::from(args.mode);
    if args.timeout.is_some() && mode != pb::ApplyMode::Try {
        bail!("--timeout only applies with --mode try");
    }
    g.each_node(APPLY_COLUMNS, |c| apply_config(c, data.clone(), mode, args.timeout, args.dry_run)).await
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
    Ok(apply_output(&call(c.machine.apply_configuration(req)).await?, dry_run))
}

/// The answer as a row, then a row per warning, and with `dry_run` the
/// config diff and the network section.
pub fn apply_output(r: &pb::ApplyConfigurationResponse, dry_run: bool) -> Output {
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
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dry_run_shows_warnings_the_diff_and_the_network() {
        let r = pb::ApplyConfigurationResponse {
            mode: "no-reboot".into(),
            message: "would apply".into(),
            warnings: vec!["w1".into()],
            diff: "-a\n+b\n".into(),
            ..Default::default()
        };
        let rows: Vec<String> = apply_output(&r, true).rows.iter().map(|r| r.join("|")).collect();
        assert_eq!(rows, ["no-reboot|would apply", "|warning: w1", "|-a", "|+b", "|network:", "|no network change"]);
        assert!(apply_output(&r, true).fields.contains_key("networkDiff"));
        let plain = apply_output(&r, false);
        assert_eq!(plain.rows.len(), 2);
        assert!(!plain.fields.contains_key("networkDiff"));
    }
}
