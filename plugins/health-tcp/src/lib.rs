//! Health check: healthy when a TCP connection to `host:port` opens.
//!
//! This is the template for new plugins. The whole plugin is one type that
//! implements [`HealthCheck`] plus one export macro; `plugin.toml` beside
//! Cargo.toml declares the config keys and the capabilities it uses (here
//! `config` and `probe`; `log` is always there).

use bronze_plugin_sdk::probe::{self, ProbeError};
use bronze_plugin_sdk::{HealthCheck, Report, config};

struct TcpCheck;

impl HealthCheck for TcpCheck {
    fn check() -> Report {
        // Bad config is not the target's fault: report `unknown`, naming the key.
        let (host, port, timeout_ms) = match read_config() {
            Ok(config) => config,
            Err(e) => return Report::unknown(e),
        };
        let target = if host.contains(':') { format!("[{host}]:{port}") } else { format!("{host}:{port}") };
        match probe::tcp_connect(&host, port, timeout_ms) {
            Ok(took) => {
                let ms = took.as_secs_f64() * 1000.0;
                Report::healthy(format!("connected to {target} in {ms:.1} ms")).detail("connect-ms", format!("{ms:.3}"))
            }
            // The operator has not granted this target: we cannot tell.
            Err(ProbeError::Denied(why)) => Report::unknown(format!("denied: {why}")),
            Err(e) => Report::unhealthy(format!("{target}: {}", e.describe())),
        }
    }
}

/// `host`, `port` and `timeout-ms`, or a message naming the bad key.
fn read_config() -> Result<(String, u16, u32), String> {
    Ok((config::require("host")?, config::require_parsed("port")?, config::get_parsed_or("timeout-ms", 1000)?))
}

bronze_plugin_sdk::export_health_check!(TcpCheck);
