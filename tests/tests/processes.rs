//! `processes` and `stats` against a real process-mode bronzed with real
//! services it started, and real processes the test starts itself (one
//! with a hostile command line), through the gRPC client and bronzectl.

use bronze_api::v1 as pb;
use bronze_api::v1::process_service_client::ProcessServiceClient;
use bronze_tests::{Node, Pki, bronzectl};
use bronzectl::client::NodeClient;
use std::os::unix::process::CommandExt;
use std::time::{Duration, Instant};

/// A config whose `machine.services` is `services_yaml`.
fn config_with_services(pki: &Pki, services_yaml: &str) -> String {
    let base = pki.node_config("procs");
    assert!(base.contains("  services: []\n"));
    base.replacen("  services: []\n", &format!("  services:\n{services_yaml}"), 1)
}

fn sh(name: &str, script: &str) -> String {
    let script = script.replace('\\', "\\\\").replace('"', "\\\"");
    format!("  - name: {name}\n    command: /bin/sh\n    args: [\"-c\", \"{script}\"]\n")
}

/// Kills the child's whole process group when the test ends, however it
/// ends: `sh -c "sleep 1000; :"` forks its sleep, which would outlive the
/// shell (and hold the test's output open) if only the shell were killed.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let group = nix::unistd::Pid::from_raw(self.0.id() as i32);
        let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
        let _ = self.0.wait();
    }
}

async fn processes(c: &NodeClient, sample_ms: u32) -> pb::ProcessesResponse {
    let mut p = ProcessServiceClient::new(c.channel.clone()).max_decoding_message_size(64 << 20);
    p.processes(pb::ProcessesRequest { sample_ms }).await.expect("processes").into_inner()
}

