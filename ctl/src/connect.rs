//! Connecting to a node: TCP, then TLS 1.3 done here (not by tonic) so the
//! CLI can verify either against the context's CA with a client certificate
//! (normal) or by pinning the server's SPKI fingerprint (maintenance mode).

use hyper_util::rt::TokioIo;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use std::sync::Arc;
use std::time::Duration;
use tonic::transport::{Channel, Endpoint, Uri};

/// The API's default port.
pub const DEFAULT_PORT: u16 = 50000;

/// How to authenticate the server and ourselves.
#[derive(Debug, Clone)]
pub enum Auth {
    /// Verify the server against `ca`; present `crt`/`key`.
    Mtls { ca: String, crt: String, key: String },
    /// Maintenance mode: no client certificate; pin the server's SPKI
    /// fingerprint when given, else accept any server (insecure).
    Insecure { fingerprint: Option<String> },
}

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("invalid node address {0:?}: expected host[:port]")]
    Address(String),
    #[error("invalid credentials: {0}")]
    Credentials(String),
    #[error("cannot connect: {0}")]
    Connect(String),
}

/// `host[:port]` → (host, port), accepting `[v6]:port` and bare v6.
pub fn split_host_port(node: &str) -> Result<(String, u16), ConnectError> {
    let bad = || ConnectError::Address(node.to_string());
    if let Some(rest) = node.strip_prefix('[') {
        let (host, tail) = rest.split_once(']').ok_or_else(bad)?;
        let port = match tail.strip_prefix(':') {
            Some(p) => p.parse().map_err(|_| bad())?,
            None if tail.is_empty() => DEFAULT_PORT,
            None => return Err(bad()),
        };
        return Ok((host.to_string(), port));
    }
    if node.parse::<std::net::Ipv6Addr>().is_ok() {
        return Ok((node.to_string(), DEFAULT_PORT));
    }
    match node.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() => Ok((host.to_string(), port.parse().map_err(|_| bad())?)),
        Some(_) => Err(bad()),
        None if !node.is_empty() => Ok((node.to_string(), DEFAULT_PORT)),
        None => Err(bad()),
    }
}

/// `host:port` with brackets for v6, for display and URIs.
pub fn normalize(node: &str) -> Result<String, ConnectError> {
    let (host, port) = split_host_port(node)?;
    Ok(if host.contains(':') { format!("[{host}]:{port}") } else { format!("{host}:{port}") })
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Builds the rustls client config for `auth`.
pub fn tls_config(auth: &Auth) -> Result<Arc<ClientConfig>, ConnectError> {
    let cred = |e: &dyn std::fmt::Display| ConnectError::Credentials(e.to_string());
    let builder = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| cred(&e))?;
    let mut config = match auth {
        Auth::Mtls { ca, crt, key } => {
            let mut roots = RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(ca.as_bytes()) {
                roots.add(cert.map_err(|e| cred(&format!("ca: {e}")))?).map_err(|e| cred(&format!("ca: {e}")))?;
            }
            let chain = CertificateDer::pem_slice_iter(crt.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| cred(&format!("crt: {e}")))?;
            let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).map_err(|e| cred(&format!("key: {e}")))?;
            builder.with_root_certificates(roots).with_client_auth_cert(chain, key).map_err(|e| cred(&e))?
        }
        Auth::Insecure { fingerprint } => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(PinnedVerifier {
                fingerprint: fingerprint.clone(),
                provider: provider(),
            }))
            .with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// Opens a gRPC channel to `node`.
pub async fn connect(node: &str, auth: &Auth, timeout: Duration) -> Result<Channel, ConnectError> {
    let (host, port) = split_host_port(node)?;
    let tls = tokio_rustls::TlsConnector::from(tls_config(auth)?);
    let server_name = ServerName::try_from(host.clone()).map_err(|_| ConnectError::Address(node.to_string()))?;
    let addr = normalize(node)?;
    let endpoint = Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|_| ConnectError::Address(node.to_string()))?
        .connect_timeout(timeout);
    let connector = tower::service_fn(move |_: Uri| {
        let (tls, server_name, host) = (tls.clone(), server_name.clone(), host.clone());
        async move {
            let tcp = tokio::net::TcpStream::connect((host.as_str(), port)).await?;
            tcp.set_nodelay(true)?;
            let stream = tls.connect(server_name, tcp).await?;
            Ok::<_, std::io::Error>(TokioIo::new(stream))
        }
    });
    endpoint.connect_with_connector(connector).await.map_err(|e| ConnectError::Connect(error_chain(&e)))
}

/// The innermost distinct messages of an error chain, joined: tonic's
/// outer "transport error" says nothing useful on its own.
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut current = Some(error);
    while let Some(e) = current {
        let text = e.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        current = e.source();
    }
    parts.retain(|p| p != "transport error");
    let last = parts.last().cloned().unwrap_or_else(|| error.to_string());
    // rustls words our own verifier's errors as "unexpected error: ...".
    last.strip_prefix("unexpected error: ").map(str::to_string).unwrap_or(last)
}

/// Maintenance-mode verifier: checks the handshake signature against the
/// presented certificate and, if a fingerprint is given, that the
/// certificate's SPKI hashes to it.
#[derive(Debug)]
struct PinnedVerifier {
    fingerprint: Option<String>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinnedVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(want) = &self.fingerprint else { return Ok(ServerCertVerified::assertion()) };
        let got = bronze_pki::spki_fingerprint(end_entity).map_err(|e| rustls::Error::General(e.to_string()))?;
        if &got == want {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(format!(
                "server certificate fingerprint {got} does not match --cert-fingerprint {want}"
            )))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port_forms() {
        assert_eq!(split_host_port("10.0.0.1").unwrap(), ("10.0.0.1".into(), 50000));
        assert_eq!(split_host_port("node:1234").unwrap(), ("node".into(), 1234));
        assert_eq!(split_host_port("[::1]:7").unwrap(), ("::1".into(), 7));
        assert_eq!(split_host_port("::1").unwrap(), ("::1".into(), 50000));
        assert_eq!(normalize("::1").unwrap(), "[::1]:50000");
        assert!(split_host_port("node:x").is_err());
        assert!(split_host_port("").is_err());
        assert!(split_host_port(":5").is_err());
    }
}
