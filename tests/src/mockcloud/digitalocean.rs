//! DigitalOcean's droplet metadata service: `GET /metadata/v1.json` (the
//! whole document), `/metadata/v1/<key>` (single values as text, like
//! `hostname`, `id`, `region`, `interfaces/public/0/ipv4/address`) and
//! `/metadata/v1/user-data`; no headers, no token. Anything but GET is
//! refused with 405; unknown paths are 404.

use super::{Cloud, Documents, Request, Response};
use serde_json::Value;

/// The repo's own droplet document, shaped like the one DigitalOcean
/// documents for `/metadata/v1.json` (public interface with IPv4, IPv6
/// and an anchor IPv4, one private interface, a reserved IP).
pub const DROPLET: &str = r#"{
  "droplet_id": 2756294,
  "hostname": "bronze-do-1",
  "vendor_data": "",
  "public_keys": ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGbronzeTestKeyOnly test@bronze"],
  "auth_key": "a6f3c4bd0c5d4d7b8b7f1f6c2e6d1a35",
  "region": "nyc3",
  "interfaces": {
    "private": [
      {
        "ipv4": { "ip_address": "10.132.255.113", "netmask": "255.255.0.0", "gateway": "10.132.0.1" },
        "mac": "04:01:2a:0f:2a:02",
        "type": "private"
      }
    ],
    "public": [
      {
        "ipv4": { "ip_address": "104.131.20.105", "netmask": "255.255.192.0", "gateway": "104.131.0.1" },
        "ipv6": { "ip_address": "2604:A880:0800:0010:0000:0000:017D:2001", "cidr": 64, "gateway": "2604:A880:0800:0010:0000:0000:0000:0001" },
        "anchor_ipv4": { "ip_address": "10.17.0.5", "netmask": "255.255.0.0", "gateway": "10.17.0.1" },
        "mac": "04:01:2A:0F:2A:01",
        "type": "public"
      }
    ]
  },
  "floating_ip": { "ipv4": { "active": true, "ip_address": "45.55.96.47" } },
  "reserved_ip": { "ipv4": { "active": true, "ip_address": "45.55.96.47" } },
  "dns": { "nameservers": ["67.207.67.2", "67.207.67.3"] },
  "tags": ["web", "env:test"],
  "features": { "dhcp_enabled": false },
  "modify_index": 42
}"#;

/// The user data the default mock serves.
pub const USER_DATA: &str = "#cloud-config\nhostname: from-user-data\n";

/// The DigitalOcean mock.
pub struct DigitalOcean {
    pub docs: Documents,
}

impl DigitalOcean {
    /// The repo's droplet and user data.
    pub fn new() -> DigitalOcean {
        DigitalOcean::with_document(DROPLET, Some(USER_DATA.as_bytes()))
    }

    /// Serves `document` as `/metadata/v1.json` (and its single values
    /// under `/metadata/v1/`), and `user_data` if given.
    pub fn with_document(document: &str, user_data: Option<&[u8]>) -> DigitalOcean {
        let mut docs = Documents::default();
        docs.insert("/metadata/v1.json", Response::json(document.to_string()));
        if let Ok(v) = serde_json::from_str::<Value>(document) {
            let text = |v: &Value| match v {
                Value::String(s) => Some(s.clone()),
                Value::Number(n) => Some(n.to_string()),
                _ => None,
            };
            for (key, path) in [("droplet_id", "id"), ("hostname", "hostname"), ("region", "region")] {
                if let Some(t) = v.get(key).and_then(text) {
                    docs.insert(&format!("/metadata/v1/{path}"), Response::text(t));
                }
            }
            for kind in ["public", "private"] {
                let list = v["interfaces"][kind].as_array().cloned().unwrap_or_default();
                for (i, iface) in list.iter().enumerate() {
                    let base = format!("/metadata/v1/interfaces/{kind}/{i}");
                    if let Some(mac) = iface.get("mac").and_then(text) {
                        docs.insert(&format!("{base}/mac"), Response::text(mac));
                    }
                    for family in ["ipv4", "ipv6", "anchor_ipv4"] {
                        if let Some(a) = iface.get(family).and_then(|f| f.get("ip_address")).and_then(text) {
                            docs.insert(&format!("{base}/{family}/address"), Response::text(a));
                        }
                    }
                }
            }
        }
        docs.insert("/metadata/v1/user-data", Response::text(user_data.map(<[u8]>::to_vec).unwrap_or_default()));
        DigitalOcean { docs }
    }
}

impl Default for DigitalOcean {
    fn default() -> Self {
        Self::new()
    }
}

impl Cloud for DigitalOcean {
    fn handle(&self, request: &Request) -> Response {
        if request.method != "GET" && request.method != "HEAD" {
            return Response::status(405, "Method Not Allowed");
        }
        self.docs.get(&request.path)
    }
}
