//! The host side of the plugins' `http` and `probe` capabilities
//! (`wit/deps/host/host.wit`). A plugin only reaches what the operator
//! granted: requests are matched against the grants, names are resolved
//! here and only checked addresses are dialled, and every call ends by the
//! plugin call's deadline. Denials and failures are values, never traps.

mod addr;
mod client;
mod probe;
mod target;
mod wire;

#[cfg(test)]
mod tests;

use std::io;
use std::net::IpAddr;

use futures::future::BoxFuture;

pub use self::client::{HttpError, HttpPolicy, HttpRequest, HttpResponse, MAX_BODY_BYTES, Method, send};
pub use self::probe::{ProbeError, ProbePolicy, http_status, tcp_connect};

/// Name resolution, injectable so tests can map names to local servers.
pub trait Resolver: Send + Sync {
    /// The addresses of `host` (a DNS name, never an IP literal), in the
    /// order to try them.
    fn resolve<'a>(&'a self, host: &'a str, port: u16) -> BoxFuture<'a, io::Result<Vec<IpAddr>>>;
}

/// The system resolver (`getaddrinfo` through `tokio::net::lookup_host`).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemResolver;

impl Resolver for SystemResolver {
    fn resolve<'a>(&'a self, host: &'a str, port: u16) -> BoxFuture<'a, io::Result<Vec<IpAddr>>> {
        Box::pin(async move { Ok(tokio::net::lookup_host((host, port)).await?.map(|addr| addr.ip()).collect()) })
    }
}

/// The earlier of the call's deadline and `timeout` from now.
fn time_limit(timeout: Option<std::time::Duration>, deadline: tokio::time::Instant) -> tokio::time::Instant {
    match timeout.and_then(|timeout| tokio::time::Instant::now().checked_add(timeout)) {
        Some(until) => until.min(deadline),
        None => deadline,
    }
}
