//! Plugin benchmarks (figures for docs/benchmarks.md):
//!
//! 1. instantiate: a fresh Store plus instance from the cached pre-instance
//!    (trivial plugin), median;
//! 2. host → guest `check()` round trip on a live instance, median;
//! 3. load from the AOT cache vs compile from wasm, per first-party plugin
//!    (compiled here with the compile worker's engine: the bench is not the
//!    node, whose engine cannot compile);
//! 4. bronzed RSS with 10 health plugins scheduled every second, at start
//!    and after `--minutes` (default 10).
//!
//! Run with `cargo xtask bench-plugins [--minutes N]` (release build).

use bronze_bundle::World;
use bronze_host::plugins::artifact::{load_cached, precompile};
use bronze_host::plugins::call::{CallLimits, new_store};
use bronze_host::plugins::capabilities::Imports;
use bronze_host::plugins::context::InstanceContext;
use bronze_host::plugins::engine::{PluginEngine, compiling_engine};
use bronze_host::plugins::facts::Facts;
use bronze_host::plugins::loaded::prepare;
use bronze_host::plugins::log::PluginLog;
use bronze_host::plugins::net::{HttpPolicy, ProbePolicy, SystemResolver};
use bronze_host::plugins::worlds::Prepared;
use bronze_tests::plugins::{bundle, config_with_plugins, install, instance_yaml, rss_bytes};
use bronze_tests::{Node, Pki};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn context() -> Arc<InstanceContext> {
    Arc::new(InstanceContext {
        instance: "bench".into(),
        plugin: "trivial".into(),
        config: Default::default(),
        http: HttpPolicy::new(&[]),
        probe: ProbePolicy::new(&[]),
        facts: Facts::new(bronze_host::state::Store::new(), "/sys".into(), "/proc".into()),
        log: PluginLog::new("bench"),
        resolver: Arc::new(SystemResolver),
        volumes: bronze_host::plugins::volumes::VolumeAccess {
            source: Arc::new(bronze_host::plugins::volumes::NoVolumes),
            labels: Vec::new(),
        },
    })
}

/// Compiles `wasm` as the compile worker does and loads it into the node's
/// engine from a file, as the node does.
fn compile_and_load(engine: &PluginEngine, wasm: &[u8]) -> anyhow::Result<wasmtime::component::Component> {
    let compiled =
        precompile(&compiling_engine().map_err(|e| anyhow::anyhow!("{e:#}"))?, wasm).map_err(anyhow::Error::msg)?;
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("plugin.cwasm");
    std::fs::write(&path, &compiled.cwasm)?;
    load_cached(engine, &path, &bronze_bundle::sha256_hex(&compiled.cwasm))
        .ok_or_else(|| anyhow::anyhow!("the compiled component does not load"))
}

async fn call_costs(engine: &PluginEngine) -> anyhow::Result<()> {
    let wasm = bundle("trivial").wasm;
    let component = compile_and_load(engine, &wasm)?;
    let imports = Imports::of(engine.engine(), &component);
    let Prepared::Health(pre) = prepare(engine, &component, World::HealthCheck, &imports.capabilities, &imports.types)
        .map_err(anyhow::Error::msg)?
    else {
        anyhow::bail!("trivial is not a health check");
    };
    let cx = context();
    let limits = CallLimits { memory: 32 << 20, timeout: Duration::from_secs(5) };
    let deadline = || tokio::time::Instant::now() + Duration::from_secs(60);

    const WARMUP: usize = 200;
    const INSTANTIATE: usize = 5_000;
    let mut samples = Vec::with_capacity(INSTANTIATE);
    for i in 0..WARMUP + INSTANTIATE {
        let start = Instant::now();
        let mut store = new_store(engine.engine(), cx.clone(), limits, deadline());
        let instance = pre.instantiate_async(&mut store).await?;
        let took = start.elapsed();
        std::hint::black_box(&instance);
        if i >= WARMUP {
            samples.push(took);
        }
    }
    println!(
        "instantiate (fresh store from the cached pre-instance): median {:.1} µs over {INSTANTIATE}",
        micros(median(samples))
    );

    const CALLS: usize = 20_000;
    let mut store = new_store(engine.engine(), cx.clone(), limits, deadline());
    let instance = pre.instantiate_async(&mut store).await?;
    let mut samples = Vec::with_capacity(CALLS);
    for i in 0..WARMUP + CALLS {
        let start = Instant::now();
        let report = instance.call_check(&mut store).await?;
        let took = start.elapsed();
        std::hint::black_box(&report);
        if i >= WARMUP {
            samples.push(took);
        }
    }
    println!("host → guest check() round trip (trivial plugin): median {:.2} µs over {CALLS}", micros(median(samples)));
    Ok(())
}

