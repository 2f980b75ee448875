//! Time sync benchmarks, printed as figures (run with `cargo xtask bench-time [SOAK_SECS]`):
//!
//! 1. accuracy side by side: bronze's offset against a local chrony server
//!    vs `chronyd -Q`'s measurement of the same server, over 10 rounds:
//!    single exchanges, min-RTT of a burst of 4, and the controller's
//!    accepted sample;
//! 2. CPU time and RSS of a bronzed whose only work is time sync at a 1 s
//!    poll, over SOAK_SECS (default 600).
//!
//! Only 127.0.0.1 is contacted.

use bronze_api::v1 as pb;
use bronze_host::time::exchange::exchange;
use bronze_tests::ntp::{ChronyServer, chrony_reference_offset, require_chrony};
use bronze_tests::{Node, Pki};
use std::time::Duration;

const ROUNDS: usize = 10;

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len() as f64
}

fn main() -> anyhow::Result<()> {
    let soak: u64 = std::env::args().nth(1).map(|s| s.parse()).transpose()?.unwrap_or(600);
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async {
        require_chrony();
        let chrony = ChronyServer::start(0.0).await;
        let addr = chrony.addr();
        let pki = Pki::new();
        let time = format!("servers: [\"{addr}\"]\n    minPoll: 1s\n    maxPoll: 1s\n");
        let node = Node::start_configured(&pki.node_config_with_time("bench", &time)).await;
        let mut c = node.client(&pki.auth(&["os:admin"])).await;
        let mut time_client = bronze_api::v1::time_service_client::TimeServiceClient::new(c.channel.clone());
        // One unmeasured exchange first: the very first one in a process pays
        // for lazy initialisation (page faults, first socket), not the network.
        exchange(addr, Duration::from_secs(1)).await?;
        let (mut single, mut burst, mut controller) = (vec![], vec![], vec![]);
        for round in 0..ROUNDS {
            let ours_single = exchange(addr, Duration::from_secs(1)).await?.sample.offset;
            let mut samples = vec![];
            for _ in 0..4 {
                samples.push(exchange(addr, Duration::from_secs(1)).await?.sample);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let best = samples.iter().min_by(|a, b| a.rtt.total_cmp(&b.rtt)).map(|s| s.offset).unwrap_or_default();
            let ours_controller = time_client.time(pb::TimeRequest {}).await?.into_inner().offset_seconds;
            let reference = chrony_reference_offset(addr).await;
            println!(
                "round {round}: chronyd -Q {:+.1} µs, bronze single {:+.1} µs, burst min-RTT {:+.1} µs, controller {:+.1} µs",
                reference * 1e6,
                ours_single * 1e6,
                best * 1e6,
                ours_controller * 1e6
            );
            single.push((ours_single - reference).abs());
            burst.push((best - reference).abs());
            controller.push((ours_controller - reference).abs());
        }
        println!(
            "accuracy vs chronyd -Q over {ROUNDS} rounds: mean |Δ| single {:.1} µs, min-RTT of 4 {:.1} µs, controller {:.1} µs",
            mean(&single) * 1e6,
            mean(&burst) * 1e6,
            mean(&controller) * 1e6
        );

        let ticks = |pid: u32| -> anyhow::Result<u64> {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
            let after = stat.rsplit(')').next().unwrap_or_default();
            let fields: Vec<&str> = after.split_whitespace().collect();
            Ok(fields[11].parse::<u64>()? + fields[12].parse::<u64>()?)
        };
        let rss = |pid: u32| -> anyhow::Result<u64> {
            let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
            let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap_or("VmRSS: 0 kB");
            Ok(line.split_whitespace().nth(1).unwrap_or("0").parse()?)
        };
        let pid = node.pid();
        let (t0, r0) = (ticks(pid)?, rss(pid)?);
        tokio::time::sleep(Duration::from_secs(soak)).await;
        let (t1, r1) = (ticks(pid)?, rss(pid)?);
        let polls = time_client.time(pb::TimeRequest {}).await?.into_inner();
        let hz = 100.0; // USER_HZ on Linux
        let cpu = (t1 - t0) as f64 / hz;
        println!(
            "soak {soak} s at a 1 s poll (poll now {} s): CPU {cpu:.2} s ({:.3}% of one core), RSS {:.1} → {:.1} MiB",
            polls.poll_seconds,
            cpu / soak as f64 * 100.0,
            r0 as f64 / 1024.0,
            r1 as f64 / 1024.0
        );
        c.machine.shutdown(pb::ShutdownRequest {}).await.ok();
        Ok(())
    })
}
