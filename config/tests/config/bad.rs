//! Documents `decode` must refuse, each checked for the path, the line and
//! the message the user sees.

use bronze_config::{DecodeError, MAX_CONFIG_BYTES, decode, load};

use crate::fixtures::{doc, line_of};

fn decode_err(doc: &str) -> DecodeError {
    match decode(doc.as_bytes()) {
        Ok(cfg) => panic!("decoded but should not have:\n{doc}\n{cfg:?}"),
        Err(err) => err,
    }
}

/// Asserts path, line and a fragment of the message, and that `load`
/// reports the same error.
#[track_caller]
fn expect(doc: &str, path: &str, line: Option<usize>, fragment: &str) -> DecodeError {
    let err = decode_err(doc);
    assert_eq!(err.path, path, "{err}");
    assert_eq!(err.line, line, "{err}");
    assert!(err.message.contains(fragment), "{err}\nwanted: {fragment}");
    let shown = err.to_string();
    match line {
        Some(line) => assert!(shown.starts_with(&format!("{path} (line {line}, column ")), "{shown}"),
        None => assert!(shown.starts_with(&format!("{path}: ")), "{shown}"),
    }
    assert_eq!(load(doc.as_bytes()).unwrap_err().to_string(), shown);
    err
}

#[test]
fn unknown_key_at_top() {
    let d = "version: v1alpha1\nfoo: 1\nmachine: {}\n";
    let err = expect(d, "foo", Some(2), "unknown field `foo`, expected `version` or `machine`");
    assert_eq!(err.column, Some(1));
}

#[test]
fn unknown_key_nested() {
    let d = doc("  time:\n    disabled: false\n    bogus: 1\n");
    expect(
        &d,
        "machine.time.bogus",
        Some(line_of(&d, "bogus", 1)),
        "unknown field `bogus`, expected one of `disabled`, `servers`, `bootTimeout`",
    );
}

#[test]
fn unknown_key_in_a_list_item() {
    let d = doc("  services:\n    - name: web\n      command: /bin/web\n      comand: /bin/web\n");
    expect(&d, "machine.services[0].comand", Some(line_of(&d, "comand:", 1)), "unknown field `comand`");
}

#[test]
fn string_for_bool() {
    let d = doc("  time:\n    disabled: yes\n");
    expect(
        &d,
        "machine.time.disabled",
        Some(line_of(&d, "disabled", 1)),
        "invalid type: string \"yes\", expected a boolean",
    );
}

#[test]
fn map_for_list() {
    let d = doc("  time:\n    servers: {a: 1}\n");
    expect(&d, "machine.time.servers", Some(line_of(&d, "servers", 1)), "invalid type: map, expected a sequence");
}

#[test]
fn negative_uid() {
    let d = doc("  services:\n    - name: web\n      command: /bin/web\n      user: -5\n");
    expect(
        &d,
        "machine.services[0].user",
        Some(line_of(&d, "user:", 1)),
        "invalid type: integer `-5`, expected an integer from 0 to 4294967295",
    );
}

#[test]
fn missing_required_field() {
    let d = "version: v1alpha1\nmachine:\n  api:\n    ca: {}\n";
    // Reported where the mapping that lacks the field starts.
    let err = expect(d, "machine.api.ca", Some(4), "missing field `crt`");
    assert_eq!(err.column, Some(9));
}

#[test]
fn address_without_prefix() {
    let d = doc("  network:\n    interfaces:\n      - name: eth0\n        addresses: [10.0.2.15/24, 10.0.3.1]\n");
    let err = expect(
        &d,
        "machine.network.interfaces[0].addresses[1]",
        Some(line_of(&d, "addresses", 1)),
        "invalid CIDR \"10.0.3.1\": expected an address with a prefix length, like 10.0.0.5/24",
    );
    assert_eq!(err.column, Some(35));
}

#[test]
fn prefix_too_long() {
    let d = doc("  network:\n    interfaces:\n      - name: eth0\n        addresses:\n          - 10.0.2.15/33\n");
    expect(
        &d,
        "machine.network.interfaces[0].addresses[0]",
        Some(line_of(&d, "10.0.2.15/33", 1)),
        "invalid CIDR \"10.0.2.15/33\": the prefix length 33 is longer than 32, the maximum for IPv4",
    );
}

