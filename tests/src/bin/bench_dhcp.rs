//! DHCPv4 bench: time from link up to a bound lease against dnsmasq in a
//! network namespace, for bronzed's client, `dhcpcd` and busybox `udhcpc`,
//! same namespaces, same server, ROUNDS (default 20) each, interleaved.
//! Prints each median and the ratio bronzed / the faster of the two.
//!
//! Run as root: `cargo run --release -p bronze-tests --bin bench-dhcp [ROUNDS]`.
//!
//! Every client starts right after `ip link set dhcp0 up` (veth: carrier at
//! once) with no kept lease, so each run is a full DISCOVER, OFFER,
//! REQUEST, ACK; ARP probing is off for all three (dhcpcd `-A`, udhcpc
//! without `-a`, bronzed never probes). The peers run as processes started
//! from a thread inside the client namespace (no `ip netns exec` cost) and
//! count as bound when they exit after their lease (`dhcpcd -1`, `udhcpc
//! -q`), configuring nothing (`--noconfigure`, `-s /bin/true`), so their
//! figure includes starting a process; bronzed's client runs as a task,
//! as in bronzed, and counts as bound when it publishes the lease. dhcpcd
//! gets `nodelay` (no random wait before its first DISCOVER). dnsmasq runs
//! with `--no-ping`.

use bronze_host::network::dhcp::{self, DhcpOptions, MemoryStore};
use bronze_tests::dnsmasq::{self, CLIENT_LINK, Dnsmasq, Pair, ServerConfig};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 }
}

fn ip(args: &[&str]) {
    let ok = Command::new("ip").args(args).status().map(|s| s.success()).unwrap_or(false);
    assert!(ok, "ip {}", args.join(" "));
}

/// Down, no address, no dhcpcd lease file, then up: t0.
fn reset(ns: &str) -> Instant {
    ip(&["-n", ns, "link", "set", CLIENT_LINK, "down"]);
    ip(&["-n", ns, "addr", "flush", "dev", CLIENT_LINK]);
    for dir in ["/var/lib/dhcpcd", "/var/db/dhcpcd"] {
        if let Ok(entries) = std::fs::read_dir(dir) {
            for e in entries.flatten() {
                if e.file_name().to_string_lossy().starts_with(CLIENT_LINK) {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
    }
    ip(&["-n", ns, "link", "set", CLIENT_LINK, "up"]);
    Instant::now()
}

fn bronzed(rt: &tokio::runtime::Runtime, ns: &str) -> Duration {
    let t0 = reset(ns);
    rt.block_on(async {
        let (lease_tx, mut leases) = watch::channel(None);
        let (stop, stop_rx) = watch::channel(false);
        let task = tokio::spawn(dhcp::run(
            CLIENT_LINK.into(),
            DhcpOptions::default(),
            Arc::new(MemoryStore::default()),
            lease_tx,
            stop_rx,
        ));
        while leases.borrow().is_none() {
            tokio::time::timeout(Duration::from_secs(30), leases.changed()).await.expect("bronzed bound").unwrap();
        }
        let took = t0.elapsed();
        stop.send_replace(true);
        let _ = task.await;
        took
    })
}

fn process(ns: &str, program: &str, args: &[&str]) -> Duration {
    let t0 = reset(ns);
    let status = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    let took = t0.elapsed();
    assert!(status.success(), "{program} {} failed: {status}", args.join(" "));
    took
}

/// dhcpcd's config: no ARP probe, no IPv4LL, and `nodelay` (no random
/// wait before the first DISCOVER; with it dhcpcd measures its own
/// deliberate delay, not its speed).
const DHCPCD_CONF: &str = "nodelay\nnoarp\nnoipv4ll\n";

fn dhcpcd(ns: &str, conf: &Path) -> Duration {
    // -1 exit once bound, -4 IPv4, -B foreground, -A no ARP probe, -L no
    // IPv4LL, -K no carrier wait, configure nothing, a no-op hook script.
    let conf = conf.to_string_lossy();
    let args =
        ["-1", "-4", "-B", "-A", "-L", "-K", "--noconfigure", "-f", &conf, "-c", "/bin/true", "-t", "10", CLIENT_LINK];
    process(ns, "dhcpcd", &args)
}

fn udhcpc(ns: &str) -> Duration {
    process(ns, "busybox", &["udhcpc", "-i", CLIENT_LINK, "-n", "-q", "-f", "-s", "/bin/true", "-t", "5", "-T", "1"])
}

fn main() -> anyhow::Result<()> {
    let rounds: usize = std::env::args().nth(1).map(|s| s.parse()).transpose()?.unwrap_or(20);
    if let Some(why) = dnsmasq::unavailable() {
        anyhow::bail!("cannot run: {why}");
    }
    let tmp = tempfile::tempdir()?;
    let pair = Pair::new()?;
    let server = Dnsmasq::start(&pair.server, tmp.path(), &ServerConfig::default())?;
    // Each bronzed run must be a whole exchange (no lease kept between runs).
    let discovers = || server.messages().iter().filter(|m| *m == "DHCPDISCOVER").count();
    let ns = pair.client.name().to_string();
    let conf = tmp.path().join("dhcpcd.conf");
    std::fs::write(&conf, DHCPCD_CONF)?;
    // This thread (and the processes it starts) live in the client namespace.
    dnsmasq::enter(&std::path::PathBuf::from("/run/netns").join(&ns))?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    // One unmeasured run each: first-use costs (page cache, lazy init).
    bronzed(&rt, &ns);
    dhcpcd(&ns, &conf);
    udhcpc(&ns);
    let (mut ours, mut dc, mut ud) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds {
        let before = discovers();
        let a = bronzed(&rt, &ns);
        anyhow::ensure!(discovers() == before + 1, "bronzed's run {round} was not one DISCOVER, OFFER, REQUEST, ACK");
        let (b, c) = (dhcpcd(&ns, &conf), udhcpc(&ns));
        println!(
            "round {round}: bronzed {:.1} ms, dhcpcd {:.1} ms, udhcpc {:.1} ms",
            a.as_secs_f64() * 1e3,
            b.as_secs_f64() * 1e3,
            c.as_secs_f64() * 1e3
        );
        ours.push(a.as_secs_f64() * 1e3);
        dc.push(b.as_secs_f64() * 1e3);
        ud.push(c.as_secs_f64() * 1e3);
    }
    let (ours, dc, ud) = (median(&mut ours), median(&mut dc), median(&mut ud));
    let faster = dc.min(ud);
    println!("median of {rounds}: bronzed {ours:.1} ms, dhcpcd {dc:.1} ms, udhcpc {ud:.1} ms");
    println!("ratio bronzed / faster peer ({}): {:.2}", if dc <= ud { "dhcpcd" } else { "udhcpc" }, ours / faster);
    Ok(())
}
