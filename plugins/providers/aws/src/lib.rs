//! First-party metadata provider for Amazon EC2.
//!
//! - detect(): DMI only, as cloud-init's ds-identify: product UUID or
//!   serial starting with `ec2` (any case; Xen instances), or sys_vendor
//!   `Amazon EC2` (Nitro).
//! - fetch(): IMDSv2 at `http://169.254.169.254`, and at
//!   `http://[fd00:ec2::254]` when the first cannot be reached (IPv6-only
//!   subnets). `PUT /latest/api/token` (TTL 21600 s), then every GET with
//!   the token. IMDSv1 (no token) only when config `imdsv1 = "allow"` and
//!   the PUT answers 403, 404 or 405.
//!
//! Keys every instance has (instance-id, instance-type, hostname,
//! local-hostname, public-hostname, public-ipv4, local-ipv4, mac,
//! instance-life-cycle, ami-id, placement/*) are asked directly: 404 means
//! absent. Keys only some instances have (`ipv6`, `tags/`, `network/`) are
//! asked only when `GET /latest/meta-data/` lists them, so tags that are
//! not exposed cost no request, and a service that answers 500 for a path
//! it does not implement (moto) is never asked one. Any 5xx is
//! `unavailable` (the host retries): half an answer is never returned.
//!
//! Mapping (as Talos `platform/aws` does): hostname from `hostname`, the
//! primary interface (device-number 0) gets DHCPv4 when it has
//! `local-ipv4s` and DHCPv6 when it has `ipv6s` (route metric 1024), the
//! resolver `fd00:ec2::253` when it has IPv6, time servers
//! `169.254.169.123` and `fd00:ec2::123`, provider id
//! `aws:///<zone>/<instance-id>`, spot from `instance-life-cycle`.
//!
//! Everything the service sends is bounded: single values 4 KiB, listings
//! 64 KiB and 256 entries, the identity document 16 KiB, user data 1 MiB.

use bronze_plugin_sdk::config;
use bronze_plugin_sdk::http::{self, Error as HttpError, Method, Request, Response};
use bronze_plugin_sdk::{DhcpOperator, FetchError, InstanceMetadata, IpFamily, MetadataProvider, PlatformInterface};
use bronze_provider_common::{dmi, lines, links, status_error, text};

const IPV4_ENDPOINT: &str = "http://169.254.169.254";
const IPV6_ENDPOINT: &str = "http://[fd00:ec2::254]";
/// Token lifetime asked for (the maximum IMDS accepts).
const TOKEN_TTL: &str = "21600";
/// Per-request timeout; the host's call deadline bounds the whole fetch.
const TIMEOUT_MS: u32 = 2000;
const MAX_VALUE: u32 = 4 << 10;
const MAX_LISTING: u32 = 64 << 10;
const MAX_ENTRIES: usize = 256;
const MAX_DOCUMENT: u32 = 16 << 10;
const MAX_USER_DATA: u32 = 1 << 20;
const MAX_HOSTNAME: usize = 253;
/// The route metric Talos gives DHCP on AWS.
const DHCP_METRIC: u32 = 1024;

struct Aws;

impl MetadataProvider for Aws {
    fn detect() -> bool {
        let d = dmi::read();
        let ec2 = |s: &str| s.get(..3).is_some_and(|p| p.eq_ignore_ascii_case("ec2"));
        ec2(&d.product_uuid) || ec2(&d.product_serial) || d.sys_vendor == "Amazon EC2"
    }

    fn fetch() -> Result<InstanceMetadata, FetchError> {
        let imds = Imds::connect()?;
        read(&imds)
    }
}

/// One IMDS session: a base URL and the token (None: IMDSv1).
struct Imds {
    base: String,
    token: Option<String>,
}

