//! Bronze's certificate authority work: the CA `bronzectl gen config` creates,
//! the node's server certificate, client certificates carrying roles, the
//! self-signed maintenance certificate, SPKI fingerprints, and reading a peer
//! certificate's identity (subject, roles, ClientAuth EKU).
//!
//! Keys are Ed25519 throughout: small, fast, and supported by rustls + ring.
//! This crate never touches the filesystem; callers decide where PEM goes.

#![forbid(unsafe_code)]

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    PKCS_ED25519,
};
use rustls_pki_types::CertificateDer;
use sha2::{Digest, Sha256};
use std::time::Duration;
use time::OffsetDateTime;
use x509_parser::prelude::{FromDer, X509Certificate};

/// The roles Bronze knows, in decreasing privilege.
pub const ROLES: [&str; 3] = ["os:admin", "os:operator", "os:reader"];

/// How far back certificates are back-dated, so a node whose clock is a
/// little behind still accepts them.
const BACKDATE: Duration = Duration::from_secs(3600);

/// Default lifetime of client certificates (one year).
pub const DEFAULT_CLIENT_TTL: Duration = Duration::from_secs(365 * 24 * 3600);

/// Lifetime of the CA and of node server certificates (ten years).
const LONG_TTL: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("invalid CA key: {0}")]
    CaKey(rcgen::Error),
    #[error("invalid CA certificate: {0}")]
    CaCert(rcgen::Error),
    #[error("not a PEM certificate: {0}")]
    Pem(String),
    #[error("certificate is not valid DER: {0}")]
    Der(String),
    #[error("invalid fingerprint {0:?}: expected 64 hex digits (colons allowed, optional sha256: prefix)")]
    Fingerprint(String),
    #[error("unknown role {0:?}: expected one of os:admin, os:operator, os:reader")]
    Role(String),
    #[error("ttl must be positive")]
    Ttl,
}

/// A certificate and its private key, both PEM.
#[derive(Debug, Clone)]
pub struct CertAndKey {
    pub cert_pem: String,
    pub key_pem: String,
}

/// Creates a new self-signed Ed25519 CA.
pub fn generate_ca(common_name: &str) -> Result<CertAndKey, PkiError> {
    let key = KeyPair::generate_for(&PKCS_ED25519)?;
    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, common_name);
    params.distinguished_name.push(DnType::OrganizationName, "bronze");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    set_validity(&mut params, OffsetDateTime::now_utc(), LONG_TTL);
    let cert = params.self_signed(&key)?;
    Ok(CertAndKey { cert_pem: cert.pem(), key_pem: key.serialize_pem() })
}

/// What a client certificate should say. Tests use the knobs to mint bad
/// certificates (expired, no EKU, no role) from a real CA.
#[derive(Debug, Clone)]
pub struct ClientCertSpec {
    pub common_name: String,
    pub roles: Vec<String>,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
    pub client_auth_eku: bool,
}

impl ClientCertSpec {
    /// A normal client certificate valid from now for `ttl`.
    pub fn new(common_name: &str, roles: &[String], ttl: Duration) -> Self {
        let now = OffsetDateTime::now_utc();
        Self {
            common_name: common_name.to_string(),
            roles: roles.to_vec(),
            not_before: now - BACKDATE,
            not_after: now + ttl,
            client_auth_eku: true,
        }
    }
}

/// A CA that can sign: its certificate plus private key.
pub struct CertificateAuthority {
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
}

impl std::fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertificateAuthority").finish_non_exhaustive()
    }
}

