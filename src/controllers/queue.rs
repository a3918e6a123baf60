//! A work queue of object keys, as client-go's: a key waiting to be processed is queued once
//! however often it is added; a key being processed is not handed to a second worker but is
//! queued again when its worker is done; failures are retried with per-key exponential backoff.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::Notify;

/// The first retry delay after a failure; it doubles with each further failure.
const BASE_DELAY: Duration = Duration::from_millis(5);
/// The longest retry delay.
const MAX_DELAY: Duration = Duration::from_secs(60);

/// A deduplicating queue of keys shared by an informer's handlers and a controller's workers.
#[derive(Clone, Default)]
pub struct WorkQueue {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    state: Mutex<State>,
    notify: Notify,
}

#[derive(Default)]
struct State {
    queue: VecDeque<String>,
    dirty: HashSet<String>,
    processing: HashSet<String>,
    failures: HashMap<String, u32>,
}

impl WorkQueue {
    pub fn new() -> WorkQueue {
        WorkQueue::default()
    }

    /// Queues `key` unless it is already waiting.
    pub fn add(&self, key: impl Into<String>) {
        let key = key.into();
        let mut st = self.inner.state.lock();
        if !st.dirty.insert(key.clone()) {
            return;
        }
        if !st.processing.contains(&key) {
            st.queue.push_back(key);
            drop(st);
            self.inner.notify.notify_one();
        }
    }

    /// Queues `key` after `delay`.
    pub fn add_after(&self, key: impl Into<String>, delay: Duration) {
        let key = key.into();
        if delay.is_zero() {
            return self.add(key);
        }
        let q = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            q.add(key);
        });
    }

    /// Queues `key` after its backoff, which grows with each failure until [`forget`] is called.
    ///
    /// [`forget`]: WorkQueue::forget
    pub fn add_rate_limited(&self, key: impl Into<String>) {
        let key = key.into();
        let failures = {
            let mut st = self.inner.state.lock();
            let n = st.failures.entry(key.clone()).or_insert(0);
            *n = n.saturating_add(1);
            *n
        };
        let delay = BASE_DELAY.saturating_mul(1u32 << failures.saturating_sub(1).min(20));
        self.add_after(key, delay.min(MAX_DELAY));
    }

    /// Clears the failure count of `key`.
    pub fn forget(&self, key: &str) {
        self.inner.state.lock().failures.remove(key);
    }

    /// How many times `key` has failed since it was last forgotten.
    pub fn failures(&self, key: &str) -> u32 {
        self.inner.state.lock().failures.get(key).copied().unwrap_or(0)
    }

    /// Waits for the next key; the caller must call [`done`] with it afterwards.
    ///
    /// [`done`]: WorkQueue::done
    pub async fn get(&self) -> String {
        loop {
            let notified = self.inner.notify.notified();
            {
                let mut st = self.inner.state.lock();
                if let Some(key) = st.queue.pop_front() {
                    st.dirty.remove(&key);
                    st.processing.insert(key.clone());
                    let more = !st.queue.is_empty();
                    drop(st);
                    if more {
                        self.inner.notify.notify_one();
                    }
                    return key;
                }
            }
            notified.await;
        }
    }

    /// Ends the processing of `key`; if it was added meanwhile it is queued again.
    pub fn done(&self, key: &str) {
        let mut st = self.inner.state.lock();
        st.processing.remove(key);
        if st.dirty.contains(key) {
            st.queue.push_back(key.to_string());
            drop(st);
            self.inner.notify.notify_one();
        }
    }

    /// How many keys wait.
    pub fn len(&self) -> usize {
        self.inner.state.lock().queue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn keys_are_deduplicated_and_requeued_after_processing() {
        let q = WorkQueue::new();
        q.add("a");
        q.add("a");
        q.add("b");
        assert_eq!(q.len(), 2);
        let k = q.get().await;
        assert_eq!(k, "a");
        q.add("a");
        assert_eq!(q.len(), 1, "a is being processed: not handed out twice");
        q.done("a");
        assert_eq!(q.get().await, "b");
        assert_eq!(q.get().await, "a");
    }
}
