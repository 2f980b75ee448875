//! Project automation, one entry point: `cargo xtask <command>`.
//!
//! - `dev`: generate a PKI and node config into `.bronze-dev/` (once), start
//!   bronzed in process mode on 127.0.0.1:50000 and say how to use bronzectl.
//! - `test`: format and lint checks, build the binaries, run the whole test suite.
//! - `bench`: build in release and run the API benchmarks.

use anyhow::{Context, bail};
use std::path::{Path, PathBuf};
use std::process::Command;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let root = workspace_root();
    std::env::set_current_dir(&root)?;
    match args.first().map(String::as_str) {
        Some("dev") => dev(&root, &args[1..]),
        Some("test") => test(&args[1..]),
        Some("bench") => bench(&args[1..]),
        _ => {
            eprintln!("usage: cargo xtask <dev|test|bench> [args]");
            eprintln!("  dev     start a development node (process mode) on 127.0.0.1:50000");
            eprintln!("  test    build and run the whole test suite");
            eprintln!("  bench   run the benchmarks (release build) and print figures");
            bail!("unknown command")
        }
    }
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask lives in the workspace").to_path_buf()
}

fn run(cmd: &mut Command) -> anyhow::Result<()> {
    eprintln!("+ {cmd:?}");
    let status = cmd.status().with_context(|| format!("cannot start {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}

fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

fn dev(root: &Path, args: &[String]) -> anyhow::Result<()> {
    let listen = args.first().cloned().unwrap_or_else(|| "127.0.0.1:50000".into());
    run(cargo().args(["build", "--bin", "bronzed", "--bin", "bronzectl"]))?;
    let dir = root.join(".bronze-dev");
    let bin = root.join("target/debug");
    if !dir.join("node.yaml").exists() {
        run(Command::new(bin.join("bronzectl"))
            .args(["gen", "config", "dev", "--endpoint", &listen, "--output-dir"])
            .arg(&dir))?;
    }
    let bronzeconfig = dir.join("bronzeconfig");
    println!();
    println!("Starting a Bronze node in process mode on {listen} (state in {}).", dir.join("state").display());
    println!("In another terminal:");
    println!("  export BRONZECONFIG={}", bronzeconfig.display());
    println!("  {}/bronzectl version", bin.display());
    println!("  {}/bronzectl get machinestatus", bin.display());
    println!("Stop the node with Ctrl-C.");
    println!();
    run(Command::new(bin.join("bronzed"))
        .args(["--mode", "process", "--listen", &listen, "--state-dir"])
        .arg(dir.join("state"))
        .arg("--config")
        .arg(dir.join("node.yaml")))
}

fn test(args: &[String]) -> anyhow::Result<()> {
    run(cargo().args(["fmt", "--all", "--", "--check"]))?;
    run(cargo().args(["clippy", "--workspace", "--all-targets", "--", "-D", "warnings"]))?;
    // The end-to-end tests start the real binaries: build them first.
    run(cargo().args(["build", "--bins"]))?;
    let (passed, failed) = run_counting(cargo().args(["test", "--workspace"]).args(args))?;
    // One closing line for the whole suite (cargo's last line is a doc-test
    // binary's, often "0 passed").
    println!("{passed} passed, {failed} failed");
    if failed > 0 {
        bail!("{failed} tests failed");
    }
    Ok(())
}

/// Runs `cargo test`, echoing its output, and adds up its "test result" lines.
fn run_counting(cmd: &mut Command) -> anyhow::Result<(u64, u64)> {
    use std::io::BufRead;
    eprintln!("+ {cmd:?}");
    let mut child =
        cmd.stdout(std::process::Stdio::piped()).spawn().with_context(|| format!("cannot start {cmd:?}"))?;
    let (mut passed, mut failed) = (0, 0);
    let stdout = child.stdout.take().context("no stdout")?;
    for line in std::io::BufReader::new(stdout).lines() {
        let line = line?;
        println!("{line}");
        if let Some(rest) = line.strip_prefix("test result: ") {
            passed += count(rest, " passed");
            failed += count(rest, " failed");
        }
    }
    let status = child.wait()?;
    if !status.success() && failed == 0 {
        bail!("{cmd:?} failed: {status}");
    }
    Ok((passed, failed))
}

/// The number before `label` in "ok. 18 passed; 0 failed; ...".
fn count(text: &str, label: &str) -> u64 {
    text.split(';')
        .find_map(|part| {
            part.trim().trim_start_matches("ok. ").trim_start_matches("FAILED. ").strip_suffix(label.trim_start())
        })
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

fn bench(args: &[String]) -> anyhow::Result<()> {
    run(cargo().args(["build", "--release", "--bins"]))?;
    run(cargo().args(["run", "--release", "-p", "bronze-tests", "--bin", "bench-api", "--"]).args(args))
}
