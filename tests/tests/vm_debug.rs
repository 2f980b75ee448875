//! The image under qemu, storage seen from PID 1 (one boot): `mounts`
//! shows the state disk (/dev/vda, ext4) mounted at /var/lib/bronze with
//! its size, `disks` shows vda with the state disk's size and label (read
//! from its superblock by bronzed), `usage /var/lib/bronze` walks the
//! state dir, and the support bundle opens with `tar` with the kernel log
//! and bronzed as PID 1 in it; a service runs in its own cgroup under
//! bronze.slice with the config's cpu.max and memory.max, and `stats`
//! takes its figures from there; netstat shows bronzed (pid 1) on the API
//! port, and a pcap on eth0 from PID 1 opens in tcpdump.
//!
//! Needs the image (`cargo xtask image`) and qemu; `cargo xtask test`
//! provides both. The guest is on qemu user networking with `restrict=on`:
//! it reaches nothing; only its API is forwarded to 127.0.0.1.

use bronze_images::layout::ImageLayout;
use bronze_images::vm::{Disk, DiskFormat, Vm, VmSpec, maintenance_fingerprint};
use bronze_tests::vmnode::{BOOT, state_disk, target_dir, wait_api};
use bronze_tests::{Pki, bronzectl, free_port};
use bronzectl::connect::Auth;
use serde_json::Value;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// Guest kernel arguments: a static address, a closed local NTP port.
const APPEND: &str = "bronze.ip=eth0:10.0.2.15/24:10.0.2.2 bronze.ntp=127.0.0.1:1";
/// The state disk's size.
const DISK_BYTES: u64 = 64 << 20;

