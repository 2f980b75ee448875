//! `bronze.ip=` on the kernel command line: static addresses for an
//! image's first boot, before any machine config exists (the config's
//! interface replaces the command line's for the same link).
//!
//! Format: `bronze.ip=<link>:<address>/<prefix>[:<gateway>]`, several
//! entries comma-separated and/or several `bronze.ip=` arguments. A gateway
//! becomes the link's default route. IPv6 works too: the prefix length
//! (digits) ends the address, so `eth0:fd00::5/64:fd00::1` is unambiguous.
//!
//! Each entry is checked on its own here (link name, address, gateway in
//! the address's subnet), so a bad command line cannot make a later config
//! plan fail.

use super::plan::{PlanError, gateway_reachable, link_name_problem};
use bronze_config::Cidr;
use std::net::IpAddr;
use std::path::Path;

/// The kernel command line argument.
pub const CMDLINE_ARG: &str = "bronze.ip=";

const EXPECTED: &str = "expected <link>:<address>/<prefix>[:<gateway>], like eth0:10.0.2.15/24:10.0.2.2";

/// One `bronze.ip=` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CmdlineIp {
    pub link: String,
    pub address: Cidr,
    /// The default route's gateway, when given.
    pub gateway: Option<IpAddr>,
}

/// Every `bronze.ip=` entry of a kernel command line, in order.
pub fn parse(cmdline: &str) -> Result<Vec<CmdlineIp>, PlanError> {
    cmdline
        .split_whitespace()
        .filter_map(|arg| arg.strip_prefix(CMDLINE_ARG))
        .flat_map(|list| list.split(','))
        .filter(|entry| !entry.is_empty())
        .map(parse_entry)
        .collect()
}

/// The entries of the kernel command line file (`/proc/cmdline`, or what
/// `--cmdline-file` names); a missing file means none.
pub fn read(path: &Path) -> Result<Vec<CmdlineIp>, PlanError> {
    match std::fs::read_to_string(path) {
        Ok(text) => parse(&text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(PlanError::ReadCmdline { path: path.display().to_string(), error: e.to_string() }),
    }
}

fn parse_entry(entry: &str) -> Result<CmdlineIp, PlanError> {
    let bad = |reason: String| PlanError::Cmdline { entry: entry.to_string(), reason };
    let (link, rest) = entry.split_once(':').ok_or_else(|| bad(EXPECTED.into()))?;
    if let Some(problem) = link_name_problem(link) {
        return Err(bad(format!("link name {link:?} is not valid: {problem}")));
    }
    let (addr, after) = rest.split_once('/').ok_or_else(|| bad(EXPECTED.into()))?;
    let (prefix, gateway) = match after.split_once(':') {
        Some((prefix, gateway)) => (prefix, Some(gateway)),
        None => (after, None),
    };
    let address: Cidr =
        format!("{addr}/{prefix}").parse().map_err(|e: bronze_config::ValueError| bad(e.to_string()))?;
    let gateway = match gateway {
        None => None,
        Some(text) => Some(text.parse::<IpAddr>().map_err(|_| bad(format!("gateway {text:?} is not an IP address")))?),
    };
    if let Some(gw) = gateway {
        if gw.is_ipv4() != address.is_ipv4() {
            return Err(bad(format!("gateway {gw} and address {address} are of different IP families")));
        }
        if !gateway_reachable(gw, &[address], &[]) {
            return Err(bad(format!("gateway {gw} is not in the subnet of {address}")));
        }
    }
    Ok(CmdlineIp { link: link.to_string(), address, gateway })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(link: &str, address: &str, gateway: Option<&str>) -> CmdlineIp {
        CmdlineIp { link: link.into(), address: address.parse().unwrap(), gateway: gateway.map(|g| g.parse().unwrap()) }
    }

    #[test]
    fn parses_entries_from_every_argument() {
        let got = parse("console=ttyS0 bronze.ip=eth0:10.0.2.15/24:10.0.2.2,eth1:192.168.9.4/16 quiet bronze.ip=eth0:fd00::5/64:fd00::1")
            .unwrap();
        assert_eq!(
            got,
            [
                ip("eth0", "10.0.2.15/24", Some("10.0.2.2")),
                ip("eth1", "192.168.9.4/16", None),
                ip("eth0", "fd00::5/64", Some("fd00::1")),
            ]
        );
        assert_eq!(parse("console=ttyS0 bronze.ip= bronze.ip=,").unwrap(), []);
    }

    #[test]
    fn bad_entries_are_named() {
        let cases = [
            ("bronze.ip=eth0", format!("bronze.ip entry \"eth0\": {EXPECTED}")),
            ("bronze.ip=eth0:10.0.2.15", format!("bronze.ip entry \"eth0:10.0.2.15\": {EXPECTED}")),
            (
                "bronze.ip=:10.0.2.15/24",
                "bronze.ip entry \":10.0.2.15/24\": link name \"\" is not valid: it is empty".into(),
            ),
            (
                "bronze.ip=averyveryverylongname:10.0.2.15/24",
                "bronze.ip entry \"averyveryverylongname:10.0.2.15/24\": link name \"averyveryverylongname\" is not valid: it is 21 bytes long; the limit is 15".into(),
            ),
            (
                "bronze.ip=eth0:10.0.2.15/33",
                "bronze.ip entry \"eth0:10.0.2.15/33\": invalid CIDR \"10.0.2.15/33\": the prefix length 33 is longer than 32, the maximum for IPv4".into(),
            ),
            (
                "bronze.ip=eth0:10.0.2.15/24:nope",
                "bronze.ip entry \"eth0:10.0.2.15/24:nope\": gateway \"nope\" is not an IP address".into(),
            ),
            (
                "bronze.ip=eth0:10.0.2.15/24:10.0.3.1",
                "bronze.ip entry \"eth0:10.0.2.15/24:10.0.3.1\": gateway 10.0.3.1 is not in the subnet of 10.0.2.15/24"
                    .into(),
            ),
            (
                "bronze.ip=eth0:10.0.2.15/24:fd00::1",
                "bronze.ip entry \"eth0:10.0.2.15/24:fd00::1\": gateway fd00::1 and address 10.0.2.15/24 are of different IP families".into(),
            ),
        ];
        for (cmdline, want) in cases {
            assert_eq!(parse(cmdline).unwrap_err().to_string(), want, "{cmdline}");
        }
    }

    #[test]
    fn reads_the_cmdline_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("cmdline");
        assert_eq!(read(&file).unwrap(), []);
        std::fs::write(&file, "quiet bronze.ip=eth0:10.0.2.15/24:10.0.2.2\n").unwrap();
        assert_eq!(read(&file).unwrap(), [ip("eth0", "10.0.2.15/24", Some("10.0.2.2"))]);
        assert!(read(dir.path()).unwrap_err().to_string().contains("cannot read"), "a directory is an error");
    }
}
