//! `PlatformMetadata`: what a metadata provider answered, validated and
//! escaped. A provider is untrusted: every field is bounded in size and
//! count, addresses and CIDRs must parse, MACs must be MACs, and every
//! string is escaped (`bronze_bundle::text`) before it is kept. A result
//! that breaks a rule is refused whole, with the field and what was
//! expected, so half an answer is never used.

use crate::plugins::worlds::metadata::wit;
use bronze_bundle::text::escape;
use serde::{Deserialize, Serialize};
use std::net::IpAddr;

/// Most interfaces, routes per interface, addresses per list, tags.
pub const MAX_INTERFACES: usize = 64;
pub const MAX_LIST: usize = 256;
pub const MAX_TAGS: usize = 256;
pub const MAX_ATTRIBUTES: usize = 256;
/// Longest host name (RFC 1035 presentation form).
pub const MAX_HOSTNAME: usize = 253;
/// Longest identifier-like value (instance id, region, tag, ...).
pub const MAX_VALUE: usize = 1024;
/// Largest user data and raw network config document.
pub const MAX_USER_DATA: usize = 1 << 20;
pub const MAX_NETWORK_CONFIG: usize = 256 << 10;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct Route {
    pub to: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub on_link: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Dhcp {
    /// `ipv4` or `ipv6`.
    pub family: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route_metric: Option<u32>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub skip_hostname: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct Interface {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default)]
    pub addresses: Vec<String>,
    #[serde(default)]
    pub routes: Vec<Route>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    #[serde(default)]
    pub dhcp: Vec<Dhcp>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetworkConfig {
    /// `cloud-init-v1`, `cloud-init-v2` or `openstack`.
    pub format: String,
    pub body: String,
}

/// A provider's answer as the host keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct PlatformMetadata {
    pub platform: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
    #[serde(default)]
    pub spot: bool,
    #[serde(default)]
    pub tags: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    pub external_ips: Vec<String>,
    #[serde(default)]
    pub public_ipv4: Vec<String>,
    #[serde(default)]
    pub private_ipv4: Vec<String>,
    #[serde(default)]
    pub public_ipv6: Vec<String>,
    #[serde(default)]
    pub interfaces: Vec<Interface>,
    #[serde(default)]
    pub nameservers: Vec<String>,
    #[serde(default)]
    pub search_domains: Vec<String>,
    #[serde(default)]
    pub time_servers: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_config: Option<NetworkConfig>,
    /// Raw user data, base64 in JSON; never printed.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "b64")]
    pub user_data: Option<Vec<u8>>,
    #[serde(default)]
    pub attributes: std::collections::BTreeMap<String, String>,
}

mod b64 {
    use base64::Engine;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(bytes) => s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(bytes)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
        let text: Option<String> = Option::deserialize(d)?;
        text.map(|t| base64::engine::general_purpose::STANDARD.decode(t).map_err(serde::de::Error::custom)).transpose()
    }
}

/// Validation state: the path of the field being checked.
struct Check {
    problems: Vec<String>,
}

impl Check {
    fn fail(&mut self, field: &str, why: String) {
        if self.problems.len() < 8 {
            self.problems.push(format!("{field}: {why}"));
        }
    }

    /// A bounded, escaped string.
    fn text(&mut self, field: &str, value: String, max: usize) -> String {
        if value.len() > max {
            self.fail(field, format!("{} bytes; at most {max} are accepted", value.len()));
        }
        escape(&value).into_owned()
    }

    /// A bounded document kept verbatim: no control characters but tab,
    /// CR and LF, no DEL or C1 controls.
    fn document(&mut self, field: &str, value: String, max: usize) -> String {
        if value.len() > max {
            self.fail(field, format!("{} bytes; at most {max} are accepted", value.len()));
            return String::new();
        }
        if let Some((at, ch)) = value.char_indices().find(|(_, c)| c.is_control() && !matches!(c, '\t' | '\r' | '\n')) {
            self.fail(field, format!("control character U+{:04X} at byte {at}; expected text", ch as u32));
            return String::new();
        }
        value
    }

    fn opt(&mut self, field: &str, value: Option<String>, max: usize) -> Option<String> {
        value.map(|v| self.text(field, v, max)).filter(|v| !v.is_empty())
    }

    fn count<T>(&mut self, field: &str, list: &[T], max: usize) -> bool {
        if list.len() > max {
            self.fail(field, format!("{} entries; at most {max} are accepted", list.len()));
            return false;
        }
        true
    }

