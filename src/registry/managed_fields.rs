//! metadata.managedFields: which manager owns which fields. Update operations take ownership of
//! the fields they change; server-side apply makes the applied configuration the manager's
//! field set, merges it into the live object, removes fields the manager stopped applying, and
//! reports conflicts with other managers unless forced.

use std::collections::BTreeSet;

use serde_json::{json, Value};

use super::fieldpath::{self, Part, Path};
use super::object;

/// One managedFields entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub manager: String,
    pub operation: String,
    pub api_version: String,
    pub time: String,
    pub subresource: String,
    pub fields: BTreeSet<Path>,
}

/// A field another manager owns with a different value than the applied one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Conflict {
    pub manager: String,
    pub api_version: String,
    /// The field as upstream prints it (".spec.replicas").
    pub field: String,
}

/// The managedFields entries of an object (entries that do not parse are dropped).
pub fn read(obj: &Value) -> Vec<Entry> {
    let Some(list) = object::path(obj, "metadata.managedFields").and_then(Value::as_array) else {
        return vec![];
    };
    list.iter()
        .filter_map(|e| {
            Some(Entry {
                manager: e.get("manager")?.as_str()?.to_string(),
                operation: e
                    .get("operation")
                    .and_then(Value::as_str)
                    .unwrap_or("Update")
                    .to_string(),
                api_version: e
                    .get("apiVersion")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
                time: e.get("time").and_then(Value::as_str).unwrap_or_default().to_string(),
                subresource: e
                    .get("subresource")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
                fields: e.get("fieldsV1").map(fieldpath::from_fields_v1).unwrap_or_default(),
            })
        })
        .collect()
}

/// The entries an update starts from. As upstream: a request without managedFields (or with an
/// empty list) keeps the live object's, so clients that drop them (controllers' caches do) lose
/// nobody's ownership; a list of one empty entry (`[{}]`) is the explicit way to reset them.
fn entries_for_update(new: &Value, old: Option<&Value>) -> Vec<Entry> {
    let list = object::path(new, "metadata.managedFields").and_then(Value::as_array);
    let reset =
        list.is_some_and(|l| l.len() == 1 && l[0].as_object().is_some_and(|o| o.is_empty()));
    if reset {
        return vec![];
    }
    match (list.is_some_and(|l| !l.is_empty()), old) {
        (false, Some(old)) => read(old),
        _ => read(new),
    }
}

/// Writes entries back (removing the field when there are none).
pub fn write(obj: &mut Value, entries: &[Entry]) {
    let meta = object::meta_mut(obj);
    if entries.is_empty() {
        meta.remove("managedFields");
        return;
    }
    let list: Vec<Value> = entries
        .iter()
        .map(|e| {
            let mut v = json!({
                "manager": e.manager,
                "operation": e.operation,
                "apiVersion": e.api_version,
                "time": e.time,
                "fieldsType": "FieldsV1",
                "fieldsV1": fieldpath::to_fields_v1(&e.fields),
            });
            if !e.subresource.is_empty() {
                v["subresource"] = json!(e.subresource);
            }
            v
        })
        .collect();
    meta.insert("managedFields".into(), Value::from(list));
}

/// Records an Update by `manager`: it takes the fields that changed from `old` to `new`; fields
/// that disappeared leave every manager.
pub fn record_update(
    new: &mut Value,
    old: Option<&Value>,
    manager: &str,
    api_version: &str,
    subresource: &str,
) {
    let part = if subresource == "status" { Part::Status } else { Part::Main };
    let mut entries = entries_for_update(new, old);
    let new_set = fieldpath::field_set(new, part);
    let old_set = old.map(|o| fieldpath::field_set(o, part)).unwrap_or_default();
    let changed: BTreeSet<Path> = new_set
        .iter()
        .filter(|p| match old {
            None => true,
            Some(o) => !old_set.contains(*p) || fieldpath::get(o, p) != fieldpath::get(new, p),
        })
        .cloned()
        .collect();
    let removed: BTreeSet<Path> = old_set.difference(&new_set).cloned().collect();
    let is_mine =
        |e: &Entry| e.manager == manager && e.operation == "Update" && e.subresource == subresource;
    for e in entries.iter_mut() {
        e.fields.retain(|p| !removed.contains(p));
        if !is_mine(e) {
            e.fields.retain(|p| !changed.contains(p));
        }
    }
    if !changed.is_empty() {
        match entries.iter_mut().find(|e| is_mine(e)) {
            Some(e) => {
                e.fields.extend(changed);
                e.time = object::now_rfc3339();
                e.api_version = api_version.to_string();
            }
            None => entries.push(Entry {
                manager: manager.to_string(),
                operation: "Update".into(),
                api_version: api_version.to_string(),
                time: object::now_rfc3339(),
                subresource: subresource.to_string(),
                fields: changed,
            }),
        }
    }
    entries.retain(|e| !e.fields.is_empty());
    write(new, &entries);
}

