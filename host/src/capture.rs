//! Packet capture on one link: an `AF_PACKET` socket with a kernel
//! classic-BPF filter, written out as a pcap file (the classic libpcap format,
//! microsecond timestamps) that tcpdump and Wireshark open.
//!
//! The node has no libpcap: the client compiles the filter expression
//! (`bronzectl` runs `tcpdump -ddd`) and sends the instructions. The node
//! checks their count and fields, puts a few instructions in front that keep
//! only the chosen link's packets (an `AF_PACKET` socket ignores
//! `SO_BINDTODEVICE`, and binding it to an interface needs a `sockaddr_ll`,
//! which no safe API here builds: the kernel's ancillary loads of the
//! packet's ifindex and type do it instead, with no unsafe code), and lets
//! the kernel verify the whole program when it is attached.
//!
//! Everything is bounded: the duration, the size of the file, the bytes kept
//! per packet, and one capture per link at a time ([`Busy`]).

use futures::TryStreamExt;
use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg, setsockopt, sockopt};
use socket2::{Domain, Protocol, SockFilter, Socket, Type};
use std::collections::HashSet;
use std::io::{self, IoSliceMut};
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The kernel's limit on a classic-BPF program (`BPF_MAXINSNS`).
pub const KERNEL_MAX_INSNS: usize = 4096;
/// Most instructions the node puts in front of the client's filter.
pub const PREFIX_LEN: usize = 6;
/// The most instructions a client's filter may have.
pub const MAX_FILTER: usize = KERNEL_MAX_INSNS - PREFIX_LEN;
pub const DEFAULT_DURATION: Duration = Duration::from_secs(10);
pub const MAX_DURATION: Duration = Duration::from_secs(300);
pub const DEFAULT_MAX_BYTES: u64 = 10 << 20;
pub const MAX_MAX_BYTES: u64 = 1 << 30;
/// The smallest file limit: the header and a few small packets.
pub const MIN_MAX_BYTES: u64 = 1024;
/// tcpdump's default snapshot length, and the most the node keeps.
pub const MAX_SNAPLEN: u32 = 262_144;
/// pcap link types (<https://www.tcpdump.org/linktypes.html>).
pub const LINKTYPE_ETHERNET: u32 = 1;
pub const LINKTYPE_RAW: u32 = 101;

/// Bytes sent to the client at once (or sooner, see [`FLUSH_EVERY`]).
const CHUNK: usize = 64 * 1024;
/// A partly filled chunk is sent after this long.
const FLUSH_EVERY: Duration = Duration::from_millis(200);
/// How long one receive waits, so the deadline and a gone client are noticed.
const POLL: Duration = Duration::from_millis(100);
/// Receive buffer of the socket: room for bursts while a chunk is sent.
const SOCKET_BUFFER: usize = 4 << 20;
/// Largest packet read whole (a GSO/GRO packet can be up to 64 KiB; larger
/// ones are cut and keep their original length in the record).
const READ_BUFFER: usize = MAX_SNAPLEN as usize;

const ETH_P_ALL: u16 = 0x0003;
const PACKET_OUTGOING: u32 = 4;
const ARPHRD_ETHER: u16 = 1;
const ARPHRD_LOOPBACK: u16 = 772;
const ARPHRD_NONE: u16 = 0xfffe;

/// Classic-BPF opcodes used by the prefix.
const BPF_LD_W_ABS: u16 = 0x20;
const BPF_JMP_JEQ_K: u16 = 0x15;
const BPF_RET_K: u16 = 0x06;
/// `SKF_AD_OFF + SKF_AD_IFINDEX` / `SKF_AD_PKTTYPE`: ancillary loads of the
/// packet's ifindex and type (`PACKET_OUTGOING`, ...).
const SKF_AD_IFINDEX: u32 = 0xffff_f000 + 8;
const SKF_AD_PKTTYPE: u32 = 0xffff_f000 + 4;

