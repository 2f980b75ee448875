//! The image under qemu with no `bronze.ip=` on its kernel command line:
//! PID 1's default network layer runs DHCPv4 on the virtio link (physical,
//! with carrier), and qemu's user-network DHCP server (slirp's, a server
//! no one here wrote) gives it 10.0.2.15 with the gateway 10.0.2.2 and
//! the DNS server 10.0.2.3. The API answers through the host forward,
//! which reaches the guest only at that address.
//!
//! qemu runs in a network namespace of the test's own with only `lo`, its
//! user network unrestricted inside it: a restricted slirp leaves the
//! router and DNS options out of its DHCP answers, and they are part of
//! what is checked here. Nothing can leave the namespace; the API is
//! relayed from the host's loopback.
//!
//! Needs the image (`cargo xtask image`), qemu and root (for the
//! namespace); `cargo xtask test` provides the first two.

use bronze_images::layout::ImageLayout;
use bronze_images::vm::{Disk, DiskFormat, GUEST_API_PORT, Vm, VmNetwork, VmSpec, maintenance_fingerprint};
use bronze_tests::netns::NetNs;
use bronze_tests::vmnode::{BOOT, state_disk, target_dir, wait_api};
use bronze_tests::{Pki, bronzectl};
use bronzectl::connect::Auth;
use serde_json::{Value, json};
use std::path::Path;
use std::time::{Duration, Instant};

/// `bronzectl -o json get TYPE` until `ok` holds for its first resource's
/// spec (60 s at most).
async fn wait_spec(vm: &Vm, admin: &Path, r#type: &str, ok: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let run = bronzectl(Some(admin), &["-o", "json", "get", r#type]).await;
        let spec = serde_json::from_str::<Value>(run.stdout.lines().next().unwrap_or(""))
            .map(|v| v["resources"][0]["spec"].clone())
            .unwrap_or(Value::Null);
        if run.code == 0 && ok(&spec) {
            return spec;
        }
        assert!(
            Instant::now() < deadline,
            "{type}: not as expected within 60 s: {run:?}\n{}",
            vm.console().unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_image_takes_its_address_from_qemus_dhcp_server_without_bronze_ip() {
    if let Some(why) = bronze_tests::netns::unavailable() {
        eprintln!("\n!!!!!!!! SKIPPED vm_dhcp: {why} !!!!!!!!\n");
        return;
    }
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
    let mut ns = NetNs::new().expect("network namespace");
    let node = format!("127.0.0.1:{}", ns.tcp_into(GUEST_API_PORT).expect("API relay"));
    let mut spec = VmSpec::new(layout.vmlinux(), layout.initrd(), GUEST_API_PORT);
    spec.network = VmNetwork::Namespace(ns.name().to_string());
    spec.disks.push(Disk { path: state_disk(tmp.path(), 64), format: DiskFormat::Raw });
    // No bronze.ip=: only a closed local NTP port.
    spec.append = vec!["bronze.ntp=127.0.0.1:1".into()];
    assert!(!spec.kernel_cmdline().contains("bronze.ip"), "{}", spec.kernel_cmdline());
    let booted = Instant::now();
    let mut vm = Vm::spawn(&spec, &tmp.path().join("console.log")).expect("qemu starts");

    // The forward reaches the guest only at 10.0.2.15: the API answering
    // means the guest has that address.
    wait_api(&mut vm, &node, &Auth::Insecure { fingerprint: None }, BOOT).await;
    let up = booted.elapsed();
    let line = vm.wait_for_line("fingerprint=", Instant::now() + Duration::from_secs(10)).expect("fingerprint logged");
    let fingerprint = maintenance_fingerprint(&line).expect("fingerprint on the console");
    let console = vm.console().unwrap_or_default();
    let cmdline = console.lines().find(|l| l.contains("Command line:")).unwrap_or_else(|| panic!("{console}"));
    assert!(!cmdline.contains("bronze.ip"), "{cmdline}");

    // A config (no interfaces: the default layer keeps DHCP), over the
    // pinned maintenance certificate; then read the resources over mTLS.
    let pki = Pki::new();
    let config_path = tmp.path().join("node.yaml");
    std::fs::write(&config_path, pki.node_config("vm-dhcp")).unwrap();
    let args = ["-n", &node, "--insecure", "--cert-fingerprint", &fingerprint, "apply-config", "-f"];
    let run = bronzectl(None, &[&args[..], &[config_path.to_str().unwrap()]].concat()).await;
    assert_eq!(run.code, 0, "{run:?}\n{}", vm.console().unwrap_or_default());
    wait_api(&mut vm, &node, &pki.auth(&["os:admin"]), BOOT).await;
    let admin = tmp.path().join("bronzeconfig");
    pki.write_bronzeconfig(&admin, std::slice::from_ref(&node), &["os:admin"]);

    let lease = wait_spec(&vm, &admin, "dhcpleases", |s| s["state"] == "bound").await;
    assert_eq!(lease["link"], "eth0", "{lease:#}");
    assert_eq!(lease["address"], "10.0.2.15/24", "{lease:#}");
    assert_eq!(lease["server"], "10.0.2.2", "slirp's DHCP server identifies itself as its gateway: {lease:#}");
    assert_eq!(lease["lease"]["routers"], json!(["10.0.2.2"]), "{lease:#}");
    assert_eq!(lease["lease"]["dns"], json!(["10.0.2.3"]), "{lease:#}");

    let spec = wait_spec(&vm, &admin, "networkspec", |s| s["addresses"].is_array()).await;
    let address = spec["addresses"].as_array().unwrap().iter().find(|a| a["address"] == "10.0.2.15/24");
    assert_eq!(address.map(|a| (&a["link"], &a["layer"])), Some((&json!("eth0"), &json!("dhcp"))), "{spec:#}");
    let eth0 = spec["links"].as_array().unwrap().iter().find(|l| l["name"] == "eth0").expect("eth0 in the spec");
    assert_eq!(eth0["dhcp4"]["layer"], "default", "DHCP from the default layer: {spec:#}");
    let default = spec["routes"].as_array().unwrap().iter().find(|r| r["destination"] == "0.0.0.0/0");
    assert_eq!(
        default.map(|r| (&r["gateway"], &r["link"], &r["layer"])),
        Some((&json!("10.0.2.2"), &json!("eth0"), &json!("dhcp"))),
        "{spec:#}"
    );
    assert_eq!(spec["resolvers"], json!({"value": ["10.0.2.3"], "layer": "dhcp"}), "{spec:#}");
    eprintln!("API up {:.1} s after qemu started; lease {}", up.as_secs_f64(), lease["address"]);
    let _ = vm.kill();
    drop(ns);
}
