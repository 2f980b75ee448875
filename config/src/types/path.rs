//! `AbsPath`: an absolute file system path (service commands, working
//! directories), so nothing depends on the daemon's own working directory.

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use crate::error::ValueError;
use crate::types::serde_util::text_serde;

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AbsPath(String);

impl AbsPath {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn as_path(&self) -> &Path {
        Path::new(&self.0)
    }
}

impl FromStr for AbsPath {
    type Err = ValueError;

    fn from_str(s: &str) -> Result<Self, ValueError> {
        if !s.starts_with('/') {
            return Err(ValueError::invalid("path", s, "expected an absolute path, like /usr/bin/web"));
        }
        if s.contains('\0') {
            return Err(ValueError::invalid("path", s, "it contains a NUL byte"));
        }
        Ok(AbsPath(s.to_owned()))
    }
}

impl fmt::Display for AbsPath {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(&self.0)
    }
}

text_serde!(AbsPath, "an absolute path, like /usr/bin/web");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requires_absolute() {
        assert_eq!("/usr/bin/web".parse::<AbsPath>().unwrap().as_str(), "/usr/bin/web");
        let err = "web".parse::<AbsPath>().unwrap_err().to_string();
        assert_eq!(err, "invalid path \"web\": expected an absolute path, like /usr/bin/web");
        assert!("".parse::<AbsPath>().is_err());
        assert!("/a\0b".parse::<AbsPath>().is_err());
    }
}
