//! Documents that decode but fail validation (`load` refuses them), and
//! warnings that do not refuse.

use bronze_config::{ConfigError, Issue, decode, load, validate};

use crate::fixtures::{CA_CRT, CA_KEY, NODE_CRT, NODE_KEY, block, doc};

fn issues(doc: &str) -> Vec<Issue> {
    match load(doc.as_bytes()) {
        Err(ConfigError::Invalid(issues)) => issues,
        other => panic!("expected validation errors, got {other:?}\n{doc}"),
    }
}

/// Asserts one of the errors has this path and message fragment.
#[track_caller]
fn expect_issue(doc: &str, path: &str, fragment: &str) {
    let found = issues(doc);
    assert!(
        found.iter().any(|i| i.path == path && i.message.contains(fragment)),
        "wanted {path}: {fragment}\ngot: {found:?}"
    );
}

#[test]
fn compile_limits_the_compiler_cannot_work_in() {
    let d = doc("  plugins:\n    compile:\n      memoryLimit: 16MiB\n      cpuLimit: 500ms\n");
    assert_eq!(
        issues(&d),
        [
            Issue {
                path: "machine.plugins.compile.memoryLimit".into(),
                message: "16MiB is too little: the compiler needs at least 32MiB".into()
            },
            Issue {
                path: "machine.plugins.compile.cpuLimit".into(),
                message: "500ms is too little: at least 1s".into()
            },
        ]
    );
    load(doc("  plugins:\n    compile:\n      memoryLimit: 32MiB\n      cpuLimit: 1s\n").as_bytes()).unwrap();
}

#[test]
fn min_poll_above_max_poll() {
    let d = doc("  time:\n    minPoll: 2048s\n");
    let found = issues(&d);
    assert_eq!(
        found,
        [Issue { path: "machine.time.minPoll".into(), message: "2048s is greater than maxPoll (1024s)".into() }]
    );
    assert_eq!(
        load(d.as_bytes()).unwrap_err().to_string(),
        "machine.time.minPoll: 2048s is greater than maxPoll (1024s)"
    );
}

#[test]
fn time_bounds() {
    let d = doc("  time:\n    minPoll: 500ms\n    maxPoll: 37h\n    stepThreshold: 0s\n    bootTimeout: 0s\n");
    let found = issues(&d);
    let shown = ConfigError::Invalid(found.clone()).to_string();
    assert_eq!(
        shown,
        "machine.time.minPoll: 500ms is shorter than the minimum of 1s; \
         machine.time.maxPoll: 37h is longer than the maximum of 36h; \
         machine.time.stepThreshold: must be greater than zero; \
         machine.time.bootTimeout: must be greater than zero"
    );
}

#[test]
fn dependency_cycle() {
    let d = doc(
        "  services:\n    - name: a\n      command: /bin/a\n      dependsOn: [b]\n    - name: b\n      command: /bin/b\n      dependsOn: [network-ready, a]\n",
    );
    expect_issue(&d, "machine.services[1].dependsOn[1]", "dependency cycle: a -> b -> a");
    assert_eq!(issues(&d).len(), 1);
}

#[test]
fn longer_cycle_reported_once() {
    let d = doc(
        "  services:\n    - {name: a, command: /a, dependsOn: [b]}\n    - {name: b, command: /b, dependsOn: [c]}\n    - {name: c, command: /c, dependsOn: [a]}\n    - {name: d, command: /d, dependsOn: [a]}\n",
    );
    let found = issues(&d);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].to_string(), "machine.services[2].dependsOn[0]: dependency cycle: a -> b -> c -> a");
}

#[test]
fn self_dependency() {
    let d = doc("  services:\n    - name: a\n      command: /bin/a\n      dependsOn: [a]\n");
    let found = issues(&d);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].to_string(), "machine.services[0].dependsOn[0]: service \"a\" cannot depend on itself");
}

#[test]
fn unknown_dependency() {
    let d = doc("  services:\n    - name: a\n      command: /bin/a\n      dependsOn: [time-synced, db]\n");
    expect_issue(
        &d,
        "machine.services[0].dependsOn[1]",
        "unknown service \"db\"; expected a service name, time-synced or network-ready",
    );
}

