//! Azure's instance metadata service (IMDS), as it behaves:
//!
//! - every request needs `Metadata: true`, else 400 with Azure's JSON
//!   error ("Required metadata header not specified"); a request with
//!   `X-Forwarded-For` is refused with 400 too; only GET (405 otherwise);
//! - `api-version` is required and must be one the service knows (400 with
//!   the newest versions listed otherwise); [`Azure::stack_hub`] knows only
//!   versions up to 2019-06-01, like Azure Stack Hub;
//! - `/metadata/instance` (both sections), `/metadata/instance/compute`,
//!   `/metadata/instance/network/interface` and any leaf below them
//!   (`format=text` for a leaf, else 400), `/metadata/loadbalancer` (from
//!   2020-10-01 on), `/metadata/instance/compute/userData` (from 2021-01-01
//!   on, base64 text);
//! - unknown paths 404 with a JSON error.
//!
//! [`Azure::new`] serves the repo's own VM; [`Azure::from_talos`] the three
//! documents of Talos's azure test.

use super::{Cloud, Request, Response};
use serde_json::{Value, json};
use std::path::Path;

/// The versions the mock knows (a subset of Azure's list).
pub const VERSIONS: &[&str] =
    &["2017-08-01", "2018-10-01", "2019-06-01", "2020-09-01", "2020-10-01", "2021-01-01", "2021-02-01", "2021-12-13"];

pub fn default_compute() -> Value {
    json!({
        "azEnvironment": "AzurePublicCloud",
        "evictionPolicy": "",
        "location": "westeurope",
        "name": "bronze-vm-1",
        "offer": "",
        "osProfile": {"adminUsername": "", "computerName": "bronze-vm-1", "disablePasswordAuthentication": "true"},
        "osType": "Linux",
        "platformFaultDomain": "1",
        "platformUpdateDomain": "0",
        "priority": "Regular",
        "provider": "Microsoft.Compute",
        "resourceGroupName": "Bronze-RG",
        "resourceId": "/subscriptions/6f1a2b3c-0000-4000-8000-1234567890ab/resourceGroups/Bronze-RG/providers/Microsoft.Compute/virtualMachines/bronze-vm-1",
        "subscriptionId": "6f1a2b3c-0000-4000-8000-1234567890ab",
        "tags": "env:test;owner:bronze",
        "tagsList": [{"name": "env", "value": "test"}, {"name": "owner", "value": "bronze"}],
        "userData": "IyEvYmluL3NoCmVjaG8gYnJvbnplCg==",
        "vmId": "02aab8a4-74ef-476e-8182-f6d2ba4166a6",
        "vmScaleSetName": "",
        "vmSize": "Standard_D2s_v5",
        "zone": "2"
    })
}

pub fn default_interfaces() -> Value {
    json!([{
        "ipv4": {
            "ipAddress": [{"privateIpAddress": "10.0.1.4", "publicIpAddress": "20.61.1.2"}],
            "subnet": [{"address": "10.0.1.0", "prefix": "24"}]
        },
        "ipv6": {"ipAddress": [{"privateIpAddress": "ace:cab:deca::4", "publicIpAddress": ""}]},
        "macAddress": "6045BDA1B2C3"
    }])
}

pub fn default_loadbalancer() -> Value {
    json!({"loadbalancer": {
        "publicIpAddresses": [{"frontendIpAddress": "51.105.9.9", "privateIpAddress": "10.0.1.4"}],
        "inboundRules": [],
        "outboundRules": []
    }})
}

pub struct Azure {
    pub compute: Value,
    pub interfaces: Value,
    pub loadbalancer: Option<Value>,
    /// The api-versions the service accepts.
    pub versions: Vec<&'static str>,
}

impl Default for Azure {
    fn default() -> Self {
        Self::new()
    }
}

impl Azure {
    pub fn new() -> Azure {
        Azure {
            compute: default_compute(),
            interfaces: default_interfaces(),
            loadbalancer: Some(default_loadbalancer()),
            versions: VERSIONS.to_vec(),
        }
    }

    /// An Azure Stack Hub IMDS: nothing newer than 2019-06-01.
    pub fn stack_hub(mut self) -> Azure {
        self.versions.retain(|v| *v <= "2019-06-01");
        self
    }

    /// Talos's `talos-compute.json`, `talos-interfaces.json` and
    /// `talos-loadbalancer.json`, served as they are.
    pub fn from_talos(compute: &Path, interfaces: &Path, loadbalancer: &Path) -> anyhow::Result<Azure> {
        let read = |p: &Path| -> anyhow::Result<Value> { Ok(serde_json::from_slice(&std::fs::read(p)?)?) };
        Ok(Azure {
            compute: read(compute)?,
            interfaces: read(interfaces)?,
            loadbalancer: Some(read(loadbalancer)?),
            versions: VERSIONS.to_vec(),
        })
    }

    fn newest(&self) -> Vec<&'static str> {
        self.versions.iter().rev().take(3).copied().collect()
    }
}

/// Azure's JSON error.
pub fn error(status: u16, message: &str) -> Response {
    Response::new(status, "application/json; charset=utf-8", json!({"error": message}).to_string())
}

