//! The storage layer: keys and opaque values at cluster-wide revisions.
//!
//! It knows nothing about HTTP or Kubernetes objects. A [`Backend`] keeps the durable revision
//! log (SQLite in the data dir, or a real etcd cluster); the [`Store`] puts the in-memory watch
//! cache in front of it so that reads at the latest revision and watches never reach the backend.

pub mod cache;
pub mod etcd;
pub mod snapshot;
pub mod sqlite;

use std::pin::Pin;

use async_trait::async_trait;
use bytes::Bytes;
use futures::Stream;

pub use cache::{CacheOptions, ListOptions, Store, Watcher};

/// A cluster-wide revision. Every write takes the next one; 0 means "none yet".
pub type Revision = i64;

/// One key's value as of one revision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyValue {
    pub key: String,
    pub value: Bytes,
    /// Revision of the write that created this incarnation of the key.
    pub create_revision: Revision,
    /// Revision of the last write to the key (the object's resourceVersion).
    pub mod_revision: Revision,
}

/// What an event did to its key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    Create,
    Update,
    Delete,
}

/// One write, as a watcher sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub kind: EventKind,
    /// The key's value after the write. For a delete: the last value before it, with
    /// `mod_revision` set to the revision of the delete.
    pub kv: KeyValue,
    /// The value before the write (None for a create).
    pub prev: Option<KeyValue>,
}

impl Event {
    pub fn revision(&self) -> Revision {
        self.kv.mod_revision
    }
}

/// A stream of event batches, each batch in revision order, batches in order.
pub type EventStream = Pin<Box<dyn Stream<Item = Result<Vec<Event>, StoreError>> + Send>>;

/// One page of a list at a fixed revision.
#[derive(Clone, Debug, Default)]
pub struct ListPage {
    pub items: Vec<KeyValue>,
    /// The revision the page was read at.
    pub revision: Revision,
    /// Whether keys after the last item remain under the prefix.
    pub more: bool,
}

/// What went wrong in the storage layer.
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
pub enum StoreError {
    #[error("key {key:?} already exists")]
    AlreadyExists { key: String },
    #[error("key {key:?} not found")]
    NotFound { key: String },
    #[error("key {key:?} is at revision {current}, not the expected {expected}")]
    Conflict { key: String, expected: Revision, current: Revision },
    #[error("revision {requested} is older than the retained history (oldest {oldest})")]
    TooOld { requested: Revision, oldest: Revision },
    #[error("revision {requested} is newer than the current revision {current}")]
    FutureRevision { requested: Revision, current: Revision },
    #[error("the watch cache was rebuilt; watchers must list again")]
    CacheReset,
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    #[error("storage write failed: {0}")]
    WriteFailed(String),
    #[error("database is not usable: {0}")]
    Corrupt(String),
    #[error("invalid storage request: {0}")]
    Invalid(String),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// The durable layer under the watch cache. Implementations: [`sqlite::SqliteBackend`],
/// [`etcd::EtcdBackend`]. Every write is durable when its future resolves.
#[async_trait]
pub trait Backend: Send + Sync + 'static {
    /// A short name for logs and metrics ("sqlite", "etcd").
    fn name(&self) -> &'static str;

    /// The latest committed revision.
    async fn current_revision(&self) -> Result<Revision>;

    /// Every live key at one consistent revision, for building the cache; returns that revision.
    async fn load(&self) -> Result<(Vec<KeyValue>, Revision)>;

    /// Every event with a revision above `after`, in order, none missed or repeated, then every
    /// later one as it is committed. Fails with `TooOld` if `after` has been compacted away.
    async fn events(&self, after: Revision) -> Result<EventStream>;

    /// At most `limit` events under `prefix` with a revision in (`after`, `upto`], in order,
    /// with previous values: what a watcher that fell behind the watch cache's window still has
    /// to see. Fewer than `limit` means none remain up to `upto`. Fails with `TooOld` if
    /// `after` has been compacted away; a backend that keeps no readable history (the default
    /// implementation) always does.
    async fn history(
        &self,
        prefix: &str,
        after: Revision,
        upto: Revision,
        limit: usize,
    ) -> Result<Vec<Event>> {
        let _ = (prefix, limit);
        Err(StoreError::TooOld { requested: after, oldest: upto })
    }

    /// A key at a past (or the current) revision.
    async fn get_at(&self, key: &str, revision: Revision) -> Result<Option<KeyValue>>;

    /// Keys under `prefix` (after `start_after`, if given), in key order, at `revision`; at most
    /// `limit` of them (0 = no limit).
    async fn list_at(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
        revision: Revision,
    ) -> Result<ListPage>;

    /// Creates a key; fails with `AlreadyExists` if it is live.
    async fn create(&self, key: &str, value: Bytes) -> Result<KeyValue>;

    /// Replaces a live key's value. With `expected`, fails with `Conflict` unless the key's
    /// mod_revision is exactly that.
    async fn update(&self, key: &str, value: Bytes, expected: Option<Revision>)
        -> Result<KeyValue>;

    /// Deletes a live key (with the same precondition as update). Returns the last value, with
    /// `mod_revision` set to the revision of the delete.
    async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<KeyValue>;

    /// `update`, given the version of the key the caller holds (the watch cache's). A backend
    /// that reads the replaced value back for its events may take these bytes instead, when
    /// that version is the one replaced: a revision's value never changes.
    async fn update_known(
        &self,
        key: &str,
        value: Bytes,
        expected: Option<Revision>,
        known: Option<KeyValue>,
    ) -> Result<KeyValue> {
        let _ = known;
        self.update(key, value, expected).await
    }

    /// `delete`, given the version of the key the caller holds (as `update_known`).
    async fn delete_known(
        &self,
        key: &str,
        expected: Option<Revision>,
        known: Option<KeyValue>,
    ) -> Result<KeyValue> {
        let _ = known;
        self.delete(key, expected).await
    }

    /// Drops history at and below `revision` (the latest value of each live key stays).
    async fn compact(&self, revision: Revision) -> Result<()>;

    /// The revision history has been compacted to (reads below it fail with `TooOld`).
    async fn compacted_revision(&self) -> Result<Revision>;
}

/// The smallest byte string greater than every key that starts with `prefix` (for range scans);
/// None when no such bound exists (the prefix is empty or all 0xff).
pub fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut bytes = prefix.to_vec();
    while let Some(last) = bytes.pop() {
        if last < 0xff {
            bytes.push(last + 1);
            return Some(bytes);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::prefix_end;

    #[test]
    fn prefix_end_bounds_the_prefix() {
        assert_eq!(prefix_end(b"/registry/pods/"), Some(b"/registry/pods0".to_vec()));
        assert_eq!(prefix_end(b"a\xff"), Some(b"b".to_vec()));
        assert_eq!(prefix_end(b""), None);
    }
}
