//! `bronzectl mounts`, `disks` and `usage PATH`: the mount table, the block
//! devices and directory sizes of every node (`StorageService`, reader).

use crate::cli::Globals;
use crate::client::{NodeClient, call};
use crate::output::{Output, obj};
use bronze_api::v1 as pb;
use bronze_api::v1::storage_service_client::StorageServiceClient;
use clap::Args;
use serde_json::json;
use std::process::ExitCode;

pub const MOUNT_COLUMNS: &[&str] = &["source", "target", "fs", "size", "used", "avail", "use%", "options"];
pub const DISK_COLUMNS: &[&str] = &["name", "parent", "size", "model", "serial", "table", "fs", "label", "flags"];
pub const USAGE_COLUMNS: &[&str] = &["size", "apparent", "files", "dirs", "path"];

#[derive(Debug, Args)]
pub struct UsageArgs {
    /// An absolute directory under the state dir, /var/lib/bronze, /var/log, /run or /tmp.
    pub path: String,
    /// How many directory levels below PATH to show (1-8).
    #[arg(short = 'd', long, default_value_t = 1)]
    pub depth: u32,
}

fn client(c: &NodeClient) -> StorageServiceClient<tonic::transport::Channel> {
    StorageServiceClient::new(c.channel.clone()).max_decoding_message_size(64 << 20)
}

pub async fn run_mounts(g: &Globals) -> anyhow::Result<ExitCode> {
    g.each_node(MOUNT_COLUMNS, |c| async move { Ok(mount_rows(&call(client(&c).mounts(pb::MountsRequest {})).await?)) })
        .await
}

pub async fn run_disks(g: &Globals) -> anyhow::Result<ExitCode> {
    g.each_node(DISK_COLUMNS, |c| async move { Ok(disk_rows(&call(client(&c).disks(pb::DisksRequest {})).await?)) })
        .await
}

pub async fn run_usage(args: &UsageArgs, g: &Globals) -> anyhow::Result<ExitCode> {
    let request = pb::UsageRequest { path: args.path.clone(), max_depth: args.depth };
    g.each_node(USAGE_COLUMNS, |c| {
        let request = request.clone();
        async move { Ok(usage_rows(&call(client(&c).usage(request)).await?)) }
    })
    .await
}

