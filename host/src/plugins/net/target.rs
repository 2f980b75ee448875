//! Request URLs and granted prefixes. Plugins hand us arbitrary strings, so
//! the URL is parsed strictly here (no URL library) into a normal form that a
//! plain string prefix check on the path cannot be tricked by.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use bronze_config::Url;

/// The two schemes a plugin may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Scheme {
    Http,
    Https,
}

impl Scheme {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }

    pub(super) fn default_port(self) -> u16 {
        match self {
            Scheme::Http => 80,
            Scheme::Https => 443,
        }
    }

    fn parse(s: &str) -> Option<Scheme> {
        match s {
            "http" => Some(Scheme::Http),
            "https" => Some(Scheme::Https),
            _ => None,
        }
    }
}

/// A host as compared against grants: an address, or a lower-case name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) enum Host {
    Ip(IpAddr),
    Name(String),
}

impl Host {
    pub(super) fn from_config(host: &bronze_config::Host) -> Host {
        match host {
            bronze_config::Host::Ip(ip) => Host::Ip(*ip),
            bronze_config::Host::Name(name) => Host::Name(name.as_str().to_ascii_lowercase()),
        }
    }

    /// Parses a host without brackets (a name or an IPv4 address) or an IPv6
    /// address in brackets.
    pub(super) fn parse(s: &str) -> Result<Host, String> {
        if let Some(inner) = s.strip_prefix('[') {
            let inner = inner.strip_suffix(']').ok_or_else(|| format!("host {s:?} has no closing ']'"))?;
            return inner
                .parse::<Ipv6Addr>()
                .map(|ip| Host::Ip(IpAddr::V6(ip)))
                .map_err(|_| format!("{inner:?} in brackets is not an IPv6 address"));
        }
        if s.is_empty() {
            return Err("the host is empty".to_owned());
        }
        if !s.is_ascii() {
            return Err(format!("host {s:?} is not ASCII; use its punycode (xn--) form"));
        }
        // getaddrinfo reads things like `1.2.3` or `010.0.0.1` as addresses,
        // so anything that looks numeric must be a plain dotted quad.
        if s.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
            return s
                .parse::<Ipv4Addr>()
                .map(|ip| Host::Ip(IpAddr::V4(ip)))
                .map_err(|_| format!("host {s:?} is not a valid IPv4 address"));
        }
        if s.len() > 253 {
            return Err(format!("host {s:?} is longer than 253 characters"));
        }
        for label in s.split('.') {
            let ok = !label.is_empty()
                && label.len() <= 63
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-');
            if !ok {
                return Err(format!("host {s:?} is not a valid DNS name"));
            }
        }
        Ok(Host::Name(s.to_ascii_lowercase()))
    }
}

/// Bare, as a resolver or a message wants it; `[v6]` is up to the caller.
impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            Host::Ip(ip) => write!(f, "{ip}"),
            Host::Name(name) => f.write_str(name),
        }
    }
}

/// A parsed, normalised absolute http(s) URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Target {
    pub(super) scheme: Scheme,
    pub(super) host: Host,
    pub(super) port: u16,
    /// Starts with `/`; not percent-decoded.
    pub(super) path: String,
    pub(super) query: Option<String>,
}

