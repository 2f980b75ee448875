//! End-to-end tests against raw HTTP/1.1 servers on 127.0.0.1.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bronze_config::{HttpGrant, HttpMethod, ProbeTarget};
use futures::future::BoxFuture;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

use super::*;

/// What a test server does with one request.
enum Reply {
    /// Write these bytes and close.
    Raw(Vec<u8>),
    /// Keep the connection open and never answer.
    Silent,
    /// Write a head without a length, then data until the peer goes away.
    Endless,
}

/// A server on 127.0.0.1 that records every request it reads.
struct Server {
    addr: SocketAddr,
    requests: Arc<Mutex<Vec<String>>>,
}

impl Server {
    async fn start(respond: impl Fn(&str) -> Reply + Send + Sync + 'static) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let respond = Arc::new(respond);
        let seen = requests.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (respond, seen) = (respond.clone(), seen.clone());
                tokio::spawn(async move { serve_one(stream, &*respond, &seen).await });
            }
        });
        Server { addr, requests }
    }

    fn port(&self) -> u16 {
        self.addr.port()
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn hits(&self) -> usize {
        self.requests.lock().unwrap().len()
    }

    fn request(&self, i: usize) -> String {
        self.requests.lock().unwrap()[i].clone()
    }
}

async fn serve_one(mut stream: TcpStream, respond: &(dyn Fn(&str) -> Reply + Send + Sync), seen: &Mutex<Vec<String>>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let length = head
        .lines()
        .find_map(|line| line.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_owned()))
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(0);
    while buf.len() < head_end + length {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let request = String::from_utf8_lossy(&buf).into_owned();
    let reply = respond(&request);
    seen.lock().unwrap().push(request);
    match reply {
        Reply::Raw(bytes) => {
            let _ = stream.write_all(&bytes).await;
            let _ = stream.shutdown().await;
        }
        Reply::Silent => tokio::time::sleep(Duration::from_secs(60)).await,
        Reply::Endless => {
            let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n").await;
            let data = vec![b'x'; 64 * 1024];
            while stream.write_all(&data).await.is_ok() {}
        }
    }
}

fn response(status: &str, headers: &[(&str, &str)], body: &str) -> Reply {
    let mut text = format!("HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n", body.len());
    for (name, value) in headers {
        text.push_str(&format!("{name}: {value}\r\n"));
    }
    text.push_str("\r\n");
    text.push_str(body);
    Reply::Raw(text.into_bytes())
}

fn path_of(request: &str) -> &str {
    request.split(' ').nth(1).unwrap_or("")
}

/// Maps names to fixed addresses; anything else fails to resolve.
struct FakeResolver(HashMap<String, Vec<IpAddr>>);

impl FakeResolver {
    fn new(entries: &[(&str, &str)]) -> FakeResolver {
        let mut map: HashMap<String, Vec<IpAddr>> = HashMap::new();
        for (name, ip) in entries {
            map.entry(name.to_string()).or_default().push(ip.parse().unwrap());
        }
        FakeResolver(map)
    }
}

