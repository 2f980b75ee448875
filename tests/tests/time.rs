//! Time sync against real NTP servers on loopback: chrony (real time, and
//! real time + X through two chained chronyds) and a fault-injecting
//! responder. Only 127.0.0.1 is ever contacted.

use bronze_api::v1 as pb;
use bronze_host::time::exchange::{ExchangeError, exchange};
use bronze_tests::ntp::{ChronyServer, Fault, FaultyServer, require_chrony};
use bronze_tests::{Node, NodeOptions, Pki, free_udp_port};
use bronzectl::client::NodeClient;
use serde_json::Value;
use std::time::{Duration, Instant};

/// A `machine.time` section with fast polls for tests.
fn time_yaml(servers: &[String], extra: &str) -> String {
    let list = servers.iter().map(|s| format!("\"{s}\"")).collect::<Vec<_>>().join(", ");
    format!("servers: [{list}]\n    minPoll: 1s\n    maxPoll: 2s\n{extra}")
}

async fn time_status(c: &mut NodeClient) -> pb::TimeResponse {
    let mut t = bronze_api::v1::time_service_client::TimeServiceClient::new(c.channel.clone());
    t.time(pb::TimeRequest {}).await.unwrap().into_inner()
}

async fn server_status(c: &mut NodeClient, server: &str) -> Value {
    let r = c
        .resources
        .get(pb::GetRequest { namespace: String::new(), r#type: "timeserverstatus".into(), id: server.into() })
        .await
        .unwrap()
        .into_inner();
    serde_json::from_str(&r.resource.unwrap().spec_json).unwrap()
}

/// Polls `TimeService.Time` until `ok` holds, or panics after `within`.
async fn wait_for(
    c: &mut NodeClient,
    within: Duration,
    what: &str,
    ok: impl Fn(&pb::TimeResponse) -> bool,
) -> pb::TimeResponse {
    let deadline = Instant::now() + within;
    loop {
        let t = time_status(c).await;
        if ok(&t) {
            return t;
        }
        assert!(Instant::now() < deadline, "{what} not reached within {within:?}: {t:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn node_with_time(pki: &Pki, time: &str) -> (Node, NodeClient) {
    let node = Node::start_configured(&pki.node_config_with_time("t", time)).await;
    let client = node.client(&pki.auth(&["os:admin"])).await;
    (node, client)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offsets_match_chrony_serving_known_time() {
    require_chrony();
    let pki = Pki::new();
    for (x, decision) in [(0.0, "slew"), (3.5, "step"), (-0.25, "slew")] {
        let chrony = ChronyServer::start(x).await;
        let (_node, mut c) = node_with_time(&pki, &time_yaml(&[chrony.addr().to_string()], "")).await;
        let t = wait_for(&mut c, Duration::from_secs(15), "sync", |t| t.synced && !t.last_sync.is_empty()).await;
        assert!(!t.synced_by_timeout);
        // The offsets the node reports over several polls (1 s apart); their
        // median is what it reports, free of a single scheduling hiccup on a
        // loaded machine.
        let mut reported = vec![];
        let mut last_sync = String::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        while reported.len() < 5 {
            let t = time_status(&mut c).await;
            if t.last_sync != last_sync {
                last_sync = t.last_sync.clone();
                reported.push(t.offset_seconds);
            }
            assert!(Instant::now() < deadline, "X={x}: only {} samples reported", reported.len());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        reported.sort_by(|a, b| a.total_cmp(b));
        let median = reported[reported.len() / 2];
        assert!((median - x).abs() < 50e-6, "X={x}: reported offsets {reported:?} are not within 50 µs");
        let t = time_status(&mut c).await;
        assert_eq!(t.last_decision, decision, "X={x}");
        assert_eq!(t.mode, "observe-only");
        assert_eq!(t.address, chrony.addr().to_string());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn boot_without_reachable_server_then_config_syncs_within_a_second() {
    require_chrony();
    let pki = Pki::new();
    let closed = format!("127.0.0.1:{}", free_udp_port());
    let started = Instant::now();
    let node =
        Node::start_with(NodeOptions { args: vec!["--time-servers".into(), closed.clone()], ..Default::default() })
            .await;
    let api_up = started.elapsed();
    assert!(api_up < Duration::from_secs(5), "API must not wait for time sync ({api_up:?})");
    let chrony = ChronyServer::start(0.0).await;
    // Maintenance mode: apply a config naming the chrony server.
    node.apply_maintenance(&pki.node_config_with_time("boot", &time_yaml(&[chrony.addr().to_string()], ""))).await;
    let applied = Instant::now();
    let mut c = node.client(&pki.auth(&["os:admin"])).await;
    let t = wait_for(&mut c, Duration::from_secs(5), "sync", |t| t.synced).await;
    let after = applied.elapsed();
    assert!(after < Duration::from_secs(1), "first sync {after:?} after the apply");
    assert_eq!(t.address, chrony.addr().to_string());
    assert!(!t.synced_by_timeout);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_boot_server_is_reported_not_synced() {
    let pki = Pki::new();
    let closed = format!("127.0.0.1:{}", free_udp_port());
    let node = Node::start_with(NodeOptions {
        config: Some(pki.node_config("x")),
        args: vec!["--time-servers".into(), closed.clone()],
        ..Default::default()
    })
    .await;
    let mut c = node.client(&pki.auth(&["os:reader"])).await;
    let t = wait_for(&mut c, Duration::from_secs(5), "an error", |t| !t.last_error.is_empty()).await;
    assert!(t.enabled && !t.synced, "{t:?}");
    assert!(t.last_error.contains(&closed), "{t:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn process_mode_without_servers_is_disabled_and_silent() {
    let pki = Pki::new();
    let node = Node::start_configured(&pki.node_config("quiet")).await;
    let mut c = node.client(&pki.auth(&["os:reader"])).await;
    let t = wait_for(&mut c, Duration::from_secs(5), "status", |t| !t.mode.is_empty()).await;
    assert!(!t.enabled && !t.synced, "{t:?}");
    assert!(t.last_error.contains("disabled"), "{t:?}");

    // No NTP packet at all: run a node with no servers in a network
    // namespace of its own and read that namespace's counters.
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("skipped the packet count because it needs root for a network namespace");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let script = format!(
        "ip link set lo up && exec {} --mode process --listen 127.0.0.1:50000 --state-dir {}",
        bronze_tests::bin("bronzed").display(),
        dir.path().join("state").display()
    );
    let mut child = std::process::Command::new("unshare")
        .args(["--net", "--", "sh", "-c", &script])
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("unshare");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let snmp = std::fs::read_to_string(format!("/proc/{}/net/snmp", child.id())).unwrap();
    let _ = child.kill();
    let _ = child.wait();
    let counter = |proto: &str, name: &str| -> u64 {
        let mut lines = snmp.lines().filter(|l| l.starts_with(&format!("{proto}:")));
        let (head, values) = (lines.next().unwrap(), lines.next().unwrap());
        let i = head.split_whitespace().position(|h| h == name).unwrap();
        values.split_whitespace().nth(i).unwrap().parse().unwrap()
    };
    assert_eq!(counter("Udp", "OutDatagrams"), 0, "UDP datagrams sent:\n{snmp}");
    assert_eq!(counter("Ip", "OutNoRoutes"), 0, "packets tried to leave the namespace:\n{snmp}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_and_boot_timeout() {
    let pki = Pki::new();
    // First server silent, second good: synced from the second.
    let silent = FaultyServer::start(Fault::Silence).await;
    let good = FaultyServer::start(Fault::Good { offset: 0.02 }).await;
    let servers = [silent.addr().to_string(), good.addr().to_string()];
    let (_node, mut c) = node_with_time(&pki, &time_yaml(&servers, "")).await;
    let t = wait_for(&mut c, Duration::from_secs(10), "sync from the second", |t| t.synced).await;
    assert_eq!(t.address, good.addr().to_string());
    assert!(offset_near(t.offset_seconds, 0.02, t.rtt_seconds), "{t:?}");
    let first = server_status(&mut c, &servers[0]).await;
    assert!(first["lastError"].as_str().unwrap().contains("no valid reply"), "{first}");

    // The good server stops answering mid-run: failover back, error recorded.
    let a = FaultyServer::start(Fault::Good { offset: 0.01 }).await;
    let b = FaultyServer::start(Fault::Good { offset: 0.01 }).await;
    let servers = [a.addr().to_string(), b.addr().to_string()];
    let (_node, mut c) = node_with_time(&pki, &time_yaml(&servers, "")).await;
    wait_for(&mut c, Duration::from_secs(10), "sync from a", |t| t.synced && t.address == servers[0]).await;
    a.set_fault(Fault::Silence);
    wait_for(&mut c, Duration::from_secs(15), "failover to b", |t| t.address == servers[1]).await;
    let status_a = server_status(&mut c, &servers[0]).await;
    assert!(status_a["lastError"].as_str().unwrap().contains("no valid reply"), "{status_a}");
    assert!(b.requests() > 0);

    // bootTimeout expiry with only a silent server.
    let (_node, mut c) = node_with_time(&pki, &time_yaml(&[silent.addr().to_string()], "    bootTimeout: 1s\n")).await;
    let t = wait_for(&mut c, Duration::from_secs(5), "synced by timeout", |t| t.synced).await;
    assert!(t.synced_by_timeout, "{t:?}");
}

/// What a test expects of one exchange's outcome.
type Expect = dyn Fn(&Result<bronze_host::time::exchange::Measurement, ExchangeError>) -> bool;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_replies_one_exchange_each() {
    let timeout = Duration::from_millis(700);
    let cases: Vec<(Fault, Box<Expect>)> = vec![
        (Fault::Kod(*b"RATE"), Box::new(|r| matches!(r, Err(ExchangeError::KissOfDeath(c)) if c == "RATE"))),
        (Fault::Kod(*b"DENY"), Box::new(|r| matches!(r, Err(ExchangeError::KissOfDeath(c)) if c == "DENY"))),
        (Fault::Kod(*b"RSTR"), Box::new(|r| matches!(r, Err(ExchangeError::KissOfDeath(c)) if c == "RSTR"))),
        (
            Fault::ZeroTransmit,
            Box::new(|r| matches!(r, Err(ExchangeError::Rejected(m)) if m.contains("zero transmit"))),
        ),
        (Fault::WrongOrigin, Box::new(|r| matches!(r, Err(ExchangeError::Timeout { strays: 1.., .. })))),
        (
            Fault::ForgedThenGenuine { offset: 0.1 },
            Box::new(|r| matches!(r, Ok(m) if offset_near(m.sample.offset, 0.1, m.sample.rtt) && m.strays == 1)),
        ),
        (Fault::Stratum(0), Box::new(|r| matches!(r, Err(ExchangeError::KissOfDeath(_))))),
        (Fault::Stratum(16), Box::new(|r| matches!(r, Err(ExchangeError::Rejected(m)) if m.contains("stratum")))),
        (Fault::Leap3, Box::new(|r| matches!(r, Err(ExchangeError::Rejected(m)) if m.contains("LI=3")))),
        (Fault::Truncated(40), Box::new(|r| matches!(r, Err(ExchangeError::Timeout { strays: 1.., .. })))),
        (Fault::WrongSourcePort, Box::new(|r| matches!(r, Err(ExchangeError::Timeout { strays: 0, .. })))),
        (Fault::Silence, Box::new(|r| matches!(r, Err(ExchangeError::Timeout { strays: 0, .. })))),
        (
            Fault::ReceiveAfterTransmit,
            Box::new(|r| matches!(r, Err(ExchangeError::Rejected(m)) if m.contains("before its receive time"))),
        ),
        (
            Fault::DuplicateGood { offset: -0.05 },
            Box::new(|r| matches!(r, Ok(m) if offset_near(m.sample.offset, -0.05, m.sample.rtt))),
        ),
        (
            Fault::Good { offset: 1.5 },
            Box::new(|r| matches!(r, Ok(m) if offset_near(m.sample.offset, 1.5, m.sample.rtt) && m.sample.rtt >= 0.0)),
        ),
    ];
    for (fault, expected) in cases {
        let server = FaultyServer::start(fault).await;
        let result = exchange(server.addr(), timeout).await;
        assert!(expected(&result), "{fault:?}: unexpected outcome {result:?}");
        assert!(server.requests() >= 1, "{fault:?}: no request reached the server");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kiss_codes_and_absurd_offsets_through_the_controller() {
    let pki = Pki::new();
    // RATE: the poll interval at least doubles (min 1 s → ≥ 2 s).
    let rate = FaultyServer::start(Fault::Kod(*b"RATE")).await;
    let (_n1, mut c) = node_with_time(&pki, &time_yaml(&[rate.addr().to_string()], "")).await;
    let t = wait_for(&mut c, Duration::from_secs(5), "RATE seen", |t| t.last_error.contains("RATE")).await;
    assert!(!t.synced);
    let t = wait_for(&mut c, Duration::from_secs(5), "poll doubled", |t| t.poll_seconds >= 2.0).await;
    assert!(t.poll_seconds >= 2.0, "{t:?}");
    assert_eq!(server_status(&mut c, &rate.addr().to_string()).await["kissCode"], "RATE");

    // DENY and RSTR: dropped and failed over to the next server.
    for code in [*b"DENY", *b"RSTR"] {
        let denying = FaultyServer::start(Fault::Kod(code)).await;
        let good = FaultyServer::start(Fault::Good { offset: 0.0 }).await;
        let servers = [denying.addr().to_string(), good.addr().to_string()];
        let (_n, mut c) = node_with_time(&pki, &time_yaml(&servers, "")).await;
        let t = wait_for(&mut c, Duration::from_secs(10), "failover", |t| t.synced && t.address == servers[1]).await;
        assert!(t.synced);
        let asked = denying.requests();
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert_eq!(
            denying.requests(),
            asked,
            "a server that said {} is not asked again",
            String::from_utf8_lossy(&code)
        );
    }

    // An absurd offset after the first sync, from one server only: refused.
    let server = FaultyServer::start(Fault::Good { offset: 0.0 }).await;
    let (_n3, mut c) = node_with_time(&pki, &time_yaml(&[server.addr().to_string()], "")).await;
    wait_for(&mut c, Duration::from_secs(5), "first sync", |t| t.synced).await;
    server.set_fault(Fault::Good { offset: 2000.0 });
    let t = wait_for(&mut c, Duration::from_secs(10), "refusal", |t| t.last_decision == "refused").await;
    assert!(t.last_error.contains("refused"), "{t:?}");
    assert_eq!(t.steps, 0, "{t:?}");
    // ... and raised as a machine event.
    let mut stream = c.machine.events(pb::EventsRequest { tail_events: 50, follow: false }).await.unwrap().into_inner();
    let mut refused = None;
    while let Some(e) = stream.message().await.unwrap() {
        if e.kind == "time" && e.message.contains("refused") {
            refused = Some(e);
        }
    }
    let refused = refused.expect("a time event for the refused step");
    assert_eq!(refused.severity, "warning");
    assert!(refused.audit.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn time_cli_and_check() {
    let pki = Pki::new();
    let good = FaultyServer::start(Fault::Good { offset: 0.25 }).await;
    let node =
        Node::start_configured(&pki.node_config_with_time("cli", &time_yaml(&[good.addr().to_string()], ""))).await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("bc");
    pki.write_bronzeconfig(&config, std::slice::from_ref(&node.addr), &["os:operator"]);
    let mut c = node.client(&pki.auth(&["os:admin"])).await;
    wait_for(&mut c, Duration::from_secs(5), "sync", |t| t.synced).await;

    let run = bronze_tests::bronzectl(Some(&config), &["-o", "json", "time"]).await;
    assert_eq!(run.code, 0, "{run:?}");
    let v: Value = serde_json::from_str(run.stdout.trim()).unwrap();
    assert_eq!(v["synced"], true);
    assert!(offset_near(v["offsetSeconds"].as_f64().unwrap(), 0.25, v["rttSeconds"].as_f64().unwrap()), "{v}");

    let other = FaultyServer::start(Fault::Good { offset: -1.0 }).await;
    let asked = good.requests();
    let run =
        bronze_tests::bronzectl(Some(&config), &["-o", "json", "time", "--check", &other.addr().to_string()]).await;
    assert_eq!(run.code, 0, "{run:?}");
    let v: Value = serde_json::from_str(run.stdout.trim()).unwrap();
    assert!(offset_near(v["offsetSeconds"].as_f64().unwrap(), -1.0, v["rttSeconds"].as_f64().unwrap()), "{v}");
    assert_eq!(other.requests(), 1, "one query");
    // The check changed nothing: the node still follows its own server.
    let t = time_status(&mut c).await;
    assert_eq!(t.address, good.addr().to_string());
    assert!(good.requests() >= asked);

    let run = bronze_tests::bronzectl(Some(&config), &["get", "timestatus"]).await;
    assert!(run.code == 0 && run.stdout.contains("TimeStatuses.bronze.dev"), "{run:?}");
    let reader = dir.path().join("reader");
    pki.write_bronzeconfig(&reader, std::slice::from_ref(&node.addr), &["os:reader"]);
    let run = bronze_tests::bronzectl(Some(&reader), &["time", "--check", &other.addr().to_string()]).await;
    assert!(run.stderr.contains("os:reader may not call TimeCheck"), "{run:?}");
}

/// Whether a measured offset is the server's `want`: within 5 ms, or within
/// half the round trip (and 1 ms) when that is longer. An NTP offset is only
/// known to ±rtt/2, since the request and the reply may take unequal
/// shares of the round trip, as they do on a loaded machine.
fn offset_near(measured: f64, want: f64, rtt: f64) -> bool {
    (measured - want).abs() <= 0.005f64.max(rtt / 2.0 + 0.001)
}

/// The node's machine events of kind "time", oldest first.
async fn time_events(c: &mut NodeClient) -> Vec<pb::Event> {
    let mut stream =
        c.machine.events(pb::EventsRequest { tail_events: 200, follow: false }).await.unwrap().into_inner();
    let mut events = vec![];
    while let Some(e) = stream.message().await.unwrap() {
        if e.kind == "time" {
            events.push(e);
        }
    }
    events
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_and_unknown_kiss_codes_fail_over_to_a_good_second_server() {
    let pki = Pki::new();
    for code in [*b"RATE", *b"XUNK"] {
        let kissing = FaultyServer::start(Fault::Kod(code)).await;
        let good = FaultyServer::start(Fault::Good { offset: 0.01 }).await;
        let servers = [kissing.addr().to_string(), good.addr().to_string()];
        let (_node, mut c) = node_with_time(&pki, &time_yaml(&servers, "")).await;
        let code = String::from_utf8_lossy(&code).into_owned();
        let t = wait_for(&mut c, Duration::from_secs(10), &format!("failover after {code}"), |t| {
            t.synced && t.address == servers[1]
        })
        .await;
        assert!(offset_near(t.offset_seconds, 0.01, t.rtt_seconds), "{code}: {t:?}");
        let first = server_status(&mut c, &servers[0]).await;
        assert_eq!(first["kissCode"], code.as_str(), "{first}");
        let error = first["lastError"].as_str().unwrap();
        assert!(error.contains(&format!("kiss-o'-death {code}")) && error.contains(&servers[0]), "{first}");
        assert!(error.contains(&format!("failing over to {} ({})", servers[1], servers[1])), "{first}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deny_and_rstr_hold_offs_hold_when_every_server_is_held_and_across_configs() {
    let pki = Pki::new();
    let deny = FaultyServer::start(Fault::Kod(*b"DENY")).await;
    let rstr = FaultyServer::start(Fault::Kod(*b"RSTR")).await;
    let servers = [deny.addr().to_string(), rstr.addr().to_string()];
    let (node, mut c) = node_with_time(&pki, &time_yaml(&servers, "")).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while deny.requests() == 0 || rstr.requests() == 0 {
        assert!(Instant::now() < deadline, "both servers asked: {deny:?} {rstr:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The error backoff (0.25 s, 0.5 s, ...) must not bring them back.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!((deny.requests(), rstr.requests()), (1, 1), "a held-off server was asked again");
    let t = time_status(&mut c).await;
    assert!(!t.synced, "{t:?}");
    assert!(
        t.last_error.contains(&format!("{} ({}) after kiss-o'-death DENY for another", servers[0], servers[0]))
            && t.last_error.contains("RSTR"),
        "{t:?}"
    );
    let status = server_status(&mut c, &servers[0]).await;
    assert!(!status["heldOffUntil"].as_str().unwrap().is_empty(), "{status}");

    // A new config (same servers, other poll bounds) keeps the hold-offs.
    let config = pki.node_config_with_time("t", &time_yaml(&servers, "").replace("maxPoll: 2s", "maxPoll: 4s"));
    c.machine
        .apply_configuration(pb::ApplyConfigurationRequest { data: config.into_bytes(), ..Default::default() })
        .await
        .expect("apply");
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!((deny.requests(), rstr.requests()), (1, 1), "a new config asked a held-off server again");

    // Not even a TimeCheck asks a held-off server.
    let mut time = pb::time_service_client::TimeServiceClient::new(c.channel.clone());
    let refused = time.time_check(pb::TimeCheckRequest { server: servers[0].clone() }).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition, "{refused:?}");
    assert!(refused.message().contains("held off") && refused.message().contains("DENY"), "{refused:?}");
    assert_eq!(deny.requests(), 1);
    drop(node);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_falseticker_is_outvoted_at_first_sync_and_one_server_alone_is_trusted() {
    const YEAR: f64 = 365.0 * 86_400.0;
    let pki = Pki::new();
    // A server a year ahead, then a good one: the first step needs a
    // majority, the good one disagrees, so the node syncs from the second.
    let ahead = FaultyServer::start(Fault::Good { offset: YEAR }).await;
    let good = FaultyServer::start(Fault::Good { offset: 0.02 }).await;
    let servers = [ahead.addr().to_string(), good.addr().to_string()];
    let (_n, mut c) = node_with_time(&pki, &time_yaml(&servers, "")).await;
    let t = wait_for(&mut c, Duration::from_secs(10), "sync from the good server", |t| t.synced).await;
    assert_eq!(t.address, servers[1], "{t:?}");
    assert_eq!((t.steps, t.epoch), (0, 0), "followed the falseticker: {t:?}");
    assert_eq!(t.last_decision, "slew");
    let events = time_events(&mut c).await;
    let refused = events.iter().find(|e| e.message.contains("falseticker")).expect("an event for the falseticker");
    assert_eq!(refused.severity, "warning");
    assert!(
        refused.message.starts_with(&format!("{} ({}): step of +31536000.", servers[0], servers[0]))
            && refused.message.contains(&format!("{} ({}) +0.0", servers[1], servers[1])),
        "{}",
        refused.message
    );
    assert!(server_status(&mut c, &servers[0]).await["lastError"].as_str().unwrap().contains("falseticker"));

    // The same server alone: trusted, stepped, and the event says so.
    let (_n, mut c) = node_with_time(&pki, &time_yaml(&[ahead.addr().to_string()], "")).await;
    let t = wait_for(&mut c, Duration::from_secs(10), "step", |t| t.steps == 1).await;
    assert_eq!(t.epoch, 1, "{t:?}");
    let events = time_events(&mut c).await;
    let stepped = events.iter().find(|e| e.message.starts_with("time stepped")).expect("a step event");
    assert!(
        stepped
            .message
            .contains(&format!("from {} ({}), trusted alone: no other server to ask", servers[0], servers[0]))
            && stepped.message.contains("epoch bumped"),
        "{}",
        stepped.message
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_ends_the_exchange_early() {
    let server = FaultyServer::start(Fault::Flood { datagrams: 20_000 }).await;
    let started = Instant::now();
    let result = exchange(server.addr(), Duration::from_secs(2)).await;
    let took = started.elapsed();
    assert_eq!(result, Err(ExchangeError::Flood { datagrams: bronze_host::time::exchange::MAX_DATAGRAMS }));
    assert!(took < Duration::from_millis(500), "flood judged for {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replies_after_the_2036_era_rollover_are_accepted() {
    // 2036-02-08T06:28:16Z and 2040-01-01T00:00:00Z: NTP era 1.
    for target in [2_086_064_896_u64, 2_208_988_800] {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
        let offset = target as f64 - now;
        let server = FaultyServer::start(Fault::Good { offset }).await;
        let m = exchange(server.addr(), Duration::from_secs(1))
            .await
            .unwrap_or_else(|e| panic!("reply at {target} refused: {e}"));
        assert!((m.server_time - target as f64).abs() < 1.0, "server time {} want {target}", m.server_time);
        assert!((m.sample.offset - offset).abs() < 0.01, "offset {} want {offset}", m.sample.offset);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_that_does_not_resolve_at_start_is_resolved_again() {
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("skipped because it needs root for a private mount namespace (its own /etc/hosts)");
        return;
    }
    // The node runs in a mount namespace of its own where /etc/hosts is a
    // file of this test, hosts are looked up in files only (no DNS query
    // leaves the machine) and resolv.conf names only loopback.
    let dir = tempfile::tempdir().unwrap();
    let hosts = dir.path().join("hosts");
    let nsswitch = dir.path().join("nsswitch.conf");
    let resolv = dir.path().join("resolv.conf");
    std::fs::write(&hosts, "127.0.0.1 localhost\n").unwrap();
    std::fs::write(&nsswitch, "hosts: files\n").unwrap();
    std::fs::write(&resolv, "nameserver 127.0.0.1\n").unwrap();
    let mounts = format!(
        "mount --bind {} /etc/hosts && mount --bind {} /etc/nsswitch.conf && mount --bind {} /etc/resolv.conf && \
         exec \"$@\"",
        hosts.display(),
        nsswitch.display(),
        resolv.display()
    );
    let wrapper = ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", &mounts, "sh"];
    let good = FaultyServer::start(Fault::Good { offset: 0.03 }).await;
    let name = format!("ntp-later.test:{}", good.addr().port());
    // The name comes as the node's default server and the config names
    // none: what a PID 1 with pool.ntp.org and no DNS yet goes through.
    let pki = Pki::new();
    let node = Node::start_with(NodeOptions {
        config: Some(pki.node_config_with_time("t", &time_yaml(&[], ""))),
        args: vec!["--time-servers".into(), name.clone()],
        wrapper: wrapper.map(String::from).to_vec(),
        ..Default::default()
    })
    .await;
    let mut c = node.client(&pki.auth(&["os:reader"])).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        let got = c
            .resources
            .get(pb::GetRequest { namespace: String::new(), r#type: "timeserverstatus".into(), id: name.clone() })
            .await;
        let status: Value = got
            .ok()
            .and_then(|r| r.into_inner().resource)
            .and_then(|r| serde_json::from_str(&r.spec_json).ok())
            .unwrap_or_default();
        if status["lastError"].as_str().is_some_and(|e| e.contains(&format!("cannot resolve {name}"))) {
            break status;
        }
        assert!(Instant::now() < deadline, "no resolution error: {status}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let t = time_status(&mut c).await;
    assert!(!t.synced && t.servers == [name.clone()], "{t:?}");

    // The name appears (same inode: the bind mount follows the file).
    std::fs::write(&hosts, "127.0.0.1 localhost\n127.0.0.1 ntp-later.test\n").unwrap();
    let t = wait_for(&mut c, Duration::from_secs(15), "sync once the name resolves", |t| t.synced).await;
    assert_eq!((t.server.as_str(), t.address.as_str()), (name.as_str(), good.addr().to_string().as_str()), "{t:?}");
    assert!(offset_near(t.offset_seconds, 0.03, t.rtt_seconds), "{t:?}");
    // The status had said when the next try would be.
    assert!(status["lastError"].as_str().unwrap().contains("retrying in"), "{status}");
}
