//! Compiling plugins in a separate process, so the node's own memory never
//! grows with what it compiles and a compile that runs away is killed, not
//! the node. Every compile (an install, an image plugin, an unusable AOT
//! cache) runs the node's own binary as a compile worker
//! ([`super::compile_worker`]) with:
//!
//! - `RLIMIT_DATA` at the memory limit (writable private memory: the heap,
//!   thread stacks, the code being built; wasmtime's PROT_NONE reservations
//!   do not count), `RLIMIT_CPU` at the CPU-time limit, no core dumps;
//! - as PID 1, a cgroup with `memory.max` ([`super::cgroup`]);
//! - a wall-clock limit, after which it is killed;
//! - at most [`MAX_THREADS`] compiling threads (each thread's stack and
//!   work counts against the memory limit, so the limit must not depend on
//!   the machine's core count);
//! - nice 10, no other environment, `/` as its directory, stdin closed, and
//!   no descriptor of the node's but stdout and stderr (no listening socket).
//!
//! Its exit status comes from the one reaper, like every child's. Its
//! stdout (the report) and stderr (why it failed) are read up to
//! [`CAPTURE`] bytes each. [`classify`] turns how it ended into the
//! report or a [`CompileError`] that says which limit was hit.

use super::background::PLUGIN_WORK_NICE;
use super::cgroup::WorkerCgroup;
use super::compile_worker::{self, EXIT_INVALID, EXIT_OUT_OF_MEMORY, WorkerArgs, WorkerReport};
use super::loaded::bytes;
use crate::services::reaper::{Exit, Reaper};
use bronze_config::PluginCompile;
use std::ffi::{CString, OsString};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

/// Memory a compile may use when the config does not say.
pub const DEFAULT_MEMORY_LIMIT: u64 = 512 << 20;
/// CPU time a compile may use when the config does not say.
pub const DEFAULT_CPU_LIMIT: Duration = Duration::from_secs(60);
/// The worker is this very binary.
pub const WORKER_PROGRAM: &str = "/proc/self/exe";
/// Bytes kept of each of the worker's stdout and stderr.
pub const CAPTURE: usize = 4096;
/// Threads a worker compiles with, at most (wasmtime's parallel
/// compilation uses rayon's global pool, sized by `RAYON_NUM_THREADS`).
pub const MAX_THREADS: usize = 4;

/// What one compile may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompileLimits {
    /// Bytes of memory.
    pub memory: u64,
    /// CPU time, all threads together.
    pub cpu: Duration,
}

impl Default for CompileLimits {
    fn default() -> Self {
        CompileLimits { memory: DEFAULT_MEMORY_LIMIT, cpu: DEFAULT_CPU_LIMIT }
    }
}

impl CompileLimits {
    /// `machine.plugins.compile`, defaults for what it leaves out.
    pub fn of(set: Option<&PluginCompile>) -> CompileLimits {
        CompileLimits {
            memory: set.and_then(|c| c.memory_limit).map_or(DEFAULT_MEMORY_LIMIT, |m| m.as_u64()),
            cpu: set.and_then(|c| c.cpu_limit.as_ref()).map_or(DEFAULT_CPU_LIMIT, |d| d.as_std()),
        }
    }

    /// How long a worker may take on the clock: its CPU time on a machine
    /// busy with other work (it runs niced), then it is killed.
    pub fn wall(&self) -> Duration {
        self.cpu.saturating_mul(3) + Duration::from_secs(10)
    }
}

/// Why a compile did not produce an artifact.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CompileError {
    /// The bytes are not a component the node accepts.
    #[error("{reason}")]
    Invalid { reason: String },
    #[error(
        "compiling plugin {id} exceeded its memory limit ({}); machine.plugins.compile.memoryLimit sets it",
        bytes(*limit)
    )]
    Memory { id: String, limit: u64 },
    #[error(
        "compiling plugin {id} exceeded its CPU-time limit ({}); machine.plugins.compile.cpuLimit sets it",
        seconds(*limit)
    )]
    Cpu { id: String, limit: Duration },
    #[error("compiling plugin {id} did not finish within {} and was stopped", seconds(*limit))]
    Timeout { id: String, limit: Duration },
    /// The worker could not run, crashed, or said something unexpected.
    #[error("compiling plugin {id} failed: {detail}")]
    Worker { id: String, detail: String },
}

