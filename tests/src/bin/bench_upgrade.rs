//! Upgrade benchmarks, printed as figures (run with
//! `cargo xtask bench-upgrade [RUNS] [rate|vm]`; figures in
//! docs/benchmarks.md):
//!
//! 1. *rate*: the upload of a real upgrade bundle (the image's kernel and
//!    initramfs, signed) over loopback to a release `bronzed` in process
//!    mode whose boot slots are a directory (`--boot-dir`), staged: TLS,
//!    gRPC, the node's checks, the slot's temporary files, sha256, fsync,
//!    rename and entry, timed from the first message to the answer. Side by
//!    side, alternating, a plain copy of the same bytes over a loopback TCP
//!    connection into a file in the same directory, fsynced before the
//!    receiver answers. Median of RUNS (default 5) each, and the ratio of
//!    the rates.
//! 2. *vm*: end to end on the disk image booted through OVMF and
//!    systemd-boot: upload, verify and write, reboot, the API answering on
//!    the new slot, the machine ready, the slot marked good (which waits for
//!    30 s of continuous readiness by design). Three upgrades in a row,
//!    alternating slots; medians.
//!
//! The guest reaches nothing (`restrict=on`); only its API is forwarded.

use bronze_api::v1 as pb;
use bronze_bundle::SigningKey;
use bronze_bundle::upgrade::UpgradeBundle;
use bronze_images::layout::ImageLayout;
use bronze_images::vm::Firmware;
use bronze_tests::vmnode::{BOOT, DiskVm, wait_api};
use bronze_tests::{Node, NodeOptions, Pki, bin, bronzectl, trusting_upgrades};
use bronzectl::client::NodeClient;
use bronzectl::connect::Auth;
use std::io::{Read, Write};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn mib_per_s(bytes: usize, secs: f64) -> f64 {
    bytes as f64 / (1 << 20) as f64 / secs
}

/// Sends `bundle` with `how` on an open client; the seconds until the node answered.
async fn upload(
    c: &mut NodeClient,
    bundle: &Arc<UpgradeBundle>,
    stage: bool,
) -> anyhow::Result<(f64, pb::UpgradeResponse)> {
    let how = bronzectl::upgrade::How { stage, ..Default::default() };
    let requests = bronzectl::upgrade::requests(bundle.clone(), how, indicatif::ProgressBar::hidden());
    let started = Instant::now();
    let answer = c.machine.upgrade(requests).await?.into_inner();
    Ok((started.elapsed().as_secs_f64(), answer))
}

/// A plain copy of `data` over a loopback TCP connection into `into`,
/// fsynced before the receiver answers: seconds.
fn plain_copy(data: &[u8], into: &Path) -> anyhow::Result<f64> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let into = into.to_path_buf();
    let receiver = std::thread::spawn(move || -> anyhow::Result<u64> {
        let (mut conn, _) = listener.accept()?;
        let mut file = std::fs::File::create(&into)?;
        let n = std::io::copy(&mut conn, &mut file)?;
        file.sync_all()?;
        conn.write_all(&n.to_le_bytes())?;
        Ok(n)
    });
    let started = Instant::now();
    let mut conn = std::net::TcpStream::connect(addr)?;
    conn.write_all(data)?;
    conn.shutdown(std::net::Shutdown::Write)?;
    let mut answer = [0u8; 8];
    conn.read_exact(&mut answer)?;
    let secs = started.elapsed().as_secs_f64();
    let received = receiver.join().map_err(|_| anyhow::anyhow!("receiver panicked"))??;
    anyhow::ensure!(received == data.len() as u64 && u64::from_le_bytes(answer) == received, "short copy");
    Ok(secs)
}

async fn rate(layout: &ImageLayout, runs: usize) -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let kernel = std::fs::read(layout.bzimage())?;
    let initrd = std::fs::read(layout.initrd())?;
    let esp = bronze_tests::boot_dir(&tmp.path().join("esp"), &kernel, &initrd);
    let key = SigningKey::generate()?;
    let pki = Pki::new();
    let node = Node::start_with(NodeOptions {
        config: Some(trusting_upgrades(&pki.node_config("bench-upgrade"), &key)),
        args: vec!["--boot-dir".into(), esp.root.display().to_string(), "--boot-slot".into(), "a".into()],
        ..Default::default()
    })
    .await;
    let bundle =
        Arc::new(UpgradeBundle::create("v0.2.0", std::env::consts::ARCH, kernel.clone(), initrd.clone(), &key));
    let payload = [kernel, initrd].concat();
    let bytes = payload.len();
    println!(
        "== upload over loopback: {:.1} MiB (the image's kernel + initramfs), {runs} runs each, alternating; bronzed {}",
        bytes as f64 / (1 << 20) as f64,
        bin("bronzed").display()
    );
    let mut c = NodeClient::connect(&node.addr, &pki.auth(&["os:admin"])).await.map_err(anyhow::Error::msg)?;
    // One of each not counted: the files exist, the page cache is warm.
    upload(&mut c, &bundle, true).await?;
    plain_copy(&payload, &esp.root.join("plain-copy"))?;
    let (mut ours, mut plain) = (vec![], vec![]);
    for run in 0..runs {
        let (secs, answer) = upload(&mut c, &bundle, true).await?;
        anyhow::ensure!(answer.slot == "b" && !answer.rebooting, "unexpected answer {answer:?}");
        let copy = plain_copy(&payload, &esp.root.join("plain-copy"))?;
        println!(
            "run {run}: upgrade upload {secs:.3} s ({:.0} MiB/s); plain copy {copy:.3} s ({:.0} MiB/s)",
            mib_per_s(bytes, secs),
            mib_per_s(bytes, copy)
        );
        ours.push(secs);
        plain.push(copy);
    }
    let (ours, plain) = (median(ours), median(plain));
    println!(
        "median over {runs}: upgrade upload {ours:.3} s = {:.0} MiB/s; plain copy {plain:.3} s = {:.0} MiB/s; rate ratio (upgrade / plain copy) {:.2}",
        mib_per_s(bytes, ours),
        mib_per_s(bytes, plain),
        plain / ours
    );
    Ok(())
}

