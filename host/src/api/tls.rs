//! TLS for the API: the rustls server configs of maintenance mode
//! (self-signed, no client certificate) and secure mode (node certificate
//! from the machine config's CA, client certificate requested), swapped at
//! run time without restarting the listener.
//!
//! In secure mode the handshake *requests* a client certificate and checks
//! that the client holds its key, but the chain is verified per request by
//! the authorization layer. That way a bad certificate gets a gRPC
//! `Unauthenticated` status that says what is wrong (expired, unknown CA)
//! instead of an opaque TLS alert. No request reaches a service without
//! passing that layer.

use bronze_config::MachineConfig;
use bronze_pki::{CertAndKey, CertificateAuthority};
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use std::net::SocketAddr;
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("machine.api.ca.crt: {0}")]
    CaCert(String),
    #[error("machine.api.ca.key is required to mint the node certificate: {0}")]
    Mint(String),
    #[error("machine.api.crt/key: {0}")]
    NodeCert(String),
    #[error("tls setup: {0}")]
    Rustls(#[from] rustls::Error),
}

pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn base_builder() -> rustls::ConfigBuilder<ServerConfig, rustls::WantsVerifier> {
    // Only TLS 1.3: the API has no legacy clients to serve.
    ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("ring supports TLS 1.3")
}

fn finish(mut config: ServerConfig) -> Arc<ServerConfig> {
    config.alpn_protocols = vec![b"h2".to_vec()];
    Arc::new(config)
}

fn key_from_pem(pem: &str) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_slice(pem.as_bytes()).map_err(|e| format!("private key: {e}"))
}

/// Maintenance mode: the self-signed certificate, no client certificates.
pub fn maintenance_server_config(cert: &CertAndKey) -> Result<Arc<ServerConfig>, TlsError> {
    let chain = bronze_pki::certs_from_pem(&cert.cert_pem).map_err(|e| TlsError::NodeCert(e.to_string()))?;
    let key = key_from_pem(&cert.key_pem).map_err(TlsError::NodeCert)?;
    Ok(finish(base_builder().with_no_client_auth().with_single_cert(chain, key)?))
}

/// What secure mode needs: the server config and the verifier the
/// authorization layer checks client chains with.
pub struct SecureTls {
    pub server_config: Arc<ServerConfig>,
    pub client_verifier: Arc<dyn ClientCertVerifier>,
}

/// Secure mode from the machine config: the node certificate is taken from
/// `machine.api.crt/key` or minted from the CA key for the SANs.
pub fn secure_server_config(config: &MachineConfig, listen: SocketAddr) -> Result<SecureTls, TlsError> {
    let api = &config.machine.api;
    let ca_pem = api.ca.crt.as_str();
    let mut roots = RootCertStore::empty();
    for cert in bronze_pki::certs_from_pem(ca_pem).map_err(|e| TlsError::CaCert(e.to_string()))? {
        roots.add(cert).map_err(|e| TlsError::CaCert(e.to_string()))?;
    }
    let client_verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
        .allow_unauthenticated()
        .build()
        .map_err(|e| TlsError::CaCert(e.to_string()))?;

    let node = match (&api.crt, &api.key) {
        (Some(crt), Some(key)) => CertAndKey { cert_pem: crt.as_str().to_string(), key_pem: key.as_str().to_string() },
        _ => {
            let ca_key = api.ca.key.as_ref().ok_or_else(|| TlsError::Mint("not set".into()))?;
            let ca =
                CertificateAuthority::from_pem(ca_pem, ca_key.as_str()).map_err(|e| TlsError::Mint(e.to_string()))?;
            let hostname = config.machine.hostname.as_ref().map(|h| h.as_str()).unwrap_or("bronze");
            let configured: Vec<String> = api.cert_sans.iter().map(|s| s.to_string()).collect();
            let sans = server_sans(&configured, hostname, listen);
            ca.issue_server(hostname, &sans).map_err(|e| TlsError::Mint(e.to_string()))?
        }
    };
    let chain = bronze_pki::certs_from_pem(&node.cert_pem).map_err(|e| TlsError::NodeCert(e.to_string()))?;
    let key = key_from_pem(&node.key_pem).map_err(TlsError::NodeCert)?;
    let deferred = Arc::new(DeferredClientVerifier { inner: client_verifier.clone() });
    let server_config = finish(base_builder().with_client_cert_verifier(deferred).with_single_cert(chain, key)?);
    Ok(SecureTls { server_config, client_verifier })
}

/// SANs of a minted node certificate: the configured ones, loopback (local
/// tools and tests), the listen address and the hostname.
pub fn server_sans(configured: &[String], hostname: &str, listen: SocketAddr) -> Vec<String> {
    let mut sans: Vec<String> = configured.to_vec();
    let mut add = |s: String| {
        if !sans.contains(&s) {
            sans.push(s);
        }
    };
    for s in ["127.0.0.1", "::1", "localhost"] {
        add(s.to_string());
    }
    if !listen.ip().is_unspecified() {
        add(listen.ip().to_string());
    }
    add(hostname.to_string());
    sans
}

/// Requests a client certificate and verifies the handshake signature (the
/// client holds the key), but leaves the chain to the authorization layer.
#[derive(Debug)]
struct DeferredClientVerifier {
    inner: Arc<dyn ClientCertVerifier>,
}

impl ClientCertVerifier for DeferredClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}
