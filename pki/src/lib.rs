//! Bronze's certificate authority work: the CA `bronzectl gen config` creates,
//! the node's server certificate, client certificates carrying roles, the
//! self-signed maintenance certificate, SPKI fingerprints, and reading a peer
//! certificate's identity (subject, roles, ClientAuth EKU).
//!
//! Keys are ECDSA P-256 by default, which every TLS stack offers (gRPC
//! core's BoringSSL does not offer Ed25519 by default); Ed25519 is there for
//! those who ask ([`KeyType`]). The node's minted server certificate follows
//! its CA's key type and the maintenance certificate is always P-256. Every
//! private key is written as PKCS#8 v1 (RFC 5208) PEM, which OpenSSL, gRPC
//! core and Python `cryptography` all read; v2 documents, as older Bronze
//! versions wrote for Ed25519, are still read (see [`keys`]).
//! This crate never touches the filesystem; callers decide where PEM goes.

#![forbid(unsafe_code)]

pub mod keys;

pub use keys::KeyType;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
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
    CaKey(String),
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
    #[error("unknown key type {0:?}: expected ecdsa-p256 or ed25519")]
    KeyType(String),
    #[error("cannot generate a key: the system random number generator failed")]
    Random,
}

/// A certificate and its private key, both PEM.
#[derive(Debug, Clone)]
pub struct CertAndKey {
    pub cert_pem: String,
    pub key_pem: String,
}

