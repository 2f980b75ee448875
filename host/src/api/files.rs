//! `FileService`: `read` and `ls` of files under the allow-listed roots, for
//! debugging a node without a shell. Owns the roots, the secret rules and the
//! redaction of private keys; must never serve a byte outside the roots or
//! of a secret, whatever the caller's role.
//!
//! A request path is absolute and lexical: its first components pick the
//! root (`/proc`, `/sys`, `/var/log`, `/var/lib/bronze`, `/etc`), and the rest
//! is resolved by the kernel with `openat2(RESOLVE_BENEATH |
//! RESOLVE_NO_MAGICLINKS)` from the root's directory fd, so `..`, absolute
//! symlinks and relative symlinks that climb out of the root fail (`EXDEV`),
//! and so do magic links like `/proc/self/root` or `/proc/1/fd/3` (`ELOOP`).
//! The secret rules are then checked on the path the kernel actually opened
//! (a symlink named `notes` that points at `shadow` is `shadow`). Symlinks that
//! stay inside their root (all of sysfs's) are followed by `read`, and listed
//! but never followed by `ls`.
//!
//! Where the roots are depends on the mode: PID 1 serves the real
//! directories (the state dir is `/var/lib/bronze`); a process serves the real
//! `/proc` and `/sys`, its state dir as `/var/lib/bronze`, and its own
//! `<state dir>/root/etc` and `<state dir>/root/var/log` (where a process node
//! writes its resolv.conf and hosts) as `/etc` and `/var/log`, never the
//! host's.
//!
//! Secrets are refused by name (keys, shadow files, process and kernel
//! memory, process environments, debugfs) and by content: every line that
//! holds `PRIVATE KEY` is replaced, and so is a PEM block from its BEGIN line
//! to its END line, so the stored config reads with its CA key redacted.
//!
//! Every role may read `/proc`, `/sys` and `/var/log` (the same facts the
//! reader commands already show). `/var/lib/bronze` and `/etc` need operator
//! or admin: they hold the node's config, leases and plugin state; those
//! calls, and every refusal of a secret, are audited here (the authorization
//! table lets every role in and audits nothing for these two methods, since
//! most reads are of `/proc`).

use super::audit::AuditLog;
use super::authz::{Caller, Role};
use super::context::ApiContext;
use crate::lifecycle::Mode;
use crate::sysinfo::SystemPaths;
use bronze_api::v1 as pb;
use bronze_api::v1::file_service_server::{FileService, FileServiceServer};
use nix::errno::Errno;
use nix::fcntl::{OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{FileStat, Mode as FileMode, SFlag};
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

/// Bytes per streamed chunk.
pub const CHUNK: usize = 64 * 1024;
/// The most `read` sends, and its default.
pub const MAX_READ: u64 = 16 * 1024 * 1024;
/// The most entries one `ls` answers.
pub const MAX_ENTRIES: usize = 10_000;
/// The most levels `ls -r` descends below its path, and its default.
pub const MAX_DEPTH: u32 = 8;
/// Longest request path.
pub const MAX_PATH: usize = 4096;
/// A read that takes longer (a slow or stuck file) is ended with an error.
const READ_DEADLINE: Duration = Duration::from_secs(60);
/// The marker of a PEM private key (PKCS#8, RSA, EC, OpenSSH, PGP).
const KEY_MARK: &[u8] = b"PRIVATE KEY";
/// What a redacted line becomes.
const REDACTED: &[u8] = b"[private key redacted by bronzed]";
/// Bytes kept when a long line is cut: more than `-----BEGIN OPENSSH PRIVATE KEY`.
const TAIL: usize = 64;

/// The allow-listed roots, as callers name them.
pub const ROOT_NAMES: [&str; 5] = ["/proc", "/sys", "/var/log", "/var/lib/bronze", "/etc"];

/// One allow-listed root.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RootKind {
    Proc,
    Sys,
    VarLog,
    State,
    Etc,
}

impl RootKind {
    const ALL: [RootKind; 5] = [RootKind::Proc, RootKind::Sys, RootKind::VarLog, RootKind::State, RootKind::Etc];

