//! Documents that must load: the rendered default template, a config with
//! every field set, and encode/decode round trips.

use bronze_config::{
    CertSan, Fact, Host, HttpMethod, LogLevel, MachineConfig, RestartPolicy, decode, default_template, load,
    render_default, validate,
};

use crate::fixtures::{CA_CRT, CA_KEY, NODE_CRT, NODE_KEY, block, doc};

fn render(hostname: &str, sans: &[&str]) -> String {
    let sans: Vec<String> = sans.iter().map(|s| s.to_string()).collect();
    render_default(CA_CRT, CA_KEY, hostname, &sans)
}

#[test]
fn rendered_default_template_loads() {
    let rendered = render("node-1", &["10.0.0.5", "node1.example"]);
    let loaded = load(rendered.as_bytes()).unwrap_or_else(|e| panic!("{e}\n{rendered}"));
    let cfg = &loaded.config;
    assert_eq!(cfg.machine.hostname.as_ref().unwrap().as_str(), "node-1");
    assert_eq!(cfg.machine.api.ca.crt.as_str(), CA_CRT);
    assert_eq!(cfg.machine.api.ca.key.as_ref().unwrap().as_str(), CA_KEY);
    assert_eq!(
        cfg.machine.api.cert_sans,
        [CertSan::Ip("10.0.0.5".parse().unwrap()), CertSan::Dns("node1.example".parse().unwrap())]
    );
    // The only warning is the deliberate lack of time servers.
    assert_eq!(loaded.warnings.len(), 1, "{:?}", loaded.warnings);
    assert_eq!(loaded.warnings[0].path, "machine.time.servers");
    assert!(cfg.machine.time.servers.is_empty());
}

#[test]
fn rendered_template_edge_cases() {
    // No SANs, a hostname YAML would read as a number, and PEM with CRLF.
    let crlf = CA_CRT.replace('\n', "\r\n");
    let rendered = render_default(&crlf, CA_KEY, "123", &[]);
    let cfg = load(rendered.as_bytes()).unwrap_or_else(|e| panic!("{e}\n{rendered}")).config;
    assert_eq!(cfg.machine.hostname.unwrap().as_str(), "123");
    assert!(cfg.machine.api.cert_sans.is_empty());
    assert_eq!(cfg.machine.api.ca.crt.as_str(), CA_CRT);
    // An empty hostname leaves the key out.
    let rendered = render("", &[]);
    let loaded = load(rendered.as_bytes()).unwrap();
    assert!(loaded.config.machine.hostname.is_none());
}

#[test]
fn default_template_has_placeholders_and_no_public_time_servers() {
    let template = default_template();
    for token in ["@CA_CRT@", "@CA_KEY@", "@HOSTNAME@", "@CERT_SANS@"] {
        assert!(template.contains(token), "{token}");
    }
    for public in [
        "pool.ntp.org",
        "time.google.com",
        "time.cloudflare.com",
        "ntp.ubuntu.com",
        "time.windows.com",
        "time.apple.com",
    ] {
        assert!(!template.contains(public), "{public}");
    }
    let rendered = render("node-1", &[]);
    assert!(!rendered.contains('@'), "{rendered}");
    assert!(decode(template.as_bytes()).is_err());
}

