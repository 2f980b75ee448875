//! `Version`: a plugin's semantic version, `MAJOR.MINOR.PATCH[-pre][+build]`,
//! ordered by semver precedence so the node can say "upgraded" or
//! "downgraded".

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer};

/// A semantic version (semver 2.0.0).
///
/// Ordering follows semver precedence (a pre-release sorts before its
/// release); build metadata has no precedence and only breaks ties, so
/// `Ord` stays consistent with `Eq`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Version {
    pub major: u64,
    pub minor: u64,
    pub patch: u64,
    /// Dot-separated pre-release identifiers; empty for a release.
    pub pre: Vec<Identifier>,
    /// Dot-separated build metadata identifiers.
    pub build: Vec<String>,
}

/// One pre-release identifier: numeric ones compare as numbers and sort
/// before alphanumeric ones.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Identifier {
    Numeric(u64),
    Alphanumeric(String),
}

impl fmt::Display for Identifier {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            Identifier::Numeric(n) => write!(f, "{n}"),
            Identifier::Alphanumeric(s) => f.write_str(s),
        }
    }
}

/// Why a version string is not a semantic version.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid version {text:?}: {reason}")]
pub struct VersionError {
    text: String,
    reason: String,
}

const SHAPE: &str = "expected MAJOR.MINOR.PATCH with optional -pre-release and +build, like 1.2.0 or 1.2.0-rc.1";

impl Version {
    pub const fn new(major: u64, minor: u64, patch: u64) -> Self {
        Version { major, minor, patch, pre: Vec::new(), build: Vec::new() }
    }

    /// Semver precedence: build metadata ignored.
    pub fn cmp_precedence(&self, other: &Self) -> Ordering {
        (self.major, self.minor, self.patch).cmp(&(other.major, other.minor, other.patch)).then_with(|| {
            match (self.pre.is_empty(), other.pre.is_empty()) {
                (true, true) => Ordering::Equal,
                // A pre-release comes before its release.
                (true, false) => Ordering::Greater,
                (false, true) => Ordering::Less,
                // Identifier order, then a shorter list first: exactly semver's rule.
                (false, false) => self.pre.cmp(&other.pre),
            }
        })
    }
}

impl Ord for Version {
    fn cmp(&self, other: &Self) -> Ordering {
        self.cmp_precedence(other).then_with(|| self.build.cmp(&other.build))
    }
}

impl PartialOrd for Version {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

fn is_ident_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '-'
}

/// A numeric part: digits only, no leading zero (semver forbids them so
/// `1.02.0` and `1.2.0` cannot both exist).
fn parse_number(part: &str, what: &str) -> Result<u64, String> {
    if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("{what} {part:?} is not a number; {SHAPE}"));
    }
    if part.len() > 1 && part.starts_with('0') {
        return Err(format!("{what} {part:?} has a leading zero"));
    }
    part.parse().map_err(|_| format!("{what} {part:?} is too large"))
}

impl FromStr for Version {
    type Err = VersionError;

    fn from_str(s: &str) -> Result<Self, VersionError> {
        let fail = |reason: String| VersionError { text: s.chars().take(80).collect(), reason };
        let (rest, build) = match s.split_once('+') {
            Some((rest, build)) => (rest, Some(build)),
            None => (s, None),
        };
        let (core, pre) = match rest.split_once('-') {
            Some((core, pre)) => (core, Some(pre)),
            None => (rest, None),
        };
        let parts: Vec<&str> = core.split('.').collect();
        let [major, minor, patch] = parts[..] else { return Err(fail(SHAPE.to_string())) };
        let mut version = Version::new(
            parse_number(major, "major version").map_err(fail)?,
            parse_number(minor, "minor version").map_err(fail)?,
            parse_number(patch, "patch version").map_err(fail)?,
        );
        if let Some(pre) = pre {
            for ident in pre.split('.') {
                if ident.is_empty() || !ident.chars().all(is_ident_char) {
                    return Err(fail(format!(
                        "pre-release identifier {ident:?} must be non-empty ASCII letters, digits or '-'"
                    )));
                }
                let parsed = if ident.bytes().all(|b| b.is_ascii_digit()) {
                    Identifier::Numeric(parse_number(ident, "pre-release identifier").map_err(fail)?)
                } else {
                    Identifier::Alphanumeric(ident.to_string())
                };
                version.pre.push(parsed);
            }
        }
        if let Some(build) = build {
            for ident in build.split('.') {
                if ident.is_empty() || !ident.chars().all(is_ident_char) {
                    return Err(fail(format!(
                        "build identifier {ident:?} must be non-empty ASCII letters, digits or '-'"
                    )));
                }
                version.build.push(ident.to_string());
            }
        }
        Ok(version)
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)?;
        for (i, ident) in self.pre.iter().enumerate() {
            f.write_str(if i == 0 { "-" } else { "." })?;
            write!(f, "{ident}")?;
        }
        for (i, ident) in self.build.iter().enumerate() {
            f.write_str(if i == 0 { "+" } else { "." })?;
            f.write_str(ident)?;
        }
        Ok(())
    }
}

