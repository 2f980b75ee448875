//! `bronzectl plugins ...`: upload bundles (signing them on the fly if
//! asked), list, inspect, run and remove plugins on nodes, and the local
//! key and signing commands. Shaping answers into [`Output`] is kept in
//! pure functions so rendering is tested without a node.

use crate::cli::Globals;
use crate::client::{CALL_TIMEOUT, NodeClient, call_within};
use crate::clientconfig::write_atomic;
use crate::output::{self, Output, cell, obj};
use anyhow::{Context as _, bail};
use bronze_api::v1 as pb;
use bronze_bundle::{Bundle, SIGNATURE_FILE, SigningKey, Version};
use bronze_config::TrustedKey;
use clap::Subcommand;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

/// Size of one uploaded piece of plugin.wasm.
pub const CHUNK_SIZE: usize = 256 * 1024;

/// Deadline of a whole install: the upload plus the node's verification
/// and ahead-of-time compilation, which for a large component takes a while.
pub const INSTALL_TIMEOUT: Duration = Duration::from_secs(600);

/// Deadline of `plugins run`: the plugin's own timeout is bounded by the
/// node, this only guards against a node that never answers.
pub const RUN_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Debug, Subcommand)]
pub enum PluginsCommand {
    /// Upload a bundle (a directory or a tar file) to the nodes; installing an id that exists upgrades it.
    Install {
        /// Bundle directory (plugin.wasm, plugin.toml, optional plugin.sig) or tar file.
        #[arg(value_name = "DIR|FILE")]
        bundle: PathBuf,
        /// Sign the bundle with this private key while uploading (any plugin.sig is ignored).
        #[arg(long, value_name = "KEY")]
        sign_key: Option<PathBuf>,
    },
    /// Installed plugins and their instances.
    List,
    /// One plugin's details, its instances and recent log lines.
    Status { id: String },
    /// Uninstall a plugin; its instances stop.
    Remove { id: String },
    /// Call an instance once now and show the outcome (exit code 1 unless it is ok).
    Run {
        /// An instance id, or a plugin id with exactly one instance.
        id: String,
    },
    /// Make a signing key: the private key goes to --output-file PATH (mode 0600), the public key to PATH.pub.
    Keygen {
        /// The private key file to write.
        #[arg(long = "output-file", visible_alias = "out", value_name = "PATH")]
        output_file: PathBuf,
    },
    /// Sign a bundle directory: writes DIR/plugin.sig.
    Sign {
        /// The private key (PEM), as written by `plugins keygen`.
        #[arg(long, value_name = "KEY")]
        key: PathBuf,
        #[arg(value_name = "DIR")]
        dir: PathBuf,
    },
}

/// `plugins ...`.
pub async fn run(what: &PluginsCommand, g: &Globals) -> anyhow::Result<ExitCode> {
    match what {
        PluginsCommand::Keygen { output_file } => {
            let made = keygen(output_file)?;
            println!("wrote private key {} (mode 0600; keep it secret)", made.private_key.display());
            println!("wrote public key {}", made.public_key_file.display());
            println!("public key: {}", made.public_key);
            println!("trust it on nodes by adding it to machine.plugins.trustedKeys");
            Ok(ExitCode::SUCCESS)
        }
        PluginsCommand::Sign { key, dir } => {
            let signed = sign_dir(key, dir)?;
            println!("wrote {}", signed.signature_file.display());
            println!("public key: {}", signed.public_key);
            Ok(ExitCode::SUCCESS)
        }
        PluginsCommand::Install { bundle, sign_key } => {
            let upload = Arc::new(prepare_install(bundle, sign_key.as_deref())?);
            let target = g.target()?;
            let progress = UploadProgress::new(&target.nodes, upload.wasm.len() as u64);
            let results = crate::client::fan_out(&target.nodes, &target.auth, |c| {
                let bar = progress.bar(&c.node);
                install(c, upload.clone(), bar)
            })
            .await;
            progress.clear();
            Ok(output::print(g.format(), INSTALL_COLUMNS, &results))
        }
        PluginsCommand::List => g.each_node(LIST_COLUMNS, list).await,
        PluginsCommand::Status { id } => g.each_node(DETAIL_COLUMNS, |c| status(c, id.clone())).await,
        PluginsCommand::Remove { id } => g.each_node(REMOVE_COLUMNS, |c| remove(c, id.clone())).await,
        PluginsCommand::Run { id } => {
            let results = g.fan_out(|c| run_once(c, id.clone())).await?;
            let code = output::print(g.format(), DETAIL_COLUMNS, &results);
            Ok(if run_failed(&results) { ExitCode::FAILURE } else { code })
        }
    }
}

/// What `install` sends to every node.
#[derive(Debug)]
pub struct Upload {
    pub header: pb::PluginInstallHeader,
    pub wasm: Vec<u8>,
}

/// Reads the bundle at `path` and prepares its upload: signed with
/// `sign_key` when given, else with its own plugin.sig if it has one.
pub fn prepare_install(path: &Path, sign_key: Option<&Path>) -> anyhow::Result<Upload> {
    let bundle = Bundle::load(path)?;
    let signature = match sign_key {
        Some(key_path) => {
            let key = SigningKey::read_file(key_path)?;
            key.sign(&bundle.wasm, &bundle.manifest_bytes).to_file_bytes()
        }
        None => bundle.signature.clone().unwrap_or_default(),
    };
    let header = pb::PluginInstallHeader {
        wasm_size: bundle.wasm.len() as u64,
        wasm_sha256: bronze_bundle::sha256_hex(&bundle.wasm),
        manifest: bundle.manifest_bytes,
        signature,
    };
    Ok(Upload { header, wasm: bundle.wasm })
}

