//! What the whole-node network tests share: a `bronzed --own-network` in a
//! network namespace of the test's own, joined by veth pairs to a second
//! namespace (the "peer", where a DHCP server or a client of the API
//! lives), configs with a `machine.network` section, the kernel's view of
//! the namespace (`ip -j`), the node's resources through the real
//! `bronzectl`, and a relay that reaches the API through a veth from the
//! peer namespace (not through the loopback relay).
//!
//! ```text
//!  node netns (bronzed --own-network)      peer netns
//!  veth0 ───────────────── veth ─────────── peer0 10.70.0.1/24
//!  lo: 127.0.0.1 ◄── relay ── host 127.0.0.1:P
//!                ◄── veth relay (from the peer netns to veth0's address) ── host 127.0.0.1:Q
//! ```
//!
//! Nothing leaves the namespaces: they have no other links. Needs root.

use crate::netns::NetNs;
use crate::{Node, NodeOptions, Pki, bronzectl};
use serde_json::Value;
use std::io;
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long the node may take to make the kernel match a change.
pub const CONVERGE: Duration = Duration::from_secs(20);

/// Whether these tests can run here; prints a loud line naming `what` when
/// not.
pub fn skipped(what: &str) -> bool {
    match crate::netns::unavailable() {
        Some(why) => {
            eprintln!("\n!!!!!!!! SKIPPED {what}: {why} !!!!!!!!\n");
            true
        }
        None => false,
    }
}