impl Target {
    pub(super) fn parse(s: &str) -> Result<Target, String> {
        let (scheme, rest) = s.split_once("://").ok_or_else(|| format!("{s:?} is not an absolute http(s) URL"))?;
        let scheme = Scheme::parse(&scheme.to_ascii_lowercase())
            .ok_or_else(|| format!("scheme {scheme:?} is not supported; use http or https"))?;
        if s.bytes().any(|b| b.is_ascii_control() || b == b' ') {
            return Err("the URL contains spaces or control characters".to_owned());
        }
        if s.contains('\\') {
            return Err("the URL contains a backslash".to_owned());
        }
        if s.contains('#') {
            return Err("the URL has a fragment ('#'), which is never sent to a server".to_owned());
        }
        let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, rest) = rest.split_at(authority_end);
        if authority.contains('@') {
            return Err("credentials (user@) in URLs are not allowed; send an Authorization header".to_owned());
        }
        let (host, port) = split_host_port(authority)?;
        let host = Host::parse(host)?;
        let port = match port {
            None => scheme.default_port(),
            Some(port) => parse_port(port)?,
        };
        if !rest.is_ascii() {
            return Err("non-ASCII characters in the path or query must be percent-encoded".to_owned());
        }
        let (path, query) = match rest.split_once('?') {
            Some((path, query)) => (path, Some(query)),
            None => (rest, None),
        };
        let path = if path.is_empty() { "/" } else { path };
        check_path(path)?;
        if let Some(query) = query {
            check_escapes(query)?;
        }
        let target = Target { scheme, host, port, path: path.to_owned(), query: query.map(str::to_owned) };
        // The wire form must also be acceptable to `http`.
        target
            .path_and_query()
            .parse::<http::uri::PathAndQuery>()
            .map_err(|e| format!("invalid path or query: {e}"))?;
        Ok(target)
    }

    /// Resolves a redirect's `Location` (absolute or relative) against this
    /// URL. Dot segments are not removed, so they are refused by `parse`.
    pub(super) fn join(&self, location: &str) -> Result<Target, String> {
        let location = location.split_once('#').map_or(location, |(before, _)| before);
        let has_scheme = location.find(':').is_some_and(|colon| {
            let scheme = &location[..colon];
            scheme.starts_with(|c: char| c.is_ascii_alphabetic())
                && scheme.chars().all(|c| c.is_ascii_alphanumeric() || "+.-".contains(c))
        });
        let joined = if has_scheme {
            location.to_owned()
        } else if location.starts_with("//") {
            format!("{}:{location}", self.scheme.as_str())
        } else if location.starts_with('/') {
            format!("{}{location}", self.origin())
        } else if location.starts_with('?') {
            format!("{}{}{location}", self.origin(), self.path)
        } else if location.is_empty() {
            self.to_string()
        } else {
            let dir = &self.path[..=self.path.rfind('/').unwrap_or(0)];
            format!("{}{dir}{location}", self.origin())
        };
        Target::parse(&joined)
    }

    /// `scheme://host[:port]`, the port only when it is not the default.
    pub(super) fn origin(&self) -> String {
        format!("{}://{}", self.scheme.as_str(), self.authority())
    }

    /// `scheme://host` without any port, for messages about the port.
    pub(super) fn scheme_host(&self) -> String {
        format!("{}://{}", self.scheme.as_str(), self.bracketed_host())
    }

    /// The `Host` header value.
    pub(super) fn authority(&self) -> String {
        if self.port == self.scheme.default_port() {
            self.bracketed_host()
        } else {
            format!("{}:{}", self.bracketed_host(), self.port)
        }
    }

    fn bracketed_host(&self) -> String {
        match self.host {
            Host::Ip(IpAddr::V6(ip)) => format!("[{ip}]"),
            _ => self.host.to_string(),
        }
    }

    pub(super) fn path_and_query(&self) -> String {
        match &self.query {
            Some(query) => format!("{}?{query}", self.path),
            None => self.path.clone(),
        }
    }

    pub(super) fn same_origin(&self, other: &Target) -> bool {
        self.scheme == other.scheme && self.host == other.host && self.port == other.port
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{}{}", self.origin(), self.path_and_query())
    }
}

fn split_host_port(authority: &str) -> Result<(&str, Option<&str>), String> {
    if authority.starts_with('[') {
        let close = authority.find(']').ok_or_else(|| format!("host {authority:?} has no closing ']'"))?;
        let (host, after) = authority.split_at(close + 1);
        return match after {
            "" => Ok((host, None)),
            _ => match after.strip_prefix(':') {
                Some(port) => Ok((host, Some(port))),
                None => Err(format!("unexpected {after:?} after the IPv6 address")),
            },
        };
    }
    match authority.split_once(':') {
        Some((host, port)) => Ok((host, Some(port))),
        None => Ok((authority, None)),
    }
}

fn parse_port(s: &str) -> Result<u16, String> {
    match s.parse::<u16>() {
        Ok(port) if port > 0 && s.bytes().all(|b| b.is_ascii_digit()) => Ok(port),
        _ => Err(format!("port {s:?} is not a number from 1 to 65535")),
    }
}

/// Refuses what would let a server see a different path than the prefix
/// check saw: dot segments and encoded dots, slashes or backslashes.
fn check_path(path: &str) -> Result<(), String> {
    if path.split('/').any(|segment| segment == "." || segment == "..") {
        return Err(format!("path {path} contains a '.' or '..' segment"));
    }
    let lower = path.to_ascii_lowercase();
    if ["%2e", "%2f", "%5c"].iter().any(|seq| lower.contains(seq)) {
        return Err(format!("path {path} contains an encoded '.', '/' or '\\' (%2e, %2f, %5c)"));
    }
    check_escapes(path)
}