/// The request stream of one install: the header, then the component in
/// [`CHUNK_SIZE`] pieces. `bar` advances as tonic pulls each piece to send.
pub fn install_requests(
    upload: Arc<Upload>,
    bar: ProgressBar,
) -> impl futures::Stream<Item = pb::PluginInstallRequest> + Send + 'static {
    use pb::plugin_install_request::Part;
    let header = pb::PluginInstallRequest { part: Some(Part::Header(upload.header.clone())) };
    let pieces = upload.wasm.len().div_ceil(CHUNK_SIZE);
    let chunks = (0..pieces).map(move |i| {
        let piece = &upload.wasm[i * CHUNK_SIZE..((i + 1) * CHUNK_SIZE).min(upload.wasm.len())];
        bar.inc(piece.len() as u64);
        if i + 1 == pieces {
            bar.set_message("uploaded; the node is verifying and compiling");
        }
        pb::PluginInstallRequest { part: Some(Part::Chunk(piece.to_vec())) }
    });
    futures::stream::iter(std::iter::once(header).chain(chunks))
}

/// One upload progress bar per node on stderr; hidden when stderr is not
/// a terminal, so pipes and logs get only the result.
#[derive(Debug)]
pub struct UploadProgress {
    multi: MultiProgress,
    bars: HashMap<String, ProgressBar>,
}

impl UploadProgress {
    pub fn new(nodes: &[String], bytes: u64) -> Self {
        let multi = MultiProgress::new();
        let width = nodes.iter().map(|n| n.len()).max().unwrap_or(0);
        let template = format!("{{prefix:{width}}} [{{bar:30}}] {{bytes}}/{{total_bytes}} {{bytes_per_sec}} {{msg}}");
        let style = ProgressStyle::with_template(&template).unwrap_or_else(|_| ProgressStyle::default_bar());
        let bars = nodes
            .iter()
            .map(|node| {
                let bar = multi.add(ProgressBar::new(bytes).with_style(style.clone()).with_prefix(node.clone()));
                (node.clone(), bar)
            })
            .collect();
        UploadProgress { multi, bars }
    }

    /// The bar of `node` (a hidden one for a node we made none for).
    pub fn bar(&self, node: &str) -> ProgressBar {
        self.bars.get(node).cloned().unwrap_or_else(ProgressBar::hidden)
    }

    /// Removes the bars so the results print on a clean screen.
    pub fn clear(&self) {
        for bar in self.bars.values() {
            bar.finish_and_clear();
        }
        let _ = self.multi.clear();
    }
}

pub const INSTALL_COLUMNS: &[&str] = &["id", "change", "sha256", "signed by", "compile", "instances"];

/// Uploads the bundle to one node.
pub async fn install(mut c: NodeClient, upload: Arc<Upload>, bar: ProgressBar) -> Result<Output, String> {
    let requests = install_requests(upload, bar.clone());
    let result = call_within(INSTALL_TIMEOUT, c.plugins.install(requests)).await;
    bar.finish_with_message(if result.is_ok() { "installed" } else { "failed" });
    Ok(install_output(&result?))
}

/// "upgraded 0.1.0 → 0.2.0", "installed 0.1.0", ...
pub fn describe_change(previous: &str, version: &str) -> String {
    if previous.is_empty() {
        return format!("installed {version}");
    }
    let order = previous.parse::<Version>().ok().zip(version.parse::<Version>().ok()).map(|(p, v)| p.cmp(&v));
    match order {
        Some(std::cmp::Ordering::Less) => format!("upgraded {previous} → {version}"),
        Some(std::cmp::Ordering::Greater) => format!("downgraded {previous} → {version}"),
        Some(std::cmp::Ordering::Equal) => format!("reinstalled {version}"),
        None => format!("replaced {previous} → {version}"),
    }
}

/// The first 12 hex characters, enough to tell digests apart in a table.
fn short(hex: &str) -> String {
    hex.chars().take(12).collect()
}

fn signer(signed_by: &str) -> String {
    if signed_by.is_empty() { "unsigned".into() } else { short(signed_by) }
}

fn list_or_none(items: &[String]) -> String {
    if items.is_empty() { "none".into() } else { items.join(",") }
}

pub fn install_output(r: &pb::PluginInstallResponse) -> Output {
    let change = describe_change(&r.previous_version, &r.version);
    let fields = obj(json!({
        "id": r.id, "version": r.version, "previousVersion": r.previous_version, "change": change,
        "sha256": r.sha256, "signedBy": r.signed_by, "compileMs": r.compile_ms, "instances": r.instances,
    }));
    let row = vec![
        r.id.clone(),
        change,
        short(&r.sha256),
        signer(&r.signed_by),
        format!("{}ms", r.compile_ms),
        list_or_none(&r.instances),
    ];
    Output { fields, rows: vec![row] }
}

