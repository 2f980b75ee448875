//! First-party metadata provider for Microsoft Azure.
//!
//! - detect(): DMI only, as cloud-init's ds-identify: the chassis asset
//!   tag `7783-7084-3265-9085-8269-3286-77` that Azure sets on every VM.
//! - fetch(): the instance metadata service (IMDS) at
//!   `http://169.254.169.254/metadata/`, header `Metadata: true` on every
//!   request, api-version 2021-12-13; when IMDS answers 400 to that version
//!   (Azure Stack Hub) the documents are asked again with 2019-06-01:
//!   `instance/compute`, `instance/network/interface`, `loadbalancer`
//!   (optional: only VMs behind a standard load balancer have it; not
//!   asked with 2019-06-01, which predates it), and
//!   `instance/compute/userData` (api-version 2021-01-01, base64 text).
//!
//! Mapping (as Talos `platform/azure`): hostname `osProfile.computerName`,
//! instance id the `resourceId`, provider id `azure://<resourceId>` with the
//! resource group lower-cased (as cloud-provider-azure writes it on the
//! Node), region the location lower-cased, zone `<location>-<zone>` or the
//! fault domain, spot from `priority`/`evictionPolicy`; per interface
//! DHCPv4, and DHCPv6 (route metric 2048) with Azure's IPv6 gateway
//! `fe80::1234:5678:9abc` (metric 4096) when it has IPv6; external IPs from
//! the interfaces' public addresses and the load balancer's frontends.
//!
//! Not done here: the provisioning "ready" report to the WireServer
//! (168.63.129.16): no world lets a provider report back yet.

use bronze_plugin_sdk::http::{self, Error as HttpError, Request};
use bronze_plugin_sdk::{
    DhcpOperator, FetchError, InstanceMetadata, IpFamily, MetadataProvider, PlatformInterface, PlatformRoute, config,
};
use bronze_provider_common::{dmi, links, status_error};
use serde_json::Value;

const ASSET_TAG: &str = "7783-7084-3265-9085-8269-3286-77";
const API_VERSION: &str = "2021-12-13";
/// Azure Stack Hub's version, used when IMDS refuses the current one.
const FALLBACK_VERSION: &str = "2019-06-01";
const USER_DATA_VERSION: &str = "2021-01-01";
/// Azure's virtual IPv6 gateway on every subnet.
const IPV6_GATEWAY: &str = "fe80::1234:5678:9abc";
const TIMEOUT_MS: u32 = 2000;
const MAX_DOCUMENT: u32 = 256 << 10;
const MAX_USER_DATA: u32 = 1 << 20;
const MAX_VALUE: usize = 4 << 10;
const MAX_INTERFACES: usize = 16;
const MAX_LIST: usize = 256;
const DHCP6_METRIC: u32 = 2048;
const IPV6_ROUTE_METRIC: u32 = 4096;

struct Azure;

impl MetadataProvider for Azure {
    fn detect() -> bool {
        dmi::read().chassis_asset_tag == ASSET_TAG
    }

    fn fetch() -> Result<InstanceMetadata, FetchError> {
        let base = config::get("endpoint")
            .map(|e| e.trim().trim_end_matches('/').to_string())
            .filter(|e| !e.is_empty())
            .unwrap_or_else(|| "http://169.254.169.254".to_string());
        let imds = Imds { base };
        let (version, compute) = match imds.json("instance/compute", API_VERSION, MAX_DOCUMENT)? {
            Answer::Ok(doc) => (API_VERSION, doc),
            Answer::BadRequest => match imds.json("instance/compute", FALLBACK_VERSION, MAX_DOCUMENT)? {
                Answer::Ok(doc) => (FALLBACK_VERSION, doc),
                _ => {
                    return Err(FetchError::Invalid(format!(
                        "GET /metadata/instance/compute: HTTP 400 with api-version {API_VERSION} and {FALLBACK_VERSION}"
                    )));
                }
            },
            Answer::NotFound => {
                return Err(FetchError::Invalid("GET /metadata/instance/compute: 404 Not Found".into()));
            }
        };
        let interfaces = match imds.json("instance/network/interface", version, MAX_DOCUMENT)? {
            Answer::Ok(doc) => doc,
            _ => Value::Array(Vec::new()),
        };
        let loadbalancer = if version == API_VERSION {
            match imds.json("loadbalancer", version, MAX_DOCUMENT)? {
                Answer::Ok(doc) => Some(doc),
                _ => None,
            }
        } else {
            None
        };
        let user_data = imds.user_data()?;
        let mut m = parse(&compute, &interfaces, loadbalancer.as_ref())?;
        m.user_data = user_data;
        m.attributes.push(("api-version".into(), version.into()));
        Ok(m)
    }
}