/// Polls until `ok` holds for the node's Version (any error: not yet).
async fn until(
    node: &str,
    auth: &Auth,
    deadline: Instant,
    ok: impl Fn(&pb::VersionResponse) -> bool,
) -> anyhow::Result<()> {
    loop {
        let attempt = async {
            let mut c = NodeClient::connect(node, auth).await.ok()?;
            c.machine.version(pb::VersionRequest {}).await.ok().map(|v| v.into_inner())
        };
        if let Ok(Some(v)) = tokio::time::timeout(Duration::from_millis(1500), attempt).await
            && ok(&v)
        {
            return Ok(());
        }
        anyhow::ensure!(Instant::now() < deadline, "gave up waiting");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn machine_ready(admin: &Path) -> bool {
    let run = bronzectl(Some(admin), &["-o", "json", "get", "machinestatus"]).await;
    run.code == 0 && run.stdout.contains("\"ready\":true")
}

async fn end_to_end(layout: &ImageLayout) -> anyhow::Result<()> {
    let d = DiskVm::new(layout);
    let node = d.node.clone();
    let mut vm = d.start("console.log");
    let result = async {
        wait_api(&mut vm, &node, &Auth::Insecure { fingerprint: None }, BOOT).await;
        let key = SigningKey::generate()?;
        let pki = Pki::new();
        let (_, admin) = d.configure(&mut vm, &pki, &trusting_upgrades(&pki.node_config("bench-upgrade-vm"), &key)).await;
        let auth = pki.auth(&["os:admin"]);
        let kernel = std::fs::read(layout.bzimage())?;
        let initrd = std::fs::read(layout.initrd())?;
        let bytes = kernel.len() + initrd.len();
        println!(
            "== upgrade end to end on the disk image (OVMF + systemd-boot, TCG), {:.1} MiB bundle, 3 upgrades in a row",
            bytes as f64 / (1 << 20) as f64
        );
        let mut figures: Vec<[f64; 4]> = Vec::new();
        for round in 0..3 {
            let release = format!("v0.2.{round}");
            let bundle =
                Arc::new(UpgradeBundle::create(&release, std::env::consts::ARCH, kernel.clone(), initrd.clone(), &key));
            let mut c = NodeClient::connect(&node, &auth).await.map_err(anyhow::Error::msg)?;
            let started = Instant::now();
            let (uploaded, answer) = upload(&mut c, &bundle, false).await?;
            let target = answer.slot.clone();
            let deadline = started + Duration::from_secs(300);
            until(&node, &auth, deadline, |v| v.slot == target).await?;
            let back = started.elapsed().as_secs_f64();
            while !machine_ready(&admin).await {
                anyhow::ensure!(Instant::now() < deadline, "never ready on slot {target}");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            let ready = started.elapsed().as_secs_f64();
            until(&node, &auth, deadline, |v| v.slots.iter().any(|s| s.slot == target && s.state == "good")).await?;
            let good = started.elapsed().as_secs_f64();
            println!(
                "upgrade {round} to slot {target}: uploaded, verified, written {uploaded:.2} s ({:.1} MiB/s over slirp); API on the new slot {back:.2} s; ready {ready:.2} s; marked good {good:.2} s",
                mib_per_s(bytes, uploaded)
            );
            figures.push([uploaded, back, ready, good]);
        }
        let pick = |i: usize| median(figures.iter().map(|f| f[i]).collect());
        println!(
            "median over 3: uploaded, verified, written {:.2} s; API on the new slot {:.2} s; ready {:.2} s; marked good {:.2} s (of which 30 s is the settle window)",
            pick(0),
            pick(1),
            pick(2),
            pick(3)
        );
        Ok(())
    }
    .await;
    let _ = vm.kill();
    if result.is_err() {
        eprintln!("{}", vm.console().unwrap_or_default());
    }
    result
}

fn main() -> anyhow::Result<()> {
    let runs: usize = std::env::args().nth(1).map(|s| s.parse()).transpose()?.unwrap_or(5);
    let only = std::env::args().nth(2);
    if let Some(section) = &only {
        anyhow::ensure!(["rate", "vm"].contains(&section.as_str()), "unknown section {section:?}: expected rate or vm");
    }
    let wants = |section: &str| only.as_deref().is_none_or(|o| o == section);
    let target = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap_or(Path::new(".")).join("target");
    let layout = ImageLayout::new(&target);
    anyhow::ensure!(layout.bzimage().is_file(), "no image in {}: run `cargo xtask image`", layout.dir.display());
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    if wants("rate") {
        rt.block_on(rate(&layout, runs))?;
    }
    if wants("vm") {
        if layout.disk_image().is_file() && Firmware::is_installed() {
            rt.block_on(end_to_end(&layout))?;
        } else {
            println!("== end to end: skipped (no {} or no OVMF)", layout.disk_image().display());
        }
    }
    Ok(())
}
