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
    Ok(refresh_output(&call(c.machine.platform_refresh(pb::PlatformRefreshRequest {})).await?))
}

pub fn refresh_output(r: &pb::PlatformRefreshResponse) -> Output {
    Output::single(obj(json!({ "platform": r.platform, "message": r.message })), REFRESH_COLUMNS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_platform_and_the_message() {
        let r = pb::PlatformRefreshResponse { platform: "hetzner".into(), message: "metadata fetched".into() };
        let out = refresh_output(&r);
        assert_eq!(out.rows, [["hetzner", "metadata fetched"]]);
        assert_eq!(out.fields["platform"], "hetzner");
    }
}
