//! One SNTP exchange: a fresh UDP socket connected to the server, one
//! request, and a wait for the genuine reply until the deadline.
//!
//! sntpc encodes the request and validates replies. Around it, this module
//! keeps waiting past stray, late, duplicate or forged datagrams (anything
//! whose origin timestamp is not ours, or that is too short), which sntpc
//! alone would treat as the end of the exchange; and it rejects physically
//! impossible replies sntpc lets through: server transmit before server
//! receive, a negative or over-1-second round trip, a time before the build.
//! Datagrams from any other address or port never reach a connected socket;
//! a flood from the server's own address and port ends the exchange after
//! [`MAX_DATAGRAMS`] datagrams instead of being judged until the deadline.
//!
//! NTP timestamps carry seconds modulo 2^32 (era 0 ends in February 2036).
//! Differences are taken with wrapping arithmetic, which is right across
//! the rollover; absolute times are placed in the era that puts them within
//! 68 years of this build (RFC 5905 §6), so they need no local clock.

use super::types::Sample;
use sntpc::{NtpContext, NtpUdpSocket, StdTimestampGen};
use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::net::UdpSocket;

/// Seconds between the NTP era 0 epoch (1900) and the Unix epoch.
const NTP_UNIX_DELTA: u64 = 2_208_988_800;
/// Replies claiming a time before this are impossible (build time − 1 day).
pub const BUILD_UNIX: u64 = const_parse(env!("BRONZE_BUILD_UNIX"));
// The build script must have provided a plausible build time.
const _: () = assert!(BUILD_UNIX > 1_700_000_000);

/// Longest round trip accepted.
pub const MAX_RTT: f64 = 1.0;

/// Most datagrams judged in one exchange. A genuine exchange sees one reply,
/// perhaps a duplicate or a few strays; more is a flood, and judging it
/// until the deadline only burns CPU.
pub const MAX_DATAGRAMS: u32 = 8;

const fn const_parse(s: &str) -> u64 {
    let bytes = s.as_bytes();
    let mut i = 0;
    let mut n = 0u64;
    while i < bytes.len() {
        n = n * 10 + (bytes[i] - b'0') as u64;
        i += 1;
    }
    n
}

/// Why an exchange produced no sample.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ExchangeError {
    #[error("no valid reply within {timeout_ms} ms ({strays} stray datagrams ignored)")]
    Timeout { timeout_ms: u64, strays: u32 },
    #[error("flooded: {datagrams} datagrams without a valid reply; exchange abandoned")]
    Flood { datagrams: u32 },
    #[error("kiss-o'-death {0}")]
    KissOfDeath(String),
    #[error("reply rejected: {0}")]
    Rejected(String),
    #[error("network: {0}")]
    Network(String),
}

/// A validated reply.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Measurement {
    pub sample: Sample,
    /// Server time at transmit, seconds since the Unix epoch.
    pub server_time: f64,
    /// Local time when the reply arrived, seconds since the Unix epoch.
    pub local_time: f64,
    /// Datagrams ignored while waiting for this reply.
    pub strays: u32,
}

/// Sends through the connected socket; sntpc never receives through it.
struct Sender<'a>(&'a UdpSocket);

impl NtpUdpSocket for Sender<'_> {
    async fn send_to(&self, buf: &[u8], _addr: SocketAddr) -> sntpc::Result<usize> {
        self.0.send(buf).await.map_err(|_| sntpc::Error::Network)
    }
    async fn recv_from(&self, _buf: &mut [u8]) -> sntpc::Result<(usize, SocketAddr)> {
        Err(sntpc::Error::Network)
    }
}

/// Hands one already received datagram to sntpc's validation.
struct Received<'a> {
    data: &'a [u8],
    from: SocketAddr,
}

impl NtpUdpSocket for Received<'_> {
    async fn send_to(&self, _buf: &[u8], _addr: SocketAddr) -> sntpc::Result<usize> {
        Err(sntpc::Error::Network)
    }
    async fn recv_from(&self, buf: &mut [u8]) -> sntpc::Result<(usize, SocketAddr)> {
        let n = self.data.len().min(buf.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        Ok((n, self.from))
    }
}

