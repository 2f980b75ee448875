//! First-party metadata provider for Google Compute Engine.
//!
//! - detect(): DMI only, as cloud-init's ds-identify: product name
//!   `Google Compute Engine`, or a product serial starting `GoogleCloud-`.
//! - fetch(): two requests to `http://169.254.169.254/computeMetadata/v1/`
//!   (`metadata.google.internal` is the same host), each with
//!   `Metadata-Flavor: Google`: `instance/?recursive=true&alt=json` (the
//!   whole instance tree, user data included) and `project/project-id`.
//!   A response without `Metadata-Flavor: Google` did not come from the
//!   metadata server and is refused.
//!
//! Mapping (as Talos `platform/gcp`): hostname from `hostname`, zone and
//! machine type as the last path segment, region = zone without its last
//! `-part`, provider id `gce://<project>/<zone>/<name>`, spot from
//! `scheduling.preemptible` (or provisioning model `SPOT`), tags as keys
//! with empty values; per interface DHCPv4 (route metric 1024), the MTU,
//! each `ipv6` prefix as an address with a default route via
//! `gatewayIpv6` (metric 2048); external IPs from `ONE_TO_ONE_NAT` access
//! configs (and `externalIpv6`); resolver `169.254.169.254`; time server
//! `metadata.google.internal`; user data from the `user-data` attribute.

use bronze_plugin_sdk::http::{self, Error as HttpError, Request};
use bronze_plugin_sdk::{
    DhcpOperator, FetchError, InstanceMetadata, IpFamily, MetadataProvider, PlatformInterface, PlatformRoute, config,
};
use bronze_provider_common::{dmi, links, status_error, text};
use serde_json::Value;

const TIMEOUT_MS: u32 = 2000;
/// The instance tree carries the attributes (up to 256 KB each).
const MAX_INSTANCE: u32 = 1 << 20;
const MAX_VALUE: u32 = 4 << 10;
const MAX_INTERFACES: usize = 16;
const MAX_LIST: usize = 256;
const DHCP_METRIC: u32 = 1024;
const IPV6_ROUTE_METRIC: u32 = 2048;

struct Gcp;

impl MetadataProvider for Gcp {
    fn detect() -> bool {
        let d = dmi::read();
        d.product_name == "Google Compute Engine" || d.product_serial.starts_with("GoogleCloud-")
    }

    fn fetch() -> Result<InstanceMetadata, FetchError> {
        let base = config::get("endpoint")
            .map(|e| e.trim().trim_end_matches('/').to_string())
            .filter(|e| !e.is_empty())
            .unwrap_or_else(|| "http://169.254.169.254".to_string());
        let instance = get(&base, "/computeMetadata/v1/instance/?recursive=true&alt=json", MAX_INSTANCE)?;
        let instance: Value = serde_json::from_slice(&instance)
            .map_err(|e| FetchError::Invalid(format!("instance/?recursive=true: invalid JSON: {e}")))?;
        let project = text("project/project-id", get(&base, "/computeMetadata/v1/project/project-id", MAX_VALUE)?)?;
        parse(&instance, &project)
    }
}

/// GETs `path` with `Metadata-Flavor: Google`; the answer must carry the
/// same header back.
fn get(base: &str, path: &str, max: u32) -> Result<Vec<u8>, FetchError> {
    let request = Request::get(format!("{base}{path}"))
        .header("Metadata-Flavor", "Google")
        .timeout_ms(TIMEOUT_MS)
        .max_body_bytes(max);
    let response = http::send(&request).map_err(|e| match e {
        HttpError::TooLarge(cap) => FetchError::Invalid(format!("GET {path}: the answer is larger than {cap} bytes")),
        HttpError::Denied(why) => FetchError::Invalid(format!("GET {path}: denied: {why}")),
        e => FetchError::Unavailable(format!("GET {path}: {}", e.describe())),
    })?;
    if response.status != 200 {
        return Err(status_error("GET", path, response.status));
    }
    if response.header("metadata-flavor") != Some("Google") {
        return Err(FetchError::Invalid(format!(
            "GET {path}: the answer has no Metadata-Flavor: Google header; not the metadata server"
        )));
    }
    Ok(response.body)
}

/// A string field (numbers are accepted for ids, as the server prints
/// `id` as a number); wrong types are `invalid`, naming the field.
fn string(doc: &Value, what: &str, field: &str) -> Result<Option<String>, FetchError> {
    match doc.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.len() <= MAX_VALUE as usize => Ok(Some(s.clone()).filter(|s| !s.is_empty())),
        Some(Value::String(s)) => Err(FetchError::Invalid(format!("{what}.{field}: {} bytes, too long", s.len()))),
        Some(Value::Number(n)) if field == "id" => Ok(Some(n.to_string())),
        Some(_) => Err(FetchError::Invalid(format!("{what}.{field}: expected a string"))),
    }
}

