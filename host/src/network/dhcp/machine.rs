//! The DHCPv4 client state machine (RFC 2131 §4.4), without sockets or
//! clocks: it is given packets and instants and returns [`Action`]s, and
//! says when it next wants to be woken ([`Machine::next_wakeup`]).
//!
//! ```text
//!  start ─ kept lease valid ─▶ REBOOTING ─ ACK ─▶ BOUND ─ T1 ─▶ RENEWING ─ T2 ─▶ REBINDING
//!    │                          │ NAK/timeout       ▲ ▲           │ ACK             │ ACK │ expiry
//!    ▼                          ▼                   │ └───────────┘                 │     ▼
//!  SELECTING ◀──────────────── INIT ◀───────────────┼────── NAK, expiry ────────────┘   INIT
//!    │ OFFER                                       │
//!    ▼                                             │
//!  REQUESTING ── ACK ──────────────────────────────┘ (NAK or no answer: INIT)
//! ```
//!
//! Retransmission (§4.1): the first after 1 s (so a lost first packet on a
//! link that just came up costs little), then 4 s, 8 s, ... 64 s, each
//! ±1 s. REQUESTING gives up after 4 requests (about 29 s), REBOOTING after
//! 2 (5 s). RENEWING and REBINDING retry at half the time left to T2 or
//! expiry, at least 10 s (the RFC's 60 s would allow one try on a short
//! lease). Consecutive NAKs back off (1 s doubling to 64 s) so a hostile
//! server cannot make the client spin. A send the kernel refuses (link
//! down) is retried after 250 ms and not counted ([`Machine::send_failed`]).

use super::escaped;
use super::lease::{Lease, is_unicast, lease_from_ack, mac_text};
use super::wire;
use dhcproto::v4::{self, DhcpOption, Message, MessageType, Opcode, OptionCode};
use dhcproto::{Decodable, Decoder, Encodable, Encoder};
use rand::{Rng, SeedableRng, rngs::StdRng};
use serde::{Deserialize, Serialize};
use std::net::Ipv4Addr;
use std::time::{Duration, SystemTime};
use tokio::time::Instant;

/// Largest datagram read; bigger ones are dropped unread.
pub const MAX_PACKET: usize = 1500;
/// Requests in REQUESTING before going back to INIT.
const REQUEST_TRIES: u32 = 4;
/// Requests in REBOOTING (INIT-REBOOT) before going back to INIT.
const REBOOT_TRIES: u32 = 2;
/// Least wait between retries in RENEWING and REBINDING.
const MIN_RENEW_RETRY: Duration = Duration::from_secs(10);
const MAX_BACKOFF: Duration = Duration::from_secs(64);
/// Retry after a send the kernel refused (link down).
pub const SEND_FAILED_RETRY: Duration = Duration::from_millis(250);
/// Options asked for in every request.
const REQUESTED: [OptionCode; 13] = [
    OptionCode::SubnetMask,
    OptionCode::Router,
    OptionCode::DomainNameServer,
    OptionCode::Hostname,
    OptionCode::DomainName,
    OptionCode::InterfaceMtu,
    OptionCode::NtpServers,
    OptionCode::AddressLeaseTime,
    OptionCode::ServerIdentifier,
    OptionCode::Renewal,
    OptionCode::Rebinding,
    OptionCode::DomainSearch,
    OptionCode::ClasslessStaticRoute,
];

/// Where the client is (RFC 2131 figure 5; INIT and INIT-REBOOT are
/// instants, not places to wait).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DhcpState {
    Selecting,
    Requesting,
    Rebooting,
    Bound,
    Renewing,
    Rebinding,
    Released,
}

impl DhcpState {
    pub fn as_str(self) -> &'static str {
        match self {
            DhcpState::Selecting => "selecting",
            DhcpState::Requesting => "requesting",
            DhcpState::Rebooting => "rebooting",
            DhcpState::Bound => "bound",
            DhcpState::Renewing => "renewing",
            DhcpState::Rebinding => "rebinding",
            DhcpState::Released => "released",
        }
    }
}

impl std::fmt::Display for DhcpState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a packet goes: the limited broadcast, or the server's address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Destination {
    Broadcast,
    Server(Ipv4Addr),
}

/// What the machine asks its runner to do, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Send `packet` (a `kind` message) to UDP port 67 at `to`.
    Send { packet: Vec<u8>, to: Destination, kind: MessageType },
    /// A lease was bound or extended: publish and keep it.
    Bound(Box<Lease>),
    /// The lease is gone (expired, refused with a NAK, released): publish
    /// none and forget the kept one.
    Lost { reason: String },
    /// Something a server sent was dropped; the text is escaped.
    Warn(String),
}

