//! A network namespace of a test's own, with only `lo` up and no route
//! anywhere, and relays that carry chosen traffic across its border: TCP
//! from the host's loopback into it (to reach a VM's forwarded API), UDP
//! from it out to a host loopback server (a chronyd), and a tiny DNS
//! server inside it that knows one name.
//!
//! What runs inside (qemu with an unrestricted user network, whose guest
//! reaches the namespace's loopback through slirp's gateway 10.0.2.2) can
//! reach nothing else: there is no interface but `lo`, so a packet to any
//! other address fails with "network unreachable" before it is sent.
//!
//! Relay threads enter the namespace with `setns(2)`, which changes only
//! the calling thread's namespace; sockets stay in the namespace they were
//! made in. Needs root. Removed (`ip netns delete`) on drop.

use std::io;
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

/// How often a relay thread looks at its stop flag while idle.
const IDLE: Duration = Duration::from_millis(100);

/// Whether network namespaces can be made here (root and `ip`), with the
/// reason when not.
pub fn unavailable() -> Option<String> {
    if !nix::unistd::Uid::effective().is_root() {
        return Some("it needs root for a network namespace".into());
    }
    match Command::new("ip").arg("-V").output() {
        Ok(out) if out.status.success() => None,
        _ => Some("`ip` (iproute2) is not installed".into()),
    }
}

/// A named network namespace (`ip netns add`), `lo` up, nothing else.
pub struct NetNs {
    name: String,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    /// Root-namespace listeners to poke so their accept loops see `stop`.
    wake: Vec<SocketAddr>,
}

impl NetNs {
    /// Creates `bronze-<pid>-<n>` with `lo` up.
    pub fn new() -> io::Result<NetNs> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let name = format!("bronze-{}-{}", std::process::id(), COUNTER.fetch_add(1, Ordering::SeqCst));
        ip(&["netns", "add", &name])?;
        let ns = NetNs { name, stop: Arc::new(AtomicBool::new(false)), threads: Vec::new(), wake: Vec::new() };
        ip(&["-n", &ns.name, "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// Its name, for `ip netns exec NAME`.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.name)
    }

    /// A TCP listener made inside the namespace (a socket keeps the
    /// namespace it was made in), so an in-process server can serve
    /// addresses that exist only there, like 169.254.169.254:80. Adds
    /// `addr`'s IP to the namespace's `lo` first unless it is loopback.
    pub fn listen(&self, addr: SocketAddr) -> io::Result<TcpListener> {
        if !addr.ip().is_loopback() {
            let prefix = if addr.is_ipv4() { 32 } else { 128 };
            let cidr = format!("{}/{prefix}", addr.ip());
            // Already there (a second listener) is fine.
            let _ = ip(&["-n", &self.name, "addr", "add", &cidr, "dev", "lo"]);
        }
        let path = self.path();
        std::thread::spawn(move || {
            enter(&path)?;
            let listener = TcpListener::bind(addr)?;
            listener.set_nonblocking(true)?;
            Ok(listener)
        })
        .join()
        .map_err(|_| io::Error::other("the namespace thread panicked"))?
    }

    /// Relays TCP connections to a free port on the host's 127.0.0.1 to
    /// `127.0.0.1:inner_port` inside the namespace; returns the host port.
    pub fn tcp_into(&mut self, inner_port: u16) -> io::Result<u16> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
        let outer = listener.local_addr()?;
        let path = self.path();
        let stop = self.stop.clone();
        self.wake.push(outer);
        self.threads.push(std::thread::spawn(move || {
            if enter(&path).is_err() {
                return;
            }
            for conn in listener.incoming() {
                if stop.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(outside) = conn else { continue };
                // Made after setns: a socket inside the namespace.
                let Ok(inside) = TcpStream::connect((Ipv4Addr::LOCALHOST, inner_port)) else {
                    let _ = outside.shutdown(Shutdown::Both);
                    continue;
                };
                pump(outside, inside);
            }
        }));
        Ok(outer.port())
    }

