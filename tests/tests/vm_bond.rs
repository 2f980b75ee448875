//! Bonds and VLANs on a real kernel: the image under qemu with three
//! virtio NICs. eth0 is qemu's restricted user network carrying the API;
//! eth1 and eth2 are joined only to each other through a qemu hub (no
//! slirp, no DHCP server, nothing leaves qemu). Once on each kernel:
//!
//! - Bronze's kernel has bonding and 802.1Q built in and no module support:
//!   the image ships no module, and nothing is loaded;
//! - Debian's kernel (the smoke test that keeps module loading working):
//!   the image ships `bonding` and `8021q` (with their dependencies) but
//!   loads them only when the network applier first creates a bond or a
//!   VLAN, after the boot modules (virtio, ext4, ...) it loads at boot.
//!
//! A config applied over the maintenance certificate asks for `bond0` of
//! eth1+eth2 (active-backup, miimon 100) with 10.99.0.5/24 and VLAN 100 on
//! eth0 (`eth0.100`, 10.100.0.5/24). Checked through the API: the links,
//! their kind, bond mode, masters, VLAN id and parent (`get links -o
//! yaml`), both addresses (`get addresses`), layer `config` in `get
//! networkspec`, and the console's record that the modules were loaded on
//! demand. A second config without the VLAN: eth0.100 is gone (the
//! applier deletes what it created), bond0 stays. One boot.
//!
//! Needs the image (`cargo xtask image`) and qemu; `cargo xtask test`
//! provides both. The namespace tests of bonds and VLANs
//! (host/src/network/netns_tests.rs) skip on kernels without bonding or
//! 802.1Q; these run kernels that have them.

use bronze_images::layout::{ImageLayout, KernelChoice};
use bronze_images::vm::{Disk, DiskFormat, FIRST_BOOT_IP, Vm, VmSpec, maintenance_fingerprint};
use bronze_tests::netnode::config_with_network;
use bronze_tests::vmnode::{BOOT, state_disk, target_dir, wait_api};
use bronze_tests::{Pki, bronzectl, free_port};
use bronzectl::connect::Auth;
use serde_json::Value;
use std::path::Path;
use std::time::{Duration, Instant};

/// How long the network may take to match a config.
const CONVERGE: Duration = Duration::from_secs(60);

/// eth0 keeps the first boot's address and route (the config's eth0
/// replaces the command line's as a whole), and gets VLAN 100; bond0 of
/// eth1 and eth2.
const NETWORK: &str = "interfaces:
      - name: eth0
        addresses: [10.0.2.15/24]
        routes:
          - network: 0.0.0.0/0
            gateway: 10.0.2.2
        vlans:
          - vlanId: 100
            addresses: [10.100.0.5/24]
      - name: bond0
        bond:
          mode: active-backup
          interfaces: [eth1, eth2]
          miimon: 100
        addresses: [10.99.0.5/24]";

/// The same without the VLAN.
const WITHOUT_VLAN: &str = "interfaces:
      - name: eth0
        addresses: [10.0.2.15/24]
        routes:
          - network: 0.0.0.0/0
            gateway: 10.0.2.2
      - name: bond0
        bond:
          mode: active-backup
          interfaces: [eth1, eth2]
          miimon: 100
        addresses: [10.99.0.5/24]";

