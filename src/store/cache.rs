//! The watch cache and the [`Store`] facade over a backend.
//!
//! The cache holds the latest value of every key and a bounded window of recent events. One feed
//! task applies the backend's events in revision order; reads at the latest revision and watches
//! are served from memory. Each watcher has a bounded buffer; one that falls behind never slows
//! writers or other watchers: it catches up by itself from the window and the backend's history
//! ([`watcher`]).

mod watcher;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::ops::Bound;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use parking_lot::RwLock;
use tokio::sync::{mpsc, watch};

use super::{Backend, Event, EventKind, KeyValue, ListPage, Result, Revision, StoreError};
pub use watcher::Watcher;
use watcher::{End, WatcherSlot};

/// Sizes of the watch cache.
#[derive(Clone, Debug)]
pub struct CacheOptions {
    /// How many recent events are kept for watches that start in the past.
    pub window_events: usize,
    /// How many undelivered events one watcher may have before it must catch up by itself.
    pub watcher_buffer: usize,
}

impl Default for CacheOptions {
    fn default() -> Self {
        // A watcher's buffer holds shared events (the values are reference-counted bytes), so a
        // deep one is cheap; it lets a consumer ride out a busy second (an informer whose
        // handlers wait on a scheduling cycle) on the fast path. A watcher that overflows it
        // catches up from the window or from the backend's history. The window keeps values
        // that are no longer current (about 3.5 KB a pod version), so it stays modest now that
        // a watcher behind it reads history instead of re-listing.
        CacheOptions { window_events: 8_000, watcher_buffer: 10_000 }
    }
}

impl CacheOptions {
    /// For a backend whose history reads are costly (etcd replays its whole key space through a
    /// watch for [`Backend::history`]): a deeper window, so that fewer watchers fall behind it.
    pub fn deep_window() -> Self {
        CacheOptions { window_events: 20_000, ..CacheOptions::default() }
    }
}

/// What to list.
#[derive(Clone, Debug, Default)]
pub struct ListOptions {
    /// Read at exactly this revision (None: the latest, consistently).
    pub revision: Option<Revision>,
    /// Continue after this key (exclusive).
    pub start_after: Option<String>,
    /// At most this many items (0: all).
    pub limit: usize,
}

/// Figures about the cache, for metrics.
#[derive(Clone, Debug, Default)]
pub struct CacheStats {
    pub revision: Revision,
    /// The oldest revision a watch may start after.
    pub oldest_watchable: Revision,
    pub keys: usize,
    pub window_events: usize,
    pub watchers: usize,
}

/// The storage facade everything above the store uses: the watch cache in front of a backend.
/// Cheap to clone; the feed task stops when the last clone is dropped.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
    _feed: Arc<AbortOnDrop>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("backend", &self.inner.backend.name())
            .field("revision", &self.revision())
            .finish()
    }
}

/// How long a write waits for its own event to reach the cache before returning anyway.
const WRITE_VISIBLE_TIMEOUT: Duration = Duration::from_secs(30);

impl Store {
    /// Loads the cache from the backend and starts following its events.
    pub async fn open(backend: Arc<dyn Backend>, opts: CacheOptions) -> Result<Store> {
        let (items, revision) = backend.load().await?;
        let (revision_tx, _) = watch::channel(revision);
        let inner = Arc::new(Inner {
            backend,
            opts,
            state: RwLock::new(CacheState::new(items, revision)),
            revision_tx,
            next_watcher: AtomicU64::new(1),
        });
        let feed = tokio::spawn(feed(inner.clone()));
        tracing::info!(backend = inner.backend.name(), revision, "watch cache loaded");
        Ok(Store { inner, _feed: Arc::new(AbortOnDrop(feed)) })
    }

