//! `SupportService`: the support bundle, one `.tar.gz` with what a bug
//! report needs, built in memory (bounded) and streamed in chunks.
//!
//! What it holds: `version.json`, `machine-status.json`, every resource
//! type under `resources/` (sensitive types as their ids only), the last
//! lines of every service's and plugin's log under `logs/`, `dmesg.txt`,
//! `processes.txt`, `netstat.txt`, `mounts.json`, `disks.json`, `config.yaml` (admin callers only, with
//! every key, token, password and secret replaced) and `README.txt` (what is
//! in it and what was left out). Whatever the caller's role, no member
//! carries a private key: every member passes [`Redactor`] last, which
//! removes PEM private key blocks, any line naming a private key, and the
//! base64 body of every private key found in the live config.

use super::authz::{Caller, Role};
use crate::api::context::ApiContext;
use crate::services::status::ServiceStatusSpec;
use crate::state::types::ALL;
use bronze_api::v1 as pb;
use bronze_api::v1::support_service_server::SupportService;
use serde_json::{Value, json};
use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

/// Log lines per service or plugin when the request does not say.
pub const DEFAULT_LOG_LINES: u32 = 1000;
/// At most this many log lines per service or plugin.
pub const MAX_LOG_LINES: u32 = 10_000;
/// Kernel log records kept (the last ones).
const MAX_DMESG_RECORDS: usize = 20_000;
/// Largest member (bigger ones are cut, and the README says so).
pub const MAX_MEMBER_BYTES: usize = 4 << 20;
/// Largest bundle before compression: members past it are left out.
pub const MAX_BUNDLE_BYTES: usize = 32 << 20;
/// Size of a streamed chunk.
const CHUNK_BYTES: usize = 64 * 1024;
/// What replaces a secret.
pub const REDACTED: &str = "[redacted]";
/// Mapping keys whose values a config in the bundle never shows.
const SECRET_KEYS: &[&str] = &["key", "privatekey", "token", "password", "secret", "secrets", "bootstraptoken"];

pub struct SupportApi {
    pub node: Arc<ApiContext>,
}

/// The service, for [`super::serve`].
pub fn server(node: Arc<ApiContext>) -> bronze_api::v1::support_service_server::SupportServiceServer<SupportApi> {
    bronze_api::v1::support_service_server::SupportServiceServer::new(SupportApi { node })
}

/// Removes private keys from text: PEM private key blocks, any other line
/// naming a private key, and the known key bodies (`needles`).
#[derive(Debug, Default, Clone)]
pub struct Redactor {
    needles: Vec<String>,
}

impl Redactor {
    /// Learns the base64 body lines of every PEM private key in `text` (the
    /// live config), so the same key is recognised without its armour.
    pub fn learn(&mut self, text: &str) {
        let mut inside = false;
        for line in text.lines() {
            let t = line.trim().trim_matches(|c| c == '"' || c == '\'' || c == '|');
            if t.starts_with("-----BEGIN") && t.contains("PRIVATE KEY") {
                inside = true;
            } else if t.starts_with("-----END") {
                inside = false;
            } else if inside && t.len() >= 16 && !self.needles.iter().any(|n| n == t) {
                self.needles.push(t.to_string());
            }
        }
    }

    pub fn redact(&self, text: &str) -> String {
        let mut out = String::with_capacity(text.len());
        let mut inside = false;
        for line in text.split_inclusive('\n') {
            let newline = if line.ends_with('\n') { "\n" } else { "" };
            if inside {
                // The block goes on while lines look like its body (base64,
                // or a legacy header such as `Proc-Type: 4,ENCRYPTED`); its
                // END line closes it; anything else ends it unclosed.
                let t = line.trim().trim_matches(|c| c == '"' || c == '\'' || c == '|');
                if t.contains("-----END") {
                    inside = false;
                    continue;
                }
                let body = t.contains(':')
                    || t.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'=' | b' ' | b'\t'));
                if body {
                    continue;
                }
                inside = false;
            }
            if line.contains("-----BEGIN") && line.contains("PRIVATE KEY") {
                inside = !line.contains("-----END");
                out.push_str("[redacted private key]");
                out.push_str(newline);
                continue;
            }
            if line.contains("PRIVATE KEY") {
                out.push_str(REDACTED);
                out.push_str(newline);
                continue;
            }
            let mut l = line.to_string();
            for n in &self.needles {
                if l.contains(n.as_str()) {
                    l = l.replace(n.as_str(), REDACTED);
                }
            }
            out.push_str(&l);
        }
        out
    }
}

