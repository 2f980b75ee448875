//! Health probes of services: a TCP connect, an HTTP GET answered with 2xx,
//! or the latest result of a health-check plugin instance (its
//! `HealthCheck` resource; unknown while it has none).

use super::status::HealthState;
use crate::plugins::resources::HealthCheckSpec;
use crate::state::Store;
use bronze_config::{Health, Host};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Probes on `health`'s interval forever, reporting each result.
pub async fn run(health: Health, store: Store, report: impl Fn(HealthState, String) + Send + 'static) {
    let interval = health.interval.as_std();
    let timeout = health.timeout.as_std();
    loop {
        let (state, message) = match tokio::time::timeout(timeout, probe_once(&health, &store)).await {
            Ok(result) => result,
            Err(_) => (HealthState::Unhealthy, format!("no answer within {} ms", timeout.as_millis())),
        };
        report(state, message);
        tokio::time::sleep(interval).await;
    }
}

fn host_string(host: &Host) -> String {
    match host {
        Host::Ip(ip) => ip.to_string(),
        Host::Name(name) => name.as_str().to_string(),
    }
}

async fn probe_once(health: &Health, store: &Store) -> (HealthState, String) {
    if let Some(tcp) = &health.tcp {
        return match TcpStream::connect((host_string(tcp.host()).as_str(), tcp.port())).await {
            Ok(_) => (HealthState::Healthy, format!("tcp {} connected", tcp.as_str())),
            Err(e) => (HealthState::Unhealthy, format!("tcp {}: {e}", tcp.as_str())),
        };
    }
    if let Some(url) = &health.http {
        return match http_status(&host_string(url.host()), url.port_or_default().unwrap_or(80), url.path()).await {
            Ok(code) if (200..300).contains(&code) => {
                (HealthState::Healthy, format!("http {} answered {code}", url.as_str()))
            }
            Ok(code) => (HealthState::Unhealthy, format!("http {} answered {code}", url.as_str())),
            Err(e) => (HealthState::Unhealthy, format!("http {}: {e}", url.as_str())),
        };
    }
    if let Some(plugin) = &health.plugin {
        return match store.get_typed::<HealthCheckSpec>(plugin.as_str()) {
            None => (HealthState::Unknown, format!("plugin health check {} has not reported yet", plugin.as_str())),
            Some((_, check)) => {
                let state = match check.status.as_str() {
                    "healthy" | "degraded" => HealthState::Healthy,
                    "unhealthy" => HealthState::Unhealthy,
                    _ => HealthState::Unknown,
                };
                (state, format!("plugin {}: {}: {}", plugin.as_str(), check.status, check.summary))
            }
        };
    }
    (HealthState::Unknown, "no probe configured".into())
}

/// The status code of `GET path` (HTTP/1.0, no body read).
async fn http_status(host: &str, port: u16, path: &str) -> std::io::Result<u16> {
    let mut stream = TcpStream::connect((host, port)).await?;
    let path = if path.is_empty() { "/" } else { path };
    stream.write_all(format!("GET {path} HTTP/1.0\r\nHost: {host}\r\nUser-Agent: bronzed\r\n\r\n").as_bytes()).await?;
    let mut head = [0u8; 64];
    let mut n = 0;
    while n < 12 {
        let read = stream.read(&mut head[n..]).await?;
        if read == 0 {
            break;
        }
        n += read;
    }
    let line = std::str::from_utf8(&head[..n]).unwrap_or("");
    line.split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidData, format!("not an HTTP answer: {line:?}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn http_status_reads_the_status_line() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 256];
            let _ = s.read(&mut buf).await;
            s.write_all(b"HTTP/1.1 503 Service Unavailable\r\n\r\n").await.unwrap();
        });
        assert_eq!(http_status("127.0.0.1", port, "/healthz").await.unwrap(), 503);
    }
}
