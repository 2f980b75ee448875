//! Vultr: the whole metadata document at `/v1.json`, the public IPv4 at
//! `/latest/meta-data/public-ipv4` and the user data at `/latest/user-data`;
//! no headers. Detected by DMI `sys_vendor = Vultr` (ds-identify).
//!
//! Mapping (as Talos's `platform/vultr` does): a public interface gets its
//! IPv4 address (and `additional` ones) with a default route through its
//! gateway; its IPv6 address is reported as public IPv6 and external IP but
//! not set statically (Vultr hands IPv6 out by router advertisement, and the
//! document has no IPv6 gateway). A private (VPC) interface gets its address
//! and MTU 1450, the VPC's MTU. Instance id and provider id use
//! `instance-v2-id` (`vultr://<id>`); the v1 `instanceid` is an attribute.

use bronze_plugin_sdk::{FetchError, InstanceMetadata, MetadataProvider, PlatformInterface, PlatformRoute, config};
use bronze_provider_common::cloudinit::{cidr_host, host_links, ip, normalize_mac};
use bronze_provider_common::{Fetcher, dmi, json};
use serde::Deserialize;

const DEFAULT_ENDPOINT: &str = "http://169.254.169.254";
const DOCUMENT: &str = "/v1.json";
const PUBLIC_IPV4: &str = "/latest/meta-data/public-ipv4";
const USER_DATA: &str = "/latest/user-data";
/// MTU of a Vultr VPC network.
const VPC_MTU: u32 = 1450;

#[derive(Debug, Deserialize)]
struct Metadata {
    #[serde(default)]
    hostname: Option<String>,
    #[serde(default)]
    instanceid: Option<String>,
    #[serde(default, rename = "instance-v2-id")]
    instance_v2_id: Option<String>,
    #[serde(default)]
    region: Option<Region>,
    #[serde(default)]
    interfaces: Vec<Interface>,
    #[serde(default)]
    tags: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct Region {
    #[serde(default)]
    regioncode: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Interface {
    mac: String,
    #[serde(default, rename = "network-type")]
    network_type: String,
    #[serde(default)]
    ipv4: Option<Ipv4>,
    #[serde(default)]
    ipv6: Option<Ipv6>,
}

#[derive(Debug, Deserialize)]
struct Ipv4 {
    #[serde(default)]
    address: String,
    #[serde(default)]
    netmask: String,
    #[serde(default)]
    gateway: String,
    #[serde(default)]
    additional: Vec<Additional>,
}

#[derive(Debug, Deserialize)]
struct Ipv6 {
    #[serde(default)]
    address: String,
    #[serde(default)]
    additional: Vec<Additional>,
}

#[derive(Debug, Deserialize)]
struct Additional {
    #[serde(default)]
    address: String,
    #[serde(default)]
    netmask: String,
    #[serde(default)]
    prefix: String,
}

fn invalid(e: String) -> FetchError {
    FetchError::Invalid(format!("{DOCUMENT}: {e}"))
}

struct Vultr;

impl MetadataProvider for Vultr {
    fn detect() -> bool {
        dmi::read().sys_vendor == "Vultr"
    }

    fn fetch() -> Result<InstanceMetadata, FetchError> {
        let endpoint = config::get("endpoint").unwrap_or_else(|| DEFAULT_ENDPOINT.to_string());
        let fetcher = Fetcher::new(&endpoint);
        let doc: Metadata = json(DOCUMENT, &fetcher.get(DOCUMENT, &[])?)?;
        let mut md = InstanceMetadata::new("vultr");
        md.hostname = doc.hostname.filter(|h| !h.is_empty());
        let v1_id = doc.instanceid.filter(|i| !i.is_empty());
        md.instance_id = doc.instance_v2_id.filter(|i| !i.is_empty()).or(v1_id.clone());
        let id = md.instance_id.clone().ok_or_else(|| invalid("no instance-v2-id or instanceid".into()))?;
        md.provider_id = Some(format!("vultr://{id}"));
        if let Some(v1) = v1_id {
            md.attributes.push(("instanceid".into(), v1));
        }
        md.region = doc.region.and_then(|r| r.regioncode).filter(|r| !r.is_empty());
        md.tags = doc.tags.into_iter().map(|t| (t, String::new())).collect();
        if doc.interfaces.len() > 64 {
            return Err(invalid(format!("{} interfaces", doc.interfaces.len())));
        }

        let link_of = host_links();
        for (i, nic) in doc.interfaces.iter().enumerate() {
            let at = format!("interfaces[{i}]");
            let mac = normalize_mac(&format!("{at}.mac"), &nic.mac).map_err(invalid)?;
            let mut iface = PlatformInterface::with_mac(mac.clone());
            iface.name = link_of(&mac);
            let public = nic.network_type == "public";
            if !public {
                iface.mtu = Some(VPC_MTU);
            }
            if let Some(v4) = &nic.ipv4
                && !v4.address.is_empty()
            {
                let a_at = format!("{at}.ipv4");
                iface.addresses.push(cidr_host(&a_at, &v4.address, &v4.netmask).map_err(invalid)?);
                let addr = ip(&a_at, &v4.address).map_err(invalid)?.to_string();
                if public {
                    md.external_ips.push(addr.clone());
                    md.public_ipv4.push(addr);
                } else {
                    md.private_ipv4.push(addr);
                }
                if !v4.gateway.is_empty() {
                    let gw = ip(&format!("{a_at}.gateway"), &v4.gateway).map_err(invalid)?;
                    iface.routes.push(PlatformRoute::default_via(gw.to_string()));
                }
                for (k, extra) in v4.additional.iter().enumerate() {
                    let e_at = format!("{a_at}.additional[{k}]");
                    iface.addresses.push(cidr_host(&e_at, &extra.address, &extra.netmask).map_err(invalid)?);
                }
            }
            if let Some(v6) = &nic.ipv6 {
                if !v6.address.is_empty() {
                    let addr = ip(&format!("{at}.ipv6.address"), &v6.address).map_err(invalid)?.to_string();
                    if public {
                        md.external_ips.push(addr.clone());
                        md.public_ipv6.push(addr);
                    }
                }
                for (k, extra) in v6.additional.iter().enumerate() {
                    let e_at = format!("{at}.ipv6.additional[{k}]");
                    iface.addresses.push(cidr_host(&e_at, &extra.address, &extra.prefix).map_err(invalid)?);
                }
            }
            md.interfaces.push(iface);
        }

        if let Some(public) = fetcher.get_text_optional(PUBLIC_IPV4, &[])? {
            let addr = ip(PUBLIC_IPV4, &public).map_err(FetchError::Invalid)?.to_string();
            if !md.public_ipv4.contains(&addr) {
                md.public_ipv4.push(addr.clone());
            }
            if !md.external_ips.contains(&addr) {
                md.external_ips.insert(0, addr);
            }
        }
        md.user_data = fetcher.get_optional(USER_DATA, &[])?.filter(|u| !u.is_empty());
        Ok(md)
    }
}

bronze_plugin_sdk::export_metadata_provider!(Vultr);