/// Server-side apply of `config` by `manager` onto `live` (None: the object does not exist).
/// Returns the merged object with managedFields updated, or the conflicts.
pub fn apply(
    live: Option<&Value>,
    config: &Value,
    manager: &str,
    api_version: &str,
    subresource: &str,
    force: bool,
) -> Result<Value, Vec<Conflict>> {
    let part = if subresource == "status" { Part::Status } else { Part::Main };
    let config_set = fieldpath::field_set(config, part);
    let mut entries = live.map(read).unwrap_or_default();
    let is_mine =
        |e: &Entry| e.manager == manager && e.operation == "Apply" && e.subresource == subresource;

    let mut conflicts = vec![];
    let mut forced: BTreeSet<Path> = BTreeSet::new();
    if let Some(live) = live {
        for p in config_set.iter().filter(|p| p.last().is_some_and(|s| s != ".")) {
            let Some(current) = fieldpath::get(live, p) else {
                continue;
            };
            if Some(current) == fieldpath::get(config, p) {
                continue;
            }
            for e in entries
                .iter()
                .filter(|e| !is_mine(e) && e.manager != manager && e.fields.contains(p))
            {
                conflicts.push(Conflict {
                    manager: e.manager.clone(),
                    api_version: e.api_version.clone(),
                    field: print_path(p),
                });
                forced.insert(p.clone());
            }
        }
    }
    if !conflicts.is_empty() && !force {
        return Err(conflicts);
    }

    let previous: BTreeSet<Path> =
        entries.iter().filter(|e| is_mine(e)).flat_map(|e| e.fields.clone()).collect();
    let others: BTreeSet<Path> =
        entries.iter().filter(|e| !is_mine(e)).flat_map(|e| e.fields.clone()).collect();
    let mut merged = live.cloned().unwrap_or_else(|| json!({}));
    for p in previous.difference(&config_set) {
        let owned_elsewhere = others.iter().any(|o| o.starts_with(p) || p.starts_with(o));
        if !owned_elsewhere {
            fieldpath::remove(&mut merged, p);
        }
    }
    merge_into(&mut merged, config, "");

    for e in entries.iter_mut() {
        if !is_mine(e) {
            e.fields.retain(|p| !forced.contains(p));
        }
    }
    entries.retain(|e| !is_mine(e));
    entries.retain(|e| !e.fields.is_empty());
    if !config_set.is_empty() {
        entries.insert(
            0,
            Entry {
                manager: manager.to_string(),
                operation: "Apply".into(),
                api_version: api_version.to_string(),
                time: object::now_rfc3339(),
                subresource: subresource.to_string(),
                fields: config_set,
            },
        );
    }
    write(&mut merged, &entries);
    Ok(merged)
}

/// The message of a 409 for apply conflicts, as upstream words it.
pub fn conflict_message(conflicts: &[Conflict]) -> String {
    let n = conflicts.len();
    if n == 1 {
        let c = &conflicts[0];
        return format!(
            "Apply failed with 1 conflict: conflict with \"{}\" using {}: {}",
            c.manager, c.api_version, c.field
        );
    }
    let mut by_manager: Vec<(String, Vec<String>)> = vec![];
    for c in conflicts {
        let label = format!("\"{}\" using {}", c.manager, c.api_version);
        match by_manager.iter_mut().find(|(m, _)| *m == label) {
            Some((_, fields)) => fields.push(c.field.clone()),
            None => by_manager.push((label, vec![c.field.clone()])),
        }
    }
    let body: Vec<String> = by_manager
        .iter()
        .map(|(m, fields)| {
            format!(
                "conflicts with {m}:\n{}",
                fields.iter().map(|f| format!("- {f}")).collect::<Vec<_>>().join("\n")
            )
        })
        .collect();
    format!("Apply failed with {n} conflicts: {}", body.join("\n"))
}

/// A path as upstream prints it in conflicts: ".spec.containers[name=\"c\"].image".
pub fn print_path(p: &Path) -> String {
    let mut out = String::new();
    for step in p {
        if let Some(f) = step.strip_prefix("f:") {
            out.push('.');
            out.push_str(f);
        } else if let Some(k) = step.strip_prefix("k:") {
            let keys: Value = serde_json::from_str(k).unwrap_or_default();
            let inner: Vec<String> = keys
                .as_object()
                .map(|m| m.iter().map(|(k, v)| format!("{k}={v}")).collect())
                .unwrap_or_default();
            out.push_str(&format!("[{}]", inner.join(",")));
        }
    }
    out
}

