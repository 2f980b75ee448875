//! `PemCertificate` and `PemPrivateKey`: PEM text for the node API's TLS
//! material, checked at decode time so a typo fails `apply`, not the next
//! TLS handshake. The original text is kept byte for byte.

use std::fmt;
use std::str::FromStr;

use x509_parser::error::PEMError;
use x509_parser::pem::Pem;

use crate::error::ValueError;
use crate::types::serde_util::text_serde;

fn pem_problem(err: &PEMError) -> String {
    match err {
        PEMError::Base64DecodeError => "the base64 data does not decode".to_owned(),
        PEMError::IncompletePEM => "the block has no \"-----END\" line".to_owned(),
        PEMError::InvalidHeader => "the \"-----BEGIN\" line is malformed".to_owned(),
        PEMError::MissingHeader => "no \"-----BEGIN\" line found".to_owned(),
        PEMError::IOError(err) => err.to_string(),
    }
}

/// Every PEM block in `s`, in order.
fn pem_blocks(s: &str) -> Result<Vec<Pem>, String> {
    let blocks = Pem::iter_from_buffer(s.as_bytes()).collect::<Result<Vec<_>, _>>().map_err(|err| pem_problem(&err))?;
    if blocks.is_empty() {
        return Err(pem_problem(&PEMError::MissingHeader));
    }
    Ok(blocks)
}

/// One or more PEM `CERTIFICATE` blocks that parse as X.509 (a leaf may
/// carry its chain).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PemCertificate(String);

impl PemCertificate {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for PemCertificate {
    type Err = ValueError;

    fn from_str(s: &str) -> Result<Self, ValueError> {
        if s.trim().is_empty() {
            return Err(ValueError::new("empty; expected a PEM certificate"));
        }
        let invalid = |reason: String| ValueError::new(format!("not a PEM certificate: {reason}"));
        for block in pem_blocks(s).map_err(invalid)? {
            if block.label != "CERTIFICATE" {
                return Err(invalid(format!("found a {:?} block; expected CERTIFICATE", block.label)));
            }
            block.parse_x509().map_err(|err| invalid(format!("the certificate does not parse as X.509: {err}")))?;
        }
        Ok(PemCertificate(s.to_owned()))
    }
}

impl fmt::Display for PemCertificate {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(&self.0)
    }
}

text_serde!(PemCertificate, "a PEM certificate");

/// Labels of the unencrypted key encodings rustls and rcgen read.
const KEY_LABELS: [&str; 3] = ["PRIVATE KEY", "EC PRIVATE KEY", "RSA PRIVATE KEY"];

/// One PEM private key block. The key itself is not parsed here (the PKI
/// crate does that); its `Debug` output is redacted.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct PemPrivateKey(String);

impl PemPrivateKey {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for PemPrivateKey {
    type Err = ValueError;

    fn from_str(s: &str) -> Result<Self, ValueError> {
        if s.trim().is_empty() {
            return Err(ValueError::new("empty; expected a PEM private key"));
        }
        let invalid = |reason: String| ValueError::new(format!("not a PEM private key: {reason}"));
        let blocks = pem_blocks(s).map_err(invalid)?;
        if blocks.len() > 1 {
            return Err(invalid(format!("found {} PEM blocks; expected exactly one", blocks.len())));
        }
        let block = &blocks[0];
        if block.label == "ENCRYPTED PRIVATE KEY" {
            return Err(invalid("encrypted keys are not supported".to_owned()));
        }
        if !KEY_LABELS.contains(&block.label.as_str()) {
            return Err(invalid(format!(
                "found a {:?} block; expected PRIVATE KEY, EC PRIVATE KEY or RSA PRIVATE KEY",
                block.label
            )));
        }
        if block.contents.is_empty() {
            return Err(invalid("the block is empty".to_owned()));
        }
        Ok(PemPrivateKey(s.to_owned()))
    }
}

impl fmt::Display for PemPrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for PemPrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("PemPrivateKey(<redacted>)")
    }
}