/// `1.5G`, `12M`, `512` (binary units, like `df -h`).
pub fn human(bytes: u64) -> String {
    const UNITS: &[&str] = &["K", "M", "G", "T", "P"];
    if bytes < 1024 {
        return bytes.to_string();
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if value < 10.0 { format!("{value:.1}{}", UNITS[unit]) } else { format!("{value:.0}{}", UNITS[unit]) }
}

/// Pure: a mount listing as fields and rows.
pub fn mount_rows(r: &pb::MountsResponse) -> Output {
    let rows = r
        .mounts
        .iter()
        .map(|m| {
            let (size, used, avail, percent) = if !m.stat_error.is_empty() || m.size_bytes == 0 {
                ("-".to_string(), "-".to_string(), "-".to_string(), "-".to_string())
            } else {
                let percent = (m.used_bytes as f64 * 100.0 / m.size_bytes as f64).round();
                (human(m.size_bytes), human(m.used_bytes), human(m.available_bytes), format!("{percent}%"))
            };
            vec![
                m.source.clone(),
                m.target.clone(),
                m.filesystem.clone(),
                size,
                used,
                avail,
                percent,
                m.options.clone(),
            ]
        })
        .collect();
    let items: Vec<_> = r
        .mounts
        .iter()
        .map(|m| {
            json!({
                "source": m.source, "target": m.target, "filesystem": m.filesystem, "options": m.options,
                "sizeBytes": m.size_bytes, "usedBytes": m.used_bytes, "availableBytes": m.available_bytes,
                "mountId": m.mount_id, "parentId": m.parent_id, "statError": m.stat_error,
            })
        })
        .collect();
    Output { fields: obj(json!({ "mounts": items, "truncated": r.truncated })), rows }
}

/// Pure: a disk listing as fields and rows.
pub fn disk_rows(r: &pb::DisksResponse) -> Output {
    let rows = r
        .disks
        .iter()
        .map(|d| {
            let mut flags = Vec::new();
            if d.read_only {
                flags.push("ro".to_string());
            }
            if d.removable {
                flags.push("removable".to_string());
            }
            if !d.error.is_empty() {
                flags.push(format!("error: {}", d.error));
            }
            vec![
                d.name.clone(),
                d.parent.clone(),
                human(d.size_bytes),
                d.model.clone(),
                d.serial.clone(),
                d.partition_table.clone(),
                d.filesystem.clone(),
                d.label.clone(),
                flags.join(" "),
            ]
        })
        .collect();
    let items: Vec<_> = r
        .disks
        .iter()
        .map(|d| {
            json!({
                "name": d.name, "parent": d.parent, "sizeBytes": d.size_bytes, "model": d.model,
                "serial": d.serial, "partitionTable": d.partition_table, "filesystem": d.filesystem,
                "label": d.label, "readOnly": d.read_only, "removable": d.removable, "devPath": d.dev_path,
                "error": d.error,
            })
        })
        .collect();
    Output { fields: obj(json!({ "disks": items })), rows }
}

/// Pure: directory sizes as fields and rows; the notes (a bound reached,
/// unreadable directories) as the last rows.
pub fn usage_rows(r: &pb::UsageResponse) -> Output {
    let mut rows: Vec<Vec<String>> = r
        .entries
        .iter()
        .map(|e| {
            vec![
                human(e.size_bytes),
                human(e.apparent_bytes),
                e.files.to_string(),
                e.directories.to_string(),
                e.path.clone(),
            ]
        })
        .collect();
    for note in &r.notes {
        rows.push(vec![String::new(), String::new(), String::new(), String::new(), format!("note: {note}")]);
    }
    let items: Vec<_> = r
        .entries
        .iter()
        .map(|e| {
            json!({
                "path": e.path, "depth": e.depth, "sizeBytes": e.size_bytes, "apparentBytes": e.apparent_bytes,
                "files": e.files, "directories": e.directories,
            })
        })
        .collect();
    Output { fields: obj(json!({ "entries": items, "truncated": r.truncated, "notes": r.notes })), rows }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::{Format, NodeResult, render};

    #[test]
    fn sizes_are_human() {
        assert_eq!(
            (human(0), human(1023), human(1536), human(10 << 20), human(3 << 30)),
            ("0".into(), "1023".into(), "1.5K".into(), "10M".into(), "3.0G".into())
        );
    }

    #[test]
    fn mounts_render_hostile_paths_escaped_and_failed_stats_as_dashes() {
        let r = pb::MountsResponse {
            mounts: vec![
                pb::Mount {
                    source: "/dev/vda1".into(),
                    target: "/".into(),
                    filesystem: "ext4".into(),
                    options: "rw".into(),
                    size_bytes: 100 << 20,
                    used_bytes: 25 << 20,
                    available_bytes: 75 << 20,
                    ..Default::default()
                },
                pb::Mount {
                    source: "x".into(),
                    target: "/mnt/\u{1b}[31mred".into(),
                    filesystem: "nfs".into(),
                    stat_error: "statvfs did not answer within 3 s".into(),
                    ..Default::default()
                },
            ],
            truncated: false,
        };
        let out = mount_rows(&r);
        assert_eq!(out.rows[0][3..7], ["100M", "25M", "75M", "25%"]);
        assert_eq!(out.rows[1][3], "-");
        let table = render(Format::Table, MOUNT_COLUMNS, &[NodeResult { node: "n1".into(), outcome: Ok(out) }]);
        assert!(!table.contains('\u{1b}'), "{table}");
    }

    #[test]
    fn disks_and_usage_rows() {
        let d = disk_rows(&pb::DisksResponse {
            disks: vec![pb::Disk {
                name: "vda".into(),
                size_bytes: 1 << 30,
                partition_table: "gpt".into(),
                read_only: true,
                error: "/dev/vda: denied".into(),
                ..Default::default()
            }],
        });
        assert_eq!(d.rows[0][2], "1.0G");
        assert_eq!(d.rows[0][8], "ro error: /dev/vda: denied");
        let u = usage_rows(&pb::UsageResponse {
            entries: vec![pb::UsageEntry { path: "/var/log".into(), size_bytes: 4096, files: 2, ..Default::default() }],
            truncated: true,
            notes: vec!["stopped after 5 s: figures are lower bounds".into()],
        });
        assert_eq!(u.rows.len(), 2);
        assert!(u.rows[1][4].starts_with("note: stopped"));
        assert_eq!(u.fields["truncated"], true);
    }
}
