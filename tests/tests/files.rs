//! `read` and `ls` (FileService) against a real process-mode node: the roots
//! are the real /proc and /sys, the node's state dir as /var/lib/bronze, and
//! `<state dir>/root/{etc,var/log}` as /etc and /var/log, where the test
//! plants files, symlinks out of the roots and keys. Checks the refusals
//! (`..`, absolute and relative symlinks, /proc/self/root, secrets by name
//! and through a symlink), the caps (16 MiB and --max-bytes, 10,000
//! entries), the redaction of the stored config's CA key, reader vs
//! operator/admin, and the audit trail.

use bronze_api::v1 as pb;
use bronze_api::v1::file_service_client::FileServiceClient;
use bronze_tests::{Node, Pki, bronzectl};
use std::os::unix::fs::symlink;
use std::path::Path;
use std::time::Duration;
use tonic::Code;
use tonic::transport::Channel;

const READ: &str = "/bronze.v1.FileService/Read";
const LIST: &str = "/bronze.v1.FileService/List";

struct Read {
    data: Vec<u8>,
    chunks: Vec<usize>,
    truncated: bool,
    redacted: u32,
}

async fn files(node: &Node, pki: &Pki, role: &str) -> FileServiceClient<Channel> {
    let client = node.client(&pki.auth(&[role])).await;
    FileServiceClient::new(client.channel.clone())
}

async fn read(c: &mut FileServiceClient<Channel>, path: &str, max_bytes: u64) -> Result<Read, tonic::Status> {
    let mut stream = c.read(pb::FileReadRequest { path: path.into(), max_bytes }).await?.into_inner();
    let mut out = Read { data: Vec::new(), chunks: Vec::new(), truncated: false, redacted: 0 };
    while let Some(chunk) = tokio::time::timeout(Duration::from_secs(30), stream.message()).await.expect("stall")? {
        out.chunks.push(chunk.data.len());
        out.data.extend_from_slice(&chunk.data);
        out.truncated |= chunk.truncated;
        out.redacted += chunk.redacted_keys;
    }
    Ok(out)
}

async fn list(
    c: &mut FileServiceClient<Channel>,
    path: &str,
    recursive: bool,
    max_depth: u32,
) -> Result<pb::FileListResponse, tonic::Status> {
    Ok(c.list(pb::FileListRequest { path: path.into(), recursive, max_depth }).await?.into_inner())
}

async fn refused(c: &mut FileServiceClient<Channel>, path: &str) -> tonic::Status {
    match read(c, path, 0).await {
        Ok(r) => panic!("{path} was read: {:?}", String::from_utf8_lossy(&r.data[..r.data.len().min(200)])),
        Err(s) => s,
    }
}

fn write(path: &Path, bytes: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
}

const PLANTED_KEY: &str = "-----BEGIN PRIVATE KEY-----\nTUlJRXBsYW50ZWRzZWNyZXQ=\n-----END PRIVATE KEY-----\n";