/// A YAML document with the values of [`SECRET_KEYS`] replaced.
pub fn redact_config(text: &str) -> Result<String, String> {
    fn walk(v: &mut serde_yaml::Value) {
        match v {
            serde_yaml::Value::Mapping(m) => {
                for (k, value) in m.iter_mut() {
                    let secret = k.as_str().is_some_and(|k| {
                        let k = k.to_ascii_lowercase().replace(['_', '-'], "");
                        SECRET_KEYS.contains(&k.as_str())
                    });
                    if secret && !value.is_null() {
                        *value = serde_yaml::Value::String(REDACTED.into());
                    } else {
                        walk(value);
                    }
                }
            }
            serde_yaml::Value::Sequence(s) => s.iter_mut().for_each(walk),
            serde_yaml::Value::Tagged(t) => walk(&mut t.value),
            _ => {}
        }
    }
    let mut doc: serde_yaml::Value = serde_yaml::from_str(text).map_err(|e| format!("config does not parse: {e}"))?;
    walk(&mut doc);
    serde_yaml::to_string(&doc).map_err(|e| e.to_string())
}

/// A name safe as one archive path component.
fn member_name(name: &str) -> String {
    let n: String = name
        .chars()
        .take(128)
        .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') { c } else { '_' })
        .collect();
    if n.is_empty() || n.chars().all(|c| c == '.') { "_".into() } else { n }
}

/// The archive being put together: members in memory, bounded.
#[derive(Debug, Default)]
pub struct Contents {
    members: Vec<(String, Vec<u8>)>,
    total: usize,
    notes: Vec<String>,
}

impl Contents {
    /// Adds `name` (already redacted text), cut at [`MAX_MEMBER_BYTES`];
    /// left out once the bundle reaches [`MAX_BUNDLE_BYTES`].
    pub fn add(&mut self, name: &str, text: String) {
        let mut bytes = text.into_bytes();
        if bytes.len() > MAX_MEMBER_BYTES {
            self.notes.push(format!("{name}: cut at {MAX_MEMBER_BYTES} bytes (was {})", bytes.len()));
            bytes.truncate(MAX_MEMBER_BYTES);
        }
        if self.total + bytes.len() > MAX_BUNDLE_BYTES {
            self.notes.push(format!("{name}: left out, the bundle reached {MAX_BUNDLE_BYTES} bytes"));
            return;
        }
        self.total += bytes.len();
        self.members.push((name.to_string(), bytes));
    }

    pub fn note(&mut self, note: String) {
        self.notes.push(note);
    }

    pub fn names(&self) -> Vec<String> {
        self.members.iter().map(|(n, _)| n.clone()).collect()
    }

    /// The `.tar.gz`, with `README.txt` first.
    pub fn archive(&self) -> std::io::Result<Vec<u8>> {
        let mtime =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        let mut tar = tar::Builder::new(gz);
        let mut readme = String::from("Bronze support bundle\n\nMembers:\n");
        for (name, data) in &self.members {
            readme.push_str(&format!("  {name} ({} bytes)\n", data.len()));
        }
        readme.push_str("\nNotes (left out or cut):\n");
        for note in &self.notes {
            readme.push_str(&format!("  {note}\n"));
        }
        let readme = readme.into_bytes();
        for (name, data) in
            std::iter::once(("README.txt", &readme)).chain(self.members.iter().map(|(n, d)| (n.as_str(), d)))
        {
            let mut header = tar::Header::new_gnu();
            header.set_size(data.len() as u64);
            header.set_mode(0o644);
            header.set_mtime(mtime);
            header.set_entry_type(tar::EntryType::Regular);
            tar.append_data(&mut header, format!("bronze-support/{name}"), data.as_slice())?;
        }
        tar.into_inner()?.finish()
    }
}

fn pretty(v: &Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_default() + "\n"
}

/// The last `max` kernel log records, oldest first, as `dmesg` shows them.
fn dmesg(path: &std::path::Path, max: usize) -> std::io::Result<String> {
    let mut kept: VecDeque<String> = VecDeque::new();
    crate::logs::kmsg::read(path, false, |r| {
        if kept.len() == max {
            kept.pop_front();
        }
        kept.push_back(format!("[{:>12.6}] <{}> {}", r.micros as f64 / 1e6, r.priority, r.message));
        true
    })?;
    Ok(kept.into_iter().map(|l| l + "\n").collect())
}

