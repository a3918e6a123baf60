//! A work queue of object keys, as client-go's: a key waiting to be processed is queued once
//! however often it is added; a key being processed is not handed to a second worker but is
//! queued again when its worker is done; failures are retried with per-key exponential backoff.
//! The order in which waiting keys are handed out is the queue's [`Waiting`] type: arrival
//! order ([`Fifo`], the controllers' [`WorkQueue`]) or the scheduler's priority order.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::Notify;

/// The first retry delay after a failure; it doubles with each further failure.
const BASE_DELAY: Duration = Duration::from_millis(5);
/// The longest retry delay.
const MAX_DELAY: Duration = Duration::from_secs(60);

/// The keys waiting to be handed out, in the order they will be: each key is pushed at most
/// once while it waits (the queue deduplicates).
pub trait Waiting: Default + Send + 'static {
    fn push(&mut self, key: String);
    fn pop(&mut self) -> Option<String>;
    fn len(&self) -> usize;

    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Arrival order.
#[derive(Default)]
pub struct Fifo(VecDeque<String>);

impl Waiting for Fifo {
    fn push(&mut self, key: String) {
        self.0.push_back(key);
    }

    fn pop(&mut self) -> Option<String> {
        self.0.pop_front()
    }

    fn len(&self) -> usize {
        self.0.len()
    }
}

/// A deduplicating queue of keys shared by an informer's handlers and a controller's workers.
pub type WorkQueue = KeyQueue<Fifo>;

/// A deduplicating queue of keys handed out in the order of `W`.
pub struct KeyQueue<W> {
    inner: Arc<Inner<W>>,
}

impl<W> Clone for KeyQueue<W> {
    fn clone(&self) -> Self {
        KeyQueue { inner: self.inner.clone() }
    }
}

impl<W: Waiting> Default for KeyQueue<W> {
    fn default() -> Self {
        KeyQueue { inner: Arc::default() }
    }
}

#[derive(Default)]
struct Inner<W> {
    state: Mutex<State<W>>,
    notify: Notify,
}

#[derive(Default)]
struct State<W> {
    waiting: W,
    dirty: HashSet<String>,
    processing: HashSet<String>,
    failures: HashMap<String, u32>,
}

impl<W: Waiting> KeyQueue<W> {
    pub fn new() -> Self {
        Self::default()
    }

    /// Runs `f` on the waiting keys' order under the queue's lock (for an order that keeps
    /// per-key state, such as priorities).
    pub fn with_waiting<R>(&self, f: impl FnOnce(&mut W) -> R) -> R {
        f(&mut self.inner.state.lock().waiting)
    }

    /// Queues `key` unless it is already waiting.
    pub fn add(&self, key: impl Into<String>) {
        self.add_all([key.into()]);
    }

    /// Queues every key under one lock, so an ordered queue hands out the first among all of
    /// them rather than whichever was added first.
    pub fn add_all(&self, keys: impl IntoIterator<Item = String>) {
        let mut st = self.inner.state.lock();
        let mut added = false;
        for key in keys {
            if st.dirty.insert(key.clone()) && !st.processing.contains(&key) {
                st.waiting.push(key);
                added = true;
            }
        }
        drop(st);
        if added {
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
    /// [`forget`]: KeyQueue::forget
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
    /// [`done`]: KeyQueue::done
    pub async fn get(&self) -> String {
        loop {
            let notified = self.inner.notify.notified();
            {
                let mut st = self.inner.state.lock();
                if let Some(key) = st.waiting.pop() {
                    st.dirty.remove(&key);
                    st.processing.insert(key.clone());
                    let more = !st.waiting.is_empty();
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
            st.waiting.push(key.to_string());
            drop(st);
            self.inner.notify.notify_one();
        }
    }

    /// How many keys wait.
    pub fn len(&self) -> usize {
        self.inner.state.lock().waiting.len()
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

    #[tokio::test]
    async fn failures_back_off_until_forgotten() {
        let q = WorkQueue::new();
        q.add_rate_limited("a");
        q.add_rate_limited("a");
        assert_eq!(q.failures("a"), 2);
        assert_eq!(q.get().await, "a", "queued again after its backoff");
        q.forget("a");
        assert_eq!(q.failures("a"), 0);
    }
}