/// Why a received packet was ignored; each names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejected {
    #[error("packet of {len} bytes is larger than {MAX_PACKET}")]
    TooLarge { len: usize },
    #[error("cannot decode a DHCP message of {len} bytes: {message}")]
    Malformed { len: usize, message: String },
    #[error("op is {op}, expected BOOTREPLY")]
    NotAReply { op: String },
    #[error("no exchange in progress in state {state}")]
    NotWaiting { state: DhcpState },
    #[error("xid {got:#010x} does not match {expected:#010x}")]
    WrongXid { expected: u32, got: u32 },
    #[error("chaddr {got} is not this link's {expected}")]
    WrongHardwareAddress { expected: String, got: String },
    #[error("message type (option 53) {got} not expected in state {state}")]
    UnexpectedType { state: DhcpState, got: String },
    #[error("{name} (option {code}) missing")]
    MissingOption { code: u8, name: &'static str },
    #[error("{field} {value} is not a usable unicast address")]
    BadAddress { field: &'static str, value: Ipv4Addr },
    #[error("subnet mask (option 1) {value} is not a contiguous mask of 1 to 32 bits")]
    BadMask { value: Ipv4Addr },
    #[error("option {code} has {len} bytes, not a length its type allows")]
    BadOptionLength { code: u8, len: usize },
    #[error("server identifier (option 54) {got} is not the selected server {expected}")]
    WrongServer { expected: Ipv4Addr, got: Ipv4Addr },
}

/// The link the machine runs on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub link: String,
    pub mac: [u8; 6],
    /// Option 12 to send; the caller checked it is a DNS name.
    pub hostname: Option<String>,
}

/// The current request/reply exchange.
#[derive(Debug, Clone)]
struct Exchange {
    xid: u32,
    started: Instant,
    /// Messages sent so far in this exchange.
    sent: u32,
    next_send: Instant,
}

pub struct Machine {
    id: Identity,
    state: DhcpState,
    exchange: Option<Exchange>,
    /// SELECTING → REQUESTING: the offered address and its server.
    offer: Option<(Ipv4Addr, Ipv4Addr)>,
    /// A kept lease being asked for (REBOOTING), or the bound lease.
    lease: Option<Lease>,
    /// Monotonic T1, T2 and expiry of the bound lease.
    renew_at: Instant,
    rebind_at: Instant,
    expires_at: Instant,
    naks: u32,
    rng: StdRng,
}

impl Machine {
    /// A machine for `id`; `seed` drives xids and jitter (random in
    /// production, fixed in tests).
    pub fn new(id: Identity, seed: u64) -> Self {
        let now = Instant::now();
        Self {
            id,
            state: DhcpState::Selecting,
            exchange: None,
            offer: None,
            lease: None,
            renew_at: now,
            rebind_at: now,
            expires_at: now,
            naks: 0,
            rng: StdRng::seed_from_u64(seed),
        }
    }

    pub fn state(&self) -> DhcpState {
        self.state
    }

    /// The bound lease (none while selecting, requesting or rebooting).
    pub fn lease(&self) -> Option<&Lease> {
        matches!(self.state, DhcpState::Bound | DhcpState::Renewing | DhcpState::Rebinding)
            .then_some(self.lease.as_ref())
            .flatten()
    }

    /// Starts: INIT-REBOOT with `kept` when it is for this link and MAC and
    /// has time left at `wall`, otherwise INIT. Warns about a kept lease it
    /// does not use.
    pub fn start(&mut self, kept: Option<Lease>, now: Instant, wall: SystemTime) -> Vec<Action> {
        let mut actions = Vec::new();
        if let Some(kept) = kept {
            let mac = mac_text(&self.id.mac);
            if kept.link != self.id.link || kept.hardware_address != mac {
                actions.push(Action::Warn(format!(
                    "kept lease for link {} with MAC {} is not for link {} with MAC {mac}: not used",
                    escaped(&kept.link),
                    escaped(&kept.hardware_address),
                    self.id.link
                )));
            } else if kept.remaining(wall).is_some() && is_unicast(kept.ip()) {
                self.state = DhcpState::Rebooting;
                self.lease = Some(kept);
                self.new_exchange(now);
                actions.push(self.send(now));
                return actions;
            }
        }
        actions.extend(self.init(now, Duration::ZERO));
        actions
    }