    /// The path callers use.
    pub fn name(self) -> &'static str {
        match self {
            RootKind::Proc => ROOT_NAMES[0],
            RootKind::Sys => ROOT_NAMES[1],
            RootKind::VarLog => ROOT_NAMES[2],
            RootKind::State => ROOT_NAMES[3],
            RootKind::Etc => ROOT_NAMES[4],
        }
    }

    /// Needs operator or admin (and is audited).
    pub fn sensitive(self) -> bool {
        matches!(self, RootKind::State | RootKind::Etc)
    }
}

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum FileError {
    #[error("{path}: expected an absolute path of at most {MAX_PATH} bytes without NUL")]
    InvalidPath { path: String },
    #[error("{path}: outside the allowed roots ({})", ROOT_NAMES.join(", "))]
    Outside { path: String },
    #[error("{path}: outside the allowed roots: it leads out of {root} (through `..` or a symlink)")]
    Escapes { path: String, root: &'static str },
    #[error("{path}: a magic link (like /proc/*/root or /proc/*/fd/*) or a symlink loop; these are not followed")]
    MagicLink { path: String },
    #[error("{path}: a secret ({reason}); it is never readable, whatever the role")]
    Secret { path: String, reason: &'static str },
    #[error("{path}: {role} may not read under {root} (operator or admin may)")]
    Role { path: String, role: String, root: &'static str },
    #[error("{path}: not found")]
    NotFound { path: String },
    #[error("{path}: not a regular file ({kind}); use ls for directories")]
    NotAFile { path: String, kind: &'static str },
    #[error("max_bytes {0} is larger than the limit of {MAX_READ} bytes")]
    TooLarge(u64),
    #[error("max_depth {0} is larger than the limit of {MAX_DEPTH}")]
    TooDeep(u32),
    #[error("{path}: permission denied by the kernel")]
    Denied { path: String },
    #[error("{path}: reading took longer than {}s", READ_DEADLINE.as_secs())]
    Slow { path: String },
    #[error("{path}: {error}")]
    Io { path: String, error: String },
}

impl FileError {
    /// A refusal of the path itself (outside the roots, out of one, a magic
    /// link, a secret): audited whatever the root, as it looks like probing.
    pub fn is_probe(&self) -> bool {
        matches!(
            self,
            FileError::Outside { .. }
                | FileError::Escapes { .. }
                | FileError::MagicLink { .. }
                | FileError::Secret { .. }
        )
    }
}

impl From<FileError> for Status {
    fn from(e: FileError) -> Status {
        let message = e.to_string();
        match e {
            FileError::InvalidPath { .. } | FileError::TooLarge(_) | FileError::TooDeep(_) => {
                Status::invalid_argument(message)
            }
            FileError::Outside { .. }
            | FileError::Escapes { .. }
            | FileError::MagicLink { .. }
            | FileError::Secret { .. }
            | FileError::Role { .. }
            | FileError::Denied { .. } => Status::permission_denied(message),
            FileError::NotFound { .. } => Status::not_found(message),
            FileError::NotAFile { .. } => Status::failed_precondition(message),
            FileError::Slow { .. } => Status::deadline_exceeded(message),
            FileError::Io { .. } => Status::internal(message),
        }
    }
}

/// Where each root is on this node.
#[derive(Debug, Clone)]
pub struct Roots {
    dirs: Vec<(RootKind, PathBuf)>,
}

impl Roots {
    /// The roots of a node in `mode` with these system paths and state dir
    /// (see the module docs).
    pub fn new(mode: Mode, paths: &SystemPaths, state_dir: &Path) -> Self {
        let (var_log, etc) = match mode {
            Mode::Pid1 => (PathBuf::from("/var/log"), PathBuf::from("/etc")),
            Mode::Process => (state_dir.join("root/var/log"), state_dir.join("root/etc")),
        };
        let dirs = vec![
            (RootKind::Proc, paths.proc.clone()),
            (RootKind::Sys, paths.sys.clone()),
            (RootKind::VarLog, var_log),
            (RootKind::State, state_dir.to_path_buf()),
            (RootKind::Etc, etc),
        ];
        Self { dirs }
    }

    /// The directory serving `kind`.
    pub fn dir(&self, kind: RootKind) -> &Path {
        self.dirs.iter().find(|(k, _)| *k == kind).map(|(_, d)| d.as_path()).unwrap_or(Path::new("/nonexistent"))
    }

    /// Splits a request path into its root and the rest, lexically: no
    /// component is interpreted here (`..` is left for the kernel to refuse
    /// beneath the root).
    pub fn locate(&self, path: &str) -> Result<Located, FileError> {
        let shown = shown(path);
        if !path.starts_with('/') || path.len() > MAX_PATH || path.contains('\0') {
            return Err(FileError::InvalidPath { path: shown });
        }
        let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty() && *p != ".").collect();
        for kind in RootKind::ALL {
            let root: Vec<&str> = kind.name().split('/').filter(|p| !p.is_empty()).collect();
            if parts.len() >= root.len() && parts[..root.len()] == root[..] {
                let rest: Vec<String> = parts[root.len()..].iter().map(|p| p.to_string()).collect();
                let display = if rest.is_empty() {
                    kind.name().to_string()
                } else {
                    format!("{}/{}", kind.name(), rest.join("/"))
                };
                return Ok(Located { kind, dir: self.dir(kind).to_path_buf(), rest, shown: shown_path(&display) });
            }
        }
        Err(FileError::Outside { path: shown })
    }
}

/// A request path split into its root and the rest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located {
    pub kind: RootKind,
    /// The root's directory on this node.
    pub dir: PathBuf,
    /// Components below the root, as given (may hold `..`).
    pub rest: Vec<String>,
    /// The path for messages, escaped.
    pub shown: String,
}

impl Located {
    fn relative(&self) -> PathBuf {
        if self.rest.is_empty() { PathBuf::from(".") } else { self.rest.iter().collect() }
    }
}

/// A caller-supplied path for messages: control characters escaped.
fn shown(path: &str) -> String {
    let cut: String = path.chars().take(512).collect();
    shown_path(&cut)
}

fn shown_path(path: &str) -> String {
    path.chars().flat_map(|c| if c.is_control() { c.escape_default().collect::<Vec<_>>() } else { vec![c] }).collect()
}

/// Why the file at `parts` (components below `kind`'s root, after
/// resolution) is a secret, if it is one.
pub fn secret_reason(kind: RootKind, parts: &[&str]) -> Option<&'static str> {
    let last = parts.last().copied().unwrap_or("");
    if parts.contains(&"private") {
        return Some("under a directory named private");
    }
    if last.ends_with(".key") || (last.ends_with("_key") && !last.ends_with(".pub")) {
        return Some("a private key file");
    }
    if matches!(last, "id_rsa" | "id_dsa" | "id_ecdsa" | "id_ed25519") {
        return Some("an SSH private key");
    }
    if last.ends_with(".p12") || last.ends_with(".pfx") || last.ends_with(".jks") {
        return Some("a key store");
    }
    if matches!(last, "shadow" | "shadow-" | "gshadow" | "gshadow-") {
        return Some("a password hash file");
    }
    match kind {
        RootKind::Proc => match last {
            "mem" | "kcore" | "kmem" | "pagemap" | "kpageflags" | "kpagecount" | "kpagecgroup" => {
                Some("process or kernel memory")
            }
            "environ" => Some("a process environment"),
            "kmsg" => Some("the kernel log's consuming reader; use dmesg"),
            _ => None,
        },
        RootKind::Sys => match parts {
            ["kernel", "debug", ..] | ["kernel", "tracing", ..] => Some("debugfs or tracefs"),
            ["firmware", "efi", "efivars", ..] => Some("EFI variables"),
            _ => None,
        },
        _ => None,
    }
}

/// Replaces private keys in a byte stream, line by line: a line holding
/// `PRIVATE KEY` keeps what comes before its PEM armour and loses the rest,
/// and the lines after a BEGIN up to its END are dropped. Lines longer than
/// [`CHUNK`] are cut, keeping enough of the tail that no marker is missed.
#[derive(Debug, Default)]
pub struct Redactor {
    pending: Vec<u8>,
    in_key: bool,
    /// Keys (or stray marker lines) redacted so far.
    pub redacted: u32,
}

impl Redactor {
    /// Feeds `input`; complete output goes to `out`.
    pub fn push(&mut self, input: &[u8], out: &mut Vec<u8>) {
        self.pending.extend_from_slice(input);
        let mut start = 0;
        while let Some(nl) = self.pending[start..].iter().position(|b| *b == b'\n') {
            let end = start + nl + 1;
            let line = self.pending[start..end].to_vec();
            self.line(&line, out);
            start = end;
        }
        self.pending.drain(..start);
        if self.pending.len() > CHUNK {
            if find(&self.pending, KEY_MARK).is_some() {
                let line = std::mem::take(&mut self.pending);
                self.line(&line, out);
            } else {
                // The tail kept holds a marker's armour and the marker.
                let cut = self.pending.len() - TAIL;
                if !self.in_key {
                    out.extend_from_slice(&self.pending[..cut]);
                }
                self.pending.drain(..cut);
            }
        }
    }

    /// Flushes the last line.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        let line = std::mem::take(&mut self.pending);
        if !line.is_empty() {
            self.line(&line, out);
        }
    }

    fn line(&mut self, line: &[u8], out: &mut Vec<u8>) {
        let marker = find(line, KEY_MARK);
        if self.in_key {
            // The body goes, up to and including the END line; a line that
            // cannot be part of a PEM body ends the block (a BEGIN in a
            // comment must not swallow the rest of the file).
            if marker.is_some() {
                self.in_key = false;
                return;
            }
            if pem_body(line) {
                return;
            }
            self.in_key = false;
        }
        let Some(at) = marker else {
            out.extend_from_slice(line);
            return;
        };
        self.redacted += 1;
        let before = &line[..at];
        // Keep `key: ` or the indentation, not the armour.
        let keep = rfind(before, b"-----").unwrap_or(at);
        out.extend_from_slice(&line[..keep]);
        out.extend_from_slice(REDACTED);
        if line.ends_with(b"\n") {
            out.push(b'\n');
        }
        // Unless this is an END line, or the key ends on this line, what
        // follows is key material up to the next marker (the END line).
        let after = &line[at + KEY_MARK.len()..];
        if find(before, b"END").is_none() && find(after, KEY_MARK).is_none() {
            self.in_key = true;
        }
    }
}