impl Imds {
    /// Finds the endpoint that answers and gets a token from it.
    fn connect() -> Result<Imds, FetchError> {
        let allow_v1 = match config::get("imdsv1").as_deref().map(str::trim) {
            None | Some("") | Some("deny") => false,
            Some("allow") => true,
            Some(other) => {
                return Err(FetchError::Invalid(format!("config imdsv1: \"{other}\": expected allow or deny")));
            }
        };
        let endpoints: Vec<String> = match config::get("endpoint").filter(|e| !e.trim().is_empty()) {
            Some(one) => vec![one.trim().trim_end_matches('/').to_string()],
            None => vec![
                IPV4_ENDPOINT.to_string(),
                config::get("endpoint-ipv6")
                    .filter(|e| !e.trim().is_empty())
                    .map_or_else(|| IPV6_ENDPOINT.to_string(), |e| e.trim().trim_end_matches('/').to_string()),
            ],
        };
        let mut unreachable = Vec::new();
        for base in endpoints {
            let request = Request::new(Method::Put, format!("{base}/latest/api/token"))
                .header("X-aws-ec2-metadata-token-ttl-seconds", TOKEN_TTL)
                .timeout_ms(TIMEOUT_MS)
                .max_body_bytes(MAX_VALUE);
            let response = match http::send(&request) {
                Ok(r) => r,
                // Not reachable: try the next endpoint.
                Err(e @ (HttpError::Connect(_) | HttpError::Timeout | HttpError::Dns(_))) => {
                    unreachable.push(format!("{base}: {}", e.describe()));
                    continue;
                }
                Err(e) => return Err(transport("PUT /latest/api/token", &base, e)),
            };
            return match response.status {
                200 => {
                    let token = text("/latest/api/token", response.body)?;
                    if token.is_empty() || !token.bytes().all(|b| b.is_ascii_graphic()) {
                        return Err(FetchError::Invalid(format!(
                            "PUT {base}/latest/api/token: the token is empty or not printable ASCII"
                        )));
                    }
                    Ok(Imds { base, token: Some(token) })
                }
                403..=405 if allow_v1 => Ok(Imds { base, token: None }),
                403..=405 => Err(FetchError::Invalid(format!(
                    "PUT {base}/latest/api/token: HTTP {}: the service gives no IMDSv2 token; config imdsv1 = \
                     \"allow\" reads without one",
                    response.status
                ))),
                status => Err(status_error("PUT", &format!("{base}/latest/api/token"), status)),
            };
        }
        Err(FetchError::Unavailable(format!("no IMDS endpoint answered: {}", unreachable.join("; "))))
    }

    /// GETs `path` (under the base) with at most `max` bytes of body:
    /// Some(body) on 200, None on 404.
    fn get(&self, path: &str, max: u32) -> Result<Option<Vec<u8>>, FetchError> {
        let mut request = Request::get(format!("{}{path}", self.base)).timeout_ms(TIMEOUT_MS).max_body_bytes(max);
        if let Some(token) = &self.token {
            request = request.header("X-aws-ec2-metadata-token", token.clone());
        }
        let response: Response = http::send(&request).map_err(|e| transport(&format!("GET {path}"), &self.base, e))?;
        match response.status {
            200 => Ok(Some(response.body)),
            404 => Ok(None),
            401 => Err(FetchError::Invalid(format!("GET {path}: HTTP 401: the service refused the IMDSv2 token"))),
            status => Err(status_error("GET", path, status)),
        }
    }

    /// `meta-data/<key>` as one trimmed line of text; None when absent or
    /// empty.
    fn value(&self, key: &str) -> Result<Option<String>, FetchError> {
        let path = format!("/latest/meta-data/{key}");
        match self.get(&path, MAX_VALUE)? {
            Some(body) => {
                let value = text(&path, body)?;
                if value.bytes().any(|b| b.is_ascii_control()) {
                    return Err(FetchError::Invalid(format!("{path}: control characters in a single value")));
                }
                Ok(Some(value).filter(|v| !v.is_empty()))
            }
            None => Ok(None),
        }
    }

