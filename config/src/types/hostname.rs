//! `Hostname`: an RFC 1123 host name, also used for DNS names elsewhere
//! (search domains, certificate SANs, time servers, URL hosts).

use std::fmt;
use std::str::FromStr;

use crate::error::ValueError;
use crate::types::serde_util::text_serde;

/// Labels of 1–63 letters, digits or `-` (not at either end), dot
/// separated, at most 253 characters in total.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Hostname(String);

impl Hostname {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Why `s` is not an RFC 1123 name, if it is not.
pub(crate) fn hostname_problem(s: &str) -> Option<String> {
    if s.is_empty() {
        return Some("it is empty".to_owned());
    }
    if s.len() > 253 {
        return Some(format!("it is {} characters long; the limit is 253", s.len()));
    }
    for label in s.split('.') {
        if label.is_empty() {
            return Some("it has an empty label (two dots in a row, or a dot at an end)".to_owned());
        }
        if label.len() > 63 {
            return Some(format!("label {label:?} is {} characters long; the limit is 63", label.len()));
        }
        if !label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            return Some(format!("label {label:?} may only contain letters, digits and '-'"));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Some(format!("label {label:?} cannot start or end with '-'"));
        }
    }
    None
}

impl FromStr for Hostname {
    type Err = ValueError;

    fn from_str(s: &str) -> Result<Self, ValueError> {
        match hostname_problem(s) {
            Some(reason) => Err(ValueError::invalid("hostname", s, reason)),
            None => Ok(Hostname(s.to_owned())),
        }
    }
}

impl fmt::Display for Hostname {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(&self.0)
    }
}

text_serde!(Hostname, "a hostname, like node-1 or node-1.example.com");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_rfc1123_names() {
        for ok in ["node-1", "a", "node1.example.com", "123", "x".repeat(63).as_str()] {
            assert_eq!(ok.parse::<Hostname>().unwrap().as_str(), ok);
        }
        let long = ["a".repeat(63).as_str(); 4].join(".");
        assert_eq!(long.len(), 255);
        assert!(long.parse::<Hostname>().is_err());
        assert!(long[..253].trim_end_matches('.').parse::<Hostname>().is_ok());
    }

    #[test]
    fn rejects_bad_names() {
        for (bad, reason) in [
            ("", "it is empty"),
            ("-node", "cannot start or end with '-'"),
            ("node-", "cannot start or end with '-'"),
            ("no_de", "may only contain letters, digits and '-'"),
            ("a..b", "empty label"),
            ("a.", "empty label"),
        ] {
            let err = bad.parse::<Hostname>().unwrap_err().to_string();
            assert!(err.contains(reason), "{bad}: {err}");
            assert!(err.starts_with(&format!("invalid hostname {bad:?}: ")), "{err}");
        }
        assert!("x".repeat(64).parse::<Hostname>().is_err());
    }
}