/// A line that may be inside a PEM block: base64 (after indentation and
/// comment marks), a PEM header, or blank.
fn pem_body(line: &[u8]) -> bool {
    let t = line.trim_ascii();
    let t = t.iter().position(|b| *b != b'#').map_or(&t[t.len()..], |i| &t[i..]).trim_ascii();
    t.is_empty()
        || t.starts_with(b"Proc-Type:")
        || t.starts_with(b"DEK-Info:")
        || t.iter().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'='))
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn rfind(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).rposition(|w| w == needle)
}

/// An open file or directory below a root, with the path the kernel found.
struct Opened {
    fd: OwnedFd,
    stat: FileStat,
    /// Components below the root's real directory, after resolution.
    resolved: Vec<String>,
}

/// Opens `at` beneath its root (see the module docs) and checks the secret
/// rules on both the requested and the resolved path. The fd is `O_PATH`:
/// nothing is opened for reading (no FIFO, device or tty side effect) before
/// its type is known.
fn open_located(at: &Located) -> Result<Opened, FileError> {
    let path = || at.shown.clone();
    let root_real = std::fs::canonicalize(&at.dir).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => FileError::NotFound { path: path() },
        _ => FileError::Io { path: path(), error: format!("root {}: {e}", at.kind.name()) },
    })?;
    let requested: Vec<&str> = at.rest.iter().map(String::as_str).collect();
    if let Some(reason) = secret_reason(at.kind, &requested) {
        return Err(FileError::Secret { path: path(), reason });
    }
    let base = nix::fcntl::open(&root_real, OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, FileMode::empty())
        .map_err(|e| FileError::Io {
            path: path(),
            error: format!("root {}: {}", at.kind.name(), io::Error::from(e)),
        })?;
    let how = OpenHow::new()
        .flags(OFlag::O_PATH | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    let fd = nix::fcntl::openat2(base.as_fd(), &at.relative(), how).map_err(|e| match e {
        Errno::EXDEV => FileError::Escapes { path: path(), root: at.kind.name() },
        Errno::ELOOP => FileError::MagicLink { path: path() },
        Errno::ENOENT | Errno::ENOTDIR => FileError::NotFound { path: path() },
        Errno::EACCES | Errno::EPERM => FileError::Denied { path: path() },
        Errno::ENOSYS => FileError::Io {
            path: path(),
            error: "this kernel has no openat2 (Linux 5.6 or later is needed to read files safely)".into(),
        },
        e => FileError::Io { path: path(), error: io::Error::from(e).to_string() },
    })?;
    let real = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))
        .map_err(|e| FileError::Io { path: path(), error: format!("cannot tell where it resolved: {e}") })?;
    let Ok(below) = real.strip_prefix(&root_real) else {
        // RESOLVE_BENEATH makes this unreachable; refuse rather than trust it.
        return Err(FileError::Escapes { path: path(), root: at.kind.name() });
    };
    let resolved: Vec<String> = below.components().map(|c| c.as_os_str().to_string_lossy().into_owned()).collect();
    let parts: Vec<&str> = resolved.iter().map(String::as_str).collect();
    if let Some(reason) = secret_reason(at.kind, &parts) {
        return Err(FileError::Secret { path: path(), reason });
    }
    let stat = nix::sys::stat::fstat(fd.as_fd()).map_err(|e| FileError::Io { path: path(), error: e.to_string() })?;
    Ok(Opened { fd, stat, resolved })
}

