//! Objects as served (watch events and list items), made from the stored bytes.
//!
//! Every watcher of a resource turns the same store event into the same object: the stored
//! bytes as the served version, with resourceVersion, apiVersion and kind set. Recent events
//! keep that object in a small ring indexed by revision, so the second and later watchers of an
//! event reuse the first one's work.
//!
//! Most watchers only send the object on. For resources stored in the version they serve, the
//! JSON a watcher sends is the stored bytes with those three fields set, made without building
//! the object ([`served_json`]); the decoded object is built only when a watcher needs it (a
//! field selector, Table or metadata-only output).

use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use parking_lot::Mutex;
use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::Value;

use super::catalog::ResourceInfo;
use super::generic::decode_bytes;
use crate::apiserver::status::ApiError;
use crate::store::{KeyValue, Revision};

/// Slots of the ring: watchers further behind than this many revisions decode on their own.
const SLOTS: usize = 1024;

/// An object as served: shared by every watcher that sends the same event, encoded to JSON at
/// most once, and decoded only when a watcher or a list needs the object itself.
#[derive(Clone, Debug)]
pub struct ServedObject(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    value: OnceLock<Value>,
    json: OnceLock<Bytes>,
    /// Where `value` is decoded from when it was not given.
    stored: Option<StoredObject>,
}

#[derive(Debug)]
struct StoredObject {
    res: &'static ResourceInfo,
    bytes: Bytes,
    revision: Revision,
}

impl ServedObject {
    pub fn new(value: Value) -> Self {
        ServedObject(Arc::new(Inner {
            value: OnceLock::from(value),
            json: OnceLock::new(),
            stored: None,
        }))
    }

    /// The object of stored bytes read at `revision`: its JSON made from the bytes when the
    /// resource is stored as served, else decoded now. Fails only for bytes that are not a
    /// stored object.
    pub fn stored(
        res: &'static ResourceInfo,
        bytes: &Bytes,
        revision: Revision,
    ) -> Result<Self, ApiError> {
        let json = match res.conversion {
            None => served_json(res, bytes, revision),
            Some(_) => None,
        };
        let Some(json) = json else {
            return Ok(ServedObject::new(decode_bytes(res, bytes, revision)?));
        };
        Ok(ServedObject(Arc::new(Inner {
            value: OnceLock::new(),
            json: OnceLock::from(Bytes::from(json)),
            stored: Some(StoredObject { res, bytes: bytes.clone(), revision }),
        })))
    }

    /// The object (decoded on first use when it came from stored bytes).
    pub fn value(&self) -> &Value {
        self.0.value.get_or_init(|| match &self.0.stored {
            // The bytes made valid JSON already, so this decode does not fail.
            Some(s) => decode_bytes(s.res, &s.bytes, s.revision).unwrap_or(Value::Null),
            None => Value::Null,
        })
    }

    /// The object, taken out when no one else holds it (a list item), else copied.
    pub fn into_value(self) -> Value {
        match Arc::try_unwrap(self.0) {
            Ok(Inner { value, stored, .. }) => match (value.into_inner(), stored) {
                (Some(v), _) => v,
                (None, Some(s)) => decode_bytes(s.res, &s.bytes, s.revision).unwrap_or(Value::Null),
                (None, None) => Value::Null,
            },
            Err(shared) => ServedObject(shared).value().clone(),
        }
    }

    /// The object's JSON encoding (made by the first caller, then shared).
    pub fn json(&self) -> Bytes {
        self.0
            .json
            .get_or_init(|| serde_json::to_vec(self.value()).unwrap_or_default().into())
            .clone()
    }
}

impl PartialEq for ServedObject {
    fn eq(&self, other: &Self) -> bool {
        self.value() == other.value()
    }
}

impl From<Value> for ServedObject {
    fn from(value: Value) -> Self {
        ServedObject::new(value)
    }
}

/// The members of a JSON object in order, each value left as its JSON text.
struct Members<'a>(Vec<(&'a str, &'a RawValue)>);

impl<'de> Deserialize<'de> for Members<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct MembersVisitor;
        impl<'de> Visitor<'de> for MembersVisitor {
            type Value = Members<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Members<'de>, A::Error> {
                let mut members = Vec::with_capacity(map.size_hint().unwrap_or(8));
                while let Some(member) = map.next_entry::<&'de str, &'de RawValue>()? {
                    members.push(member);
                }
                Ok(Members(members))
            }
        }
        d.deserialize_map(MembersVisitor)
    }
}

