//! Health check: is the node's clock synchronised? Reads the host's time
//! controller through the `facts: [time]` capability.

use bronze_plugin_sdk::{HealthCheck, Report, facts};

struct TimeCheck;

impl HealthCheck for TimeCheck {
    fn check() -> Report {
        let status = facts::time();
        let server = status.server.as_deref().unwrap_or("none");
        let report = if !status.synced {
            Report::unhealthy("clock not synchronised yet")
        } else if status.synced_by_timeout {
            // Booted on, but no server ever answered: the clock may be off.
            Report::degraded("clock synchronised by timeout, no time server answered")
        } else {
            Report::healthy(match status.offset_ns {
                Some(ns) => format!("clock synchronised to {server}, offset {}", millis(ns)),
                None => format!("clock synchronised to {server}"),
            })
        };
        let mut report = report.detail("server", server);
        if let Some(ns) = status.offset_ns {
            report = report.detail("offset", millis(ns));
        }
        if let Some(secs) = status.since_last_sync_secs {
            report = report.detail("since-last-sync", format!("{secs} s"));
        }
        report
    }
}

/// Nanoseconds as signed milliseconds, like `+0.125 ms`.
fn millis(ns: i64) -> String {
    format!("{:+.3} ms", ns as f64 / 1e6)
}

bronze_plugin_sdk::export_health_check!(TimeCheck);
