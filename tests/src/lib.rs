//! Shared helpers for Bronze's end-to-end tests: start real `bronzed`
//! processes on free loopback ports with temp state dirs, make a fresh PKI
//! per test, mint clients with roles, and run the real `bronzectl`.
//!
//! The binaries are built by `cargo xtask test` (or `cargo build --bins`)
//! before the tests run; [`bin`] says so plainly when they are missing.

pub mod afterburn;
pub mod dnsmasq;
pub mod mockcloud;
pub mod netnode;
pub mod netns;
pub mod ntp;
pub mod plugins;
pub mod provider;
pub mod talos;
pub mod talos_network;
pub mod vmnode;

use bronze_pki::{CertAndKey, CertificateAuthority, ClientCertSpec};
use bronzectl::client::NodeClient;
use bronzectl::clientconfig::{ClientConfig, Context};
use bronzectl::connect::Auth;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a node may take to answer its first RPC.
pub const START_DEADLINE: Duration = Duration::from_secs(20);

/// `target/<profile>`, from the running test executable.
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // Tests live in target/<profile>/deps/, bench binaries in target/<profile>/.
    let mut dir = exe.parent().expect("target dir layout");
    if dir.ends_with("deps") {
        dir = dir.parent().expect("target dir layout");
    }
    dir.to_path_buf()
}

/// Path of a workspace binary next to the running test executable.
pub fn bin(name: &str) -> PathBuf {
    let path = profile_dir().join(name);
    assert!(path.exists(), "{} is missing: run `cargo build --bins` first (cargo xtask test does)", path.display());
    path
}

/// The Python of the venv that `cargo xtask test` makes at `target/pyenv`
/// with the packages of `tests/python/requirements.txt`.
pub fn python() -> PathBuf {
    let venv = profile_dir().parent().expect("target dir layout").join("pyenv");
    let path = venv.join("bin/python");
    assert!(
        path.is_file(),
        "{} is missing: `cargo xtask test` creates it; or run `python3 -m venv {} && {}/bin/pip install -r \
         tests/python/requirements.txt`",
        path.display(),
        venv.display(),
        venv.display()
    );
    path
}

/// A script of `tests/python/`.
pub fn python_script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("python").join(name)
}

/// `config` (a whole machine config, its `machine:` section last, as the
/// template and [`plugins::config_with_plugins`] make it) trusting `key` for
/// upgrade bundles (`machine.upgrade.trustedKeys`).
pub fn trusting_upgrades(config: &str, key: &bronze_bundle::SigningKey) -> String {
    format!("{config}  upgrade:\n    trustedKeys:\n      - {}\n", key.public_key())
}

/// A directory standing in for an ESP (`bronzed --boot-dir`) with slot `a`
/// holding `kernel` and `initrd`, good, generation 1, release `v0.1.0`.
pub fn boot_dir(dir: &Path, kernel: &[u8], initrd: &[u8]) -> bronze_boot::Esp {
    use bronze_boot::{Entry, Esp, INITRD_FILE, KERNEL_FILE, Slot};
    let esp = Esp::new(dir);
    std::fs::create_dir_all(esp.slot_dir(Slot::A)).expect("slot dir");
    std::fs::write(esp.slot_dir(Slot::A).join(KERNEL_FILE), kernel).expect("kernel");
    std::fs::write(esp.slot_dir(Slot::A).join(INITRD_FILE), initrd).expect("initrd");
    let a = Entry { slot: Slot::A, generation: 1, release: "v0.1.0".into(), options: "console=ttyS0".into() };
    esp.write_entry(&a, None).expect("entry");
    esp
}

/// A loopback TCP port nothing is bound to, never handed out twice in one
/// process and outside the range outgoing connections take their ports from
/// ([`bronze_images::vm::free_port`]).
pub fn free_port() -> u16 {
    bronze_images::vm::free_port().expect("free port")
}

/// A loopback UDP port nothing is bound to, on the same terms as
/// [`free_port`]: for a time server that is not there, or chronyd to bind.
pub fn free_udp_port() -> u16 {
    bronze_images::vm::free_udp_port().expect("free UDP port")
}

/// A loopback TCP port that refuses connections for as long as this value
/// lives: a socket bound to it without listening holds it, so no other test
/// can take it meanwhile (a port from [`free_port`] is free only until
/// another test's node binds it).
pub struct ClosedPort {
    pub port: u16,
    _socket: tokio::net::TcpSocket,
}