#[test]
fn duplicate_service_and_reserved_names() {
    let d = doc(
        "  services:\n    - {name: a, command: /a}\n    - {name: a, command: /a}\n    - {name: time-synced, command: /t}\n",
    );
    expect_issue(&d, "machine.services[1].name", "service \"a\" is defined more than once");
    expect_issue(&d, "machine.services[2].name", "\"time-synced\" is reserved for a milestone");
}

#[test]
fn health_needs_exactly_one_probe() {
    let none = doc("  services:\n    - name: a\n      command: /bin/a\n      health:\n        interval: 5s\n");
    expect_issue(&none, "machine.services[0].health", "exactly one of tcp, http or plugin must be set, found 0");
    let two = doc(
        "  services:\n    - name: a\n      command: /bin/a\n      health:\n        tcp: 127.0.0.1:80\n        http: http://127.0.0.1/\n",
    );
    expect_issue(&two, "machine.services[0].health", "found 2");
    let ftp = doc("  services:\n    - name: a\n      command: /bin/a\n      health:\n        http: ftp://127.0.0.1/\n");
    expect_issue(&ftp, "machine.services[0].health.http", "scheme \"ftp\" is not allowed");
}

#[test]
fn service_memory_limit_too_small() {
    let d = doc("  services:\n    - name: a\n      command: /bin/a\n      resources:\n        memory: 1MiB\n");
    expect_issue(&d, "machine.services[0].resources.memory", "1MiB is too small; expected at least 4MiB");
    load(doc("  services:\n    - name: a\n      command: /bin/a\n      resources:\n        memory: 4MiB\n        cpu: 1.5\n").as_bytes())
        .unwrap();
}

#[test]
fn missing_ca_key_without_api_crt() {
    let d = format!("version: v1alpha1\nmachine:\n  hostname: n\n  api:\n    ca:\n      crt: |\n{}", block(CA_CRT, 8));
    let found = issues(&d);
    assert_eq!(
        found[0].to_string(),
        "machine.api.ca.key: required to mint the node's server certificate when machine.api.crt is not set"
    );
}

#[test]
fn api_crt_and_key_go_together() {
    let head =
        format!("version: v1alpha1\nmachine:\n  hostname: n\n  api:\n    ca:\n      crt: |\n{}", block(CA_CRT, 8));
    let crt_only = format!("{head}    crt: |\n{}", block(NODE_CRT, 6));
    expect_issue(&crt_only, "machine.api.key", "required when machine.api.crt is set");
    let key_only = format!("{head}    key: |\n{}", block(NODE_KEY, 6));
    expect_issue(&key_only, "machine.api.crt", "required when machine.api.key is set");
    let both = format!("{head}    crt: |\n{}    key: |\n{}", block(NODE_CRT, 6), block(NODE_KEY, 6));
    let loaded = load(both.as_bytes()).unwrap();
    assert!(loaded.config.machine.api.ca.key.is_none());
    assert_eq!(loaded.config.machine.api.crt.unwrap().as_str(), NODE_CRT);
    let _ = CA_KEY;
}

#[test]
fn network_rules() {
    let d = doc(
        "  network:\n    interfaces:\n      - name: eth0\n        mtu: 67\n        routes:\n          - {network: 0.0.0.0/0, gateway: 'fd00::1'}\n      - name: eth0\n        mtu: 65536\n",
    );
    expect_issue(&d, "machine.network.interfaces[0].mtu", "67 is outside 68..=65535");
    expect_issue(
        &d,
        "machine.network.interfaces[0].routes[0].gateway",
        "gateway fd00::1 and network 0.0.0.0/0 are of different IP families",
    );
    expect_issue(&d, "machine.network.interfaces[1].name", "interface \"eth0\" is configured more than once");
    expect_issue(&d, "machine.network.interfaces[1].mtu", "65536 is outside 68..=65535");
}

