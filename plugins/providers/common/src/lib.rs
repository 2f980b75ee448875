//! Shared code of the first-party metadata providers (`plugins/providers/*`).
//!
//! - [`Fetcher`]: GETs and PUTs under one base URL with fixed headers,
//!   mapping transport errors and HTTP statuses onto the WIT `fetch-error`
//!   (`unavailable` is retried by the host, `invalid` too).
//! - [`dmi`]: detection from DMI the way cloud-init's `ds-identify` does it.
//! - [`links`]: the host's link name for a MAC.
//! - [`base64`]: user data as the services encode it.
//!
//! Everything here runs inside the sandbox: it can only reach what the
//! plugin's grant allows, and the host validates whatever it returns.

pub mod base64;
pub mod cloudinit;

use bronze_plugin_sdk::FetchError;
use bronze_plugin_sdk::http::{self, Method, Request, Response};

/// A metadata service at `base` (no trailing slash), with headers sent on
/// every request.
#[derive(Debug, Clone)]
pub struct Fetcher {
    pub base: String,
    pub headers: Vec<(String, String)>,
    /// Per-request timeout in milliseconds (the host's call deadline still
    /// bounds every request).
    pub timeout_ms: u32,
}

impl Fetcher {
    /// A fetcher for `base`; a trailing `/` is dropped.
    pub fn new(base: &str) -> Fetcher {
        Fetcher { base: base.trim_end_matches('/').to_string(), headers: Vec::new(), timeout_ms: 2000 }
    }

    /// Adds a header sent on every request.
    pub fn header(mut self, name: &str, value: &str) -> Fetcher {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    /// The full URL of `path` (which starts with `/`).
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Sends one request and returns the response whatever its status;
    /// transport failures are `unavailable`.
    pub fn send(
        &self,
        method: Method,
        path: &str,
        extra: &[(&str, &str)],
        body: Option<Vec<u8>>,
    ) -> Result<Response, FetchError> {
        let mut request = Request::new(method, self.url(path)).timeout_ms(self.timeout_ms);
        for (name, value) in &self.headers {
            request = request.header(name.clone(), value.clone());
        }
        for (name, value) in extra {
            request = request.header(*name, *value);
        }
        if let Some(body) = body {
            request = request.body(body);
        }
        http::send(&request)
            .map_err(|e| FetchError::Unavailable(format!("{} {}: {}", method_name(method), path, e.describe())))
    }

    /// GETs `path`: `Ok(Some(body))` on 200, `Ok(None)` on 404, and an
    /// error on anything else (5xx and 429 are `unavailable`, other
    /// statuses `invalid`).
    pub fn get_optional(&self, path: &str, extra: &[(&str, &str)]) -> Result<Option<Vec<u8>>, FetchError> {
        let response = self.send(Method::Get, path, extra, None)?;
        match response.status {
            200 => Ok(Some(response.body)),
            404 => Ok(None),
            status => Err(status_error("GET", path, status)),
        }
    }

    /// GETs `path`, which must exist.
    pub fn get(&self, path: &str, extra: &[(&str, &str)]) -> Result<Vec<u8>, FetchError> {
        self.get_optional(path, extra)?
            .ok_or_else(|| FetchError::Invalid(format!("GET {path}: 404 Not Found, but the service must have it")))
    }

    /// GETs `path` as UTF-8 text, trimmed.
    pub fn get_text(&self, path: &str, extra: &[(&str, &str)]) -> Result<String, FetchError> {
        text(path, self.get(path, extra)?)
    }

    /// GETs `path` as UTF-8 text, trimmed; None on 404 or an empty body.
    pub fn get_text_optional(&self, path: &str, extra: &[(&str, &str)]) -> Result<Option<String>, FetchError> {
        match self.get_optional(path, extra)? {
            Some(body) => Ok(Some(text(path, body)?).filter(|t| !t.is_empty())),
            None => Ok(None),
        }
    }

    /// GETs `path` and decodes its JSON body into `T`.
    pub fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        extra: &[(&str, &str)],
    ) -> Result<T, FetchError> {
        json(path, &self.get(path, extra)?)
    }
}

/// The error for an unexpected HTTP status.
pub fn status_error(method: &str, path: &str, status: u16) -> FetchError {
    let message = format!("{method} {path}: HTTP {status}");
    if status >= 500 || status == 429 { FetchError::Unavailable(message) } else { FetchError::Invalid(message) }
}

/// A body as trimmed UTF-8 text.
pub fn text(path: &str, body: Vec<u8>) -> Result<String, FetchError> {
    String::from_utf8(body)
        .map(|t| t.trim().to_string())
        .map_err(|e| FetchError::Invalid(format!("{path}: not UTF-8 (byte {})", e.utf8_error().valid_up_to())))
}

/// A JSON body decoded into `T`, with serde's line and column on error.
pub fn json<T: serde::de::DeserializeOwned>(path: &str, body: &[u8]) -> Result<T, FetchError> {
    serde_json::from_slice(body).map_err(|e| FetchError::Invalid(format!("{path}: invalid JSON: {e}")))
}

/// The lines of a listing (`network/interfaces/macs/`), empty ones dropped.
pub fn lines(text: &str) -> Vec<String> {
    text.lines().map(str::trim).filter(|l| !l.is_empty()).map(String::from).collect()
}

fn method_name(method: Method) -> &'static str {
    match method {
        Method::Get => "GET",
        Method::Head => "HEAD",
        Method::Post => "POST",
        Method::Put => "PUT",
        Method::Patch => "PATCH",
        Method::Delete => "DELETE",
        Method::Options => "OPTIONS",
    }
}

/// Detection from DMI (`facts = ["dmi"]`), as cloud-init's ds-identify.
pub mod dmi {
    use bronze_plugin_sdk::facts;

    /// The DMI fields, each trimmed; missing ones are empty.
    #[derive(Debug, Clone, Default)]
    pub struct Dmi {
        pub sys_vendor: String,
        pub product_name: String,
        pub product_serial: String,
        pub product_uuid: String,
        pub chassis_asset_tag: String,
        pub board_vendor: String,
    }

    /// Reads the DMI fields from the host.
    pub fn read() -> Dmi {
        let d = facts::dmi();
        let f = |v: Option<String>| v.unwrap_or_default().trim().to_string();
        Dmi {
            sys_vendor: f(d.sys_vendor),
            product_name: f(d.product_name),
            product_serial: f(d.product_serial),
            product_uuid: f(d.product_uuid),
            chassis_asset_tag: f(d.chassis_asset_tag),
            board_vendor: f(d.board_vendor),
        }
    }
}

/// The host's links (`facts = ["links"]`).
pub mod links {
    /// The name of the host link with hardware address `mac` (compared
    /// case-insensitively), if there is one.
    pub fn name_of(mac: &str) -> Option<String> {
        bronze_plugin_sdk::facts::links()
            .into_iter()
            .find(|l| l.mac.as_deref().is_some_and(|m| m.eq_ignore_ascii_case(mac)))
            .map(|l| l.name)
    }
}
