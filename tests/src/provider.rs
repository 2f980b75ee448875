//! What the provider tests share: a fake sysfs with DMI fields, a node
//! running a provider's instances against loopback mocks ([`MockedNode`]), a
//! plugin's manifest `[grants]` as an instance's grants, a network namespace
//! whose `lo` holds a cloud's metadata address, `mockcloud` serving there,
//! and the whole "unchanged plugin against its real endpoint" run.

use crate::netns::NetNs;
use crate::plugins::{bundle, config_with_plugins, install, instance_yaml, run};
use crate::{Node, NodeOptions, Pki};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A temp dir holding `class/dmi/id/<field>` files (for `--sysfs`).
pub fn fake_sysfs(fields: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let dmi = dir.path().join("class/dmi/id");
    std::fs::create_dir_all(&dmi).expect("mkdir dmi");
    for (field, value) in fields {
        std::fs::write(dmi.join(field), format!("{value}\n")).expect("write dmi field");
    }
    dir
}

/// A node in process mode whose DMI (a fake sysfs) holds the given fields,
/// running one instance of a provider plugin per `(instance id, mock)`, each
/// configured with `endpoint: <the mock>` and granted `grants(<the mock's
/// base URL>)`; the plugin's bundle installed over the API.
pub struct MockedNode {
    pub node: Node,
    pub client: bronzectl::client::NodeClient,
    _sysfs: tempfile::TempDir,
    _files: tempfile::TempDir,
}

impl MockedNode {
    pub async fn start(
        plugin: &str,
        hostname: &str,
        dmi: &[(&str, &str)],
        grants: impl Fn(&str) -> String,
        mocks: &[(&str, &crate::mockcloud::MockServer)],
    ) -> MockedNode {
        Self::start_with(plugin, hostname, dmi, grants, mocks, |_| Vec::new()).await
    }

    /// [`MockedNode::start`], with more `bronzed` arguments from `extra`,
    /// which may write what they name (a config drive, say) under the
    /// directory it is given; that directory lives as long as the node.
    pub async fn start_with(
        plugin: &str,
        hostname: &str,
        dmi: &[(&str, &str)],
        grants: impl Fn(&str) -> String,
        mocks: &[(&str, &crate::mockcloud::MockServer)],
        extra: impl FnOnce(&std::path::Path) -> Vec<String>,
    ) -> MockedNode {
        let sysfs = fake_sysfs(dmi);
        let files = tempfile::tempdir().expect("tempdir");
        let mut args = vec!["--sysfs".to_string(), sysfs.path().display().to_string()];
        args.extend(extra(files.path()));
        let instances: String = mocks
            .iter()
            .map(|(id, mock)| {
                instance_yaml(id, plugin, &format!("endpoint: \"{}\"", mock.base()), &grants(&mock.base()), None)
            })
            .collect();
        let pki = Pki::new();
        let config = config_with_plugins(&pki, hostname, &format!("allowUnsigned: true\n    instances:{instances}"));
        let node = Node::start_with(NodeOptions { config: Some(config), args, ..Default::default() }).await;
        let client = node.client(&pki.auth(&["os:admin"])).await;
        install(client.channel.clone(), &bundle(plugin))
            .await
            .unwrap_or_else(|e| panic!("install {plugin}: {e}\n{}", node.log()));
        MockedNode { node, client, _sysfs: sysfs, _files: files }
    }

    /// Runs instance `id` now; its result document (the node's log if it is
    /// not JSON).
    pub async fn result(&self, id: &str) -> serde_json::Value {
        let done = run(&self.client, id).await;
        serde_json::from_str(&done.result_json)
            .unwrap_or_else(|e| panic!("{id}: result {:?}: {e}\n{}", done.result_json, self.node.log()))
    }
}

/// The plugin's manifest `[grants]` as the body of a YAML flow mapping:
/// what the image's built-in instance runs with.
pub fn manifest_grants(plugin: &str) -> String {
    let grants = bundle(plugin).manifest.grants.unwrap_or_else(|| panic!("{plugin}: no [grants] in plugin.toml"));
    let json = serde_json::to_string(&grants).expect("grants as JSON");
    json.trim_start_matches('{').trim_end_matches('}').to_string()
}

