//! NTP test infrastructure for the SNTP client tests: real chrony servers on
//! loopback (serving real time, or real time plus a known offset), a reference
//! offset measured by chrony itself, and a fault-injecting NTP responder whose
//! answers the test chooses.
//!
//! Everything here talks to 127.0.0.1 only. chronyd is always started as
//! `chronyd -x -d -f CONFIG` (or `-Q` for the reference measurement) with
//! configs written here, never with the packaged config (it points at public
//! pools). `cargo xtask test` installs chrony when it is missing.
//!
//! Packets follow RFC 5905: 48-byte headers, era-0 timestamps in 32.32 fixed
//! point counted from 1900 (Unix seconds + [`NTP_UNIX_OFFSET`]).

use std::fs::File;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::net::UdpSocket;
use tokio::task::JoinHandle;

/// Seconds from the NTP epoch (1900-01-01) to the Unix epoch (1970-01-01).
pub const NTP_UNIX_OFFSET: u64 = 2_208_988_800;

/// Where Debian's chrony package puts the daemon; `/usr/sbin` is often not on a
/// non-root PATH, so it is checked explicitly.
const CHRONYD_DEFAULT: &str = "/usr/sbin/chronyd";

/// How long a [`ChronyServer`] may take to serve usable time.
pub const CHRONY_START_DEADLINE: Duration = Duration::from_secs(30);

/// How close the chained server's measured offset must come to the requested
/// one before [`ChronyServer::start`] returns.
const CHAIN_TOLERANCE: f64 = 0.005;

// ---------------------------------------------------------------------------
// Packet encoding
// ---------------------------------------------------------------------------

/// The NTP timestamp (era 0, 32.32 fixed point) of `t` shifted by `offset_secs`.
///
/// Integer nanoseconds all the way, so a microsecond-sized offset is not lost in
/// f64 rounding of a 1.7e9-second value.
pub fn ntp_timestamp(t: SystemTime, offset_secs: f64) -> u64 {
    let unix_nanos = match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_nanos() as i128,
        Err(e) => -(e.duration().as_nanos() as i128),
    };
    let nanos = unix_nanos + (offset_secs * 1e9).round() as i128 + i128::from(NTP_UNIX_OFFSET) * 1_000_000_000;
    // Truncation to u64 is the era wrap; era 0 lasts until 2036.
    ((nanos << 32) / 1_000_000_000) as u64
}

/// Unix time of an era-0 NTP timestamp, in seconds (for messages and coarse checks).
pub fn ntp_to_unix_secs(ts: u64) -> f64 {
    (ts >> 32) as f64 - NTP_UNIX_OFFSET as f64 + (ts & 0xffff_ffff) as f64 / 4_294_967_296.0
}

/// `a - b` in seconds. Wrapping arithmetic keeps it right across an era
/// boundary, as RFC 5905 prescribes for differences.
pub fn ntp_diff_secs(a: u64, b: u64) -> f64 {
    a.wrapping_sub(b) as i64 as f64 / 4_294_967_296.0
}

/// Clock offset and round-trip delay in seconds from the four timestamps of one
/// exchange (RFC 5905 §8): T1 client transmit, T2 server receive, T3 server
/// transmit, T4 client receive.
pub fn offset_and_delay(t1: u64, t2: u64, t3: u64, t4: u64) -> (f64, f64) {
    let offset = (ntp_diff_secs(t2, t1) + ntp_diff_secs(t3, t4)) / 2.0;
    let delay = ntp_diff_secs(t4, t1) - ntp_diff_secs(t3, t2);
    (offset, delay)
}

/// One NTP header, field by field, so tests can build and inspect packets
/// without bit twiddling. Extension fields and MACs are not modelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NtpPacket {
    /// Leap indicator (0..=3; 3 = unsynchronised).
    pub leap: u8,
    /// Version number (4 for NTPv4).
    pub version: u8,
    /// Association mode (3 = client, 4 = server).
    pub mode: u8,
    /// 0 = kiss-o'-death / unspecified, 1 = primary, 2..=15 secondary, 16 = unsynchronised.
    pub stratum: u8,
    /// Poll interval, log2 seconds.
    pub poll: i8,
    /// Clock precision, log2 seconds.
    pub precision: i8,
    /// Root delay, 16.16 fixed-point seconds.
    pub root_delay: u32,
    /// Root dispersion, 16.16 fixed-point seconds.
    pub root_dispersion: u32,
    /// Reference id: an IPv4 address, a refclock name or a kiss code.
    pub reference_id: [u8; 4],
    /// When the server's clock was last set.
    pub reference_ts: u64,
    /// T1 as echoed by the server (the request's transmit timestamp).
    pub origin_ts: u64,
    /// T2: when the server received the request.
    pub receive_ts: u64,
    /// T3: when the server sent the reply.
    pub transmit_ts: u64,
}

impl NtpPacket {
    /// The 48 header bytes in network order.
    pub fn encode(&self) -> [u8; 48] {
        let mut b = [0u8; 48];
        b[0] = (self.leap & 3) << 6 | (self.version & 7) << 3 | (self.mode & 7);
        b[1] = self.stratum;
        b[2] = self.poll as u8;
        b[3] = self.precision as u8;
        b[4..8].copy_from_slice(&self.root_delay.to_be_bytes());
        b[8..12].copy_from_slice(&self.root_dispersion.to_be_bytes());
        b[12..16].copy_from_slice(&self.reference_id);
        b[16..24].copy_from_slice(&self.reference_ts.to_be_bytes());
        b[24..32].copy_from_slice(&self.origin_ts.to_be_bytes());
        b[32..40].copy_from_slice(&self.receive_ts.to_be_bytes());
        b[40..48].copy_from_slice(&self.transmit_ts.to_be_bytes());
        b
    }

