//! Akamai (Linode): `PUT /v1/token` with `Metadata-Token-Expiry-Seconds`
//! returns a token; `GET /v1/instance` and `/v1/network` with
//! `Metadata-Token` and `Accept: application/json`; user data at
//! `/v1/user-data` (base64). Detected by DMI `sys_vendor` `Linode` or
//! `Akamai` (ds-identify).
//!
//! Mapping (as Talos's `platform/akamai` does): host name from the label,
//! region, type, id, tags (keys with empty values); the public and private
//! IPv4 addresses and the IPv6 ranges as static addresses on `eth0` (the
//! service names no MAC; Linode's first NIC is `eth0`), the public IPv4s
//! and ranges as external IPs; the SLAAC address as public IPv6 (the
//! kernel configures it). Provider id `linode://<id>`.

use bronze_plugin_sdk::http::Method;
use bronze_plugin_sdk::{FetchError, InstanceMetadata, MetadataProvider, PlatformInterface, config};
use bronze_provider_common::{Fetcher, dmi, status_error};
use serde::Deserialize;
use std::net::IpAddr;

const DEFAULT_ENDPOINT: &str = "http://169.254.169.254";
const TOKEN: &str = "/v1/token";
const INSTANCE: &str = "/v1/instance";
const NETWORK: &str = "/v1/network";
const USER_DATA: &str = "/v1/user-data";
/// Seconds a token lives; the fetch needs it for a few requests only.
const TOKEN_TTL: &str = "300";
/// The largest token we accept (Linode's are 64 hex digits).
const MAX_TOKEN: usize = 512;

#[derive(Debug, Deserialize)]
struct Instance {
    id: u64,
    #[serde(default)]
    label: Option<String>,
    #[serde(default)]
    region: Option<String>,
    #[serde(default, rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    host_uuid: Option<String>,
    #[serde(default)]
    tags: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
struct Network {
    #[serde(default)]
    ipv4: Ipv4,
    #[serde(default)]
    ipv6: Ipv6,
}

#[derive(Debug, Default, Deserialize)]
struct Ipv4 {
    #[serde(default)]
    public: Vec<String>,
    #[serde(default)]
    private: Vec<String>,
    #[serde(default)]
    shared: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
struct Ipv6 {
    #[serde(default)]
    slaac: Option<String>,
    #[serde(default)]
    ranges: Vec<String>,
    #[serde(default)]
    link_local: Option<String>,
    #[serde(default)]
    shared_ranges: Vec<String>,
}

struct Akamai;

impl MetadataProvider for Akamai {
    fn detect() -> bool {
        let vendor = dmi::read().sys_vendor;
        vendor == "Linode" || vendor == "Akamai"
    }

    fn fetch() -> Result<InstanceMetadata, FetchError> {
        let base = Fetcher::new(&config::get_or("endpoint", DEFAULT_ENDPOINT));
        let response = base.send(Method::Put, TOKEN, &[("Metadata-Token-Expiry-Seconds", TOKEN_TTL)], None)?;
        if response.status != 200 {
            return Err(status_error("PUT", TOKEN, response.status));
        }
        let token = bronze_provider_common::text(TOKEN, response.body)?;
        if token.is_empty() || token.len() > MAX_TOKEN || !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(FetchError::Invalid(format!("PUT {TOKEN}: the token is empty, too long or not printable")));
        }
        let fetcher = base.header("Metadata-Token", &token).header("Accept", "application/json");
        let instance: Instance = fetcher.get_json(INSTANCE, &[])?;
        let network: Network = fetcher.get_json(NETWORK, &[])?;
        let mut metadata = parse(instance, network)?;
        if let Some(encoded) = fetcher.get_optional(USER_DATA, &[])? {
            let decoded = bronze_provider_common::base64::decode(&encoded)
                .map_err(|at| FetchError::Invalid(format!("{USER_DATA}: not base64 (byte {at})")))?;
            metadata.user_data = Some(decoded).filter(|d| !d.is_empty());
        }
        Ok(metadata)
    }
}

fn non_empty(s: Option<String>) -> Option<String> {
    s.map(|s| s.trim().to_string()).filter(|s| !s.is_empty())
}

/// `addr/len` checked and printed back; `v6` says which family it must be.
fn cidr(field: &str, text: &str, v6: bool) -> Result<(IpAddr, String), FetchError> {
    let bad =
        || FetchError::Invalid(format!("{NETWORK}: {field} has {text:?}, not an IPv{} CIDR", if v6 { 6 } else { 4 }));
    let (addr, len) = text.trim().split_once('/').ok_or_else(bad)?;
    let addr: IpAddr = addr.parse().map_err(|_| bad())?;
    let len: u8 = len.parse().map_err(|_| bad())?;
    if addr.is_ipv6() != v6 || len > if v6 { 128 } else { 32 } {
        return Err(bad());
    }
    Ok((addr, format!("{addr}/{len}")))
}

fn parse(instance: Instance, network: Network) -> Result<InstanceMetadata, FetchError> {
    let mut metadata = InstanceMetadata::new("akamai".to_string());
    let id = instance.id.to_string();
    metadata.provider_id = Some(format!("linode://{id}"));
    metadata.instance_id = Some(id);
    metadata.hostname = non_empty(instance.label);
    metadata.region = non_empty(instance.region);
    metadata.instance_type = non_empty(instance.kind);
    metadata.tags = instance.tags.into_iter().map(|t| (t, String::new())).collect();
    if let Some(uuid) = non_empty(instance.host_uuid) {
        metadata.attributes.push(("host-uuid".into(), uuid));
    }

    let mut eth0 = PlatformInterface::with_mac(String::new());
    eth0.mac = None;
    eth0.name = Some("eth0".into());
    for text in &network.ipv4.public {
        let (addr, net) = cidr("ipv4.public", text, false)?;
        eth0.addresses.push(net);
        metadata.public_ipv4.push(addr.to_string());
        metadata.external_ips.push(addr.to_string());
    }
    for text in &network.ipv4.private {
        let (addr, net) = cidr("ipv4.private", text, false)?;
        eth0.addresses.push(net);
        metadata.private_ipv4.push(addr.to_string());
    }
    for (i, text) in network.ipv4.shared.iter().enumerate() {
        let (_, net) = cidr("ipv4.shared", text, false)?;
        metadata.attributes.push((format!("shared-ipv4-{i}"), net));
    }
    for text in &network.ipv6.ranges {
        let (addr, net) = cidr("ipv6.ranges", text, true)?;
        eth0.addresses.push(net);
        metadata.external_ips.push(addr.to_string());
    }
    for (i, text) in network.ipv6.shared_ranges.iter().enumerate() {
        let (_, net) = cidr("ipv6.shared_ranges", text, true)?;
        metadata.attributes.push((format!("shared-ipv6-range-{i}"), net));
    }
    if let Some(text) = non_empty(network.ipv6.slaac) {
        let (addr, net) = cidr("ipv6.slaac", &text, true)?;
        metadata.public_ipv6.push(addr.to_string());
        metadata.attributes.push(("ipv6-slaac".into(), net));
    }
    if let Some(text) = non_empty(network.ipv6.link_local) {
        let (_, net) = cidr("ipv6.link_local", &text, true)?;
        metadata.attributes.push(("ipv6-link-local".into(), net));
    }
    if !eth0.addresses.is_empty() {
        metadata.interfaces.push(eth0);
    }
    Ok(metadata)
}

bronze_plugin_sdk::export_metadata_provider!(Akamai);
