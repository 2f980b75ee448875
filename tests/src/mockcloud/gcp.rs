//! Google Compute Engine's metadata server, as it behaves:
//!
//! - every request needs `Metadata-Flavor: Google`, else 403 with Google's
//!   error page ("Missing Metadata-Flavor:Google header"); a request with
//!   `X-Forwarded-For` is refused the same way; only GET (405 otherwise);
//! - every response carries `Metadata-Flavor: Google`;
//! - `/computeMetadata/v1/instance/...` and `/project/...`: a leaf answers
//!   its value as text; a directory answers its listing (sub-directories
//!   with a trailing `/`), or with `?recursive=true` its subtree as JSON
//!   (`alt=text` is not served for trees here). Path segments are
//!   kebab-case (`machine-type`, `network-interfaces/0/access-configs`);
//!   the JSON keys are camelCase (`machineType`), except the keys of
//!   `attributes`, which are served as written;
//! - unknown paths 404 with Google's page.
//!
//! [`Gcp::new`] serves the repo's own instance; [`Gcp::from_talos`] the
//! values of Talos's test struct plus its interfaces document.

use super::{Cloud, Request, Response};
use serde_json::{Value, json};
use std::path::Path;

/// The repo's own instance: one NIC with an external IPv4 and an IPv6
/// prefix, spot, two network tags, user data in the attributes.
pub fn default_instance() -> Value {
    json!({
        "attributes": {
            "enable-oslogin": "TRUE",
            "user-data": "#cloud-config\nhostname: ignored\n"
        },
        "cpuPlatform": "AMD Milan",
        "description": "",
        "hostname": "bronze-1.europe-west4-b.c.bronze-test-4711.internal",
        "id": 4520031799277581759u64,
        "image": "projects/bronze-test-4711/global/images/bronze-0-1",
        "machineType": "projects/804113012345/machineTypes/e2-standard-2",
        "maintenanceEvent": "NONE",
        "name": "bronze-1",
        "networkInterfaces": [{
            "accessConfigs": [{"externalIp": "34.90.1.2", "type": "ONE_TO_ONE_NAT"}],
            "dnsServers": ["169.254.169.254"],
            "forwardedIps": [],
            "gateway": "10.164.0.1",
            "gatewayIpv6": "fe80::56:7ff:fe12:3456",
            "ip": "10.164.0.7",
            "ipAliases": [],
            "ipv6": ["2600:1900:4000:abcd:0:5::/96"],
            "mac": "42:01:0a:a4:00:07",
            "mtu": 1460,
            "network": "projects/804113012345/networks/default",
            "subnetmask": "255.255.240.0",
            "targetInstanceIps": []
        }],
        "preempted": "FALSE",
        "scheduling": {"automaticRestart": "FALSE", "onHostMaintenance": "TERMINATE", "preemptible": "FALSE", "provisioningModel": "SPOT"},
        "tags": ["bronze", "http-server"],
        "zone": "projects/804113012345/zones/europe-west4-b"
    })
}

/// The repo instance's project.
pub fn default_project() -> Value {
    json!({"attributes": {}, "numericProjectId": 804113012345u64, "projectId": "bronze-test-4711"})
}

pub struct Gcp {
    pub instance: Value,
    pub project: Value,
}

impl Default for Gcp {
    fn default() -> Self {
        Self::new()
    }
}

impl Gcp {
    pub fn new() -> Gcp {
        Gcp { instance: default_instance(), project: default_project() }
    }

    /// Talos's `talos-metadata.json` (its struct of single values) and
    /// `talos-interfaces.json` (a raw `network-interfaces` body) as the
    /// server's tree: zone and machine type back as full paths, the id as
    /// the number the server prints.
    pub fn from_talos(metadata: &Path, interfaces: &Path) -> anyhow::Result<Gcp> {
        let m: Value = serde_json::from_slice(&std::fs::read(metadata)?)?;
        let nics: Value = serde_json::from_slice(&std::fs::read(interfaces)?)?;
        let s = |k: &str| m[k].as_str().map(String::from).ok_or_else(|| anyhow::anyhow!("{k} missing"));
        let project = s("project-id")?;
        let id: Value = s("id")?.parse::<u64>().map(Value::from).unwrap_or_else(|_| Value::String(s("id").unwrap()));
        let instance = json!({
            "attributes": {},
            "hostname": s("hostname")?,
            "id": id,
            "machineType": format!("projects/{project}/machineTypes/{}", s("machine-type")?),
            "name": s("name")?,
            "networkInterfaces": nics,
            "preempted": s("preempted")?,
            "scheduling": {"automaticRestart": "TRUE", "onHostMaintenance": "MIGRATE", "preemptible": s("preempted")?},
            "tags": m["tags"].clone(),
            "zone": format!("projects/{project}/zones/{}", s("zone")?),
        });
        let numeric: Value = project.parse::<u64>().map(Value::from).unwrap_or(Value::Null);
        Ok(Gcp { instance, project: json!({"attributes": {}, "numericProjectId": numeric, "projectId": project}) })
    }
}