    /// Decodes the first 48 bytes; `None` when the datagram is shorter. Does no
    /// semantic checks: judging a reply is the client's job, and tests want to
    /// see exactly what was sent.
    pub fn decode(buf: &[u8]) -> Option<NtpPacket> {
        let b: &[u8; 48] = buf.get(..48)?.try_into().ok()?;
        let u32_at = |i: usize| u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let u64_at = |i: usize| (u64::from(u32_at(i)) << 32) | u64::from(u32_at(i + 4));
        Some(NtpPacket {
            leap: b[0] >> 6,
            version: (b[0] >> 3) & 7,
            mode: b[0] & 7,
            stratum: b[1],
            poll: b[2] as i8,
            precision: b[3] as i8,
            root_delay: u32_at(4),
            root_dispersion: u32_at(8),
            reference_id: [b[12], b[13], b[14], b[15]],
            reference_ts: u64_at(16),
            origin_ts: u64_at(24),
            receive_ts: u64_at(32),
            transmit_ts: u64_at(40),
        })
    }
}

/// An SNTP client request (LI 0, VN 4, mode 3) whose transmit timestamp is
/// `now`; every other field is zero, as RFC 4330 recommends for clients.
pub fn client_request(now: SystemTime) -> [u8; 48] {
    NtpPacket {
        leap: 0,
        version: 4,
        mode: 3,
        stratum: 0,
        poll: 0,
        precision: 0,
        root_delay: 0,
        root_dispersion: 0,
        reference_id: [0; 4],
        reference_ts: 0,
        origin_ts: 0,
        receive_ts: 0,
        transmit_ts: ntp_timestamp(now, 0.0),
    }
    .encode()
}

/// Decodes a server reply (see [`NtpPacket::decode`]: no validation).
pub fn parse_reply(buf: &[u8]) -> Option<NtpPacket> {
    NtpPacket::decode(buf)
}

/// One measured exchange with a server.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    /// The reply as received.
    pub reply: NtpPacket,
    /// Server clock minus local clock, seconds.
    pub offset: f64,
    /// Round-trip delay, seconds.
    pub delay: f64,
}

/// One SNTP exchange with a loopback server: sends [`client_request`] and waits
/// up to `timeout` for a reply from `server` that echoes its transmit timestamp
/// (anything else is skipped). Used by the chrony readiness poll; the reply is
/// returned unjudged.
pub async fn sntp_query(server: SocketAddr, timeout: Duration) -> io::Result<Sample> {
    assert!(server.ip().is_loopback(), "NTP test helpers talk to loopback only, not {server}");
    let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await?;
    socket.connect(server).await?;
    let request = client_request(SystemTime::now());
    let t1 = u64::from_be_bytes(request[40..48].try_into().expect("8 bytes"));
    socket.send(&request).await?;
    let deadline = tokio::time::Instant::now() + timeout;
    let mut buf = [0u8; 512];
    loop {
        let len = tokio::time::timeout_at(deadline, socket.recv(&mut buf))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, format!("no reply from {server}")))??;
        let t4 = ntp_timestamp(SystemTime::now(), 0.0);
        match parse_reply(&buf[..len]) {
            Some(reply) if reply.origin_ts == t1 => {
                let (offset, delay) = offset_and_delay(t1, reply.receive_ts, reply.transmit_ts, t4);
                return Ok(Sample { reply, offset, delay });
            }
            _ => continue,
        }
    }
}

// ---------------------------------------------------------------------------
// chrony
// ---------------------------------------------------------------------------

/// The chronyd binary: on PATH, or at Debian's `/usr/sbin/chronyd` (not on
/// every PATH).
pub fn chronyd_path() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|dir| dir.join("chronyd"));
    on_path.chain(std::iter::once(PathBuf::from(CHRONYD_DEFAULT))).find(|p| p.is_file())
}

/// Whether chronyd is installed.
pub fn chrony_installed() -> bool {
    chronyd_path().is_some()
}

/// Fails a test that needs chrony with the fix spelled out, rather than with a
/// spawn error.
pub fn require_chrony() {
    assert!(
        chrony_installed(),
        "chronyd not found: run `cargo xtask test` (it installs chrony) or apt-get install chrony"
    );
}

/// One running chronyd and where its output goes.
struct Chronyd {
    name: &'static str,
    child: Option<Child>,
    log: PathBuf,
}

impl Chronyd {
    /// Starts `chronyd -x -d -f DIR/NAME.conf` with `config` (which must only
    /// mention 127.0.0.1), stdout and stderr to `DIR/NAME.log`.
    fn spawn(dir: &Path, name: &'static str, config: &str) -> Chronyd {
        let conf = dir.join(format!("{name}.conf"));
        let log = dir.join(format!("{name}.log"));
        std::fs::write(&conf, config).expect("write chrony config");
        let out = File::create(&log).expect("create chrony log");
        let err = out.try_clone().expect("clone log handle");
        let chronyd = chronyd_path().expect("chronyd installed");
        let child = Command::new(chronyd)
            .args(["-x", "-d", "-f"])
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start chronyd ({name}): {e}"));
        Chronyd { name, child: Some(child), log }
    }

