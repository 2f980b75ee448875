//! Cloud metadata benchmarks (figures for docs/benchmarks.md, "Cloud
//! metadata"):
//!
//! 1. aws fetch against the loopback mock, minus the mock's own time: the
//!    real aws plugin run on a real `bronzed` (`plugins run` over the API:
//!    detect() and fetch() in fresh sandboxes, every IMDS request through
//!    the host's HTTP client, the answer validated), median; the mock's own
//!    time is the same requests (as the mock logged them) sent again with a
//!    plain HTTP/1.1 client in the same run, one connection each, as the
//!    plugin's host client does. The API's own round trip (`Version`) is
//!    shown too.
//! 2. The same provider fetched by Afterburn 5.11.0 in the same run, in a
//!    network namespace where the mock answers at 169.254.169.254:80
//!    (Afterburn cannot be pointed elsewhere): process start to exit,
//!    attributes written; and Bronze's `plugins run` in that namespace, as a
//!    ratio to Afterburn's. Needs root (skipped with a note otherwise).
//! 3. Detection over all shipped providers (`--image-plugins`: every
//!    first-party bundle built from `plugins/`) on a node restarted with the
//!    same state dir, so every plugin loads from the AOT cache: blank DMI,
//!    hence `metal` and no fetch. The node's own `PlatformDetection.durationMs`
//!    (all `detect()` calls at once, 1 ms steps), at that boot and for each
//!    `PlatformRefresh`, and the refresh's wall time at the client.
//!
//! Run by hand: `cargo build --release --bins && cargo run --release -p
//! bronze-tests --bin bench-platform [-- --samples N]` (the figures of a
//! debug build are printed with a warning).

use bronze_tests::afterburn::{self, NsMock};
use bronze_tests::mockcloud::aws::Aws;
use bronze_tests::mockcloud::{MockServer, Request};
use bronze_tests::plugins::{bundle, config_with_plugins, install, instance_yaml, run};
use bronze_tests::{Node, NodeOptions, Pki};
use bronzectl::client::NodeClient;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

/// A fake sysfs whose DMI says "Amazon EC2".
fn ec2_sysfs() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let dmi = dir.path().join("class/dmi/id");
    std::fs::create_dir_all(&dmi).expect("mkdir");
    std::fs::write(dmi.join("sys_vendor"), "Amazon EC2\n").expect("write");
    std::fs::write(dmi.join("product_uuid"), "ec2e1916-9099-7caf-fd21-012345abcdef\n").expect("write");
    dir
}

/// Sends `requests` again, one connection each, and returns the total time
/// until each answer was read to the end.
fn replay(addr: SocketAddr, requests: &[Request]) -> Duration {
    let mut total = Duration::ZERO;
    for r in requests {
        let mut head = format!("{} {} HTTP/1.1\r\nHost: {addr}\r\n", r.method, r.path);
        for (name, value) in &r.headers {
            if !matches!(name.as_str(), "host" | "connection" | "content-length") {
                head.push_str(&format!("{name}: {value}\r\n"));
            }
        }
        head.push_str(&format!("Content-Length: {}\r\nConnection: close\r\n\r\n", r.body.len()));
        let started = Instant::now();
        let mut stream = TcpStream::connect(addr).expect("connect to the mock");
        stream.write_all(head.as_bytes()).expect("write");
        stream.write_all(&r.body).expect("write body");
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).expect("read");
        total += started.elapsed();
        assert!(answer.starts_with(b"HTTP/1.1 200"), "{} {}: {}", r.method, r.path, String::from_utf8_lossy(&answer));
    }
    total
}

/// `plugins run ID`, timed: (wall time of the RPC, the node's own duration
/// of the call: sandbox, detect(), fetch() with its HTTP requests). Panics
/// unless the fetch succeeded.
async fn timed_run(c: &NodeClient, id: &str) -> (Duration, Duration) {
    let started = Instant::now();
    let done = run(c, id).await;
    let elapsed = started.elapsed();
    let result: serde_json::Value = serde_json::from_str(&done.result_json).expect("result json");
    assert!(result["fetch"]["ok"].is_object(), "{id}: {result}");
    let call = Duration::from_micros(done.outcome.expect("outcome").duration_us);
    (elapsed, call)
}