/// Every field of the schema set to a non-default value.
fn maximal() -> String {
    format!(
        r#"version: v1alpha1
machine:
  hostname: node-1.example.com
  api:
    ca:
      crt: |
{ca_crt}      key: |
{ca_key}    crt: |
{node_crt}    key: |
{node_key}    certSANs: ["10.0.0.5", "node1.example", "fd00::5"]
  time:
    disabled: true
    servers: ["127.0.0.1:12345", "time.example.com", "[::1]:123", "fd00::1"]
    bootTimeout: 30s
    minPoll: 32s
    maxPoll: 2048s
    stepThreshold: 1s
  kernel:
    modules:
      - name: virtio_net
        parameters: ["debug=1"]
      - name: br_netfilter
  sysctls:
    net.ipv4.ip_forward: "1"
    net/ipv4/conf/eth0.100/rp_filter: "0"
  network:
    interfaces:
      - name: eth0
        addresses: [10.0.2.15/24, "fd00::15/64"]
        routes:
          - network: 0.0.0.0/0
            gateway: 10.0.2.2
            metric: 1024
          - network: 192.168.0.0/16
        mtu: 1500
        dhcp: true
      - name: eth1
        dhcp: true
    nameservers: [10.0.2.3, "fd00::3"]
    searchDomains: [example.com, corp.example.com]
  services:
    - name: db
      command: /usr/bin/db
    - name: web
      command: /usr/bin/web
      args: ["--port", "8080"]
      env:
        RUST_LOG: info
        PORT: 8080
      workingDir: /var/lib/web
      user: 1000
      group: 1000
      dependsOn: [db, time-synced, network-ready]
      restart: on-failure
      health:
        plugin: health-http
        interval: 5s
        timeout: 1s
      logBufferSize: 4MiB
      resources:
        cpu: 500m
        memory: 256MiB
    - name: cache
      command: /usr/bin/cache
      restart: never
      health:
        tcp: 127.0.0.1:6379
      logBufferSize: 65536
    - name: api
      command: /usr/bin/api
      health:
        http: http://127.0.0.1:8080/healthz
  plugins:
    trustedKeys: ["{key}"]
    allowUnsigned: true
    instances:
      - id: health-http
        enabled: false
        config: {{url: "http://127.0.0.1:8080/ok/"}}
        grants:
          config: true
          facts: [dmi, links, cmdline, time]
          http:
            - url: http://127.0.0.1:8080/ok/
              methods: [GET, HEAD]
            - url: https://[::1]/x
          probe:
            - tcp://127.0.0.1:22
            - http://127.0.0.1:8080/ok
        schedule: {{interval: 10s, timeout: 2s}}
        limits: {{memory: 64MiB, concurrency: 1, timeout: 5s}}
  platform:
    name: metal
    detect: false
    fetchTimeout: 20s
    providers:
      aws: health-http
  logging:
    level: debug
"#,
        ca_crt = block(CA_CRT, 8),
        ca_key = block(CA_KEY, 8),
        node_crt = block(NODE_CRT, 6),
        node_key = block(NODE_KEY, 6),
        key = "ab".repeat(32),
    )
}

