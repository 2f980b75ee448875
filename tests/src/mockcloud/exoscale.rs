//! Exoscale's metadata server (CloudStack's virtual router): plain-text
//! values at `GET /1.0/meta-data/<key>`, the key list at
//! `/1.0/meta-data/`, user data at `/1.0/user-data`; no headers. Unknown
//! keys are 404; anything but GET is 405.

use super::{Cloud, Documents, Request, Response};

/// The repo's own instance: every key Exoscale documents.
pub const VALUES: &[(&str, &str)] = &[
    ("local-hostname", "bronze-exo-1.example.net"),
    ("public-hostname", "bronze-exo-1.example.net"),
    ("instance-id", "9a3c2e41-6f0b-4d1e-8b2a-4c5d6e7f8091"),
    ("vm-id", "9a3c2e41-6f0b-4d1e-8b2a-4c5d6e7f8091"),
    ("service-offering", "standard.small"),
    ("availability-zone", "ch-gva-2"),
    ("public-ipv4", "194.182.160.23"),
    ("local-ipv4", "194.182.160.23"),
    ("cloud-identifier", "CloudStack-{1c1b5b7e-0f0e-4e5f-9a8b-7c6d5e4f3a2b}"),
    ("public-keys", "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGbronzeTestKeyOnly test@bronze"),
];

/// The user data the default mock serves.
pub const USER_DATA: &str = "#cloud-config\nhostname: from-user-data\n";

/// The Exoscale mock.
pub struct Exoscale {
    pub docs: Documents,
}

impl Exoscale {
    /// The repo's instance and user data.
    pub fn new() -> Exoscale {
        let values: Vec<(String, String)> = VALUES.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Exoscale::with_values(&values, Some(USER_DATA.as_bytes()))
    }

    /// Serves `values` as `/1.0/meta-data/<key>`, and `user_data` if given.
    pub fn with_values(values: &[(String, String)], user_data: Option<&[u8]>) -> Exoscale {
        let mut docs = Documents::default();
        let mut listing = String::new();
        for (key, value) in values {
            docs.insert(&format!("/1.0/meta-data/{key}"), Response::text(value.clone()));
            listing.push_str(key);
            listing.push('\n');
        }
        docs.insert("/1.0/meta-data/", Response::text(listing));
        if let Some(data) = user_data {
            docs.insert("/1.0/user-data", Response::new(200, "application/octet-stream", data.to_vec()));
        }
        Exoscale { docs }
    }
}

impl Default for Exoscale {
    fn default() -> Self {
        Self::new()
    }
}

impl Cloud for Exoscale {
    fn handle(&self, request: &Request) -> Response {
        if request.method != "GET" && request.method != "HEAD" {
            return Response::status(405, "Method Not Allowed");
        }
        self.docs.get(&request.path)
    }
}
