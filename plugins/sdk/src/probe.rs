//! Reachability probes through `bronze:host/probe` (manifest: `probe = true`;
//! the operator grants each target).

use std::time::Duration;

pub use crate::host::bronze::host::probe::ProbeError;

/// Opens a TCP connection to `host:port` and closes it; the connect time.
pub fn tcp_connect(host: &str, port: u16, timeout_ms: u32) -> Result<Duration, ProbeError> {
    crate::host::bronze::host::probe::tcp_connect(host, port, timeout_ms).map(Duration::from_micros)
}

/// `GET`s `url` without following redirects; the status code.
pub fn http_status(url: &str, timeout_ms: u32) -> Result<u16, ProbeError> {
    crate::host::bronze::host::probe::http_status(url, timeout_ms)
}

impl ProbeError {
    /// One line for a summary, like `unreachable: connection refused`
    /// (the generated `Display` prints the Rust debug form).
    pub fn describe(&self) -> String {
        match self {
            ProbeError::Denied(why) => format!("denied: {why}"),
            ProbeError::InvalidTarget(why) => format!("invalid target: {why}"),
            ProbeError::Dns(why) => format!("dns: {why}"),
            ProbeError::Unreachable(why) => format!("unreachable: {why}"),
            ProbeError::Timeout => "timed out".to_string(),
            ProbeError::Protocol(why) => format!("protocol error: {why}"),
        }
    }
}
