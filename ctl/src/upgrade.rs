//! `upgrade FILE`, `upgrade-pack`, `rollback`, `reset`: a new system for the
//! nodes' inactive boot slot, going back to the other slot, and starting over
//! from an empty state partition.
//!
//! `upgrade` reads the bundle and checks it as the node will (the tar's
//! four files in order, the manifest, each part's digest) before it sends a
//! byte, then streams it to every node with a progress bar: the header
//! (manifest and signature), `vmlinuz`, `initrd`. `upgrade-pack` makes and
//! signs a bundle from a kernel and an initramfs.

use crate::cli::Globals;
use crate::client::{NodeClient, call, call_within};
use crate::output::{self, Output, obj};
use crate::plugins::UploadProgress;
use anyhow::Context;
use bronze_api::v1 as pb;
use bronze_bundle::upgrade::{INITRD_PART, KERNEL_PART, UpgradeBundle};
use clap::Args;
use indicatif::ProgressBar;
use serde_json::json;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

/// Chunk size of the stream.
const CHUNK: usize = 1 << 20;
/// How long one node may take to receive, check and write a bundle.
const UPGRADE_TIMEOUT: Duration = Duration::from_secs(600);

#[derive(Debug, Args)]
pub struct UpgradeArgs {
    /// The upgrade bundle: a tar of upgrade.toml, upgrade.sig, vmlinuz and initrd (see upgrade-pack).
    pub bundle: PathBuf,
    /// Write the slot and make it the next boot, but do not reboot now.
    #[arg(long)]
    pub stage: bool,
    /// Boots the new system gets to become healthy before the node falls back (1 to 9).
    #[arg(long, default_value_t = bronze_boot::DEFAULT_TRIES, value_parser = clap::value_parser!(u32).range(1..=9))]
    pub tries: u32,
    /// Seconds each of those boots has to become healthy (5 to 3600; default: the running slot's, 300 unless set).
    #[arg(long, value_parser = clap::value_parser!(u32).range(5..=3600))]
    pub health_timeout: Option<u32>,
}

#[derive(Debug, Args)]
pub struct PackArgs {
    /// The kernel (an EFI-stub bzImage).
    #[arg(long)]
    pub kernel: PathBuf,
    /// The initramfs.
    #[arg(long)]
    pub initrd: PathBuf,
    /// The Bronze version it holds, e.g. v0.2.0.
    #[arg(long)]
    pub release: String,
    /// The architecture it is built for.
    #[arg(long, default_value = std::env::consts::ARCH)]
    pub arch: String,
    /// Ed25519 private key (PEM, from `plugins keygen`) to sign with; nodes trust its public key in machine.upgrade.trustedKeys.
    #[arg(long)]
    pub sign_key: PathBuf,
    /// Where to write the bundle.
    #[arg(long = "output-file", alias = "out")]
    pub output_file: PathBuf,
}

#[derive(Debug, Args)]
pub struct RollbackArgs {
    /// Make the other slot the next boot, but do not reboot now.
    #[arg(long)]
    pub stage: bool,
}

#[derive(Debug, Args)]
pub struct ResetArgs {
    /// What to wipe: state (the state partition: config, PKI, plugins, caches) or all (also the slot the node is not running).
    #[arg(long, default_value = "state", value_parser = ["state", "all"])]
    pub wipe: String,
    /// Stop services with their grace periods and release DHCP leases first
    /// (the default); --graceful=false kills every service at once, for a
    /// node whose services hang.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1,
          default_missing_value = "true", value_name = "BOOL")]
    pub graceful: bool,
}

pub const UPGRADE_COLUMNS: &[&str] = &["slot", "release", "generation", "tries", "rebooting"];
pub const ROLLBACK_COLUMNS: &[&str] = &["slot", "release", "rebooting"];

pub async fn run(args: &UpgradeArgs, g: &Globals) -> anyhow::Result<ExitCode> {
    let file = std::fs::File::open(&args.bundle).with_context(|| format!("cannot open {}", args.bundle.display()))?;
    let bundle = UpgradeBundle::from_tar(std::io::BufReader::new(file))
        .with_context(|| format!("{} is not a valid upgrade bundle", args.bundle.display()))?;
    let bundle = Arc::new(bundle);
    let target = g.target()?;
    let bytes = (bundle.kernel.len() + bundle.initrd.len()) as u64;
    let progress = UploadProgress::new(&target.nodes, bytes);
    let how = How { stage: args.stage, tries: args.tries, health_timeout_seconds: args.health_timeout.unwrap_or(0) };
    let results = crate::client::fan_out(&target.nodes, &target.auth, |c| {
        let bar = progress.bar(&c.node);
        upgrade(c, bundle.clone(), how, bar)
    })
    .await;
    progress.clear();
    Ok(output::print(g.format(), UPGRADE_COLUMNS, &results))
}

/// How an upgrade takes effect.
#[derive(Debug, Clone, Copy, Default)]
pub struct How {
    /// Do not reboot now.
    pub stage: bool,
    /// Boots to become healthy (0: the node's default).
    pub tries: u32,
    /// Seconds per boot (0: the running slot's).
    pub health_timeout_seconds: u32,
}

