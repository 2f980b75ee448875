//! Akamai (Linode)'s metadata service: `PUT /v1/token` with
//! `Metadata-Token-Expiry-Seconds: <1..86400>` returns a token (text);
//! `GET /v1/instance`, `/v1/network`, `/v1/ssh-keys` need
//! `Metadata-Token: <token>` and answer JSON (`Accept: application/json`;
//! otherwise a plain-text rendering Afterburn and Talos never ask for);
//! `GET /v1/user-data` answers the user data base64-encoded. A missing or
//! unknown token is 401, a missing or bad expiry 400, both with Linode's
//! `{"errors": [{"reason": ...}]}` body.

use super::{Cloud, Documents, Request, Response};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The repo's own instance, shaped like Linode's documented `/v1/instance`.
pub const INSTANCE: &str = r#"{
  "id": 51234567,
  "label": "bronze-linode-1",
  "region": "de-fra-2",
  "type": "g6-standard-2",
  "specs": { "vcpus": 2, "memory": 4096, "gpus": 0, "transfer": 4000, "disk": 81920 },
  "backups": { "enabled": true, "status": "complete" },
  "host_uuid": "3a9f2c1e8b7d4e6fa1b2c3d4e5f60718",
  "tags": ["prod", "bronze"]
}"#;

/// The repo's own network document (`/v1/network`).
pub const NETWORK: &str = r#"{
  "interfaces": [
    { "id": 1234, "purpose": "public", "label": null, "ipam_address": null }
  ],
  "ipv4": {
    "public": ["172.232.10.20/32"],
    "private": ["192.168.140.7/17"],
    "shared": ["172.232.10.99/32"]
  },
  "ipv6": {
    "slaac": "2a01:7e01::f03c:94ff:fe12:3456/128",
    "ranges": ["2a01:7e01:e001:1b::/64"],
    "link_local": "fe80::f03c:94ff:fe12:3456/128",
    "shared_ranges": []
  }
}"#;

pub const SSH_KEYS: &str =
    r#"{"users": {"root": ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGbronzeTestKeyOnly test@bronze"]}}"#;

/// The user data the default mock serves (decoded).
pub const USER_DATA: &str = "#cloud-config\nhostname: from-user-data\n";

/// The Akamai mock.
pub struct Akamai {
    pub docs: Documents,
    tokens: Mutex<Vec<(String, Instant)>>,
    next: AtomicU64,
}

fn error(status: u16, reason: &str) -> Response {
    Response::new(status, "application/json", format!(r#"{{"errors":[{{"reason":"{reason}"}}]}}"#))
}

impl Akamai {
    /// The repo's instance, network and user data.
    pub fn new() -> Akamai {
        Akamai::with_documents(INSTANCE, NETWORK, Some(USER_DATA.as_bytes()))
    }

    pub fn with_documents(instance: &str, network: &str, user_data: Option<&[u8]>) -> Akamai {
        let mut docs = Documents::default();
        docs.insert("/v1/instance", Response::json(instance.to_string()));
        docs.insert("/v1/network", Response::json(network.to_string()));
        docs.insert("/v1/ssh-keys", Response::json(SSH_KEYS));
        if let Some(data) = user_data {
            docs.insert("/v1/user-data", Response::text(super::oracle::base64(data)));
        }
        Akamai { docs, tokens: Mutex::new(Vec::new()), next: AtomicU64::new(1) }
    }

    /// The tokens issued so far.
    pub fn tokens(&self) -> Vec<String> {
        self.tokens.lock().unwrap().iter().map(|(t, _)| t.clone()).collect()
    }
}

impl Default for Akamai {
    fn default() -> Self {
        Self::new()
    }
}

impl Cloud for Akamai {
    fn handle(&self, request: &Request) -> Response {
        if request.path == "/v1/token" {
            if request.method != "PUT" {
                return error(405, "Method Not Allowed");
            }
            let Some(ttl) = request.header("metadata-token-expiry-seconds") else {
                return error(400, "Metadata-Token-Expiry-Seconds header is required");
            };
            let ttl = match ttl.trim().parse::<u64>() {
                Ok(t) if (1..=86400).contains(&t) => t,
                _ => return error(400, "Metadata-Token-Expiry-Seconds must be between 1 and 86400"),
            };
            let n = self.next.fetch_add(1, Ordering::SeqCst);
            let token = format!("{n:016x}{:016x}", n.wrapping_mul(0x9e37_79b9_7f4a_7c15));
            self.tokens.lock().unwrap().push((token.clone(), Instant::now() + Duration::from_secs(ttl)));
            return Response::text(token);
        }
        let valid = request.header("metadata-token").is_some_and(|t| {
            self.tokens.lock().unwrap().iter().any(|(known, expires)| known == t && Instant::now() < *expires)
        });
        if !valid {
            return error(401, "Unauthorized");
        }
        if request.method != "GET" {
            return error(405, "Method Not Allowed");
        }
        let response = self.docs.get(&request.path);
        if response.status == 404 {
            return error(404, "Not found");
        }
        let json = request.header("accept").is_some_and(|a| a.contains("application/json"));
        if !json && request.path != "/v1/user-data" {
            // The service's text rendering: key: value lines of the top level.
            let body = serde_json::from_slice::<serde_json::Value>(&response.body)
                .ok()
                .and_then(|v| v.as_object().cloned())
                .map(|o| o.iter().map(|(k, v)| format!("{k}: {v}\n")).collect::<String>())
                .unwrap_or_default();
            return Response::text(body);
        }
        response
    }
}
