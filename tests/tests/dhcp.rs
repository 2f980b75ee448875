//! bronzed's DHCPv4 client against a real dnsmasq, across a veth pair
//! between two network namespaces the tests make (nothing else is
//! reachable from them). The client runs in-process on a thread inside the
//! client namespace; what the server saw is read from dnsmasq's own log.
//!
//! dnsmasq's shortest lease is two minutes; T1 and T2 are set shorter
//! with its `option:T1` / `option:T2` so renew and rebind take seconds.
//! Only the expiry test waits the full two minutes (the tests run in
//! parallel, so the file takes a little over two minutes).
//!
//! Run: `cargo test -p bronze-tests --test dhcp` (as root; otherwise each
//! test says why it is skipped).

use bronze_host::network::dhcp::{
    self, DhcpLeaseSpec, DhcpManager, DhcpOptions, DhcpRoute, DhcpState, LeaseStore, MemoryStore, StateDirStore,
};
use bronze_host::statedir::StateDir;
use bronze_tests::dnsmasq::{self, CLIENT_LINK, Client, Dnsmasq, Pair, SERVER_ADDR, ServerConfig};
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn skip() -> bool {
    match dnsmasq::unavailable() {
        Some(why) => {
            eprintln!("skipped because {why}");
            true
        }
        None => false,
    }
}

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

fn in_pool(lease: &dhcp::Lease) -> bool {
    let last = lease.ip().octets()[3];
    lease.ip().octets()[..3] == [10, 77, 0] && (50..=99).contains(&last)
}

#[test]
fn a_lease_is_bound_on_a_link_without_an_address_with_every_option() {
    if skip() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let pair = Pair::new().unwrap();
    assert!(!pair.client_addresses().contains("10.77."), "the client link starts without an address");
    let config = ServerConfig {
        options: vec![
            "option:dns-server,10.77.0.53,10.77.0.54".into(),
            "option:ntp-server,10.77.0.123".into(),
            "option:domain-name,example.test".into(),
            "option:domain-search,a.example.test,b.example.test".into(),
            "option:mtu,1400".into(),
            "option:classless-static-route,10.99.0.0/16,10.77.0.254,192.168.50.0/24,0.0.0.0,0.0.0.0/0,10.77.0.1".into(),
        ],
        ..Default::default()
    };
    let server = Dnsmasq::start(&pair.server, tmp.path(), &config).unwrap();
    let store = Arc::new(MemoryStore::default());
    let started = Instant::now();
    let client = Client::start(
        &pair.client,
        DhcpOptions { hostname_to_send: Some("node-7".into()), ..Default::default() },
        store.clone(),
    );
    let lease = client.wait(Duration::from_secs(15), Option::is_some).expect("bound within 15 s").unwrap();
    let elapsed = started.elapsed();
    assert_eq!(client.state(), DhcpState::Bound);
    assert!(in_pool(&lease), "{lease:?}");
    assert_eq!(lease.address.prefix_len(), 24);
    assert_eq!(lease.link, CLIENT_LINK);
    assert_eq!(lease.server, ip(SERVER_ADDR));
    assert_eq!(lease.dns, vec![ip("10.77.0.53"), ip("10.77.0.54")]);
    assert_eq!(lease.ntp, vec![ip("10.77.0.123")]);
    assert_eq!(lease.domain.as_deref(), Some("example.test"));
    assert_eq!(lease.search, vec!["a.example.test".to_string(), "b.example.test".to_string()]);
    assert_eq!(lease.mtu, Some(1400));
    assert_eq!(
        lease.routes,
        vec![
            DhcpRoute { destination: "10.99.0.0/16".parse().unwrap(), gateway: Some(ip("10.77.0.254")) },
            DhcpRoute { destination: "192.168.50.0/24".parse().unwrap(), gateway: None },
            DhcpRoute { destination: "0.0.0.0/0".parse().unwrap(), gateway: Some(ip("10.77.0.1")) },
        ]
    );
    assert!(lease.routers.is_empty(), "option 3 is ignored when option 121 is present: {:?}", lease.routers);
    assert_eq!(lease.lease_seconds, 120);
    assert_eq!((lease.t1, lease.t2), (60, 105));
    assert_eq!(store.load(CLIENT_LINK).unwrap(), Some(lease.clone()), "the lease is kept for INIT-REBOOT");
    assert_eq!(server.messages(), ["DHCPDISCOVER", "DHCPOFFER", "DHCPREQUEST", "DHCPACK"]);
    assert!(server.log().contains("node-7"), "the hostname reached the server: {}", server.log());
    // The client configures nothing itself.
    assert!(!pair.client_addresses().contains("10.77."), "{}", pair.client_addresses());
    eprintln!("bound {} in {elapsed:?}", lease.address);
    assert!(elapsed < Duration::from_secs(3), "a local server binds in well under 3 s, took {elapsed:?}");
}