fn seconds(d: Duration) -> String {
    if d.subsec_nanos() == 0 { format!("{} s", d.as_secs()) } else { format!("{:.1} s", d.as_secs_f64()) }
}

/// How a worker ended, as the parent saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ended {
    pub exit: Exit,
    /// The parent killed it at the wall-clock limit.
    pub timed_out: bool,
    /// The cgroup counted an OOM kill while it ran.
    pub oom_killed: bool,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

/// The report of a worker that succeeded, or why it failed.
pub fn classify(id: &str, limits: CompileLimits, ended: &Ended) -> Result<WorkerReport, CompileError> {
    let id = id.to_string();
    let said = printable(&ended.stderr);
    if ended.timed_out {
        return Err(CompileError::Timeout { id, limit: limits.wall() });
    }
    if ended.oom_killed {
        return Err(CompileError::Memory { id, limit: limits.memory });
    }
    match ended.exit {
        Exit::Code(0) => serde_json::from_slice(&ended.stdout).map_err(|e| CompileError::Worker {
            id,
            detail: format!("its report is unreadable ({e}): {}", printable(&ended.stdout)),
        }),
        Exit::Code(code) if code == i32::from(EXIT_INVALID) => Err(CompileError::Invalid { reason: said }),
        Exit::Code(code) if code == i32::from(EXIT_OUT_OF_MEMORY) => {
            Err(CompileError::Memory { id, limit: limits.memory })
        }
        Exit::Signal(libc::SIGXCPU) => Err(CompileError::Cpu { id, limit: limits.cpu }),
        // Rust aborts when an allocation fails under RLIMIT_DATA.
        Exit::Signal(libc::SIGABRT) if compile_worker::is_out_of_memory(&said) => {
            Err(CompileError::Memory { id, limit: limits.memory })
        }
        exit if said.is_empty() => Err(CompileError::Worker { id, detail: format!("the worker ended with {exit}") }),
        exit => Err(CompileError::Worker { id, detail: format!("the worker ended with {exit}: {said}") }),
    }
}

/// Captured output as one line: invalid UTF-8 replaced, control characters
/// escaped (a component's names can reach error messages), cut at
/// [`CAPTURE`] bytes.
pub fn printable(bytes: &[u8]) -> String {
    let cut = bytes.len() > CAPTURE;
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(CAPTURE)]);
    let mut out = String::with_capacity(text.len());
    for c in text.trim_end().chars() {
        if c.is_control() {
            out.extend(c.escape_debug());
        } else {
            out.push(c);
        }
    }
    if cut {
        out.push('…');
    }
    out
}

/// Runs compile workers.
pub struct Compiler {
    program: PathBuf,
    reaper: Reaper,
    cgroup: Arc<dyn WorkerCgroup>,
}

impl std::fmt::Debug for Compiler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Compiler").field("program", &self.program).finish_non_exhaustive()
    }
}

impl Compiler {
    /// Workers run `program` (the node's binary: [`WORKER_PROGRAM`]); their
    /// exits come from `reaper`.
    pub fn new(program: PathBuf, reaper: Reaper, cgroup: Arc<dyn WorkerCgroup>) -> Compiler {
        Compiler { program, reaper, cgroup }
    }