    /// Relays UDP datagrams sent to `127.0.0.1:inner_port` inside the
    /// namespace to `target` on the host's loopback, and the answers back
    /// to whoever asked last.
    pub fn udp_out(&mut self, inner_port: u16, target: SocketAddr) -> io::Result<()> {
        assert!(target.ip().is_loopback(), "relays lead to the host's loopback only, not {target}");
        let outside = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))?;
        outside.connect(target)?;
        outside.set_read_timeout(Some(IDLE))?;
        let inside = self.udp_socket_inside(inner_port)?;
        let outside = Arc::new(outside);
        let inside = Arc::new(inside);
        let peer = Arc::new(std::sync::Mutex::new(None::<SocketAddr>));
        let (stop, o, i, p) = (self.stop.clone(), outside.clone(), inside.clone(), peer.clone());
        self.threads.push(std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while !stop.load(Ordering::SeqCst) {
                if let Ok((n, from)) = i.recv_from(&mut buf) {
                    *p.lock().unwrap() = Some(from);
                    let _ = o.send(&buf[..n]);
                }
            }
        }));
        let stop = self.stop.clone();
        self.threads.push(std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while !stop.load(Ordering::SeqCst) {
                if let Ok(n) = outside.recv(&mut buf) {
                    let to = *peer.lock().unwrap();
                    if let Some(to) = to {
                        let _ = inside.send_to(&buf[..n], to);
                    }
                }
            }
        }));
        Ok(())
    }

    /// A DNS server on `127.0.0.1:53` inside the namespace that answers A
    /// queries for `name` with `addr`, AAAA for it with no record, and
    /// everything else with NXDOMAIN. Returns a counter of the queries it
    /// answered for `name`.
    pub fn dns(&mut self, name: &str, addr: Ipv4Addr) -> io::Result<Arc<AtomicU64>> {
        let socket = self.udp_socket_inside(53)?;
        let asked = Arc::new(AtomicU64::new(0));
        let (stop, count, name) = (self.stop.clone(), asked.clone(), name.to_ascii_lowercase());
        self.threads.push(std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            while !stop.load(Ordering::SeqCst) {
                let Ok((n, from)) = socket.recv_from(&mut buf) else { continue };
                if let Some((answer, matched)) = dns_answer(&buf[..n], &name, addr) {
                    if matched {
                        count.fetch_add(1, Ordering::SeqCst);
                    }
                    let _ = socket.send_to(&answer, from);
                }
            }
        }));
        Ok(asked)
    }

    /// A UDP socket bound to `127.0.0.1:port` inside the namespace.
    fn udp_socket_inside(&self, port: u16) -> io::Result<UdpSocket> {
        let path = self.path();
        std::thread::spawn(move || -> io::Result<UdpSocket> {
            enter(&path)?;
            let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, port))?;
            socket.set_read_timeout(Some(IDLE))?;
            Ok(socket)
        })
        .join()
        .map_err(|_| io::Error::other("the namespace thread panicked"))?
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for addr in &self.wake {
            let _ = TcpStream::connect_timeout(addr, Duration::from_secs(1));
        }
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
        let _ = ip(&["netns", "delete", &self.name]);
    }
}

/// Moves the calling thread into the namespace at `path`.
fn enter(path: &std::path::Path) -> io::Result<()> {
    let file = std::fs::File::open(path)?;
    nix::sched::setns(file, nix::sched::CloneFlags::CLONE_NEWNET).map_err(io::Error::from)
}

