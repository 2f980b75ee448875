//! The `http` capability: a small HTTP/1.1 client that only sends what the
//! instance's grants allow, to addresses it checked itself.

use std::collections::HashSet;
use std::net::IpAddr;
use std::time::Duration;

use bronze_bundle::text::escape;
use bronze_config::{HttpGrant, HttpMethod};
use http::header::{self, HeaderName, HeaderValue};
use http::response::Parts;
use tokio::time::Instant;

use super::addr::is_public;
use super::target::{Host, Prefix, Scheme, Target, matching};
use super::wire::{self, ExchangeError, chain};
use super::{Resolver, time_limit};

/// The host's cap on a response body, whatever the plugin asks for.
pub const MAX_BODY_BYTES: u32 = 1 << 20;
/// Redirects followed per request.
const MAX_REDIRECTS: usize = 5;
const MAX_REQUEST_HEADERS: usize = 64;
const MAX_REQUEST_HEADER_BYTES: usize = 8 * 1024;

/// HTTP request methods (the WIT `method` enum).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Method {
    Get,
    Head,
    Post,
    Put,
    Patch,
    Delete,
    Options,
}

impl Method {
    const ALL: [Method; 7] =
        [Method::Get, Method::Head, Method::Post, Method::Put, Method::Patch, Method::Delete, Method::Options];

    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Head => "HEAD",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Patch => "PATCH",
            Method::Delete => "DELETE",
            Method::Options => "OPTIONS",
        }
    }

    fn to_http(self) -> http::Method {
        match self {
            Method::Get => http::Method::GET,
            Method::Head => http::Method::HEAD,
            Method::Post => http::Method::POST,
            Method::Put => http::Method::PUT,
            Method::Patch => http::Method::PATCH,
            Method::Delete => http::Method::DELETE,
            Method::Options => http::Method::OPTIONS,
        }
    }
}

impl From<HttpMethod> for Method {
    fn from(method: HttpMethod) -> Self {
        match method {
            HttpMethod::Get => Method::Get,
            HttpMethod::Head => Method::Head,
            HttpMethod::Post => Method::Post,
            HttpMethod::Put => Method::Put,
            HttpMethod::Patch => Method::Patch,
            HttpMethod::Delete => Method::Delete,
            HttpMethod::Options => Method::Options,
        }
    }
}

/// One request (the WIT `request` record).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpRequest {
    pub method: Method,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Option<Vec<u8>>,
    pub timeout: Option<Duration>,
    pub max_body_bytes: Option<u32>,
}

/// One response after granted redirects (the WIT `response` record).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpResponse {
    pub status: u16,
    /// Names are lower case.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The URL that produced this response, normalised.
    pub url: String,
}

/// Why a request produced no response (the WIT `error` variant).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HttpError {
    #[error("denied: {0}")]
    Denied(String),
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    #[error("name resolution failed: {0}")]
    Dns(String),
    #[error("connection failed: {0}")]
    Connect(String),
    #[error("timed out")]
    Timeout,
    #[error("the response body is larger than {0} bytes")]
    TooLarge(u32),
    #[error("protocol error: {0}")]
    Protocol(String),
}

#[derive(Debug)]
struct Grant {
    prefix: Prefix,
    methods: Vec<Method>,
}

/// What one instance may request, built from its `grants.http`.
#[derive(Debug)]
pub struct HttpPolicy {
    grants: Vec<Grant>,
    /// Addresses some grant names literally; a name may resolve to these
    /// even when they are not public.
    literal_ips: HashSet<IpAddr>,
}

impl HttpPolicy {
    pub fn new(grants: &[HttpGrant]) -> Self {
        let mut out = HttpPolicy { grants: Vec::new(), literal_ips: HashSet::new() };
        for grant in grants {
            let Some(prefix) = Prefix::from_url(&grant.url) else {
                tracing::warn!(url = %grant.url, "ignoring an http grant that is not a plain http(s) prefix");
                continue;
            };
            if let Host::Ip(ip) = prefix.host {
                out.literal_ips.insert(ip.to_canonical());
            }
            out.grants.push(Grant { prefix, methods: grant.methods.iter().map(|&m| m.into()).collect() });
        }
        out
    }

