//! The scheduling queue, ordered as upstream's PrioritySort: the waiting pod with the highest
//! `.spec.priority` is handed out first, then the one queued earliest. It is the controllers'
//! work queue ([`KeyQueue`]: deduplication, one scheduling per key at a time, per-key backoff)
//! with a priority order for its waiting keys.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

use crate::controllers::queue::{KeyQueue, Waiting};

/// A deduplicating priority queue of pod keys.
pub type SchedulingQueue = KeyQueue<ByPriority>;

/// Heap order: higher priority, then the earlier arrival (smaller sequence number).
type Entry = (i32, Reverse<u64>, String);

/// Waiting pod keys by priority, then arrival.
#[derive(Default)]
pub struct ByPriority {
    heap: BinaryHeap<Entry>,
    next_seq: u64,
    /// Known pod priorities by key (unknown keys count as 0).
    priorities: HashMap<String, i32>,
}

impl Waiting for ByPriority {
    fn push(&mut self, key: String) {
        let priority = self.priorities.get(&key).copied().unwrap_or(0);
        let seq = self.next_seq;
        self.next_seq += 1;
        self.heap.push((priority, Reverse(seq), key));
    }

    fn pop(&mut self) -> Option<String> {
        self.heap.pop().map(|(_, _, key)| key)
    }

    fn len(&self) -> usize {
        self.heap.len()
    }
}

impl KeyQueue<ByPriority> {
    /// Records the priority the pod `key` is ordered by.
    pub fn set_priority(&self, key: &str, priority: i32) {
        self.with_waiting(|w| {
            if w.priorities.get(key) != Some(&priority) {
                w.priorities.insert(key.to_string(), priority);
            }
        });
    }

    /// Drops what is recorded about `key` (the pod is gone).
    pub fn remove(&self, key: &str) {
        self.with_waiting(|w| w.priorities.remove(key));
        self.forget(key);
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
