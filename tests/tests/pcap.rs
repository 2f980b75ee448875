//! Packet capture (`CaptureService.Capture`, `bronzectl pcap`) against a real
//! process-mode `bronzed` in a network namespace of the test's own, joined by
//! a veth pair to a peer namespace that sends real datagrams. The file the
//! node streams is opened with a real pcap reader, `tcpdump -r`.
//!
//! - A filter compiled by `tcpdump -ddd` keeps exactly the datagrams it
//!   names: UDP to port 5555, not those to port 6666, not the ICMP port
//!   unreachables the node answers with, not ARP.
//! - The capture stops at its byte limit (the file never passes it) and at
//!   its duration; one capture per link at a time; a filter the kernel's
//!   verifier refuses and an unknown link are refused with their reason.
//! - Reader and operator may not capture; each capture is audited.

use bronze_api::v1 as pb;
use bronze_api::v1::capture_service_client::CaptureServiceClient;
use bronze_tests::netnode::{ip, skipped, veth};
use bronze_tests::netns::NetNs;
use bronze_tests::provider::node_in;
use bronze_tests::{Node, Pki, bronzectl};
use std::net::{SocketAddr, UdpSocket};
use std::process::Command;
use std::time::{Duration, Instant};
use tokio_stream::StreamExt;
use tonic::Code;

const NODE_ADDR: &str = "10.77.0.1";
const PEER_ADDR: &str = "10.77.0.2";
const LINK: &str = "cap0";

/// The node in `ns` with `cap0` (10.77.0.1/24) joined to `peer0`
/// (10.77.0.2/24) in `peer`.
async fn setup(name: &str) -> Option<(NetNs, NetNs, Pki, Node)> {
    if skipped(name) {
        return None;
    }
    if Command::new("tcpdump").arg("--version").output().map(|o| !o.status.success()).unwrap_or(true) {
        eprintln!("\n!!!!!!!! SKIPPED {name}: tcpdump is not installed !!!!!!!!\n");
        return None;
    }
    let mut ns = NetNs::new().expect("netns");
    let peer = NetNs::new().expect("peer netns");
    veth(&ns, LINK, &peer, "peer0", Some(&format!("{PEER_ADDR}/24")));
    ip(&["-n", ns.name(), "addr", "add", &format!("{NODE_ADDR}/24"), "dev", LINK]);
    ip(&["-n", ns.name(), "link", "set", LINK, "up"]);
    let pki = Pki::new();
    let node = node_in(&mut ns, pki.node_config("pcap"), vec![]).await;
    Some((ns, peer, pki, node))
}

