//! DigitalOcean droplets: the whole metadata document at
//! `/metadata/v1.json` and the user data at `/metadata/v1/user-data`, no
//! headers. Detected by DMI `sys_vendor = DigitalOcean` (ds-identify).
//!
//! Mapping (as Talos's `platform/digitalocean` does): public interfaces get
//! their IPv4 address with a default route (metric 1024) and a host route
//! to the metadata service (metric 512) through the gateway, the anchor
//! IPv4 (for reserved IPs) without a route, and the IPv6 address with a
//! default route (metric 2048); private interfaces get their address only.
//! External IPs are the public addresses. Provider id `digitalocean://<id>`.

use bronze_plugin_sdk::{FetchError, InstanceMetadata, MetadataProvider, PlatformInterface, PlatformRoute, config};
use bronze_provider_common::{Fetcher, dmi, links};
use serde::Deserialize;
use std::net::{Ipv4Addr, Ipv6Addr};

const DEFAULT_ENDPOINT: &str = "http://169.254.169.254";
const DOCUMENT: &str = "/metadata/v1.json";
const USER_DATA: &str = "/metadata/v1/user-data";

/// Route metrics Talos uses (network.DefaultRouteMetric and its IPv6 twin).
const METRIC_V4: u32 = 1024;
const METRIC_V6: u32 = 2048;
const METRIC_METADATA: u32 = 512;

#[derive(Debug, Deserialize)]
struct Metadata {
    droplet_id: u64,
    #[serde(default)]
    hostname: Option<String>,
    #[serde(default)]
    region: Option<String>,
    #[serde(default)]
    interfaces: Interfaces,
    #[serde(default)]
    dns: Dns,
    #[serde(default)]
    tags: Vec<String>,
    #[serde(default)]
    floating_ip: Option<Floating>,
    #[serde(default)]
    reserved_ip: Option<Floating>,
}

#[derive(Debug, Default, Deserialize)]
struct Interfaces {
    #[serde(default)]
    public: Vec<Interface>,
    #[serde(default)]
    private: Vec<Interface>,
}

#[derive(Debug, Deserialize)]
struct Interface {
    #[serde(default)]
    mac: Option<String>,
    #[serde(default)]
    ipv4: Option<Ipv4>,
    #[serde(default)]
    anchor_ipv4: Option<Ipv4>,
    #[serde(default)]
    ipv6: Option<Ipv6>,
}

