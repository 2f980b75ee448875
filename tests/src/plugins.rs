//! Plugin helpers for end-to-end tests: the bundles built from `plugins/`
//! (first-party and fixtures), signing keys, configs with plugin instances,
//! and uploading bundles over the real API.

use bronze_api::v1 as pb;
use bronze_api::v1::plugin_service_client::PluginServiceClient;
use bronze_bundle::{Bundle, SigningKey};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use tonic::transport::Channel;

/// The workspace's target dir (where `bin` finds the binaries).
fn target_dir() -> PathBuf {
    let bronzed = crate::bin("bronzed");
    bronzed.parent().and_then(Path::parent).expect("target/<profile>/bronzed").to_path_buf()
}

fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_path_buf()
}

/// Builds the plugin bundles once per test process (`cargo xtask plugins`,
/// cheap when up to date), so tests always run components compiled from
/// the current sources.
pub fn ensure_bundles() {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let status = std::process::Command::new(env!("CARGO"))
            .args(["run", "--quiet", "--package", "xtask", "--", "plugins"])
            .current_dir(workspace_root())
            .env("CARGO_TARGET_DIR", target_dir())
            .stdout(std::process::Stdio::null())
            .status()
            .expect("run cargo xtask plugins");
        assert!(status.success(), "cargo xtask plugins failed: {status}");
    });
}

/// The bundle directory of a first-party plugin or a test fixture.
pub fn bundle_dir(id: &str) -> PathBuf {
    ensure_bundles();
    let target = target_dir();
    for dir in [target.join("plugins").join(id), target.join("plugin-fixtures").join(id)] {
        if dir.join("plugin.wasm").exists() {
            return dir;
        }
    }
    panic!("no bundle for {id} under {}/plugins or plugin-fixtures", target.display());
}

/// A bundle as built, unsigned.
pub fn bundle(id: &str) -> Bundle {
    Bundle::load(&bundle_dir(id)).unwrap_or_else(|e| panic!("load bundle {id}: {e}"))
}

/// `bundle` signed with `key`.
pub fn signed(mut bundle: Bundle, key: &SigningKey) -> Bundle {
    bundle.signature = Some(key.sign(&bundle.wasm, &bundle.manifest_bytes).to_file_bytes());
    bundle
}

/// A node config (from the embedded template) whose `machine.plugins`
/// section is `plugins_yaml`, indented by four spaces per level relative
/// to `plugins:` (e.g. "trustedKeys: [..]\n    instances: ...").
pub fn config_with_plugins(pki: &crate::Pki, hostname: &str, plugins_yaml: &str) -> String {
    let config = pki.node_config(hostname);
    let start = config.find("  plugins:\n").expect("template has a plugins section");
    let end = start + config[start..].find("\n  logging:").expect("logging follows plugins");
    format!("{}  plugins:\n    {plugins_yaml}\n{}", &config[..start], &config[end..])
}

/// One `machine.plugins.instances` entry, indented for [`config_with_plugins`]
/// after `instances:`; `config` and `grants` are YAML flow-mapping bodies.
pub fn instance_yaml(id: &str, plugin: &str, config: &str, grants: &str, interval: Option<&str>) -> String {
    let mut yaml = format!(
        "\n      - id: {id}\n        plugin: {plugin}\n        config: {{ {config} }}\n        grants: {{ {grants} }}"
    );
    if let Some(interval) = interval {
        yaml.push_str(&format!("\n        schedule: {{ interval: {interval} }}"));
    }
    yaml
}

/// Uploads `bundle` with `PluginService.Install` in 64 KiB chunks.
pub async fn install(channel: Channel, bundle: &Bundle) -> Result<pb::PluginInstallResponse, tonic::Status> {
    let header = pb::PluginInstallHeader {
        manifest: bundle.manifest_bytes.clone(),
        signature: bundle.signature.clone().unwrap_or_default(),
        wasm_size: bundle.wasm.len() as u64,
        wasm_sha256: bronze_bundle::sha256_hex(&bundle.wasm),
    };
    install_raw(channel, header, bundle.wasm.chunks(64 << 10).map(<[u8]>::to_vec).collect()).await
}

/// Uploads exactly the given header and chunks.
pub async fn install_raw(
    channel: Channel,
    header: pb::PluginInstallHeader,
    chunks: Vec<Vec<u8>>,
) -> Result<pb::PluginInstallResponse, tonic::Status> {
    use pb::plugin_install_request::Part;
    let mut messages = vec![pb::PluginInstallRequest { part: Some(Part::Header(header)) }];
    messages.extend(chunks.into_iter().map(|c| pb::PluginInstallRequest { part: Some(Part::Chunk(c)) }));
    let mut client = PluginServiceClient::new(channel).max_decoding_message_size(16 << 20);
    client.install(futures::stream::iter(messages)).await.map(tonic::Response::into_inner)
}

pub fn client(channel: Channel) -> PluginServiceClient<Channel> {
    PluginServiceClient::new(channel).max_decoding_message_size(16 << 20)
}

/// A `plugins run` over the API; panics with the status if it fails.
pub async fn run(c: &bronzectl::client::NodeClient, id: &str) -> pb::PluginRunResponse {
    client(c.channel.clone())
        .run(pb::PluginRunRequest { id: id.into() })
        .await
        .unwrap_or_else(|e| panic!("run {id}: {e}"))
        .into_inner()
}

/// Every file under `dir`, relative, sorted (to prove nothing was left).
pub fn files_under(dir: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        let Ok(entries) = std::fs::read_dir(dir) else { return };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(root, &path, out);
            } else {
                out.push(path.strip_prefix(root).expect("under root").display().to_string());
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// Resident set size of a process, from /proc.
pub fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS");
    kib * 1024
}

/// A small HTTP/1.1 server on 127.0.0.1 for plugin tests: `/ok/...` → 200,
/// `/bad` → 500, `/ok/redirect-out` → 302 to `/other`, `/ok/redirect-in` →
/// 302 to `/ok/`, `/slow...` never answers. It counts requests per path, so
/// tests can prove a denied request never reached it.
pub struct TestHttpServer {
    pub port: u16,
    hits: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl TestHttpServer {
    pub async fn start() -> TestHttpServer {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let hits = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = hits.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut stream, _)) = listener.accept().await else { return };
                let seen = seen.clone();
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16 << 10 {
                        match stream.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    let text = String::from_utf8_lossy(&head);
                    let path = text.split_whitespace().nth(1).unwrap_or("").to_string();
                    seen.lock().unwrap().push(path.clone());
                    let response = if path.starts_with("/slow") {
                        tokio::time::sleep(std::time::Duration::from_secs(3600)).await;
                        return;
                    } else if path == "/ok/redirect-out" {
                        format!(
                            "HTTP/1.1 302 Found\r\nLocation: http://127.0.0.1:{port}/other\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                        )
                    } else if path == "/ok/redirect-in" {
                        "HTTP/1.1 302 Found\r\nLocation: /ok/\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                            .to_string()
                    } else if path.starts_with("/ok") {
                        "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok".to_string()
                    } else if path == "/bad" {
                        "HTTP/1.1 500 Internal Server Error\r\nContent-Length: 4\r\nConnection: close\r\n\r\nfail"
                            .to_string()
                    } else {
                        "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_string()
                    };
                    let _ = stream.write_all(response.as_bytes()).await;
                    let _ = stream.shutdown().await;
                });
            }
        });
        TestHttpServer { port, hits, task }
    }

    /// The request paths seen so far.
    pub fn hits(&self) -> Vec<String> {
        self.hits.lock().unwrap().clone()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
}

impl Drop for TestHttpServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}
