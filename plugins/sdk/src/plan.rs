//! Empty-value constructors for the metadata and network records, which
//! have many optional fields.

use crate::{Addressing, Ethernet, InstanceMetadata, LinkMatch, NetworkPlan, PlatformInterface, PlatformRoute};

impl InstanceMetadata {
    /// Metadata for `platform` with every other field empty.
    pub fn new(platform: impl Into<String>) -> Self {
        InstanceMetadata {
            platform: platform.into(),
            provider_id: None,
            instance_id: None,
            instance_type: None,
            hostname: None,
            region: None,
            zone: None,
            spot: false,
            tags: Vec::new(),
            external_ips: Vec::new(),
            public_ipv4: Vec::new(),
            private_ipv4: Vec::new(),
            public_ipv6: Vec::new(),
            interfaces: Vec::new(),
            nameservers: Vec::new(),
            search_domains: Vec::new(),
            time_servers: Vec::new(),
            network_config: None,
            user_data: None,
            attributes: Vec::new(),
        }
    }
}

impl PlatformInterface {
    /// An interface known by its MAC (lower-cased), with nothing configured.
    pub fn with_mac(mac: impl Into<String>) -> Self {
        PlatformInterface {
            mac: Some(mac.into().to_ascii_lowercase()),
            name: None,
            addresses: Vec::new(),
            routes: Vec::new(),
            mtu: None,
            dhcp: Vec::new(),
        }
    }
}

impl PlatformRoute {
    /// A default route (`0.0.0.0/0` or `::/0` by the gateway's family)
    /// through `gateway`.
    pub fn default_via(gateway: impl Into<String>) -> Self {
        let gateway = gateway.into();
        let to = if gateway.contains(':') { "::/0" } else { "0.0.0.0/0" };
        PlatformRoute { to: to.to_string(), gateway: Some(gateway), on_link: false, metric: None }
    }
}

impl Addressing {
    /// No DHCP, no addresses, no routes, the MTU left alone.
    pub fn new() -> Self {
        Addressing {
            dhcp4: false,
            dhcp6: false,
            dhcp_route_metric: None,
            addresses: Vec::new(),
            routes: Vec::new(),
            mtu: None,
        }
    }
}

impl Default for Addressing {
    fn default() -> Self {
        Self::new()
    }
}

impl Ethernet {
    /// A link that is matched but not configured: no DHCP, no addresses.
    pub fn new(link: LinkMatch) -> Self {
        Ethernet { match_: link, addressing: Addressing::new() }
    }
}

impl NetworkPlan {
    /// A plan that configures nothing.
    pub fn new() -> Self {
        NetworkPlan {
            ethernets: Vec::new(),
            bonds: Vec::new(),
            vlans: Vec::new(),
            nameservers: Vec::new(),
            search: Vec::new(),
            hostname: None,
            time_servers: Vec::new(),
        }
    }
}

impl Default for NetworkPlan {
    fn default() -> Self {
        Self::new()
    }
}
