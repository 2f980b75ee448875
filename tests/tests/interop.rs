//! Interoperability with TLS and gRPC stacks that are not Bronze's, using
//! exactly what `bronzectl gen config` and `bronzectl config new` write:
//! every key and certificate loads in OpenSSL 3 and Python `cryptography`
//! (keys are PKCS#8 v1); Python grpcio (gRPC core with BoringSSL) lists the
//! services by reflection, calls Version and Health, and is denied every
//! mutating method with a reader config; `openssl s_client` completes a
//! TLS 1.3 handshake with the generated client certificate.
//!
//! The Python clients are in `tests/python/` and run with the venv that
//! `cargo xtask test` makes at `target/pyenv`.

use bronze_host::api::authz::{Role, TABLE, short_name};
use bronze_tests::{Node, NodeOptions, bronzectl, free_port, python, python_script};
use bronzectl::clientconfig::ClientConfig;
use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// One `bronzectl gen config` output, for a node on a free loopback port.
struct Generated {
    dir: tempfile::TempDir,
    port: u16,
}

impl Generated {
    /// `gen config`, with `--key-type` when given.
    async fn new(key_type: Option<&str>) -> Generated {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let endpoint = format!("127.0.0.1:{port}");
        let out = dir.path().to_str().unwrap().to_string();
        let mut args = vec!["gen", "config", "interop", "--endpoint", &endpoint, "--output-dir", &out];
        args.extend(key_type.iter().flat_map(|t| ["--key-type", t]));
        let run = bronzectl(None, &args).await;
        assert_eq!(run.code, 0, "gen config: {run:?}");
        Generated { dir, port }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The admin client config `gen config` wrote.
    fn admin(&self) -> PathBuf {
        self.path("bronzeconfig")
    }

    /// A node started with the generated node config, on the endpoint the
    /// client config names.
    async fn start_node(&self) -> Node {
        let config = std::fs::read_to_string(self.path("node.yaml")).unwrap();
        Node::start_with(NodeOptions { config: Some(config), port: Some(self.port), ..Default::default() }).await
    }

    /// `config new --roles ROLES [--key-type T] --output-file FILE` with the admin
    /// config, against the running node.
    async fn config_new(&self, roles: &str, key_type: Option<&str>) -> PathBuf {
        let output = self.path(&format!("{roles}-{}", key_type.unwrap_or("default")));
        let out = output.to_str().unwrap().to_string();
        let mut args = vec!["config", "new", "--roles", roles, "--output-file", &out];
        args.extend(key_type.iter().flat_map(|t| ["--key-type", t]));
        let run = bronzectl(Some(&self.admin()), &args).await;
        assert_eq!(run.code, 0, "config new: {run:?}");
        output
    }

    /// The CA certificate and key inside the generated node config.
    fn node_ca(&self) -> (String, String) {
        let loaded = bronze_config::load(&std::fs::read(self.path("node.yaml")).unwrap()).expect("node.yaml loads");
        let ca = loaded.config.machine.api.ca;
        (ca.crt.as_str().to_string(), ca.key.expect("gen config writes the CA key").as_str().to_string())
    }
}

/// A client config's current context as the PEM files TLS tools take.
struct Credentials {
    ca: PathBuf,
    crt: PathBuf,
    key: PathBuf,
}

impl Credentials {
    /// Writes `<prefix>-{ca,crt,key}.pem` into `dir`, byte for byte as the
    /// client config holds them.
    fn extract(bronzeconfig: &Path, dir: &Path, prefix: &str) -> Credentials {
        let config = ClientConfig::load(bronzeconfig).unwrap();
        let (_, ctx) = config.context(None, bronzeconfig).unwrap();
        let write = |name: &str, pem: &str| {
            let path = dir.join(format!("{prefix}-{name}.pem"));
            std::fs::write(&path, pem).unwrap();
            path
        };
        Credentials { ca: write("ca", &ctx.ca), crt: write("crt", &ctx.crt), key: write("key", &ctx.key) }
    }

