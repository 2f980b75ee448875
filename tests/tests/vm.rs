//! The repository's own image booted under qemu and managed only through
//! the API: maintenance mode, apply over a pinned certificate, mTLS reads,
//! a supervised service from the state disk, reboot with persistence,
//! shutdown to a clean power-off, and a crashing service's restarts.
//!
//! Needs the image (`cargo xtask image`) and qemu; `cargo xtask test`
//! provides both. The guest is on qemu user networking with `restrict=on`:
//! it reaches nothing; only its API is forwarded to 127.0.0.1. The time test
//! is the exception: qemu runs in a network namespace of the test's own with
//! only `lo` (nothing can leave it), unrestricted inside it so the guest
//! reaches a DNS server and an NTP relay there through slirp's gateway.

use bronze_images::layout::ImageLayout;
use bronze_images::vm::{Disk, DiskFormat, Vm, VmNetwork, VmSpec, maintenance_fingerprint};
use bronze_tests::netns::NetNs;
use bronze_tests::ntp::ChronyServer;
use bronze_tests::vmnode::wait_api;
use bronze_tests::{Pki, bronzectl, free_port};
use bronzectl::connect::Auth;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// Boot deadline under TCG on a loaded 2-core machine.
const BOOT: Duration = Duration::from_secs(120);
/// Guest kernel arguments: the first boot's address, a closed local NTP port.
const APPEND: &str = "bronze.ip=eth0:10.0.2.15/24:10.0.2.2 bronze.ntp=127.0.0.1:1";

fn target_dir() -> PathBuf {
    let bronzed = bronze_tests::bin("bronzed");
    bronzed.parent().and_then(Path::parent).expect("target dir").to_path_buf()
}

/// A state disk holding the static ticker at bin/ticker.
fn state_disk(dir: &Path) -> PathBuf {
    let tree = dir.join("tree");
    std::fs::create_dir_all(tree.join("bin")).unwrap();
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/ticker.rs");
    let status = Command::new("rustc")
        .args(["--edition", "2021", "-O", "--target", "x86_64-unknown-linux-musl", "-C", "target-feature=+crt-static"])
        .arg(&source)
        .arg("-o")
        .arg(tree.join("bin/ticker"))
        .status()
        .expect("rustc");
    assert!(status.success(), "building the static ticker failed (cargo xtask image adds the musl target)");
    let disk = dir.join("state.img");
    let status = Command::new("mke2fs")
        .args(["-q", "-t", "ext4", "-L", "BRONZE_STATE", "-d"])
        .arg(&tree)
        .arg(&disk)
        .arg("64M")
        .status()
        .expect("mke2fs");
    assert!(status.success());
    disk
}

fn boot(layout: &ImageLayout, disk: &Path, port: u16, console: &Path, no_reboot: bool) -> Vm {
    let mut spec = VmSpec::new(layout.vmlinux(), layout.initrd(), port);
    spec.disks.push(Disk { path: disk.to_path_buf(), format: DiskFormat::Raw });
    spec.append = APPEND.split_whitespace().map(String::from).collect();
    spec.no_reboot = no_reboot;
    Vm::spawn(&spec, console).expect("qemu starts")
}

/// The ticker as the one service; a stubborn one (it ignores SIGTERM) gets
/// a 90 s grace period.
fn services_yaml(args: &str, restart: &str) -> String {
    let grace = if args.contains("stubborn") { "    stopGracePeriod: 90s\n" } else { "" };
    format!(
        "  services:\n  - name: ticker\n    command: /var/lib/bronze/bin/ticker\n    args: [{args}]\n    restart: {restart}\n{grace}"
    )
}

async fn json(config: &Path, args: &[&str]) -> Value {
    let run = bronzectl(Some(config), &[&["-o", "json"], args].concat()).await;
    assert_eq!(run.code, 0, "bronzectl {args:?}: {run:?}");
    serde_json::from_str(run.stdout.lines().next().unwrap_or("")).unwrap_or_else(|e| panic!("{e}: {run:?}"))
}

