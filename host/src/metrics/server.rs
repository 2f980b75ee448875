//! The metrics listener: its own TCP port, separate from the API, serving
//! `GET /metrics` over HTTP/1.1. It follows the live config: no
//! `machine.metrics`, no listener; a changed section (or, with `mtls`, a
//! changed API certificate or CA) rebinds.
//!
//! With `mtls: true` it serves the node's API certificate (from the config,
//! or minted from its CA for the metrics address) and the TLS handshake
//! requires a client certificate that chains to the API's CA; the
//! certificate must also carry ClientAuth and a role (any role may scrape).

use super::{Format, Sources};
use crate::api::tls;
use crate::config::LiveConfig;
use bronze_config::{MachineConfig, Metrics, Role};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;

/// Connections served at once; more are closed at once.
const MAX_CONNECTIONS: usize = 16;
/// A client must send its request headers within this time.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// A connection lives at most this long (keep-alive included).
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(60);
/// A TLS handshake must end within this time.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("machine.metrics.listen: cannot listen on {0}: {1}")]
    Bind(SocketAddr, std::io::Error),
    #[error("machine.metrics.mtls: {0}")]
    Tls(String),
}

/// The running listener task; stops when dropped.
#[derive(Debug)]
pub struct MetricsServer {
    task: JoinHandle<()>,
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl MetricsServer {
    /// Follows `config` for as long as the returned value is kept.
    pub fn start(sources: Sources, config: watch::Receiver<Option<LiveConfig>>) -> MetricsServer {
        MetricsServer { task: tokio::spawn(follow(sources, config)) }
    }
}

/// What a listener is made from: the section and, with mTLS, the API part
/// of the config its certificate comes from.
fn wanted(live: Option<&LiveConfig>) -> Option<(Metrics, Option<Arc<MachineConfig>>)> {
    let config = &live?.config;
    let metrics = config.machine.metrics.clone()?;
    let tls = metrics.mtls.then(|| config.clone());
    Some((metrics, tls))
}

fn same(a: &Option<(Metrics, Option<Arc<MachineConfig>>)>, b: &Option<(Metrics, Option<Arc<MachineConfig>>)>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some((ma, ta)), Some((mb, tb))) => {
            ma == mb
                && match (ta, tb) {
                    (None, None) => true,
                    (Some(x), Some(y)) => x.machine.api == y.machine.api && x.machine.hostname == y.machine.hostname,
                    _ => false,
                }
        }
        _ => false,
    }
}

async fn follow(sources: Sources, mut config: watch::Receiver<Option<LiveConfig>>) {
    let mut current: Option<(Metrics, Option<Arc<MachineConfig>>)> = None;
    let mut serving: Option<JoinHandle<()>> = None;
    loop {
        let next = wanted(config.borrow_and_update().as_ref());
        if !same(&current, &next) || serving.as_ref().is_some_and(|t| t.is_finished()) {
            if let Some(task) = serving.take() {
                task.abort();
                // The port is free again once the task is gone.
                let _ = task.await;
            }
            if let Some((metrics, tls_config)) = &next {
                match bind(&sources, metrics, tls_config.as_deref()).await {
                    Ok((addr, task)) => {
                        tracing::info!(listen = %addr, mtls = metrics.mtls, "metrics listening");
                        serving = Some(task);
                    }
                    Err(e) => tracing::error!(error = %e, "metrics are not served"),
                }
            } else if current.is_some() {
                tracing::info!("metrics listener closed: machine.metrics is not set");
            }
            current = next;
        }
        if config.changed().await.is_err() {
            return;
        }
    }
}

/// Binds the listener and spawns its accept loop.
async fn bind(
    sources: &Sources,
    metrics: &Metrics,
    tls_config: Option<&MachineConfig>,
) -> Result<(SocketAddr, JoinHandle<()>), MetricsError> {
    let tls = match tls_config {
        Some(cfg) => Some(Arc::new(server_tls(cfg, metrics.listen)?)),
        None => None,
    };
    let listener = TcpListener::bind(metrics.listen).await.map_err(|e| MetricsError::Bind(metrics.listen, e))?;
    let addr = listener.local_addr().map_err(|e| MetricsError::Bind(metrics.listen, e))?;
    Ok((addr, tokio::spawn(accept_loop(listener, sources.clone(), tls))))
}