/// `count` datagrams from the peer namespace to `port` on the node, each
/// `marker-N` padded to `size` bytes.
fn send(peer: &NetNs, port: u16, count: usize, marker: &str, size: usize) {
    let path = format!("/run/netns/{}", peer.name());
    let marker = marker.to_string();
    std::thread::spawn(move || {
        let file = std::fs::File::open(path).expect("open the peer namespace");
        nix::sched::setns(file, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        let socket = UdpSocket::bind("0.0.0.0:0").expect("bind in the peer namespace");
        let to: SocketAddr = format!("{NODE_ADDR}:{port}").parse().unwrap();
        for i in 0..count {
            let mut payload = format!("{marker}-{i}.").into_bytes();
            payload.resize(size.max(payload.len()), b'.');
            socket.send_to(&payload, to).expect("send");
            std::thread::sleep(Duration::from_millis(5));
        }
    })
    .join()
    .expect("sender thread");
}

/// `tcpdump -ddd EXPR`: the filter as the client compiles it.
fn compile(expression: &str) -> Vec<pb::BpfInstruction> {
    let out = Command::new("tcpdump").args(["-ddd", "--", expression]).output().expect("tcpdump -ddd");
    assert!(out.status.success(), "tcpdump -ddd {expression}: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    let mut lines = text.lines();
    let count: usize = lines.next().unwrap().trim().parse().unwrap();
    let insns: Vec<_> = lines
        .map(|l| {
            let f: Vec<u32> = l.split_whitespace().map(|n| n.parse().unwrap()).collect();
            pb::BpfInstruction { code: f[0], jt: f[1], jf: f[2], k: f[3] }
        })
        .collect();
    assert_eq!(insns.len(), count);
    insns
}

fn request(filter: &str, duration_ms: u64, max_bytes: u64) -> pb::CaptureRequest {
    pb::CaptureRequest {
        link: LINK.into(),
        filter: if filter.is_empty() { Vec::new() } else { compile(filter) },
        filter_link_type: 1,
        filter_expression: filter.into(),
        duration_ms,
        max_bytes,
        snaplen: 0,
    }
}

/// A capture in progress: the stream, with the header already read.
struct Running {
    stream: tonic::Streaming<pb::CaptureChunk>,
    file: Vec<u8>,
}

async fn start(node: &Node, pki: &Pki, req: pb::CaptureRequest) -> Result<Running, tonic::Status> {
    let client = node.client(&pki.auth(&["os:admin"])).await;
    let mut stream = CaptureServiceClient::new(client.channel.clone()).capture(req).await?.into_inner();
    // The global header comes first, as soon as the socket is open.
    let first = stream.next().await.expect("a first chunk")?;
    assert_eq!(first.data.len(), 24, "the first chunk is the pcap header");
    assert_eq!(&first.data[..4], &0xa1b2_c3d4u32.to_ne_bytes());
    Ok(Running { stream, file: first.data })
}

impl Running {
    /// Reads to the end: the file and the summary.
    async fn finish(mut self) -> (Vec<u8>, pb::CaptureSummary) {
        let mut summary = None;
        while let Some(chunk) = self.stream.next().await {
            let chunk = chunk.expect("chunk");
            assert!(summary.is_none(), "nothing follows the summary");
            self.file.extend_from_slice(&chunk.data);
            summary = chunk.summary;
        }
        (self.file, summary.expect("the last chunk carries the summary"))
    }
}

/// `tcpdump -nn -A -r FILE`: one line per packet plus payload lines; panics
/// when tcpdump cannot read the file.
fn read(file: &[u8]) -> (usize, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("capture.pcap");
    std::fs::write(&path, file).unwrap();
    let out = Command::new("tcpdump").args(["-nn", "-r"]).arg(&path).output().expect("tcpdump -r");
    assert!(out.status.success(), "tcpdump -r: {}", String::from_utf8_lossy(&out.stderr));
    let packets = String::from_utf8_lossy(&out.stdout).lines().count();
    let out = Command::new("tcpdump").args(["-nn", "-A", "-r"]).arg(&path).output().expect("tcpdump -A -r");
    (packets, String::from_utf8_lossy(&out.stdout).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filtered_capture_holds_exactly_the_datagrams_it_names() {
    let Some((_ns, peer, pki, node)) = setup("pcap filter").await else { return };
    let running = start(&node, &pki, request("udp and dst port 5555", 2500, 0)).await.unwrap();
    send(&peer, 5555, 5, "wanted", 40);
    send(&peer, 6666, 5, "other", 40);
    let (file, summary) = running.finish().await;
    let filtered_len = file.len();
    assert_eq!(summary.stopped_by, "duration", "{summary:?}");
    assert_eq!((summary.packets, summary.bytes, summary.link_type), (5, file.len() as u64, 1), "{summary:?}");
    // The kernel's own count: the filter accepted those 5, none dropped.
    assert_eq!((summary.kernel_accepted, summary.kernel_dropped), (5, 0), "{summary:?}");
    let (packets, text) = read(&file);
    assert_eq!(packets, 5, "{text}");
    let to_5555 = text.lines().filter(|l| l.contains(&format!("{PEER_ADDR}.")) && l.contains("> 10.77.0.1.5555: UDP"));
    assert_eq!(to_5555.count(), 5, "{text}");
    for i in 0..5 {
        assert!(text.contains(&format!("wanted-{i}.")), "wanted-{i} missing:\n{text}");
    }
    assert!(!text.contains("other-") && !text.contains("ICMP") && !text.contains("ARP"), "{text}");

    // Unfiltered, the same link shows the rest too: the filter did the work.
    let running = start(&node, &pki, request("", 2000, 0)).await.unwrap();
    send(&peer, 6666, 3, "other", 40);
    let (file, summary) = running.finish().await;
    let (packets, text) = read(&file);
    assert_eq!(packets as u64, summary.packets);
    assert!(text.contains("other-2.") && text.contains("ICMP 10.77.0.1 udp port 6666 unreachable"), "{text}");

    // Each capture is audited at its end with what it captured.
    let mut c = node.client(&pki.auth(&["os:admin"])).await;
    let list = c
        .resources
        .list(pb::ListRequest { namespace: String::new(), r#type: "auditevents".into() })
        .await
        .unwrap()
        .into_inner();
    let ends: Vec<_> = list
        .resources
        .iter()
        .map(|r| serde_json::from_str::<serde_json::Value>(&r.spec_json).unwrap())
        .filter(|s| s["method"] == "/bronze.v1.CaptureService/Capture" && s["message"] != "")
        .collect();
    assert_eq!(ends.len(), 2, "{ends:?}");
    // 24 + 5 × (16 + 14 + 20 + 8 + 40) bytes.
    assert_eq!(filtered_len, 514);
    assert_eq!(
        ends[0]["message"],
        "capture on cap0 (filter \"udp and dst port 5555\"): 5 packets, 514 bytes, 0 dropped by the kernel, stopped by duration"
    );
    assert!(ends.iter().all(|e| e["roles"] == serde_json::json!(["os:admin"]) && e["result"] == "ok"), "{ends:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_capture_stops_at_its_byte_limit_and_at_its_duration() {
    let Some((_ns, peer, pki, node)) = setup("pcap limits").await else { return };
    let max = 4096u64;
    let started = Instant::now();
    let running = start(&node, &pki, request("udp", 60_000, max)).await.unwrap();
    send(&peer, 5555, 100, "bulk", 200);
    let (file, summary) = running.finish().await;
    let took = started.elapsed();
    assert_eq!(summary.stopped_by, "max-bytes", "{summary:?}");
    assert!(took < Duration::from_secs(20), "stopped at the byte limit, not the duration: {took:?}");
    // Each record is 16 + 242 bytes (Ethernet, IPv4, UDP, 200 bytes): the
    // file stops at the last whole record under the limit.
    let record = 16 + 14 + 20 + 8 + 200;
    assert_eq!(file.len() as u64, summary.bytes);
    assert_eq!(file.len(), 24 + 15 * record, "{summary:?}");
    assert!(file.len() as u64 <= max && file.len() as u64 + record as u64 > max);
    let (packets, text) = read(&file);
    assert_eq!((packets, summary.packets), (15, 15), "{text}");

    // Nothing matches: the header alone, after the duration.
    let started = Instant::now();
    let running = start(&node, &pki, request("udp port 7", 1500, 0)).await.unwrap();
    send(&peer, 5555, 3, "ignored", 10);
    let (file, summary) = running.finish().await;
    let took = started.elapsed();
    assert_eq!((summary.stopped_by.as_str(), summary.packets), ("duration", 0));
    assert!(took >= Duration::from_millis(1500) && took < Duration::from_secs(5), "{took:?}");
    assert_eq!(file.len(), 24);
    assert_eq!(read(&file).0, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_capture_per_link_bad_requests_and_roles_are_refused() {
    let Some((ns, _peer, pki, node)) = setup("pcap refusals").await else { return };
    let running = start(&node, &pki, request("", 3000, 0)).await.unwrap();
    let busy = start(&node, &pki, request("", 1000, 0)).await.err().expect("a second capture on the link");
    assert_eq!(busy.code(), Code::ResourceExhausted, "{busy:?}");
    assert_eq!(busy.message(), "a capture on link cap0 is already running (one per link at a time)");
    // Another link is free.
    let lo = pb::CaptureRequest { link: "lo".into(), ..request("", 500, 0) };
    start(&node, &pki, lo).await.unwrap().finish().await;
    // A client that goes away ends its capture: the link is free again soon.
    drop(running);
    let left = Instant::now();
    loop {
        match start(&node, &pki, request("", 200, 0)).await {
            Ok(short) => {
                assert_eq!(short.finish().await.1.stopped_by, "duration");
                break;
            }
            Err(e) if e.code() == Code::ResourceExhausted && left.elapsed() < Duration::from_secs(2) => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(e) => panic!("the link is still busy {:?} after its client left: {e:?}", left.elapsed()),
        };
    }

    // A jump past the end: the kernel's verifier refuses it on attach.
    let bad = pb::CaptureRequest {
        filter: vec![pb::BpfInstruction { code: 0x15, jt: 9, jf: 9, k: 0 }],
        ..request("", 1000, 0)
    };
    let err = start(&node, &pki, bad).await.err().expect("an invalid program");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().starts_with("the kernel refused the filter: "), "{err:?}");
    let long = pb::CaptureRequest {
        filter: vec![pb::BpfInstruction { code: 6, jt: 0, jf: 0, k: 0 }; 4091],
        ..request("", 1000, 0)
    };
    let err = start(&node, &pki, long).await.err().expect("too long");
    assert_eq!(err.message(), "the filter has 4091 instructions; at most 4090 are allowed");
    let err = start(&node, &pki, pb::CaptureRequest { link: "nope0".into(), ..request("", 1000, 0) }).await.err();
    assert_eq!(
        err.map(|e| (e.code(), e.message().to_string())),
        Some((Code::NotFound, "link nope0 does not exist".into()))
    );
    // A raw-IP link (tun): its file has link type 101, and a filter compiled
    // for Ethernet is refused.
    ip(&["-n", ns.name(), "tuntap", "add", "dev", "tun0", "mode", "tun"]);
    let err = start(&node, &pki, pb::CaptureRequest { link: "tun0".into(), ..request("udp", 1000, 0) }).await.err();
    assert_eq!(
        err.map(|e| (e.code(), e.message().to_string())),
        Some((
            Code::InvalidArgument,
            "the filter was compiled for pcap link type 1, but link tun0 has link type 101".into()
        ))
    );
    let tun = pb::CaptureRequest { link: "tun0".into(), ..request("", 300, 0) };
    let (file, summary) = start(&node, &pki, tun).await.unwrap().finish().await;
    assert_eq!((summary.link_type, &file[20..24]), (101, &101u32.to_ne_bytes()[..]));
    let err = start(&node, &pki, request("", 300_001, 0)).await.err().expect("too long a duration");
    assert_eq!(err.code(), Code::InvalidArgument);

    for role in ["os:reader", "os:operator"] {
        let client = node.client(&pki.auth(&[role])).await;
        let err = CaptureServiceClient::new(client.channel.clone()).capture(request("", 1000, 0)).await.err();
        let err = err.unwrap_or_else(|| panic!("{role} may not capture"));
        assert_eq!(err.code(), Code::PermissionDenied);
        assert_eq!(err.message(), format!("{role} may not call Capture"));
    }
}

/// `bronzectl pcap`: the filter compiled by tcpdump on the client, the file
/// written where `--output-file` says (no partial file left), the row as JSON.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bronzectl_pcap_writes_a_file_tcpdump_reads() {
    let Some((_ns, peer, pki, node)) = setup("pcap bronzectl").await else { return };
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("admin");
    pki.write_bronzeconfig(&config, std::slice::from_ref(&node.addr), &["os:admin"]);
    let file = dir.path().join("cap.pcap");
    let file_arg = file.display().to_string();
    let args =
        ["pcap", "-i", LINK, "--bpf", "udp port 5555", "--duration", "3s", "--output-file", &file_arg, "-o", "json"];
    let sender = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(700));
        for _ in 0..10 {
            send(&peer, 5555, 1, "cli", 20);
            send(&peer, 6666, 1, "skip", 20);
            std::thread::sleep(Duration::from_millis(50));
        }
    });
    let run = bronzectl(Some(&config), &args).await;
    sender.join().unwrap();
    assert_eq!(run.code, 0, "{run:?}");
    let row: serde_json::Value = serde_json::from_str(run.stdout.trim()).unwrap_or_else(|e| panic!("{e}: {run:?}"));
    assert_eq!((row["link"].as_str(), row["stoppedBy"].as_str()), (Some(LINK), Some("duration")), "{row}");
    let bytes = std::fs::read(&file).expect("the pcap file");
    assert_eq!(row["bytes"].as_u64(), Some(bytes.len() as u64));
    let (packets, text) = read(&bytes);
    assert!(packets > 0 && row["packets"].as_u64() == Some(packets as u64), "{row}\n{text}");
    assert!(text.contains("cli-0.") && !text.contains("skip-"), "{text}");
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(left.len(), 2, "only the config and the capture: {left:?}");

    let bad =
        bronzectl(Some(&config), &["pcap", "-i", LINK, "--bpf", "udp port (((", "--output-file", &file_arg]).await;
    assert_ne!(bad.code, 0);
    assert!(bad.stderr.contains("tcpdump cannot compile --bpf \"udp port (((\""), "{bad:?}");
}