impl Resolver for FakeResolver {
    fn resolve<'a>(&'a self, host: &'a str, _port: u16) -> BoxFuture<'a, io::Result<Vec<IpAddr>>> {
        let found = self.0.get(host).cloned();
        Box::pin(async move { found.ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no such name")) })
    }
}

fn no_names() -> FakeResolver {
    FakeResolver::new(&[])
}

fn grant(url: &str, methods: &[HttpMethod]) -> HttpGrant {
    HttpGrant { url: url.parse().unwrap(), methods: methods.to_vec() }
}

fn get(url: &str) -> HttpRequest {
    HttpRequest {
        method: Method::Get,
        url: url.to_owned(),
        headers: Vec::new(),
        body: None,
        timeout: None,
        max_body_bytes: None,
    }
}

fn soon() -> Instant {
    Instant::now() + Duration::from_secs(10)
}

async fn ok_server() -> Server {
    Server::start(|_| response("200 OK", &[("X-Reply", "yes")], "hello")).await
}

#[tokio::test]
async fn allowed_get_returns_status_headers_and_body() {
    let server = ok_server().await;
    let policy = HttpPolicy::new(&[grant(&server.url("/ok/"), &[HttpMethod::Get])]);
    let mut req = get(&server.url("/ok/x?q=1"));
    req.headers = vec![("X-Test".to_owned(), "1".to_owned())];
    let response = send(&policy, &no_names(), req, soon()).await.unwrap();
    assert_eq!(response.status, 200);
    assert!(response.headers.contains(&("x-reply".to_owned(), "yes".to_owned())), "{:?}", response.headers);
    assert_eq!(response.body, b"hello");
    assert_eq!(response.url, server.url("/ok/x?q=1"));
    let seen = server.request(0).to_ascii_lowercase();
    assert!(seen.starts_with("get /ok/x?q=1 http/1.1\r\n"), "{seen}");
    assert!(seen.contains(&format!("\r\nhost: {}\r\n", server.addr)), "{seen}");
    assert!(seen.contains("\r\nconnection: close\r\n"), "{seen}");
    assert!(seen.contains("\r\nx-test: 1\r\n"), "{seen}");
}

#[tokio::test]
async fn post_sends_the_body() {
    let server = ok_server().await;
    let policy = HttpPolicy::new(&[grant(&server.url("/ok"), &[HttpMethod::Post])]);
    let mut req = get(&server.url("/ok"));
    req.method = Method::Post;
    req.body = Some(b"payload".to_vec());
    assert_eq!(send(&policy, &no_names(), req, soon()).await.unwrap().status, 200);
    let seen = server.request(0);
    assert!(seen.to_ascii_lowercase().contains("\r\ncontent-length: 7\r\n"), "{seen}");
    assert!(seen.ends_with("\r\n\r\npayload"), "{seen}");
}

#[tokio::test]
async fn requests_outside_the_grants_are_denied_without_connecting() {
    let server = ok_server().await;
    let port = server.port();
    let policy = HttpPolicy::new(&[grant(&server.url("/ok/"), &[HttpMethod::Get, HttpMethod::Head])]);
    let other_port = if port == 65535 { port - 1 } else { port + 1 };
    for (method, url, reason) in [
        (Method::Get, server.url("/other"), "denied: path /other is outside the granted prefix /ok/".to_owned()),
        (Method::Get, server.url("/okay"), "denied: path /okay is outside the granted prefix /ok/".to_owned()),
        (
            Method::Get,
            format!("http://127.0.0.1:{other_port}/ok/"),
            format!(
                "denied: no grant allows port {other_port} for http://127.0.0.1 (granted: http://127.0.0.1:{port}/ok/)"
            ),
        ),
        (
            Method::Get,
            format!("http://127.0.0.2:{port}/ok/"),
            format!("denied: no grant allows host 127.0.0.2 (granted: http://127.0.0.1:{port}/ok/)"),
        ),
        (
            Method::Post,
            server.url("/ok/"),
            format!("denied: method POST is not granted for http://127.0.0.1:{port}/ok/ (granted: GET, HEAD)"),
        ),
    ] {
        let mut req = get(&url);
        req.method = method;
        let err = send(&policy, &no_names(), req, soon()).await.unwrap_err();
        assert_eq!(err.to_string(), reason, "{method:?} {url}");
    }
    assert_eq!(server.hits(), 0);
}

#[tokio::test]
async fn names_must_resolve_to_public_or_granted_addresses() {
    let server = ok_server().await;
    let port = server.port();
    let resolver = FakeResolver::new(&[("metadata.test", "127.0.0.1")]);
    let by_name = grant(&format!("http://metadata.test:{port}/"), &[HttpMethod::Get]);
    let url = format!("http://Metadata.Test:{port}/latest");

    let policy = HttpPolicy::new(std::slice::from_ref(&by_name));
    let err = send(&policy, &resolver, get(&url), soon()).await.unwrap_err();
    assert_eq!(
        err,
        HttpError::Denied(
            "metadata.test resolves to 127.0.0.1, which no grant names (grant the address itself to allow it)"
                .to_owned()
        )
    );
    assert_eq!(server.hits(), 0);

    let policy = HttpPolicy::new(&[by_name, grant("http://127.0.0.1:1/", &[HttpMethod::Get])]);
    let response = send(&policy, &resolver, get(&url), soon()).await.unwrap();
    assert_eq!(response.status, 200);
    assert_eq!(response.url, format!("http://metadata.test:{port}/latest"));
    assert!(server.request(0).to_ascii_lowercase().contains(&format!("\r\nhost: metadata.test:{port}\r\n")));

    let err = send(&policy, &no_names(), get(&url), soon()).await.unwrap_err();
    assert!(matches!(&err, HttpError::Dns(why) if why.contains("metadata.test")), "{err:?}");
}

#[tokio::test]
async fn redirects_inside_the_grants_are_followed() {
    let server = Server::start(|request| match path_of(request) {
        "/ok/start" => response("302 Found", &[("Location", "/ok/middle")], "moved"),
        "/ok/middle" => response("307 Temporary Redirect", &[("Location", "end")], ""),
        "/ok/post" => response("303 See Other", &[("Location", "/ok/end")], ""),
        _ => response("200 OK", &[], "done"),
    })
    .await;
    let policy = HttpPolicy::new(&[grant(&server.url("/ok/"), &[HttpMethod::Get, HttpMethod::Post])]);
    let response = send(&policy, &no_names(), get(&server.url("/ok/start")), soon()).await.unwrap();
    assert_eq!((response.status, response.body.as_slice()), (200, &b"done"[..]));
    assert_eq!(response.url, server.url("/ok/end"));
    assert_eq!(server.hits(), 3);

    let mut post = get(&server.url("/ok/post"));
    post.method = Method::Post;
    post.body = Some(b"form".to_vec());
    post.headers = vec![("Content-Type".to_owned(), "text/plain".to_owned())];
    let response = send(&policy, &no_names(), post, soon()).await.unwrap();
    assert_eq!(response.url, server.url("/ok/end"));
    let after = server.request(4);
    assert!(after.starts_with("GET /ok/end "), "{after}");
    assert!(!after.to_ascii_lowercase().contains("content-type"), "{after}");
    assert!(after.ends_with("\r\n\r\n"), "{after}");
}

#[tokio::test]
async fn redirects_leaving_the_grants_are_denied() {
    let server = Server::start(|request| match path_of(request) {
        "/ok/away" => response("301 Moved Permanently", &[("Location", "http://127.0.0.1:9/x")], ""),
        "/ok/named" => response("302 Found", &[("Location", "http://localhost:9/x")], ""),
        _ => response("302 Found", &[("Location", "/elsewhere")], ""),
    })
    .await;
    let port = server.port();
    let resolver = FakeResolver::new(&[("localhost", "127.0.0.2")]);
    let policy = HttpPolicy::new(&[
        grant(&server.url("/ok/"), &[HttpMethod::Get]),
        grant("http://localhost:9/", &[HttpMethod::Get]),
    ]);
    let err = send(&policy, &resolver, get(&server.url("/ok/away")), soon()).await.unwrap_err();
    assert_eq!(
        err,
        HttpError::Denied(format!(
            "redirect to http://127.0.0.1:9/x leaves the grants: no grant allows port 9 for http://127.0.0.1 (granted: http://127.0.0.1:{port}/ok/)"
        ))
    );
    let err = send(&policy, &resolver, get(&server.url("/ok/in")), soon()).await.unwrap_err();
    assert_eq!(
        err,
        HttpError::Denied(format!(
            "redirect to http://127.0.0.1:{port}/elsewhere leaves the grants: path /elsewhere is outside the granted prefix /ok/"
        ))
    );
    // Granted by name, but the name's address is checked too.
    let err = send(&policy, &resolver, get(&server.url("/ok/named")), soon()).await.unwrap_err();
    assert!(
        matches!(&err, HttpError::Denied(why) if why.starts_with("redirect to http://localhost:9/x leaves the grants: localhost resolves to 127.0.0.2")),
        "{err:?}"
    );
    assert_eq!(server.hits(), 3);
}

#[tokio::test]
async fn redirect_loops_stop_after_five() {
    let server = Server::start(|_| response("302 Found", &[("Location", "/ok/loop")], "")).await;
    let policy = HttpPolicy::new(&[grant(&server.url("/ok/"), &[HttpMethod::Get])]);
    let err = send(&policy, &no_names(), get(&server.url("/ok/loop")), soon()).await.unwrap_err();
    assert!(matches!(&err, HttpError::Protocol(why) if why.contains("more than 5 redirects")), "{err:?}");
    assert_eq!(server.hits(), 6);
}

#[tokio::test]
async fn bodies_over_the_cap_are_too_large() {
    let announced = Server::start(|_| {
        Reply::Raw(format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\npartial", 2 << 20).into_bytes())
    })
    .await;
    let endless = Server::start(|_| Reply::Endless).await;
    let exact = Server::start(|_| response("200 OK", &[], &"y".repeat(1000))).await;
    let policy = HttpPolicy::new(&[
        grant(&announced.url("/"), &[HttpMethod::Get]),
        grant(&endless.url("/"), &[HttpMethod::Get]),
        grant(&exact.url("/"), &[HttpMethod::Get]),
    ]);
    let started = Instant::now();
    let err = send(&policy, &no_names(), get(&announced.url("/")), soon()).await.unwrap_err();
    assert_eq!(err, HttpError::TooLarge(MAX_BODY_BYTES));

    let mut req = get(&endless.url("/"));
    req.max_body_bytes = Some(1000);
    assert_eq!(send(&policy, &no_names(), req, soon()).await.unwrap_err(), HttpError::TooLarge(1000));
    let mut req = get(&endless.url("/"));
    req.max_body_bytes = Some(u32::MAX);
    assert_eq!(send(&policy, &no_names(), req, soon()).await.unwrap_err(), HttpError::TooLarge(MAX_BODY_BYTES));
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());

    let mut req = get(&exact.url("/"));
    req.max_body_bytes = Some(1000);
    assert_eq!(send(&policy, &no_names(), req, soon()).await.unwrap().body.len(), 1000);
    let mut req = get(&exact.url("/"));
    req.max_body_bytes = Some(999);
    assert_eq!(send(&policy, &no_names(), req, soon()).await.unwrap_err(), HttpError::TooLarge(999));
}

#[tokio::test]
async fn silent_servers_time_out_at_the_deadline() {
    let server = Server::start(|_| Reply::Silent).await;
    let policy = HttpPolicy::new(&[grant(&server.url("/"), &[HttpMethod::Get])]);

    let mut req = get(&server.url("/"));
    req.timeout = Some(Duration::from_millis(300));
    let started = Instant::now();
    assert_eq!(send(&policy, &no_names(), req, soon()).await.unwrap_err(), HttpError::Timeout);
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(280) && took < Duration::from_secs(3), "{took:?}");

    let mut req = get(&server.url("/"));
    req.timeout = Some(Duration::from_secs(30));
    let started = Instant::now();
    let deadline = started + Duration::from_millis(300);
    assert_eq!(send(&policy, &no_names(), req, deadline).await.unwrap_err(), HttpError::Timeout);
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(280) && took < Duration::from_secs(3), "{took:?}");
    assert_eq!(server.hits(), 2);
}

