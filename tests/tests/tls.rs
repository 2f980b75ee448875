//! TLS negatives and maintenance mode, over real sockets.

use bronze_pki::ClientCertSpec;
use bronze_tests::{Node, Pki, bronzectl, call_raw};
use bronzectl::client::NodeClient;
use bronzectl::connect::Auth;
use std::time::Duration;
use time::OffsetDateTime;
use tonic::Code;

async fn version_status(node: &Node, auth: &Auth) -> tonic::Status {
    let mut c = NodeClient::connect(&node.addr, auth).await.expect("TLS 1.3 connects; the RPC decides");
    c.machine.version(bronze_api::v1::VersionRequest {}).await.expect_err("must be rejected")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_client_certificates_are_rejected() {
    let pki = Pki::new();
    let node = Node::start_configured(&pki.node_config("tls")).await;

    // No client certificate at all (the server cert still verifies by CA).
    let s = version_status(&node, &Auth::Insecure { fingerprint: None }).await;
    assert_eq!(
        (s.code(), s.message()),
        (Code::Unauthenticated, "client certificate required: the node has a config, use mTLS")
    );

    // Signed by another CA with a different name, and by one with the same
    // name (two clusters generated with the same name).
    let other_ca = bronze_pki::generate_ca("another CA", bronze_pki::KeyType::default()).unwrap();
    let other = bronze_pki::CertificateAuthority::from_pem(&other_ca.cert_pem, &other_ca.key_pem).unwrap();
    let foreign = other.issue_client(&ClientCertSpec::new("x", &["os:admin".into()], Duration::from_secs(60))).unwrap();
    let s = version_status(&node, &pki.auth_for(&foreign)).await;
    assert_eq!((s.code(), s.message()), (Code::Unauthenticated, "client certificate is not signed by this node's CA"));
    let twin = Pki::new().client(&["os:admin"]);
    let s = version_status(&node, &pki.auth_for(&twin)).await;
    assert_eq!(s.code(), Code::Unauthenticated);
    assert!(s.message().starts_with("client certificate is not signed by this node's CA"), "{}", s.message());

    // Expired.
    let now = OffsetDateTime::now_utc();
    let mut spec = ClientCertSpec::new("old", &["os:admin".into()], Duration::from_secs(60));
    spec.not_before = now - Duration::from_secs(7200);
    spec.not_after = now - Duration::from_secs(3600);
    let s = version_status(&node, &pki.auth_for(&pki.client_with(&spec))).await;
    assert_eq!((s.code(), s.message()), (Code::Unauthenticated, "client certificate has expired"));

    // No ClientAuth EKU.
    let mut spec = ClientCertSpec::new("no-eku", &["os:admin".into()], Duration::from_secs(3600));
    spec.client_auth_eku = false;
    let s = version_status(&node, &pki.auth_for(&pki.client_with(&spec))).await;
    assert_eq!(
        (s.code(), s.message()),
        (Code::Unauthenticated, "client certificate lacks the ClientAuth extended key usage")
    );

    // No role.
    let s = version_status(&node, &pki.auth(&[])).await;
    assert_eq!(s.code(), Code::PermissionDenied);
    assert!(s.message().contains("carries no role"), "{}", s.message());

    // And a good one still works on the same node.
    let mut c = node.client(&pki.auth(&["os:reader"])).await;
    assert!(!c.machine.version(bronze_api::v1::VersionRequest {}).await.unwrap().into_inner().maintenance);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maintenance_mode_allows_only_version_and_apply() {
    let node = Node::start().await;
    let auth = Auth::Insecure { fingerprint: Some(node.fingerprint()) };
    let client = node.client(&auth).await;
    for rule in bronze_host::api::authz::TABLE {
        let result = call_raw(client.channel.clone(), rule.method).await;
        if rule.maintenance {
            // Version answers; an empty ApplyConfiguration is refused as invalid, not denied.
            if let Err(s) = result {
                assert_eq!(s.code(), Code::InvalidArgument, "{}: {s:?}", rule.method);
            }
        } else {
            let s = result.expect_err(rule.method);
            assert_eq!(s.code(), Code::PermissionDenied, "{}", rule.method);
            assert!(s.message().starts_with("maintenance mode:"), "{}", s.message());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maintenance_to_mtls_through_the_cli() {
    let pki = Pki::new();
    let node = Node::start().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("node.yaml");
    std::fs::write(&file, pki.node_config("m")).unwrap();
    let file = file.to_str().unwrap();
    let fp = node.fingerprint();
    let n = node.addr.as_str();

    // A wrong pin is refused by the CLI before anything is sent.
    let wrong = "0".repeat(64);
    let run = bronzectl(None, &["-n", n, "--insecure", "--cert-fingerprint", &wrong, "apply-config", "-f", file]).await;
    assert_ne!(run.code, 0);
    assert!(
        run.stderr.contains(&format!("server certificate fingerprint {fp} does not match --cert-fingerprint {wrong}")),
        "{run:?}"
    );
    assert!(node.stored_config().is_none(), "nothing applied");

    // Version works in maintenance mode and says so.
    let run = bronzectl(None, &["-n", n, "--insecure", "--cert-fingerprint", &fp, "-o", "json", "version"]).await;
    assert_eq!(run.code, 0, "{run:?}");
    let v: serde_json::Value = serde_json::from_str(run.stdout.trim()).unwrap();
    assert_eq!((v["node"].as_str(), v["maintenance"].as_bool()), (Some(n), Some(true)));

    let run = bronzectl(None, &["-n", n, "--insecure", "--cert-fingerprint", &fp, "apply-config", "-f", file]).await;
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(node.stored_config().unwrap(), std::fs::read(file).unwrap());

    // Same process, now mTLS: the client config works, --insecure does not.
    let config = dir.path().join("admin");
    pki.write_bronzeconfig(&config, &[n.to_string()], &["os:admin"]);
    let run = bronzectl(Some(&config), &["-o", "json", "version"]).await;
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(serde_json::from_str::<serde_json::Value>(run.stdout.trim()).unwrap()["maintenance"], false);
    let run = bronzectl(None, &["-n", n, "--insecure", "version"]).await;
    assert_ne!(run.code, 0);
    assert!(run.stderr.contains("unauthenticated: client certificate required"), "{run:?}");
}