fn kind_of(mode: u32) -> &'static str {
    match SFlag::from_bits_truncate(mode) & SFlag::S_IFMT {
        SFlag::S_IFREG => "file",
        SFlag::S_IFDIR => "dir",
        SFlag::S_IFLNK => "symlink",
        SFlag::S_IFSOCK => "socket",
        SFlag::S_IFIFO => "fifo",
        SFlag::S_IFBLK => "block",
        SFlag::S_IFCHR => "char",
        _ => "unknown",
    }
}

/// Reads `at` (at most `max` bytes), redacted, into `send` chunk by chunk;
/// stops when `send` returns false (the client went away).
pub fn read_file(at: &Located, max: u64, mut send: impl FnMut(pb::FileChunk) -> bool) -> Result<(), FileError> {
    let opened = open_located(at)?;
    let kind = kind_of(opened.stat.st_mode);
    if kind != "file" {
        return Err(FileError::NotAFile { path: at.shown.clone(), kind });
    }
    // A regular file: open that same inode for reading through the fd's own link.
    let flags = OFlag::O_RDONLY | OFlag::O_CLOEXEC | OFlag::O_NOCTTY | OFlag::O_NONBLOCK;
    let fd = nix::fcntl::open(format!("/proc/self/fd/{}", opened.fd.as_raw_fd()).as_str(), flags, FileMode::empty())
        .map_err(|e| match e {
            Errno::EACCES | Errno::EPERM => FileError::Denied { path: at.shown.clone() },
            e => FileError::Io { path: at.shown.clone(), error: io::Error::from(e).to_string() },
        })?;
    let mut file = File::from(fd);
    let started = Instant::now();
    let mut redactor = Redactor::default();
    let mut buf = vec![0u8; CHUNK];
    let mut out = Vec::with_capacity(2 * CHUNK);
    let mut total = 0u64;
    let mut truncated = false;
    loop {
        if started.elapsed() > READ_DEADLINE {
            return Err(FileError::Slow { path: at.shown.clone() });
        }
        let want = (max - total).min(CHUNK as u64) as usize;
        if want == 0 {
            // At the limit: one more byte tells whether the file goes on.
            let mut probe = [0u8; 1];
            truncated = read_some(&mut file, &mut probe, at)? > 0;
            break;
        }
        let n = read_some(&mut file, &mut buf[..want], at)?;
        if n == 0 {
            break;
        }
        total += n as u64;
        redactor.push(&buf[..n], &mut out);
        while out.len() >= CHUNK {
            let rest = out.split_off(CHUNK);
            let data = std::mem::replace(&mut out, rest);
            if !send(pb::FileChunk { data, truncated: false, redacted_keys: 0 }) {
                return Ok(());
            }
        }
    }
    redactor.finish(&mut out);
    while out.len() > CHUNK {
        let rest = out.split_off(CHUNK);
        let data = std::mem::replace(&mut out, rest);
        if !send(pb::FileChunk { data, truncated: false, redacted_keys: 0 }) {
            return Ok(());
        }
    }
    send(pb::FileChunk { data: out, truncated, redacted_keys: redactor.redacted });
    Ok(())
}