#[tokio::test]
async fn malformed_requests_are_refused() {
    let server = ok_server().await;
    let policy = HttpPolicy::new(&[grant(&server.url("/ok/"), &[HttpMethod::Get])]);
    for (name, value) in [("Host", "evil.example"), ("Transfer-Encoding", "chunked"), ("X-Bad", "a\r\nb: c")] {
        let mut req = get(&server.url("/ok/"));
        req.headers = vec![(name.to_owned(), value.to_owned())];
        let err = send(&policy, &no_names(), req, soon()).await.unwrap_err();
        assert!(matches!(&err, HttpError::InvalidRequest(why) if why.contains(name)), "{name}: {err:?}");
    }
    for url in [
        server.url("/ok/../admin"),
        server.url("/ok/%2e%2e/admin"),
        server.url("/ok/x#frag"),
        format!("http://user@{}/ok/", server.addr),
    ] {
        let err = send(&policy, &no_names(), get(&url), soon()).await.unwrap_err();
        assert!(matches!(err, HttpError::InvalidRequest(_)), "{url}: {err:?}");
    }
    assert_eq!(server.hits(), 0);
}

#[tokio::test]
async fn https_to_a_plain_server_fails_without_hanging() {
    // Answers whatever arrives (a ClientHello) with plain HTTP.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let mut buf = [0u8; 1024];
            let _ = stream.read(&mut buf).await;
            let _ = stream.write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n").await;
        }
    });
    let url = format!("https://{addr}/");
    let policy = HttpPolicy::new(&[grant(&url, &[HttpMethod::Get])]);
    let mut req = get(&url);
    req.timeout = Some(Duration::from_secs(5));
    let err = send(&policy, &no_names(), req, soon()).await.unwrap_err();
    assert!(matches!(err, HttpError::Connect(_) | HttpError::Protocol(_)), "{err:?}");
}

