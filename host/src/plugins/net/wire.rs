//! Dialling, TLS and one HTTP/1.1 exchange per connection. Everything runs
//! inside the caller's future (no spawned tasks), so the caller's timeout
//! drops the socket and nothing outlives the plugin call.

use std::convert::Infallible;
use std::future::{Future, poll_fn};
use std::io::{self, Cursor};
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use http::header::{self, HeaderName, HeaderValue};
use http::response::Parts;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use super::target::{Host, Target};

/// Response headers beyond this count are a protocol error.
const MAX_RESPONSE_HEADERS: usize = 128;
/// Largest response head (status line and headers).
const MAX_RESPONSE_HEAD_BYTES: usize = 64 * 1024;

/// A request body held in memory and sent in one frame.
pub(super) struct ReqBody(Option<Vec<u8>>);

impl ReqBody {
    pub(super) fn new(body: Option<Vec<u8>>) -> ReqBody {
        ReqBody(body.filter(|b| !b.is_empty()))
    }
}

impl Body for ReqBody {
    type Data = Cursor<Vec<u8>>;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Infallible>>> {
        Poll::Ready(self.0.take().map(|bytes| Ok(Frame::data(Cursor::new(bytes)))))
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.0.as_ref().map_or(0, |b| b.len() as u64))
    }
}

/// A request for `target` with the host's own `Host` and `Connection:
/// close` (one request per connection) plus the checked guest headers.
pub(super) fn request(
    target: &Target,
    method: http::Method,
    headers: &[(HeaderName, HeaderValue)],
    body: Option<Vec<u8>>,
) -> Result<http::Request<ReqBody>, http::Error> {
    let mut builder = http::Request::builder()
        .method(method)
        .uri(target.path_and_query())
        .header(header::HOST, target.authority())
        .header(header::CONNECTION, "close");
    for (name, value) in headers {
        builder = builder.header(name, value);
    }
    builder.body(ReqBody::new(body))
}

/// Why no connection could be opened; the text names the address.
#[derive(Debug)]
pub(super) struct DialError {
    pub(super) message: String,
}

/// Connects to the first address that accepts. Returns the stream and how
/// long that connect took.
pub(super) async fn dial(addrs: &[IpAddr], port: u16) -> Result<(TcpStream, Duration), DialError> {
    let mut failures = Vec::new();
    for ip in addrs {
        let addr = SocketAddr::new(*ip, port);
        let started = Instant::now();
        match TcpStream::connect(addr).await {
            Ok(stream) => {
                let took = started.elapsed();
                if let Err(e) = stream.set_nodelay(true) {
                    tracing::debug!(%addr, error = %e, "cannot set TCP_NODELAY");
                }
                return Ok((stream, took));
            }
            Err(e) => {
                tracing::debug!(%addr, error = %e, "connect failed");
                failures.push(format!("{addr}: {e}"));
            }
        }
    }
    if failures.is_empty() {
        failures.push("no address to connect to".to_owned());
    }
    Err(DialError { message: failures.join("; ") })
}

fn tls_config() -> Result<Arc<ClientConfig>, String> {
    static CONFIG: OnceLock<Result<Arc<ClientConfig>, String>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let roots = rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
            let mut config = ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .map_err(|e| format!("cannot set up TLS: {e}"))?
                .with_root_certificates(roots)
                .with_no_client_auth();
            config.alpn_protocols = vec![b"http/1.1".to_vec()];
            Ok(Arc::new(config))
        })
        .clone()
}

/// A TLS handshake over `stream`, verified against the web PKI roots for
/// `host` (also the SNI name).
pub(super) async fn tls(stream: TcpStream, host: &Host) -> io::Result<TlsStream<TcpStream>> {
    let config = tls_config().map_err(io::Error::other)?;
    let name: ServerName<'static> = match host {
        Host::Ip(ip) => ServerName::from(*ip),
        Host::Name(name) => ServerName::try_from(name.clone())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("{name}: {e}")))?,
    };
    TlsConnector::from(config).connect(name, stream).await
}

/// How one exchange failed.
#[derive(Debug)]
pub(super) enum ExchangeError {
    Http(hyper::Error),
    TooLarge(u32),
}

impl From<hyper::Error> for ExchangeError {
    fn from(e: hyper::Error) -> Self {
        ExchangeError::Http(e)
    }
}

/// Sends `request` over `io` and reads the response head, then as much of
/// the body as `body_cap` allows for that head (`None`: skip the body).
pub(super) async fn exchange<IO>(
    io: IO,
    request: http::Request<ReqBody>,
    body_cap: impl FnOnce(&Parts) -> Option<u32>,
) -> Result<(Parts, Vec<u8>), ExchangeError>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let (mut sender, conn) = hyper::client::conn::http1::Builder::new()
        .max_headers(MAX_RESPONSE_HEADERS)
        .max_header_size(MAX_RESPONSE_HEAD_BYTES)
        .handshake::<_, ReqBody>(TokioIo::new(io))
        .await?;
    let work = async move {
        let response = sender.send_request(request).await?;
        let (parts, mut body) = response.into_parts();
        let bytes = match body_cap(&parts) {
            None => Vec::new(),
            Some(cap) => read_body(&mut body, cap).await?,
        };
        Ok::<_, ExchangeError>((parts, bytes))
    };
    alongside(conn, work).await
}

/// Runs `work` while also driving the connection it talks through.
async fn alongside<C, W, T>(conn: C, work: W) -> T
where
    C: Future<Output = hyper::Result<()>>,
    W: Future<Output = T>,
{
    tokio::pin!(conn);
    tokio::pin!(work);
    let mut conn_done = false;
    loop {
        tokio::select! {
            out = &mut work => return out,
            res = &mut conn, if !conn_done => {
                conn_done = true;
                // A failed connection also fails `work`, which reports it.
                if let Err(e) = res {
                    tracing::debug!(error = %e, "HTTP connection ended with an error");
                }
            }
        }
    }
}

async fn read_body(body: &mut Incoming, cap: u32) -> Result<Vec<u8>, ExchangeError> {
    let cap_bytes = cap as usize;
    let announced = body.size_hint().lower();
    if announced > u64::from(cap) {
        return Err(ExchangeError::TooLarge(cap));
    }
    let mut out = Vec::with_capacity(announced as usize);
    while let Some(frame) = poll_fn(|cx| Pin::new(&mut *body).poll_frame(cx)).await {
        if let Ok(data) = frame?.into_data() {
            if out.len() + data.len() > cap_bytes {
                return Err(ExchangeError::TooLarge(cap));
            }
            out.extend_from_slice(&data);
        }
    }
    Ok(out)
}

/// An error and its sources, as one line.
pub(super) fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        let next = e.to_string();
        if !text.ends_with(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = e.source();
    }
    text
}

/// The error came from the socket rather than from parsing HTTP.
pub(super) fn is_io(error: &hyper::Error) -> bool {
    let mut source = std::error::Error::source(error);
    while let Some(e) = source {
        if e.is::<io::Error>() {
            return true;
        }
        source = e.source();
    }
    false
}
