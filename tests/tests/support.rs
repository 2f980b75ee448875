//! `SupportService.Bundle` against a real process-mode bronzed over real
//! mTLS: the streamed `.tar.gz` opens with the system's `tar`, holds every
//! named part, and no member carries a private key, not even the CA key of
//! the node's config, which the test also plants in the kernel log (as
//! root) wrapped in PEM armour and bare. Readers are refused, operators get
//! no config, and every call is in the audit trail.

use bronze_api::v1::support_service_client::SupportServiceClient;
use bronze_api::v1::{BundleRequest, EventsRequest};
use bronze_tests::{Node, Pki};
use std::path::{Path, PathBuf};
use std::process::Command;
use tonic::Code;

/// The bundle as bytes, with the member names and notes of the last chunk.
async fn bundle(
    node: &Node,
    auth: &bronzectl::connect::Auth,
) -> Result<(Vec<u8>, Vec<String>, Vec<String>), tonic::Status> {
    let c = node.client(auth).await;
    let mut client = SupportServiceClient::new(c.channel.clone()).max_decoding_message_size(16 << 20);
    let mut stream = client.bundle(BundleRequest { log_lines: 0 }).await?.into_inner();
    let (mut data, mut members, mut notes) = (Vec::new(), Vec::new(), Vec::new());
    while let Some(chunk) = stream.message().await? {
        data.extend_from_slice(&chunk.data);
        if !chunk.members.is_empty() {
            members = chunk.members;
            notes = chunk.notes;
        }
    }
    Ok((data, members, notes))
}

/// `tar -tzf` of the archive, and the archive extracted into `dir`.
fn open(archive: &[u8], dir: &Path) -> Vec<String> {
    let file = dir.join("bundle.tar.gz");
    std::fs::write(&file, archive).unwrap();
    let list = Command::new("tar").arg("-tzf").arg(&file).output().expect("run tar");
    assert!(list.status.success(), "tar -tzf: {}", String::from_utf8_lossy(&list.stderr));
    let out = Command::new("tar").arg("-xzf").arg(&file).arg("-C").arg(dir).output().unwrap();
    assert!(out.status.success(), "tar -xzf: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(list.stdout).unwrap().lines().map(str::to_string).collect()
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else {
            out.push(path);
        }
    }
    out
}