#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error("link {link:?} is not a link name: {reason}")]
    LinkName { link: String, reason: String },
    #[error("link {link} does not exist")]
    NoSuchLink { link: String },
    #[error("cannot look up link {link}: {message}")]
    LinkLookup { link: String, message: String },
    #[error(
        "link {link} has hardware type {hatype}; capture supports Ethernet, loopback and raw-IP (ARPHRD_NONE) links"
    )]
    UnsupportedLink { link: String, hatype: u16 },
    #[error("the filter has {count} instructions; at most {MAX_FILTER} are allowed")]
    FilterTooLong { count: usize },
    #[error("filter instruction {index}: {field} is {value}; at most {max} is allowed")]
    FilterField { index: usize, field: &'static str, value: u32, max: u32 },
    #[error("the filter was compiled for pcap link type {filter}, but link {link} has link type {link_type}")]
    FilterLinkType { link: String, link_type: u32, filter: u32 },
    #[error("the kernel refused the filter: {error}")]
    FilterRefused { error: io::Error },
    #[error("duration is {ms} ms; expected 1 ms to {} s (0 for the default {} s)", MAX_DURATION.as_secs(), DEFAULT_DURATION.as_secs())]
    Duration { ms: u64 },
    #[error(
        "max bytes is {value}; expected {MIN_MAX_BYTES} to {MAX_MAX_BYTES} (0 for the default {DEFAULT_MAX_BYTES})"
    )]
    MaxBytes { value: u64 },
    #[error("snaplen is {value}; expected 1 to {MAX_SNAPLEN} (0 for the default {MAX_SNAPLEN})")]
    Snaplen { value: u32 },
    #[error("a capture on link {link} is already running (one per link at a time)")]
    Busy { link: String },
    #[error("capture socket: {what}: {error}")]
    Socket { what: &'static str, error: io::Error },
}

impl CaptureError {
    /// Whether the caller's request is at fault (rather than the node).
    pub fn is_invalid_request(&self) -> bool {
        matches!(
            self,
            Self::LinkName { .. }
                | Self::FilterTooLong { .. }
                | Self::FilterField { .. }
                | Self::FilterLinkType { .. }
                | Self::FilterRefused { .. }
                | Self::Duration { .. }
                | Self::MaxBytes { .. }
                | Self::Snaplen { .. }
                | Self::UnsupportedLink { .. }
        )
    }
}

/// One classic-BPF instruction (`struct sock_filter`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Insn {
    pub code: u16,
    pub jt: u8,
    pub jf: u8,
    pub k: u32,
}

/// The bounds of one capture.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub duration: Duration,
    /// Size of the whole file, header included.
    pub max_bytes: u64,
    pub snaplen: u32,
}

impl Limits {
    /// From the request's fields; 0 picks the default.
    pub fn new(duration_ms: u64, max_bytes: u64, snaplen: u32) -> Result<Limits, CaptureError> {
        let duration = match duration_ms {
            0 => DEFAULT_DURATION,
            ms if Duration::from_millis(ms) <= MAX_DURATION => Duration::from_millis(ms),
            ms => return Err(CaptureError::Duration { ms }),
        };
        let max_bytes = match max_bytes {
            0 => DEFAULT_MAX_BYTES,
            v if (MIN_MAX_BYTES..=MAX_MAX_BYTES).contains(&v) => v,
            value => return Err(CaptureError::MaxBytes { value }),
        };
        let snaplen = match snaplen {
            0 => MAX_SNAPLEN,
            v if v <= MAX_SNAPLEN => v,
            value => return Err(CaptureError::Snaplen { value }),
        };
        Ok(Limits { duration, max_bytes, snaplen })
    }
}

/// Checks a filter's length and that each field fits `struct sock_filter`;
/// what the instructions mean is the kernel's to verify on attach.
pub fn filter(raw: impl ExactSizeIterator<Item = (u32, u32, u32, u32)>) -> Result<Vec<Insn>, CaptureError> {
    if raw.len() > MAX_FILTER {
        return Err(CaptureError::FilterTooLong { count: raw.len() });
    }
    raw.enumerate()
        .map(|(index, (code, jt, jf, k))| {
            let field = |field, value: u32, max: u32| {
                if value > max { Err(CaptureError::FilterField { index, field, value, max }) } else { Ok(value) }
            };
            Ok(Insn {
                code: field("code", code, u16::MAX.into())? as u16,
                jt: field("jt", jt, u8::MAX.into())? as u8,
                jf: field("jf", jf, u8::MAX.into())? as u8,
                k,
            })
        })
        .collect()
}