#[test]
fn renews_at_t1_and_rebinds_at_t2_when_the_server_moves() {
    if skip() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let pair = Pair::new().unwrap();
    let config = ServerConfig { options: vec!["option:T1,8".into(), "option:T2,16".into()], ..Default::default() };
    let mut first = Dnsmasq::start(&pair.server, tmp.path(), &config).unwrap();
    let client = Client::start(&pair.client, DhcpOptions::default(), Arc::new(MemoryStore::default()));
    let lease = client.wait(Duration::from_secs(15), Option::is_some).unwrap().unwrap();
    assert_eq!((lease.t1, lease.t2, lease.lease_seconds), (8, 16, 120));
    pair.install(&lease).unwrap();
    let bound_at = Instant::now();

    // T1: a unicast REQUEST to the server, answered with an ACK; the lease is extended.
    let renewed = client
        .wait(Duration::from_secs(15), |l| l.as_ref().is_some_and(|l| l.acquired > lease.acquired))
        .expect("renewed")
        .unwrap();
    let waited = bound_at.elapsed();
    assert!(waited >= Duration::from_secs(7), "renewed at T1 (8 s), not before: {waited:?}");
    assert_eq!(renewed.address, lease.address);
    assert_eq!(first.messages(), ["DHCPDISCOVER", "DHCPOFFER", "DHCPREQUEST", "DHCPACK", "DHCPREQUEST", "DHCPACK"]);

    // The server is replaced by one on another address (same lease database).
    first.stop();
    pair.move_server(SERVER_ADDR, "10.77.0.2").unwrap();
    let second = Dnsmasq::start(&pair.server, tmp.path(), &config).unwrap();
    let moved = Instant::now();
    // T1 again: the unicast to 10.77.0.1 goes unanswered; T2: the broadcast reaches the new server.
    let rebound = client
        .wait(Duration::from_secs(30), |l| l.as_ref().is_some_and(|l| l.server == ip("10.77.0.2")))
        .expect("rebound to the new server")
        .unwrap();
    assert!(moved.elapsed() >= Duration::from_secs(5), "only at T2: {:?}", moved.elapsed());
    assert_eq!(rebound.address, lease.address);
    assert_eq!(client.state(), DhcpState::Bound);
    assert_eq!(second.messages(), ["DHCPREQUEST", "DHCPACK"], "a REBINDING request, not a new DISCOVER");
}

#[test]
fn a_link_that_comes_up_late_is_served_at_once() {
    if skip() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let pair = Pair::new().unwrap();
    let server = Dnsmasq::start(&pair.server, tmp.path(), &ServerConfig::default()).unwrap();
    pair.client_link_up(false).unwrap();
    let client = Client::start(&pair.client, DhcpOptions::default(), Arc::new(MemoryStore::default()));
    // Sends fail while the link is down (ENETDOWN); nothing is bound.
    assert!(client.wait(Duration::from_secs(3), Option::is_some).is_none());
    assert!(server.messages().is_empty(), "nothing crossed a down link: {:?}", server.messages());
    let up = Instant::now();
    pair.client_link_up(true).unwrap();
    client.wait(Duration::from_secs(5), Option::is_some).expect("bound after link up");
    let took = up.elapsed();
    // Not the 4 s or 8 s of the backoff: a refused send is retried every 250 ms.
    assert!(took < Duration::from_secs(1), "bound {took:?} after link up");
    eprintln!("bound {took:?} after link up");
}

#[test]
fn the_lease_expires_when_the_server_is_gone() {
    if skip() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let pair = Pair::new().unwrap();
    let mut server = Dnsmasq::start(&pair.server, tmp.path(), &ServerConfig::default()).unwrap();
    let store = Arc::new(MemoryStore::default());
    let client = Client::start(&pair.client, DhcpOptions::default(), store.clone());
    let lease = client.wait(Duration::from_secs(15), Option::is_some).unwrap().unwrap();
    let bound_at = Instant::now();
    pair.install(&lease).unwrap();
    server.stop();
    // Held through RENEWING and REBINDING, dropped at expiry (120 s).
    assert!(client.wait(Duration::from_secs(110), |l| l.is_none()).is_none(), "dropped before expiry");
    assert_eq!(client.state(), DhcpState::Rebinding);
    client.wait(Duration::from_secs(20), |l| l.is_none()).expect("dropped at expiry");
    let held = bound_at.elapsed();
    assert!(held >= Duration::from_secs(118) && held <= Duration::from_secs(128), "held {held:?}");
    assert_eq!(client.state(), DhcpState::Selecting, "back to INIT, looking for a server");
    assert_eq!(store.load(CLIENT_LINK).unwrap(), None, "the expired lease is forgotten");
}

