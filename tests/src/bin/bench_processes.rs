//! `processes` benchmark (run with
//! `cargo build --release -p bronze-host -p bronzectl -p bronze-tests --bins &&
//! target/release/bench-processes [RUNS]`):
//!
//! A configured process-mode bronzed, and 1,000 `sleep` children the bench
//! spawns (killed at the end), so the node lists at least 1,000 processes.
//!
//! 1. `ProcessService.Processes` over mTLS on an open channel, lifetime CPU
//!    % (`sample_ms` 0, what `ps aux` shows): median wall time of RUNS
//!    (default 30) calls, and the number of processes listed;
//! 2. side by side, `ps aux` (process start included, output read through a
//!    pipe) on the same machine: median of RUNS, and the ratio;
//! 3. CPU of bronzed (utime + stime from /proc/<pid>/stat) while
//!    `bronzectl processes --watch --interval 1s` runs for 20 s, as % of
//!    one core, after the same over 20 s with no client (its background
//!    work, included in the figure under `--watch`).

use bronze_api::v1 as pb;
use bronze_api::v1::process_service_client::ProcessServiceClient;
use bronze_tests::{Node, Pki, bin};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const SLEEPERS: usize = 1000;
const WATCH: Duration = Duration::from_secs(20);

struct Children(Vec<Child>);

impl Drop for Children {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
        }
        for c in &mut self.0 {
            let _ = c.wait();
        }
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// utime + stime of `pid`, seconds.
fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let s = bronze_host::procs::parse_stat(&stat).map_err(anyhow::Error::msg)?;
    Ok(bronze_host::procs::Units::of_system().seconds(s.cpu_ticks))
}

fn main() -> anyhow::Result<()> {
    let runs: usize = std::env::args().nth(1).map(|a| a.parse()).transpose()?.unwrap_or(30);
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async {
        println!("bronzed binary: {}", bin("bronzed").display());
        let pki = Pki::new();
        let node = Node::start_configured(&pki.node_config("bench")).await;
        let mut sleepers = Children(Vec::with_capacity(SLEEPERS));
        for _ in 0..SLEEPERS {
            sleepers.0.push(Command::new("sleep").arg("600").stdin(Stdio::null()).spawn()?);
        }
        let c = node.client(&pki.auth(&["os:reader"])).await;
        let mut p = ProcessServiceClient::new(c.channel.clone()).max_decoding_message_size(64 << 20);
        let mut listed = 0;
        let mut times = Vec::with_capacity(runs);
        for i in 0..runs + 3 {
            let started = Instant::now();
            let r = p.processes(pb::ProcessesRequest { sample_ms: 0 }).await?.into_inner();
            if i >= 3 {
                times.push(started.elapsed().as_secs_f64() * 1e3);
            }
            listed = r.processes.len();
        }
        let ours = median(times);
        println!("processes: {listed} listed, median {ours:.1} ms over {runs} calls (target <= 50 ms)");

        let mut times = Vec::with_capacity(runs);
        let mut lines = 0;
        for _ in 0..runs {
            let started = Instant::now();
            let out = Command::new("ps").arg("aux").stdin(Stdio::null()).output()?;
            times.push(started.elapsed().as_secs_f64() * 1e3);
            anyhow::ensure!(out.status.success(), "ps aux failed: {}", String::from_utf8_lossy(&out.stderr));
            lines = out.stdout.split(|b| *b == b'\n').count();
        }
        let ps = median(times);
        println!("ps aux: {lines} lines, median {ps:.1} ms; ratio processes / ps aux = {:.2} (target <= 1.0)", ours / ps);

        let dir = tempfile::tempdir()?;
        let config = dir.path().join("bronzeconfig");
        pki.write_bronzeconfig(&config, std::slice::from_ref(&node.addr), &["os:reader"]);
        // bronzed's own background work over the same time, with no client.
        let before = cpu_seconds(node.pid())?;
        let started = Instant::now();
        tokio::time::sleep(WATCH).await;
        let idle = cpu_seconds(node.pid())? - before;
        let idle_wall = started.elapsed().as_secs_f64();
        println!(
            "bronzed CPU with no client: {:.2} % of a core ({idle:.3} s over {idle_wall:.1} s)",
            100.0 * idle / idle_wall
        );
        let before = cpu_seconds(node.pid())?;
        let started = Instant::now();
        let mut watch = Children(vec![
            Command::new(bin("bronzectl"))
                .args(["processes", "--watch", "--interval", "1s"])
                .env("BRONZECONFIG", &config)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()?,
        ]);
        tokio::time::sleep(WATCH).await;
        let used = cpu_seconds(node.pid())? - before;
        let wall = started.elapsed().as_secs_f64();
        anyhow::ensure!(watch.0[0].try_wait()?.is_none(), "bronzectl processes --watch ended early");
        drop(watch);
        println!(
            "bronzed CPU while `processes --watch --interval 1s` runs: {:.2} % of a core ({used:.3} s over {wall:.1} s)",
            100.0 * used / wall
        );
        drop(sleepers);
        Ok(())
    })
}
