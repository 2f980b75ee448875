//! `netstat`: the TCP and UDP sockets of the network namespace bronzed runs
//! in, from netlink `sock_diag` (`inet_diag_req_v2` dumps, one per protocol
//! and IP version), each with the processes that hold it.
//!
//! Owners are found the way `ss -p` finds them: every `/proc/<pid>/fd/*`
//! link that reads `socket:[<inode>]` for an inode of the dump. That scan is
//! bounded in processes, descriptors and time; what it could not see is
//! reported as a warning, never as an error. Pure parts ([`Filter::queries`],
//! [`state_name`], [`parse_socket_link`]) are apart from the I/O
//! ([`dump`], [`owners`], [`netstat`]); the procfs root is a parameter.

use netlink_packet_core::{NLM_F_DUMP, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload};
use netlink_packet_sock_diag::SockDiagMessage;
use netlink_packet_sock_diag::constants::{AF_INET, AF_INET6, IPPROTO_TCP, IPPROTO_UDP};
use netlink_packet_sock_diag::inet::{ExtensionFlags, InetRequest, SocketId, StateFlags};
use netlink_sys::{Socket, SocketAddr as NetlinkAddr, protocols::NETLINK_SOCK_DIAG};
use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::path::Path;
use std::time::{Duration, Instant};

/// Most sockets one answer carries (about 15 MiB of protobuf); the rest are
/// left out and the answer says it is truncated.
pub const MAX_SOCKETS: usize = 100_000;
/// Most processes whose descriptors are looked at.
pub const MAX_PROCESSES: usize = 100_000;
/// Most descriptors looked at over all processes.
pub const MAX_DESCRIPTORS: usize = 4_000_000;
/// How long the owner lookup may take before it stops with what it found.
pub const OWNER_DEADLINE: Duration = Duration::from_secs(3);
/// Most processes named per socket (a socket shared after fork).
pub const MAX_OWNERS: usize = 8;
/// How long one netlink receive may wait for the kernel.
pub const RECV_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum SocketsError {
    #[error("cannot open a NETLINK_SOCK_DIAG socket: {0}")]
    Open(std::io::Error),
    #[error("sock_diag dump of {query}: cannot {step}: {error}")]
    Io { query: Query, step: &'static str, error: std::io::Error },
    #[error("sock_diag dump of {query}: the kernel answered: {error}")]
    Kernel { query: Query, error: std::io::Error },
    #[error("sock_diag dump of {query}: undecodable answer at byte {offset}: {message}")]
    Decode { query: Query, offset: usize, message: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }

    fn number(self) -> u8 {
        match self {
            Protocol::Tcp => IPPROTO_TCP,
            Protocol::Udp => IPPROTO_UDP,
        }
    }
}

/// Which sockets to show. A pair left both false means both.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Filter {
    /// Only listening sockets: TCP in LISTEN, UDP not connected.
    pub listening: bool,
    pub tcp: bool,
    pub udp: bool,
    pub ipv4: bool,
    pub ipv6: bool,
}

/// One `sock_diag` dump: a protocol, an IP version and the kernel states
/// it asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Query {
    pub protocol: Protocol,
    pub ip_version: u8,
    /// Bit `1 << state` for each kernel state asked for.
    pub states: u32,
}

impl std::fmt::Display for Query {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/ipv{}", self.protocol.as_str(), self.ip_version)
    }
}

/// Kernel socket states (include/net/tcp_states.h); UDP uses ESTABLISHED
/// (connected) and CLOSE (not connected).
const TCP_ESTABLISHED: u8 = 1;
const TCP_CLOSE: u8 = 7;
const TCP_LISTEN: u8 = 10;

impl Filter {
    /// The dumps this filter needs, TCP before UDP, IPv4 before IPv6; the
    /// state filter is done by the kernel.
    pub fn queries(&self) -> Vec<Query> {
        let protocols = match (self.tcp, self.udp) {
            (true, false) => vec![Protocol::Tcp],
            (false, true) => vec![Protocol::Udp],
            _ => vec![Protocol::Tcp, Protocol::Udp],
        };
        let versions: &[u8] = match (self.ipv4, self.ipv6) {
            (true, false) => &[4],
            (false, true) => &[6],
            _ => &[4, 6],
        };
        let mut out = Vec::new();
        for &protocol in &protocols {
            let states = match (self.listening, protocol) {
                (false, _) => StateFlags::all().bits(),
                (true, Protocol::Tcp) => 1 << TCP_LISTEN,
                (true, Protocol::Udp) => 1 << TCP_CLOSE,
            };
            for &ip_version in versions {
                out.push(Query { protocol, ip_version, states });
            }
        }
        out
    }
}

