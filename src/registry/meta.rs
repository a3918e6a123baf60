//! Object metadata rules shared by every resource: system fields on create, what an update
//! may not change, generated names, and metadata validation.

use rand::Rng;
use serde_json::{json, Value};

use super::catalog::ResourceInfo;
use super::object::{self, meta_mut};
use super::validation::{self, NameRule};
use crate::apiserver::status::StatusCause;

/// The characters a generated name suffix is drawn from (no vowels, no look-alikes).
pub const NAME_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
/// Length of a generated name suffix.
pub const NAME_SUFFIX_LEN: usize = 5;
const MAX_GENERATED_BASE: usize = 63 - NAME_SUFFIX_LEN;

/// `base` plus a random suffix, with the base cut so the result stays at most 63 characters.
pub fn generate_name(base: &str) -> String {
    let mut rng = rand::rng();
    let base = if base.len() > MAX_GENERATED_BASE { &base[..MAX_GENERATED_BASE] } else { base };
    let suffix: String = (0..NAME_SUFFIX_LEN)
        .map(|_| NAME_ALPHABET[rng.random_range(0..NAME_ALPHABET.len())] as char)
        .collect();
    format!("{base}{suffix}")
}

/// Sets the fields the server owns on a new object: uid, creationTimestamp, generation, and
/// clears what a client may not set (deletion fields, selfLink).
pub fn init_for_create(obj: &mut Value, tracks_generation: bool) {
    let meta = meta_mut(obj);
    meta.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
    meta.insert("creationTimestamp".into(), json!(object::now_rfc3339()));
    meta.remove("deletionTimestamp");
    meta.remove("deletionGracePeriodSeconds");
    meta.remove("selfLink");
    meta.remove("resourceVersion");
    if tracks_generation {
        meta.insert("generation".into(), json!(1));
    } else {
        meta.remove("generation");
    }
}

/// Carries over to `new` what only the server sets (and what a client left empty) from `old`.
pub fn carry_over_for_update(new: &mut Value, old: &Value) {
    let old_meta = old.get("metadata").unwrap_or(&Value::Null);
    let meta = meta_mut(new);
    for field in ["uid", "creationTimestamp"] {
        let empty = meta.get(field).is_none_or(|v| v.is_null() || v.as_str() == Some(""));
        if empty {
            if let Some(v) = old_meta.get(field) {
                meta.insert(field.into(), v.clone());
            }
        }
    }
    for field in ["deletionTimestamp", "deletionGracePeriodSeconds", "generation"] {
        match old_meta.get(field) {
            Some(v) => meta.insert(field.into(), v.clone()),
            None => meta.remove(field),
        };
    }
    meta.remove("selfLink");
    if meta.get("managedFields").is_none_or(Value::is_null) {
        if let Some(mf) = old_meta.get("managedFields") {
            meta.insert("managedFields".into(), mf.clone());
        }
    }
}

/// Makes a status update's metadata match the stored object except for what status writers
/// may change (upstream resets labels, annotations, finalizers, owners and deletion fields).
pub fn reset_for_status(new: &mut Value, old: &Value) {
    let old_meta = old.get("metadata").unwrap_or(&Value::Null);
    let meta = meta_mut(new);
    for field in [
        "deletionTimestamp",
        "generation",
        "labels",
        "annotations",
        "finalizers",
        "ownerReferences",
    ] {
        match old_meta.get(field) {
            Some(v) => meta.insert(field.into(), v.clone()),
            None => meta.remove(field),
        };
    }
}

/// Whether anything but metadata and status differs (a spec change bumps generation).
pub fn spec_changed(new: &Value, old: &Value) -> bool {
    const IGNORED: [&str; 4] = ["metadata", "status", "apiVersion", "kind"];
    fn fields(v: &Value) -> Vec<(&String, &Value)> {
        let mut kept: Vec<_> = v
            .as_object()
            .map(|m| m.iter().filter(|(k, _)| !IGNORED.contains(&k.as_str())).collect())
            .unwrap_or_default();
        kept.sort_by(|a, b| a.0.cmp(b.0));
        kept
    }
    fields(new) != fields(old)
}