impl CertificateAuthority {
    /// Loads a CA from PEM certificate and PEM private key.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, PkiError> {
        let key = KeyPair::from_pem(key_pem).map_err(PkiError::CaKey)?;
        let issuer = Issuer::from_ca_cert_pem(cert_pem, key).map_err(PkiError::CaCert)?;
        Ok(Self { issuer, cert_pem: cert_pem.to_string() })
    }

    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// Mints a server certificate for the node's API, valid for `sans`
    /// (IP strings become IP SANs, anything else DNS SANs).
    pub fn issue_server(&self, common_name: &str, sans: &[String]) -> Result<CertAndKey, PkiError> {
        let key = KeyPair::generate_for(&PKCS_ED25519)?;
        let mut params = CertificateParams::new(sans.to_vec())?;
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, common_name);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.use_authority_key_identifier_extension = true;
        set_validity(&mut params, OffsetDateTime::now_utc(), LONG_TTL);
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(CertAndKey { cert_pem: cert.pem(), key_pem: key.serialize_pem() })
    }

    /// Mints a client certificate; roles become Organization values.
    pub fn issue_client(&self, spec: &ClientCertSpec) -> Result<CertAndKey, PkiError> {
        if spec.not_after <= spec.not_before {
            return Err(PkiError::Ttl);
        }
        let key = KeyPair::generate_for(&PKCS_ED25519)?;
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, spec.common_name.as_str());
        // rcgen keeps one value per attribute type, so a certificate carries
        // one Organization. Roles nest (admin ⊇ operator ⊇ reader), so the
        // highest requested role says everything the others would.
        if let Some(role) = highest_role(&spec.roles) {
            params.distinguished_name.push(DnType::OrganizationName, role);
        }
        if spec.client_auth_eku {
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        }
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.use_authority_key_identifier_extension = true;
        params.not_before = spec.not_before;
        params.not_after = spec.not_after;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(CertAndKey { cert_pem: cert.pem(), key_pem: key.serialize_pem() })
    }
}

/// Checks that every role is one Bronze knows.
pub fn check_roles(roles: &[String]) -> Result<(), PkiError> {
    match roles.iter().find(|r| !ROLES.contains(&r.as_str())) {
        Some(bad) => Err(PkiError::Role(bad.clone())),
        None => Ok(()),
    }
}

/// The most privileged known role among `roles` (roles nest: admin ⊇
/// operator ⊇ reader).
pub fn highest_role(roles: &[String]) -> Option<&'static str> {
    ROLES.into_iter().find(|known| roles.iter().any(|r| r == known))
}

/// A self-signed server certificate for maintenance mode, where no CA exists
/// yet. Clients pin its SPKI fingerprint instead of verifying a chain.
pub fn self_signed_server(sans: &[String]) -> Result<CertAndKey, PkiError> {
    let key = KeyPair::generate_for(&PKCS_ED25519)?;
    let mut params = CertificateParams::new(sans.to_vec())?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, "bronze maintenance");
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    set_validity(&mut params, OffsetDateTime::now_utc(), LONG_TTL);
    let cert = params.self_signed(&key)?;
    Ok(CertAndKey { cert_pem: cert.pem(), key_pem: key.serialize_pem() })
}

fn set_validity(params: &mut CertificateParams, now: OffsetDateTime, ttl: Duration) {
    params.not_before = now - BACKDATE;
    params.not_after = now + ttl;
}

/// Decodes every CERTIFICATE block of a PEM string.
pub fn certs_from_pem(pem: &str) -> Result<Vec<CertificateDer<'static>>, PkiError> {
    use rustls_pki_types::pem::PemObject;
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| PkiError::Pem(e.to_string()))?;
    if certs.is_empty() {
        return Err(PkiError::Pem("no CERTIFICATE block found".into()));
    }
    Ok(certs)
}

/// SHA-256 over the certificate's SubjectPublicKeyInfo, lowercase hex. Stable
/// across re-issues with the same key, which is what a pin should follow.
pub fn spki_fingerprint(cert_der: &[u8]) -> Result<String, PkiError> {
    let (_, cert) = X509Certificate::from_der(cert_der).map_err(|e| PkiError::Der(e.to_string()))?;
    Ok(hex::encode(Sha256::digest(cert.tbs_certificate.subject_pki.raw)))
}

/// Parses an operator-given fingerprint: 64 hex digits, any case, colons
/// allowed, optional `sha256:` prefix.
pub fn parse_fingerprint(text: &str) -> Result<String, PkiError> {
    let trimmed = text.trim();
    let body = trimmed.strip_prefix("sha256:").or_else(|| trimmed.strip_prefix("SHA256:")).unwrap_or(trimmed);
    let hex_digits: String = body.chars().filter(|c| *c != ':').collect::<String>().to_ascii_lowercase();
    if hex_digits.len() != 64 || !hex_digits.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(PkiError::Fingerprint(text.to_string()));
    }
    Ok(hex_digits)
}