fn outcome_json(o: &Option<pb::PluginOutcome>) -> Value {
    match o {
        Some(o) => json!({ "kind": o.kind, "message": o.message, "started": o.started, "durationUs": o.duration_us }),
        None => Value::Null,
    }
}

fn instance_json(i: &pb::PluginInstanceStatus) -> Value {
    json!({
        "id": i.id, "plugin": i.plugin, "state": i.state, "reason": i.reason, "runs": i.runs,
        "failures": i.failures, "consecutiveFailures": i.consecutive_failures,
        "lastOutcome": outcome_json(&i.last_outcome), "nextRun": i.next_run, "capabilities": i.capabilities,
        "logDropped": i.log_dropped,
    })
}

fn plugin_json(p: &pb::PluginInfo) -> Value {
    json!({
        "id": p.id, "version": p.version, "world": p.world, "sha256": p.sha256, "signedBy": p.signed_by,
        "installedAt": p.installed_at, "wasmBytes": p.wasm_bytes, "imports": p.imports, "artifact": p.artifact, "source": p.source,
        "instances": p.instances.iter().map(instance_json).collect::<Vec<_>>(),
    })
}

pub const LIST_COLUMNS: &[&str] = &["id", "version", "world", "instances", "signed"];

pub async fn list(mut c: NodeClient) -> Result<Output, String> {
    Ok(list_output(&call_within(CALL_TIMEOUT, c.plugins.list(pb::PluginListRequest {})).await?))
}

pub fn list_output(r: &pb::PluginListResponse) -> Output {
    let rows = r
        .plugins
        .iter()
        .map(|p| {
            let instances: Vec<String> = p.instances.iter().map(|i| format!("{} ({})", i.id, i.state)).collect();
            let instances = if instances.is_empty() { "none".into() } else { instances.join(", ") };
            // Image plugins are trusted as part of the image, not by a key.
            let signed =
                if p.source == "image" && p.signed_by.is_empty() { "image".into() } else { signer(&p.signed_by) };
            vec![p.id.clone(), p.version.clone(), p.world.clone(), instances, signed]
        })
        .collect();
    let plugins: Vec<Value> = r.plugins.iter().map(plugin_json).collect();
    Output { fields: obj(json!({ "plugins": plugins })), rows }
}

/// `1500` → "1.5ms".
pub fn human_duration(us: u64) -> String {
    match us {
        0..1_000 => format!("{us}µs"),
        1_000..1_000_000 => format!("{:.1}ms", us as f64 / 1e3),
        _ => format!("{:.2}s", us as f64 / 1e6),
    }
}

/// `1572864` → "1.5 MiB".
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 { format!("{n} B") } else { format!("{value:.1} {}", UNITS[unit]) }
}

fn describe_outcome(o: &pb::PluginOutcome) -> String {
    if o.kind.is_empty() {
        return "not run yet".into();
    }
    let mut text = format!("{} in {}", o.kind, human_duration(o.duration_us));
    if !o.started.is_empty() {
        text.push_str(&format!(" at {}", o.started));
    }
    if !o.message.is_empty() {
        // Tables show the first line; -o json/yaml carry the whole message
        // (trap backtraces span lines).
        text.push_str(&format!(": {}", o.message.lines().next().unwrap_or_default()));
    }
    text
}

/// Detail views are two columns: a field and its value.
pub const DETAIL_COLUMNS: &[&str] = &["field", "value"];

fn row(field: &str, value: impl Into<String>) -> Vec<String> {
    vec![field.to_string(), value.into()]
}

pub async fn status(mut c: NodeClient, id: String) -> Result<Output, String> {
    let r = call_within(CALL_TIMEOUT, c.plugins.status(pb::PluginStatusRequest { id })).await?;
    status_output(&r)
}

pub fn status_output(r: &pb::PluginStatusResponse) -> Result<Output, String> {
    let p = r.plugin.as_ref().ok_or("the node answered without the plugin")?;
    let mut rows = vec![
        row("id", &p.id),
        row("version", &p.version),
        row("world", &p.world),
        row("sha256", &p.sha256),
        row("signed by", if p.signed_by.is_empty() { "unsigned" } else { &p.signed_by }),
        row("installed", &p.installed_at),
        row("size", human_bytes(p.wasm_bytes)),
        row("artifact", &p.artifact),
        row("source", if p.source.is_empty() { "api" } else { &p.source }),
        row("imports", list_or_none(&p.imports)),
    ];
    if p.instances.is_empty() {
        rows.push(row("instances", "none (add one under machine.plugins.instances)"));
    }
    for i in &p.instances {
        rows.push(row("instance", &i.id));
        let state = if i.reason.is_empty() { i.state.clone() } else { format!("{}: {}", i.state, i.reason) };
        rows.push(row("  state", state));
        rows.push(row("  runs", format!("{} ({} failed, {} in a row)", i.runs, i.failures, i.consecutive_failures)));
        rows.push(row("  last outcome", i.last_outcome.as_ref().map_or("not run yet".into(), describe_outcome)));
        rows.push(row("  next run", if i.next_run.is_empty() { "not scheduled" } else { &i.next_run }));
        rows.push(row("  capabilities", list_or_none(&i.capabilities)));
        if i.log_dropped > 0 {
            rows.push(row("  log dropped", format!("{} lines (rate limit)", i.log_dropped)));
        }
    }
    for l in &r.log {
        rows.push(row("log", format!("{} {} {} {}", l.time, l.instance, l.level, l.message)));
    }
    let log: Vec<Value> = r
        .log
        .iter()
        .map(|l| json!({ "instance": l.instance, "time": l.time, "level": l.level, "message": l.message }))
        .collect();
    Ok(Output { fields: obj(json!({ "plugin": plugin_json(p), "log": log })), rows })
}