struct Row {
    what: String,
    value: String,
    target: String,
}

/// The `platform` resource of `type`, if it exists.
async fn platform_spec(c: &mut NodeClient, r#type: &str) -> Option<serde_json::Value> {
    let got = c
        .resources
        .get(bronze_api::v1::GetRequest { namespace: String::new(), r#type: r#type.into(), id: "platform".into() })
        .await
        .ok()?;
    serde_json::from_str(&got.into_inner().resource?.spec_json).ok()
}

/// Waits for a `PlatformDetection` in which every provider answered; returns
/// it. `refresh` asks for a new round while waiting (the first rounds may run
/// while the image's plugins are still being compiled).
async fn full_detection(c: &mut NodeClient, providers: usize, refresh: bool) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        if let Some(d) = platform_spec(c, "platformdetection").await
            && d["answers"].as_array().is_some_and(|a| a.len() >= providers && a.iter().all(|x| x["answer"] == "no"))
        {
            return d;
        }
        assert!(Instant::now() < deadline, "no detection round with all {providers} providers answering");
        if refresh {
            let _ = c.machine.platform_refresh(bronze_api::v1::PlatformRefreshRequest {}).await;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn detection(pki: &Pki, samples: usize, rows: &mut Vec<Row>) {
    let image = bronze_tests::plugins::bundle_dir("aws").parent().expect("target/plugins").to_path_buf();
    let providers = std::fs::read_dir(&image)
        .expect("image plugins")
        .flatten()
        .filter(|e| {
            std::fs::read(e.path().join("plugin.toml"))
                .is_ok_and(|t| String::from_utf8_lossy(&t).contains("metadata-provider"))
        })
        .count();
    let tmp = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(tmp.path().join("sys/class/dmi/id")).expect("mkdir");
    std::fs::write(tmp.path().join("cmdline"), "").expect("cmdline");
    let state = tmp.path().join("state");
    let options = || NodeOptions {
        config: Some(pki.node_config("detect")),
        state_dir: Some(state.clone()),
        args: vec![
            "--platform".into(),
            "auto".into(),
            "--image-plugins".into(),
            image.display().to_string(),
            "--sysfs".into(),
            tmp.path().join("sys").display().to_string(),
            "--cmdline-file".into(),
            tmp.path().join("cmdline").display().to_string(),
        ],
        ..Default::default()
    };
    // First start: compiles the image's plugins into the AOT cache.
    let mut node = Node::start_with(options()).await;
    let mut c = node.client(&pki.auth(&["os:admin"])).await;
    full_detection(&mut c, providers, true).await;
    node.kill();
    drop(c);
    // Second start: the same state dir, so every plugin loads from the cache.
    let node = Node::start_with(options()).await;
    let mut c = node.client(&pki.auth(&["os:admin"])).await;
    let boot = full_detection(&mut c, providers, false).await;
    let (mut in_node, mut wall, mut slowest) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..samples {
        let started = Instant::now();
        let answer = c
            .machine
            .platform_refresh(bronze_api::v1::PlatformRefreshRequest {})
            .await
            .expect("PlatformRefresh")
            .into_inner();
        wall.push(started.elapsed());
        assert_eq!(answer.platform, "metal", "{answer:?}");
        let d = platform_spec(&mut c, "platformdetection").await.expect("PlatformDetection");
        in_node.push(Duration::from_millis(d["durationMs"].as_u64().expect("durationMs")));
        let max = d["answers"].as_array().into_iter().flatten().filter_map(|a| a["durationMs"].as_u64()).max();
        slowest.push(Duration::from_millis(max.unwrap_or(0)));
    }
    rows.push(Row {
        what: format!("detection, {providers} shipped providers, at the restart with a warm AOT cache (PlatformDetection, 1 ms steps)"),
        value: format!("{} ms", boot["durationMs"]),
        target: String::new(),
    });
    let median_in_node = median(in_node);
    rows.push(Row {
        what: format!(
            "detection, {providers} providers, a refresh on the running node (PlatformDetection, 1 ms steps)"
        ),
        value: ms(median_in_node),
        target: format!("≤ 5 ms: {}", if median_in_node <= Duration::from_millis(5) { "met" } else { "NOT met" }),
    });
    rows.push(Row {
        what: "  the slowest provider's detect() in that round".into(),
        value: ms(median(slowest)),
        target: String::new(),
    });
    rows.push(Row {
        what: "  `PlatformRefresh` over the API (wall time at the client)".into(),
        value: ms(median(wall)),
        target: String::new(),
    });
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let samples: usize = args
        .iter()
        .position(|a| a == "--samples")
        .and_then(|i| args.get(i + 1))
        .map(|n| n.parse().expect("--samples N"))
        .unwrap_or(30);
    let bronzed = bronze_tests::bin("bronzed");
    let release = bronzed.parent().is_some_and(|d| d.ends_with("release"));
    if !release {
        eprintln!("WARNING: {} is a debug build; run with --release for the figures", bronzed.display());
    }
    let mut rows = Vec::new();

    // 1. The loopback mock, in this process.
    let pki = Pki::new();
    let mock = MockServer::loopback(Arc::new(Aws::new())).await;
    let base = mock.base();
    let instance = instance_yaml(
        "aws",
        "aws",
        &format!("endpoint: \"{base}\""),
        &format!("config: true, facts: [dmi, links], http: [{{ url: \"{base}/latest/\", methods: [GET, PUT] }}]"),
        None,
    );
    let sysfs = ec2_sysfs();
    let node = Node::start_with(NodeOptions {
        config: Some(config_with_plugins(&pki, "bench", &format!("allowUnsigned: true\n    instances:{instance}"))),
        args: vec!["--sysfs".into(), sysfs.path().display().to_string()],
        ..Default::default()
    })
    .await;
    let mut c = node.client(&pki.auth(&["os:admin"])).await;
    install(c.channel.clone(), &bundle("aws")).await.expect("install aws");
    for _ in 0..3 {
        timed_run(&c, "aws").await;
    }
    let (mut wall, mut fetch, mut own, mut net) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut per_fetch = 0;
    for _ in 0..samples {
        let before = mock.requests().len();
        let (elapsed, call) = timed_run(&c, "aws").await;
        let requests = mock.requests().split_off(before);
        per_fetch = requests.len();
        let addr = mock.addr;
        let mock_time = tokio::task::spawn_blocking(move || replay(addr, &requests)).await.expect("replay");
        wall.push(elapsed);
        fetch.push(call);
        own.push(mock_time);
        net.push(call.saturating_sub(mock_time));
    }
    let mut version = Vec::new();
    for _ in 0..samples {
        let started = Instant::now();
        c.machine.version(bronze_api::v1::VersionRequest {}).await.expect("version");
        version.push(started.elapsed());
    }
    rows.push(Row {
        what: format!("aws fetch in the node: sandbox, detect(), fetch() ({per_fetch} IMDS requests)"),
        value: ms(median(fetch)),
        target: String::new(),
    });
    rows.push(Row {
        what: "  the mock's own time for the same requests (plain client)".into(),
        value: ms(median(own)),
        target: String::new(),
    });
    let net_median = median(net);
    rows.push(Row {
        what: "  aws fetch minus the mock's own time".into(),
        value: ms(net_median),
        target: format!("≤ 3 ms: {}", if net_median <= Duration::from_millis(3) { "met" } else { "NOT met" }),
    });
    rows.push(Row {
        what: "  the same, `plugins run` over the API (wall time at the client)".into(),
        value: ms(median(wall)),
        target: String::new(),
    });
    rows.push(Row {
        what: "  an API round trip alone (Version RPC, mTLS)".into(),
        value: ms(median(version)),
        target: String::new(),
    });
    drop(node);

    // 2. Side by side with Afterburn at the real address.
    match afterburn::namespace() {
        None => eprintln!("Afterburn comparison skipped (needs a network namespace)"),
        Some(mut ns) => {
            let afterburn_bin = afterburn::binary();
            let _mock = NsMock::start(&ns, "aws");
            let grants = serde_json::to_string(&bundle("aws").manifest.grants.expect("aws [grants]")).expect("json");
            let instance = instance_yaml("aws", "aws", "", grants.trim_start_matches('{').trim_end_matches('}'), None);
            let port = bronze_tests::free_port();
            let mut node = Node::spawn(NodeOptions {
                config: Some(config_with_plugins(
                    &pki,
                    "bench",
                    &format!("allowUnsigned: true\n    instances:{instance}"),
                )),
                args: vec!["--sysfs".into(), sysfs.path().display().to_string()],
                port: Some(port),
                wrapper: vec!["ip".into(), "netns".into(), "exec".into(), ns.name().into()],
                ..Default::default()
            });
            node.addr = format!("127.0.0.1:{}", ns.tcp_into(port).expect("relay"));
            node.wait_ready().await;
            c = node.client(&pki.auth(&["os:admin"])).await;
            install(c.channel.clone(), &bundle("aws")).await.expect("install aws");
            let (mut bronze, mut bronze_api, mut theirs, mut spans) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
            for i in 0..samples + 2 {
                let (wall, call) = timed_run(&c, "aws").await;
                let a = afterburn::run(&afterburn_bin, &ns, "aws");
                assert!(a.success && a.attributes.contains_key("AWS_INSTANCE_ID"), "afterburn: {}", a.stderr);
                if i >= 2 {
                    bronze.push(call);
                    bronze_api.push(wall);
                    theirs.push(a.elapsed);
                    spans.extend(a.requests_span);
                }
            }
            let (b, w, a) = (median(bronze), median(bronze_api), median(theirs));
            let ratio = b.as_secs_f64() / a.as_secs_f64();
            rows.push(Row {
                what: "aws, Afterburn 5.11.0: process start to exit, attributes written".into(),
                value: ms(a),
                target: String::new(),
            });
            rows.push(Row {
                what: "aws, Bronze: the fetch in the node (sandbox, detect(), fetch())".into(),
                value: ms(b),
                target: String::new(),
            });
            rows.push(Row {
                what: "  Bronze / Afterburn".into(),
                value: format!("{ratio:.2}"),
                target: format!("≤ 1.0: {}", if ratio <= 1.0 { "met" } else { "NOT met" }),
            });
            if !spans.is_empty() {
                let span = median(spans);
                rows.push(Row {
                    what: "  Afterburn's requests alone (its log: first request to last answer, 1 ms steps)".into(),
                    value: ms(span),
                    target: format!("Bronze's fetch / this: {:.2}", b.as_secs_f64() / span.as_secs_f64().max(1e-3)),
                });
            }
            rows.push(Row {
                what: "aws, Bronze: `plugins run` over the API, relayed into the namespace".into(),
                value: ms(w),
                target: format!("ratio {:.2}", w.as_secs_f64() / a.as_secs_f64()),
            });
        }
    }

    // 3. Detection over every shipped provider, on a node restarted with a
    // warm AOT cache: blank DMI, no command line, no volume, so the answer is
    // `metal` and nothing is fetched (detect() is facts only).
    detection(&pki, samples, &mut rows).await;

    println!();
    println!("Cloud metadata ({} build, {samples} samples, medians)", if release { "release" } else { "DEBUG" });
    println!();
    println!("| figure | value | target |");
    println!("|---|---|---|");
    for row in rows {
        println!("| {} | {} | {} |", row.what, row.value, row.target);
    }
}
