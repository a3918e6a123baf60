//! The in-memory key index: for every key, the revisions of its rows in the log, in order.
//!
//! It mirrors the log exactly (one version per row), so the log needs no key index on disk: a
//! group commit of writes to many different keys then dirties only the few pages at the log's
//! end instead of one index page per key. The writer reads it for its preconditions and adds
//! each write's version while it applies a batch; readers look up which row holds a key's state
//! at a revision here and fetch that row by revision. Versions above the published current
//! revision may be present (a batch being applied); readers never look above their revision.
//! Compaction removes the versions of the rows it deletes. It is rebuilt from one scan of the
//! log when the database opens.

use std::collections::BTreeMap;
use std::ops::Bound;

use rusqlite::Connection;

use crate::store::Revision;

/// One row of a key in the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Version {
    pub revision: Revision,
    /// The key's create revision; 0 marks a tombstone (revisions start at 1).
    pub create_revision: Revision,
}

impl Version {
    pub fn tombstone(revision: Revision) -> Version {
        Version { revision, create_revision: 0 }
    }

    pub fn is_tombstone(&self) -> bool {
        self.create_revision == 0
    }
}

/// A key's versions: the newest apart, so that a key written once allocates nothing more.
#[derive(Debug)]
struct History {
    newest: Version,
    /// Older versions, oldest first.
    older: Vec<Version>,
}

impl History {
    /// The newest version at or below `revision`, tombstones included.
    fn at(&self, revision: Revision) -> Option<Version> {
        if self.newest.revision <= revision {
            return Some(self.newest);
        }
        let below = self.older.partition_point(|v| v.revision <= revision);
        below.checked_sub(1).map(|i| self.older[i])
    }

    /// Removes the version at `revision`; returns false when none is left.
    fn remove(&mut self, revision: Revision) -> bool {
        if self.newest.revision == revision {
            match self.older.pop() {
                Some(v) => self.newest = v,
                None => return false,
            }
        } else if let Ok(i) = self.older.binary_search_by_key(&revision, |v| v.revision) {
            self.older.remove(i);
        }
        true
    }
}

/// Every key of the log with its versions, in key order.
#[derive(Debug, Default)]
pub struct KeyIndex {
    keys: BTreeMap<String, History>,
}

impl KeyIndex {
    /// Builds the index from the whole log, in one pass in revision order.
    pub fn load(conn: &Connection) -> rusqlite::Result<KeyIndex> {
        let mut stmt = conn
            .prepare("SELECT revision, key, create_revision, deleted FROM log ORDER BY revision")?;
        let mut rows = stmt.query([])?;
        let mut index = KeyIndex::default();
        while let Some(row) = rows.next()? {
            let revision: Revision = row.get(0)?;
            let key = row.get_ref(1)?.as_blob()?;
            let key = std::str::from_utf8(key).map_err(|e| {
                rusqlite::Error::FromSqlConversionFailure(
                    1,
                    rusqlite::types::Type::Blob,
                    Box::new(e),
                )
            })?;
            let version = if row.get::<_, bool>(3)? {
                Version::tombstone(revision)
            } else {
                Version { revision, create_revision: row.get(2)? }
            };
            index.push(key, version);
        }
        Ok(index)
    }

    /// The number of keys whose newest version is live.
    pub fn live_keys(&self) -> usize {
        self.keys.values().filter(|h| !h.newest.is_tombstone()).count()
    }

    /// The newest version of `key`, if it is live.
    pub fn live(&self, key: &str) -> Option<Version> {
        self.keys.get(key).map(|h| h.newest).filter(|v| !v.is_tombstone())
    }

    /// The version holding `key`'s state at `revision`, if the key existed then.
    pub fn at(&self, key: &str, revision: Revision) -> Option<Version> {
        self.keys.get(key)?.at(revision).filter(|v| !v.is_tombstone())
    }

    /// Adds a version newer than every version of `key`.
    pub fn push(&mut self, key: &str, version: Version) {
        match self.keys.get_mut(key) {
            Some(history) => {
                let previous = std::mem::replace(&mut history.newest, version);
                history.older.push(previous);
            }
            None => {
                self.keys.insert(key.to_owned(), History { newest: version, older: Vec::new() });
            }
        }
    }

    /// Removes the version of `key` at `revision` (a row compaction deleted).
    pub fn remove(&mut self, key: &str, revision: Revision) {
        if let Some(history) = self.keys.get_mut(key) {
            if !history.remove(revision) {
                self.keys.remove(key);
            }
        }
    }

    /// Removes the versions of `key` above `revision` (a batch that was rolled back).
    pub fn truncate_after(&mut self, key: &str, revision: Revision) {
        let Some(history) = self.keys.get_mut(key) else { return };
        while history.newest.revision > revision {
            if !history.remove(history.newest.revision) {
                self.keys.remove(key);
                return;
            }
        }
    }

    /// Keys under `prefix` that were live at `revision`, in key order, after `start_after`
    /// (exclusive) when given; at most `limit` (0 = all). Returns them and whether more remain.
    pub fn list_at(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
        revision: Revision,
    ) -> (Vec<(String, Version)>, bool) {
        let lower = match start_after {
            Some(after) if after >= prefix => Bound::Excluded(after),
            _ => Bound::Included(prefix),
        };
        let mut items = Vec::new();
        let range = self.keys.range::<str, _>((lower, Bound::Unbounded));
        for (key, history) in range.take_while(|(key, _)| key.starts_with(prefix)) {
            let Some(version) = history.at(revision).filter(|v| !v.is_tombstone()) else {
                continue;
            };
            if limit > 0 && items.len() == limit {
                return (items, true);
            }
            items.push((key.clone(), version));
        }
        (items, false)
    }
}

#[cfg(test)]
mod tests {
    use super::{KeyIndex, Version};

    fn live(revision: i64, create_revision: i64) -> Version {
        Version { revision, create_revision }
    }

    #[test]
    fn versions_at_revisions_and_their_removal() {
        let mut index = KeyIndex::default();
        index.push("/a", live(1, 1));
        index.push("/b", live(2, 2));
        index.push("/a", live(3, 1));
        index.push("/a", Version::tombstone(4));
        index.push("/a", live(5, 5));
        assert_eq!(index.at("/a", 0), None);
        assert_eq!(index.at("/a", 2), Some(live(1, 1)));
        assert_eq!(index.at("/a", 3), Some(live(3, 1)));
        assert_eq!(index.at("/a", 4), None);
        assert_eq!(index.live("/a"), Some(live(5, 5)));
        assert_eq!(index.live_keys(), 2);

        let (items, more) = index.list_at("/", None, 0, 4);
        assert_eq!(items, vec![("/b".to_string(), live(2, 2))]);
        assert!(!more);
        let (items, more) = index.list_at("/", None, 1, 5);
        assert_eq!(items, vec![("/a".to_string(), live(5, 5))]);
        assert!(more);
        let (items, _) = index.list_at("/", Some("/a"), 0, 5);
        assert_eq!(items, vec![("/b".to_string(), live(2, 2))]);
        assert!(index.list_at("/c", None, 0, 5).0.is_empty());

        // Rolling back a batch, then compacting the rest of /a's history away.
        index.truncate_after("/a", 3);
        assert_eq!(index.live("/a"), Some(live(3, 1)));
        index.remove("/a", 1);
        index.remove("/a", 3);
        assert_eq!(index.live("/a"), None);
        assert_eq!(index.live_keys(), 1);
        index.truncate_after("/b", 1);
        assert_eq!(index.live_keys(), 0);
        assert!(index.list_at("", None, 0, 10).0.is_empty());
    }
}