/// Now as an NTP timestamp (when the kernel gave no arrival stamp).
fn now_ntp() -> u64 {
    let d = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    unix_to_ntp(d.as_secs(), d.subsec_nanos())
}

/// Receives one datagram and its arrival time: the kernel's SO_TIMESTAMPNS
/// stamp when enabled, else the time we read it.
async fn recv_stamped(socket: &UdpSocket, buf: &mut [u8], kernel_stamps: bool) -> std::io::Result<(usize, u64)> {
    use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};
    use std::os::fd::AsRawFd;
    if !kernel_stamps {
        let n = socket.recv(buf).await?;
        return Ok((n, now_ntp()));
    }
    socket
        .async_io(tokio::io::Interest::READABLE, || {
            let mut iov = [std::io::IoSliceMut::new(buf)];
            let mut cmsg = nix::cmsg_space!(nix::sys::time::TimeSpec);
            let msg = recvmsg::<()>(socket.as_raw_fd(), &mut iov, Some(&mut cmsg), MsgFlags::empty())
                .map_err(std::io::Error::from)?;
            let stamp = msg.cmsgs().ok().and_then(|mut cmsgs| {
                cmsgs.find_map(|c| match c {
                    ControlMessageOwned::ScmTimestampns(ts) => {
                        Some(unix_to_ntp(ts.tv_sec() as u64, ts.tv_nsec() as u32))
                    }
                    _ => None,
                })
            });
            Ok((msg.bytes, stamp.unwrap_or_else(now_ntp)))
        })
        .await
}

/// An NTP 32.32 timestamp as Unix seconds, in the era that puts it within
/// 2^31 s (68 years) of this build: from 1958 to 2094 for a 2026 build,
/// whichever side of the 2036 rollover it falls (RFC 5905 §6). The build
/// time, not the local clock, is the pivot: the local clock may be the very
/// thing that is years off.
fn ntp_to_unix(raw: u64) -> f64 {
    let pivot = BUILD_UNIX + NTP_UNIX_DELTA;
    // Seconds from the pivot, modulo 2^32, as a signed distance.
    let from_pivot = ((raw >> 32) as u32).wrapping_sub(pivot as u32) as i32;
    (BUILD_UNIX as i64 + i64::from(from_pivot)) as f64 + (raw & 0xffff_ffff) as f64 / 4_294_967_296.0
}

fn timestamp_at(packet: &[u8], offset: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&packet[offset..offset + 8]);
    u64::from_be_bytes(b)
}

/// What a datagram means for the exchange in progress.
#[derive(Debug, PartialEq)]
pub enum Verdict {
    /// Not our reply (wrong origin, short, not a server reply): keep waiting.
    Stray,
    /// Our reply, and it is unusable: the exchange ends.
    Fatal(ExchangeError),
    Accept(Measurement),
}

/// Seconds between two NTP 32.32 timestamps (`a − b`), exact to the
/// timestamps' resolution whatever their size.
fn ntp_diff(a: u64, b: u64) -> f64 {
    a.wrapping_sub(b) as i64 as f64 / 4_294_967_296.0
}

/// Unix seconds and nanoseconds as an NTP 32.32 timestamp (the era is
/// dropped: after 2036 the seconds wrap, as on the wire).
fn unix_to_ntp(secs: u64, nanos: u32) -> u64 {
    (u64::from((secs + NTP_UNIX_DELTA) as u32) << 32) | ((u64::from(nanos) << 32) / 1_000_000_000)
}