/// Validates metadata of a new object of `res` whose names follow `rule`.
pub fn validate_create(res: &ResourceInfo, rule: NameRule, obj: &Value) -> Vec<StatusCause> {
    let mut out = vec![];
    let name = object::name(obj);
    let generate = object::str_at(obj, "metadata.generateName").unwrap_or("");
    if name.is_empty() {
        if generate.is_empty() {
            out.push(validation::required("metadata.name", "name or generateName is required"));
        }
    } else {
        for why in rule.check(name) {
            out.push(validation::invalid("metadata.name", &Value::from(name), &why));
        }
    }
    if res.namespaced {
        let ns = object::namespace(obj);
        if ns.is_empty() {
            out.push(validation::required("metadata.namespace", ""));
        }
    }
    validate_common(obj, &mut out);
    out
}

/// Validates metadata of an update: identity fields may not change.
pub fn validate_update(new: &Value, old: &Value) -> Vec<StatusCause> {
    let mut out = vec![];
    for field in ["name", "namespace", "uid", "creationTimestamp"] {
        let path = format!("metadata.{field}");
        let n = object::path(new, &path).cloned().unwrap_or(Value::Null);
        let o = object::path(old, &path).cloned().unwrap_or(Value::Null);
        let blank = |v: &Value| v.is_null() || v.as_str() == Some("");
        if n != o && !(blank(&n) && blank(&o)) {
            out.push(validation::immutable(&path, &n));
        }
    }
    validate_common(new, &mut out);
    out
}

fn validate_common(obj: &Value, out: &mut Vec<StatusCause>) {
    validation::validate_labels(object::path(obj, "metadata.labels"), "metadata.labels", out);
    validation::validate_annotations(
        object::path(obj, "metadata.annotations"),
        "metadata.annotations",
        out,
    );
    for (i, f) in object::finalizers(obj).iter().enumerate() {
        let errs = validation::qualified_name(f);
        if !errs.is_empty() {
            out.push(validation::invalid(
                &format!("metadata.finalizers[{i}]"),
                &Value::from(f.as_str()),
                &errs.join("; "),
            ));
        }
    }
    let owners = object::path(obj, "metadata.ownerReferences").and_then(Value::as_array);
    let controllers = owners
        .map(|o| {
            o.iter().filter(|r| r.get("controller").and_then(Value::as_bool) == Some(true)).count()
        })
        .unwrap_or(0);
    if controllers > 1 {
        out.push(validation::invalid(
            "metadata.ownerReferences",
            &Value::Null,
            "Only one reference can have Controller set to true",
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_names_use_the_alphabet() {
        let n = generate_name("web-");
        assert_eq!(n.len(), 9);
        assert!(n[4..].bytes().all(|b| NAME_ALPHABET.contains(&b)));
        assert_eq!(generate_name(&"x".repeat(80)).len(), 63);
    }

    #[test]
    fn update_keeps_identity() {
        let old = json!({"metadata": {"name": "a", "uid": "u1", "creationTimestamp": "t", "generation": 4}});
        let mut new = json!({"metadata": {"name": "a", "generation": 9}});
        carry_over_for_update(&mut new, &old);
        assert_eq!(new["metadata"]["uid"], "u1");
        assert_eq!(new["metadata"]["generation"], 4);
        assert!(validate_update(&new, &old).is_empty());
        new["metadata"]["uid"] = json!("u2");
        assert_eq!(validate_update(&new, &old)[0].field, "metadata.uid");
    }

    #[test]
    fn spec_change_ignores_status_and_metadata() {
        let a = json!({"metadata": {"labels": {"a": "b"}}, "spec": {"x": 1}, "status": {"y": 1}});
        let b = json!({"metadata": {}, "spec": {"x": 1}, "status": {"y": 2}});
        assert!(!spec_changed(&a, &b));
        assert!(spec_changed(&a, &json!({"spec": {"x": 2}})));
    }
}