/// `machine-type` → `machineType`.
fn camel(segment: &str) -> String {
    let mut out = String::new();
    let mut upper = false;
    for c in segment.chars() {
        if c == '-' {
            upper = true;
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

/// `machineType` → `machine-type`.
fn kebab(key: &str) -> String {
    let mut out = String::new();
    for c in key.chars() {
        if c.is_ascii_uppercase() {
            out.push('-');
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// Google's error page for `status`.
pub fn error(status: u16, why: &str) -> Response {
    let reason = match status {
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        _ => "Error",
    };
    let body = format!(
        "<!DOCTYPE html>\n<html lang=en>\n  <meta charset=utf-8>\n  <title>Error {status} ({reason})!!1</title>\n  \
         <p><b>{status}.</b> <ins>That\u{2019}s an error.</ins>\n  <p>{why} <ins>That\u{2019}s all we know.</ins>\n"
    );
    Response::new(status, "text/html; charset=UTF-8", body).with_header("metadata-flavor", "Google")
}

impl Gcp {
    fn lookup(&self, request: &Request, rest: &str) -> Response {
        let mut segments = rest.split('/').filter(|s| !s.is_empty());
        let mut node = match segments.next() {
            Some("instance") => &self.instance,
            Some("project") => &self.project,
            Some(_) => return error(404, "The requested URL was not found on this server."),
            None => return Response::text("instance/\nproject/").with_header("metadata-flavor", "Google"),
        };
        let mut literal = false;
        for segment in segments {
            let next = match node {
                Value::Object(map) => {
                    let key = if literal { segment.to_string() } else { camel(segment) };
                    literal = key == "attributes";
                    map.get(&key)
                }
                Value::Array(list) => segment.parse::<usize>().ok().and_then(|i| list.get(i)),
                _ => None,
            };
            match next {
                Some(n) => node = n,
                None => return error(404, "The requested URL was not found on this server."),
            }
        }
        let dir = rest.ends_with('/') || matches!(node, Value::Object(_) | Value::Array(_));
        let response = if request.query_param("recursive") == Some("true")
            || (!dir && request.query_param("alt") == Some("json"))
        {
            Response::json(serde_json::to_vec(node).unwrap())
        } else {
            match node {
                Value::String(s) => Response::new(200, "application/text", s.clone()),
                Value::Object(map) => {
                    let keys: Vec<String> = map
                        .iter()
                        .map(|(k, v)| {
                            let k = if literal { k.clone() } else { kebab(k) };
                            if v.is_object() || v.is_array() { format!("{k}/") } else { k }
                        })
                        .collect();
                    Response::new(200, "application/text", keys.join("\n"))
                }
                Value::Array(list) => {
                    let all_leaves = list.iter().all(|v| !v.is_object() && !v.is_array());
                    let lines: Vec<String> = if all_leaves {
                        list.iter().map(|v| v.as_str().map_or_else(|| v.to_string(), String::from)).collect()
                    } else {
                        (0..list.len()).map(|i| format!("{i}/")).collect()
                    };
                    Response::new(200, "application/text", lines.join("\n"))
                }
                other => Response::new(200, "application/text", other.to_string()),
            }
        };
        response.with_header("metadata-flavor", "Google")
    }
}

impl Cloud for Gcp {
    fn handle(&self, request: &Request) -> Response {
        if request.header("metadata-flavor") != Some("Google") || request.header("x-forwarded-for").is_some() {
            return error(
                403,
                &format!(
                    "Your client does not have permission to get URL <code>{}</code> from this server. Missing \
                     Metadata-Flavor:Google header.",
                    request.path
                ),
            );
        }
        if request.method != "GET" {
            return error(405, "The request method is not allowed.");
        }
        match request.path.strip_prefix("/computeMetadata/v1") {
            Some(rest) => self.lookup(request, rest),
            None => error(404, "The requested URL was not found on this server."),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(gcp: &Gcp, path: &str, query: Option<&str>, flavor: bool) -> Response {
        let mut headers = Vec::new();
        if flavor {
            headers.push(("metadata-flavor".to_string(), "Google".to_string()));
        }
        gcp.handle(&Request {
            method: "GET".into(),
            path: path.into(),
            query: query.map(String::from),
            headers,
            body: Vec::new(),
            peer: "127.0.0.1:1".parse().unwrap(),
        })
    }

    #[test]
    fn the_header_is_required_and_answered() {
        let gcp = Gcp::new();
        let refused = get(&gcp, "/computeMetadata/v1/instance/id", None, false);
        assert_eq!(refused.status, 403);
        assert!(String::from_utf8_lossy(&refused.body).contains("Missing Metadata-Flavor:Google header"));
        let ok = get(&gcp, "/computeMetadata/v1/instance/id", None, true);
        assert_eq!((ok.status, String::from_utf8(ok.body.clone()).unwrap().as_str()), (200, "4520031799277581759"));
        assert!(ok.headers.contains(&("metadata-flavor".into(), "Google".into())));
    }

    #[test]
    fn leaves_listings_and_trees() {
        let gcp = Gcp::new();
        let text = |p: &str, q: Option<&str>| {
            let r = get(&gcp, p, q, true);
            (r.status, String::from_utf8(r.body).unwrap())
        };
        assert_eq!(
            text("/computeMetadata/v1/instance/machine-type", None).1,
            "projects/804113012345/machineTypes/e2-standard-2"
        );
        assert_eq!(
            text("/computeMetadata/v1/instance/network-interfaces/0/access-configs/0/external-ip", None).1,
            "34.90.1.2"
        );
        assert_eq!(
            text("/computeMetadata/v1/instance/attributes/user-data", None).1,
            "#cloud-config\nhostname: ignored\n"
        );
        assert_eq!(text("/computeMetadata/v1/project/project-id", None).1, "bronze-test-4711");
        let listing = text("/computeMetadata/v1/instance/", None).1;
        assert!(listing.lines().any(|l| l == "network-interfaces/") && listing.lines().any(|l| l == "machine-type"));
        let tree: Value =
            serde_json::from_str(&text("/computeMetadata/v1/instance/", Some("recursive=true&alt=json")).1).unwrap();
        assert_eq!(tree["networkInterfaces"][0]["mac"], "42:01:0a:a4:00:07");
        assert_eq!(text("/computeMetadata/v1/instance/nothing", None).0, 404);
    }
}
