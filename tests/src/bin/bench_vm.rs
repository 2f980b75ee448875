//! VM benchmarks, printed as figures (run with `cargo xtask bench-vm [BOOTS]`):
//!
//! 1. from the kernel starting `/init` to bronzed's API answering, from the
//!    console's kernel timestamps, median of BOOTS (default 5) boots, and
//!    its ratio to the kernel's own boot time (kernel start → `/init`). The
//!    API answers once it listens *and* the network is up ("network ready"),
//!    whichever is later; both are printed;
//! 2. the host-side time until the API answers a real RPC;
//! 3. RSS of bronzed as PID 1 after boot with a config applied and the
//!    image's plugins loaded;
//! 4. the image sizes (`target/images/sizes.txt`).
//!
//! The guest reaches nothing (`restrict=on`); only its API is forwarded to 127.0.0.1.

use bronze_api::v1 as pb;
use bronze_images::layout::ImageLayout;
use bronze_images::vm::{Disk, DiskFormat, Vm, VmSpec, maintenance_fingerprint};
use bronze_tests::{Pki, free_port};
use bronzectl::client::NodeClient;
use bronzectl::connect::Auth;
use std::path::Path;
use std::time::{Duration, Instant};

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

fn main() -> anyhow::Result<()> {
    let boots: usize = std::env::args().nth(1).map(|s| s.parse()).transpose()?.unwrap_or(5);
    let target = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap_or(Path::new(".")).join("target");
    let layout = ImageLayout::new(&target);
    anyhow::ensure!(layout.is_built(), "no image: run `cargo xtask image`");
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let (mut userspace, mut kernel, mut answered) = (vec![], vec![], vec![]);
    let (mut listening, mut networked) = (vec![], vec![]);
    let mut rss = None;
    for boot in 0..boots {
        let tmp = tempfile::tempdir()?;
        let disk = tmp.path().join("state.img");
        let status = std::process::Command::new("mke2fs")
            .args(["-q", "-t", "ext4", "-L", "BRONZE_STATE"])
            .arg(&disk)
            .arg("64M")
            .status()?;
        anyhow::ensure!(status.success(), "mke2fs failed");
        let port = free_port();
        let mut spec = VmSpec::new(layout.vmlinux(), layout.initrd(), port);
        spec.disks.push(Disk { path: disk, format: DiskFormat::Raw });
        spec.append = APPEND.split_whitespace().map(String::from).collect();
        let started = Instant::now();
        let mut vm = Vm::spawn(&spec, &tmp.path().join("console.log"))?;
        let deadline = started + Duration::from_secs(120);
        let init_line = vm.wait_for_line("Run /init as init process", deadline)?;
        // The fingerprint is logged just before "API listening".
        let fp_line = vm.wait_for_line("fingerprint=", deadline)?;
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
        let host_answer = rt.block_on(async {
            loop {
                if let Ok(mut c) = NodeClient::connect(&node, &Auth::Insecure { fingerprint: None }).await
                    && c.machine.version(pb::VersionRequest {}).await.is_ok()
                {
                    return started.elapsed();
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
        let t_init = stamp(&init_line).unwrap_or(0.0);
        let (t_listen, t_network) = (t_listen.unwrap_or(0.0), t_network.unwrap_or(0.0));
        let t_api = t_listen.max(t_network);
        println!(
            "boot {boot}: kernel → /init {t_init:.3} s, /init → API listening {:.3} s, → network ready {:.3} s, → API answering {:.3} s (console stamps); host: API answered after {:.2} s",
            t_listen - t_init,
            t_network - t_init,
            t_api - t_init,
            host_answer.as_secs_f64()
        );
        kernel.push(t_init);
        listening.push(t_listen - t_init);
        networked.push(t_network - t_init);
        userspace.push(t_api - t_init);
        answered.push(host_answer.as_secs_f64());
        if boot == 0 {
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
    }
    let (u, k) = (median(userspace), median(kernel));
    println!(
        "median over {boots} boots: kernel → /init {k:.3} s, /init → API listening {:.3} s, → network ready {:.3} s, → API answering {u:.3} s, userspace share {:.0}% of boot (userspace/kernel {:.2}); host-side API answer {:.2} s",
        median(listening),
        median(networked),
        u / (u + k) * 100.0,
        u / k,
        median(answered)
    );
    if let Some(rss) = rss {
        println!(
            "RSS of bronzed as PID 1, configured, image plugins loaded, 5 s later: {:.1} MiB",
            rss as f64 / (1 << 20) as f64
        );
    }
    println!("{}", std::fs::read_to_string(layout.sizes())?.trim());
    Ok(())
}
