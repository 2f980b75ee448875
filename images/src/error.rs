//! The one error type of the image pipeline. Each variant names the file, command,
//! module or archive entry involved, so a failed `cargo xtask image` says what to fix.

use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::Duration;

/// An image pipeline error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file system operation failed.
    #[error("cannot {action} {path}: {source}", path = .path.display())]
    Io {
        /// What was being done ("read", "create", ...).
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A host tool could not be started.
    #[error("cannot start `{command}`: {source}{hint}")]
    Spawn {
        /// The command line.
        command: String,
        /// The underlying error.
        source: std::io::Error,
        /// What to install when the tool is missing (may be empty).
        hint: String,
    },
    /// A host tool exited unsuccessfully.
    #[error("`{command}` failed ({status}){}", stderr_suffix(.stderr))]
    Command {
        /// The command line.
        command: String,
        /// How it ended.
        status: ExitStatus,
        /// The tail of its standard error.
        stderr: String,
    },
    /// `apt-cache depends` named no kernel package.
    #[error("cannot resolve the kernel package: `{command}` names no linux-image-* dependency")]
    KernelPackage {
        /// The command that was asked.
        command: String,
    },
    /// The unpacked kernel package does not have the expected layout.
    #[error("unexpected kernel package layout in {path}: {reason}", path = .path.display())]
    KernelLayout {
        /// The unpacked package.
        path: PathBuf,
        /// What is missing.
        reason: String,
    },
    /// No xz stream in the compressed kernel decompressed to an ELF image.
    #[error("no xz-compressed ELF kernel found in {path} ({candidates} xz header(s) tried)", path = .path.display())]
    NoVmlinux {
        /// The bzImage.
        path: PathBuf,
        /// How many xz magics were tried.
        candidates: usize,
    },
    /// A `.ko` file is not an ELF64 object with a readable `.modinfo` section.
    #[error("{path}: not a usable kernel module: {reason}", path = .path.display())]
    BadModule {
        /// The module file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A line of the module list is not a module name.
    #[error("{path}:{line}: {reason}", path = .path.display())]
    ModuleList {
        /// The module list file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// A module (listed, or a dependency of one) is not in the kernel package.
    #[error("kernel module {name} (needed by {needed_by}) not found under {dir}", dir = .dir.display())]
    ModuleNotFound {
        /// The module name.
        name: String,
        /// "modules.txt" or the module that depends on it.
        needed_by: String,
        /// The module tree searched.
        dir: PathBuf,
    },
    /// The module dependencies form a cycle.
    #[error("kernel module dependency cycle among: {}", .modules.join(", "))]
    DependencyCycle {
        /// The modules that could not be ordered.
        modules: Vec<String>,
    },
    /// A line of a kernel config fragment is not an option.
    #[error("{path}:{line}: {reason}", path = .path.display())]
    Fragment {
        /// The fragment file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// The resolved kernel config does not set options as the fragment asks.
    #[error(
        "after `make olddefconfig`, {} option(s) of {fragment} are not as asked (resolved config: {config}):\n  {}",
        .mismatches.len(), .mismatches.join("\n  "), fragment = .fragment.display(), config = .config.display()
    )]
    KconfigMismatch {
        /// The fragment.
        fragment: PathBuf,
        /// The resolved `.config`.
        config: PathBuf,
        /// One line per option.
        mismatches: Vec<String>,
    },
    /// An initramfs entry cannot be represented or conflicts with another.
    #[error("initramfs entry {name}: {reason}")]
    Entry {
        /// The path inside the archive.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// A newc archive could not be parsed.
    #[error("bad newc archive at byte {offset}: {reason}")]
    Newc {
        /// Where the problem starts.
        offset: usize,
        /// What is wrong.
        reason: String,
    },
    /// The VM did not print the awaited line in time.
    #[error("no console line containing {pattern:?} within {waited:?} (console: {log}){}", tail_suffix(.tail))]
    ConsoleTimeout {
        /// What was awaited.
        pattern: String,
        /// How long we waited.
        waited: Duration,
        /// The console log file.
        log: PathBuf,
        /// The last console lines.
        tail: String,
    },
    /// qemu exited while we waited for a console line.
    #[error("qemu exited ({status}) before printing {pattern:?} (console: {log}){}", tail_suffix(.tail))]
    VmExited {
        /// What was awaited.
        pattern: String,
        /// How qemu ended.
        status: ExitStatus,
        /// The console log file.
        log: PathBuf,
        /// The last console lines.
        tail: String,
    },
}

impl Error {
    /// An [`Error::Io`] for `path`.
    pub(crate) fn io(action: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { action, path: path.into(), source }
    }
}

fn stderr_suffix(stderr: &str) -> String {
    if stderr.trim().is_empty() { String::new() } else { format!(": {}", stderr.trim()) }
}

fn tail_suffix(tail: &str) -> String {
    if tail.trim().is_empty() { "; it printed nothing".into() } else { format!("; last lines:\n{}", tail.trim_end()) }
}
