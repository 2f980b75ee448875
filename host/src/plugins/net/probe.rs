//! The `probe` capability: reachability checks for health checks. Targets
//! are named by the operator, so any address a granted name resolves to is
//! fair game; what is checked is that the target itself is granted.

use std::net::{IpAddr, Ipv6Addr};
use std::time::Duration;

use bronze_bundle::text::escape;
use bronze_config::ProbeTarget;
use tokio::time::Instant;

use super::target::{Host, Prefix, Scheme, Target, matching};
use super::wire::{self, ExchangeError, chain, is_io};
use super::{Resolver, time_limit};

/// Why a probe gave no answer (the WIT `probe-error` variant).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProbeError {
    #[error("denied: {0}")]
    Denied(String),
    #[error("invalid target: {0}")]
    InvalidTarget(String),
    #[error("name resolution failed: {0}")]
    Dns(String),
    #[error("unreachable: {0}")]
    Unreachable(String),
    #[error("timed out")]
    Timeout,
    #[error("protocol error: {0}")]
    Protocol(String),
}

#[derive(Debug)]
struct TcpTarget {
    host: Host,
    port: u16,
    text: String,
}

/// What one instance may probe, built from its `grants.probe`.
#[derive(Debug)]
pub struct ProbePolicy {
    tcp: Vec<TcpTarget>,
    http: Vec<Prefix>,
}

impl ProbePolicy {
    pub fn new(targets: &[ProbeTarget]) -> Self {
        let mut out = ProbePolicy { tcp: Vec::new(), http: Vec::new() };
        for target in targets {
            let url = target.url();
            if target.is_tcp() {
                if let Some(port) = url.port() {
                    out.tcp.push(TcpTarget {
                        host: Host::from_config(url.host()),
                        port,
                        text: url.as_str().to_owned(),
                    });
                }
            } else if let Some(prefix) = Prefix::from_url(url) {
                out.http.push(prefix);
            } else {
                tracing::warn!(%target, "ignoring a probe grant that is not a plain http(s) prefix");
            }
        }
        out
    }
}

/// Opens a TCP connection to a granted `host:port` and closes it again.
/// Returns how long the successful connect took.
pub async fn tcp_connect(
    policy: &ProbePolicy,
    resolver: &dyn Resolver,
    host: &str,
    port: u16,
    timeout: Duration,
    deadline: Instant,
) -> Result<Duration, ProbeError> {
    let limit = time_limit(Some(timeout), deadline);
    let result = tokio::time::timeout_at(limit, async {
        let parsed = parse_tcp_host(host)?;
        if port == 0 {
            return Err(ProbeError::InvalidTarget("port 0 cannot be probed".to_owned()));
        }
        let shown = match &parsed {
            Host::Ip(IpAddr::V6(ip)) => format!("tcp://[{ip}]:{port}"),
            _ => format!("tcp://{parsed}:{port}"),
        };
        if !policy.tcp.iter().any(|t| t.host == parsed && t.port == port) {
            let granted: Vec<&str> = policy.tcp.iter().map(|t| t.text.as_str()).collect();
            return Err(ProbeError::Denied(match granted.is_empty() {
                true => format!("no tcp probe is granted, so {shown} is not allowed"),
                false => format!("no probe grant allows {shown} (granted: {})", granted.join(", ")),
            }));
        }
        let addrs = resolve(resolver, &parsed, port).await?;
        let (_stream, took) = wire::dial(&addrs, port).await.map_err(|e| ProbeError::Unreachable(e.message))?;
        Ok::<_, ProbeError>(took)
    })
    .await;
    result.unwrap_or(Err(ProbeError::Timeout))
}

/// `GET`s a URL under a granted http(s) probe prefix and returns the status
/// code; redirects are not followed and the body is not read.
pub async fn http_status(
    policy: &ProbePolicy,
    resolver: &dyn Resolver,
    url: &str,
    timeout: Duration,
    deadline: Instant,
) -> Result<u16, ProbeError> {
    let limit = time_limit(Some(timeout), deadline);
    let result = tokio::time::timeout_at(limit, async {
        let target = Target::parse(url).map_err(ProbeError::InvalidTarget)?;
        let prefixes: Vec<&Prefix> = policy.http.iter().collect();
        matching(&prefixes, &target).map_err(ProbeError::Denied)?;
        let addrs = resolve(resolver, &target.host, target.port).await?;
        let request = wire::request(&target, http::Method::GET, &[], None)
            .map_err(|e| ProbeError::InvalidTarget(e.to_string()))?;
        let (stream, _) = wire::dial(&addrs, target.port).await.map_err(|e| ProbeError::Unreachable(e.message))?;
        let result = match target.scheme {
            Scheme::Http => wire::exchange(stream, request, |_| None).await,
            Scheme::Https => {
                let tls = wire::tls(stream, &target.host).await.map_err(|e| {
                    let why = format!("TLS handshake with {} failed: {}", target.authority(), chain(&e));
                    match e.kind() {
                        std::io::ErrorKind::InvalidData => ProbeError::Protocol(why),
                        _ => ProbeError::Unreachable(why),
                    }
                })?;
                wire::exchange(tls, request, |_| None).await
            }
        };
        match result {
            Ok((parts, _)) => Ok(parts.status.as_u16()),
            Err(ExchangeError::Http(e)) if is_io(&e) => Err(ProbeError::Unreachable(chain(&e))),
            Err(ExchangeError::Http(e)) => Err(ProbeError::Protocol(chain(&e))),
            Err(ExchangeError::TooLarge(_)) => Err(ProbeError::Protocol("unexpected body limit".to_owned())),
        }
    })
    .await;
    let result = result.unwrap_or(Err(ProbeError::Timeout));
    // The plugin wrote the URL: escaped for the log (`?result` is one line).
    tracing::debug!(url = %escape(url), ?result, "plugin http probe");
    result
}

/// A host as given to `tcp-connect`: a name, an IPv4 address, or an IPv6
/// address with or without brackets.
fn parse_tcp_host(host: &str) -> Result<Host, ProbeError> {
    if let Ok(ip) = host.parse::<Ipv6Addr>() {
        return Ok(Host::Ip(IpAddr::V6(ip)));
    }
    Host::parse(host).map_err(ProbeError::InvalidTarget)
}

async fn resolve(resolver: &dyn Resolver, host: &Host, port: u16) -> Result<Vec<IpAddr>, ProbeError> {
    match host {
        Host::Ip(ip) => Ok(vec![*ip]),
        Host::Name(name) => match resolver.resolve(name, port).await {
            Ok(addrs) if addrs.is_empty() => Err(ProbeError::Dns(format!("{name} has no addresses"))),
            Ok(addrs) => Ok(addrs),
            Err(e) => Err(ProbeError::Dns(format!("{name}: {e}"))),
        },
    }
}