    /// Its log so far, for failure messages.
    fn log(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_else(|e| format!("(no log: {e})"));
        format!("--- chronyd {} ({}) ---\n{text}", self.name, self.log.display())
    }

    /// The exit status if it has already exited (a config or bind error, or
    /// not running as root).
    fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.as_mut().and_then(|c| c.try_wait().ok().flatten())
    }

    /// SIGKILL and reap. chronyd keeps no state worth a graceful stop here
    /// (no driftfile), and the kill cannot be ignored.
    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A real chrony NTP server on 127.0.0.1, serving real time or real time plus
/// a known offset (two chained chronyds, see [`ChronyServer::start`]). It
/// needs root: chronyd refuses to serve otherwise ("Not superuser") and drops
/// to user `_chrony` after binding. Stopped on drop.
pub struct ChronyServer {
    addr: SocketAddr,
    offset: f64,
    /// The served instance last, so logs read upstream first.
    daemons: Vec<Chronyd>,
    /// Holds configs, pidfiles and logs; removed after the daemons stop.
    dir: tempfile::TempDir,
}

impl std::fmt::Debug for ChronyServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChronyServer").field("addr", &self.addr).field("offset", &self.offset).finish()
    }
}

impl ChronyServer {
    /// A chrony server on 127.0.0.1:<free port> serving real time +
    /// `offset_secs` (0.0 = real time).
    ///
    /// Offset 0 is one chronyd with `local stratum 1`. Any other offset chains
    /// two: A serves real time (`local stratum 1`) on another free port, and B
    /// (`-x`, so it never touches the system clock but serves as if it had
    /// corrected it) follows A with `offset +X` and serves real time + X. That
    /// is exact to microseconds, unlike faketime.
    ///
    /// Returns only once the served port answers a raw SNTP request with
    /// stratum 1..=15 and LI != 3 (and, chained, with a measured offset within
    /// 5 ms of X). Panics with the chronyd logs after 30 s.
    pub async fn start(offset_secs: f64) -> ChronyServer {
        require_chrony();
        assert!(offset_secs.is_finite(), "offset must be finite, got {offset_secs}");
        let dir = chrony_dir();
        let port = crate::free_udp_port();
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let mut server = ChronyServer { addr, offset: offset_secs, daemons: Vec::new(), dir };
        let deadline = Instant::now() + CHRONY_START_DEADLINE;
        if offset_secs == 0.0 {
            let config = server_config(server.dir.path(), "served", port, "local stratum 1\n");
            server.daemons.push(Chronyd::spawn(server.dir.path(), "served", &config));
            server.wait_usable(addr, None, deadline).await;
        } else {
            let upstream_port = loop {
                let p = crate::free_udp_port();
                if p != port {
                    break p;
                }
            };
            let upstream = SocketAddr::from((Ipv4Addr::LOCALHOST, upstream_port));
            let config = server_config(server.dir.path(), "upstream", upstream_port, "local stratum 1\n");
            server.daemons.push(Chronyd::spawn(server.dir.path(), "upstream", &config));
            // B's first polls would only fail until A is up; waiting for A
            // first makes a failure say which link is broken.
            server.wait_usable(upstream, None, deadline).await;
            let follow = format!(
                "server 127.0.0.1 port {upstream_port} iburst minpoll -4 maxpoll -4 offset {offset_secs:+.9}\n"
            );
            let config = server_config(server.dir.path(), "served", port, &follow);
            server.daemons.push(Chronyd::spawn(server.dir.path(), "served", &config));
            server.wait_usable(addr, Some(offset_secs), deadline).await;
        }
        server
    }

    /// Where to send NTP requests.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The offset this server was asked to serve, seconds.
    pub fn offset(&self) -> f64 {
        self.offset
    }

    /// Both daemons' logs, for a test's own failure messages.
    pub fn logs(&self) -> String {
        self.daemons.iter().map(Chronyd::log).collect::<Vec<_>>().join("\n")
    }

    /// Kills the daemons (idempotent; also on drop). The server stops
    /// answering at once, which tests use to make a server disappear.
    pub fn stop(&mut self) {
        for d in &mut self.daemons {
            d.stop();
        }
    }

