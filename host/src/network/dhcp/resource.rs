//! The operator resource: one per link the client runs on, with its state
//! and, while bound, the lease and its times.

use super::{DhcpState, Lease};
use crate::network::resources::NS_NETWORK;
use crate::state::types::resource;
use serde::{Deserialize, Serialize};
use std::time::SystemTime;

/// A link's DHCPv4 client; id = the link name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DhcpLeaseSpec {
    pub link: String,
    /// `selecting`, `requesting`, `rebooting`, `bound`, `renewing`,
    /// `rebinding` or `released`.
    pub state: DhcpState,
    /// The leased address (`10.0.2.15/24`); empty without a lease.
    pub address: String,
    /// The server identifier; empty without a lease.
    pub server: String,
    /// RFC 3339 times; empty without a lease.
    pub acquired: String,
    pub renew_at: String,
    pub rebind_at: String,
    pub expires_at: String,
    pub lease: Option<Lease>,
}

resource!(
    DhcpLeaseSpec,
    DHCP_LEASE,
    "DhcpLeases.bronze.dev",
    NS_NETWORK,
    sensitive = false,
    aliases = ["dhcplease", "dhcpleases"]
);

impl DhcpLeaseSpec {
    pub fn new(link: &str, state: DhcpState, lease: Option<&Lease>) -> Self {
        let time = |t: Option<SystemTime>| t.map(rfc3339).unwrap_or_default();
        Self {
            link: link.to_string(),
            state,
            address: lease.map(|l| l.address.to_string()).unwrap_or_default(),
            server: lease.map(|l| l.server.to_string()).unwrap_or_default(),
            acquired: time(lease.map(|l| l.acquired)),
            renew_at: time(lease.map(Lease::renew_at)),
            rebind_at: time(lease.map(Lease::rebind_at)),
            expires_at: time(lease.map(Lease::expires_at)),
            lease: lease.cloned(),
        }
    }

    pub fn id(&self) -> String {
        self.link.clone()
    }
}

fn rfc3339(t: SystemTime) -> String {
    time::OffsetDateTime::from(t).format(&time::format_description::well_known::Rfc3339).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn times_are_rfc3339_and_empty_without_a_lease() {
        let lease = Lease {
            link: "eth0".into(),
            hardware_address: "02:00:00:00:00:01".into(),
            address: "10.0.0.5/24".parse().unwrap(),
            server: "10.0.0.1".parse().unwrap(),
            routers: vec![],
            routes: vec![],
            dns: vec![],
            ntp: vec![],
            domain: None,
            search: vec![],
            hostname: None,
            mtu: None,
            lease_seconds: 120,
            t1: 60,
            t2: 105,
            acquired: UNIX_EPOCH + Duration::from_secs(1_800_000_000),
        };
        let spec = DhcpLeaseSpec::new("eth0", DhcpState::Bound, Some(&lease));
        assert_eq!(spec.acquired, "2027-01-15T08:00:00Z");
        assert_eq!(spec.renew_at, "2027-01-15T08:01:00Z");
        assert_eq!(spec.rebind_at, "2027-01-15T08:01:45Z");
        assert_eq!(spec.expires_at, "2027-01-15T08:02:00Z");
        assert_eq!(spec.address, "10.0.0.5/24");
        let json = serde_json::to_value(&spec).unwrap();
        assert_eq!(json["state"], "bound");
        assert_eq!(json["renewAt"], "2027-01-15T08:01:00Z");
        let none = DhcpLeaseSpec::new("eth0", DhcpState::Selecting, None);
        assert_eq!((none.address.as_str(), none.expires_at.as_str()), ("", ""));
        assert_eq!(DHCP_LEASE.namespace, "network");
    }
}