pub fn closed_port() -> ClosedPort {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.bind(([127, 0, 0, 1], 0).into()).expect("bind a loopback port");
    let port = socket.local_addr().expect("local address").port();
    ClosedPort { port, _socket: socket }
}

/// A fresh CA for one test; keys never leave the temp dirs.
pub struct Pki {
    pub ca: CertAndKey,
    pub authority: CertificateAuthority,
}

impl Default for Pki {
    fn default() -> Self {
        Self::new()
    }
}

impl Pki {
    pub fn new() -> Self {
        let ca = bronze_pki::generate_ca("bronze test CA", bronze_pki::KeyType::default()).expect("ca");
        let authority = CertificateAuthority::from_pem(&ca.cert_pem, &ca.key_pem).expect("ca loads");
        Self { ca, authority }
    }

    /// A complete node config from the embedded template.
    pub fn node_config(&self, hostname: &str) -> String {
        bronze_config::render_default(&self.ca.cert_pem, &self.ca.key_pem, hostname, &["127.0.0.1".to_string()])
    }

    /// A node config whose `machine.time` section is replaced by `time_yaml`
    /// (indented four spaces, e.g. "servers: [\"127.0.0.1:123\"]\n    minPoll: 1s").
    pub fn node_config_with_time(&self, hostname: &str, time_yaml: &str) -> String {
        let config = self.node_config(hostname);
        let start = config.find("  time:\n").expect("template has a time section");
        let end = start + config[start..].find("\n  kernel:").expect("kernel follows time");
        format!("{}  time:\n    {time_yaml}{}", &config[..start], &config[end..])
    }

    /// A client certificate for `roles`.
    pub fn client(&self, roles: &[&str]) -> CertAndKey {
        let roles: Vec<String> = roles.iter().map(|r| r.to_string()).collect();
        self.client_with(&ClientCertSpec::new("test-client", &roles, Duration::from_secs(3600)))
    }

    pub fn client_with(&self, spec: &ClientCertSpec) -> CertAndKey {
        self.authority.issue_client(spec).expect("client cert")
    }

    /// mTLS credentials for `roles`.
    pub fn auth(&self, roles: &[&str]) -> Auth {
        self.auth_for(&self.client(roles))
    }

    pub fn auth_for(&self, cert: &CertAndKey) -> Auth {
        Auth::Mtls { ca: self.ca.cert_pem.clone(), crt: cert.cert_pem.clone(), key: cert.key_pem.clone() }
    }

    /// Writes a bronzeconfig for `nodes` with a client of `roles`.
    pub fn write_bronzeconfig(&self, path: &Path, nodes: &[String], roles: &[&str]) {
        let cert = self.client(roles);
        let ctx =
            Context { nodes: nodes.to_vec(), ca: self.ca.cert_pem.clone(), crt: cert.cert_pem, key: cert.key_pem };
        ClientConfig { context: "test".into(), contexts: [("test".to_string(), ctx)].into() }.save(path).expect("save");
    }
}

/// A running `bronzed --mode process`.
pub struct Node {
    pub addr: String,
    pub state_dir: PathBuf,
    child: Option<Child>,
    log: Arc<Mutex<String>>,
    _tmp: Option<tempfile::TempDir>,
}

/// Options for [`Node::start_with`].
#[derive(Default)]
pub struct NodeOptions {
    /// Initial config file contents (`--config`).
    pub config: Option<String>,
    /// Reuse this state dir instead of a fresh temp one.
    pub state_dir: Option<PathBuf>,
    /// Fixed port instead of a free one.
    pub port: Option<u16>,
    /// Extra bronzed arguments.
    pub args: Vec<String>,
    /// A command that runs bronzed, which is appended with its arguments
    /// (e.g. `unshare --mount ... sh -c '...; exec "$@"' sh`); it must exec
    /// bronzed, so that the node's PID is bronzed's.
    pub wrapper: Vec<String>,
}

impl Node {
    /// A node in maintenance mode.
    pub async fn start() -> Node {
        Self::start_with(NodeOptions::default()).await
    }

    /// A node started with `config`.
    pub async fn start_configured(config: &str) -> Node {
        Self::start_with(NodeOptions { config: Some(config.to_string()), ..Default::default() }).await
    }

    pub async fn start_with(opts: NodeOptions) -> Node {
        let mut node = Self::spawn(opts);
        node.wait_ready().await;
        node
    }

