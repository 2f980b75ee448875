//! The plugin manager in this test's own process, driven directly: what
//! the API does not reach (stopping and resuming every schedule, as PID 1's
//! failed power-off does). A file of its own because it starts a reaper,
//! which takes every exit status in its process: other tests' child
//! processes must not be in this one.

use bronze_host::plugins::cgroup::NoCgroup;
use bronze_host::plugins::compiler::Compiler;
use bronze_host::services::reaper::Reaper;
use bronze_tests::Pki;
use bronze_tests::plugins::{config_with_plugins, instance_yaml};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A power-off or reboot that fails (reboot(2) refused) leaves PID 1 up
/// after its shutdown sequence stopped every plugin schedule: `resume`
/// must bring them back from the live config, and they must run again.
#[tokio::test]
async fn stopped_plugin_schedules_run_again_after_resume() {
    let pki = Pki::new();
    let instances = instance_yaml("tiny", "trivial", "", "", Some("100ms"));
    let yaml = config_with_plugins(&pki, "resume", &format!("instances:{instances}"));
    let (live, _) = bronze_host::config::parse(yaml.as_bytes()).expect("valid config");
    let (_config_tx, config_rx) = tokio::sync::watch::channel(Some(live));
    let dir = tempfile::tempdir().unwrap();
    // The fixture as an image plugin: installed at start, no signature needed.
    let images = dir.path().join("image-plugins");
    let trivial = images.join("trivial");
    std::fs::create_dir_all(&trivial).unwrap();
    for file in ["plugin.toml", "plugin.wasm"] {
        std::fs::copy(bronze_tests::plugins::bundle_dir("trivial").join(file), trivial.join(file)).unwrap();
    }
    let store = bronze_host::state::Store::new();
    // Compiles run in bronzed's compile worker, whose exit this process's
    // reaper collects, as in the node.
    let reaper = Reaper::start(false).unwrap();
    let compiler = Compiler::new(bronze_tests::bin("bronzed"), reaper, Arc::new(NoCgroup));
    let manager = bronze_host::plugins::PluginManager::start(
        &dir.path().join("plugins"),
        &store,
        &bronze_host::sysinfo::SystemPaths::default(),
        Arc::new(bronze_host::plugins::volumes::NoVolumes),
        Some(images),
        config_rx,
        compiler,
    )
    .unwrap();
    let runs = |m: &bronze_host::plugins::PluginManager| {
        m.list().iter().flat_map(|p| p.instances.iter().map(|i| i.runs)).collect::<Vec<_>>()
    };
    let wait_for_runs = |at_least: u64| {
        let manager = manager.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                let now = runs(&manager);
                if now.first().is_some_and(|r| *r >= at_least) {
                    return now[0];
                }
                assert!(Instant::now() < deadline, "instance never reached {at_least} runs: {now:?}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    wait_for_runs(2).await;

    manager.stop();
    assert_eq!(runs(&manager), Vec::<u64>::new(), "stop leaves no instance");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(runs(&manager), Vec::<u64>::new(), "nothing comes back by itself");

    manager.resume().await;
    // A fresh instance record: it counts from zero and keeps its schedule.
    let after = wait_for_runs(2).await;
    assert!(after >= 2);
}