/// Judges one datagram against the request we sent. `local_receive` is the
/// reply's arrival as an NTP timestamp (the kernel's, when available): the
/// offset and round trip are computed from it and the packet's own T1–T3,
/// so the time a task waited to be woken does not bias them. sntpc only
/// validates. Pure apart from sntpc's clock read, so it is fuzzed directly.
pub async fn judge(server: SocketAddr, datagram: &[u8], sent: sntpc::SendRequestResult, local_receive: u64) -> Verdict {
    let replay = Received { data: datagram, from: server };
    let context = NtpContext::new(StdTimestampGen::default());
    let reply = match sntpc::sntp_process_response(server, &replay, context, sent).await {
        Err(
            sntpc::Error::IncorrectOriginTimestamp
            | sntpc::Error::IncorrectPayload
            | sntpc::Error::ResponseAddressMismatch
            | sntpc::Error::IncorrectMode,
        ) => return Verdict::Stray,
        Err(sntpc::Error::KissOfDeath(code)) => {
            return Verdict::Fatal(ExchangeError::KissOfDeath(code.as_str().to_string()));
        }
        Err(e) => return Verdict::Fatal(ExchangeError::Rejected(describe(e))),
        Ok(r) => r,
    };
    let (t1, t2, t3, t4) =
        (timestamp_at(datagram, 24), timestamp_at(datagram, 32), timestamp_at(datagram, 40), local_receive);
    let server_transmit = ntp_to_unix(t3);
    if ntp_diff(t3, t2) < 0.0 {
        return Verdict::Fatal(ExchangeError::Rejected(format!(
            "server transmit time is {:.6} s before its receive time",
            ntp_diff(t2, t3)
        )));
    }
    let rtt = ntp_diff(t4, t1) - ntp_diff(t3, t2);
    if rtt < 0.0 {
        return Verdict::Fatal(ExchangeError::Rejected(format!("negative round trip {rtt:.6} s")));
    }
    if rtt > MAX_RTT {
        return Verdict::Fatal(ExchangeError::Rejected(format!("round trip {rtt:.3} s is over {MAX_RTT} s")));
    }
    if server_transmit < BUILD_UNIX as f64 {
        return Verdict::Fatal(ExchangeError::Rejected(format!(
            "server time {} is before this build of bronzed",
            unix_rfc3339(server_transmit)
        )));
    }
    let sample = Sample {
        server,
        offset: (ntp_diff(t2, t1) + ntp_diff(t3, t4)) / 2.0,
        rtt,
        stratum: reply.stratum(),
        leap: reply.leap_indicator(),
    };
    Verdict::Accept(Measurement { sample, server_time: server_transmit, local_time: ntp_to_unix(t4), strays: 0 })
}

/// Unix seconds as RFC 3339, for messages.
fn unix_rfc3339(unix: f64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix.floor() as i64)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_else(|| format!("{unix:.0} (Unix)"))
}

fn describe(e: sntpc::Error) -> String {
    match e {
        sntpc::Error::UnsynchronizedClock => "server clock is unsynchronised (LI=3)".into(),
        sntpc::Error::InvalidTimestamp => "invalid timestamp (zero transmit time)".into(),
        sntpc::Error::ExcessiveRootDistance => "root distance too large".into(),
        sntpc::Error::BackwardReferenceTimestamp => "reference time is after transmit time".into(),
        sntpc::Error::IncorrectResponseVersion => "wrong NTP version".into(),
        sntpc::Error::IncorrectStratumHeaders => "invalid stratum (16 = unsynchronised)".into(),
        other => format!("{other:?}"),
    }
}

