//! Runners for a set of links: started and stopped as the set changes,
//! their leases gathered in one watch, and the [`DhcpLeaseSpec`] resource
//! kept in step.

use super::client::run_with_state;
use super::resource::DhcpLeaseSpec;
use super::store::LeaseStore;
use super::{DhcpOptions, DhcpState, Lease, escaped};
use crate::state::Writer;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How long a stopping runner gets to send its release.
const STOP_GRACE: Duration = Duration::from_secs(2);

struct LinkRunner {
    options: DhcpOptions,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

/// Runs the DHCPv4 client on the links it is given.
pub struct DhcpManager {
    store: Arc<dyn LeaseStore>,
    writer: Option<Arc<Writer<DhcpLeaseSpec>>>,
    leases: watch::Sender<BTreeMap<String, Lease>>,
    links: BTreeMap<String, LinkRunner>,
}

impl DhcpManager {
    /// A manager keeping leases in `store` and publishing the resource
    /// through `writer` (none: no resource, e.g. in tests).
    pub fn new(store: Arc<dyn LeaseStore>, writer: Option<Writer<DhcpLeaseSpec>>) -> Self {
        Self { store, writer: writer.map(Arc::new), leases: watch::channel(BTreeMap::new()).0, links: BTreeMap::new() }
    }

    /// The current leases by link (only bound ones).
    pub fn leases(&self) -> watch::Receiver<BTreeMap<String, Lease>> {
        self.leases.subscribe()
    }

    /// Runs the client on exactly `links`: starts runners for new links,
    /// stops those no longer named (releasing when their options say so),
    /// restarts those whose options changed. Must be called within tokio.
    pub async fn set_links(&mut self, links: Vec<(String, DhcpOptions)>) {
        let wanted: BTreeMap<String, DhcpOptions> = links.into_iter().collect();
        let stale: Vec<String> = self
            .links
            .iter()
            .filter(|(link, runner)| wanted.get(*link) != Some(&runner.options))
            .map(|(link, _)| link.clone())
            .collect();
        for link in stale {
            if let Some(runner) = self.links.remove(&link) {
                stop(runner).await;
            }
        }
        for (link, options) in wanted {
            if !self.links.contains_key(&link) {
                let runner = self.start(link.clone(), options);
                self.links.insert(link, runner);
            }
        }
    }

    /// The links with a runner.
    pub fn links(&self) -> Vec<String> {
        self.links.keys().cloned().collect()
    }

    /// Stops every runner (each releases its lease when its options say
    /// so) and waits for them, at most a couple of seconds each.
    pub async fn shutdown(mut self) {
        for (_, runner) in std::mem::take(&mut self.links) {
            stop(runner).await;
        }
    }

    fn start(&self, link: String, options: DhcpOptions) -> LinkRunner {
        let (stop_tx, stop_rx) = watch::channel(false);
        let (store, writer, leases) = (self.store.clone(), self.writer.clone(), self.leases.clone());
        let run_options = options.clone();
        let task = tokio::spawn(async move {
            let (lease_tx, mut lease_rx) = watch::channel(None::<Lease>);
            let (state_tx, mut state_rx) = watch::channel(DhcpState::Selecting);
            let run = run_with_state(link.clone(), run_options, store, lease_tx, state_tx, stop_rx);
            tokio::pin!(run);
            loop {
                tokio::select! {
                    result = &mut run => {
                        if let Err(e) = result {
                            tracing::warn!(link = %escaped(&link), "DHCP client stopped: {e}");
                        }
                        break;
                    }
                    Ok(()) = lease_rx.changed() => {}
                    Ok(()) = state_rx.changed() => {}
                }
                let lease = lease_rx.borrow_and_update().clone();
                let state = *state_rx.borrow_and_update();
                leases.send_if_modified(|map| match &lease {
                    Some(l) => map.insert(link.clone(), l.clone()).as_ref() != Some(l),
                    None => map.remove(&link).is_some(),
                });
                if let Some(writer) = &writer
                    && let Err(e) = writer.put(&link, &DhcpLeaseSpec::new(&link, state, lease.as_ref()))
                {
                    tracing::warn!(link = %escaped(&link), "cannot publish the DHCP lease: {e}");
                }
            }
            leases.send_if_modified(|map| map.remove(&link).is_some());
            if let Some(writer) = &writer {
                writer.remove(&link);
            }
        });
        LinkRunner { options, stop: stop_tx, task }
    }
}

async fn stop(mut runner: LinkRunner) {
    runner.stop.send_replace(true);
    if tokio::time::timeout(STOP_GRACE, &mut runner.task).await.is_err() {
        runner.task.abort();
    }
}