/// `ps`-like text of a process listing (fields already escaped by the RPC).
fn processes_text(r: &pb::ProcessesResponse) -> String {
    let mut out = String::from("PID\tPPID\tSTATE\tTHREADS\tCPU_S\tRSS_BYTES\tOWNER\tCOMMAND\n");
    for p in &r.processes {
        let owner = if p.owner.is_empty() { p.owner_kind.clone() } else { format!("{}:{}", p.owner_kind, p.owner) };
        let command = if p.command.is_empty() { format!("[{}]", p.name) } else { p.command.clone() };
        out.push_str(&format!(
            "{}\t{}\t{}\t{}\t{:.2}\t{}\t{owner}\t{command}\n",
            p.pid, p.parent, p.state, p.threads, p.cpu_seconds, p.rss_bytes
        ));
    }
    if r.truncated {
        out.push_str("(truncated)\n");
    }
    out
}

/// `ss`-like text of a socket listing.
fn netstat_text(r: &pb::NetstatResponse) -> String {
    let mut out = String::from("PROTO\tSTATE\tLOCAL\tREMOTE\tUID\tPROCESSES\n");
    for s in &r.sockets {
        let procs: Vec<String> = s.processes.iter().map(|p| format!("{}({})", p.command, p.pid)).collect();
        out.push_str(&format!(
            "{}{}\t{}\t[{}]:{}\t[{}]:{}\t{}\t{}\n",
            s.protocol,
            s.ip_version,
            s.state,
            s.local_address,
            s.local_port,
            s.remote_address,
            s.remote_port,
            s.uid,
            procs.join(",")
        ));
    }
    for w in &r.warnings {
        out.push_str(&format!("warning: {}\n", bronze_bundle::text::escape(w)));
    }
    if r.truncated {
        out.push_str("(truncated)\n");
    }
    out
}