    /// When the machine next wants [`Machine::on_timer`].
    pub fn next_wakeup(&self) -> Instant {
        let far = Instant::now() + Duration::from_secs(86_400 * 365);
        let send = self.exchange.as_ref().map(|e| e.next_send);
        match self.state {
            DhcpState::Selecting | DhcpState::Requesting | DhcpState::Rebooting => send.unwrap_or(far),
            DhcpState::Bound => self.renew_at,
            DhcpState::Renewing => send.unwrap_or(far).min(self.rebind_at),
            DhcpState::Rebinding => send.unwrap_or(far).min(self.expires_at),
            DhcpState::Released => far,
        }
    }

    /// Handles the clock reaching `now`: retransmissions, T1, T2, expiry.
    pub fn on_timer(&mut self, now: Instant) -> Vec<Action> {
        let due = self.exchange.as_ref().is_some_and(|e| now >= e.next_send);
        match self.state {
            DhcpState::Selecting if due => vec![self.send(now)],
            DhcpState::Requesting | DhcpState::Rebooting if due => {
                let tries = if self.state == DhcpState::Requesting { REQUEST_TRIES } else { REBOOT_TRIES };
                if self.exchange.as_ref().is_some_and(|e| e.sent >= tries) {
                    let what = if self.state == DhcpState::Requesting { "request" } else { "INIT-REBOOT request" };
                    let mut actions =
                        vec![Action::Warn(format!("no answer to {tries} tries of the {what}: back to INIT"))];
                    actions.extend(self.init(now, Duration::ZERO));
                    actions
                } else {
                    vec![self.send(now)]
                }
            }
            DhcpState::Bound | DhcpState::Renewing | DhcpState::Rebinding if now >= self.expires_at => {
                let mut actions = vec![Action::Lost { reason: "lease expired".into() }];
                actions.extend(self.init(now, Duration::ZERO));
                actions
            }
            DhcpState::Bound | DhcpState::Renewing if now >= self.rebind_at => {
                self.state = DhcpState::Rebinding;
                self.new_exchange(now);
                vec![self.send(now)]
            }
            DhcpState::Bound if now >= self.renew_at => {
                self.state = DhcpState::Renewing;
                self.new_exchange(now);
                vec![self.send(now)]
            }
            DhcpState::Renewing | DhcpState::Rebinding if due => vec![self.send(now)],
            _ => Vec::new(),
        }
    }

