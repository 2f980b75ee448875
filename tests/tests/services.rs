//! The service supervisor in process mode: real child processes under a
//! real bronzed, driven through the API and bronzectl.

use bronze_api::v1 as pb;
use bronze_tests::{Node, Pki, bronzectl, free_port};
use bronzectl::client::NodeClient;
use std::time::{Duration, Instant};

/// A config whose `machine.services` is `services_yaml` (list items at two
/// spaces of indentation, e.g. "  - name: a\n    command: /bin/sh").
fn config_with_services(pki: &Pki, services_yaml: &str, time: Option<&str>) -> String {
    let base = match time {
        Some(t) => pki.node_config_with_time("svc", t),
        None => pki.node_config("svc"),
    };
    assert!(base.contains("  services: []\n"));
    base.replacen("  services: []\n", &format!("  services:\n{services_yaml}"), 1)
}

/// A `sh -c SCRIPT` service.
fn sh(name: &str, script: &str, extra: &str) -> String {
    let script = script.replace('\\', "\\\\").replace('"', "\\\"");
    format!("  - name: {name}\n    command: /bin/sh\n    args: [\"-c\", \"{script}\"]\n{extra}")
}

async fn list(c: &mut NodeClient) -> Vec<pb::ServiceInfo> {
    c.machine.service_list(pb::ServiceListRequest {}).await.unwrap().into_inner().services
}

async fn service(c: &mut NodeClient, name: &str) -> Option<pb::ServiceInfo> {
    list(c).await.into_iter().find(|s| s.name == name)
}

