//! API benchmarks, printed as figures (run with `cargo xtask bench`):
//!
//! 1. process-mode start → first Version answered over mTLS (median of N);
//! 2. unary Version throughput, 32 in flight on one channel, bronzed vs a
//!    bare tonic server with the same TLS (tonic's own mTLS, no authz, no
//!    audit), both as separate processes, alternated, reported as a ratio;
//! 3. idle RSS of bronzed after start (maintenance and configured).
//!
//! `bench-api bare-server ADDR CERT KEY CA` runs the bare server (used by
//! the benchmark itself).

use bronze_api::v1 as pb;
use bronze_api::v1::machine_service_server::{MachineService, MachineServiceServer};
use bronze_tests::{Node, NodeOptions, Pki, bin, free_port};
use bronzectl::client::NodeClient;
use bronzectl::connect::Auth;
use std::pin::Pin;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tonic::{Request, Response, Status};

const STARTS: usize = 20;
const IN_FLIGHT: usize = 32;
const ROUND: Duration = Duration::from_secs(4);
const ROUNDS: usize = 3;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    if args.get(1).map(String::as_str) == Some("bare-server") {
        return rt.block_on(bare_server(&args[2], &args[3], &args[4], &args[5]));
    }
    rt.block_on(async {
        println!("bronzed binary: {}", bin("bronzed").display());
        start_latency().await?;
        throughput().await?;
        idle_rss().await?;
        Ok(())
    })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

async fn start_latency() -> anyhow::Result<()> {
    let pki = Pki::new();
    let auth = pki.auth(&["os:admin"]);
    let tmp = tempfile::tempdir()?;
    let state = tmp.path().join("state");
    // Store the config once; every measured start boots from it.
    let mut first = Node::start_with(NodeOptions {
        config: Some(pki.node_config("bench")),
        state_dir: Some(state.clone()),
        ..Default::default()
    })
    .await;
    first.signal_and_wait(nix::sys::signal::Signal::SIGTERM, Duration::from_secs(10));
    let mut samples = Vec::new();
    for _ in 0..STARTS {
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let started = Instant::now();
        let mut child = Command::new(bin("bronzed"))
            .args(["--mode", "process", "--listen", &addr, "--log", "warn", "--state-dir"])
            .arg(&state)
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        loop {
            if let Ok(mut c) = NodeClient::connect(&addr, &auth).await
                && c.machine.version(pb::VersionRequest {}).await.is_ok()
            {
                break;
            }
            anyhow::ensure!(started.elapsed() < Duration::from_secs(20), "bronzed did not answer");
            tokio::time::sleep(Duration::from_micros(500)).await;
        }
        samples.push(started.elapsed().as_secs_f64() * 1000.0);
        stop(&mut child);
    }
    let min = samples.iter().cloned().fold(f64::MAX, f64::min);
    let max = samples.iter().cloned().fold(0.0, f64::max);
    println!("start → Version over mTLS: median {:.1} ms (min {min:.1}, max {max:.1}, n={STARTS})", median(samples));
    Ok(())
}

fn stop(child: &mut Child) {
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGTERM);
    let _ = child.wait();
}

