//! Hetzner Cloud's metadata service: `/hetzner/v1/metadata` answers every
//! value in one YAML document; `/hetzner/v1/metadata/<key>` one value
//! (`hostname`, `instance-id`, `availability-zone`, `region`,
//! `public-ipv4`, `local-ipv4` as text, `public-keys` as a JSON array,
//! `network-config` as YAML network config v1); `/hetzner/v1/userdata`
//! the user data. No headers; only GET (405 otherwise); unknown paths 404.
//! [`Hetzner::new`] serves the repo's own server, [`Hetzner::with`] any
//! values (the conformance tests serve Talos's network config).

use super::{Cloud, Documents, Request, Response};

/// The repo's own server's network config (shaped like Hetzner's: DHCP
/// IPv4 plus a static IPv6 /64 with gateway fe80::1).
pub const DEFAULT_NETWORK_CONFIG: &str = "config:
- mac_address: 96:00:02:aa:bb:cc
  name: eth0
  subnets:
  - ipv4: true
    type: dhcp
  - address: 2001:db8:f0:1::1/64
    gateway: fe80::1
    ipv6: true
    type: static
  type: physical
- address:
  - 185.12.64.2
  - 185.12.64.1
  interface: eth0
  type: nameserver
version: 1
";

/// The values a server has.
#[derive(Debug, Clone)]
pub struct Values {
    pub hostname: String,
    pub instance_id: String,
    pub availability_zone: String,
    pub region: String,
    pub public_ipv4: String,
    pub network_config: String,
    pub user_data: Option<Vec<u8>>,
}

impl Default for Values {
    fn default() -> Values {
        Values {
            hostname: "bronze-hetzner-1".into(),
            instance_id: "41234567".into(),
            availability_zone: "fsn1-dc14".into(),
            region: "eu-central".into(),
            public_ipv4: "203.0.113.44".into(),
            network_config: DEFAULT_NETWORK_CONFIG.into(),
            user_data: Some(b"#cloud-config\n".to_vec()),
        }
    }
}

pub struct Hetzner {
    pub docs: Documents,
}

impl Hetzner {
    pub fn new() -> Hetzner {
        Hetzner::with(Values::default())
    }

    pub fn with(v: Values) -> Hetzner {
        let mut docs = Documents::default();
        let network: serde_yaml::Value = serde_yaml::from_str(&v.network_config).unwrap_or(serde_yaml::Value::Null);
        let mut all = serde_yaml::Mapping::new();
        let mut put = |k: &str, value: serde_yaml::Value| {
            all.insert(k.into(), value);
        };
        put("availability-zone", v.availability_zone.clone().into());
        put("hostname", v.hostname.clone().into());
        put("instance-id", v.instance_id.parse::<u64>().map(Into::into).unwrap_or(v.instance_id.clone().into()));
        put("local-ipv4", "".into());
        put("network-config", network);
        put("public-ipv4", v.public_ipv4.clone().into());
        put("public-keys", serde_yaml::Value::Sequence(Vec::new()));
        put("region", v.region.clone().into());
        put("vendor_data", "#cloud-config\n".into());
        docs.insert("/hetzner/v1/metadata", Response::text(serde_yaml::to_string(&all).unwrap_or_default()));
        for (key, value) in [
            ("hostname", &v.hostname),
            ("instance-id", &v.instance_id),
            ("availability-zone", &v.availability_zone),
            ("region", &v.region),
            ("public-ipv4", &v.public_ipv4),
        ] {
            docs.insert(&format!("/hetzner/v1/metadata/{key}"), Response::text(value.clone()));
        }
        docs.insert("/hetzner/v1/metadata/public-keys", Response::json("[]"));
        // A server attached to no private network: an empty YAML list.
        docs.insert("/hetzner/v1/metadata/private-networks", Response::text("[]\n"));
        docs.insert("/hetzner/v1/metadata/network-config", Response::text(v.network_config.clone()));
        if let Some(user_data) = v.user_data {
            docs.insert("/hetzner/v1/userdata", Response::text(user_data));
        }
        Hetzner { docs }
    }
}

impl Default for Hetzner {
    fn default() -> Self {
        Self::new()
    }
}

impl Cloud for Hetzner {
    fn handle(&self, request: &Request) -> Response {
        if request.method != "GET" {
            return Response::status(405, "Method Not Allowed");
        }
        self.docs.get(&request.path)
    }
}