    /// Polls `target` until it serves usable time (and `want_offset`, when
    /// given, within [`CHAIN_TOLERANCE`]); panics with the logs at `deadline`
    /// or as soon as a daemon exits.
    async fn wait_usable(&mut self, target: SocketAddr, want_offset: Option<f64>, deadline: Instant) {
        loop {
            let exited = self.daemons.iter_mut().find_map(|d| d.exited().map(|status| (d.name, status)));
            if let Some((name, status)) = exited {
                panic!("chronyd {name} exited early ({status}) while starting {target}\n{}", self.logs());
            }
            let last = match sntp_query(target, Duration::from_millis(200)).await {
                Ok(s) => {
                    let usable = (1..=15).contains(&s.reply.stratum) && s.reply.leap != 3;
                    let on_offset = want_offset.is_none_or(|want| (s.offset - want).abs() <= CHAIN_TOLERANCE);
                    if usable && on_offset {
                        return;
                    }
                    format!(
                        "stratum {} LI {} offset {:+.6} s (want {})",
                        s.reply.stratum,
                        s.reply.leap,
                        s.offset,
                        want_offset.map_or("any".into(), |w| format!("{w:+.6} s"))
                    )
                }
                Err(e) => e.to_string(),
            };
            if Instant::now() >= deadline {
                panic!(
                    "chrony server {target} not usable after {CHRONY_START_DEADLINE:?} (last: {last})\n{}",
                    self.logs()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for ChronyServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A temp dir chronyd can use after dropping root to `_chrony`: owned by
/// `_chrony` and not world-writable (chronyd checks both). Without root the
/// chown is skipped; chronyd then fails with a clear "Not superuser" in its log.
fn chrony_dir() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::Builder::new().prefix("bronze-chrony-").tempdir().expect("temp dir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod chrony dir");
    if nix::unistd::geteuid().is_root()
        && let Ok(Some(user)) = nix::unistd::User::from_name("_chrony")
    {
        nix::unistd::chown(dir.path(), Some(user.uid), Some(user.gid)).expect("chown chrony dir to _chrony");
    }
    dir
}

/// A chronyd config serving NTP on 127.0.0.1:`port` only, with no command
/// sockets (`cmdport 0` closes UDP, `bindcmdaddress /` the Unix socket that
/// would otherwise be shared at /run/chrony/chronyd.sock by every instance),
/// its own pidfile, no driftfile, plus `extra` (the time source).
fn server_config(dir: &Path, name: &str, port: u16, extra: &str) -> String {
    format!(
        "# Bronze test server: loopback only.\n\
         port {port}\n\
         bindaddress 127.0.0.1\n\
         allow 127.0.0.1\n\
         cmdport 0\n\
         bindcmdaddress /\n\
         pidfile {}\n\
         {extra}",
        dir.join(format!("{name}.pid")).display()
    )
}

/// The offset of `server` as chrony itself measures it: `chronyd -Q -f <conf>
/// -t 20` with `server 127.0.0.1 port P iburst`, parsed from "System clock
/// wrong by +X seconds (ignored)". Takes about 4 s; needs no privileges. The
/// yardstick for comparing a client's measurement against.
pub async fn chrony_reference_offset(server: SocketAddr) -> f64 {
    require_chrony();
    assert!(server.ip() == std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), "reference server must be 127.0.0.1:P");
    let dir = tempfile::Builder::new().prefix("bronze-chrony-q-").tempdir().expect("temp dir");
    let conf = dir.path().join("q.conf");
    let config = format!("server 127.0.0.1 port {} iburst\ncmdport 0\nbindcmdaddress /\n", server.port());
    std::fs::write(&conf, config).expect("write chrony -Q config");
    let output = tokio::process::Command::new(chronyd_path().expect("chronyd installed"))
        .arg("-Q")
        .arg("-f")
        .arg(&conf)
        .args(["-t", "20"])
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .expect("run chronyd -Q");
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    parse_wrong_by(&text)
        .unwrap_or_else(|| panic!("chronyd -Q against {server} gave no offset ({}):\n{text}", output.status))
}

/// The X in "System clock wrong by X seconds" (chrony prints the sign only
/// when negative).
fn parse_wrong_by(text: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        let rest = line.split("System clock wrong by ").nth(1)?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

// ---------------------------------------------------------------------------
// Fault-injecting responder
// ---------------------------------------------------------------------------

/// What a [`FaultyServer`] answers. Every reply not described otherwise is the
/// good one: mode 4, version echoed, origin = the request's transmit timestamp,
/// stratum 2, LI 0, real time (+ offset) for T2 and T3.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Fault {
    /// A correct reply with server time = real time + `offset` seconds.
    Good { offset: f64 },
    /// Kiss-o'-death as ntpd sends it: LI 3, stratum 0, reference id = the code
    /// (`b"RATE"`, `b"DENY"`, `b"RSTR"`, ...), origin echoed, receive and
    /// transmit = the request's transmit timestamp (so no usable time).
    Kod([u8; 4]),
    /// A good reply with transmit timestamp 0.
    ZeroTransmit,
    /// A good reply whose origin timestamp is not the request's transmit
    /// timestamp (off by exactly one second); nothing else is wrong.
    WrongOrigin,
    /// An off-path forgery first (wrong origin, time +1000 s) then, 5 ms later,
    /// the genuine `Good { offset }` reply, both from the server's port: a
    /// client must skip the forgery and keep waiting.
    ForgedThenGenuine { offset: f64 },
    /// A good reply with this stratum (0 or 16 for the tests).
    Stratum(u8),
    /// A good reply with LI = 3 (unsynchronised).
    Leap3,
    /// The first N bytes (N < 48) of a good reply.
    Truncated(usize),
    /// The good reply, sent from another socket (another port).
    WrongSourcePort,
    /// Never answers (still counts the request).
    Silence,
    /// A good reply whose receive timestamp is 10 ms after its transmit timestamp.
    ReceiveAfterTransmit,
    /// The good reply, the same bytes twice.
    DuplicateGood { offset: f64 },
    /// A spray of `datagrams` replies from the server's own address and port,
    /// each with a wrong origin timestamp, as fast as the socket takes them;
    /// never the genuine reply.
    Flood { datagrams: u32 },
}

/// How long [`Fault::ForgedThenGenuine`] waits between forgery and genuine reply.
pub const FORGED_GAP: Duration = Duration::from_millis(5);

/// The forged reply's time error in [`Fault::ForgedThenGenuine`], seconds.
pub const FORGED_OFFSET: f64 = 1000.0;

/// A tokio NTP responder on 127.0.0.1:<free port> answering as the current
/// [`Fault`] says, for testing a client against bad servers. It counts every
/// datagram it receives, so a test can also assert that nothing was sent.
/// Stops on drop.
pub struct FaultyServer {
    addr: SocketAddr,
    fault: Arc<Mutex<Fault>>,
    requests: Arc<AtomicU64>,
    task: JoinHandle<()>,
}

impl std::fmt::Debug for FaultyServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaultyServer")
            .field("addr", &self.addr)
            .field("fault", &*self.fault.lock().expect("fault lock"))
            .field("requests", &self.requests())
            .finish()
    }
}

impl FaultyServer {
    /// Binds 127.0.0.1:0 (plus a second socket for [`Fault::WrongSourcePort`])
    /// and starts answering with `fault`.
    pub async fn start(fault: Fault) -> FaultyServer {
        let socket = Arc::new(UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await.expect("bind NTP responder"));
        let other = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await.expect("bind second socket");
        let addr = socket.local_addr().expect("local addr");
        let fault = Arc::new(Mutex::new(fault));
        let requests = Arc::new(AtomicU64::new(0));
        let task = tokio::spawn(serve(socket, other, fault.clone(), requests.clone()));
        FaultyServer { addr, fault, requests, task }
    }

