//! The typed resource store: `(namespace, type, id) -> versioned spec`.
//!
//! Controllers write resources through a [`Writer`], of which exactly one
//! exists per resource type; readers (the API, other controllers) get, list
//! and watch. A watch first replays the current state, then a
//! `Bootstrapped` marker, then every change, with no gap between the two
//! (the snapshot and the subscription are taken under one lock).
//!
//! The store holds specs as JSON values so the API can serve any type
//! without knowing it; typed access goes through [`ResourceSpec`].

pub mod ring;
pub mod types;

use serde::{Serialize, de::DeserializeOwned};
use std::collections::{BTreeMap, HashSet};
use std::marker::PhantomData;
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::broadcast;

/// Static description of a resource type.
#[derive(Debug)]
pub struct ResourceDefinition {
    /// Canonical type name, e.g. `MachineStatuses.bronze.dev`.
    pub type_name: &'static str,
    /// Lowercase names users may type (`machinestatus`, `ms`).
    pub aliases: &'static [&'static str],
    /// Namespace resources of this type live in.
    pub namespace: &'static str,
    /// Sensitive types (secrets, full config) are readable by `os:admin` only.
    pub sensitive: bool,
}

/// A spec type stored in the resource store.
pub trait ResourceSpec: Serialize + DeserializeOwned + Send + Sync + 'static {
    const DEFINITION: &'static ResourceDefinition;
}

/// Identity and revision of a stored resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Metadata {
    pub namespace: String,
    pub type_name: String,
    pub id: String,
    pub version: u64,
    pub created: String,
    pub updated: String,
}

/// A resource as the store keeps it.
#[derive(Debug, Clone)]
pub struct Resource {
    pub metadata: Metadata,
    pub spec: serde_json::Value,
}

/// What happened to a resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    Created,
    Updated,
    Destroyed,
}

/// One change, as broadcast to watchers.
#[derive(Debug, Clone)]
pub struct Change {
    pub kind: ChangeKind,
    pub resource: Arc<Resource>,
}

