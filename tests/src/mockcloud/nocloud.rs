//! A NoCloud seed server (`ds=nocloud;s=http://HOST/PREFIX/`): plain files
//! `meta-data`, `network-config` and `user-data` under a prefix, as any
//! static web server serves them (cloud-init's `nocloud-net`). Only GET
//! and HEAD (405 otherwise); a missing file is 404. [`NoCloud::new`]
//! serves the repo's own seed under `/seed/`, [`NoCloud::with`] any files.
//! [`NoCloud::write_volume`] writes the same files as a `cidata` volume
//! directory.

use super::{Cloud, Documents, Request, Response};
use std::path::Path;

/// Where [`NoCloud::new`] serves its seed.
pub const PREFIX: &str = "/seed/";

pub const DEFAULT_META_DATA: &str = "instance-id: iid-bronze-nocloud-1\nlocal-hostname: bronze-nocloud-1\n";

/// cloud-init network config v2: one MAC-matched NIC with a static
/// address, a gateway, DHCPv6 and resolvers.
pub const DEFAULT_NETWORK_CONFIG: &str = "version: 2
ethernets:
  uplink:
    match:
      macaddress: '52:54:00:12:34:56'
    set-name: uplink0
    dhcp6: true
    addresses:
      - 192.0.2.20/24
    gateway4: 192.0.2.1
    nameservers:
      addresses: [192.0.2.53]
      search: [bronze.test]
";

/// The seed's files.
pub struct NoCloud {
    pub prefix: String,
    pub docs: Documents,
}

impl NoCloud {
    pub fn new() -> NoCloud {
        NoCloud::with(PREFIX, DEFAULT_META_DATA, Some(DEFAULT_NETWORK_CONFIG), Some(b"#cloud-config\n"))
    }

    pub fn with(prefix: &str, meta_data: &str, network_config: Option<&str>, user_data: Option<&[u8]>) -> NoCloud {
        let mut docs = Documents::default();
        let octets = "application/octet-stream";
        docs.insert(&format!("{prefix}meta-data"), Response::new(200, octets, meta_data));
        if let Some(network) = network_config {
            docs.insert(&format!("{prefix}network-config"), Response::new(200, octets, network));
        }
        if let Some(user_data) = user_data {
            docs.insert(&format!("{prefix}user-data"), Response::new(200, octets, user_data.to_vec()));
        }
        NoCloud { prefix: prefix.to_string(), docs }
    }

    /// Writes `meta-data`, `network-config` and `user-data` (those the seed
    /// has) into `dir`, a `cidata` volume for `--volume cidata=DIR`.
    pub fn write_volume(&self, dir: &Path) -> std::io::Result<()> {
        std::fs::create_dir_all(dir)?;
        for name in ["meta-data", "network-config", "user-data"] {
            let response = self.docs.get(&format!("{}{name}", self.prefix));
            if response.status == 200 {
                std::fs::write(dir.join(name), &response.body)?;
            }
        }
        Ok(())
    }
}

impl Default for NoCloud {
    fn default() -> Self {
        Self::new()
    }
}

impl Cloud for NoCloud {
    fn handle(&self, request: &Request) -> Response {
        match request.method.as_str() {
            "GET" => self.docs.get(&request.path),
            "HEAD" => {
                let mut r = self.docs.get(&request.path);
                r.body.clear();
                r
            }
            _ => Response::status(405, "Method Not Allowed"),
        }
    }
}
