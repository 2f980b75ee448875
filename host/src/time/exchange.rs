//! One SNTP exchange: a fresh UDP socket connected to the server, one
//! request, and a wait for the genuine reply until the deadline.
//!
//! sntpc encodes the request and validates replies. Around it, this module
//! keeps waiting past stray, late, duplicate or forged datagrams (anything
//! whose origin timestamp is not ours, or that is too short), which sntpc
//! alone would treat as the end of the exchange; and it rejects physically
//! impossible replies sntpc lets through: server transmit before server
//! receive, a negative or over-1-second round trip, a time before the build.
//! Datagrams from any other address or port never reach a connected socket.

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

fn now_unix() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

/// An NTP 32.32 timestamp as Unix seconds.
fn ntp_to_unix(raw: u64) -> f64 {
    (raw >> 32) as f64 - NTP_UNIX_DELTA as f64 + (raw & 0xffff_ffff) as f64 / 4_294_967_296.0
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

/// Judges one datagram against the request we sent. Pure apart from
/// sntpc's own receive timestamp, so it is fuzzed directly.
pub async fn judge(
    server: SocketAddr,
    datagram: &[u8],
    sent: sntpc::SendRequestResult,
    local_receive: f64,
    send_time: f64,
) -> Verdict {
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
    let server_receive = ntp_to_unix(timestamp_at(datagram, 32));
    let server_transmit = ntp_to_unix(timestamp_at(datagram, 40));
    if server_transmit < server_receive {
        return Verdict::Fatal(ExchangeError::Rejected(format!(
            "server transmit time is {:.6} s before its receive time",
            server_receive - server_transmit
        )));
    }
    let rtt = (local_receive - send_time) - (server_transmit - server_receive);
    if rtt < 0.0 {
        return Verdict::Fatal(ExchangeError::Rejected(format!("negative round trip {rtt:.6} s")));
    }
    if rtt > MAX_RTT {
        return Verdict::Fatal(ExchangeError::Rejected(format!("round trip {rtt:.3} s is over {MAX_RTT} s")));
    }
    if (server_transmit as u64) < BUILD_UNIX {
        return Verdict::Fatal(ExchangeError::Rejected("server time is before this build of bronzed".into()));
    }
    let sample = Sample {
        server,
        offset: reply.offset() as f64 / 1e6,
        rtt,
        stratum: reply.stratum(),
        leap: reply.leap_indicator(),
    };
    Verdict::Accept(Measurement { sample, server_time: server_transmit, local_time: local_receive, strays: 0 })
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
    let deadline = tokio::time::Instant::now() + timeout;
    let context = NtpContext::new(StdTimestampGen::default());
    let send_time = now_unix();
    let sent = sntpc::sntp_send_request(server, &Sender(&socket), context)
        .await
        .map_err(|e| ExchangeError::Network(format!("send failed: {e:?}")))?;
    let mut strays = 0;
    let mut buf = [0u8; 512];
    loop {
        let n = match tokio::time::timeout_at(deadline, socket.recv(&mut buf)).await {
            Err(_) => return Err(ExchangeError::Timeout { timeout_ms: timeout.as_millis() as u64, strays }),
            // ICMP port unreachable surfaces as ECONNREFUSED on a connected socket.
            Ok(Err(e)) => return Err(net(e)),
            Ok(Ok(n)) => n,
        };
        let local_receive = now_unix();
        match judge(server, &buf[..n], sent, local_receive, send_time).await {
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

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]
        /// Arbitrary datagrams never panic and never count as our reply
        /// unless they echo our origin timestamp.
        #[test]
        fn arbitrary_datagrams_are_judged_without_panic(data in proptest::collection::vec(any::<u8>(), 0..200)) {
            let server: SocketAddr = "127.0.0.1:123".parse().unwrap();
            let (sent, _) = sent_for(server);
            let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
            let verdict = rt.block_on(judge(server, &data, sent, now_unix(), now_unix()));
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
            let _ = rt.block_on(judge(server, &data, sent, now_unix(), now_unix()));
        }
    }
}