#[test]
fn bad_duration_exact_text() {
    let d = "version: v1alpha1\nmachine:\n  hostname: node-1\n  time:\n    disabled: false\n    minPoll: 64s\n    bootTimeout: 2x\n";
    assert_eq!(
        decode_err(d).to_string(),
        "machine.time.bootTimeout (line 7, column 18): invalid duration \"2x\": expected a number with a unit, like 30s or 2m"
    );
}

#[test]
fn negative_duration() {
    let d = doc("  time:\n    minPoll: -5s\n");
    expect(
        &d,
        "machine.time.minPoll",
        Some(line_of(&d, "minPoll", 1)),
        "invalid duration \"-5s\": negative durations are not allowed",
    );
}

#[test]
fn empty_ca_crt() {
    let d = "version: v1alpha1\nmachine:\n  api:\n    ca:\n      crt: ''\n";
    expect(d, "machine.api.ca.crt", Some(5), "empty; expected a PEM certificate");
}

#[test]
fn garbage_ca_crt() {
    let d = "version: v1alpha1\nmachine:\n  api:\n    ca:\n      crt: |\n        garbage\n";
    expect(d, "machine.api.ca.crt", Some(5), "not a PEM certificate: no \"-----BEGIN\" line found");
}

#[test]
fn key_where_a_certificate_belongs() {
    let d = format!(
        "version: v1alpha1\nmachine:\n  api:\n    ca:\n      crt: |\n{}",
        crate::fixtures::block(crate::fixtures::CA_KEY, 8)
    );
    expect(
        &d,
        "machine.api.ca.crt",
        Some(5),
        "not a PEM certificate: found a \"PRIVATE KEY\" block; expected CERTIFICATE",
    );
}

#[test]
fn duplicate_key_in_struct() {
    let d = doc("  hostname: again\n");
    let err = expect(&d, "machine", Some(line_of(&d, "hostname", 2)), "duplicate field `hostname`");
    assert_eq!(err.column, Some(3));
}

#[test]
fn duplicate_key_at_top() {
    let d = "version: v1alpha1\nmachine: {}\nversion: v1alpha1\n";
    expect(d, "(document)", Some(3), "duplicate field `version`");
}

#[test]
fn duplicate_env_key() {
    let d = doc(
        "  services:\n    - name: web\n      command: /bin/web\n      env:\n        A: b\n        B: c\n        A: d\n",
    );
    let err = expect(&d, "machine.services[0].env", Some(line_of(&d, "A: d", 1)), "duplicate key \"A\"");
    assert_eq!(err.column, Some(9));
}

#[test]
fn duplicate_sysctl_key() {
    let d = doc("  sysctls:\n    net.ipv4.ip_forward: \"1\"\n    net.ipv4.ip_forward: \"0\"\n");
    expect(&d, "machine.sysctls", Some(line_of(&d, "net.ipv4.ip_forward", 2)), "duplicate key \"net.ipv4.ip_forward\"");
}

#[test]
fn duplicate_plugin_config_key() {
    let d = doc("  plugins:\n    instances:\n      - id: check\n        config: {url: a, url: b}\n");
    expect(&d, "machine.plugins.instances[0].config", Some(line_of(&d, "config:", 1)), "duplicate key \"url\"");
}

#[test]
fn not_yaml() {
    let d = "version: v1alpha1\nmachine: [unclosed\n";
    let err = expect(d, "(document)", Some(3), "not valid YAML: did not find expected ',' or ']'");
    assert!(err.message.contains("while parsing a flow sequence at line 2 column 10"), "{err}");
}

#[test]
fn tabs_are_not_yaml_indentation() {
    let d = "version: v1alpha1\nmachine:\n\thostname: x\n";
    expect(d, "(document)", Some(3), "not valid YAML: found character that cannot start any token");
}

#[test]
fn top_level_list() {
    expect(
        "- version: v1alpha1\n",
        "(document)",
        Some(1),
        "expected a mapping with `version: v1alpha1` at the top level, found a sequence",
    );
}

#[test]
fn top_level_scalar() {
    expect("just some words\n", "(document)", Some(1), "at the top level, found a string");
}

