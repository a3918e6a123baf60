//! The generic registry: storage keys, reading objects back with their resourceVersion, get and
//! list (selectors, pagination, resourceVersion semantics). Writes live in `create`, `update`
//! and `delete`, watches in `watch`; all of them are methods of [`Registry`].
//!
//! Keys are `/registry/<group or "core">/<resource>/<namespace>/<name>` (cluster-scoped
//! resources have no namespace segment). Stored bytes never carry metadata.resourceVersion: it is
//! the key's mod_revision, set on every read.

use std::time::Duration;

use bytes::Bytes;
use serde_json::Value;

use super::catalog::ResourceInfo;
use super::continue_token::{ContinueToken, LATEST};
use super::object;
use super::selector::{FieldSelector, LabelSelector};
use super::served::ServedObject;
use crate::apiserver::status::{ApiError, Target};
use crate::store::{KeyValue, ListOptions, Revision, Store, StoreError};

/// The message of a 410 for a continue token whose revision has been compacted.
pub const CONTINUE_EXPIRED: &str = "The provided continue parameter is too old to display a consistent list result. \
You can start a new list without the continue parameter, or use the continue token in this response to retrieve \
the remainder of the results. Continuing with the provided token results in an inconsistent list - objects that \
were created, modified, or deleted between the time the first chunk was returned and now may show up in the list.";

/// The verbs over the store for every resource. Cheap to clone.
#[derive(Clone)]
pub struct Registry {
    pub(crate) store: Store,
    /// Objects of recent watch events, decoded once for all watchers.
    pub(crate) recent: std::sync::Arc<super::served::RecentObjects>,
}

/// What a list (or the initial state of a watch) selects.
#[derive(Clone, Debug, Default)]
pub struct ListParams {
    pub labels: LabelSelector,
    pub fields: FieldSelector,
    /// At most this many items (0: all).
    pub limit: usize,
    pub continue_token: Option<String>,
    pub resource_version: Option<String>,
    pub resource_version_match: Option<String>,
}

/// One page of a list.
#[derive(Clone, Debug, Default)]
pub struct ListResult {
    /// The objects as served: their JSON is made from the stored bytes, the objects themselves
    /// only when asked for.
    pub items: Vec<ServedObject>,
    pub revision: Revision,
    pub continue_token: Option<String>,
}

