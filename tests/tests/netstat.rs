//! `NetworkService.Netstat` against a real process-mode bronzed, called by a
//! reader over real mTLS. The test opens real sockets on loopback in its own
//! process (a TCP listener and a connected pair, a bound and a connected
//! UDP socket, each over IPv4 and IPv6) and finds each by its inode, with
//! the right state, addresses and this process as owner; bronzed's own API
//! listener shows bronzed as its process; `--listening`, `--tcp/--udp` and
//! `-4/-6` leave out what they should. The real `bronzectl netstat` (reader
//! credentials) shows the same in a table and as JSON.

use bronze_api::v1::network_service_client::NetworkServiceClient;
use bronze_api::v1::{NetstatRequest, NetstatResponse, Socket};
use bronze_tests::{Node, Pki, bronzectl};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;

fn inode(fd: &impl AsRawFd) -> u64 {
    std::fs::metadata(format!("/proc/self/fd/{}", fd.as_raw_fd())).expect("fd").ino()
}

fn find<'a>(all: &'a NetstatResponse, fd: &impl AsRawFd) -> &'a Socket {
    let inode = inode(fd);
    all.sockets.iter().find(|s| s.inode == inode).unwrap_or_else(|| panic!("socket inode {inode} not listed"))
}

/// Checks protocol, version, state, local address and that this process owns it.
fn check(s: &Socket, protocol: &str, ip_version: u32, state: &str, local: std::net::SocketAddr) {
    assert_eq!((s.protocol.as_str(), s.ip_version, s.state.as_str()), (protocol, ip_version, state), "{s:?}");
    assert_eq!(s.local_address.parse::<IpAddr>().unwrap(), local.ip(), "{s:?}");
    assert_eq!(s.local_port, u32::from(local.port()), "{s:?}");
    let me = std::process::id();
    assert!(s.processes.iter().any(|p| p.pid == me && !p.command.is_empty()), "not owned by pid {me}: {s:?}");
    assert_eq!(s.uid, nix::unistd::getuid().as_raw(), "{s:?}");
}

