//! (in progress) The watch cache and the Store facade. Interface fixed; body being written.
#![allow(unused)]
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures::Stream;

use super::{Backend, Event, KeyValue, ListPage, Result, Revision, StoreError};

/// Sizes of the watch cache.
#[derive(Clone, Debug)]
pub struct CacheOptions {
    /// How many recent events are kept for watches that start in the past.
    pub window_events: usize,
    /// How many undelivered events one watcher may have before it is ended as too slow.
    pub watcher_buffer: usize,
}

impl Default for CacheOptions {
    fn default() -> Self {
        CacheOptions { window_events: 10_000, watcher_buffer: 1_000 }
    }
}

/// What to list.
#[derive(Clone, Debug, Default)]
pub struct ListOptions {
    /// Read at this revision (None: the latest, consistently).
    pub revision: Option<Revision>,
    /// Continue after this key (exclusive).
    pub start_after: Option<String>,
    /// At most this many items (0: all).
    pub limit: usize,
}

/// The storage facade everything above the store uses: the watch cache in front of a backend.
/// Cheap to clone.
#[derive(Clone)]
pub struct Store {
    backend: Arc<dyn Backend>,
}

impl Store {
    /// Loads the cache from the backend and starts following its events.
    pub async fn open(backend: Arc<dyn Backend>, opts: CacheOptions) -> Result<Store> {
        Err(StoreError::Unavailable("not yet".into()))
    }
    pub fn backend_name(&self) -> &'static str {
        self.backend.name()
    }
    /// The latest revision the cache has applied.
    pub fn revision(&self) -> Revision {
        0
    }
    /// A key at the latest revision (None) or at a given one.
    pub async fn get(&self, key: &str, revision: Option<Revision>) -> Result<Option<KeyValue>> {
        todo!()
    }
    pub async fn list(&self, prefix: &str, opts: &ListOptions) -> Result<ListPage> {
        todo!()
    }
    pub async fn create(&self, key: &str, value: Bytes) -> Result<KeyValue> {
        todo!()
    }
    pub async fn update(&self, key: &str, value: Bytes, expected: Option<Revision>) -> Result<KeyValue> {
        todo!()
    }
    pub async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<KeyValue> {
        todo!()
    }
    /// Every event under `prefix` with a revision above `after`, then every later one.
    pub fn watch(&self, prefix: &str, after: Revision) -> Result<Watcher> {
        todo!()
    }
    pub async fn compact(&self, revision: Revision) -> Result<()> {
        todo!()
    }
}

/// A stream of events for one watch. Ends with `Err(WatcherTooSlow)` if it fell behind.
pub struct Watcher {}

impl Stream for Watcher {
    type Item = Result<Event>;
    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Poll::Ready(None)
    }
}