text_serde!(PemPrivateKey, "a PEM private key");

#[cfg(test)]
mod tests {
    use super::*;

    const CERT: &str = "-----BEGIN CERTIFICATE-----
MIIBMjCB5aADAgECAhQWc7SneFEW9p2b0P37fXnoNkDmrzAFBgMrZXAwDzENMAsG
A1UEAwwEdGVzdDAeFw0yNjExMjcxMjQyMDJaFw0zNjExMjQxMjQyMDJaMA8xDTAL
BgNVBAMMBHRlc3QwKjAFBgMrZXADIQD5vUHwSTtqgfk2pW35T0HZcuL4xFBbY16k
stLiQmHCZ6NTMFEwHQYDVR0OBBYEFC1uclmJMGD6PuN7sSAMNIS3n+yTMB8GA1Ud
IwQYMBaAFC1uclmJMGD6PuN7sSAMNIS3n+yTMA8GA1UdEwEB/wQFMAMBAf8wBQYD
K2VwA0EAKuL5vUMrNDhbZELmM5N2iXvi0+P/k/xubW1APnemk8dHW0qdHATLlzGY
lLMKiF36zep3ABCRdX71FnQZTMiwDg==
-----END CERTIFICATE-----
";

    const KEY: &str = "-----BEGIN PRIVATE KEY-----
MC4CAQAwBQYDK2VwBCIEILCK4sxmLpCbFm+mKVJZNlO2RQjOQOfHpMvQGim5rUSt
-----END PRIVATE KEY-----
";

    #[test]
    fn accepts_real_material() {
        assert_eq!(CERT.parse::<PemCertificate>().unwrap().as_str(), CERT);
        let chain = format!("{CERT}{CERT}");
        assert!(chain.parse::<PemCertificate>().is_ok());
        let key: PemPrivateKey = KEY.parse().unwrap();
        assert_eq!(key.as_str(), KEY);
        assert_eq!(format!("{key:?}"), "PemPrivateKey(<redacted>)");
    }

    #[test]
    fn rejects_bad_certificates() {
        for (bad, message) in [
            ("", "empty; expected a PEM certificate"),
            ("  \n", "empty; expected a PEM certificate"),
            ("hello", "not a PEM certificate: no \"-----BEGIN\" line found"),
            (KEY, "not a PEM certificate: found a \"PRIVATE KEY\" block; expected CERTIFICATE"),
            ("-----BEGIN CERTIFICATE-----\nAAAA\n", "not a PEM certificate: the block has no \"-----END\" line"),
            (
                "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n",
                "not a PEM certificate: the base64 data does not decode",
            ),
        ] {
            let err = bad.parse::<PemCertificate>().unwrap_err().to_string();
            assert_eq!(err, message);
        }
        let err = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"
            .parse::<PemCertificate>()
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("not a PEM certificate: the certificate does not parse as X.509"), "{err}");
    }

    #[test]
    fn rejects_bad_keys() {
        let err = CERT.parse::<PemPrivateKey>().unwrap_err().to_string();
        assert!(err.contains("found a \"CERTIFICATE\" block"), "{err}");
        let err = "".parse::<PemPrivateKey>().unwrap_err().to_string();
        assert_eq!(err, "empty; expected a PEM private key");
        let encrypted = KEY.replace("PRIVATE KEY", "ENCRYPTED PRIVATE KEY");
        let err = encrypted.parse::<PemPrivateKey>().unwrap_err().to_string();
        assert!(err.contains("encrypted keys are not supported"), "{err}");
        let two = format!("{KEY}{KEY}");
        assert!(two.parse::<PemPrivateKey>().is_err());
        let ec = KEY.replace("PRIVATE KEY", "EC PRIVATE KEY");
        assert!(ec.parse::<PemPrivateKey>().is_ok());
    }
}