/// Copies both ways between two connections until either side closes.
fn pump(a: TcpStream, b: TcpStream) {
    // Small gRPC frames must not wait for Nagle's timer on either hop.
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

fn ip(args: &[&str]) -> io::Result<()> {
    let out = Command::new("ip").args(args).output()?;
    if out.status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!("ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim())))
    }
}

/// The answer to one DNS query (RFC 1035), and whether it asked for
/// `name`; `None` for anything that is not a one-question query.
pub fn dns_answer(query: &[u8], name: &str, addr: Ipv4Addr) -> Option<(Vec<u8>, bool)> {
    if query.len() < 12 || query[2] & 0x80 != 0 || u16::from_be_bytes([query[4], query[5]]) != 1 {
        return None;
    }
    // The question: labels up to the root, then type and class.
    let mut i = 12;
    let mut labels = Vec::new();
    loop {
        let len = usize::from(*query.get(i)?);
        i += 1;
        if len == 0 {
            break;
        }
        if len > 63 {
            return None;
        }
        labels.push(String::from_utf8_lossy(query.get(i..i + len)?).to_ascii_lowercase());
        i += len;
    }
    let qtype = u16::from_be_bytes([*query.get(i)?, *query.get(i + 1)?]);
    let question_end = i + 4;
    query.get(..question_end)?;
    let matched = labels.join(".") == name;
    let a_record = matched && qtype == 1;
    let mut out = Vec::with_capacity(question_end + 16);
    out.extend_from_slice(&query[..2]);
    // QR, the client's RD, RA; NOERROR for the name, NXDOMAIN otherwise.
    out.push(0x80 | (query[2] & 0x01));
    out.push(if matched { 0x80 } else { 0x83 });
    out.extend_from_slice(&[0, 1, 0, u8::from(a_record), 0, 0, 0, 0]);
    out.extend_from_slice(&query[12..question_end]);
    if a_record {
        // A pointer to the question's name, type A, class IN, TTL 60 s.
        out.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4]);
        out.extend_from_slice(&addr.octets());
    }
    Some((out, matched))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A query for `name` of `qtype`, id 0x1234, recursion desired.
    fn query(name: &str, qtype: u16) -> Vec<u8> {
        let mut q = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        for label in name.split('.') {
            q.push(label.len() as u8);
            q.extend_from_slice(label.as_bytes());
        }
        q.push(0);
        q.extend_from_slice(&qtype.to_be_bytes());
        q.extend_from_slice(&[0, 1]);
        q
    }

    /// Runs `f` on a thread inside `ns` (sockets it makes live there).
    fn inside<T: Send + 'static>(ns: &NetNs, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = ns.path();
        std::thread::spawn(move || {
            enter(&path).expect("setns");
            f()
        })
        .join()
        .expect("inside thread")
    }

    #[test]
    fn relays_cross_the_border_and_nothing_else_leaves() {
        if let Some(why) = unavailable() {
            eprintln!("skipped because {why}");
            return;
        }
        let mut ns = NetNs::new().unwrap();
        // UDP out: an echo server on the host's loopback, reached as 127.0.0.1:123 inside.
        let echo = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let echo_addr = echo.local_addr().unwrap();
        std::thread::spawn(move || {
            let mut buf = [0u8; 64];
            if let Ok((n, from)) = echo.recv_from(&mut buf) {
                let _ = echo.send_to(&buf[..n], from);
            }
        });
        ns.udp_out(123, echo_addr).unwrap();
        let queries = ns.dns("pool.ntp.org", Ipv4Addr::new(10, 0, 2, 2)).unwrap();
        let (echoed, answer, unreachable) = inside(&ns, || {
            let s = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            s.send_to(b"ping", (Ipv4Addr::LOCALHOST, 123)).unwrap();
            let mut buf = [0u8; 512];
            let n = s.recv(&mut buf).unwrap();
            let echoed = buf[..n].to_vec();
            s.send_to(&query("pool.ntp.org", 1), (Ipv4Addr::LOCALHOST, 53)).unwrap();
            let n = s.recv(&mut buf).unwrap();
            let answer = buf[n - 4..n].to_vec();
            // Nothing but loopback: anything else fails before it is sent.
            let out = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).unwrap();
            let unreachable = out.send_to(b"x", (Ipv4Addr::new(192, 0, 2, 1), 123)).unwrap_err().raw_os_error();
            (echoed, answer, unreachable)
        });
        assert_eq!(echoed, b"ping");
        assert_eq!(answer, [10, 0, 2, 2]);
        assert_eq!(queries.load(Ordering::SeqCst), 1);
        assert_eq!(unreachable, Some(nix::libc::ENETUNREACH));
        // TCP in: a listener inside, reached from the host's loopback.
        let listener = inside(&ns, || TcpListener::bind((Ipv4Addr::LOCALHOST, 50000)).unwrap());
        let port = ns.tcp_into(50000).unwrap();
        let mut client = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).unwrap();
        std::io::Write::write_all(&mut client, b"hello").unwrap();
        let (mut conn, _) = listener.accept().unwrap();
        let mut got = [0u8; 5];
        std::io::Read::read_exact(&mut conn, &mut got).unwrap();
        assert_eq!(&got, b"hello");
        let name = ns.name().to_string();
        drop(ns);
        let list = Command::new("ip").args(["netns", "list"]).output().unwrap();
        assert!(!String::from_utf8_lossy(&list.stdout).contains(&name), "namespace {name} left behind");
    }

    #[test]
    fn dns_answers_one_name() {
        let addr = Ipv4Addr::new(10, 0, 2, 2);
        let q = query("Pool.NTP.org", 1);
        let (a, matched) = dns_answer(&q, "pool.ntp.org", addr).unwrap();
        assert!(matched);
        assert_eq!(&a[..4], &[0x12, 0x34, 0x81, 0x80], "id, QR|RD, RA, NOERROR");
        assert_eq!(&a[4..12], &[0, 1, 0, 1, 0, 0, 0, 0]);
        assert_eq!(&a[12..q.len()], &q[12..]);
        assert_eq!(&a[q.len()..], &[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 10, 0, 2, 2]);
        // AAAA: the name exists, with no such record.
        let (a, matched) = dns_answer(&query("pool.ntp.org", 28), "pool.ntp.org", addr).unwrap();
        assert!(matched);
        assert_eq!(&a[2..8], &[0x81, 0x80, 0, 1, 0, 0]);
        // Any other name: NXDOMAIN.
        let (a, matched) = dns_answer(&query("example.com", 1), "pool.ntp.org", addr).unwrap();
        assert!(!matched);
        assert_eq!(&a[2..8], &[0x81, 0x83, 0, 1, 0, 0]);
        // Not a query, or cut short: no answer.
        assert!(dns_answer(&a, "pool.ntp.org", addr).is_none());
        assert!(dns_answer(&q[..q.len() - 1], "pool.ntp.org", addr).is_none());
        assert!(dns_answer(&q[..5], "pool.ntp.org", addr).is_none());
    }
}
