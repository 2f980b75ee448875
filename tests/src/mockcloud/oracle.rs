//! Oracle Cloud's instance metadata service v2: `GET /opc/v2/instance/`
//! (a JSON object), `/opc/v2/vnics/` (a JSON array),
//! `/opc/v2/instance/<key>` (one value; objects as JSON) and
//! `/opc/v2/instance/metadata/user_data` (base64). Every request must send
//! `Authorization: Bearer Oracle`; without it the service answers 401 with
//! OCI's error JSON. `/opc/v1/` (the old version, no header) is not served
//! here: 404, as on an instance where v1 is disabled.

use super::{Cloud, Documents, Request, Response};
use serde_json::Value;

/// The repo's own instance document, shaped like OCI's published example
/// of `GET /opc/v2/instance/`.
pub const INSTANCE: &str = r#"{
  "availabilityDomain": "Uocm:EU-FRANKFURT-1-AD-2",
  "faultDomain": "FAULT-DOMAIN-1",
  "compartmentId": "ocid1.compartment.oc1..aaaaaaaabronzetest",
  "displayName": "bronze-oci-1",
  "hostname": "bronze-oci-1",
  "id": "ocid1.instance.oc1.eu-frankfurt-1.antheljtbronzetest",
  "image": "ocid1.image.oc1.eu-frankfurt-1.aaaaaaaabronzetest",
  "metadata": {
    "ssh_authorized_keys": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGbronzeTestKeyOnly test@bronze"
  },
  "region": "fra",
  "canonicalRegionName": "eu-frankfurt-1",
  "ociAdName": "fra-ad-2",
  "regionInfo": {
    "realmKey": "oc1",
    "realmDomainComponent": "oraclecloud.com",
    "regionKey": "FRA",
    "regionIdentifier": "eu-frankfurt-1"
  },
  "shape": "VM.Standard.A1.Flex",
  "state": "Running",
  "timeCreated": 1700000000000,
  "agentConfig": { "monitoringDisabled": false, "managementDisabled": false, "allPluginsDisabled": false },
  "freeformTags": { "team": "bronze" },
  "definedTags": { "Operations": { "CostCenter": "42" } }
}"#;

/// The repo's own VNIC list (`GET /opc/v2/vnics/`): a primary VNIC with
/// IPv6 and a secondary one without.
pub const VNICS: &str = r#"[
  {
    "vnicId": "ocid1.vnic.oc1.eu-frankfurt-1.abtheljtbronze0",
    "privateIp": "10.0.0.17",
    "vlanTag": 0,
    "macAddr": "02:00:17:0A:BC:01",
    "virtualRouterIp": "10.0.0.1",
    "subnetCidrBlock": "10.0.0.0/24",
    "ipv6SubnetCidrBlock": "2603:c020:8010:7e00::/64",
    "ipv6VirtualRouterIp": "fe80::200:17ff:fe0a:bc00",
    "ipv6Addresses": ["2603:c020:8010:7e00::1a2b"]
  },
  {
    "vnicId": "ocid1.vnic.oc1.eu-frankfurt-1.abtheljtbronze1",
    "privateIp": "10.0.1.9",
    "vlanTag": 0,
    "macAddr": "02:00:17:0a:bc:02",
    "virtualRouterIp": "10.0.1.1",
    "subnetCidrBlock": "10.0.1.0/24"
  }
]"#;

/// Plain text, stored base64 by OCI: `user_data` in the instance metadata.
pub const USER_DATA: &str = "#cloud-config\nhostname: from-user-data\n";

/// OCI's answer to a request without the header.
pub const UNAUTHORIZED: &str =
    r#"{"code":"NotAuthenticated","message":"Authorization header is missing or is not 'Bearer Oracle'"}"#;

/// The Oracle Cloud mock.
pub struct Oracle {
    pub docs: Documents,
}

impl Oracle {
    /// The repo's instance, VNICs and user data.
    pub fn new() -> Oracle {
        Oracle::with_documents(INSTANCE, VNICS, Some(USER_DATA.as_bytes()))
    }

    /// Serves `instance` and `vnics` (and the instance's top-level keys one
    /// by one), and `user_data` base64-encoded if given.
    pub fn with_documents(instance: &str, vnics: &str, user_data: Option<&[u8]>) -> Oracle {
        let mut docs = Documents::default();
        docs.insert("/opc/v2/instance/", Response::json(instance.to_string()));
        docs.insert("/opc/v2/vnics/", Response::json(vnics.to_string()));
        if let Ok(Value::Object(map)) = serde_json::from_str::<Value>(instance) {
            for (key, value) in map {
                let response = match value {
                    Value::String(s) => Response::text(s),
                    other => Response::json(other.to_string()),
                };
                docs.insert(&format!("/opc/v2/instance/{key}"), response);
            }
        }
        if let Some(data) = user_data {
            docs.insert("/opc/v2/instance/metadata/user_data", Response::text(base64(data)));
        }
        Oracle { docs }
    }
}

impl Default for Oracle {
    fn default() -> Self {
        Self::new()
    }
}

impl Cloud for Oracle {
    fn handle(&self, request: &Request) -> Response {
        if request.header("authorization") != Some("Bearer Oracle") {
            return Response::new(401, "application/json", UNAUTHORIZED);
        }
        if request.method != "GET" {
            return Response::new(
                405,
                "application/json",
                r#"{"code":"MethodNotAllowed","message":"Method not allowed"}"#,
            );
        }
        // OCI serves the two collections with and without the trailing slash.
        let path = match request.path.as_str() {
            "/opc/v2/instance" => "/opc/v2/instance/",
            "/opc/v2/vnics" => "/opc/v2/vnics/",
            other => other,
        };
        let response = self.docs.get(path);
        if response.status == 404 {
            return Response::new(404, "application/json", r#"{"code":"NotFound","message":"Not Found"}"#);
        }
        response
    }
}

/// Standard base64 with padding.
pub fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}
