//! `pcap -i LINK [--bpf FILTER] [--duration 10s] [--max-bytes 10MiB]
//! [--snaplen N] --output-file F`: capture packets on a node's link into a
//! pcap file that tcpdump and Wireshark open.
//!
//! The node has no libpcap, so the filter expression is compiled here:
//! `tcpdump -ddd` (Debian's `tcpdump` package) prints the classic-BPF
//! instructions for an Ethernet link, and those are sent. The node checks
//! their count, the kernel verifies them when the node attaches them.
//! Without `--bpf` tcpdump is not needed.
//!
//! The file is written next to its final name and renamed there when the
//! capture ends; with several nodes (`-n a,b`), each node gets its own file,
//! the node's name before the extension (`cap.pcap` → `cap-a.pcap`).

use crate::cli::{Globals, parse_duration};
use crate::client::{NodeClient, describe_status};
use crate::output::{Output, obj};
use anyhow::{Context, bail};
use bronze_api::v1 as pb;
use bronze_api::v1::capture_service_client::CaptureServiceClient;
use clap::Args;
use serde_json::json;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

/// The pcap link type `tcpdump -ddd` compiles for without an interface.
pub const LINKTYPE_ETHERNET: u32 = 1;

#[derive(Debug, Args)]
pub struct PcapArgs {
    /// The link to capture on (`get links` lists them).
    #[arg(short = 'i', long = "interface", value_name = "LINK")]
    pub link: String,
    /// A tcpdump filter expression, e.g. "udp port 53"; compiled here with `tcpdump -ddd`.
    #[arg(long, value_name = "FILTER")]
    pub bpf: Option<String>,
    /// How long to capture (at most 5m).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Largest file, header included (at most 1GiB): 10MiB, 500KiB, 2000.
    #[arg(long, default_value = "10MiB", value_parser = parse_size)]
    pub max_bytes: u64,
    /// Bytes kept of each packet (at most 262144).
    #[arg(long, default_value_t = 262_144)]
    pub snaplen: u32,
    /// The pcap file to write.
    #[arg(long = "output-file", visible_alias = "out", value_name = "PATH")]
    pub output_file: PathBuf,
}

pub const PCAP_COLUMNS: &[&str] = &["link", "file", "packets", "bytes", "dropped", "stopped"];

pub async fn run(args: &PcapArgs, g: &Globals) -> anyhow::Result<ExitCode> {
    let filter = match &args.bpf {
        Some(expression) => compile(expression, args.snaplen)?,
        None => Vec::new(),
    };
    let request = pb::CaptureRequest {
        link: args.link.clone(),
        filter,
        filter_link_type: LINKTYPE_ETHERNET,
        filter_expression: args.bpf.clone().unwrap_or_default(),
        duration_ms: u64::try_from(args.duration.as_millis()).unwrap_or(u64::MAX),
        max_bytes: args.max_bytes,
        snaplen: args.snaplen,
    };
    let several = g.target()?.nodes.len() > 1;
    let output_file = &args.output_file;
    g.each_node(PCAP_COLUMNS, |c| {
        let path = if several { per_node(output_file, &c.node) } else { output_file.clone() };
        capture(c, request.clone(), path)
    })
    .await
}

/// Compiles `expression` with `tcpdump -ddd`.
pub fn compile(expression: &str, snaplen: u32) -> anyhow::Result<Vec<pb::BpfInstruction>> {
    let out = std::process::Command::new("tcpdump")
        .args(["-ddd", "-s", &snaplen.to_string(), "--", expression])
        .output()
        .map_err(|e| {
            anyhow::anyhow!(
                "--bpf is compiled on this machine with `tcpdump -ddd` (the node has no libpcap), and running tcpdump failed: {e} (install the tcpdump package)"
            )
        })?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let why = stderr.lines().filter(|l| !l.starts_with("Warning: assuming Ethernet")).collect::<Vec<_>>();
        bail!("tcpdump cannot compile --bpf {expression:?}: {}", why.join("; ").trim());
    }
    parse_ddd(&String::from_utf8_lossy(&out.stdout)).context("reading `tcpdump -ddd` output")
}