#[test]
fn maximal_config_loads() {
    let text = maximal();
    let loaded = load(text.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
    let m = &loaded.config.machine;
    assert_eq!(m.api.ca.crt.as_str(), CA_CRT);
    assert_eq!(m.api.crt.as_ref().unwrap().as_str(), NODE_CRT);
    assert_eq!(m.api.key.as_ref().unwrap().as_str(), NODE_KEY);
    assert_eq!(m.time.servers[0].port(), 12345);
    assert_eq!(m.time.servers[1].port(), 123);
    assert_eq!(m.time.servers[2].host(), &Host::Ip("::1".parse().unwrap()));
    assert_eq!(m.time.boot_timeout.as_std(), std::time::Duration::from_secs(30));
    assert_eq!(m.kernel.modules[0].parameters, ["debug=1"]);
    assert_eq!(m.sysctls.len(), 2);
    assert_eq!(m.network.interfaces[0].routes[0].metric, Some(1024));
    let web = &m.services[1];
    assert_eq!(web.env.get(&"PORT".parse().unwrap()).map(String::as_str), Some("8080"));
    assert_eq!(web.restart, RestartPolicy::OnFailure);
    assert_eq!(web.log_buffer_size.as_u64(), 4 << 20);
    assert_eq!(web.resources.cpu.as_ref().map(|c| c.cpu_max()), Some("50000 100000".into()));
    assert_eq!(web.resources.memory.map(|m| m.as_u64()), Some(256 << 20));
    assert_eq!(m.services[2].resources, bronze_config::Resources::default());
    assert_eq!(m.services[2].log_buffer_size.as_u64(), 65536);
    let plugin = &m.plugins.instances[0];
    assert!(!plugin.enabled);
    assert_eq!(plugin.grants.facts, [Fact::Dmi, Fact::Links, Fact::Cmdline, Fact::Time]);
    assert_eq!(plugin.grants.http[0].methods, [HttpMethod::Get, HttpMethod::Head]);
    assert_eq!(plugin.grants.http[1].methods, [HttpMethod::Get]);
    assert_eq!(plugin.limits.memory.unwrap().as_u64(), 64 << 20);
    assert_eq!(m.platform.name.as_ref().unwrap().as_str(), "metal");
    assert!(!m.platform.detect);
    assert_eq!(m.platform.fetch_timeout.as_std(), std::time::Duration::from_secs(20));
    assert_eq!(m.platform.providers.iter().next().map(|(k, v)| (k.as_str(), v.as_str())), Some(("aws", "health-http")));
    assert_eq!(m.logging.level, LogLevel::Debug);
    // Only the deliberate warning: unsigned plugins.
    assert_eq!(loaded.warnings.len(), 1, "{:?}", loaded.warnings);
}

#[track_caller]
fn round_trip(text: &str) -> MachineConfig {
    let cfg = decode(text.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
    let encoded = cfg.to_yaml();
    let again = decode(encoded.as_bytes()).unwrap_or_else(|e| panic!("{e}\n{encoded}"));
    assert_eq!(again, cfg, "{encoded}");
    assert_eq!(again.to_yaml(), encoded, "encoding is not stable");
    cfg
}

#[test]
fn round_trips() {
    let cfg = round_trip(&maximal());
    assert!(validate(&cfg).is_ok());
    round_trip(&render("node-1", &["10.0.0.5"]));
    round_trip(&doc(""));
}

#[test]
fn encoding_omits_defaults() {
    let text = doc(
        "  time:\n    bootTimeout: 2m\n    minPoll: 64s\n    maxPoll: 17m4s\n  kernel: {}\n  network:\n    interfaces: []\n  logging:\n    level: info\n  services:\n    - name: web\n      command: /bin/web\n      restart: always\n      logBufferSize: 1MiB\n",
    );
    let encoded = decode(text.as_bytes()).unwrap().to_yaml();
    let tail = &encoded[encoded.find("  services:").unwrap()..];
    assert_eq!(tail, "  services:\n  - name: web\n    command: /bin/web\n");
    assert!(!encoded.contains("time:"), "{encoded}");
    assert!(!encoded.contains("logging"), "{encoded}");
    assert!(encoded.starts_with("version: v1alpha1\nmachine:\n  hostname: node-1\n  api:\n    ca:\n      crt: |\n        -----BEGIN CERTIFICATE-----\n"), "{encoded}");
}

#[test]
fn null_sections_are_empty() {
    let text = doc("  time:\n  kernel:\n  network:\n    interfaces:\n  services:\n  plugins:\n  logging:\n");
    let cfg = decode(text.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cfg, decode(doc("").as_bytes()).unwrap());
}

#[test]
fn built_in_code_encodes() {
    use bronze_config::{Api, Ca, Interface, Machine, Service};
    let mut machine = Machine::new(Api::new(Ca { crt: CA_CRT.parse().unwrap(), key: Some(CA_KEY.parse().unwrap()) }));
    machine.hostname = Some("node-1".parse().unwrap());
    machine.time.servers.push("10.0.0.1:123".parse().unwrap());
    let mut eth0 = Interface::new("eth0".parse().unwrap());
    eth0.addresses.push("10.0.2.15/24".parse().unwrap());
    machine.network.interfaces.push(eth0);
    machine.services.push(Service::new("web".parse().unwrap(), "/bin/web".parse().unwrap()));
    let cfg = MachineConfig::new(machine);
    let loaded = load(cfg.to_yaml().as_bytes()).unwrap();
    assert_eq!(loaded.config, cfg);
    assert!(loaded.warnings.is_empty());
}

#[test]
fn byte_order_mark_is_ignored() {
    let text = format!("\u{feff}{}", doc(""));
    let cfg = decode(text.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cfg, decode(doc("").as_bytes()).unwrap());
}

#[test]
fn anchors_and_aliases_work() {
    let text = doc("  network:\n    nameservers: &dns [10.0.2.3]\n  time:\n    servers: *dns\n");
    let cfg = decode(text.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cfg.machine.time.servers[0].as_str(), "10.0.2.3");
    assert_eq!(cfg.machine.network.nameservers[0].to_string(), "10.0.2.3");
}