    fn args(&self) -> [&dyn AsRef<OsStr>; 3] {
        [&self.ca, &self.crt, &self.key]
    }
}

/// stdout and stderr as text (s_client prints some raw bytes).
fn text(output: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

/// Command-line arguments of mixed types (text and paths).
type Args<'a> = [&'a dyn AsRef<OsStr>];

/// Runs `openssl ARGS`; stdin is empty, so s_client ends after the handshake.
fn openssl(args: &Args) -> Output {
    Command::new("openssl")
        .args(args.iter().map(|a| a.as_ref()))
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run openssl ({e}): `cargo xtask test` installs it (ensure_packages)"))
}

/// Runs a script of `tests/python/` with the venv's Python and parses the
/// JSON it prints; any failure shows the script's output.
fn run_python(script: &str, args: &Args) -> serde_json::Value {
    let output = Command::new(python())
        .arg(python_script(script))
        .args(args.iter().map(|a| a.as_ref()))
        .output()
        .expect("run python");
    assert!(output.status.success(), "{script} failed ({}):\n{}", output.status, text(&output));
    serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("{script} printed no JSON ({e}):\n{}", text(&output)))
}

/// Checks one private key file with OpenSSL: it loads, and `asn1parse`
/// shows a PKCS#8 v1 document (version 0, and no [1] publicKey at the top
/// level, which v2 adds and OpenSSL 3.0 refuses for Ed25519).
fn assert_openssl_reads_pkcs8_v1(key: &Path) {
    let loaded = openssl(&[&"pkey", &"-in", &key, &"-noout"]);
    assert!(loaded.status.success(), "openssl pkey {}: {}", key.display(), text(&loaded));
    let parsed = openssl(&[&"asn1parse", &"-in", &key]);
    assert!(parsed.status.success(), "openssl asn1parse {}: {}", key.display(), text(&parsed));
    let listing = String::from_utf8_lossy(&parsed.stdout).into_owned();
    let top: Vec<&str> = listing.lines().filter(|l| l.contains(" d=1 ") || l.contains(":d=1 ")).collect();
    assert!(
        top.first().is_some_and(|l| l.contains("prim: INTEGER") && l.trim_end().ends_with(":00")),
        "{}: not PKCS#8 version 0 (v1):\n{listing}",
        key.display()
    );
    assert!(
        !top.iter().any(|l| l.contains("cont [")),
        "{}: has a v2 attribute or public key:\n{listing}",
        key.display()
    );
}

fn assert_openssl_reads_certificate(cert: &Path) {
    let loaded = openssl(&[&"x509", &"-in", &cert, &"-noout"]);
    assert!(loaded.status.success(), "openssl x509 {}: {}", cert.display(), text(&loaded));
}

/// `openssl s_client -tls1_3` with `creds` to the node at `port`,
/// verifying the server certificate against the CA and for 127.0.0.1.
fn s_client(port: u16, creds: &Credentials) -> String {
    let connect = format!("127.0.0.1:{port}");
    let output = openssl(&[
        &"s_client",
        &"-connect",
        &connect,
        &"-tls1_3",
        &"-alpn",
        &"h2",
        &"-cert",
        &creds.crt,
        &"-key",
        &creds.key,
        &"-CAfile",
        &creds.ca,
        &"-verify_ip",
        &"127.0.0.1",
        &"-verify_return_error",
        &"-showcerts",
    ]);
    let out = text(&output);
    assert!(output.status.success(), "openssl s_client to {connect} failed ({}):\n{out}", output.status);
    out
}