/// TLS for the metrics port: the API's node certificate, a client
/// certificate from the API's CA required in the handshake.
pub fn server_tls(config: &MachineConfig, listen: SocketAddr) -> Result<ServerConfig, MetricsError> {
    let api = tls::secure_server_config(config, listen).map_err(|e| MetricsError::Tls(e.to_string()))?;
    let mut roots = RootCertStore::empty();
    for cert in
        bronze_pki::certs_from_pem(config.machine.api.ca.crt.as_str()).map_err(|e| MetricsError::Tls(e.to_string()))?
    {
        roots.add(cert).map_err(|e| MetricsError::Tls(format!("machine.api.ca.crt: {e}")))?;
    }
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), tls::provider())
        .build()
        .map_err(|e| MetricsError::Tls(e.to_string()))?;
    let mut server = ServerConfig::builder_with_provider(tls::provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| MetricsError::Tls(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(api.server_config.cert_resolver.clone());
    server.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(server)
}

async fn accept_loop(listener: TcpListener, sources: Sources, tls: Option<Arc<ServerConfig>>) {
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(conn) => conn,
            Err(e) => {
                tracing::warn!(error = %e, "metrics accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            tracing::debug!(%peer, "metrics: too many connections; closing");
            continue;
        };
        let sources = sources.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let _permit = permit;
            match tls {
                None => serve(tcp, sources).await,
                Some(config) => {
                    let acceptor = tokio_rustls::TlsAcceptor::from(config);
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(stream)) => {
                            let leaf = stream.get_ref().1.peer_certificates().and_then(|c| c.first()).cloned();
                            match leaf.as_deref().map(scraper_allowed) {
                                Some(Ok(())) => serve(stream, sources).await,
                                Some(Err(why)) => serve_refusal(stream, why).await,
                                None => tracing::debug!(%peer, "metrics: no client certificate"),
                            }
                        }
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "metrics tls handshake failed"),
                        Err(_) => tracing::debug!(%peer, "metrics tls handshake timed out"),
                    }
                }
            }
        });
    }
}

/// A client certificate (already chained to the CA in the handshake) may
/// scrape when it is meant for clients and carries a role.
fn scraper_allowed(leaf: &[u8]) -> Result<(), String> {
    let peer = bronze_pki::peer_identity(leaf).map_err(|e| format!("client certificate does not parse: {e}"))?;
    if !peer.client_auth {
        return Err("client certificate lacks the ClientAuth extended key usage".into());
    }
    if !peer.organizations.iter().any(|o| o.parse::<Role>().is_ok()) {
        return Err("client certificate carries no role (expected O=os:admin, os:operator or os:reader)".into());
    }
    Ok(())
}

fn http1() -> hyper::server::conn::http1::Builder {
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(HEADER_TIMEOUT).max_buf_size(16 * 1024);
    builder
}

async fn serve<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(stream: S, sources: Sources) {
    let service = hyper::service::service_fn(move |req| {
        let sources = sources.clone();
        async move { Ok::<_, Infallible>(respond(&sources, &req).await) }
    });
    let conn = http1().serve_connection(TokioIo::new(stream), service);
    let _ = tokio::time::timeout(CONNECTION_TIMEOUT, conn).await;
}

async fn serve_refusal<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(stream: S, why: String) {
    let service = hyper::service::service_fn(move |_req| {
        let why = why.clone();
        async move { Ok::<_, Infallible>(text(StatusCode::FORBIDDEN, format!("{why}\n"))) }
    });
    let conn = http1().serve_connection(TokioIo::new(stream), service);
    let _ = tokio::time::timeout(CONNECTION_TIMEOUT, conn).await;
}

fn text(status: StatusCode, body: String) -> Response<String> {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("text/plain; charset=utf-8"));
    response
}

async fn respond(sources: &Sources, req: &Request<Incoming>) -> Response<String> {
    if req.uri().path() != "/metrics" {
        return text(StatusCode::NOT_FOUND, "not found: metrics are at /metrics\n".into());
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut response = text(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD\n".into());
        response.headers_mut().insert(http::header::ALLOW, http::HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    let accept = req.headers().get(http::header::ACCEPT).and_then(|v| v.to_str().ok());
    let format = Format::from_accept(accept);
    let sources = sources.clone();
    // The plugin manager and procfs reads are quick but blocking.
    let body = match tokio::task::spawn_blocking(move || super::render(&sources, format)).await {
        Ok(body) => body,
        Err(e) => return text(StatusCode::INTERNAL_SERVER_ERROR, format!("rendering metrics failed: {e}\n")),
    };
    let mut response = Response::new(body);
    response.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static(format.content_type()));
    response
}
