//! A lease, and the checks that turn a server's DHCPACK into one.
//!
//! Everything a server sends is hostile. A value the lease cannot be used
//! without (the address, its mask, the server identifier, the lease time)
//! rejects the ACK with an error that names the field; a value that is
//! merely wrong (a multicast router, a hostname that is not a DNS name, a
//! tiny MTU, 500 routes) is dropped with a warning and the lease is kept.
//! Warnings name the option and carry the server's text escaped.

use super::escaped;
use super::machine::Rejected;
use bronze_config::Cidr;
use dhcproto::v4::{DhcpOption, Message, OptionCode};
use serde::{Deserialize, Serialize};
use std::net::Ipv4Addr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The shortest lease the client accepts; shorter ones are raised to it.
pub const MIN_LEASE_SECONDS: u32 = 10;
/// At most this many routers, DNS servers and NTP servers are kept each.
pub const MAX_SERVERS: usize = 8;
/// At most this many classless static routes (option 121); more and the
/// option is ignored.
pub const MAX_ROUTES: usize = 64;
/// At most this many search domains (option 119) are kept.
pub const MAX_SEARCH: usize = 16;
/// MTUs below this are ignored (like systemd-networkd): a server that
/// sends one is broken, and a link at 68 bytes is useless.
pub const MIN_MTU: u16 = 576;

/// One classless static route (option 121).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DhcpRoute {
    /// The destination network, host bits clear, e.g. `10.20.0.0/16`.
    pub destination: Cidr,
    /// `None`: the destination is on the link (gateway 0.0.0.0).
    pub gateway: Option<Ipv4Addr>,
}

/// A DHCPv4 lease on one link, as bound.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Lease {
    pub link: String,
    /// The link's MAC when the lease was bound, `aa:bb:cc:dd:ee:ff`; a kept
    /// lease for another MAC is not used.
    pub hardware_address: String,
    /// The leased address with the prefix length from the subnet mask.
    pub address: Cidr,
    /// The server identifier (option 54): where renewals and the release go.
    pub server: Ipv4Addr,
    /// Option 3; empty when option 121 is present (RFC 3442).
    pub routers: Vec<Ipv4Addr>,
    /// Option 121.
    pub routes: Vec<DhcpRoute>,
    pub dns: Vec<Ipv4Addr>,
    pub ntp: Vec<Ipv4Addr>,
    pub domain: Option<String>,
    pub search: Vec<String>,
    pub hostname: Option<String>,
    pub mtu: Option<u32>,
    pub lease_seconds: u32,
    /// Renewal time (T1), seconds after `acquired`.
    pub t1: u32,
    /// Rebinding time (T2), seconds after `acquired`.
    pub t2: u32,
    /// When the ACK arrived (whole seconds; stored as seconds since the epoch).
    #[serde(with = "unix_seconds")]
    pub acquired: SystemTime,
}

impl Lease {
    pub fn renew_at(&self) -> SystemTime {
        self.acquired + Duration::from_secs(self.t1.into())
    }

    pub fn rebind_at(&self) -> SystemTime {
        self.acquired + Duration::from_secs(self.t2.into())
    }

    pub fn expires_at(&self) -> SystemTime {
        self.acquired + Duration::from_secs(self.lease_seconds.into())
    }

    /// How long the lease has left at `now`; `None` once expired (or when
    /// `now` is before `acquired`, which a clock step can cause: trusted
    /// only for the lease length).
    pub fn remaining(&self, now: SystemTime) -> Option<Duration> {
        let left = self.expires_at().duration_since(now).ok().filter(|d| !d.is_zero())?;
        (left <= Duration::from_secs(self.lease_seconds.into())).then_some(left)
    }

    /// The leased address without its prefix.
    pub fn ip(&self) -> Ipv4Addr {
        match self.address.addr() {
            std::net::IpAddr::V4(ip) => ip,
            std::net::IpAddr::V6(_) => Ipv4Addr::UNSPECIFIED,
        }
    }
}