fn array<'a>(doc: &'a Value, field: &str, what: &str) -> Result<&'a [Value], FetchError> {
    match doc.get(field) {
        None | Some(Value::Null) => Ok(&[]),
        Some(Value::Array(a)) if a.len() <= MAX_LIST => Ok(a),
        Some(Value::Array(a)) => Err(FetchError::Invalid(format!("{what}.{field}: {} entries, too many", a.len()))),
        Some(_) => Err(FetchError::Invalid(format!("{what}.{field}: expected an array"))),
    }
}

/// The last `/` segment (`projects/1/zones/us-central1-a` → `us-central1-a`).
fn last_segment(s: String) -> String {
    s.rsplit('/').next().unwrap_or_default().to_string()
}

fn parse(instance: &Value, project: &str) -> Result<InstanceMetadata, FetchError> {
    if !instance.is_object() {
        return Err(FetchError::Invalid("instance/?recursive=true: expected a JSON object".into()));
    }
    let mut m = InstanceMetadata::new("gcp");
    let name = string(instance, "instance", "name")?;
    m.instance_id = string(instance, "instance", "id")?;
    m.hostname = string(instance, "instance", "hostname")?;
    m.instance_type = string(instance, "instance", "machineType")?.map(last_segment);
    m.zone = string(instance, "instance", "zone")?.map(last_segment);
    m.region = m.zone.as_ref().map(|z| z.rsplit_once('-').map_or(z.as_str(), |(r, _)| r).to_string());
    if let (Some(zone), Some(name)) = (&m.zone, &name)
        && !project.is_empty()
    {
        m.provider_id = Some(format!("gce://{project}/{zone}/{name}"));
    }
    if let Some(scheduling) = instance.get("scheduling") {
        let preemptible =
            string(scheduling, "instance.scheduling", "preemptible")?.is_some_and(|p| p.eq_ignore_ascii_case("TRUE"));
        let spot = string(scheduling, "instance.scheduling", "provisioningModel")?.is_some_and(|p| p == "SPOT");
        m.spot = preemptible || spot;
    }
    for tag in array(instance, "tags", "instance")? {
        let tag = tag.as_str().ok_or_else(|| FetchError::Invalid("instance.tags: expected strings".into()))?;
        m.tags.push((tag.to_string(), String::new()));
    }

    let interfaces = array(instance, "networkInterfaces", "instance")?;
    for (i, nic) in interfaces.iter().take(MAX_INTERFACES).enumerate() {
        let at = format!("instance.networkInterfaces[{i}]");
        let mac = string(nic, &at, "mac")?.ok_or_else(|| FetchError::Invalid(format!("{at}.mac: missing")))?;
        let mut iface = PlatformInterface::with_mac(mac.clone());
        iface.name = links::name_of(&mac);
        iface.mtu = match nic.get("mtu") {
            None | Some(Value::Null) => None,
            Some(v) => Some(
                v.as_u64()
                    .and_then(|m| u32::try_from(m).ok())
                    .ok_or_else(|| FetchError::Invalid(format!("{at}.mtu: expected a number")))?,
            ),
        };
        iface.dhcp.push(DhcpOperator { family: IpFamily::Ipv4, route_metric: Some(DHCP_METRIC), skip_hostname: false });
        m.private_ipv4.extend(string(nic, &at, "ip")?);
        let gateway6 = string(nic, &at, "gatewayIpv6")?;
        if let Some(gw) = &gateway6 {
            for prefix in array(nic, "ipv6", &at)? {
                let prefix =
                    prefix.as_str().ok_or_else(|| FetchError::Invalid(format!("{at}.ipv6: expected strings")))?;
                iface.addresses.push(prefix.to_string());
            }
            if !iface.addresses.is_empty() {
                let mut route = PlatformRoute::default_via(gw.clone());
                route.metric = Some(IPV6_ROUTE_METRIC);
                iface.routes.push(route);
            }
        }
        for access in array(nic, "accessConfigs", &at)? {
            if string(access, &at, "type")?.as_deref() == Some("ONE_TO_ONE_NAT")
                && let Some(ip) = string(access, &at, "externalIp")?
            {
                m.public_ipv4.push(ip.clone());
                m.external_ips.push(ip);
            }
        }
        for access in array(nic, "ipv6AccessConfigs", &at)? {
            if let Some(ip) = string(access, &at, "externalIpv6")? {
                m.public_ipv6.push(ip.clone());
                m.external_ips.push(ip);
            }
        }
        m.interfaces.push(iface);
    }

    m.nameservers = vec!["169.254.169.254".into()];
    m.time_servers = vec!["metadata.google.internal".into()];

    let mut attributes = vec![("project-id".to_string(), project.to_string())];
    attributes.extend(name.map(|n| ("name".to_string(), n)));
    if let Some(attrs) = instance.get("attributes").and_then(Value::as_object)
        && let Some(user_data) = attrs.get("user-data")
    {
        let user_data = user_data
            .as_str()
            .ok_or_else(|| FetchError::Invalid("instance.attributes.user-data: expected a string".into()))?;
        m.user_data = Some(user_data.as_bytes().to_vec());
    }
    m.attributes = attributes;
    Ok(m)
}

bronze_plugin_sdk::export_metadata_provider!(Gcp);
