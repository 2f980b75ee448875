//! OpenStack: `openstack/latest/{meta_data.json,network_data.json,user_data}`
//! from the `config-2` config drive when there is one, else from the
//! metadata service at `http://169.254.169.254/openstack/latest/`, plus the
//! EC2-style `/latest/meta-data/public-ipv4` and `instance-type` (the
//! service only; a config drive has neither). No headers.
//!
//! Detected by DMI product name `OpenStack Nova` / `OpenStack Compute`,
//! sys_vendor `OpenStack Foundation`, or a `config-2` volume.
//!
//! `network_data.json` becomes interfaces: every link with a MAC (`phy`,
//! `ovs`, `vif`, `bridge`, `tap`, ...) is matched to the host's link by MAC;
//! bonds are named `bond<N>` in document order and VLANs `<parent>.<id>`
//! (as Talos names them); `ipv4`/`ipv6` networks give static addresses,
//! their routes and `gateway` (a default route); `ipv4_dhcp` and
//! `ipv6_dhcp`/`ipv6_dhcpv6-stateful`/`ipv6_dhcpv6-stateless` give DHCP
//! operators that do not take the host name (the metadata has it); `dns`
//! services, top level first, then each network's, are the resolvers. The
//! raw document is passed on as network config format `openstack`.
//! Provider id `openstack:///<uuid>`.

use bronze_plugin_sdk::{
    DhcpOperator, FetchError, InstanceMetadata, IpFamily, MetadataProvider, NetworkConfig, NetworkConfigFormat,
    PlatformInterface, PlatformRoute, config,
    volumes::{self, VolumeError},
};
use bronze_provider_common::cloudinit::{cidr, cidr_host, ip, normalize_mac};
use bronze_provider_common::{Fetcher, dmi, json};
use serde::Deserialize;
use std::collections::BTreeMap;

const DEFAULT_ENDPOINT: &str = "http://169.254.169.254";
const LABEL: &str = "config-2";
const META_DATA: &str = "openstack/latest/meta_data.json";
const NETWORK_DATA: &str = "openstack/latest/network_data.json";
const USER_DATA: &str = "openstack/latest/user_data";

#[derive(Debug, Deserialize)]
struct MetaData {
    uuid: String,
    #[serde(default)]
    hostname: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    availability_zone: Option<String>,
    #[serde(default)]
    project_id: Option<String>,
    /// User-set key/value metadata.
    #[serde(default)]
    meta: BTreeMap<String, serde_json::Value>,
}

#[derive(Debug, Default, Deserialize)]
struct NetworkData {
    #[serde(default)]
    links: Vec<Link>,
    #[serde(default)]
    networks: Vec<Network>,
    #[serde(default)]
    services: Vec<Service>,
}

#[derive(Debug, Deserialize)]
struct Link {
    id: String,
    #[serde(default, rename = "type")]
    kind: String,
    #[serde(default)]
    ethernet_mac_address: Option<String>,
    #[serde(default)]
    mtu: Option<u32>,
    #[serde(default)]
    vlan_link: Option<String>,
    #[serde(default)]
    vlan_id: Option<u32>,
}

#[derive(Debug, Deserialize)]
struct Network {
    #[serde(default)]
    id: String,
    link: String,
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    ip_address: Option<String>,
    #[serde(default)]
    netmask: Option<String>,
    #[serde(default)]
    gateway: Option<String>,
    #[serde(default)]
    routes: Vec<Route>,
    #[serde(default)]
    dns_nameservers: Vec<String>,
    #[serde(default)]
    services: Vec<Service>,
}

#[derive(Debug, Deserialize)]
struct Route {
    network: String,
    netmask: String,
    #[serde(default)]
    gateway: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Service {
    #[serde(rename = "type")]
    kind: String,
    address: String,
}

/// Where the documents come from.
enum Source {
    Drive,
    Service(Fetcher),
}

impl Source {
    fn read(&self, path: &str) -> Result<Option<Vec<u8>>, FetchError> {
        match self {
            Source::Drive => match volumes::read_file(LABEL, path) {
                Ok(bytes) => Ok(Some(bytes)),
                Err(VolumeError::NotFound(_)) => Ok(None),
                Err(VolumeError::Io(why)) => Err(FetchError::Unavailable(format!("{LABEL}/{path}: {why}"))),
                Err(e) => Err(FetchError::Invalid(format!("{LABEL}/{path}: {}", e.describe()))),
            },
            Source::Service(fetcher) => fetcher.get_optional(&format!("/{path}"), &[]),
        }
    }
}

fn has_drive() -> bool {
    volumes::devices().iter().any(|d| d.label.as_deref() == Some(LABEL))
}

struct OpenStack;

impl MetadataProvider for OpenStack {
    fn detect() -> bool {
        let d = dmi::read();
        matches!(d.product_name.as_str(), "OpenStack Nova" | "OpenStack Compute")
            || d.sys_vendor == "OpenStack Foundation"
            || has_drive()
    }