mod unix_seconds {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    pub fn serialize<S: Serializer>(time: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(time.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SystemTime, D::Error> {
        let secs = u64::deserialize(d)?;
        UNIX_EPOCH.checked_add(Duration::from_secs(secs)).ok_or_else(|| serde::de::Error::custom("time out of range"))
    }
}

/// `t` cut to whole seconds, so a lease reads back equal to what was stored.
pub fn whole_seconds(t: SystemTime) -> SystemTime {
    let secs = t.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    UNIX_EPOCH + Duration::from_secs(secs)
}

/// `mac` as `aa:bb:cc:dd:ee:ff`.
pub fn mac_text(mac: &[u8; 6]) -> String {
    mac.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

/// Whether `ip` can be a host's address or a gateway: not 0.0.0.0, the
/// limited broadcast, multicast, loopback or class E.
pub fn is_unicast(ip: Ipv4Addr) -> bool {
    !(ip.is_unspecified() || ip.is_broadcast() || ip.is_multicast() || ip.is_loopback() || ip.octets()[0] >= 240)
}

/// The prefix length of a contiguous mask (`255.255.255.0` → 24).
pub fn mask_prefix(mask: Ipv4Addr) -> Option<u8> {
    let bits = u32::from(mask);
    let prefix = bits.leading_ones();
    (bits.checked_shl(prefix).unwrap_or(0) == 0).then_some(prefix as u8)
}

/// Whether `name` is a DNS name we pass on: at most 253 bytes, labels of
/// 1..=63 letters, digits and hyphens, not starting or ending with a
/// hyphen; one trailing dot allowed.
pub fn is_dns_name(name: &str) -> bool {
    let name = name.strip_suffix('.').unwrap_or(name);
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// The lease in a DHCPACK (already matched to our request), with
/// warnings for what was dropped.
pub fn lease_from_ack(
    msg: &Message,
    link: &str,
    mac: &[u8; 6],
    acquired: SystemTime,
) -> Result<(Lease, Vec<String>), Rejected> {
    let mut warnings = Vec::new();
    let opts = msg.opts();
    let yiaddr = msg.yiaddr();
    if !is_unicast(yiaddr) {
        return Err(Rejected::BadAddress { field: "yiaddr", value: yiaddr });
    }
    let server = match opts.get(OptionCode::ServerIdentifier) {
        Some(DhcpOption::ServerIdentifier(ip)) => *ip,
        _ => return Err(Rejected::MissingOption { code: 54, name: "server identifier" }),
    };
    if !is_unicast(server) {
        return Err(Rejected::BadAddress { field: "server identifier (option 54)", value: server });
    }
    let prefix = match opts.get(OptionCode::SubnetMask) {
        Some(DhcpOption::SubnetMask(mask)) => match mask_prefix(*mask) {
            Some(p) if (1..=32).contains(&p) => p,
            _ => return Err(Rejected::BadMask { value: *mask }),
        },
        // No mask: the classful default (RFC 2131 leaves it to the client).
        _ => {
            let p = match yiaddr.octets()[0] {
                0..=127 => 8,
                128..=191 => 16,
                _ => 24,
            };
            warnings.push(format!("no subnet mask (option 1): using /{p} for {yiaddr}"));
            p
        }
    };
    if prefix <= 30 {
        let host_bits = u32::from(yiaddr) & (u32::MAX >> prefix);
        if host_bits == 0 || host_bits == u32::MAX >> prefix {
            return Err(Rejected::BadAddress {
                field: "yiaddr (network or broadcast address of its subnet)",
                value: yiaddr,
            });
        }
    }
    let address: Cidr = format!("{yiaddr}/{prefix}").parse().map_err(|_| Rejected::BadMask { value: yiaddr })?;

    let lease_seconds = match opts.get(OptionCode::AddressLeaseTime) {
        Some(DhcpOption::AddressLeaseTime(secs)) => *secs,
        _ => return Err(Rejected::MissingOption { code: 51, name: "lease time" }),
    };
    let lease_seconds = if lease_seconds < MIN_LEASE_SECONDS {
        warnings.push(format!("lease time (option 51) {lease_seconds} s raised to {MIN_LEASE_SECONDS} s"));
        MIN_LEASE_SECONDS
    } else {
        lease_seconds
    };
    let default_t1 = lease_seconds / 2;
    let default_t2 = (u64::from(lease_seconds) * 7 / 8) as u32;
    let t1 = match opts.get(OptionCode::Renewal) {
        Some(DhcpOption::Renewal(t)) => Some(*t),
        _ => None,
    };
    let t2 = match opts.get(OptionCode::Rebinding) {
        Some(DhcpOption::Rebinding(t)) => Some(*t),
        _ => None,
    };
    let (t1, t2) = match (t1, t2) {
        (None, None) => (default_t1, default_t2),
        (t1, t2) => {
            let (a, b) = (t1.unwrap_or(default_t1), t2.unwrap_or(default_t2));
            if 0 < a && a < b && b < lease_seconds {
                (a, b)
            } else {
                warnings.push(format!(
                    "renewal time (option 58) {a} s and rebinding time (option 59) {b} s are not \
                     0 < T1 < T2 < lease time {lease_seconds} s: using {default_t1} s and {default_t2} s"
                ));
                (default_t1, default_t2)
            }
        }
    };

    let routes = classless_routes(msg, &mut warnings);
    let routers = if routes.is_empty() {
        servers(msg, OptionCode::Router, "router (option 3)", &mut warnings)
    } else {
        Vec::new()
    };
    let dns = servers(msg, OptionCode::DomainNameServer, "DNS server (option 6)", &mut warnings);
    let ntp = servers(msg, OptionCode::NtpServers, "NTP server (option 42)", &mut warnings);
    let hostname = name_option(opts.get(OptionCode::Hostname), "hostname (option 12)", &mut warnings);
    let domain = name_option(opts.get(OptionCode::DomainName), "domain name (option 15)", &mut warnings);
    let mut search = Vec::new();
    if let Some(DhcpOption::DomainSearch(names)) = opts.get(OptionCode::DomainSearch) {
        for name in names {
            let text = name.to_ascii();
            let text = text.strip_suffix('.').unwrap_or(&text).to_string();
            if search.len() == MAX_SEARCH {
                warnings.push(format!("domain search (option 119): more than {MAX_SEARCH} names, the rest ignored"));
                break;
            } else if is_dns_name(&text) {
                search.push(text.to_ascii_lowercase());
            } else {
                warnings.push(format!("domain search (option 119): {} is not a DNS name, ignored", escaped(&text)));
            }
        }
    }
    let mtu = match opts.get(OptionCode::InterfaceMtu) {
        Some(DhcpOption::InterfaceMtu(mtu)) if *mtu >= MIN_MTU => Some(u32::from(*mtu)),
        Some(DhcpOption::InterfaceMtu(mtu)) => {
            warnings.push(format!("interface MTU (option 26) {mtu} is below {MIN_MTU}, ignored"));
            None
        }
        _ => None,
    };
    let lease = Lease {
        link: link.to_string(),
        hardware_address: mac_text(mac),
        address,
        server,
        routers,
        routes,
        dns,
        ntp,
        domain,
        search,
        hostname,
        mtu,
        lease_seconds,
        t1,
        t2,
        acquired: whole_seconds(acquired),
    };
    Ok((lease, warnings))
}

/// Up to [`MAX_SERVERS`] unicast addresses of an address-list option.
fn servers(msg: &Message, code: OptionCode, what: &str, warnings: &mut Vec<String>) -> Vec<Ipv4Addr> {
    let list = match msg.opts().get(code) {
        Some(DhcpOption::Router(l) | DhcpOption::DomainNameServer(l) | DhcpOption::NtpServers(l)) => l,
        _ => return Vec::new(),
    };
    let mut out = Vec::new();
    for ip in list {
        if !is_unicast(*ip) {
            warnings.push(format!("{what} {ip} is not a unicast address, ignored"));
        } else if out.len() == MAX_SERVERS {
            warnings.push(format!("{what}: more than {MAX_SERVERS} addresses, the rest ignored"));
            break;
        } else if !out.contains(ip) {
            out.push(*ip);
        }
    }
    out
}

fn name_option(opt: Option<&DhcpOption>, what: &str, warnings: &mut Vec<String>) -> Option<String> {
    let text = match opt {
        Some(DhcpOption::Hostname(s) | DhcpOption::DomainName(s)) => s,
        _ => return None,
    };
    let trimmed = text.trim_end_matches('\0');
    if is_dns_name(trimmed) {
        Some(trimmed.strip_suffix('.').unwrap_or(trimmed).to_ascii_lowercase())
    } else {
        warnings.push(format!("{what} {} is not a DNS name of at most 253 bytes, ignored", escaped(text)));
        None
    }
}

/// Option 121 (RFC 3442); an empty list when absent or ignored.
fn classless_routes(msg: &Message, warnings: &mut Vec<String>) -> Vec<DhcpRoute> {
    let Some(DhcpOption::ClasslessStaticRoute(list)) = msg.opts().get(OptionCode::ClasslessStaticRoute) else {
        return Vec::new();
    };
    if list.len() > MAX_ROUTES {
        warnings.push(format!(
            "classless static routes (option 121): {} routes, more than {MAX_ROUTES}: option ignored",
            list.len()
        ));
        return Vec::new();
    }
    let mut routes = Vec::new();
    for (net, gateway) in list {
        let net = net.trunc();
        let destination: Cidr = match format!("{}/{}", net.addr(), net.prefix_len()).parse() {
            Ok(c) => c,
            Err(_) => continue,
        };
        let gateway = if gateway.is_unspecified() {
            None
        } else if is_unicast(*gateway) {
            Some(*gateway)
        } else {
            warnings.push(format!(
                "classless static route (option 121) to {net} via {gateway}: gateway is not unicast, ignored"
            ));
            continue;
        };
        let route = DhcpRoute { destination, gateway };
        if !routes.contains(&route) {
            routes.push(route);
        }
    }
    routes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_and_names() {
        assert_eq!(mask_prefix(Ipv4Addr::new(255, 255, 255, 0)), Some(24));
        assert_eq!(mask_prefix(Ipv4Addr::new(255, 255, 255, 255)), Some(32));
        assert_eq!(mask_prefix(Ipv4Addr::new(0, 0, 0, 0)), Some(0));
        assert_eq!(mask_prefix(Ipv4Addr::new(255, 0, 255, 0)), None);
        assert_eq!(mask_prefix(Ipv4Addr::new(255, 255, 255, 1)), None);
        assert!(is_dns_name("node-1.example.com"));
        assert!(is_dns_name("example.com."));
        assert!(!is_dns_name("-bad.example.com"));
        assert!(!is_dns_name("a..b"));
        assert!(!is_dns_name("evil\x1b[31m"));
        assert!(!is_dns_name(&"a".repeat(64)));
        assert!(!is_dns_name(&["abc"; 64].join(".")));
        assert!(is_unicast(Ipv4Addr::new(10, 0, 0, 1)));
        for bad in [[0, 0, 0, 0], [255, 255, 255, 255], [224, 0, 0, 1], [127, 0, 0, 1], [240, 0, 0, 1]] {
            assert!(!is_unicast(Ipv4Addr::from(bad)), "{bad:?}");
        }
    }

    #[test]
    fn a_lease_reads_back_equal() {
        let lease = Lease {
            link: "eth0".into(),
            hardware_address: "02:00:00:00:00:01".into(),
            address: "10.0.0.5/24".parse().unwrap(),
            server: Ipv4Addr::new(10, 0, 0, 1),
            routers: vec![Ipv4Addr::new(10, 0, 0, 1)],
            routes: vec![DhcpRoute { destination: "10.9.0.0/16".parse().unwrap(), gateway: None }],
            dns: vec![],
            ntp: vec![],
            domain: Some("example.com".into()),
            search: vec![],
            hostname: None,
            mtu: Some(1400),
            lease_seconds: 120,
            t1: 60,
            t2: 105,
            acquired: whole_seconds(SystemTime::now()),
        };
        let json = serde_json::to_string(&lease).unwrap();
        assert!(json.contains("\"hardwareAddress\":\"02:00:00:00:00:01\""), "{json}");
        assert!(json.contains("\"leaseSeconds\":120"), "{json}");
        assert_eq!(serde_json::from_str::<Lease>(&json).unwrap(), lease);
        assert!(lease.remaining(lease.acquired + Duration::from_secs(119)).is_some());
        assert!(lease.remaining(lease.acquired + Duration::from_secs(120)).is_none());
        assert!(lease.remaining(lease.acquired - Duration::from_secs(1)).is_none());
    }
}
