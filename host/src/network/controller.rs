//! The network status controller: observes the kernel every
//! [`OBSERVE_INTERVAL`] and whenever it is woken (after each apply), and
//! publishes `LinkStatus`, `AddressStatus` and `RouteStatus`.
//!
//! Read-only, so it runs in both modes; in process mode it shows the host's
//! own network. A failed observation ends the run and the runtime restarts
//! it with backoff.

use super::observe::{Observe, Publisher};
use crate::controllers::{Controller, ControllerError};
use futures::future::BoxFuture;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Notify, watch};

/// How often links, addresses and routes are re-read without a trigger.
pub const OBSERVE_INTERVAL: Duration = Duration::from_secs(5);

pub struct NetworkStatusController {
    publisher: Publisher,
    observer: Arc<dyn Observe>,
    /// Woken by the applier after each apply.
    trigger: Arc<Notify>,
    interval: Duration,
}

impl NetworkStatusController {
    /// `trigger` is the same `Notify` given to
    /// [`super::apply::Applier::notify_after_apply`].
    pub fn new(publisher: Publisher, observer: Arc<dyn Observe>, trigger: Arc<Notify>) -> Self {
        Self { publisher, observer, trigger, interval: OBSERVE_INTERVAL }
    }
}

impl Controller for NetworkStatusController {
    fn name(&self) -> &'static str {
        "network-status"
    }

    fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) -> BoxFuture<'static, Result<(), ControllerError>> {
        Box::pin(async move {
            loop {
                let snapshot = self.observer.snapshot().await?;
                self.publisher.publish(&snapshot)?;
                tokio::select! {
                    _ = stop.wait_for(|s| *s) => return Ok(()),
                    _ = tokio::time::sleep(self.interval) => {}
                    _ = self.trigger.notified() => {}
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controllers::Runtime;
    use crate::network::NetError;
    use crate::network::observe::Snapshot;
    use crate::network::resources::{LINK_STATUS, LinkStatusSpec};
    use crate::state::Store;
    use std::sync::Mutex;

    /// Hands out the links it is told to, counting observations.
    #[derive(Default)]
    struct Scripted {
        links: Mutex<Vec<&'static str>>,
        observed: Mutex<u32>,
    }

    impl Observe for Scripted {
        fn snapshot(&self) -> BoxFuture<'_, Result<Snapshot, NetError>> {
            Box::pin(async move {
                *self.observed.lock().unwrap() += 1;
                let links = self.links.lock().unwrap();
                Ok(Snapshot {
                    links: links.iter().map(|n| LinkStatusSpec { name: n.to_string(), ..Default::default() }).collect(),
                    ..Default::default()
                })
            })
        }
    }

    fn ids(store: &Store) -> Vec<String> {
        store.list(&LINK_STATUS).iter().map(|r| r.metadata.id.clone()).collect()
    }

    #[tokio::test(start_paused = true)]
    async fn observes_on_a_timer_and_when_woken() {
        let store = Store::new();
        let scripted = Arc::new(Scripted::default());
        scripted.links.lock().unwrap().push("lo");
        let trigger = Arc::new(Notify::new());
        let controller =
            Arc::new(NetworkStatusController::new(Publisher::new(&store).unwrap(), scripted.clone(), trigger.clone()));
        let mut runtime = Runtime::default();
        runtime.spawn(controller);
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(ids(&store), ["lo"]);

        scripted.links.lock().unwrap().push("eth0");
        trigger.notify_one();
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(ids(&store), ["eth0", "lo"], "woken: re-observed before the interval");
        assert_eq!(*scripted.observed.lock().unwrap(), 2);

        scripted.links.lock().unwrap().retain(|n| *n == "lo");
        tokio::time::sleep(OBSERVE_INTERVAL).await;
        assert_eq!(ids(&store), ["lo"], "the timer re-observes and removes what vanished");
        runtime.stop().await;
    }
}