/// The program the kernel runs: accept only packets of the link (on
/// loopback, where each packet passes twice, only the arriving copy, as
/// libpcap does), then the client's filter (or, without one, keep `snaplen`
/// bytes of each packet). The client's jumps are relative, so they are
/// unchanged behind the prefix.
pub fn kernel_program(link: &Link, user: &[Insn], snaplen: u32) -> Vec<Insn> {
    let mut program = vec![
        Insn { code: BPF_LD_W_ABS, jt: 0, jf: 0, k: SKF_AD_IFINDEX },
        Insn { code: BPF_JMP_JEQ_K, jt: 1, jf: 0, k: link.index },
        Insn { code: BPF_RET_K, jt: 0, jf: 0, k: 0 },
    ];
    if link.hatype == ARPHRD_LOOPBACK {
        program.extend([
            Insn { code: BPF_LD_W_ABS, jt: 0, jf: 0, k: SKF_AD_PKTTYPE },
            Insn { code: BPF_JMP_JEQ_K, jt: 0, jf: 1, k: PACKET_OUTGOING },
            Insn { code: BPF_RET_K, jt: 0, jf: 0, k: 0 },
        ]);
    }
    debug_assert!(program.len() <= PREFIX_LEN);
    if user.is_empty() {
        program.push(Insn { code: BPF_RET_K, jt: 0, jf: 0, k: snaplen });
    } else {
        program.extend_from_slice(user);
    }
    program
}

/// The pcap link type of an ARP hardware type, where capture supports it.
pub fn link_type(hatype: u16) -> Option<u32> {
    match hatype {
        ARPHRD_ETHER | ARPHRD_LOOPBACK => Some(LINKTYPE_ETHERNET),
        ARPHRD_NONE => Some(LINKTYPE_RAW),
        _ => None,
    }
}

/// The 24-byte pcap global header (native byte order, as libpcap writes it).
pub fn global_header(snaplen: u32, link_type: u32) -> [u8; 24] {
    let mut h = [0u8; 24];
    h[0..4].copy_from_slice(&0xa1b2_c3d4u32.to_ne_bytes());
    h[4..6].copy_from_slice(&2u16.to_ne_bytes());
    h[6..8].copy_from_slice(&4u16.to_ne_bytes());
    // thiszone and sigfigs stay 0.
    h[16..20].copy_from_slice(&snaplen.to_ne_bytes());
    h[20..24].copy_from_slice(&link_type.to_ne_bytes());
    h
}

/// The 16-byte header of one record.
pub fn record_header(time: SystemTime, captured: u32, original: u32) -> [u8; 16] {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let mut h = [0u8; 16];
    h[0..4].copy_from_slice(&(since.as_secs() as u32).to_ne_bytes());
    h[4..8].copy_from_slice(&since.subsec_micros().to_ne_bytes());
    h[8..12].copy_from_slice(&captured.to_ne_bytes());
    h[12..16].copy_from_slice(&original.to_ne_bytes());
    h
}

/// Builds the file within its limits.
#[derive(Debug)]
pub struct PcapWriter {
    limits: Limits,
    written: u64,
    packets: u64,
}

impl PcapWriter {
    /// Appends the global header to `out`.
    pub fn new(limits: Limits, link_type: u32, out: &mut Vec<u8>) -> PcapWriter {
        out.extend_from_slice(&global_header(limits.snaplen, link_type));
        PcapWriter { limits, written: 24, packets: 0 }
    }

    /// Appends a record of `data` (at most `snaplen` of it), whose packet was
    /// `original` bytes long; false, and nothing appended, when the record
    /// would take the file past its byte limit.
    pub fn push(&mut self, out: &mut Vec<u8>, time: SystemTime, data: &[u8], original: usize) -> bool {
        let kept = data.len().min(self.limits.snaplen as usize);
        let size = 16 + kept as u64;
        if self.written + size > self.limits.max_bytes {
            return false;
        }
        let original = u32::try_from(original.max(kept)).unwrap_or(u32::MAX);
        out.extend_from_slice(&record_header(time, kept as u32, original));
        out.extend_from_slice(&data[..kept]);
        self.written += size;
        self.packets += 1;
        true
    }

    pub fn packets(&self) -> u64 {
        self.packets
    }

    pub fn bytes(&self) -> u64 {
        self.written
    }
}

/// The links being captured on; one capture per link at a time.
#[derive(Debug, Clone, Default)]
pub struct Busy(Arc<Mutex<HashSet<String>>>);

/// Holds a link for one capture; released on drop.
#[derive(Debug)]
pub struct BusyGuard {
    busy: Busy,
    link: String,
}

impl Busy {
    pub fn claim(&self, link: &str) -> Result<BusyGuard, CaptureError> {
        let mut set = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if !set.insert(link.to_string()) {
            return Err(CaptureError::Busy { link: link.to_string() });
        }
        Ok(BusyGuard { busy: self.clone(), link: link.to_string() })
    }
}