fn json_response(value: &Value) -> Response {
    Response::new(200, "application/json; charset=utf-8", value.to_string())
}

impl Cloud for Azure {
    fn handle(&self, request: &Request) -> Response {
        if !request.header("metadata").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
            return error(400, "Bad request. Required metadata header not specified");
        }
        if request.header("x-forwarded-for").is_some() {
            return error(400, "Bad request. Requests with X-Forwarded-For header are not allowed");
        }
        if request.method != "GET" {
            return error(405, "Method not allowed");
        }
        let Some(version) = request.query_param("api-version") else {
            let body = json!({
                "error": "Bad request. api-version was not specified in the request. For more information refer to aka.ms/azureimds",
                "newest-versions": self.newest(),
            });
            return Response::new(400, "application/json; charset=utf-8", body.to_string());
        };
        if !self.versions.contains(&version) {
            let body = json!({
                "error": "Bad request. api-version is invalid or was not specified in the request. For more information refer to aka.ms/azureimds",
                "newest-versions": self.newest(),
            });
            return Response::new(400, "application/json; charset=utf-8", body.to_string());
        }
        let text = request.query_param("format") == Some("text");
        let path = request.path.trim_end_matches('/');
        if path == "/metadata/loadbalancer" {
            if version < "2020-10-01" {
                return error(400, "Bad request. api-version is invalid or was not specified in the request.");
            }
            return match &self.loadbalancer {
                Some(lb) => json_response(lb),
                None => error(404, "Load balancer metadata is not available for this VM"),
            };
        }
        let Some(rest) = path.strip_prefix("/metadata/instance") else { return error(404, "Not found") };
        let mut compute = self.compute.clone();
        if version < "2021-01-01"
            && let Some(c) = compute.as_object_mut()
        {
            c.remove("userData");
        }
        let tree = json!({"compute": compute, "network": {"interface": self.interfaces}});
        let mut node = &tree;
        for segment in rest.split('/').filter(|s| !s.is_empty()) {
            let next = match node {
                Value::Object(map) => map.get(segment),
                Value::Array(list) => segment.parse::<usize>().ok().and_then(|i| list.get(i)),
                _ => None,
            };
            match next {
                Some(n) => node = n,
                None => return error(404, "Not found"),
            }
        }
        match (node, text) {
            (Value::Object(_) | Value::Array(_), false) => json_response(node),
            (Value::Object(_) | Value::Array(_), true) => {
                error(400, "Bad request. Format text is only supported for leaf nodes")
            }
            (leaf, true) => Response::new(
                200,
                "text/plain; charset=utf-8",
                leaf.as_str().map_or_else(|| leaf.to_string(), String::from),
            ),
            (_, false) => error(400, "Bad request. Query parameter format=text is required when querying a leaf node"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(azure: &Azure, path: &str, query: &str, header: bool) -> Response {
        let mut headers = Vec::new();
        if header {
            headers.push(("metadata".to_string(), "true".to_string()));
        }
        azure.handle(&Request {
            method: "GET".into(),
            path: path.into(),
            query: Some(query.into()),
            headers,
            body: Vec::new(),
            peer: "127.0.0.1:1".parse().unwrap(),
        })
    }

    #[test]
    fn header_and_version_rules() {
        let azure = Azure::new();
        let r = get(&azure, "/metadata/instance/compute", "api-version=2021-12-13&format=json", false);
        assert_eq!(r.status, 400);
        assert!(String::from_utf8_lossy(&r.body).contains("Required metadata header not specified"));
        let r = get(&azure, "/metadata/instance/compute", "format=json", true);
        assert_eq!(r.status, 400);
        assert!(String::from_utf8_lossy(&r.body).contains("newest-versions"));
        let ok = get(&azure, "/metadata/instance/compute", "api-version=2021-12-13&format=json", true);
        assert_eq!(ok.status, 200);
        let stack = Azure::new().stack_hub();
        assert_eq!(get(&stack, "/metadata/instance/compute", "api-version=2021-12-13&format=json", true).status, 400);
        let old = get(&stack, "/metadata/instance/compute", "api-version=2019-06-01&format=json", true);
        let old: Value = serde_json::from_slice(&old.body).unwrap();
        assert!(old.get("userData").is_none() && old["vmSize"] == "Standard_D2s_v5");
    }

    #[test]
    fn leaves_need_format_text() {
        let azure = Azure::new();
        let r = get(&azure, "/metadata/instance/compute/userData", "api-version=2021-01-01&format=text", true);
        assert_eq!((r.status, r.body.as_slice()), (200, b"IyEvYmluL3NoCmVjaG8gYnJvbnplCg==".as_slice()));
        assert_eq!(
            get(&azure, "/metadata/instance/compute/vmSize", "api-version=2021-01-01&format=json", true).status,
            400
        );
        assert_eq!(get(&azure, "/metadata/instance/nothing", "api-version=2021-01-01&format=json", true).status, 404);
        let lb = get(&azure, "/metadata/loadbalancer", "api-version=2021-12-13&format=json", true);
        assert_eq!(lb.status, 200);
    }
}
