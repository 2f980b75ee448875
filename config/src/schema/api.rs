//! `machine.api`: the TLS material of the node API. The CA certificate is
//! always needed (it verifies clients); the node's own server certificate is
//! either given or minted from the CA key.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::ValueError;
use crate::types::serde_util::{nullable, text_serde};
use crate::types::{Hostname, PemCertificate, PemPrivateKey};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, expecting = "a mapping")]
pub struct Api {
    pub ca: Ca,
    /// The node's server certificate; minted from `ca.key` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crt: Option<PemCertificate>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<PemPrivateKey>,
    /// Extra subject alternative names for a minted server certificate.
    #[serde(rename = "certSANs", default, deserialize_with = "nullable", skip_serializing_if = "Vec::is_empty")]
    pub cert_sans: Vec<CertSan>,
}

impl Api {
    pub fn new(ca: Ca) -> Self {
        Api { ca, crt: None, key: None, cert_sans: Vec::new() }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, expecting = "a mapping")]
pub struct Ca {
    pub crt: PemCertificate,
    /// Needed to mint the node's server certificate and client certificates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<PemPrivateKey>,
}

/// A subject alternative name: an IP address or a DNS name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CertSan {
    Ip(IpAddr),
    Dns(Hostname),
}

impl FromStr for CertSan {
    type Err = ValueError;

    fn from_str(s: &str) -> Result<Self, ValueError> {
        if let Ok(ip) = s.parse::<IpAddr>() {
            return Ok(CertSan::Ip(ip));
        }
        s.parse::<Hostname>().map(CertSan::Dns).map_err(|_| {
            ValueError::invalid(
                "certificate SAN",
                s,
                "expected an IP address or a DNS name, like 10.0.0.5 or node1.example",
            )
        })
    }
}

impl fmt::Display for CertSan {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            CertSan::Ip(ip) => write!(f, "{ip}"),
            CertSan::Dns(name) => f.write_str(name.as_str()),
        }
    }
}

text_serde!(CertSan, "an IP address or a DNS name");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cert_sans() {
        assert!(matches!("10.0.0.5".parse::<CertSan>(), Ok(CertSan::Ip(_))));
        assert!(matches!("fd00::5".parse::<CertSan>(), Ok(CertSan::Ip(_))));
        assert!(matches!("node1.example".parse::<CertSan>(), Ok(CertSan::Dns(_))));
        let err = "bad name".parse::<CertSan>().unwrap_err().to_string();
        assert_eq!(
            err,
            "invalid certificate SAN \"bad name\": expected an IP address or a DNS name, like 10.0.0.5 or node1.example"
        );
    }
}