struct Imds {
    base: String,
}

enum Answer {
    Ok(Value),
    BadRequest,
    NotFound,
}

impl Imds {
    /// GETs `/metadata/<path>?api-version=V&format=F`: the status and
    /// body for 200, 400 and 404; other statuses are errors (5xx and 429
    /// `unavailable`).
    fn get(&self, path: &str, version: &str, format: &str, max: u32) -> Result<(u16, Vec<u8>), FetchError> {
        let url = format!("{}/metadata/{path}?api-version={version}&format={format}", self.base);
        let request = Request::get(url).header("Metadata", "true").timeout_ms(TIMEOUT_MS).max_body_bytes(max);
        let what = format!("GET /metadata/{path}");
        let response = http::send(&request).map_err(|e| match e {
            HttpError::TooLarge(cap) => FetchError::Invalid(format!("{what}: the answer is larger than {cap} bytes")),
            HttpError::Denied(why) => FetchError::Invalid(format!("{what}: denied: {why}")),
            e => FetchError::Unavailable(format!("{what}: {}", e.describe())),
        })?;
        match response.status {
            200 | 400 | 404 => Ok((response.status, response.body)),
            status => Err(status_error("GET", &format!("/metadata/{path}"), status)),
        }
    }

    fn json(&self, path: &str, version: &str, max: u32) -> Result<Answer, FetchError> {
        match self.get(path, version, "json", max)? {
            (200, body) => serde_json::from_slice(&body)
                .map(Answer::Ok)
                .map_err(|e| FetchError::Invalid(format!("/metadata/{path}: invalid JSON: {e}"))),
            (400, _) => Ok(Answer::BadRequest),
            _ => Ok(Answer::NotFound),
        }
    }

    /// The user data (base64 text); absent when empty or not offered.
    fn user_data(&self) -> Result<Option<Vec<u8>>, FetchError> {
        let (status, body) = self.get("instance/compute/userData", USER_DATA_VERSION, "text", MAX_USER_DATA)?;
        if status != 200 || body.iter().all(u8::is_ascii_whitespace) {
            return Ok(None);
        }
        bronze_provider_common::base64::decode(&body)
            .map(Some)
            .map_err(|at| FetchError::Invalid(format!("/metadata/instance/compute/userData: not base64 (byte {at})")))
    }
}

fn string(doc: &Value, what: &str, field: &str) -> Result<Option<String>, FetchError> {
    match doc.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.len() <= MAX_VALUE => Ok(Some(s.clone()).filter(|s| !s.is_empty())),
        Some(Value::String(s)) => Err(FetchError::Invalid(format!("{what}.{field}: {} bytes, too long", s.len()))),
        Some(_) => Err(FetchError::Invalid(format!("{what}.{field}: expected a string"))),
    }
}

fn array<'a>(doc: &'a Value, what: &str, field: &str) -> Result<&'a [Value], FetchError> {
    match doc.get(field) {
        None | Some(Value::Null) => Ok(&[]),
        Some(Value::Array(a)) if a.len() <= MAX_LIST => Ok(a),
        Some(Value::Array(a)) => Err(FetchError::Invalid(format!("{what}.{field}: {} entries, too many", a.len()))),
        Some(_) => Err(FetchError::Invalid(format!("{what}.{field}: expected an array"))),
    }
}

/// `000D3AD631EE` (or with separators) as `00:0d:3a:d6:31:ee`.
fn mac(raw: &str) -> Option<String> {
    let hex: String = raw.chars().filter(|c| *c != ':' && *c != '-').collect();
    if hex.len() != 12 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let pairs: Vec<&str> = (0..6).map(|i| &hex[2 * i..2 * i + 2]).collect();
    Some(pairs.join(":").to_ascii_lowercase())
}

/// The resource id with its resource group lower-cased.
fn provider_id(resource_id: &str) -> String {
    let mut segments: Vec<String> = resource_id.split('/').map(String::from).collect();
    if let Some(i) = segments.iter().position(|s| s.eq_ignore_ascii_case("resourceGroups"))
        && let Some(group) = segments.get_mut(i + 1)
    {
        *group = group.to_ascii_lowercase();
    }
    format!("azure://{}", segments.join("/"))
}

