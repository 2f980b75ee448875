//! UpCloud: the whole metadata document at `/metadata/v1.json` and the user
//! data at `/metadata/v1/user_data`; no headers. Detected by DMI
//! `sys_vendor = UpCloud` (ds-identify).
//!
//! Mapping: an address with `dhcp: true` makes a DHCP operator for its
//! family on the interface (no static address); a floating IPv4 is a static
//! `/32`; any other address is static with the prefix of its `network`,
//! and its `gateway` is the default route. Resolvers: the document's `dns`,
//! then each address's, without repeats. External IPs and public IPv4/IPv6:
//! the non-floating addresses of `public` interfaces (floating ones are
//! attributes `floating-ip`); `utility` and `private` IPv4 are private.
//! Provider id `upcloud://<instance_id>`.

use bronze_plugin_sdk::{
    DhcpOperator, FetchError, InstanceMetadata, IpFamily, MetadataProvider, PlatformInterface, PlatformRoute, config,
};
use bronze_provider_common::cloudinit::{host_links, ip, normalize_mac};
use bronze_provider_common::{Fetcher, dmi, json};
use serde::Deserialize;

const DEFAULT_ENDPOINT: &str = "http://169.254.169.254";
const DOCUMENT: &str = "/metadata/v1.json";
const USER_DATA: &str = "/metadata/v1/user_data";

#[derive(Debug, Deserialize)]
struct Metadata {
    instance_id: String,
    #[serde(default)]
    hostname: Option<String>,
    #[serde(default)]
    region: Option<String>,
    #[serde(default)]
    network: Network,
    #[serde(default)]
    tags: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
struct Network {
    #[serde(default)]
    interfaces: Vec<Interface>,
    #[serde(default)]
    dns: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
struct Interface {
    #[serde(default)]
    index: u32,
    mac: String,
    #[serde(default, rename = "type")]
    kind: String,
    #[serde(default)]
    ip_addresses: Vec<Address>,
}

#[derive(Debug, Deserialize)]
struct Address {
    address: String,
    #[serde(default)]
    dhcp: bool,
    #[serde(default)]
    dns: Option<Vec<String>>,
    #[serde(default)]
    family: String,
    #[serde(default)]
    floating: bool,
    #[serde(default)]
    gateway: String,
    #[serde(default)]
    network: String,
}

fn invalid(e: String) -> FetchError {
    FetchError::Invalid(format!("{DOCUMENT}: {e}"))
}

struct UpCloud;

impl MetadataProvider for UpCloud {
    fn detect() -> bool {
        dmi::read().sys_vendor == "UpCloud"
    }

    fn fetch() -> Result<InstanceMetadata, FetchError> {
        let endpoint = config::get("endpoint").unwrap_or_else(|| DEFAULT_ENDPOINT.to_string());
        let fetcher = Fetcher::new(&endpoint);
        let doc: Metadata = json(DOCUMENT, &fetcher.get(DOCUMENT, &[])?)?;
        if doc.instance_id.trim().is_empty() {
            return Err(invalid("empty instance_id".into()));
        }
        let mut md = InstanceMetadata::new("upcloud");
        md.provider_id = Some(format!("upcloud://{}", doc.instance_id));
        md.instance_id = Some(doc.instance_id);
        md.hostname = doc.hostname.filter(|h| !h.is_empty());
        md.region = doc.region.filter(|r| !r.is_empty());
        md.tags = doc.tags.into_iter().map(|t| (t, String::new())).collect();

        let mut dns: Vec<String> = Vec::new();
        let mut add_dns = |list: &[String], at: &str| -> Result<(), FetchError> {
            for server in list {
                let addr = ip(at, server).map_err(invalid)?.to_string();
                if !dns.contains(&addr) {
                    dns.push(addr);
                }
            }
            Ok(())
        };
        add_dns(doc.network.dns.as_deref().unwrap_or_default(), "network.dns")?;
        let mut nics = doc.network.interfaces;
        if nics.len() > 64 {
            return Err(invalid(format!("{} interfaces", nics.len())));
        }
        nics.sort_by_key(|n| n.index);
        let link_of = host_links();
        for (i, nic) in nics.iter().enumerate() {
            let at = format!("network.interfaces[{i}]");
            let mac = normalize_mac(&format!("{at}.mac"), &nic.mac).map_err(invalid)?;
            let mut iface = PlatformInterface::with_mac(mac.clone());
            iface.name = link_of(&mac);
            let public = nic.kind == "public";
            for (k, a) in nic.ip_addresses.iter().enumerate() {
                let a_at = format!("{at}.ip_addresses[{k}]");
                let addr = ip(&format!("{a_at}.address"), &a.address).map_err(invalid)?;
                let family = match a.family.as_str() {
                    "IPv4" if addr.is_ipv4() => IpFamily::Ipv4,
                    "IPv6" if addr.is_ipv6() => IpFamily::Ipv6,
                    other => return Err(invalid(format!("{a_at}: family {other:?} does not fit {addr}"))),
                };
                add_dns(a.dns.as_deref().unwrap_or_default(), &format!("{a_at}.dns"))?;
                if a.floating {
                    let host = if addr.is_ipv4() { 32 } else { 128 };
                    iface.addresses.push(format!("{addr}/{host}"));
                    md.attributes.push(("floating-ip".into(), addr.to_string()));
                    continue;
                }
                if public {
                    md.external_ips.push(addr.to_string());
                    if addr.is_ipv4() { &mut md.public_ipv4 } else { &mut md.public_ipv6 }.push(addr.to_string());
                } else if addr.is_ipv4() {
                    md.private_ipv4.push(addr.to_string());
                }
                if a.dhcp {
                    if !iface.dhcp.iter().any(|d| d.family == family) {
                        iface.dhcp.push(DhcpOperator { family, route_metric: None, skip_hostname: false });
                    }
                    continue;
                }
                let prefix = a
                    .network
                    .split_once('/')
                    .and_then(|(_, p)| p.parse::<u8>().ok())
                    .filter(|p| *p <= if addr.is_ipv4() { 32 } else { 128 })
                    .ok_or_else(|| invalid(format!("{a_at}.network: {:?} is not a prefix", a.network)))?;
                iface.addresses.push(format!("{addr}/{prefix}"));
                if !a.gateway.is_empty() {
                    let gw = ip(&format!("{a_at}.gateway"), &a.gateway).map_err(invalid)?;
                    if gw.is_ipv4() != addr.is_ipv4() {
                        return Err(invalid(format!("{a_at}.gateway: {gw} is not of the address's family")));
                    }
                    iface.routes.push(PlatformRoute::default_via(gw.to_string()));
                }
            }
            md.interfaces.push(iface);
        }
        md.nameservers = dns;
        md.user_data = fetcher.get_optional(USER_DATA, &[])?.filter(|u| !u.is_empty());
        Ok(md)
    }
}

bronze_plugin_sdk::export_metadata_provider!(UpCloud);