    fn fetch() -> Result<InstanceMetadata, FetchError> {
        let source = if has_drive() {
            Source::Drive
        } else {
            let endpoint = config::get("endpoint").unwrap_or_else(|| DEFAULT_ENDPOINT.to_string());
            Source::Service(Fetcher::new(&endpoint))
        };
        let meta_bytes =
            source.read(META_DATA)?.ok_or_else(|| FetchError::Invalid(format!("{META_DATA}: 404, it must exist")))?;
        let meta: MetaData = json(META_DATA, &meta_bytes)?;
        let mut md = InstanceMetadata::new("openstack");
        if meta.uuid.trim().is_empty() {
            return Err(FetchError::Invalid(format!("{META_DATA}: empty uuid")));
        }
        md.provider_id = Some(format!("openstack:///{}", meta.uuid));
        md.instance_id = Some(meta.uuid.clone());
        md.hostname = meta.hostname.clone().filter(|h| !h.is_empty()).or(meta.name.clone());
        md.zone = meta.availability_zone.clone().filter(|z| !z.is_empty());
        for (key, value) in &meta.meta {
            let value = match value {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            md.tags.push((key.clone(), value));
        }
        if let Some(project) = &meta.project_id {
            md.attributes.push(("project-id".into(), project.clone()));
        }

        if let Some(body) = source.read(NETWORK_DATA)? {
            let text =
                String::from_utf8(body).map_err(|_| FetchError::Invalid(format!("{NETWORK_DATA}: not UTF-8")))?;
            let data: NetworkData = json(NETWORK_DATA, text.as_bytes())?;
            network(&mut md, &data, &bronze_provider_common::cloudinit::host_links())
                .map_err(|e| FetchError::Invalid(format!("{NETWORK_DATA}: {e}")))?;
            md.network_config = Some(NetworkConfig { format: NetworkConfigFormat::Openstack, body: text });
        }
        md.user_data = source.read(USER_DATA)?.filter(|u| !u.is_empty());

        if let Source::Service(fetcher) = &source {
            if let Some(ip4) = fetcher.get_text_optional("/latest/meta-data/public-ipv4", &[])? {
                for word in ip4.split_whitespace() {
                    let addr = ip("public-ipv4", word).map_err(FetchError::Invalid)?.to_string();
                    md.public_ipv4.push(addr.clone());
                    md.external_ips.push(addr);
                }
            }
            md.instance_type = fetcher.get_text_optional("/latest/meta-data/instance-type", &[])?;
        }
        Ok(md)
    }
}

/// Fills interfaces and resolvers from `network_data.json`.
fn network(
    md: &mut InstanceMetadata,
    data: &NetworkData,
    link_of: &dyn Fn(&str) -> Option<String>,
) -> Result<(), String> {
    if data.links.len() > 64 || data.networks.len() > 256 {
        return Err("too many links or networks".into());
    }
    // Names first: bonds bond0.., VLANs <parent>.<id> (parents may follow).
    let mut names: BTreeMap<&str, String> = BTreeMap::new();
    let mut bonds = 0;
    for link in &data.links {
        if link.kind == "bond" {
            names.insert(&link.id, format!("bond{bonds}"));
            bonds += 1;
        }
    }
    let mut interfaces: Vec<(String, PlatformInterface)> = Vec::new();
    for (i, link) in data.links.iter().enumerate() {
        let at = format!("links[{i}]");
        let mut iface = match link.kind.as_str() {
            "bond" => named(names.get(link.id.as_str()).cloned().unwrap_or_default()),
            "vlan" => {
                let parent = link.vlan_link.as_deref().ok_or_else(|| format!("{at}: a vlan link without vlan_link"))?;
                let id = link.vlan_id.ok_or_else(|| format!("{at}: a vlan link without vlan_id"))?;
                if !(1..=4094).contains(&id) {
                    return Err(format!("{at}.vlan_id: {id} is not a VLAN id"));
                }
                let parent_name = names.get(parent).cloned().or_else(|| {
                    let p = data.links.iter().find(|l| l.id == parent)?;
                    let mac = normalize_mac("", p.ethernet_mac_address.as_deref()?).ok()?;
                    link_of(&mac)
                });
                named(format!("{}.{id}", parent_name.unwrap_or_else(|| parent.to_string())))
            }
            _ => {
                let mac = link
                    .ethernet_mac_address
                    .as_deref()
                    .ok_or_else(|| format!("{at}: a {} link without ethernet_mac_address", link.kind))?;
                let mac = normalize_mac(&format!("{at}.ethernet_mac_address"), mac)?;
                let mut iface = PlatformInterface::with_mac(mac.clone());
                iface.name = link_of(&mac);
                iface
            }
        };
        if let Some(mtu) = link.mtu {
            if !(68..=65535).contains(&mtu) {
                return Err(format!("{at}.mtu: {mtu} is not an MTU"));
            }
            iface.mtu = Some(mtu);
        }
        if let Some(name) = &iface.name {
            names.entry(&link.id).or_insert_with(|| name.clone());
        }
        interfaces.push((link.id.clone(), iface));
    }

    let mut dns: Vec<String> = Vec::new();
    let mut add_dns = |services: &[Service], at: &str| -> Result<(), String> {
        for s in services.iter().filter(|s| s.kind == "dns") {
            let addr = ip(at, &s.address)?.to_string();
            if !dns.contains(&addr) {
                dns.push(addr);
            }
        }
        Ok(())
    };
    add_dns(&data.services, "services")?;
    for (i, net) in data.networks.iter().enumerate() {
        let at = format!("networks[{i}] ({})", net.id);
        let (_, iface) = interfaces
            .iter_mut()
            .find(|(id, _)| *id == net.link)
            .ok_or_else(|| format!("{at}: link {:?} is not in links", net.link))?;
        let dhcp = |family| DhcpOperator { family, route_metric: None, skip_hostname: true };
        match net.kind.as_str() {
            "ipv4_dhcp" => iface.dhcp.push(dhcp(IpFamily::Ipv4)),
            "ipv6_dhcp" | "ipv6_dhcpv6-stateful" | "ipv6_dhcpv6-stateless" => {
                iface.dhcp.push(dhcp(IpFamily::Ipv6));
                static_address(iface, net, &at, false)?;
            }
            "ipv6_slaac" => static_address(iface, net, &at, false)?,
            "ipv4" | "ipv6" => static_address(iface, net, &at, true)?,
            other => return Err(format!("{at}: unknown network type {other:?}")),
        }
        for (k, route) in net.routes.iter().enumerate() {
            let r_at = format!("{at}.routes[{k}]");
            let to = cidr(&r_at, &route.network, &route.netmask)?;
            let gateway = route.gateway.as_deref().map(|g| ip(&format!("{r_at}.gateway"), g)).transpose()?;
            if gateway.is_some_and(|g| g.is_ipv6() != to.contains(':')) {
                return Err(format!("{r_at}: gateway and network are of different families"));
            }
            iface.routes.push(PlatformRoute {
                to,
                gateway: gateway.map(|g| g.to_string()),
                on_link: false,
                metric: None,
            });
        }
        let mut services: Vec<Service> =
            net.dns_nameservers.iter().map(|a| Service { kind: "dns".into(), address: a.clone() }).collect();
        services.extend(net.services.iter().map(|s| Service { kind: s.kind.clone(), address: s.address.clone() }));
        add_dns(&services, &format!("{at}.services"))?;
    }
    md.nameservers = dns;
    md.interfaces = interfaces.into_iter().map(|(_, i)| i).collect();
    Ok(())
}

/// A network's `ip_address` (with `netmask`, or a `/prefix` in the address)
/// and its `gateway` as a default route; `required` for `ipv4`/`ipv6`.
fn static_address(iface: &mut PlatformInterface, net: &Network, at: &str, required: bool) -> Result<(), String> {
    let Some(address) = net.ip_address.as_deref() else {
        return if required { Err(format!("{at}: no ip_address")) } else { Ok(()) };
    };
    let cidr = match (address.split_once('/'), net.netmask.as_deref()) {
        (Some((a, p)), _) => cidr_host(&format!("{at}.ip_address"), a, p)?,
        (None, Some(mask)) => cidr_host(&format!("{at}.netmask"), address, mask)?,
        (None, None) => {
            let addr = ip(&format!("{at}.ip_address"), address)?;
            format!("{addr}/{}", if addr.is_ipv4() { 32 } else { 128 })
        }
    };
    let v6 = cidr.contains(':');
    if net.kind.starts_with("ipv6") != v6 {
        return Err(format!("{at}: {cidr} does not fit network type {}", net.kind));
    }
    if !iface.addresses.contains(&cidr) {
        iface.addresses.push(cidr);
    }
    if let Some(gw) = net.gateway.as_deref().filter(|g| !g.is_empty()) {
        let gw = ip(&format!("{at}.gateway"), gw)?;
        if gw.is_ipv6() != v6 {
            return Err(format!("{at}.gateway: {gw} is not of the address's family"));
        }
        iface.routes.push(PlatformRoute::default_via(gw.to_string()));
    }
    Ok(())
}

fn named(name: String) -> PlatformInterface {
    PlatformInterface {
        mac: None,
        name: Some(name),
        addresses: Vec::new(),
        routes: Vec::new(),
        mtu: None,
        dhcp: Vec::new(),
    }
}

bronze_plugin_sdk::export_metadata_provider!(OpenStack);