    /// Handles a datagram from port 67 arriving at `now` (`wall` dates a
    /// lease it binds).
    pub fn on_packet(&mut self, bytes: &[u8], now: Instant, wall: SystemTime) -> Result<Vec<Action>, Rejected> {
        if bytes.len() > MAX_PACKET {
            return Err(Rejected::TooLarge { len: bytes.len() });
        }
        // Header checks on the raw bytes, options rebuilt: see `wire`.
        wire::check_header(bytes, &self.id.mac)?;
        let Some(exchange) = &self.exchange else {
            return Err(Rejected::NotWaiting { state: self.state });
        };
        let xid = u32::from_be_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]);
        if xid != exchange.xid {
            return Err(Rejected::WrongXid { expected: exchange.xid, got: xid });
        }
        let clean = wire::sanitize(bytes)?;
        let msg = Message::decode(&mut Decoder::new(&clean))
            .map_err(|e| Rejected::Malformed { len: bytes.len(), message: escaped(&e.to_string()) })?;
        let Some(kind) = msg.opts().msg_type() else {
            return Err(Rejected::MissingOption { code: 53, name: "message type" });
        };
        let server_id = match msg.opts().get(OptionCode::ServerIdentifier) {
            Some(DhcpOption::ServerIdentifier(ip)) => Some(*ip),
            _ => None,
        };
        match (self.state, kind) {
            (DhcpState::Selecting, MessageType::Offer) => {
                let yiaddr = msg.yiaddr();
                if !is_unicast(yiaddr) {
                    return Err(Rejected::BadAddress { field: "yiaddr", value: yiaddr });
                }
                let server = server_id.ok_or(Rejected::MissingOption { code: 54, name: "server identifier" })?;
                if !is_unicast(server) {
                    return Err(Rejected::BadAddress { field: "server identifier (option 54)", value: server });
                }
                self.offer = Some((yiaddr, server));
                self.state = DhcpState::Requesting;
                // The REQUEST keeps the DISCOVER's xid (§4.4.1); a fresh retry count.
                if let Some(e) = self.exchange.as_mut() {
                    e.sent = 0;
                }
                Ok(vec![self.send(now)])
            }
            (DhcpState::Requesting, MessageType::Ack | MessageType::Nak) => {
                let expected = self.offer.map(|(_, s)| s).unwrap_or(Ipv4Addr::UNSPECIFIED);
                if let Some(got) = server_id
                    && got != expected
                {
                    return Err(Rejected::WrongServer { expected, got });
                }
                if kind == MessageType::Ack { self.bind(&msg, now, wall) } else { Ok(self.nak(&msg, now)) }
            }
            (DhcpState::Rebooting | DhcpState::Renewing | DhcpState::Rebinding, MessageType::Ack) => {
                self.bind(&msg, now, wall)
            }
            (DhcpState::Rebooting | DhcpState::Renewing | DhcpState::Rebinding, MessageType::Nak) => {
                Ok(self.nak(&msg, now))
            }
            (state, other) => Err(Rejected::UnexpectedType { state, got: format!("{other:?}").to_ascii_uppercase() }),
        }
    }

    /// The last message could not be sent (the link is down, or has no
    /// route yet): try again after [`SEND_FAILED_RETRY`] instead of the
    /// backoff, and do not count the try, so a link that comes up late is
    /// served at once and a down link never makes the client give up.
    pub fn send_failed(&mut self, now: Instant) {
        if let Some(e) = self.exchange.as_mut() {
            e.sent = e.sent.saturating_sub(1);
            e.next_send = e.next_send.min(now + SEND_FAILED_RETRY);
        }
    }

    /// Gives the lease back (DHCPRELEASE to its server) when one is bound.
    pub fn release(&mut self, _now: Instant) -> Vec<Action> {
        let Some(lease) = self.lease().cloned() else {
            return Vec::new();
        };
        let xid = self.rng.random();
        let mut msg = self.message(xid, MessageType::Release, lease.ip());
        msg.opts_mut().insert(DhcpOption::ServerIdentifier(lease.server));
        self.state = DhcpState::Released;
        self.exchange = None;
        self.lease = None;
        vec![
            Action::Send { packet: encode(&msg), to: Destination::Server(lease.server), kind: MessageType::Release },
            Action::Lost { reason: "released".into() },
        ]
    }

    fn bind(&mut self, msg: &Message, now: Instant, wall: SystemTime) -> Result<Vec<Action>, Rejected> {
        let (lease, warnings) = lease_from_ack(msg, &self.id.link, &self.id.mac, wall)?;
        let mut actions: Vec<Action> = warnings.into_iter().map(Action::Warn).collect();
        let secs = |s: u32| Duration::from_secs(s.into());
        self.renew_at = now + secs(lease.t1);
        self.rebind_at = now + secs(lease.t2);
        self.expires_at = now + secs(lease.lease_seconds);
        self.state = DhcpState::Bound;
        self.exchange = None;
        self.offer = None;
        self.naks = 0;
        self.lease = Some(lease.clone());
        actions.push(Action::Bound(Box::new(lease)));
        Ok(actions)
    }

    fn nak(&mut self, msg: &Message, now: Instant) -> Vec<Action> {
        let text = match msg.opts().get(OptionCode::Message) {
            Some(DhcpOption::Message(m)) => format!(": {}", escaped(m)),
            _ => String::new(),
        };
        let had_lease = self.lease().is_some();
        let mut actions = vec![Action::Warn(format!("DHCPNAK in state {}{text}", self.state))];
        if had_lease {
            actions.push(Action::Lost { reason: "refused by the server (DHCPNAK)".into() });
        }
        // The first NAK restarts at once; more in a row wait 1 s, 2 s, ... 64 s.
        let delay = if self.naks == 0 { Duration::ZERO } else { Duration::from_secs(1 << (self.naks - 1).min(6)) };
        self.naks = self.naks.saturating_add(1);
        actions.extend(self.init(now, delay));
        actions
    }

    /// INIT: forget any lease and DISCOVER after `delay`.
    fn init(&mut self, now: Instant, delay: Duration) -> Vec<Action> {
        self.state = DhcpState::Selecting;
        self.lease = None;
        self.offer = None;
        self.new_exchange(now);
        if delay.is_zero() {
            vec![self.send(now)]
        } else {
            if let Some(e) = self.exchange.as_mut() {
                e.next_send = now + delay;
            }
            Vec::new()
        }
    }

    fn new_exchange(&mut self, now: Instant) {
        self.exchange = Some(Exchange { xid: self.rng.random(), started: now, sent: 0, next_send: now });
    }

    /// The message of the current state, sent now; schedules the retry.
    fn send(&mut self, now: Instant) -> Action {
        let state = self.state;
        let lease_ip = self.lease.as_ref().map(|l| l.ip()).unwrap_or(Ipv4Addr::UNSPECIFIED);
        let lease_server = self.lease.as_ref().map(|l| l.server).unwrap_or(Ipv4Addr::UNSPECIFIED);
        let retry = match state {
            DhcpState::Renewing => renew_retry(now, self.rebind_at),
            DhcpState::Rebinding => renew_retry(now, self.expires_at),
            _ => {
                let sent = self.exchange.as_ref().map_or(0, |e| e.sent);
                self.backoff(sent)
            }
        };
        let exchange = self.exchange.get_or_insert(Exchange { xid: 0, started: now, sent: 0, next_send: now });
        let (xid, started) = (exchange.xid, exchange.started);
        exchange.sent += 1;
        exchange.next_send = now + retry;
        let (kind, ciaddr, to) = match state {
            DhcpState::Selecting => (MessageType::Discover, Ipv4Addr::UNSPECIFIED, Destination::Broadcast),
            DhcpState::Requesting | DhcpState::Rebooting => {
                (MessageType::Request, Ipv4Addr::UNSPECIFIED, Destination::Broadcast)
            }
            DhcpState::Renewing => (MessageType::Request, lease_ip, Destination::Server(lease_server)),
            _ => (MessageType::Request, lease_ip, Destination::Broadcast),
        };
        let mut msg = self.message(xid, kind, ciaddr);
        let secs = now.saturating_duration_since(started).as_secs().min(u64::from(u16::MAX)) as u16;
        msg.set_secs(secs);
        // Until the address is configured, replies must be broadcast to reach us.
        if ciaddr.is_unspecified() {
            msg.set_flags(v4::Flags::default().set_broadcast());
        }
        let opts = msg.opts_mut();
        opts.insert(DhcpOption::ParameterRequestList(REQUESTED.to_vec()));
        opts.insert(DhcpOption::MaxMessageSize(MAX_PACKET as u16));
        if let Some(name) = &self.id.hostname {
            opts.insert(DhcpOption::Hostname(name.clone()));
        }
        match state {
            DhcpState::Requesting => {
                if let Some((ip, server)) = self.offer {
                    opts.insert(DhcpOption::RequestedIpAddress(ip));
                    opts.insert(DhcpOption::ServerIdentifier(server));
                }
            }
            DhcpState::Rebooting => {
                opts.insert(DhcpOption::RequestedIpAddress(lease_ip));
            }
            _ => {}
        }
        Action::Send { packet: encode(&msg), to, kind }
    }

    /// The wait after the `sent`-th message: 1 s, then 4, 8, ... 64 s ±1 s.
    fn backoff(&mut self, sent: u32) -> Duration {
        if sent == 0 {
            return Duration::from_millis(1000 + self.rng.random_range(0..250));
        }
        let base = Duration::from_secs(4u64 << (sent - 1).min(4)).min(MAX_BACKOFF);
        let jitter = self.rng.random_range(0..=2000u64);
        (base + Duration::from_millis(jitter)).saturating_sub(Duration::from_secs(1))
    }

    /// A BOOTREQUEST of `kind` with our MAC and client identifier.
    fn message(&self, xid: u32, kind: MessageType, ciaddr: Ipv4Addr) -> Message {
        let zero = Ipv4Addr::UNSPECIFIED;
        let mut msg = Message::new_with_id(xid, ciaddr, zero, zero, zero, &self.id.mac);
        msg.set_opcode(Opcode::BootRequest);
        let opts = msg.opts_mut();
        opts.insert(DhcpOption::MessageType(kind));
        let mut client_id = vec![1u8];
        client_id.extend_from_slice(&self.id.mac);
        opts.insert(DhcpOption::ClientIdentifier(client_id));
        msg
    }
}

/// Half the time left to `deadline`, at least [`MIN_RENEW_RETRY`], never past it.
fn renew_retry(now: Instant, deadline: Instant) -> Duration {
    let left = deadline.saturating_duration_since(now);
    (left / 2).max(MIN_RENEW_RETRY).min(left.max(Duration::from_millis(1)))
}

fn encode(msg: &Message) -> Vec<u8> {
    let mut buf = Vec::with_capacity(600);
    // Encoding our own message into a Vec cannot fail.
    let _ = msg.encode(&mut Encoder::new(&mut buf));
    buf
}

#[cfg(test)]
mod tests;
