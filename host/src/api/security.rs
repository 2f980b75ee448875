//! The API's security state, swapped as a whole when the machine config
//! changes: the TLS server config new connections get, and the gate every
//! request passes (maintenance: anonymous, a short allow-list; secure: a
//! client certificate chaining to the node's CA with the ClientAuth EKU).
//!
//! Verified client certificates are cached by their DER bytes until they
//! expire or the gate changes, so a busy client pays for chain verification
//! once, not per request.

use super::authz::Role;
use rustls::server::danger::ClientCertVerifier;
use rustls::{CertificateError, ServerConfig};
use rustls_pki_types::{CertificateDer, UnixTime};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use tonic::Status;

/// How requests are admitted.
pub enum Gate {
    Maintenance,
    Secure(Arc<dyn ClientCertVerifier>),
}

struct Current {
    server_config: Arc<ServerConfig>,
    gate: Arc<Gate>,
}

/// A verified client.
#[derive(Debug, Clone)]
pub struct Identity {
    pub subject: String,
    pub roles: Vec<Role>,
    not_after_unix: i64,
}

/// Bound on cached identities; the cache is simply cleared when full.
const CACHE_LIMIT: usize = 1024;

pub struct Security {
    current: RwLock<Current>,
    cache: Mutex<HashMap<Vec<u8>, Identity>>,
}

impl std::fmt::Debug for Security {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Security").field("maintenance", &self.is_maintenance()).finish()
    }
}

impl Security {
    pub fn new(server_config: Arc<ServerConfig>, gate: Gate) -> Self {
        Self {
            current: RwLock::new(Current { server_config, gate: Arc::new(gate) }),
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// Replaces TLS config and gate together.
    pub fn switch(&self, server_config: Arc<ServerConfig>, gate: Gate) {
        let mut current = self.current.write().unwrap_or_else(|p| p.into_inner());
        *current = Current { server_config, gate: Arc::new(gate) };
        self.cache.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }

    pub fn server_config(&self) -> Arc<ServerConfig> {
        self.current.read().unwrap_or_else(|p| p.into_inner()).server_config.clone()
    }

    pub fn gate(&self) -> Arc<Gate> {
        self.current.read().unwrap_or_else(|p| p.into_inner()).gate.clone()
    }

    pub fn is_maintenance(&self) -> bool {
        matches!(*self.gate(), Gate::Maintenance)
    }

    /// Verifies a client chain against the secure gate's CA and reads its roles.
    pub fn verify_client(&self, gate: &Gate, certs: &[CertificateDer<'static>]) -> Result<Identity, Status> {
        let Gate::Secure(verifier) = gate else {
            return Err(Status::internal("client verification outside secure mode"));
        };
        let now = UnixTime::now();
        let leaf = &certs[0];
        if let Some(id) = self.cache.lock().unwrap_or_else(|p| p.into_inner()).get(leaf.as_ref())
            && id.not_after_unix > now.as_secs() as i64
        {
            return Ok(id.clone());
        }
        verifier.verify_client_cert(leaf, &certs[1..], now).map_err(|e| Status::unauthenticated(describe(&e)))?;
        let peer = bronze_pki::peer_identity(leaf)
            .map_err(|e| Status::unauthenticated(format!("client certificate does not parse: {e}")))?;
        if !peer.client_auth {
            return Err(Status::unauthenticated("client certificate lacks the ClientAuth extended key usage"));
        }
        let roles = peer.organizations.iter().filter_map(|o| o.parse::<Role>().ok()).collect();
        let identity = Identity { subject: peer.subject, roles, not_after_unix: peer.not_after_unix };
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= CACHE_LIMIT {
            cache.clear();
        }
        cache.insert(leaf.to_vec(), identity.clone());
        Ok(identity)
    }
}

/// A client-facing sentence for a chain verification failure.
fn describe(error: &rustls::Error) -> String {
    match error {
        rustls::Error::InvalidCertificate(e) => match e {
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                "client certificate has expired".into()
            }
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                "client certificate is not valid yet".into()
            }
            CertificateError::UnknownIssuer => "client certificate is not signed by this node's CA".into(),
            CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. } => {
                "client certificate lacks the ClientAuth extended key usage".into()
            }
            // Same issuer name, different key: another CA of the same name.
            CertificateError::BadSignature => {
                "client certificate is not signed by this node's CA (its signature does not verify)".into()
            }
            other => format!("client certificate rejected: {other:?}"),
        },
        other => format!("client certificate rejected: {other}"),
    }
}