/// Writes the members as a JSON object, with `set` replacing the value of a member of the same
/// name in place, or appended after the others when there is none: the key order
/// `serde_json::Map::insert` gives.
fn write_object(out: &mut Vec<u8>, members: &[(&str, &RawValue)], set: &[(&str, &[u8])]) {
    let mut done = vec![false; set.len()];
    out.push(b'{');
    let mut first = true;
    let mut member = |out: &mut Vec<u8>, key: &str, value: &[u8]| {
        if !first {
            out.push(b',');
        }
        first = false;
        // Keys borrowed from the input have no escapes, so this cannot fail.
        let _ = serde_json::to_writer(&mut *out, key);
        out.push(b':');
        out.extend_from_slice(value);
    };
    for (key, value) in members {
        match set.iter().position(|(k, _)| k == key) {
            Some(i) => {
                member(out, key, set[i].1);
                done[i] = true;
            }
            None => member(out, key, value.get().as_bytes()),
        }
    }
    for (i, (key, value)) in set.iter().enumerate() {
        if !done[i] {
            member(out, key, value);
        }
    }
    out.push(b'}');
}

/// The JSON of a stored object as served, made from the stored bytes without building the
/// object: exactly what encoding [`decode_bytes`]'s result gives for a resource stored in the
/// version it serves. None when the bytes are not an object with an object `metadata` whose
/// keys need no unescaping (the caller decodes then).
pub fn served_json(res: &ResourceInfo, bytes: &[u8], revision: Revision) -> Option<Vec<u8>> {
    let top: Members = serde_json::from_slice(bytes).ok()?;
    let (_, meta) = top.0.iter().find(|(k, _)| *k == "metadata")?;
    let meta: Members = serde_json::from_str(meta.get()).ok()?;
    let rv = serde_json::to_vec(&revision.to_string()).ok()?;
    let mut meta_json = Vec::with_capacity(
        meta.0.iter().map(|(k, v)| k.len() + v.get().len() + 4).sum::<usize>() + 32,
    );
    write_object(&mut meta_json, &meta.0, &[("resourceVersion", &rv)]);
    let api_version = serde_json::to_vec(&res.api_version()).ok()?;
    let kind = serde_json::to_vec(res.kind).ok()?;
    let mut out = Vec::with_capacity(bytes.len() + 64);
    write_object(
        &mut out,
        &top.0,
        &[("metadata", &meta_json), ("apiVersion", &api_version), ("kind", &kind)],
    );
    Some(out)
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
    object: ServedObject,
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
    pub fn decode(
        &self,
        res: &'static ResourceInfo,
        kv: &KeyValue,
    ) -> Result<ServedObject, ApiError> {
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
        let object = ServedObject::stored(res, &kv.value, kv.mod_revision)?;
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
pub(crate) mod tests {
    use super::*;
    use crate::registry::catalog::catalog;
    use serde_json::json;

    /// ConfigMap d/a as stored at `rev` (also the watch tests' event values).
    pub(crate) fn configmap_kv(obj: &Value, rev: Revision) -> KeyValue {
        KeyValue {
            key: "/registry/core/configmaps/d/a".into(),
            value: serde_json::to_vec(obj).unwrap().into(),
            create_revision: 1,
            mod_revision: rev,
        }
    }

    fn kv(rev: Revision, data: &str) -> KeyValue {
        configmap_kv(
            &json!({"metadata": {"name": "a", "namespace": "d"}, "data": {"k": data}}),
            rev,
        )
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
    fn served_json_is_the_encoding_of_the_decoded_object() {
        let res = catalog().find("", "v1", "configmaps").unwrap();
        let objects = [
            // As stored: no resourceVersion, apiVersion and kind first.
            json!({"apiVersion": "v1", "kind": "ConfigMap",
                   "metadata": {"name": "a", "namespace": "d", "labels": {"x": "y"}},
                   "data": {"k": "v \"quoted\" \u{e9} \u{1} \n", "n": "1"}}),
            // Kind and apiVersion missing or out of place, an old resourceVersion kept.
            json!({"metadata": {"resourceVersion": "3", "name": "a"}, "data": {}, "kind": "Old"}),
            json!({"data": {"nested": [1, 2.5, {"a": null}, true]}, "metadata": {}}),
        ];
        for obj in objects {
            let bytes = serde_json::to_vec(&obj).unwrap();
            let served = served_json(res, &bytes, 42).expect("an object with metadata");
            let decoded = decode_bytes(res, &bytes, 42).unwrap();
            assert_eq!(
                String::from_utf8(served).unwrap(),
                String::from_utf8(serde_json::to_vec(&decoded).unwrap()).unwrap()
            );
        }
        // Not an object, or no metadata object: the caller decodes instead.
        for bytes in [&b"[1]"[..], b"{\"data\": 1}", b"{\"metadata\": 1}", b"{\"metadata\": {"] {
            assert!(served_json(res, bytes, 1).is_none(), "{}", String::from_utf8_lossy(bytes));
        }
    }

    #[test]
    fn a_stored_object_is_decoded_only_when_a_watcher_needs_it() {
        let res = catalog().find("", "v1", "configmaps").unwrap();
        let recent = RecentObjects::default();
        let object = recent.decode(res, &kv(9, "x")).unwrap();
        assert!(object.0.value.get().is_none(), "sending needs only the JSON");
        let sent: Value = serde_json::from_slice(&object.json()).unwrap();
        assert_eq!(sent["metadata"]["resourceVersion"], json!("9"));
        assert_eq!(&sent, object.value(), "decoded on demand, the same object");
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
