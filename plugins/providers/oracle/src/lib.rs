//! Oracle Cloud Infrastructure: instance metadata service v2 at
//! `/opc/v2/instance/` (JSON object) and `/opc/v2/vnics/` (JSON array),
//! user data at `/opc/v2/instance/metadata/user_data` (base64), with
//! `Authorization: Bearer Oracle` on every request. Detected by the DMI
//! chassis asset tag `OracleCloud.com` (ds-identify).
//!
//! Mapping (as Talos's `platform/oracle` does): the zone is the
//! availability domain without its tenancy prefix (`EMIr:PHX-AD-1` →
//! `PHX-AD-1`); IPv4 comes from DHCP (nothing static); a VNIC with IPv6
//! gets a DHCPv6 operator (route metric 1024) and a default route through
//! its IPv6 virtual router (metric 2048); 169.254.169.254 is the resolver
//! and the time server. Provider id `oci://<instance OCID>`.

use bronze_plugin_sdk::{
    DhcpOperator, FetchError, InstanceMetadata, IpFamily, MetadataProvider, PlatformInterface, PlatformRoute, config,
};
use bronze_provider_common::{Fetcher, dmi, links};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

const DEFAULT_ENDPOINT: &str = "http://169.254.169.254";
const INSTANCE: &str = "/opc/v2/instance/";
const VNICS: &str = "/opc/v2/vnics/";
const USER_DATA: &str = "/opc/v2/instance/metadata/user_data";
/// The metadata address doubles as resolver and NTP server on OCI.
const SERVICE_ADDRESS: &str = "169.254.169.254";
const DHCP6_METRIC: u32 = 1024;
const ROUTE_METRIC_V6: u32 = 2048;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Instance {
    id: String,
    #[serde(default)]
    hostname: Option<String>,
    #[serde(default)]
    display_name: Option<String>,
    #[serde(default)]
    region: Option<String>,
    #[serde(default)]
    canonical_region_name: Option<String>,
    #[serde(default)]
    availability_domain: Option<String>,
    #[serde(default)]
    fault_domain: Option<String>,
    #[serde(default)]
    compartment_id: Option<String>,
    #[serde(default)]
    shape: Option<String>,
    #[serde(default)]
    freeform_tags: BTreeMap<String, String>,
    #[serde(default)]
    defined_tags: BTreeMap<String, BTreeMap<String, serde_json::Value>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Vnic {
    #[serde(default)]
    mac_addr: Option<String>,
    #[serde(default)]
    private_ip: Option<String>,
    #[serde(default)]
    ipv6_virtual_router_ip: Option<String>,
    #[serde(default)]
    ipv6_addresses: Vec<String>,
}

struct Oracle;

impl MetadataProvider for Oracle {
    fn detect() -> bool {
        dmi::read().chassis_asset_tag == "OracleCloud.com"
    }

    fn fetch() -> Result<InstanceMetadata, FetchError> {
        let fetcher =
            Fetcher::new(&config::get_or("endpoint", DEFAULT_ENDPOINT)).header("Authorization", "Bearer Oracle");
        let instance: Instance = fetcher.get_json(INSTANCE, &[])?;
        let vnics: Vec<Vnic> = fetcher.get_json(VNICS, &[])?;
        let mut metadata = parse(instance, vnics)?;
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

fn parse(instance: Instance, vnics: Vec<Vnic>) -> Result<InstanceMetadata, FetchError> {
    let mut metadata = InstanceMetadata::new("oracle".to_string());
    if instance.id.trim().is_empty() {
        return Err(FetchError::Invalid(format!("{INSTANCE}: id is empty")));
    }
    metadata.provider_id = Some(format!("oci://{}", instance.id));
    metadata.instance_id = Some(instance.id);
    metadata.hostname = non_empty(instance.hostname);
    metadata.region = non_empty(instance.region);
    metadata.zone = non_empty(instance.availability_domain.clone())
        .map(|ad| ad.rsplit_once(':').map_or(ad.clone(), |(_, zone)| zone.to_string()));
    metadata.instance_type = non_empty(instance.shape);
    metadata.nameservers = vec![SERVICE_ADDRESS.to_string()];
    metadata.time_servers = vec![SERVICE_ADDRESS.to_string()];
    for (key, value) in instance.freeform_tags {
        metadata.tags.push((key, value));
    }
    for (namespace, tags) in instance.defined_tags {
        for (key, value) in tags {
            let value = match value {
                serde_json::Value::String(s) => s,
                other => other.to_string(),
            };
            metadata.tags.push((format!("{namespace}.{key}"), value));
        }
    }
    for (name, value) in [
        ("display-name", instance.display_name),
        ("canonical-region", instance.canonical_region_name),
        ("availability-domain", instance.availability_domain),
        ("fault-domain", instance.fault_domain),
        ("compartment-id", instance.compartment_id),
    ] {
        if let Some(value) = non_empty(value) {
            metadata.attributes.push((name.to_string(), value));
        }
    }

    for vnic in vnics {
        let mut out = PlatformInterface::with_mac(String::new());
        out.mac = non_empty(vnic.mac_addr).map(|m| m.to_ascii_lowercase());
        out.name = out.mac.as_deref().and_then(links::name_of);
        if let Some(ip) = non_empty(vnic.private_ip) {
            let ip: Ipv4Addr =
                ip.parse().map_err(|_| FetchError::Invalid(format!("{VNICS}: privateIp {ip:?} is not IPv4")))?;
            metadata.private_ipv4.push(ip.to_string());
        }
        if let Some(router) = non_empty(vnic.ipv6_virtual_router_ip) {
            let router: Ipv6Addr = router
                .parse()
                .map_err(|_| FetchError::Invalid(format!("{VNICS}: ipv6VirtualRouterIp {router:?} is not IPv6")))?;
            out.dhcp.push(DhcpOperator {
                family: IpFamily::Ipv6,
                route_metric: Some(DHCP6_METRIC),
                skip_hostname: false,
            });
            let mut default = PlatformRoute::default_via(router.to_string());
            default.metric = Some(ROUTE_METRIC_V6);
            out.routes.push(default);
        }
        for addr in vnic.ipv6_addresses {
            match addr.trim().parse::<IpAddr>() {
                Ok(IpAddr::V6(a)) => metadata.public_ipv6.push(a.to_string()),
                _ => return Err(FetchError::Invalid(format!("{VNICS}: ipv6Addresses has {addr:?}, not IPv6"))),
            }
        }
        metadata.interfaces.push(out);
    }
    Ok(metadata)
}

bronze_plugin_sdk::export_metadata_provider!(Oracle);