    /// Starts the process without waiting for the API.
    pub fn spawn(opts: NodeOptions) -> Node {
        let (tmp, state_dir) = match opts.state_dir {
            Some(dir) => (None, dir),
            None => {
                let tmp = tempfile::tempdir().expect("tempdir");
                let dir = tmp.path().join("state");
                (Some(tmp), dir)
            }
        };
        let port = opts.port.unwrap_or_else(free_port);
        let addr = format!("127.0.0.1:{port}");
        let mut cmd = match opts.wrapper.split_first() {
            Some((program, args)) => {
                let mut cmd = Command::new(program);
                cmd.args(args).arg(bin("bronzed"));
                cmd
            }
            None => Command::new(bin("bronzed")),
        };
        cmd.args(["--mode", "process", "--listen", &addr, "--state-dir"]).arg(&state_dir).args(&opts.args);
        if let Some(config) = opts.config {
            let path = state_dir.with_extension("initial.yaml");
            std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
            std::fs::write(&path, config).expect("write initial config");
            cmd.arg("--config").arg(path);
        }
        cmd.env("RUST_LOG", "info").stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn bronzed");
        let log = Arc::new(Mutex::new(String::new()));
        let stderr = child.stderr.take().expect("stderr");
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut log = sink.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        Node { addr, state_dir, child: Some(child), log, _tmp: tmp }
    }

    /// Waits until the API answers a real RPC (any gRPC status counts:
    /// Unauthenticated also proves the server is up).
    pub async fn wait_ready(&mut self) {
        let deadline = Instant::now() + START_DEADLINE;
        loop {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                panic!("bronzed exited early with {status}:\n{}", self.log());
            }
            if let Ok(mut c) = NodeClient::connect(&self.addr, &Auth::Insecure { fingerprint: None }).await {
                let answered = match c.machine.version(bronze_api::v1::VersionRequest {}).await {
                    Ok(_) => true,
                    Err(status) => status.code() != tonic::Code::Unavailable && status.code() != tonic::Code::Unknown,
                };
                if answered {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "bronzed at {} did not answer within {START_DEADLINE:?}:\n{}",
                self.addr,
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Everything bronzed logged so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// The maintenance certificate's SPKI fingerprint, from the log.
    pub fn fingerprint(&self) -> String {
        let log = self.log();
        let start =
            log.find("fingerprint=").unwrap_or_else(|| panic!("no fingerprint in log:\n{log}")) + "fingerprint=".len();
        log[start..start + 64].to_string()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// The stored config bytes, if any.
    pub fn stored_config(&self) -> Option<Vec<u8>> {
        std::fs::read(self.state_dir.join("config.yaml")).ok()
    }

    /// SIGKILLs bronzed and everything it started: its services run in
    /// their own process groups and would outlive it (a real PID 1 takes
    /// them down with the machine).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let descendants = descendants(child.id() as i32);
            let _ = child.kill();
            let _ = child.wait();
            kill_all(&descendants);
        }
    }

    /// Sends `signal` and waits up to `timeout` for the exit status.
    pub fn signal_and_wait(&mut self, signal: nix::sys::signal::Signal, timeout: Duration) -> std::process::ExitStatus {
        let child = self.child.as_mut().expect("running");
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), signal).expect("signal");
        self.wait_exit(timeout)
    }