/// An item of a watch stream.
#[derive(Debug, Clone)]
pub enum WatchEvent {
    Change(Change),
    /// The replay of current state is complete.
    Bootstrapped,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum StoreError {
    #[error("resource type {0} already has a writer")]
    WriterTaken(&'static str),
    #[error("spec of {type_name}/{id} does not encode: {message}")]
    Encode { type_name: &'static str, id: String, message: String },
    #[error("watch fell behind by {0} changes; watch again")]
    Lagged(u64),
}

type Key = (String, String, String);

struct Inner {
    resources: BTreeMap<Key, Arc<Resource>>,
    writers: HashSet<&'static str>,
}

/// The in-memory resource store. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Mutex<Inner>>,
    changes: broadcast::Sender<Change>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").finish_non_exhaustive()
    }
}

impl Default for Store {
    fn default() -> Self {
        Self::new()
    }
}

/// Changes a slow watcher may fall behind before its watch is ended.
const WATCH_BUFFER: usize = 4096;

impl Store {
    pub fn new() -> Self {
        let (changes, _) = broadcast::channel(WATCH_BUFFER);
        Self { inner: Arc::new(Mutex::new(Inner { resources: BTreeMap::new(), writers: HashSet::new() })), changes }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding this lock cannot leave a half-written map
        // (every mutation is a single insert/remove), so poisoning is ignored.
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Claims the one writer of type `T`. A second claim is an error: two
    /// controllers writing one type is a design bug, caught at start.
    pub fn writer<T: ResourceSpec>(&self) -> Result<Writer<T>, StoreError> {
        let def = T::DEFINITION;
        if !self.lock().writers.insert(def.type_name) {
            return Err(StoreError::WriterTaken(def.type_name));
        }
        Ok(Writer { store: self.clone(), _spec: PhantomData })
    }

    /// One resource, untyped.
    pub fn get(&self, def: &ResourceDefinition, id: &str) -> Option<Arc<Resource>> {
        self.lock().resources.get(&key(def.namespace, def.type_name, id)).cloned()
    }

    /// One resource, decoded as `T`.
    pub fn get_typed<T: ResourceSpec>(&self, id: &str) -> Option<(Metadata, T)> {
        let res = self.get(T::DEFINITION, id)?;
        let spec = serde_json::from_value(res.spec.clone()).ok()?;
        Some((res.metadata.clone(), spec))
    }

    /// Every resource of a type that decodes as `T`, ordered by id.
    pub fn list_typed<T: ResourceSpec>(&self) -> Vec<(Metadata, T)> {
        self.list(T::DEFINITION)
            .into_iter()
            .filter_map(|res| Some((res.metadata.clone(), serde_json::from_value(res.spec.clone()).ok()?)))
            .collect()
    }

    /// Every resource of a type, ordered by id.
    pub fn list(&self, def: &ResourceDefinition) -> Vec<Arc<Resource>> {
        let inner = self.lock();
        list_locked(&inner, def)
    }

    /// Replays the current resources of `def` (optionally one `id`), then
    /// `Bootstrapped`, then follows changes.
    pub fn watch(&self, def: &'static ResourceDefinition, id: Option<String>) -> Watch {
        let inner = self.lock();
        let rx = self.changes.subscribe();
        let replay = list_locked(&inner, def)
            .into_iter()
            .filter(|r| id.as_deref().is_none_or(|want| r.metadata.id == want))
            .map(|resource| Change { kind: ChangeKind::Created, resource })
            .collect::<Vec<_>>();
        drop(inner);
        Watch { replay: replay.into_iter(), bootstrapped: false, rx, def, id }
    }

    fn put(&self, def: &'static ResourceDefinition, id: &str, spec: serde_json::Value) {
        let now = now_rfc3339();
        let mut inner = self.lock();
        let k = key(def.namespace, def.type_name, id);
        let (kind, metadata) = match inner.resources.get(&k) {
            Some(old) if old.spec == spec => return,
            Some(old) => (
                ChangeKind::Updated,
                Metadata { version: old.metadata.version + 1, updated: now, ..old.metadata.clone() },
            ),
            None => (
                ChangeKind::Created,
                Metadata {
                    namespace: def.namespace.into(),
                    type_name: def.type_name.into(),
                    id: id.into(),
                    version: 1,
                    created: now.clone(),
                    updated: now,
                },
            ),
        };
        let resource = Arc::new(Resource { metadata, spec });
        inner.resources.insert(k, resource.clone());
        // Sent under the lock so watchers see changes in store order.
        let _ = self.changes.send(Change { kind, resource });
    }

    fn remove(&self, def: &'static ResourceDefinition, id: &str) -> bool {
        let mut inner = self.lock();
        match inner.resources.remove(&key(def.namespace, def.type_name, id)) {
            Some(resource) => {
                let _ = self.changes.send(Change { kind: ChangeKind::Destroyed, resource });
                true
            }
            None => false,
        }
    }
}

fn key(ns: &str, ty: &str, id: &str) -> Key {
    (ns.to_string(), ty.to_string(), id.to_string())
}

fn list_locked(inner: &Inner, def: &ResourceDefinition) -> Vec<Arc<Resource>> {
    let start = key(def.namespace, def.type_name, "");
    inner
        .resources
        .range(start..)
        .take_while(|((ns, ty, _), _)| ns == def.namespace && ty == def.type_name)
        .map(|(_, r)| r.clone())
        .collect()
}

/// RFC 3339 UTC time with nanoseconds, for metadata and events.
pub fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| "unknown".to_string())
}

/// The single writer of resource type `T`.
pub struct Writer<T> {
    store: Store,
    _spec: PhantomData<fn(T)>,
}

impl<T> std::fmt::Debug for Writer<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer").finish_non_exhaustive()
    }
}

impl<T: ResourceSpec> Writer<T> {
    /// Creates or updates `id`. Writing an identical spec is a no-op (no
    /// version bump, no watch event).
    pub fn put(&self, id: &str, spec: &T) -> Result<(), StoreError> {
        let value = serde_json::to_value(spec).map_err(|e| StoreError::Encode {
            type_name: T::DEFINITION.type_name,
            id: id.into(),
            message: e.to_string(),
        })?;
        self.store.put(T::DEFINITION, id, value);
        Ok(())
    }

    /// Deletes `id`; returns whether it existed.
    pub fn remove(&self, id: &str) -> bool {
        self.store.remove(T::DEFINITION, id)
    }

    /// The store this writer writes to.
    pub fn store(&self) -> &Store {
        &self.store
    }
}