    pub fn backend_name(&self) -> &'static str {
        self.inner.backend.name()
    }

    /// The backend under the cache (for figures such as disk usage).
    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.inner.backend
    }

    /// The latest revision the cache has applied.
    pub fn revision(&self) -> Revision {
        self.inner.state.read().revision
    }

    pub fn stats(&self) -> CacheStats {
        let st = self.inner.state.read();
        CacheStats {
            revision: st.revision,
            oldest_watchable: st.oldest,
            keys: st.items.len(),
            window_events: st.window.len(),
            watchers: st.watchers.len(),
        }
    }

    /// A key at the latest revision (None, a consistent read) or at exactly the given one.
    pub async fn get(&self, key: &str, revision: Option<Revision>) -> Result<Option<KeyValue>> {
        match revision {
            None => {
                self.sync().await?;
                Ok(self.inner.state.read().items.get(key).cloned())
            }
            Some(rev) => {
                {
                    let st = self.inner.state.read();
                    if rev == st.revision {
                        return Ok(st.items.get(key).cloned());
                    }
                }
                self.inner.backend.get_at(key, rev).await
            }
        }
    }

    /// Keys under `prefix` in key order: at the latest revision from the cache, or at an exact
    /// revision (a continued list) from the cache when it is still current, else the backend.
    pub async fn list(&self, prefix: &str, opts: &ListOptions) -> Result<ListPage> {
        let start_after = opts.start_after.as_deref();
        if let Some(after) = start_after {
            if !after.starts_with(prefix) {
                return Err(StoreError::Invalid(format!(
                    "continue key {after:?} is not under {prefix:?}"
                )));
            }
        }
        match opts.revision {
            None => {
                self.sync().await?;
                Ok(self.inner.state.read().list(prefix, start_after, opts.limit))
            }
            Some(rev) => {
                {
                    let st = self.inner.state.read();
                    if rev == st.revision {
                        return Ok(st.list(prefix, start_after, opts.limit));
                    }
                }
                self.inner.backend.list_at(prefix, start_after, opts.limit, rev).await
            }
        }
    }

    /// Creates a key; the write is durable and visible to reads when this returns.
    pub async fn create(&self, key: &str, value: Bytes) -> Result<KeyValue> {
        let kv = self.inner.backend.create(key, value).await?;
        self.wait_visible(kv.mod_revision).await;
        Ok(kv)
    }

    /// Replaces a live key's value, if its mod_revision is `expected` (when given).
    pub async fn update(
        &self,
        key: &str,
        value: Bytes,
        expected: Option<Revision>,
    ) -> Result<KeyValue> {
        let known = self.known(key);
        let kv = self.inner.backend.update_known(key, value, expected, known).await?;
        self.wait_visible(kv.mod_revision).await;
        Ok(kv)
    }

    /// The version of `key` the cache holds, which the backend may use instead of reading
    /// the replaced value back.
    fn known(&self, key: &str) -> Option<KeyValue> {
        self.inner.state.read().items.get(key).cloned()
    }

    /// Deletes a live key, if its mod_revision is `expected` (when given). Returns the last value
    /// with the delete's revision.
    pub async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<KeyValue> {
        let known = self.known(key);
        let kv = self.inner.backend.delete_known(key, expected, known).await?;
        self.wait_visible(kv.mod_revision).await;
        Ok(kv)
    }

    /// Every event under `prefix` with a revision above `after`, in order, then every later
    /// one. What the window no longer holds is read from the backend's history; the stream
    /// fails with `TooOld` when the backend has compacted `after` away.
    pub fn watch(&self, prefix: &str, after: Revision) -> Watcher {
        Watcher::start(&self.inner, prefix, after)
    }

    /// Drops the backend's history at and below `revision`.
    pub async fn compact(&self, revision: Revision) -> Result<()> {
        self.inner.backend.compact(revision).await
    }

    /// Waits until the cache holds every write the backend has committed.
    pub async fn sync(&self) -> Result<()> {
        let current = self.inner.backend.current_revision().await?;
        self.wait_for(current, WRITE_VISIBLE_TIMEOUT).await
    }

    async fn wait_for(&self, revision: Revision, timeout: Duration) -> Result<()> {
        let mut rx = self.inner.revision_tx.subscribe();
        let reached =
            tokio::time::timeout(timeout, async { rx.wait_for(|r| *r >= revision).await.is_ok() })
                .await;
        match reached {
            Ok(true) => Ok(()),
            _ => Err(StoreError::Unavailable(format!(
                "watch cache did not reach revision {revision} in time"
            ))),
        }
    }

    async fn wait_visible(&self, revision: Revision) {
        if let Err(err) = self.wait_for(revision, WRITE_VISIBLE_TIMEOUT).await {
            // The write is durable; only its visibility in this cache lags.
            tracing::warn!(revision, error = %err, "write not yet visible in the watch cache");
        }
    }
}

