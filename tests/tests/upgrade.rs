//! Upgrades against a process-mode node whose boot slots are a directory
//! standing in for the EFI system partition (`--boot-dir`, `--boot-slot`):
//! the same upload, checks, slot writes and record as on a disk, over real
//! mTLS from the real `bronzectl`, without a VM. The VM tests
//! (`vm_disk.rs`) boot what is written; these check what is written.

use bronze_api::v1 as pb;
use bronze_boot::{Counter, Esp, Slot};
use bronze_bundle::SigningKey;
use bronze_bundle::upgrade::UpgradeBundle;
use bronze_tests::{Node, NodeOptions, Pki, bronzectl};
use bronzectl::client::NodeClient;
use serde_json::Value;
use std::path::Path;

fn entry_names(esp: &Esp) -> Vec<String> {
    esp.entries().unwrap().iter().map(|f| f.name.file_name()).collect()
}

async fn version(config: &Path) -> Value {
    let run = bronzectl(Some(config), &["-o", "json", "version"]).await;
    assert_eq!(run.code, 0, "{run:?}");
    serde_json::from_str(run.stdout.lines().next().unwrap_or("")).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_is_written_to_the_other_slot_of_a_boot_directory_and_recorded() {
    let tmp = tempfile::tempdir().unwrap();
    let esp = bronze_tests::boot_dir(&tmp.path().join("esp"), b"kernel a", b"initrd a");
    let key = SigningKey::generate().unwrap();
    let pki = Pki::new();
    let config = bronze_tests::trusting_upgrades(&pki.node_config("upgrader"), &key);
    let boot_args = ["--boot-dir", esp.root.to_str().unwrap(), "--boot-slot", "a"];
    let node = Node::start_with(NodeOptions {
        config: Some(config),
        args: boot_args.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    })
    .await;
    let admin = tmp.path().join("admin");
    pki.write_bronzeconfig(&admin, std::slice::from_ref(&node.addr), &["os:admin"]);

    let v = version(&admin).await;
    assert_eq!((v["slot"].as_str(), v["slots"].as_str()), (Some("a"), Some("a: v0.1.0 good, b: empty")), "{v}");
    assert!(v.get("lastUpgrade").is_none(), "{v}");

    // A reader may not upgrade; a bundle signed by a key the config does
    // not trust is refused; neither changes a file.
    let bundle = UpgradeBundle::create("v0.2.0", std::env::consts::ARCH, b"kernel b".to_vec(), vec![7; 300_000], &key);
    let file = tmp.path().join("upgrade.tar");
    std::fs::write(&file, bundle.to_tar()).unwrap();
    let reader = tmp.path().join("reader");
    pki.write_bronzeconfig(&reader, std::slice::from_ref(&node.addr), &["os:reader"]);
    let run = bronzectl(Some(&reader), &["upgrade", file.to_str().unwrap(), "--stage"]).await;
    assert_ne!(run.code, 0, "{run:?}");
    assert!(run.stderr.contains("PermissionDenied") || run.stderr.contains("permission"), "{run:?}");
    let stranger = SigningKey::generate().unwrap();
    let untrusted = UpgradeBundle::create("v0.2.0", std::env::consts::ARCH, b"x".to_vec(), b"y".to_vec(), &stranger);
    let untrusted_file = tmp.path().join("untrusted.tar");
    std::fs::write(&untrusted_file, untrusted.to_tar()).unwrap();
    let run = bronzectl(Some(&admin), &["upgrade", untrusted_file.to_str().unwrap(), "--stage"]).await;
    assert_ne!(run.code, 0, "{run:?}");
    assert!(run.stderr.contains("does not verify with any of the 1 key(s)"), "{run:?}");
    assert_eq!(entry_names(&esp), ["bronze-a.conf"]);
    assert!(!esp.slot_dir(Slot::B).join("initrd").exists());

    // Staged: slot b holds the new system, boots next with three tries,
    // and the node says so; it does not reboot.
    let run = bronzectl(Some(&admin), &["-o", "json", "upgrade", file.to_str().unwrap(), "--stage"]).await;
    assert_eq!(run.code, 0, "{run:?}");
    let answer: Value = serde_json::from_str(run.stdout.lines().next().unwrap()).unwrap();
    assert_eq!((answer["slot"].as_str(), answer["rebooting"].as_bool()), (Some("b"), Some(false)), "{answer}");
    assert_eq!(entry_names(&esp), ["bronze-a.conf", "bronze-b+3.conf"]);
    assert_eq!(std::fs::read(esp.slot_dir(Slot::B).join("vmlinuz")).unwrap(), b"kernel b");
    assert_eq!(std::fs::read(esp.slot_dir(Slot::B).join("initrd")).unwrap(), vec![7; 300_000]);
    let v = version(&admin).await;
    assert_eq!((v["slot"].as_str(), v["nextSlot"].as_str()), (Some("a"), Some("b")), "{v}");
    let last = &v["lastUpgrade"];
    assert_eq!(
        (last["outcome"].as_str(), last["release"].as_str(), last["fromRelease"].as_str(), last["generation"].as_u64()),
        (Some("staged"), Some("v0.2.0"), Some("v0.1.0"), Some(2)),
        "{v}"
    );
    assert_eq!(last["message"], "slot b (v0.2.0) boots at the next reboot");
    let status = bronzectl(Some(&admin), &["-o", "json", "get", "machinestatus"]).await;
    let status: Value = serde_json::from_str(status.stdout.lines().next().unwrap()).unwrap();
    assert_eq!(status["resources"][0]["spec"]["lastUpgrade"]["outcome"], "staged", "{status}");

    // b has never booted: a rollback to it is refused.
    let run = bronzectl(Some(&admin), &["rollback", "--stage"]).await;
    assert_ne!(run.code, 0, "{run:?}");
    assert!(run.stderr.contains("slot b never booted fine"), "{run:?}");

    // What the boot loader does after b's tries ran out (a counted entry
    // with none left), as the node reads it after a restart: rolled back.
    let mut c = NodeClient::connect(&node.addr, &pki.auth(&["os:admin"])).await.unwrap();
    let mut b = esp.slot_entries(Slot::B).unwrap().remove(0).entry.unwrap();
    esp.remove_entries(Slot::B).unwrap();
    b.options = "console=ttyS0".into();
    esp.write_entry(&b, Some(Counter { left: 0, done: 3 })).unwrap();
    c.machine.reboot(pb::RebootRequest {}).await.unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let v = version(&admin).await;
        if v["lastUpgrade"]["outcome"] == "rolled-back" {
            assert_eq!(
                v["lastUpgrade"]["message"],
                "slot b (v0.2.0) did not become healthy in 3 tries; the node went back to slot a"
            );
            assert!(v["slots"].as_str().unwrap().contains("b: v0.2.0 bad"), "{v}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no rollback outcome after the restart: {v}");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    drop(node);
}
