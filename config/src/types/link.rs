//! `LinkName`: a Linux network interface name, as the kernel accepts it.

use std::fmt;
use std::str::FromStr;

use crate::error::ValueError;
use crate::types::serde_util::text_serde;

/// The kernel's IFNAMSIZ is 16 including the terminating NUL.
const MAX_LEN: usize = 15;

/// 1–15 bytes, no `/`, `:` or whitespace, not `.` or `..`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LinkName(String);

impl LinkName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for LinkName {
    type Err = ValueError;

    fn from_str(s: &str) -> Result<Self, ValueError> {
        let invalid = |reason: String| Err(ValueError::invalid("link name", s, reason));
        if s.is_empty() {
            return invalid("it is empty".to_owned());
        }
        if s.len() > MAX_LEN {
            return invalid(format!("it is {} bytes long; the limit is {MAX_LEN}", s.len()));
        }
        if s == "." || s == ".." {
            return invalid("it cannot be \".\" or \"..\"".to_owned());
        }
        if s.chars().any(|c| c == '/' || c == ':' || c.is_whitespace() || c.is_control()) {
            return invalid("it cannot contain '/', ':', whitespace or control characters".to_owned());
        }
        Ok(LinkName(s.to_owned()))
    }
}

impl fmt::Display for LinkName {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(&self.0)
    }
}

text_serde!(LinkName, "a link name, like eth0");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_kernel_names() {
        for ok in ["eth0", "enp0s3", "br-lan", "eth0.100", "a23456789012345"] {
            assert!(ok.parse::<LinkName>().is_ok(), "{ok}");
        }
    }

    #[test]
    fn rejects_bad_names() {
        for (bad, reason) in [
            ("", "it is empty"),
            ("a234567890123456", "it is 16 bytes long; the limit is 15"),
            (".", "cannot be"),
            ("..", "cannot be"),
            ("eth/0", "cannot contain"),
            ("eth:0", "cannot contain"),
            ("eth 0", "cannot contain"),
        ] {
            let err = bad.parse::<LinkName>().unwrap_err().to_string();
            assert!(err.starts_with(&format!("invalid link name {bad:?}: ")), "{err}");
            assert!(err.contains(reason), "{err}");
        }
    }
}
