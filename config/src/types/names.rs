//! Identifier types: service names, plugin ids, kernel module names,
//! platform names and environment variable names.

use std::fmt;
use std::str::FromStr;

use crate::error::ValueError;
use crate::types::serde_util::text_serde;

/// `[a-z0-9][a-z0-9-]{0,62}`: safe as a file name, a unit of logs and a
/// dependency reference.
fn is_simple_id(s: &str) -> bool {
    let bytes = s.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && (bytes[0].is_ascii_lowercase() || bytes[0].is_ascii_digit())
        && bytes.iter().all(|&b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

const SIMPLE_ID: &str = "expected 1-63 lowercase letters, digits or '-', starting with a letter or digit";

/// Declares a string newtype checked by `$check`.
macro_rules! checked_name {
    ($(#[$doc:meta])* $ty:ident, $what:literal, $expecting:literal, $check:expr, $reason:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $ty(String);

        impl $ty {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl FromStr for $ty {
            type Err = ValueError;

            fn from_str(s: &str) -> Result<Self, ValueError> {
                let check: fn(&str) -> bool = $check;
                if check(s) {
                    Ok($ty(s.to_owned()))
                } else {
                    Err(ValueError::invalid($what, s, $reason))
                }
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        text_serde!($ty, $expecting);
    };
}

checked_name!(
    /// A service's name; `dependsOn` entries refer to it.
    ServiceName,
    "service name",
    "a service name, like web",
    is_simple_id,
    SIMPLE_ID
);

checked_name!(
    /// A plugin instance's id; health checks refer to it.
    PluginId,
    "plugin id",
    "a plugin id, like health-http",
    is_simple_id,
    SIMPLE_ID
);

checked_name!(
    /// A kernel module name, as `modprobe` takes it.
    ModuleName,
    "module name",
    "a kernel module name, like virtio_net",
    |s| !s.is_empty()
        && s.len() <= 64
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'),
    "expected 1-64 letters, digits, '_' or '-'"
);

checked_name!(
    /// The platform the node runs on (`none`, `metal`, `aws`, ...); a free
    /// name so new platforms need no schema change.
    Platform,
    "platform",
    "a platform name, like metal or aws",
    |s| !s.is_empty()
        && s.len() <= 63
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'),
    "expected 1-63 lowercase letters, digits or '-', like metal or aws"
);

checked_name!(
    /// A filesystem label a plugin may read a volume by (`cidata`,
    /// `config-2`): what iso9660 and vfat allow, without spaces or `/`.
    VolumeLabel,
    "volume label",
    "a volume label, like cidata or config-2",
    |s| !s.is_empty()
        && s.len() <= 32
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.'),
    "expected 1-32 letters, digits, '-', '_' or '.', like cidata or config-2"
);

checked_name!(
    /// An environment variable name: anything `execve` can carry.
    EnvName,
    "environment variable name",
    "an environment variable name",
    |s| !s.is_empty() && !s.contains(['=', '\0']),
    "expected a non-empty name without '=' or NUL"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn simple_ids() {
        for ok in ["web", "a", "0", "health-http", "x".repeat(63).as_str()] {
            assert!(ok.parse::<ServiceName>().is_ok(), "{ok}");
            assert!(ok.parse::<PluginId>().is_ok(), "{ok}");
        }
        for bad in ["", "-web", "Web", "we_b", "x".repeat(64).as_str()] {
            let err = bad.parse::<ServiceName>().unwrap_err().to_string();
            assert_eq!(err, format!("invalid service name {bad:?}: {SIMPLE_ID}"));
            assert!(bad.parse::<PluginId>().is_err());
        }
    }

    #[test]
    fn other_names() {
        assert!("virtio_net".parse::<ModuleName>().is_ok());
        assert!("virtio net".parse::<ModuleName>().is_err());
        assert!("openstack".parse::<Platform>().is_ok());
        assert!("AWS".parse::<Platform>().is_err());
        assert!("PATH".parse::<EnvName>().is_ok());
        assert!("A=B".parse::<EnvName>().is_err());
        assert!("".parse::<EnvName>().is_err());
        for ok in ["cidata", "CIDATA", "config-2", "x".repeat(32).as_str()] {
            assert!(ok.parse::<VolumeLabel>().is_ok(), "{ok}");
        }
        for bad in ["", "a b", "../x", "a/b", "x".repeat(33).as_str()] {
            assert!(bad.parse::<VolumeLabel>().is_err(), "{bad}");
        }
    }
}