fn parse(compute: &Value, interfaces: &Value, loadbalancer: Option<&Value>) -> Result<InstanceMetadata, FetchError> {
    const C: &str = "compute";
    if !compute.is_object() {
        return Err(FetchError::Invalid("/metadata/instance/compute: expected a JSON object".into()));
    }
    let mut m = InstanceMetadata::new("azure");
    let name = string(compute, C, "name")?;
    let computer_name = match compute.get("osProfile") {
        Some(profile) => string(profile, "compute.osProfile", "computerName")?,
        None => None,
    };
    m.hostname = computer_name.or_else(|| name.clone());
    let resource_id = string(compute, C, "resourceId")?;
    m.provider_id = resource_id.as_deref().map(provider_id);
    m.instance_id = resource_id;
    m.instance_type = string(compute, C, "vmSize")?;
    let location = string(compute, C, "location")?.map(|l| l.to_ascii_lowercase());
    m.zone = match (string(compute, C, "zone")?, &location) {
        (Some(zone), Some(location)) => Some(format!("{location}-{}", zone.to_ascii_lowercase())),
        _ => string(compute, C, "platformFaultDomain")?,
    };
    m.region = location;
    let priority = string(compute, C, "priority")?.unwrap_or_default();
    m.spot = priority.eq_ignore_ascii_case("spot")
        || priority.eq_ignore_ascii_case("low")
        || string(compute, C, "evictionPolicy")?.is_some();
    let tags = array(compute, C, "tagsList")?;
    if !tags.is_empty() {
        for tag in tags {
            let key = string(tag, "compute.tagsList[]", "name")?.unwrap_or_default();
            m.tags.push((key, string(tag, "compute.tagsList[]", "value")?.unwrap_or_default()));
        }
    } else if let Some(tags) = string(compute, C, "tags")? {
        for pair in tags.split(';').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once(':').unwrap_or((pair, ""));
            m.tags.push((k.to_string(), v.to_string()));
        }
    }

    let nics = match interfaces {
        Value::Array(list) => list,
        _ => return Err(FetchError::Invalid("/metadata/instance/network/interface: expected a JSON array".into())),
    };
    let mut external = Vec::new();
    for (i, nic) in nics.iter().take(MAX_INTERFACES).enumerate() {
        let at = format!("interface[{i}]");
        let raw_mac = string(nic, &at, "macAddress")?.unwrap_or_default();
        let mac =
            mac(&raw_mac).ok_or_else(|| FetchError::Invalid(format!("{at}.macAddress: \"{raw_mac}\" is not a MAC")))?;
        let mut iface = PlatformInterface::with_mac(mac.clone());
        iface.name = links::name_of(&mac);
        iface.dhcp.push(DhcpOperator { family: IpFamily::Ipv4, route_metric: None, skip_hostname: false });
        let mut has_ipv6 = false;
        for (family, field) in [(4, "ipv4"), (6, "ipv6")] {
            let Some(section) = nic.get(field) else { continue };
            for address in array(section, &format!("{at}.{field}"), "ipAddress")? {
                let what = format!("{at}.{field}.ipAddress[]");
                let private = string(address, &what, "privateIpAddress")?;
                let public = string(address, &what, "publicIpAddress")?;
                if family == 6 {
                    has_ipv6 |= private.is_some() || public.is_some();
                    m.public_ipv6.extend(public.clone());
                } else {
                    m.private_ipv4.extend(private);
                    m.public_ipv4.extend(public.clone());
                }
                external.extend(public);
            }
        }
        if has_ipv6 {
            iface.dhcp.push(DhcpOperator {
                family: IpFamily::Ipv6,
                route_metric: Some(DHCP6_METRIC),
                skip_hostname: false,
            });
            let mut route = PlatformRoute::default_via(IPV6_GATEWAY);
            route.metric = Some(IPV6_ROUTE_METRIC);
            iface.routes.push(route);
        }
        m.interfaces.push(iface);
    }
    if let Some(lb) = loadbalancer.and_then(|l| l.get("loadbalancer")) {
        for frontend in array(lb, "loadbalancer", "publicIpAddresses")? {
            if let Some(ip) = string(frontend, "loadbalancer.publicIpAddresses[]", "frontendIpAddress")? {
                external.push(ip.trim_start_matches('[').trim_end_matches(']').to_string());
            }
        }
    }
    for ip in external {
        if !m.external_ips.contains(&ip) {
            m.external_ips.push(ip);
        }
    }

    for (key, field) in [
        ("vm-id", "vmId"),
        ("subscription-id", "subscriptionId"),
        ("resource-group", "resourceGroupName"),
        ("name", "name"),
        ("os-type", "osType"),
        ("scale-set", "vmScaleSetName"),
    ] {
        if let Some(v) = string(compute, C, field)? {
            m.attributes.push((key.to_string(), v));
        }
    }
    Ok(m)
}

bronze_plugin_sdk::export_metadata_provider!(Azure);
