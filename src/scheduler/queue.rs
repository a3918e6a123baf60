//! The scheduling queue, ordered as upstream's PrioritySort: the waiting pod with the highest
//! `.spec.priority` is handed out first, then the one queued earliest. Like the controllers'
//! work queue, a key waiting is queued once however often it is added, a key being scheduled
//! is not handed out again until it is done, and failures are retried with per-key
//! exponential backoff.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::Notify;

/// The first retry delay after a failure; it doubles with each further failure.
const BASE_DELAY: Duration = Duration::from_millis(5);
/// The longest retry delay.
const MAX_DELAY: Duration = Duration::from_secs(60);

/// A deduplicating priority queue of pod keys.
#[derive(Clone, Default)]
pub struct SchedulingQueue {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    state: Mutex<State>,
    notify: Notify,
}

/// Heap order: higher priority, then the earlier arrival (smaller sequence number).
type Entry = (i32, Reverse<u64>, String);

#[derive(Default)]
struct State {
    heap: BinaryHeap<Entry>,
    next_seq: u64,
    dirty: HashSet<String>,
    processing: HashSet<String>,
    failures: HashMap<String, u32>,
    /// Known pod priorities by key (unknown keys count as 0).
    priorities: HashMap<String, i32>,
}

impl State {
    fn push(&mut self, key: String) {
        let priority = self.priorities.get(&key).copied().unwrap_or(0);
        let seq = self.next_seq;
        self.next_seq += 1;
        self.heap.push((priority, Reverse(seq), key));
    }
}

impl SchedulingQueue {
    pub fn new() -> SchedulingQueue {
        SchedulingQueue::default()
    }

    /// Records the priority the pod `key` is ordered by.
    pub fn set_priority(&self, key: &str, priority: i32) {
        let mut st = self.inner.state.lock();
        if st.priorities.get(key) != Some(&priority) {
            st.priorities.insert(key.to_string(), priority);
        }
    }

    /// Drops what is recorded about `key` (the pod is gone).
    pub fn remove(&self, key: &str) {
        let mut st = self.inner.state.lock();
        st.priorities.remove(key);
        st.failures.remove(key);
    }

    /// Queues `key` unless it is already waiting.
    pub fn add(&self, key: impl Into<String>) {
        let key = key.into();
        let mut st = self.inner.state.lock();
        if !st.dirty.insert(key.clone()) {
            return;
        }
        if !st.processing.contains(&key) {
            st.push(key);
            drop(st);
            self.inner.notify.notify_one();
        }
    }

    /// Queues every key at once, so the scheduling loop picks the highest priority among them
    /// rather than whichever was added first (upstream moves unschedulable pods in one step).
    pub fn add_all(&self, keys: impl IntoIterator<Item = String>) {
        let mut st = self.inner.state.lock();
        let mut added = false;
        for key in keys {
            if st.dirty.insert(key.clone()) && !st.processing.contains(&key) {
                st.push(key);
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
    /// [`forget`]: SchedulingQueue::forget
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

    /// Waits for the highest-priority key; the caller must call [`done`] with it afterwards.
    ///
    /// [`done`]: SchedulingQueue::done
    pub async fn get(&self) -> String {
        loop {
            let notified = self.inner.notify.notified();
            {
                let mut st = self.inner.state.lock();
                if let Some((_, _, key)) = st.heap.pop() {
                    st.dirty.remove(&key);
                    st.processing.insert(key.clone());
                    let more = !st.heap.is_empty();
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

    /// Ends the scheduling of `key`; if it was added meanwhile it is queued again.
    pub fn done(&self, key: &str) {
        let mut st = self.inner.state.lock();
        st.processing.remove(key);
        if st.dirty.contains(key) {
            st.push(key.to_string());
            drop(st);
            self.inner.notify.notify_one();
        }
    }

    /// How many keys wait.
    pub fn len(&self) -> usize {
        self.inner.state.lock().heap.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn higher_priority_first_then_arrival_order() {
        let q = SchedulingQueue::new();
        q.set_priority("high", 1000);
        q.set_priority("low2", -5);
        q.add("a");
        q.add("b");
        q.add("low2");
        q.add("high");
        q.add("a");
        assert_eq!(q.len(), 4);
        assert_eq!(q.get().await, "high");
        assert_eq!(q.get().await, "a");
        q.add("a");
        assert_eq!(q.len(), 2, "a is being scheduled: not handed out twice");
        assert_eq!(q.get().await, "b");
        q.done("a");
        assert_eq!(q.get().await, "a");
        assert_eq!(q.get().await, "low2");
    }
}
