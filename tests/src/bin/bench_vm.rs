//! VM benchmarks, printed as figures (run with `cargo xtask bench-vm [BOOTS]`):
//!
//! 1. kernel start → bronzed's API answering, from the console's kernel
//!    timestamps, median of BOOTS (default 5) boots, Bronze's kernel and
//!    Debian's alternating in the same run, split into kernel start →
//!    `/init` and `/init` → API. The API answers once it listens *and* the
//!    network is up ("network ready"), whichever is later; both are printed;
//! 2. the host-side time until the API answers a real RPC;
//! 3. the initramfs compression: the image's archive as none, gzip, lz4 and
//!    zstd (the kernel's own levels), BOOTS boots each on Bronze's kernel,
//!    alternating, by total boot time;
//! 4. RSS of bronzed as PID 1 after boot with a config applied and the
//!    image's plugins loaded;
//! 5. the image sizes (`target/images/sizes.txt`, `images/debian/sizes.txt`);
//! 6. the disk image booted like a machine (OVMF, systemd-boot, the kernel's
//!    EFI stub, DHCP from qemu), BOOTS boots alternating with the direct
//!    kernel boot of the same build: host-side qemu start → firmware hands
//!    over to the boot loader → kernel's first line → API answering;
//! 7. the floor (section `floor`): Bronze's kernel booted BOOTS times each,
//!    alternating, with three initramfs: one whose `/init` prints the two
//!    lines and does nothing else (the kernel's own cost), one whose `/init`
//!    is the least an API node can do (`tests/floor-init`: TLS 1.3 set up,
//!    `eth0` up by ioctl, listening), and the image's. What the target leaves
//!    for userspace, and what bronzed costs above the least, are printed.
//!
//! The guest reaches nothing (`restrict=on`); only its API is forwarded to 127.0.0.1.

use bronze_api::v1 as pb;
use bronze_images::layout::{ImageLayout, KernelChoice};
use bronze_images::vm::{Disk, DiskFormat, Firmware, Vm, VmSpec, maintenance_fingerprint};
use bronze_tests::{Pki, free_port};
use bronzectl::client::NodeClient;
use bronzectl::connect::Auth;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The target for kernel start → API answering under TCG.
const TARGET_S: f64 = 1.2;

const APPEND: &str = "bronze.ip=eth0:10.0.2.15/24:10.0.2.2 bronze.ntp=127.0.0.1:1";