#[test]
fn network_bond_vlan_and_selector_rules() {
    let d = doc(concat!(
        "  network:\n    interfaces:\n",
        "      - selector: {}\n",
        "      - name: eth0\n        selector: {driver: virtio_net}\n",
        "      - selector: {hardwareAddr: '52:54:00'}\n",
        "      - name: bond0\n        bond: {mode: active-backup, interfaces: [eth1, bond0], lacpRate: fast}\n",
        "        vlans:\n          - {vlanId: 0}\n          - {vlanId: 4094}\n          - {vlanId: 4094}\n",
        "      - name: bond1\n        bond: {mode: 802.3ad, interfaces: [eth1]}\n",
        "      - name: eth1\n        addresses: [10.0.0.5/24]\n        routes:\n          - {network: 10.9.0.0/16, onLink: true}\n",
        "      - {}\n",
        "    configurator: {instance: nowhere}\n",
    ));
    expect_issue(
        &d,
        "machine.network.interfaces[0].selector",
        "it selects nothing: give hardwareAddr, driver or busPath",
    );
    expect_issue(&d, "machine.network.interfaces[1].selector", "give either `name` or `selector`, not both");
    expect_issue(&d, "machine.network.interfaces[2].selector.hardwareAddr", "\"52:54:00\" is not a hardware address");
    expect_issue(&d, "machine.network.interfaces[3].bond.interfaces[1]", "a bond cannot be its own member");
    expect_issue(&d, "machine.network.interfaces[3].bond.lacpRate", "lacpRate applies to mode 802.3ad only");
    expect_issue(&d, "machine.network.interfaces[3].vlans[0].vlanId", "0 is outside 1..=4094");
    expect_issue(&d, "machine.network.interfaces[3].vlans[2].vlanId", "VLAN 4094 is configured twice");
    expect_issue(
        &d,
        "machine.network.interfaces[4].bond.interfaces[0]",
        "link \"eth1\" is a member of more than one bond",
    );
    expect_issue(
        &d,
        "machine.network.interfaces[5]",
        "\"eth1\" is a bond member; its addresses, routes and DHCP belong on the bond",
    );
    expect_issue(&d, "machine.network.interfaces[5].routes[0].onLink", "onLink needs a gateway");
    expect_issue(&d, "machine.network.interfaces[6]", "give the link's `name` or a `selector`");
    expect_issue(&d, "machine.network.configurator.instance", "instance \"nowhere\" is not defined");
}

#[test]
fn plugin_rules() {
    let d = doc(
        "  plugins:\n    instances:\n      - id: p\n        grants:\n          http:\n            - url: ftp://127.0.0.1/x\n            - url: http://127.0.0.1/x?y=1\n              methods: []\n      - id: p\n",
    );
    expect_issue(
        &d,
        "machine.plugins.instances[0].grants.http[0].url",
        "scheme \"ftp\" is not allowed; expected http or https",
    );
    expect_issue(
        &d,
        "machine.plugins.instances[0].grants.http[1].url",
        "a grant is a URL prefix and cannot have a query or fragment",
    );
    expect_issue(&d, "machine.plugins.instances[0].grants.http[1].methods", "must list at least one method");
    expect_issue(&d, "machine.plugins.instances[1].id", "plugin instance \"p\" is defined more than once");
}

#[test]
fn platform_providers_name_existing_instances() {
    let d = doc(
        "  plugins:\n    instances:\n      - id: my-aws\n  platform:\n    providers:\n      aws: my-aws\n      gcp: nope\n",
    );
    expect_issue(&d, "machine.platform.providers.gcp", "instance \"nope\" is not defined in machine.plugins.instances");
    assert_eq!(issues(&d).len(), 1, "{:?}", issues(&d));
}

#[test]
fn warnings_do_not_refuse() {
    let d =
        format!("version: v1alpha1\nmachine:\n{}  plugins:\n    allowUnsigned: true\n", crate::fixtures::api_section());
    let loaded = load(d.as_bytes()).unwrap();
    let shown: Vec<String> = loaded.warnings.iter().map(Issue::to_string).collect();
    assert_eq!(
        shown,
        [
            "machine.hostname: no hostname: the node keeps its current one",
            "machine.time.servers: no time servers: PID 1 keeps its default (bronze.ntp= or pool.ntp.org), process mode \
             does not sync",
            "machine.plugins.allowUnsigned: unsigned plugins are accepted",
        ]
    );
    let disabled = doc("  time:\n    disabled: true\n");
    assert!(load(disabled.as_bytes()).unwrap().warnings.is_empty());
}

#[test]
fn validate_reports_without_refusing() {
    let d = doc("  time:\n    minPoll: 2048s\n");
    let cfg = decode(d.as_bytes()).unwrap();
    let v = validate(&cfg);
    assert!(!v.is_ok());
    assert_eq!(v.errors.len(), 1);
    assert_eq!(v.warnings.len(), 1);
}
