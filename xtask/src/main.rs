//! Project automation, one entry point: `cargo xtask <command>`.
//!
//! - `dev`: generate a PKI and node config into `.bronze-dev/` (once), start
//!   bronzed in process mode on 127.0.0.1:50000 and say how to use bronzectl.
//! - `test`: format and lint checks, build the binaries, run the whole test suite.
//! - `bench`: build in release and run the API benchmarks.
//! - `bench-time [SOAK_SECS]`: time sync accuracy and soak benchmarks.
//! - `bench-vm [BOOTS] [kernels|compression|firmware|floor]`: boot time split, RSS
//!   as PID 1, image sizes, the disk image through UEFI beside the direct boot, the floor.
//! - `bench-plugins [--minutes N]`: plugin instantiate/call costs, AOT cache
//!   vs compile, RSS with 10 scheduled health plugins over N minutes.
//! - `bench-upgrade [RUNS] [rate|vm]`: an upgrade's upload rate beside a
//!   plain copy over loopback; upgrades end to end on the disk image.
//! - `image [--fresh-disk]`: build the bootable image (static bronzed as /init,
//!   Debian kernel, modules, state disk) into `target/images/`.
//! - `vm [--fresh-disk] [--direct] [--port N] [--append ARGS] [--rebuild]`: boot it
//!   under qemu: UEFI firmware, systemd-boot and the disk image by default;
//!   `--direct` has qemu load the kernel and initramfs (PVH).
//! - `plugins`: build the WebAssembly plugins and fixtures into bundles in
//!   `target/plugins/` and `target/plugin-fixtures/`. `dev`, `test`, `image`
//!   and `vm` do this first (a no-op build when nothing changed).

use anyhow::{Context, bail};
use std::path::{Path, PathBuf};
use std::process::Command;

mod plugins;