/// Runs one exchange with `server`, waiting at most `timeout`.
pub async fn exchange(server: SocketAddr, timeout: Duration) -> Result<Measurement, ExchangeError> {
    let net = |e: std::io::Error| ExchangeError::Network(e.to_string());
    let bind: SocketAddr = if server.is_ipv4() { ([0, 0, 0, 0], 0).into() } else { ([0u16; 8], 0).into() };
    let socket = UdpSocket::bind(bind).await.map_err(net)?;
    socket.connect(server).await.map_err(net)?;
    // The kernel stamps each datagram on arrival: T4 without scheduling delay.
    let kernel_stamps =
        nix::sys::socket::setsockopt(&socket, nix::sys::socket::sockopt::ReceiveTimestampns, &true).is_ok();
    let deadline = tokio::time::Instant::now() + timeout;
    let context = NtpContext::new(StdTimestampGen::default());
    let sent = sntpc::sntp_send_request(server, &Sender(&socket), context)
        .await
        .map_err(|e| ExchangeError::Network(format!("send failed: {e:?}")))?;
    let mut strays = 0;
    let mut buf = [0u8; 512];
    loop {
        if strays >= MAX_DATAGRAMS {
            return Err(ExchangeError::Flood { datagrams: strays });
        }
        let received = tokio::time::timeout_at(deadline, recv_stamped(&socket, &mut buf, kernel_stamps)).await;
        let (n, local_receive) = match received {
            Err(_) => return Err(ExchangeError::Timeout { timeout_ms: timeout.as_millis() as u64, strays }),
            // ICMP port unreachable surfaces as ECONNREFUSED on a connected socket.
            Ok(Err(e)) => return Err(net(e)),
            Ok(Ok(received)) => received,
        };
        match judge(server, &buf[..n], sent, local_receive).await {
            Verdict::Stray => strays += 1,
            Verdict::Fatal(e) => return Err(e),
            Verdict::Accept(m) => return Ok(Measurement { strays, ..m }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A real request sent into a sink: its result and its transmit timestamp bytes.
    fn sent_for(server: SocketAddr) -> (sntpc::SendRequestResult, [u8; 8]) {
        struct Sink(std::sync::Mutex<Vec<u8>>);
        impl NtpUdpSocket for Sink {
            async fn send_to(&self, buf: &[u8], _: SocketAddr) -> sntpc::Result<usize> {
                *self.0.lock().unwrap() = buf.to_vec();
                Ok(buf.len())
            }
            async fn recv_from(&self, _: &mut [u8]) -> sntpc::Result<(usize, SocketAddr)> {
                Err(sntpc::Error::Network)
            }
        }
        let sink = Sink(Default::default());
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let sent = rt.block_on(sntpc::sntp_send_request(server, &sink, NtpContext::new(StdTimestampGen::default())));
        let request = sink.0.lock().unwrap().clone();
        (sent.unwrap(), request[40..48].try_into().unwrap())
    }

    #[test]
    fn ntp_arithmetic_is_exact_for_small_differences() {
        let a = unix_to_ntp(1_800_000_000, 500_000_000);
        let b = unix_to_ntp(1_800_000_000, 499_999_000);
        assert!((ntp_diff(a, b) - 1e-6).abs() < 1e-9, "{}", ntp_diff(a, b));
        assert!((ntp_diff(b, a) + 1e-6).abs() < 1e-9);
        assert!((ntp_to_unix(a) - 1_800_000_000.5).abs() < 1e-6);
    }

    /// A well-formed server reply (stratum 2, LI 0) to the request whose
    /// transmit timestamp is `t1`, with T2 = `t2` and T3 = T2 + 1 ms.
    fn reply_to(t1: u64, t2: u64) -> [u8; 48] {
        let t3 = t2.wrapping_add((1u64 << 32) / 1000);
        let mut p = [0u8; 48];
        p[0] = 0b00_100_100; // LI 0, VN 4, mode 4
        p[1] = 2;
        p[3] = (-20i8) as u8;
        p[4..8].copy_from_slice(&0x20u32.to_be_bytes());
        p[8..12].copy_from_slice(&0x42u32.to_be_bytes());
        p[12..16].copy_from_slice(&[127, 127, 1, 1]);
        p[16..24].copy_from_slice(&t2.wrapping_sub(1 << 32).to_be_bytes());
        p[24..32].copy_from_slice(&t1.to_be_bytes());
        p[32..40].copy_from_slice(&t2.to_be_bytes());
        p[40..48].copy_from_slice(&t3.to_be_bytes());
        p
    }

    /// 2036-02-07T06:28:16Z: NTP era 0 ends, the seconds wrap to 0.
    const ERA_1_UNIX: u64 = 4_294_967_296 - NTP_UNIX_DELTA;

    #[test]
    fn timestamps_are_placed_in_the_era_nearest_the_build() {
        for unix in [BUILD_UNIX, 1_800_000_000, ERA_1_UNIX - 1, ERA_1_UNIX, ERA_1_UNIX + 86_400, 3_000_000_000] {
            let raw = unix_to_ntp(unix, 250_000_000);
            assert!((ntp_to_unix(raw) - (unix as f64 + 0.25)).abs() < 1e-6, "{unix}: {}", ntp_to_unix(raw));
        }
        // Era 1 wraps the seconds field: 2036-02-08 is a small number on the wire.
        assert_eq!(unix_to_ntp(ERA_1_UNIX + 86_400, 0) >> 32, 86_400);
        // Times a little before the build, and 1970, stay in the past.
        assert_eq!(ntp_to_unix(unix_to_ntp(BUILD_UNIX - 86_400, 0)), (BUILD_UNIX - 86_400) as f64);
        assert_eq!(ntp_to_unix(unix_to_ntp(0, 0)), 0.0);
    }

    #[test]
    fn replies_after_the_2036_rollover_are_accepted() {
        let server: SocketAddr = "127.0.0.1:123".parse().unwrap();
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        for target in [ERA_1_UNIX + 86_400, ERA_1_UNIX + 3 * 365 * 86_400] {
            let (sent, origin) = sent_for(server);
            let t1 = u64::from_be_bytes(origin);
            let t2 = unix_to_ntp(target, 0);
            let t4 = t1.wrapping_add((2u64 << 32) / 1000);
            let verdict = rt.block_on(judge(server, &reply_to(t1, t2), sent, t4));
            let Verdict::Accept(m) = verdict else { panic!("reply at {target} not accepted: {verdict:?}") };
            assert!((m.server_time - (target as f64 + 0.001)).abs() < 1e-3, "server time {}", m.server_time);
            let expected = target as f64 - ntp_to_unix(t1);
            assert!((m.sample.offset - expected).abs() < 0.01, "offset {} want {expected}", m.sample.offset);
            assert!((m.sample.rtt - 0.001).abs() < 1e-4, "rtt {}", m.sample.rtt);
        }
    }

    #[test]
    fn replies_before_the_build_are_rejected_with_their_time() {
        let server: SocketAddr = "127.0.0.1:123".parse().unwrap();
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let (sent, origin) = sent_for(server);
        let t1 = u64::from_be_bytes(origin);
        // 2020-01-01T00:00:00Z.
        let t4 = t1.wrapping_add((2u64 << 32) / 1000);
        let verdict = rt.block_on(judge(server, &reply_to(t1, unix_to_ntp(1_577_836_800, 0)), sent, t4));
        assert_eq!(
            verdict,
            Verdict::Fatal(ExchangeError::Rejected(
                "server time 2020-01-01T00:00:00Z is before this build of bronzed".into()
            ))
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]
        /// Arbitrary datagrams never panic and never count as our reply
        /// unless they echo our origin timestamp.
        #[test]
        fn arbitrary_datagrams_are_judged_without_panic(data in proptest::collection::vec(any::<u8>(), 0..200)) {
            let server: SocketAddr = "127.0.0.1:123".parse().unwrap();
            let (sent, _) = sent_for(server);
            let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
            let verdict = rt.block_on(judge(server, &data, sent, now_ntp()));
            prop_assert!(matches!(verdict, Verdict::Stray), "random bytes accepted: {verdict:?}");
        }

        /// Datagrams that echo our origin timestamp get past the first check;
        /// whatever else they hold, judging them never panics.
        #[test]
        fn datagrams_with_our_origin_never_panic(mut data in proptest::collection::vec(any::<u8>(), 48..120)) {
            let server: SocketAddr = "127.0.0.1:123".parse().unwrap();
            let (sent, origin) = sent_for(server);
            data[24..32].copy_from_slice(&origin);
            let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
            let _ = rt.block_on(judge(server, &data, sent, now_ntp()));
        }
    }
}