async fn wait_json(config: &Path, args: &[&str], what: &str, ok: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let run = bronzectl(Some(config), &[&["-o", "json"], args].concat()).await;
        if run.code == 0
            && let Ok(v) = serde_json::from_str::<Value>(run.stdout.lines().next().unwrap_or(""))
            && ok(&v)
        {
            return v;
        }
        assert!(Instant::now() < deadline, "{what} not reached: {run:?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// A booted VM configured through maintenance mode with the ticker service.
struct Configured {
    vm: Vm,
    node: String,
    pki: Pki,
    /// An admin client config for the node.
    admin: PathBuf,
    _tmp: tempfile::TempDir,
}

/// Boots the image with a fresh state disk, waits for the API with a real
/// RPC, and applies a config with the ticker service (`ticker_args`,
/// `restart`) over the pinned maintenance certificate.
async fn boot_and_apply(ticker_args: &str, restart: &str, no_reboot: bool) -> Configured {
    let layout = ImageLayout::new(&target_dir());
    assert!(
        layout.is_built(),
        "no image in {}: run `cargo xtask image` (cargo xtask test does)",
        layout.vmlinux().display()
    );
    let tmp = tempfile::tempdir().unwrap();
    let disk = state_disk(tmp.path());
    let port = free_port();
    let node = format!("127.0.0.1:{port}");
    let mut vm = boot(&layout, &disk, port, &tmp.path().join("console.log"), no_reboot);

    // Maintenance mode, reached with a real RPC.
    wait_api(&mut vm, &node, &Auth::Insecure { fingerprint: None }, BOOT).await;
    let line = vm.wait_for_line("fingerprint=", Instant::now() + Duration::from_secs(10)).expect("fingerprint logged");
    let fingerprint = maintenance_fingerprint(&line).expect("fingerprint on the console");

    // A config with a supervised service, over the pinned certificate.
    let pki = Pki::new();
    let config_path = tmp.path().join("node.yaml");
    let document = pki.node_config("vm-node").replacen("  services: []\n", &services_yaml(ticker_args, restart), 1);
    std::fs::write(&config_path, &document).unwrap();
    let path = config_path.to_str().unwrap();
    let run =
        bronzectl(None, &["-n", &node, "--insecure", "--cert-fingerprint", &fingerprint, "apply-config", "-f", path])
            .await;
    assert_eq!(run.code, 0, "{run:?}\n{}", vm.console().unwrap_or_default());
    let admin = tmp.path().join("bronzeconfig");
    pki.write_bronzeconfig(&admin, std::slice::from_ref(&node), &["os:admin"]);
    Configured { vm, node, pki, admin, _tmp: tmp }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn boot_apply_manage_reboot_shutdown() {
    // 1–2. Maintenance mode, then a config with a supervised service.
    let Configured { mut vm, node, pki, admin, _tmp } = boot_and_apply("", "always", false).await;

    // 3. Over mTLS.
    let version = json(&admin, &["version"]).await;
    assert_eq!((version["mode"].as_str(), version["maintenance"].as_bool()), (Some("pid1"), Some(false)));
    let status =
        wait_json(&admin, &["get", "machinestatus"], "ready", |v| v["resources"][0]["spec"]["ready"] == true).await;
    let storage = status["resources"][0]["spec"]["storage"].as_str().unwrap().to_string();
    assert!(storage.starts_with("state disk /dev/vda"), "{storage}");
    wait_json(&admin, &["services"], "ticker running", |v| {
        v["services"].as_array().is_some_and(|s| s.iter().any(|s| s["name"] == "ticker" && s["state"] == "running"))
    })
    .await;
    let logs = wait_json(&admin, &["logs", "ticker", "--tail", "3"], "ticks", |v| {
        v["lines"]
            .as_array()
            .is_some_and(|l| l.len() == 3 && l.iter().all(|l| l["line"].as_str().unwrap_or("").starts_with("tick ")))
    })
    .await;
    assert_eq!(logs["lines"].as_array().unwrap().len(), 3);
    let dmesg = json(&admin, &["dmesg"]).await;
    assert!(
        dmesg["entries"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["message"].as_str().unwrap_or("").contains("Linux version")),
        "kernel log lacks the banner"
    );
    let run = bronzectl(Some(&admin), &["-o", "json", "get", "links"]).await;
    assert_eq!(run.code, 0, "{run:?}\n{}", vm.console().unwrap_or_default());
    let links: Value = serde_json::from_str(run.stdout.trim()).unwrap();
    let names: Vec<&str> =
        links["resources"].as_array().unwrap().iter().filter_map(|r| r["metadata"]["id"].as_str()).collect();
    assert!(names.contains(&"eth0") && names.contains(&"lo"), "{names:?}");

    // 4. Reboot: the same VM comes back with the stored config, service and PKI.
    let run = bronzectl(Some(&admin), &["reboot"]).await;
    assert_eq!(run.code, 0, "{run:?}");
    vm.wait_for_line("reboot: Restarting system", Instant::now() + Duration::from_secs(60)).expect("guest rebooted");
    wait_api(&mut vm, &node, &pki.auth(&["os:admin"]), BOOT).await;
    let version = json(&admin, &["version"]).await;
    assert_eq!(version["maintenance"], false, "config read back from the state disk");
    wait_json(&admin, &["services"], "ticker running after reboot", |v| {
        v["services"].as_array().is_some_and(|s| s.iter().any(|s| s["name"] == "ticker" && s["state"] == "running"))
    })
    .await;

    // 5. Shutdown: qemu exits 0 within 15 s with a clean power-off, not a panic.
    let run = bronzectl(Some(&admin), &["shutdown"]).await;
    assert_eq!(run.code, 0, "{run:?}");
    let exit = vm.wait_exit(Instant::now() + Duration::from_secs(15)).expect("wait").expect("qemu exits within 15 s");
    let console_text = vm.console().unwrap_or_default();
    assert!(exit.success(), "qemu exit {exit}:\n{console_text}");
    assert!(console_text.contains("reboot: Power down"), "no clean power-off on the console:\n{console_text}");
    assert!(!console_text.contains("Kernel panic"), "{console_text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crashing_service_is_restarted_by_policy() {
    let Configured { mut vm, admin, _tmp, .. } = boot_and_apply("\"crash\"", "on-failure", true).await;
    let services = wait_json(&admin, &["services"], "two crashes", |v| {
        v["services"]
            .as_array()
            .is_some_and(|s| s.iter().any(|s| s["name"] == "ticker" && s["restarts"].as_u64() >= Some(2)))
    })
    .await;
    let ticker = services["services"].as_array().unwrap().iter().find(|s| s["name"] == "ticker").unwrap().clone();
    assert_eq!(ticker["lastExit"], "exit code 7", "{ticker}");
    let run = bronzectl(Some(&admin), &["shutdown"]).await;
    assert_eq!(run.code, 0);
    let exit = vm.wait_exit(Instant::now() + Duration::from_secs(15)).unwrap().expect("qemu exits");
    assert!(exit.success());
}

/// `reset --graceful=false`: a service that ignores SIGTERM, with a 90 s
/// grace period, is killed at once; the node reboots without waiting it
/// out and comes back in maintenance mode with an empty state disk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ungraceful_reset_kills_a_service_that_ignores_sigterm() {
    let Configured { mut vm, node, admin, _tmp, .. } = boot_and_apply("\"stubborn\"", "always", false).await;
    wait_json(&admin, &["logs", "ticker", "--tail", "50"], "the ticker ignores SIGTERM", |v| {
        v["lines"].as_array().is_some_and(|l| l.iter().any(|l| l["line"] == "ignoring SIGTERM"))
    })
    .await;
    let asked = Instant::now();
    let run = bronzectl(Some(&admin), &["reset", "--graceful=false"]).await;
    assert_eq!(run.code, 0, "{run:?}");
    // Far less than the grace period a graceful stop would wait out.
    vm.wait_for_line("reboot: Restarting system", asked + Duration::from_secs(45))
        .expect("the node reboots without waiting for the stubborn service");
    let console = vm.console().unwrap_or_default();
    assert!(console.contains("killed (ungraceful reboot)"), "{console}");
    assert!(console.contains("rebooting into maintenance mode now (not graceful: services are killed)"), "{console}");
    assert!(!console.contains("did not stop in time"), "no grace period was waited out:\n{console}");
    wait_api(&mut vm, &node, &Auth::Insecure { fingerprint: None }, BOOT).await;
    let version = bronzectl(None, &["-n", &node, "--insecure", "-o", "json", "version"]).await;
    assert!(version.stdout.contains("\"maintenance\":true"), "{version:?}");
    assert!(vm.console().unwrap_or_default().contains("reset: the state disk was wiped as asked"));
    let _ = vm.kill();
}

/// The guest's clock at boot: years behind the host.
const RTC_BASE: &str = "2021-01-01T00:00:00";
const RTC_BASE_UNIX: f64 = 1_609_459_200.0;

fn unix_now() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64()
}

/// The Unix time in the kernel's "rtc_cmos 00:00: setting system clock to
/// 2021-01-01T00:00:03 UTC (1609459203)", i.e. what it read from the RTC.
fn rtc_read_at_boot(line: &str) -> f64 {
    let inside = line.rsplit_once('(').and_then(|(_, rest)| rest.split_once(')')).map(|(n, _)| n);
    inside.and_then(|n| n.parse().ok()).unwrap_or_else(|| panic!("no Unix time in {line:?}"))
}

/// PID 1 with its clock years off and a config that names no time server:
/// it keeps the default `pool.ntp.org`, resolves it once the config's
/// nameserver is in place (a DNS server in the test's namespace answers with
/// 10.0.2.2, which slirp maps to the namespace's loopback, where a relay
/// leads to a chronyd serving the host's time), steps the kernel clock, and
/// writes the RTC: after a reboot in the same qemu the kernel reads the
/// host's time from it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clock_years_off_is_stepped_from_the_default_server_and_written_to_the_rtc() {
    if let Some(why) = bronze_tests::netns::unavailable() {
        eprintln!("skipped because {why}");
        return;
    }
    if bronze_images::find_tool(bronze_images::vm::QEMU).is_none() {
        eprintln!("skipped because {} is not installed (cargo xtask test installs it)", bronze_images::vm::QEMU);
        return;
    }
    let layout = ImageLayout::new(&target_dir());
    assert!(layout.is_built(), "no image in {}: run `cargo xtask image`", layout.vmlinux().display());
    let chrony = ChronyServer::start(0.0).await;
    let mut ns = NetNs::new().expect("network namespace");
    ns.udp_out(123, chrony.addr()).expect("NTP relay");
    let dns_queries = ns.dns("pool.ntp.org", std::net::Ipv4Addr::new(10, 0, 2, 2)).expect("DNS server");
    let port = ns.tcp_into(bronze_images::vm::GUEST_API_PORT).expect("API relay");
    let node = format!("127.0.0.1:{port}");

    let tmp = tempfile::tempdir().unwrap();
    let mut spec = VmSpec::new(layout.vmlinux(), layout.initrd(), bronze_images::vm::GUEST_API_PORT);
    spec.append = vec!["bronze.ip=eth0:10.0.2.15/24:10.0.2.2".into()];
    spec.rtc_base = Some(RTC_BASE.into());
    spec.network = VmNetwork::Namespace(ns.name().to_string());
    spec.no_reboot = false;
    let booted = unix_now();
    let mut vm = Vm::spawn(&spec, &tmp.path().join("console.log")).expect("qemu starts");

    // 1. The kernel starts from the RTC, years in the past.
    let rtc = vm
        .wait_for_line("setting system clock to", Instant::now() + BOOT)
        .unwrap_or_else(|e| panic!("{e}\n{}", vm.console().unwrap_or_default()));
    assert!(rtc.contains("setting system clock to 2021-01-01T00:00"), "{rtc}");

    // 2. A config without time servers, with a nameserver, over maintenance mode.
    wait_api(&mut vm, &node, &Auth::Insecure { fingerprint: None }, BOOT).await;
    let line = vm.wait_for_line("fingerprint=", Instant::now() + Duration::from_secs(10)).expect("fingerprint logged");
    let fingerprint = maintenance_fingerprint(&line).expect("fingerprint on the console");
    let pki = Pki::new();
    let document = pki.node_config("vm-time").replacen("    nameservers: []\n", "    nameservers: [10.0.2.2]\n", 1);
    assert!(document.contains("nameservers: [10.0.2.2]") && document.contains("    servers: []\n"));
    let config_path = tmp.path().join("node.yaml");
    std::fs::write(&config_path, &document).unwrap();
    let run = bronzectl(
        None,
        &[
            "-n",
            &node,
            "--insecure",
            "--cert-fingerprint",
            &fingerprint,
            "apply-config",
            "-f",
            config_path.to_str().unwrap(),
        ],
    )
    .await;
    assert_eq!(run.code, 0, "{run:?}\n{}", vm.console().unwrap_or_default());

    // 3. The step: by the years the guest was behind, from pool.ntp.org.
    let stepped = vm
        .wait_for_line("time stepped by", Instant::now() + Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("{e}\n{}", vm.console().unwrap_or_default()));
    let offset: f64 = stepped
        .split("time stepped by ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no offset in {stepped:?}"));
    let expected = booted - RTC_BASE_UNIX;
    assert!((offset - expected).abs() < 60.0, "stepped by {offset} s, expected about {expected} s: {stepped}");
    assert!(
        stepped.contains("from pool.ntp.org (10.0.2.2:123), trusted alone: no other server to ask")
            && stepped.contains("epoch bumped"),
        "{stepped}"
    );
    assert!(dns_queries.load(std::sync::atomic::Ordering::SeqCst) > 0, "the guest never asked the test's DNS");

    // 4. Over mTLS (the client certificate is valid for the guest now): the
    // status, and the kernel clock within a second of the host's.
    let admin = tmp.path().join("bronzeconfig");
    pki.write_bronzeconfig(&admin, std::slice::from_ref(&node), &["os:admin"]);
    let time = wait_json(&admin, &["time"], "synced", |v| v["synced"] == true).await;
    assert_eq!((time["server"].as_str(), time["address"].as_str()), (Some("pool.ntp.org"), Some("10.0.2.2:123")));
    assert_eq!((time["mode"].as_str(), time["epoch"].as_u64()), (Some("discipline"), Some(1)), "{time}");
    assert!(time["steps"].as_u64() >= Some(1), "{time}");
    let before = unix_now();
    let check = json(&admin, &["time", "--check", "pool.ntp.org"]).await;
    let after = unix_now();
    let guest_now = time::OffsetDateTime::parse(
        check["localTime"].as_str().expect("localTime"),
        &time::format_description::well_known::Rfc3339,
    )
    .expect("RFC 3339")
    .unix_timestamp_nanos() as f64
        / 1e9;
    assert!(
        guest_now > before - 1.0 && guest_now < after + 1.0,
        "guest clock {guest_now} vs host {before}..{after}: {check}"
    );
    assert!(check["offsetSeconds"].as_f64().unwrap().abs() < 0.5, "{check}");
    let status = json(&admin, &["get", "timestatus"]).await;
    assert_eq!(status["resources"][0]["spec"]["kernel"]["synchronised"], true, "{status}");

    // 5. The RTC was written: a reboot in the same qemu reads the host's time from it.
    let run = bronzectl(Some(&admin), &["reboot"]).await;
    assert_eq!(run.code, 0, "{run:?}");
    vm.wait_for_line("reboot: Restarting system", Instant::now() + Duration::from_secs(60)).expect("guest rebooted");
    let rtc = vm
        .wait_for_line("setting system clock to", Instant::now() + BOOT)
        .unwrap_or_else(|e| panic!("{e}\n{}", vm.console().unwrap_or_default()));
    let read = rtc_read_at_boot(&rtc);
    let now = unix_now();
    eprintln!("step: {stepped}\nafter the reboot: {rtc} (host {now:.0})");
    assert!((read - now).abs() < 10.0, "after the reboot the RTC said {read}, the host {now}: {rtc}");
    let _ = vm.kill();
    drop(ns);
}