/// The messages of one upgrade: the header, then the parts in chunks.
pub fn requests(
    bundle: Arc<UpgradeBundle>,
    how: How,
    bar: ProgressBar,
) -> impl futures::Stream<Item = pb::UpgradeRequest> + Send + 'static {
    use pb::upgrade_request::Part;
    let header = pb::UpgradeRequest {
        part: Some(Part::Header(pb::UpgradeHeader {
            manifest: bundle.manifest_bytes.clone(),
            signature: bundle.signature.clone(),
            stage: how.stage,
            tries: how.tries,
            health_timeout_seconds: how.health_timeout_seconds,
        })),
    };
    let chunks = [KERNEL_PART, INITRD_PART].into_iter().flat_map(move |part| {
        let bundle = bundle.clone();
        let bar = bar.clone();
        let len = if part == KERNEL_PART { bundle.kernel.len() } else { bundle.initrd.len() };
        (0..len.div_ceil(CHUNK)).map(move |i| {
            let bytes = if part == KERNEL_PART { &bundle.kernel } else { &bundle.initrd };
            let piece = &bytes[i * CHUNK..((i + 1) * CHUNK).min(bytes.len())];
            bar.inc(piece.len() as u64);
            pb::UpgradeRequest { part: Some(Part::Chunk(pb::UpgradeChunk { part: part.into(), data: piece.to_vec() })) }
        })
    });
    futures::stream::iter(std::iter::once(header).chain(chunks))
}

pub async fn upgrade(
    mut c: NodeClient,
    bundle: Arc<UpgradeBundle>,
    how: How,
    bar: ProgressBar,
) -> Result<Output, String> {
    let result = call_within(UPGRADE_TIMEOUT, c.machine.upgrade(requests(bundle, how, bar.clone()))).await;
    bar.finish_with_message(if result.is_ok() { "written" } else { "failed" });
    Ok(upgrade_output(&result?))
}

pub fn upgrade_output(r: &pb::UpgradeResponse) -> Output {
    let fields = obj(json!({
        "slot": r.slot, "release": r.release, "generation": r.generation, "tries": r.tries, "rebooting": r.rebooting,
    }));
    Output::single(fields, UPGRADE_COLUMNS)
}

pub async fn run_rollback(args: &RollbackArgs, g: &Globals) -> anyhow::Result<ExitCode> {
    let stage = args.stage;
    g.each_node(ROLLBACK_COLUMNS, |mut c| async move {
        let r = call(c.machine.rollback(pb::RollbackRequest { stage })).await?;
        Ok(Output::single(
            obj(json!({ "slot": r.slot, "release": r.release, "rebooting": r.rebooting })),
            ROLLBACK_COLUMNS,
        ))
    })
    .await
}

pub async fn run_reset(args: &ResetArgs, g: &Globals) -> anyhow::Result<ExitCode> {
    let (wipe, ungraceful) = (args.wipe.clone(), !args.graceful);
    g.each_node(crate::machine::MESSAGE_COLUMNS, |mut c| {
        let wipe = wipe.clone();
        async move {
            let r = call(c.machine.reset(pb::ResetRequest { wipe, ungraceful })).await?;
            Ok(crate::machine::message_output(&r.message))
        }
    })
    .await
}

/// `upgrade-pack`: reads the parts, signs, writes the tar atomically.
pub fn run_pack(args: &PackArgs) -> anyhow::Result<ExitCode> {
    let read = |p: &PathBuf| std::fs::read(p).with_context(|| format!("cannot read {}", p.display()));
    let key = bronze_bundle::SigningKey::read_file(&args.sign_key)?;
    let bundle = UpgradeBundle::create(&args.release, &args.arch, read(&args.kernel)?, read(&args.initrd)?, &key);
    bundle.manifest().context("the bundle's manifest")?;
    crate::clientconfig::write_atomic(&args.output_file, &bundle.to_tar(), 0o644)
        .with_context(|| format!("cannot write {}", args.output_file.display()))?;
    println!("wrote {} (release {}, signed by {})", args.output_file.display(), args.release, key.public_key());
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    #[tokio::test]
    async fn the_stream_is_the_header_then_vmlinuz_then_initrd_in_chunks() {
        let key = bronze_bundle::SigningKey::generate().unwrap();
        let bundle = Arc::new(UpgradeBundle::create("v1", "x86_64", vec![1; CHUNK + 10], vec![2; 5], &key));
        let bar = ProgressBar::hidden();
        let how = How { stage: true, tries: 2, health_timeout_seconds: 60 };
        let messages: Vec<_> = requests(bundle.clone(), how, bar.clone()).collect().await;
        use pb::upgrade_request::Part;
        let Some(Part::Header(h)) = &messages[0].part else { panic!("{:?}", messages[0]) };
        assert_eq!((h.stage, h.tries, h.health_timeout_seconds, &h.manifest), (true, 2, 60, &bundle.manifest_bytes));
        let parts: Vec<(String, usize)> = messages[1..]
            .iter()
            .map(|m| match &m.part {
                Some(Part::Chunk(c)) => (c.part.clone(), c.data.len()),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(parts, [("vmlinuz".into(), CHUNK), ("vmlinuz".into(), 10), ("initrd".into(), 5)]);
        assert_eq!(bar.position(), (CHUNK + 15) as u64);
    }
}
