//! The network status controller: observes the kernel whenever netlink
//! reports a change to links, addresses or routes (debounced by
//! [`EVENT_DEBOUNCE`]), when it is woken (after each apply), and every
//! [`OBSERVE_INTERVAL`] as a fallback; publishes `LinkStatus`,
//! `AddressStatus` and `RouteStatus`, and the last [`Snapshot`] on a watch
//! channel for controllers that react to links appearing or carrier
//! changes.
//!
//! Read-only, so it runs in both modes; in process mode it shows the host's
//! own network. A failed observation ends the run and the runtime restarts
//! it with backoff.

use super::observe::{Observe, Publisher, Snapshot};
use crate::controllers::{Controller, ControllerError};
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use futures::{FutureExt, StreamExt};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Notify, watch};

/// How often links, addresses and routes are re-read without a trigger.
pub const OBSERVE_INTERVAL: Duration = Duration::from_secs(5);
/// How long after a netlink event the controller waits for the rest of a
/// burst (an apply of 1,000 routes is 1,000 events) before observing.
pub const EVENT_DEBOUNCE: Duration = Duration::from_millis(50);

pub struct NetworkStatusController {
    publisher: Publisher,
    observer: Arc<dyn Observe>,
    /// Woken by the applier after each apply.
    trigger: Arc<Notify>,
    interval: Duration,
    /// The last observation; starts empty.
    snapshots: watch::Sender<Arc<Snapshot>>,
}

impl NetworkStatusController {
    /// `trigger` is the same `Notify` given to
    /// [`super::apply::Applier::notify_after_apply`].
    pub fn new(publisher: Publisher, observer: Arc<dyn Observe>, trigger: Arc<Notify>) -> Self {
        let (snapshots, _) = watch::channel(Arc::new(Snapshot::default()));
        Self { publisher, observer, trigger, interval: OBSERVE_INTERVAL, snapshots }
    }

    /// The last observation, updated only when it differs from the one
    /// before: `changed()` means links, addresses or routes changed.
    pub fn snapshots(&self) -> watch::Receiver<Arc<Snapshot>> {
        self.snapshots.subscribe()
    }

    /// The observer's change events; without them (no socket), the timer
    /// and the trigger still work.
    fn changes(&self) -> BoxStream<'static, ()> {
        self.observer.changes().unwrap_or_else(|e| {
            tracing::warn!(error = %e, "no netlink events; observing every {:?}", self.interval);
            futures::stream::pending().boxed()
        })
    }
}

impl Controller for NetworkStatusController {
    fn name(&self) -> &'static str {
        "network-status"
    }

    fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) -> BoxFuture<'static, Result<(), ControllerError>> {
        Box::pin(async move {
            // Subscribed before the first observation: nothing between the
            // two is missed.
            let mut changes = self.changes();
            loop {
                let snapshot = self.observer.snapshot().await?;
                self.publisher.publish(&snapshot)?;
                self.snapshots.send_if_modified(|last| {
                    let changed = **last != snapshot;
                    if changed {
                        *last = Arc::new(snapshot);
                    }
                    changed
                });
                let event = tokio::select! {
                    _ = stop.wait_for(|s| *s) => return Ok(()),
                    _ = tokio::time::sleep(self.interval) => None,
                    _ = self.trigger.notified() => None,
                    event = changes.next() => Some(event),
                };
                match event {
                    Some(Some(())) => {
                        // Let the burst finish, then drop what queued.
                        tokio::time::sleep(EVENT_DEBOUNCE).await;
                        while let Some(Some(())) = changes.next().now_or_never() {}
                    }
                    Some(None) => {
                        tracing::warn!("netlink events ended; observing every {:?}", self.interval);
                        changes = futures::stream::pending().boxed();
                    }
                    None => {}
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

    /// Hands out the links it is told to, counting observations; its
    /// change events come from a channel the test holds.
    #[derive(Default)]
    struct Scripted {
        links: Mutex<Vec<&'static str>>,
        observed: Mutex<u32>,
        events: Mutex<Option<futures::channel::mpsc::UnboundedReceiver<()>>>,
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

        fn changes(&self) -> Result<BoxStream<'static, ()>, NetError> {
            match self.events.lock().unwrap().take() {
                Some(events) => Ok(events.boxed()),
                None => Ok(futures::stream::pending().boxed()),
            }
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

    #[tokio::test(start_paused = true)]
    async fn netlink_events_re_observe_once_per_burst_and_feed_the_snapshot_watch() {
        let store = Store::new();
        let scripted = Arc::new(Scripted::default());
        scripted.links.lock().unwrap().push("lo");
        let (events, receiver) = futures::channel::mpsc::unbounded();
        *scripted.events.lock().unwrap() = Some(receiver);
        let controller = Arc::new(NetworkStatusController::new(
            Publisher::new(&store).unwrap(),
            scripted.clone(),
            Arc::new(Notify::new()),
        ));
        let mut snapshots = controller.snapshots();
        assert!(snapshots.borrow().links.is_empty(), "empty until the first observation");
        let mut runtime = Runtime::default();
        runtime.spawn(controller);
        snapshots.changed().await.unwrap();
        assert_eq!(snapshots.borrow_and_update().links[0].name, "lo");

        // A burst of events: one observation after the debounce.
        scripted.links.lock().unwrap().push("eth0");
        for _ in 0..100 {
            events.unbounded_send(()).unwrap();
        }
        tokio::time::sleep(EVENT_DEBOUNCE / 2).await;
        assert_eq!(*scripted.observed.lock().unwrap(), 1, "still debouncing");
        tokio::time::sleep(EVENT_DEBOUNCE).await;
        assert_eq!(*scripted.observed.lock().unwrap(), 2);
        assert_eq!(ids(&store), ["eth0", "lo"]);
        assert!(snapshots.has_changed().unwrap());
        assert_eq!(snapshots.borrow_and_update().links.len(), 2);

        // An event that changes nothing re-observes but does not wake
        // watchers.
        events.unbounded_send(()).unwrap();
        tokio::time::sleep(EVENT_DEBOUNCE * 2).await;
        assert_eq!(*scripted.observed.lock().unwrap(), 3);
        assert!(!snapshots.has_changed().unwrap());

        // The event stream ending falls back to the timer.
        drop(events);
        tokio::time::sleep(Duration::from_millis(10)).await;
        scripted.links.lock().unwrap().retain(|n| *n == "lo");
        tokio::time::sleep(OBSERVE_INTERVAL).await;
        assert_eq!(ids(&store), ["lo"]);
        runtime.stop().await;
    }
}
