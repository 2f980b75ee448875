//! `TrustedKey`: an Ed25519 public key, as 64 lowercase hex characters,
//! that plugin signatures are checked against.

use std::fmt;
use std::str::FromStr;

use crate::error::ValueError;
use crate::types::serde_util::text_serde;

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TrustedKey([u8; 32]);

impl TrustedKey {
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        TrustedKey(bytes)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        _ => None,
    }
}

impl FromStr for TrustedKey {
    type Err = ValueError;

    fn from_str(s: &str) -> Result<Self, ValueError> {
        let invalid =
            || ValueError::invalid("trusted key", s, "expected 64 lowercase hex characters (an Ed25519 public key)");
        if s.len() != 64 {
            return Err(invalid());
        }
        let mut bytes = [0u8; 32];
        for (byte, pair) in bytes.iter_mut().zip(s.as_bytes().chunks_exact(2)) {
            let hi = hex_value(pair[0]).ok_or_else(invalid)?;
            let lo = hex_value(pair[1]).ok_or_else(invalid)?;
            *byte = hi << 4 | lo;
        }
        Ok(TrustedKey(bytes))
    }
}

impl fmt::Display for TrustedKey {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

text_serde!(TrustedKey, "an Ed25519 public key as 64 hex characters");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_hex() {
        let text = "00ff".repeat(16);
        let key: TrustedKey = text.parse().unwrap();
        assert_eq!(key.as_bytes()[1], 0xff);
        assert_eq!(key.to_string(), text);
    }

    #[test]
    fn rejects_bad_keys() {
        for bad in ["", "abc", &"0".repeat(63), &"g".repeat(64), &"AB".repeat(32), &"é".repeat(32)] {
            let err = bad.parse::<TrustedKey>().unwrap_err().to_string();
            assert!(err.contains("expected 64 lowercase hex characters"), "{err}");
        }
    }
}
