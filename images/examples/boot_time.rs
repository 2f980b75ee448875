//! Boots the built image (`cargo xtask image`) a few times and prints boot figures:
//! host time until the kernel hands over to `/init`, the kernel's own timestamp of
//! that moment, and host time until bronzed logs "API listening".
//!
//! `cargo run -p bronze-images --example boot_time -- [RUNS]` (default 3). Each VM
//! gets a free loopback port and its console in `target/images/boot-time-N.log`;
//! each is killed by its PID before the next starts. Also shows how tests drive
//! [`bronze_images::vm::Vm`].

use bronze_images::layout::ImageLayout;
use bronze_images::vm::{Vm, VmSpec, free_port};
use std::path::Path;
use std::time::{Duration, Instant};

/// Generous: a loaded 2-core machine under TCG.
const BOOT_DEADLINE: Duration = Duration::from_secs(60);

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let runs: usize = match std::env::args().nth(1) {
        Some(arg) => arg.parse().map_err(|e| format!("RUNS {arg:?}: {e}"))?,
        None => 3,
    };
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().ok_or("no workspace directory")?;
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| workspace.join("target"), |d| workspace.join(d));
    let layout = ImageLayout::new(&target);
    if !layout.is_built() {
        return Err(format!("no image in {}: run `cargo xtask image` first", layout.dir.display()).into());
    }
    let mut to_init = Vec::new();
    for run in 0..runs {
        let spec = VmSpec::from_layout(&layout, free_port()?);
        let log = layout.dir.join(format!("boot-time-{run}.log"));
        let started = Instant::now();
        let mut vm = Vm::spawn(&spec, &log)?;
        let deadline = started + BOOT_DEADLINE;
        let line = vm.wait_for_line("Run /init as init process", deadline)?;
        let host_init = started.elapsed();
        let kernel_init = kernel_timestamp(&line).map_or("?".into(), |t| format!("{t:.3} s"));
        let api = match vm.wait_for_line("API listening", Instant::now() + Duration::from_secs(20)) {
            Ok(_) => format!("{:.2} s", started.elapsed().as_secs_f64()),
            Err(e) => format!("never ({e})"),
        };
        vm.kill()?;
        println!(
            "run {run}: /init at {:.2} s host, {kernel_init} kernel; API listening at {api} host (console: {})",
            host_init.as_secs_f64(),
            log.display()
        );
        to_init.push(host_init);
    }
    to_init.sort();
    if let Some(median) = to_init.get(to_init.len() / 2) {
        println!("median host time to /init over {runs} runs: {:.2} s", median.as_secs_f64());
    }
    Ok(())
}

/// The seconds in a kernel log line's `[    4.476019]` prefix.
fn kernel_timestamp(line: &str) -> Option<f64> {
    let inner = line.trim_start().strip_prefix('[')?.split(']').next()?;
    inner.trim().parse().ok()
}
