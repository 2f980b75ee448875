//! The state machine with scripted replies and explicit instants.

use super::*;
use crate::network::dhcp::lease::{DhcpRoute, MAX_ROUTES};

const MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x2a];
const SERVER: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const OFFERED: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 50);

fn machine() -> Machine {
    Machine::new(Identity { link: "eth0".into(), mac: MAC, hostname: Some("node-1".into()) }, 7)
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// The one packet sent, decoded, with where it went.
fn sent(actions: &[Action]) -> (Message, Destination) {
    let sends: Vec<_> = actions
        .iter()
        .filter_map(|a| match a {
            Action::Send { packet, to, .. } => Some((Message::decode(&mut Decoder::new(packet)).unwrap(), *to)),
            _ => None,
        })
        .collect();
    assert_eq!(sends.len(), 1, "expected one packet in {actions:?}");
    sends.into_iter().next().unwrap()
}

fn kind(msg: &Message) -> MessageType {
    msg.opts().msg_type().unwrap()
}

fn opt(msg: &Message, code: OptionCode) -> Option<&DhcpOption> {
    msg.opts().get(code)
}

/// A server reply of `kind` to `req`, with a 120 s lease and the usual options.
fn reply(req: &Message, kind: MessageType) -> Message {
    let mut msg = Message::new_with_id(
        req.xid(),
        Ipv4Addr::UNSPECIFIED,
        if kind == MessageType::Nak { Ipv4Addr::UNSPECIFIED } else { OFFERED },
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        &req.chaddr()[..6],
    );
    msg.set_opcode(Opcode::BootReply);
    let o = msg.opts_mut();
    o.insert(DhcpOption::MessageType(kind));
    o.insert(DhcpOption::ServerIdentifier(SERVER));
    if kind != MessageType::Nak {
        o.insert(DhcpOption::AddressLeaseTime(120));
        o.insert(DhcpOption::SubnetMask(Ipv4Addr::new(255, 255, 255, 0)));
        o.insert(DhcpOption::Router(vec![SERVER]));
        o.insert(DhcpOption::DomainNameServer(vec![Ipv4Addr::new(10, 0, 0, 53), Ipv4Addr::new(10, 0, 0, 54)]));
        o.insert(DhcpOption::NtpServers(vec![Ipv4Addr::new(10, 0, 0, 123)]));
        o.insert(DhcpOption::DomainName("Example.COM".into()));
        o.insert(DhcpOption::InterfaceMtu(1400));
    }
    msg
}

fn bytes(msg: &Message) -> Vec<u8> {
    encode(msg)
}

/// Runs DISCOVER → OFFER → REQUEST → ACK at `t0`; returns the machine and the lease.
fn bound(t0: Instant, wall: SystemTime) -> (Machine, Lease) {
    let mut m = machine();
    let (discover, _) = sent(&m.start(None, t0, wall));
    let (request, _) = sent(&m.on_packet(&bytes(&reply(&discover, MessageType::Offer)), t0, wall).unwrap());
    let actions = m.on_packet(&bytes(&reply(&request, MessageType::Ack)), t0, wall).unwrap();
    let lease = match actions.last() {
        Some(Action::Bound(l)) => (**l).clone(),
        other => panic!("expected Bound, got {other:?}"),
    };
    (m, lease)
}

#[test]
fn discover_offer_request_ack_binds_with_every_option() {
    let (t0, wall) = (Instant::now(), SystemTime::now());
    let mut m = machine();
    let (discover, to) = sent(&m.start(None, t0, wall));
    assert_eq!((kind(&discover), to), (MessageType::Discover, Destination::Broadcast));
    assert!(discover.flags().broadcast(), "broadcast flag so the reply reaches a link without an address");
    assert_eq!(discover.chaddr()[..6], MAC);
    assert_eq!(opt(&discover, OptionCode::Hostname), Some(&DhcpOption::Hostname("node-1".into())));
    assert_eq!(m.state(), DhcpState::Selecting);

    let (request, to) = sent(&m.on_packet(&bytes(&reply(&discover, MessageType::Offer)), t0, wall).unwrap());
    assert_eq!((kind(&request), to), (MessageType::Request, Destination::Broadcast));
    assert_eq!(request.xid(), discover.xid());
    assert_eq!(opt(&request, OptionCode::ServerIdentifier), Some(&DhcpOption::ServerIdentifier(SERVER)));
    assert_eq!(opt(&request, OptionCode::RequestedIpAddress), Some(&DhcpOption::RequestedIpAddress(OFFERED)));
    assert_eq!(request.ciaddr(), Ipv4Addr::UNSPECIFIED);
    assert_eq!(m.state(), DhcpState::Requesting);

    let actions = m.on_packet(&bytes(&reply(&request, MessageType::Ack)), t0, wall).unwrap();
    let Some(Action::Bound(lease)) = actions.last() else { panic!("{actions:?}") };
    assert_eq!(m.state(), DhcpState::Bound);
    assert_eq!(lease.address.to_string(), "10.0.0.50/24");
    assert_eq!(lease.server, SERVER);
    assert_eq!(lease.routers, vec![SERVER]);
    assert_eq!(lease.dns, vec![Ipv4Addr::new(10, 0, 0, 53), Ipv4Addr::new(10, 0, 0, 54)]);
    assert_eq!(lease.ntp, vec![Ipv4Addr::new(10, 0, 0, 123)]);
    assert_eq!(lease.domain.as_deref(), Some("example.com"));
    assert_eq!(lease.mtu, Some(1400));
    assert_eq!((lease.lease_seconds, lease.t1, lease.t2), (120, 60, 105));
    assert_eq!(lease.hardware_address, "02:00:00:00:00:2a");
    assert_eq!(m.lease(), Some(&**lease));
    assert_eq!(m.next_wakeup(), t0 + secs(60));
}

#[test]
fn renew_at_t1_unicast_then_rebind_at_t2_broadcast_then_expiry_restarts() {
    let (t0, wall) = (Instant::now(), SystemTime::now());
    let (mut m, lease) = bound(t0, wall);
    assert!(m.on_timer(t0 + secs(59)).is_empty());
    let (renew, to) = sent(&m.on_timer(t0 + secs(60)));
    assert_eq!(m.state(), DhcpState::Renewing);
    assert_eq!((kind(&renew), to), (MessageType::Request, Destination::Server(SERVER)));
    assert_eq!(renew.ciaddr(), lease.ip());
    assert!(!renew.flags().broadcast());
    assert!(opt(&renew, OptionCode::ServerIdentifier).is_none(), "no server id when renewing (§4.3.2)");
    assert!(opt(&renew, OptionCode::RequestedIpAddress).is_none());
    // Retry at half the time to T2 (45 s / 2), at least 10 s.
    assert_eq!(m.next_wakeup(), t0 + secs(60) + Duration::from_millis(22_500));
    let (again, _) = sent(&m.on_timer(t0 + secs(83)));
    assert_eq!(again.xid(), renew.xid());
    // T2: broadcast, ciaddr still set, a fresh xid.
    let (rebind, to) = sent(&m.on_timer(t0 + secs(105)));
    assert_eq!(m.state(), DhcpState::Rebinding);
    assert_eq!((kind(&rebind), to), (MessageType::Request, Destination::Broadcast));
    assert_eq!(rebind.ciaddr(), lease.ip());
    assert_ne!(rebind.xid(), renew.xid());
    // Expiry: the lease is lost and INIT sends a DISCOVER at once.
    let actions = m.on_timer(t0 + secs(120));
    assert_eq!(actions[0], Action::Lost { reason: "lease expired".into() });
    let (discover, _) = sent(&actions);
    assert_eq!(kind(&discover), MessageType::Discover);
    assert_eq!(m.state(), DhcpState::Selecting);
    assert_eq!(m.lease(), None);
}

#[test]
fn an_ack_while_renewing_or_rebinding_extends_the_lease() {
    let (t0, wall) = (Instant::now(), SystemTime::now());
    let (mut m, _) = bound(t0, wall);
    let (renew, _) = sent(&m.on_timer(t0 + secs(60)));
    let later = wall + secs(60);
    let actions = m.on_packet(&bytes(&reply(&renew, MessageType::Ack)), t0 + secs(60), later).unwrap();
    let Some(Action::Bound(lease)) = actions.last() else { panic!("{actions:?}") };
    assert_eq!(m.state(), DhcpState::Bound);
    assert_eq!(lease.acquired, crate::network::dhcp::lease::whole_seconds(later));
    assert_eq!(m.next_wakeup(), t0 + secs(120));
    // Straight to rebinding (the server was silent), then an ACK from a new server.
    sent(&m.on_timer(t0 + secs(120)));
    let (rebind, _) = sent(&m.on_timer(t0 + secs(165)));
    assert_eq!(m.state(), DhcpState::Rebinding);
    let mut ack = reply(&rebind, MessageType::Ack);
    ack.opts_mut().insert(DhcpOption::ServerIdentifier(Ipv4Addr::new(10, 0, 0, 2)));
    let actions = m.on_packet(&bytes(&ack), t0 + secs(170), later).unwrap();
    let Some(Action::Bound(lease)) = actions.last() else { panic!("{actions:?}") };
    assert_eq!(lease.server, Ipv4Addr::new(10, 0, 0, 2));
    assert_eq!(m.state(), DhcpState::Bound);
}

#[test]
fn nak_sends_the_client_back_to_init_and_repeated_naks_back_off() {
    let (t0, wall) = (Instant::now(), SystemTime::now());
    let mut m = machine();
    let (discover, _) = sent(&m.start(None, t0, wall));
    let (request, _) = sent(&m.on_packet(&bytes(&reply(&discover, MessageType::Offer)), t0, wall).unwrap());
    let actions = m.on_packet(&bytes(&reply(&request, MessageType::Nak)), t0, wall).unwrap();
    let (again, _) = sent(&actions);
    assert_eq!(kind(&again), MessageType::Discover);
    assert_ne!(again.xid(), discover.xid());
    assert!(!actions.iter().any(|a| matches!(a, Action::Lost { .. })), "no lease to lose: {actions:?}");
    // A second NAK in a row: DISCOVER after 1 s, not at once.
    let (request, _) = sent(&m.on_packet(&bytes(&reply(&again, MessageType::Offer)), t0, wall).unwrap());
    let actions = m.on_packet(&bytes(&reply(&request, MessageType::Nak)), t0, wall).unwrap();
    assert!(!actions.iter().any(|a| matches!(a, Action::Send { .. })), "{actions:?}");
    assert_eq!(m.next_wakeup(), t0 + secs(1));
    assert_eq!(kind(&sent(&m.on_timer(t0 + secs(1))).0), MessageType::Discover);

    // A NAK while renewing drops the bound lease.
    let (mut m, _) = bound(t0, wall);
    let (renew, _) = sent(&m.on_timer(t0 + secs(60)));
    let actions = m.on_packet(&bytes(&reply(&renew, MessageType::Nak)), t0 + secs(61), wall).unwrap();
    assert!(actions.contains(&Action::Lost { reason: "refused by the server (DHCPNAK)".into() }), "{actions:?}");
    assert_eq!(m.state(), DhcpState::Selecting);
    assert_eq!(m.lease(), None);
}

#[test]
fn replies_for_someone_else_are_rejected_and_named() {
    let (t0, wall) = (Instant::now(), SystemTime::now());
    let mut m = machine();
    let (discover, _) = sent(&m.start(None, t0, wall));
    let offer = reply(&discover, MessageType::Offer);

    let mut wrong = offer.clone();
    wrong.set_xid(discover.xid() ^ 1);
    let err = m.on_packet(&bytes(&wrong), t0, wall).unwrap_err();
    assert!(matches!(err, Rejected::WrongXid { .. }), "{err}");
    assert!(err.to_string().starts_with("xid 0x"), "{err}");

    let mut wrong = offer.clone();
    wrong.set_chaddr(&[2, 0, 0, 0, 0, 0x2b]);
    assert_eq!(
        m.on_packet(&bytes(&wrong), t0, wall).unwrap_err().to_string(),
        "chaddr 02:00:00:00:00:2b is not this link's 02:00:00:00:00:2a"
    );

    let mut wrong = offer.clone();
    wrong.set_opcode(Opcode::BootRequest);
    assert!(matches!(m.on_packet(&bytes(&wrong), t0, wall), Err(Rejected::NotAReply { .. })));

    let mut wrong = offer.clone();
    wrong.opts_mut().insert(DhcpOption::MessageType(MessageType::Ack));
    assert_eq!(
        m.on_packet(&bytes(&wrong), t0, wall).unwrap_err().to_string(),
        "message type (option 53) ACK not expected in state selecting"
    );

    let mut wrong = offer.clone();
    wrong.opts_mut().remove(OptionCode::ServerIdentifier);
    assert_eq!(m.on_packet(&bytes(&wrong), t0, wall).unwrap_err().to_string(), "server identifier (option 54) missing");

    let mut wrong = offer.clone();
    wrong.set_yiaddr(Ipv4Addr::new(224, 0, 0, 1));
    assert_eq!(
        m.on_packet(&bytes(&wrong), t0, wall).unwrap_err().to_string(),
        "yiaddr 224.0.0.1 is not a usable unicast address"
    );

    assert!(matches!(m.on_packet(&[0u8; 20], t0, wall), Err(Rejected::Malformed { len: 20, .. })));
    assert_eq!(
        m.on_packet(&[0u8; MAX_PACKET + 1], t0, wall).unwrap_err().to_string(),
        "packet of 1501 bytes is larger than 1500"
    );
    // None of that moved the machine; the real offer still works.
    assert_eq!(m.state(), DhcpState::Selecting);
    let (request, _) = sent(&m.on_packet(&bytes(&offer), t0, wall).unwrap());
    // An ACK from a server other than the one selected is not ours.
    let mut other = reply(&request, MessageType::Ack);
    other.opts_mut().insert(DhcpOption::ServerIdentifier(Ipv4Addr::new(10, 0, 0, 9)));
    assert_eq!(
        m.on_packet(&bytes(&other), t0, wall).unwrap_err().to_string(),
        "server identifier (option 54) 10.0.0.9 is not the selected server 10.0.0.1"
    );
    assert_eq!(m.state(), DhcpState::Requesting);
}

#[test]
fn bad_acks_are_rejected_with_the_field_named() {
    let (t0, wall) = (Instant::now(), SystemTime::now());
    type Spoil = Box<dyn Fn(&mut Message)>;
    let cases: Vec<(&str, Spoil)> = vec![
        (
            "subnet mask (option 1) 255.0.255.0 is not a contiguous mask of 1 to 32 bits",
            Box::new(|m| {
                m.opts_mut().insert(DhcpOption::SubnetMask(Ipv4Addr::new(255, 0, 255, 0)));
            }),
        ),
        (
            "lease time (option 51) missing",
            Box::new(|m| {
                m.opts_mut().remove(OptionCode::AddressLeaseTime);
            }),
        ),
        (
            "yiaddr (network or broadcast address of its subnet) 10.0.0.255 is not a usable unicast address",
            Box::new(|m| {
                m.set_yiaddr(Ipv4Addr::new(10, 0, 0, 255));
            }),
        ),
        (
            "yiaddr 127.0.0.1 is not a usable unicast address",
            Box::new(|m| {
                m.set_yiaddr(Ipv4Addr::LOCALHOST);
            }),
        ),
    ];
    for (expected, spoil) in cases {
        let mut m = machine();
        let (discover, _) = sent(&m.start(None, t0, wall));
        let (request, _) = sent(&m.on_packet(&bytes(&reply(&discover, MessageType::Offer)), t0, wall).unwrap());
        let mut ack = reply(&request, MessageType::Ack);
        spoil(&mut ack);
        assert_eq!(m.on_packet(&bytes(&ack), t0, wall).unwrap_err().to_string(), expected);
        assert_eq!(m.state(), DhcpState::Requesting, "{expected}");
    }
}

#[test]
fn hostile_options_are_dropped_with_warnings_and_the_lease_kept() {
    let (t0, wall) = (Instant::now(), SystemTime::now());
    let mut m = machine();
    let (discover, _) = sent(&m.start(None, t0, wall));
    let (request, _) = sent(&m.on_packet(&bytes(&reply(&discover, MessageType::Offer)), t0, wall).unwrap());
    let mut ack = reply(&request, MessageType::Ack);
    let o = ack.opts_mut();
    o.insert(DhcpOption::AddressLeaseTime(3));
    o.insert(DhcpOption::Renewal(50));
    o.insert(DhcpOption::Rebinding(40));
    o.insert(DhcpOption::InterfaceMtu(100));
    o.insert(DhcpOption::Hostname("evil\x1b[31mname".into()));
    o.insert(DhcpOption::DomainNameServer(
        (1..=12).map(|i| Ipv4Addr::new(10, 0, 1, i)).chain([Ipv4Addr::BROADCAST]).collect(),
    ));
    let actions = m.on_packet(&bytes(&ack), t0, wall).unwrap();
    let warnings: Vec<&str> = actions
        .iter()
        .filter_map(|a| match a {
            Action::Warn(w) => Some(w.as_str()),
            _ => None,
        })
        .collect();
    assert!(warnings.contains(&"lease time (option 51) 3 s raised to 10 s"), "{warnings:?}");
    assert!(
        warnings.iter().any(|w| w.starts_with("renewal time (option 58) 50 s and rebinding time (option 59) 40 s"))
    );
    assert!(warnings.contains(&"interface MTU (option 26) 100 is below 576, ignored"), "{warnings:?}");
    assert!(
        warnings.iter().any(|w| w.starts_with("hostname (option 12) evil\\u{1b}[31mname") || w.contains("evil\\x1b")),
        "{warnings:?}"
    );
    assert!(warnings.iter().all(|w| !w.contains('\x1b')), "escaped: {warnings:?}");
    assert!(warnings.contains(&"DNS server (option 6): more than 8 addresses, the rest ignored"), "{warnings:?}");
    let Some(Action::Bound(lease)) = actions.last() else { panic!("{actions:?}") };
    assert_eq!((lease.lease_seconds, lease.t1, lease.t2), (10, 5, 8));
    assert_eq!(lease.mtu, None);
    assert_eq!(lease.hostname, None);
    assert_eq!(lease.dns.len(), 8);
}

#[test]
fn classless_routes_replace_routers_and_are_bounded() {
    let (t0, wall) = (Instant::now(), SystemTime::now());
    let net = |s: &str| s.parse::<ipnet::Ipv4Net>().unwrap();
    let ack_with = |routes: Vec<(ipnet::Ipv4Net, Ipv4Addr)>| {
        let mut m = machine();
        let (discover, _) = sent(&m.start(None, t0, wall));
        let (request, _) = sent(&m.on_packet(&bytes(&reply(&discover, MessageType::Offer)), t0, wall).unwrap());
        let mut ack = reply(&request, MessageType::Ack);
        ack.opts_mut().insert(DhcpOption::ClasslessStaticRoute(routes));
        let actions = m.on_packet(&bytes(&ack), t0, wall).unwrap();
        let Some(Action::Bound(lease)) = actions.last() else { panic!("{actions:?}") };
        ((**lease).clone(), actions)
    };
    let (lease, _) = ack_with(vec![
        (net("0.0.0.0/0"), Ipv4Addr::new(10, 0, 0, 254)),
        (net("192.168.7.0/24"), Ipv4Addr::UNSPECIFIED),
        (net("172.16.0.0/12"), Ipv4Addr::new(224, 0, 0, 1)),
    ]);
    assert_eq!(lease.routers, Vec::<Ipv4Addr>::new(), "option 3 is ignored when 121 is present (RFC 3442)");
    assert_eq!(
        lease.routes,
        vec![
            DhcpRoute { destination: "0.0.0.0/0".parse().unwrap(), gateway: Some(Ipv4Addr::new(10, 0, 0, 254)) },
            DhcpRoute { destination: "192.168.7.0/24".parse().unwrap(), gateway: None },
        ]
    );
    let many = (0..=MAX_ROUTES as u32)
        .map(|i| (ipnet::Ipv4Net::new(Ipv4Addr::from(0x0a00_0000 + (i << 8)), 24).unwrap(), SERVER))
        .collect();
    let (lease, actions) = ack_with(many);
    assert!(lease.routes.is_empty());
    assert_eq!(lease.routers, vec![SERVER], "with option 121 ignored, option 3 applies");
    assert!(actions.contains(&Action::Warn(
        "classless static routes (option 121): 65 routes, more than 64: option ignored".into()
    )));
}

#[test]
fn retransmissions_back_off_and_requesting_gives_up() {
    let (t0, wall) = (Instant::now(), SystemTime::now());
    let mut m = machine();
    let (discover, _) = sent(&m.start(None, t0, wall));
    // First retry after 1 to 1.25 s, then about 4 s, 8 s, 16 s ±1 s, capped at 64 s ±1 s.
    let mut at = t0;
    let mut gaps = Vec::new();
    for _ in 0..8 {
        let next = m.next_wakeup();
        gaps.push(next - at);
        assert!(m.on_timer(next - Duration::from_millis(1)).is_empty());
        let (again, _) = sent(&m.on_timer(next));
        assert_eq!(again.xid(), discover.xid());
        at = next;
    }
    assert!(gaps[0] >= secs(1) && gaps[0] <= Duration::from_millis(1250), "{gaps:?}");
    for (gap, base) in gaps[1..].iter().zip([4, 8, 16, 32, 64, 64, 64]) {
        assert!(*gap >= secs(base - 1) && *gap <= secs(base + 1), "{gaps:?}");
    }
    // REQUESTING: four requests, then back to INIT.
    let (request, _) = sent(&m.on_packet(&bytes(&reply(&discover, MessageType::Offer)), at, wall).unwrap());
    assert_eq!(kind(&request), MessageType::Request);
    for _ in 0..3 {
        let (again, _) = sent(&m.on_timer(m.next_wakeup()));
        assert_eq!(kind(&again), MessageType::Request);
    }
    let actions = m.on_timer(m.next_wakeup());
    assert_eq!(kind(&sent(&actions).0), MessageType::Discover);
    assert_eq!(m.state(), DhcpState::Selecting);
}

#[test]
fn init_reboot_requests_the_kept_lease_and_falls_back_to_init() {
    let (t0, wall) = (Instant::now(), SystemTime::now());
    let (_, kept) = bound(t0, wall);
    // Restart 30 s later: REQUEST with the kept address, no server id, broadcast.
    let mut m = machine();
    let (request, to) = sent(&m.start(Some(kept.clone()), t0, wall + secs(30)));
    assert_eq!(m.state(), DhcpState::Rebooting);
    assert_eq!((kind(&request), to), (MessageType::Request, Destination::Broadcast));
    assert_eq!(opt(&request, OptionCode::RequestedIpAddress), Some(&DhcpOption::RequestedIpAddress(kept.ip())));
    assert!(opt(&request, OptionCode::ServerIdentifier).is_none());
    assert_eq!(request.ciaddr(), Ipv4Addr::UNSPECIFIED);
    let actions = m.on_packet(&bytes(&reply(&request, MessageType::Ack)), t0, wall + secs(30)).unwrap();
    assert!(matches!(actions.last(), Some(Action::Bound(_))), "{actions:?}");

    // No answer: two tries, then INIT.
    let mut m = machine();
    sent(&m.start(Some(kept.clone()), t0, wall));
    sent(&m.on_timer(m.next_wakeup()));
    let actions = m.on_timer(m.next_wakeup());
    assert_eq!(kind(&sent(&actions).0), MessageType::Discover);
    assert!(m.next_wakeup() - t0 <= secs(8));

    // NAK: INIT at once.
    let mut m = machine();
    let (request, _) = sent(&m.start(Some(kept.clone()), t0, wall));
    let (discover, _) = sent(&m.on_packet(&bytes(&reply(&request, MessageType::Nak)), t0, wall).unwrap());
    assert_eq!(kind(&discover), MessageType::Discover);

    // Expired, or another MAC: straight to DISCOVER (the latter with a warning).
    let mut m = machine();
    assert_eq!(kind(&sent(&m.start(Some(kept.clone()), t0, wall + secs(121))).0), MessageType::Discover);
    let mut other = kept.clone();
    other.hardware_address = "02:00:00:00:00:99".into();
    let mut m = machine();
    let actions = m.start(Some(other), t0, wall);
    assert!(matches!(&actions[0], Action::Warn(w) if w.contains("MAC 02:00:00:00:00:99")), "{actions:?}");
    assert_eq!(kind(&sent(&actions).0), MessageType::Discover);
}

#[test]
fn release_goes_unicast_to_the_server_and_drops_the_lease() {
    let (t0, wall) = (Instant::now(), SystemTime::now());
    let mut m = machine();
    assert!(m.release(t0).is_empty(), "nothing to release before a lease");
    let (mut m, lease) = bound(t0, wall);
    let actions = m.release(t0 + secs(5));
    let (release, to) = sent(&actions);
    assert_eq!((kind(&release), to), (MessageType::Release, Destination::Server(SERVER)));
    assert_eq!(release.ciaddr(), lease.ip());
    assert_eq!(opt(&release, OptionCode::ServerIdentifier), Some(&DhcpOption::ServerIdentifier(SERVER)));
    assert_eq!(actions.last(), Some(&Action::Lost { reason: "released".into() }));
    assert_eq!(m.state(), DhcpState::Released);
    // Late replies are not acted on.
    assert!(matches!(
        m.on_packet(&bytes(&reply(&release, MessageType::Ack)), t0, wall),
        Err(Rejected::NotWaiting { .. })
    ));
}

#[test]
fn a_refused_send_is_retried_soon_and_not_counted() {
    let (t0, wall) = (Instant::now(), SystemTime::now());
    let (_, kept) = bound(t0, wall);
    let mut m = machine();
    sent(&m.start(Some(kept), t0, wall));
    // The link is down: every send fails; the client keeps trying every 250 ms, in INIT-REBOOT.
    let mut at = t0;
    for _ in 0..20 {
        m.send_failed(at);
        assert_eq!(m.next_wakeup(), at + SEND_FAILED_RETRY);
        at = m.next_wakeup();
        let (again, _) = sent(&m.on_timer(at));
        assert_eq!(kind(&again), MessageType::Request);
        assert_eq!(m.state(), DhcpState::Rebooting, "a down link does not use up the tries");
    }
    // Once sends go out, the normal schedule resumes.
    assert!(m.next_wakeup() - at >= secs(1));
    // Nothing to retry while bound.
    let (mut m, _) = bound(t0, wall);
    m.send_failed(t0);
    assert_eq!(m.next_wakeup(), t0 + secs(60));
}

mod hostile {
    use super::*;
    use proptest::prelude::*;

    /// A valid ACK for `m`'s current REQUEST, as bytes.
    fn requesting() -> (Machine, Vec<u8>) {
        let (t0, wall) = (Instant::now(), SystemTime::now());
        let mut m = machine();
        let (discover, _) = sent(&m.start(None, t0, wall));
        let (request, _) = sent(&m.on_packet(&bytes(&reply(&discover, MessageType::Offer)), t0, wall).unwrap());
        let mut ack = reply(&request, MessageType::Ack);
        let o = ack.opts_mut();
        o.insert(DhcpOption::ClasslessStaticRoute(vec![("10.9.0.0/16".parse().unwrap(), SERVER)]));
        o.insert(DhcpOption::Hostname("node".into()));
        (m, bytes(&ack))
    }

    /// What any bound lease must satisfy, whatever the server sent.
    fn check(actions: &[Action]) {
        for action in actions {
            match action {
                Action::Bound(lease) => {
                    assert!(is_unicast(lease.ip()), "{lease:?}");
                    assert!(is_unicast(lease.server), "{lease:?}");
                    assert!(
                        lease.lease_seconds >= 10
                            && 0 < lease.t1
                            && lease.t1 < lease.t2
                            && lease.t2 < lease.lease_seconds
                    );
                    assert!(lease.dns.len() <= 8 && lease.ntp.len() <= 8 && lease.routers.len() <= 8);
                    assert!(lease.routes.len() <= 64 && lease.search.len() <= 16);
                    assert!(lease.mtu.is_none_or(|m| m >= 576));
                    for name in lease.hostname.iter().chain(lease.domain.iter()).chain(lease.search.iter()) {
                        assert!(crate::network::dhcp::lease::is_dns_name(name), "{name:?}");
                    }
                }
                Action::Warn(text) => assert!(!text.chars().any(|c| c.is_control()), "unescaped: {text:?}"),
                _ => {}
            }
        }
    }

    /// `ack` with raw option `code` = `data` appended before the end.
    fn with_raw(ack: &[u8], code: u8, data: &[u8]) -> Vec<u8> {
        let mut out = ack[..ack.len() - 1].to_vec();
        out.push(code);
        out.push(data.len() as u8);
        out.extend_from_slice(data);
        out.push(255);
        out
    }

    #[test]
    fn crafted_search_lists_and_routes_are_harmless() {
        let cases: [(u8, &[u8]); 6] = [
            (119, &[0xc0, 0x00]),
            (119, &[0xc0, 0x02, 0xc0, 0x00]),
            (119, &[63, b'a', 0xc0, 0x00]),
            (121, &[33, 10, 0, 0, 0, 0, 10, 0, 0, 1]),
            (121, &[24, 10, 0]),
            (121, &[0]),
        ];
        for (code, data) in cases {
            let (mut m, ack) = requesting();
            if let Ok(actions) = m.on_packet(&with_raw(&ack, code, data), Instant::now(), SystemTime::now()) {
                check(&actions);
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn random_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..1600)) {
            let (mut m, _) = requesting();
            if let Ok(actions) = m.on_packet(&data, Instant::now(), SystemTime::now()) {
                check(&actions);
            }
        }

        #[test]
        fn a_mangled_ack_never_panics_nor_binds_garbage(
            edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..16),
            cut in any::<prop::sample::Index>(),
        ) {
            let (mut m, mut ack) = requesting();
            // Keep the header's xid and chaddr so the mangled options are what gets checked.
            for (at, byte) in edits {
                let i = 240 + at.index(ack.len() - 240);
                ack[i] = byte;
            }
            let end = 240 + cut.index(ack.len() - 240 + 1);
            if let Ok(actions) = m.on_packet(&ack[..end.min(ack.len())], Instant::now(), SystemTime::now()) {
                check(&actions);
            }
        }
    }
}