    /// Why no grant allows `method` on `target`, if none does.
    fn check(&self, target: &Target, method: Method) -> Result<(), String> {
        let prefixes: Vec<&Prefix> = self.grants.iter().map(|g| &g.prefix).collect();
        let found = matching(&prefixes, target)?;
        let covering: Vec<&Grant> = found.iter().map(|&i| &self.grants[i]).collect();
        if covering.iter().any(|g| g.methods.contains(&method)) {
            return Ok(());
        }
        let closest = covering.iter().max_by_key(|g| g.prefix.path.len()).map_or("", |g| g.prefix.text.as_str());
        let granted: Vec<&str> =
            Method::ALL.iter().filter(|m| covering.iter().any(|g| g.methods.contains(m))).map(|m| m.as_str()).collect();
        Err(format!("method {} is not granted for {closest} (granted: {})", method.as_str(), granted.join(", ")))
    }

    /// Checks the request against the grants and returns the addresses it
    /// may connect to.
    async fn admit(&self, resolver: &dyn Resolver, target: &Target, method: Method) -> Result<Vec<IpAddr>, HttpError> {
        self.check(target, method).map_err(HttpError::Denied)?;
        let name = match &target.host {
            Host::Ip(ip) => return Ok(vec![*ip]),
            Host::Name(name) => name,
        };
        let resolved = resolver.resolve(name, target.port).await.map_err(|e| HttpError::Dns(format!("{name}: {e}")))?;
        if resolved.is_empty() {
            return Err(HttpError::Dns(format!("{name} has no addresses")));
        }
        let mut addrs = Vec::with_capacity(resolved.len());
        for ip in resolved {
            let ip = ip.to_canonical();
            if !is_public(ip) && !self.literal_ips.contains(&ip) {
                return Err(HttpError::Denied(format!(
                    "{name} resolves to {ip}, which no grant names (grant the address itself to allow it)"
                )));
            }
            if !addrs.contains(&ip) {
                addrs.push(ip);
            }
        }
        Ok(addrs)
    }
}

/// Sends `req` if the grants allow it, following granted redirects.
/// `deadline` is the plugin call's deadline; nothing may outlive it.
pub async fn send(
    policy: &HttpPolicy,
    resolver: &dyn Resolver,
    req: HttpRequest,
    deadline: Instant,
) -> Result<HttpResponse, HttpError> {
    let limit = time_limit(req.timeout, deadline);
    let (method, url) = (req.method, req.url.clone());
    let result = match tokio::time::timeout_at(limit, send_within(policy, resolver, req)).await {
        Ok(result) => result,
        Err(_) => Err(HttpError::Timeout),
    };
    // The plugin wrote the URL (and errors quote it): escaped for the log.
    let url = escape(&url);
    match &result {
        Ok(response) => {
            tracing::debug!(method = method.as_str(), %url, status = response.status, "plugin http request")
        }
        Err(error) => {
            let error = escape(&error.to_string()).into_owned();
            tracing::debug!(method = method.as_str(), %url, %error, "plugin http request failed")
        }
    }
    result
}

async fn send_within(
    policy: &HttpPolicy,
    resolver: &dyn Resolver,
    req: HttpRequest,
) -> Result<HttpResponse, HttpError> {
    let cap = req.max_body_bytes.map_or(MAX_BODY_BYTES, |max| max.min(MAX_BODY_BYTES));
    let mut headers = guest_headers(&req.headers)?;
    let mut target = Target::parse(&req.url).map_err(HttpError::InvalidRequest)?;
    let (mut method, mut body) = (req.method, req.body);
    let mut redirects = 0;
    loop {
        let addrs = match policy.admit(resolver, &target, method).await {
            Err(HttpError::Denied(why)) if redirects > 0 => {
                return Err(HttpError::Denied(format!("redirect to {target} leaves the grants: {why}")));
            }
            other => other?,
        };
        let request = wire::request(&target, method.to_http(), &headers, body.clone())
            .map_err(|e| HttpError::InvalidRequest(e.to_string()))?;
        let (parts, bytes) = fetch(&target, &addrs, request, cap).await?;
        let Some(location) = redirect_location(&parts) else {
            return Ok(HttpResponse {
                status: parts.status.as_u16(),
                headers: parts
                    .headers
                    .iter()
                    .map(|(name, value)| {
                        (name.as_str().to_owned(), String::from_utf8_lossy(value.as_bytes()).into_owned())
                    })
                    .collect(),
                body: bytes,
                url: target.to_string(),
            });
        };
        if redirects == MAX_REDIRECTS {
            return Err(HttpError::Protocol(format!(
                "more than {MAX_REDIRECTS} redirects; the last was from {target} to {location:?}"
            )));
        }
        let next = target.join(&location).map_err(|why| {
            HttpError::Protocol(format!("redirect from {target} to {location:?} cannot be followed: {why}"))
        })?;
        let status = parts.status.as_u16();
        // As browsers do: 303, and 301/302 after a POST, continue as a GET.
        if (status == 303 && method != Method::Head) || (matches!(status, 301 | 302) && method == Method::Post) {
            method = Method::Get;
            body = None;
            headers.retain(|(name, _)| !BODY_HEADERS.contains(&name.as_str()));
        }
        if !next.same_origin(&target) {
            headers.retain(|(name, _)| !CREDENTIAL_HEADERS.contains(&name.as_str()));
        }
        tracing::debug!(from = %target, to = %next, status, "following a redirect");
        target = next;
        redirects += 1;
    }
}