    /// `meta-data/<key>` as a listing, one entry per line (≤ 256).
    fn listing(&self, key: &str) -> Result<Vec<String>, FetchError> {
        let path = format!("/latest/meta-data/{key}");
        let Some(body) = self.get(&path, MAX_LISTING)? else { return Ok(Vec::new()) };
        let entries = lines(&text(&path, body)?);
        if entries.len() > MAX_ENTRIES {
            return Err(FetchError::Invalid(format!(
                "{path}: {} entries; at most {MAX_ENTRIES} are accepted",
                entries.len()
            )));
        }
        Ok(entries)
    }
}

/// A transport error: unreachable, slow or cut off is `unavailable`; a
/// body over the cap is `invalid` (asking again gives the same body).
fn transport(what: &str, base: &str, e: HttpError) -> FetchError {
    match e {
        HttpError::TooLarge(cap) => {
            FetchError::Invalid(format!("{what}: the answer is larger than {cap} bytes, too large for its field"))
        }
        HttpError::Denied(why) => FetchError::Invalid(format!("{what} at {base}: denied: {why}")),
        e => FetchError::Unavailable(format!("{what} at {base}: {}", e.describe())),
    }
}

/// Whether the index (`meta-data/` listing) names `key` (a value or a
/// `dir/`).
fn listed(index: &[String], key: &str) -> bool {
    index.iter().any(|e| e.trim_end_matches('/') == key)
}

