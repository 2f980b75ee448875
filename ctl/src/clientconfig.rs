//! The client config file (`~/.bronze/config`, `$BRONZECONFIG`): named
//! contexts, each with default nodes, the CA to trust and a client
//! certificate. Written atomically with mode 0600 (it holds a private key).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientConfig {
    /// The context used when `--context` is not given.
    pub context: String,
    pub contexts: BTreeMap<String, Context>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Context {
    /// Default nodes, `host[:port]`.
    pub nodes: Vec<String>,
    /// PEM of the nodes' CA.
    pub ca: String,
    /// PEM client certificate.
    pub crt: String,
    /// PEM client private key.
    pub key: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ClientConfigError {
    #[error("cannot read client config {path}: {error}")]
    Read { path: PathBuf, error: std::io::Error },
    #[error("client config {path} is not valid: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("cannot write client config {path}: {error}")]
    Write { path: PathBuf, error: std::io::Error },
    #[error("context {name:?} is not in {path} (contexts: {known})")]
    UnknownContext { name: String, path: PathBuf, known: String },
    #[error("{path} names no current context; pass --context")]
    NoContext { path: PathBuf },
}

/// The default path: `$HOME/.bronze/config`.
pub fn default_path() -> PathBuf {
    std::env::home_dir().unwrap_or_else(|| PathBuf::from(".")).join(".bronze").join("config")
}

impl ClientConfig {
    pub fn load(path: &Path) -> Result<Self, ClientConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|error| ClientConfigError::Read { path: path.into(), error })?;
        serde_yaml::from_str(&text).map_err(|e| ClientConfigError::Parse { path: path.into(), message: e.to_string() })
    }

    /// The context named `name`, or the current one.
    pub fn context(&self, name: Option<&str>, path: &Path) -> Result<(&str, &Context), ClientConfigError> {
        let name = name.unwrap_or(&self.context);
        if name.is_empty() {
            return Err(ClientConfigError::NoContext { path: path.into() });
        }
        self.contexts.get_key_value(name).map(|(k, v)| (k.as_str(), v)).ok_or_else(|| {
            ClientConfigError::UnknownContext {
                name: name.into(),
                path: path.into(),
                known: self.contexts.keys().cloned().collect::<Vec<_>>().join(", "),
            }
        })
    }

    /// Writes the file atomically, mode 0600, creating its directory.
    pub fn save(&self, path: &Path) -> Result<(), ClientConfigError> {
        let text = serde_yaml::to_string(self).expect("client config always encodes");
        write_private(path, text.as_bytes()).map_err(|error| ClientConfigError::Write { path: path.into(), error })
    }
}

/// Atomic write with mode 0600: temp file, fsync, rename, fsync directory.
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    write_atomic(path, bytes, 0o600)
}

/// Atomic write with `mode`: readers see the old file or the new one, never
/// a torn one.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&dir)?;
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let temp = dir.join(format!(".{name}.tmp"));
    let mut file = std::fs::OpenOptions::new().create(true).truncate(true).write(true).mode(mode).open(&temp)?;
    // A leftover temp file keeps its old mode; set it explicitly.
    file.set_permissions(std::fs::Permissions::from_mode(mode))?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&temp, path)?;
    std::fs::File::open(&dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> ClientConfig {
        let ctx =
            Context { nodes: vec!["127.0.0.1:50000".into()], ca: "ca".into(), crt: "crt".into(), key: "key".into() };
        ClientConfig { context: "dev".into(), contexts: BTreeMap::from([("dev".into(), ctx)]) }
    }

    #[test]
    fn round_trips_through_a_private_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/config");
        sample().save(&path).unwrap();
        assert_eq!(ClientConfig::load(&path).unwrap(), sample());
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    }

    #[test]
    fn unknown_context_lists_known_ones() {
        let err = sample().context(Some("prod"), Path::new("/x")).unwrap_err().to_string();
        assert_eq!(err, "context \"prod\" is not in /x (contexts: dev)");
    }
}
