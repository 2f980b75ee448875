//! `platform refresh`: detect the platform and fetch its metadata again.

use crate::cli::Globals;
use crate::client::{NodeClient, call};
use crate::output::{Output, obj};
use bronze_api::v1 as pb;
use clap::Subcommand;
use serde_json::json;
use std::process::ExitCode;

#[derive(Debug, Subcommand)]
pub enum PlatformCommand {
    /// Detect the platform and fetch its metadata again now (operator).
    Refresh,
}

pub async fn run(what: &PlatformCommand, g: &Globals) -> anyhow::Result<ExitCode> {
    match what {
        PlatformCommand::Refresh => g.each_node(REFRESH_COLUMNS, refresh).await,
    }
}

pub const REFRESH_COLUMNS: &[&str] = &["platform", "message"];

pub async fn refresh(mut c: NodeClient) -> Result<Output, String> {
    let r = call(c.machine.platform_refresh(pb::PlatformRefreshRequest {})).await?;
    Ok(Output::single(obj(json!({ "platform": r.platform, "message": r.message })), REFRESH_COLUMNS))
}
