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
        // While the subsystems restart, the status is briefly not there:
        // not found is "not yet", like any other stage.
        let got = c
            .resources
            .get(pb::GetRequest { namespace: String::new(), r#type: "machinestatus".into(), id: "machine".into() })
            .await;
        let stage = match got {
            Ok(got) => {
                let spec: serde_json::Value =
                    serde_json::from_str(&got.into_inner().resource.expect("resource").spec_json).expect("spec json");
                spec["stage"].as_str().unwrap_or_default().to_string()
            }
            Err(e) if e.code() == tonic::Code::NotFound => String::new(),
            Err(e) => panic!("get machinestatus machine: {e}"),
        };
        if saw_rebooting && stage == "running" {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_hostname_and_reflection() {
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

    let pki = Pki::new();
    let node = Node::start_configured(&pki.node_config("stats-node")).await;
    let mut c = node.client(&pki.auth(&["os:reader"])).await;
    let mem = c.machine.memory(pb::MemoryRequest {}).await.unwrap().into_inner();
    assert!(mem.total_bytes > 0 && mem.available_bytes <= mem.total_bytes, "{mem:?}");
    let load = c.machine.load_avg(pb::LoadAvgRequest {}).await.unwrap().into_inner();
    assert!(load.load1 >= 0.0 && load.load15 >= 0.0);
    let host = c.machine.hostname(pb::HostnameRequest {}).await.unwrap().into_inner();
    assert_eq!(host.hostname, "stats-node");

    // Network state is observed in process mode too (read-only).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let links = c
            .resources
            .list(pb::ListRequest { namespace: String::new(), r#type: "links".into() })
            .await
            .unwrap()
            .into_inner();
        if links.resources.iter().any(|r| r.metadata.as_ref().is_some_and(|m| m.id == "lo")) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no lo among {links:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let routes = c
        .resources
        .list(pb::ListRequest { namespace: String::new(), r#type: "routes".into() })
        .await
        .unwrap()
        .into_inner();
    assert!(!routes.resources.is_empty(), "routes are observed");

    // Reflection: standard tools can discover the services.
    let mut reflection = ServerReflectionClient::new(c.channel.clone());
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut stream =
        reflection.server_reflection_info(futures::stream::iter(vec![request])).await.unwrap().into_inner();
    let Some(MessageResponse::ListServicesResponse(list)) = stream.message().await.unwrap().unwrap().message_response
    else {
        panic!("expected a service list");
    };
    let names: Vec<_> = list.service.iter().map(|s| s.name.as_str()).collect();
    for want in ["bronze.v1.MachineService", "bronze.v1.ResourceService", "grpc.health.v1.Health"] {
        assert!(names.contains(&want), "{want} missing from {names:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn use_context_switches_the_current_context() {
    let pki = Pki::new();
    let node = Node::start_configured(&pki.node_config("ctx")).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bc");
    pki.write_bronzeconfig(&path, std::slice::from_ref(&node.addr), &["os:admin"]);
    // Add a second context pointing nowhere, make it current, then switch back.
    let mut config = bronzectl::clientconfig::ClientConfig::load(&path).unwrap();
    let mut other = config.contexts["test"].clone();
    other.nodes = vec![format!("127.0.0.1:{}", bronze_tests::free_port())];
    config.contexts.insert("other".into(), other);
    config.context = "other".into();
    config.save(&path).unwrap();
    assert_ne!(bronze_tests::bronzectl(Some(&path), &["version"]).await.code, 0);
    let run = bronze_tests::bronzectl(Some(&path), &["config", "use-context", "test"]).await;
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(bronze_tests::bronzectl(Some(&path), &["version"]).await.code, 0);
    assert_eq!(bronzectl::clientconfig::ClientConfig::load(&path).unwrap().context, "test");
}