/// Creates a new self-signed CA with a `key_type` key.
pub fn generate_ca(common_name: &str, key_type: KeyType) -> Result<CertAndKey, PkiError> {
    let key = key_type.generate()?;
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
    pub key_type: KeyType,
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
            key_type: KeyType::default(),
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
    /// Loads a CA from PEM certificate and PEM private key (PKCS#8 v1 or
    /// v2, or SEC1 "EC PRIVATE KEY").
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, PkiError> {
        let key = keys::key_pair_from_pem(key_pem).map_err(PkiError::CaKey)?;
        let issuer = Issuer::from_ca_cert_pem(cert_pem, key).map_err(PkiError::CaCert)?;
        Ok(Self { issuer, cert_pem: cert_pem.to_string() })
    }

    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The key type certificates minted for the node follow: the CA's own.
    pub fn key_type(&self) -> KeyType {
        KeyType::following(self.issuer.key())
    }

    /// Mints a server certificate for the node's API, valid for `sans`
    /// (IP strings become IP SANs, anything else DNS SANs). Its key has the
    /// CA's key type, so an Ed25519 CA is Ed25519 throughout.
    pub fn issue_server(&self, common_name: &str, sans: &[String]) -> Result<CertAndKey, PkiError> {
        let key = self.key_type().generate()?;
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
        let key = spec.key_type.generate()?;
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
/// Always ECDSA P-256, so any TLS client can complete the handshake.
pub fn self_signed_server(sans: &[String]) -> Result<CertAndKey, PkiError> {
    let key = KeyType::EcdsaP256.generate()?;
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
    use rustls_pki_types::pem::PemObject;

    fn der(pem: &str) -> Vec<u8> {
        certs_from_pem(pem).unwrap().remove(0).to_vec()
    }

    #[test]
    fn client_cert_carries_roles_and_eku() {
        let ca = generate_ca("test", KeyType::default()).unwrap();
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
        let ca = generate_ca("test", KeyType::default()).unwrap();
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

    /// Checks `leaf` chains to `ca` with webpki, as rustls does in the
    /// node and in clients: proof that the CA key signed it.
    fn assert_chains(ca: &str, leaf: &CertAndKey, server: bool) {
        use rustls::client::WebPkiServerVerifier;
        use rustls::client::danger::ServerCertVerifier;
        use rustls::server::WebPkiClientVerifier;
        use rustls_pki_types::{ServerName, UnixTime};
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        roots.add(certs_from_pem(ca).unwrap().remove(0)).unwrap();
        let roots = std::sync::Arc::new(roots);
        let end_entity = certs_from_pem(&leaf.cert_pem).unwrap().remove(0);
        let now = UnixTime::now();
        if server {
            let verifier = WebPkiServerVerifier::builder_with_provider(roots, provider).build().unwrap();
            let name = ServerName::try_from("127.0.0.1").unwrap();
            verifier.verify_server_cert(&end_entity, &[], &name, &[], now).unwrap();
        } else {
            let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider).build().unwrap();
            verifier.verify_client_cert(&end_entity, &[], now).unwrap();
        }
    }

    /// The algorithm OID of a certificate's public key, dotted.
    fn key_oid(cert_pem: &str) -> String {
        let der = der(cert_pem);
        let (_, cert) = X509Certificate::from_der(&der).unwrap();
        cert.public_key().algorithm.algorithm.to_id_string()
    }

    const OID_EC: &str = "1.2.840.10045.2.1";
    const OID_ED25519: &str = "1.3.101.112";

    #[test]
    fn ecdsa_p256_is_the_default_everywhere() {
        let ca = generate_ca("test", KeyType::default()).unwrap();
        assert_eq!(key_oid(&ca.cert_pem), OID_EC);
        let authority = CertificateAuthority::from_pem(&ca.cert_pem, &ca.key_pem).unwrap();
        assert_eq!(authority.key_type(), KeyType::EcdsaP256);
        let server = authority.issue_server("node", &["127.0.0.1".into()]).unwrap();
        assert_eq!(key_oid(&server.cert_pem), OID_EC);
        assert_chains(&ca.cert_pem, &server, true);
        let client =
            authority.issue_client(&ClientCertSpec::new("c", &["os:reader".into()], DEFAULT_CLIENT_TTL)).unwrap();
        assert_eq!(key_oid(&client.cert_pem), OID_EC);
        assert_chains(&ca.cert_pem, &client, false);
        assert_eq!(key_oid(&self_signed_server(&["127.0.0.1".into()]).unwrap().cert_pem), OID_EC);
    }

    #[test]
    fn an_ed25519_ca_mints_ed25519_servers_and_clients_choose() {
        let ca = generate_ca("test", KeyType::Ed25519).unwrap();
        assert_eq!(key_oid(&ca.cert_pem), OID_ED25519);
        let authority = CertificateAuthority::from_pem(&ca.cert_pem, &ca.key_pem).unwrap();
        let server = authority.issue_server("node", &["127.0.0.1".into()]).unwrap();
        assert_eq!(key_oid(&server.cert_pem), OID_ED25519);
        assert_chains(&ca.cert_pem, &server, true);
        for key_type in KeyType::ALL {
            let mut spec = ClientCertSpec::new("c", &["os:admin".into()], DEFAULT_CLIENT_TTL);
            spec.key_type = key_type;
            let client = authority.issue_client(&spec).unwrap();
            let want = if key_type == KeyType::Ed25519 { OID_ED25519 } else { OID_EC };
            assert_eq!(key_oid(&client.cert_pem), want);
            assert_chains(&ca.cert_pem, &client, false);
        }
    }

    #[test]
    fn an_old_ed25519_pkcs8_v2_ca_still_loads_and_signs() {
        // Exactly what generate_ca wrote before keys became PKCS#8 v1:
        // rcgen's Ed25519 key, which ring serializes as v2.
        let key = KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, "old CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature];
        set_validity(&mut params, OffsetDateTime::now_utc(), LONG_TTL);
        let cert_pem = params.self_signed(&key).unwrap().pem();
        let key_pem = key.serialize_pem();
        let der = rustls_pki_types::PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).unwrap();
        assert_eq!(&der.secret_der()[2..5], &[0x02, 0x01, 0x01], "the fixture is no longer PKCS#8 v2");

        let authority = CertificateAuthority::from_pem(&cert_pem, &key_pem).unwrap();
        assert_eq!(authority.key_type(), KeyType::Ed25519);
        let server = authority.issue_server("node", &["127.0.0.1".into()]).unwrap();
        assert_chains(&cert_pem, &server, true);
        let client =
            authority.issue_client(&ClientCertSpec::new("c", &["os:admin".into()], DEFAULT_CLIENT_TTL)).unwrap();
        assert_chains(&cert_pem, &client, false);
    }

    #[test]
    fn bad_ca_keys_name_the_problem() {
        let ca = generate_ca("test", KeyType::default()).unwrap();
        let err = CertificateAuthority::from_pem(&ca.cert_pem, "nonsense").unwrap_err().to_string();
        assert!(err.starts_with("invalid CA key: not a PEM private key"), "{err}");
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