    /// Compiles `args.input` into `args.output` in a worker under `limits`.
    /// `id` names the plugin in errors.
    pub async fn compile(
        &self,
        id: &str,
        args: &WorkerArgs,
        limits: CompileLimits,
    ) -> Result<WorkerReport, CompileError> {
        let fault = |detail: String| CompileError::Worker { id: id.to_string(), detail };
        let procs = self.cgroup.prepare(limits.memory).map_err(|e| fault(format!("cannot set up its cgroup: {e}")))?;
        let oom_before = self.cgroup.oom_kills();
        let worker_args = std::iter::once(OsString::from(compile_worker::COMMAND)).chain(args.to_args());
        let mut command = worker_command(&self.program, worker_args, limits, procs.as_deref()).map_err(fault)?;
        let mut child = command.spawn().map_err(|e| fault(format!("cannot start {}: {e}", self.program.display())))?;
        let pid = child.id() as i32;
        // Registered at once; the reaper keeps an exit that races ahead.
        let mut worker = Running { pid, exit: self.reaper.register(pid), ended: false };
        let stdout = capture(child.stdout.take().map(OwnedFd::from));
        let stderr = capture(child.stderr.take().map(OwnedFd::from));
        // Dropping a std Child neither kills nor waits: the reaper owns it.
        drop(child);
        let wall = limits.wall();
        let (exit, timed_out) = worker.wait(wall).await;
        if timed_out {
            tracing::warn!(plugin = id, pid, ?wall, "compile worker killed at its wall-clock limit");
        }
        let ended = Ended {
            exit,
            timed_out,
            oom_killed: self.cgroup.oom_kills() > oom_before,
            stdout: drained(stdout).await,
            stderr: drained(stderr).await,
        };
        tracing::debug!(plugin = id, pid, exit = %ended.exit, "compile worker ended");
        classify(id, limits, &ended)
    }
}

/// A started worker. Dropped before it ended (the install that wanted it
/// was cancelled), it is killed: no compile runs on unaccounted for.
struct Running {
    pid: i32,
    exit: tokio::sync::oneshot::Receiver<Exit>,
    ended: bool,
}

impl Running {
    /// Its exit, and whether it was killed at `wall`.
    async fn wait(&mut self, wall: Duration) -> (Exit, bool) {
        let outcome = match tokio::time::timeout(wall, &mut self.exit).await {
            Ok(exit) => (exit.unwrap_or(Exit::Signal(0)), false),
            Err(_) => match self.exit.try_recv() {
                Ok(exit) => (exit, false),
                Err(_) => {
                    self.kill();
                    ((&mut self.exit).await.unwrap_or(Exit::Signal(libc::SIGKILL)), true)
                }
            },
        };
        self.ended = true;
        outcome
    }

    /// SIGKILL, unless its exit already came: until the reaper hands the
    /// exit over, the pid cannot have been reused (the reaper delivers
    /// right after reaping, so the window between is a few instructions).
    fn kill(&mut self) {
        if self.exit.is_terminated() || !self.exit.is_empty() {
            return;
        }
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid), nix::sys::signal::Signal::SIGKILL);
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if !self.ended {
            self.kill();
        }
    }
}

/// The command that starts a worker: `program args` confined by `limits`,
/// joining `cgroup_procs` when given.
pub fn worker_command(
    program: &Path,
    args: impl IntoIterator<Item = OsString>,
    limits: CompileLimits,
    cgroup_procs: Option<&Path>,
) -> Result<Command, String> {
    let cgroup_procs = cgroup_procs
        .map(|p| CString::new(p.as_os_str().as_bytes()).map_err(|_| format!("{} has a NUL byte", p.display())))
        .transpose()?;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(MAX_THREADS);
    let mut command = Command::new(program);
    command
        .args(args)
        .env_clear()
        .env("RAYON_NUM_THREADS", threads.to_string())
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    confine(&mut command, limits, cgroup_procs);
    Ok(command)
}