impl Drop for BusyGuard {
    fn drop(&mut self) {
        self.busy.0.lock().unwrap_or_else(|e| e.into_inner()).remove(&self.link);
    }
}

/// The link to capture on, as netlink reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub name: String,
    pub index: u32,
    pub hatype: u16,
    /// The pcap link type of the file.
    pub link_type: u32,
}

/// Checks `name` and looks the link up in the node's network namespace.
pub async fn lookup(name: &str) -> Result<Link, CaptureError> {
    let shown = || crate::network::dhcp::escaped(name);
    if let Some(reason) = crate::network::plan::link_name_problem(name) {
        return Err(CaptureError::LinkName { link: shown(), reason });
    }
    let (connection, handle, _) =
        rtnetlink::new_connection().map_err(|e| CaptureError::LinkLookup { link: shown(), message: e.to_string() })?;
    let task = tokio::spawn(connection);
    let found = handle.link().get().match_name(name.to_string()).execute().try_next().await;
    task.abort();
    let msg = match found {
        Ok(Some(msg)) => msg,
        Ok(None) => return Err(CaptureError::NoSuchLink { link: shown() }),
        Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code().abs() == libc::ENODEV => {
            return Err(CaptureError::NoSuchLink { link: shown() });
        }
        Err(e) => return Err(CaptureError::LinkLookup { link: shown(), message: e.to_string() }),
    };
    let hatype = u16::from(msg.header.link_layer_type);
    let link_type = link_type(hatype).ok_or(CaptureError::UnsupportedLink { link: shown(), hatype })?;
    Ok(Link { name: name.to_string(), index: msg.header.index, hatype, link_type })
}

fn socket_error(what: &'static str) -> impl FnOnce(io::Error) -> CaptureError {
    move |error| CaptureError::Socket { what, error }
}

fn sock_filters(program: &[Insn]) -> Vec<SockFilter> {
    program.iter().map(|i| SockFilter::new(i.code, i.jt, i.jf, i.k)).collect()
}

/// Opens the capture socket with `filter` attached. Until the real filter is
/// on, a reject-all filter keeps packets out, and what queued before it is
/// drained (as libpcap does), so no unfiltered packet reaches the file.
pub fn open(link: &Link, filter: &[Insn], snaplen: u32) -> Result<Socket, CaptureError> {
    let protocol = Protocol::from(i32::from(ETH_P_ALL.to_be()));
    let socket = Socket::new(Domain::PACKET, Type::RAW, Some(protocol)).map_err(socket_error("socket"))?;
    let reject_all = [SockFilter::new(BPF_RET_K, 0, 0, 0)];
    socket.attach_filter(&reject_all).map_err(socket_error("attaching the reject-all filter"))?;
    socket.set_nonblocking(true).map_err(socket_error("non-blocking mode"))?;
    let mut scratch = [std::mem::MaybeUninit::<u8>::uninit(); 64];
    while socket.recv(&mut scratch).is_ok() {}
    socket.set_nonblocking(false).map_err(socket_error("blocking mode"))?;
    let program = sock_filters(&kernel_program(link, filter, snaplen));
    socket.attach_filter(&program).map_err(|error| CaptureError::FilterRefused { error })?;
    socket.set_recv_buffer_size(SOCKET_BUFFER).map_err(socket_error("receive buffer"))?;
    socket.set_read_timeout(Some(POLL)).map_err(socket_error("read timeout"))?;
    setsockopt(&socket, sockopt::ReceiveTimestampns, &true)
        .map_err(|e| CaptureError::Socket { what: "timestamps", error: e.into() })?;
    Ok(socket)
}

/// How a capture ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// "duration", "max-bytes", "client-gone" or "error".
    pub stopped_by: &'static str,
    pub packets: u64,
    pub bytes: u64,
    pub error: Option<String>,
    /// The kernel's count for the socket (`PACKET_STATISTICS`): packets the
    /// filter accepted, and those dropped because the socket's buffer was
    /// full (the reader fell behind). `None` if the kernel would not say.
    pub kernel: Option<KernelStats>,
}

/// `struct tpacket_stats` as the kernel reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KernelStats {
    pub accepted: u64,
    pub dropped: u64,
}