/// The name of kernel state `state` (as netstat spells them); a UDP socket
/// is UNCONN or ESTABLISHED, as `ss` says.
pub fn state_name(protocol: Protocol, state: u8) -> &'static str {
    match (protocol, state) {
        (Protocol::Udp, TCP_CLOSE) => "UNCONN",
        (_, TCP_ESTABLISHED) => "ESTABLISHED",
        (_, 2) => "SYN_SENT",
        (_, 3) => "SYN_RECV",
        (_, 4) => "FIN_WAIT1",
        (_, 5) => "FIN_WAIT2",
        (_, 6) => "TIME_WAIT",
        (_, TCP_CLOSE) => "CLOSE",
        (_, 8) => "CLOSE_WAIT",
        (_, 9) => "LAST_ACK",
        (_, TCP_LISTEN) => "LISTEN",
        (_, 11) => "CLOSING",
        (_, 12) => "NEW_SYN_RECV",
        _ => "UNKNOWN",
    }
}

/// A process holding a socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    pub pid: u32,
    /// `/proc/<pid>/comm`, escaped.
    pub command: String,
}

/// One socket as the kernel reported it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SocketEntry {
    pub protocol: Protocol,
    pub ip_version: u8,
    pub state: u8,
    pub local: IpAddr,
    pub local_port: u16,
    pub remote: IpAddr,
    pub remote_port: u16,
    pub recv_queue: u32,
    pub send_queue: u32,
    pub uid: u32,
    pub inode: u32,
    /// By pid; at most [`MAX_OWNERS`].
    pub owners: Vec<Owner>,
}

impl SocketEntry {
    pub fn state_name(&self) -> &'static str {
        state_name(self.protocol, self.state)
    }

    fn sort_key(&self) -> (Protocol, u8, IpAddr, u16, IpAddr, u16, u32) {
        (self.protocol, self.ip_version, self.local, self.local_port, self.remote, self.remote_port, self.inode)
    }
}

/// The answer to one `netstat`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Netstat {
    /// Sorted by protocol, IP version, local then remote address and port.
    pub sockets: Vec<SocketEntry>,
    /// More than [`MAX_SOCKETS`]: the rest are left out.
    pub truncated: bool,
    pub warnings: Vec<String>,
}

/// The kernel modules behind the dumps `filter` asks for: on a kernel
/// that builds sock_diag's handlers as modules (Debian's: `tcp_diag` and
/// `udp_diag` over `inet_diag`) a dump answers ENOENT until they are
/// loaded, and the kernel's own autoload needs a `modprobe` the image does
/// not have.
pub fn modules_for(filter: &Filter) -> Vec<&'static str> {
    let mut out = Vec::new();
    for q in filter.queries() {
        let module = match q.protocol {
            Protocol::Tcp => "tcp_diag",
            Protocol::Udp => "udp_diag",
        };
        if !out.contains(&module) {
            out.push(module);
        }
    }
    out
}

/// [`netstat`] after asking `modules` for the diag modules it needs (PID 1
/// loads them once, the first time; a process asks nothing). Blocking.
pub fn netstat_loading(
    filter: &Filter,
    proc: &Path,
    modules: &dyn crate::init::OnDemandModules,
) -> Result<Netstat, SocketsError> {
    for module in modules_for(filter) {
        modules.ensure(module);
    }
    netstat(filter, proc)
}

