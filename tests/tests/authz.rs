//! Roles: every RPC of the authorization table, called by every role over
//! real mTLS against a real bronzed. Generated from the table, and the table
//! is checked against the descriptor sets, so no RPC can be forgotten.

use bronze_host::api::authz::{Role, TABLE, rule_for, short_name};
use bronze_tests::{Node, Pki, bronzectl, call_raw};
use tonic::Code;

#[test]
fn every_served_rpc_is_in_the_table() {
    let missing: Vec<_> =
        bronze_tests::all_rpc_paths().into_iter().filter(|p| !TABLE.iter().any(|r| r.method == p)).collect();
    assert!(missing.is_empty(), "RPCs missing from the authorization table: {missing:?}");
}

/// Shutdown ends the node, so it is checked on nodes of its own.
const SHUTDOWN: &str = "/bronze.v1.MachineService/Shutdown";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rpc_by_every_role() {
    let pki = Pki::new();
    let node = Node::start_configured(&pki.node_config("authz")).await;
    for role in Role::ALL {
        let client = node.client(&pki.auth(&[role.as_str()])).await;
        for rule in TABLE.iter().filter(|r| r.method != SHUTDOWN) {
            let result = call_raw(client.channel.clone(), rule.method).await;
            let allowed = rule.roles.contains(&role);
            match (&result, allowed) {
                (Err(s), true) => assert!(
                    !matches!(s.code(), Code::PermissionDenied | Code::Unauthenticated),
                    "{} should be allowed for {}: {s:?}",
                    rule.method,
                    role.as_str()
                ),
                (Err(s), false) => {
                    assert_eq!(s.code(), Code::PermissionDenied, "{} for {}", rule.method, role.as_str());
                    let want = format!("{} may not call {}", role.as_str(), short_name(rule.method));
                    assert_eq!(s.message(), want);
                }
                (Ok(()), allowed) => assert!(allowed, "{} must be denied for {}", rule.method, role.as_str()),
            }
        }
    }
    // A method the table does not know is admin-only (and then unimplemented).
    let reader = node.client(&pki.auth(&["os:reader"])).await;
    let status = call_raw(reader.channel.clone(), "/bronze.v1.MachineService/NoSuchCall").await.unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    let admin = node.client(&pki.auth(&["os:admin"])).await;
    let status = call_raw(admin.channel.clone(), "/bronze.v1.MachineService/NoSuchCall").await.unwrap_err();
    assert_eq!(status.code(), Code::Unimplemented);
    assert_eq!(rule_for("/bronze.v1.MachineService/NoSuchCall").roles, &[Role::Admin]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_by_each_role() {
    let pki = Pki::new();
    let rule = rule_for(SHUTDOWN);
    for role in Role::ALL {
        let mut node = Node::start_configured(&pki.node_config("shutdown")).await;
        let client = node.client(&pki.auth(&[role.as_str()])).await;
        let result = call_raw(client.channel.clone(), SHUTDOWN).await;
        if rule.roles.contains(&role) {
            result.unwrap_or_else(|s| panic!("{} may shut down: {s:?}", role.as_str()));
            let status = node.wait_exit(std::time::Duration::from_secs(10));
            assert!(status.success(), "shutdown exits 0, got {status}");
        } else {
            assert_eq!(result.unwrap_err().message(), format!("{} may not call Shutdown", role.as_str()));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reader_through_the_cli() {
    let pki = Pki::new();
    let node = Node::start_configured(&pki.node_config("reader")).await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("reader");
    pki.write_bronzeconfig(&config, std::slice::from_ref(&node.addr), &["os:reader"]);

    for args in [&["version"][..], &["get", "machinestatus"], &["events"], &["health"], &["get", "auditevents"]] {
        let run = bronzectl(Some(&config), args).await;
        assert_eq!(run.code, 0, "reader may run {args:?}: {run:?}");
    }
    let denied = [
        (&["reboot"][..], "os:reader may not call Reboot"),
        (&["shutdown"], "os:reader may not call Shutdown"),
        (&["get", "machineconfig"], "os:reader may not read MachineConfigs.bronze.dev (sensitive)"),
    ];
    for (args, want) in denied {
        let run = bronzectl(Some(&config), args).await;
        assert_ne!(run.code, 0, "{args:?} must fail");
        let sentence = format!("node {}: permission denied: {want}", node.addr);
        assert!(run.stderr.contains(&sentence), "{args:?}: want {sentence:?} in {run:?}");
    }
    let file = dir.path().join("node.yaml");
    std::fs::write(&file, pki.node_config("reader")).unwrap();
    let run = bronzectl(Some(&config), &["apply-config", "-f", file.to_str().unwrap()]).await;
    assert!(run.stderr.contains("os:reader may not call ApplyConfiguration"), "{run:?}");

    // Operator: may reboot, may not apply.
    let op = dir.path().join("operator");
    pki.write_bronzeconfig(&op, std::slice::from_ref(&node.addr), &["os:operator"]);
    let run = bronzectl(Some(&op), &["apply-config", "-f", file.to_str().unwrap()]).await;
    assert!(run.stderr.contains("os:operator may not call ApplyConfiguration"), "{run:?}");
    let run = bronzectl(Some(&op), &["reboot"]).await;
    assert_eq!(run.code, 0, "{run:?}");

    // Every denial and the reboot were audited, with subject and role.
    let admin = dir.path().join("admin");
    pki.write_bronzeconfig(&admin, std::slice::from_ref(&node.addr), &["os:admin"]);
    let run = bronzectl(Some(&admin), &["-o", "json", "events", "--tail", "50"]).await;
    let events: serde_json::Value = serde_json::from_str(run.stdout.lines().next().unwrap()).unwrap();
    let events = events["events"].as_array().unwrap().clone();
    let reboot = events
        .iter()
        .find(|e| e["method"] == "/bronze.v1.MachineService/Reboot" && e["result"] == "ok")
        .unwrap_or_else(|| panic!("no audited reboot in {events:?}"));
    assert_eq!(reboot["roles"], serde_json::json!(["os:operator"]));
    assert!(reboot["subject"].as_str().unwrap().contains("CN=test-client"), "{reboot}");
    assert!(events.iter().any(|e| e["method"] == "/bronze.v1.MachineService/ApplyConfiguration"
        && e["result"] == "permission-denied"
        && e["message"] == "os:operator may not call ApplyConfiguration"
        && e["roles"] == serde_json::json!(["os:operator"])
        && e["subject"].as_str().unwrap_or("").contains("CN=test-client")));
}
