//! Empty-value constructors for the metadata and network records, which
//! have many optional fields.

use crate::{Ethernet, InstanceMetadata, LinkMatch, NetworkPlan};

impl InstanceMetadata {
    /// Metadata for `platform` with every other field empty.
    pub fn new(platform: impl Into<String>) -> Self {
        InstanceMetadata {
            platform: platform.into(),
            instance_id: None,
            instance_type: None,
            hostname: None,
            region: None,
            zone: None,
            public_ipv4: Vec::new(),
            private_ipv4: Vec::new(),
            public_ipv6: Vec::new(),
            interfaces: Vec::new(),
            nameservers: Vec::new(),
            user_data: None,
            attributes: Vec::new(),
        }
    }
}

impl Ethernet {
    /// A link that is matched but not configured: no DHCP, no addresses.
    pub fn new(link: LinkMatch) -> Self {
        Ethernet {
            match_: link,
            set_name: None,
            dhcp4: false,
            dhcp6: false,
            addresses: Vec::new(),
            routes: Vec::new(),
            mtu: None,
        }
    }
}

impl NetworkPlan {
    /// A plan that configures nothing.
    pub fn new() -> Self {
        NetworkPlan { ethernets: Vec::new(), nameservers: Vec::new(), search: Vec::new() }
    }
}

impl Default for NetworkPlan {
    fn default() -> Self {
        Self::new()
    }
}