#[tokio::test]
async fn refused_connections_are_connect_errors() {
    let port = closed_port().await;
    let url = format!("http://127.0.0.1:{port}/");
    let policy = HttpPolicy::new(&[grant(&url, &[HttpMethod::Get])]);
    let err = send(&policy, &no_names(), get(&url), soon()).await.unwrap_err();
    assert!(matches!(&err, HttpError::Connect(why) if why.contains(&format!("127.0.0.1:{port}"))), "{err:?}");
}

#[test]
fn futures_are_send() {
    fn assert_send<T: Send>(_: &T) {}
    let policy = HttpPolicy::new(&[]);
    let probes = ProbePolicy::new(&[]);
    let resolver = SystemResolver;
    assert_send(&send(&policy, &resolver, get("http://x/"), Instant::now()));
    assert_send(&tcp_connect(&probes, &resolver, "x", 1, Duration::ZERO, Instant::now()));
    assert_send(&http_status(&probes, &resolver, "http://x/", Duration::ZERO, Instant::now()));
}

/// A port nothing listens on (it was bound a moment ago).
async fn closed_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap().port()
}

fn probes(targets: &[String]) -> ProbePolicy {
    let parsed: Vec<ProbeTarget> = targets.iter().map(|t| t.parse().unwrap()).collect();
    ProbePolicy::new(&parsed)
}