/// Limits, priority, cgroup and descriptors, applied in the child between
/// fork and exec.
#[allow(unsafe_code)]
fn confine(command: &mut Command, limits: CompileLimits, cgroup_procs: Option<CString>) {
    let memory = limits.memory as libc::rlim_t;
    let cpu = limits.cpu.as_secs().max(1) as libc::rlim_t;
    let hook = move || -> std::io::Result<()> {
        if let Some(procs) = &cgroup_procs {
            crate::cgroup::join_in_child(procs)?;
        }
        set_limit(libc::RLIMIT_DATA, memory, memory)?;
        // SIGXCPU at the limit; SIGKILL a second later if it survives that.
        set_limit(libc::RLIMIT_CPU, cpu, cpu + 1)?;
        set_limit(libc::RLIMIT_CORE, 0, 0)?;
        // SAFETY: setpriority takes plain integers and touches no memory.
        // Failing to lower the priority is harmless.
        unsafe { libc::setpriority(libc::PRIO_PROCESS as _, 0, PLUGIN_WORK_NICE) };
        close_on_exec_from(3);
        Ok(())
    };
    // SAFETY: the hook runs in the forked child, where only async-signal-safe
    // calls are allowed. It makes plain system calls (open, write, close,
    // getrlimit, setrlimit, setpriority, close_range, fcntl) on values
    // prepared before the fork, allocates nothing and takes no lock.
    unsafe { command.pre_exec(hook) };
}

/// The type of `RLIMIT_*` constants: glibc has its own, musl (PID 1's
/// static build) plain `int`.
#[cfg(target_env = "gnu")]
type RlimitResource = libc::__rlimit_resource_t;
#[cfg(not(target_env = "gnu"))]
type RlimitResource = libc::c_int;

