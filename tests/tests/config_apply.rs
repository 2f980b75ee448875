//! Machine config over the API: bad documents are refused with an error that
//! names the field and change nothing; try, staged and dry-run behave.

use bronze_api::v1 as pb;
use bronze_tests::{Node, Pki};
use bronzectl::client::NodeClient;
use std::time::{Duration, Instant};
use tonic::Code;

async fn apply(
    c: &mut NodeClient,
    data: &[u8],
    mode: pb::ApplyMode,
    dry_run: bool,
    try_ms: u64,
) -> Result<pb::ApplyConfigurationResponse, tonic::Status> {
    let req = pb::ApplyConfigurationRequest { data: data.to_vec(), mode: mode as i32, dry_run, try_timeout_ms: try_ms };
    c.machine.apply_configuration(req).await.map(|r| r.into_inner())
}

async fn live(c: &mut NodeClient) -> String {
    let r = c.machine.get_configuration(pb::GetConfigurationRequest {}).await.unwrap().into_inner();
    String::from_utf8(r.data).unwrap()
}

/// Replaces the first occurrence of `from` in the good config.
fn edit(good: &str, from: &str, to: &str) -> String {
    assert!(good.contains(from), "template lacks {from:?}");
    good.replacen(from, to, 1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_configs_are_refused_and_change_nothing() {
    let pki = Pki::new();
    let good = pki.node_config("good");
    let node = Node::start_configured(&good).await;
    let mut c = node.client(&pki.auth(&["os:admin"])).await;
    let stored_before = node.stored_config().expect("stored");

    let huge = format!("{good}\n#{}", "x".repeat(10 << 20));
    let cases: Vec<(&str, String, &str)> = vec![
        ("unknown top-level key", format!("{good}\nbogus: 1\n"), "unknown field `bogus`"),
        ("unknown nested key", edit(&good, "  hostname: good", "  hostname: good\n  colour: red"), "machine"),
        ("wrong type", edit(&good, "  hostname: good", "  hostname: [a, b]"), "machine.hostname"),
        ("bad hostname", edit(&good, "  hostname: good", "  hostname: -bad-"), "machine.hostname"),
        ("empty CA", good.replace(&indent(&pki.ca.cert_pem), "        \n"), "machine.api.ca.crt"),
        ("garbage CA", good.replace(&indent(&pki.ca.cert_pem), "        not a certificate\n"), "machine.api.ca.crt"),
        ("duplicate key", edit(&good, "  hostname: good", "  hostname: good\n  hostname: again"), "hostname"),
        ("not YAML", "version: [unclosed\n".into(), "line"),
        ("top-level list", "- a\n- b\n".into(), "mapping"),
        ("empty document", String::new(), "empty"),
        ("10 MiB document", huge, "the limit is 1048576 bytes"),
        ("wrong version", edit(&good, "version: v1alpha1", "version: v2"), "unsupported version \"v2\""),
        ("missing version", edit(&good, "version: v1alpha1", ""), "version"),
        ("bad CIDR", with_network(&good, "addresses: [10.0.0.300/24]"), "machine.network.interfaces[0].addresses[0]"),
        (
            "prefix too long",
            with_network(&good, "addresses: [10.0.0.1/33]"),
            "machine.network.interfaces[0].addresses[0]",
        ),
        ("missing prefix", with_network(&good, "addresses: [10.0.0.1]"), "prefix length"),
        ("long link name", with_link(&good, "averyveryverylonglinkname"), "machine.network.interfaces[0].name"),
        ("bad duration", with_time(&good, "bootTimeout: 2x"), "machine.time.bootTimeout"),
        ("negative duration", with_time(&good, "bootTimeout: -5s"), "negative"),
        ("minPoll above maxPoll", edit(&good, "    minPoll: 64s", "    minPoll: 2048s"), "minPoll"),
        (
            "bad server port",
            edit(&good, "    servers: []", "    servers: [\"127.0.0.1:99999\"]"),
            "machine.time.servers[0]",
        ),
        ("bad sysctl value type", edit(&good, "  sysctls: {}", "  sysctls: [1, 2]"), "machine.sysctls"),
        ("bad restart policy", with_service(&good, "restart: sometimes"), "restart"),
        ("unknown dependency", with_service(&good, "dependsOn: [ghost]"), "ghost"),
        (
            "bad trusted key",
            edit(&good, "    trustedKeys: []", "    trustedKeys: [abc]"),
            "machine.plugins.trustedKeys[0]",
        ),
    ];
    assert!(cases.len() >= 20);
    for (name, doc, want) in &cases {
        let err = apply(&mut c, doc.as_bytes(), pb::ApplyMode::Auto, false, 0).await.expect_err(name);
        assert_eq!(err.code(), Code::InvalidArgument, "{name}: {err:?}");
        assert!(err.message().starts_with("invalid config: "), "{name}: {}", err.message());
        assert!(err.message().contains(want), "{name}: want {want:?} in {:?}", err.message());
        assert_eq!(node.stored_config().unwrap(), stored_before, "{name}: stored config changed");
    }
    // Raw invalid UTF-8 bytes, too.
    let mut bytes = good.clone().into_bytes();
    bytes.extend_from_slice(b"\n# \xff\xfe\n");
    let err = apply(&mut c, &bytes, pb::ApplyMode::Auto, false, 0).await.unwrap_err();
    assert!(err.message().contains("UTF-8"), "{}", err.message());
    assert_eq!(node.stored_config().unwrap(), stored_before);
    assert_eq!(live(&mut c).await, good, "live config unchanged");
}

fn indent(pem: &str) -> String {
    pem.lines().map(|l| format!("        {l}\n")).collect()
}

fn with_network(good: &str, addresses: &str) -> String {
    edit(good, "    interfaces: []", &format!("    interfaces:\n      - name: eth0\n        {addresses}"))
}

fn with_link(good: &str, name: &str) -> String {
    edit(good, "    interfaces: []", &format!("    interfaces:\n      - name: {name}"))
}

fn with_time(good: &str, line: &str) -> String {
    edit(good, "    bootTimeout: 2m", &format!("    {line}"))
}

fn with_service(good: &str, line: &str) -> String {
    edit(good, "  services: []", &format!("  services:\n    - name: web\n      command: /bin/web\n      {line}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn try_rolls_back_staged_waits_dry_run_changes_nothing() {
    let pki = Pki::new();
    let a = pki.node_config("alpha");
    let b = pki.node_config("bravo");
    let node = Node::start_configured(&a).await;
    let mut c = node.client(&pki.auth(&["os:admin"])).await;
    let hostname = |c: &mut NodeClient| {
        let mut c = c.clone();
        async move { c.machine.hostname(pb::HostnameRequest {}).await.unwrap().into_inner().hostname }
    };

    // dry run: a diff, nothing changed.
    let r = apply(&mut c, b.as_bytes(), pb::ApplyMode::Auto, true, 0).await.unwrap();
    assert_eq!(r.mode, "dry-run");
    assert!(r.diff.contains("-  hostname: alpha") && r.diff.contains("+  hostname: bravo"), "{}", r.diff);
    assert_eq!((live(&mut c).await, node.stored_config().unwrap()), (a.clone(), a.clone().into_bytes()));

    // staged: persisted, live untouched until a reboot.
    let r = apply(&mut c, b.as_bytes(), pb::ApplyMode::Staged, false, 0).await.unwrap();
    assert_eq!(r.mode, "staged");
    assert_eq!(live(&mut c).await, a);
    assert_eq!(hostname(&mut c).await, "alpha");
    assert_eq!(node.stored_config().unwrap(), b.as_bytes());
    c.machine.reboot(pb::RebootRequest {}).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while hostname(&mut c).await != "bravo" {
        assert!(Instant::now() < deadline, "staged config not live after reboot");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // try: live at once, not persisted, rolled back after its timeout.
    let r = apply(&mut c, a.as_bytes(), pb::ApplyMode::Try, false, 700).await.unwrap();
    assert_eq!(r.mode, "try");
    assert_eq!(hostname(&mut c).await, "alpha");
    assert_eq!(node.stored_config().unwrap(), b.as_bytes(), "try does not persist");
    let resp = c.machine.get_configuration(pb::GetConfigurationRequest {}).await.unwrap().into_inner();
    assert!(resp.try_pending);
    let deadline = Instant::now() + Duration::from_secs(10);
    while hostname(&mut c).await != "bravo" {
        assert!(Instant::now() < deadline, "try was not rolled back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // try confirmed by a later non-try apply: no rollback.
    apply(&mut c, a.as_bytes(), pb::ApplyMode::Try, false, 500).await.unwrap();
    apply(&mut c, a.as_bytes(), pb::ApplyMode::NoReboot, false, 0).await.unwrap();
    tokio::time::sleep(Duration::from_millis(900)).await;
    assert_eq!(hostname(&mut c).await, "alpha");
    assert_eq!(node.stored_config().unwrap(), a.as_bytes());

    // A change that needs a reboot is refused by no-reboot and try.
    let modules = edit(&a, "    modules: []", "    modules:\n      - name: virtio_net");
    let err = apply(&mut c, modules.as_bytes(), pb::ApplyMode::NoReboot, false, 0).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(err.message().contains("machine.kernel"), "{}", err.message());
    assert_eq!(node.stored_config().unwrap(), a.as_bytes());
}
