//! A restricted HTTP/1.1 client through `bronze:host/http` (manifest:
//! `http = true`; the operator grants URL prefixes and methods).

pub use crate::host::bronze::host::http::{Error, Method, Request, Response};

/// Sends `request` and waits for the response.
pub fn send(request: &Request) -> Result<Response, Error> {
    crate::host::bronze::host::http::send(request)
}

/// `GET`s `url` with the host's default timeout and body cap.
pub fn get(url: &str) -> Result<Response, Error> {
    send(&Request::get(url))
}

impl Request {
    /// A request without headers or body, with the host's defaults.
    pub fn new(method: Method, url: impl Into<String>) -> Self {
        Request { method, url: url.into(), headers: Vec::new(), body: None, timeout_ms: None, max_body_bytes: None }
    }

    /// A `GET` request for `url`.
    pub fn get(url: impl Into<String>) -> Self {
        Self::new(Method::Get, url)
    }

    /// Adds a header.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Sets the body.
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = Some(body.into());
        self
    }

    /// Gives up after `ms` milliseconds (never later than the call's deadline).
    pub fn timeout_ms(mut self, ms: u32) -> Self {
        self.timeout_ms = Some(ms);
        self
    }

    /// Accepts at most `bytes` of body (never more than the host's cap).
    pub fn max_body_bytes(mut self, bytes: u32) -> Self {
        self.max_body_bytes = Some(bytes);
        self
    }
}

impl Response {
    /// The first header called `name` (compared case-insensitively).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// The body as text, invalid UTF-8 replaced.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

impl Error {
    /// One line for a summary, like `connect: connection refused` (the
    /// generated `Display` prints the Rust debug form).
    pub fn describe(&self) -> String {
        match self {
            Error::Denied(why) => format!("denied: {why}"),
            Error::InvalidRequest(why) => format!("invalid request: {why}"),
            Error::Dns(why) => format!("dns: {why}"),
            Error::Connect(why) => format!("connect: {why}"),
            Error::Timeout => "timed out".to_string(),
            Error::TooLarge(cap) => format!("body larger than {cap} bytes"),
            Error::Protocol(why) => format!("protocol error: {why}"),
        }
    }
}