    /// Where to send NTP requests.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Changes the answer to every request from now on (e.g. go silent mid-run).
    pub fn set_fault(&self, fault: Fault) {
        *self.fault.lock().expect("fault lock") = fault;
    }

    /// How many datagrams it has received, well-formed or not.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::SeqCst)
    }
}

impl Drop for FaultyServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The responder loop: one datagram at a time, T2 taken right after receipt.
async fn serve(socket: Arc<UdpSocket>, other: UdpSocket, fault: Arc<Mutex<Fault>>, requests: Arc<AtomicU64>) {
    let mut buf = [0u8; 1024];
    loop {
        let Ok((len, peer)) = socket.recv_from(&mut buf).await else { continue };
        let received = SystemTime::now();
        requests.fetch_add(1, Ordering::SeqCst);
        // Only client-mode requests get answers, like a real server.
        let Some(request) = NtpPacket::decode(&buf[..len]).filter(|p| p.mode == 3) else { continue };
        let current = *fault.lock().expect("fault lock");
        // Send errors (the client went away) are not the test's concern.
        match current {
            Fault::Good { offset } => {
                let _ = socket.send_to(&good_reply(&request, received, offset).encode(), peer).await;
            }
            Fault::Kod(code) => {
                let reply = NtpPacket {
                    leap: 3,
                    stratum: 0,
                    reference_id: code,
                    reference_ts: 0,
                    receive_ts: request.transmit_ts,
                    transmit_ts: request.transmit_ts,
                    ..good_reply(&request, received, 0.0)
                };
                let _ = socket.send_to(&reply.encode(), peer).await;
            }
            Fault::ZeroTransmit => {
                let reply = NtpPacket { transmit_ts: 0, ..good_reply(&request, received, 0.0) };
                let _ = socket.send_to(&reply.encode(), peer).await;
            }
            Fault::WrongOrigin => {
                let good = good_reply(&request, received, 0.0);
                let reply = NtpPacket { origin_ts: good.origin_ts.wrapping_add(1 << 32), ..good };
                let _ = socket.send_to(&reply.encode(), peer).await;
            }
            Fault::ForgedThenGenuine { offset } => {
                let forged = good_reply(&request, received, offset + FORGED_OFFSET);
                let forged = NtpPacket { origin_ts: forged.origin_ts.wrapping_add(0x1234_5678_9abc), ..forged };
                let _ = socket.send_to(&forged.encode(), peer).await;
                // Off the loop, so the gap does not delay other requests.
                let socket = socket.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(FORGED_GAP).await;
                    let _ = socket.send_to(&good_reply(&request, received, offset).encode(), peer).await;
                });
            }
            Fault::Stratum(stratum) => {
                let reply = NtpPacket { stratum, ..good_reply(&request, received, 0.0) };
                let _ = socket.send_to(&reply.encode(), peer).await;
            }
            Fault::Leap3 => {
                let reply = NtpPacket { leap: 3, ..good_reply(&request, received, 0.0) };
                let _ = socket.send_to(&reply.encode(), peer).await;
            }
            Fault::Truncated(n) => {
                let bytes = good_reply(&request, received, 0.0).encode();
                let _ = socket.send_to(&bytes[..n.min(48)], peer).await;
            }
            Fault::WrongSourcePort => {
                let _ = other.send_to(&good_reply(&request, received, 0.0).encode(), peer).await;
            }
            Fault::Silence => {}
            Fault::ReceiveAfterTransmit => {
                let good = good_reply(&request, received, 0.0);
                let reply = NtpPacket { receive_ts: good.transmit_ts.wrapping_add(ten_ms()), ..good };
                let _ = socket.send_to(&reply.encode(), peer).await;
            }
            Fault::DuplicateGood { offset } => {
                let bytes = good_reply(&request, received, offset).encode();
                let _ = socket.send_to(&bytes, peer).await;
                let _ = socket.send_to(&bytes, peer).await;
            }
            Fault::Flood { datagrams } => {
                // Off the loop, so the spray does not hold up other requests.
                let socket = socket.clone();
                tokio::spawn(async move {
                    let good = good_reply(&request, received, 0.0);
                    for i in 0..u64::from(datagrams) {
                        let forged = NtpPacket { origin_ts: good.origin_ts.wrapping_add((i + 1) << 32), ..good };
                        let _ = socket.send_to(&forged.encode(), peer).await;
                    }
                });
            }
        }
    }
}

