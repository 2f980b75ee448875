//! A real DHCP server for client tests: dnsmasq (the Debian package) in a
//! network namespace of its own, joined to the client's namespace by a
//! veth pair, and a way to run bronzed's DHCP client inside the client's
//! namespace.
//!
//! ```text
//!  client netns                      server netns
//!  dhcp0 (no address) ── veth ── dhcps0 10.77.0.1/24  dnsmasq
//! ```
//!
//! Nothing leaves the two namespaces: they have no other links. dnsmasq
//! runs in the foreground (`--no-daemon`), logs every DHCP message to its
//! stderr (`--log-dhcp --log-facility=-`), which goes to a file the test
//! reads, and answers no DNS (`--port=0`). Needs root.

use crate::netns::NetNs;
use bronze_host::network::dhcp::{self, DhcpOptions, Lease, LeaseStore};
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// The client's side of the veth pair.
pub const CLIENT_LINK: &str = "dhcp0";
/// The server's side.
pub const SERVER_LINK: &str = "dhcps0";
/// The server's first address (its server identifier).
pub const SERVER_ADDR: &str = "10.77.0.1";
/// The pool dnsmasq hands out from.
pub const RANGE: (&str, &str) = ("10.77.0.50", "10.77.0.99");

/// Whether dnsmasq tests can run here, with the reason when not.
pub fn unavailable() -> Option<String> {
    if let Some(why) = crate::netns::unavailable() {
        return Some(why);
    }
    match Command::new("dnsmasq").arg("--version").output() {
        Ok(out) if out.status.success() => None,
        _ => Some("dnsmasq is not installed (apt-get install dnsmasq-base)".into()),
    }
}

/// Two namespaces joined by a veth pair: `dhcp0` in the client's (up, no
/// address), `dhcps0` in the server's (up, 10.77.0.1/24).
pub struct Pair {
    pub client: NetNs,
    pub server: NetNs,
}

impl Pair {
    pub fn new() -> io::Result<Pair> {
        let client = NetNs::new()?;
        let server = NetNs::new()?;
        ip(&[
            "link",
            "add",
            CLIENT_LINK,
            "netns",
            client.name(),
            "type",
            "veth",
            "peer",
            "name",
            SERVER_LINK,
            "netns",
            server.name(),
        ])?;
        ip(&["-n", server.name(), "addr", "add", &format!("{SERVER_ADDR}/24"), "dev", SERVER_LINK])?;
        ip(&["-n", server.name(), "link", "set", SERVER_LINK, "up"])?;
        let pair = Pair { client, server };
        pair.client_link_up(true)?;
        Ok(pair)
    }

    /// Sets the client's link up or down.
    pub fn client_link_up(&self, up: bool) -> io::Result<()> {
        ip(&["-n", self.client.name(), "link", "set", CLIENT_LINK, if up { "up" } else { "down" }])
    }

    /// Moves the server to `addr` (in 10.77.0.0/24), as when a DHCP server
    /// is replaced by another one.
    pub fn move_server(&self, from: &str, to: &str) -> io::Result<()> {
        ip(&["-n", self.server.name(), "addr", "del", &format!("{from}/24"), "dev", SERVER_LINK])?;
        ip(&["-n", self.server.name(), "addr", "add", &format!("{to}/24"), "dev", SERVER_LINK])
    }

    /// Configures `lease`'s address on the client's link (what the node's
    /// applier does), so renewals can be sent from it; replaces any other.
    pub fn install(&self, lease: &Lease) -> io::Result<()> {
        ip(&["-n", self.client.name(), "addr", "flush", "dev", CLIENT_LINK])?;
        ip(&["-n", self.client.name(), "addr", "add", &lease.address.to_string(), "dev", CLIENT_LINK])
    }

    /// The client link's addresses as `ip -br addr` shows them.
    pub fn client_addresses(&self) -> String {
        Command::new("ip")
            .args(["-n", self.client.name(), "-br", "-4", "addr", "show", "dev", CLIENT_LINK])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    }
}

/// A running dnsmasq, killed on drop.
pub struct Dnsmasq {
    child: Option<Child>,
    log: PathBuf,
}

/// What a dnsmasq instance serves.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Lease length: dnsmasq's minimum is two minutes (`2m`).
    pub lease: String,
    /// Extra `--dhcp-option=` values, e.g. `option:ntp-server,10.77.0.1`.
    pub options: Vec<String>,
    /// Pass `--no-ping` (no ICMP check of an address before offering it).
    pub no_ping: bool,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self { lease: "2m".into(), options: Vec::new(), no_ping: true }
    }
}

