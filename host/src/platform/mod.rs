//! Cloud boot: which platform the node runs on ([`controller`]'s detection
//! over every provider plugin's `detect()`), what its metadata service says
//! (`fetch()`, retried, cached in the state dir), and what the node does
//! with the answer: hostname, time servers, the platform network layer,
//! and user data that is a machine config.

pub mod cache;
pub mod controller;
pub mod metadata;
pub mod resources;
pub mod userdata;

use bronze_config::HostPort;
use metadata::PlatformMetadata;
use std::sync::Arc;
use tokio::sync::{Notify, watch};

/// Longest kernel hostname (HOST_NAME_MAX).
const MAX_KERNEL_HOSTNAME: usize = 64;

/// What the rest of the node sees of the platform: the current metadata
/// (fresh or cached), and a way to ask for a refresh.
#[derive(Clone)]
pub struct PlatformHandle {
    metadata: watch::Sender<Option<Arc<PlatformMetadata>>>,
    time_servers: watch::Sender<Vec<HostPort>>,
    refresh: Arc<Notify>,
    /// `platform refresh` requests so far.
    requested: Arc<std::sync::atomic::AtomicU64>,
}

impl Default for PlatformHandle {
    fn default() -> Self {
        PlatformHandle {
            metadata: watch::channel(None).0,
            time_servers: watch::channel(Vec::new()).0,
            refresh: Arc::new(Notify::new()),
            requested: Arc::default(),
        }
    }
}

impl PlatformHandle {
    /// Follows the metadata in use (None: metal, or no answer yet).
    pub fn subscribe(&self) -> watch::Receiver<Option<Arc<PlatformMetadata>>> {
        self.metadata.subscribe()
    }

    /// The platform layer of time servers (below the config's, above the
    /// built-in default).
    pub fn time_servers(&self) -> watch::Receiver<Vec<HostPort>> {
        self.time_servers.subscribe()
    }

    /// The platform's hostname as the kernel can take it: the whole name
    /// when it fits, else its first label.
    pub fn hostname(&self) -> Option<String> {
        let metadata = self.metadata.borrow().clone()?;
        let name = metadata.hostname.as_deref()?;
        Some(if name.len() <= MAX_KERNEL_HOSTNAME {
            name.to_string()
        } else {
            name.split('.').next().unwrap_or(name).chars().take(MAX_KERNEL_HOSTNAME).collect()
        })
    }

    /// The hostname the node takes: `config`'s, else the platform's.
    pub fn effective_hostname(&self, config: Option<&crate::config::LiveConfig>) -> Option<String> {
        config
            .and_then(|c| c.config.machine.hostname.as_ref().map(|h| h.as_str().to_string()))
            .or_else(|| self.hostname())
    }

    /// Asks the controller to detect and fetch again now; returns the
    /// request's number, which the `PlatformDetection` of a round that
    /// started after it carries (`refresh`).
    pub fn refresh(&self) -> u64 {
        let n = self.requested.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
        self.refresh.notify_one();
        n
    }

    /// The number of the last refresh request (for the round starting now).
    pub(crate) fn requested(&self) -> u64 {
        self.requested.load(std::sync::atomic::Ordering::SeqCst)
    }

    pub(crate) async fn refresh_requested(&self) {
        self.refresh.notified().await;
    }

    pub(crate) fn publish(&self, metadata: Option<Arc<PlatformMetadata>>) {
        let servers = metadata
            .as_ref()
            .map(|m| {
                m.time_servers
                    .iter()
                    .filter_map(|s| {
                        // Bare IPv6 addresses need brackets to take a port.
                        let text = if s.contains(':') && !s.starts_with('[') { format!("[{s}]") } else { s.clone() };
                        text.parse::<HostPort>().ok()
                    })
                    .collect()
            })
            .unwrap_or_default();
        self.time_servers.send_if_modified(|current| {
            let changed = *current != servers;
            *current = servers;
            changed
        });
        self.metadata.send_replace(metadata);
    }
}
