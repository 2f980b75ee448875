//! `ByteSize`: a size in bytes, written as an integer (`1048576`) or with a
//! unit (`64MiB`, `512KiB`, `1GB`); the written form is kept.

use std::fmt;
use std::str::FromStr;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::ValueError;

const UNITS: [(&str, u64); 9] = [
    ("B", 1),
    ("KiB", 1 << 10),
    ("MiB", 1 << 20),
    ("GiB", 1 << 30),
    ("TiB", 1 << 40),
    ("KB", 1_000),
    ("MB", 1_000_000),
    ("GB", 1_000_000_000),
    ("TB", 1_000_000_000_000),
];

const EXPECTED: &str = "expected a number of bytes or a size with a unit, like 64MiB";

/// Equality compares the number of bytes, so `1MiB` equals `1048576`.
#[derive(Debug, Clone, Copy)]
pub struct ByteSize {
    bytes: u64,
    /// The unit the size was written with; `None` means a plain integer.
    unit: Option<&'static str>,
    /// The number in front of the unit.
    count: u64,
}

impl ByteSize {
    pub const fn from_bytes(bytes: u64) -> Self {
        ByteSize { bytes, unit: None, count: bytes }
    }

    pub const fn mib(count: u64) -> Self {
        ByteSize { bytes: count << 20, unit: Some("MiB"), count }
    }

    pub const fn as_u64(&self) -> u64 {
        self.bytes
    }
}

impl PartialEq for ByteSize {
    fn eq(&self, other: &Self) -> bool {
        self.bytes == other.bytes
    }
}

impl Eq for ByteSize {}

impl std::hash::Hash for ByteSize {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.bytes.hash(state);
    }
}

impl FromStr for ByteSize {
    type Err = ValueError;

    fn from_str(s: &str) -> Result<Self, ValueError> {
        let invalid = || ValueError::invalid("size", s, EXPECTED);
        let digits = s.bytes().take_while(u8::is_ascii_digit).count();
        let (number, unit) = s.split_at(digits);
        let count: u64 = number.parse().map_err(|_| invalid())?;
        let unit = unit.trim_start();
        if unit.is_empty() {
            return Ok(ByteSize::from_bytes(count));
        }
        let (unit, scale) = UNITS.iter().find(|(name, _)| *name == unit).ok_or_else(invalid)?;
        let bytes =
            count.checked_mul(*scale).ok_or_else(|| ValueError::invalid("size", s, "it does not fit in 64 bits"))?;
        Ok(ByteSize { bytes, unit: Some(unit), count })
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self.unit {
            Some(unit) => write!(f, "{}{unit}", self.count),
            None => write!(f, "{}", self.bytes),
        }
    }
}

struct ByteSizeVisitor;

impl Visitor<'_> for ByteSizeVisitor {
    type Value = ByteSize;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a number of bytes or a size like 64MiB")
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<ByteSize, E> {
        Ok(ByteSize::from_bytes(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<ByteSize, E> {
        u64::try_from(v)
            .map(ByteSize::from_bytes)
            .map_err(|_| E::custom(format!("invalid size {v}: sizes cannot be negative")))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<ByteSize, E> {
        v.parse().map_err(E::custom)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ByteSizeVisitor)
    }
}

/// Integers stay integers and unit forms stay strings.
impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.unit {
            Some(_) => s.collect_str(self),
            None => s.serialize_u64(self.bytes),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units() {
        for (text, bytes) in [
            ("64MiB", 64 << 20),
            ("1MiB", 1 << 20),
            ("512KiB", 512 << 10),
            ("1GB", 1_000_000_000),
            ("100B", 100),
            ("4096", 4096),
            ("2 GiB", 2 << 30),
        ] {
            let size: ByteSize = text.parse().unwrap();
            assert_eq!(size.as_u64(), bytes, "{text}");
        }
        assert_eq!("64MiB".parse::<ByteSize>().unwrap().to_string(), "64MiB");
        assert_eq!(ByteSize::mib(1), ByteSize::from_bytes(1 << 20));
    }

    #[test]
    fn rejects_bad_sizes() {
        for bad in ["", "MiB", "64XB", "-1", "1.5MiB", "64mib"] {
            let err = bad.parse::<ByteSize>().unwrap_err().to_string();
            assert_eq!(err, format!("invalid size {bad:?}: {EXPECTED}"));
        }
        let err = "99999999999TiB".parse::<ByteSize>().unwrap_err().to_string();
        assert!(err.contains("does not fit in 64 bits"), "{err}");
    }
}