pub const REMOVE_COLUMNS: &[&str] = &["message"];

pub async fn remove(mut c: NodeClient, id: String) -> Result<Output, String> {
    let r = call_within(CALL_TIMEOUT, c.plugins.remove(pb::PluginRemoveRequest { id })).await?;
    let message = format!("removed {} {}", r.id, r.version);
    Ok(Output::single(obj(json!({ "id": r.id, "version": r.version, "message": message })), REMOVE_COLUMNS))
}

/// `plugins run ID` on one node.
pub async fn run_once(mut c: NodeClient, id: String) -> Result<Output, String> {
    Ok(run_output(&call_within(RUN_TIMEOUT, c.plugins.run(pb::PluginRunRequest { id })).await?))
}

pub fn run_output(r: &pb::PluginRunResponse) -> Output {
    let outcome = r.outcome.clone().unwrap_or_default();
    let result: Value = match r.result_json.as_str() {
        "" => Value::Null,
        text => serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_string())),
    };
    let mut rows = vec![row("instance", &r.instance), row("outcome", &outcome.kind)];
    if !outcome.message.is_empty() {
        let mut lines = outcome.message.lines();
        let first = lines.next().unwrap_or_default();
        let more = lines.count();
        let shown = if more == 0 { first.to_string() } else { format!("{first} (+{more} lines: -o json shows all)") };
        rows.push(row("message", shown));
    }
    rows.push(row("started", &outcome.started));
    rows.push(row("duration", human_duration(outcome.duration_us)));
    if !result.is_null() {
        let pretty = serde_json::to_string_pretty(&result).unwrap_or_default();
        for (n, line) in pretty.lines().enumerate() {
            rows.push(row(if n == 0 { "result" } else { "" }, line));
        }
    }
    let fields = obj(json!({ "instance": r.instance, "outcome": outcome_json(&Some(outcome)), "result": result }));
    Output { fields, rows }
}

/// Whether a node ran the plugin but the outcome was not "ok" (the exit
/// code of `plugins run`; unreachable nodes count through `all_ok`).
pub fn run_failed(results: &[crate::output::NodeResult]) -> bool {
    results.iter().any(|r| match &r.outcome {
        Ok(out) => {
            out.fields.get("outcome").and_then(|o| o.get("kind")).map(|k| cell(Some(k))).as_deref() != Some("ok")
        }
        Err(_) => true,
    })
}

/// What `plugins keygen` made.
#[derive(Debug)]
pub struct Keygen {
    pub private_key: PathBuf,
    pub public_key_file: PathBuf,
    pub public_key: TrustedKey,
}

/// Generates a signing key into `path` and `path.pub`; never overwrites.
pub fn keygen(path: &Path) -> anyhow::Result<Keygen> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let key = SigningKey::generate()?;
    let public_key_file = key.write_files(path)?;
    Ok(Keygen { private_key: path.to_path_buf(), public_key_file, public_key: key.public_key() })
}

/// What `plugins sign` did.
#[derive(Debug)]
pub struct Signed {
    pub signature_file: PathBuf,
    pub public_key: TrustedKey,
}

