//! The shared flags and the fan-out helper every remote command goes
//! through, without a node: which nodes and credentials a command gets
//! (flags over the client config's context), the refusals, and that a node
//! that cannot be reached is an error row and a failing exit code while
//! the others keep their order.

use bronzectl::cli::{Cli, Globals};
use bronzectl::clientconfig::{ClientConfig, Context};
use bronzectl::connect::Auth;
use bronzectl::output::{self, Format, Output};
use clap::Parser;
use std::path::Path;
use std::process::ExitCode;

fn globals(args: &[&str]) -> Globals {
    let argv = ["bronzectl"].into_iter().chain(args.iter().copied()).chain(["version"]);
    Cli::try_parse_from(argv).unwrap_or_else(|e| panic!("{args:?}: {e}")).globals
}

/// A client config with contexts `lab` (current, two nodes) and `empty`.
fn client_config(dir: &Path) -> String {
    let ctx = |nodes: &[&str]| Context {
        nodes: nodes.iter().map(|n| n.to_string()).collect(),
        ca: "CA PEM".into(),
        crt: "CRT PEM".into(),
        key: "KEY PEM".into(),
    };
    let config = ClientConfig {
        context: "lab".into(),
        contexts: [("lab".to_string(), ctx(&["10.0.0.5", "[fd00::1]:50001"])), ("empty".to_string(), ctx(&[]))].into(),
    };
    let path = dir.join("config");
    config.save(&path).unwrap();
    path.to_str().unwrap().to_string()
}

#[test]
fn nodes_come_from_the_context_unless_given() {
    let tmp = tempfile::tempdir().unwrap();
    let path = client_config(tmp.path());
    let target = globals(&["--bronzeconfig", &path]).target().unwrap();
    assert_eq!(target.nodes, ["10.0.0.5:50000", "[fd00::1]:50001"]);
    assert_eq!(target.context_name, "lab");
    let Auth::Mtls { ca, crt, key } = &target.auth else { panic!("{:?}", target.auth) };
    assert_eq!((ca.as_str(), crt.as_str(), key.as_str()), ("CA PEM", "CRT PEM", "KEY PEM"));

    let target = globals(&["--bronzeconfig", &path, "-n", "a,b:7"]).target().unwrap();
    assert_eq!(target.nodes, ["a:50000", "b:7"]);

    let err = globals(&["--bronzeconfig", &path, "--context", "empty"]).target().unwrap_err().to_string();
    assert_eq!(err, "no nodes: pass -n or add nodes to context \"empty\"");
    let err = globals(&["--bronzeconfig", &path, "--context", "prod"]).target().unwrap_err().to_string();
    assert_eq!(err, format!("context \"prod\" is not in {path} (contexts: empty, lab)"));
}

#[test]
fn insecure_needs_nodes_and_a_fingerprint_needs_insecure() {
    let err = globals(&["--insecure"]).target().unwrap_err().to_string();
    assert_eq!(err, "--insecure needs the nodes: pass -n host[:port]");
    let fp = "ab".repeat(32);
    let err = globals(&["-n", "a", "--cert-fingerprint", &fp]).target().unwrap_err().to_string();
    assert_eq!(err, "--cert-fingerprint only applies with --insecure");
    // With --insecure no client config is read at all.
    let target = globals(&["--insecure", "-n", "a", "--bronzeconfig", "/nonexistent/config"]).target().unwrap();
    assert!(matches!(target.auth, Auth::Insecure { fingerprint: None }), "{:?}", target.auth);
    assert_eq!(target.context_name, "");
}

#[test]
fn the_format_is_table_unless_asked() {
    assert_eq!(globals(&[]).format(), Format::Table);
    assert_eq!(globals(&["-o", "yaml"]).format(), Format::Yaml);
    assert_eq!(globals(&["--output", "json"]).format(), Format::Json);
}

/// Port 1 on loopback: nothing listens there, so both nodes fail to
/// connect; the op never runs, the exit code fails, and each node gets its
/// own error row, in the order given.
#[tokio::test]
async fn unreachable_nodes_are_error_rows_and_a_failing_exit_code() {
    let g = globals(&["--insecure", "-n", "127.0.0.1:1,[::1]:1"]);
    let results = g.fan_out(|_c| async { Ok::<_, String>(Output::default()) }).await.unwrap();
    let nodes: Vec<&str> = results.iter().map(|r| r.node.as_str()).collect();
    assert_eq!(nodes, ["127.0.0.1:1", "[::1]:1"]);
    assert!(results.iter().all(|r| r.outcome.as_ref().is_err_and(|e| e.starts_with("cannot connect:"))));
    let table = output::render(Format::Table, &["message"], &results);
    assert_eq!(table.lines().count(), 3, "{table}");
    assert!(table.lines().nth(2).unwrap().starts_with("[::1]:1       error: cannot connect:"), "{table}");
    let code = g.each_node(&["message"], |_c| async { Ok::<_, String>(Output::default()) }).await.unwrap();
    assert_eq!(code, ExitCode::FAILURE);
}
