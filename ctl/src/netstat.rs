//! `bronzectl netstat [--listening] [--tcp|--udp] [-4|-6]`: the TCP and UDP
//! sockets of every node's network namespace (from the kernel's
//! `sock_diag`), each with the processes holding it.

use crate::cli::Globals;
use crate::client::{NodeClient, call};
use crate::output::{Output, obj};
use bronze_api::v1 as pb;
use bronze_api::v1::network_service_client::NetworkServiceClient;
use clap::Args;
use serde_json::json;
use std::process::ExitCode;

#[derive(Debug, Clone, Copy, Args)]
pub struct NetstatArgs {
    /// Only listening sockets: TCP in LISTEN, UDP not connected.
    #[arg(short = 'l', long)]
    pub listening: bool,
    /// TCP sockets (with --udp or neither: both).
    #[arg(short = 't', long)]
    pub tcp: bool,
    /// UDP sockets (with --tcp or neither: both).
    #[arg(short = 'u', long)]
    pub udp: bool,
    /// IPv4 sockets (with -6 or neither: both).
    #[arg(short = '4', long = "ipv4")]
    pub ipv4: bool,
    /// IPv6 sockets (with -4 or neither: both).
    #[arg(short = '6', long = "ipv6")]
    pub ipv6: bool,
}

impl NetstatArgs {
    pub fn request(&self) -> pb::NetstatRequest {
        pb::NetstatRequest { listening: self.listening, tcp: self.tcp, udp: self.udp, ipv4: self.ipv4, ipv6: self.ipv6 }
    }
}

pub const COLUMNS: &[&str] = &["proto", "state", "local", "remote", "recv-q", "send-q", "process"];

pub async fn run(args: &NetstatArgs, g: &Globals) -> anyhow::Result<ExitCode> {
    let req = args.request();
    g.each_node(COLUMNS, |c| netstat(c, req)).await
}

/// The RPC on one node.
pub async fn netstat(c: NodeClient, req: pb::NetstatRequest) -> Result<Output, String> {
    let mut client = NetworkServiceClient::new(c.channel.clone()).max_decoding_message_size(64 << 20);
    Ok(rows(&call(client.netstat(req)).await?))
}

/// `addr:port` as `ss` writes it: IPv6 in brackets, port 0 as `*`.
fn endpoint(address: &str, port: u32) -> String {
    let port = if port == 0 { "*".to_string() } else { port.to_string() };
    if address.contains(':') { format!("[{address}]:{port}") } else { format!("{address}:{port}") }
}