async fn netstat(client: &mut NetworkServiceClient<tonic::transport::Channel>, req: NetstatRequest) -> NetstatResponse {
    client.netstat(req).await.expect("netstat").into_inner()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sockets_with_states_and_owners_for_a_reader() {
    let pki = Pki::new();
    let node = Node::start_configured(&pki.node_config("netstat")).await;
    let reader = node.client(&pki.auth(&["os:reader"])).await;
    let mut client = NetworkServiceClient::new(reader.channel.clone()).max_decoding_message_size(64 << 20);

    let listen4 = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let client4 = TcpStream::connect(listen4.local_addr().unwrap()).unwrap();
    let (server4, _) = listen4.accept().unwrap();
    let listen6 = TcpListener::bind((Ipv6Addr::LOCALHOST, 0)).unwrap();
    let client6 = TcpStream::connect(listen6.local_addr().unwrap()).unwrap();
    let (server6, _) = listen6.accept().unwrap();
    let udp4 = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let udp6 = UdpSocket::bind((Ipv6Addr::LOCALHOST, 0)).unwrap();
    let udp4_connected = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    udp4_connected.connect(udp4.local_addr().unwrap()).unwrap();
    let udp6_connected = UdpSocket::bind((Ipv6Addr::LOCALHOST, 0)).unwrap();
    udp6_connected.connect(udp6.local_addr().unwrap()).unwrap();

    let all = netstat(&mut client, NetstatRequest::default()).await;
    assert!(!all.truncated, "{:?}", all.warnings);

    check(find(&all, &listen4), "tcp", 4, "LISTEN", listen4.local_addr().unwrap());
    check(find(&all, &listen6), "tcp", 6, "LISTEN", listen6.local_addr().unwrap());
    for (client, server, version) in [(&client4, &server4, 4), (&client6, &server6, 6)] {
        let c = find(&all, client);
        check(c, "tcp", version, "ESTABLISHED", client.local_addr().unwrap());
        assert_eq!(c.remote_address.parse::<IpAddr>().unwrap(), client.peer_addr().unwrap().ip());
        assert_eq!(c.remote_port, u32::from(client.peer_addr().unwrap().port()));
        let s = find(&all, server);
        check(s, "tcp", version, "ESTABLISHED", server.local_addr().unwrap());
        assert_eq!(s.remote_port, c.local_port);
    }
    check(find(&all, &udp4), "udp", 4, "UNCONN", udp4.local_addr().unwrap());
    check(find(&all, &udp6), "udp", 6, "UNCONN", udp6.local_addr().unwrap());
    let u = find(&all, &udp4_connected);
    check(u, "udp", 4, "ESTABLISHED", udp4_connected.local_addr().unwrap());
    assert_eq!(u.remote_port, u32::from(udp4.local_addr().unwrap().port()));
    check(find(&all, &udp6_connected), "udp", 6, "ESTABLISHED", udp6_connected.local_addr().unwrap());

    // bronzed's own API listener, owned by bronzed.
    let api: std::net::SocketAddr = node.addr.parse().unwrap();
    let listener = all
        .sockets
        .iter()
        .find(|s| s.protocol == "tcp" && s.state == "LISTEN" && s.local_port == u32::from(api.port()))
        .unwrap_or_else(|| panic!("no listener on {api}"));
    assert_eq!(listener.local_address, api.ip().to_string());
    assert!(
        listener.processes.iter().any(|p| p.pid == node.pid() && p.command == "bronzed"),
        "the API listener is not bronzed's (pid {}): {listener:?}",
        node.pid()
    );
    // The reader's own connection to the API, seen from bronzed's side.
    assert!(
        all.sockets.iter().any(|s| s.state == "ESTABLISHED"
            && s.local_port == u32::from(api.port())
            && s.processes.iter().any(|p| p.pid == node.pid())),
        "no accepted API connection owned by bronzed"
    );

    // --listening --tcp -6: the IPv6 listener only.
    let only =
        netstat(&mut client, NetstatRequest { listening: true, tcp: true, ipv6: true, ..Default::default() }).await;
    assert!(only.sockets.iter().all(|s| s.protocol == "tcp" && s.ip_version == 6 && s.state == "LISTEN"), "{only:?}");
    check(find(&only, &listen6), "tcp", 6, "LISTEN", listen6.local_addr().unwrap());
    for absent in [inode(&listen4), inode(&client6), inode(&udp6)] {
        assert!(only.sockets.iter().all(|s| s.inode != absent), "inode {absent} in --listening --tcp -6");
    }

    // --listening --udp: unconnected UDP sockets of both versions, no connected ones.
    let udp = netstat(&mut client, NetstatRequest { listening: true, udp: true, ..Default::default() }).await;
    assert!(udp.sockets.iter().all(|s| s.protocol == "udp" && s.state == "UNCONN"), "{udp:?}");
    find(&udp, &udp4);
    find(&udp, &udp6);
    assert!(udp.sockets.iter().all(|s| s.inode != inode(&udp4_connected) && s.inode != inode(&listen4)));

    // --udp -4: connected and not, IPv4 only.
    let udp4_all = netstat(&mut client, NetstatRequest { udp: true, ipv4: true, ..Default::default() }).await;
    assert!(udp4_all.sockets.iter().all(|s| s.protocol == "udp" && s.ip_version == 4), "{udp4_all:?}");
    find(&udp4_all, &udp4);
    find(&udp4_all, &udp4_connected);
    assert!(udp4_all.sockets.iter().all(|s| s.inode != inode(&udp6)));

    // Sorted by protocol, version, local address and port.
    let keys: Vec<_> = all
        .sockets
        .iter()
        .map(|s| (s.protocol.clone(), s.ip_version, s.local_address.parse::<IpAddr>().unwrap(), s.local_port))
        .collect();
    assert!(keys.windows(2).all(|w| w[0] <= w[1]), "not sorted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bronzectl_netstat_as_a_reader() {
    let pki = Pki::new();
    let node = Node::start_configured(&pki.node_config("netstat-cli")).await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("reader");
    pki.write_bronzeconfig(&config, std::slice::from_ref(&node.addr), &["os:reader"]);
    let listener = TcpListener::bind((Ipv6Addr::LOCALHOST, 0)).unwrap();
    let port = listener.local_addr().unwrap().port();
    let me = std::process::id();

    let run = bronzectl(Some(&config), &["netstat", "--listening", "--tcp"]).await;
    assert_eq!(run.code, 0, "{run:?}");
    let header: Vec<&str> = run.stdout.lines().next().unwrap_or_default().split_whitespace().collect();
    assert_eq!(header, ["NODE", "PROTO", "STATE", "LOCAL", "REMOTE", "RECV-Q", "SEND-Q", "PROCESS"], "{run:?}");
    // The row whose LOCAL column is `local`.
    let row = |local: &str| -> Vec<&str> {
        let cells = run.stdout.lines().map(|l| l.split_whitespace().collect::<Vec<_>>());
        cells.into_iter().find(|c| c.get(3) == Some(&local)).unwrap_or_else(|| panic!("no row for {local}: {run:?}"))
    };
    let ours = row(&format!("[::1]:{port}"));
    assert_eq!(ours[1..5], ["tcp6", "LISTEN", &format!("[::1]:{port}"), "[::]:*"], "{run:?}");
    assert!(ours.get(7).is_some_and(|p| p.split(',').any(|p| p.starts_with(&format!("{me}/")))), "{run:?}");
    let api = row(&node.addr);
    assert_eq!(api.get(7).copied(), Some(format!("{}/bronzed", node.pid()).as_str()), "{run:?}");

    let run = bronzectl(Some(&config), &["-o", "json", "netstat", "-l", "-t", "-6"]).await;
    assert_eq!(run.code, 0, "{run:?}");
    let json: serde_json::Value = serde_json::from_str(run.stdout.trim()).expect("one JSON object");
    let sockets = json["sockets"].as_array().expect("sockets");
    assert!(sockets.iter().all(|s| s["ipVersion"] == 6 && s["state"] == "LISTEN"), "{json}");
    let found = sockets.iter().find(|s| s["localPort"] == u64::from(port)).unwrap_or_else(|| panic!("{json}"));
    assert_eq!(found["inode"], inode(&listener));
    assert_eq!(found["processes"][0]["pid"], me);
}
