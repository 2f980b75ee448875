//! Exoscale: plain-text values at `/1.0/meta-data/<key>` and user data at
//! `/1.0/user-data`, no headers. Detected by DMI `sys_vendor` or
//! `product_name` `Exoscale` (ds-identify).
//!
//! Mapping (as Talos's `platform/exoscale` does): host name from
//! `local-hostname`, instance id, type from `service-offering`, the public
//! IPv4 as external IP; provider id `exoscale://<instance-id>`. The network
//! itself comes from DHCP, so no interfaces are reported. Beyond Talos: the
//! zone (`availability-zone`, which is also the region on Exoscale) and the
//! private IPv4 (`local-ipv4`).

use bronze_plugin_sdk::{FetchError, InstanceMetadata, MetadataProvider, config};
use bronze_provider_common::{Fetcher, dmi};
use std::net::Ipv4Addr;

const DEFAULT_ENDPOINT: &str = "http://169.254.169.254";
const META: &str = "/1.0/meta-data/";
const USER_DATA: &str = "/1.0/user-data";

struct Exoscale;

impl MetadataProvider for Exoscale {
    fn detect() -> bool {
        let dmi = dmi::read();
        dmi.sys_vendor == "Exoscale" || dmi.product_name == "Exoscale"
    }

    fn fetch() -> Result<InstanceMetadata, FetchError> {
        let fetcher = Fetcher::new(&config::get_or("endpoint", DEFAULT_ENDPOINT));
        let value = |key: &str| fetcher.get_text_optional(&format!("{META}{key}"), &[]);
        let mut metadata = InstanceMetadata::new("exoscale".to_string());
        let id = value("instance-id")?
            .ok_or_else(|| FetchError::Invalid(format!("GET {META}instance-id: 404, but every instance has one")))?;
        metadata.provider_id = Some(format!("exoscale://{id}"));
        metadata.instance_id = Some(id);
        metadata.hostname = value("local-hostname")?;
        metadata.instance_type = value("service-offering")?;
        let zone = value("availability-zone")?;
        metadata.region = zone.clone();
        metadata.zone = zone;
        if let Some(ip) = value("public-ipv4")? {
            let ip = ipv4("public-ipv4", &ip)?;
            metadata.public_ipv4.push(ip.clone());
            metadata.external_ips.push(ip);
        }
        if let Some(ip) = value("local-ipv4")? {
            metadata.private_ipv4.push(ipv4("local-ipv4", &ip)?);
        }
        for key in ["public-hostname", "vm-id", "cloud-identifier"] {
            if let Some(v) = value(key)? {
                metadata.attributes.push((key.to_string(), v));
            }
        }
        metadata.user_data = fetcher.get_optional(USER_DATA, &[])?.filter(|d| !d.is_empty());
        Ok(metadata)
    }
}

fn ipv4(key: &str, text: &str) -> Result<String, FetchError> {
    text.parse::<Ipv4Addr>()
        .map(|a| a.to_string())
        .map_err(|_| FetchError::Invalid(format!("{META}{key}: {text:?} is not an IPv4 address")))
}

bronze_plugin_sdk::export_metadata_provider!(Exoscale);