fn read_some(file: &mut File, buf: &mut [u8], at: &Located) -> Result<usize, FileError> {
    loop {
        match file.read(buf) {
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                return Err(FileError::Io { path: at.shown.clone(), error: "would block (not a plain file)".into() });
            }
            Err(e) => return Err(FileError::Io { path: at.shown.clone(), error: e.to_string() }),
        }
    }
}

/// Lists `at` (its entries, or itself when it is not a directory), `depth`
/// levels deep (1 = its entries only), at most [`MAX_ENTRIES`] entries.
pub fn list(at: &Located, depth: u32) -> Result<pb::FileListResponse, FileError> {
    let opened = open_located(at)?;
    let parts: Vec<&str> = opened.resolved.iter().map(String::as_str).collect();
    let mut reply = pb::FileListResponse::default();
    if kind_of(opened.stat.st_mode) != "dir" {
        let mut entry = entry_of(&at.shown, &opened.stat, String::new());
        entry.secret = secret_reason(at.kind, &parts).is_some();
        reply.entries.push(entry);
        return Ok(reply);
    }
    let resolved: Vec<String> = opened.resolved.clone();
    walk(at.kind, opened.fd, &at.shown, &resolved, depth, &mut reply);
    Ok(reply)
}

/// Depth-first, entries sorted by name; symlinks are not followed.
fn walk(kind: RootKind, dir: OwnedFd, shown: &str, parts: &[String], depth: u32, reply: &mut pb::FileListResponse) {
    let mut names = match dir_names(dir.as_fd()) {
        Ok(names) => names,
        Err(e) => {
            if let Some(last) = reply.entries.last_mut().filter(|e| e.path == shown) {
                last.error = e;
            } else {
                reply.entries.push(pb::FileEntry { path: shown.into(), error: e, ..Default::default() });
            }
            return;
        }
    };
    names.sort();
    for name in names {
        if reply.entries.len() >= MAX_ENTRIES {
            reply.truncated = true;
            return;
        }
        let path = if shown.ends_with('/') { format!("{shown}{name}") } else { format!("{shown}/{name}") };
        let path = shown_path(&path);
        let stat = match nix::sys::stat::fstatat(dir.as_fd(), name.as_str(), nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(stat) => stat,
            // Gone meanwhile (a process exited): skip it.
            Err(Errno::ENOENT) => continue,
            Err(e) => {
                reply.entries.push(pb::FileEntry { path, error: e.to_string(), ..Default::default() });
                continue;
            }
        };
        let kind_name = kind_of(stat.st_mode);
        let target = if kind_name == "symlink" {
            nix::fcntl::readlinkat(dir.as_fd(), name.as_str())
                .map(|t| shown_path(&t.to_string_lossy()))
                .unwrap_or_default()
        } else {
            String::new()
        };
        let mut child: Vec<String> = parts.to_vec();
        child.push(name.clone());
        let child_parts: Vec<&str> = child.iter().map(String::as_str).collect();
        let mut entry = entry_of(&path, &stat, target);
        entry.secret = secret_reason(kind, &child_parts).is_some();
        reply.entries.push(entry);
        if kind_name == "dir" && depth > 1 {
            let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
            match nix::fcntl::openat(dir.as_fd(), name.as_str(), flags, FileMode::empty()) {
                Ok(sub) => walk(kind, sub, &path, &child, depth - 1, reply),
                Err(e) => {
                    if let Some(last) = reply.entries.last_mut() {
                        last.error = io::Error::from(e).to_string();
                    }
                }
            }
        }
    }
}

