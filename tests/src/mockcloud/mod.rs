//! Mock cloud metadata services for the provider tests: a real HTTP/1.1
//! server (hyper) that speaks one cloud's protocol, records every request,
//! and can be told to misbehave (503s, a trickling or endless body, going
//! down). Each cloud is a [`Cloud`] in its own module; `mockcloud` (the
//! binary in `src/bin/`) serves any of them on a given address, so a test
//! can run one inside a network namespace at 169.254.169.254:80 or behind
//! qemu's user network.

pub mod akamai;
pub mod aws;
pub mod azure;
pub mod digitalocean;
pub mod exoscale;
pub mod gcp;
pub mod hetzner;
pub mod nocloud;
pub mod openstack;
pub mod oracle;
pub mod upcloud;
pub mod vultr;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::Frame;
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One request as the mock saw it.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    /// The path without the query.
    pub path: String,
    pub query: Option<String>,
    /// Header names lower case.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub peer: SocketAddr,
}

impl Request {
    /// The first header called `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    /// The value of query parameter `key`.
    pub fn query_param(&self, key: &str) -> Option<&str> {
        self.query.as_deref()?.split('&').filter_map(|kv| kv.split_once('=')).find(|(k, _)| *k == key).map(|(_, v)| v)
    }
}

/// A response a [`Cloud`] gives.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn new(status: u16, content_type: &str, body: impl Into<Vec<u8>>) -> Response {
        Response { status, headers: vec![("content-type".into(), content_type.into())], body: body.into() }
    }
    pub fn text(body: impl Into<Vec<u8>>) -> Response {
        Response::new(200, "text/plain", body)
    }
    pub fn json(body: impl Into<Vec<u8>>) -> Response {
        Response::new(200, "application/json", body)
    }
    pub fn not_found() -> Response {
        Response::new(404, "text/html", "<html><body><h1>404 - Not Found</h1></body></html>")
    }
    pub fn status(status: u16, body: &str) -> Response {
        Response::new(status, "text/plain", body.to_string())
    }
    pub fn with_header(mut self, name: &str, value: &str) -> Response {
        self.headers.push((name.to_ascii_lowercase(), value.to_string()));
        self
    }
}

/// One cloud's metadata protocol.
pub trait Cloud: Send + Sync + 'static {
    /// Answers one request (headers and tokens are checked here, with the
    /// cloud's own error codes).
    fn handle(&self, request: &Request) -> Response;
}

/// Ways to misbehave, switchable while the server runs.
#[derive(Debug, Default)]
pub struct Faults {
    /// Answer this many requests with 503 before behaving again.
    pub fail_next: AtomicU32,
    /// Send every body one byte a second.
    pub trickle: AtomicBool,
    /// Send a 100 MB body (streamed) instead of the real one.
    pub huge: AtomicBool,
    /// Close every connection without answering.
    pub down: AtomicBool,
}

/// A running mock.
pub struct MockServer {
    pub addr: SocketAddr,
    requests: Arc<Mutex<Vec<Request>>>,
    pub faults: Arc<Faults>,
    task: tokio::task::JoinHandle<()>,
}

/// Size of the [`Faults::huge`] body.
pub const HUGE_BODY: u64 = 100 * 1000 * 1000;

impl MockServer {
    /// Serves `cloud` on `listen` (port 0 picks one).
    pub async fn start(listen: SocketAddr, cloud: Arc<dyn Cloud>) -> std::io::Result<MockServer> {
        Self::serve(tokio::net::TcpListener::bind(listen).await?, cloud)
    }