/// `ip ARGS` (in the root namespace; use `-n NS` to reach one of the
/// test's); panics with ip's stderr when it fails.
pub fn ip(args: &[&str]) -> String {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(out.status.success(), "ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A veth pair: `name` in `ns`, `peer_name` in `peer` (up, holding
/// `peer_addr` when given). `name` stays down: the node brings it up.
pub fn veth(ns: &NetNs, name: &str, peer: &NetNs, peer_name: &str, peer_addr: Option<&str>) {
    ip(&["link", "add", name, "netns", ns.name(), "type", "veth", "peer", "name", peer_name, "netns", peer.name()]);
    if let Some(addr) = peer_addr {
        ip(&["-n", peer.name(), "addr", "add", addr, "dev", peer_name]);
    }
    ip(&["-n", peer.name(), "link", "set", peer_name, "up"]);
}

/// The IPv4 addresses (CIDR) of `dev` in `ns`, as the kernel has them;
/// empty when the link does not exist.
pub fn addresses(ns: &NetNs, dev: &str) -> Vec<String> {
    let out = Command::new("ip").args(["-n", ns.name(), "-j", "-4", "addr", "show", "dev", dev]).output().expect("ip");
    if !out.status.success() {
        return Vec::new();
    }
    let links: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    links
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|l| l["addr_info"].as_array().cloned().unwrap_or_default())
        .filter_map(|a| Some(format!("{}/{}", a["local"].as_str()?, a["prefixlen"].as_u64()?)))
        .collect()
}

/// The IPv4 routes of the main table in `ns` as `ip route` prints them
/// (`default via 10.70.0.1 dev veth0 metric 1024`), kernel ones included.
pub fn routes(ns: &NetNs) -> Vec<String> {
    ip(&["-n", ns.name(), "-4", "route", "show", "table", "main"])
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect()
}

/// `ip -d link show dev` in `ns`, or None when there is no such link.
pub fn link_details(ns: &NetNs, dev: &str) -> Option<String> {
    let out = Command::new("ip").args(["-n", ns.name(), "-d", "link", "show", "dev", dev]).output().expect("ip");
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Polls `probe` until it gives `Some`, for at most `timeout`; panics with
/// `what` and the last state `describe` gives.
pub async fn wait_for<T>(
    what: &str,
    timeout: Duration,
    mut probe: impl FnMut() -> Option<T>,
    describe: impl Fn() -> String,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = probe() {
            return v;
        }
        assert!(Instant::now() < deadline, "{what}: not within {timeout:?}\n{}", describe());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A node config from the embedded template whose `machine.network`
/// section is `network_yaml` (indented four spaces relative to `network:`,
/// e.g. "interfaces:\n      - name: veth0") and whose `machine.plugins`
/// section is `plugins_yaml` when given (see
/// [`crate::plugins::config_with_plugins`]).
pub fn config_with_network(pki: &Pki, hostname: &str, network_yaml: &str, plugins_yaml: Option<&str>) -> String {
    let config = match plugins_yaml {
        Some(plugins) => crate::plugins::config_with_plugins(pki, hostname, plugins),
        None => pki.node_config(hostname),
    };
    let start = config.find("  network:\n").expect("template has a network section");
    let end = start + config[start..].find("\n  # Supervised processes.").expect("services follow network");
    format!("{}  network:\n    {network_yaml}\n{}", &config[..start], &config[end..])
}

/// A node running `bronzed --own-network` in [`NodeNet::ns`], with a
/// bronzeconfig for an admin client.
pub struct NodeNet {
    pub node: Node,
    pub pki: Pki,
    /// An `os:admin` bronzeconfig for the node (through the loopback relay).
    pub admin: PathBuf,
    /// The port bronzed listens on inside its namespace.
    pub port: u16,
    pub tmp: tempfile::TempDir,
}

/// Options for [`NodeNet::start`].
#[derive(Default)]
pub struct Start {
    /// A kernel command line (`--cmdline-file`); none: an empty one, so the
    /// host's own /proc/cmdline never leaks in.
    pub cmdline: Option<String>,
    /// Listen on every address (`0.0.0.0:PORT`), so the API can be reached
    /// through a veth too; else on 127.0.0.1 only.
    pub listen_all: bool,
    /// More bronzed arguments.
    pub args: Vec<String>,
}

impl NodeNet {
    /// Starts bronzed in `ns` with `config` and `--own-network`; waits until
    /// its API answers through the loopback relay.
    pub async fn start(ns: &mut NetNs, pki: Pki, config: String, opts: Start) -> NodeNet {
        let tmp = tempfile::tempdir().expect("tempdir");
        let cmdline = tmp.path().join("cmdline");
        std::fs::write(&cmdline, opts.cmdline.unwrap_or_default() + "\n").expect("write cmdline");
        let mut args = vec!["--own-network".to_string(), "--cmdline-file".into(), cmdline.display().to_string()];
        args.extend(opts.args);
        let port = crate::free_port();
        let mut wrapper: Vec<String> = vec!["ip".into(), "netns".into(), "exec".into(), ns.name().into()];
        if opts.listen_all {
            // Node::spawn listens on 127.0.0.1:PORT; the shell rewrites that
            // one argument to 0.0.0.0:PORT and execs bronzed (same PID).
            let script = "for a in \"$@\"; do shift; case $a in 127.0.0.1:*) a=\"0.0.0.0:${a#127.0.0.1:}\";; esac; \
                          set -- \"$@\" \"$a\"; done; exec \"$@\"";
            wrapper.extend(["sh".into(), "-c".into(), script.into(), "sh".into()]);
        }
        let mut node = Node::spawn(NodeOptions {
            config: Some(config),
            args,
            port: Some(port),
            wrapper,
            state_dir: Some(tmp.path().join("state")),
        });
        node.addr = format!("127.0.0.1:{}", ns.tcp_into(port).expect("relay into the namespace"));
        node.wait_ready().await;
        let admin = tmp.path().join("bronzeconfig");
        pki.write_bronzeconfig(&admin, std::slice::from_ref(&node.addr), &["os:admin"]);
        NodeNet { node, pki, admin, port, tmp }
    }

    /// `bronzectl ARGS` as the admin; panics unless it exits 0.
    pub async fn ctl(&self, args: &[&str]) -> String {
        let run = bronzectl(Some(&self.admin), args).await;
        assert_eq!(run.code, 0, "bronzectl {args:?}: {run:?}\n{}", self.node.log());
        run.stdout
    }

    /// `bronzectl -o json get TYPE`'s resources (empty on error).
    pub async fn resources(&self, r#type: &str) -> Vec<Value> {
        let run = bronzectl(Some(&self.admin), &["-o", "json", "get", r#type]).await;
        if run.code != 0 {
            return Vec::new();
        }
        serde_json::from_str::<Value>(run.stdout.lines().next().unwrap_or(""))
            .ok()
            .and_then(|v| v["resources"].as_array().cloned())
            .unwrap_or_default()
    }

    /// The spec of the `NetworkSpec` (Null until published).
    pub async fn network_spec(&self) -> Value {
        self.resources("networkspec").await.into_iter().next().map(|r| r["spec"].clone()).unwrap_or(Value::Null)
    }

    /// Applies `config` with `bronzectl apply-config` (mode auto).
    pub async fn apply(&self, config: &str) -> String {
        let path = self.tmp.path().join("apply.yaml");
        std::fs::write(&path, config).expect("write config");
        self.ctl(&["apply-config", "-f", path.to_str().expect("utf-8 path")]).await
    }

    /// What bronzed wrote to resolv.conf (under its state dir).
    pub fn resolv_conf(&self) -> String {
        std::fs::read_to_string(self.node.state_dir.join("root/etc/resolv.conf")).unwrap_or_default()
    }
}

/// The layer the spec names for `address` on `link`.
pub fn address_layer(spec: &Value, link: &str, address: &str) -> Option<String> {
    spec["addresses"]
        .as_array()?
        .iter()
        .find(|a| a["link"] == link && a["address"] == address)
        .and_then(|a| a["layer"].as_str().map(String::from))
}

/// The spec's warnings.
pub fn warnings(spec: &Value) -> Vec<String> {
    spec["warnings"].as_array().into_iter().flatten().filter_map(|w| w.as_str().map(String::from)).collect()
}

/// Relays TCP connections to a free port on the host's 127.0.0.1 to
/// `target`, connecting from inside `from` (a namespace of the test's):
/// the API reached through a veth, as a client on that link would.
pub struct Relay {
    pub port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Relay {
    pub fn start(from: &NetNs, target: SocketAddr) -> io::Result<Relay> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
        let port = listener.local_addr()?.port();
        let path = PathBuf::from("/run/netns").join(from.name());
        let stop = Arc::new(AtomicBool::new(false));
        let halt = stop.clone();
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if halt.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(outside) = conn else { continue };
                let path = path.clone();
                // setns changes only the calling thread: one per connection.
                std::thread::spawn(move || {
                    let inside =
                        enter(&path).and_then(|()| TcpStream::connect_timeout(&target, Duration::from_secs(2)));
                    match inside {
                        Ok(inside) => pump(outside, inside),
                        Err(_) => {
                            let _ = outside.shutdown(Shutdown::Both);
                        }
                    }
                });
            }
        });
        Ok(Relay { port, stop, thread: Some(thread) })
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect_timeout(&SocketAddr::from((Ipv4Addr::LOCALHOST, self.port)), Duration::from_secs(1));
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn enter(path: &Path) -> io::Result<()> {
    let file = std::fs::File::open(path)?;
    nix::sched::setns(file, nix::sched::CloneFlags::CLONE_NEWNET).map_err(io::Error::from)
}

fn pump(a: TcpStream, b: TcpStream) {
    let _ = a.set_nodelay(true);
    let _ = b.set_nodelay(true);
    let (Ok(a2), Ok(b2)) = (a.try_clone(), b.try_clone()) else { return };
    let one_way = |mut from: TcpStream, mut to: TcpStream| {
        std::thread::spawn(move || {
            let _ = io::copy(&mut from, &mut to);
            let _ = to.shutdown(Shutdown::Write);
        })
    };
    one_way(a, b2);
    one_way(b, a2);
}
