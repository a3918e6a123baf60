//! Field paths and field sets in the fieldsV1 format managedFields use: `f:<field>` steps
//! through maps, `k:{"name":"x"}` steps to list items identified by their merge keys, and `.`
//! for a list item itself. Lists without known keys are owned as a whole.

use std::collections::BTreeSet;

use serde_json::{Map, Value};

/// One path to a leaf, as fieldsV1 steps.
pub type Path = Vec<String>;

/// Which part of an object a manager writes through: the main resource or /status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    Main,
    Status,
}

/// The leaf paths set in `obj` (identity metadata excluded; status only for `Part::Status`,
/// everything else only for `Part::Main`).
pub fn field_set(obj: &Value, part: Part) -> BTreeSet<Path> {
    let mut out = BTreeSet::new();
    let Some(map) = obj.as_object() else {
        return out;
    };
    for (k, v) in map {
        let include = match (part, k.as_str()) {
            (_, "apiVersion" | "kind") => false,
            (Part::Main, "status") => false,
            (Part::Main, _) => true,
            (Part::Status, "status") => true,
            (Part::Status, _) => false,
        };
        if !include {
            continue;
        }
        if k == "metadata" {
            if let Some(meta) = v.as_object() {
                for (mk, mv) in meta {
                    if IGNORED_METADATA.contains(&mk.as_str()) {
                        continue;
                    }
                    walk(mk, mv, &mut vec!["f:metadata".to_string(), format!("f:{mk}")], &mut out);
                }
            }
            continue;
        }
        walk(k, v, &mut vec![format!("f:{k}")], &mut out);
    }
    out
}

/// The nested fieldsV1 JSON of a set of paths.
pub fn to_fields_v1(set: &BTreeSet<Path>) -> Value {
    let mut root = Map::new();
    for path in set {
        let mut cur = &mut root;
        for step in path {
            let next = cur.entry(step.clone()).or_insert_with(|| Value::Object(Map::new()));
            if !next.is_object() {
                *next = Value::Object(Map::new());
            }
            cur = next.as_object_mut().expect("made an object");
        }
    }
    Value::Object(root)
}

/// The leaf paths of a fieldsV1 JSON document.
pub fn from_fields_v1(v: &Value) -> BTreeSet<Path> {
    fn rec(v: &Value, path: &mut Path, out: &mut BTreeSet<Path>) {
        match v.as_object() {
            Some(m) if !m.is_empty() => {
                for (k, child) in m {
                    path.push(k.clone());
                    rec(child, path, out);
                    path.pop();
                }
            }
            _ => {
                if !path.is_empty() {
                    out.insert(path.clone());
                }
            }
        }
    }
    let mut out = BTreeSet::new();
    rec(v, &mut vec![], &mut out);
    out
}

/// The value at a path ("." is the list item itself).
pub fn get<'a>(obj: &'a Value, path: &[String]) -> Option<&'a Value> {
    let mut cur = obj;
    for step in path {
        cur = step_into(cur, step)?;
    }
    Some(cur)
}

/// Removes the value at a path (for "." the whole list item). Returns whether it was there.
pub fn remove(obj: &mut Value, path: &[String]) -> bool {
    let Some((last, parents)) = path.split_last() else {
        return false;
    };
    if last == "." {
        let Some((item_step, parents)) = parents.split_last() else {
            return false;
        };
        let Some(list) = navigate_mut(obj, parents).and_then(Value::as_array_mut) else {
            return false;
        };
        let before = list.len();
        list.retain(|item| !item_matches(item, item_step));
        return list.len() != before;
    }
    let Some(parent) = navigate_mut(obj, parents) else {
        return false;
    };
    match (parent, last.strip_prefix("f:")) {
        (Value::Object(m), Some(field)) => m.remove(field).is_some(),
        _ => false,
    }
}

/// The keys that identify items of the list `field`, judging by upstream's list types; None for
/// lists owned as a whole.
pub fn merge_keys(field: &str, items: &[Value]) -> Option<&'static [&'static str]> {
    let all_have =
        |keys: &[&str]| items.iter().all(|i| keys.iter().take(1).all(|k| i.get(*k).is_some()));
    let keys: &'static [&'static str] = match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "volumes"
        | "env"
        | "imagePullSecrets"
        | "resourceClaims"
        | "schedulingGates"
        | "containerStatuses"
        | "initContainerStatuses" => &["name"],
        "ports" if items.iter().all(|i| i.get("containerPort").is_some()) => {
            &["containerPort", "protocol"]
        }
        "ports" if items.iter().all(|i| i.get("port").is_some()) => &["port", "protocol"],
        "volumeMounts" => &["mountPath"],
        "volumeDevices" => &["devicePath"],
        "conditions" => &["type"],
        "ownerReferences" => &["uid"],
        "hostAliases" | "podIPs" | "hostIPs" => &["ip"],
        "readinessGates" => &["conditionType"],
        "topologySpreadConstraints" => &["topologyKey", "whenUnsatisfiable"],
        _ => return None,
    };
    (items.iter().all(Value::is_object) && all_have(keys)).then_some(keys)
}