    fn serve(listener: tokio::net::TcpListener, cloud: Arc<dyn Cloud>) -> std::io::Result<MockServer> {
        let addr = listener.local_addr()?;
        let requests = Arc::new(Mutex::new(Vec::new()));
        let faults = Arc::new(Faults::default());
        let (seen, knobs) = (requests.clone(), faults.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, peer)) = listener.accept().await else { return };
                if knobs.down.load(Ordering::SeqCst) {
                    drop(stream);
                    continue;
                }
                let (cloud, seen, knobs) = (cloud.clone(), seen.clone(), knobs.clone());
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                        let (cloud, seen, knobs) = (cloud.clone(), seen.clone(), knobs.clone());
                        async move { Ok::<_, Infallible>(answer(req, peer, cloud.as_ref(), &seen, &knobs).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(MockServer { addr, requests, faults, task })
    }

    /// Serves `cloud` on a listener made elsewhere (inside a network
    /// namespace: [`crate::netns::NetNs::listen`]).
    pub async fn from_listener(listener: std::net::TcpListener, cloud: Arc<dyn Cloud>) -> std::io::Result<MockServer> {
        listener.set_nonblocking(true)?;
        Self::serve(tokio::net::TcpListener::from_std(listener)?, cloud)
    }

    /// Serves `cloud` on a free port of 127.0.0.1.
    pub async fn loopback(cloud: Arc<dyn Cloud>) -> MockServer {
        MockServer::start("127.0.0.1:0".parse().unwrap(), cloud).await.expect("bind the mock")
    }

    /// One raw HTTP/1.1 request to the mock, as a metadata client on the
    /// link-local address would send it: (status, body).
    pub async fn raw(&self, method: &str, path: &str, headers: &str) -> (u16, String) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(self.addr).await.expect("connect to the mock");
        let request =
            format!("{method} {path} HTTP/1.1\r\nHost: 169.254.169.254\r\n{headers}Connection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.expect("send to the mock");
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.expect("read the mock's answer");
        let status = answer.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        let body = answer.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
        (status, body)
    }

    /// `http://addr` without a trailing slash.
    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Request> {
        self.requests.lock().unwrap().clone()
    }

    /// `METHOD path` of every request so far.
    pub fn hits(&self) -> Vec<String> {
        self.requests().iter().map(|r| format!("{} {}", r.method, r.path)).collect()
    }
}

impl Drop for MockServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

type Body = BoxBody<Bytes, Infallible>;

async fn answer(
    req: hyper::Request<hyper::body::Incoming>,
    peer: SocketAddr,
    cloud: &dyn Cloud,
    seen: &Mutex<Vec<Request>>,
    faults: &Faults,
) -> hyper::Response<Body> {
    let (parts, body) = req.into_parts();
    // Bodies the clouds accept are tiny; cap what a client may make us keep.
    let body = http_body_util::Limited::new(body, 64 << 10).collect().await.map(|b| b.to_bytes().to_vec());
    let request = Request {
        method: parts.method.to_string(),
        path: parts.uri.path().to_string(),
        query: parts.uri.query().map(String::from),
        headers: parts
            .headers
            .iter()
            .map(|(n, v)| (n.as_str().to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
            .collect(),
        body: body.unwrap_or_default(),
        peer,
    };
    seen.lock().unwrap().push(request.clone());
    let fail = faults.fail_next.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok();
    let response = if fail { Response::status(503, "Service Unavailable") } else { cloud.handle(&request) };
    let mut builder = hyper::Response::builder().status(response.status);
    for (name, value) in &response.headers {
        builder = builder.header(name, value);
    }
    let body: Body = if faults.huge.load(Ordering::SeqCst) {
        let chunk = Bytes::from(vec![b'x'; 1 << 20]);
        let count = HUGE_BODY / chunk.len() as u64;
        builder = builder.header("content-length", (count * chunk.len() as u64).to_string());
        let stream = futures::stream::iter((0..count).map(move |_| Ok::<_, Infallible>(Frame::data(chunk.clone()))));
        BodyExt::boxed(StreamBody::new(stream))
    } else if faults.trickle.load(Ordering::SeqCst) {
        let bytes = response.body.clone();
        builder = builder.header("content-length", bytes.len().to_string());
        let stream = futures::stream::unfold(0usize, move |i| {
            let bytes = bytes.clone();
            async move {
                if i >= bytes.len() {
                    return None;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
                Some((Ok::<_, Infallible>(Frame::data(Bytes::copy_from_slice(&bytes[i..=i]))), i + 1))
            }
        });
        BodyExt::boxed(StreamBody::new(stream))
    } else {
        BodyExt::boxed(Full::new(Bytes::from(response.body)))
    };
    builder.body(body).unwrap_or_else(|_| hyper::Response::new(BodyExt::boxed(Full::new(Bytes::new()))))
}

/// A static tree of documents: path → response (for clouds without
/// headers or tokens, and as the store behind the others).
#[derive(Debug, Clone, Default)]
pub struct Documents {
    pub docs: BTreeMap<String, Response>,
}

impl Documents {
    pub fn insert(&mut self, path: &str, response: Response) {
        self.docs.insert(path.to_string(), response);
    }

    pub fn get(&self, path: &str) -> Response {
        self.docs.get(path).cloned().unwrap_or_else(Response::not_found)
    }
}

/// `../shared/fixtures/platforms/<provider>/<file>` from the repository
/// root, if that folder exists (CI always has it). When it does not, the
/// caller skips and says so loudly.
pub fn shared_fixture(provider: &str, file: &str) -> Option<std::path::PathBuf> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures/platforms");
    let path = root.join(provider).join(file);
    path.is_file().then_some(path)
}

/// Prints the loud skip line for a conformance test without fixtures.
pub fn skip_without_fixtures(test: &str) {
    eprintln!(
        "\n!!!!!!!! SKIPPED {test}: ../shared/fixtures/platforms is not here; the conformance test did not run !!!!!!!!\n"
    );
}

/// The mock for a cloud by its platform name, with its default documents
/// (what `mockcloud --cloud NAME` serves). Each cloud module adds its arm.
pub fn by_name(name: &str) -> Option<Arc<dyn Cloud>> {
    match name {
        "azure" => Some(Arc::new(azure::Azure::new())),
        "gcp" => Some(Arc::new(gcp::Gcp::new())),
        "aws" => Some(Arc::new(aws::Aws::new())),
        "akamai" => Some(Arc::new(akamai::Akamai::new())),
        "digitalocean" => Some(Arc::new(digitalocean::DigitalOcean::new())),
        "exoscale" => Some(Arc::new(exoscale::Exoscale::new())),
        "oracle" => Some(Arc::new(oracle::Oracle::new())),
        "hetzner" => Some(Arc::new(hetzner::Hetzner::new())),
        "nocloud" => Some(Arc::new(nocloud::NoCloud::new())),
        "openstack" => Some(Arc::new(openstack::OpenStack::new())),
        "upcloud" => Some(Arc::new(upcloud::UpCloud::new())),
        "vultr" => Some(Arc::new(vultr::Vultr::new())),
        _ => None,
    }
}
