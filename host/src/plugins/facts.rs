//! Read-only node facts for the `facts-*` capabilities: DMI/SMBIOS fields,
//! network links, the kernel command line and time sync state.

use crate::network::resources::{AddressStatusSpec, LinkStatusSpec};
use crate::state::Store;
use crate::state::types::TimeStatusSpec;
use crate::time::controller::TIME_STATUS_ID;
use std::path::PathBuf;

/// DMI fields this host reports, by file name under /sys/class/dmi/id.
pub const DMI_FIELDS: [&str; 9] = [
    "sys_vendor",
    "product_name",
    "product_serial",
    "product_uuid",
    "board_vendor",
    "board_name",
    "chassis_asset_tag",
    "bios_vendor",
    "bios_version",
];

/// A field value is never longer than this (firmware strings are short).
const MAX_FIELD: u64 = 4096;

#[derive(Debug, Clone)]
pub struct Facts {
    store: Store,
    dmi_dir: PathBuf,
    cmdline: PathBuf,
}

/// One link with its addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkFact {
    pub name: String,
    pub mac: Option<String>,
    pub mtu: u32,
    pub up: bool,
    pub carrier: bool,
    pub addresses: Vec<String>,
}

/// Time sync state as the time controller publishes it.
#[derive(Debug, Clone, PartialEq)]
pub struct TimeFact {
    pub synced: bool,
    pub synced_by_timeout: bool,
    pub server: Option<String>,
    pub offset_ns: Option<i64>,
    pub since_last_sync_secs: Option<u64>,
}

impl Facts {
    /// Facts from `sys` (DMI under `class/dmi/id`) and the command line in
    /// the file `cmdline` (normally /proc/cmdline).
    pub fn new(store: Store, sys: PathBuf, cmdline: PathBuf) -> Self {
        Facts { store, dmi_dir: sys.join("class/dmi/id"), cmdline }
    }

    /// Each DMI field in [`DMI_FIELDS`] order; `None` when absent,
    /// unreadable (some need root) or empty.
    pub fn dmi(&self) -> Vec<Option<String>> {
        DMI_FIELDS.iter().map(|field| read_small(&self.dmi_dir.join(field))).collect()
    }

    pub fn links(&self) -> Vec<LinkFact> {
        let addresses: Vec<AddressStatusSpec> =
            self.store.list_typed::<AddressStatusSpec>().into_iter().map(|(_, spec)| spec).collect();
        let mut links: Vec<LinkFact> = self
            .store
            .list_typed::<LinkStatusSpec>()
            .into_iter()
            .map(|(_, link)| LinkFact {
                addresses: addresses.iter().filter(|a| a.link == link.name).map(|a| a.address.clone()).collect(),
                mac: (!link.hardware_address.is_empty() && link.hardware_address != "00:00:00:00:00:00")
                    .then(|| link.hardware_address.clone()),
                name: link.name,
                mtu: link.mtu,
                up: link.up,
                carrier: link.carrier,
            })
            .collect();
        links.sort_by(|a, b| a.name.cmp(&b.name));
        links
    }

    /// The kernel command line, split into words.
    pub fn cmdline(&self) -> Vec<String> {
        read_small(&self.cmdline).map(|line| line.split_whitespace().map(str::to_string).collect()).unwrap_or_default()
    }

    pub fn time(&self) -> TimeFact {
        match self.store.get_typed::<TimeStatusSpec>(TIME_STATUS_ID) {
            None => TimeFact {
                synced: false,
                synced_by_timeout: false,
                server: None,
                offset_ns: None,
                since_last_sync_secs: None,
            },
            Some((_, t)) => {
                let last =
                    time::OffsetDateTime::parse(&t.last_sync, &time::format_description::well_known::Rfc3339).ok();
                TimeFact {
                    synced: t.synced,
                    synced_by_timeout: t.synced_by_timeout,
                    server: (!t.current_address.is_empty()).then(|| t.current_address.clone()),
                    offset_ns: last.map(|_| (t.last_offset_seconds * 1e9) as i64),
                    since_last_sync_secs: last
                        .map(|at| (time::OffsetDateTime::now_utc() - at).whole_seconds().max(0) as u64),
                }
            }
        }
    }
}

/// The value of the first `key=value` (or bare `key`) word.
pub fn cmdline_value(words: &[String], key: &str) -> Option<String> {
    words.iter().find_map(|word| match word.split_once('=') {
        Some((k, v)) if k == key => Some(v.to_string()),
        None if word == key => Some(String::new()),
        _ => None,
    })
}

fn read_small(path: &std::path::Path) -> Option<String> {
    use std::io::Read;
    let mut text = String::new();
    std::fs::File::open(path).ok()?.take(MAX_FIELD).read_to_string(&mut text).ok()?;
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cmdline_values() {
        let words: Vec<String> = ["console=ttyS0", "quiet", "bronze.ip=dhcp", "x=1", "x=2"].map(String::from).into();
        assert_eq!(cmdline_value(&words, "bronze.ip").as_deref(), Some("dhcp"));
        assert_eq!(cmdline_value(&words, "quiet").as_deref(), Some(""));
        assert_eq!(cmdline_value(&words, "x").as_deref(), Some("1"));
        assert_eq!(cmdline_value(&words, "missing"), None);
    }

    #[test]
    fn dmi_reads_present_fields_only() {
        let dir = tempfile::tempdir().unwrap();
        let id = dir.path().join("class/dmi/id");
        std::fs::create_dir_all(&id).unwrap();
        std::fs::write(id.join("sys_vendor"), "QEMU\n").unwrap();
        std::fs::write(id.join("product_name"), "\n").unwrap();
        let facts = Facts::new(Store::new(), dir.path().into(), dir.path().into());
        let dmi = facts.dmi();
        assert_eq!(dmi[0].as_deref(), Some("QEMU"));
        assert_eq!(dmi[1], None);
        assert_eq!(dmi[3], None);
    }
}
