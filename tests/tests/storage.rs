//! `StorageService` (mounts, disks, usage) against a real process-mode
//! bronzed, called by a reader over real mTLS. Mounts: the mount table of
//! bronzed's own namespace, checked against the test's own reading of
//! /proc/self/mountinfo and statvfs of `/`. Disks: a fake sysfs (`--sysfs`)
//! with a disk and a partition whose device node is a real file the test
//! writes (an MBR, an ext4 superblock), so the probe really reads it; a node
//! on the real sysfs lists what the kernel has. Usage: the node's state dir
//! with files the test writes, and the refusals (outside the roots, `..`, a
//! symlink out).

use bronze_api::v1::storage_service_client::StorageServiceClient;
use bronze_api::v1::{DisksRequest, MountsRequest, UsageRequest};
use bronze_tests::{Node, NodeOptions, Pki};
use tonic::Code;

async fn reader_client(node: &Node, pki: &Pki) -> StorageServiceClient<tonic::transport::Channel> {
    let reader = node.client(&pki.auth(&["os:reader"])).await;
    StorageServiceClient::new(reader.channel.clone()).max_decoding_message_size(64 << 20)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mounts_include_root_and_proc_with_sizes() {
    let pki = Pki::new();
    let node = Node::start_configured(&pki.node_config("storage-mounts")).await;
    let mut client = reader_client(&node, &pki).await;
    let answer = client.mounts(MountsRequest {}).await.expect("mounts").into_inner();
    assert!(!answer.truncated);
    let root = answer.mounts.iter().rev().find(|m| m.target == "/").expect("/ is mounted");
    let proc = answer.mounts.iter().find(|m| m.target == "/proc").expect("/proc is mounted");
    assert_eq!(proc.filesystem, "proc", "{proc:?}");
    assert!(proc.options.split(',').any(|o| o == "rw" || o == "ro"), "{proc:?}");
    // The same figures the test's own statvfs gives (same filesystem, the
    // used bytes move a little between the two calls).
    let st = nix::sys::statvfs::statvfs("/").unwrap();
    let size = st.blocks() as u64 * st.fragment_size() as u64;
    assert_eq!(root.size_bytes, size, "{root:?}");
    assert!(root.used_bytes <= root.size_bytes && root.stat_error.is_empty(), "{root:?}");
    // Every mount bronzed's mountinfo has both before and after the call
    // (other tests on this machine may add namespaces' mounts meanwhile).
    let ids = |text: String| -> std::collections::BTreeSet<u32> {
        text.lines().filter_map(|l| l.split(' ').next()?.parse().ok()).collect()
    };
    let mountinfo = format!("/proc/{}/mountinfo", node.pid());
    let before = ids(std::fs::read_to_string(&mountinfo).unwrap());
    let answer = client.mounts(MountsRequest {}).await.expect("mounts").into_inner();
    let after = ids(std::fs::read_to_string(&mountinfo).unwrap());
    let listed: std::collections::BTreeSet<u32> = answer.mounts.iter().map(|m| m.mount_id).collect();
    let stable: Vec<u32> = before.intersection(&after).copied().collect();
    assert!(!stable.is_empty());
    let missing: Vec<&u32> = stable.iter().filter(|id| !listed.contains(id)).collect();
    assert!(missing.is_empty(), "mount ids {missing:?} not listed");
    assert!(answer.mounts.iter().all(|m| m.mount_id != 0 && !m.filesystem.is_empty()));
}

/// `<dir>/class/block/<name>` as the kernel lays it out: a directory under
/// `devices/`, linked from `class/block`; partitions inside their disk's.
fn block(sys: &std::path::Path, path: &str, attrs: &[(&str, &str)]) {
    let dir = sys.join("devices/virtual/block").join(path);
    std::fs::create_dir_all(dir.join("device")).unwrap();
    for (name, value) in attrs {
        std::fs::write(dir.join(name), format!("{value}\n")).unwrap();
    }
    let name = path.rsplit('/').next().unwrap();
    std::os::unix::fs::symlink(&dir, sys.join("class/block").join(name)).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disks_from_a_fake_sysfs_are_probed_through_their_nodes() {
    let pki = Pki::new();
    let sys = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(sys.path().join("class/block")).unwrap();
    // The device nodes: real files under /dev/shm (DEVNAME is relative to
    // /dev), unique to this test.
    let tag = format!("bronze-storage-{}", std::process::id());
    let disk_node = format!("shm/{tag}-disk");
    let part_node = format!("shm/{tag}-part");
    let mut mbr = vec![0u8; 64 * 1024];
    mbr[446 + 4] = 0x83;
    mbr[510] = 0x55;
    mbr[511] = 0xAA;
    let mut ext4 = vec![0u8; 64 * 1024];
    ext4[1024 + 56..1024 + 58].copy_from_slice(&0xEF53u16.to_le_bytes());
    ext4[1024 + 120..1024 + 128].copy_from_slice(b"DATA\x1bX\0\0");
    std::fs::write(format!("/dev/{disk_node}"), &mbr).unwrap();
    std::fs::write(format!("/dev/{part_node}"), &ext4).unwrap();
    let _cleanup = Cleanup(vec![format!("/dev/{disk_node}"), format!("/dev/{part_node}")]);
    block(
        sys.path(),
        "fakedisk",
        &[
            ("size", "128"),
            ("uevent", &format!("MAJOR=254\nMINOR=0\nDEVNAME={disk_node}\nDEVTYPE=disk")),
            ("device/model", "Bronze Test Disk"),
            ("serial", "BT-0001"),
            ("ro", "0"),
            ("removable", "1"),
        ],
    );
    block(
        sys.path(),
        "fakedisk/fakedisk1",
        &[
            ("size", "128"),
            ("partition", "1"),
            ("uevent", &format!("MAJOR=254\nMINOR=1\nDEVNAME={part_node}\nDEVTYPE=partition")),
        ],
    );
    // A device whose node does not exist: listed, with the reason.
    block(sys.path(), "ghost", &[("size", "8"), ("uevent", "DEVNAME=bronze-no-such-node")]);
    // An unattached loop device: listed, never opened.
    block(sys.path(), "loop7", &[("size", "0")]);

    let node = Node::start_with(NodeOptions {
        config: Some(pki.node_config("storage-disks")),
        args: vec!["--sysfs".into(), sys.path().display().to_string()],
        ..Default::default()
    })
    .await;
    let mut client = reader_client(&node, &pki).await;
    let disks = client.disks(DisksRequest {}).await.expect("disks").into_inner().disks;
    let names: Vec<&str> = disks.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(names, ["fakedisk", "fakedisk1", "ghost", "loop7"]);
    let d = &disks[0];
    assert_eq!(
        (d.size_bytes, d.model.as_str(), d.serial.as_str(), d.partition_table.as_str()),
        (128 * 512, "Bronze Test Disk", "BT-0001", "dos"),
        "{d:?}"
    );
    assert!(d.removable && !d.read_only && d.error.is_empty(), "{d:?}");
    assert_eq!(d.dev_path, format!("/dev/{disk_node}"));
    let p = &disks[1];
    assert_eq!(
        (p.parent.as_str(), p.filesystem.as_str(), p.label.as_str(), p.partition_table.as_str()),
        ("fakedisk", "ext4", "DATA\\x1bX", ""),
        "the label is escaped: {p:?}"
    );
    assert!(disks[2].error.contains("bronze-no-such-node"), "{:?}", disks[2]);
    assert!(disks[3].error.is_empty() && disks[3].size_bytes == 0, "{:?}", disks[3]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disks_on_the_real_sysfs_match_the_kernel() {
    let pki = Pki::new();
    let node = Node::start_configured(&pki.node_config("storage-real-disks")).await;
    let mut client = reader_client(&node, &pki).await;
    let disks = client.disks(DisksRequest {}).await.expect("disks").into_inner().disks;
    let mut kernel: Vec<String> = std::fs::read_dir("/sys/class/block")
        .map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    kernel.sort();
    kernel.truncate(64);
    let names: Vec<String> = disks.iter().map(|d| d.name.clone()).collect();
    assert_eq!(names, kernel, "bronzed lists what /sys/class/block has");
    for d in &disks {
        let sectors: u64 =
            std::fs::read_to_string(format!("/sys/class/block/{}/size", d.name)).unwrap().trim().parse().unwrap();
        assert_eq!(d.size_bytes, sectors * 512, "{d:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_of_the_state_dir_and_refusals() {
    let pki = Pki::new();
    let node = Node::start_configured(&pki.node_config("storage-usage")).await;
    let mut client = reader_client(&node, &pki).await;
    let junk = node.state_dir.join("junk/deeper");
    std::fs::create_dir_all(&junk).unwrap();
    std::fs::write(junk.join("blob"), vec![7u8; 3 << 20]).unwrap();
    // A symlink to something big outside: counted as a link, not followed.
    std::os::unix::fs::symlink("/usr", node.state_dir.join("junk/usr-link")).unwrap();

    let state = std::fs::canonicalize(&node.state_dir).unwrap();
    let answer = client
        .usage(UsageRequest { path: state.display().to_string(), max_depth: 2 })
        .await
        .expect("usage")
        .into_inner();
    assert!(!answer.truncated, "{:?}", answer.notes);
    let top = &answer.entries[0];
    assert_eq!((top.path.as_str(), top.depth), (state.to_str().unwrap(), 0));
    let junk_entry = answer.entries.iter().find(|e| e.path.ends_with("/junk")).expect("junk listed");
    assert_eq!(junk_entry.depth, 1);
    assert!(junk_entry.apparent_bytes >= 3 << 20 && junk_entry.apparent_bytes < (3 << 20) + 65536, "{junk_entry:?}");
    assert_eq!((junk_entry.files, junk_entry.directories), (2, 1), "blob and the link; deeper: {junk_entry:?}");
    assert!(answer.entries.iter().any(|e| e.path.ends_with("/junk/deeper") && e.depth == 2));
    assert!(top.apparent_bytes > junk_entry.apparent_bytes, "the state dir holds the config and keys too");
    // du -s --apparent-size agrees on the subtree.
    let du = std::process::Command::new("du").args(["-s", "-b"]).arg(state.join("junk")).output().unwrap();
    let du_bytes: u64 = String::from_utf8_lossy(&du.stdout).split_whitespace().next().unwrap().parse().unwrap();
    let dir_meta = std::fs::metadata(state.join("junk")).unwrap();
    assert_eq!(junk_entry.apparent_bytes + std::os::unix::fs::MetadataExt::size(&dir_meta), du_bytes);

    for (path, code) in [
        ("/etc", Code::InvalidArgument),
        ("relative/path", Code::InvalidArgument),
        (&format!("{}/../", state.display()), Code::InvalidArgument),
        (&format!("{}/junk/usr-link", state.display()), Code::InvalidArgument),
        (&format!("{}/no-such-dir", state.display()), Code::NotFound),
    ] {
        let err = client.usage(UsageRequest { path: path.to_string(), max_depth: 1 }).await.unwrap_err();
        assert_eq!(err.code(), code, "{path}: {err:?}");
    }
    let err = client.usage(UsageRequest { path: "/etc".into(), max_depth: 1 }).await.unwrap_err();
    assert!(err.message().contains("not under an allowed root"), "{}", err.message());
}

struct Cleanup(Vec<String>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = std::fs::remove_file(p);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bronzectl_mounts_disks_and_usage() {
    let pki = Pki::new();
    let node = Node::start_configured(&pki.node_config("storage-cli")).await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("bronzeconfig");
    pki.write_bronzeconfig(&config, std::slice::from_ref(&node.addr), &["os:reader"]);
    let ctl = |args: Vec<String>| {
        let config = config.clone();
        async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            bronze_tests::bronzectl(Some(&config), &args).await
        }
    };
    let run = ctl(vec!["mounts".into(), "-o".into(), "json".into()]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let answer: serde_json::Value = serde_json::from_str(run.stdout.trim()).unwrap();
    assert_eq!(answer["node"], node.addr);
    assert!(answer["mounts"].as_array().unwrap().iter().any(|m| m["target"] == "/proc"), "{answer}");
    let run = ctl(vec!["mounts".into()]).await;
    assert!(run.stdout.lines().next().unwrap().contains("TARGET"), "{}", run.stdout);
    let run = ctl(vec!["disks".into(), "-o".into(), "yaml".into()]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stdout.contains("disks:"), "{}", run.stdout);
    let state = std::fs::canonicalize(&node.state_dir).unwrap().display().to_string();
    let run = ctl(vec!["usage".into(), state.clone(), "-d".into(), "2".into()]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stdout.lines().any(|l| l.trim_end().ends_with(&state)), "{}", run.stdout);
    let run = ctl(vec!["usage".into(), "/etc".into()]).await;
    assert_ne!(run.code, 0);
    assert!(format!("{}{}", run.stdout, run.stderr).contains("not under an allowed root"), "{run:?}");
}
