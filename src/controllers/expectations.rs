//! Expectations, as upstream's controllers keep them: after creating or deleting pods a
//! controller waits until its informer has seen those writes before it counts pods again, so a
//! stale cache never makes it create or delete twice. Expectations that are not met within
//! [`EXPECTATION_TTL`] are dropped (a missed event must not wedge the controller).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// How long an unmet expectation holds a controller back.
pub const EXPECTATION_TTL: Duration = Duration::from_secs(60);

/// Pending creations and deletions per controller key.
#[derive(Default)]
pub struct Expectations {
    inner: Mutex<HashMap<String, Pending>>,
}

struct Pending {
    /// Names of created pods not yet seen in the cache.
    adds: Vec<String>,
    /// UIDs of deleted pods still seen as active in the cache.
    deletes: Vec<String>,
    since: Instant,
}

impl Expectations {
    /// Records pods created for `key` (by name).
    pub fn expect_creations(&self, key: &str, names: Vec<String>) {
        self.pending(key).adds.extend(names);
    }

    /// Records pods deleted for `key` (by uid).
    pub fn expect_deletions(&self, key: &str, uids: Vec<String>) {
        self.pending(key).deletes.extend(uids);
    }

    fn pending(&self, key: &str) -> parking_lot::MappedMutexGuard<'_, Pending> {
        parking_lot::MutexGuard::map(self.inner.lock(), |m| {
            m.entry(key.to_string()).or_insert_with(|| Pending {
                adds: vec![],
                deletes: vec![],
                since: Instant::now(),
            })
        })
    }

    /// Whether `key` may count pods again: every created pod is in the cache (`seen(name)`) and
    /// every deleted one is gone or marked deleted (`gone(uid)`). Met expectations are cleared.
    pub fn satisfied(
        &self,
        key: &str,
        seen: impl Fn(&str) -> bool,
        gone: impl Fn(&str) -> bool,
    ) -> bool {
        let mut map = self.inner.lock();
        let Some(p) = map.get_mut(key) else { return true };
        p.adds.retain(|n| !seen(n));
        p.deletes.retain(|u| !gone(u));
        if (p.adds.is_empty() && p.deletes.is_empty()) || p.since.elapsed() > EXPECTATION_TTL {
            map.remove(key);
            return true;
        }
        false
    }

    /// Forgets everything about `key` (its object was deleted).
    pub fn clear(&self, key: &str) {
        self.inner.lock().remove(key);
    }
}
