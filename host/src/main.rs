//! `bronzed`: parse flags, set up logging, run the node.

use bronze_host::init::{self, EarlyReport};
use bronze_host::node::{self, Mode, NodeOptions};
use bronze_host::sysinfo::SystemPaths;
use clap::{Parser, ValueEnum};
use std::net::SocketAddr;
use std::path::Path;
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Debug, Clone, Copy, ValueEnum)]
enum ModeArg {
    Pid1,
    Process,
}

/// The Bronze node host.
#[derive(Debug, Parser)]
#[command(name = "bronzed", version)]
struct Args {
    /// How to run; defaults to pid1 when this process is PID 1, else process.
    #[arg(long, value_enum)]
    mode: Option<ModeArg>,
    /// Directory for the stored config, keys and caches.
    #[arg(long, default_value = "/var/lib/bronze")]
    state_dir: PathBuf,
    /// Address of the gRPC API.
    #[arg(long, default_value = "0.0.0.0:50000")]
    listen: SocketAddr,
    /// Machine config to start from when the state dir holds none.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Time servers (host[:port], comma-separated) to use until the config
    /// names some. Process mode contacts no server unless given one.
    #[arg(long, value_delimiter = ',')]
    time_servers: Vec<String>,
    /// Plugin bundles that ship with the image (`<dir>/<id>/plugin.wasm` +
    /// `plugin.toml`), installed at start unless an operator installed that
    /// id. Defaults to /usr/lib/bronze/plugins as PID 1.
    #[arg(long)]
    image_plugins: Option<PathBuf>,
    /// A config drive given as a directory, `LABEL=DIR` (repeatable): what
    /// `bronze:host/volumes` offers in process mode instead of block devices.
    #[arg(long = "volume", value_name = "LABEL=DIR")]
    volumes: Vec<String>,
    /// sysfs root for DMI facts and block devices (tests point it at a
    /// fixture tree).
    #[arg(long, default_value = "/sys", hide = true)]
    sysfs: PathBuf,
    /// File holding the kernel command line plugins and the platform
    /// controller see (tests point it at a fixture).
    #[arg(long, default_value = "/proc/cmdline", hide = true)]
    cmdline_file: PathBuf,
    /// Platform detection: `auto` (every provider's detect()), a platform
    /// name to pin, or `none` (metal unless the config pins one). Defaults to
    /// auto as PID 1 and none in process mode, which never asks a metadata
    /// service it was not told to (a developer's machine may well be an
    /// EC2 instance).
    #[arg(long, value_name = "auto|none|NAME")]
    platform: Option<String>,
    /// Process mode: configure the network of the namespace bronzed runs in
    /// (apply the network spec, run DHCP) as PID 1 does. Only for a network
    /// namespace of its own, as the tests make.
    #[arg(long, hide = true)]
    own_network: bool,
    /// Process mode: a directory standing in for the EFI system partition
    /// (slot directories `a/`, `b/` and `loader/entries/`), so upgrades,
    /// rollbacks and the boot controller run against it as on a disk. A
    /// reboot restarts the node's subsystems in this process, so the slot it
    /// runs stays `--boot-slot`.
    #[arg(long, value_name = "DIR", requires = "boot_slot")]
    boot_dir: Option<PathBuf>,
    /// Process mode, with --boot-dir: the slot this process runs as (a or b).
    #[arg(long, value_name = "a|b", value_parser = ["a", "b"], requires = "boot_dir")]
    boot_slot: Option<String>,
    /// Log filter (tracing env-filter syntax); overrides RUST_LOG.
    #[arg(long)]
    log: Option<String>,
}