#[derive(Debug, Deserialize)]
struct Ipv4 {
    ip_address: String,
    netmask: String,
    #[serde(default)]
    gateway: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Ipv6 {
    ip_address: String,
    cidr: u8,
    #[serde(default)]
    gateway: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct Dns {
    #[serde(default)]
    nameservers: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct Floating {
    #[serde(default)]
    ipv4: Option<FloatingIpv4>,
}

#[derive(Debug, Deserialize)]
struct FloatingIpv4 {
    #[serde(default)]
    active: bool,
    #[serde(default)]
    ip_address: Option<String>,
}

struct DigitalOcean;

impl MetadataProvider for DigitalOcean {
    fn detect() -> bool {
        dmi::read().sys_vendor == "DigitalOcean"
    }

    fn fetch() -> Result<InstanceMetadata, FetchError> {
        let fetcher = Fetcher::new(&config::get_or("endpoint", DEFAULT_ENDPOINT));
        let document: Metadata = fetcher.get_json(DOCUMENT, &[])?;
        let mut metadata = parse(document)?;
        metadata.user_data = fetcher.get_optional(USER_DATA, &[])?.filter(|d| !d.is_empty());
        Ok(metadata)
    }
}

fn invalid(what: &str, value: &str) -> FetchError {
    FetchError::Invalid(format!("{DOCUMENT}: {what} {value:?} is not valid"))
}

/// An IPv4 address and dotted netmask as CIDR.
fn cidr4(ip: &Ipv4) -> Result<(Ipv4Addr, String), FetchError> {
    let addr: Ipv4Addr = ip.ip_address.trim().parse().map_err(|_| invalid("ip_address", &ip.ip_address))?;
    let mask: Ipv4Addr = ip.netmask.trim().parse().map_err(|_| invalid("netmask", &ip.netmask))?;
    let bits = u32::from(mask);
    if bits.leading_ones() + bits.trailing_zeros() != 32 {
        return Err(invalid("netmask", &ip.netmask));
    }
    Ok((addr, format!("{addr}/{}", bits.leading_ones())))
}

fn gateway4(ip: &Ipv4) -> Result<Option<Ipv4Addr>, FetchError> {
    match ip.gateway.as_deref().map(str::trim).filter(|g| !g.is_empty()) {
        None => Ok(None),
        Some(g) => g.parse().map(Some).map_err(|_| invalid("gateway", g)),
    }
}

fn parse(document: Metadata) -> Result<InstanceMetadata, FetchError> {
    let mut metadata = InstanceMetadata::new("digitalocean".to_string());
    let id = document.droplet_id.to_string();
    metadata.provider_id = Some(format!("digitalocean://{id}"));
    metadata.instance_id = Some(id);
    metadata.hostname = document.hostname.filter(|h| !h.is_empty());
    metadata.region = document.region.filter(|r| !r.is_empty());
    metadata.nameservers = document.dns.nameservers;
    // DigitalOcean tags are plain labels: keys with empty values.
    metadata.tags = document.tags.into_iter().map(|t| (t, String::new())).collect();

    for (kind, list) in [("public", &document.interfaces.public), ("private", &document.interfaces.private)] {
        for iface in list {
            let mac = iface.mac.as_deref().map(|m| m.trim().to_ascii_lowercase()).filter(|m| !m.is_empty());
            let mut out = PlatformInterface::with_mac(String::new());
            out.mac = mac.clone();
            out.name = mac.as_deref().and_then(links::name_of);
            if let Some(ipv4) = &iface.ipv4 {
                let (addr, cidr) = cidr4(ipv4)?;
                out.addresses.push(cidr);
                if kind == "public" {
                    metadata.public_ipv4.push(addr.to_string());
                    metadata.external_ips.push(addr.to_string());
                    if let Some(gw) = gateway4(ipv4)? {
                        let mut default = PlatformRoute::default_via(gw.to_string());
                        default.metric = Some(METRIC_V4);
                        out.routes.push(default);
                        out.routes.push(PlatformRoute {
                            to: "169.254.169.254/32".into(),
                            gateway: Some(gw.to_string()),
                            on_link: false,
                            metric: Some(METRIC_METADATA),
                        });
                    }
                } else {
                    metadata.private_ipv4.push(addr.to_string());
                }
            }
            if let Some(anchor) = &iface.anchor_ipv4 {
                let (addr, cidr) = cidr4(anchor)?;
                out.addresses.push(cidr);
                metadata.attributes.push(("anchor-ipv4".into(), addr.to_string()));
            }
            if let Some(ipv6) = &iface.ipv6 {
                let addr: Ipv6Addr =
                    ipv6.ip_address.trim().parse().map_err(|_| invalid("ipv6 ip_address", &ipv6.ip_address))?;
                if ipv6.cidr > 128 {
                    return Err(invalid("ipv6 cidr", &ipv6.cidr.to_string()));
                }
                out.addresses.push(format!("{addr}/{}", ipv6.cidr));
                if kind == "public" {
                    metadata.public_ipv6.push(addr.to_string());
                    metadata.external_ips.push(addr.to_string());
                }
                if let Some(gw) = ipv6.gateway.as_deref().map(str::trim).filter(|g| !g.is_empty()) {
                    let gw: Ipv6Addr = gw.parse().map_err(|_| invalid("ipv6 gateway", gw))?;
                    let mut default = PlatformRoute::default_via(gw.to_string());
                    default.metric = Some(METRIC_V6);
                    out.routes.push(default);
                }
            }
            metadata.interfaces.push(out);
        }
    }
    for floating in [&document.floating_ip, &document.reserved_ip].into_iter().flatten() {
        if let Some(ip) = floating.ipv4.as_ref().filter(|f| f.active).and_then(|f| f.ip_address.as_deref()) {
            let addr: Ipv4Addr = ip.trim().parse().map_err(|_| invalid("floating ip_address", ip))?;
            if !metadata.external_ips.contains(&addr.to_string()) {
                metadata.external_ips.push(addr.to_string());
            }
        }
    }
    Ok(metadata)
}

bronze_plugin_sdk::export_metadata_provider!(DigitalOcean);