/// The sockets `filter` selects in the caller's network namespace, with
/// their owners from `proc` (normally `/proc`). Blocking: run it off the
/// async runtime.
pub fn netstat(filter: &Filter, proc: &Path) -> Result<Netstat, SocketsError> {
    let mut socket = open()?;
    let mut sockets = Vec::new();
    let mut truncated = false;
    for (seq, query) in filter.queries().into_iter().enumerate() {
        let room = MAX_SOCKETS - sockets.len();
        let (found, full) = dump(&mut socket, &query, seq as u32 + 1, room)?;
        sockets.extend(found);
        if full {
            truncated = true;
            break;
        }
    }
    let inodes: HashSet<u32> = sockets.iter().map(|s| s.inode).filter(|&i| i != 0).collect();
    let found = owners(proc, &inodes, OWNER_DEADLINE);
    let mut owners = found.owners;
    for s in &mut sockets {
        if let Some(list) = owners.get_mut(&s.inode) {
            s.owners = list.clone();
        }
    }
    owners.clear();
    sockets.sort_unstable_by_key(SocketEntry::sort_key);
    let mut warnings = found.warnings;
    if truncated {
        warnings.insert(0, format!("more than {MAX_SOCKETS} sockets: the rest are left out"));
    }
    Ok(Netstat { sockets, truncated, warnings })
}

/// A `NETLINK_SOCK_DIAG` socket with a receive timeout.
pub fn open() -> Result<Socket, SocketsError> {
    let mut socket = Socket::new(NETLINK_SOCK_DIAG).map_err(SocketsError::Open)?;
    socket.bind_auto().map_err(SocketsError::Open)?;
    socket.connect(&NetlinkAddr::new(0, 0)).map_err(SocketsError::Open)?;
    let timeout = nix::sys::time::TimeVal::new(RECV_TIMEOUT.as_secs() as _, 0);
    nix::sys::socket::setsockopt(&socket, nix::sys::socket::sockopt::ReceiveTimeout, &timeout)
        .map_err(|e| SocketsError::Open(e.into()))?;
    Ok(socket)
}

/// The request message of `query`, serialized.
pub fn request(query: &Query, seq: u32) -> Vec<u8> {
    let (family, socket_id) =
        if query.ip_version == 4 { (AF_INET, SocketId::new_v4()) } else { (AF_INET6, SocketId::new_v6()) };
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | NLM_F_DUMP;
    header.sequence_number = seq;
    let mut packet = NetlinkMessage::new(
        header,
        SockDiagMessage::InetRequest(InetRequest {
            family,
            protocol: query.protocol.number(),
            extensions: ExtensionFlags::empty(),
            states: StateFlags::from_bits_retain(query.states),
            socket_id,
        })
        .into(),
    );
    packet.finalize();
    let mut buf = vec![0; packet.buffer_len()];
    packet.serialize(&mut buf);
    buf
}

/// One dump: at most `room` sockets, and whether there were more.
pub fn dump(
    socket: &mut Socket,
    query: &Query,
    seq: u32,
    room: usize,
) -> Result<(Vec<SocketEntry>, bool), SocketsError> {
    let io = |step, error| SocketsError::Io { query: *query, step, error };
    socket.send(&request(query, seq), 0).map_err(|e| io("send the request", e))?;
    let mut out = Vec::new();
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let size = socket.recv(&mut &mut buf[..], 0).map_err(|e| io("receive", e))?;
        if size == 0 {
            return Err(io("receive", std::io::ErrorKind::UnexpectedEof.into()));
        }
        match parse_batch(&buf[..size.min(buf.len())], query, seq, room, &mut out)? {
            Batch::More => {}
            Batch::Done => return Ok((out, false)),
            Batch::Full => return Ok((out, true)),
        }
    }
}

enum Batch {
    More,
    Done,
    Full,
}