/// One exchange on a fresh connection. A redirect's body is not read.
async fn fetch(
    target: &Target,
    addrs: &[IpAddr],
    request: http::Request<wire::ReqBody>,
    cap: u32,
) -> Result<(Parts, Vec<u8>), HttpError> {
    let (stream, _) = wire::dial(addrs, target.port).await.map_err(|e| HttpError::Connect(e.message))?;
    let body_cap = |parts: &Parts| match redirect_location(parts) {
        Some(_) => None,
        None => Some(cap),
    };
    let result = match target.scheme {
        Scheme::Http => wire::exchange(stream, request, body_cap).await,
        Scheme::Https => {
            let tls = wire::tls(stream, &target.host).await.map_err(|e| {
                HttpError::Connect(format!("TLS handshake with {} failed: {}", target.authority(), chain(&e)))
            })?;
            wire::exchange(tls, request, body_cap).await
        }
    };
    result.map_err(|e| match e {
        ExchangeError::TooLarge(cap) => HttpError::TooLarge(cap),
        ExchangeError::Http(e) => HttpError::Protocol(chain(&e)),
    })
}

/// The `Location` of a redirect that is to be followed.
fn redirect_location(parts: &Parts) -> Option<String> {
    if !matches!(parts.status.as_u16(), 301 | 302 | 303 | 307 | 308) {
        return None;
    }
    parts.headers.get(header::LOCATION)?.to_str().ok().map(str::to_owned)
}

/// Headers only the host may set: framing, connection management, `Host`
/// (always the URL's) and proxy headers.
fn is_reserved(name: &HeaderName) -> bool {
    let name = name.as_str();
    matches!(name, "host" | "content-length" | "transfer-encoding" | "connection" | "upgrade" | "te" | "keep-alive")
        || name.starts_with("proxy-")
}

/// Dropped when a redirect turns the request into a GET without a body.
const BODY_HEADERS: [&str; 4] = ["content-type", "content-encoding", "content-language", "content-location"];

/// Not carried to another origin on a redirect.
const CREDENTIAL_HEADERS: [&str; 2] = ["authorization", "cookie"];