/// A directory's entry names. Read through the fd's `/proc/self/fd` link,
/// which names the directory already opened beneath the root.
fn dir_names(dir: BorrowedFd<'_>) -> Result<Vec<String>, String> {
    let path = format!("/proc/self/fd/{}", dir.as_raw_fd());
    let read = std::fs::read_dir(&path).map_err(|e| e.to_string())?;
    let mut names = Vec::new();
    for entry in read {
        let entry = entry.map_err(|e| e.to_string())?;
        // Names that are not UTF-8 cannot be asked for by path anyway.
        if let Ok(name) = entry.file_name().into_string() {
            names.push(name);
        }
        if names.len() > MAX_ENTRIES {
            break;
        }
    }
    Ok(names)
}

fn entry_of(path: &str, stat: &FileStat, link_target: String) -> pb::FileEntry {
    let modified = time::OffsetDateTime::from_unix_timestamp(stat.st_mtime)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_default();
    pb::FileEntry {
        path: path.to_string(),
        r#type: kind_of(stat.st_mode).to_string(),
        size: u64::try_from(stat.st_size).unwrap_or(0),
        mode: stat.st_mode & 0o7777,
        uid: stat.st_uid,
        gid: stat.st_gid,
        modified,
        link_target,
        secret: false,
        error: String::new(),
    }
}

pub struct FileApi {
    pub roots: Roots,
    pub audit: Arc<AuditLog>,
}

impl FileApi {
    pub fn new(roots: Roots, audit: Arc<AuditLog>) -> Self {
        Self { roots, audit }
    }

    /// Locates `path` and checks the caller's role for its root.
    fn admit(&self, caller: &Caller, method: &str, path: &str) -> Result<Located, Status> {
        let at = match self.roots.locate(path) {
            Ok(at) => at,
            Err(e) => {
                if e.is_probe() {
                    self.audit.record(caller, method, &Status::from(e.clone()));
                }
                return Err(e.into());
            }
        };
        if at.kind.sensitive() && !(caller.has(Role::Operator) || caller.has(Role::Admin)) {
            let e = FileError::Role { path: at.shown.clone(), role: caller.role_label(), root: at.kind.name() };
            self.audit_outcome(caller, method, &at, Err(&e));
            return Err(e.into());
        }
        Ok(at)
    }

    /// Audits every call under a sensitive root, and every refusal that
    /// looks like probing (a secret, an escape, a magic link) under any root.
    fn audit_outcome(&self, caller: &Caller, method: &str, at: &Located, result: Result<(), &FileError>) {
        match result {
            Ok(()) if at.kind.sensitive() => self.audit.record(caller, method, &Status::ok(at.shown.clone())),
            Err(e) if at.kind.sensitive() || e.is_probe() => {
                self.audit.record(caller, method, &Status::from(e.clone()))
            }
            _ => {}
        }
    }
}

/// The service for `serve`, with the roots of this node's mode.
pub fn server(node: &Arc<ApiContext>) -> FileServiceServer<FileApi> {
    let roots = Roots::new(node.mode, &node.paths, node.config.state_dir());
    FileServiceServer::new(FileApi::new(roots, node.audit.clone()))
}

const READ_METHOD: &str = "/bronze.v1.FileService/Read";
const LIST_METHOD: &str = "/bronze.v1.FileService/List";

