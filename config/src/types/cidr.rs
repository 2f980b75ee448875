//! `Cidr`: an interface address or route network with its prefix length,
//! like `10.0.2.15/24`. The host bits are kept: `10.0.2.15/24` is an
//! address on a /24, not the network `10.0.2.0/24`.

use std::fmt;
use std::str::FromStr;

use ipnet::IpNet;

use crate::error::ValueError;
use crate::types::serde_util::text_serde;

const EXPECTED: &str = "expected an address with a prefix length, like 10.0.0.5/24";

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cidr(IpNet);

impl Cidr {
    pub fn net(&self) -> IpNet {
        self.0
    }

    pub fn addr(&self) -> std::net::IpAddr {
        self.0.addr()
    }

    pub fn prefix_len(&self) -> u8 {
        self.0.prefix_len()
    }

    pub fn is_ipv4(&self) -> bool {
        self.0.addr().is_ipv4()
    }
}

impl FromStr for Cidr {
    type Err = ValueError;

    fn from_str(s: &str) -> Result<Self, ValueError> {
        let invalid = |reason: &str| ValueError::invalid("CIDR", s, reason);
        let (addr, prefix) = s.split_once('/').ok_or_else(|| invalid(EXPECTED))?;
        let addr: std::net::IpAddr = addr.parse().map_err(|_| invalid(EXPECTED))?;
        if prefix.is_empty() || prefix.len() > 3 || !prefix.bytes().all(|b| b.is_ascii_digit()) {
            return Err(invalid(EXPECTED));
        }
        let prefix: u8 = prefix.parse().map_err(|_| invalid(EXPECTED))?;
        let (max, family) = if addr.is_ipv4() { (32, "IPv4") } else { (128, "IPv6") };
        let net = IpNet::new(addr, prefix).map_err(|_| {
            invalid(&format!("the prefix length {prefix} is longer than {max}, the maximum for {family}"))
        })?;
        Ok(Cidr(net))
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl From<IpNet> for Cidr {
    fn from(net: IpNet) -> Self {
        Cidr(net)
    }
}

text_serde!(Cidr, "an address with a prefix length, like 10.0.0.5/24");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_host_bits() {
        let c: Cidr = "10.0.2.15/24".parse().unwrap();
        assert_eq!(c.to_string(), "10.0.2.15/24");
        assert_eq!(c.prefix_len(), 24);
        let c: Cidr = "fd00::1/64".parse().unwrap();
        assert_eq!(c.to_string(), "fd00::1/64");
        assert!(!c.is_ipv4());
    }

    #[test]
    fn rejects_bad_cidrs() {
        for bad in ["10.0.0.5", "10.0.0.5/", "10.0.0.5/x", "garbage/24", "10.0.0.5/+1", ""] {
            let err = bad.parse::<Cidr>().unwrap_err().to_string();
            assert_eq!(err, format!("invalid CIDR {bad:?}: {EXPECTED}"));
        }
        let err = "10.0.0.5/33".parse::<Cidr>().unwrap_err().to_string();
        assert_eq!(err, "invalid CIDR \"10.0.0.5/33\": the prefix length 33 is longer than 32, the maximum for IPv4");
        assert!("fd00::1/129".parse::<Cidr>().is_err());
        assert!("fd00::1/128".parse::<Cidr>().is_ok());
    }
}