fn guest_headers(headers: &[(String, String)]) -> Result<Vec<(HeaderName, HeaderValue)>, HttpError> {
    let invalid = |why: String| Err(HttpError::InvalidRequest(why));
    if headers.len() > MAX_REQUEST_HEADERS {
        return invalid(format!("{} headers; at most {MAX_REQUEST_HEADERS} are allowed", headers.len()));
    }
    let total: usize = headers.iter().map(|(name, value)| name.len() + value.len()).sum();
    if total > MAX_REQUEST_HEADER_BYTES {
        return invalid(format!("the headers total {total} bytes; at most {MAX_REQUEST_HEADER_BYTES} are allowed"));
    }
    let mut out = Vec::with_capacity(headers.len());
    for (name, value) in headers {
        let Ok(parsed) = HeaderName::from_bytes(name.as_bytes()) else {
            return invalid(format!("{name:?} is not a valid header name"));
        };
        if is_reserved(&parsed) {
            return invalid(format!("header {name} is set by the host and cannot be given"));
        }
        let Ok(value) = HeaderValue::from_str(value) else {
            return invalid(format!("header {name} has an invalid value"));
        };
        out.push((parsed, value));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(url: &str, methods: &[HttpMethod]) -> HttpGrant {
        HttpGrant { url: url.parse().unwrap(), methods: methods.to_vec() }
    }

    #[test]
    fn grant_matching_table() {
        let policy = HttpPolicy::new(&[
            grant("http://127.0.0.1:8080/ok/", &[HttpMethod::Get, HttpMethod::Head]),
            grant("http://127.0.0.1:8080/ok/write", &[HttpMethod::Post]),
            grant("https://API.example.com/v1", &[HttpMethod::Get]),
        ]);
        let check = |method: Method, url: &str| policy.check(&Target::parse(url).unwrap(), method);
        for (method, url) in [
            (Method::Get, "http://127.0.0.1:8080/ok/"),
            (Method::Head, "http://127.0.0.1:8080/ok/x?y=1"),
            (Method::Post, "http://127.0.0.1:8080/ok/write"),
            (Method::Post, "http://127.0.0.1:8080/ok/write/more"),
            (Method::Get, "http://127.0.0.1:8080/ok/write"),
            (Method::Get, "https://api.example.com/v1"),
            (Method::Get, "HTTPS://api.EXAMPLE.com:443/v1/x"),
        ] {
            assert_eq!(check(method, url), Ok(()), "{method:?} {url}");
        }
        for (method, url, reason) in [
            (Method::Get, "http://127.0.0.1:8080/okay", "path /okay is outside the granted prefixes /ok/, /ok/write"),
            (
                Method::Get,
                "http://127.0.0.1:8081/ok/",
                "no grant allows port 8081 for http://127.0.0.1 (granted: http://127.0.0.1:8080/ok/, http://127.0.0.1:8080/ok/write)",
            ),
            (
                Method::Post,
                "http://127.0.0.1:8080/ok/",
                "method POST is not granted for http://127.0.0.1:8080/ok/ (granted: GET, HEAD)",
            ),
            (
                Method::Delete,
                "http://127.0.0.1:8080/ok/write",
                "method DELETE is not granted for http://127.0.0.1:8080/ok/write (granted: GET, HEAD, POST)",
            ),
            (Method::Get, "http://api.example.com/v1", "no grant allows scheme http for api.example.com"),
            (Method::Get, "https://api.example.com/v2", "path /v2 is outside the granted prefix /v1"),
            (Method::Get, "https://other.example.com/v1", "no grant allows host other.example.com"),
            (Method::Get, "https://api.example.com:8443/v1", "no grant allows port 8443 for https://api.example.com"),
        ] {
            let err = check(method, url).unwrap_err();
            assert!(err.starts_with(reason), "{method:?} {url}: {err}");
        }
        assert_eq!(
            HttpPolicy::new(&[]).check(&Target::parse("http://x/").unwrap(), Method::Get).unwrap_err(),
            "nothing is granted"
        );
    }

    #[test]
    fn guest_headers_are_checked() {
        let headers = |list: &[(&str, &str)]| {
            guest_headers(&list.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect::<Vec<_>>())
        };
        let ok = headers(&[("Accept", "text/plain"), ("X-Token", "abc")]).unwrap();
        assert_eq!(ok[0].0, header::ACCEPT);
        for (name, value, reason) in [
            ("Host", "evil", "header Host is set by the host"),
            ("content-length", "1", "header content-length is set by the host"),
            ("Transfer-Encoding", "chunked", "header Transfer-Encoding"),
            ("Connection", "keep-alive", "header Connection"),
            ("Upgrade", "websocket", "header Upgrade"),
            ("TE", "trailers", "header TE"),
            ("Keep-Alive", "1", "header Keep-Alive"),
            ("Proxy-Authorization", "x", "header Proxy-Authorization"),
            ("bad name", "x", "\"bad name\" is not a valid header name"),
            ("X-Split", "a\r\nInjected: 1", "header X-Split has an invalid value"),
        ] {
            match headers(&[(name, value)]) {
                Err(HttpError::InvalidRequest(why)) => assert!(why.contains(reason), "{name}: {why}"),
                other => panic!("{name}: {other:?}"),
            }
        }
        let many: Vec<(String, String)> = (0..65).map(|i| (format!("x-{i}"), "v".to_owned())).collect();
        assert!(matches!(guest_headers(&many), Err(HttpError::InvalidRequest(why)) if why.contains("at most 64")));
        let big = vec![("x-big".to_owned(), "v".repeat(8 * 1024))];
        assert!(matches!(guest_headers(&big), Err(HttpError::InvalidRequest(why)) if why.contains("8192")));
    }
}