struct Inner {
    backend: Arc<dyn Backend>,
    opts: CacheOptions,
    state: RwLock<CacheState>,
    revision_tx: watch::Sender<Revision>,
    next_watcher: AtomicU64,
}

struct CacheState {
    revision: Revision,
    items: BTreeMap<String, KeyValue>,
    window: VecDeque<Event>,
    /// Every event above this revision is in the window.
    oldest: Revision,
    watchers: HashMap<u64, WatcherSlot>,
}

impl CacheState {
    fn new(items: Vec<KeyValue>, revision: Revision) -> Self {
        CacheState {
            revision,
            items: items.into_iter().map(|kv| (kv.key.clone(), kv)).collect(),
            window: VecDeque::new(),
            oldest: revision,
            watchers: HashMap::new(),
        }
    }

    fn list(&self, prefix: &str, start_after: Option<&str>, limit: usize) -> ListPage {
        let lower = match start_after {
            Some(after) => Bound::Excluded(after),
            None => Bound::Included(prefix),
        };
        let mut range = self
            .items
            .range::<str, _>((lower, Bound::Unbounded))
            .take_while(|(k, _)| k.starts_with(prefix));
        let mut items = Vec::new();
        for (_, kv) in range.by_ref() {
            if limit > 0 && items.len() == limit {
                return ListPage { items, revision: self.revision, more: true };
            }
            items.push(kv.clone());
        }
        ListPage { items, revision: self.revision, more: false }
    }

    fn apply(&mut self, batch: Vec<Event>, window_cap: usize) {
        for mut ev in batch {
            if ev.revision() <= self.revision {
                continue;
            }
            if let Some(cached) = self.items.get(&ev.kv.key) {
                let (revision, value) = (cached.mod_revision, cached.value.clone());
                share_previous(&mut ev, revision, &value);
            }
            match ev.kind {
                EventKind::Delete => {
                    self.items.remove(&ev.kv.key);
                }
                EventKind::Create | EventKind::Update => {
                    self.items.insert(ev.kv.key.clone(), ev.kv.clone());
                }
            }
            self.revision = ev.revision();
            self.watchers.retain(|_, w| {
                if !ev.kv.key.starts_with(&w.prefix) {
                    return true;
                }
                match w.tx.try_send(ev.clone()) {
                    Ok(()) => true,
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        w.end(End::Behind);
                        false
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => false,
                }
            });
            self.window.push_back(ev);
            while self.window.len() > window_cap {
                if let Some(old) = self.window.pop_front() {
                    self.oldest = old.revision();
                }
            }
        }
    }

    /// Replaces everything with a fresh load; every watcher must list again.
    fn reset(&mut self, items: Vec<KeyValue>, revision: Revision) {
        for (_, w) in self.watchers.drain() {
            w.end(End::Failed(StoreError::CacheReset));
        }
        *self = CacheState::new(items, revision);
    }
}

/// Points the event's previous value (and a delete's last value) at the bytes the cache already
/// holds for that version: the backend read its own copy, and the window would keep both.
fn share_previous(ev: &mut Event, revision: Revision, value: &Bytes) {
    // Bytes the backend took from the cache are the same allocation: nothing to compare.
    let same = |a: &Bytes| a.as_ptr() == value.as_ptr() && a.len() == value.len();
    if let Some(prev) = ev.prev.as_mut() {
        if prev.mod_revision == revision && !same(&prev.value) && prev.value == value {
            prev.value = value.clone();
        }
    }
    if ev.kind == EventKind::Delete && !same(&ev.kv.value) && ev.kv.value == value {
        ev.kv.value = value.clone();
    }
}