/// Plants the test's tree under the node's /etc, /var/log and state dir.
fn plant(state: &Path) {
    let log = state.join("root/var/log");
    let etc = state.join("root/etc");
    write(&log.join("app.log"), b"hello from app\n");
    write(&log.join("big.log"), &vec![b'x'; 20 * 1024 * 1024]);
    write(&log.join("sub/deeper/inner.log"), b"inner\n");
    write(&log.join("leaked.log"), format!("before\n{PLANTED_KEY}after\n").as_bytes());
    // Out of the root: absolute, relative, and a directory link.
    symlink("/etc/hostname", log.join("abs-link")).unwrap();
    symlink("../../../config.yaml", log.join("rel-link")).unwrap();
    symlink("../../..", log.join("dir-link")).unwrap();
    // Inside the root: followed.
    symlink("app.log", log.join("inside-link")).unwrap();
    // A FIFO nobody writes to: opening it for reading would block or hang.
    nix::unistd::mkfifo(&log.join("pipe"), nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    write(&etc.join("hosts"), b"127.0.0.1 localhost\n");
    write(&etc.join("shadow"), b"root:$6$planted-hash:19000:0:99999:7:::\n");
    symlink("shadow", etc.join("notes")).unwrap();
    write(&etc.join("ssh/ssh_host_ed25519_key"), PLANTED_KEY.as_bytes());
    write(&etc.join("ssh/ssh_host_ed25519_key.pub"), b"ssh-ed25519 AAAA planted\n");
    write(&state.join("test-signing.key"), b"raw key bytes, no PEM marker\n");
}

fn escapes(path: &str, root: &str) -> String {
    format!("{path}: outside the allowed roots: it leads out of {root} (through `..` or a symlink)")
}

fn outside(path: &str) -> String {
    format!("{path}: outside the allowed roots (/proc, /sys, /var/log, /var/lib/bronze, /etc)")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_and_ls_under_the_allowed_roots() {
    let pki = Pki::new();
    let node = Node::start_configured(&pki.node_config("files")).await;
    plant(&node.state_dir);
    let mut reader = files(&node, &pki, "os:reader").await;
    let mut operator = files(&node, &pki, "os:operator").await;
    let mut admin = files(&node, &pki, "os:admin").await;

    // A reader reads /var/log, /proc and /sys; a symlink inside its root is followed.
    assert_eq!(read(&mut reader, "/var/log/app.log", 0).await.unwrap().data, b"hello from app\n");
    assert_eq!(read(&mut reader, "/var/log/inside-link", 0).await.unwrap().data, b"hello from app\n");
    let status = read(&mut reader, &format!("/proc/{}/status", node.pid()), 0).await.unwrap();
    assert!(String::from_utf8_lossy(&status.data).contains("Name:\tbronzed"), "{:?}", status.data);
    let lo = read(&mut reader, "/sys/class/net/lo/mtu", 0).await.unwrap();
    assert_eq!(String::from_utf8_lossy(&lo.data).trim(), "65536");

    // ... but not /etc or /var/lib/bronze; operator and admin may.
    for (path, root) in [("/etc/hosts", "/etc"), ("/var/lib/bronze/config.yaml", "/var/lib/bronze")] {
        let s = refused(&mut reader, path).await;
        assert_eq!(s.code(), Code::PermissionDenied);
        assert_eq!(s.message(), format!("{path}: os:reader may not read under {root} (operator or admin may)"));
    }
    let s = list(&mut reader, "/var/lib/bronze", false, 0).await.unwrap_err();
    assert_eq!(s.code(), Code::PermissionDenied, "{s:?}");
    assert_eq!(read(&mut operator, "/etc/hosts", 0).await.unwrap().data, b"127.0.0.1 localhost\n");

    // `..` out of a root, symlinks out of a root, and paths outside every root.
    let own_root = format!("/proc/{}/root/etc/passwd", std::process::id());
    for (path, want) in [
        ("/var/log/../../config.yaml", escapes("/var/log/../../config.yaml", "/var/log")),
        ("/proc/../etc/passwd", escapes("/proc/../etc/passwd", "/proc")),
        ("/var/log/abs-link", escapes("/var/log/abs-link", "/var/log")),
        ("/var/log/rel-link", escapes("/var/log/rel-link", "/var/log")),
        ("/var/log/dir-link/config.yaml", escapes("/var/log/dir-link/config.yaml", "/var/log")),
        ("/var/../etc/shadow", outside("/var/../etc/shadow")),
        ("/root/.ssh/id_rsa", outside("/root/.ssh/id_rsa")),
    ] {
        let s = refused(&mut admin, path).await;
        assert_eq!((s.code(), s.message()), (Code::PermissionDenied, want.as_str()));
    }
    // Magic links: /proc/self/root (bronzed's own), another process's, fds.
    // (/proc/self/root/etc/shadow is refused by its name before the kernel
    // is asked; /proc/self/root/etc/passwd shows the magic link refused.)
    let s = refused(&mut admin, "/proc/self/root/etc/shadow").await;
    assert_eq!(s.code(), Code::PermissionDenied, "{s:?}");
    for path in ["/proc/self/root/etc/passwd", own_root.as_str(), "/proc/self/cwd/config.yaml", "/proc/self/fd/0"] {
        let s = refused(&mut admin, path).await;
        assert_eq!(s.code(), Code::PermissionDenied, "{path}: {s:?}");
        assert!(s.message().contains("a magic link"), "{path}: {s:?}");
    }
    let s = list(&mut admin, "/proc/self/root", false, 0).await.unwrap_err();
    assert!(s.message().contains("a magic link"), "{s:?}");
    let s = list(&mut admin, "/var/log/dir-link", false, 0).await.unwrap_err();
    assert!(s.message().contains("leads out of /var/log"), "{s:?}");

    // Secrets, whatever the role: by name, through a symlink, process memory.
    for (path, reason) in [
        ("/etc/shadow", "a password hash file"),
        ("/etc/notes", "a password hash file"),
        ("/etc/ssh/ssh_host_ed25519_key", "a private key file"),
        ("/var/lib/bronze/test-signing.key", "a private key file"),
        ("/proc/self/mem", "process or kernel memory"),
        ("/proc/kcore", "process or kernel memory"),
        ("/proc/self/environ", "a process environment"),
    ] {
        let s = refused(&mut admin, path).await;
        assert_eq!(s.code(), Code::PermissionDenied);
        assert_eq!(s.message(), format!("{path}: a secret ({reason}); it is never readable, whatever the role"));
    }
    assert_eq!(refused(&mut reader, "/proc/1/mem").await.code(), Code::PermissionDenied);
    let public = read(&mut admin, "/etc/ssh/ssh_host_ed25519_key.pub", 0).await.unwrap();
    assert_eq!(public.data, b"ssh-ed25519 AAAA planted\n");

    // The stored config: the CA key redacted, the rest intact.
    let config = read(&mut admin, "/var/lib/bronze/config.yaml", 0).await.unwrap();
    let text = String::from_utf8(config.data.clone()).unwrap();
    assert!(!text.contains("PRIVATE KEY"), "{text}");
    for line in pki.ca.key_pem.lines().filter(|l| !l.starts_with("-----")) {
        assert!(!text.contains(line.trim()), "a line of the CA key is in the reply: {line}");
    }
    assert!(text.contains("[private key redacted by bronzed]") && text.contains("hostname: files"), "{text}");
    let cert_line = pki.ca.cert_pem.lines().nth(1).unwrap();
    assert!(text.contains(cert_line), "the CA certificate is kept:\n{text}");
    // The CA key, and the commented example's BEGIN line; what follows the
    // example (certSANs, the other sections) is kept.
    assert_eq!(config.redacted, 2, "{text}");
    assert!(text.contains("certSANs:") && text.contains("\n  time:\n"), "{text}");
    // A key inside a log is redacted too.
    let leaked = read(&mut reader, "/var/log/leaked.log", 0).await.unwrap();
    assert_eq!(String::from_utf8(leaked.data).unwrap(), "before\n[private key redacted by bronzed]\nafter\n");
    assert_eq!(leaked.redacted, 1);

    // A very large file: capped at 16 MiB in chunks of at most 64 KiB.
    let big = read(&mut reader, "/var/log/big.log", 0).await.unwrap();
    assert_eq!(big.data.len(), 16 * 1024 * 1024);
    assert!(big.truncated && big.chunks.iter().all(|n| *n <= 64 * 1024), "{:?}", &big.chunks[..3]);
    let head = read(&mut reader, "/var/log/big.log", 1000).await.unwrap();
    assert_eq!((head.data.len(), head.truncated), (1000, true));
    let whole = read(&mut reader, "/var/log/app.log", 15).await.unwrap();
    assert_eq!((whole.data.len(), whole.truncated), (15, false));
    let s = read(&mut reader, "/var/log/big.log", 17 * 1024 * 1024).await.err().unwrap();
    assert_eq!(s.code(), Code::InvalidArgument);
    assert_eq!(s.message(), "max_bytes 17825792 is larger than the limit of 16777216 bytes");
    let s = refused(&mut reader, "/var/log/sub").await;
    assert_eq!(s.message(), "/var/log/sub: not a regular file (dir); use ls for directories");
    let s = refused(&mut reader, "/var/log/pipe").await;
    assert_eq!(s.message(), "/var/log/pipe: not a regular file (fifo); use ls for directories");
    let s = refused(&mut reader, "/var/log/nothing-here").await;
    assert_eq!((s.code(), s.message()), (Code::NotFound, "/var/log/nothing-here: not found"));

    // ls: entries sorted, symlinks listed with targets and not followed.
    let listed = list(&mut reader, "/var/log", false, 0).await.unwrap();
    let names: Vec<&str> = listed.entries.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        names,
        [
            "/var/log/abs-link",
            "/var/log/app.log",
            "/var/log/big.log",
            "/var/log/dir-link",
            "/var/log/inside-link",
            "/var/log/leaked.log",
            "/var/log/pipe",
            "/var/log/rel-link",
            "/var/log/sub"
        ]
    );
    let abs = &listed.entries[0];
    assert_eq!((abs.r#type.as_str(), abs.link_target.as_str()), ("symlink", "/etc/hostname"));
    assert_eq!(listed.entries[2].size, 20 * 1024 * 1024);
    let deep = list(&mut reader, "/var/log", true, 0).await.unwrap();
    let deep_names: Vec<&str> = deep.entries.iter().map(|e| e.path.as_str()).collect();
    assert!(deep_names.contains(&"/var/log/sub/deeper/inner.log"), "{deep_names:?}");
    assert!(!deep_names.iter().any(|n| n.starts_with("/var/log/dir-link/")), "a symlink was followed: {deep_names:?}");
    let shallow = list(&mut reader, "/var/log", true, 2).await.unwrap();
    assert!(shallow.entries.iter().any(|e| e.path == "/var/log/sub/deeper"));
    assert!(!shallow.entries.iter().any(|e| e.path == "/var/log/sub/deeper/inner.log"));
    // Secrets are listed, marked.
    let state = list(&mut admin, "/var/lib/bronze", false, 0).await.unwrap();
    let secret = |p: &str| state.entries.iter().find(|e| e.path == p).map(|e| e.secret);
    assert_eq!(secret("/var/lib/bronze/test-signing.key"), Some(true));
    assert_eq!(secret("/var/lib/bronze/config.yaml"), Some(false));
    let etc = list(&mut operator, "/etc", true, 0).await.unwrap();
    assert!(etc.entries.iter().any(|e| e.path == "/etc/shadow" && e.secret), "{:?}", etc.entries);
    // The entry cap: /proc, 8 levels deep, holds more than 10,000.
    let proc = list(&mut reader, "/proc", true, 0).await.unwrap();
    assert_eq!((proc.entries.len(), proc.truncated), (10_000, true));
    let s = list(&mut reader, "/proc", true, 9).await.unwrap_err();
    assert_eq!(s.message(), "max_depth 9 is larger than the limit of 8");

    // The audit trail: /etc and /var/lib/bronze calls (allowed or not) and
    // refused paths anywhere; a reader's /var/log and /proc reads are not.
    let mut machine = node.client(&pki.auth(&["os:admin"])).await;
    let audit = audit_events(&mut machine).await;
    let has = |method: &str, role: &str, result: &str, message: &str| {
        audit.iter().any(|a| a.method == method && a.roles == [role] && a.result == result && a.message == message)
    };
    let denied = "/etc/hosts: os:reader may not read under /etc (operator or admin may)";
    assert!(has(READ, "os:reader", "permission-denied", denied), "{audit:#?}");
    assert!(has(READ, "os:operator", "ok", "/etc/hosts"), "{audit:#?}");
    assert!(has(READ, "os:admin", "ok", "/var/lib/bronze/config.yaml"), "{audit:#?}");
    assert!(has(LIST, "os:admin", "ok", "/var/lib/bronze"), "{audit:#?}");
    let denied = "/var/lib/bronze: os:reader may not read under /var/lib/bronze (operator or admin may)";
    assert!(has(LIST, "os:reader", "permission-denied", denied), "{audit:#?}");
    let secret = "/proc/1/mem: a secret (process or kernel memory); it is never readable, whatever the role";
    assert!(has(READ, "os:reader", "permission-denied", secret), "{audit:#?}");
    // Refusals of the path itself are audited under any root.
    assert!(has(READ, "os:admin", "permission-denied", &escapes("/var/log/rel-link", "/var/log")), "{audit:#?}");
    assert!(has(READ, "os:admin", "permission-denied", &outside("/root/.ssh/id_rsa")), "{audit:#?}");
    assert!(
        audit.iter().any(|a| a.method == READ && a.message.starts_with("/proc/self/fd/0: a magic link")),
        "{audit:#?}"
    );
    assert!(
        !audit.iter().any(|a| a.message.starts_with("/var/log/app.log") || a.message.contains("/status")),
        "{audit:#?}"
    );
}

async fn audit_events(c: &mut bronzectl::client::NodeClient) -> Vec<pb::AuditEvent> {
    let mut stream =
        c.machine.events(pb::EventsRequest { tail_events: -1, follow: false }).await.expect("events").into_inner();
    let mut out = Vec::new();
    while let Some(e) =
        tokio::time::timeout(Duration::from_secs(5), stream.message()).await.expect("events stall").unwrap()
    {
        out.extend(e.audit);
    }
    out
}

/// The same through the real bronzectl: bytes to a pipe, rows for ls, JSON,
/// the node's refusal as the error line and a failing exit code, -n fan-out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_and_ls_through_the_cli() {
    let pki = Pki::new();
    let node = Node::start_configured(&pki.node_config("files-cli")).await;
    plant(&node.state_dir);
    let dir = tempfile::tempdir().unwrap();
    let reader = dir.path().join("reader");
    pki.write_bronzeconfig(&reader, &[node.addr.clone(), node.addr.clone()], &["os:reader"]);
    let admin = dir.path().join("admin");
    pki.write_bronzeconfig(&admin, std::slice::from_ref(&node.addr), &["os:admin"]);

    let run = bronzectl(Some(&admin), &["read", "/var/log/app.log"]).await;
    assert_eq!((run.code, run.stdout.as_str()), (0, "hello from app\n"), "{run:?}");
    let run = bronzectl(Some(&admin), &["read", "/var/log/big.log", "--max-bytes", "10"]).await;
    assert_eq!((run.code, run.stdout.as_str()), (0, "xxxxxxxxxx"), "{run:?}");
    assert!(run.stderr.contains("/var/log/big.log: stopped after 10 bytes"), "{run:?}");
    let run = bronzectl(Some(&admin), &["read", "/var/lib/bronze/config.yaml"]).await;
    assert!(run.code == 0 && !run.stdout.contains("PRIVATE KEY"), "{run:?}");
    assert!(run.stderr.contains("private key(s) redacted by the node"), "{run:?}");

    // Two nodes (the same one twice): each file headed by its node.
    let run = bronzectl(Some(&reader), &["read", "/var/log/app.log"]).await;
    let want = format!("==> {0} <==\nhello from app\n==> {0} <==\nhello from app\n", node.addr);
    assert_eq!((run.code, run.stdout), (0, want));
    let run = bronzectl(Some(&reader), &["read", "/etc/hosts"]).await;
    assert_ne!(run.code, 0);
    let want = "permission denied: /etc/hosts: os:reader may not read under /etc (operator or admin may)";
    assert!(run.stderr.contains(want), "{run:?}");
    let run = bronzectl(Some(&admin), &["read", "/var/log/rel-link"]).await;
    assert_ne!(run.code, 0);
    assert!(run.stderr.contains("outside the allowed roots: it leads out of /var/log"), "{run:?}");

    let run = bronzectl(Some(&admin), &["ls", "/etc"]).await;
    assert_eq!(run.code, 0, "{run:?}");
    let shadow = run.stdout.lines().find(|l| l.contains("/etc/shadow")).unwrap_or_else(|| panic!("{run:?}"));
    assert!(shadow.contains("secret: not readable"), "{shadow}");
    assert!(run.stdout.lines().any(|l| l.contains("/etc/notes -> shadow")), "{run:?}");
    let run = bronzectl(Some(&admin), &["-o", "json", "ls", "-r", "/var/log", "--depth", "2"]).await;
    let reply: serde_json::Value = serde_json::from_str(run.stdout.lines().next().unwrap()).unwrap();
    let paths: Vec<&str> = reply["entries"].as_array().unwrap().iter().map(|e| e["path"].as_str().unwrap()).collect();
    assert!(paths.contains(&"/var/log/sub/deeper") && !paths.contains(&"/var/log/sub/deeper/inner.log"), "{paths:?}");
    let run = bronzectl(Some(&admin), &["-o", "json", "read", "/var/log/app.log"]).await;
    let reply: serde_json::Value = serde_json::from_str(run.stdout.lines().next().unwrap()).unwrap();
    assert_eq!((reply["text"].as_str(), reply["truncated"].as_bool()), (Some("hello from app\n"), Some(false)));
}
