//! Read-only facts about the node (manifest: `facts = [...]`, one name per
//! interface used: `dmi`, `links`, `cmdline`, `time`).

pub use crate::host::bronze::host::facts_dmi::DmiInfo;
pub use crate::host::bronze::host::facts_time::TimeStatus;

use crate::Link;

/// DMI/SMBIOS identity (`facts = ["dmi"]`).
pub fn dmi() -> DmiInfo {
    crate::host::bronze::host::facts_dmi::read()
}

/// Every network link, sorted by name (`facts = ["links"]`).
pub fn links() -> Vec<Link> {
    crate::host::bronze::host::facts_links::links()
}

/// The kernel command line, split into words (`facts = ["cmdline"]`).
pub fn cmdline() -> Vec<String> {
    crate::host::bronze::host::facts_cmdline::cmdline()
}

/// The value of the first `key=value` command line word; `Some("")` for a
/// bare `key` (`facts = ["cmdline"]`).
pub fn cmdline_value(key: &str) -> Option<String> {
    crate::host::bronze::host::facts_cmdline::get(key)
}

/// The host's clock synchronisation state (`facts = ["time"]`).
pub fn time() -> TimeStatus {
    crate::host::bronze::host::facts_time::status()
}