impl SupportApi {
    /// Gathers every part. `admin` adds the redacted config.
    pub async fn collect(&self, admin: bool, log_lines: u32) -> Contents {
        let node = &self.node;
        let mut c = Contents::default();
        let mut redactor = Redactor::default();
        let live = node.config.live();
        if let Some(live) = &live {
            redactor.learn(&live.text);
        }
        let r = |text: String| redactor.redact(&text);

        c.add(
            "version.json",
            r(pretty(&json!({
                "tag": node.release,
                "commit": option_env!("BRONZE_COMMIT").unwrap_or("unknown"),
                "mode": node.mode.as_str(),
                "maintenance": node.security.is_maintenance(),
                "arch": std::env::consts::ARCH,
                "os": std::env::consts::OS,
                "hostname": node.hostname(),
                "kernel": std::fs::read_to_string(node.paths.proc.join("sys/kernel/osrelease")).unwrap_or_default().trim(),
            }))),
        );

        // Every resource type; sensitive ones (the config) by id only.
        for def in ALL {
            let resources = node.store.list(def);
            let body = if def.sensitive {
                json!({
                    "type": def.type_name,
                    "redacted": "sensitive type: ids only",
                    "ids": resources.iter().map(|r| r.metadata.id.clone()).collect::<Vec<_>>(),
                })
            } else {
                Value::Array(
                    resources
                        .iter()
                        .map(|r| {
                            json!({
                                "id": r.metadata.id,
                                "namespace": r.metadata.namespace,
                                "type": r.metadata.type_name,
                                "version": r.metadata.version,
                                "created": r.metadata.created,
                                "updated": r.metadata.updated,
                                "spec": r.spec,
                            })
                        })
                        .collect(),
                )
            };
            let text = r(pretty(&body));
            if def.type_name == crate::state::types::MACHINE_STATUS.type_name {
                c.add("machine-status.json", text.clone());
            }
            c.add(
                &format!("resources/{}.json", member_name(def.aliases.first().copied().unwrap_or(def.type_name))),
                text,
            );
        }

        // Service logs.
        let lines = match log_lines {
            0 => DEFAULT_LOG_LINES,
            n => n.min(MAX_LOG_LINES),
        } as usize;
        for (_, s) in node.store.list_typed::<ServiceStatusSpec>() {
            match node.services.logs(&s.name) {
                Ok(buffer) => {
                    let text: String =
                        buffer.tail(Some(lines)).into_iter().map(|l| format!("{} {}\n", l.time, l.text)).collect();
                    c.add(&format!("logs/services/{}.log", member_name(&s.name)), r(text));
                }
                Err(e) => c.note(format!("logs/services/{}: {e}", member_name(&s.name))),
            }
        }

        // Plugin logs, all instances of a plugin in one file.
        for plugin in node.plugins.list() {
            let id = plugin.entry.id.clone();
            match node.plugins.status(&id) {
                Ok((_, log)) => {
                    let skip = log.len().saturating_sub(lines);
                    let text: String = log
                        .iter()
                        .skip(skip)
                        .map(|(instance, l)| format!("{} {instance} {} {}\n", l.time, l.level.as_str(), l.message))
                        .collect();
                    c.add(&format!("logs/plugins/{}.log", member_name(&id)), r(text));
                }
                Err(e) => c.note(format!("logs/plugins/{}: {e}", member_name(&id))),
            }
        }

        // The kernel log, the mounts and the disks: blocking reads.
        let kmsg = node.paths.dev.join("kmsg");
        match tokio::task::spawn_blocking(move || dmesg(&kmsg, MAX_DMESG_RECORDS)).await {
            Ok(Ok(text)) => c.add("dmesg.txt", r(text)),
            Ok(Err(e)) => c.note(format!("dmesg.txt: cannot read {}: {e}", node.paths.dev.join("kmsg").display())),
            Err(e) => c.note(format!("dmesg.txt: {e}")),
        }
        match super::storage::mounts(&node.paths.proc).await {
            Ok((mounts, truncated)) => {
                let rows: Vec<Value> = mounts
                    .iter()
                    .map(|m| {
                        json!({
                            "source": m.source, "target": m.target, "filesystem": m.filesystem,
                            "options": m.options, "sizeBytes": m.size_bytes, "usedBytes": m.used_bytes,
                            "availableBytes": m.available_bytes, "statError": m.stat_error,
                        })
                    })
                    .collect();
                c.add("mounts.json", r(pretty(&json!({ "mounts": rows, "truncated": truncated }))));
            }
            Err(e) => c.note(format!("mounts.json: {e}")),
        }
        let (sys, dev) = (node.paths.sys.clone(), node.paths.dev.clone());
        match tokio::task::spawn_blocking(move || super::storage::disks(&sys, &dev)).await {
            Ok(disks) => {
                let rows: Vec<Value> = disks
                    .iter()
                    .map(|d| {
                        json!({
                            "name": d.name, "parent": d.parent, "sizeBytes": d.size_bytes, "model": d.model,
                            "serial": d.serial, "partitionTable": d.partition_table, "filesystem": d.filesystem,
                            "label": d.label, "readOnly": d.read_only, "removable": d.removable,
                            "devPath": d.dev_path, "error": d.error,
                        })
                    })
                    .collect();
                c.add("disks.json", r(pretty(&json!({ "disks": rows }))));
            }
            Err(e) => c.note(format!("disks.json: {e}")),
        }
        // Processes and sockets, through the same code as their RPCs.
        let processes = super::process::ProcessApi::new(node.clone());
        match bronze_api::v1::process_service_server::ProcessService::processes(
            &processes,
            Request::new(pb::ProcessesRequest { sample_ms: 0 }),
        )
        .await
        {
            Ok(answer) => c.add("processes.txt", r(processes_text(&answer.into_inner()))),
            Err(e) => c.note(format!("processes.txt: {}", e.message())),
        }
        let proc = node.paths.proc.clone();
        let filter = crate::network::sockets::Filter::default();
        let modules = node.modules.clone();
        match tokio::task::spawn_blocking(move || {
            crate::network::sockets::netstat_loading(&filter, &proc, modules.as_ref())
        })
        .await
        {
            Ok(Ok(found)) => c.add("netstat.txt", r(netstat_text(&super::network::netstat_response(found)))),
            Ok(Err(e)) => c.note(format!("netstat.txt: {e}")),
            Err(e) => c.note(format!("netstat.txt: {e}")),
        }

        // The config, to admins only, secrets replaced (and redacted again).
        match (&live, admin) {
            (Some(live), true) => match redact_config(&live.text) {
                Ok(text) => c.add("config.yaml", r(text)),
                Err(e) => c.note(format!("config.yaml: {e}")),
            },
            (Some(_), false) => c.note("config.yaml: left out, the machine config is for os:admin only".into()),
            (None, _) => c.note("config.yaml: the node has no config".into()),
        }
        c
    }
}