/// Follows the backend's events into the cache for as long as the store lives. A broken event
/// stream is resumed from the cache's revision; a compacted one forces a reload.
async fn feed(inner: Arc<Inner>) {
    let mut backoff = Duration::from_millis(50);
    loop {
        let after = inner.state.read().revision;
        match inner.backend.events(after).await {
            Ok(mut stream) => {
                while let Some(item) = stream.next().await {
                    match item {
                        Ok(batch) => {
                            backoff = Duration::from_millis(50);
                            let revision = {
                                let mut st = inner.state.write();
                                st.apply(batch, inner.opts.window_events);
                                st.revision
                            };
                            inner.revision_tx.send_replace(revision);
                        }
                        Err(err) => {
                            tracing::warn!(error = %err, after, "backend event stream failed");
                            if matches!(err, StoreError::TooOld { .. }) {
                                reload(&inner).await;
                            }
                            break;
                        }
                    }
                }
            }
            Err(StoreError::TooOld { .. }) => reload(&inner).await,
            Err(err) => tracing::warn!(error = %err, after, "cannot follow backend events"),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

async fn reload(inner: &Arc<Inner>) {
    match inner.backend.load().await {
        Ok((items, revision)) => {
            inner.state.write().reset(items, revision);
            inner.revision_tx.send_replace(revision);
            tracing::warn!(revision, "watch cache rebuilt from the backend");
        }
        Err(err) => tracing::warn!(error = %err, "cannot reload the watch cache"),
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_share_the_cached_bytes_of_the_previous_version() {
        let cached = kv("/a", "one", 1, 1);
        let mut update = Event {
            kind: EventKind::Update,
            kv: kv("/a", "two", 1, 2),
            prev: Some(kv("/a", "one", 1, 1)),
        };
        share_previous(&mut update, cached.mod_revision, &cached.value);
        let prev = update.prev.as_ref().unwrap();
        assert_eq!(prev.value.as_ptr(), cached.value.as_ptr());
        let mut delete = Event { kind: EventKind::Delete, kv: kv("/a", "one", 1, 3), prev: None };
        share_previous(&mut delete, cached.mod_revision, &cached.value);
        assert_eq!(delete.kv.value.as_ptr(), cached.value.as_ptr());
        // Another version keeps its own bytes.
        let mut other = Event {
            kind: EventKind::Update,
            kv: kv("/a", "three", 1, 4),
            prev: Some(kv("/a", "two", 1, 2)),
        };
        share_previous(&mut other, cached.mod_revision, &cached.value);
        assert_ne!(other.prev.as_ref().unwrap().value.as_ptr(), cached.value.as_ptr());
    }

    fn kv(key: &str, value: &str, create: Revision, rev: Revision) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: Bytes::from(value.to_string()),
            create_revision: create,
            mod_revision: rev,
        }
    }

    fn put(key: &str, rev: Revision) -> Event {
        Event { kind: EventKind::Create, kv: kv(key, "v", rev, rev), prev: None }
    }

    #[test]
    fn list_pages_by_prefix() {
        let mut st = CacheState::new(vec![], 0);
        st.apply((1..=5).map(|i| put(&format!("/a/{i}"), i)).collect(), 100);
        st.apply(vec![put("/b/1", 6)], 100);
        let page = st.list("/a/", None, 2);
        assert_eq!(page.items.len(), 2);
        assert!(page.more);
        let rest = st.list("/a/", Some("/a/2"), 0);
        let keys: Vec<_> = rest.items.iter().map(|kv| kv.key.as_str()).collect();
        assert_eq!(keys, vec!["/a/3", "/a/4", "/a/5"]);
        assert!(!rest.more);
        assert_eq!(rest.revision, 6);
    }

    #[test]
    fn window_is_bounded_and_tracks_oldest() {
        let mut st = CacheState::new(vec![], 0);
        st.apply((1..=10).map(|i| put(&format!("/k{i}"), i)).collect(), 4);
        assert_eq!(st.window.len(), 4);
        assert_eq!(st.oldest, 6);
        assert_eq!(st.window.front().map(Event::revision), Some(7));
    }

    #[test]
    fn duplicate_events_are_ignored() {
        let mut st = CacheState::new(vec![], 0);
        st.apply(vec![put("/a", 1), put("/b", 2)], 10);
        st.apply(vec![put("/b", 2), put("/c", 3)], 10);
        assert_eq!(st.window.len(), 3);
        assert_eq!(st.revision, 3);
    }

    #[test]
    fn a_full_watcher_is_left_to_catch_up_without_blocking() {
        let mut st = CacheState::new(vec![], 0);
        let (tx, mut rx) = mpsc::channel(2);
        let ended = Arc::new(parking_lot::Mutex::new(None));
        st.watchers.insert(1, WatcherSlot { prefix: "/".into(), tx, ended: ended.clone() });
        st.apply((1..=5).map(|i| put(&format!("/k{i}"), i)).collect(), 100);
        assert!(st.watchers.is_empty());
        assert_eq!(*ended.lock(), Some(End::Behind));
        assert!(rx.try_recv().is_ok());
        assert!(rx.try_recv().is_ok());
        assert!(rx.try_recv().is_err());
    }
}