/// Pure: the answer as fields (every socket field) and rows (one per
/// socket, then one per warning).
pub fn rows(r: &pb::NetstatResponse) -> Output {
    let mut rows: Vec<Vec<String>> = r
        .sockets
        .iter()
        .map(|s| {
            let proto = if s.ip_version == 6 { format!("{}6", s.protocol) } else { s.protocol.clone() };
            let processes: Vec<String> = s.processes.iter().map(|p| format!("{}/{}", p.pid, p.command)).collect();
            vec![
                proto,
                s.state.clone(),
                endpoint(&s.local_address, s.local_port),
                endpoint(&s.remote_address, s.remote_port),
                s.recv_queue.to_string(),
                s.send_queue.to_string(),
                processes.join(","),
            ]
        })
        .collect();
    rows.extend(r.warnings.iter().map(|w| vec![format!("warning: {w}")]));
    let sockets: Vec<_> = r
        .sockets
        .iter()
        .map(|s| {
            let processes: Vec<_> = s.processes.iter().map(|p| json!({ "pid": p.pid, "command": p.command })).collect();
            json!({
                "protocol": s.protocol, "ipVersion": s.ip_version, "state": s.state,
                "localAddress": s.local_address, "localPort": s.local_port,
                "remoteAddress": s.remote_address, "remotePort": s.remote_port,
                "recvQueue": s.recv_queue, "sendQueue": s.send_queue, "uid": s.uid, "inode": s.inode,
                "processes": processes,
            })
        })
        .collect();
    let fields = obj(json!({ "sockets": sockets, "truncated": r.truncated, "warnings": r.warnings }));
    Output { fields, rows }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use crate::output::{Format, NodeResult, render};
    use clap::Parser;
    use serde_json::Value;

    fn answer() -> pb::NetstatResponse {
        pb::NetstatResponse {
            sockets: vec![
                pb::Socket {
                    protocol: "tcp".into(),
                    ip_version: 4,
                    state: "LISTEN".into(),
                    local_address: "127.0.0.1".into(),
                    local_port: 50000,
                    remote_address: "0.0.0.0".into(),
                    remote_port: 0,
                    recv_queue: 0,
                    send_queue: 4096,
                    uid: 0,
                    inode: 1234,
                    processes: vec![pb::SocketProcess { pid: 42, command: "bronzed".into() }],
                },
                pb::Socket {
                    protocol: "udp".into(),
                    ip_version: 6,
                    state: "ESTABLISHED".into(),
                    local_address: "::1".into(),
                    local_port: 5353,
                    remote_address: "fe80::1".into(),
                    remote_port: 53,
                    uid: 1000,
                    inode: 99,
                    processes: vec![
                        pb::SocketProcess { pid: 7, command: "evil\x1b[2J\nfake".into() },
                        pb::SocketProcess { pid: 8, command: "b".into() },
                    ],
                    ..Default::default()
                },
            ],
            truncated: false,
            warnings: vec!["the descriptors of 2 processes were unreadable: their sockets show no process".into()],
        }
    }

    #[test]
    fn flags_become_the_request() {
        let cli = Cli::try_parse_from(["bronzectl", "netstat", "-l", "--tcp", "-6", "-n", "a", "-o", "json"]).unwrap();
        let Command::Netstat(args) = &cli.command else { panic!("{cli:?}") };
        assert_eq!(
            args.request(),
            pb::NetstatRequest { listening: true, tcp: true, udp: false, ipv4: false, ipv6: true }
        );
        assert_eq!(cli.globals.nodes, ["a"]);
        let cli = Cli::try_parse_from(["bronzectl", "netstat", "--udp", "-4", "--listening"]).unwrap();
        let Command::Netstat(args) = &cli.command else { panic!("{cli:?}") };
        assert_eq!(
            args.request(),
            pb::NetstatRequest { listening: true, tcp: false, udp: true, ipv4: true, ipv6: false }
        );
    }

    #[test]
    fn the_table_has_one_row_per_socket_and_hostile_commands_are_escaped() {
        let results = [NodeResult { node: "n1".into(), outcome: Ok(rows(&answer())) }];
        let text = render(Format::Table, COLUMNS, &results);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0].split_whitespace().collect::<Vec<_>>(),
            ["NODE", "PROTO", "STATE", "LOCAL", "REMOTE", "RECV-Q", "SEND-Q", "PROCESS"]
        );
        let first: Vec<&str> = lines[1].split_whitespace().collect();
        assert_eq!(first, ["n1", "tcp", "LISTEN", "127.0.0.1:50000", "0.0.0.0:*", "0", "4096", "42/bronzed"]);
        let second: Vec<&str> = lines[2].split_whitespace().collect();
        assert_eq!(&second[..6], ["n1", "udp6", "ESTABLISHED", "[::1]:5353", "[fe80::1]:53", "0"]);
        assert!(lines[2].ends_with("7/evil\\x1b[2J\\nfake,8/b"), "{text}");
        assert!(lines[3].starts_with("n1     warning: the descriptors of 2 processes"), "{text}");
        assert_eq!(lines.len(), 4, "{text}");
    }

    #[test]
    fn json_carries_every_field() {
        let results = [NodeResult { node: "n1".into(), outcome: Ok(rows(&answer())) }];
        let json: Value = serde_json::from_str(render(Format::Json, COLUMNS, &results).trim()).unwrap();
        let s = &json["sockets"][1];
        assert_eq!((s["protocol"].as_str(), s["ipVersion"].as_u64()), (Some("udp"), Some(6)));
        assert_eq!((s["remoteAddress"].as_str(), s["remotePort"].as_u64()), (Some("fe80::1"), Some(53)));
        assert_eq!((s["uid"].as_u64(), s["inode"].as_u64()), (Some(1000), Some(99)));
        assert_eq!(s["processes"][0]["command"], "evil\x1b[2J\nfake");
        assert_eq!(json["truncated"], false);
        assert_eq!(json["warnings"].as_array().map(Vec::len), Some(1));
        let yaml = render(Format::Yaml, COLUMNS, &results);
        let doc: serde_yaml::Value = serde_yaml::from_str(yaml.trim_start_matches("---\n")).unwrap();
        assert_eq!(doc["sockets"][0]["processes"][0]["pid"].as_u64(), Some(42));
    }
}
