//! Project automation, one entry point: `cargo xtask <command>`.
//!
//! - `dev`: generate a PKI and node config into `.bronze-dev/` (once), start
//!   bronzed in process mode on 127.0.0.1:50000 and say how to use bronzectl.
//! - `test`: format and lint checks, build the binaries, run the whole test suite.
//! - `bench`: build in release and run the API benchmarks.
//! - `bench-time [SOAK_SECS]`: time sync accuracy and soak benchmarks.

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
        Some("bench") => bench("bench-api", &args[1..]),
        Some("bench-time") => bench("bench-time", &args[1..]),
        _ => {
            eprintln!("usage: cargo xtask <dev|test|bench|bench-time> [args]");
            eprintln!("  dev     start a development node (process mode) on 127.0.0.1:50000");
            eprintln!("  test    build and run the whole test suite");
            eprintln!("  bench   run the API benchmarks (release build) and print figures");
            eprintln!("  bench-time [SOAK_SECS]   time sync accuracy vs chronyd -Q, CPU/RSS soak");
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
    ensure_packages()?;
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

/// Installs the system packages the tests need: chrony, for real NTP servers
/// on loopback (the tests only ever run `chronyd -x` with their own configs).
/// The test and CI machines run as root with apt.
fn ensure_packages() -> anyhow::Result<()> {
    let on_path = std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join("chronyd").is_file()));
    if on_path || Path::new("/usr/sbin/chronyd").is_file() {
        return Ok(());
    }
    eprintln!("chronyd not found: installing chrony (the NTP tests need it)");
    // The package must not start its own daemon: its config points at public
    // pools, and tests only ever talk to chronyds they start on loopback.
    let policy = Path::new("/usr/sbin/policy-rc.d");
    let own_policy = !policy.exists();
    if own_policy {
        std::fs::write(policy, "#!/bin/sh\n# installed by cargo xtask: no service starts during install\nexit 101\n")?;
        std::fs::set_permissions(policy, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    }
    let installed = run(Command::new("apt-get").arg("update")).and_then(|_| {
        run(Command::new("apt-get")
            .args(["install", "-y", "--no-install-recommends", "chrony"])
            .env("DEBIAN_FRONTEND", "noninteractive"))
    });
    if own_policy {
        let _ = std::fs::remove_file(policy);
    }
    // Belt and braces on machines whose init ignores policy-rc.d.
    let _ = Command::new("systemctl").args(["disable", "--now", "chrony"]).status();
    installed
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

fn bench(which: &str, args: &[String]) -> anyhow::Result<()> {
    run(cargo().args(["build", "--release", "--bins"]))?;
    run(cargo().args(["run", "--release", "-p", "bronze-tests", "--bin", which, "--"]).args(args))
}