/// Signs the bundle directory `dir` with the key at `key_path`, replacing
/// `dir/plugin.sig` atomically.
pub fn sign_dir(key_path: &Path, dir: &Path) -> anyhow::Result<Signed> {
    if !dir.is_dir() {
        bail!(
            "{} is not a directory: `plugins sign` writes plugin.sig into a bundle directory (to sign a tar bundle, \
             unpack it, or pass --sign-key to `plugins install`)",
            dir.display()
        );
    }
    let key = SigningKey::read_file(key_path)?;
    let bundle = Bundle::load(dir)?;
    let signature = key.sign(&bundle.wasm, &bundle.manifest_bytes);
    let signature_file = dir.join(SIGNATURE_FILE);
    write_atomic(&signature_file, &signature.to_file_bytes(), 0o644)
        .with_context(|| format!("cannot write {}", signature_file.display()))?;
    Ok(Signed { signature_file, public_key: key.public_key() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::{Format, NodeResult, render};
    use futures::StreamExt;

    const MANIFEST: &str = "id = \"health-tcp\"\nversion = \"0.2.0\"\nworld = \"health-check\"\n";

    fn wasm(len: usize) -> Vec<u8> {
        let mut bytes = b"\0asm\x0d\0\x01\0".to_vec();
        bytes.extend((0..len.saturating_sub(8)).map(|i| (i % 251) as u8));
        bytes
    }

    fn bundle_dir(dir: &Path, wasm_len: usize) {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join("plugin.toml"), MANIFEST).unwrap();
        std::fs::write(dir.join("plugin.wasm"), wasm(wasm_len)).unwrap();
    }

    #[test]
    fn keygen_sign_and_verify_round_trip() {
        let tmp = tempfile::tempdir().unwrap();
        let key_path = tmp.path().join("keys/signing.pem");
        let made = keygen(&key_path).unwrap();
        assert_eq!(made.public_key_file, tmp.path().join("keys/signing.pem.pub"));
        let published = std::fs::read_to_string(&made.public_key_file).unwrap();
        assert_eq!(published.trim_end().parse::<TrustedKey>().unwrap(), made.public_key);
        assert!(keygen(&key_path).unwrap_err().to_string().contains("already exists"));

        let dir = tmp.path().join("bundle");
        bundle_dir(&dir, 1000);
        let signed = sign_dir(&key_path, &dir).unwrap();
        assert_eq!(signed.signature_file, dir.join("plugin.sig"));
        assert_eq!(signed.public_key, made.public_key);

        let trusted = [made.public_key.clone()];
        let bundle = Bundle::load(&dir).unwrap();
        let sig = bundle.signature.as_deref().unwrap();
        let verified = bronze_bundle::verify(&bundle.wasm, &bundle.manifest_bytes, sig, &trusted);
        assert_eq!(verified, Ok(made.public_key.clone()));

        // Changing the manifest after signing breaks it.
        std::fs::write(dir.join("plugin.toml"), MANIFEST.replace("0.2.0", "0.2.1")).unwrap();
        let tampered = Bundle::load(&dir).unwrap();
        assert!(tampered.verify(&trusted).is_err());

        // install --sign-key signs on the fly over whatever plugin.sig says.
        let upload = prepare_install(&dir, Some(&key_path)).unwrap();
        let fresh = bronze_bundle::verify(&upload.wasm, &upload.header.manifest, &upload.header.signature, &trusted);
        assert_eq!(fresh, Ok(made.public_key));
    }

    #[test]
    fn sign_refuses_files_and_bad_bundles() {
        let tmp = tempfile::tempdir().unwrap();
        let key_path = tmp.path().join("k.pem");
        keygen(&key_path).unwrap();
        let err = sign_dir(&key_path, &key_path).unwrap_err().to_string();
        assert!(err.contains("is not a directory"), "{err}");
        let empty = tmp.path().join("empty");
        std::fs::create_dir(&empty).unwrap();
        let err = format!("{:#}", sign_dir(&key_path, &empty).unwrap_err());
        assert!(err.contains("has no plugin.toml"), "{err}");
        assert!(!empty.join("plugin.sig").exists());
    }

    #[tokio::test]
    async fn install_stream_is_a_header_then_chunks() {
        use pb::plugin_install_request::Part;
        let tmp = tempfile::tempdir().unwrap();
        let len = 2 * CHUNK_SIZE + 10;
        bundle_dir(tmp.path(), len);
        std::fs::write(tmp.path().join("plugin.sig"), "ab".repeat(64) + "\n").unwrap();
        let upload = Arc::new(prepare_install(tmp.path(), None).unwrap());
        assert_eq!(upload.header.signature, ("ab".repeat(64) + "\n").into_bytes());
        assert_eq!(upload.header.manifest, MANIFEST.as_bytes());
        let bar = ProgressBar::hidden();
        bar.set_length(len as u64);
        let requests: Vec<_> = install_requests(upload.clone(), bar.clone()).collect().await;
        assert_eq!(requests.len(), 4);
        let Some(Part::Header(header)) = &requests[0].part else { panic!("{:?}", requests[0]) };
        assert_eq!(header.wasm_size, len as u64);
        assert_eq!(header.wasm_sha256, bronze_bundle::sha256_hex(&wasm(len)));
        let mut body = Vec::new();
        for r in &requests[1..] {
            let Some(Part::Chunk(c)) = &r.part else { panic!("{r:?}") };
            assert!(c.len() <= CHUNK_SIZE);
            body.extend_from_slice(c);
        }
        assert_eq!(body, wasm(len));
        assert_eq!(bar.position(), len as u64);

        // Without --sign-key and plugin.sig the upload is unsigned.
        std::fs::remove_file(tmp.path().join("plugin.sig")).unwrap();
        assert!(prepare_install(tmp.path(), None).unwrap().header.signature.is_empty());
    }

    #[test]
    fn changes_read_as_words() {
        assert_eq!(describe_change("", "0.1.0"), "installed 0.1.0");
        assert_eq!(describe_change("0.1.0", "0.2.0"), "upgraded 0.1.0 → 0.2.0");
        assert_eq!(describe_change("0.2.0", "0.1.0"), "downgraded 0.2.0 → 0.1.0");
        assert_eq!(describe_change("0.2.0", "0.2.0"), "reinstalled 0.2.0");
        assert_eq!(describe_change("1.0.0-rc.1", "1.0.0"), "upgraded 1.0.0-rc.1 → 1.0.0");
        assert_eq!(describe_change("weird", "0.2.0"), "replaced weird → 0.2.0");
    }

    fn table(columns: &[&str], out: Output) -> String {
        render(Format::Table, columns, &[NodeResult { node: "n1".into(), outcome: Ok(out) }])
    }

    #[test]
    fn install_renders_the_change() {
        let r = pb::PluginInstallResponse {
            id: "health-tcp".into(),
            version: "0.2.0".into(),
            previous_version: "0.1.0".into(),
            sha256: "0123456789abcdef".repeat(4),
            signed_by: String::new(),
            compile_ms: 42,
            instances: vec!["health-tcp".into(), "health-db".into()],
        };
        let text = table(INSTALL_COLUMNS, install_output(&r));
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "NODE   ID           CHANGE                   SHA256         SIGNED BY   COMPILE   INSTANCES"
        );
        assert_eq!(
            lines[1],
            "n1     health-tcp   upgraded 0.1.0 → 0.2.0   0123456789ab   unsigned    42ms      health-tcp,health-db"
        );
        let json: Value = serde_json::from_str(&render(
            Format::Json,
            INSTALL_COLUMNS,
            &[NodeResult { node: "n1".into(), outcome: Ok(install_output(&r)) }],
        ))
        .unwrap();
        assert_eq!(json["previousVersion"], "0.1.0");
        assert_eq!(json["sha256"], "0123456789abcdef".repeat(4));
        assert_eq!(json["compileMs"], 42);
    }

    fn instance(id: &str, state: &str) -> pb::PluginInstanceStatus {
        pb::PluginInstanceStatus {
            id: id.into(),
            plugin: "health-tcp".into(),
            state: state.into(),
            runs: 10,
            failures: 2,
            consecutive_failures: 1,
            capabilities: vec!["bronze:host/log".into(), "bronze:host/probe".into()],
            ..Default::default()
        }
    }

    fn info() -> pb::PluginInfo {
        pb::PluginInfo {
            id: "health-tcp".into(),
            version: "0.1.0".into(),
            world: "health-check".into(),
            sha256: "ab".repeat(32),
            signed_by: "cd".repeat(32),
            installed_at: "2025-01-01T00:00:00Z".into(),
            wasm_bytes: 3 << 20,
            imports: vec!["bronze:host/probe".into()],
            instances: vec![instance("health-tcp", "idle"), instance("health-db", "quarantined")],
            artifact: "cache".into(),
            source: "api".into(),
        }
    }

    #[test]
    fn list_renders_instances_with_state() {
        let r = pb::PluginListResponse { plugins: vec![info()] };
        let text = table(LIST_COLUMNS, list_output(&r));
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "NODE   ID           VERSION   WORLD          INSTANCES                                    SIGNED"
        );
        assert_eq!(
            lines[1],
            "n1     health-tcp   0.1.0     health-check   health-tcp (idle), health-db (quarantined)   cdcdcdcdcdcd"
        );
        let out = list_output(&r);
        assert_eq!(out.fields["plugins"][0]["instances"][1]["state"], "quarantined");
        assert_eq!(out.fields["plugins"][0]["wasmBytes"], 3 << 20);
    }

    #[test]
    fn status_shows_instances_and_log() {
        let mut p = info();
        p.instances[1].reason = "5 failures in a row".into();
        p.instances[0].last_outcome = Some(pb::PluginOutcome {
            kind: "timeout".into(),
            message: "deadline 2s passed".into(),
            started: "2025-01-01T00:01:00Z".into(),
            duration_us: 2_000_000,
        });
        p.instances[0].next_run = "2025-01-01T00:02:00Z".into();
        p.instances[0].log_dropped = 7;
        let r = pb::PluginStatusResponse {
            plugin: Some(p),
            log: vec![pb::PluginLogLine {
                instance: "health-tcp".into(),
                time: "2025-01-01T00:01:00Z".into(),
                level: "warn".into(),
                message: "slow".into(),
            }],
        };
        let out = status_output(&r).unwrap();
        let text = table(DETAIL_COLUMNS, out.clone());
        for want in [
            "n1     size             3.0 MiB",
            "n1     artifact         cache",
            "n1     source           api",
            "n1     instance         health-tcp",
            "n1       last outcome   timeout in 2.00s at 2025-01-01T00:01:00Z: deadline 2s passed",
            "n1       next run       2025-01-01T00:02:00Z",
            "n1       log dropped    7 lines (rate limit)",
            "n1       state          quarantined: 5 failures in a row",
            "n1       last outcome   not run yet",
            "n1       next run       not scheduled",
            "n1       capabilities   bronze:host/log,bronze:host/probe",
            "n1       runs           10 (2 failed, 1 in a row)",
            "n1     log              2025-01-01T00:01:00Z health-tcp warn slow",
        ] {
            assert!(text.lines().any(|l| l == want), "missing {want:?} in\n{text}");
        }
        assert_eq!(out.fields["plugin"]["instances"][0]["lastOutcome"]["kind"], "timeout");
        assert_eq!(out.fields["log"][0]["message"], "slow");
        assert!(status_output(&pb::PluginStatusResponse::default()).is_err());
    }

    /// A plugin's text (or a hostile node's) cannot clear the screen, move
    /// the cursor, overwrite a row or add rows for another instance.
    #[test]
    fn status_shows_hostile_text_escaped_on_its_own_row() {
        let hostile = "\x1b[2J\u{9b}1A\rok\x07\n127.0.0.1:50000   instance   fake";
        let mut p = info();
        p.instances[0].last_outcome = Some(pb::PluginOutcome {
            kind: "trap".into(),
            message: hostile.into(),
            started: "2025-01-01T00:01:00Z".into(),
            duration_us: 5,
        });
        p.instances[1].reason = hostile.into();
        let r = pb::PluginStatusResponse {
            plugin: Some(p),
            log: vec![pb::PluginLogLine {
                instance: "health-tcp".into(),
                time: "2025-01-01T00:01:00Z".into(),
                level: "warn".into(),
                message: hostile.into(),
            }],
        };
        let text = table(DETAIL_COLUMNS, status_output(&r).unwrap());
        assert!(!text.contains(['\x1b', '\u{9b}', '\r', '\x07']), "{text:?}");
        assert!(text.lines().all(|l| l.starts_with("NODE") || l.starts_with("n1 ")), "{text}");
        let shown = "\\x1b[2J\\u{9b}1A\\rok\\x07\\n127.0.0.1:50000   instance   fake";
        for want in [
            "n1       last outcome   trap in 5µs at 2025-01-01T00:01:00Z: \\x1b[2J\\u{9b}1A\\rok\\x07".to_string(),
            format!("n1       state          quarantined: {shown}"),
            format!("n1     log              2025-01-01T00:01:00Z health-tcp warn {shown}"),
        ] {
            assert!(text.lines().any(|l| l == want), "missing {want:?} in\n{text}");
        }
    }

    #[test]
    fn run_pretty_prints_the_result_and_sets_the_exit_code() {
        let ok = pb::PluginRunResponse {
            instance: "health-tcp".into(),
            outcome: Some(pb::PluginOutcome {
                kind: "ok".into(),
                message: String::new(),
                started: "2025-01-01T00:00:00Z".into(),
                duration_us: 1500,
            }),
            result_json: r#"{"status":"healthy","summary":"tcp 127.0.0.1:22 open"}"#.into(),
        };
        let out = run_output(&ok);
        let text = table(DETAIL_COLUMNS, out.clone());
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[2], "n1     outcome    ok");
        assert_eq!(lines[4], "n1     duration   1.5ms");
        assert_eq!(lines[5], "n1     result     {");
        assert_eq!(lines[6], "n1                  \"status\": \"healthy\",");
        assert_eq!(out.fields["result"]["summary"], "tcp 127.0.0.1:22 open");
        let result = |out: Output| vec![NodeResult { node: "n1".into(), outcome: Ok(out) }];
        assert!(!run_failed(&result(out)));

        let mut trap = ok.clone();
        trap.outcome =
            Some(pb::PluginOutcome { kind: "trap".into(), message: "unreachable".into(), ..Default::default() });
        trap.result_json = String::new();
        let out = run_output(&trap);
        assert!(table(DETAIL_COLUMNS, out.clone()).contains("n1     message    unreachable"));
        assert_eq!(out.fields["result"], Value::Null);
        assert!(run_failed(&result(out)));
        assert!(run_failed(&[NodeResult { node: "n1".into(), outcome: Err("down".into()) }]));
    }

    #[test]
    fn human_units() {
        assert_eq!(human_duration(999), "999µs");
        assert_eq!(human_duration(1_500), "1.5ms");
        assert_eq!(human_duration(2_500_000), "2.50s");
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(64 << 20), "64.0 MiB");
    }

    /// A PluginService that checks uploads the way a node must (size,
    /// digest, signature) and records how they arrived.
    #[derive(Default)]
    struct FakeNode {
        trusted: Vec<TrustedKey>,
        chunk_sizes: std::sync::Mutex<Vec<usize>>,
    }

    #[tonic::async_trait]
    impl pb::plugin_service_server::PluginService for FakeNode {
        async fn install(
            &self,
            request: tonic::Request<tonic::Streaming<pb::PluginInstallRequest>>,
        ) -> Result<tonic::Response<pb::PluginInstallResponse>, tonic::Status> {
            use pb::plugin_install_request::Part;
            let mut stream = request.into_inner();
            let Some(pb::PluginInstallRequest { part: Some(Part::Header(header)) }) = stream.message().await? else {
                return Err(tonic::Status::invalid_argument("the first message must be the header"));
            };
            let mut wasm = Vec::new();
            while let Some(msg) = stream.message().await? {
                let Some(Part::Chunk(chunk)) = msg.part else {
                    return Err(tonic::Status::invalid_argument("a second header"));
                };
                self.chunk_sizes.lock().unwrap().push(chunk.len());
                wasm.extend_from_slice(&chunk);
            }
            if wasm.len() as u64 != header.wasm_size || bronze_bundle::sha256_hex(&wasm) != header.wasm_sha256 {
                return Err(tonic::Status::data_loss("upload does not match the header"));
            }
            let manifest = bronze_bundle::Manifest::parse(&header.manifest)
                .map_err(|e| tonic::Status::invalid_argument(e.to_string()))?;
            let signed_by = match header.signature.as_slice() {
                [] => String::new(),
                sig => bronze_bundle::verify(&wasm, &header.manifest, sig, &self.trusted)
                    .map(|k| k.to_string())
                    .map_err(|e| tonic::Status::permission_denied(e.to_string()))?,
            };
            Ok(tonic::Response::new(pb::PluginInstallResponse {
                id: manifest.id.to_string(),
                version: manifest.version.to_string(),
                previous_version: "0.1.0".into(),
                sha256: header.wasm_sha256,
                signed_by,
                compile_ms: 7,
                instances: vec![manifest.id.to_string()],
            }))
        }

        async fn list(
            &self,
            _: tonic::Request<pb::PluginListRequest>,
        ) -> Result<tonic::Response<pb::PluginListResponse>, tonic::Status> {
            Ok(tonic::Response::new(pb::PluginListResponse { plugins: vec![info()] }))
        }

        async fn remove(
            &self,
            request: tonic::Request<pb::PluginRemoveRequest>,
        ) -> Result<tonic::Response<pb::PluginRemoveResponse>, tonic::Status> {
            let id = request.into_inner().id;
            if id != "health-tcp" {
                return Err(tonic::Status::not_found(format!("no plugin {id:?} is installed")));
            }
            Ok(tonic::Response::new(pb::PluginRemoveResponse { id, version: "0.1.0".into() }))
        }

        async fn status(
            &self,
            _: tonic::Request<pb::PluginStatusRequest>,
        ) -> Result<tonic::Response<pb::PluginStatusResponse>, tonic::Status> {
            Ok(tonic::Response::new(pb::PluginStatusResponse { plugin: Some(info()), log: vec![] }))
        }

        async fn run(
            &self,
            request: tonic::Request<pb::PluginRunRequest>,
        ) -> Result<tonic::Response<pb::PluginRunResponse>, tonic::Status> {
            let outcome = pb::PluginOutcome { kind: "limit".into(), message: "memory".into(), ..Default::default() };
            Ok(tonic::Response::new(pb::PluginRunResponse {
                instance: request.into_inner().id,
                outcome: Some(outcome),
                result_json: String::new(),
            }))
        }
    }

    /// Serves `fake` on a loopback port (plaintext) and connects to it.
    async fn serve(fake: FakeNode) -> (NodeClient, Arc<FakeNode>) {
        use bronze_api::v1::machine_service_client::MachineServiceClient;
        use bronze_api::v1::plugin_service_client::PluginServiceClient;
        use bronze_api::v1::resource_service_client::ResourceServiceClient;
        let fake = Arc::new(fake);
        let incoming = tonic::transport::server::TcpIncoming::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = incoming.local_addr().unwrap();
        let service = pb::plugin_service_server::PluginServiceServer::from_arc(fake.clone());
        tokio::spawn(tonic::transport::Server::builder().add_service(service).serve_with_incoming(incoming));
        let channel =
            tonic::transport::Endpoint::from_shared(format!("http://{addr}")).unwrap().connect().await.unwrap();
        let client = NodeClient {
            node: addr.to_string(),
            machine: MachineServiceClient::new(channel.clone()),
            resources: ResourceServiceClient::new(channel.clone()),
            plugins: PluginServiceClient::new(channel.clone()),
            channel,
        };
        (client, fake)
    }

    #[tokio::test]
    async fn install_streams_a_signed_bundle_to_a_node() {
        let tmp = tempfile::tempdir().unwrap();
        let key_path = tmp.path().join("k.pem");
        let made = keygen(&key_path).unwrap();
        let dir = tmp.path().join("b");
        let len = 3 * CHUNK_SIZE + 1;
        bundle_dir(&dir, len);
        sign_dir(&key_path, &dir).unwrap();
        let (client, fake) = serve(FakeNode { trusted: vec![made.public_key.clone()], ..Default::default() }).await;

        let upload = Arc::new(prepare_install(&dir, None).unwrap());
        let out = install(client.clone(), upload, ProgressBar::hidden()).await.unwrap();
        assert_eq!(*fake.chunk_sizes.lock().unwrap(), [CHUNK_SIZE, CHUNK_SIZE, CHUNK_SIZE, 1]);
        assert_eq!(out.fields["change"], "upgraded 0.1.0 → 0.2.0");
        assert_eq!(out.fields["signedBy"], made.public_key.to_string());
        assert_eq!(out.fields["sha256"], bronze_bundle::sha256_hex(&wasm(len)));

        // A bundle signed by a stranger is refused by the node, as a sentence.
        let stranger = tmp.path().join("stranger.pem");
        keygen(&stranger).unwrap();
        let upload = Arc::new(prepare_install(&dir, Some(&stranger)).unwrap());
        let err = install(client.clone(), upload, ProgressBar::hidden()).await.unwrap_err();
        assert!(err.starts_with("permission denied: the signature does not verify with any trusted key"), "{err}");
    }

    #[tokio::test]
    async fn node_commands_shape_the_answers() {
        let (client, _fake) = serve(FakeNode::default()).await;
        let listed = list(client.clone()).await.unwrap();
        assert_eq!(listed.rows[0][0], "health-tcp");
        let shown = status(client.clone(), "health-tcp".into()).await.unwrap();
        assert_eq!(shown.fields["plugin"]["artifact"], "cache");
        let removed = remove(client.clone(), "health-tcp".into()).await.unwrap();
        assert_eq!(removed.rows, [["removed health-tcp 0.1.0"]]);
        let err = remove(client.clone(), "nope".into()).await.unwrap_err();
        assert_eq!(err, "not found: no plugin \"nope\" is installed");
        let ran = run_once(client.clone(), "health-tcp".into()).await.unwrap();
        assert_eq!(ran.fields["outcome"]["kind"], "limit");
        assert!(run_failed(&[NodeResult { node: "n1".into(), outcome: Ok(ran) }]));
    }
}