/// The messages of one datagram into `out`.
fn parse_batch(
    bytes: &[u8],
    query: &Query,
    seq: u32,
    room: usize,
    out: &mut Vec<SocketEntry>,
) -> Result<Batch, SocketsError> {
    let mut offset = 0;
    while offset < bytes.len() {
        let decode = |message: String| SocketsError::Decode { query: *query, offset, message };
        let message =
            <NetlinkMessage<SockDiagMessage>>::deserialize(&bytes[offset..]).map_err(|e| decode(e.to_string()))?;
        let length = message.header.length as usize;
        if length == 0 {
            return Err(decode("a message of length 0".into()));
        }
        // Answers to another request on this socket (none expected) are skipped.
        if message.header.sequence_number == seq {
            match message.payload {
                NetlinkPayload::InnerMessage(SockDiagMessage::InetResponse(response)) => {
                    if out.len() >= room {
                        return Ok(Batch::Full);
                    }
                    let h = &response.header;
                    let id = &h.socket_id;
                    out.push(SocketEntry {
                        protocol: query.protocol,
                        ip_version: query.ip_version,
                        state: h.state,
                        local: id.source_address,
                        local_port: id.source_port,
                        remote: id.destination_address,
                        remote_port: id.destination_port,
                        recv_queue: h.recv_queue,
                        send_queue: h.send_queue,
                        uid: h.uid,
                        inode: h.inode,
                        owners: Vec::new(),
                    });
                }
                NetlinkPayload::Done(_) => return Ok(Batch::Done),
                NetlinkPayload::Error(e) if e.code.is_some() => {
                    return Err(SocketsError::Kernel { query: *query, error: e.to_io() });
                }
                _ => {}
            }
        }
        offset += length.next_multiple_of(4);
    }
    Ok(Batch::More)
}

/// `socket:[12345]` → 12345.
pub fn parse_socket_link(link: &[u8]) -> Option<u32> {
    link.strip_prefix(b"socket:[")?.strip_suffix(b"]").and_then(|n| std::str::from_utf8(n).ok()?.parse().ok())
}

/// Processes holding the wanted inodes, and what the scan could not see.
#[derive(Debug, Default)]
pub struct Owners {
    pub owners: HashMap<u32, Vec<Owner>>,
    pub warnings: Vec<String>,
}