impl Registry {
    pub fn new(store: Store) -> Self {
        Registry { store, recent: Default::default() }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The key of one object.
    pub fn key(res: &ResourceInfo, namespace: Option<&str>, name: &str) -> String {
        match (res.namespaced, namespace) {
            (true, Some(ns)) => format!(
                "/registry/{}/{}/{}/{}",
                res.storage_group(),
                res.storage_resource(),
                ns,
                name
            ),
            _ => format!("/registry/{}/{}/{}", res.storage_group(), res.storage_resource(), name),
        }
    }

    /// The prefix of every object of `res` (in one namespace, when given).
    pub fn prefix(res: &ResourceInfo, namespace: Option<&str>) -> String {
        match (res.namespaced, namespace) {
            (true, Some(ns)) => {
                format!("/registry/{}/{}/{}/", res.storage_group(), res.storage_resource(), ns)
            }
            _ => format!("/registry/{}/{}/", res.storage_group(), res.storage_resource()),
        }
    }

    /// Reads one object.
    pub async fn get(
        &self,
        res: &ResourceInfo,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<Value, ApiError> {
        self.get_raw(res, namespace, name)
            .await?
            .map(|(v, _)| v)
            .ok_or_else(|| not_found(res, name))
    }

    /// Reads one object's stored bytes at the latest revision; None if absent.
    pub(crate) async fn get_kv(
        &self,
        res: &ResourceInfo,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<Option<KeyValue>, ApiError> {
        let key = Self::key(res, namespace, name);
        self.store.get(&key, None).await.map_err(|e| store_error(e, res, name))
    }

    /// Reads one object with its mod_revision; None if absent.
    pub async fn get_raw(
        &self,
        res: &ResourceInfo,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<Option<(Value, Revision)>, ApiError> {
        match self.get_kv(res, namespace, name).await? {
            Some(kv) => Ok(Some((decode_kv(res, &kv)?, kv.mod_revision))),
            None => Ok(None),
        }
    }

    /// One object as served: its JSON made from the stored bytes, the object decoded only if
    /// the response needs it (Table, metadata-only or YAML output).
    pub async fn get_served(
        &self,
        res: &'static ResourceInfo,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<ServedObject, ApiError> {
        let kv = self.get_kv(res, namespace, name).await?.ok_or_else(|| not_found(res, name))?;
        ServedObject::stored(res, &kv.value, kv.mod_revision)
    }

    /// Lists objects, honouring selectors, limit/continue and resourceVersion semantics.
    pub async fn list(
        &self,
        res: &'static ResourceInfo,
        namespace: Option<&str>,
        p: &ListParams,
    ) -> Result<ListResult, ApiError> {
        check_field_selector(res, &p.fields)?;
        let prefix = Self::prefix(res, namespace);
        let (mut revision, mut start_after) =
            match p.continue_token.as_deref().filter(|t| !t.is_empty()) {
                Some(token) => {
                    if p.resource_version.as_deref().is_some_and(|rv| !rv.is_empty() && rv != "0") {
                        return Err(ApiError::bad_request(
                            "specifying resource version is not allowed when using continue",
                        ));
                    }
                    let t = ContinueToken::decode(token)
                        .map_err(|e| ApiError::bad_request(e.to_string()))?;
                    (t.revision(), Some(format!("{prefix}{}", t.start)))
                }
                None => (self.list_revision(p).await?, None),
            };
        let mut items = vec![];
        let mut last_key: Option<String> = None;
        let mut more = false;
        let mut read_at;
        'pages: loop {
            let want = if p.limit == 0 { 0 } else { (p.limit - items.len()).max(1) };
            let opts = ListOptions { revision, start_after: start_after.clone(), limit: want };
            let page = self.store.list(&prefix, &opts).await.map_err(|e| match e {
                StoreError::TooOld { .. } if p.continue_token.is_some() => {
                    let start = start_after.as_deref().and_then(|k| k.strip_prefix(&prefix));
                    let on = ContinueToken::new(LATEST, start.unwrap_or_default());
                    ApiError::gone(CONTINUE_EXPIRED).with_continue(on.encode())
                }
                StoreError::TooOld { requested, oldest } => {
                    ApiError::gone(format!("too old resource version: {requested} ({oldest})"))
                }
                other => store_error(other, res, ""),
            })?;
            read_at = page.revision;
            revision = Some(page.revision);
            let n = page.items.len();
            for (i, kv) in page.items.iter().enumerate() {
                last_key = Some(kv.key.clone());
                if let Some(obj) = select_stored(res, kv, &p.labels, &p.fields)? {
                    items.push(obj);
                    if p.limit > 0 && items.len() >= p.limit {
                        more = i + 1 < n || page.more;
                        break 'pages;
                    }
                }
            }
            if !page.more || n == 0 {
                break;
            }
            start_after = last_key.clone();
        }
        let continue_token = match (more, last_key) {
            (true, Some(k)) => {
                Some(ContinueToken::new(read_at, k.strip_prefix(&prefix).unwrap_or(&k)).encode())
            }
            _ => None,
        };
        Ok(ListResult { items, revision: read_at, continue_token })
    }

    /// Which revision a list without a continue token reads at (None: latest, consistent).
    async fn list_revision(&self, p: &ListParams) -> Result<Option<Revision>, ApiError> {
        let rv = p.resource_version.as_deref().unwrap_or("");
        let rv_match = p.resource_version_match.as_deref().unwrap_or("");
        match (rv, rv_match) {
            ("", "") => Ok(None),
            ("", _) => Err(ApiError::bad_request(
                "resourceVersionMatch is forbidden unless resourceVersion is provided",
            )),
            ("0", "Exact") => Err(ApiError::bad_request(
                "resourceVersionMatch \"exact\" is forbidden for resourceVersion \"0\"",
            )),
            ("0", "" | "NotOlderThan") => Ok(None),
            (rv, m) => {
                let n = parse_rv(rv)?;
                match m {
                    "Exact" => Ok(Some(n)),
                    "" | "NotOlderThan" => {
                        self.wait_for_revision(n).await?;
                        Ok(None)
                    }
                    other => Err(ApiError::bad_request(format!(
                        "resourceVersionMatch: Unsupported value: \"{other}\": supported values: \"Exact\", \"NotOlderThan\""
                    ))),
                }
            }
        }
    }

    /// Waits (briefly) until the store has applied `rev`; a 504 "Too large resource version" if
    /// it does not get there.
    pub async fn wait_for_revision(&self, rev: Revision) -> Result<(), ApiError> {
        for _ in 0..30 {
            if self.store.revision() >= rev {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(too_large_rv(rev, self.store.revision()))
    }

    /// Serializes an object for storage: served form to stored form, resourceVersion dropped.
    /// The bytes are exactly as long as the encoding: they stay in the watch cache for the
    /// object's life, and the serializer's buffer grows by doubling (up to half of it unused).
    pub(crate) fn encode(res: &ResourceInfo, obj: &Value) -> Result<Bytes, ApiError> {
        let converted;
        let stored = match &res.conversion {
            Some(c) => {
                converted = (c.to_storage)(obj.clone());
                &converted
            }
            None => obj,
        };
        serde_json::to_vec(&Stored(stored))
            .map(|v| Bytes::from(v.into_boxed_slice()))
            .map_err(|e| ApiError::internal(e.to_string()))
    }
}

/// An object as stored: without metadata.resourceVersion (the revision is) and selfLink;
/// serialised from the object as it is, without a copy.
struct Stored<'a>(&'a Value);

impl serde::Serialize for Stored<'_> {
    fn serialize<S: serde::Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let Value::Object(top) = self.0 else { return self.0.serialize(ser) };
        let mut map = ser.serialize_map(Some(top.len()))?;
        for (k, v) in top {
            match (k.as_str(), v) {
                ("metadata", Value::Object(meta)) => {
                    map.serialize_entry(k, &StoredMeta(meta))?;
                }
                _ => map.serialize_entry(k, v)?,
            }
        }
        map.end()
    }
}

struct StoredMeta<'a>(&'a serde_json::Map<String, Value>);

impl serde::Serialize for StoredMeta<'_> {
    fn serialize<S: serde::Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let kept = self.0.iter().filter(|(k, _)| *k != "resourceVersion" && *k != "selfLink");
        let mut map = ser.serialize_map(None)?;
        for (k, v) in kept {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

/// Decodes a stored value: resourceVersion set from mod_revision, converted to the served form.
pub fn decode_kv(res: &ResourceInfo, kv: &KeyValue) -> Result<Value, ApiError> {
    decode_bytes(res, &kv.value, kv.mod_revision)
}

/// Decodes stored bytes read at `revision`.
pub fn decode_bytes(
    res: &ResourceInfo,
    bytes: &[u8],
    revision: Revision,
) -> Result<Value, ApiError> {
    let mut obj: Value = serde_json::from_slice(bytes).map_err(|e| {
        ApiError::internal(format!("stored {} object is not valid JSON: {e}", res.plural))
    })?;
    object::meta_mut(&mut obj).insert("resourceVersion".into(), Value::from(revision.to_string()));
    if let Some(c) = &res.conversion {
        obj = (c.from_storage)(obj);
    }
    if let Some(m) = obj.as_object_mut() {
        m.insert("apiVersion".into(), Value::from(res.api_version()));
        m.insert("kind".into(), Value::from(res.kind));
    }
    Ok(obj)
}

/// The object as served when the selectors select it. A label selector reads only the labels:
/// the object is built only for a field selector.
pub(crate) fn select_stored(
    res: &'static ResourceInfo,
    kv: &KeyValue,
    labels: &LabelSelector,
    fields: &FieldSelector,
) -> Result<Option<ServedObject>, ApiError> {
    if fields.is_empty() {
        if !labels.is_empty() && !labels_select(labels, &kv.value) {
            return Ok(None);
        }
        return ServedObject::stored(res, &kv.value, kv.mod_revision).map(Some);
    }
    let obj = decode_kv(res, kv)?;
    Ok(matches(res, &obj, labels, fields).then(|| ServedObject::new(obj)))
}

/// Whether the label selector selects stored bytes, read without decoding more than the labels
/// (conversions between served versions never change labels).
pub(crate) fn labels_select(labels: &LabelSelector, bytes: &[u8]) -> bool {
    #[derive(serde::Deserialize)]
    struct Stored {
        #[serde(default)]
        metadata: StoredMeta,
    }
    #[derive(Default, serde::Deserialize)]
    struct StoredMeta {
        #[serde(default)]
        labels: Option<std::collections::BTreeMap<String, String>>,
    }
    let Ok(stored) = serde_json::from_slice::<Stored>(bytes) else { return false };
    let all = stored.metadata.labels.unwrap_or_default();
    labels.matches(&all.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect::<Vec<_>>())
}

/// Whether an object satisfies the label and field selectors.
pub fn matches(
    res: &ResourceInfo,
    obj: &Value,
    labels: &LabelSelector,
    fields: &FieldSelector,
) -> bool {
    labels.matches_object(obj)
        && (fields.is_empty() || fields.matches(|f| Some(field_value(res, obj, f))))
}

/// The value of a selectable field of `obj`.
pub fn field_value(res: &ResourceInfo, obj: &Value, field: &str) -> String {
    match field {
        "metadata.name" => object::name(obj).to_string(),
        "metadata.namespace" => object::namespace(obj).to_string(),
        other => res.strategy.field_value(obj, other),
    }
}

/// A 400 for a field selector naming a field the resource cannot be selected by.
pub fn check_field_selector(res: &ResourceInfo, fields: &FieldSelector) -> Result<(), ApiError> {
    for r in &fields.requirements {
        let known = r.field == "metadata.name"
            || r.field == "metadata.namespace"
            || res.strategy.field_labels().contains(&r.field.as_str());
        if known {
            continue;
        }
        // Kinds with fields of their own have upstream conversion functions with this
        // wording; the rest get the generic metadata-only conversion's.
        let message = if res.strategy.field_labels().is_empty() {
            format!(
                "\"{}\" is not a known field selector: only \"metadata.name\", \"metadata.namespace\"",
                r.field
            )
        } else {
            format!("field label not supported: {}", r.field)
        };
        return Err(ApiError::bad_request(message));
    }
    Ok(())
}

/// Parses a resourceVersion query parameter.
pub fn parse_rv(rv: &str) -> Result<Revision, ApiError> {
    rv.parse::<Revision>().ok().filter(|n| *n >= 0).ok_or_else(|| {
        ApiError::bad_request(format!(
            "Invalid value: {rv:?}: resourceVersion must be a non-negative integer"
        ))
    })
}

/// The 504 for a resourceVersion newer than the store has seen.
pub fn too_large_rv(requested: Revision, current: Revision) -> ApiError {
    ApiError::from_store(
        StoreError::FutureRevision { requested, current },
        Target { group: "", resource: "", name: "" },
    )
}

/// A 404 for an object of `res`.
pub fn not_found(res: &ResourceInfo, name: &str) -> ApiError {
    ApiError::not_found(target(res, name))
}

/// The error target naming an object of `res`.
pub fn target<'a>(res: &'a ResourceInfo, name: &'a str) -> Target<'a> {
    Target { group: res.group, resource: res.plural, name }
}

/// Maps a storage error about an object of `res`.
pub fn store_error(e: StoreError, res: &ResourceInfo, name: &str) -> ApiError {
    ApiError::from_store(e, target(res, name))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::catalog::catalog;

    #[test]
    fn stored_objects_lose_resource_version_and_self_link_only() {
        let res = catalog().find("", "v1", "configmaps").unwrap();
        let obj = serde_json::json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "a", "resourceVersion": "9", "selfLink": "/x", "uid": "u"},
            "data": {"resourceVersion": "kept"},
        });
        let bytes = Registry::encode(res, &obj).unwrap();
        let stored: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(
            stored,
            serde_json::json!({
                "apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "a", "uid": "u"},
                "data": {"resourceVersion": "kept"},
            })
        );
        let back = decode_bytes(res, &bytes, 12).unwrap();
        assert_eq!(back["metadata"]["resourceVersion"], "12");
    }

    #[test]
    fn stored_bytes_hold_no_spare_capacity() {
        let res = catalog().find("", "v1", "configmaps").unwrap();
        let data: serde_json::Map<String, Value> =
            (0..100).map(|i| (format!("key{i}"), Value::from("x".repeat(i)))).collect();
        let obj = serde_json::json!({"metadata": {"name": "a"}, "data": data});
        let bytes = Registry::encode(res, &obj).unwrap();
        let len = bytes.len();
        let buffer = bytes.try_into_mut().expect("the only handle");
        assert_eq!(buffer.capacity(), len, "no unused tail is kept alive with the value");
    }
}
