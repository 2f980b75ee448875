//! Vultr's metadata service: the whole document at `/v1.json`, single
//! values under `/v1/` (`hostname`, `instanceid`, `instance-v2-id`,
//! `region/regioncode`, `public-keys`), EC2-style `/latest/meta-data/...`
//! and `/latest/user-data`. No headers; only GET (405 otherwise); unknown
//! paths 404. [`Vultr::new`] serves the repo's own instance,
//! [`Vultr::from_document`] any `/v1.json` body (the conformance tests
//! serve Talos's).

use super::{Cloud, Documents, Request, Response};

/// The repo's own instance: a public interface and a VPC, shaped like
/// Vultr's published `/v1.json` (documentation address ranges).
pub const DEFAULT_DOCUMENT: &str = r#"{
  "bgp": {"ipv4": {"my-address": "", "my-asn": "", "peer-address": "", "peer-asn": ""},
          "ipv6": {"my-address": "", "my-asn": "", "peer-address": "", "peer-asn": ""}},
  "hostname": "bronze-vultr-1",
  "instanceid": "61234567",
  "instance-v2-id": "5f1c3a52-8c4e-4f7a-9d21-0b6e1f9a7c33",
  "interfaces": [
    {"ipv4": {"additional": [{"address": "203.0.113.77", "netmask": "255.255.255.255"}],
              "address": "203.0.113.10", "gateway": "203.0.113.1", "netmask": "255.255.254.0"},
     "ipv6": {"additional": [], "address": "2001:db8:5001:2095::10", "network": "2001:db8:5001:2095::", "prefix": "64"},
     "mac": "56:00:04:aa:bb:01", "network-type": "public"},
    {"ipv4": {"additional": [], "address": "10.8.96.4", "gateway": "", "netmask": "255.255.240.0"},
     "ipv6": {"additional": [], "network": "", "prefix": ""},
     "mac": "5a:00:04:aa:bb:01", "network-type": "private",
     "network-v2-id": "0c7e6a1e-2b7d-4c55-9b0e-6a4b8f0d2e11", "networkid": "net61234567abc"}
  ],
  "public-keys": ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBronzeTestKeyOnly bronze@test"],
  "region": {"regioncode": "FRA"},
  "tags": ["bronze", "test"],
  "user-defined": []
}"#;

pub struct Vultr {
    pub docs: Documents,
}

impl Vultr {
    /// The repo's own instance, with user data.
    pub fn new() -> Vultr {
        let mut vultr = Vultr::from_document(DEFAULT_DOCUMENT);
        vultr.docs.insert("/latest/user-data", Response::new(200, "application/octet-stream", "#cloud-config\n"));
        vultr
    }

    /// Serves `document` as `/v1.json` and its single values (no user data).
    pub fn from_document(document: &str) -> Vultr {
        let mut docs = Documents::default();
        docs.insert("/v1.json", Response::json(document));
        let v: serde_json::Value = serde_json::from_str(document).unwrap_or_default();
        let text = |key: &str| v.get(key).and_then(|x| x.as_str()).map(String::from);
        for key in ["hostname", "instanceid", "instance-v2-id"] {
            if let Some(value) = text(key) {
                docs.insert(&format!("/v1/{key}"), Response::text(value));
            }
        }
        if let Some(code) = v.pointer("/region/regioncode").and_then(|x| x.as_str()) {
            docs.insert("/v1/region/regioncode", Response::text(code));
        }
        if let Some(keys) = v.get("public-keys") {
            docs.insert("/v1/public-keys", Response::json(keys.to_string()));
        }
        let public = v.pointer("/interfaces/0/ipv4/address").and_then(|x| x.as_str()).filter(|a| !a.is_empty());
        if let Some(address) = public {
            docs.insert("/latest/meta-data/public-ipv4", Response::text(address));
        }
        Vultr { docs }
    }
}

impl Default for Vultr {
    fn default() -> Self {
        Self::new()
    }
}

impl Cloud for Vultr {
    fn handle(&self, request: &Request) -> Response {
        if request.method != "GET" {
            return Response::status(405, "Method Not Allowed");
        }
        self.docs.get(&request.path)
    }
}