type BundleStream = Pin<Box<dyn Stream<Item = Result<pb::BundleChunk, Status>> + Send>>;

#[tonic::async_trait]
impl SupportService for SupportApi {
    type BundleStream = BundleStream;

    async fn bundle(&self, req: Request<pb::BundleRequest>) -> Result<Response<Self::BundleStream>, Status> {
        let admin = req.extensions().get::<Caller>().is_some_and(|c| c.has(Role::Admin));
        let contents = self.collect(admin, req.get_ref().log_lines).await;
        let members = contents.names();
        let notes = contents.notes.clone();
        let archive = tokio::task::spawn_blocking(move || contents.archive())
            .await
            .map_err(|e| Status::internal(format!("building the bundle: {e}")))?
            .map_err(|e| Status::internal(format!("building the bundle: {e}")))?;
        let mut chunks: Vec<pb::BundleChunk> = archive
            .chunks(CHUNK_BYTES)
            .map(|data| pb::BundleChunk { data: data.to_vec(), ..Default::default() })
            .collect();
        if let Some(last) = chunks.last_mut() {
            last.members = std::iter::once("README.txt".to_string()).chain(members).collect();
            last.notes = notes;
        }
        Ok(Response::new(Box::pin(tokio_stream::iter(chunks.into_iter().map(Ok)))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIBbodylineonebodylineone\nAoGCCqGSM49AwEHoUQDQgAEbodylinetwo\n-----END EC PRIVATE KEY-----\n";

    #[test]
    fn private_keys_are_redacted_with_or_without_armour() {
        let mut r = Redactor::default();
        r.learn(&format!(
            "machine:\n  api:\n    ca:\n      key: |\n{}",
            KEY.lines().map(|l| format!("        {l}\n")).collect::<String>()
        ));
        let out =
            r.redact(&format!("before\n{KEY}after MHcCAQEEIBbodylineonebodylineone x\nmentions a PRIVATE KEY here\n"));
        assert!(!out.contains("PRIVATE KEY"), "{out}");
        assert!(!out.contains("bodylineone"), "{out}");
        assert!(out.starts_with("before\n[redacted private key]\nafter [redacted] x\n[redacted]\n"), "{out}");
        // A log line naming a key, unclosed: the next line of the log stays.
        let out = r.redact("[1.0] -----BEGIN PRIVATE KEY----- MHcCAQEEIBbodylineonebodylineone\n[1.1] next line\n");
        assert_eq!(out, "[redacted private key]\n[1.1] next line\n");
    }

    #[test]
    fn config_secrets_are_replaced() {
        let doc = "machine:\n  api:\n    ca:\n      crt: CERT\n      key: SECRET\n  token: t0k\n  hostname: n1\n  list:\n    - password: pw\n";
        let out = redact_config(doc).unwrap();
        assert!(!out.contains("SECRET") && !out.contains("t0k") && !out.contains("pw"), "{out}");
        assert!(out.contains("CERT") && out.contains("n1"), "{out}");
    }

    #[test]
    fn members_are_bounded_and_names_safe() {
        let mut c = Contents::default();
        c.add("big", "x".repeat(MAX_MEMBER_BYTES + 10));
        assert_eq!(c.members[0].1.len(), MAX_MEMBER_BYTES);
        for i in 0..(MAX_BUNDLE_BYTES / MAX_MEMBER_BYTES) {
            c.add(&format!("more{i}"), "y".repeat(MAX_MEMBER_BYTES));
        }
        assert!(c.total <= MAX_BUNDLE_BYTES);
        assert!(c.notes.iter().any(|n| n.contains("left out")), "{:?}", c.notes);
        assert_eq!(member_name("../../etc/passwd"), ".._.._etc_passwd");
        assert_eq!(member_name(".."), "_");
        let archive = c.archive().unwrap();
        assert!(archive.len() < MAX_BUNDLE_BYTES / 10, "compresses: {}", archive.len());
    }
}
