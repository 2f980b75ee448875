//! Time sync: a built-in SNTP client that keeps the node's clock right.
//!
//! Pure logic (no sockets, no clock): [`filter`] (burst choice, spike
//! filter), [`poll`] (adaptive interval, backoff, KoD RATE), [`servers`]
//! (sticky selection, failover, DENY hold-off), [`discipline`] (step, slew
//! or refuse; epoch). I/O: [`exchange`] (one request/reply on a connected
//! UDP socket), [`kernel`] (adjtimex), and [`controller`], the loop that ties
//! them together and publishes `TimeStatus`.

pub mod controller;
pub mod discipline;
pub mod exchange;
pub mod filter;
pub mod kernel;
pub mod poll;
pub mod servers;
pub mod types;

use bronze_config::HostPort;
use std::path::Path;

/// The server a node syncs with before it has a config (pid1 mode only;
/// process mode never contacts it). Overridden by `bronze.ntp=` on the
/// kernel command line.
pub const DEFAULT_NTP_SERVER: &str = "pool.ntp.org";

/// `bronze.ntp=a,b` from a kernel command line.
pub fn cmdline_servers(cmdline: &str) -> Option<Vec<String>> {
    cmdline
        .split_whitespace()
        .find_map(|arg| arg.strip_prefix("bronze.ntp="))
        .map(|list| list.split(',').filter(|s| !s.is_empty()).map(str::to_string).collect())
}

/// The servers to use before a config exists: the kernel command line's,
/// else the built-in default.
pub fn pid1_boot_servers(proc_root: &Path) -> Vec<HostPort> {
    let cmdline = std::fs::read_to_string(proc_root.join("cmdline")).unwrap_or_default();
    let names = cmdline_servers(&cmdline).unwrap_or_else(|| vec![DEFAULT_NTP_SERVER.to_string()]);
    parse_servers(&names)
}

/// Parses `host[:port]` strings, logging and skipping bad ones.
pub fn parse_servers(names: &[String]) -> Vec<HostPort> {
    names
        .iter()
        .filter_map(|n| match n.parse::<HostPort>() {
            Ok(hp) => Some(hp),
            Err(e) => {
                tracing::error!(server = %n, error = %e, "ignoring time server");
                None
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cmdline_overrides_the_default() {
        assert_eq!(
            cmdline_servers("console=ttyS0 bronze.ntp=127.0.0.1:9,ntp.lan quiet"),
            Some(vec!["127.0.0.1:9".to_string(), "ntp.lan".to_string()])
        );
        assert_eq!(cmdline_servers("console=ttyS0"), None);
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("cmdline"), "quiet\n").unwrap();
        assert_eq!(pid1_boot_servers(dir.path())[0].as_str(), DEFAULT_NTP_SERVER);
        std::fs::write(dir.path().join("cmdline"), "bronze.ntp=127.0.0.1:4123\n").unwrap();
        assert_eq!(pid1_boot_servers(dir.path())[0].port(), 4123);
    }
}