#[test]
fn empty_documents() {
    for empty in ["", "\n", "# only a comment\n", "---\n", "null\n", "~\n"] {
        let err = expect(empty, "(document)", None, "the config is empty; expected a mapping with `version: v1alpha1`");
        assert_eq!(err.to_string(), "(document): the config is empty; expected a mapping with `version: v1alpha1`");
    }
}

#[test]
fn several_documents() {
    let d = "version: v1alpha1\n---\nversion: v1alpha1\n";
    expect(d, "(document)", None, "expected a single YAML document, found several");
}

#[test]
fn ten_mib_document() {
    let big = format!("version: v1alpha1\n# {}\n", "x".repeat(10 * 1024 * 1024));
    let err = expect(&big, "(document)", None, &format!("config is {} bytes; the limit is 1048576 bytes", big.len()));
    assert_eq!(MAX_CONFIG_BYTES, 1_048_576);
    assert!(err.to_string().starts_with("(document): config is "));
    let just_over = vec![b' '; MAX_CONFIG_BYTES + 1];
    assert!(decode_err(std::str::from_utf8(&just_over).unwrap()).message.contains("1048577 bytes"));
}

#[test]
fn invalid_utf8() {
    let mut bytes = b"version: v1alpha1\nmachine:\n  hostname: ab".to_vec();
    bytes.push(0xff);
    let err = decode(&bytes).unwrap_err();
    assert_eq!(err.path, "(document)");
    assert_eq!(err.line, Some(3));
    assert_eq!(err.column, Some(15));
    assert_eq!(err.message, "invalid UTF-8 at byte offset 41");
}

#[test]
fn wrong_version() {
    let d = "version: v2\nmachine:\n  bogus: 1\n";
    let err = expect(d, "version", Some(1), "unsupported version \"v2\", expected v1alpha1");
    assert_eq!(err.column, Some(10));
}

#[test]
fn missing_version() {
    let d = "machine:\n  hostname: node-1\n";
    expect(d, "(document)", None, "missing field `version`; expected `version: v1alpha1`");
}

#[test]
fn bad_hostname() {
    let d = "version: v1alpha1\nmachine:\n  hostname: -node\n";
    expect(d, "machine.hostname", Some(3), "invalid hostname \"-node\": label \"-node\" cannot start or end with '-'");
}

#[test]
fn link_name_too_long() {
    let d = doc("  network:\n    interfaces:\n      - name: a-very-long-link-name\n");
    expect(
        &d,
        "machine.network.interfaces[0].name",
        Some(line_of(&d, "a-very-long", 1)),
        "invalid link name \"a-very-long-link-name\": it is 21 bytes long; the limit is 15",
    );
}

#[test]
fn bad_nameserver() {
    let d = doc("  network:\n    nameservers: [10.0.2.3, 10.0.2]\n");
    expect(
        &d,
        "machine.network.nameservers[1]",
        Some(line_of(&d, "nameservers", 1)),
        "invalid IP address \"10.0.2\": expected an IPv4 or IPv6 address",
    );
}

#[test]
fn bad_time_server_port() {
    let d = doc("  time:\n    servers:\n      - time.example.com\n      - 127.0.0.1:70000\n");
    expect(
        &d,
        "machine.time.servers[1]",
        Some(line_of(&d, "70000", 1)),
        "invalid time server \"127.0.0.1:70000\": the port \"70000\" is not a number from 1 to 65535",
    );
}

#[test]
fn bad_restart_policy() {
    let d = doc("  services:\n    - name: web\n      command: /bin/web\n      restart: sometimes\n");
    expect(
        &d,
        "machine.services[0].restart",
        Some(line_of(&d, "restart", 1)),
        "invalid restart policy \"sometimes\": expected one of always, on-failure, never",
    );
}

#[test]
fn bad_trusted_key() {
    let d = doc("  plugins:\n    trustedKeys: [abc]\n");
    expect(
        &d,
        "machine.plugins.trustedKeys[0]",
        Some(line_of(&d, "trustedKeys", 1)),
        "invalid trusted key \"abc\": expected 64 lowercase hex characters (an Ed25519 public key)",
    );
}

