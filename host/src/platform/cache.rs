//! The last good metadata, kept in the state dir so a node whose metadata
//! service is down at boot comes up the same (marked stale).

use super::metadata::PlatformMetadata;
use crate::statedir::StateDir;
use serde::{Deserialize, Serialize};

/// File in the state dir.
pub const CACHE_FILE: &str = "platform-metadata.json";
/// A cache larger than this is not ours: ignored.
const MAX_CACHE_BYTES: usize = 4 << 20;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Cached {
    pub instance: String,
    /// RFC 3339.
    pub fetched_at: String,
    /// Unix seconds of `fetched_at`, for the age.
    pub fetched_unix: u64,
    pub metadata: PlatformMetadata,
}

/// The cached answer, if there is a usable one (a broken file is logged
/// and ignored: the node goes on as if it had none).
pub fn read(dir: &StateDir) -> Option<Cached> {
    let bytes = match dir.read(CACHE_FILE) {
        Ok(bytes) => bytes?,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the cached platform metadata");
            return None;
        }
    };
    if bytes.len() > MAX_CACHE_BYTES {
        tracing::warn!(bytes = bytes.len(), "cached platform metadata is too large; ignored");
        return None;
    }
    match serde_json::from_slice(&bytes) {
        Ok(cached) => Some(cached),
        Err(e) => {
            tracing::warn!(error = %e, "cached platform metadata does not decode; ignored");
            None
        }
    }
}

/// Replaces the cache atomically.
pub fn write(dir: &StateDir, cached: &Cached) {
    let result = serde_json::to_vec_pretty(cached)
        .map_err(|e| e.to_string())
        .and_then(|bytes| dir.write_atomic(CACHE_FILE, &bytes).map_err(|e| e.to_string()));
    if let Err(e) = result {
        tracing::warn!(error = %e, "cannot cache the platform metadata");
    }
}

/// Forgets the cache (the node now runs on another platform).
pub fn remove(dir: &StateDir) {
    let path = dir.path(CACHE_FILE);
    if let Err(e) = std::fs::remove_file(&path)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(error = %e, "cannot remove the cached platform metadata");
    }
}

pub fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_ignores_garbage() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = StateDir::open(tmp.path()).unwrap();
        assert!(read(&dir).is_none());
        let cached = Cached {
            instance: "platform-aws".into(),
            fetched_at: "2026-12-05T10:00:00Z".into(),
            fetched_unix: 1,
            metadata: PlatformMetadata { platform: "aws".into(), user_data: Some(b"x".to_vec()), ..Default::default() },
        };
        write(&dir, &cached);
        assert_eq!(read(&dir), Some(cached));
        dir.write_atomic(CACHE_FILE, b"{not json").unwrap();
        assert!(read(&dir).is_none());
        remove(&dir);
        assert!(read(&dir).is_none());
    }
}