/// 10 ms in 32.32 fixed point.
fn ten_ms() -> u64 {
    (1u64 << 32) / 100
}

/// A correct server reply to `request` received at `received`, with the
/// server's clock `offset` seconds ahead of real time. T3 is taken now, just
/// before sending. Stratum 2 with an upstream at 127.127.1.1, the reference
/// set a second before T2, root delay ~0.5 ms and dispersion ~1 ms (a healthy
/// LAN server), precision 2^-20 s.
fn good_reply(request: &NtpPacket, received: SystemTime, offset: f64) -> NtpPacket {
    let receive_ts = ntp_timestamp(received, offset);
    NtpPacket {
        leap: 0,
        version: request.version,
        mode: 4,
        stratum: 2,
        poll: request.poll,
        precision: -20,
        root_delay: 0x0000_0020,
        root_dispersion: 0x0000_0042,
        reference_id: [127, 127, 1, 1],
        reference_ts: receive_ts.wrapping_sub(1 << 32),
        origin_ts: request.transmit_ts,
        receive_ts,
        transmit_ts: ntp_timestamp(SystemTime::now(), offset),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Everything that arrived at a raw client socket for one request.
    struct Exchange {
        request: NtpPacket,
        /// (bytes, sender, local arrival time as NTP timestamp)
        replies: Vec<(Vec<u8>, SocketAddr, u64)>,
    }

    impl Exchange {
        fn only_reply(&self) -> (NtpPacket, u64) {
            assert_eq!(self.replies.len(), 1, "want exactly one reply, got {:?}", self.replies);
            let (bytes, _, t4) = &self.replies[0];
            assert_eq!(bytes.len(), 48);
            (parse_reply(bytes).expect("48 bytes"), *t4)
        }
    }

    /// A plain UDP client, no NTP logic: one request, then every datagram that
    /// arrives from anywhere within `window`.
    async fn exchange(server: SocketAddr, window: Duration) -> Exchange {
        let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
        let bytes = client_request(SystemTime::now());
        socket.send_to(&bytes, server).await.unwrap();
        let mut replies = Vec::new();
        let deadline = tokio::time::Instant::now() + window;
        let mut buf = [0u8; 1024];
        while let Ok(Ok((len, from))) = tokio::time::timeout_at(deadline, socket.recv_from(&mut buf)).await {
            replies.push((buf[..len].to_vec(), from, ntp_timestamp(SystemTime::now(), 0.0)));
        }
        Exchange { request: NtpPacket::decode(&bytes).unwrap(), replies }
    }

    const WINDOW: Duration = Duration::from_millis(150);

    /// The fields a good reply must have, apart from what a fault changes.
    fn assert_sane_good(reply: &NtpPacket, request: &NtpPacket, t4: u64, offset: f64) {
        assert_eq!((reply.mode, reply.version, reply.leap, reply.stratum), (4, 4, 0, 2));
        assert_eq!(reply.precision, -20);
        assert_eq!(reply.reference_id, [127, 127, 1, 1]);
        assert!(reply.root_delay > 0 && reply.root_delay < 0x10000, "root delay {:#x}", reply.root_delay);
        assert!(reply.root_dispersion > 0 && reply.root_dispersion < 0x10000);
        assert_eq!(reply.origin_ts, request.transmit_ts);
        assert!(ntp_diff_secs(reply.transmit_ts, reply.receive_ts) >= 0.0, "T3 before T2");
        assert!(ntp_diff_secs(reply.receive_ts, reply.reference_ts) > 0.0, "reference after T2");
        let (measured, delay) = offset_and_delay(request.transmit_ts, reply.receive_ts, reply.transmit_ts, t4);
        assert!((measured - offset).abs() < 0.002, "offset {measured} want {offset}");
        assert!((0.0..0.05).contains(&delay), "delay {delay}");
    }

    #[test]
    fn timestamps_and_packets_round_trip() {
        let t = UNIX_EPOCH + Duration::new(1_700_000_000, 500_000_000);
        let ts = ntp_timestamp(t, 0.0);
        assert_eq!(ts >> 32, 1_700_000_000 + NTP_UNIX_OFFSET);
        assert_eq!(ts & 0xffff_ffff, 1 << 31);
        assert!((ntp_to_unix_secs(ts) - 1_700_000_000.5).abs() < 1e-6);
        assert!((ntp_diff_secs(ntp_timestamp(t, 3.5e-6), ts) - 3.5e-6).abs() < 1e-9);
        assert!((ntp_diff_secs(ntp_timestamp(t, -2.25), ts) + 2.25).abs() < 1e-9);
        let req = client_request(t);
        assert_eq!(req[0], 0b00_100_011, "LI 0, VN 4, mode 3");
        assert!(req[1..40].iter().all(|&b| b == 0));
        let p = NtpPacket::decode(&req).unwrap();
        assert_eq!(p.transmit_ts, ts);
        assert_eq!(p.encode(), req);
        assert_eq!(NtpPacket::decode(&req[..47]), None);
        assert_eq!(
            parse_wrong_by("2026-11-27T13:12:40Z System clock wrong by 3.499995 seconds (ignored)"),
            Some(3.499995)
        );
        assert_eq!(parse_wrong_by("System clock wrong by -0.000002 seconds (ignored)"), Some(-0.000002));
    }

    #[tokio::test]
    async fn good_reply_is_correct() {
        let server = FaultyServer::start(Fault::Good { offset: 0.0 }).await;
        let ex = exchange(server.addr(), WINDOW).await;
        let (reply, t4) = ex.only_reply();
        assert_sane_good(&reply, &ex.request, t4, 0.0);
        assert_eq!(ex.replies[0].1, server.addr());
        assert_eq!(server.requests(), 1);

        server.set_fault(Fault::Good { offset: -7.25 });
        let ex = exchange(server.addr(), WINDOW).await;
        let (reply, t4) = ex.only_reply();
        assert_sane_good(&reply, &ex.request, t4, -7.25);
        assert_eq!(server.requests(), 2);
    }

    #[tokio::test]
    async fn kiss_o_death() {
        for code in [*b"RATE", *b"DENY", *b"RSTR", *b"XUNK"] {
            let server = FaultyServer::start(Fault::Kod(code)).await;
            let ex = exchange(server.addr(), WINDOW).await;
            let (reply, _) = ex.only_reply();
            assert_eq!((reply.mode, reply.stratum, reply.leap, reply.reference_id), (4, 0, 3, code));
            assert_eq!(reply.origin_ts, ex.request.transmit_ts);
            assert_eq!(reply.transmit_ts, ex.request.transmit_ts);
        }
    }

    #[tokio::test]
    async fn zero_transmit() {
        let server = FaultyServer::start(Fault::ZeroTransmit).await;
        let ex = exchange(server.addr(), WINDOW).await;
        let (reply, _) = ex.only_reply();
        assert_eq!(reply.transmit_ts, 0);
        assert_eq!((reply.mode, reply.stratum, reply.leap), (4, 2, 0));
        assert_eq!(reply.origin_ts, ex.request.transmit_ts);
    }

    #[tokio::test]
    async fn wrong_origin_and_nothing_else() {
        let server = FaultyServer::start(Fault::WrongOrigin).await;
        let ex = exchange(server.addr(), WINDOW).await;
        let (reply, t4) = ex.only_reply();
        assert_ne!(reply.origin_ts, ex.request.transmit_ts);
        let fixed = NtpPacket { origin_ts: ex.request.transmit_ts, ..reply };
        assert_sane_good(&fixed, &ex.request, t4, 0.0);
    }

    #[tokio::test]
    async fn forged_then_genuine() {
        let server = FaultyServer::start(Fault::ForgedThenGenuine { offset: 0.25 }).await;
        let ex = exchange(server.addr(), WINDOW).await;
        assert_eq!(ex.replies.len(), 2, "{:?}", ex.replies);
        let forged = parse_reply(&ex.replies[0].0).unwrap();
        let genuine = parse_reply(&ex.replies[1].0).unwrap();
        assert!(ex.replies.iter().all(|(b, from, _)| b.len() == 48 && *from == server.addr()));
        assert_ne!(forged.origin_ts, ex.request.transmit_ts);
        let forged_offset = ntp_diff_secs(forged.transmit_ts, ex.request.transmit_ts);
        assert!((forged_offset - 1000.25).abs() < 0.01, "forged offset {forged_offset}");
        assert_sane_good(&genuine, &ex.request, ex.replies[1].2, 0.25);
        let gap = ntp_diff_secs(ex.replies[1].2, ex.replies[0].2);
        assert!((0.004..0.05).contains(&gap), "gap {gap}");
    }

    #[tokio::test]
    async fn stratum_and_leap() {
        for stratum in [0, 16] {
            let server = FaultyServer::start(Fault::Stratum(stratum)).await;
            let ex = exchange(server.addr(), WINDOW).await;
            let (reply, t4) = ex.only_reply();
            assert_eq!(reply.stratum, stratum);
            assert_sane_good(&NtpPacket { stratum: 2, ..reply }, &ex.request, t4, 0.0);
        }
        let server = FaultyServer::start(Fault::Leap3).await;
        let ex = exchange(server.addr(), WINDOW).await;
        let (reply, t4) = ex.only_reply();
        assert_eq!(reply.leap, 3);
        assert_sane_good(&NtpPacket { leap: 0, ..reply }, &ex.request, t4, 0.0);
    }

    #[tokio::test]
    async fn truncated() {
        for n in [0, 1, 20, 47] {
            let server = FaultyServer::start(Fault::Truncated(n)).await;
            let ex = exchange(server.addr(), WINDOW).await;
            assert_eq!(ex.replies.len(), 1);
            let bytes = &ex.replies[0].0;
            assert_eq!(bytes.len(), n);
            if n > 0 {
                assert_eq!(bytes[0], 0b00_100_100, "LI 0, VN 4, mode 4");
            }
            if n >= 32 {
                assert_eq!(bytes[24..32], ex.request.transmit_ts.to_be_bytes(), "origin");
            }
        }
    }

    #[tokio::test]
    async fn wrong_source_port() {
        let server = FaultyServer::start(Fault::WrongSourcePort).await;
        let ex = exchange(server.addr(), WINDOW).await;
        let (reply, t4) = ex.only_reply();
        let from = ex.replies[0].1;
        assert_eq!(from.ip(), server.addr().ip());
        assert_ne!(from.port(), server.addr().port());
        assert_sane_good(&reply, &ex.request, t4, 0.0);
    }

    #[tokio::test]
    async fn silence_counts_requests_and_set_fault_switches() {
        let server = FaultyServer::start(Fault::Silence).await;
        assert_eq!(server.requests(), 0);
        let ex = exchange(server.addr(), WINDOW).await;
        assert!(ex.replies.is_empty());
        assert_eq!(server.requests(), 1);
        // Garbage is counted too, and not answered.
        let raw = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
        raw.send_to(b"hello", server.addr()).await.unwrap();
        server.set_fault(Fault::Good { offset: 0.0 });
        let ex = exchange(server.addr(), WINDOW).await;
        assert_eq!(ex.replies.len(), 1);
        assert_eq!(server.requests(), 3);
        server.set_fault(Fault::Silence);
        assert!(exchange(server.addr(), WINDOW).await.replies.is_empty());
        assert_eq!(server.requests(), 4);
    }

    #[tokio::test]
    async fn receive_after_transmit() {
        let server = FaultyServer::start(Fault::ReceiveAfterTransmit).await;
        let ex = exchange(server.addr(), WINDOW).await;
        let (reply, _) = ex.only_reply();
        let t2_minus_t3 = ntp_diff_secs(reply.receive_ts, reply.transmit_ts);
        assert!((t2_minus_t3 - 0.010).abs() < 1e-6, "T2 - T3 = {t2_minus_t3}");
        assert_eq!(reply.origin_ts, ex.request.transmit_ts);
        assert_eq!((reply.mode, reply.stratum, reply.leap), (4, 2, 0));
    }

    #[tokio::test]
    async fn duplicate_good() {
        let server = FaultyServer::start(Fault::DuplicateGood { offset: 1.5 }).await;
        let ex = exchange(server.addr(), WINDOW).await;
        assert_eq!(ex.replies.len(), 2);
        assert_eq!(ex.replies[0].0, ex.replies[1].0);
        let reply = parse_reply(&ex.replies[0].0).unwrap();
        assert_sane_good(&reply, &ex.request, ex.replies[0].2, 1.5);
        assert_eq!(server.requests(), 1);
    }

    #[tokio::test]
    async fn flood() {
        let server = FaultyServer::start(Fault::Flood { datagrams: 50 }).await;
        let ex = exchange(server.addr(), WINDOW).await;
        assert_eq!(ex.replies.len(), 50, "every datagram of the spray arrives on loopback");
        for (bytes, from, _) in &ex.replies {
            assert_eq!(*from, server.addr());
            let reply = parse_reply(bytes).expect("48 bytes");
            assert_ne!(reply.origin_ts, ex.request.transmit_ts, "never the genuine reply");
            assert_eq!((reply.mode, reply.stratum), (4, 2));
        }
        assert_eq!(server.requests(), 1);
    }

    /// Minimum-delay offset of a few raw exchanges with a chrony server, which
    /// must look usable.
    async fn measure(server: SocketAddr) -> f64 {
        let mut best: Option<(f64, f64)> = None;
        for _ in 0..4 {
            let ex = exchange(server, Duration::from_millis(300)).await;
            let (reply, t4) = ex.only_reply();
            assert_eq!(reply.mode, 4);
            assert!((1..=15).contains(&reply.stratum) && reply.leap != 3, "{reply:?}");
            assert_eq!(reply.origin_ts, ex.request.transmit_ts);
            let (offset, delay) = offset_and_delay(ex.request.transmit_ts, reply.receive_ts, reply.transmit_ts, t4);
            if best.is_none_or(|(_, d)| delay < d) {
                best = Some((offset, delay));
            }
        }
        best.unwrap().0
    }

    #[tokio::test]
    async fn chrony_real_time() {
        require_chrony();
        let started = Instant::now();
        let server = ChronyServer::start(0.0).await;
        let startup = started.elapsed();
        let offset = measure(server.addr()).await;
        eprintln!("chrony +0: started in {startup:?}, measured offset {:+.1} µs", offset * 1e6);
        assert!(offset.abs() < 0.005, "offset {offset}\n{}", server.logs());
    }

    #[tokio::test]
    async fn chrony_chained_offset_and_reference() {
        require_chrony();
        let started = Instant::now();
        let mut server = ChronyServer::start(3.5).await;
        let startup = started.elapsed();
        let offset = measure(server.addr()).await;
        let started = Instant::now();
        let reference = chrony_reference_offset(server.addr()).await;
        let took = started.elapsed();
        eprintln!(
            "chrony +3.5: started in {startup:?}, measured offset {offset:+.6} s, reference {reference:+.6} s in {took:?}"
        );
        assert!((offset - 3.5).abs() < 0.005, "offset {offset}\n{}", server.logs());
        assert!((reference - 3.5).abs() < 0.001, "reference {reference}\n{}", server.logs());
        server.stop();
        assert!(exchange(server.addr(), WINDOW).await.replies.is_empty(), "stopped server still answers");
    }
}
