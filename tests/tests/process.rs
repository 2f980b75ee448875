//! bronzed as a process: one instance per state dir, clean stop on
//! SIGTERM/SIGINT, reboot restarts subsystems without dropping the API, a
//! bad --config is refused with a clear error.

use bronze_api::v1 as pb;
use bronze_tests::{Node, NodeOptions, Pki};
use nix::sys::signal::Signal;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_dir_is_locked() {
    let first = Node::start().await;
    let mut second = Node::spawn(NodeOptions { state_dir: Some(first.state_dir.clone()), ..Default::default() });
    let status = second.wait_exit(Duration::from_secs(10));
    assert!(!status.success());
    let want = format!("state dir {} is in use by another bronzed (pid {})", first.state_dir.display(), first.pid());
    assert!(second.log().contains(&want), "want {want:?} in:\n{}", second.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signals_stop_cleanly() {
    for signal in [Signal::SIGTERM, Signal::SIGINT] {
        let mut node = Node::start().await;
        let status = node.signal_and_wait(signal, Duration::from_secs(10));
        assert!(status.success(), "{signal}: {status}\n{}", node.log());
        assert!(node.log().contains("shutting down"), "{}", node.log());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reboot_restarts_subsystems_in_process() {
    let pki = Pki::new();
    let node = Node::start_configured(&pki.node_config("r")).await;
    let mut c = node.client(&pki.auth(&["os:operator"])).await;
    let pid = node.pid();
    c.machine.reboot(pb::RebootRequest {}).await.unwrap();
    let mut saw_rebooting = false;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let log = node.log();
        saw_rebooting |= log.contains("reboot: restarting subsystems in-process");
        let status = c
            .resources
            .get(pb::GetRequest { namespace: String::new(), r#type: "machinestatus".into(), id: "machine".into() })
            .await
            .unwrap()
            .into_inner();
        let spec: serde_json::Value = serde_json::from_str(&status.resource.unwrap().spec_json).unwrap();
        if saw_rebooting && spec["stage"] == "running" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no reboot seen:\n{log}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(node.pid(), pid, "same process");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_initial_config_is_refused() {
    let mut node = Node::spawn(NodeOptions {
        config: Some("version: v1alpha1\nmachine: {bogus: 1}\n".into()),
        ..Default::default()
    });
    let status = node.wait_exit(Duration::from_secs(10));
    assert!(!status.success());
    assert!(node.log().contains("unknown field `bogus`"), "{}", node.log());
    assert!(node.stored_config().is_none(), "nothing stored");
}