async fn json(vm: &Vm, config: &Path, args: &[&str]) -> Value {
    let run = bronzectl(Some(config), &[&["-o", "json"], args].concat()).await;
    assert_eq!(run.code, 0, "bronzectl {args:?}: {run:?}\n{}", vm.console().unwrap_or_default());
    serde_json::from_str(run.stdout.lines().next().unwrap_or("")).unwrap_or_else(|e| panic!("{e}: {run:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pid1_mounts_disks_usage_and_support_bundle() {
    if bronze_images::find_tool(bronze_images::vm::QEMU).is_none() {
        eprintln!("skipped because {} is not installed (cargo xtask test installs it)", bronze_images::vm::QEMU);
        return;
    }
    let layout = ImageLayout::new(&target_dir());
    assert!(
        layout.is_built(),
        "no image in {}: run `cargo xtask image` (cargo xtask test does)",
        layout.vmlinux().display()
    );
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let node = format!("127.0.0.1:{port}");
    let mut spec = VmSpec::new(layout.vmlinux(), layout.initrd(), port);
    spec.disks.push(Disk { path: state_disk(tmp.path(), DISK_BYTES >> 20), format: DiskFormat::Raw });
    spec.append = APPEND.split_whitespace().map(String::from).collect();
    let mut vm = Vm::spawn(&spec, &tmp.path().join("console.log")).expect("qemu starts");

    // Maintenance mode, then a config over the pinned certificate.
    wait_api(&mut vm, &node, &Auth::Insecure { fingerprint: None }, BOOT).await;
    let line = vm.wait_for_line("fingerprint=", Instant::now() + Duration::from_secs(10)).expect("fingerprint logged");
    let fingerprint = maintenance_fingerprint(&line).expect("fingerprint on the console");
    let pki = Pki::new();
    let config_path = tmp.path().join("node.yaml");
    // One service: a second bronzed in process mode (the image's only
    // program), with limits its cgroup must carry.
    let base = pki.node_config("vm-debug");
    assert!(base.contains("  services: []\n"));
    let service = "  services:\n    - name: guest\n      command: /init\n      args: [\"--mode\", \"process\", \"--state-dir\", \"/tmp/guest\", \"--listen\", \"127.0.0.1:50100\", \"--platform\", \"none\"]\n      resources:\n        cpu: 500m\n        memory: 128MiB\n";
    std::fs::write(&config_path, base.replacen("  services: []\n", service, 1)).unwrap();
    let path = config_path.to_str().unwrap();
    let run =
        bronzectl(None, &["-n", &node, "--insecure", "--cert-fingerprint", &fingerprint, "apply-config", "-f", path])
            .await;
    assert_eq!(run.code, 0, "{run:?}\n{}", vm.console().unwrap_or_default());
    wait_api(&mut vm, &node, &pki.auth(&["os:admin"]), BOOT).await;
    let reader = tmp.path().join("reader");
    pki.write_bronzeconfig(&reader, std::slice::from_ref(&node), &["os:reader"]);
    let admin = tmp.path().join("admin");
    pki.write_bronzeconfig(&admin, std::slice::from_ref(&node), &["os:admin"]);

    // The state disk at /var/lib/bronze, with statvfs figures.
    let mounts = json(&vm, &reader, &["mounts"]).await;
    let list = mounts["mounts"].as_array().expect("mounts");
    let state = list.iter().find(|m| m["target"] == "/var/lib/bronze").unwrap_or_else(|| panic!("{mounts:#}"));
    assert_eq!((state["source"].as_str(), state["filesystem"].as_str()), (Some("/dev/vda"), Some("ext4")), "{state:#}");
    let size = state["sizeBytes"].as_u64().unwrap();
    assert!(size > DISK_BYTES / 2 && size <= DISK_BYTES, "{state:#}");
    assert!(state["usedBytes"].as_u64().unwrap() > 0, "{state:#}");
    for kernel in ["/proc", "/sys", "/dev", "/run"] {
        assert!(list.iter().any(|m| m["target"] == kernel), "{kernel} not mounted: {mounts:#}");
    }

    // vda: the whole state disk, its ext4 label read from the superblock.
    let disks = json(&vm, &reader, &["disks"]).await;
    let vda =
        disks["disks"].as_array().unwrap().iter().find(|d| d["name"] == "vda").unwrap_or_else(|| panic!("{disks:#}"));
    assert_eq!(vda["sizeBytes"].as_u64(), Some(DISK_BYTES), "{vda:#}");
    assert_eq!((vda["filesystem"].as_str(), vda["label"].as_str()), (Some("ext4"), Some("BRONZE_STATE")), "{vda:#}");
    assert_eq!(vda["devPath"], "/dev/vda");
    assert_eq!(vda["error"], "", "{vda:#}");

    // The state dir's usage.
    let usage = json(&vm, &reader, &["usage", "/var/lib/bronze", "-d", "2"]).await;
    let top = &usage["entries"][0];
    assert_eq!(top["path"], "/var/lib/bronze", "{usage:#}");
    assert!(top["files"].as_u64().unwrap() >= 1, "the stored config at least: {usage:#}");

    // The support bundle, from PID 1.
    let file = tmp.path().join("bundle.tar.gz");
    let run = bronzectl(Some(&admin), &["support", "--output-file", file.to_str().unwrap()]).await;
    assert_eq!(run.code, 0, "{run:?}");
    let out = tmp.path().join("bundle");
    std::fs::create_dir_all(&out).unwrap();
    let tar = Command::new("tar").arg("-xzf").arg(&file).arg("-C").arg(&out).status().unwrap();
    assert!(tar.success());
    let root = out.join("bronze-support");
    let dmesg = std::fs::read_to_string(root.join("dmesg.txt")).expect("dmesg.txt from /dev/kmsg");
    assert!(dmesg.contains("Linux version"), "the kernel log from boot");
    let processes = std::fs::read_to_string(root.join("processes.txt")).expect("processes.txt");
    assert!(processes.lines().any(|l| l.starts_with("1\t") && l.contains("bronzed")), "{processes}");
    let disks = std::fs::read_to_string(root.join("disks.json")).unwrap();
    assert!(disks.contains("BRONZE_STATE"), "{disks}");

    // The service's cgroup: under bronze.slice, with the config's limits,
    // holding the service's process; stats reads it from there.
    let deadline = Instant::now() + Duration::from_secs(60);
    let guest = loop {
        let stats = json(&vm, &reader, &["stats"]).await;
        assert_eq!(stats["source"], "cgroup", "{stats:#}");
        let entries = stats["entries"].as_array().unwrap();
        if let Some(g) = entries.iter().find(|e| e["kind"] == "service" && e["name"] == "guest")
            && g["processes"].as_u64() >= Some(1)
        {
            break g.clone();
        }
        assert!(Instant::now() < deadline, "guest never ran: {stats:#}\n{}", vm.console().unwrap_or_default());
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!((guest["cpuMax"].as_str(), guest["memoryMax"].as_str()), (Some("50000 100000"), Some("134217728")));
    let memory = guest["rssBytes"].as_u64().unwrap();
    assert!(memory > 1 << 20 && memory < 128 << 20, "memory.current of a process-mode bronzed: {guest:#}");
    assert!(guest["cpuSeconds"].as_f64().unwrap() > 0.0, "{guest:#}");
    let ls = json(&vm, &reader, &["ls", "/sys/fs/cgroup/bronze.slice"]).await;
    let entries = ls["entries"].as_array().unwrap();
    assert!(entries.iter().any(|e| e["path"].as_str().is_some_and(|p| p.ends_with("/guest"))), "{ls:#}");
    let run = bronzectl(Some(&reader), &["read", "/sys/fs/cgroup/bronze.slice/guest/memory.max"]).await;
    assert_eq!(run.stdout.trim(), "134217728", "{run:?}");
    let run = bronzectl(Some(&reader), &["read", "/sys/fs/cgroup/bronze.slice/guest/cgroup.procs"]).await;
    let in_group: Vec<i64> = run.stdout.lines().filter_map(|l| l.trim().parse().ok()).collect();
    let ps = json(&vm, &reader, &["processes", "--sample", "0s"]).await;
    let main = ps["processes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["service"] == "guest" && p["command"].as_str().is_some_and(|c| c.contains("--mode process")))
        .unwrap_or_else(|| panic!("the guest process: {ps:#}"));
    assert!(in_group.contains(&main["pid"].as_i64().unwrap()), "{in_group:?} vs {main:#}");

    // netstat from PID 1: the API listener on port 50000 (IPv4 or IPv6
    // any-address), held by bronzed as pid 1, and the guest's own listener.
    let netstat = json(&vm, &reader, &["netstat", "--listening", "--tcp"]).await;
    let sockets = netstat["sockets"].as_array().unwrap();
    let api = sockets.iter().find(|s| s["localPort"] == 50000).unwrap_or_else(|| panic!("{netstat:#}"));
    assert!(api["processes"].as_array().unwrap().iter().any(|p| p["pid"] == 1), "{api:#}");
    assert!(sockets.iter().any(|s| s["localPort"] == 50100), "the guest's listener: {netstat:#}");

    // pcap from PID 1 on eth0: the capture's own API traffic (the host
    // forward reaches the guest's port 50000 through eth0), read back with
    // tcpdump.
    let pcap = tmp.path().join("eth0.pcap");
    let run = bronzectl(
        Some(&admin),
        &[
            "pcap",
            "-i",
            "eth0",
            "--bpf",
            "tcp port 50000",
            "--duration",
            "2s",
            "--max-bytes",
            "256KiB",
            "--output-file",
            pcap.to_str().unwrap(),
        ],
    )
    .await;
    assert_eq!(run.code, 0, "{run:?}");
    let read = Command::new("tcpdump").arg("-nn").arg("-r").arg(&pcap).output().expect("tcpdump");
    assert!(read.status.success(), "{read:?}");
    let text = String::from_utf8_lossy(&read.stdout);
    assert!(text.lines().count() >= 1 && text.lines().all(|l| l.contains(".50000")), "{text}");
    let _ = vm.kill();
}
