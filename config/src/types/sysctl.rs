//! `SysctlKey`: a kernel parameter name, dotted (`net.ipv4.ip_forward`) or
//! slash separated (`net/ipv4/conf/eth0.100/rp_filter`). Kept to names that
//! map to a file under /proc/sys without escaping it.

use std::fmt;
use std::str::FromStr;

use crate::error::ValueError;
use crate::types::serde_util::text_serde;

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SysctlKey(String);

impl SysctlKey {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for SysctlKey {
    type Err = ValueError;

    fn from_str(s: &str) -> Result<Self, ValueError> {
        let invalid = |reason: &str| Err(ValueError::invalid("sysctl key", s, reason));
        if s.is_empty() {
            return invalid("it is empty");
        }
        if !s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-' | b'/')) {
            return invalid("expected letters, digits, '_', '-', '.' or '/'");
        }
        if s.starts_with('/') {
            return invalid("it cannot start with '/'");
        }
        if s.contains("..") {
            return invalid("it cannot contain \"..\"");
        }
        if s.split(['.', '/']).any(str::is_empty) {
            return invalid("it has an empty component");
        }
        Ok(SysctlKey(s.to_owned()))
    }
}

impl fmt::Display for SysctlKey {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(&self.0)
    }
}

text_serde!(SysctlKey, "a sysctl key, like net.ipv4.ip_forward");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_both_forms() {
        for ok in ["net.ipv4.ip_forward", "net/ipv4/conf/eth0.100/rp_filter", "vm.max_map_count"] {
            assert!(ok.parse::<SysctlKey>().is_ok(), "{ok}");
        }
    }

    #[test]
    fn rejects_escapes() {
        for (bad, reason) in [
            ("/proc/sys/net", "cannot start with '/'"),
            ("net/../../etc", "cannot contain \"..\""),
            ("net ipv4", "expected letters"),
            ("net.", "empty component"),
            ("", "it is empty"),
        ] {
            let err = bad.parse::<SysctlKey>().unwrap_err().to_string();
            assert!(err.starts_with(&format!("invalid sysctl key {bad:?}: ")), "{err}");
            assert!(err.contains(reason), "{err}");
        }
    }
}