/// Who a client certificate says it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerIdentity {
    /// The subject DN as text, e.g. "CN=admin, O=os:admin".
    pub subject: String,
    /// Organization values (all of them; callers filter known roles).
    pub organizations: Vec<String>,
    /// Whether the extended key usage extension lists ClientAuth. Absent EKU
    /// counts as false: Bronze requires the purpose to be explicit.
    pub client_auth: bool,
    /// End of validity, seconds since the Unix epoch.
    pub not_after_unix: i64,
}

/// Reads subject, organizations and EKU from a DER certificate.
pub fn peer_identity(cert_der: &[u8]) -> Result<PeerIdentity, PkiError> {
    let (_, cert) = X509Certificate::from_der(cert_der).map_err(|e| PkiError::Der(e.to_string()))?;
    let organizations =
        cert.subject().iter_organization().filter_map(|o| o.as_str().ok().map(str::to_string)).collect();
    let client_auth = matches!(cert.extended_key_usage(), Ok(Some(eku)) if eku.value.client_auth);
    let not_after_unix = cert.validity().not_after.timestamp();
    Ok(PeerIdentity { subject: cert.subject().to_string(), organizations, client_auth, not_after_unix })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn der(pem: &str) -> Vec<u8> {
        certs_from_pem(pem).unwrap().remove(0).to_vec()
    }

    #[test]
    fn client_cert_carries_roles_and_eku() {
        let ca = generate_ca("test").unwrap();
        let ca = CertificateAuthority::from_pem(&ca.cert_pem, &ca.key_pem).unwrap();
        let roles = vec!["os:reader".to_string(), "os:operator".to_string()];
        let client = ca.issue_client(&ClientCertSpec::new("bob", &roles, DEFAULT_CLIENT_TTL)).unwrap();
        let id = peer_identity(&der(&client.cert_pem)).unwrap();
        assert_eq!(id.organizations, vec!["os:operator".to_string()]);
        assert!(id.client_auth);
        assert!(id.subject.contains("CN=bob"), "{}", id.subject);
    }

    #[test]
    fn missing_eku_is_reported() {
        let ca = generate_ca("test").unwrap();
        let ca = CertificateAuthority::from_pem(&ca.cert_pem, &ca.key_pem).unwrap();
        let mut spec = ClientCertSpec::new("x", &["os:admin".into()], DEFAULT_CLIENT_TTL);
        spec.client_auth_eku = false;
        let c = ca.issue_client(&spec).unwrap();
        assert!(!peer_identity(&der(&c.cert_pem)).unwrap().client_auth);
    }

    #[test]
    fn fingerprint_parsing_accepts_common_forms() {
        let fp = "ab".repeat(32);
        assert_eq!(parse_fingerprint(&fp).unwrap(), fp);
        let colons = fp
            .as_bytes()
            .chunks(2)
            .map(|c| std::str::from_utf8(c).unwrap().to_uppercase())
            .collect::<Vec<_>>()
            .join(":");
        assert_eq!(parse_fingerprint(&format!("sha256:{colons}")).unwrap(), fp);
        assert!(parse_fingerprint("abc").is_err());
        assert!(parse_fingerprint(&"zz".repeat(32)).is_err());
    }

    #[test]
    fn spki_fingerprint_follows_the_key() {
        let a = self_signed_server(&["127.0.0.1".into()]).unwrap();
        let b = self_signed_server(&["127.0.0.1".into()]).unwrap();
        let fa = spki_fingerprint(&der(&a.cert_pem)).unwrap();
        assert_eq!(fa.len(), 64);
        assert_ne!(fa, spki_fingerprint(&der(&b.cert_pem)).unwrap());
    }

    #[test]
    fn unknown_roles_are_refused() {
        assert!(check_roles(&["os:admin".into()]).is_ok());
        assert_eq!(
            check_roles(&["root".into()]).unwrap_err().to_string(),
            "unknown role \"root\": expected one of os:admin, os:operator, os:reader"
        );
    }
}