fn caller<T>(req: &Request<T>) -> Result<Caller, Status> {
    req.extensions().get::<Caller>().cloned().ok_or_else(|| Status::internal("request bypassed authorization"))
}

type ReadStream = Pin<Box<dyn Stream<Item = Result<pb::FileChunk, Status>> + Send>>;

#[tonic::async_trait]
impl FileService for FileApi {
    type ReadStream = ReadStream;

    async fn read(&self, req: Request<pb::FileReadRequest>) -> Result<Response<ReadStream>, Status> {
        let caller = caller(&req)?;
        let req = req.into_inner();
        let at = self.admit(&caller, READ_METHOD, &req.path)?;
        let max = match req.max_bytes {
            0 => MAX_READ,
            n if n > MAX_READ => {
                let e = FileError::TooLarge(n);
                self.audit_outcome(&caller, READ_METHOD, &at, Err(&e));
                return Err(e.into());
            }
            n => n,
        };
        // The first chunk (or the refusal) is awaited before the stream is
        // handed out, so refusals are plain statuses and audited as such.
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<pb::FileChunk, FileError>>(4);
        let reader_at = at.clone();
        let worker = tokio::task::spawn_blocking(move || {
            let result = read_file(&reader_at, max, |chunk| tx.blocking_send(Ok(chunk)).is_ok());
            if let Err(e) = result {
                let _ = tx.blocking_send(Err(e));
            }
        });
        let first = match rx.recv().await {
            Some(Ok(chunk)) => chunk,
            Some(Err(e)) => {
                self.audit_outcome(&caller, READ_METHOD, &at, Err(&e));
                return Err(e.into());
            }
            None => {
                let why = match worker.await {
                    Err(e) => format!("the reader failed: {e}"),
                    Ok(()) => "the reader stopped without an answer".into(),
                };
                return Err(Status::internal(format!("{}: {why}", at.shown)));
            }
        };
        self.audit_outcome(&caller, READ_METHOD, &at, Ok(()));
        let rest = tokio_stream::StreamExt::map(ReceiverStream::new(rx), |item| item.map_err(Status::from));
        let stream = tokio_stream::StreamExt::chain(tokio_stream::once(Ok(first)), rest);
        Ok(Response::new(Box::pin(stream)))
    }

