//! Network apply benchmark (run with
//! `cargo run --release -p bronze-tests --bin bench-netapply -- [RUNS]`, root):
//!
//! In a fresh network namespace with one link (a dummy when the kernel has
//! them, else a veth whose peer is up), bronzed's `Applier` applies a plan
//! of the link up, one address and 1,000 gateway routes: the time of that
//! first apply, then of a second apply of the same plan and its netlink
//! writes (the target is 0). Side by side, in another fresh namespace with
//! the same link, `ip -batch` adds the same link state, address and 1,000
//! routes (process start included). Medians over RUNS (default 5) runs,
//! each in new namespaces. Nothing leaves the namespaces.

use bronze_config::Cidr;
use bronze_host::network::apply::Applier;
use bronze_host::network::netlink::RtNetlink;
use bronze_host::network::plan::{AddressPlan, LinkPlan, NetworkPlan, RoutePlan};
use bronze_tests::netns::{NetNs, unavailable};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

const ROUTES: usize = 1000;
const LINK: &str = "bench0";
const ADDRESS: &str = "10.0.0.1/24";
const GATEWAY: &str = "10.0.0.254";

/// `10.<1+i/256>.<i%256>.0/24` for i in 0..ROUTES.
fn destinations() -> Vec<String> {
    (0..ROUTES).map(|i| format!("10.{}.{}.0/24", 1 + i / 256, i % 256)).collect()
}

fn plan() -> NetworkPlan {
    let cidr = |s: &str| s.parse::<Cidr>().expect("valid cidr");
    NetworkPlan {
        links: vec![LinkPlan::up(LINK)],
        addresses: vec![AddressPlan { link: LINK.into(), address: cidr(ADDRESS) }],
        routes: destinations()
            .iter()
            .map(|d| RoutePlan {
                link: LINK.into(),
                destination: cidr(d),
                gateway: Some(GATEWAY.parse().expect("valid ip")),
                metric: 1024,
                on_link: false,
            })
            .collect(),
        ..Default::default()
    }
}

fn ip(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("ip").args(args).output()?;
    anyhow::ensure!(out.status.success(), "ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    Ok(())
}

/// A fresh namespace holding `LINK`, down, with no address; and the kind
/// of link it is.
fn namespace_with_link() -> anyhow::Result<(NetNs, &'static str)> {
    let ns = NetNs::new()?;
    let name = ns.name().to_string();
    if ip(&["-n", &name, "link", "add", LINK, "type", "dummy"]).is_ok() {
        return Ok((ns, "dummy"));
    }
    ip(&["-n", &name, "link", "add", LINK, "type", "veth", "peer", "name", "bench0p"])?;
    ip(&["-n", &name, "link", "set", "bench0p", "up"])?;
    Ok((ns, "veth"))
}

struct Ours {
    first: Duration,
    second: Duration,
    first_writes: u32,
    second_writes: u32,
}

/// Applies the plan twice from a thread inside `ns`.
fn ours(ns: &NetNs) -> anyhow::Result<Ours> {
    let path = format!("/run/netns/{}", ns.name());
    std::thread::spawn(move || -> anyhow::Result<Ours> {
        let file = std::fs::File::open(&path)?;
        nix::sched::setns(file, nix::sched::CloneFlags::CLONE_NEWNET)?;
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        runtime.block_on(async {
            let netlink = Arc::new(RtNetlink::connect()?);
            let applier = Applier::new(netlink, "/nonexistent-root");
            let plan = plan();
            let started = Instant::now();
            let first = applier.apply(&plan).await?;
            let first_time = started.elapsed();
            anyhow::ensure!(first.is_complete(), "first apply: {:?}", first.errors);
            anyhow::ensure!(first.added_routes.len() == ROUTES, "added {} routes", first.added_routes.len());
            let started = Instant::now();
            let second = applier.apply(&plan).await?;
            let second_time = started.elapsed();
            anyhow::ensure!(second.is_complete(), "second apply: {:?}", second.errors);
            Ok(Ours {
                first: first_time,
                second: second_time,
                first_writes: first.writes,
                second_writes: second.writes,
            })
        })
    })
    .join()
    .map_err(|_| anyhow::anyhow!("the apply thread panicked"))?
}

/// `ip -n NS -batch FILE` with the same link state, address and routes.
fn peer(ns: &NetNs) -> anyhow::Result<Duration> {
    let mut batch = format!("link set {LINK} up\naddress add {ADDRESS} dev {LINK}\n");
    for d in destinations() {
        batch.push_str(&format!("route add {d} via {GATEWAY} dev {LINK} metric 1024\n"));
    }
    let file = tempfile::NamedTempFile::new()?;
    std::fs::write(file.path(), batch)?;
    let path = file.path().to_string_lossy().into_owned();
    let started = Instant::now();
    ip(&["-n", ns.name(), "-batch", &path])?;
    let took = started.elapsed();
    let out = Command::new("ip").args(["-n", ns.name(), "route", "show"]).output()?;
    let via = format!("via {GATEWAY} ");
    let count = String::from_utf8_lossy(&out.stdout).lines().filter(|l| l.contains(&via)).count();
    anyhow::ensure!(count == ROUTES, "ip -batch left {count} routes via {GATEWAY}");
    Ok(took)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

fn main() -> anyhow::Result<()> {
    if let Some(why) = unavailable() {
        anyhow::bail!("bench-netapply needs network namespaces: {why}");
    }
    if cfg!(debug_assertions) {
        eprintln!("warning: a debug build; figures for docs/benchmarks.md come from --release");
    }
    let runs: usize = std::env::args().nth(1).map(|s| s.parse()).transpose()?.unwrap_or(5).max(1);
    let (mut first, mut second, mut batch) = (vec![], vec![], vec![]);
    let mut kind = "";
    for run in 0..runs {
        let (ns, k) = namespace_with_link()?;
        kind = k;
        let o = ours(&ns)?;
        anyhow::ensure!(o.second_writes == 0, "the unchanged second apply made {} writes", o.second_writes);
        drop(ns);
        let (peer_ns, _) = namespace_with_link()?;
        let b = peer(&peer_ns)?;
        println!(
            "run {run}: first apply {} ({} writes), second apply {} ({} writes), ip -batch {}",
            ms(o.first),
            o.first_writes,
            ms(o.second),
            o.second_writes,
            ms(b)
        );
        first.push(o.first);
        second.push(o.second);
        batch.push(b);
    }
    println!(
        "median of {runs} ({ROUTES} routes on a {kind} link): first apply {}, second apply {} with 0 writes, \
         ip -batch {}",
        ms(median(first)),
        ms(median(second)),
        ms(median(batch))
    );
    Ok(())
}
