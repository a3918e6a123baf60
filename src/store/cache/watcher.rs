//! One watch on the cache: a cursor over the revision log under a key prefix.
//!
//! A watcher normally receives the feed's events through a bounded channel. One whose consumer
//! falls behind is not cut off: the feed drops its channel, and the watcher, once it has yielded
//! what the channel held, catches up by itself from the point it reached, first from the
//! backend's history (what the window no longer holds) and then from the window, and rejoins
//! the feed. Only a point the backend has compacted away ends it (`TooOld`, a 410 to clients).

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use futures::{FutureExt, Stream};
use parking_lot::Mutex;
use tokio::sync::mpsc;

use super::{CacheState, Inner};
use crate::store::{Event, Result, Revision, StoreError};

/// How many events one read of the backend's history returns at most.
const HISTORY_CHUNK: usize = 500;

/// Why the feed stopped sending to a watcher.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum End {
    /// Its channel was full: it catches up by itself.
    Behind,
    /// It must fail with this error.
    Failed(StoreError),
}

/// The feed's side of a watcher that receives live events.
pub(super) struct WatcherSlot {
    pub(super) prefix: String,
    pub(super) tx: mpsc::Sender<Event>,
    pub(super) ended: Arc<Mutex<Option<End>>>,
}

impl WatcherSlot {
    pub(super) fn end(&self, end: End) {
        *self.ended.lock() = Some(end);
    }
}

/// The watcher's side of its slot.
struct Live {
    id: u64,
    rx: mpsc::Receiver<Event>,
    ended: Arc<Mutex<Option<End>>>,
}

/// A read of the backend's history in flight.
type Fetch = BoxFuture<'static, Result<Vec<Event>>>;

/// A stream of the events under one prefix after a revision, in order. After a failure (history
/// compacted away, cache rebuilt) it yields that error once and ends.
pub struct Watcher {
    prefix: String,
    /// Events to yield before anything else.
    backlog: VecDeque<Event>,
    live: Option<Live>,
    /// A read of the backend's history, with the revision it reads up to.
    fetch: Option<(Fetch, Revision)>,
    /// The revision of the last event yielded (or the starting point): later events only.
    delivered: Revision,
    /// Every event at or below this has been yielded or is in the backlog.
    covered: Revision,
    inner: Weak<Inner>,
    done: bool,
}

impl Watcher {
    /// A watcher that yields the events under `prefix` after `after`.
    pub(super) fn start(inner: &Arc<Inner>, prefix: &str, after: Revision) -> Watcher {
        let mut w = Watcher {
            prefix: prefix.to_string(),
            backlog: VecDeque::new(),
            live: None,
            fetch: None,
            delivered: after,
            covered: after,
            inner: Arc::downgrade(inner),
            done: false,
        };
        w.resume(inner);
        w
    }

    /// Whether the watcher receives the feed's events as they come, with nothing held back:
    /// once its channel is drained, it has seen everything up to the cache's revision.
    pub fn is_current(&self) -> bool {
        self.backlog.is_empty() && self.fetch.is_none() && self.live.is_some()
    }

    /// Continues from `covered`: from the window and the feed when the window reaches back that
    /// far, else with a read of the backend's history up to where the window starts.
    fn resume(&mut self, inner: &Arc<Inner>) {
        let mut st = inner.state.write();
        if self.covered < st.oldest {
            let (backend, prefix) = (inner.backend.clone(), self.prefix.clone());
            let (after, upto) = (self.covered, st.oldest);
            drop(st);
            tracing::debug!(prefix = %self.prefix, after, upto, "watcher reading history");
            let read = async move { backend.history(&prefix, after, upto, HISTORY_CHUNK).await };
            self.fetch = Some((read.boxed(), upto));
            return;
        }
        self.backlog.extend(
            st.window
                .iter()
                .filter(|e| e.revision() > self.covered && e.kv.key.starts_with(&self.prefix))
                .cloned(),
        );
        self.covered = self.covered.max(st.revision);
        self.live = Some(register(inner, &mut st, &self.prefix));
    }

    fn unregister(&mut self) {
        if let (Some(live), Some(inner)) = (self.live.take(), self.inner.upgrade()) {
            inner.state.write().watchers.remove(&live.id);
        }
    }

    fn yield_event(&mut self, ev: Event) -> Option<Poll<Option<Result<Event>>>> {
        if ev.revision() <= self.delivered {
            return None;
        }
        self.delivered = ev.revision();
        self.covered = self.covered.max(self.delivered);
        Some(Poll::Ready(Some(Ok(ev))))
    }

    fn fail(&mut self, err: StoreError) -> Poll<Option<Result<Event>>> {
        self.done = true;
        self.unregister();
        Poll::Ready(Some(Err(err)))
    }
}

fn register(inner: &Inner, st: &mut CacheState, prefix: &str) -> Live {
    let (tx, rx) = mpsc::channel(inner.opts.watcher_buffer.max(1));
    let ended = Arc::new(Mutex::new(None));
    let id = inner.next_watcher.fetch_add(1, Ordering::Relaxed);
    st.watchers.insert(id, WatcherSlot { prefix: prefix.to_string(), tx, ended: ended.clone() });
    Live { id, rx, ended }
}

impl Stream for Watcher {
    type Item = Result<Event>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            if this.done {
                return Poll::Ready(None);
            }
            if let Some(ev) = this.backlog.pop_front() {
                match this.yield_event(ev) {
                    Some(ready) => return ready,
                    None => continue,
                }
            }
            if let Some(live) = this.live.as_mut() {
                match live.rx.poll_recv(cx) {
                    Poll::Ready(Some(ev)) => match this.yield_event(ev) {
                        Some(ready) => return ready,
                        None => continue,
                    },
                    Poll::Ready(None) => {
                        let end = live.ended.lock().take();
                        this.unregister();
                        match end {
                            Some(End::Behind) => {
                                tracing::info!(
                                    prefix = %this.prefix,
                                    revision = this.delivered,
                                    "watcher fell behind the feed: catching up"
                                );
                            }
                            Some(End::Failed(err)) => return this.fail(err),
                            None => {
                                this.done = true;
                                return Poll::Ready(None);
                            }
                        }
                    }
                    Poll::Pending => return Poll::Pending,
                }
            }
            if let Some((fetch, upto)) = this.fetch.as_mut() {
                let upto = *upto;
                match fetch.poll_unpin(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Err(err)) => {
                        this.fetch = None;
                        return this.fail(err);
                    }
                    Poll::Ready(Ok(events)) => {
                        this.fetch = None;
                        this.covered = match events.last() {
                            Some(last) if events.len() >= HISTORY_CHUNK => last.revision(),
                            _ => upto,
                        };
                        this.backlog.extend(events);
                        continue;
                    }
                }
            }
            let Some(inner) = this.inner.upgrade() else {
                this.done = true;
                return Poll::Ready(None);
            };
            this.resume(&inner);
        }
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.unregister();
    }
}