/// `bronzectl -o yaml get TYPE`'s resources' specs (None if the call or
/// the YAML fails).
async fn specs(admin: &Path, r#type: &str) -> Option<Vec<Value>> {
    let run = bronzectl(Some(admin), &["-o", "yaml", "get", r#type]).await;
    if run.code != 0 {
        return None;
    }
    let doc: Value = serde_yaml::from_str(&run.stdout).ok()?;
    Some(doc["resources"].as_array()?.iter().map(|r| r["spec"].clone()).collect())
}

/// `get TYPE` until `ok` holds for its specs ([`CONVERGE`] at most).
async fn wait_specs(vm: &Vm, admin: &Path, r#type: &str, what: &str, ok: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let deadline = Instant::now() + CONVERGE;
    let mut last = None;
    loop {
        if let Some(specs) = specs(admin, r#type).await {
            if ok(&specs) {
                return specs;
            }
            last = Some(specs);
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not within {CONVERGE:?}; last {type}: {last:#?}\n{}",
            vm.console().unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn link<'a>(links: &'a [Value], name: &str) -> Option<&'a Value> {
    links.iter().find(|l| l["name"] == name)
}

/// The links as configured: bond0 (bond, active-backup) over eth1 and
/// eth2, eth0.100 (VLAN 100 on eth0) when `vlan`, else no eth0.100.
fn as_configured(links: &[Value], vlan: bool) -> bool {
    let bond = link(links, "bond0").is_some_and(|b| b["kind"] == "bond" && b["bondMode"] == "active-backup");
    let members = ["eth1", "eth2"].iter().all(|m| link(links, m).is_some_and(|l| l["master"] == "bond0"));
    let vlan_ok = match link(links, "eth0.100") {
        Some(v) => vlan && v["kind"] == "vlan" && v["vlanId"] == 100 && v["parent"] == "eth0",
        None => !vlan,
    };
    bond && members && vlan_ok
}

fn has_address(addresses: &[Value], link: &str, address: &str) -> bool {
    addresses.iter().any(|a| a["link"] == link && a["address"] == address)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bond_and_vlan_on_bronzes_kernel_with_everything_built_in() {
    bond_and_vlan(KernelChoice::Bronze).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bond_and_vlan_on_debians_kernel_with_modules_loaded_on_demand() {
    bond_and_vlan(KernelChoice::Debian).await;
}

async fn bond_and_vlan(kernel: KernelChoice) {
    if bronze_images::find_tool(bronze_images::vm::QEMU).is_none() {
        eprintln!("skipped because {} is not installed (cargo xtask test installs it)", bronze_images::vm::QEMU);
        return;
    }
    let layout = ImageLayout::with_kernel(&target_dir(), kernel);
    assert!(
        layout.is_built(),
        "no image in {}: run `cargo xtask image --kernel {}` (cargo xtask test does)",
        layout.vmlinux().display(),
        kernel.name()
    );
    let listing = std::fs::read_to_string(layout.initrd_listing()).expect("initramfs listing");
    let debian = kernel == KernelChoice::Debian;
    if debian {
        // The image ships the modules without loading them at boot.
        for module in ["bonding.ko", "8021q.ko", "tls.ko", "mrp.ko", "garp.ko", "stp.ko", "llc.ko"] {
            assert!(
                listing.lines().any(|l| l.contains(&format!("/{module}"))),
                "{module} not in the image:\n{listing}"
            );
        }
    } else {
        assert!(!listing.contains(".ko"), "Bronze's kernel image ships a module:\n{listing}");
    }

    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let node = format!("127.0.0.1:{port}");
    let mut spec = VmSpec::new(layout.vmlinux(), layout.initrd(), port);
    spec.disks.push(Disk { path: state_disk(tmp.path(), 64), format: DiskFormat::Raw });
    spec.append = vec![FIRST_BOOT_IP.into(), "bronze.ntp=127.0.0.1:1".into()];
    // eth1 and eth2: virtio NICs on one qemu hub, joined to nothing else.
    for n in ["bond1", "bond2"] {
        spec.extra_args.extend([
            "-netdev".into(),
            format!("hubport,id={n},hubid=1"),
            "-device".into(),
            format!("virtio-net-pci,netdev={n}"),
        ]);
    }
    let booted = Instant::now();
    let mut vm = Vm::spawn(&spec, &tmp.path().join("console.log")).expect("qemu starts");
    wait_api(&mut vm, &node, &Auth::Insecure { fingerprint: None }, BOOT).await;
    let up = booted.elapsed();
    let line = vm.wait_for_line("fingerprint=", Instant::now() + Duration::from_secs(10)).expect("fingerprint logged");
    let fingerprint = maintenance_fingerprint(&line).expect("fingerprint on the console");
    let console = vm.console().unwrap_or_default();
    assert!(!console.contains("loaded on demand"), "nothing asked for a module yet:\n{console}");

    let pki = Pki::new();
    let config_path = tmp.path().join("node.yaml");
    std::fs::write(&config_path, config_with_network(&pki, "vm-bond", NETWORK, None)).unwrap();
    let path = config_path.to_str().unwrap();
    let run =
        bronzectl(None, &["-n", &node, "--insecure", "--cert-fingerprint", &fingerprint, "apply-config", "-f", path])
            .await;
    assert_eq!(run.code, 0, "{run:?}\n{}", vm.console().unwrap_or_default());
    let applied = Instant::now();
    wait_api(&mut vm, &node, &pki.auth(&["os:admin"]), BOOT).await;
    let admin = tmp.path().join("bronzeconfig");
    pki.write_bronzeconfig(&admin, std::slice::from_ref(&node), &["os:admin"]);

    wait_specs(&vm, &admin, "links", "bond0 and eth0.100", |l| as_configured(l, true)).await;
    let configured = applied.elapsed();
    let addresses = wait_specs(&vm, &admin, "addresses", "both addresses", |a| {
        has_address(a, "bond0", "10.99.0.5/24") && has_address(a, "eth0.100", "10.100.0.5/24")
    })
    .await;
    assert!(has_address(&addresses, "eth0", "10.0.2.15/24"), "{addresses:#?}");
    // The links as they end up: the snapshot above can fall between
    // enslaving the members and bringing the bond up, in the same apply.
    let links = wait_specs(&vm, &admin, "links", "bond0 and eth0.100 up", |l| {
        as_configured(l, true) && ["bond0", "eth0.100"].iter().all(|n| link(l, n).is_some_and(|x| x["up"] == true))
    })
    .await;
    assert_eq!(link(&links, "eth0.100").unwrap()["up"], true, "{links:#?}");
    assert_eq!(link(&links, "bond0").unwrap()["up"], true, "{links:#?}");

    let spec = wait_specs(&vm, &admin, "networkspec", "the spec's addresses", |s| {
        s.first().is_some_and(|s| s["addresses"].is_array())
    })
    .await
    .remove(0);
    for (link, address) in [("bond0", "10.99.0.5/24"), ("eth0.100", "10.100.0.5/24")] {
        assert_eq!(
            bronze_tests::netnode::address_layer(&spec, link, address).as_deref(),
            Some("config"),
            "{link} {address}: {spec:#}"
        );
    }

    let console = vm.console().unwrap_or_default();
    let on_demand: Vec<&str> = console.lines().filter(|l| l.contains("loaded on demand")).collect();
    if debian {
        // Loaded on demand, each with its dependencies, once.
        assert_eq!(on_demand.len(), 2, "{on_demand:#?}\n{console}");
        assert!(on_demand.iter().any(|l| l.contains("bonding") && l.contains("tls")), "{on_demand:#?}");
        assert!(
            on_demand.iter().any(|l| ["8021q", "mrp", "garp", "stp", "llc"].iter().all(|m| l.contains(m))),
            "{on_demand:#?}"
        );
        // And the boot modules at boot: the NIC's driver among them.
        let boot_modules = console.lines().find(|l| l.contains("kernel modules loaded")).unwrap_or_default();
        assert!(boot_modules.contains("virtio_net"), "no boot modules on the console:\n{console}");
    } else {
        // Built in: nothing to load, nothing failed.
        assert!(on_demand.is_empty(), "{on_demand:#?}\n{console}");
        assert!(!console.contains("kernel module"), "a module was looked for:\n{console}");
    }

    // Without the VLAN: the applier deletes the eth0.100 it created.
    std::fs::write(&config_path, config_with_network(&pki, "vm-bond", WITHOUT_VLAN, None)).unwrap();
    let run = bronzectl(Some(&admin), &["apply-config", "-f", path]).await;
    assert_eq!(run.code, 0, "{run:?}\n{}", vm.console().unwrap_or_default());
    wait_specs(&vm, &admin, "links", "eth0.100 deleted, bond0 kept", |l| as_configured(l, false)).await;
    let addresses = specs(&admin, "addresses").await.expect("get addresses");
    assert!(!addresses.iter().any(|a| a["link"] == "eth0.100"), "{addresses:#?}");
    assert!(has_address(&addresses, "bond0", "10.99.0.5/24"), "{addresses:#?}");

    eprintln!(
        "{} kernel: API up {:.1} s after qemu started; bond and VLAN {:.1} s after the apply; {:.1} s in all\n{}",
        kernel.name(),
        up.as_secs_f64(),
        configured.as_secs_f64(),
        booted.elapsed().as_secs_f64(),
        on_demand.iter().map(|l| bronze_images::vm::strip_ansi(l)).collect::<Vec<_>>().join("\n")
    );
    let _ = vm.kill();
}