/// A namespace with `lo` up holding each of `addresses` (CIDR); None, after
/// a loud line naming `what`, where namespaces cannot be made.
pub fn imds_namespace(what: &str, addresses: &[&str]) -> Option<NetNs> {
    if let Some(why) = crate::netns::unavailable() {
        eprintln!("\n!!!!!!!! SKIPPED {what}: {why} !!!!!!!!\n");
        return None;
    }
    let ns = NetNs::new().expect("netns");
    for cidr in addresses {
        let status =
            Command::new("ip").args(["-n", ns.name(), "addr", "add", cidr, "dev", "lo"]).status().expect("ip addr add");
        assert!(status.success(), "ip -n {} addr add {cidr} dev lo", ns.name());
    }
    Some(ns)
}

/// `mockcloud --cloud NAME --listen ADDR` inside a namespace, started once
/// it listens; killed on drop. Its request log is kept.
pub struct NsMock {
    child: Child,
    log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl NsMock {
    /// The cloud's mock at 169.254.169.254:80.
    pub fn start(ns: &NetNs, cloud: &str) -> NsMock {
        Self::start_at(ns, cloud, "169.254.169.254:80")
    }

    pub fn start_at(ns: &NetNs, cloud: &str, listen: &str) -> NsMock {
        let mut child = Command::new("ip")
            .args(["netns", "exec", ns.name()])
            .arg(crate::bin("mockcloud"))
            .args(["--cloud", cloud, "--listen", listen])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn mockcloud");
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let stderr = child.stderr.take().expect("stderr");
        let sink = log.clone();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(hit) = line.strip_prefix("mockcloud: ").filter(|l| !l.contains(" listening on ")) {
                    sink.lock().unwrap().push(hit.to_string());
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let out = Command::new("ip").args(["netns", "exec", ns.name(), "ss", "-Hltn"]).output().expect("ss");
            if String::from_utf8_lossy(&out.stdout).split_whitespace().any(|w| w == listen) {
                break;
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!("mockcloud --cloud {cloud} exited: {status}");
            }
            assert!(Instant::now() < deadline, "mockcloud --cloud {cloud} never listened on {listen}");
            std::thread::sleep(Duration::from_millis(20));
        }
        NsMock { child, log }
    }

    /// `METHOD path` of every request so far (the binary logs them every
    /// 100 ms).
    pub fn hits(&self) -> Vec<String> {
        std::thread::sleep(Duration::from_millis(250));
        self.log.lock().unwrap().clone()
    }
}

impl Drop for NsMock {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// bronzed (process mode) started inside `ns` with `config` and `args`,
/// its API reached through a relay; waits until it answers.
pub async fn node_in(ns: &mut NetNs, config: String, args: Vec<String>) -> Node {
    let port = crate::free_port();
    let mut node = Node::spawn(NodeOptions {
        config: Some(config),
        args,
        port: Some(port),
        wrapper: vec!["ip".into(), "netns".into(), "exec".into(), ns.name().into()],
        ..Default::default()
    });
    node.addr = format!("127.0.0.1:{}", ns.tcp_into(port).expect("relay into the namespace"));
    node.wait_ready().await;
    node
}

/// The unchanged plugin against the cloud's real address: in a network
/// namespace 169.254.169.254 is a local address served by `mockcloud
/// --cloud PLUGIN` on port 80, bronzed runs there with the DMI `dmi`, and
/// the instance has no config and exactly the manifest's `[grants]` (what
/// the image's built-in instance runs with). Returns `plugins run`'s JSON;
/// None (and a loud line) where namespaces cannot be made.
pub async fn real_endpoint(plugin: &str, dmi: &[(&str, &str)]) -> Option<serde_json::Value> {
    let mut ns = imds_namespace(&format!("{plugin} real-endpoint test"), &["169.254.169.254/32"])?;
    let _mock = NsMock::start(&ns, plugin);
    let sysfs = fake_sysfs(dmi);
    let instances = instance_yaml(plugin, plugin, "", &manifest_grants(plugin), None);
    let pki = Pki::new();
    let config = config_with_plugins(&pki, "real", &format!("allowUnsigned: true\n    instances:{instances}"));
    let node = node_in(&mut ns, config, vec!["--sysfs".into(), sysfs.path().display().to_string()]).await;
    let client = node.client(&pki.auth(&["os:admin"])).await;
    install(client.channel.clone(), &bundle(plugin)).await.unwrap_or_else(|e| panic!("install: {e}\n{}", node.log()));
    let done = run(&client, plugin).await;
    Some(serde_json::from_str(&done.result_json).expect("plugins run JSON"))
}