fn aot_ratios(engine: &PluginEngine) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let compiler = compiling_engine().map_err(|e| anyhow::anyhow!("{e:#}"))?;
    for id in ["health-http", "health-tcp", "health-time"] {
        let wasm = bundle(id).wasm;
        let compiles: Vec<Duration> = (0..3)
            .map(|_| {
                let start = Instant::now();
                precompile(&compiler, &wasm).map(|_| start.elapsed())
            })
            .collect::<Result<_, _>>()
            .map_err(anyhow::Error::msg)?;
        let compiled = precompile(&compiler, &wasm).map_err(anyhow::Error::msg)?;
        let path = dir.path().join(format!("{id}.cwasm"));
        std::fs::write(&path, &compiled.cwasm)?;
        let sha = bronze_bundle::sha256_hex(&compiled.cwasm);
        let loads: Vec<Duration> = (0..20)
            .map(|_| {
                let start = Instant::now();
                let component = load_cached(engine, &path, &sha);
                assert!(component.is_some(), "cache load failed");
                start.elapsed()
            })
            .collect();
        let (compile, load) = (median(compiles), median(loads));
        println!(
            "{id}: wasm {} KiB, compile {:.1} ms, load from cache {:.2} ms, ratio {:.0}×",
            wasm.len() / 1024,
            compile.as_secs_f64() * 1e3,
            load.as_secs_f64() * 1e3,
            compile.as_secs_f64() / load.as_secs_f64()
        );
    }
    Ok(())
}

async fn rss_over_time(minutes: u64) -> anyhow::Result<()> {
    let pki = Pki::new();
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let tcp_port = tcp.local_addr()?.port();
    let http = bronze_tests::plugins::TestHttpServer::start().await;
    let mut instances = String::new();
    let ok = http.url("/ok/");
    for i in 0..4 {
        let config = format!("host: 127.0.0.1, port: \"{tcp_port}\"");
        let grants = format!("config: true, probe: [\"tcp://127.0.0.1:{tcp_port}\"]");
        instances.push_str(&instance_yaml(&format!("tcp-{i}"), "health-tcp", &config, &grants, Some("1s")));
    }
    for i in 0..3 {
        let grants = format!("config: true, http: [{{ url: \"{ok}\" }}]");
        instances.push_str(&instance_yaml(
            &format!("http-{i}"),
            "health-http",
            &format!("url: \"{ok}\""),
            &grants,
            Some("1s"),
        ));
    }
    for i in 0..3 {
        instances.push_str(&instance_yaml(&format!("time-{i}"), "health-time", "", "facts: [time]", Some("1s")));
    }
    let plugins = format!("allowUnsigned: true\n    instances:{instances}");
    let node = Node::start_configured(&config_with_plugins(&pki, "bench-rss", &plugins)).await;
    let c = node.client(&pki.auth(&["os:admin"])).await;
    for id in ["health-tcp", "health-http", "health-time"] {
        install(c.channel.clone(), &bundle(id)).await.map_err(|e| anyhow::anyhow!("install {id}: {e}"))?;
    }
    // Let every instance run a few times before the first figure.
    tokio::time::sleep(Duration::from_secs(30)).await;
    let start = rss_bytes(node.pid());
    println!("RSS with 10 health plugins every 1 s, 30 s after start: {:.1} MiB", start as f64 / 1048576.0);
    let mut samples = vec![start];
    for minute in 1..=minutes {
        tokio::time::sleep(Duration::from_secs(60)).await;
        let rss = rss_bytes(node.pid());
        samples.push(rss);
        println!("  after {minute} min: {:.1} MiB", rss as f64 / 1048576.0);
    }
    let end = *samples.last().unwrap();
    let max = *samples.iter().max().unwrap();
    println!(
        "RSS growth over {minutes} min: {:+.2} MiB (end − start), max {:.1} MiB",
        (end as f64 - start as f64) / 1048576.0,
        max as f64 / 1048576.0
    );
    drop(tcp);
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let minutes = args
        .iter()
        .position(|a| a == "--minutes")
        .and_then(|i| args.get(i + 1))
        .map(|m| m.parse())
        .transpose()?
        .unwrap_or(10);
    let engine = PluginEngine::new().map_err(|e| anyhow::anyhow!("{e:#}"))?;
    call_costs(&engine).await?;
    aot_ratios(&engine)?;
    rss_over_time(minutes).await
}