/// Completed Version calls per second against `addr` with `auth`.
async fn load(addr: &str, auth: &Auth) -> anyhow::Result<f64> {
    let client = NodeClient::connect(addr, auth).await.map_err(anyhow::Error::msg)?;
    let done = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + ROUND;
    let tasks: Vec<_> = (0..IN_FLIGHT)
        .map(|_| {
            let mut c = client.machine.clone();
            let done = done.clone();
            tokio::spawn(async move {
                while Instant::now() < deadline {
                    if c.version(pb::VersionRequest {}).await.is_ok() {
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    let started = Instant::now();
    for t in tasks {
        t.await?;
    }
    Ok(done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64())
}

async fn throughput() -> anyhow::Result<()> {
    let pki = Pki::new();
    let auth = pki.auth(&["os:admin"]);
    let node = Node::start_with(NodeOptions { config: Some(pki.node_config("bench")), ..Default::default() }).await;

    let dir = tempfile::tempdir()?;
    let server = pki.authority.issue_server("bare", &["127.0.0.1".into()])?;
    let (cert, key, ca) = (dir.path().join("c"), dir.path().join("k"), dir.path().join("ca"));
    std::fs::write(&cert, &server.cert_pem)?;
    std::fs::write(&key, &server.key_pem)?;
    std::fs::write(&ca, &pki.ca.cert_pem)?;
    let bare_addr = format!("127.0.0.1:{}", free_port());
    let mut bare = Command::new(std::env::current_exe()?)
        .arg("bare-server")
        .arg(&bare_addr)
        .args([&cert, &key, &ca])
        .stdin(Stdio::null())
        .spawn()?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while NodeClient::connect(&bare_addr, &auth).await.is_err() {
        anyhow::ensure!(Instant::now() < deadline, "bare server did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        ours.push(load(&node.addr, &auth).await?);
        theirs.push(load(&bare_addr, &auth).await?);
    }
    stop(&mut bare);
    let (ours, theirs) = (median(ours), median(theirs));
    println!(
        "Version throughput, {IN_FLIGHT} in flight, one channel: bronzed {ours:.0} RPC/s, bare tonic {theirs:.0} RPC/s, ratio {:.2} (median of {ROUNDS} alternating {}s rounds)",
        ours / theirs,
        ROUND.as_secs()
    );
    Ok(())
}

fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).ok_or_else(|| anyhow::anyhow!("no VmRSS"))?;
    Ok(line.split_whitespace().nth(1).unwrap_or("0").parse()?)
}

async fn idle_rss() -> anyhow::Result<()> {
    let maintenance = Node::start().await;
    let pki = Pki::new();
    let configured = Node::start_configured(&pki.node_config("bench")).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    println!(
        "idle RSS after start: maintenance {:.1} MiB, configured {:.1} MiB",
        rss_kib(maintenance.pid())? as f64 / 1024.0,
        rss_kib(configured.pid())? as f64 / 1024.0
    );
    Ok(())
}

/// Only Version is implemented: that is all the benchmark calls.
struct Bare;

type Stream<T> = Pin<Box<dyn tokio_stream::Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl MachineService for Bare {
    async fn version(&self, _: Request<pb::VersionRequest>) -> Result<Response<pb::VersionResponse>, Status> {
        Ok(Response::new(pb::VersionResponse {
            tag: concat!("v", env!("CARGO_PKG_VERSION")).into(),
            commit: "unknown".into(),
            mode: "process".into(),
            maintenance: false,
            arch: std::env::consts::ARCH.into(),
            os: std::env::consts::OS.into(),
            maintenance_reason: String::new(),
            ..Default::default()
        }))
    }
    async fn hostname(&self, _: Request<pb::HostnameRequest>) -> Result<Response<pb::HostnameResponse>, Status> {
        Err(Status::unimplemented("bare"))
    }
    async fn apply_configuration(
        &self,
        _: Request<pb::ApplyConfigurationRequest>,
    ) -> Result<Response<pb::ApplyConfigurationResponse>, Status> {
        Err(Status::unimplemented("bare"))
    }
    async fn get_configuration(
        &self,
        _: Request<pb::GetConfigurationRequest>,
    ) -> Result<Response<pb::GetConfigurationResponse>, Status> {
        Err(Status::unimplemented("bare"))
    }
    async fn generate_client_configuration(
        &self,
        _: Request<pb::GenerateClientConfigurationRequest>,
    ) -> Result<Response<pb::GenerateClientConfigurationResponse>, Status> {
        Err(Status::unimplemented("bare"))
    }
    async fn reboot(&self, _: Request<pb::RebootRequest>) -> Result<Response<pb::RebootResponse>, Status> {
        Err(Status::unimplemented("bare"))
    }
    async fn shutdown(&self, _: Request<pb::ShutdownRequest>) -> Result<Response<pb::ShutdownResponse>, Status> {
        Err(Status::unimplemented("bare"))
    }
    type EventsStream = Stream<pb::Event>;
    async fn events(&self, _: Request<pb::EventsRequest>) -> Result<Response<Self::EventsStream>, Status> {
        Err(Status::unimplemented("bare"))
    }
    async fn memory(&self, _: Request<pb::MemoryRequest>) -> Result<Response<pb::MemoryResponse>, Status> {
        Err(Status::unimplemented("bare"))
    }
    async fn load_avg(&self, _: Request<pb::LoadAvgRequest>) -> Result<Response<pb::LoadAvgResponse>, Status> {
        Err(Status::unimplemented("bare"))
    }
    async fn upgrade(
        &self,
        _: Request<tonic::Streaming<pb::UpgradeRequest>>,
    ) -> Result<Response<pb::UpgradeResponse>, Status> {
        Err(Status::unimplemented("bare"))
    }
    async fn rollback(&self, _: Request<pb::RollbackRequest>) -> Result<Response<pb::RollbackResponse>, Status> {
        Err(Status::unimplemented("bare"))
    }
    async fn reset(&self, _: Request<pb::ResetRequest>) -> Result<Response<pb::ResetResponse>, Status> {
        Err(Status::unimplemented("bare"))
    }
    async fn platform_refresh(
        &self,
        _: Request<pb::PlatformRefreshRequest>,
    ) -> Result<Response<pb::PlatformRefreshResponse>, Status> {
        Err(Status::unimplemented("bare"))
    }
    async fn service_list(
        &self,
        _: Request<pb::ServiceListRequest>,
    ) -> Result<Response<pb::ServiceListResponse>, Status> {
        Err(Status::unimplemented("bare"))
    }
    async fn service_start(&self, _: Request<pb::ServiceRequest>) -> Result<Response<pb::ServiceResponse>, Status> {
        Err(Status::unimplemented("bare"))
    }
    async fn service_stop(&self, _: Request<pb::ServiceRequest>) -> Result<Response<pb::ServiceResponse>, Status> {
        Err(Status::unimplemented("bare"))
    }
    async fn service_restart(&self, _: Request<pb::ServiceRequest>) -> Result<Response<pb::ServiceResponse>, Status> {
        Err(Status::unimplemented("bare"))
    }
    type LogsStream = Stream<pb::LogEntry>;
    async fn logs(&self, _: Request<pb::LogsRequest>) -> Result<Response<Self::LogsStream>, Status> {
        Err(Status::unimplemented("bare"))
    }
    type DmesgStream = Stream<pb::DmesgEntry>;
    async fn dmesg(&self, _: Request<pb::DmesgRequest>) -> Result<Response<Self::DmesgStream>, Status> {
        Err(Status::unimplemented("bare"))
    }
}

async fn bare_server(addr: &str, cert: &str, key: &str, ca: &str) -> anyhow::Result<()> {
    use tonic::transport::{Certificate, Identity, ServerTlsConfig};
    let identity = Identity::from_pem(std::fs::read(cert)?, std::fs::read(key)?);
    let tls = ServerTlsConfig::new().identity(identity).client_ca_root(Certificate::from_pem(std::fs::read(ca)?));
    tonic::transport::Server::builder()
        .tls_config(tls)?
        .add_service(MachineServiceServer::new(Bare))
        .serve(addr.parse()?)
        .await?;
    Ok(())
}