struct VersionVisitor;

impl Visitor<'_> for VersionVisitor {
    type Value = Version;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a semantic version string like \"0.1.0\"")
    }

    // Parsing inside visit_str keeps the toml span on the value itself.
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Version, E> {
        v.parse().map_err(E::custom)
    }
}

impl<'de> Deserialize<'de> for Version {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_str(VersionVisitor)
    }
}

impl serde::Serialize for Version {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Version {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn parses_and_prints() {
        for text in [
            "0.1.0",
            "1.2.3",
            "10.20.30",
            "1.0.0-alpha",
            "1.0.0-alpha.1",
            "1.0.0-0.3.7",
            "1.0.0+20130313",
            "1.0.0-rc.1+build.5-x",
        ] {
            assert_eq!(v(text).to_string(), text);
        }
        let parsed = v("1.2.3-rc.10+sha.abc");
        assert_eq!((parsed.major, parsed.minor, parsed.patch), (1, 2, 3));
        assert_eq!(parsed.pre, vec![Identifier::Alphanumeric("rc".into()), Identifier::Numeric(10)]);
        assert_eq!(parsed.build, vec!["sha".to_string(), "abc".to_string()]);
    }

    #[test]
    fn rejects_non_semver() {
        for (bad, reason) in [
            ("", "expected MAJOR.MINOR.PATCH"),
            ("1", "expected MAJOR.MINOR.PATCH"),
            ("1.2", "expected MAJOR.MINOR.PATCH"),
            ("1.2.3.4", "expected MAJOR.MINOR.PATCH"),
            ("v1.2.3", "major version \"v1\" is not a number"),
            ("01.2.3", "leading zero"),
            ("1.2.3-", "pre-release identifier \"\""),
            ("1.2.3-a..b", "pre-release identifier \"\""),
            ("1.2.3-01", "leading zero"),
            ("1.2.3-ä", "pre-release identifier"),
            ("1.2.3+", "build identifier \"\""),
            ("1.2.3+a_b", "build identifier"),
            ("99999999999999999999.0.0", "too large"),
        ] {
            let err = bad.parse::<Version>().unwrap_err().to_string();
            assert!(err.starts_with(&format!("invalid version {bad:?}: ")), "{err}");
            assert!(err.contains(reason), "{bad}: {err}");
        }
    }

    #[test]
    fn orders_by_semver_precedence() {
        // The example chain from semver.org, section 11.
        let chain = [
            "1.0.0-alpha",
            "1.0.0-alpha.1",
            "1.0.0-alpha.beta",
            "1.0.0-beta",
            "1.0.0-beta.2",
            "1.0.0-beta.11",
            "1.0.0-rc.1",
            "1.0.0",
            "1.0.1",
            "1.1.0",
            "2.0.0",
            "10.0.0",
        ];
        for pair in chain.windows(2) {
            assert!(v(pair[0]) < v(pair[1]), "{} < {}", pair[0], pair[1]);
            assert_eq!(v(pair[1]).cmp_precedence(&v(pair[0])), Ordering::Greater);
        }
        assert_eq!(v("1.0.0+a").cmp_precedence(&v("1.0.0+b")), Ordering::Equal);
        assert_ne!(v("1.0.0+a"), v("1.0.0+b"));
        assert!(v("1.0.0+a") < v("1.0.0+b"));
    }
}