/// Lowers `resource` to `soft`/`hard`, never above the current hard limit
/// (raising it would fail without privileges).
#[allow(unsafe_code)]
fn set_limit(resource: RlimitResource, soft: libc::rlim_t, hard: libc::rlim_t) -> std::io::Result<()> {
    let mut current = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: both calls read or write only the rlimit structs on our stack.
    unsafe {
        if libc::getrlimit(resource, &mut current) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let hard = hard.min(current.rlim_max);
        let wanted = libc::rlimit { rlim_cur: soft.min(hard), rlim_max: hard };
        if libc::setrlimit(resource, &wanted) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Marks every descriptor from `first` on close-on-exec, so the worker
/// inherits none of the node's (sockets, the state dir lock, files).
#[allow(unsafe_code)]
fn close_on_exec_from(first: libc::c_int) {
    const CLOSE_RANGE_CLOEXEC: libc::c_uint = 1 << 2;
    // SAFETY: close_range and fcntl take plain integers; marking a
    // descriptor close-on-exec changes nothing before exec.
    unsafe {
        if libc::syscall(libc::SYS_close_range, first as libc::c_uint, libc::c_uint::MAX, CLOSE_RANGE_CLOEXEC) == 0 {
            return;
        }
        // Kernels before 5.11: one descriptor at a time.
        let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        let end = if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 {
            limit.rlim_cur.min(1 << 20) as libc::c_int
        } else {
            1024
        };
        for fd in first..end {
            libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
        }
    }
}

/// Reads a pipe to its end, keeping the first [`CAPTURE`] bytes (and one
/// more, so a cut shows).
fn capture(pipe: Option<OwnedFd>) -> tokio::task::JoinHandle<Vec<u8>> {
    tokio::spawn(async move {
        use tokio::io::AsyncReadExt;
        let mut kept = Vec::new();
        let Some(Ok(mut pipe)) = pipe.map(tokio::net::unix::pipe::Receiver::from_owned_fd) else {
            return kept;
        };
        let mut buf = [0u8; 1024];
        while let Ok(n) = pipe.read(&mut buf).await {
            if n == 0 {
                break;
            }
            let room = (CAPTURE + 1).saturating_sub(kept.len());
            kept.extend_from_slice(&buf[..n.min(room)]);
        }
        kept
    })
}

/// What a [`capture`] kept; nothing if the pipe is still open a moment
/// after the worker ended (something else holds it).
async fn drained(capture: tokio::task::JoinHandle<Vec<u8>>) -> Vec<u8> {
    let abort = capture.abort_handle();
    match tokio::time::timeout(Duration::from_secs(2), capture).await {
        Ok(Ok(kept)) => kept,
        _ => {
            abort.abort();
            Vec::new()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: CompileLimits = CompileLimits { memory: 64 << 20, cpu: Duration::from_secs(5) };

    fn ended(exit: Exit, stderr: &str) -> Ended {
        Ended { exit, timed_out: false, oom_killed: false, stdout: vec![], stderr: stderr.as_bytes().to_vec() }
    }

    #[test]
    fn each_way_a_worker_ends_has_its_own_error() {
        let report = WorkerReport { cwasm_sha256: "ab".into(), memory_minimum: 65536, fingerprint: "fp".into() };
        let ok = Ended { stdout: serde_json::to_vec(&report).unwrap(), ..ended(Exit::Code(0), "") };
        assert_eq!(classify("p", LIMITS, &ok), Ok(report));
        let text = |e: &Ended| classify("p", LIMITS, e).unwrap_err().to_string();
        assert_eq!(
            text(&ended(Exit::Code(65), "plugin.wasm is not a valid component: oops\n")),
            "plugin.wasm is not a valid component: oops"
        );
        let memory =
            "compiling plugin p exceeded its memory limit (64 MiB); machine.plugins.compile.memoryLimit sets it";
        assert_eq!(text(&ended(Exit::Code(66), "failed to mmap: Cannot allocate memory (os error 12)")), memory);
        assert_eq!(text(&ended(Exit::Signal(libc::SIGABRT), "memory allocation of 4096 bytes failed\n")), memory);
        assert_eq!(text(&Ended { oom_killed: true, ..ended(Exit::Signal(libc::SIGKILL), "") }), memory);
        assert_eq!(
            text(&ended(Exit::Signal(libc::SIGXCPU), "")),
            "compiling plugin p exceeded its CPU-time limit (5 s); machine.plugins.compile.cpuLimit sets it"
        );
        assert_eq!(
            text(&Ended { timed_out: true, ..ended(Exit::Signal(libc::SIGKILL), "") }),
            "compiling plugin p did not finish within 25 s and was stopped"
        );
        assert_eq!(
            text(&ended(Exit::Signal(libc::SIGSEGV), "")),
            "compiling plugin p failed: the worker ended with killed by signal 11 (SIGSEGV)"
        );
        assert_eq!(
            text(&ended(Exit::Code(70), "cannot read /x: No such file or directory (os error 2)")),
            "compiling plugin p failed: the worker ended with exit code 70: cannot read /x: No such file or directory (os error 2)"
        );
        assert!(
            text(&Ended { stdout: b"{\"nope\":1}".to_vec(), ..ended(Exit::Code(0), "") })
                .starts_with("compiling plugin p failed: its report is unreadable (")
        );
        // An abort for another reason is a crash, not a limit.
        assert!(text(&ended(Exit::Signal(libc::SIGABRT), "assertion failed")).contains("SIGABRT"));
    }

    #[test]
    fn captured_text_is_one_bounded_escaped_line() {
        assert_eq!(
            printable(b"bad name \x1b[31mred\x1b[0m\nsecond line\n"),
            "bad name \\u{1b}[31mred\\u{1b}[0m\\nsecond line"
        );
        assert_eq!(printable(b"caf\xc3\xa9 \xff"), "café \u{fffd}");
        let long = printable(&vec![b'x'; CAPTURE + 1]);
        assert_eq!(long.len(), CAPTURE + '…'.len_utf8());
        assert!(long.ends_with('…'));
    }

    #[test]
    fn limits_come_from_the_config_else_the_defaults() {
        assert_eq!(CompileLimits::of(None), CompileLimits::default());
        let set = PluginCompile { memory_limit: Some(bronze_config::ByteSize::mib(128)), cpu_limit: None };
        assert_eq!(CompileLimits::of(Some(&set)), CompileLimits { memory: 128 << 20, cpu: DEFAULT_CPU_LIMIT });
        assert_eq!(CompileLimits::default().wall(), Duration::from_secs(190));
    }

    /// The confinement as the kernel sees it, on a stand-in program.
    #[test]
    fn a_worker_starts_confined_and_inherits_no_descriptor() {
        use std::io::Read;
        // Descriptors the node might hold without close-on-exec (`pipe`
        // sets no flags).
        let (_read, _write) = nix::unistd::pipe().unwrap();
        let limits = CompileLimits { memory: 200 << 20, cpu: Duration::from_secs(7) };
        let script = "echo fds; ls /proc/self/fd; echo nice; cut -d' ' -f19 /proc/self/stat; echo env; env; cat /proc/self/limits";
        let args = ["-c", script].map(OsString::from);
        let mut child = worker_command(Path::new("/bin/sh"), args, limits, None).unwrap().spawn().unwrap();
        let mut out = String::new();
        child.stdout.take().unwrap().read_to_string(&mut out).unwrap();
        assert!(child.wait().unwrap().success());
        let section = |name: &str| -> Vec<&str> {
            out.lines().skip_while(|l| *l != name).skip(1).take_while(|l| !["nice", "env"].contains(l)).collect()
        };
        // 0, 1, 2 and the directory `ls` itself opens.
        assert_eq!(section("fds"), ["0", "1", "2", "3"], "{out}");
        assert_eq!(section("nice"), [PLUGIN_WORK_NICE.to_string()], "{out}");
        let env = section("env");
        assert!(env.iter().all(|l| !l.starts_with("CARGO") && !l.starts_with("RUST")), "{out}");
        let threads = std::thread::available_parallelism().unwrap().get().min(MAX_THREADS);
        assert!(env.contains(&format!("RAYON_NUM_THREADS={threads}").as_str()), "{out}");
        let limit = |name: &str| {
            let line = out.lines().find(|l| l.starts_with(name)).unwrap_or_else(|| panic!("{name}: {out}"));
            line[name.len()..].split_whitespace().collect::<Vec<_>>().join(" ")
        };
        assert_eq!(limit("Max data size"), "209715200 209715200 bytes");
        assert_eq!(limit("Max cpu time"), "7 8 seconds");
        assert_eq!(limit("Max core file size"), "0 0 bytes");
    }

    /// The first cgroup v2 mount, from mountinfo.
    fn cgroup2_mount() -> Option<PathBuf> {
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
        mountinfo.lines().find_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let point = left.split_whitespace().nth(4)?;
            (right.split_whitespace().next()? == "cgroup2").then(|| PathBuf::from(point))
        })
    }

    /// The worker joins its group between fork and exec (writing "0" to
    /// `cgroup.procs`), so nothing it runs is ever outside it.
    #[test]
    fn a_worker_is_in_its_cgroup_from_its_first_instruction() {
        use std::io::Read;
        let Some(mount) = cgroup2_mount() else {
            eprintln!("skipped because no cgroup v2 hierarchy is mounted");
            return;
        };
        let name = format!("bronze-test-{}", std::process::id());
        let group = mount.join(&name);
        if let Err(e) = std::fs::create_dir(&group) {
            eprintln!("skipped because {} is not writable here: {e}", mount.display());
            return;
        }
        let args = ["/proc/self/cgroup"].map(OsString::from);
        let spawned =
            worker_command(Path::new("/bin/cat"), args, CompileLimits::default(), Some(&group.join("cgroup.procs")))
                .unwrap()
                .spawn();
        let mut out = String::new();
        if let Ok(mut child) = spawned {
            child.stdout.take().unwrap().read_to_string(&mut out).unwrap();
            child.wait().unwrap();
        }
        std::fs::remove_dir(&group).unwrap();
        assert!(out.lines().any(|l| l == format!("0::/{name}")), "{out}");
    }
}