    fn ips(&mut self, field: &str, list: Vec<String>) -> Vec<String> {
        if !self.count(field, &list, MAX_LIST) {
            return Vec::new();
        }
        list.into_iter()
            .enumerate()
            .filter_map(|(i, a)| match a.trim().trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>() {
                Ok(ip) => Some(ip.to_string()),
                Err(_) => {
                    self.fail(&format!("{field}[{i}]"), format!("\"{}\" is not an IP address", shown(&a)));
                    None
                }
            })
            .collect()
    }

    fn cidr(&mut self, field: &str, value: &str) -> Option<String> {
        match parse_cidr(value) {
            Ok(c) => Some(c),
            Err(why) => {
                self.fail(field, format!("\"{}\" {why}", shown(value)));
                None
            }
        }
    }

    fn hostish(&mut self, field: &str, list: Vec<String>) -> Vec<String> {
        if !self.count(field, &list, MAX_LIST) {
            return Vec::new();
        }
        list.into_iter()
            .enumerate()
            .filter_map(|(i, name)| {
                let ok = !name.is_empty()
                    && name.len() <= MAX_HOSTNAME
                    && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b':'));
                if ok {
                    Some(name.trim_end_matches('.').to_string()).filter(|n| !n.is_empty())
                } else {
                    self.fail(&format!("{field}[{i}]"), format!("\"{}\" is not a host name or address", shown(&name)));
                    None
                }
            })
            .collect()
    }
}

/// At most 64 bytes of `value`, escaped, for an error message.
fn shown(value: &str) -> String {
    let cut: String = value.chars().take(64).collect();
    let mut out = escape(&cut).into_owned();
    if cut.len() < value.len() {
        out.push('…');
    }
    out
}

/// `addr/len` with a valid prefix length for the family, normalised.
pub fn parse_cidr(value: &str) -> Result<String, &'static str> {
    let (addr, len) = value.split_once('/').ok_or("is not in CIDR notation (address/prefix)")?;
    let addr: IpAddr = addr.parse().map_err(|_| "has no valid address before '/'")?;
    let len: u8 = len.parse().map_err(|_| "has no valid prefix length after '/'")?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    if len > max {
        return Err("has a prefix length beyond the family's");
    }
    Ok(format!("{addr}/{len}"))
}

/// A MAC as six lower-case hex pairs separated by `:`.
pub fn parse_mac(value: &str) -> Option<String> {
    let parts: Vec<&str> = value.split([':', '-']).collect();
    if parts.len() != 6 || parts.iter().any(|p| p.len() != 2 || !p.bytes().all(|b| b.is_ascii_hexdigit())) {
        return None;
    }
    Some(parts.join(":").to_ascii_lowercase())
}