#[tokio::test]
async fn tcp_probes() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let open = listener.local_addr().unwrap().port();
    let closed = closed_port().await;
    let policy = probes(&[
        format!("tcp://127.0.0.1:{open}"),
        format!("tcp://127.0.0.1:{closed}"),
        format!("tcp://Svc.Test:{open}"),
    ]);
    let resolver = FakeResolver::new(&[("svc.test", "127.0.0.1")]);
    let second = Duration::from_secs(1);

    let took = tcp_connect(&policy, &resolver, "127.0.0.1", open, second, soon()).await.unwrap();
    assert!(took < second, "{took:?}");
    assert!(tcp_connect(&policy, &resolver, "SVC.test", open, second, soon()).await.is_ok());

    let err = tcp_connect(&policy, &resolver, "127.0.0.1", closed, second, soon()).await.unwrap_err();
    assert!(matches!(&err, ProbeError::Unreachable(why) if why.contains("refused")), "{err:?}");

    let err = tcp_connect(&policy, &resolver, "127.0.0.1", 1, second, soon()).await.unwrap_err();
    assert!(
        matches!(&err, ProbeError::Denied(why) if why.starts_with(&format!("no probe grant allows tcp://127.0.0.1:1 (granted: tcp://127.0.0.1:{open}, "))),
        "{err:?}"
    );
    let err = tcp_connect(&policy, &resolver, "localhost", open, second, soon()).await.unwrap_err();
    assert!(matches!(err, ProbeError::Denied(_)), "{err:?}");
    let err = tcp_connect(&policy, &resolver, "bad host", open, second, soon()).await.unwrap_err();
    assert!(matches!(err, ProbeError::InvalidTarget(_)), "{err:?}");
}

#[tokio::test]
async fn http_probes_return_the_status_without_following() {
    let server = Server::start(|request| match path_of(request) {
        "/health/down" => response("503 Service Unavailable", &[], "down"),
        "/health/moved" => response("302 Found", &[("Location", "/health/down")], ""),
        _ => Reply::Silent,
    })
    .await;
    let policy = probes(&[server.url("/health")]);
    let resolver = no_names();
    let second = Duration::from_secs(2);
    assert_eq!(http_status(&policy, &resolver, &server.url("/health/down"), second, soon()).await, Ok(503));
    assert_eq!(http_status(&policy, &resolver, &server.url("/health/moved"), second, soon()).await, Ok(302));
    assert_eq!(server.hits(), 2);
    assert!(server.request(1).starts_with("GET /health/moved HTTP/1.1\r\n"));

    let err = http_status(&policy, &resolver, &server.url("/healthz"), second, soon()).await.unwrap_err();
    assert_eq!(err, ProbeError::Denied("path /healthz is outside the granted prefix /health".to_owned()));
    let err = http_status(&policy, &resolver, &server.url("/health/../x"), second, soon()).await.unwrap_err();
    assert!(matches!(err, ProbeError::InvalidTarget(_)), "{err:?}");

    let started = Instant::now();
    let err = http_status(&policy, &resolver, &server.url("/health/slow"), Duration::from_millis(200), soon())
        .await
        .unwrap_err();
    assert_eq!(err, ProbeError::Timeout);
    assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
}
