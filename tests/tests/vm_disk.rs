//! The disk image booted like a machine: OVMF (Debian's UEFI firmware),
//! systemd-boot from the disk's EFI system partition, Bronze's kernel
//! through its EFI stub, and the state partition on the same disk.
//!
//! Slot `b` is prepared on the disk before a boot, as an upgrade would leave
//! it: first with an initramfs that cannot start (the kernel panics, the
//! machine resets, systemd-boot has counted the try and starts slot `a`),
//! then with a good system tried twice (the node blesses it once it is
//! ready). Both are real boots of the real boot loader; the entry names the
//! test reads back are the ones systemd-boot and bronzed wrote.
//!
//! Needs the image (`cargo xtask image`), qemu and OVMF; `cargo xtask test`
//! provides them.

use bronze_api::v1 as pb;
use bronze_boot::{Entry, Slot};
use bronze_images::bootdisk::{DISK_OPTIONS, EspImage};
use bronze_images::layout::ImageLayout;
use bronze_images::vm::{Firmware, Vm, maintenance_fingerprint};
use bronze_tests::vmnode::{BOOT, DiskVm, target_dir, wait_api};
use bronze_tests::{Pki, bronzectl};
use bronzectl::client::NodeClient;
use bronzectl::connect::Auth;
use std::path::Path;
use std::time::{Duration, Instant};

/// Writes `entry` to the ESP under `file_name` (with its boot counter).
fn put_entry(esp: &EspImage, dir: &Path, entry: &Entry, file_name: &str) {
    let local = dir.join(file_name);
    std::fs::write(&local, entry.render()).unwrap();
    esp.put(&local, &format!("loader/entries/{file_name}")).unwrap();
}

async fn version(node: &str, auth: &Auth) -> pb::VersionResponse {
    let mut c = NodeClient::connect(node, auth).await.expect("connect");
    c.machine.version(pb::VersionRequest {}).await.expect("Version").into_inner()
}

fn slots(v: &pb::VersionResponse) -> Vec<(String, String, String)> {
    v.slots.iter().map(|s| (s.slot.clone(), s.state.clone(), s.release.clone())).collect()
}

/// The kernel command lines the console shows, in boot order.
fn command_lines(vm: &Vm) -> Vec<String> {
    let console = vm.console().unwrap_or_default();
    console.lines().filter_map(|l| l.split_once("Command line: ").map(|(_, c)| c.trim().to_string())).collect()
}

async fn events(admin: &Path) -> String {
    bronzectl(Some(admin), &["-o", "json", "events"]).await.stdout
}

async fn power_off(vm: &mut Vm, admin: &Path) {
    let run = bronzectl(Some(admin), &["shutdown"]).await;
    assert_eq!(run.code, 0, "{run:?}");
    let status = vm.wait_exit(Instant::now() + Duration::from_secs(60)).unwrap();
    assert!(
        status.is_some_and(|s| s.success()),
        "qemu did not power off: {status:?}\n{}",
        vm.console().unwrap_or_default()
    );
}