impl PlatformMetadata {
    /// Validates and escapes a provider's answer; an error lists the first
    /// problems, each naming its field.
    pub fn from_wit(m: wit::InstanceMetadata) -> Result<PlatformMetadata, String> {
        let mut c = Check { problems: Vec::new() };
        let platform = c.text("platform", m.platform, 63);
        if platform.is_empty() {
            c.fail("platform", "empty; expected the platform's name, like aws".into());
        }
        if let Some(h) = &m.hostname
            && !h.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        {
            c.fail("hostname", format!("\"{}\": expected letters, digits, '-' and '.'", shown(h)));
        }
        let hostname = c.opt("hostname", m.hostname, MAX_HOSTNAME);
        let mut tags = std::collections::BTreeMap::new();
        if c.count("tags", &m.tags, MAX_TAGS) {
            for (k, v) in m.tags {
                let k = c.text("tags key", k, MAX_VALUE);
                let v = c.text("tags value", v, MAX_VALUE);
                tags.insert(k, v);
            }
        }
        let mut attributes = std::collections::BTreeMap::new();
        if c.count("attributes", &m.attributes, MAX_ATTRIBUTES) {
            for (k, v) in m.attributes {
                let k = c.text("attributes key", k, MAX_VALUE);
                let v = c.text("attributes value", v, 4 * MAX_VALUE);
                attributes.insert(k, v);
            }
        }
        let mut interfaces = Vec::new();
        if c.count("interfaces", &m.interfaces, MAX_INTERFACES) {
            for (i, iface) in m.interfaces.into_iter().enumerate() {
                let at = format!("interfaces[{i}]");
                let mac = iface.mac.and_then(|mac| {
                    let parsed = parse_mac(&mac);
                    if parsed.is_none() {
                        c.fail(
                            &format!("{at}.mac"),
                            format!("\"{}\" is not a MAC like aa:bb:cc:dd:ee:ff", shown(&mac)),
                        );
                    }
                    parsed
                });
                let name = iface.name.and_then(|n| {
                    if n.is_empty() || n.len() > 15 || n.bytes().any(|b| b == b'/' || b <= b' ' || b >= 0x7f) {
                        c.fail(&format!("{at}.name"), format!("\"{}\": expected a link name of 1-15 bytes", shown(&n)));
                        None
                    } else {
                        Some(n)
                    }
                });
                let mut addresses = Vec::new();
                if c.count(&format!("{at}.addresses"), &iface.addresses, MAX_LIST) {
                    for (j, a) in iface.addresses.iter().enumerate() {
                        addresses.extend(c.cidr(&format!("{at}.addresses[{j}]"), a));
                    }
                }
                let mut routes = Vec::new();
                if c.count(&format!("{at}.routes"), &iface.routes, MAX_LIST) {
                    for (j, r) in iface.routes.into_iter().enumerate() {
                        let to = c.cidr(&format!("{at}.routes[{j}].to"), &r.to);
                        let gateway = r.gateway.and_then(|g| {
                            let ip = c.ips(&format!("{at}.routes[{j}].gateway"), vec![g]);
                            ip.into_iter().next()
                        });
                        if let Some(to) = to {
                            routes.push(Route { to, gateway, on_link: r.on_link, metric: r.metric });
                        }
                    }
                }
                if let Some(mtu) = iface.mtu
                    && !(68..=65535).contains(&mtu)
                {
                    c.fail(&format!("{at}.mtu"), format!("{mtu}: expected 68-65535"));
                }
                let dhcp = iface
                    .dhcp
                    .into_iter()
                    .take(2)
                    .map(|d| Dhcp {
                        family: match d.family {
                            wit::IpFamily::Ipv4 => "ipv4".into(),
                            wit::IpFamily::Ipv6 => "ipv6".into(),
                        },
                        route_metric: d.route_metric,
                        skip_hostname: d.skip_hostname,
                    })
                    .collect();
                if mac.is_none() && name.is_none() {
                    c.fail(&at, "names no link: expected a mac or a name".into());
                }
                interfaces.push(Interface { mac, name, addresses, routes, mtu: iface.mtu, dhcp });
            }
        }
        let network_config = m.network_config.map(|n| NetworkConfig {
            format: match n.format {
                wit::NetworkConfigFormat::CloudInitV1 => "cloud-init-v1".into(),
                wit::NetworkConfigFormat::CloudInitV2 => "cloud-init-v2".into(),
                wit::NetworkConfigFormat::Openstack => "openstack".into(),
            },
            // A document for the configurator, kept as served: escaping
            // would break it, so it may hold no control character but tab
            // and line ends (then nothing in it can drive a terminal).
            body: c.document("network-config.body", n.body, MAX_NETWORK_CONFIG),
        });
        if let Some(u) = &m.user_data
            && u.len() > MAX_USER_DATA
        {
            c.fail("user-data", format!("{} bytes; at most {MAX_USER_DATA} are accepted", u.len()));
        }
        let out = PlatformMetadata {
            platform,
            provider_id: c.opt("provider-id", m.provider_id, MAX_VALUE),
            instance_id: c.opt("instance-id", m.instance_id, MAX_VALUE),
            instance_type: c.opt("instance-type", m.instance_type, MAX_VALUE),
            hostname,
            region: c.opt("region", m.region, MAX_VALUE),
            zone: c.opt("zone", m.zone, MAX_VALUE),
            spot: m.spot,
            tags,
            external_ips: c.ips("external-ips", m.external_ips),
            public_ipv4: c.ips("public-ipv4", m.public_ipv4),
            private_ipv4: c.ips("private-ipv4", m.private_ipv4),
            public_ipv6: c.ips("public-ipv6", m.public_ipv6),
            interfaces,
            nameservers: c.ips("nameservers", m.nameservers),
            search_domains: c.hostish("search-domains", m.search_domains),
            time_servers: c.hostish("time-servers", m.time_servers),
            network_config,
            user_data: m.user_data,
            attributes,
        };
        if c.problems.is_empty() { Ok(out) } else { Err(c.problems.join("; ")) }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub fn empty(platform: &str) -> wit::InstanceMetadata {
        wit::InstanceMetadata {
            platform: platform.into(),
            provider_id: None,
            instance_id: None,
            instance_type: None,
            hostname: None,
            region: None,
            zone: None,
            spot: false,
            tags: vec![],
            external_ips: vec![],
            public_ipv4: vec![],
            private_ipv4: vec![],
            public_ipv6: vec![],
            interfaces: vec![],
            nameservers: vec![],
            search_domains: vec![],
            time_servers: vec![],
            network_config: None,
            user_data: None,
            attributes: vec![],
        }
    }

    #[test]
    fn valid_answers_are_normalised() {
        let mut m = empty("aws");
        m.hostname = Some("ip-10-0-0-5.ec2.internal".into());
        m.public_ipv4 = vec!["1.2.3.4".into()];
        m.nameservers = vec!["[fd00:ec2::253]".into()];
        m.time_servers = vec!["169.254.169.123".into(), "time.aws.com.".into()];
        m.interfaces = vec![wit::PlatformInterface {
            mac: Some("0A:1B:2C:3D:4E:5F".into()),
            name: None,
            addresses: vec!["10.0.0.5/24".into(), "2001:db8::0001/64".into()],
            routes: vec![wit::PlatformRoute {
                to: "0.0.0.0/0".into(),
                gateway: Some("10.0.0.1".into()),
                on_link: false,
                metric: Some(1024),
            }],
            mtu: Some(9001),
            dhcp: vec![wit::DhcpOperator {
                family: wit::IpFamily::Ipv4,
                route_metric: Some(1024),
                skip_hostname: true,
            }],
        }];
        let p = PlatformMetadata::from_wit(m).unwrap();
        assert_eq!(p.nameservers, ["fd00:ec2::253"]);
        assert_eq!(p.time_servers, ["169.254.169.123", "time.aws.com"]);
        assert_eq!(p.interfaces[0].mac.as_deref(), Some("0a:1b:2c:3d:4e:5f"));
        assert_eq!(p.interfaces[0].addresses, ["10.0.0.5/24", "2001:db8::1/64"]);
        assert_eq!(p.interfaces[0].dhcp[0].family, "ipv4");
        let json = serde_json::to_value(&p).unwrap();
        assert_eq!(serde_json::from_value::<PlatformMetadata>(json).unwrap(), p);
    }

    #[test]
    fn hostile_answers_are_refused_naming_the_field() {
        let mut m = empty("aws");
        m.hostname = Some("x".repeat(10_000));
        let e = PlatformMetadata::from_wit(m).unwrap_err();
        assert!(e.starts_with("hostname: 10000 bytes; at most 253"), "{e}");

        let mut m = empty("aws");
        m.public_ipv4 = (0..10_000).map(|i| format!("10.0.{}.{}", i / 256 % 256, i % 256)).collect();
        let e = PlatformMetadata::from_wit(m).unwrap_err();
        assert_eq!(e, "public-ipv4: 10000 entries; at most 256 are accepted");

        let mut m = empty("aws");
        m.interfaces = vec![wit::PlatformInterface {
            mac: Some("zz:zz".into()),
            name: None,
            addresses: vec!["10.0.0.5".into(), "10.0.0.5/33".into()],
            routes: vec![],
            mtu: Some(1),
            dhcp: vec![],
        }];
        let e = PlatformMetadata::from_wit(m).unwrap_err();
        assert!(e.contains("interfaces[0].mac: \"zz:zz\" is not a MAC"), "{e}");
        assert!(e.contains("interfaces[0].addresses[0]: \"10.0.0.5\" is not in CIDR notation"), "{e}");
        assert!(e.contains("interfaces[0].addresses[1]: \"10.0.0.5/33\" has a prefix length beyond"), "{e}");
        assert!(e.contains("interfaces[0].mtu: 1: expected 68-65535"), "{e}");

        let mut m = empty("aws");
        m.hostname = Some("evil\x1b[2J".into());
        m.instance_id = Some("i-\x1b[31mred".into());
        let e = PlatformMetadata::from_wit(m).unwrap_err();
        assert!(e.contains("hostname: \"evil\\x1b[2J\""), "{e}");

        let mut m = empty("hetzner");
        let body = "network:\n  version: 1\n\tconfig: []\r\n".to_string();
        m.network_config =
            Some(wit::NetworkConfig { format: wit::NetworkConfigFormat::CloudInitV1, body: body.clone() });
        assert_eq!(PlatformMetadata::from_wit(m.clone()).unwrap().network_config.unwrap().body, body, "kept verbatim");
        m.network_config.as_mut().unwrap().body = "version: 1\n\x1b]0;owned\x07".into();
        let e = PlatformMetadata::from_wit(m).unwrap_err();
        assert_eq!(e, "network-config.body: control character U+001B at byte 11; expected text");

        let mut m = empty("aws");
        m.instance_id = Some("i-\x1b[31mred".into());
        assert_eq!(PlatformMetadata::from_wit(m).unwrap().instance_id.as_deref(), Some("i-\\x1b[31mred"));
    }
}