    async fn list(&self, req: Request<pb::FileListRequest>) -> Result<Response<pb::FileListResponse>, Status> {
        let caller = caller(&req)?;
        let req = req.into_inner();
        let at = self.admit(&caller, LIST_METHOD, &req.path)?;
        let depth = match (req.recursive, req.max_depth) {
            (false, _) => 1,
            (true, 0) => MAX_DEPTH,
            (true, n) if n > MAX_DEPTH => {
                let e = FileError::TooDeep(n);
                self.audit_outcome(&caller, LIST_METHOD, &at, Err(&e));
                return Err(e.into());
            }
            (true, n) => n,
        };
        let listed = at.clone();
        let result = tokio::task::spawn_blocking(move || list(&listed, depth))
            .await
            .map_err(|e| Status::internal(format!("{}: the lister failed: {e}", at.shown)))?;
        self.audit_outcome(&caller, LIST_METHOD, &at, result.as_ref().map(|_| ()));
        Ok(Response::new(result?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roots(dir: &Path) -> Roots {
        let paths = SystemPaths { proc: dir.join("proc"), sys: dir.join("sys"), ..SystemPaths::default() };
        Roots::new(Mode::Process, &paths, &dir.join("state"))
    }

    #[test]
    fn paths_pick_their_root_lexically() {
        let r = roots(Path::new("/t"));
        let at = r.locate("/var/lib/bronze//./config.yaml").unwrap();
        assert_eq!(at.kind, RootKind::State);
        assert_eq!(at.dir, Path::new("/t/state"));
        assert_eq!(at.rest, ["config.yaml"]);
        assert_eq!(at.shown, "/var/lib/bronze/config.yaml");
        assert_eq!(r.locate("/etc").unwrap().dir, Path::new("/t/state/root/etc"));
        assert_eq!(r.locate("/var/log/../lib").unwrap().rest, ["..", "lib"]);
        for outside in ["/", "/var", "/var/../etc/shadow", "/etcetera", "/dev/mem", "/var/lib/bronzed"] {
            assert_eq!(
                r.locate(outside).unwrap_err().to_string(),
                format!("{outside}: outside the allowed roots (/proc, /sys, /var/log, /var/lib/bronze, /etc)")
            );
        }
        assert!(matches!(r.locate("etc/hosts"), Err(FileError::InvalidPath { .. })));
        assert!(matches!(r.locate("/etc/a\0b"), Err(FileError::InvalidPath { .. })));
        assert_eq!(r.locate("/etc/\x1b[2J").unwrap().shown, "/etc/\\u{1b}[2J");
    }

    #[test]
    fn secrets_by_name() {
        use RootKind::*;
        for (kind, path) in [
            (State, "maintenance.key"),
            (Etc, "shadow"),
            (Etc, "ssh/ssh_host_ed25519_key"),
            (Etc, "ssl/private/x.pem"),
            (Proc, "1/mem"),
            (Proc, "kcore"),
            (Proc, "self/environ"),
            (Proc, "kmsg"),
            (Sys, "kernel/debug/tracing/trace_pipe"),
        ] {
            let parts: Vec<&str> = path.split('/').collect();
            assert!(secret_reason(kind, &parts).is_some(), "{path}");
        }
        for (kind, path) in [(State, "config.yaml"), (Etc, "ssh/ssh_host_ed25519_key.pub"), (Proc, "1/status")] {
            let parts: Vec<&str> = path.split('/').collect();
            assert_eq!(secret_reason(kind, &parts), None, "{path}");
        }
    }

    fn redact(input: &[u8], split: usize) -> (Vec<u8>, u32) {
        let mut r = Redactor::default();
        let mut out = Vec::new();
        for part in input.chunks(split.max(1)) {
            r.push(part, &mut out);
        }
        r.finish(&mut out);
        (out, r.redacted)
    }

    #[test]
    fn private_keys_are_redacted_whatever_the_chunking() {
        let yaml = "ca:\n  crt: |\n    -----BEGIN CERTIFICATE-----\n    MIIB\n    -----END CERTIFICATE-----\n  key: |\n    -----BEGIN PRIVATE KEY-----\n    MIIEsecret\n    c2VjcmV0\n    -----END PRIVATE KEY-----\nhostname: a\n";
        let want = "ca:\n  crt: |\n    -----BEGIN CERTIFICATE-----\n    MIIB\n    -----END CERTIFICATE-----\n  key: |\n    [private key redacted by bronzed]\nhostname: a\n";
        for split in [1, 2, 3, 7, 64, 1 << 20] {
            let (out, n) = redact(yaml.as_bytes(), split);
            assert_eq!(String::from_utf8(out).unwrap(), want, "split {split}");
            assert_eq!(n, 1);
        }
        // One line (JSON-style escapes) and a second key.
        let json = "{\"key\":\"-----BEGIN EC PRIVATE KEY-----\\nMHcsecret\\n-----END EC PRIVATE KEY-----\\n\"}\nx\n-----BEGIN OPENSSH PRIVATE KEY-----\nb3Blbn\n-----END OPENSSH PRIVATE KEY-----\ny";
        let (out, n) = redact(json.as_bytes(), 5);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "{\"key\":\"[private key redacted by bronzed]\nx\n[private key redacted by bronzed]\ny"
        );
        assert_eq!(n, 2);
    }

    #[test]
    fn a_begin_without_its_end_stops_at_the_first_line_that_is_no_pem_body() {
        let text = "# key: |\n#   -----BEGIN PRIVATE KEY-----\ncertSANs: [\"127.0.0.1\"]\n\ntime:\n  disabled: false\n";
        let (out, n) = redact(text.as_bytes(), 3);
        let want =
            "# key: |\n#   [private key redacted by bronzed]\ncertSANs: [\"127.0.0.1\"]\n\ntime:\n  disabled: false\n";
        assert_eq!(String::from_utf8(out).unwrap(), want);
        assert_eq!(n, 1);
        // Encrypted PEM headers and a blank line stay inside the block.
        let encrypted = "-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-128-CBC,00\n\nMIIsecret==\n-----END RSA PRIVATE KEY-----\nnext: 1\n";
        let (out, _) = redact(encrypted.as_bytes(), 4);
        assert_eq!(String::from_utf8(out).unwrap(), "[private key redacted by bronzed]\nnext: 1\n");
    }

    #[test]
    fn a_key_inside_a_huge_line_is_found() {
        let mut line = vec![b'a'; 3 * CHUNK];
        line.extend_from_slice(b"-----BEGIN PRIVATE KEY-----secret");
        line.extend(vec![b'b'; 2 * CHUNK]);
        for split in [1000, CHUNK, CHUNK + 3] {
            let (out, n) = redact(&line, split);
            assert_eq!(n, 1);
            assert!(find(&out, b"secret").is_none() && find(&out, KEY_MARK).is_none());
        }
        let plain = vec![b'z'; 5 * CHUNK + 17];
        assert_eq!(redact(&plain, 4096).0, plain);
    }
}
