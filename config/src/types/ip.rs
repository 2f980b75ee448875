//! `IpAddress`: a bare IPv4 or IPv6 address (gateways, nameservers).

use std::fmt;
use std::net::IpAddr;
use std::ops::Deref;
use std::str::FromStr;

use crate::error::ValueError;
use crate::types::serde_util::text_serde;

/// `std::net::IpAddr` with a config-friendly parse error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IpAddress(IpAddr);

impl IpAddress {
    pub fn addr(&self) -> IpAddr {
        self.0
    }
}

impl Deref for IpAddress {
    type Target = IpAddr;

    fn deref(&self) -> &IpAddr {
        &self.0
    }
}

impl FromStr for IpAddress {
    type Err = ValueError;

    fn from_str(s: &str) -> Result<Self, ValueError> {
        s.parse().map(IpAddress).map_err(|_| {
            ValueError::invalid("IP address", s, "expected an IPv4 or IPv6 address, like 10.0.0.1 or fd00::1")
        })
    }
}

impl fmt::Display for IpAddress {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl From<IpAddr> for IpAddress {
    fn from(addr: IpAddr) -> Self {
        IpAddress(addr)
    }
}

text_serde!(IpAddress, "an IP address, like 10.0.0.1 or fd00::1");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_families() {
        assert!("10.0.2.3".parse::<IpAddress>().unwrap().is_ipv4());
        assert!("fd00::1".parse::<IpAddress>().unwrap().is_ipv6());
        let err = "10.0.2".parse::<IpAddress>().unwrap_err().to_string();
        assert_eq!(err, "invalid IP address \"10.0.2\": expected an IPv4 or IPv6 address, like 10.0.0.1 or fd00::1");
    }
}