/// Reads (and so resets) the socket's `PACKET_STATISTICS`.
#[allow(unsafe_code)]
pub fn kernel_stats(socket: &Socket) -> Option<KernelStats> {
    let mut stats = libc::tpacket_stats { tp_packets: 0, tp_drops: 0 };
    let mut len = std::mem::size_of::<libc::tpacket_stats>() as libc::socklen_t;
    // SAFETY: the fd is the open socket's; the kernel writes at most `len`
    // bytes into `stats`, a plain struct of that size, and sets `len`.
    let rc = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::SOL_PACKET,
            libc::PACKET_STATISTICS,
            (&mut stats as *mut libc::tpacket_stats).cast(),
            &mut len,
        )
    };
    (rc == 0).then(|| KernelStats { accepted: stats.tp_packets.into(), dropped: stats.tp_drops.into() })
}

/// Captures until a limit is reached, handing the file to `sink` in chunks
/// (the global header first). `sink` returns false when nobody listens any
/// more. Blocking: run it on a blocking thread.
pub fn run(socket: &Socket, link: &Link, limits: Limits, mut sink: impl FnMut(Vec<u8>) -> bool) -> Summary {
    let start = Instant::now();
    let mut out = Vec::with_capacity(CHUNK + READ_BUFFER);
    let mut writer = PcapWriter::new(limits, link.link_type, &mut out);
    let mut buf = vec![0u8; READ_BUFFER];
    let mut cmsg = nix::cmsg_space!(nix::sys::time::TimeSpec);
    // The header goes out at once: the client knows the capture is on.
    let mut flushed = Instant::now().checked_sub(FLUSH_EVERY).unwrap_or_else(Instant::now);
    let summary = |stopped_by, w: &PcapWriter, error| Summary {
        stopped_by,
        packets: w.packets(),
        bytes: w.bytes(),
        error,
        kernel: kernel_stats(socket),
    };
    let stopped = loop {
        if start.elapsed() >= limits.duration {
            break summary("duration", &writer, None);
        }
        if !out.is_empty() && (out.len() >= CHUNK || flushed.elapsed() >= FLUSH_EVERY) {
            if !sink(std::mem::take(&mut out)) {
                return summary("client-gone", &writer, None);
            }
            flushed = Instant::now();
        }
        let mut iov = [IoSliceMut::new(&mut buf)];
        let (original, time) = match recvmsg::<()>(socket.as_raw_fd(), &mut iov, Some(&mut cmsg), MsgFlags::MSG_TRUNC) {
            Ok(msg) => {
                let time = msg.cmsgs().ok().and_then(|mut c| {
                    c.find_map(|m| match m {
                        ControlMessageOwned::ScmTimestampns(ts) => {
                            Some(UNIX_EPOCH + Duration::new(ts.tv_sec() as u64, ts.tv_nsec() as u32))
                        }
                        _ => None,
                    })
                });
                (msg.bytes, time.unwrap_or_else(SystemTime::now))
            }
            Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EINTR) => {
                // Nothing arrived: a gone client is noticed even when idle.
                if out.is_empty() && !sink(Vec::new()) {
                    return summary("client-gone", &writer, None);
                }
                continue;
            }
            Err(e) => break summary("error", &writer, Some(format!("receiving: {e}"))),
        };
        let data = &buf[..original.min(buf.len())];
        if !writer.push(&mut out, time, data, original) {
            break summary("max-bytes", &writer, None);
        }
    };
    if !out.is_empty() {
        sink(out);
    }
    stopped
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits::new(0, 0, 0).unwrap()
    }

    #[test]
    fn limits_default_and_bound() {
        assert_eq!(limits(), Limits { duration: DEFAULT_DURATION, max_bytes: DEFAULT_MAX_BYTES, snaplen: MAX_SNAPLEN });
        assert_eq!(Limits::new(300_000, 1 << 30, 1).unwrap().max_bytes, 1 << 30);
        assert_eq!(
            Limits::new(300_001, 0, 0).unwrap_err().to_string(),
            "duration is 300001 ms; expected 1 ms to 300 s (0 for the default 10 s)"
        );
        assert_eq!(
            Limits::new(0, (1 << 30) + 1, 0).unwrap_err().to_string(),
            "max bytes is 1073741825; expected 1024 to 1073741824 (0 for the default 10485760)"
        );
        assert!(matches!(Limits::new(0, 1023, 0), Err(CaptureError::MaxBytes { value: 1023 })));
        assert!(matches!(Limits::new(0, 0, MAX_SNAPLEN + 1), Err(CaptureError::Snaplen { .. })));
    }

    #[test]
    fn filter_fields_and_length_are_checked() {
        let ok = filter([(0x28, 0, 0, 12), (6, 0, 0, 262_144)].into_iter()).unwrap();
        assert_eq!(ok[1], Insn { code: 6, jt: 0, jf: 0, k: 262_144 });
        assert_eq!(
            filter([(0x28, 0, 0, 12), (0x15, 256, 0, 1)].into_iter()).unwrap_err().to_string(),
            "filter instruction 1: jt is 256; at most 255 is allowed"
        );
        assert!(matches!(
            filter([(0x1_0000, 0, 0, 0)].into_iter()),
            Err(CaptureError::FilterField { field: "code", .. })
        ));
        let long = vec![(6u32, 0u32, 0u32, 0u32); MAX_FILTER + 1];
        assert_eq!(
            filter(long.into_iter()).unwrap_err().to_string(),
            "the filter has 4091 instructions; at most 4090 are allowed"
        );
        assert_eq!(filter(vec![(6, 0, 0, 0); MAX_FILTER].into_iter()).unwrap().len(), MAX_FILTER);
    }

    #[test]
    fn program_keeps_the_link_then_runs_the_filter() {
        let user = [Insn { code: 0x28, jt: 0, jf: 0, k: 12 }, Insn { code: 6, jt: 0, jf: 0, k: 99 }];
        let eth = Link { name: "eth0".into(), index: 7, hatype: ARPHRD_ETHER, link_type: LINKTYPE_ETHERNET };
        let p = kernel_program(&eth, &user, 100);
        assert_eq!(p.len(), 3 + 2);
        assert_eq!(p[1], Insn { code: BPF_JMP_JEQ_K, jt: 1, jf: 0, k: 7 });
        assert_eq!(&p[3..], &user);
        assert_eq!(kernel_program(&eth, &[], 100).last(), Some(&Insn { code: BPF_RET_K, jt: 0, jf: 0, k: 100 }));
        let lo = Link { name: "lo".into(), index: 1, hatype: ARPHRD_LOOPBACK, ..eth };
        let p = kernel_program(&lo, &user, 100);
        assert_eq!(p.len(), PREFIX_LEN + 2);
        assert_eq!(p[4], Insn { code: BPF_JMP_JEQ_K, jt: 0, jf: 1, k: PACKET_OUTGOING });
        assert_eq!(&p[PREFIX_LEN..], &user);
    }

    #[test]
    fn pcap_layout_and_byte_limit() {
        let limits = Limits { max_bytes: 24 + 16 + 10 + 16 + 4, snaplen: 10, ..limits() };
        let mut out = Vec::new();
        let mut w = PcapWriter::new(limits, LINKTYPE_ETHERNET, &mut out);
        assert_eq!(&out[..4], &0xa1b2_c3d4u32.to_ne_bytes());
        assert_eq!(&out[16..20], &10u32.to_ne_bytes());
        assert_eq!(&out[20..24], &1u32.to_ne_bytes());
        let t = UNIX_EPOCH + Duration::new(1_700_000_000, 123_456_789);
        assert!(w.push(&mut out, t, &[0xaa; 60], 60));
        // Cut to the snaplen, the original length kept.
        assert_eq!(&out[24..28], &1_700_000_000u32.to_ne_bytes());
        assert_eq!(&out[28..32], &123_456u32.to_ne_bytes());
        assert_eq!(&out[32..36], &10u32.to_ne_bytes());
        assert_eq!(&out[36..40], &60u32.to_ne_bytes());
        assert_eq!(out.len(), 24 + 16 + 10);
        // 16 + 5 would pass max_bytes by one: refused, nothing written.
        assert!(!w.push(&mut out, t, &[1; 5], 5));
        assert_eq!(out.len(), 50);
        assert!(w.push(&mut out, t, &[1; 4], 4));
        assert_eq!((w.packets(), w.bytes(), out.len() as u64), (2, 70, 70));
    }

    #[test]
    fn one_capture_per_link() {
        let busy = Busy::default();
        let a = busy.claim("eth0").unwrap();
        assert_eq!(
            busy.claim("eth0").unwrap_err().to_string(),
            "a capture on link eth0 is already running (one per link at a time)"
        );
        let _b = busy.claim("eth1").unwrap();
        drop(a);
        busy.claim("eth0").unwrap();
    }

    #[test]
    fn link_types() {
        assert_eq!(link_type(ARPHRD_ETHER), Some(LINKTYPE_ETHERNET));
        assert_eq!(link_type(ARPHRD_LOOPBACK), Some(LINKTYPE_ETHERNET));
        assert_eq!(link_type(ARPHRD_NONE), Some(LINKTYPE_RAW));
        assert_eq!(link_type(776), None);
    }
}