use bronze_images::layout::KernelChoice;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let root = workspace_root();
    std::env::set_current_dir(&root)?;
    match args.first().map(String::as_str) {
        Some("dev") => dev(&root, &args[1..]),
        Some("test") => test(&root, &args[1..]),
        Some("bench") => bench("bench-api", &args[1..]),
        Some("bench-time") => bench("bench-time", &args[1..]),
        Some("bench-plugins") => {
            build_plugins(&root)?;
            bench("bench-plugins", &args[1..])
        }
        Some("bench-vm") => {
            build_image(&root, false, &KernelChoice::ALL)?;
            // The floor's /init (section `floor`), static like bronzed.
            run(cargo().args(["build", "--release", "--target", MUSL, "-p", "bronze-floor-init"]))?;
            bench("bench-vm", &args[1..])
        }
        Some("bench-upgrade") => {
            build_image(&root, false, &[KernelChoice::Bronze])?;
            bench("bench-upgrade", &args[1..])
        }
        Some("image") => image(&root, &args[1..]),
        Some("vm") => vm(&root, &args[1..]),
        Some("plugins") => build_plugins(&root),
        Some("kernel") => kernel(&root).map(|_| ()),
        Some("afterburn") => ensure_afterburn(&root),
        _ => {
            eprintln!(
                "usage: cargo xtask <dev|test|bench|bench-time|bench-plugins|bench-vm|bench-upgrade|image|vm|plugins|kernel|afterburn> [args]"
            );
            eprintln!("  dev     start a development node (process mode) on 127.0.0.1:50000");
            eprintln!("  test    build and run the whole test suite");
            eprintln!("  bench   run the API benchmarks (release build) and print figures");
            eprintln!("  bench-time [SOAK_SECS]   time sync accuracy vs chronyd -Q, CPU/RSS soak");
            eprintln!(
                "  bench-vm [BOOTS] [kernels|compression|firmware|floor]   boot time split, RSS as PID 1, image sizes, UEFI vs direct boot, the floor"
            );
            eprintln!("  bench-plugins [--minutes N]   instantiate/call costs, AOT cache vs compile, RSS soak");
            eprintln!(
                "  bench-upgrade [RUNS] [rate|vm]   upload rate vs a plain copy over loopback; upgrade end to end on the disk image"
            );
            eprintln!("  image [--fresh-disk] [--kernel bronze|debian]   build the bootable image into target/images/");
            eprintln!(
                "  vm [--fresh-disk] [--kernel bronze|debian] [--direct] [--port N] [--append ARGS] [--rebuild]   boot it under qemu (UEFI and the disk image; --direct: qemu loads the kernel)"
            );
            eprintln!("  plugins  build the wasm plugins and fixtures into target/plugins/, target/plugin-fixtures/");
            eprintln!("  kernel   build Bronze's kernel (or find it in the cache outside target/)");
            eprintln!("  afterburn   install Afterburn into target/afterburn/ for the side-by-side tests");
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

/// Builds the plugins workspace and writes the bundles (see `plugins.rs`).
fn build_plugins(root: &Path) -> anyhow::Result<()> {
    plugins::build(root, &target_dir(root)).map(|_| ())
}

fn dev(root: &Path, args: &[String]) -> anyhow::Result<()> {
    let listen = args.first().cloned().unwrap_or_else(|| "127.0.0.1:50000".into());
    build_plugins(root)?;
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

fn test(root: &Path, args: &[String]) -> anyhow::Result<()> {
    let mut phases = Phases::default();
    ensure_packages(root)?;
    ensure_qemu()?;
    ensure_musl_toolchain()?;
    ensure_kernel_build_packages()?;
    phases.lap("packages");
    // The builds the image and the Afterburn tests need run beside the
    // foreground's checks, debug build and first tests, one after another,
    // at a lower priority: on two cores the foreground's compile leaves a
    // core idle for long stretches (cranelift-codegen alone is a long serial
    // chain) and the tests mostly wait on nodes. Each has its own cargo build
    // directory (release/musl, afterburn-build) or none (the kernel), so
    // neither waits for the other's lock.
    let background = Background::start(root)?;
    run(cargo().args(["fmt", "--all", "--", "--check"]))?;
    // The plugins are a separate wasm workspace; `--release` shares the
    // proc-macro builds with `build_plugins`. A fresh machine has no wasm
    // target yet: clippy needs it before the plugins are built.
    plugins::ensure_wasm_target()?;
    let plugins = root.join("plugins/Cargo.toml");
    run(cargo().args(["fmt", "--all", "--manifest-path"]).arg(&plugins).args(["--", "--check"]))?;
    run(cargo()
        .args(["clippy", "--release", "--target", "wasm32-wasip2", "--manifest-path"])
        .arg(&plugins)
        .arg("--target-dir")
        .arg(target_dir(root).join("wasm"))
        .args(["--", "-D", "warnings"]))?;
    phases.lap("fmt, plugins clippy");
    // One compile of the workspace, linted as it builds: clippy-driver as
    // the workspace's rustc wrapper runs clippy's lints on every workspace
    // crate and target, and the dependencies are compiled once (a separate
    // `cargo clippy` compiles all of them again, metadata only, which cost
    // CI ten minutes). The end-to-end tests start the real binaries, load
    // the plugin fixtures and boot the real image: built here, before them.
    run(linted(cargo().args(["build", "--workspace", "--all-targets"])))?;
    phases.lap("clippy + debug build");
    let (early, late) = test_files(root)?;
    let mut counts = (0, 0);
    let mut count = |cmd: &mut Command| -> anyhow::Result<()> {
        let (passed, failed) = run_counting(linted(cmd.arg("--no-fail-fast").args(args)))?;
        counts = (counts.0 + passed, counts.1 + failed);
        Ok(())
    };
    // Every test that needs neither the image nor Afterburn, while the
    // background lane builds them. Every call selects the whole workspace
    // (and names test targets) so that features unify as in the build
    // above: `-p` or `--exclude` would rebuild nix and everything on it.
    let mut early_cmd = cargo();
    early_cmd.args(["test", "--workspace", "--lib", "--bins"]);
    for file in &early {
        early_cmd.args(["--test", file]);
    }
    count(&mut early_cmd)?;
    count(cargo().args(["test", "--workspace", "--doc"]))?;
    // The plugins' own unit tests (parsers, the SDK's examples), natively:
    // the logic is target-independent, and a wasm test binary would need a
    // runner. Not linted again (clippy ran on them for wasm above).
    let plugin_counts = run_counting(
        cargo()
            .args(["test", "--no-fail-fast", "--workspace", "--target", HOST_TRIPLE, "--manifest-path"])
            .arg(&plugins)
            .arg("--target-dir")
            .arg(target_dir(root).join("plugin-native")),
    )?;
    phases.lap("tests without the image");
    let background_laps = background.wait()?;
    phases.lap("waiting for the background builds");
    // Bronze's kernel for the VM tests, Debian's for the smoke test that
    // keeps module loading working.
    build_image(root, false, &KernelChoice::ALL)?;
    phases.lap("images");
    ensure_afterburn(root)?;
    let mut late_cmd = cargo();
    late_cmd.args(["test", "--workspace"]);
    for file in &late {
        late_cmd.args(["--test", file]);
    }
    count(&mut late_cmd)?;
    phases.lap("VM and Afterburn tests");
    let (passed, failed) = (counts.0 + plugin_counts.0, counts.1 + plugin_counts.1);
    println!("background builds (beside the foreground until it waits for them): {background_laps}");
    println!("suite time: {phases}");
    // One closing line for the whole suite (cargo's last line is a doc-test
    // binary's, often "0 passed").
    println!("{passed} passed, {failed} failed");
    if failed > 0 {
        bail!("{failed} tests failed");
    }
    Ok(())
}

/// Every integration test target of the workspace (`cargo metadata`: the
/// end-to-end files in `tests/tests/`, and the other crates' `tests/`),
/// split: those that need neither the image nor Afterburn (run while the
/// background lane builds them), and those that do (`vm*`, `afterburn`). A
/// new target lands in the right group by its name.
fn test_files(root: &Path) -> anyhow::Result<(Vec<String>, Vec<String>)> {
    let out = cargo()
        .args(["metadata", "--no-deps", "--format-version", "1"])
        .current_dir(root)
        .output()
        .context("cannot run cargo metadata")?;
    if !out.status.success() {
        bail!("cargo metadata failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let metadata: serde_json::Value = serde_json::from_slice(&out.stdout).context("cargo metadata's JSON")?;
    let mut names: Vec<String> = metadata["packages"]
        .as_array()
        .context("cargo metadata lists no packages")?
        .iter()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .filter(|t| t["kind"].as_array().is_some_and(|k| k.iter().any(|k| k == "test")))
        .filter_map(|t| t["name"].as_str().map(str::to_owned))
        .collect();
    names.sort();
    names.dedup();
    anyhow::ensure!(names.iter().any(|n| n == "vm"), "cargo metadata lists no `vm` test target: {names:?}");
    Ok(names.into_iter().partition(|n| !(n.starts_with("vm") || n == "afterburn")))
}

/// `cmd` with clippy-driver as the rustc of the workspace's own crates and
/// warnings as errors: what `cargo clippy -- -D warnings` checks, in a real
/// build. Every cargo call of the suite that compiles the workspace sets the
/// same, or cargo would rebuild it (the wrapper is part of its fingerprint).
fn linted(cmd: &mut Command) -> &mut Command {
    cmd.env("RUSTC_WORKSPACE_WRAPPER", "clippy-driver").env("CLIPPY_ARGS", "-Dwarnings")
}

/// `cmd` run through `nice -n 10`, with its arguments, environment and
/// directory.
fn niced(cmd: &Command) -> Command {
    let mut out = Command::new("nice");
    out.args(["-n", "10"]).arg(cmd.get_program()).args(cmd.get_args());
    for (key, value) in cmd.get_envs() {
        match value {
            Some(value) => out.env(key, value),
            None => out.env_remove(key),
        };
    }
    if let Some(dir) = cmd.get_current_dir() {
        out.current_dir(dir);
    }
    out
}

/// The suite's background lane: the static `bronzed` (release, musl),
/// Bronze's kernel and Afterburn, built in a thread at nice 10 with their
/// output in `target/xtask-background.log` (its tail is shown if a step
/// fails).
struct Background {
    thread: std::thread::JoinHandle<anyhow::Result<Phases>>,
    log: PathBuf,
}

impl Background {
    fn start(root: &Path) -> anyhow::Result<Background> {
        let target = target_dir(root);
        std::fs::create_dir_all(&target).with_context(|| format!("cannot create {}", target.display()))?;
        let log = target.join("xtask-background.log");
        let file = std::fs::File::create(&log).with_context(|| format!("cannot create {}", log.display()))?;
        // A copy of this binary: the foreground's build relinks
        // target/debug/xtask (with the clippy wrapper) while the lane runs.
        let exe = std::env::current_exe().context("cannot find the xtask binary")?;
        let xtask = target.join("xtask-background");
        std::fs::copy(&exe, &xtask).with_context(|| format!("cannot copy {} to {}", exe.display(), xtask.display()))?;
        let root = root.to_path_buf();
        println!("background builds: static bronzed, Bronze's kernel, Afterburn (log in {})", log.display());
        let thread = std::thread::spawn(move || -> anyhow::Result<Phases> {
            let mut laps = Phases::default();
            let step = |cmd: &mut Command| -> anyhow::Result<()> {
                let mut cmd = niced(cmd);
                let out = file.try_clone()?;
                let err = file.try_clone()?;
                let status = cmd
                    .current_dir(&root)
                    .stdin(std::process::Stdio::null())
                    .stdout(out)
                    .stderr(err)
                    .status()
                    .with_context(|| format!("cannot start {cmd:?}"))?;
                if !status.success() {
                    bail!("{cmd:?} failed: {status}");
                }
                Ok(())
            };
            step(cargo().args(musl_bronzed_args()))?;
            laps.lap("static bronzed");
            step(Command::new(&xtask).arg("kernel"))?;
            laps.lap("Bronze's kernel");
            step(Command::new(&xtask).arg("afterburn"))?;
            laps.lap("afterburn");
            Ok(laps)
        });
        Ok(Background { thread, log })
    }

    /// Waits for the lane; its timings, or its error with the log's tail.
    fn wait(self) -> anyhow::Result<Phases> {
        let result = self.thread.join().map_err(|_| anyhow::anyhow!("the background build thread panicked"))?;
        result.map_err(|e| {
            let text = std::fs::read_to_string(&self.log).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let tail = lines[lines.len().saturating_sub(40)..].join("\n");
            e.context(format!("background build failed; the end of {}:\n{tail}", self.log.display()))
        })
    }
}

/// `cargo` arguments of the static `bronzed` the image ships.
fn musl_bronzed_args() -> [&'static str; 8] {
    ["build", "--release", "--target", MUSL, "-p", "bronze-host", "--bin", "bronzed"]
}

/// The Afterburn release the side-by-side tests compare with.
const AFTERBURN_VERSION: &str = "5.11.0";

/// Afterburn (Fedora CoreOS and Flatcar's metadata agent, a crates.io
/// crate) in `target/afterburn`, for `tests/tests/afterburn.rs` and the
/// platform bench: installed here, before the tests, so its several minutes
/// of compiling do not run alongside them (the tests install it the same
/// way if it is missing).
fn ensure_afterburn(root: &Path) -> anyhow::Result<()> {
    let target = target_dir(root);
    let bin = target.join("afterburn/bin/afterburn");
    let installed = Command::new(&bin)
        .arg("--version")
        .output()
        .is_ok_and(|out| out.status.success() && String::from_utf8_lossy(&out.stdout).contains(AFTERBURN_VERSION));
    if installed {
        return Ok(());
    }
    run(cargo()
        .args(["install", "afterburn", "--locked", "--version", AFTERBURN_VERSION, "--root"])
        .arg(target.join("afterburn"))
        .arg("--target-dir")
        .arg(target.join("afterburn-build")))
}

/// Wall-clock time of the suite's steps, printed at its end so a slow CI
/// run says where its time went.
struct Phases {
    last: std::time::Instant,
    laps: Vec<(&'static str, std::time::Duration)>,
}

impl Default for Phases {
    fn default() -> Self {
        Self { last: std::time::Instant::now(), laps: Vec::new() }
    }
}

impl Phases {
    fn lap(&mut self, name: &'static str) {
        let now = std::time::Instant::now();
        self.laps.push((name, now - self.last));
        self.last = now;
    }
}

impl std::fmt::Display for Phases {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let total: f64 = self.laps.iter().map(|(_, d)| d.as_secs_f64()).sum();
        for (name, took) in &self.laps {
            write!(f, "{name} {:.0} s, ", took.as_secs_f64())?;
        }
        write!(f, "total {total:.0} s")
    }
}

/// The image's plugin bundles, each with the artifact the image's own
/// bronzed compiles for it (`bronzed compile-worker`, the node's engine
/// settings for any CPU of the architecture): a first boot loads them
/// instead of compiling (seconds each under emulation). Written to `out`.
fn precompile_plugins(bronzed: &Path, bundles: &Path, out: &Path) -> anyhow::Result<PathBuf> {
    use sha2::Digest;
    let started = std::time::Instant::now();
    if out.exists() {
        std::fs::remove_dir_all(out).with_context(|| format!("cannot remove {}", out.display()))?;
    }
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(bundles)
        .with_context(|| format!("cannot read {}", bundles.display()))?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    dirs.sort();
    for dir in dirs.iter().filter(|d| d.join("plugin.wasm").is_file()) {
        let name = dir.file_name().context("bundle dir name")?;
        let dest = out.join(name);
        std::fs::create_dir_all(&dest).with_context(|| format!("cannot create {}", dest.display()))?;
        for file in ["plugin.toml", "plugin.wasm", "plugin.sig"] {
            if dir.join(file).is_file() {
                std::fs::copy(dir.join(file), dest.join(file))
                    .with_context(|| format!("cannot copy {}", dir.join(file).display()))?;
            }
        }
        let wasm = std::fs::read(dir.join("plugin.wasm"))?;
        let output = Command::new(bronzed)
            .arg("compile-worker")
            .arg("--input")
            .arg(dir.join("plugin.wasm"))
            .arg("--output")
            .arg(dest.join("plugin.cwasm"))
            .output()
            .with_context(|| format!("cannot run {} compile-worker", bronzed.display()))?;
        if !output.status.success() {
            bail!(
                "compiling {} for the image failed ({}): {}",
                dir.display(),
                output.status,
                String::from_utf8_lossy(&output.stderr)
            );
        }
        let worker: serde_json::Value = serde_json::from_slice(&output.stdout)
            .with_context(|| format!("the compile worker's report for {} is not JSON", dir.display()))?;
        let report = serde_json::json!({ "wasmSha256": hex::encode(sha2::Sha256::digest(&wasm)), "worker": worker });
        std::fs::write(dest.join("plugin.cwasm.json"), serde_json::to_vec_pretty(&report)?)?;
    }
    println!("plugins: precompiled {} bundles in {:.1} s", dirs.len(), started.elapsed().as_secs_f64());
    Ok(out.to_path_buf())
}

/// Installs what the tests need but cargo does not build: Debian packages
/// and a Python venv. The test and CI machines run as root with apt. Fast
/// when everything is there.
fn ensure_packages(root: &Path) -> anyhow::Result<()> {
    ensure_debian_packages()?;
    ensure_python_env(root)
}

/// chrony, for real NTP servers on loopback (the tests only ever run
/// `chronyd -x` with their own configs); openssl (pkey, x509, asn1parse,
/// s_client) and a python3 that can make venvs, for the interop tests;
/// genisoimage, dosfstools (mkfs.vfat) and mtools (mcopy), for config-drive
/// images and the disk image's ESP; fdisk (sfdisk), systemd-boot-efi and ovmf
/// for the disk image and its firmware boot; dnsmasq, dhcpcd, busybox and
/// tcpdump for the DHCP tests.
fn ensure_debian_packages() -> anyhow::Result<()> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let found = |program: &str| {
        std::env::split_paths(&path)
            .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/bin")])
            .any(|dir| dir.join(program).is_file())
    };
    let mut missing = Vec::new();
    if !found("chronyd") {
        missing.push("chrony");
    }
    if !found("openssl") {
        missing.push("openssl");
    }
    // Config drives for the volume tests: a `cidata` ISO and a vfat image.
    if !found("genisoimage") {
        missing.push("genisoimage");
    }
    if !found("mkfs.vfat") {
        missing.push("dosfstools");
    }
    if !found("mcopy") {
        missing.push("mtools");
    }
    // The bootable disk image: its partition table (sfdisk), its boot
    // loader (systemd-boot) and the UEFI firmware that boots it under qemu.
    if !found("sfdisk") {
        missing.push("fdisk");
    }
    if !Path::new(bronze_images::bootdisk::SYSTEMD_BOOT_EFI).is_file() {
        missing.push("systemd-boot-efi");
    }
    if !bronze_images::vm::Firmware::is_installed() {
        missing.push("ovmf");
    }
    // The DHCP tests and benchmark: dnsmasq as the server (the -base
    // package: the binary, no service), dhcpcd and busybox udhcpc as the
    // peers, tcpdump for captures.
    if !found("dnsmasq") {
        missing.push("dnsmasq-base");
    }
    if !found("dhcpcd") {
        missing.push("dhcpcd-base");
    }
    if !found("busybox") {
        missing.push("busybox");
    }
    if !found("tcpdump") {
        missing.push("tcpdump");
    }
    // Debian's python3 makes venvs only with python3-venv (ensurepip).
    let makes_venvs = Command::new("python3").args(["-c", "import ensurepip, venv"]).status();
    if !makes_venvs.is_ok_and(|s| s.success()) {
        missing.extend(["python3", "python3-venv"]);
    }
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("installing {} (the tests need them)", missing.join(", "));
    // chrony must not start its own daemon: its config points at public
    // pools, and tests only ever talk to chronyds they start on loopback.
    let policy = Path::new("/usr/sbin/policy-rc.d");
    let own_policy = !policy.exists();
    if own_policy {
        std::fs::write(policy, "#!/bin/sh\n# installed by cargo xtask: no service starts during install\nexit 101\n")?;
        std::fs::set_permissions(policy, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    }
    let installed = run(Command::new("apt-get").arg("update")).and_then(|_| {
        run(Command::new("apt-get")
            .args(["install", "-y", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"))
    });
    if own_policy {
        let _ = std::fs::remove_file(policy);
    }
    // Belt and braces on machines whose init ignores policy-rc.d.
    if missing.contains(&"chrony") {
        let _ = Command::new("systemctl").args(["disable", "--now", "chrony"]).status();
    }
    installed
}

/// The requirements of the Python clients in `tests/python/`, installed into
/// a venv at `target/pyenv`, where `tests/tests/interop.rs` looks for it.
const PYTHON_REQUIREMENTS: &str = "tests/python/requirements.txt";

/// Creates `target/pyenv` and installs the requirements into it, unless the
/// venv was already made from the same requirements (a copy of the file in
/// the venv says so), which costs nothing.
fn ensure_python_env(root: &Path) -> anyhow::Result<()> {
    let venv = target_dir(root).join("pyenv");
    let requirements = root.join(PYTHON_REQUIREMENTS);
    let wanted =
        std::fs::read_to_string(&requirements).with_context(|| format!("cannot read {}", requirements.display()))?;
    let stamp = venv.join("bronze-requirements.txt");
    let python = venv.join("bin/python");
    if python.is_file() && std::fs::read_to_string(&stamp).is_ok_and(|had| had == wanted) {
        return Ok(());
    }
    eprintln!("creating the Python venv {} from {PYTHON_REQUIREMENTS}", venv.display());
    run(Command::new("python3").args(["-m", "venv", "--clear"]).arg(&venv))?;
    run(Command::new(&python)
        .args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check", "-r"])
        .arg(&requirements))?;
    std::fs::write(&stamp, wanted).with_context(|| format!("cannot write {}", stamp.display()))
}

/// Runs `cargo test`, echoing its output, and adds up its "test result" lines.
/// Once cargo has exited, what is still queued is read for a few seconds and
/// no more: a process a test left behind with the output pipe open (an
/// orphaned grandchild) must not hang the suite.
fn run_counting(cmd: &mut Command) -> anyhow::Result<(u64, u64)> {
    use std::io::BufRead;
    use std::sync::mpsc::RecvTimeoutError;
    use std::time::{Duration, Instant};
    eprintln!("+ {cmd:?}");
    let mut child =
        cmd.stdout(std::process::Stdio::piped()).spawn().with_context(|| format!("cannot start {cmd:?}"))?;
    let stdout = child.stdout.take().context("no stdout")?;
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let (mut passed, mut failed) = (0, 0);
    let mut take = |line: String| {
        println!("{line}");
        if let Some(rest) = line.strip_prefix("test result: ") {
            passed += count(rest, " passed");
            failed += count(rest, " failed");
        }
    };
    let status = loop {
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(line) => take(line),
            Err(RecvTimeoutError::Disconnected) => break child.wait()?,
            Err(RecvTimeoutError::Timeout) => {
                if let Some(status) = child.try_wait()? {
                    let deadline = Instant::now() + Duration::from_secs(5);
                    loop {
                        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                            Ok(line) => take(line),
                            Err(RecvTimeoutError::Disconnected) => break,
                            Err(RecvTimeoutError::Timeout) => {
                                eprintln!(
                                    "warning: cargo test has exited but a process it started still holds its output open; not waiting for it"
                                );
                                break;
                            }
                        }
                    }
                    break status;
                }
            }
        }
    };
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

// ---------------------------------------------------------------------------
// cargo xtask image | vm: the bootable image and its qemu runner (images/).

/// The target triple of the static PID 1 binary.
const MUSL: &str = "x86_64-unknown-linux-musl";

/// The build machine's own target triple (the plugins' unit tests run on it).
const HOST_TRIPLE: &str = "x86_64-unknown-linux-gnu";

/// Options of `cargo xtask image` and `cargo xtask vm`.
#[derive(Debug)]
struct ImageArgs {
    /// Recreate the state disk (its contents are lost).
    fresh_disk: bool,
    /// vm: host port forwarded from 127.0.0.1 to the guest's API port.
    port: u16,
    /// vm: extra kernel command line arguments.
    append: Vec<String>,
    /// vm: rebuild the image even if one exists.
    rebuild: bool,
    /// The kernel the image boots.
    kernel: KernelChoice,
    /// vm: qemu loads the kernel and initramfs itself (PVH) instead of
    /// firmware booting the disk image.
    direct: bool,
}

fn parse_image_args(args: &[String], vm: bool) -> anyhow::Result<ImageArgs> {
    let mut opts = ImageArgs {
        fresh_disk: false,
        port: bronze_images::vm::GUEST_API_PORT,
        append: Vec::new(),
        rebuild: false,
        kernel: KernelChoice::Bronze,
        direct: false,
    };
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        match arg.as_str() {
            "--fresh-disk" => opts.fresh_disk = true,
            "--port" if vm => {
                let value = rest.next().context("--port needs a value")?;
                opts.port = value.parse().with_context(|| format!("--port {value:?} is not a port number"))?;
            }
            "--append" if vm => {
                let value = rest.next().context("--append needs a value")?;
                opts.append.extend(value.split_whitespace().map(String::from));
            }
            "--kernel" => {
                let value = rest.next().context("--kernel needs a value: bronze or debian")?;
                opts.kernel = KernelChoice::parse(value)
                    .with_context(|| format!("--kernel {value:?}: expected bronze or debian"))?;
            }
            "--rebuild" if vm => opts.rebuild = true,
            "--direct" if vm => opts.direct = true,
            other if vm => bail!(
                "unknown option {other:?}; usage: cargo xtask vm [--fresh-disk] [--kernel bronze|debian] [--direct] [--port N] [--append \"ARGS\"] [--rebuild]"
            ),
            other => {
                bail!("unknown option {other:?}; usage: cargo xtask image [--fresh-disk] [--kernel bronze|debian]")
            }
        }
    }
    Ok(opts)
}

/// `<workspace>/target`, or `CARGO_TARGET_DIR` when set: where cargo puts
/// `bronzed` and where the image goes (`images/`) and plugins come from (`plugins/`).
fn target_dir(root: &Path) -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => root.join(dir),
        _ => root.join("target"),
    }
}

fn image(root: &Path, args: &[String]) -> anyhow::Result<()> {
    let opts = parse_image_args(args, false)?;
    build_image(root, opts.fresh_disk, &[opts.kernel]).map(|_| ())
}

/// Builds the images of `kernels` (each into its [`ImageLayout`]): `bronzed`
/// (static, release) and the plugins once, then per kernel the kernel (Bronze's
/// built from source and cached, or Debian's package and its modules), the
/// initramfs and the state disk, and reports sizes.
fn build_image(
    root: &Path,
    fresh_disk: bool,
    kernels: &[KernelChoice],
) -> anyhow::Result<Vec<bronze_images::layout::ImageLayout>> {
    use bronze_images::layout::{self, ImageLayout, Strip};
    use bronze_images::{bootdisk, initramfs};
    use std::time::Instant;

    // 0. The plugins, packed below from target/plugins/.
    build_plugins(root)?;
    let target = target_dir(root);

    // 1. bronzed, static.
    ensure_musl_toolchain()?;
    let step = Instant::now();
    run(cargo().args(musl_bronzed_args()))?;
    let bronzed = target.join(MUSL).join("release/bronzed");
    println!("bronzed: {} ({:.1} s)", bronzed.display(), step.elapsed().as_secs_f64());
    let images = target.join("images");
    std::fs::create_dir_all(&images).with_context(|| format!("cannot create {}", images.display()))?;
    let bronzed_size = layout::file_size(&bronzed)?;
    let init = images.join("bronzed");
    let init_size = layout::strip(&bronzed, &init, Strip::Debug)?;
    let all_stripped = images.join("bronzed.strip-all");
    let min_size = layout::strip(&bronzed, &all_stripped, Strip::All)?;
    std::fs::remove_file(&all_stripped).with_context(|| format!("cannot remove {}", all_stripped.display()))?;
    let plugins = target.join("plugins");
    let plugins = match plugins.is_dir() {
        true => Some(precompile_plugins(&bronzed, &plugins, &images.join("plugins"))?),
        false => None,
    };
    match &plugins {
        Some(dir) => println!("plugins: {} -> /{}", dir.display(), initramfs::PLUGINS_DIR),
        None => println!("plugins: none ({} does not exist)", target.join("plugins").display()),
    }

    // The system's release: in its initramfs (what bronzed reports as PID 1)
    // and in its boot entry.
    let release = format!("v{}", env!("CARGO_PKG_VERSION"));
    let mut layouts = Vec::new();
    for &kernel in kernels {
        let started = Instant::now();
        let layout = ImageLayout::with_kernel(&target, kernel);
        std::fs::create_dir_all(&layout.dir).with_context(|| format!("cannot create {}", layout.dir.display()))?;
        println!();
        println!("image with {} kernel -> {}", kernel.name(), layout.dir.display());
        // 2. Kernel and modules.
        let (plan, about, mut report) = match kernel {
            KernelChoice::Bronze => bronze_kernel(root, &layout)?,
            KernelChoice::Debian => debian_kernel(root, &layout)?,
        };

        // 3. Initramfs.
        let step = Instant::now();
        let image = initramfs::bronze_initramfs(&init, &plan, plugins.as_deref(), &release)?;
        let mtime = initramfs::source_date_epoch();
        let initrd_size = image.write(&layout.initrd(), mtime, initramfs::IMAGE_INITRD_FORMAT)?;
        let newc_size = image.newc_size(mtime)?;
        std::fs::write(layout.initrd_listing(), image.listing()?)
            .with_context(|| format!("cannot write {}", layout.initrd_listing().display()))?;
        println!(
            "initramfs: {} ({} entries, mtime {mtime}; listing in {}) ({:.1} s)",
            layout.initrd().display(),
            image.entries().count(),
            layout.initrd_listing().display(),
            step.elapsed().as_secs_f64()
        );

        // 4. State disk (direct kernel boots), and the bootable disk image
        // (firmware boots) with Bronze's kernel, whose bzImage has the EFI stub.
        state_disk(&layout, fresh_disk)?;
        if kernel == KernelChoice::Bronze {
            let step = Instant::now();
            let spec = bootdisk::BootDiskSpec::new(layout.bzimage(), layout.initrd(), release.clone());
            let disk = bootdisk::build(&spec, &layout.disk_image(), &layout.dir.join("disk-work"))?;
            report.add("disk image (GPT, ESP + state)", disk.disk_size);
            report.add("boot slot capacity", bootdisk::slot_capacity(spec.esp_mib));
            println!(
                "disk image: {} (ESP {} MiB with systemd-boot and slot a, state {} MiB) ({:.1} s)",
                layout.disk_image().display(),
                spec.esp_mib,
                spec.state_mib,
                step.elapsed().as_secs_f64()
            );
        }

        // 5. Sizes.
        report.about = about;
        report.add(&format!("initrd ({:?})", initramfs::IMAGE_INITRD_FORMAT).to_lowercase(), initrd_size);
        report.add("initramfs (uncompressed)", newc_size);
        report.add("bronzed (unstripped)", bronzed_size);
        report.add("bronzed /init (strip-debug)", init_size);
        report.add("bronzed (strip-all)", min_size);
        report.write(&layout.sizes())?;
        println!();
        print!("{}", report.render());
        println!("(sizes in {}; image built in {:.1} s)", layout.sizes().display(), started.elapsed().as_secs_f64());
        layouts.push(layout);
    }
    Ok(layouts)
}

/// What [`build_image`] needs of a kernel: the module plan for the
/// initramfs, the lines that say what it is, and its sizes so far.
type KernelParts = (bronze_images::kmod::LoadPlan, Vec<String>, bronze_images::layout::SizeReport);

/// Bronze's kernel, built from Debian's kernel source and
/// `images/kernel/bronze.config` (or taken from the cache outside target/),
/// into `layout`. No modules: the initramfs gets an empty load list and the
/// kernel's `modules.builtin`. Every module `images/modules.txt` names for
/// Debian's kernel must be built in, or the build fails naming it.
fn bronze_kernel(root: &Path, layout: &bronze_images::layout::ImageLayout) -> anyhow::Result<KernelParts> {
    use bronze_images::{kbuild, kmod, layout::SizeReport};
    let (source, fragment, built) = kernel(root)?;
    let copy = |from: &Path, to: &Path| -> anyhow::Result<u64> {
        std::fs::copy(from, to).with_context(|| format!("cannot copy {} to {}", from.display(), to.display()))
    };
    let mut report = SizeReport::default();
    report.add("vmlinux", copy(&built.vmlinux(), &layout.vmlinux())?);
    report.add("bzImage", copy(&built.bzimage(), &layout.bzimage())?);
    copy(&built.config(), &layout.dir.join("kernel.config"))?;
    let builtin = std::fs::read_to_string(built.modules_builtin())
        .with_context(|| format!("cannot read {}", built.modules_builtin().display()))?;
    // The Debian image's modules are this kernel's built-ins.
    let (list_path, wanted) = module_list(root)?;
    let missing = kmod::not_built_in(&wanted, &builtin);
    if !missing.is_empty() {
        bail!(
            "{} names modules that Bronze's kernel does not build in: {} (add their options to {})",
            list_path.display(),
            missing.join(", "),
            fragment.display()
        );
    }
    let plan = kmod::LoadPlan::built_in(&built.release, builtin);
    let about = vec![
        format!(
            "kernel bronze {} {} (release {}, key {})",
            kbuild::SOURCE_PACKAGE,
            source.version,
            built.release,
            built.key
        ),
        format!("fragment {}", fragment.strip_prefix(root).unwrap_or(&fragment).display()),
    ];
    Ok((plan, about, report))
}

/// Bronze's kernel from the cache outside target/, built first if this
/// source and fragment were never built: the source, the fragment's path
/// and the kernel.
fn kernel(
    root: &Path,
) -> anyhow::Result<(bronze_images::kbuild::KernelSource, PathBuf, bronze_images::kbuild::BuiltKernel)> {
    use bronze_images::kbuild;
    use std::time::Instant;
    let step = Instant::now();
    ensure_kernel_build_packages()?;
    let source = kbuild::installed_source()?;
    let fragment = root.join("images/kernel/bronze.config");
    let cache = kbuild::cache_root();
    let jobs = std::thread::available_parallelism().map_or(2, |n| n.get());
    println!(
        "kernel: {} {} + {} (cache {}; a build logs to {}/build-{}/bronze-build.log)",
        kbuild::SOURCE_PACKAGE,
        source.version,
        fragment.display(),
        cache.display(),
        cache.display(),
        source.version
    );
    let built = kbuild::build(&source, &fragment, &cache, jobs)?;
    println!(
        "kernel release: {} ({} {}; {:.1} s)",
        built.release,
        if built.built_now { "built, key" } else { "cached, key" },
        built.key,
        step.elapsed().as_secs_f64()
    );
    Ok((source, fragment, built))
}

/// `images/modules.txt`, parsed: its path and the modules it names.
fn module_list(root: &Path) -> anyhow::Result<(PathBuf, bronze_images::kmod::ModuleList)> {
    let path = root.join("images/modules.txt");
    let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
    let list = bronze_images::kmod::parse_module_list(&text, &path)?;
    Ok((path, list))
}

/// Debian's current kernel package and the modules of `images/modules.txt`.
fn debian_kernel(root: &Path, layout: &bronze_images::layout::ImageLayout) -> anyhow::Result<KernelParts> {
    use bronze_images::{kernel, kmod, layout::SizeReport};
    use std::time::Instant;
    let step = Instant::now();
    let cache = layout.cache_dir();
    std::fs::create_dir_all(&cache).with_context(|| format!("cannot create {}", cache.display()))?;
    let package = resolve_kernel_package(&cache)?;
    let (deb, downloaded) = kernel::download(&package, &cache)?;
    println!("kernel package: {package} ({}: {})", if downloaded { "downloaded" } else { "cached" }, deb.display());
    let tree = kernel::unpack(&deb, &cache.join(&package))?;
    let vmlinux_size = kernel::extract_vmlinux(&tree.vmlinuz, &layout.vmlinux())
        .with_context(|| format!("cannot extract vmlinux from {}", tree.vmlinuz.display()))?;
    println!(
        "kernel release: {} -> {} ({:.1} s)",
        tree.release,
        layout.vmlinux().display(),
        step.elapsed().as_secs_f64()
    );
    let (_, wanted) = module_list(root)?;
    let index = kmod::ModuleIndex::scan(&tree.modules_dir)?;
    let plan = kmod::LoadPlan::resolve(&index, &tree.release, &wanted)?;
    for note in &plan.notes {
        println!("modules: note: {note}");
    }
    println!("modules ({} of {} in the package), load order:", plan.modules.len(), index.len());
    let at_boot = plan.at_boot();
    for module in &plan.modules {
        let deps = if module.info.depends.is_empty() {
            String::new()
        } else {
            format!("  (depends: {})", module.info.depends.join(", "))
        };
        let when = if at_boot.contains(module.name.as_str()) { "" } else { "  [on demand]" };
        println!("  {}{deps}{when}", module.path.display());
    }
    let mut report = SizeReport::default();
    report.add("vmlinux", vmlinux_size);
    Ok((plan, vec![format!("kernel debian {package} (release {})", tree.release)], report))
}

/// What building Bronze's kernel needs: the source package and kbuild's
/// tools (flex, bison, bc, libelf and OpenSSL headers, make and gcc).
fn ensure_kernel_build_packages() -> anyhow::Result<()> {
    use bronze_images::kbuild::{SOURCE_PACKAGE, source_tarball};
    let mut missing = Vec::new();
    if !source_tarball().is_file() {
        missing.push(SOURCE_PACKAGE);
    }
    for (tool, package) in [("flex", "flex"), ("bison", "bison"), ("bc", "bc"), ("make", "make"), ("gcc", "gcc")] {
        if bronze_images::find_tool(tool).is_none() {
            missing.push(package);
        }
    }
    if !Path::new("/usr/include/gelf.h").is_file() {
        missing.push("libelf-dev");
    }
    if !Path::new("/usr/include/openssl/opensslv.h").is_file() {
        missing.push("libssl-dev");
    }
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("installing {} (to build Bronze's kernel)", missing.join(", "));
    apt_install(&missing, &[])
}

/// Makes the state disk unless it exists (`fresh` replaces it) and says which.
fn state_disk(layout: &bronze_images::layout::ImageLayout, fresh: bool) -> anyhow::Result<()> {
    use bronze_images::disk::{self, DiskAction};
    let state = layout.state_disk();
    match disk::ensure_state_disk(&state, disk::STATE_SIZE_MIB, fresh)? {
        DiskAction::Created => println!(
            "state disk: {} created ({} MiB ext4, label {})",
            state.display(),
            disk::STATE_SIZE_MIB,
            disk::STATE_LABEL
        ),
        DiskAction::Kept => println!("state disk: {} kept (--fresh-disk recreates it)", state.display()),
    }
    Ok(())
}

/// The musl target and musl-gcc (ring and wasmtime compile C code).
fn ensure_musl_toolchain() -> anyhow::Result<()> {
    match Command::new("rustup").args(["target", "add", MUSL]).status() {
        Ok(status) if status.success() => {}
        Ok(status) => bail!("`rustup target add {MUSL}` failed: {status}"),
        Err(e) => eprintln!("rustup not found ({e}); assuming the {MUSL} target is installed"),
    }
    if bronze_images::find_tool("musl-gcc").is_none() {
        eprintln!("musl-gcc not found: installing musl-tools");
        apt_install(&["musl-tools"], &[])?;
    }
    Ok(())
}

/// `apt-get install` without recommends; refreshes the package lists and tries
/// again if the first attempt fails (a machine that never ran `apt-get update`).
fn apt_install(packages: &[&str], extra: &[&str]) -> anyhow::Result<()> {
    let install = || {
        run(Command::new("apt-get")
            .args(["install", "-y", "--no-install-recommends"])
            .args(extra)
            .args(packages)
            .env("DEBIAN_FRONTEND", "noninteractive"))
    };
    if install().is_ok() {
        return Ok(());
    }
    run(Command::new("apt-get").arg("update"))?;
    install()
}

/// The current kernel package, refreshing apt's lists if needed; offline, the
/// newest `.deb` already in the cache.
fn resolve_kernel_package(cache: &Path) -> anyhow::Result<String> {
    use bronze_images::kernel;
    match kernel::resolve_package() {
        Ok(package) => return Ok(package),
        Err(e) => eprintln!("{e}; refreshing apt's package lists"),
    }
    let refreshed = run(Command::new("apt-get").arg("update"));
    match (refreshed, kernel::resolve_package()) {
        (_, Ok(package)) => Ok(package),
        (_, Err(e)) => {
            let Some(deb) = kernel::debs(cache)?.pop() else {
                return Err(e).context("cannot resolve the kernel package and none is cached");
            };
            let package = kernel::package_of_deb(&deb);
            eprintln!("warning: {e}; using the cached {package}");
            Ok(package)
        }
    }
}

/// qemu-system-x86 from bookworm-backports (bookworm's 7.2 would remove the
/// machine's qemu-utils 10), without recommends (+535 MB).
fn ensure_qemu() -> anyhow::Result<()> {
    if bronze_images::find_tool(bronze_images::vm::QEMU).is_some() {
        return Ok(());
    }
    eprintln!("{} not found: installing qemu-system-x86 from backports", bronze_images::vm::QEMU);
    let sources_dir = Path::new("/etc/apt/sources.list.d");
    let debian = sources_dir.join("debian.sources");
    let text = std::fs::read_to_string(&debian).with_context(|| format!("cannot read {}", debian.display()))?;
    // The first stanza names the main archive; reuse its mirror and keys.
    let stanza =
        text.split("\n\n").find(|s| s.lines().any(|l| l.starts_with("Suites:"))).context("no Suites: stanza")?;
    let codename = stanza
        .lines()
        .find_map(|l| l.strip_prefix("Suites:"))
        .and_then(|suites| suites.split_whitespace().next())
        .context("empty Suites: line")?
        .to_string();
    let backports = format!("{codename}-backports");
    let has_backports = std::fs::read_dir(sources_dir)?
        .filter_map(Result::ok)
        .any(|e| std::fs::read_to_string(e.path()).is_ok_and(|t| t.contains(&backports)));
    if !has_backports {
        let stanza: Vec<String> = stanza
            .lines()
            .map(|l| if l.starts_with("Suites:") { format!("Suites: {backports}") } else { l.to_string() })
            .collect();
        let bpo = sources_dir.join("bpo.sources");
        std::fs::write(&bpo, stanza.join("\n") + "\n").with_context(|| format!("cannot write {}", bpo.display()))?;
        eprintln!("added {} ({backports})", bpo.display());
    }
    run(Command::new("apt-get").arg("update"))?;
    run(Command::new("apt-get")
        .args(["install", "-y", "--no-install-recommends", "-t", &backports, "qemu-system-x86"])
        .env("DEBIAN_FRONTEND", "noninteractive"))
}

/// Boots the image under qemu with the console on this terminal (and in
/// `target/images/console.log`), until the guest powers off or qemu is quit.
/// The VM `cargo xtask vm` boots by default: UEFI firmware, systemd-boot and
/// the disk image, like a machine. It runs on its own copy of the disk
/// (`vm-disk.img`, kept across runs for its state and upgrades; made again
/// from the image with `--fresh-disk` or when the image is newer) and its own
/// firmware variables.
fn firmware_machine(
    layout: &bronze_images::layout::ImageLayout,
    port: u16,
    fresh: bool,
) -> anyhow::Result<bronze_images::vm::VmSpec> {
    use bronze_images::vm::{Disk, DiskFormat, Firmware, VmSpec};
    if !Firmware::is_installed() {
        apt_install(&["ovmf"], &[])?;
    }
    let image = layout.disk_image();
    let disk = layout.dir.join("vm-disk.img");
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let stale = match (modified(&disk), modified(&image)) {
        (Some(disk), Some(image)) => image > disk,
        _ => true,
    };
    if fresh || stale {
        std::fs::copy(&image, &disk)
            .with_context(|| format!("cannot copy {} to {}", image.display(), disk.display()))?;
        println!("vm disk: {} (a fresh copy of {})", disk.display(), image.display());
    } else {
        println!("vm disk: {} kept (--fresh-disk copies the image again)", disk.display());
    }
    let vars = layout.dir.join("vm-efivars.fd");
    let firmware = if vars.is_file() {
        Firmware { code: bronze_images::vm::OVMF_CODE.into(), vars }
    } else {
        Firmware::ovmf(vars)?
    };
    Ok(VmSpec::from_disk_image(Disk { path: disk, format: DiskFormat::Raw }, firmware, port))
}

fn vm(root: &Path, args: &[String]) -> anyhow::Result<()> {
    use bronze_images::layout::ImageLayout;
    use bronze_images::vm::{Vm, VmSpec};
    use std::io::{IsTerminal, Read, Write};

    let opts = parse_image_args(args, true)?;
    ensure_qemu()?;
    let layout = ImageLayout::with_kernel(&target_dir(root), opts.kernel);
    let firmware = !opts.direct && opts.kernel == KernelChoice::Bronze;
    if opts.rebuild || !layout.is_built() || (firmware && !layout.disk_image().is_file()) {
        build_image(root, opts.fresh_disk, &[opts.kernel])?;
    } else {
        // The image keeps its plugins, but the bundles (and fixtures) on
        // disk are current for installing into the running node.
        build_plugins(root)?;
        println!("using the image in {} (--rebuild rebuilds it)", layout.dir.display());
        state_disk(&layout, opts.fresh_disk)?;
    }
    let spec = if !firmware {
        VmSpec::machine(&layout, opts.port, opts.append)
    } else {
        if !opts.append.is_empty() {
            bail!(
                "--append needs --direct: a firmware boot takes its kernel command line from the boot loader's entry"
            );
        }
        firmware_machine(&layout, opts.port, opts.fresh_disk)?
    };
    let port = opts.port;
    let config_dir = layout.dir.join("vm-config");
    println!();
    println!(
        "+ {} {}",
        spec.qemu.display(),
        spec.args()
            .iter()
            .map(|a| if a.contains(' ') { format!("{a:?}") } else { a.clone() })
            .collect::<Vec<_>>()
            .join(" ")
    );
    // A client and a node config for this VM, generated once.
    run(cargo().args(["build", "--bin", "bronzectl"]))?;
    if !config_dir.join("node.yaml").exists() {
        let endpoint = format!("127.0.0.1:{port}");
        run(Command::new(target_dir(root).join("debug/bronzectl"))
            .args(["gen", "config", "vm", "--endpoint", &endpoint, "--output-dir"])
            .arg(&config_dir))?;
    }
    println!(
        "The node boots in maintenance mode; its API is forwarded to 127.0.0.1:{port}. A node config and a client config are in {}. Apply it:",
        config_dir.display()
    );
    println!(
        "  target/debug/bronzectl -n 127.0.0.1:{port} --insecure --cert-fingerprint <fingerprint from the console> apply-config -f {}/node.yaml",
        config_dir.display()
    );
    println!("  BRONZECONFIG={}/bronzeconfig target/debug/bronzectl version", config_dir.display());
    let interactive = std::io::stdin().is_terminal();
    println!(
        "Console below (also in {}). Like a machine: `bronzectl reboot` restarts it with the same disk, \
         `bronzectl shutdown` powers it off and ends this command; {}",
        layout.console_log().display(),
        if interactive {
            "Ctrl-C (or Ctrl-A X) pulls the plug."
        } else {
            "stdin is not a terminal: input disabled, Ctrl-C stops qemu."
        }
    );
    println!();
    let stdin = if interactive { std::process::Stdio::inherit() } else { std::process::Stdio::null() };
    let mut machine = Vm::spawn_with_stdin(&spec, &layout.console_log(), stdin)?;
    println!("qemu pid {}", machine.pid());

    // Echo the console; when the node prints its maintenance-mode fingerprint,
    // print the exact apply-config command.
    let mut log = std::fs::File::open(machine.console_path())
        .with_context(|| format!("cannot open {}", machine.console_path().display()))?;
    let mut line = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    let mut stdout = std::io::stdout();
    loop {
        let exited = machine.try_wait()?;
        loop {
            let n = log.read(&mut chunk).context("cannot read the console log")?;
            if n == 0 {
                break;
            }
            stdout.write_all(&chunk[..n])?;
            for &byte in &chunk[..n] {
                if byte != b'\n' {
                    line.push(byte);
                    continue;
                }
                let text = String::from_utf8_lossy(&line).into_owned();
                line.clear();
                if text.contains("reboot: Restarting system") {
                    write!(stdout, "\r\n>>> the guest rebooted: same VM, same state disk\r\n")?;
                }
                if let Some(fingerprint) = bronze_images::vm::maintenance_fingerprint(&text) {
                    write!(
                        stdout,
                        "\r\n>>> maintenance mode: target/debug/bronzectl -n 127.0.0.1:{port} --insecure --cert-fingerprint {fingerprint} apply-config -f {}/node.yaml\r\n",
                        config_dir.display()
                    )?;
                }
            }
            stdout.flush()?;
        }
        if let Some(status) = exited {
            println!();
            if !status.success() {
                bail!(
                    "qemu exited with {status} (1 = guest kernel panic with pvpanic; console in {})",
                    layout.console_log().display()
                );
            }
            println!("qemu exited cleanly: the guest powered off");
            return Ok(());
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_test_target_of_the_workspace_is_in_one_group() {
        let (early, late) = test_files(&workspace_root()).unwrap();
        for name in ["cli", "authz", "config", "globals"] {
            assert!(early.iter().any(|n| n == name), "{name} not among the early tests: {early:?}");
        }
        for name in ["vm", "vm_disk", "afterburn"] {
            assert!(late.iter().any(|n| n == name), "{name} not among the late tests: {late:?}");
        }
        let files = std::fs::read_dir(workspace_root().join("tests/tests")).unwrap().count();
        assert!(early.len() + late.len() > files, "{} + {} targets for {files} files", early.len(), late.len());
    }
}
