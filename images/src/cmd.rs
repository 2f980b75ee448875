//! Running host tools with errors that show the command line, its exit status and
//! the end of its standard error.

use crate::{Error, Result};
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// How much of a failed tool's stderr goes into the error message.
const STDERR_TAIL: usize = 2000;

/// Renders a command line for messages: program and arguments, space-separated.
pub(crate) fn display(cmd: &Command) -> String {
    let mut out = cmd.get_program().to_string_lossy().into_owned();
    for arg in cmd.get_args() {
        out.push(' ');
        out.push_str(&arg.to_string_lossy());
    }
    out
}

/// Runs `cmd` to completion, capturing stdout and stderr; fails unless it exits 0.
pub(crate) fn output(cmd: &mut Command, hint: &str) -> Result<Output> {
    let output = cmd.stdin(Stdio::null()).output().map_err(|source| spawn_error(cmd, source, hint))?;
    if !output.status.success() {
        return Err(Error::Command { command: display(cmd), status: output.status, stderr: tail(&output.stderr) });
    }
    Ok(output)
}

/// The error for a tool that could not be started.
pub(crate) fn spawn_error(cmd: &Command, source: std::io::Error, hint: &str) -> Error {
    let hint = if source.kind() == std::io::ErrorKind::NotFound && !hint.is_empty() {
        format!(" ({hint})")
    } else {
        String::new()
    };
    Error::Spawn { command: display(cmd), source, hint }
}

/// The last [`STDERR_TAIL`] bytes of a tool's stderr, as text.
pub(crate) fn tail(stderr: &[u8]) -> String {
    let start = stderr.len().saturating_sub(STDERR_TAIL);
    String::from_utf8_lossy(&stderr[start..]).trim().to_string()
}

/// Finds a system tool on `PATH`, then in the sbin directories that are not on a
/// normal user's `PATH` (`mke2fs` lives in `/usr/sbin`).
pub fn find_tool(name: impl AsRef<OsStr>) -> Option<PathBuf> {
    let name = name.as_ref();
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/local/sbin", "/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata().is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
}