/// Every file of both slots and of the entries on the ESP, with its bytes.
fn slot_files(esp: &EspImage) -> Vec<(String, Vec<u8>)> {
    let mut files = Vec::new();
    for dir in ["a", "b", "loader/entries"] {
        for name in esp.list(dir).unwrap_or_default() {
            let path = format!("{dir}/{name}");
            let bytes = esp.read(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
            files.push((path, bytes));
        }
    }
    files
}

/// Whether qemu or OVMF is missing (said loudly: the test then does nothing).
fn unavailable(test: &str) -> bool {
    let missing = bronze_images::find_tool(bronze_images::vm::QEMU).is_none() || !Firmware::is_installed();
    if missing {
        eprintln!(
            "\n!!!!!!!! SKIPPED {test}: qemu or OVMF is not installed (cargo xtask test installs them) !!!!!!!!\n"
        );
    }
    missing
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_disk_boots_through_uefi_falls_back_from_a_failing_slot_and_blesses_a_good_one() {
    if unavailable("vm_disk") {
        return;
    }
    let layout = ImageLayout::new(&target_dir());
    let d = DiskVm::new(&layout);
    let (tmp, node) = (d.dir(), d.node.clone());
    let esp = d.esp();
    assert_eq!(esp.list("loader/entries").unwrap(), ["bronze-a.conf"]);
    let image_entry = String::from_utf8(esp.read("loader/entries/bronze-a.conf").unwrap()).unwrap();
    let release_a = Entry::parse(&image_entry, Slot::A, Path::new("bronze-a.conf")).unwrap().release;

    // Slot b: the same kernel and an initramfs that is not one. Newer than
    // a, one try.
    esp.put(&layout.bzimage(), "b/vmlinuz").unwrap();
    let broken = tmp.join("broken-initrd");
    std::fs::write(&broken, b"not an initramfs\n").unwrap();
    esp.put(&broken, "b/initrd").unwrap();
    let broken_entry =
        Entry { slot: Slot::B, generation: 2, release: "v9.9.9-broken".into(), options: DISK_OPTIONS.into() };
    put_entry(&esp, tmp, &broken_entry, "bronze-b+1.conf");

    let started = Instant::now();
    let mut vm = d.start("console-1.log");

    // b's kernel finds no init and panics; the machine resets after panic=5
    // and systemd-boot, with b's try spent, starts a.
    vm.wait_for_line("Kernel panic", Instant::now() + BOOT).expect("slot b's kernel panics");
    wait_api(&mut vm, &node, &Auth::Insecure { fingerprint: None }, BOOT).await;
    let up = started.elapsed();
    let lines = command_lines(&vm);
    assert_eq!(lines.len(), 2, "two boots: {lines:?}");
    assert!(lines[0].ends_with("bronze.slot=b") && lines[1].ends_with("bronze.slot=a"), "{lines:?}");
    let v = version(&node, &Auth::Insecure { fingerprint: None }).await;
    assert_eq!((v.slot.as_str(), v.next_slot.as_str()), ("a", "a"), "{v:?}");
    assert_eq!(
        slots(&v),
        [("a".into(), "good".into(), release_a.clone()), ("b".into(), "bad".into(), "v9.9.9-broken".into())]
    );

    // A config, then the rollback as a machine event.
    let pki = Pki::new();
    let (fingerprint, admin) = d.configure(&mut vm, &pki, &pki.node_config("vm-disk")).await;
    let rollback = format!("rollback: slot b (v9.9.9-broken) did not come up in 1 tries; running slot a ({release_a})");
    let seen = events(&admin).await;
    assert!(seen.contains(&rollback), "{seen}");
    let run = bronzectl(Some(&admin), &["-o", "json", "get", "bootstatus"]).await;
    assert!(run.stdout.contains("\"health\":\"blessed\"") && run.stdout.contains("at /boot"), "{run:?}");
    power_off(&mut vm, &admin).await;
    assert_eq!(esp.list("loader/entries").unwrap(), ["bronze-a.conf", "bronze-b+0-1.conf"]);

    // Slot b again, now with a's good system and two tries: the node comes
    // up from b with its config and marks b good.
    esp.put(&layout.initrd(), "b/initrd").unwrap();
    esp.remove("loader/entries/bronze-b+0-1.conf").unwrap();
    let good = Entry {
        slot: Slot::B,
        generation: 3,
        release: "v0.1.0-b".into(),
        options: format!("{DISK_OPTIONS} bronze.health_timeout=120"),
    };
    put_entry(&esp, tmp, &good, "bronze-b+2.conf");
    let mut vm = d.start("console-2.log");
    wait_api(&mut vm, &node, &pki.auth(&["os:admin"]), BOOT).await;
    let deadline = Instant::now() + Duration::from_secs(120);
    let v = loop {
        let v = version(&node, &pki.auth(&["os:admin"])).await;
        if v.slots.iter().any(|s| s.slot == "b" && s.state == "good") {
            break v;
        }
        assert!(Instant::now() < deadline, "slot b never marked good: {v:?}\n{}", vm.console().unwrap_or_default());
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!((v.slot.as_str(), v.next_slot.as_str()), ("b", "b"), "{v:?}");
    assert!(!v.maintenance, "the config on the state partition is kept");
    let seen = events(&admin).await;
    assert!(seen.contains("slot b (v0.1.0-b) is healthy: marked good"), "{seen}");

    // Reset: a reader may not; an admin may, and the node comes back in
    // maintenance mode with an empty state partition (a new maintenance
    // certificate: the old one was on it), on the same slot.
    let reader = tmp.join("reader");
    pki.write_bronzeconfig(&reader, std::slice::from_ref(&node), &["os:reader"]);
    let run = bronzectl(Some(&reader), &["reset"]).await;
    assert_ne!(run.code, 0, "{run:?}");
    let run = bronzectl(Some(&admin), &["reset"]).await;
    assert_eq!(run.code, 0, "{run:?}");
    let deadline = Instant::now() + BOOT;
    let line = loop {
        let line = vm.wait_for_line("fingerprint=", deadline).expect("the node comes back in maintenance mode");
        if maintenance_fingerprint(&line).is_some_and(|f| f != fingerprint) {
            break line;
        }
    };
    assert!(vm.console().unwrap_or_default().contains("reset: the state disk was wiped as asked"));
    wait_api(&mut vm, &node, &Auth::Insecure { fingerprint: None }, BOOT).await;
    let v = version(&node, &Auth::Insecure { fingerprint: None }).await;
    assert!(v.maintenance && v.slot == "b", "{v:?} after {line}");
    let _ = vm.kill();
    // systemd-boot counted the try (b+2 -> b+1-1), bronzed blessed it.
    assert_eq!(esp.list("loader/entries").unwrap(), ["bronze-a.conf", "bronze-b.conf"]);
    eprintln!("disk image: first API (after a failed try of slot b) {:.1} s after qemu started", up.as_secs_f64());
}

/// The upgrade stream of `bundle` as bronzectl sends it, cut after
/// `initrd_bytes` of the initramfs (all of it with `None`).
fn upgrade_stream(
    bundle: &bronze_bundle::upgrade::UpgradeBundle,
    initrd_bytes: Option<usize>,
) -> impl futures::Stream<Item = pb::UpgradeRequest> + Send + 'static {
    let mut bundle = bundle.clone();
    if let Some(n) = initrd_bytes {
        bundle.initrd.truncate(n);
    }
    bronzectl::upgrade::requests(std::sync::Arc::new(bundle), Default::default(), indicatif::ProgressBar::hidden())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_lands_in_the_other_slot_bad_bundles_change_nothing_and_rollback_goes_back() {
    use bronze_bundle::SigningKey;
    use bronze_bundle::upgrade::UpgradeBundle;
    if unavailable("vm_disk upgrade") {
        return;
    }
    let layout = ImageLayout::new(&target_dir());
    let d = DiskVm::new(&layout);
    let (tmp, node) = (d.dir(), d.node.clone());
    let mut vm = d.start("console.log");
    wait_api(&mut vm, &node, &Auth::Insecure { fingerprint: None }, BOOT).await;

    // A config that trusts one upgrade key.
    let key = SigningKey::generate().unwrap();
    let pki = Pki::new();
    let yaml = bronze_tests::trusting_upgrades(&pki.node_config("vm-upgrade"), &key);
    let (_, admin) = d.configure(&mut vm, &pki, &yaml).await;
    let admin_auth = pki.auth(&["os:admin"]);
    let before = version(&node, &admin_auth).await;
    assert_eq!((before.slot.as_str(), slots(&before)[1].1.as_str()), ("a", "empty"), "{before:?}");
    // The image's release, from its initramfs, is the one in its entry.
    assert_eq!(before.tag, slots(&before)[0].2, "{before:?}");
    assert_eq!(before.last_upgrade, None);

    // Bad bundles, straight to the API (bronzectl refuses most of them
    // itself): each refused with its reason, the slots as they were.
    let kernel = std::fs::read(layout.bzimage()).unwrap();
    let initrd = std::fs::read(layout.initrd()).unwrap();
    let arch = std::env::consts::ARCH;
    // A second build whose version string differs: the image's initramfs
    // with another release file appended (the kernel unpacks both; the
    // later file wins).
    let overlay = bronze_images::initramfs::release_overlay("v0.2.0-test", 0).unwrap();
    let release_initrd = [initrd.clone(), overlay].concat();
    let good = UpgradeBundle::create("v0.2.0-test", arch, kernel.clone(), release_initrd.clone(), &key);
    let stranger = SigningKey::generate().unwrap();
    let unsigned = UpgradeBundle { signature: Vec::new(), ..good.clone() };
    let wrong_key = UpgradeBundle::create("v0.2.0-test", arch, kernel.clone(), initrd.clone(), &stranger);
    let wrong_arch = UpgradeBundle::create("v0.2.0-test", "aarch64", kernel.clone(), initrd.clone(), &key);
    let oversized = UpgradeBundle::create("v0.2.0-test", arch, kernel.clone(), vec![0; 200 << 20], &key);
    let files_before = slot_files(&d.esp());
    let mut c = NodeClient::connect(&node, &admin_auth).await.unwrap();
    for (what, bundle, cut, expected) in [
        ("unsigned", &unsigned, None, "malformed upgrade.sig"),
        ("wrong key", &wrong_key, None, "does not verify with any of the 1 key(s)"),
        ("wrong architecture", &wrong_arch, None, "built for aarch64"),
        ("oversized", &oversized, Some(0), "larger than a boot slot"),
        ("truncated", &good, Some(initrd.len() / 2), "initrd"),
    ] {
        let err = c.machine.upgrade(upgrade_stream(bundle, cut)).await.expect_err(what);
        assert!(err.message().contains(expected), "{what}: {err:?}");
        let now = version(&node, &admin_auth).await;
        assert_eq!(slots(&now), slots(&before), "{what} changed the slots");
    }
    // Byte for byte: no file of either slot or entry changed, none was added.
    let files_after = slot_files(&d.esp());
    let names = |f: &[(String, Vec<u8>)]| f.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
    assert_eq!(names(&files_after), names(&files_before));
    assert!(files_after == files_before, "a refused bundle changed a slot's files");
    // A power cut half-way through the initramfs: qemu is killed while the
    // node writes slot b's temporary files; the machine boots slot a, unharmed.
    {
        let mut messages: Vec<pb::UpgradeRequest> =
            futures::StreamExt::collect(upgrade_stream(&good, Some(initrd.len() / 2))).await;
        let header = messages.remove(0);
        let stream = futures::StreamExt::chain(
            futures::stream::iter(std::iter::once(header).chain(messages)),
            futures::stream::pending(),
        );
        let mut c = NodeClient::connect(&node, &admin_auth).await.unwrap();
        let upload = tokio::spawn(async move { c.machine.upgrade(stream).await });
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert!(!upload.is_finished(), "the node is still waiting for the rest: {:?}", upload.await);
        let _ = vm.kill();
        upload.abort();
        vm = d.start("console-after-cut.log");
        wait_api(&mut vm, &node, &admin_auth, BOOT).await;
        let now = version(&node, &admin_auth).await;
        assert_eq!((now.slot.as_str(), slots(&now)), ("a", slots(&before)), "after the power cut");
    }
    let reader = pki.auth(&["os:reader"]);
    let mut r = NodeClient::connect(&node, &reader).await.unwrap();
    let err = r.machine.upgrade(upgrade_stream(&good, None)).await.expect_err("a reader may not upgrade");
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err:?}");

    // The real one, with bronzectl from a bundle file: the node writes slot
    // b, reboots into it and marks it good once healthy.
    let file = tmp.join("upgrade.tar");
    std::fs::write(&file, good.to_tar()).unwrap();
    let upgrade_started = Instant::now();
    let run = bronzectl(Some(&admin), &["-o", "json", "upgrade", file.to_str().unwrap()]).await;
    assert_eq!(run.code, 0, "{run:?}\n{}", vm.console().unwrap_or_default());
    assert!(run.stdout.contains("\"slot\":\"b\"") && run.stdout.contains("\"rebooting\":true"), "{run:?}");
    let deadline = Instant::now() + BOOT;
    let after = loop {
        if let Ok(mut c) = NodeClient::connect(&node, &admin_auth).await
            && let Ok(Ok(v)) =
                tokio::time::timeout(Duration::from_secs(5), c.machine.version(pb::VersionRequest {})).await
        {
            let v = v.into_inner();
            if v.slot == "b" && v.slots.iter().any(|s| s.slot == "b" && s.state == "good") {
                break v;
            }
        }
        assert!(Instant::now() < deadline, "not back on slot b:\n{}", vm.console().unwrap_or_default());
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let upgrade_took = upgrade_started.elapsed();
    assert_eq!(
        slots(&after),
        [("a".into(), "good".into(), slots(&before)[0].2.clone()), ("b".into(), "good".into(), "v0.2.0-test".into())]
    );
    assert_eq!(after.tag, "v0.2.0-test", "the new system says what it is");
    let last = after.last_upgrade.clone().expect("the last upgrade is shown");
    assert_eq!(
        (last.slot.as_str(), last.release.as_str(), last.from_slot.as_str(), last.from_release.as_str()),
        ("b", "v0.2.0-test", "a", before.tag.as_str())
    );
    assert_eq!((last.outcome.as_str(), last.generation), ("succeeded", 2), "{last:?}");
    let status = bronzectl(Some(&admin), &["-o", "json", "get", "machinestatus"]).await;
    let status: serde_json::Value = serde_json::from_str(status.stdout.lines().next().unwrap_or("")).unwrap();
    let spec = &status["resources"][0]["spec"];
    assert_eq!((spec["slot"].as_str(), spec["lastUpgrade"]["outcome"].as_str()), (Some("b"), Some("succeeded")));
    assert_eq!(spec["slots"][1]["release"], "v0.2.0-test", "{spec}");
    assert!(!after.maintenance, "config, PKI and plugins are on the state partition and kept");
    let seen = events(&admin).await;
    assert!(seen.contains("slot b (v0.2.0-test) is healthy: marked good"), "{seen}");
    let console = vm.console().unwrap_or_default();
    assert!(
        console.contains("upgrade: slot b now holds v0.2.0-test (generation 2, 3 tries); rebooting into it"),
        "{console}"
    );

    // Rollback: slot a booted fine before, so it boots again.
    let run = bronzectl(Some(&admin), &["rollback"]).await;
    assert_eq!(run.code, 0, "{run:?}");
    let deadline = Instant::now() + BOOT;
    loop {
        if let Ok(mut c) = NodeClient::connect(&node, &admin_auth).await
            && let Ok(Ok(v)) =
                tokio::time::timeout(Duration::from_secs(5), c.machine.version(pb::VersionRequest {})).await
            && v.get_ref().slot == "a"
            && v.get_ref().next_slot == "a"
            && v.get_ref().slots.iter().all(|s| s.state == "good")
        {
            assert_eq!(v.get_ref().tag, before.tag, "the old system again");
            break;
        }
        assert!(Instant::now() < deadline, "not back on slot a:\n{}", vm.console().unwrap_or_default());
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    power_off(&mut vm, &admin).await;
    let esp = d.esp();
    assert_eq!(esp.list("loader/entries").unwrap(), ["bronze-a.conf", "bronze-b.conf"]);
    assert_eq!(esp.list("b").unwrap(), ["initrd", "vmlinuz"], "no temporary file left");
    assert_eq!(esp.read("b/initrd").unwrap().len(), release_initrd.len());
    eprintln!("upgrade end to end (upload, verify, write, reboot, healthy): {:.1} s", upgrade_took.as_secs_f64());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_that_never_gets_healthy_reboots_itself_and_falls_back() {
    use bronze_bundle::SigningKey;
    use bronze_bundle::upgrade::UpgradeBundle;
    if unavailable("vm_disk never healthy") {
        return;
    }
    let layout = ImageLayout::new(&target_dir());
    let d = DiskVm::new(&layout);
    let (tmp, node) = (d.dir(), d.node.clone());
    let mut vm = d.start("console.log");
    wait_api(&mut vm, &node, &Auth::Insecure { fingerprint: None }, BOOT).await;

    // A config with an upgrade key and a health check (the image's
    // health-tcp) that never passes: nothing listens on port 1.
    let key = SigningKey::generate().unwrap();
    let pki = Pki::new();
    let check = bronze_tests::plugins::instance_yaml(
        "gate",
        "health-tcp",
        "host: 127.0.0.1, port: \"1\"",
        "config: true, probe: [\"tcp://127.0.0.1:1\"]",
        Some("1s"),
    );
    let yaml = bronze_tests::trusting_upgrades(
        &bronze_tests::plugins::config_with_plugins(&pki, "vm-unhealthy", &format!("instances:{check}")),
        &key,
    );
    let (_, admin) = d.configure(&mut vm, &pki, &yaml).await;
    let admin_auth = pki.auth(&["os:admin"]);
    // The check reports unhealthy: the machine is not ready.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let run = bronzectl(Some(&admin), &["-o", "json", "get", "machinestatus"]).await;
        if run.stdout.contains("healthcheck/gate") {
            break;
        }
        assert!(Instant::now() < deadline, "the check never failed: {run:?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // One try of 20 s: slot b boots, is not ready in time, reboots itself;
    // its try is spent, so slot a boots, and says so.
    let kernel = std::fs::read(layout.bzimage()).unwrap();
    let initrd = std::fs::read(layout.initrd()).unwrap();
    let bundle = UpgradeBundle::create("v0.3.0-unhealthy", std::env::consts::ARCH, kernel, initrd, &key);
    let file = tmp.join("upgrade.tar");
    std::fs::write(&file, bundle.to_tar()).unwrap();
    let run =
        bronzectl(Some(&admin), &["upgrade", file.to_str().unwrap(), "--tries", "1", "--health-timeout", "20"]).await;
    assert_eq!(run.code, 0, "{run:?}");
    let deadline = Instant::now() + BOOT;
    let v = loop {
        if let Ok(mut c) = NodeClient::connect(&node, &admin_auth).await
            && let Ok(Ok(v)) =
                tokio::time::timeout(Duration::from_secs(5), c.machine.version(pb::VersionRequest {})).await
            && v.get_ref().slot == "a"
            && v.get_ref().slots.iter().any(|s| s.slot == "b" && s.state == "bad")
        {
            break v.into_inner();
        }
        assert!(Instant::now() < deadline, "no fall-back to slot a:\n{}", vm.console().unwrap_or_default());
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(v.next_slot, "a", "{v:?}");
    let last = v.last_upgrade.clone().expect("the last upgrade is shown");
    assert_eq!((last.slot.as_str(), last.outcome.as_str()), ("b", "rolled-back"), "{last:?}");
    assert!(last.message.contains("did not become healthy in 1 tries; the node went back to slot a"), "{last:?}");
    let console = vm.console().unwrap_or_default();
    assert!(
        console.contains(
            "slot b is not healthy after 20 s (unmet: healthcheck/gate): rebooting to try again or fall back"
        ),
        "{console}"
    );
    let lines = command_lines(&vm);
    assert_eq!(lines.len(), 3, "a, b (tried), a: {lines:?}");
    assert!(lines[1].ends_with("bronze.health_timeout=20 bronze.slot=b"), "{lines:?}");
    let seen = events(&admin).await;
    assert!(seen.contains("rollback: slot b (v0.3.0-unhealthy) did not come up in 1 tries"), "{seen}");
    let _ = vm.kill();
}
