//! The objects of watch events, decoded once and encoded once for all watchers.
//!
//! Every watcher of a resource turns the same store event into the same object: the stored
//! bytes decoded, converted to the served version, with resourceVersion, apiVersion and kind
//! set. Recent events keep that object (and, once a watcher asked for it, its JSON encoding) in
//! a small ring indexed by revision, so the second and later watchers of an event reuse the
//! first one's work instead of decoding and encoding the object again.

use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use parking_lot::Mutex;
use serde_json::Value;

use super::catalog::ResourceInfo;
use super::generic::decode_kv;
use crate::apiserver::status::ApiError;
use crate::store::{KeyValue, Revision};

/// Slots of the ring: watchers further behind than this many revisions decode on their own.
const SLOTS: usize = 1024;

/// An object a watch sends: shared by every watcher that sends the same event, and encoded to
/// JSON at most once.
#[derive(Clone, Debug)]
pub struct WatchObject(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    value: Value,
    json: OnceLock<Bytes>,
}

impl WatchObject {
    pub fn new(value: Value) -> Self {
        WatchObject(Arc::new(Inner { value, json: OnceLock::new() }))
    }

    pub fn value(&self) -> &Value {
        &self.0.value
    }

    /// The object's JSON encoding (made by the first caller, then shared).
    pub fn json(&self) -> Bytes {
        self.0
            .json
            .get_or_init(|| serde_json::to_vec(&self.0.value).unwrap_or_default().into())
            .clone()
    }
}

impl PartialEq for WatchObject {
    fn eq(&self, other: &Self) -> bool {
        self.0.value == other.0.value
    }
}

impl From<Value> for WatchObject {
    fn from(value: Value) -> Self {
        WatchObject::new(value)
    }
}

/// A decoded object of one revision of one key, as one resource serves it.
struct Slot {
    revision: Revision,
    /// The resource (catalog entries live for the whole process).
    resource: usize,
    key: String,
    /// The stored bytes: a revision names one value of a key, but a store replaced under a
    /// running server (a restored snapshot) could reuse revisions.
    bytes: bytes::Bytes,
    object: WatchObject,
}

/// Recently decoded event objects, shared by the watchers of a registry.
pub struct RecentObjects {
    slots: Box<[Mutex<Option<Slot>>]>,
}

impl Default for RecentObjects {
    fn default() -> Self {
        RecentObjects { slots: (0..SLOTS).map(|_| Mutex::new(None)).collect() }
    }
}

impl RecentObjects {
    /// The object of `kv` as `res` serves it: from the ring when another watcher decoded it,
    /// else decoded now and kept for the next watcher.
    pub fn decode(&self, res: &ResourceInfo, kv: &KeyValue) -> Result<WatchObject, ApiError> {
        let resource = res as *const ResourceInfo as usize;
        let slot = &self.slots[(kv.mod_revision as usize) % SLOTS];
        {
            let held = slot.lock();
            if let Some(s) = held.as_ref().filter(|s| {
                s.revision == kv.mod_revision
                    && s.resource == resource
                    && s.key == kv.key
                    && s.bytes == kv.value
            }) {
                return Ok(s.object.clone());
            }
        }
        let object = WatchObject::new(decode_kv(res, kv)?);
        *slot.lock() = Some(Slot {
            revision: kv.mod_revision,
            resource,
            key: kv.key.clone(),
            bytes: kv.value.clone(),
            object: object.clone(),
        });
        Ok(object)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::catalog::catalog;
    use serde_json::json;

    fn kv(rev: Revision, data: &str) -> KeyValue {
        let obj = json!({"metadata": {"name": "a", "namespace": "d"}, "data": {"k": data}});
        KeyValue {
            key: "/registry/core/configmaps/d/a".into(),
            value: serde_json::to_vec(&obj).unwrap().into(),
            create_revision: 1,
            mod_revision: rev,
        }
    }

    #[test]
    fn watchers_of_one_event_share_its_object_and_encoding() {
        let res = catalog().find("", "v1", "configmaps").unwrap();
        let recent = RecentObjects::default();
        let first = recent.decode(res, &kv(7, "x")).unwrap();
        let second = recent.decode(res, &kv(7, "x")).unwrap();
        assert!(Arc::ptr_eq(&first.0, &second.0), "the second watcher reuses the object");
        assert_eq!(first.value()["metadata"]["resourceVersion"], json!("7"));
        assert_eq!(first.value()["kind"], json!("ConfigMap"));
        let encoded = first.json();
        assert_eq!(serde_json::from_slice::<Value>(&encoded).unwrap(), *first.value());
        assert_eq!(second.json().as_ptr(), encoded.as_ptr(), "encoded once");
    }

    #[test]
    fn another_revision_or_resource_is_decoded_again() {
        let res = catalog().find("", "v1", "configmaps").unwrap();
        let recent = RecentObjects::default();
        let old = recent.decode(res, &kv(7, "x")).unwrap();
        // Same slot, later revision: the slot is replaced, never confused with the old one.
        let later = recent.decode(res, &kv(7 + SLOTS as Revision, "y")).unwrap();
        assert_eq!(later.value()["data"]["k"], json!("y"));
        assert_eq!(old.value()["data"]["k"], json!("x"));
        let secrets = catalog().find("", "v1", "secrets").unwrap();
        let other = recent.decode(secrets, &kv(7 + SLOTS as Revision, "y")).unwrap();
        assert_eq!(other.value()["kind"], json!("Secret"));
        // Same key and revision, other bytes (a replaced store): decoded again.
        let replaced = recent.decode(secrets, &kv(7 + SLOTS as Revision, "z")).unwrap();
        assert_eq!(replaced.value()["data"]["k"], json!("z"));
    }
}
