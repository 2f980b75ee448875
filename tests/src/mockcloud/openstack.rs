//! OpenStack's (Nova's) metadata service: `/openstack` lists the versions,
//! `/openstack/latest/` the files, `/openstack/latest/meta_data.json`,
//! `network_data.json`, `vendor_data.json`, `user_data` (404 when the
//! instance has none), and the EC2-compatible `/latest/meta-data/<key>`
//! (`instance-id`, `instance-type`, `public-ipv4`, `local-ipv4`,
//! `hostname`, `placement/availability-zone`). No headers; only GET (405
//! otherwise). [`OpenStack::new`] serves the repo's own instance,
//! [`OpenStack::from_documents`] any `meta_data.json` + `network_data.json`
//! (the conformance tests serve Talos's). [`write_config_drive`] writes the
//! same files as a `config-2` drive directory.

use super::{Cloud, Documents, Request, Response};
use std::path::Path;

/// The repo's own instance's `meta_data.json` (shaped like Nova's).
pub const DEFAULT_META_DATA: &str = r#"{
  "uuid": "7c3e1f0a-5b2d-4e6f-8a9b-0c1d2e3f4a5b",
  "meta": {"role": "worker", "cluster": "bronze"},
  "keys": [],
  "hostname": "bronze-os-1.novalocal",
  "name": "bronze-os-1",
  "launch_index": 0,
  "availability_zone": "az-1",
  "random_seed": "cmFuZG9tCg==",
  "project_id": "5a1b2c3d4e5f40718293a4b5c6d7e8f9",
  "devices": [],
  "dedicated_cpus": []
}"#;

/// The repo's own instance's `network_data.json`: one port with a static
/// IPv4 and a DHCPv6-stateless IPv6 network, and a resolver.
pub const DEFAULT_NETWORK_DATA: &str = r#"{
  "links": [
    {"id": "tap1a2b3c4d-5e", "vif_id": "1a2b3c4d-5e6f-4a7b-8c9d-0e1f2a3b4c5d", "type": "ovs", "mtu": 1442,
     "ethernet_mac_address": "fa:16:3e:12:34:56"}
  ],
  "networks": [
    {"id": "network0", "type": "ipv4", "link": "tap1a2b3c4d-5e", "ip_address": "192.0.2.15", "netmask": "255.255.255.0",
     "routes": [{"network": "0.0.0.0", "netmask": "0.0.0.0", "gateway": "192.0.2.1"}],
     "network_id": "9d8c7b6a-5f4e-4d3c-2b1a-0f9e8d7c6b5a",
     "services": [{"type": "dns", "address": "192.0.2.53"}]},
    {"id": "network1", "type": "ipv6_dhcpv6-stateless", "link": "tap1a2b3c4d-5e",
     "ip_address": "2001:db8:42::f816:3eff:fe12:3456", "netmask": "ffff:ffff:ffff:ffff::",
     "routes": [{"network": "::", "netmask": "::", "gateway": "2001:db8:42::1"}],
     "network_id": "8c7b6a5f-4e3d-4c2b-1a0f-9e8d7c6b5a49", "services": []}
  ],
  "services": [{"type": "dns", "address": "192.0.2.53"}]
}"#;

pub struct OpenStack {
    pub docs: Documents,
}

impl OpenStack {
    pub fn new() -> OpenStack {
        let mut os = OpenStack::from_documents(DEFAULT_META_DATA, Some(DEFAULT_NETWORK_DATA));
        os.docs
            .insert("/openstack/latest/user_data", Response::new(200, "application/octet-stream", "#cloud-config\n"));
        os.docs.insert("/latest/meta-data/public-ipv4", Response::text("203.0.113.15"));
        os.docs.insert("/latest/meta-data/instance-type", Response::text("m1.small"));
        os
    }

    /// Serves the two documents (no user data, no public IPv4).
    pub fn from_documents(meta_data: &str, network_data: Option<&str>) -> OpenStack {
        let mut docs = Documents::default();
        docs.insert("/openstack", Response::text("2012-08-10\n2013-04-04\n2016-06-30\n2018-08-27\nlatest"));
        let mut files = vec!["meta_data.json", "vendor_data.json", "vendor_data2.json"];
        docs.insert("/openstack/latest/meta_data.json", Response::json(meta_data));
        if let Some(network) = network_data {
            docs.insert("/openstack/latest/network_data.json", Response::json(network));
            files.push("network_data.json");
        }
        docs.insert("/openstack/latest/vendor_data.json", Response::json("{}"));
        docs.insert("/openstack/latest/vendor_data2.json", Response::json("{}"));
        docs.insert("/openstack/latest", Response::text(files.join("\n")));
        docs.insert("/openstack/latest/", Response::text(files.join("\n")));
        let v: serde_json::Value = serde_json::from_str(meta_data).unwrap_or_default();
        if let Some(uuid) = v.get("uuid").and_then(|x| x.as_str()) {
            docs.insert("/latest/meta-data/instance-id", Response::text(uuid));
        }
        if let Some(host) = v.get("hostname").and_then(|x| x.as_str()) {
            docs.insert("/latest/meta-data/hostname", Response::text(host));
        }
        if let Some(zone) = v.get("availability_zone").and_then(|x| x.as_str()) {
            docs.insert("/latest/meta-data/placement/availability-zone", Response::text(zone));
        }
        OpenStack { docs }
    }

    /// Writes the `openstack/latest/` files this mock serves under `dir`
    /// (a `config-2` drive for `--volume config-2=DIR`).
    pub fn write_config_drive(&self, dir: &Path) -> std::io::Result<()> {
        let latest = dir.join("openstack/latest");
        std::fs::create_dir_all(&latest)?;
        for name in ["meta_data.json", "network_data.json", "user_data", "vendor_data.json"] {
            let response = self.docs.get(&format!("/openstack/latest/{name}"));
            if response.status == 200 {
                std::fs::write(latest.join(name), &response.body)?;
            }
        }
        Ok(())
    }
}

impl Default for OpenStack {
    fn default() -> Self {
        Self::new()
    }
}

impl Cloud for OpenStack {
    fn handle(&self, request: &Request) -> Response {
        if request.method != "GET" {
            return Response::status(405, "Method Not Allowed");
        }
        self.docs.get(&request.path)
    }
}
