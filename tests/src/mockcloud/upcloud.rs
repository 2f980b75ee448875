//! UpCloud's metadata service: the whole document at `/metadata/v1.json`,
//! single values under `/metadata/v1/` (`hostname`, `instance_id`,
//! `region`, `public_keys`, `user_data`). No headers; only GET (405
//! otherwise); unknown paths 404. [`UpCloud::new`] serves the repo's own
//! server, [`UpCloud::from_document`] any `/metadata/v1.json` body (the
//! conformance tests serve Talos's).

use super::{Cloud, Documents, Request, Response};

/// The repo's own server: a public interface with DHCP IPv4 and a floating
/// IP, a utility network, and a public IPv6 interface, shaped like
/// UpCloud's published `/metadata/v1.json` (documentation address ranges).
pub const DEFAULT_DOCUMENT: &str = r#"{
  "cloud_name": "upcloud",
  "instance_id": "00aabbcc-1111-4222-8333-444455556666",
  "hostname": "bronze-upcloud-1",
  "region": "de-fra1",
  "network": {
    "interfaces": [
      {"index": 1, "mac": "5e:bf:5e:aa:00:01", "network_id": "03000000-0000-4000-8000-000000000001", "type": "public",
       "ip_addresses": [
         {"address": "198.51.100.20", "dhcp": true, "dns": ["198.51.100.53", "198.51.100.54"], "family": "IPv4",
          "floating": false, "gateway": "198.51.100.1", "network": "198.51.100.0/24"},
         {"address": "198.51.100.99", "dhcp": false, "dns": null, "family": "IPv4", "floating": true,
          "gateway": "", "network": "198.51.100.99/32"}]},
      {"index": 2, "mac": "5e:bf:5e:aa:00:02", "network_id": "03000000-0000-4000-8000-000000000002", "type": "utility",
       "ip_addresses": [
         {"address": "10.6.0.5", "dhcp": true, "dns": null, "family": "IPv4", "floating": false,
          "gateway": "10.6.0.1", "network": "10.6.0.0/22"}]},
      {"index": 3, "mac": "5e:bf:5e:aa:00:03", "network_id": "03000000-0000-4000-8000-000000000003", "type": "public",
       "ip_addresses": [
         {"address": "2001:db8:8000:1000:0000:aaaa:bbbb:cccc", "dhcp": false, "dns": ["2001:db8:53::1"],
          "family": "IPv6", "floating": false, "gateway": "2001:db8:8000:1000::1", "network": "2001:db8:8000:1000::/64"}]}
    ],
    "dns": ["198.51.100.53", "198.51.100.54"]
  },
  "storage": {},
  "tags": ["bronze"],
  "user_data": "",
  "vendor_data": ""
}"#;

pub struct UpCloud {
    pub docs: Documents,
}

impl UpCloud {
    /// The repo's own server, with user data.
    pub fn new() -> UpCloud {
        let mut upcloud = UpCloud::from_document(DEFAULT_DOCUMENT);
        upcloud.docs.insert("/metadata/v1/user_data", Response::text("#cloud-config\n"));
        upcloud
    }

    /// Serves `document` and its single values (user data empty → 404).
    pub fn from_document(document: &str) -> UpCloud {
        let mut docs = Documents::default();
        docs.insert("/metadata/v1.json", Response::json(document));
        let v: serde_json::Value = serde_json::from_str(document).unwrap_or_default();
        for key in ["hostname", "instance_id", "region", "cloud_name"] {
            if let Some(value) = v.get(key).and_then(|x| x.as_str()) {
                docs.insert(&format!("/metadata/v1/{key}"), Response::text(value));
            }
        }
        if let Some(user_data) = v.get("user_data").and_then(|x| x.as_str()).filter(|u| !u.is_empty()) {
            docs.insert("/metadata/v1/user_data", Response::text(user_data));
        }
        UpCloud { docs }
    }
}

impl Default for UpCloud {
    fn default() -> Self {
        Self::new()
    }
}

impl Cloud for UpCloud {
    fn handle(&self, request: &Request) -> Response {
        if request.method != "GET" {
            return Response::status(405, "Method Not Allowed");
        }
        self.docs.get(&request.path)
    }
}