impl Dnsmasq {
    /// Starts dnsmasq in `ns` on [`SERVER_LINK`], keeping its lease file
    /// and log in `dir` (a second instance given the same `dir` shares the
    /// lease database, like a replacement server). Returns once it logs
    /// that DHCP is ready.
    pub fn start(ns: &NetNs, dir: &Path, config: &ServerConfig) -> io::Result<Dnsmasq> {
        std::fs::create_dir_all(dir)?;
        let n = std::fs::read_dir(dir)?
            .filter(|e| e.as_ref().is_ok_and(|e| e.file_name().to_string_lossy().starts_with("dnsmasq-")))
            .count();
        let log = dir.join(format!("dnsmasq-{n}.log"));
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", ns.name(), "dnsmasq", "--no-daemon", "--conf-file=/dev/null", "--port=0"])
            .arg(format!("--interface={SERVER_LINK}"))
            .args(["--bind-interfaces", "--dhcp-authoritative", "--log-dhcp", "--log-facility=-", "--user=root"])
            .arg(format!("--dhcp-range={},{},255.255.255.0,{}", RANGE.0, RANGE.1, config.lease))
            .arg(format!("--dhcp-leasefile={}", dir.join("leases").display()))
            .arg(format!("--pid-file={}", dir.join(format!("dnsmasq-{n}.pid")).display()));
        if config.no_ping {
            cmd.arg("--no-ping");
        }
        for option in &config.options {
            cmd.arg(format!("--dhcp-option={option}"));
        }
        let out = std::fs::File::create(&log)?;
        let child = cmd.stdin(Stdio::null()).stdout(out.try_clone()?).stderr(out).spawn()?;
        let mut server = Dnsmasq { child: Some(child), log };
        if !server.wait_log("DHCP, IP range", Duration::from_secs(10)) {
            let log = server.log();
            server.stop();
            return Err(io::Error::other(format!("dnsmasq did not start: {log}")));
        }
        Ok(server)
    }

    /// Everything dnsmasq logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The DHCP message lines (`DHCPDISCOVER(dhcps0) ...`), in order.
    pub fn messages(&self) -> Vec<String> {
        self.log()
            .lines()
            .filter_map(|l| l.split_once("dnsmasq-dhcp").map(|(_, rest)| rest))
            .filter_map(|rest| rest.split_whitespace().find(|w| w.starts_with("DHCP")).map(|w| w.to_string()))
            .filter(|w| w.contains('('))
            .map(|w| w.split('(').next().unwrap_or_default().to_string())
            .collect()
    }

    /// Waits until the log contains `needle`.
    pub fn wait_log(&self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.log().contains(needle) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// Stops it (SIGTERM, then waits).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let _ = child.wait();
        }
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        self.stop();
    }
}

/// bronzed's DHCP client running on [`CLIENT_LINK`] inside a namespace,
/// on a thread of its own (setns) with a current-thread runtime.
pub struct Client {
    leases: watch::Receiver<Option<Lease>>,
    states: watch::Receiver<dhcp::DhcpState>,
    stop: watch::Sender<bool>,
    thread: Option<JoinHandle<()>>,
}

impl Client {
    pub fn start(ns: &NetNs, options: DhcpOptions, store: Arc<dyn LeaseStore>) -> Client {
        let (lease_tx, leases) = watch::channel(None);
        let (state_tx, states) = watch::channel(dhcp::DhcpState::Selecting);
        let (stop, stop_rx) = watch::channel(false);
        let path = PathBuf::from("/run/netns").join(ns.name());
        let thread = std::thread::spawn(move || {
            enter(&path).expect("setns into the client namespace");
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            runtime.block_on(async move {
                dhcp::client::run_with_state(CLIENT_LINK.into(), options, store, lease_tx, state_tx, stop_rx)
                    .await
                    .expect("the DHCP client runs");
            });
        });
        Client { leases, states, stop, thread: Some(thread) }
    }

    /// The current lease.
    pub fn lease(&self) -> Option<Lease> {
        self.leases.borrow().clone()
    }

    pub fn state(&self) -> dhcp::DhcpState {
        *self.states.borrow()
    }

    /// Waits until `f` holds for the current lease; returns it.
    pub fn wait(&self, timeout: Duration, f: impl Fn(&Option<Lease>) -> bool) -> Option<Option<Lease>> {
        let deadline = Instant::now() + timeout;
        loop {
            let now = self.lease();
            if f(&now) {
                return Some(now);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Stops the client (releasing if its options say so) and waits for it.
    pub fn stop(mut self) {
        self.stop_inner();
    }

    fn stop_inner(&mut self) {
        self.stop.send_replace(true);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.stop_inner();
    }
}

/// Moves the calling thread into the namespace at `path`.
pub fn enter(path: &Path) -> io::Result<()> {
    let file = std::fs::File::open(path)?;
    nix::sched::setns(file, nix::sched::CloneFlags::CLONE_NEWNET).map_err(io::Error::from)
}

fn ip(args: &[&str]) -> io::Result<()> {
    let out = Command::new("ip").args(args).output()?;
    if out.status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!("ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim())))
    }
}
