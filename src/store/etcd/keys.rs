//! Mapping between skiff's keys and etcd's: every skiff key lives under one fixed prefix.

use bytes::Bytes;

use crate::store::{prefix_end, KeyValue};

/// Encodes skiff keys into etcd keys under `prefix` and decodes them back.
#[derive(Clone, Debug)]
pub struct Keys {
    prefix: Vec<u8>,
}

impl Keys {
    pub fn new(prefix: &str) -> Keys {
        Keys { prefix: prefix.as_bytes().to_vec() }
    }

    /// The prefix itself (the first etcd key skiff may own).
    pub fn prefix(&self) -> &[u8] {
        &self.prefix
    }

    /// The etcd key for a skiff key.
    pub fn encode(&self, key: &str) -> Vec<u8> {
        let mut k = Vec::with_capacity(self.prefix.len() + key.len());
        k.extend_from_slice(&self.prefix);
        k.extend_from_slice(key.as_bytes());
        k
    }

    /// The etcd key just after a skiff key (where an exclusive scan resumes).
    pub fn encode_after(&self, key: &str) -> Vec<u8> {
        let mut k = self.encode(key);
        k.push(0);
        k
    }

    /// The skiff key for an etcd key under the prefix. Keys that are not UTF-8 (never
    /// written by skiff) are decoded lossily, with a warning.
    pub fn decode(&self, key: &[u8]) -> String {
        let rest = key.strip_prefix(self.prefix.as_slice()).unwrap_or(key);
        match std::str::from_utf8(rest) {
            Ok(s) => s.to_string(),
            Err(_) => {
                let lossy = String::from_utf8_lossy(rest).into_owned();
                tracing::warn!(key = %lossy, "etcd key under the prefix is not utf-8");
                lossy
            }
        }
    }

    /// Converts an etcd key-value pair, moving its value.
    pub fn owned(&self, kv: etcd_client::KeyValue) -> KeyValue {
        let (create_revision, mod_revision) = (kv.create_revision(), kv.mod_revision());
        let (key, value) = kv.into_key_value();
        KeyValue {
            key: self.decode(&key),
            value: Bytes::from(value),
            create_revision,
            mod_revision,
        }
    }

    /// Converts a borrowed etcd key-value pair, copying its value.
    pub fn copied(&self, kv: &etcd_client::KeyValue) -> KeyValue {
        KeyValue {
            key: self.decode(kv.key()),
            value: Bytes::copy_from_slice(kv.value()),
            create_revision: kv.create_revision(),
            mod_revision: kv.mod_revision(),
        }
    }
}

/// The end of the range of keys starting with `start` ("\0", etcd's "to the end of the
/// keyspace", when no key bounds it).
pub fn range_end(start: &[u8]) -> Vec<u8> {
    prefix_end(start).unwrap_or_else(|| vec![0])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_under_the_prefix() {
        let keys = Keys::new("/skiff");
        assert_eq!(keys.encode("/registry/pods/a"), b"/skiff/registry/pods/a");
        assert_eq!(keys.encode_after("/a"), b"/skiff/a\0");
        assert_eq!(keys.decode(b"/skiff/registry/pods/a"), "/registry/pods/a");
        assert_eq!(keys.decode(b"/skiff/\xff"), "/\u{fffd}");
        let none = Keys::new("");
        assert_eq!(none.encode("/a"), b"/a");
        assert_eq!(none.decode(b"/a"), "/a");
    }

    #[test]
    fn range_end_covers_the_keyspace_without_a_bound() {
        assert_eq!(range_end(b"/skiff"), b"/skifg");
        assert_eq!(range_end(b""), vec![0]);
        assert_eq!(range_end(b"\xff"), vec![0]);
    }
}
