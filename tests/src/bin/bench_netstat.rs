//! netstat benchmark (root; run with
//! `cargo build --release -p bronze-tests --bin bench-netstat && ./target/release/bench-netstat [RUNS]`):
//!
//! The bench moves itself into a fresh network namespace of its own
//! (`unshare(CLONE_NEWNET)`, `lo` up), raises RLIMIT_NOFILE and opens
//! 5,000 connected TCP pairs on loopback plus their listener: 10,001 TCP
//! sockets, all held by this process. Then, alternating, RUNS times each
//! (default 15):
//!
//! - bronzed's netstat for TCP (`Filter { tcp }`: IPv4 and IPv6, every
//!   state, owning processes), the library function the RPC handler runs;
//! - `ss -tanp` (iproute2) in the same namespace, its output read through a
//!   pipe and thrown away, process start included.
//!
//! And, when a `bronzed` sits next to this binary (release: `cargo build
//! --release --bins`), the `Netstat` RPC end to end (a process-mode node in
//! the same namespace, a reader over mTLS on loopback). Prints medians and
//! the ratio of wall times. Both tools see every socket of this namespace
//! and scan every process's descriptors under /proc, so other processes on
//! the machine weigh on both.

use bronze_api::v1::NetstatRequest;
use bronze_api::v1::network_service_client::NetworkServiceClient;
use bronze_host::network::sockets::{Filter, netstat};
use bronze_tests::{Node, NodeOptions, Pki};
use nix::sched::{CloneFlags, unshare};
use nix::sys::resource::{Resource, getrlimit, setrlimit};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const PAIRS: usize = 5_000;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

/// One `ss -tanp`, its output read and counted; the wall time.
fn ss() -> anyhow::Result<(Duration, usize)> {
    let started = Instant::now();
    let out = Command::new("ss").arg("-tanp").stdin(Stdio::null()).stderr(Stdio::inherit()).output()?;
    let took = started.elapsed();
    anyhow::ensure!(out.status.success(), "ss -tanp: {}", out.status);
    Ok((took, out.stdout.split(|&b| b == b'\n').filter(|l| !l.is_empty()).count().saturating_sub(1)))
}

fn main() -> anyhow::Result<()> {
    let runs: usize = std::env::args().nth(1).map(|s| s.parse()).transpose()?.unwrap_or(15);
    anyhow::ensure!(runs > 0, "RUNS must be at least 1");
    anyhow::ensure!(nix::unistd::Uid::effective().is_root(), "the bench needs root (a network namespace of its own)");
    // Before any thread: the namespace is the calling thread's.
    unshare(CloneFlags::CLONE_NEWNET)?;
    let up = Command::new("ip").args(["link", "set", "lo", "up"]).status()?;
    anyhow::ensure!(up.success(), "ip link set lo up: {up}");
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    let want = (2 * PAIRS as u64 + 1024).max(hard.min(1 << 20));
    setrlimit(Resource::RLIMIT_NOFILE, want, want.max(hard))?;

    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    let addr = listener.local_addr()?;
    let mut pairs = Vec::with_capacity(PAIRS);
    for _ in 0..PAIRS {
        let client = TcpStream::connect(addr)?;
        let (server, _) = listener.accept()?;
        pairs.push((client, server));
    }
    let filter = Filter { tcp: true, ..Default::default() };
    let first = netstat(&filter, Path::new("/proc"))?;
    let me = std::process::id();
    let owned = first.sockets.iter().filter(|s| s.owners.iter().any(|o| o.pid == me)).count();
    println!(
        "{} TCP sockets in the namespace, {owned} of them shown as this process's; warnings: {:?}",
        first.sockets.len(),
        first.warnings
    );
    anyhow::ensure!(owned > 2 * PAIRS, "only {owned} sockets were found as this process's");
    let (_, ss_lines) = ss()?;
    println!("ss -tanp lists {ss_lines} sockets");

    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        let started = Instant::now();
        let n = netstat(&filter, Path::new("/proc"))?;
        ours.push(started.elapsed());
        anyhow::ensure!(n.sockets.len() > 2 * PAIRS, "netstat lost sockets: {}", n.sockets.len());
        theirs.push(ss()?.0);
    }
    let (ours, theirs) = (median(ours), median(theirs));
    println!(
        "netstat --tcp (library, {} sockets): {}; ss -tanp: {}; ratio {:.2} (medians of {runs})",
        first.sockets.len(),
        ms(ours),
        ms(theirs),
        ours.as_secs_f64() / theirs.as_secs_f64()
    );

    let bronzed = std::env::current_exe()?.with_file_name("bronzed");
    if !bronzed.exists() {
        println!("RPC: skipped ({} is not built)", bronzed.display());
        return Ok(());
    }
    let profile =
        bronzed.parent().and_then(|d| d.file_name()).map(|d| d.to_string_lossy().into_owned()).unwrap_or_default();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    runtime.block_on(async {
        let pki = Pki::new();
        let node = Node::start_with(NodeOptions { config: Some(pki.node_config("bench")), ..Default::default() }).await;
        let reader = node.client(&pki.auth(&["os:reader"])).await;
        let mut client = NetworkServiceClient::new(reader.channel.clone()).max_decoding_message_size(64 << 20);
        let req = NetstatRequest { tcp: true, ..Default::default() };
        let warm = match client.netstat(req).await {
            Ok(answer) => answer.into_inner(),
            // An older bronzed without the RPC (unknown calls are admin-only).
            Err(status) => {
                println!("RPC: skipped ({} answered {:?}: {}; rebuild it)", bronzed.display(), status.code(), status.message());
                return Ok(());
            }
        };
        let (mut rpc, mut theirs) = (Vec::new(), Vec::new());
        for _ in 0..runs {
            let started = Instant::now();
            let n = client.netstat(req).await?.into_inner();
            rpc.push(started.elapsed());
            anyhow::ensure!(n.sockets.len() > 2 * PAIRS, "the RPC lost sockets: {}", n.sockets.len());
            theirs.push(ss()?.0);
        }
        let (rpc, theirs) = (median(rpc), median(theirs));
        println!(
            "Netstat RPC --tcp ({} bronzed, reader, mTLS, {} sockets): {}; ss -tanp: {}; ratio {:.2} (medians of {runs})",
            profile,
            warm.sockets.len(),
            ms(rpc),
            ms(theirs),
            rpc.as_secs_f64() / theirs.as_secs_f64()
        );
        Ok(())
    })
}
