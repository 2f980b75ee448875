//! bronzectl against real nodes: fan-out with a stopped node, output
//! formats, client configs and contexts, gen config, health, events.

use bronze_tests::{Node, Pki, bronzectl, free_port};
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fan_out_with_one_node_down() {
    let pki = Pki::new();
    let a = Node::start_configured(&pki.node_config("a")).await;
    let b = Node::start_configured(&pki.node_config("b")).await;
    let down = format!("127.0.0.1:{}", free_port());
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("bronzeconfig");
    pki.write_bronzeconfig(&config, &[a.addr.clone(), b.addr.clone(), down.clone()], &["os:admin"]);

    let run = bronzectl(Some(&config), &["version"]).await;
    assert_ne!(run.code, 0, "one node failed: exit code must be non-zero");
    let lines: Vec<_> = run.stdout.lines().collect();
    assert_eq!(lines.len(), 4, "{}", run.stdout);
    assert!(lines[0].starts_with("NODE"));
    assert!(lines[1].starts_with(&a.addr) && lines[1].contains("process"), "{}", lines[1]);
    assert!(lines[2].starts_with(&b.addr) && lines[2].contains("process"), "{}", lines[2]);
    assert!(lines[3].starts_with(&down) && lines[3].contains("error: cannot connect"), "{}", lines[3]);
    assert!(run.stderr.contains(&format!("node {down}: cannot connect:")), "{}", run.stderr);

    let run = bronzectl(Some(&config), &["-o", "json", "get", "machinestatus"]).await;
    assert_ne!(run.code, 0);
    let objects: Vec<Value> = run.stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(objects.len(), 3);
    for (obj, node) in objects.iter().zip([&a.addr, &b.addr]) {
        assert_eq!(obj["node"], node.as_str());
        assert_eq!(obj["resources"][0]["spec"]["stage"], "running");
        assert_eq!(obj["resources"][0]["spec"]["ready"], true);
    }
    assert_eq!(objects[2]["node"], down.as_str());
    assert!(objects[2]["error"].as_str().unwrap().starts_with("cannot connect"));

    // -n overrides the context's nodes; all good → exit 0; yaml works.
    let run = bronzectl(Some(&config), &["-n", &format!("{},{}", a.addr, b.addr), "-o", "yaml", "version"]).await;
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(run.stdout.matches("---\n").count(), 2);
    assert!(run.stdout.contains(&format!("node: {}", a.addr)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gen_config_then_contexts_and_minted_clients() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let endpoint = format!("127.0.0.1:{port}");
    let out = dir.path().join("gen");
    let run =
        bronzectl(None, &["gen", "config", "lab", "--endpoint", &endpoint, "--output-dir", out.to_str().unwrap()])
            .await;
    assert_eq!(run.code, 0, "{run:?}");
    let again =
        bronzectl(None, &["gen", "config", "lab", "--endpoint", &endpoint, "--output-dir", out.to_str().unwrap()])
            .await;
    assert_ne!(again.code, 0, "refuses to overwrite");
    assert!(again.stderr.contains("already exists; pass --force"), "{again:?}");

    let node_yaml = std::fs::read_to_string(out.join("node.yaml")).unwrap();
    assert!(node_yaml.contains("    servers: []\n"), "no time servers in generated configs unless asked");
    let with_time = dir.path().join("with-time");
    let run = bronzectl(
        None,
        &[
            "gen",
            "config",
            "lab",
            "--endpoint",
            &endpoint,
            "--time-server",
            "127.0.0.1:123",
            "--time-server",
            "ntp.lan",
            "--output-dir",
            with_time.to_str().unwrap(),
        ],
    )
    .await;
    assert_eq!(run.code, 0, "{run:?}");
    let timed = std::fs::read_to_string(with_time.join("node.yaml")).unwrap();
    assert!(timed.contains("    servers: [\"127.0.0.1:123\", \"ntp.lan\"]\n"), "{timed}");
    assert!(bronze_config::load(timed.as_bytes()).is_ok());
    let node =
        Node::start_with(bronze_tests::NodeOptions { config: Some(node_yaml), port: Some(port), ..Default::default() })
            .await;
    let bc = out.join("bronzeconfig");

    let run = bronzectl(Some(&bc), &["-o", "json", "version"]).await;
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(serde_json::from_str::<Value>(run.stdout.trim()).unwrap()["node"], endpoint.as_str());
    let run = bronzectl(Some(&bc), &["health"]).await;
    assert!(run.code == 0 && run.stdout.contains("SERVING"), "{run:?}");

    // Mint a reader config through the node and use it.
    let reader = dir.path().join("reader");
    let run = bronzectl(
        Some(&bc),
        &["config", "new", "--roles", "os:reader", "--ttl", "1h", "--output-file", reader.to_str().unwrap()],
    )
    .await;
    assert_eq!(run.code, 0, "{run:?}");
    let run = bronzectl(Some(&reader), &["get", "machinestatus"]).await;
    assert_eq!(run.code, 0, "{run:?}");
    let run = bronzectl(Some(&reader), &["reboot"]).await;
    assert!(run.stderr.contains("permission denied: os:reader may not call Reboot"), "{run:?}");
    let run =
        bronzectl(Some(&bc), &["config", "new", "--roles", "root", "--output-file", reader.to_str().unwrap()]).await;
    assert!(run.stderr.contains("unknown role \"root\""), "{run:?}");

    // Contexts: list, switch, unknown.
    let run = bronzectl(Some(&bc), &["config", "contexts"]).await;
    assert!(run.stdout.lines().any(|l| l.starts_with('*') && l.contains("lab")), "{run:?}");
    let run = bronzectl(Some(&bc), &["config", "use-context", "nope"]).await;
    assert!(run.code != 0 && run.stderr.contains("context \"nope\" is not in"), "{run:?}");
    let run = bronzectl(Some(&bc), &["--context", "nope", "version"]).await;
    assert!(run.code != 0 && run.stderr.contains("context \"nope\""), "{run:?}");

    // Events: the config new call above was audited.
    let run = bronzectl(Some(&bc), &["-o", "json", "events", "--tail", "5"]).await;
    let v: Value = serde_json::from_str(run.stdout.trim()).unwrap();
    assert!(
        v["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["method"] == "/bronze.v1.MachineService/GenerateClientConfiguration" && e["result"] == "ok"),
        "{v}"
    );

    // Dry run shows a diff and changes nothing.
    let edited = dir.path().join("edited.yaml");
    std::fs::write(
        &edited,
        std::fs::read_to_string(out.join("node.yaml")).unwrap().replace("hostname: lab", "hostname: lab2"),
    )
    .unwrap();
    let run = bronzectl(Some(&bc), &["apply-config", "-f", edited.to_str().unwrap(), "--dry-run"]).await;
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains("+  hostname: lab2"), "{run:?}");
    assert_eq!(node.stored_config().unwrap(), std::fs::read(out.join("node.yaml")).unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_streams_changes() {
    let pki = Pki::new();
    let node = Node::start_configured(&pki.node_config("w")).await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("bc");
    pki.write_bronzeconfig(&config, std::slice::from_ref(&node.addr), &["os:admin"]);
    let mut child = tokio::process::Command::new(bronze_tests::bin("bronzectl"))
        .args(["-o", "json", "get", "auditevents", "-w"])
        .env("BRONZECONFIG", &config)
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(child.stdout.take().unwrap()));
    // Give the watch time to start, then cause an audited call.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let run = bronzectl(Some(&config), &["reboot"]).await;
    assert_eq!(run.code, 0);
    // Earlier events are replayed first; the reboot must arrive as a creation.
    let reboot = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            let v: Value = serde_json::from_str(&line).unwrap();
            assert_eq!(v["node"], node.addr.as_str());
            if v["spec"]["method"] == "/bronze.v1.MachineService/Reboot" {
                return v;
            }
        }
        panic!("watch ended");
    })
    .await
    .expect("reboot event streamed");
    assert_eq!(reboot["event"], "created");
}