#[test]
fn init_reboot_after_a_restart_requests_the_kept_lease() {
    if skip() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let pair = Pair::new().unwrap();
    let server = Dnsmasq::start(&pair.server, tmp.path(), &ServerConfig::default()).unwrap();
    let store: Arc<dyn LeaseStore> = Arc::new(StateDirStore::new(Arc::new(StateDir::open(state.path()).unwrap())));
    let client = Client::start(&pair.client, DhcpOptions::default(), store.clone());
    let first = client.wait(Duration::from_secs(15), Option::is_some).unwrap().unwrap();
    client.stop();
    assert!(state.path().join("dhcp-dhcp0.json").exists());
    let before = server.messages().len();

    let started = Instant::now();
    let client = Client::start(&pair.client, DhcpOptions::default(), store.clone());
    let second = client.wait(Duration::from_secs(15), Option::is_some).unwrap().unwrap();
    let elapsed = started.elapsed();
    assert_eq!(second.address, first.address);
    assert_eq!(server.messages()[before..], ["DHCPREQUEST", "DHCPACK"], "no DISCOVER: {}", server.log());
    eprintln!("INIT-REBOOT bound in {elapsed:?}");

    // A kept lease for another MAC is not requested: a fresh DISCOVER.
    client.stop();
    let mut foreign = second.clone();
    foreign.hardware_address = "02:00:00:00:00:99".into();
    store.save(&foreign).unwrap();
    let before = server.messages().len();
    let client = Client::start(&pair.client, DhcpOptions::default(), store.clone());
    client.wait(Duration::from_secs(15), Option::is_some).unwrap().unwrap();
    assert_eq!(server.messages()[before..], ["DHCPDISCOVER", "DHCPOFFER", "DHCPREQUEST", "DHCPACK"]);
}

#[test]
fn the_manager_publishes_the_resource_and_releases_on_shutdown() {
    if skip() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let pair = Pair::new().unwrap();
    let server = Dnsmasq::start(&pair.server, tmp.path(), &ServerConfig::default()).unwrap();
    let path = std::path::PathBuf::from("/run/netns").join(pair.client.name());
    let client_ns = pair.client.name().to_string();
    let store = bronze_host::state::Store::new();
    let resources = store.clone();
    let outcome = std::thread::spawn(move || {
        dnsmasq::enter(&path).unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async move {
            let mut manager = DhcpManager::new(Arc::new(MemoryStore::default()), Some(store.writer().unwrap()));
            let mut leases = manager.leases();
            let options = DhcpOptions { release_on_stop: true, ..Default::default() };
            manager.set_links(vec![(CLIENT_LINK.to_string(), options)]).await;
            let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
            while !leases.borrow().contains_key(CLIENT_LINK) {
                tokio::time::timeout_at(deadline, leases.changed()).await.expect("bound").unwrap();
            }
            let lease = leases.borrow()[CLIENT_LINK].clone();
            // The applier's part: configure the address (the release is sent from it).
            let cidr = lease.address.to_string();
            let ok = std::process::Command::new("ip")
                .args(["-n", &client_ns, "addr", "add", &cidr, "dev", CLIENT_LINK])
                .status()
                .unwrap()
                .success();
            assert!(ok);
            tokio::time::sleep(Duration::from_millis(50)).await;
            let (_, spec) = store.get_typed::<DhcpLeaseSpec>(CLIENT_LINK).expect("the resource is published");
            manager.shutdown().await;
            assert!(leases.borrow().is_empty(), "released: no lease left");
            (lease, spec)
        })
    })
    .join();
    let (lease, spec) = outcome.unwrap();
    assert_eq!(spec.state, DhcpState::Bound);
    assert_eq!(spec.address, lease.address.to_string());
    assert_eq!(spec.server, SERVER_ADDR);
    assert_eq!(spec.lease.as_ref(), Some(&lease));
    assert!(spec.expires_at.ends_with('Z') && spec.expires_at > spec.acquired, "{spec:?}");
    assert!(server.wait_log("DHCPRELEASE", Duration::from_secs(5)), "release reached the server: {}", server.log());
    assert!(resources.get_typed::<DhcpLeaseSpec>(CLIENT_LINK).is_none(), "the resource is removed with the runner");
}