/// Merges an applied configuration into an object: maps field by field, keyed lists item by
/// item, everything else replaced.
pub fn merge_into(target: &mut Value, config: &Value, field: &str) {
    match (target, config) {
        (Value::Object(t), Value::Object(c)) => {
            for (k, cv) in c {
                if cv.is_null() {
                    t.remove(k);
                    continue;
                }
                match t.get_mut(k) {
                    Some(tv) => merge_into(tv, cv, k),
                    None => {
                        t.insert(k.clone(), cv.clone());
                    }
                }
            }
        }
        (Value::Array(t), Value::Array(c)) => {
            let all: Vec<Value> = t.iter().chain(c.iter()).cloned().collect();
            match fieldpath::merge_keys(field, &all) {
                Some(keys) => {
                    for ci in c {
                        let step = fieldpath::key_step(ci, keys);
                        match t.iter_mut().find(|ti| fieldpath::item_matches(ti, &step)) {
                            Some(ti) => merge_into(ti, ci, ""),
                            None => t.push(ci.clone()),
                        }
                    }
                }
                None => *t = c.clone(),
            }
        }
        (t, c) => *t = c.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deploy(replicas: i64, image: &str) -> Value {
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
               "spec": {"replicas": replicas, "template": {"spec": {"containers": [{"name": "c", "image": image}]}}}})
    }

    #[test]
    fn update_takes_changed_fields_from_others() {
        let mut v1 = deploy(1, "a");
        record_update(&mut v1, None, "alice", "apps/v1", "");
        let mut v2 = v1.clone();
        v2["spec"]["replicas"] = json!(3);
        record_update(&mut v2, Some(&v1), "bob", "apps/v1", "");
        let entries = read(&v2);
        assert_eq!(entries.len(), 2);
        let replicas: Path = vec!["f:spec".into(), "f:replicas".into()];
        assert!(!entries[0].fields.contains(&replicas));
        assert!(entries[1].fields.contains(&replicas));
    }

    #[test]
    fn update_without_managed_fields_keeps_the_live_ones_and_one_empty_entry_resets() {
        let mut v1 = deploy(1, "a");
        record_update(&mut v1, None, "alice", "apps/v1", "");
        let mut v2 = v1.clone();
        object::meta_mut(&mut v2).remove("managedFields");
        v2["spec"]["replicas"] = json!(3);
        record_update(&mut v2, Some(&v1), "bob", "apps/v1", "");
        let managers: Vec<String> = read(&v2).into_iter().map(|e| e.manager).collect();
        assert_eq!(managers, ["alice", "bob"]);

        let mut v3 = v2.clone();
        object::meta_mut(&mut v3).insert("managedFields".into(), json!([{}]));
        v3["spec"]["replicas"] = json!(4);
        record_update(&mut v3, Some(&v2), "carol", "apps/v1", "");
        let managers: Vec<String> = read(&v3).into_iter().map(|e| e.manager).collect();
        assert_eq!(managers, ["carol"]);
    }

    #[test]
    fn apply_conflicts_unless_forced() {
        let mut live = deploy(1, "a");
        record_update(&mut live, None, "kubectl-edit", "apps/v1", "");
        let err = apply(Some(&live), &deploy(2, "a"), "me", "apps/v1", "", false).unwrap_err();
        assert_eq!(err.len(), 1);
        assert_eq!(
            conflict_message(&err),
            "Apply failed with 1 conflict: conflict with \"kubectl-edit\" using apps/v1: .spec.replicas"
        );
        let merged = apply(Some(&live), &deploy(2, "a"), "me", "apps/v1", "", true).unwrap();
        assert_eq!(merged["spec"]["replicas"], 2);
        let entries = read(&merged);
        assert_eq!(entries[0].manager, "me");
        assert_eq!(entries[0].operation, "Apply");
    }

    #[test]
    fn apply_removes_fields_no_longer_applied() {
        let mut cfg = deploy(1, "a");
        cfg["metadata"]["labels"] = json!({"x": "1"});
        let first = apply(None, &cfg, "me", "apps/v1", "", false).unwrap();
        assert_eq!(first["metadata"]["labels"]["x"], "1");
        let second = apply(Some(&first), &deploy(1, "b"), "me", "apps/v1", "", false).unwrap();
        assert!(second["metadata"]["labels"].get("x").is_none());
        assert_eq!(second["spec"]["template"]["spec"]["containers"][0]["image"], "b");
    }

    #[test]
    fn keyed_lists_merge_by_key() {
        let mut t =
            json!({"containers": [{"name": "a", "image": "1"}, {"name": "b", "image": "2"}]});
        merge_into(&mut t, &json!({"containers": [{"name": "b", "image": "3"}]}), "");
        assert_eq!(t["containers"][1]["image"], "3");
        assert_eq!(t["containers"][0]["image"], "1");
    }
}