fn check_escapes(s: &str) -> Result<(), String> {
    let bytes = s.as_bytes();
    for (i, b) in bytes.iter().enumerate() {
        if *b == b'%' && !hex2(bytes.get(i + 1), bytes.get(i + 2)) {
            return Err(format!("{s:?} has a '%' that is not followed by two hex digits"));
        }
    }
    Ok(())
}

fn hex2(a: Option<&u8>, b: Option<&u8>) -> bool {
    a.is_some_and(u8::is_ascii_hexdigit) && b.is_some_and(u8::is_ascii_hexdigit)
}

/// A granted URL prefix (an http grant's or an http probe's URL).
#[derive(Debug, Clone)]
pub(super) struct Prefix {
    scheme: Scheme,
    pub(super) host: Host,
    port: u16,
    pub(super) path: String,
    /// The operator's text, for messages.
    pub(super) text: String,
}

impl Prefix {
    /// None when the URL cannot be a prefix (another scheme, or a query or
    /// fragment, which config validation already refuses).
    pub(super) fn from_url(url: &Url) -> Option<Prefix> {
        let scheme = Scheme::parse(url.scheme())?;
        if url.query().is_some() || url.fragment().is_some() {
            return None;
        }
        let path = if url.path().is_empty() { "/" } else { url.path() };
        Some(Prefix {
            scheme,
            host: Host::from_config(url.host()),
            port: url.port().unwrap_or(scheme.default_port()),
            path: path.to_owned(),
            text: url.as_str().to_owned(),
        })
    }

    /// The path is under this prefix on a segment boundary: `/ok` covers
    /// `/ok` and `/ok/x` but not `/okay`.
    fn covers_path(&self, path: &str) -> bool {
        match path.strip_prefix(self.path.as_str()) {
            None => false,
            Some(rest) => rest.is_empty() || self.path.ends_with('/') || rest.starts_with('/'),
        }
    }
}