fn main() -> std::process::ExitCode {
    // `bronzed compile-worker ...`: the node compiling a plugin in a
    // process of its own (see plugins::compiler).
    let mut argv = std::env::args_os().skip(1);
    if argv.next().is_some_and(|a| a == bronze_host::plugins::compile_worker::COMMAND) {
        return bronze_host::plugins::compile_worker::main(argv);
    }
    // The kernel's clock at our first instruction: with the kernel's
    // "Run /init" stamp it splits exec from our own start (logged as PID 1).
    let main_at = init::boottime();
    let args = Args::parse();
    let filter = args.log.clone().or_else(|| std::env::var("RUST_LOG").ok()).unwrap_or_else(|| "info".into());
    let mode = match args.mode {
        Some(ModeArg::Pid1) => Mode::Pid1,
        Some(ModeArg::Process) => Mode::Process,
        None if std::process::id() == 1 => Mode::Pid1,
        None => Mode::Process,
    };
    // At least two workers even on one CPU: a task that hogs a worker (a
    // slow kernel call, heavy decoding) must not stall the API and the
    // network with it; the kernel time-slices the two.
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get().max(2));
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(workers).enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("bronzed: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    // As init: mount the kernel's filesystems, load boot modules and mount
    // the state disk before anything else; log to the console after that.
    let early = (mode == Mode::Pid1).then(|| {
        let report = runtime.block_on(init::early_boot(Path::new("/"), &init::EarlyOptions::for_image(Path::new("/"))));
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(&filter))
            .with_writer(init::pid1_log_writer(Path::new("/")))
            .with_ansi(false)
            .without_time()
            .init();
        tracing::debug!("main() entered at {:.3} s", main_at.as_secs_f64());
        report.log();
        Arc::new(report)
    });
    if early.is_none() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_writer(std::io::stderr)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init();
    }
    let volumes: Arc<dyn bronze_host::plugins::volumes::VolumeSource> = if args.volumes.is_empty() {
        match mode {
            // The kernel's block devices, mounted read-only on first read.
            Mode::Pid1 => Arc::new(bronze_host::plugins::volumes_kernel::KernelVolumes::pid1(
                &args.sysfs,
                &SystemPaths::default().dev,
            )),
            Mode::Process => Arc::new(bronze_host::plugins::volumes::NoVolumes),
        }
    } else {
        match bronze_host::plugins::volumes::DirVolumes::parse(&args.volumes) {
            Ok(dirs) => Arc::new(dirs),
            Err(e) => {
                eprintln!("bronzed: {e}");
                return std::process::ExitCode::from(2);
            }
        }
    };
    let opts = NodeOptions {
        mode,
        state_dir: args.state_dir,
        listen: args.listen,
        config: args.config,
        time_servers: args.time_servers,
        image_plugins: args
            .image_plugins
            .or_else(|| (mode == Mode::Pid1).then(|| PathBuf::from(bronze_host::plugins::IMAGE_PLUGINS_DIR))),
        early: early.clone(),
        paths: SystemPaths { sys: args.sysfs, cmdline: args.cmdline_file, ..SystemPaths::default() },
        platform: args.platform.clone().unwrap_or_else(|| if mode == Mode::Pid1 { "auto" } else { "none" }.into()),
        volumes,
        own_network: args.own_network || mode == Mode::Pid1,
        boot_dir: match (&args.boot_dir, args.boot_slot.as_deref().and_then(bronze_boot::Slot::parse)) {
            (Some(dir), Some(slot)) if mode == Mode::Process => Some((dir.clone(), slot)),
            _ => None,
        },
    };
    if let Some(early) = early {
        pid1_main(&runtime, opts, &early);
    }
    match runtime.block_on(node::run(opts)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("bronzed: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// PID 1 never exits: a failed or panicking node reboots after a delay (or
/// halts on `panic=0`), and if even that fails, the thread parks forever.
fn pid1_main(runtime: &tokio::runtime::Runtime, opts: NodeOptions, early: &EarlyReport) -> ! {
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| runtime.block_on(node::run(opts))));
    match outcome {
        Ok(Ok(())) => tracing::error!("the node stopped without powering off"),
        Ok(Err(e)) => tracing::error!("fatal: {e:#}"),
        Err(_) => tracing::error!("fatal: the node panicked"),
    }
    if let Err(e) = init::fatal_reboot(&init::KernelPower, &early.cmdline, init::FATAL_REBOOT_DELAY) {
        tracing::error!(error = %e, "cannot reboot");
    }
    loop {
        std::thread::park();
    }
}