#[test]
fn bad_service_name() {
    let d = doc("  services:\n    - name: Web\n      command: /bin/web\n");
    expect(&d, "machine.services[0].name", Some(line_of(&d, "name: Web", 1)), "invalid service name \"Web\"");
}

#[test]
fn relative_command() {
    let d = doc("  services:\n    - name: web\n      command: web\n");
    expect(
        &d,
        "machine.services[0].command",
        Some(line_of(&d, "command", 1)),
        "invalid path \"web\": expected an absolute path, like /usr/bin/web",
    );
}

#[test]
fn bad_sysctl_key() {
    let d = doc("  sysctls:\n    ../../etc/passwd: x\n");
    expect(
        &d,
        "machine.sysctls[\"../../etc/passwd\"]",
        Some(line_of(&d, "passwd", 1)),
        "invalid sysctl key \"../../etc/passwd\"",
    );
}

#[test]
fn bad_probe_scheme() {
    let d =
        doc("  plugins:\n    instances:\n      - id: check\n        grants:\n          probe: [udp://10.0.0.1:53]\n");
    expect(
        &d,
        "machine.plugins.instances[0].grants.probe[0]",
        Some(line_of(&d, "udp://", 1)),
        "unsupported scheme \"udp\"; expected tcp, http or https",
    );
}

#[test]
fn bad_log_buffer_size() {
    let d = doc("  services:\n    - name: web\n      command: /bin/web\n      logBufferSize: 1 megabyte\n");
    expect(
        &d,
        "machine.services[0].logBufferSize",
        Some(line_of(&d, "logBufferSize", 1)),
        "invalid size \"1 megabyte\": expected a number of bytes or a size with a unit, like 64MiB",
    );
}

#[test]
fn bad_cpu_quota() {
    let d = doc("  services:\n    - name: web\n      command: /bin/web\n      resources:\n        cpu: 5m\n");
    expect(
        &d,
        "machine.services[0].resources.cpu",
        Some(line_of(&d, "cpu: 5m", 1)),
        "invalid cpu quota \"5m\": expected millicores like 500m or cores like 2 or 1.5 (10m to 1024 cores)",
    );
    let d = doc("  services:\n    - name: web\n      command: /bin/web\n      resources:\n        disk: 1GiB\n");
    expect(&d, "machine.services[0].resources.disk", Some(line_of(&d, "disk:", 1)), "unknown field `disk`");
}

#[test]
fn bad_fact() {
    let d = doc("  plugins:\n    instances:\n      - id: check\n        grants:\n          facts: [dmi, secrets]\n");
    expect(
        &d,
        "machine.plugins.instances[0].grants.facts[1]",
        Some(line_of(&d, "facts", 1)),
        "invalid fact \"secrets\": expected one of dmi, links, cmdline, time",
    );
}

#[test]
fn unknown_alias() {
    let d = "version: v1alpha1\nmachine:\n  hostname: *nope\n";
    expect(d, "(document)", Some(3), "not valid YAML: unknown anchor");
}

#[test]
fn deeply_nested_brackets() {
    let d = format!("version: v1alpha1\nmachine:\n  hostname: {}\n", "[".repeat(100_000));
    let started = std::time::Instant::now();
    expect(&d, "(document)", Some(3), "brackets nest more than 64 levels deep");
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
}

#[test]
fn huge_values_are_shortened_in_messages() {
    let d = format!("version: v1alpha1\nmachine:\n  hostname: {}_\n", "a".repeat(MAX_CONFIG_BYTES - 100));
    let err = expect(&d, "machine.hostname", Some(3), "invalid hostname \"aaaa");
    assert!(err.message.len() < 300, "{}", err.message.len());
}

#[test]
fn non_string_key() {
    let d = "version: v1alpha1\nmachine:\n  sysctls: {[a]: b}\n";
    expect(d, "machine.sysctls.?", Some(3), "invalid type: sequence, expected a sysctl key");
}

#[test]
fn yaml_merge_keys_are_not_supported() {
    let d = "version: v1alpha1\nmachine:\n  <<: {hostname: x}\n";
    expect(d, "machine[\"<<\"]", Some(3), "unknown field `<<`");
}
