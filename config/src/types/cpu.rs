//! `CpuQuota`: a share of CPU time in cores, written as millicores
//! (`500m`), whole cores (`2`) or a decimal number of cores (`1.5`, at most
//! three decimals); the written form is kept. As PID 1 it becomes the
//! service cgroup's `cpu.max`.

use std::fmt;
use std::str::FromStr;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::ValueError;

const EXPECTED: &str = "expected millicores like 500m or cores like 2 or 1.5 (10m to 1024 cores)";

/// Equality compares millicores, so `1500m` equals `1.5`.
#[derive(Debug, Clone)]
pub struct CpuQuota {
    millis: u32,
    written: String,
}

impl CpuQuota {
    /// The smallest quota: 1 ms of CPU time per 100 ms period, the least
    /// `cpu.max` takes.
    pub const MIN_MILLIS: u32 = 10;
    pub const MAX_MILLIS: u32 = 1024 * 1000;
    /// The `cpu.max` period, microseconds.
    pub const PERIOD_US: u64 = 100_000;

    pub fn from_millis(millis: u32) -> Result<Self, ValueError> {
        let written = format!("{millis}m");
        Self::checked(millis, written)
    }

    fn checked(millis: u32, written: String) -> Result<Self, ValueError> {
        if !(Self::MIN_MILLIS..=Self::MAX_MILLIS).contains(&millis) {
            return Err(ValueError::invalid("cpu quota", &written, EXPECTED));
        }
        Ok(CpuQuota { millis, written })
    }

    pub fn millis(&self) -> u32 {
        self.millis
    }

    /// The line written to `cpu.max`: quota and period in microseconds.
    pub fn cpu_max(&self) -> String {
        format!("{} {}", u64::from(self.millis) * Self::PERIOD_US / 1000, Self::PERIOD_US)
    }
}

impl PartialEq for CpuQuota {
    fn eq(&self, other: &Self) -> bool {
        self.millis == other.millis
    }
}

impl Eq for CpuQuota {}

impl FromStr for CpuQuota {
    type Err = ValueError;

    fn from_str(s: &str) -> Result<Self, ValueError> {
        let invalid = || ValueError::invalid("cpu quota", s, EXPECTED);
        let millis: u64 = if let Some(m) = s.strip_suffix('m') {
            if m.is_empty() || !m.bytes().all(|b| b.is_ascii_digit()) {
                return Err(invalid());
            }
            m.parse().map_err(|_| invalid())?
        } else {
            let (whole, frac) = s.split_once('.').unwrap_or((s, ""));
            let digits = |t: &str| t.bytes().all(|b| b.is_ascii_digit());
            if whole.is_empty() || !digits(whole) || !digits(frac) || frac.len() > 3 || s.ends_with('.') {
                return Err(invalid());
            }
            let whole: u64 = whole.parse().map_err(|_| invalid())?;
            let frac: u64 = format!("{frac:0<3}").parse().map_err(|_| invalid())?;
            whole.checked_mul(1000).and_then(|w| w.checked_add(frac)).ok_or_else(invalid)?
        };
        let millis = u32::try_from(millis).map_err(|_| invalid())?;
        Self::checked(millis, s.to_string())
    }
}

impl fmt::Display for CpuQuota {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(&self.written)
    }
}

struct CpuVisitor;

impl Visitor<'_> for CpuVisitor {
    type Value = CpuQuota;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a CPU quota like 500m, 2 or 1.5")
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<CpuQuota, E> {
        self.visit_str(&v.to_string())
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<CpuQuota, E> {
        self.visit_str(&v.to_string())
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<CpuQuota, E> {
        // YAML 1.5 arrives as a float: its shortest text form is what was
        // written.
        self.visit_str(&v.to_string())
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<CpuQuota, E> {
        v.parse().map_err(E::custom)
    }
}

impl<'de> Deserialize<'de> for CpuQuota {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(CpuVisitor)
    }
}

impl Serialize for CpuQuota {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_millicores_and_cores() {
        for (text, millis, cpu_max) in [
            ("500m", 500, "50000 100000"),
            ("10m", 10, "1000 100000"),
            ("2", 2000, "200000 100000"),
            ("1.5", 1500, "150000 100000"),
            ("0.25", 250, "25000 100000"),
            ("1024", 1_024_000, "102400000 100000"),
        ] {
            let q: CpuQuota = text.parse().unwrap();
            assert_eq!((q.millis(), q.cpu_max().as_str()), (millis, cpu_max), "{text}");
            assert_eq!(q.to_string(), text);
        }
        assert_eq!("1500m".parse::<CpuQuota>().unwrap(), "1.5".parse::<CpuQuota>().unwrap());
        let q: CpuQuota = serde_yaml::from_str("1.5").unwrap();
        assert_eq!(q.millis(), 1500);
        let q: CpuQuota = serde_yaml::from_str("3").unwrap();
        assert_eq!(q.millis(), 3000);
    }

    #[test]
    fn rejects_bad_quotas() {
        for bad in ["", "m", "5m", "0", "0.005", "1.2345", "1025", "-1", "1.", ".5", "1e3", "500 m", "99999999999m"] {
            let err = bad.parse::<CpuQuota>().unwrap_err().to_string();
            assert_eq!(err, format!("invalid cpu quota {bad:?}: {EXPECTED}"), "{bad}");
        }
    }
}