fn read(imds: &Imds) -> Result<InstanceMetadata, FetchError> {
    // The index gates the keys only some instances have; the keys every
    // instance has are asked directly (404 still means absent).
    let index = imds.listing("")?;
    let optional =
        |k: &str| -> Result<Option<String>, FetchError> { if listed(&index, k) { imds.value(k) } else { Ok(None) } };
    let identity = identity_document(imds)?;

    let mut m = InstanceMetadata::new("aws");
    m.instance_id = imds.value("instance-id")?.or_else(|| identity.instance_id.clone());
    let Some(instance_id) = m.instance_id.clone() else {
        return Err(FetchError::Invalid(
            "/latest/meta-data/instance-id: missing (and no instance-identity document names it)".into(),
        ));
    };
    m.instance_type = imds.value("instance-type")?.or_else(|| identity.instance_type.clone());
    m.region = imds.value("placement/region")?.or_else(|| identity.region.clone());
    m.zone = imds.value("placement/availability-zone")?.or_else(|| identity.zone.clone());
    m.provider_id = m.zone.as_ref().map(|zone| format!("aws:///{zone}/{instance_id}"));

    let hostname = imds.value("hostname")?;
    if let Some(h) = &hostname
        && (h.len() > MAX_HOSTNAME || !h.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.'))
    {
        return Err(FetchError::Invalid(format!(
            "/latest/meta-data/hostname: not a host name ({} bytes; expected at most {MAX_HOSTNAME} of letters, \
             digits, '-' and '.')",
            h.len()
        )));
    }
    m.hostname = hostname;
    m.spot = imds.value("instance-life-cycle")?.is_some_and(|c| c == "spot");

    let public_ipv4 = imds.value("public-ipv4")?;
    m.public_ipv4.extend(public_ipv4.clone());
    m.external_ips.extend(public_ipv4);

    if listed(&index, "tags") {
        for tag in imds.listing("tags/instance")? {
            let value = imds.value(&format!("tags/instance/{tag}"))?.unwrap_or_default();
            m.tags.push((tag, value));
        }
    }

    // The primary interface: `mac` is the MAC of device-number 0.
    let mut attributes = Vec::new();
    let mac = imds.value("mac")?.map(|m| m.to_ascii_lowercase());
    let (mut ipv4s, mut ipv6s) = (Vec::new(), Vec::new());
    if let Some(mac) = &mac
        && listed(&index, "network")
    {
        let at = |k: &str| format!("network/interfaces/macs/{mac}/{k}");
        ipv4s = imds.listing(&at("local-ipv4s"))?;
        ipv6s = imds.listing(&at("ipv6s"))?;
        if let Some(cidr) = imds.value(&at("subnet-ipv4-cidr-block"))? {
            attributes.push(("subnet-ipv4-cidr-block".to_string(), cidr));
        }
        let v6_cidrs = imds.listing(&at("subnet-ipv6-cidr-blocks"))?;
        if !v6_cidrs.is_empty() {
            attributes.push(("subnet-ipv6-cidr-blocks".to_string(), v6_cidrs.join(",")));
        }
    }
    if ipv4s.is_empty() {
        ipv4s.extend(imds.value("local-ipv4")?);
    }
    if ipv6s.is_empty() {
        ipv6s.extend(optional("ipv6")?);
    }
    if let Some(mac) = mac {
        let mut iface = PlatformInterface::with_mac(mac.clone());
        iface.name = links::name_of(&mac);
        if !ipv4s.is_empty() {
            iface.dhcp.push(dhcp(IpFamily::Ipv4));
        }
        if !ipv6s.is_empty() {
            iface.dhcp.push(dhcp(IpFamily::Ipv6));
        }
        m.interfaces.push(iface);
    }
    if !ipv6s.is_empty() {
        // The Amazon-provided DNS over IPv6 (Nitro); IPv4 DNS comes with
        // DHCPv4.
        m.nameservers.push("fd00:ec2::253".into());
    }
    m.private_ipv4 = ipv4s;
    m.public_ipv6 = ipv6s;

    // The Amazon Time Sync Service, IPv4 and IPv6 (Nitro).
    m.time_servers = vec!["169.254.169.123".into(), "fd00:ec2::123".into()];

    for k in ["local-hostname", "public-hostname", "ami-id"] {
        if let Some(v) = imds.value(k)? {
            attributes.push((k.to_string(), v));
        }
    }
    attributes.extend(identity.account_id.map(|a| ("account-id".to_string(), a)));
    attributes.extend(identity.architecture.map(|a| ("architecture".to_string(), a)));
    attributes.push(("imds".to_string(), if imds.token.is_some() { "v2" } else { "v1" }.to_string()));
    attributes.push(("endpoint".to_string(), imds.base.clone()));
    m.attributes = attributes;

    m.user_data = imds.get("/latest/user-data", MAX_USER_DATA)?;
    Ok(m)
}

fn dhcp(family: IpFamily) -> DhcpOperator {
    DhcpOperator { family, route_metric: Some(DHCP_METRIC), skip_hostname: false }
}

/// The fields of `dynamic/instance-identity/document` used here.
#[derive(Default)]
struct Identity {
    instance_id: Option<String>,
    instance_type: Option<String>,
    region: Option<String>,
    zone: Option<String>,
    account_id: Option<String>,
    architecture: Option<String>,
}

/// Reads the identity document (absent is fine); a document that is not a
/// JSON object, or a field of the wrong type, is `invalid`, naming it.
fn identity_document(imds: &Imds) -> Result<Identity, FetchError> {
    const PATH: &str = "/latest/dynamic/instance-identity/document";
    let Some(body) = imds.get(PATH, MAX_DOCUMENT)? else { return Ok(Identity::default()) };
    let doc: serde_json::Value =
        serde_json::from_slice(&body).map_err(|e| FetchError::Invalid(format!("{PATH}: invalid JSON: {e}")))?;
    let Some(doc) = doc.as_object() else {
        return Err(FetchError::Invalid(format!("{PATH}: expected a JSON object")));
    };
    let field = |name: &str| -> Result<Option<String>, FetchError> {
        match doc.get(name) {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(serde_json::Value::String(s)) if s.len() <= MAX_VALUE as usize => Ok(Some(s.clone())),
            Some(serde_json::Value::String(s)) => {
                Err(FetchError::Invalid(format!("{PATH}: field {name}: {} bytes, too long", s.len())))
            }
            Some(other) => {
                Err(FetchError::Invalid(format!("{PATH}: field {name}: expected a string, got {}", kind(other))))
            }
        }
    };
    Ok(Identity {
        instance_id: field("instanceId")?,
        instance_type: field("instanceType")?,
        region: field("region")?,
        zone: field("availabilityZone")?,
        account_id: field("accountId")?,
        architecture: field("architecture")?,
    })
}

fn kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

bronze_plugin_sdk::export_metadata_provider!(Aws);
