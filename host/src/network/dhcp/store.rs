//! Where the last lease of each link is kept, for INIT-REBOOT after a
//! restart: one JSON file per link in the state dir (`dhcp-<link>.json`,
//! written atomically by the state dir), or memory in tests and when there
//! is no state dir.

use super::Lease;
use super::escaped;
use crate::statedir::StateDir;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("link name {link} cannot name a lease file (expected 1 to 15 bytes without '/')")]
    BadLinkName { link: String },
    #[error("cannot read the kept lease {path}: {message}")]
    Read { path: PathBuf, message: String },
    #[error("kept lease {path} does not parse: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("cannot write the kept lease {path}: {message}")]
    Write { path: PathBuf, message: String },
}

/// Keeps one lease per link.
pub trait LeaseStore: Send + Sync {
    /// The kept lease of `link`, if any.
    fn load(&self, link: &str) -> Result<Option<Lease>, StoreError>;
    fn save(&self, lease: &Lease) -> Result<(), StoreError>;
    fn forget(&self, link: &str) -> Result<(), StoreError>;
}

/// Leases as files in the state dir.
#[derive(Debug, Clone)]
pub struct StateDirStore {
    dir: Arc<StateDir>,
}

impl StateDirStore {
    pub fn new(dir: Arc<StateDir>) -> Self {
        Self { dir }
    }

    /// The file name for `link`'s lease.
    pub fn file_name(link: &str) -> Result<String, StoreError> {
        if link.is_empty() || link.len() > 15 || link.contains('/') || link.contains('\0') || link.starts_with('.') {
            return Err(StoreError::BadLinkName { link: escaped(link) });
        }
        Ok(format!("dhcp-{link}.json"))
    }
}

impl LeaseStore for StateDirStore {
    fn load(&self, link: &str) -> Result<Option<Lease>, StoreError> {
        let name = Self::file_name(link)?;
        let path = self.dir.path(&name);
        let Some(bytes) =
            self.dir.read(&name).map_err(|e| StoreError::Read { path: path.clone(), message: e.to_string() })?
        else {
            return Ok(None);
        };
        if bytes.len() > 64 * 1024 {
            return Err(StoreError::Parse { path, message: format!("{} bytes, more than 65536", bytes.len()) });
        }
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| StoreError::Parse { path, message: escaped(&e.to_string()) })
    }

    fn save(&self, lease: &Lease) -> Result<(), StoreError> {
        let name = Self::file_name(&lease.link)?;
        let bytes = serde_json::to_vec_pretty(lease).unwrap_or_default();
        self.dir
            .write_atomic(&name, &bytes)
            .map_err(|e| StoreError::Write { path: self.dir.path(&name), message: e.to_string() })
    }

    fn forget(&self, link: &str) -> Result<(), StoreError> {
        let name = Self::file_name(link)?;
        let path = self.dir.path(&name);
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(StoreError::Write { path, message: e.to_string() }),
        }
    }
}

/// Leases in memory (tests; a node without a state dir).
#[derive(Debug, Default)]
pub struct MemoryStore {
    leases: Mutex<BTreeMap<String, Lease>>,
}

impl LeaseStore for MemoryStore {
    fn load(&self, link: &str) -> Result<Option<Lease>, StoreError> {
        Ok(self.leases.lock().unwrap_or_else(|e| e.into_inner()).get(link).cloned())
    }

    fn save(&self, lease: &Lease) -> Result<(), StoreError> {
        self.leases.lock().unwrap_or_else(|e| e.into_inner()).insert(lease.link.clone(), lease.clone());
        Ok(())
    }

    fn forget(&self, link: &str) -> Result<(), StoreError> {
        self.leases.lock().unwrap_or_else(|e| e.into_inner()).remove(link);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::network::dhcp::lease::whole_seconds;
    use std::time::SystemTime;

    fn lease(link: &str) -> Lease {
        Lease {
            link: link.into(),
            hardware_address: "02:00:00:00:00:01".into(),
            address: "10.0.0.5/24".parse().unwrap(),
            server: "10.0.0.1".parse().unwrap(),
            routers: vec![],
            routes: vec![],
            dns: vec![],
            ntp: vec![],
            domain: None,
            search: vec![],
            hostname: None,
            mtu: None,
            lease_seconds: 3600,
            t1: 1800,
            t2: 3150,
            acquired: whole_seconds(SystemTime::now()),
        }
    }

    #[test]
    fn leases_are_kept_per_link_in_the_state_dir() {
        let tmp = tempfile::tempdir().unwrap();
        let store = StateDirStore::new(Arc::new(StateDir::open(tmp.path()).unwrap()));
        assert!(store.load("eth0").unwrap().is_none());
        store.save(&lease("eth0")).unwrap();
        assert_eq!(store.load("eth0").unwrap().unwrap(), lease("eth0"));
        assert!(tmp.path().join("dhcp-eth0.json").exists());
        store.forget("eth0").unwrap();
        store.forget("eth0").unwrap();
        assert!(store.load("eth0").unwrap().is_none());
        // A file that does not parse is an error naming the file (the runner warns and ignores it).
        std::fs::write(tmp.path().join("dhcp-eth1.json"), b"{not json").unwrap();
        let err = store.load("eth1").unwrap_err().to_string();
        assert!(
            err.starts_with(&format!("kept lease {}/dhcp-eth1.json does not parse: ", tmp.path().display())),
            "{err}"
        );
        assert_eq!(
            store.load("../x").unwrap_err().to_string(),
            "link name ../x cannot name a lease file (expected 1 to 15 bytes without '/')"
        );
    }
}
