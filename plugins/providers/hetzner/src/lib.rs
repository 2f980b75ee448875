//! Hetzner Cloud: `GET /hetzner/v1/metadata` (one YAML document with
//! `hostname`, `instance-id`, `availability-zone`, `public-ipv4`, ...),
//! `GET /hetzner/v1/metadata/network-config` (cloud-init network config v1,
//! kept verbatim) and `GET /hetzner/v1/userdata` (plain, or base64 as
//! Hetzner may serve it). No headers. Detected by DMI `sys_vendor =
//! Hetzner` (ds-identify).
//!
//! Region is the zone before its first `-` (`hel1-dc2` is in `hel1`), as
//! Talos derives it; Hetzner's own `region` key (a network zone such as
//! `eu-central`) is kept as attribute `network-zone`. Provider id
//! `hcloud://<instance-id>`. External IPs: the public IPv4, then the global
//! IPv6 addresses the network config sets.

use bronze_plugin_sdk::{FetchError, InstanceMetadata, MetadataProvider, NetworkConfig, config};
use bronze_provider_common::{Fetcher, base64, cloudinit, dmi, text};
use serde_yaml::Value;
use std::net::IpAddr;

const DEFAULT_ENDPOINT: &str = "http://169.254.169.254";
const METADATA: &str = "/hetzner/v1/metadata";
const NETWORK_CONFIG: &str = "/hetzner/v1/metadata/network-config";
const USER_DATA: &str = "/hetzner/v1/userdata";

struct Hetzner;

impl MetadataProvider for Hetzner {
    fn detect() -> bool {
        dmi::read().sys_vendor == "Hetzner"
    }

    fn fetch() -> Result<InstanceMetadata, FetchError> {
        let endpoint = config::get("endpoint").unwrap_or_else(|| DEFAULT_ENDPOINT.to_string());
        let fetcher = Fetcher::new(&endpoint);
        let body = text(METADATA, fetcher.get(METADATA, &[])?)?;
        let doc: Value =
            serde_yaml::from_str(&body).map_err(|e| FetchError::Invalid(format!("{METADATA}: not YAML: {e}")))?;
        if !doc.is_mapping() {
            return Err(FetchError::Invalid(format!("{METADATA}: expected a mapping")));
        }
        let field = |key: &str| -> Result<Option<String>, FetchError> {
            match doc.get(key) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.trim().to_string()).filter(|s| !s.is_empty())),
                Some(Value::Number(n)) => Ok(Some(n.to_string())),
                Some(_) => Err(FetchError::Invalid(format!("{METADATA}: {key} is not a single value"))),
            }
        };

        let mut md = InstanceMetadata::new("hetzner");
        md.hostname = field("hostname")?;
        md.instance_id = field("instance-id")?;
        let id = md.instance_id.clone().ok_or_else(|| FetchError::Invalid(format!("{METADATA}: no instance-id")))?;
        md.provider_id = Some(format!("hcloud://{id}"));
        md.zone = field("availability-zone")?;
        md.region = md.zone.as_deref().map(|z| z.split('-').next().unwrap_or(z).to_string());
        if let Some(zone) = field("region")? {
            md.attributes.push(("network-zone".into(), zone));
        }
        if let Some(ipv4) = field("public-ipv4")? {
            let addr = cloudinit::ip("public-ipv4", &ipv4).map_err(FetchError::Invalid)?;
            if !addr.is_ipv4() {
                return Err(FetchError::Invalid(format!("{METADATA}: public-ipv4 {addr} is not IPv4")));
            }
            md.public_ipv4.push(addr.to_string());
            md.external_ips.push(addr.to_string());
        }
        if let Some(ipv4) = field("local-ipv4")? {
            md.private_ipv4.push(cloudinit::ip("local-ipv4", &ipv4).map_err(FetchError::Invalid)?.to_string());
        }

        if let Some(network) = fetcher.get_optional(NETWORK_CONFIG, &[])? {
            let network = text(NETWORK_CONFIG, network)?;
            if !network.is_empty() {
                let settings = cloudinit::parse(&network, &cloudinit::host_links())
                    .map_err(|e| FetchError::Invalid(format!("{NETWORK_CONFIG}: {e}")))?;
                for iface in &settings.interfaces {
                    for address in &iface.addresses {
                        let Some(Ok(IpAddr::V6(v6))) = address.split('/').next().map(str::parse::<IpAddr>) else {
                            continue;
                        };
                        // Global unicast only: not link-local, not ULA.
                        let first = v6.segments()[0];
                        if first & 0xe000 == 0x2000 && !md.external_ips.contains(&v6.to_string()) {
                            md.public_ipv6.push(v6.to_string());
                            md.external_ips.push(v6.to_string());
                        }
                    }
                }
                md.interfaces = settings.interfaces.clone();
                md.nameservers = settings.nameservers.clone();
                md.search_domains = settings.search_domains.clone();
                md.network_config = Some(NetworkConfig { format: settings.format(), body: network });
            }
        }

        md.user_data = fetcher.get_optional(USER_DATA, &[])?.filter(|u| !u.is_empty()).map(decode_user_data);
        Ok(md)
    }
}

/// User data as served: base64 when the whole body is padded base64 (line
/// breaks allowed) and decodes, else the bytes as they are (a plain config
/// has `:` and spaces, which base64 never does).
fn decode_user_data(body: Vec<u8>) -> Vec<u8> {
    base64::decode_padded(&body).unwrap_or(body)
}

bronze_plugin_sdk::export_metadata_provider!(Hetzner);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_data_plain_or_base64() {
        assert_eq!(decode_user_data(b"aGVsbG86IHdvcmxkCg==\n".to_vec()), b"hello: world\n");
        assert_eq!(decode_user_data(b"aGVs\nbG8=".to_vec()), b"hello");
        assert_eq!(decode_user_data(b"version: v1alpha1\n".to_vec()), b"version: v1alpha1\n");
        assert_eq!(decode_user_data(b"#!/bin/sh\n".to_vec()), b"#!/bin/sh\n");
    }
}