/// The first PEM certificate in `text`.
fn first_certificate(text: &str) -> String {
    let start = text.find("-----BEGIN CERTIFICATE-----").expect("a certificate");
    let end = text[start..].find("-----END CERTIFICATE-----").expect("its end") + start;
    format!("{}-----END CERTIFICATE-----\n", &text[start..end])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_key_and_certificate_bronze_writes_loads_in_openssl_and_cryptography() {
    let default = Generated::new(None).await;
    let ed25519 = Generated::new(Some("ed25519")).await;
    let node = default.start_node().await;
    let reader = default.config_new("os:reader", None).await;
    let operator_ed25519 = default.config_new("os:operator", Some("ed25519")).await;
    let files = tempfile::tempdir().unwrap();

    // (file, key type cryptography must find in it)
    let mut keys: Vec<(PathBuf, &str)> = Vec::new();
    let mut certs: Vec<(PathBuf, &str)> = Vec::new();
    for (name, config, key_type, ca_type) in [
        ("admin", default.admin(), "ecdsa-p256", "ecdsa-p256"),
        ("admin-ed25519", ed25519.admin(), "ed25519", "ed25519"),
        ("reader", reader, "ecdsa-p256", "ecdsa-p256"),
        ("operator-ed25519", operator_ed25519, "ed25519", "ecdsa-p256"),
    ] {
        let creds = Credentials::extract(&config, files.path(), name);
        keys.push((creds.key, key_type));
        certs.push((creds.crt, key_type));
        certs.push((creds.ca, ca_type));
    }
    for (name, generated, key_type) in [("node-ca", &default, "ecdsa-p256"), ("node-ca-ed25519", &ed25519, "ed25519")] {
        let (crt, key) = generated.node_ca();
        let (crt_path, key_path) = (files.path().join(format!("{name}.crt")), files.path().join(format!("{name}.key")));
        std::fs::write(&crt_path, crt).unwrap();
        std::fs::write(&key_path, key).unwrap();
        certs.push((crt_path, key_type));
        keys.push((key_path, key_type));
    }
    // The maintenance certificate the node keeps in its state dir, and the
    // server certificate it minted from the CA (as the server sends it).
    keys.push((node.state_dir.join("maintenance.key"), "ecdsa-p256"));
    certs.push((node.state_dir.join("maintenance.crt"), "ecdsa-p256"));
    let admin = Credentials::extract(&default.admin(), files.path(), "s_client");
    let served = files.path().join("served.crt");
    std::fs::write(&served, first_certificate(&s_client(default.port, &admin))).unwrap();
    certs.push((served, "ecdsa-p256"));

    for (key, _) in &keys {
        assert_openssl_reads_pkcs8_v1(key);
    }
    for (cert, _) in &certs {
        assert_openssl_reads_certificate(cert);
    }
    let all: Vec<&dyn AsRef<OsStr>> = keys.iter().chain(&certs).map(|(p, _)| p as &dyn AsRef<OsStr>).collect();
    let found = run_python("load_pem.py", &all);
    for (path, want) in keys.iter().chain(&certs) {
        assert_eq!(found[path.to_str().unwrap()], *want, "cryptography on {}: {found:#}", path.display());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcio_reflects_and_calls_version_and_health_with_the_generated_admin_config() {
    let generated = Generated::new(None).await;
    let _node = generated.start_node().await;
    let files = tempfile::tempdir().unwrap();
    let admin = Credentials::extract(&generated.admin(), files.path(), "admin");
    let target = format!("127.0.0.1:{}", generated.port);
    let mut args: Vec<&dyn AsRef<OsStr>> = vec![&"inspect", &target];
    args.extend(admin.args());
    let answer = run_python("grpc_client.py", &args);

    let services: BTreeSet<String> =
        answer["services"].as_array().unwrap().iter().map(|s| s.as_str().unwrap().to_string()).collect();
    for want in [
        "bronze.v1.MachineService",
        "bronze.v1.ResourceService",
        "bronze.v1.TimeService",
        "bronze.v1.PluginService",
        "grpc.health.v1.Health",
    ] {
        assert!(services.contains(want), "reflection does not list {want}: {services:?}");
    }
    // Nothing is listed that the authorization table does not know.
    let served: BTreeSet<&str> = TABLE.iter().map(|r| r.method[1..].split('/').next().unwrap()).collect();
    assert!(services.iter().all(|s| served.contains(s.as_str())), "{services:?} vs the table's {served:?}");

    let version = &answer["version"];
    assert_eq!(version["tag"], concat!("v", env!("CARGO_PKG_VERSION")), "{answer:#}");
    assert_eq!(version["mode"], "process", "{answer:#}");
    assert!(version.get("maintenance").is_none_or(|m| m == false), "the node is configured: {answer:#}");
    assert_eq!(answer["health"][""], "SERVING", "{answer:#}");
    assert_eq!(answer["health"]["bronze.v1.MachineService"], "SERVING", "{answer:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_generated_reader_config_is_denied_every_mutating_method_from_grpcio() {
    let generated = Generated::new(None).await;
    let _node = generated.start_node().await;
    let reader = generated.config_new("os:reader", None).await;
    let files = tempfile::tempdir().unwrap();
    let creds = Credentials::extract(&reader, files.path(), "reader");

    // From the one authorization table: everything a reader may not call,
    // which must cover every mutating method.
    let denied: Vec<&str> = TABLE.iter().filter(|r| !r.roles.contains(&Role::Reader)).map(|r| r.method).collect();
    let mutating: Vec<&str> = TABLE.iter().filter(|r| r.mutating).map(|r| r.method).collect();
    assert!(!mutating.is_empty());
    assert!(mutating.iter().all(|m| denied.contains(m)), "a reader may call a mutating method: {mutating:?}");
    // A read the reader may make, so a denial cannot come from bad credentials.
    let allowed = "/bronze.v1.MachineService/Version";

    let target = format!("127.0.0.1:{}", generated.port);
    let mut args: Vec<&dyn AsRef<OsStr>> = vec![&"call-each", &target];
    args.extend(creds.args());
    args.push(&allowed);
    args.extend(denied.iter().map(|m| m as &dyn AsRef<OsStr>));
    let results = run_python("grpc_client.py", &args);

    assert_eq!(results[allowed]["code"], "OK", "{results:#}");
    let mut seen = BTreeMap::new();
    for method in &denied {
        let result = &results[*method];
        assert_eq!(result["code"], "PERMISSION_DENIED", "{method}: {results:#}");
        assert_eq!(result["details"], format!("os:reader may not call {}", short_name(method)), "{method}");
        seen.insert(*method, ());
    }
    assert_eq!(seen.len(), denied.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openssl_s_client_completes_tls13_with_the_generated_client_config() {
    // The default, and Ed25519 on request: the node's minted server key
    // follows its CA, and OpenSSL 3 offers both.
    for (key_type, server_key, signature) in [
        (None, "a:PKEY: id-ecPublicKey, 256 (bit)", "Peer signature type: ECDSA"),
        (Some("ed25519"), "a:PKEY: ED25519", "Peer signature type: ed25519"),
    ] {
        let generated = Generated::new(key_type).await;
        let _node = generated.start_node().await;
        let files = tempfile::tempdir().unwrap();
        let admin = Credentials::extract(&generated.admin(), files.path(), "admin");
        let out = s_client(generated.port, &admin);
        // Printed when the handshake completes (the session block with
        // "Protocol  : TLSv1.3" comes only if a ticket arrives before EOF).
        assert!(out.contains("New, TLSv1.3"), "{key_type:?}: no new TLS 1.3 session:\n{out}");
        assert!(out.contains("Verify return code: 0 (ok)"), "{key_type:?}: server not verified:\n{out}");
        assert!(out.contains("ALPN protocol: h2"), "{key_type:?}: no h2:\n{out}");
        assert!(out.contains(server_key), "{key_type:?}: expected {server_key:?}:\n{out}");
        assert!(out.contains(signature), "{key_type:?}: expected {signature:?}:\n{out}");
    }
}