/// The kernel timestamp `[   4.476019]` at the start of a console line.
fn stamp(line: &str) -> Option<f64> {
    let open = line.find('[')?;
    let close = line[open..].find(']')? + open;
    line[open + 1..close].trim().parse().ok()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// One boot's figures, from the console's kernel timestamps and the host.
struct Boot {
    /// Kernel start → `Run /init`.
    kernel: f64,
    /// `/init` → "API listening".
    listening: f64,
    /// `/init` → "network ready".
    networked: f64,
    /// Kernel start → API answering (the later of the two above).
    api: f64,
    /// qemu started → an RPC answered on the host.
    answered: f64,
}

/// Boots `spec` once with a fresh state disk; with `measure_rss`, applies a
/// config and returns bronzed's RSS once the image's plugins are loaded.
/// With `rpc`, the host side waits for an RPC answer (bronzed's image).
fn boot(
    rt: &tokio::runtime::Runtime,
    kernel: &Path,
    initrd: &Path,
    measure_rss: bool,
    rpc: bool,
) -> anyhow::Result<(Boot, Option<u64>)> {
    let tmp = tempfile::tempdir()?;
    let disk = tmp.path().join("state.img");
    let status = std::process::Command::new("mke2fs")
        .args(["-q", "-t", "ext4", "-L", "BRONZE_STATE"])
        .arg(&disk)
        .arg("64M")
        .status()?;
    anyhow::ensure!(status.success(), "mke2fs failed");
    let port = free_port();
    let mut spec = VmSpec::new(kernel, initrd, port);
    spec.disks.push(Disk { path: disk, format: DiskFormat::Raw });
    spec.append = APPEND.split_whitespace().map(String::from).collect();
    let started = Instant::now();
    let mut vm = Vm::spawn(&spec, &tmp.path().join("console.log"))?;
    let deadline = started + Duration::from_secs(120);
    let init_line = vm.wait_for_line("Run /init as init process", deadline)?;
    // bronzed logs the fingerprint just before "API listening"; the floor's
    // /init has none.
    let fp_line = if measure_rss { vm.wait_for_line("fingerprint=", deadline)? } else { String::new() };
    let (mut t_listen, mut t_network) = (None, None);
    while t_listen.is_none() || t_network.is_none() {
        let line = vm.wait_for("API listening and network ready", deadline, |l| {
            l.contains("API listening") || l.contains("network ready")
        })?;
        if line.contains("API listening") {
            t_listen = stamp(&line);
        } else {
            t_network = stamp(&line);
        }
    }
    let node = format!("127.0.0.1:{port}");
    // The floor's /init answers TLS, not RPCs: no host-side figure for it.
    let host_answer = rt.block_on(async {
        loop {
            if !rpc || answers(&node).await {
                return started.elapsed();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    let t_init = stamp(&init_line).unwrap_or(0.0);
    let (t_listen, t_network) = (t_listen.unwrap_or(0.0), t_network.unwrap_or(0.0));
    let figures = Boot {
        kernel: t_init,
        listening: t_listen - t_init,
        networked: t_network - t_init,
        api: t_listen.max(t_network),
        answered: host_answer.as_secs_f64(),
    };
    let mut rss = None;
    if measure_rss {
        let fingerprint = maintenance_fingerprint(&fp_line).unwrap_or_default();
        let pki = Pki::new();
        let image_plugins =
            std::fs::read_dir(bronze_tests::plugins::bundle_dir("health-tcp").parent().expect("target/plugins"))?
                .count();
        rss = Some(rt.block_on(async {
            let mut c = NodeClient::connect(&node, &Auth::Insecure { fingerprint: Some(fingerprint) })
                .await
                .map_err(anyhow::Error::msg)?;
            let data = pki.node_config("bench").into_bytes();
            c.machine.apply_configuration(pb::ApplyConfigurationRequest { data, ..Default::default() }).await?;
            let applied = std::time::Instant::now();
            let mut c = NodeClient::connect(&node, &pki.auth(&["os:admin"])).await.map_err(anyhow::Error::msg)?;
            // The image's plugins install in the background at boot:
            // measure once they are all loaded.
            let deadline = std::time::Instant::now() + Duration::from_secs(180);
            let loaded = loop {
                let list = c.plugins.list(pb::PluginListRequest {}).await?.into_inner().plugins;
                let ready =
                    list.iter().filter(|p| matches!(p.artifact.as_str(), "compiled" | "cache" | "image")).count();
                if ready == image_plugins {
                    break list.len();
                }
                anyhow::ensure!(std::time::Instant::now() < deadline, "image plugins not loaded: {list:?}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            };
            tokio::time::sleep(Duration::from_secs(5)).await;
            let m = c.machine.memory(pb::MemoryRequest {}).await?.into_inner();
            println!("{loaded} image plugins loaded ({:.1} s after apply)", applied.elapsed().as_secs_f64());
            anyhow::Ok(m.process_rss_bytes)
        })?);
    }
    vm.kill()?;
    Ok((figures, rss))
}

/// Whether the node answers Version within 500 ms: a connection that slirp
/// accepted before the guest could take it is dropped and tried again,
/// instead of waiting out the client's own timeout.
async fn answers(node: &str) -> bool {
    let attempt = async {
        let mut c = NodeClient::connect(node, &Auth::Insecure { fingerprint: None }).await.ok()?;
        c.machine.version(pb::VersionRequest {}).await.ok()
    };
    matches!(tokio::time::timeout(Duration::from_millis(500), attempt).await, Ok(Some(_)))
}

/// One firmware boot of a copy of the disk image, host-side seconds after
/// qemu started: (boot loader started, kernel's first line, API answered).
fn boot_firmware(rt: &tokio::runtime::Runtime, layout: &ImageLayout) -> anyhow::Result<(f64, f64, f64)> {
    let tmp = tempfile::tempdir()?;
    let disk = tmp.path().join("disk.img");
    std::fs::copy(layout.disk_image(), &disk)?;
    let port = free_port();
    let firmware = Firmware::ovmf(tmp.path().join("efivars.fd"))?;
    let spec = VmSpec::from_disk_image(Disk { path: disk, format: DiskFormat::Raw }, firmware, port);
    let started = Instant::now();
    let mut vm = Vm::spawn(&spec, &tmp.path().join("console.log"))?;
    let deadline = started + Duration::from_secs(180);
    vm.wait_for_line("BdsDxe: starting", deadline)?;
    let loader = started.elapsed().as_secs_f64();
    vm.wait_for_line("Linux version", deadline)?;
    let kernel = started.elapsed().as_secs_f64();
    // As in the direct boot, connect once the guest can answer: listening,
    // with its address (from qemu's DHCP here: the disk's entry carries no
    // bronze.ip=). An earlier connection waits out its own timeout.
    vm.wait_for_line("API listening", deadline)?;
    vm.wait_for_line("DHCP lease bound", deadline)?;
    let node = format!("127.0.0.1:{port}");
    let answered = rt.block_on(async {
        loop {
            if answers(&node).await {
                return Ok(started.elapsed());
            }
            anyhow::ensure!(Instant::now() < deadline, "no API within 180 s");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })?;
    vm.kill()?;
    Ok((loader, kernel, answered.as_secs_f64()))
}

/// The initramfs `layout` ships, recompressed as each format the kernel
/// can unpack, into `dir`: (name, file, size). The same archive in each.
fn initrd_variants(layout: &ImageLayout, dir: &Path) -> anyhow::Result<Vec<(&'static str, PathBuf, u64)>> {
    use std::process::{Command, Stdio};
    let newc = dir.join("initrd.cpio");
    let raw = std::fs::read(layout.initrd())?;
    let uncompressed = if raw.starts_with(&[0x1f, 0x8b]) {
        let out = Command::new("gzip").arg("-dc").arg(layout.initrd()).stderr(Stdio::inherit()).output()?;
        anyhow::ensure!(out.status.success(), "gzip -dc failed");
        out.stdout
    } else {
        // The image's formats (`InitrdFormat`) are none and gzip.
        anyhow::ensure!(raw.starts_with(b"070701"), "{} is neither gzip nor newc", layout.initrd().display());
        raw
    };
    std::fs::write(&newc, &uncompressed)?;
    // The levels the kernel's own initramfs build uses
    // (usr/Makefile: gzip -n -9, lz4 -l -9, zstd -19).
    let mut variants = vec![("none", newc.clone(), uncompressed.len() as u64)];
    for (name, program, args) in [
        ("gzip", "gzip", &["-n", "-9", "-c"][..]),
        ("lz4", "lz4", &["-l", "-9", "-c", "-q"][..]),
        ("zstd", "zstd", &["-19", "-c", "-q", "-T0"][..]),
    ] {
        let path = dir.join(format!("initrd.{name}"));
        let out = Command::new(program).args(args).arg(&newc).output()?;
        anyhow::ensure!(out.status.success(), "{program} failed");
        std::fs::write(&path, &out.stdout)?;
        variants.push((name, path, out.stdout.len() as u64));
    }
    Ok(variants)
}

/// The floor's two initramfs in `dir`, (name, file): `/init` is
/// `tests/floor-init` (debug info stripped, as the image strips bronzed's),
/// told by `/floor` to print its two lines and do nothing else (`empty`) or to
/// do the least an API node does first (`api`, with a new self-signed
/// certificate and the address the bench's command line gives `eth0`).
fn floor_initrds(target: &Path, dir: &Path) -> anyhow::Result<Vec<(&'static str, PathBuf)>> {
    use bronze_images::cpio::{Header, NewcWriter, S_IFDIR, S_IFREG};
    use std::io::Write;
    let built = target.join("x86_64-unknown-linux-musl/release/floor-init");
    anyhow::ensure!(built.is_file(), "no {}: run `cargo xtask bench-vm`", built.display());
    let stripped = dir.join("floor-init");
    bronze_images::layout::strip(&built, &stripped, bronze_images::layout::Strip::Debug)?;
    let init = std::fs::read(&stripped)?;
    let address = APPEND
        .split_whitespace()
        .find_map(|arg| arg.strip_prefix("bronze.ip=eth0:"))
        .and_then(|rest| rest.split(':').next())
        .ok_or_else(|| anyhow::anyhow!("no bronze.ip=eth0:ADDRESS/PREFIX in {APPEND:?}"))?;
    let server = bronze_pki::self_signed_server(&["floor".to_string()])?;
    let mut initrds = vec![];
    for (name, mode) in [("empty", "empty".to_string()), ("api", format!("api {address}"))] {
        let mut files: Vec<(&str, u32, &[u8])> = vec![
            ("dev", S_IFDIR | 0o755, b""),
            ("init", S_IFREG | 0o755, &init),
            ("floor", S_IFREG | 0o644, mode.as_bytes()),
        ];
        if name == "api" {
            files.push(("floor.crt", S_IFREG | 0o644, server.cert_pem.as_bytes()));
            files.push(("floor.key", S_IFREG | 0o600, server.key_pem.as_bytes()));
        }
        let path = dir.join(format!("floor-{name}.cpio"));
        let mut cpio = NewcWriter::new(std::io::BufWriter::new(std::fs::File::create(&path)?));
        for (ino, (file, mode, mut data)) in (1..).zip(files) {
            let nlink = if mode & S_IFDIR != 0 { 2 } else { 1 };
            cpio.append(file, &Header { ino, mode, nlink, ..Header::default() }, data.len() as u64, &mut data)?;
        }
        cpio.finish()?.flush()?;
        initrds.push((name, path));
    }
    Ok(initrds)
}

fn layout_has_disk(layout: &ImageLayout) -> bool {
    layout.disk_image().is_file() && Firmware::is_installed()
}

fn main() -> anyhow::Result<()> {
    let boots: usize = std::env::args().nth(1).map(|s| s.parse()).transpose()?.unwrap_or(5);
    // `bench-vm BOOTS SECTION`: only `kernels`, `compression`, `firmware` or `floor`.
    let only = std::env::args().nth(2);
    if let Some(section) = &only {
        anyhow::ensure!(
            ["kernels", "compression", "firmware", "floor"].contains(&section.as_str()),
            "unknown section {section:?}: expected kernels, compression, firmware or floor"
        );
    }
    let wants = |section: &str| only.as_deref().is_none_or(|o| o == section);
    let target = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap_or(Path::new(".")).join("target");
    let bronze = ImageLayout::with_kernel(&target, KernelChoice::Bronze);
    let debian = ImageLayout::with_kernel(&target, KernelChoice::Debian);
    for layout in [&bronze, &debian] {
        anyhow::ensure!(layout.is_built(), "no image in {}: run `cargo xtask bench-vm`", layout.dir.display());
    }
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;

    // 1. The two kernels with their own initramfs, alternating in one run.
    let mut rss = None;
    if wants("kernels") {
        println!("== kernel start → API answering: Bronze's kernel beside Debian's ({boots} boots each, alternating)");
        let mut by_kernel: Vec<(KernelChoice, Vec<Boot>)> =
            vec![(KernelChoice::Bronze, vec![]), (KernelChoice::Debian, vec![])];
        for round in 0..boots {
            for (kernel, runs) in by_kernel.iter_mut() {
                let layout = if *kernel == KernelChoice::Bronze { &bronze } else { &debian };
                let measure = round == 0 && *kernel == KernelChoice::Bronze;
                let (b, r) = boot(&rt, &layout.vmlinux(), &layout.initrd(), measure, true)?;
                println!(
                    "boot {round} {:<6}: kernel → /init {:.3} s, /init → API listening {:.3} s, → network ready {:.3} s; kernel start → API answering {:.3} s; host: answered after {:.2} s",
                    kernel.name(),
                    b.kernel,
                    b.listening,
                    b.networked,
                    b.api,
                    b.answered
                );
                rss = rss.or(r);
                runs.push(b);
            }
        }
        for (kernel, runs) in &by_kernel {
            let pick = |f: fn(&Boot) -> f64| median(runs.iter().map(f).collect());
            let (k, api) = (pick(|b| b.kernel), pick(|b| b.api));
            println!(
                "median {:<6} over {boots}: kernel → /init {k:.3} s, /init → API listening {:.3} s, → network ready {:.3} s, kernel start → API answering {api:.3} s (userspace share {:.0}%); host-side answer {:.2} s",
                kernel.name(),
                pick(|b| b.listening),
                pick(|b| b.networked),
                (api - k) / api * 100.0,
                pick(|b| b.answered)
            );
        }
    }

    // 2. Initramfs compression, by total boot time on Bronze's kernel.
    if wants("compression") {
        let tmp = tempfile::tempdir()?;
        let variants = initrd_variants(&bronze, tmp.path())?;
        println!("== initramfs compression on Bronze's kernel ({boots} boots each, alternating)");
        let mut by_format: Vec<Vec<Boot>> = variants.iter().map(|_| vec![]).collect();
        for round in 0..boots {
            for ((name, path, _), runs) in variants.iter().zip(by_format.iter_mut()) {
                let (b, _) = boot(&rt, &bronze.vmlinux(), path, false, true)?;
                println!(
                    "boot {round} {name:<5}: kernel → /init {:.3} s; kernel start → API answering {:.3} s; host: answered after {:.2} s",
                    b.kernel, b.api, b.answered
                );
                runs.push(b);
            }
        }
        for ((name, _, size), runs) in variants.iter().zip(&by_format) {
            let pick = |f: fn(&Boot) -> f64| median(runs.iter().map(f).collect());
            println!(
                "median {name:<5} {:>7.2} MiB: kernel → /init {:.3} s, kernel start → API answering {:.3} s, host-side answer {:.2} s",
                *size as f64 / (1 << 20) as f64,
                pick(|b| b.kernel),
                pick(|b| b.api),
                pick(|b| b.answered)
            );
        }
    }

    // 3. The disk image through UEFI firmware and systemd-boot, beside the
    // direct kernel boot of the same build.
    let firmware_wanted = wants("firmware");
    if firmware_wanted && layout_has_disk(&bronze) {
        println!(
            "== disk image through OVMF + systemd-boot beside the direct kernel boot ({boots} boots each, alternating)"
        );
        let (mut firmware, mut direct) = (vec![], vec![]);
        for round in 0..boots {
            let (loader, kernel, answered) = boot_firmware(&rt, &bronze)?;
            println!(
                "boot {round} firmware: boot loader started {loader:.2} s, kernel's first line {kernel:.2} s, API answered {answered:.2} s after qemu started"
            );
            firmware.push((loader, kernel, answered));
            let (b, _) = boot(&rt, &bronze.vmlinux(), &bronze.initrd(), false, true)?;
            println!("boot {round} direct  : API answered {:.2} s after qemu started", b.answered);
            direct.push(b.answered);
        }
        let (loader, kernel, answered) = (
            median(firmware.iter().map(|f| f.0).collect()),
            median(firmware.iter().map(|f| f.1).collect()),
            median(firmware.iter().map(|f| f.2).collect()),
        );
        let direct = median(direct);
        println!(
            "median firmware over {boots}: boot loader started {loader:.2} s, kernel's first line {kernel:.2} s, API answered {answered:.2} s; direct kernel boot: API answered {direct:.2} s (UEFI + boot loader + EFI stub cost {:.2} s)",
            answered - direct
        );
    } else if firmware_wanted {
        println!("== disk image: skipped (no {} or no OVMF)", bronze.disk_image().display());
    }

    // 4. The floor: the kernel with nothing after it, the least an API node
    // does, and bronzed, on Bronze's kernel.
    if wants("floor") {
        let tmp = tempfile::tempdir()?;
        let mut variants = floor_initrds(&target, tmp.path())?;
        variants.push(("bronzed", bronze.initrd()));
        println!(
            "== the floor on Bronze's kernel ({boots} boots each, alternating): an /init that does nothing, the least API node (tests/floor-init), bronzed"
        );
        let mut by_variant: Vec<Vec<Boot>> = variants.iter().map(|_| vec![]).collect();
        for round in 0..boots {
            for ((name, path), runs) in variants.iter().zip(by_variant.iter_mut()) {
                let (b, _) = boot(&rt, &bronze.vmlinux(), path, false, *name == "bronzed")?;
                println!(
                    "boot {round} {name:<7}: kernel → /init {:.3} s, /init → API listening {:.3} s, → network ready {:.3} s; kernel start → API answering {:.3} s",
                    b.kernel, b.listening, b.networked, b.api
                );
                runs.push(b);
            }
        }
        let mut answering = vec![];
        for ((name, _), runs) in variants.iter().zip(&by_variant) {
            let pick = |f: fn(&Boot) -> f64| median(runs.iter().map(f).collect());
            let (k, api) = (pick(|b| b.kernel), pick(|b| b.api));
            println!(
                "median {name:<7} over {boots}: kernel → /init {k:.3} s, /init → API answering {:.3} s, kernel start → API answering {api:.3} s",
                pick(|b| b.listening.max(b.networked))
            );
            answering.push(api);
        }
        let (empty, least, ours) = (answering[0], answering[1], answering[2]);
        let room = if empty < TARGET_S {
            format!("leaving {:.3} s for a node's userspace", TARGET_S - empty)
        } else {
            format!("{:.3} s over the target before any userspace work", empty - TARGET_S)
        };
        println!(
            "target {TARGET_S:.1} s: the kernel and an /init that does nothing take {empty:.3} s, {room}; the least API node answers at {least:.3} s ({:+.3} s beside the empty /init); bronzed at {ours:.3} s ({:.3} s above the least)",
            least - empty,
            ours - least
        );
    }

    if let Some(rss) = rss {
        println!(
            "RSS of bronzed as PID 1 (Bronze's kernel), configured, image plugins loaded, 5 s later: {:.1} MiB",
            rss as f64 / (1 << 20) as f64
        );
    }
    for layout in [&bronze, &debian] {
        println!("{}", std::fs::read_to_string(layout.sizes())?.trim());
    }
    Ok(())
}