/// A watch: replay, `Bootstrapped`, then live changes.
pub struct Watch {
    replay: std::vec::IntoIter<Change>,
    bootstrapped: bool,
    rx: broadcast::Receiver<Change>,
    def: &'static ResourceDefinition,
    id: Option<String>,
}

impl Watch {
    /// The next event; `Err(Lagged)` ends the watch when the watcher fell
    /// too far behind to be given a consistent picture.
    pub async fn next(&mut self) -> Result<WatchEvent, StoreError> {
        if let Some(change) = self.replay.next() {
            return Ok(WatchEvent::Change(change));
        }
        if !self.bootstrapped {
            self.bootstrapped = true;
            return Ok(WatchEvent::Bootstrapped);
        }
        loop {
            match self.rx.recv().await {
                Ok(change) if self.matches(&change) => return Ok(WatchEvent::Change(change)),
                Ok(_) => continue,
                Err(broadcast::error::RecvError::Lagged(n)) => return Err(StoreError::Lagged(n)),
                // The sender lives as long as the store; closed means the
                // node is going away. Park rather than spin.
                Err(broadcast::error::RecvError::Closed) => futures::future::pending::<()>().await,
            }
        }
    }

    fn matches(&self, change: &Change) -> bool {
        let m = &change.resource.metadata;
        m.type_name == self.def.type_name
            && m.namespace == self.def.namespace
            && self.id.as_deref().is_none_or(|want| m.id == want)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Serialize, Deserialize, Debug, PartialEq, Clone)]
    struct Thing {
        n: u32,
    }
    static THING: ResourceDefinition =
        ResourceDefinition { type_name: "Things.test", aliases: &["thing"], namespace: "test", sensitive: false };
    impl ResourceSpec for Thing {
        const DEFINITION: &'static ResourceDefinition = &THING;
    }

    #[test]
    fn one_writer_per_type() {
        let store = Store::new();
        let _w = store.writer::<Thing>().unwrap();
        assert_eq!(store.writer::<Thing>().unwrap_err(), StoreError::WriterTaken("Things.test"));
    }

    #[test]
    fn versions_bump_only_on_change() {
        let store = Store::new();
        let w = store.writer::<Thing>().unwrap();
        w.put("a", &Thing { n: 1 }).unwrap();
        w.put("a", &Thing { n: 1 }).unwrap();
        assert_eq!(store.get_typed::<Thing>("a").unwrap().0.version, 1);
        w.put("a", &Thing { n: 2 }).unwrap();
        let (meta, spec) = store.get_typed::<Thing>("a").unwrap();
        assert_eq!((meta.version, spec), (2, Thing { n: 2 }));
    }

    #[tokio::test]
    async fn watch_replays_then_follows() {
        let store = Store::new();
        let w = store.writer::<Thing>().unwrap();
        w.put("b", &Thing { n: 1 }).unwrap();
        w.put("a", &Thing { n: 1 }).unwrap();
        let mut watch = store.watch(&THING, None);
        let mut ids = vec![];
        while let WatchEvent::Change(c) = watch.next().await.unwrap() {
            ids.push(c.resource.metadata.id.clone());
        }
        assert_eq!(ids, ["a", "b"]);
        w.put("a", &Thing { n: 5 }).unwrap();
        assert!(w.remove("b"));
        let WatchEvent::Change(c) = watch.next().await.unwrap() else { panic!("expected a change") };
        assert_eq!((c.kind, c.resource.metadata.version), (ChangeKind::Updated, 2));
        let WatchEvent::Change(c) = watch.next().await.unwrap() else { panic!("expected a change") };
        assert_eq!((c.kind, c.resource.metadata.id.as_str()), (ChangeKind::Destroyed, "b"));
    }

    #[tokio::test]
    async fn watch_of_one_id_ignores_others() {
        let store = Store::new();
        let w = store.writer::<Thing>().unwrap();
        let mut watch = store.watch(&THING, Some("x".into()));
        assert!(matches!(watch.next().await.unwrap(), WatchEvent::Bootstrapped));
        w.put("y", &Thing { n: 1 }).unwrap();
        w.put("x", &Thing { n: 2 }).unwrap();
        let WatchEvent::Change(c) = watch.next().await.unwrap() else { panic!("expected a change") };
        assert_eq!(c.resource.metadata.id, "x");
    }
}