/// The base64 lines of a PEM key's body.
fn key_body(pem: &str) -> Vec<String> {
    pem.lines().filter(|l| !l.starts_with("-----") && l.len() >= 16).map(str::to_string).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bundle_opens_with_tar_holds_every_part_and_no_private_key() {
    let pki = Pki::new();
    let node = Node::start_configured(&pki.node_config("support-node")).await;
    let body = key_body(&pki.ca.key_pem);
    assert!(!body.is_empty());

    // Plant the CA key in the kernel log, armoured and bare, with a marker
    // that proves the log made it into the bundle.
    let marker = format!("bronze-support-test-{}", std::process::id());
    let kmsg_written = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/kmsg")
        .and_then(|mut k| {
            use std::io::Write;
            k.write_all(format!("{marker} -----BEGIN PRIVATE KEY----- {}\n", body[0]).as_bytes())?;
            k.write_all(format!("{marker} bare {}\n", body[0]).as_bytes())
        })
        .is_ok();

    let (archive, members, notes) = bundle(&node, &pki.auth(&["os:admin"])).await.expect("admin bundle");
    assert!(archive.len() > 1000 && archive.len() < 32 << 20, "{} bytes", archive.len());
    let dir = tempfile::tempdir().unwrap();
    let listed = open(&archive, dir.path());
    let root = dir.path().join("bronze-support");
    for part in [
        "README.txt",
        "version.json",
        "machine-status.json",
        "resources/machineconfig.json",
        "resources/servicestatus.json",
        "mounts.json",
        "disks.json",
        "dmesg.txt",
        "processes.txt",
        "netstat.txt",
        "config.yaml",
    ] {
        assert!(listed.contains(&format!("bronze-support/{part}")), "{part} missing from {listed:?} (notes {notes:?})");
        assert!(members.contains(&part.to_string()), "{part} not announced: {members:?}");
    }
    assert_eq!(listed.len(), members.len(), "{listed:?} vs {members:?}");

    // The parts hold what they say.
    let version: serde_json::Value =
        serde_json::from_slice(&std::fs::read(root.join("version.json")).unwrap()).unwrap();
    assert_eq!((version["mode"].as_str(), version["hostname"].as_str()), (Some("process"), Some("support-node")));
    let status: serde_json::Value =
        serde_json::from_slice(&std::fs::read(root.join("machine-status.json")).unwrap()).unwrap();
    assert_eq!(status[0]["type"], "MachineStatuses.bronze.dev", "{status}");
    let mounts: serde_json::Value = serde_json::from_slice(&std::fs::read(root.join("mounts.json")).unwrap()).unwrap();
    assert!(mounts["mounts"].as_array().unwrap().iter().any(|m| m["target"] == "/proc"), "{mounts}");
    // bronzed itself among the processes, its API listener among the sockets.
    let processes = std::fs::read_to_string(root.join("processes.txt")).unwrap();
    assert!(
        processes.lines().any(|l| l.starts_with(&format!("{}\t", node.pid())) && l.contains("bronzed")),
        "{processes}"
    );
    let port = node.addr.rsplit(':').next().unwrap();
    let netstat = std::fs::read_to_string(root.join("netstat.txt")).unwrap();
    assert!(netstat.lines().any(|l| l.contains("LISTEN") && l.contains(&format!("]:{port}\t"))), "{netstat}");
    let config = std::fs::read_to_string(root.join("config.yaml")).unwrap();
    assert!(config.contains("support-node") && config.contains("[redacted]"), "{config}");
    let machine_config = std::fs::read_to_string(root.join("resources/machineconfig.json")).unwrap();
    assert!(machine_config.contains("sensitive"), "{machine_config}");
    let dmesg = std::fs::read_to_string(root.join("dmesg.txt")).unwrap();
    if kmsg_written {
        assert!(dmesg.contains(&format!("{marker} bare [redacted]")), "the planted line is missing or not redacted");
    }

    // No member anywhere carries a private key or any line of the CA key.
    let files = files_under(&root);
    assert_eq!(files.len(), listed.len());
    for file in files {
        let text = String::from_utf8_lossy(&std::fs::read(&file).unwrap()).into_owned();
        assert!(!text.contains("PRIVATE KEY"), "{} names a private key", file.display());
        for line in &body {
            assert!(!text.contains(line.as_str()), "{} holds a line of the CA key", file.display());
        }
    }
    // Nor the compressed archive itself (a second scan, of what left the node).
    let raw = String::from_utf8_lossy(&archive);
    assert!(!raw.contains("PRIVATE KEY"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_are_refused_operators_get_no_config_and_calls_are_audited() {
    let pki = Pki::new();
    let node = Node::start_configured(&pki.node_config("support-roles")).await;
    let err = bundle(&node, &pki.auth(&["os:reader"])).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");

    let (archive, members, notes) = bundle(&node, &pki.auth(&["os:operator"])).await.expect("operator bundle");
    let dir = tempfile::tempdir().unwrap();
    let listed = open(&archive, dir.path());
    assert!(!listed.iter().any(|m| m.ends_with("config.yaml")), "{listed:?}");
    assert!(!members.contains(&"config.yaml".to_string()));
    assert!(notes.iter().any(|n| n.contains("config.yaml") && n.contains("os:admin")), "{notes:?}");
    let readme = std::fs::read_to_string(dir.path().join("bronze-support/README.txt")).unwrap();
    assert!(readme.contains("os:admin"), "the README says what was left out: {readme}");

    // Both calls, the refused and the served one, are audited.
    let mut admin = node.client(&pki.auth(&["os:admin"])).await;
    let mut events = admin.machine.events(EventsRequest { tail_events: -1, follow: false }).await.unwrap().into_inner();
    let mut results = Vec::new();
    while let Some(e) = events.message().await.unwrap() {
        if let Some(a) = e.audit.filter(|a| a.method.ends_with("Bundle")) {
            results.push((a.roles.join("+"), a.result));
        }
    }
    assert_eq!(results.len(), 2, "{results:?}");
    assert!(results[0].0.contains("os:reader") && results[0].1 != results[1].1, "{results:?}");
    assert!(results[1].0.contains("os:operator"), "{results:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bronzectl_support_writes_the_archive_atomically_for_an_operator() {
    let pki = Pki::new();
    let node = Node::start_configured(&pki.node_config("support-cli")).await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("bronzeconfig");
    pki.write_bronzeconfig(&config, std::slice::from_ref(&node.addr), &["os:operator"]);
    let out = dir.path().join("bundle.tar.gz");
    let run =
        bronze_tests::bronzectl(Some(&config), &["support", "--output-file", out.to_str().unwrap(), "-o", "json"])
            .await;
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    let answer: serde_json::Value = serde_json::from_str(run.stdout.trim()).unwrap();
    assert_eq!(answer["file"], out.display().to_string());
    assert_eq!(answer["bytes"].as_u64().unwrap(), std::fs::metadata(&out).unwrap().len());
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&out).unwrap().permissions().mode() & 0o777, 0o600);
    let listed = open(&std::fs::read(&out).unwrap(), dir.path());
    assert!(listed.contains(&"bronze-support/dmesg.txt".to_string()) || answer["notes"].to_string().contains("dmesg"));
    assert!(listed.contains(&"bronze-support/version.json".to_string()), "{listed:?}");

    // A reader: refused, and no file is left behind.
    pki.write_bronzeconfig(&config, std::slice::from_ref(&node.addr), &["os:reader"]);
    let refused = dir.path().join("refused.tar.gz");
    let run = bronze_tests::bronzectl(Some(&config), &["support", "--output-file", refused.to_str().unwrap()]).await;
    assert_ne!(run.code, 0);
    assert!(run.stdout.contains("may not call Bundle") || run.stderr.contains("may not call Bundle"), "{run:?}");
    assert!(!refused.exists());
}