/// The `k:{...}` step naming `item` by `keys` (a missing protocol counts as TCP, its default).
pub fn key_step(item: &Value, keys: &[&str]) -> String {
    let mut m = Map::new();
    for k in keys {
        match item.get(*k) {
            Some(v) => {
                m.insert((*k).to_string(), v.clone());
            }
            None if *k == "protocol" => {
                m.insert("protocol".into(), Value::from("TCP"));
            }
            None => {}
        }
    }
    format!("k:{}", Value::Object(m))
}

const IGNORED_METADATA: &[&str] = &[
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "managedFields",
    "selfLink",
    "generateName",
];

fn walk(field: &str, v: &Value, path: &mut Path, out: &mut BTreeSet<Path>) {
    match v {
        Value::Null => {}
        Value::Object(m) if !m.is_empty() => {
            for (k, child) in m {
                path.push(format!("f:{k}"));
                walk(k, child, path, out);
                path.pop();
            }
        }
        Value::Array(items) if !items.is_empty() => match merge_keys(field, items) {
            Some(keys) => {
                for item in items {
                    path.push(key_step(item, keys));
                    path.push(".".into());
                    out.insert(path.clone());
                    path.pop();
                    if let Some(m) = item.as_object() {
                        for (k, child) in m {
                            path.push(format!("f:{k}"));
                            walk(k, child, path, out);
                            path.pop();
                        }
                    }
                    path.pop();
                }
            }
            None => {
                out.insert(path.clone());
            }
        },
        _ => {
            out.insert(path.clone());
        }
    }
}

fn step_into<'a>(cur: &'a Value, step: &str) -> Option<&'a Value> {
    if step == "." {
        return Some(cur);
    }
    if let Some(field) = step.strip_prefix("f:") {
        return cur.get(field);
    }
    if step.starts_with("k:") {
        return cur.as_array()?.iter().find(|item| item_matches(item, step));
    }
    None
}

fn navigate_mut<'a>(obj: &'a mut Value, path: &[String]) -> Option<&'a mut Value> {
    let mut cur = obj;
    for step in path {
        cur = if let Some(field) = step.strip_prefix("f:") {
            cur.get_mut(field)?
        } else if step.starts_with("k:") {
            cur.as_array_mut()?.iter_mut().find(|item| item_matches(item, step))?
        } else {
            return None;
        };
    }
    Some(cur)
}

/// Whether a list item has the key values a `k:{...}` step names.
pub fn item_matches(item: &Value, step: &str) -> bool {
    let Some(json) = step.strip_prefix("k:") else {
        return false;
    };
    let Ok(Value::Object(keys)) = serde_json::from_str::<Value>(json) else {
        return false;
    };
    keys.iter().all(|(k, v)| match item.get(k) {
        Some(iv) => iv == v,
        None => k == "protocol" && v == "TCP",
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn field_sets_key_named_lists() {
        let obj = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "labels": {"app": "web"}},
            "spec": {"containers": [{"name": "c", "image": "nginx", "ports": [{"containerPort": 80}]}],
                     "tolerations": [{"key": "a"}]},
            "status": {"phase": "Pending"}
        });
        let set = field_set(&obj, Part::Main);
        let fv1 = to_fields_v1(&set);
        assert_eq!(fv1["f:metadata"]["f:labels"]["f:app"], json!({}));
        let c = &fv1["f:spec"]["f:containers"]["k:{\"name\":\"c\"}"];
        assert_eq!(c["."], json!({}));
        assert_eq!(c["f:ports"]["k:{\"containerPort\":80,\"protocol\":\"TCP\"}"]["."], json!({}));
        assert_eq!(fv1["f:spec"]["f:tolerations"], json!({}));
        assert!(fv1.get("f:status").is_none());
        assert_eq!(from_fields_v1(&fv1), set);
        let status = field_set(&obj, Part::Status);
        assert_eq!(status.len(), 1);
    }

    #[test]
    fn get_and_remove_follow_keys() {
        let mut obj = json!({"spec": {"containers": [{"name": "a", "image": "x"}, {"name": "b"}]}});
        let path: Path = vec![
            "f:spec".into(),
            "f:containers".into(),
            "k:{\"name\":\"a\"}".into(),
            "f:image".into(),
        ];
        assert_eq!(get(&obj, &path), Some(&json!("x")));
        assert!(remove(&mut obj, &path));
        let item: Path =
            vec!["f:spec".into(), "f:containers".into(), "k:{\"name\":\"b\"}".into(), ".".into()];
        assert!(remove(&mut obj, &item));
        assert_eq!(obj, json!({"spec": {"containers": [{"name": "a"}]}}));
    }
}