/// `tcpdump -ddd` output: the count, then `code jt jf k` per line.
pub fn parse_ddd(text: &str) -> anyhow::Result<Vec<pb::BpfInstruction>> {
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
    let count: usize = match lines.next() {
        Some(first) => first.parse().with_context(|| format!("the count {first:?} is not a number"))?,
        None => bail!("it is empty"),
    };
    let insns = lines
        .enumerate()
        .map(|(i, line)| {
            let fields: Vec<u32> = line
                .split_whitespace()
                .map(str::parse)
                .collect::<Result<_, _>>()
                .with_context(|| format!("instruction {i}: {line:?} is not four numbers"))?;
            match fields[..] {
                [code, jt, jf, k] => Ok(pb::BpfInstruction { code, jt, jf, k }),
                _ => bail!("instruction {i}: {line:?} is not four numbers"),
            }
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    if insns.len() != count {
        bail!("it announces {count} instructions and holds {}", insns.len());
    }
    Ok(insns)
}

/// `1024`, `500KiB`, `10MiB`, `1GiB` (K/M/G are the same binary units; kB/MB/GB decimal).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(split);
    let number: u64 = digits.parse().map_err(|_| format!("{s:?}: expected a size like 2000, 500KiB or 10MiB"))?;
    let factor: u64 = match unit.trim() {
        "" | "B" => 1,
        "K" | "KiB" => 1 << 10,
        "M" | "MiB" => 1 << 20,
        "G" | "GiB" => 1 << 30,
        "kB" | "KB" => 1000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        other => return Err(format!("{s:?}: unknown unit {other:?}; expected B, KiB, MiB or GiB")),
    };
    number.checked_mul(factor).ok_or_else(|| format!("{s:?} is too large"))
}

/// `cap.pcap` for node `10.0.0.1:50000` → `cap-10.0.0.1_50000.pcap`.
pub fn per_node(path: &Path, node: &str) -> PathBuf {
    let safe: String =
        node.chars().map(|c| if c.is_ascii_alphanumeric() || c == '.' || c == '-' { c } else { '_' }).collect();
    let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let name = match path.extension() {
        Some(ext) => format!("{stem}-{safe}.{}", ext.to_string_lossy()),
        None => format!("{stem}-{safe}"),
    };
    path.with_file_name(name)
}

/// Runs one capture and writes its file; renamed into place at the end.
pub async fn capture(c: NodeClient, request: pb::CaptureRequest, path: PathBuf) -> Result<Output, String> {
    let mut client = CaptureServiceClient::new(c.channel.clone());
    let mut stream = client.capture(request.clone()).await.map_err(|s| describe_status(&s))?.into_inner();
    let partial = partial_path(&path);
    let mut file = std::fs::File::create(&partial).map_err(|e| format!("cannot create {}: {e}", partial.display()))?;
    let result = async {
        let mut summary = None;
        while let Some(chunk) = stream.message().await.map_err(|s| describe_status(&s))? {
            file.write_all(&chunk.data).map_err(|e| format!("writing {}: {e}", partial.display()))?;
            if chunk.summary.is_some() {
                summary = chunk.summary;
            }
        }
        let summary = summary.ok_or("the node ended the capture without its summary")?;
        file.sync_all().map_err(|e| format!("writing {}: {e}", partial.display()))?;
        std::fs::rename(&partial, &path).map_err(|e| format!("renaming {} into place: {e}", partial.display()))?;
        Ok::<_, String>(summary)
    }
    .await;
    let summary = match result {
        Ok(summary) => summary,
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            return Err(e);
        }
    };
    if summary.stopped_by == "error" {
        return Err(format!(
            "the capture failed after {} packets ({} written): {}",
            summary.packets,
            path.display(),
            summary.error
        ));
    }
    Ok(pcap_output(&request.link, &path, &summary))
}

fn partial_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".partial");
    path.with_file_name(name)
}

pub fn pcap_output(link: &str, path: &Path, s: &pb::CaptureSummary) -> Output {
    let file = path.display().to_string();
    let fields = obj(json!({
        "link": link, "file": file, "packets": s.packets, "bytes": s.bytes,
        "stoppedBy": s.stopped_by, "linkType": s.link_type,
        "kernelAccepted": s.kernel_accepted, "dropped": s.kernel_dropped,
    }));
    Output::single(fields, &["link", "file", "packets", "bytes", "dropped", "stoppedBy"])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ddd_output_is_read_and_checked() {
        let insns = parse_ddd("2\n40 0 0 12\n6 0 0 262144\n").unwrap();
        assert_eq!(insns[1], pb::BpfInstruction { code: 6, jt: 0, jf: 0, k: 262_144 });
        assert_eq!(parse_ddd("3\n40 0 0 12\n").unwrap_err().to_string(), "it announces 3 instructions and holds 1");
        assert!(parse_ddd("1\n40 0 12\n").unwrap_err().to_string().contains("is not four numbers"));
        assert!(parse_ddd("").is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("2000"), Ok(2000));
        assert_eq!(parse_size("10MiB"), Ok(10 << 20));
        assert_eq!(parse_size("500KiB"), Ok(500 << 10));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("1MB"), Ok(1_000_000));
        assert!(parse_size("10 parsecs").unwrap_err().contains("unknown unit"));
        assert!(parse_size("MiB").is_err());
    }

    #[test]
    fn one_file_per_node() {
        assert_eq!(per_node(Path::new("out/cap.pcap"), "10.0.0.1:50000"), PathBuf::from("out/cap-10.0.0.1_50000.pcap"));
        assert_eq!(per_node(Path::new("cap"), "a"), PathBuf::from("cap-a"));
        assert_eq!(partial_path(Path::new("d/cap.pcap")), PathBuf::from("d/cap.pcap.partial"));
    }

    #[test]
    fn rows() {
        let s = pb::CaptureSummary {
            stopped_by: "duration".into(),
            packets: 5,
            bytes: 514,
            link_type: 1,
            error: String::new(),
            kernel_accepted: 7,
            kernel_dropped: 2,
        };
        assert_eq!(
            pcap_output("eth0", Path::new("c.pcap"), &s).rows,
            [["eth0", "c.pcap", "5", "514", "2", "duration"]]
        );
    }
}