/// Indexes of the prefixes that cover `target`, or why none does, naming the
/// first part (scheme and host, port, path) that no prefix matches.
pub(super) fn matching(prefixes: &[&Prefix], target: &Target) -> Result<Vec<usize>, String> {
    if prefixes.is_empty() {
        return Err("nothing is granted".to_owned());
    }
    let listed = |subset: &[&Prefix]| {
        let mut texts: Vec<&str> = subset.iter().take(5).map(|p| p.text.as_str()).collect();
        if subset.len() > 5 {
            texts.push("...");
        }
        texts.join(", ")
    };
    let same_host: Vec<&Prefix> = prefixes.iter().copied().filter(|p| p.host == target.host).collect();
    let same_scheme_host: Vec<&Prefix> = same_host.iter().copied().filter(|p| p.scheme == target.scheme).collect();
    if same_scheme_host.is_empty() {
        let what = if same_host.is_empty() {
            format!("host {}", target.host)
        } else {
            format!("scheme {} for {}", target.scheme.as_str(), target.host)
        };
        return Err(format!("no grant allows {what} (granted: {})", listed(prefixes)));
    }
    let same_origin: Vec<&Prefix> = same_scheme_host.iter().copied().filter(|p| p.port == target.port).collect();
    if same_origin.is_empty() {
        return Err(format!(
            "no grant allows port {} for {} (granted: {})",
            target.port,
            target.scheme_host(),
            listed(&same_scheme_host)
        ));
    }
    let found: Vec<usize> = prefixes
        .iter()
        .enumerate()
        .filter(|(_, p)| {
            p.scheme == target.scheme && p.host == target.host && p.port == target.port && p.covers_path(&target.path)
        })
        .map(|(i, _)| i)
        .collect();
    if found.is_empty() {
        let paths: Vec<&str> = same_origin.iter().map(|p| p.path.as_str()).collect();
        let noun = if paths.len() == 1 { "prefix" } else { "prefixes" };
        return Err(format!("path {} is outside the granted {noun} {}", target.path, paths.join(", ")));
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prefix(s: &str) -> Prefix {
        Prefix::from_url(&s.parse().unwrap()).unwrap()
    }

    #[test]
    fn normalises_urls() {
        for (input, shown, port) in [
            ("HTTP://Example.COM/a?b=C", "http://example.com/a?b=C", 80),
            ("https://example.com", "https://example.com/", 443),
            ("http://127.0.0.1:8080?x", "http://127.0.0.1:8080/?x", 8080),
            ("http://example.com:80/", "http://example.com/", 80),
            ("https://[::1]:8443/p", "https://[::1]:8443/p", 8443),
            ("http://example.com/a%20b/", "http://example.com/a%20b/", 80),
        ] {
            let target = Target::parse(input).unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(target.to_string(), shown, "{input}");
            assert_eq!(target.port, port, "{input}");
        }
    }

    #[test]
    fn refuses_bad_urls() {
        for (bad, reason) in [
            ("ftp://example.com/", "not supported"),
            ("example.com/x", "not an absolute"),
            ("http://user:pw@example.com/", "credentials"),
            ("http://example.com/#top", "fragment"),
            ("http://exämple.com/", "punycode"),
            ("http://example.com/ä", "percent-encoded"),
            ("http://example.com/ok/../admin", "'.' or '..' segment"),
            ("http://example.com/ok/./x", "'.' or '..' segment"),
            ("http://example.com/ok/%2e%2e/admin", "encoded"),
            ("http://example.com/ok/%2E./admin", "encoded"),
            ("http://example.com/ok%2fadmin", "encoded"),
            ("http://example.com/ok\\..\\admin", "backslash"),
            ("http://example.com/a b", "spaces"),
            ("http://example.com/%zz", "hex digits"),
            ("http://example.com:0/", "port"),
            ("http://example.com:99999/", "port"),
            ("http://example.com:/", "port"),
            ("http://example.com:+80/", "port"),
            ("http:///x", "empty"),
            ("http://1.2.3/", "IPv4"),
            ("http://010.0.0.1/", "IPv4"),
            ("http://bad_name/", "DNS name"),
            ("http://[::1/", "closing"),
            ("http://[fe80::1%25eth0]/", "IPv6"),
        ] {
            let err = Target::parse(bad).unwrap_err();
            assert!(err.contains(reason), "{bad}: {err}");
        }
    }

    #[test]
    fn joins_redirect_locations() {
        let base = Target::parse("http://h:81/a/b?q").unwrap();
        for (location, joined) in [
            ("http://other/x", "http://other/x"),
            ("//other:82/y", "http://other:82/y"),
            ("/c", "http://h:81/c"),
            ("c?d", "http://h:81/a/c?d"),
            ("?z", "http://h:81/a/b?z"),
            ("/c#frag", "http://h:81/c"),
            ("", "http://h:81/a/b?q"),
        ] {
            assert_eq!(base.join(location).unwrap().to_string(), joined, "{location}");
        }
        assert!(base.join("../x").unwrap_err().contains("'..'"));
        assert!(base.join("ftp://h/").unwrap_err().contains("not supported"));
    }

    #[test]
    fn prefix_paths_end_on_segment_boundaries() {
        let slash = prefix("http://127.0.0.1:8080/ok/");
        let bare = prefix("http://127.0.0.1:8080/ok");
        let root = prefix("http://127.0.0.1:8080");
        for (p, path, covered) in [
            (&slash, "/ok/", true),
            (&slash, "/ok/x", true),
            (&slash, "/ok", false),
            (&slash, "/okay", false),
            (&bare, "/ok", true),
            (&bare, "/ok/", true),
            (&bare, "/ok/x", true),
            (&bare, "/okay", false),
            (&bare, "/o", false),
            (&root, "/", true),
            (&root, "/anything", true),
        ] {
            assert_eq!(p.covers_path(path), covered, "{} covers {path}", p.text);
        }
    }

    #[test]
    fn matching_names_the_part_that_differs() {
        let a = prefix("http://127.0.0.1:8080/ok/");
        let b = prefix("http://Example.com/api");
        let all = [&a, &b];
        let check = |url: &str| matching(&all, &Target::parse(url).unwrap());
        assert_eq!(check("http://127.0.0.1:8080/ok/x").unwrap(), vec![0]);
        assert_eq!(check("http://EXAMPLE.com:80/api/v1").unwrap(), vec![1]);
        for (url, reason) in [
            (
                "http://127.0.0.1:8081/ok/",
                "no grant allows port 8081 for http://127.0.0.1 (granted: http://127.0.0.1:8080/ok/)",
            ),
            ("http://127.0.0.1:8080/other", "path /other is outside the granted prefix /ok/"),
            ("http://127.0.0.2:8080/ok/", "no grant allows host 127.0.0.2 (granted: "),
            ("https://example.com/api", "no grant allows scheme https for example.com"),
            ("http://example.com/apix", "outside the granted prefix /api"),
        ] {
            let err = check(url).unwrap_err();
            assert!(err.contains(reason), "{url}: {err}");
        }
        assert_eq!(matching(&[], &Target::parse("http://x/").unwrap()).unwrap_err(), "nothing is granted");
    }
}