async fn wait_service(
    c: &mut NodeClient,
    name: &str,
    within: Duration,
    what: &str,
    ok: impl Fn(&pb::ServiceInfo) -> bool,
) -> pb::ServiceInfo {
    let deadline = Instant::now() + within;
    loop {
        let s = service(c, name).await;
        if let Some(s) = &s
            && ok(s)
        {
            return s.clone();
        }
        assert!(Instant::now() < deadline, "{name}: {what} not reached within {within:?}: {s:?}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

async fn log_lines(c: &mut NodeClient, name: &str, tail: i32) -> Vec<String> {
    let mut stream = c
        .machine
        .logs(pb::LogsRequest { service: name.into(), tail_lines: tail, follow: false })
        .await
        .unwrap()
        .into_inner();
    let mut lines = vec![];
    while let Some(l) = stream.message().await.unwrap() {
        lines.push(l.line);
    }
    lines
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_policies_backoff_and_exit_statuses() {
    let pki = Pki::new();
    let services = [
        sh("always", "echo started; exit 3", ""),
        sh("onfail-ok", "echo done; exit 0", "    restart: on-failure\n"),
        sh("onfail-bad", "echo oops; exit 1", "    restart: on-failure\n"),
        sh("never", "exit 5", "    restart: never\n"),
        sh("killed", "kill -9 $$", "    restart: never\n"),
    ]
    .concat();
    let node = Node::start_configured(&config_with_services(&pki, &services, None)).await;
    let mut c = node.client(&pki.auth(&["os:admin"])).await;

    let s = wait_service(&mut c, "always", Duration::from_secs(10), "5 restarts", |s| s.restarts >= 5).await;
    assert_eq!(s.last_exit, "exit code 3");
    // Backoff doubles: by the fifth restart the delay has reached 1.6 s.
    let s = wait_service(&mut c, "always", Duration::from_secs(10), "a long backoff", |s| {
        s.state == "backoff" && s.message.ends_with("00 ms") && s.message.len() >= "restarting in 1600 ms".len()
    })
    .await;
    // Exit statuses are never lost: every start printed once, every exit was recorded.
    let lines = log_lines(&mut c, "always", -1).await;
    let starts = lines.iter().filter(|l| *l == "started").count() as u64;
    let exits = lines.iter().filter(|l| *l == "[bronzed] exit code 3").count() as u64;
    assert!(
        starts >= s.restarts && exits >= s.restarts && starts.abs_diff(exits) <= 1,
        "{starts} starts, {exits} exits, {s:?}"
    );

    let s = wait_service(&mut c, "onfail-ok", Duration::from_secs(5), "finished", |s| s.state == "finished").await;
    assert_eq!((s.restarts, s.last_exit.as_str()), (1, "exit code 0"));
    wait_service(&mut c, "onfail-bad", Duration::from_secs(5), "restarted", |s| s.restarts >= 3).await;
    let s = wait_service(&mut c, "never", Duration::from_secs(5), "failed", |s| s.state == "failed").await;
    assert_eq!((s.restarts, s.last_exit.as_str()), (1, "exit code 5"));
    let s = wait_service(&mut c, "killed", Duration::from_secs(5), "failed", |s| s.state == "failed").await;
    assert_eq!(s.last_exit, "killed by signal 9 (SIGKILL)");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(service(&mut c, "never").await.unwrap().restarts, 1, "never is never restarted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dependencies_wait_for_services_health_and_time() {
    let pki = Pki::new();
    let healthy_port = free_port();
    let listener = std::net::TcpListener::bind(("127.0.0.1", healthy_port)).unwrap();
    let closed = bronze_tests::closed_port();
    let closed_port = closed.port;
    let services = [
        sh(
            "db",
            "exec sleep 1000",
            &format!("    health:\n      tcp: 127.0.0.1:{healthy_port}\n      interval: 200ms\n"),
        ),
        sh("web", "exec sleep 1000", "    dependsOn: [db]\n"),
        sh(
            "broken",
            "exec sleep 1000",
            &format!("    health:\n      tcp: 127.0.0.1:{closed_port}\n      interval: 200ms\n"),
        ),
        sh("after-broken", "exec sleep 1000", "    dependsOn: [broken]\n"),
        sh("clocked", "exec sleep 1000", "    dependsOn: [time-synced]\n"),
    ]
    .concat();
    // No time servers, a 2 s boot timeout: time-synced arrives by timeout.
    let config = config_with_services(&pki, &services, Some("servers: []\n    bootTimeout: 2s\n"));
    let started = Instant::now();
    let node = Node::start_configured(&config).await;
    let mut c = node.client(&pki.auth(&["os:reader"])).await;

    let db = wait_service(&mut c, "db", Duration::from_secs(10), "healthy", |s| s.health == "healthy").await;
    assert!(db.health_message.contains("connected"), "{db:?}");
    wait_service(&mut c, "web", Duration::from_secs(10), "running", |s| s.state == "running").await;
    let broken =
        wait_service(&mut c, "broken", Duration::from_secs(10), "unhealthy", |s| s.health == "unhealthy").await;
    assert!(broken.health_message.contains(&closed_port.to_string()), "{broken:?}");
    let waiting = service(&mut c, "after-broken").await.unwrap();
    assert_eq!((waiting.state.as_str(), waiting.message.as_str()), ("waiting", "waiting for service broken"));

    let clocked = service(&mut c, "clocked").await.unwrap();
    if started.elapsed() < Duration::from_millis(1500) {
        assert_eq!(clocked.message, "waiting for time-synced", "{clocked:?}");
    }
    wait_service(&mut c, "clocked", Duration::from_secs(10), "running after bootTimeout", |s| s.state == "running")
        .await;
    drop((listener, closed));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_tail_cap_and_stop_with_grace_then_kill() {
    let pki = Pki::new();
    let services = [
        sh("chatty", "i=0; while [ $i -lt 100 ]; do echo line $i; i=$((i+1)); done; exec sleep 1000", ""),
        sh("flood", "i=0; while [ $i -lt 2000 ]; do echo 0123456789012345678901234567890123456789; i=$((i+1)); done; exec sleep 1000", "    logBufferSize: 4KiB\n"),
        sh("stubborn", "trap '' TERM; echo ready; while true; do sleep 0.1; done", "    stopGracePeriod: 700ms\n"),
        sh("polite", "exec sleep 1000", ""),
        sh("limits", "echo nofile $(ulimit -Sn) $(ulimit -Hn); exec sleep 1000", ""),
    ]
    .concat();
    // bronzed (a child of this test) gets a soft open-file limit as high as
    // the hard one, as PID 1 has. A service still starts with 1024, and may
    // raise it to the hard limit.
    use nix::sys::resource::{RLIM_INFINITY, Resource, getrlimit, setrlimit};
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard).unwrap();
    let node = Node::start_configured(&config_with_services(&pki, &services, None)).await;
    let mut c = node.client(&pki.auth(&["os:operator"])).await;
    wait_service(&mut c, "chatty", Duration::from_secs(10), "running", |s| s.state == "running").await;
    let hard_text = if hard == RLIM_INFINITY { "unlimited".to_string() } else { hard.to_string() };
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let lines = log_lines(&mut c, "limits", -1).await;
        if !lines.is_empty() {
            assert_eq!(lines, [format!("nofile {} {hard_text}", 1024.min(hard))]);
            break;
        }
        assert!(Instant::now() < deadline, "the limits service printed nothing");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while log_lines(&mut c, "chatty", 1).await != ["line 99"] {
        assert!(Instant::now() < deadline, "output not captured");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(log_lines(&mut c, "chatty", 3).await, ["line 97", "line 98", "line 99"]);
    assert_eq!(log_lines(&mut c, "chatty", -1).await.len(), 100);

    // The flood keeps only about its 4 KiB cap.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let flood = log_lines(&mut c, "flood", -1).await;
    let bytes: usize = flood.iter().map(String::len).sum();
    assert!(bytes <= 4096 && flood.len() >= 90, "{} lines, {bytes} bytes", flood.len());

    // SIGTERM ignored: killed after the grace period.
    wait_service(&mut c, "stubborn", Duration::from_secs(10), "running", |s| s.state == "running").await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while !log_lines(&mut c, "stubborn", -1).await.contains(&"ready".to_string()) {
        assert!(Instant::now() < deadline, "trap not installed yet");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let t = Instant::now();
    c.machine.service_stop(pb::ServiceRequest { name: "stubborn".into() }).await.unwrap();
    let took = t.elapsed();
    assert!(took >= Duration::from_millis(700), "stop returned after {took:?}");
    let s = service(&mut c, "stubborn").await.unwrap();
    assert_eq!((s.state.as_str(), s.last_exit.as_str()), ("stopped", "killed by signal 9 (SIGKILL)"));

    // SIGTERM honoured: quick; stays stopped (policy always does not apply); start brings it back.
    let t = Instant::now();
    c.machine.service_stop(pb::ServiceRequest { name: "polite".into() }).await.unwrap();
    assert!(t.elapsed() < Duration::from_millis(700));
    let s = service(&mut c, "polite").await.unwrap();
    assert_eq!((s.state.as_str(), s.last_exit.as_str()), ("stopped", "killed by signal 15 (SIGTERM)"));
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(service(&mut c, "polite").await.unwrap().state, "stopped");
    c.machine.service_start(pb::ServiceRequest { name: "polite".into() }).await.unwrap();
    let s = wait_service(&mut c, "polite", Duration::from_secs(5), "running again", |s| s.state == "running").await;
    assert!(s.pid > 0);
    let err = c.machine.service_stop(pb::ServiceRequest { name: "ghost".into() }).await.unwrap_err();
    assert_eq!((err.code(), err.message()), (tonic::Code::NotFound, "unknown service \"ghost\""));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_orphans_are_reaped() {
    let pki = Pki::new();
    // Each `(sleep 0.3 &)` leaves a grandchild whose parent exits at once:
    // the orphan is re-parented to bronzed (a subreaper) and must be reaped.
    let script = "i=0; while [ $i -lt 1000 ]; do (sleep 0.3 &); i=$((i+1)); done; echo spawned; exec sleep 1000";
    let node = Node::start_configured(&config_with_services(&pki, &sh("spawner", script, ""), None)).await;
    let mut c = node.client(&pki.auth(&["os:admin"])).await;
    let pid = node.pid().to_string();
    // (children of bronzed, of which zombies)
    let children = || {
        let (mut children, mut zombies) = (0, 0);
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
            let Some(after) = stat.rsplit(')').next() else { continue };
            let fields: Vec<&str> = after.split_whitespace().collect();
            if fields.get(1) == Some(&pid.as_str()) {
                children += 1;
                if fields[0] == "Z" {
                    zombies += 1;
                }
            }
        }
        (children, zombies)
    };
    // The API is up before the services controller has registered the
    // configured services: wait until the spawner is known.
    wait_service(&mut c, "spawner", Duration::from_secs(10), "registered", |_| true).await;
    // While spawning, orphans show up as bronzed's children (it is a subreaper).
    let mut most = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    while !log_lines(&mut c, "spawner", -1).await.contains(&"spawned".to_string()) {
        assert!(Instant::now() < deadline, "spawner did not finish");
        most = most.max(children().0);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(most > 5, "orphans were not re-parented to bronzed (at most {most} children seen)");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (children, zombies) = children();
    assert_eq!(zombies, 0, "zombie children of bronzed remain");
    assert_eq!(children, 1, "only the spawner itself is left as a child");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_through_the_cli() {
    let pki = Pki::new();
    let node = Node::start_configured(&config_with_services(
        &pki,
        &sh("hello", "echo hello; echo world; exec sleep 1000", ""),
        None,
    ))
    .await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("bc");
    pki.write_bronzeconfig(&config, std::slice::from_ref(&node.addr), &["os:operator"]);
    let mut c = node.client(&pki.auth(&["os:admin"])).await;
    wait_service(&mut c, "hello", Duration::from_secs(10), "running", |s| s.state == "running").await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    let run = bronzectl(Some(&config), &["services"]).await;
    assert!(run.code == 0 && run.stdout.lines().any(|l| l.contains("hello") && l.contains("running")), "{run:?}");
    let run = bronzectl(Some(&config), &["logs", "hello", "--tail", "1", "-o", "json"]).await;
    let v: serde_json::Value = serde_json::from_str(run.stdout.trim()).unwrap();
    assert_eq!(v["lines"][0]["line"], "world", "{v}");
    let run = bronzectl(Some(&config), &["service", "hello", "restart"]).await;
    assert_eq!(run.code, 0, "{run:?}");
    let s =
        wait_service(&mut c, "hello", Duration::from_secs(5), "restarted", |s| s.state == "running" && s.restarts == 1)
            .await;
    assert_eq!(s.last_exit, "killed by signal 15 (SIGTERM)");
    let run = bronzectl(Some(&config), &["logs", "nope"]).await;
    assert!(run.stderr.contains("not found: unknown service \"nope\""), "{run:?}");

    let run = bronzectl(Some(&config), &["dmesg"]).await;
    if nix::unistd::Uid::effective().is_root() {
        assert_eq!(run.code, 0, "{run:?}");
        assert!(run.stdout.lines().count() > 1, "{run:?}");
    } else {
        assert!(run.stderr.contains("cannot read /dev/kmsg"), "{run:?}");
    }
    // A reader may list and read logs, but not control services.
    let reader = dir.path().join("reader");
    pki.write_bronzeconfig(&reader, std::slice::from_ref(&node.addr), &["os:reader"]);
    let run = bronzectl(Some(&reader), &["service", "hello", "stop"]).await;
    assert!(run.stderr.contains("os:reader may not call ServiceStop"), "{run:?}");
}
