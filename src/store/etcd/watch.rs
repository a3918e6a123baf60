//! Turns an etcd watch on the key prefix into skiff's [`EventStream`].
//!
//! The stream ends after its first error: `TooOld` when etcd cancels the watch for
//! compaction, `Unavailable` for anything else (a broken connection, a lost leader, the server
//! closing the stream). Progress notifications and the creation response are skipped.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use etcd_client::{EventType, WatchResponse, WatchStream};

use super::errors;
use super::keys::Keys;
use crate::store::{Event, EventKind, EventStream, KeyValue, Revision, StoreError};

struct State {
    stream: WatchStream,
    keys: Keys,
    /// The revision the stream was asked to start after.
    after: Revision,
    /// The last revision delivered (events at or below it are never repeated).
    delivered: Revision,
    compacted: Arc<AtomicI64>,
}

/// Wraps a created etcd watch (started at `after + 1`) as an event stream.
pub fn event_stream(
    stream: WatchStream,
    keys: Keys,
    after: Revision,
    compacted: Arc<AtomicI64>,
) -> EventStream {
    let state = State { stream, keys, after, delivered: after, compacted };
    Box::pin(futures::stream::unfold(Some(state), |state| async move {
        let mut state = state?;
        match state.next_batch().await {
            Ok(batch) => Some((Ok(batch), Some(state))),
            Err(e) => Some((Err(e), None)),
        }
    }))
}

impl State {
    /// Waits for the next response that carries events.
    async fn next_batch(&mut self) -> Result<Vec<Event>, StoreError> {
        loop {
            let resp = match self.stream.message().await {
                Ok(Some(resp)) => resp,
                Ok(None) => {
                    tracing::warn!(delivered = self.delivered, "etcd closed the watch stream");
                    return Err(StoreError::Unavailable("etcd closed the watch stream".into()));
                }
                Err(e) => {
                    let err = errors::map(e, false);
                    tracing::warn!(delivered = self.delivered, error = %err, "etcd watch failed");
                    return Err(match err {
                        StoreError::Unavailable(_) => err,
                        other => StoreError::Unavailable(other.to_string()),
                    });
                }
            };
            if resp.canceled() {
                return Err(self.cancelled(&resp));
            }
            let batch = self.convert(&resp);
            if !batch.is_empty() {
                return Ok(batch);
            }
        }
    }

    fn cancelled(&self, resp: &WatchResponse) -> StoreError {
        let oldest = resp.compact_revision();
        if oldest > 0 {
            self.compacted.fetch_max(oldest, Ordering::Relaxed);
            tracing::info!(after = self.after, oldest, "etcd watch cancelled by compaction");
            return StoreError::TooOld { requested: self.delivered, oldest };
        }
        let reason = resp.cancel_reason();
        tracing::warn!(delivered = self.delivered, reason, "etcd cancelled the watch");
        StoreError::Unavailable(format!("etcd cancelled the watch: {reason}"))
    }

    /// Maps a response's events, dropping any at or below the last delivered revision.
    fn convert(&mut self, resp: &WatchResponse) -> Vec<Event> {
        let mut batch = Vec::with_capacity(resp.events().len());
        for ev in resp.events() {
            let Some(kv) = ev.kv() else { continue };
            if kv.mod_revision() <= self.delivered {
                continue;
            }
            let prev = ev.prev_kv().map(|p| self.keys.copied(p));
            let event = match ev.event_type() {
                EventType::Put => {
                    let kind = if kv.create_revision() == kv.mod_revision() {
                        EventKind::Create
                    } else {
                        EventKind::Update
                    };
                    Event {
                        kind,
                        kv: self.keys.copied(kv),
                        prev: if kind == EventKind::Create { None } else { prev },
                    }
                }
                EventType::Delete => match prev {
                    Some(prev) => Event {
                        kind: EventKind::Delete,
                        kv: KeyValue { mod_revision: kv.mod_revision(), ..prev.clone() },
                        prev: Some(prev),
                    },
                    None => {
                        // etcd omits the previous value once it is compacted away.
                        tracing::warn!(
                            key = %self.keys.decode(kv.key()),
                            revision = kv.mod_revision(),
                            "etcd delete event without its previous value"
                        );
                        Event {
                            kind: EventKind::Delete,
                            kv: KeyValue { value: Bytes::new(), ..self.keys.copied(kv) },
                            prev: None,
                        }
                    }
                },
            };
            batch.push(event);
        }
        if let Some(last) = batch.last() {
            self.delivered = last.revision();
        }
        batch
    }
}

/// Reads a created watch on the whole key space (started at `after + 1`) until it reaches
/// `upto` or has read `limit` events under `prefix`: the history of
/// [`crate::store::Backend::history`]. `upto` is the oldest revision of the watch cache's window,
/// a revision it saw an event at, so an event at or past it comes. (etcd's progress
/// notifications cannot mark the end: before v3.5 they may run ahead of a watch still
/// replaying.) The exception is a cache just loaded from an etcd whose latest revision is
/// another program's write: the read then ends at skiff's next write, or fails as unavailable
/// after the request timeout if none comes. The caller drops the watch afterwards.
pub async fn history(
    stream: WatchStream,
    keys: Keys,
    prefix: &str,
    (after, upto): (Revision, Revision),
    limit: usize,
    compacted: Arc<AtomicI64>,
) -> Result<Vec<Event>, StoreError> {
    let mut state = State { stream, keys, after, delivered: after, compacted };
    let mut out = Vec::new();
    loop {
        for event in state.next_batch().await? {
            let revision = event.revision();
            if revision > upto {
                return Ok(out);
            }
            if event.kv.key.starts_with(prefix) {
                out.push(event);
                if out.len() >= limit {
                    return Ok(out);
                }
            }
            if revision == upto {
                return Ok(out);
            }
        }
    }
}