    /// Waits for the process to exit by itself.
    pub fn wait_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + timeout;
        let child = self.child.as_mut().expect("running");
        loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                self.child = None;
                return status;
            }
            assert!(Instant::now() < deadline, "bronzed did not exit within {timeout:?}:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// A gRPC client with `auth`.
    pub async fn client(&self, auth: &Auth) -> NodeClient {
        NodeClient::connect(&self.addr, auth).await.expect("connect")
    }

    /// Applies `config` in maintenance mode, pinning the fingerprint.
    pub async fn apply_maintenance(&self, config: &str) {
        let auth = Auth::Insecure { fingerprint: Some(self.fingerprint()) };
        let mut c = self.client(&auth).await;
        c.machine
            .apply_configuration(bronze_api::v1::ApplyConfigurationRequest {
                data: config.as_bytes().to_vec(),
                ..Default::default()
            })
            .await
            .expect("apply in maintenance mode");
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Every process below `pid` (children, their children, ...) as (pid,
/// process group), from the node's own /proc reader.
pub fn descendants(pid: i32) -> Vec<(i32, i32)> {
    let table = bronze_host::procs::read(Path::new("/proc")).map(|s| s.processes).unwrap_or_default();
    let mut found: Vec<(i32, i32)> = Vec::new();
    let mut parents = vec![pid];
    while let Some(parent) = parents.pop() {
        for p in table.iter().map(|p| &p.stat).filter(|s| s.ppid == parent) {
            if !found.iter().any(|&(f, _)| f == p.pid)
                && let Ok(group) = nix::unistd::getpgid(Some(nix::unistd::Pid::from_raw(p.pid)))
            {
                found.push((p.pid, group.as_raw()));
                parents.push(p.pid);
            }
        }
    }
    found
}

/// SIGKILLs each of `processes` and its process group (except this
/// process's own group).
pub fn kill_all(processes: &[(i32, i32)]) {
    use nix::sys::signal::{Signal, kill, killpg};
    use nix::unistd::{Pid, getpgrp};
    let own = getpgrp();
    for &(pid, pgrp) in processes {
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        if Pid::from_raw(pgrp) != own && pgrp > 1 {
            let _ = killpg(Pid::from_raw(pgrp), Signal::SIGKILL);
        }
    }
}

/// The spec of one resource as JSON (via `ResourceService.Get`).
pub async fn resource_spec(c: &mut NodeClient, r#type: &str, id: &str) -> serde_json::Value {
    let got = c
        .resources
        .get(bronze_api::v1::GetRequest { namespace: String::new(), r#type: r#type.into(), id: id.into() })
        .await
        .unwrap_or_else(|e| panic!("get {type} {id}: {e}"))
        .into_inner();
    serde_json::from_str(&got.resource.expect("resource").spec_json).expect("spec json")
}

/// Result of running `bronzectl`.
#[derive(Debug)]
pub struct CtlRun {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// Runs the real `bronzectl` with `args`, using `bronzeconfig` if given.
pub async fn bronzectl(bronzeconfig: Option<&Path>, args: &[&str]) -> CtlRun {
    let mut cmd = tokio::process::Command::new(bin("bronzectl"));
    cmd.args(args).env_remove("BRONZECONFIG").stdin(Stdio::null());
    if let Some(path) = bronzeconfig {
        cmd.env("BRONZECONFIG", path);
    }
    let Output { status, stdout, stderr } = cmd.output().await.expect("run bronzectl");
    CtlRun {
        code: status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    }
}

/// Calls any RPC by path with an empty message and returns its status
/// (Ok when the call was admitted and its first answer was not an error).
/// Works for unary and streaming methods alike: on the wire a unary call is
/// a stream of one message.
pub async fn call_raw(channel: tonic::transport::Channel, path: &'static str) -> Result<(), tonic::Status> {
    use tonic::codegen::http::uri::PathAndQuery;
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let codec = tonic_prost::ProstCodec::<(), ()>::default();
    let request = tonic::Request::new(futures::stream::iter(vec![()]));
    let response = grpc.streaming(request, PathAndQuery::from_static(path), codec).await?;
    let mut stream = response.into_inner();
    // Long-lived streams (Watch, Events follow) may never end: the first
    // message or a short wait is enough to know the call was admitted.
    match tokio::time::timeout(Duration::from_millis(300), stream.message()).await {
        Ok(Err(status)) => Err(status),
        _ => Ok(()),
    }
}

/// Every RPC path the server exposes, read from the descriptor sets.
pub fn all_rpc_paths() -> Vec<String> {
    use prost::Message;
    let sets = [
        bronze_api::FILE_DESCRIPTOR_SET,
        tonic_health::pb::FILE_DESCRIPTOR_SET,
        tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
        tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
    ];
    let mut paths = Vec::new();
    for bytes in sets {
        let set = prost_types::FileDescriptorSet::decode(bytes).expect("descriptor set");
        for file in set.file {
            for service in &file.service {
                for method in &service.method {
                    paths.push(format!("/{}.{}/{}", file.package(), service.name(), method.name()));
                }
            }
        }
    }
    paths
}

#[cfg(test)]
mod tests {
    /// The image writes its module list where PID 1 reads it; the two crates
    /// cannot share the constant (the host does not link the image builder),
    /// and a mismatch would silently fall back to the host's default list.
    #[test]
    fn the_image_and_pid1_agree_on_the_module_list_path() {
        assert_eq!(bronze_images::kmod::LOAD_ORDER_PATH, bronze_host::init::kmod::IMAGE_LOAD_ORDER);
    }
}
