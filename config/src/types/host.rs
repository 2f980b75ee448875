//! `Host`, `HostPort` and `TcpEndpoint`: where to reach something over the
//! network, as `host[:port]` with `[brackets]` around an IPv6 address.

use std::fmt;
use std::net::{IpAddr, Ipv6Addr};
use std::str::FromStr;

use crate::error::ValueError;
use crate::types::hostname::{Hostname, hostname_problem};
use crate::types::serde_util::text_serde;

/// A DNS name or an IP address.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Host {
    Ip(IpAddr),
    Name(Hostname),
}

impl Host {
    pub fn ip(&self) -> Option<IpAddr> {
        match self {
            Host::Ip(ip) => Some(*ip),
            Host::Name(_) => None,
        }
    }
}

/// Shows the bare host (no IPv6 brackets), as resolvers want it.
impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            Host::Ip(ip) => write!(f, "{ip}"),
            Host::Name(name) => f.write_str(name.as_str()),
        }
    }
}

/// Parses a host that is not in brackets: an IPv4 address or a DNS name.
fn parse_plain_host(s: &str) -> Result<Host, String> {
    if s.is_empty() {
        return Err("the host is empty".to_owned());
    }
    if s.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return s
            .parse::<std::net::Ipv4Addr>()
            .map(|ip| Host::Ip(IpAddr::V4(ip)))
            .map_err(|_| format!("{s:?} is not a valid IPv4 address"));
    }
    match hostname_problem(s) {
        None => Ok(Host::Name(Hostname::from_str(s).map_err(|e| e.to_string())?)),
        Some(problem) => Err(format!("the host is not a valid DNS name: {problem}")),
    }
}

fn parse_port(s: &str) -> Result<u16, String> {
    let out_of_range = || format!("the port {s:?} is not a number from 1 to 65535");
    if s.is_empty() || s.len() > 5 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(out_of_range());
    }
    match s.parse::<u16>() {
        Ok(port) if port > 0 => Ok(port),
        _ => Err(out_of_range()),
    }
}

/// Splits `host[:port]`, `[v6][:port]` or a bare IPv6 address.
pub(crate) fn parse_host_port(s: &str) -> Result<(Host, Option<u16>), String> {
    if let Some(rest) = s.strip_prefix('[') {
        let (inside, after) = rest.split_once(']').ok_or_else(|| "the '[' has no matching ']'".to_owned())?;
        let ip: Ipv6Addr = inside.parse().map_err(|_| format!("{inside:?} in brackets is not an IPv6 address"))?;
        let port = match after {
            "" => None,
            _ => Some(parse_port(
                after.strip_prefix(':').ok_or_else(|| format!("unexpected {after:?} after ']'; expected :port"))?,
            )?),
        };
        return Ok((Host::Ip(IpAddr::V6(ip)), port));
    }
    if s.matches(':').count() > 1 {
        return s
            .parse::<Ipv6Addr>()
            .map(|ip| (Host::Ip(IpAddr::V6(ip)), None))
            .map_err(|_| "an IPv6 address with a port must be in brackets, like [fd00::1]:123".to_owned());
    }
    match s.split_once(':') {
        Some((host, port)) => Ok((parse_plain_host(host)?, Some(parse_port(port)?))),
        None => Ok((parse_plain_host(s)?, None)),
    }
}

/// A time server: `host[:port]`, port 123 when omitted.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HostPort {
    host: Host,
    port: Option<u16>,
    text: String,
}

impl HostPort {
    /// NTP's well-known port.
    pub const DEFAULT_PORT: u16 = 123;

    pub fn host(&self) -> &Host {
        &self.host
    }

    pub fn port(&self) -> u16 {
        self.port.unwrap_or(Self::DEFAULT_PORT)
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl FromStr for HostPort {
    type Err = ValueError;

    fn from_str(s: &str) -> Result<Self, ValueError> {
        let (host, port) = parse_host_port(s).map_err(|reason| {
            ValueError::invalid(
                "time server",
                s,
                format!("{reason}; expected host[:port], like time.example.com, 10.0.0.1:123 or [fd00::1]:123"),
            )
        })?;
        Ok(HostPort { host, port, text: s.to_owned() })
    }
}

impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(&self.text)
    }
}

text_serde!(HostPort, "a time server as host[:port], like time.example.com");

/// A TCP address to connect to: `host:port`, the port required.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TcpEndpoint {
    host: Host,
    port: u16,
    text: String,
}

impl TcpEndpoint {
    pub fn host(&self) -> &Host {
        &self.host
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl FromStr for TcpEndpoint {
    type Err = ValueError;

    fn from_str(s: &str) -> Result<Self, ValueError> {
        let invalid = |reason: String| {
            ValueError::invalid(
                "TCP address",
                s,
                format!("{reason}; expected host:port, like 127.0.0.1:8080 or [::1]:8080"),
            )
        };
        match parse_host_port(s).map_err(invalid)? {
            (host, Some(port)) => Ok(TcpEndpoint { host, port, text: s.to_owned() }),
            (_, None) => Err(invalid("the port is missing".to_owned())),
        }
    }
}

impl fmt::Display for TcpEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(&self.text)
    }
}

text_serde!(TcpEndpoint, "a TCP address as host:port, like 127.0.0.1:8080");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_servers() {
        for (text, host, port) in [
            ("127.0.0.1:12345", "127.0.0.1", 12345),
            ("time.example.com", "time.example.com", 123),
            ("[::1]:123", "::1", 123),
            ("[fd00::1]", "fd00::1", 123),
            ("fd00::1", "fd00::1", 123),
            ("10.0.0.1", "10.0.0.1", 123),
        ] {
            let hp: HostPort = text.parse().unwrap();
            assert_eq!(hp.host().to_string(), host, "{text}");
            assert_eq!(hp.port(), port, "{text}");
            assert_eq!(hp.to_string(), text);
        }
    }

    #[test]
    fn bad_time_servers() {
        for (bad, reason) in [
            ("time.example.com:0", "the port \"0\" is not a number from 1 to 65535"),
            ("time.example.com:70000", "the port \"70000\" is not a number"),
            ("time.example.com:", "the port \"\" is not a number"),
            ("time.example.com:ntp", "the port \"ntp\" is not a number"),
            ("fd00::1:123x", "must be in brackets"),
            ("[fd00::1", "no matching ']'"),
            ("[fd00::1]x", "unexpected \"x\" after ']'"),
            ("[10.0.0.1]:123", "is not an IPv6 address"),
            ("999.1.1.1", "not a valid IPv4 address"),
            ("bad_host", "not a valid DNS name"),
            ("", "the host is empty"),
            (":123", "the host is empty"),
        ] {
            let err = bad.parse::<HostPort>().unwrap_err().to_string();
            assert!(err.starts_with(&format!("invalid time server {bad:?}: ")), "{err}");
            assert!(err.contains(reason), "{bad}: {err}");
        }
    }

    #[test]
    fn tcp_endpoints_need_a_port() {
        let ep: TcpEndpoint = "127.0.0.1:8080".parse().unwrap();
        assert_eq!(ep.port(), 8080);
        assert_eq!(ep.host().ip(), Some("127.0.0.1".parse().unwrap()));
        let err = "127.0.0.1".parse::<TcpEndpoint>().unwrap_err().to_string();
        assert!(err.contains("the port is missing"), "{err}");
    }
}