async fn service_pid(c: &mut NodeClient, name: &str) -> i32 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let list = c.machine.service_list(pb::ServiceListRequest {}).await.unwrap().into_inner().services;
        if let Some(s) = list.iter().find(|s| s.name == name && s.state == "running" && s.pid > 0) {
            return s.pid;
        }
        assert!(Instant::now() < deadline, "{name} not running: {list:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Spins in the shell itself (no child per iteration, so the shell is the
/// one on the CPU) for a bounded count, about 20 s with dash here, so
/// nothing is left spinning if the test dies; then sleeps.
const SPIN: &str = "i=0; while [ $i -lt 8000000 ]; do i=$((i+1)); done; exec sleep 1000";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processes_and_stats_name_services_bronzed_and_escape_command_lines() {
    let pki = Pki::new();
    let services = [sh("spin", SPIN), sh("sleeper", "exec sleep 1000"), sh("tree", "sleep 1001 & wait")].concat();
    let node = Node::start_configured(&config_with_services(&pki, &services)).await;
    // The reader role may list processes and stats.
    let mut c = node.client(&pki.auth(&["os:reader"])).await;
    let spin = service_pid(&mut c, "spin").await;
    let sleeper = service_pid(&mut c, "sleeper").await;
    let tree = service_pid(&mut c, "tree").await;

    // A process with a hostile command line: terminal controls, a forged
    // line, bidi override, a huge argument.
    let hostile_arg = "\x1b]0;owned\x07\nfake line\u{202e}gnp.exe";
    let huge = "A".repeat(10_000);
    let hostile = Killed(
        std::process::Command::new("/bin/sh")
            .arg0("evil\x1b[2J")
            .args(["-c", "sleep 1000; :", hostile_arg, &huge])
            .process_group(0)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    tokio::time::sleep(Duration::from_millis(300)).await;

    let started = Instant::now();
    let r = processes(&c, 300).await;
    assert!(started.elapsed() >= Duration::from_millis(300), "the first call samples over the window");
    assert!(r.cpu_window_ms >= 300 && r.cpu_window_ms < 2000, "{}", r.cpu_window_ms);
    assert!(!r.truncated && r.processes.len() >= 6, "{}", r.processes.len());
    let by_pid =
        |pid: i32| r.processes.iter().find(|p| p.pid == pid).unwrap_or_else(|| panic!("pid {pid} not listed")).clone();

    let me = by_pid(node.pid() as i32);
    assert_eq!((me.owner_kind.as_str(), me.owner.as_str()), ("bronzed", "bronzed"));
    assert!(me.command.contains("bronzed") && me.command.contains("--mode process"), "{me:?}");
    assert!(me.cpu_seconds > 0.0 && me.rss_bytes > 1 << 20 && me.threads >= 2, "{me:?}");
    assert!(me.age_seconds > 0.0 && me.age_seconds < 600.0, "{me:?}");

    let s = by_pid(spin);
    assert_eq!((s.owner_kind.as_str(), s.owner.as_str(), s.parent), ("service", "spin", node.pid() as i32));
    assert!(s.cpu_percent > 20.0 && s.cpu_percent < 250.0, "a spinning shell: {s:?}");
    assert!(s.cpu_seconds > 0.0 && s.rss_bytes > 0 && s.state == "R", "{s:?}");
    let s = by_pid(sleeper);
    assert_eq!((s.owner.as_str(), s.command.as_str()), ("sleeper", "sleep 1000"));
    assert!(s.cpu_percent < 5.0 && s.state == "S", "{s:?}");
    let child = r.processes.iter().find(|p| p.parent == tree).expect("tree's child");
    assert_eq!(
        (child.owner_kind.as_str(), child.owner.as_str(), child.command.as_str()),
        ("service", "tree", "sleep 1001")
    );

    let h = by_pid(hostile.0.id() as i32);
    assert_eq!(h.owner_kind, "", "the test's own process belongs to nobody: {h:?}");
    assert!(h.command.starts_with("evil\\x1b[2J -c sleep 1000; : \\x1b]0;owned\\x07\\nfake line\\u{202e}gnp.exe AAAA"));
    assert!(h.command_truncated && h.command.len() <= 4096 && h.command.len() > 4000, "{}", h.command.len());
    assert!(!h.command.chars().any(bronze_bundle::text::is_unsafe), "{:?}", h.command);

    // Kernel threads (a process-mode node sees the host's) show as [name].
    assert!(r.processes.iter().any(|p| p.parent == 2 && p.command.starts_with('[')), "kernel threads listed");

    // A second call right after: since the last reading when it is old
    // enough, else a fresh window; sample_ms 0 is the lifetime average.
    let r0 = processes(&c, 0).await;
    assert_eq!(r0.cpu_window_ms, 0);
    let s0 = r0.processes.iter().find(|p| p.pid == spin).unwrap();
    assert!(s0.cpu_percent > 0.0, "{s0:?}");
    tokio::time::sleep(Duration::from_millis(400)).await;
    let started = Instant::now();
    let r2 = processes(&c, 300).await;
    assert!(started.elapsed() < Duration::from_millis(300), "the last reading was old enough: no wait");
    assert!(r2.cpu_window_ms >= 300, "{}", r2.cpu_window_ms);

    let mut p = ProcessServiceClient::new(c.channel.clone());
    let stats = p.stats(pb::StatsRequest { sample_ms: 300 }).await.expect("stats").into_inner();
    assert_eq!(stats.source, "process");
    let entry = |kind: &str, name: &str| {
        stats
            .entries
            .iter()
            .find(|e| e.kind == kind && e.name == name)
            .unwrap_or_else(|| panic!("{kind} {name}"))
            .clone()
    };
    let b = entry("bronzed", "bronzed");
    assert!(b.processes == 1 && b.rss_bytes > 1 << 20 && b.cpu_seconds > 0.0, "{b:?}");
    let s = entry("service", "spin");
    assert!(s.processes == 1 && s.cpu_percent > 20.0 && s.rss_bytes > 0 && s.state == "running", "{s:?}");
    let t = entry("service", "tree");
    assert_eq!(t.processes, 2, "{t:?}");
    drop(hostile);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bronzectl_processes_watch_refreshes_and_renders_formats() {
    let pki = Pki::new();
    let node = Node::start_configured(&config_with_services(&pki, &sh("sleeper", "exec sleep 1000"))).await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("bronzeconfig");
    pki.write_bronzeconfig(&config, std::slice::from_ref(&node.addr), &["os:reader"]);
    let mut c = node.client(&pki.auth(&["os:reader"])).await;
    let sleeper = service_pid(&mut c, "sleeper").await;

    let run = bronzectl(Some(&config), &["ps", "-o", "json"]).await;
    assert_eq!(run.code, 0, "{run:?}");
    // One object per node per line.
    let doc: serde_json::Value = serde_json::from_str(run.stdout.trim()).unwrap();
    assert_eq!(doc["node"], node.addr.as_str());
    assert!(doc["cpuWindowMs"].as_u64().unwrap() >= 250, "{}", doc["cpuWindowMs"]);
    let rows = doc["processes"].as_array().expect("a list");
    let row = rows.iter().find(|r| r["pid"] == sleeper).unwrap_or_else(|| panic!("{sleeper} in {}", run.stdout));
    assert_eq!((row["service"].as_str(), row["command"].as_str()), (Some("sleeper"), Some("sleep 1000")), "{row}");
    assert!(row["rssBytes"].as_u64().unwrap() > 0, "{row}");

    let run = bronzectl(Some(&config), &["processes", "--sort", "memory", "--limit", "5"]).await;
    assert_eq!(run.code, 0, "{run:?}");
    let lines: Vec<&str> = run.stdout.lines().collect();
    for column in ["NODE", "PID", "PARENT", "STATE", "THREADS", "CPU%", "RSS", "SERVICE", "COMMAND"] {
        assert!(lines[0].contains(column), "{}", lines[0]);
    }
    assert_eq!(lines.len(), 6, "a header and 5 rows: {}", run.stdout);
    let run = bronzectl(Some(&config), &["processes", "--sort", "pid"]).await;
    assert!(run.stdout.lines().any(|l| l.contains("sleeper") && l.ends_with("sleep 1000")), "{}", run.stdout);
    assert!(run.stdout.lines().any(|l| l.contains("bronzed") && l.contains("--mode process")), "{}", run.stdout);

    let run = bronzectl(Some(&config), &["stats", "-o", "yaml"]).await;
    assert_eq!(run.code, 0, "{run:?}");
    let stats: serde_yaml::Value = serde_yaml::from_str(&run.stdout).unwrap();
    assert_eq!(stats["source"], "process", "{}", run.stdout);
    let list = stats["entries"].as_sequence().expect("a list");
    assert!(list.iter().any(|e| e["kind"] == "bronzed" && e["rssBytes"].as_u64().unwrap_or(0) > 0), "{}", run.stdout);
    assert!(list.iter().any(|e| e["kind"] == "service" && e["name"] == "sleeper"), "{}", run.stdout);

    // --watch refreshes like top until interrupted: read it at a 300 ms
    // interval until the fifth frame starts (by a deadline far beyond the
    // 1.5 s that takes, so a loaded machine does not fail it), then stop it;
    // the interval is checked through each frame's measured window below.
    let mut watch = tokio::process::Command::new(bronze_tests::bin("bronzectl"))
        .args(["processes", "--watch", "--interval", "300ms", "--sort", "cpu"])
        .env("BRONZECONFIG", &config)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(watch.stdout.take().unwrap()));
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while seen.iter().filter(|l: &&String| l.starts_with("# ")).count() < 5 {
        match tokio::time::timeout_at(deadline, lines.next_line()).await {
            Ok(Ok(Some(line))) => seen.push(line),
            other => panic!("--watch stopped or stalled ({other:?}) after:\n{}", seen.join("\n")),
        }
    }
    watch.start_kill().unwrap();
    let _ = watch.wait().await;
    // Four whole frames: the lines before the fifth header.
    let fifth = seen.iter().rposition(|l| l.starts_with("# ")).unwrap();
    let stdout = seen[..fifth].join("\n");
    let frames = stdout.lines().filter(|l| l.starts_with("NODE")).count();
    assert_eq!(frames, 4, "{stdout}");
    let windows: Vec<&str> = stdout.lines().filter(|l| l.starts_with("# ")).collect();
    assert_eq!(windows.len(), frames, "one header per frame: {windows:?}");
    // The first refresh samples over --sample (250 ms); every later one
    // measures CPU since the one before (at least the 300 ms interval).
    let window_ms = |l: &str| l.rsplit(' ').nth(1).and_then(|n| n.parse::<u64>().ok()).unwrap();
    assert!(windows.iter().all(|l| l.contains("every 300ms by cpu")), "{windows:?}");
    assert!((250..5000).contains(&window_ms(windows[0])), "{windows:?}");
    assert!(windows[1..].iter().all(|l| (300..5000).contains(&window_ms(l))), "{windows:?}");
    assert!(stdout.lines().any(|l| l.contains("sleeper") && l.ends_with("sleep 1000")), "{stdout}");
}
