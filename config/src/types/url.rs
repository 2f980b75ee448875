//! `Url` and `ProbeTarget`: the small URL subset the config needs,
//! `scheme://host[:port][/path][?query][#fragment]`, parsed without a URL
//! library. Which schemes are allowed where is a validation matter.

use std::fmt;
use std::str::FromStr;

use crate::error::ValueError;
use crate::types::host::{Host, parse_host_port};
use crate::types::serde_util::text_serde;

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Url {
    text: String,
    scheme: String,
    host: Host,
    port: Option<u16>,
    path: String,
    query: Option<String>,
    fragment: Option<String>,
}

impl Url {
    /// Lower-case scheme, e.g. `http`.
    pub fn scheme(&self) -> &str {
        &self.scheme
    }

    pub fn host(&self) -> &Host {
        &self.host
    }

    pub fn port(&self) -> Option<u16> {
        self.port
    }

    /// The port, or the scheme's well-known one (80 for http, 443 for https).
    pub fn port_or_default(&self) -> Option<u16> {
        self.port.or(match self.scheme.as_str() {
            "http" => Some(80),
            "https" => Some(443),
            _ => None,
        })
    }

    /// Empty or starting with `/`.
    pub fn path(&self) -> &str {
        &self.path
    }

    pub fn query(&self) -> Option<&str> {
        self.query.as_deref()
    }

    pub fn fragment(&self) -> Option<&str> {
        self.fragment.as_deref()
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }
}

fn parse_url(s: &str) -> Result<Url, String> {
    let (scheme, rest) = s
        .split_once("://")
        .ok_or_else(|| "expected scheme://host[:port]/path, like http://127.0.0.1:8080/healthz".to_owned())?;
    let mut chars = scheme.chars();
    let scheme_ok = chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "+.-".contains(c));
    if !scheme_ok {
        return Err(format!("the scheme {scheme:?} is not a lower-case URL scheme"));
    }
    if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("URLs cannot contain whitespace or control characters".to_owned());
    }
    let (rest, fragment) = match rest.split_once('#') {
        Some((rest, fragment)) => (rest, Some(fragment.to_owned())),
        None => (rest, None),
    };
    let (rest, query) = match rest.split_once('?') {
        Some((rest, query)) => (rest, Some(query.to_owned())),
        None => (rest, None),
    };
    let (authority, path) = match rest.find('/') {
        Some(slash) => rest.split_at(slash),
        None => (rest, ""),
    };
    if authority.contains('@') {
        return Err("credentials in URLs are not allowed".to_owned());
    }
    let (host, port) = parse_host_port(authority)?;
    Ok(Url { text: s.to_owned(), scheme: scheme.to_owned(), host, port, path: path.to_owned(), query, fragment })
}

impl FromStr for Url {
    type Err = ValueError;

    fn from_str(s: &str) -> Result<Self, ValueError> {
        parse_url(s).map_err(|reason| ValueError::invalid("URL", s, reason))
    }
}

impl fmt::Display for Url {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(&self.text)
    }
}

text_serde!(Url, "a URL, like http://127.0.0.1:8080/healthz");

/// What a plugin may probe: `tcp://host:port` or an `http(s)://` URL.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ProbeTarget(Url);

impl ProbeTarget {
    pub fn url(&self) -> &Url {
        &self.0
    }

    pub fn is_tcp(&self) -> bool {
        self.0.scheme() == "tcp"
    }
}

impl FromStr for ProbeTarget {
    type Err = ValueError;

    fn from_str(s: &str) -> Result<Self, ValueError> {
        let invalid = |reason: &str| ValueError::invalid("probe target", s, reason);
        let url = parse_url(s).map_err(|reason| invalid(&reason))?;
        match url.scheme() {
            "tcp" => {
                if url.port().is_none() {
                    return Err(invalid("a tcp probe needs a port, like tcp://127.0.0.1:22"));
                }
                if !matches!(url.path(), "" | "/") || url.query().is_some() || url.fragment().is_some() {
                    return Err(invalid("a tcp probe is only tcp://host:port"));
                }
            }
            "http" | "https" => {}
            other => {
                return Err(invalid(&format!("unsupported scheme {other:?}; expected tcp, http or https")));
            }
        }
        Ok(ProbeTarget(url))
    }
}

impl fmt::Display for ProbeTarget {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        self.0.fmt(f)
    }
}

text_serde!(ProbeTarget, "a probe target, like tcp://127.0.0.1:22 or http://127.0.0.1:8080/ok");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_parts() {
        let url: Url = "http://127.0.0.1:8080/ok/?a=1#top".parse().unwrap();
        assert_eq!(url.scheme(), "http");
        assert_eq!(url.host().to_string(), "127.0.0.1");
        assert_eq!(url.port(), Some(8080));
        assert_eq!(url.path(), "/ok/");
        assert_eq!(url.query(), Some("a=1"));
        assert_eq!(url.fragment(), Some("top"));
        let url: Url = "https://[::1]".parse().unwrap();
        assert_eq!(url.port_or_default(), Some(443));
        assert_eq!(url.path(), "");
        let url: Url = "ftp://example.com/x".parse().unwrap();
        assert_eq!(url.scheme(), "ftp");
    }

    #[test]
    fn rejects_bad_urls() {
        for (bad, reason) in [
            ("127.0.0.1:8080/ok", "expected scheme://host"),
            ("http://user:pw@host/", "credentials"),
            ("http:///path", "the host is empty"),
            ("http://host:0/", "not a number from 1 to 65535"),
            ("HTTP://host/", "not a lower-case URL scheme"),
            ("http://host/a b", "whitespace"),
        ] {
            let err = bad.parse::<Url>().unwrap_err().to_string();
            assert!(err.starts_with(&format!("invalid URL {bad:?}: ")), "{err}");
            assert!(err.contains(reason), "{bad}: {err}");
        }
    }

    #[test]
    fn probe_targets_by_scheme() {
        assert!("tcp://127.0.0.1:22".parse::<ProbeTarget>().unwrap().is_tcp());
        assert!("http://127.0.0.1:8080/ok".parse::<ProbeTarget>().is_ok());
        for (bad, reason) in [
            ("tcp://127.0.0.1", "needs a port"),
            ("tcp://127.0.0.1:22/x", "only tcp://host:port"),
            ("udp://127.0.0.1:53", "unsupported scheme \"udp\""),
        ] {
            let err = bad.parse::<ProbeTarget>().unwrap_err().to_string();
            assert!(err.contains(reason), "{bad}: {err}");
        }
    }
}