/// Looks through `/proc/<pid>/fd` (under `proc`) for links to `inodes`,
/// within [`MAX_PROCESSES`], [`MAX_DESCRIPTORS`] and `deadline`.
pub fn owners(proc: &Path, inodes: &HashSet<u32>, deadline: Duration) -> Owners {
    let mut out = Owners::default();
    if inodes.is_empty() {
        return out;
    }
    let started = Instant::now();
    let entries = match std::fs::read_dir(proc) {
        Ok(entries) => entries,
        Err(e) => {
            out.warnings.push(format!("no owning processes: cannot list {}: {e}", proc.display()));
            return out;
        }
    };
    let mut pids: Vec<u32> = entries.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok()).collect();
    pids.sort_unstable();
    if pids.len() > MAX_PROCESSES {
        out.warnings
            .push(format!("{} processes: only the first {MAX_PROCESSES} were searched for socket owners", pids.len()));
        pids.truncate(MAX_PROCESSES);
    }
    let (mut descriptors, mut unreadable) = (0usize, 0usize);
    let mut commands: HashMap<u32, String> = HashMap::new();
    let mut path = proc.to_path_buf();
    'pids: for pid in pids {
        path.push(pid.to_string());
        path.push("fd");
        let fds = match std::fs::read_dir(&path) {
            Ok(fds) => fds,
            // Gone since the listing, or a kernel thread.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                path.pop();
                path.pop();
                continue;
            }
            Err(_) => {
                unreadable += 1;
                path.pop();
                path.pop();
                continue;
            }
        };
        // Each link is read relative to the directory (one lookup instead
        // of a walk of /proc/<pid>/fd/<n> per descriptor).
        let dir = std::fs::File::open(&path).ok();
        let mut found = false;
        for fd in fds {
            let Ok(fd) = fd else { break };
            descriptors += 1;
            if descriptors > MAX_DESCRIPTORS || (descriptors % 1024 == 0 && started.elapsed() > deadline) {
                out.warnings.push(format!(
                    "owner lookup stopped after {descriptors} descriptors in {} ms (bounds: {MAX_DESCRIPTORS}, {} ms): \
                     some sockets show no process",
                    started.elapsed().as_millis(),
                    deadline.as_millis()
                ));
                break 'pids;
            }
            let link = match &dir {
                Some(dir) => nix::fcntl::readlinkat(dir, fd.file_name().as_os_str()).ok(),
                None => std::fs::read_link(fd.path()).ok().map(|p| p.into_os_string()),
            };
            let Some(link) = link else { continue };
            let Some(inode) = parse_socket_link(link.as_encoded_bytes()) else { continue };
            if !inodes.contains(&inode) {
                continue;
            }
            let list = out.owners.entry(inode).or_default();
            if list.len() < MAX_OWNERS && list.last().is_none_or(|o| o.pid != pid) {
                list.push(Owner { pid, command: String::new() });
                found = true;
            }
        }
        path.pop();
        if found {
            path.push("comm");
            let comm = std::fs::read(&path).unwrap_or_default();
            path.pop();
            let command = String::from_utf8_lossy(&comm[..comm.len().min(64)]).trim_end_matches('\n').to_string();
            commands.insert(pid, bronze_bundle::text::escape_within(&command, 64).into_owned());
        }
        path.pop();
    }
    for owner in out.owners.values_mut().flatten() {
        if let Some(command) = commands.get(&owner.pid) {
            owner.command.clone_from(command);
        }
    }
    if unreadable > 0 {
        out.warnings
            .push(format!("the descriptors of {unreadable} processes were unreadable: their sockets show no process"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr, TcpListener, TcpStream, UdpSocket};
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn filters_become_dumps_with_kernel_state_filters() {
        let all = Filter::default().queries();
        let labels: Vec<String> = all.iter().map(ToString::to_string).collect();
        assert_eq!(labels, ["tcp/ipv4", "tcp/ipv6", "udp/ipv4", "udp/ipv6"]);
        assert!(all.iter().all(|q| q.states == StateFlags::all().bits()));
        let listening = Filter { listening: true, udp: true, ipv6: true, ..Default::default() }.queries();
        assert_eq!(listening, [Query { protocol: Protocol::Udp, ip_version: 6, states: 1 << 7 }]);
        let tcp4 = Filter { listening: true, tcp: true, ipv4: true, ..Default::default() }.queries();
        assert_eq!(tcp4, [Query { protocol: Protocol::Tcp, ip_version: 4, states: 1 << 10 }]);
        // Both of a pair is the same as neither.
        let both = Filter { tcp: true, udp: true, ipv4: true, ipv6: true, ..Default::default() }.queries();
        assert_eq!(both, all);
    }

    #[test]
    fn state_names() {
        assert_eq!(state_name(Protocol::Tcp, 10), "LISTEN");
        assert_eq!(state_name(Protocol::Tcp, 1), "ESTABLISHED");
        assert_eq!(state_name(Protocol::Tcp, 7), "CLOSE");
        assert_eq!(state_name(Protocol::Udp, 7), "UNCONN");
        assert_eq!(state_name(Protocol::Udp, 1), "ESTABLISHED");
        assert_eq!(state_name(Protocol::Tcp, 6), "TIME_WAIT");
        assert_eq!(state_name(Protocol::Tcp, 200), "UNKNOWN");
    }

    #[test]
    fn socket_links() {
        assert_eq!(parse_socket_link(b"socket:[12345]"), Some(12345));
        assert_eq!(parse_socket_link(b"socket:[]"), None);
        assert_eq!(parse_socket_link(b"socket:[12a]"), None);
        assert_eq!(parse_socket_link(b"pipe:[12345]"), None);
        assert_eq!(parse_socket_link(b"/dev/null"), None);
        assert_eq!(parse_socket_link(b"socket:[99999999999]"), None);
    }

    #[test]
    fn the_diag_modules_follow_the_protocols_asked_for() {
        assert_eq!(modules_for(&Filter::default()), ["tcp_diag", "udp_diag"]);
        assert_eq!(modules_for(&Filter { tcp: true, ipv6: true, ..Filter::default() }), ["tcp_diag"]);
        assert_eq!(modules_for(&Filter { udp: true, listening: true, ..Filter::default() }), ["udp_diag"]);
        // Asked once per module, before the dumps.
        struct Asked(std::sync::Mutex<Vec<String>>);
        impl crate::init::OnDemandModules for Asked {
            fn ensure(&self, name: &str) {
                self.0.lock().unwrap().push(name.to_string());
            }
        }
        let asked = Asked(std::sync::Mutex::new(Vec::new()));
        let filter = Filter { tcp: true, ..Filter::default() };
        netstat_loading(&filter, Path::new("/proc"), &asked).unwrap();
        assert_eq!(*asked.0.lock().unwrap(), ["tcp_diag"]);
    }

    #[test]
    fn hostile_batches_are_errors_not_panics() {
        let query = Query { protocol: Protocol::Tcp, ip_version: 4, states: 0 };
        let mut out = Vec::new();
        for bytes in [&[0u8; 3][..], &[0u8; 16][..], &[0xff; 40][..]] {
            assert!(parse_batch(bytes, &query, 1, 10, &mut out).is_err(), "{bytes:?}");
        }
        assert!(out.is_empty());
    }

    fn inode(fd: &impl AsRawFd) -> u32 {
        std::fs::metadata(format!("/proc/self/fd/{}", fd.as_raw_fd())).unwrap().ino() as u32
    }

    fn find(n: &Netstat, inode: u32) -> &SocketEntry {
        n.sockets.iter().find(|s| s.inode == inode).unwrap_or_else(|| panic!("inode {inode} not in {n:#?}"))
    }

    /// Real sockets on loopback in this process, seen by a real dump.
    #[test]
    fn own_sockets_with_states_and_this_process() {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        let udp6 = UdpSocket::bind((Ipv6Addr::LOCALHOST, 0)).unwrap();
        let n = netstat(&Filter::default(), Path::new("/proc")).unwrap();
        let me = std::process::id();

        let l = find(&n, inode(&listener));
        assert_eq!((l.protocol, l.ip_version, l.state_name()), (Protocol::Tcp, 4, "LISTEN"));
        assert_eq!((l.local, l.local_port), (IpAddr::from(Ipv4Addr::LOCALHOST), listener.local_addr().unwrap().port()));
        assert!(l.owners.iter().any(|o| o.pid == me), "{l:?}");
        let c = find(&n, inode(&client));
        assert_eq!(c.state_name(), "ESTABLISHED");
        assert_eq!(c.remote_port, listener.local_addr().unwrap().port());
        assert_eq!(c.local_port, client.local_addr().unwrap().port());
        let s = find(&n, inode(&server));
        assert_eq!((s.local_port, s.remote_port), (c.remote_port, c.local_port));
        let u = find(&n, inode(&udp6));
        assert_eq!((u.protocol, u.ip_version, u.state_name()), (Protocol::Udp, 6, "UNCONN"));
        assert_eq!(u.local, IpAddr::from(Ipv6Addr::LOCALHOST));
        assert!(!u.owners.is_empty() && u.owners.iter().all(|o| o.pid == me && !o.command.is_empty()), "{u:?}");

        // --listening --tcp -4: the listener, not the connection or the UDP socket.
        let only = Filter { listening: true, tcp: true, ipv4: true, ..Default::default() };
        let n = netstat(&only, Path::new("/proc")).unwrap();
        assert!(n.sockets.iter().any(|s| s.inode == inode(&listener)));
        assert!(n.sockets.iter().all(|s| s.protocol == Protocol::Tcp && s.ip_version == 4 && s.state == 10));
        assert!(!n.sockets.iter().any(|s| s.inode == inode(&client) || s.inode == inode(&udp6)));
    }

    #[test]
    fn owners_of_a_temp_proc_tree() {
        let dir = tempfile::tempdir().unwrap();
        let fd = dir.path().join("42/fd");
        std::fs::create_dir_all(&fd).unwrap();
        std::os::unix::fs::symlink("socket:[777]", fd.join("3")).unwrap();
        std::os::unix::fs::symlink("socket:[778]", fd.join("4")).unwrap();
        std::os::unix::fs::symlink("/dev/null", fd.join("0")).unwrap();
        std::fs::write(dir.path().join("42/comm"), "evil\x1b[2J\n").unwrap();
        std::fs::create_dir_all(dir.path().join("not-a-pid/fd")).unwrap();
        let found = owners(dir.path(), &HashSet::from([777]), OWNER_DEADLINE);
        assert_eq!(found.owners.len(), 1, "{found:?}");
        let owner = &found.owners[&777][0];
        assert_eq!(owner.pid, 42);
        assert!(!owner.command.contains('\x1b'), "{owner:?}");
        assert!(owner.command.starts_with("evil"), "{owner:?}");
        assert!(found.warnings.is_empty(), "{:?}", found.warnings);
    }
}
