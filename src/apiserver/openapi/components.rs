//! `components.schemas` of one group-version's document: the schemas of its kinds, of the meta
//! types its operations use, and of everything those reference, decorated with the
//! `x-kubernetes-*` extensions kubectl reads (group-version-kind, patch merge keys and
//! strategies, list and map types).

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Map, Value};

use crate::registry::merge::schemas::REF_PREFIX;
use crate::registry::merge::{Semantics, TypeSchemas};

const META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1";

/// Meta types every document carries, with the kinds they are served as.
const META_KINDS: &[(&str, &str)] = &[
    ("APIResourceList", "APIResourceList"),
    ("DeleteOptions", "DeleteOptions"),
    ("Patch", ""),
    ("Status", "Status"),
    ("WatchEvent", "WatchEvent"),
];

/// A group-version-kind.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Gvk {
    pub group: String,
    pub version: String,
    pub kind: String,
}

impl Gvk {
    pub fn new(group: &str, version: &str, kind: &str) -> Self {
        Gvk { group: group.into(), version: version.into(), kind: kind.into() }
    }

    pub fn to_json(&self) -> Value {
        json!({"group": self.group, "kind": self.kind, "version": self.version})
    }
}

/// Builds the schemas for a document whose operations use the kinds in `kinds` (schema name
/// to the kinds it is served as).
pub fn schemas(
    group: &str,
    version: &str,
    kinds: &BTreeMap<String, BTreeSet<Gvk>>,
) -> Map<String, Value> {
    let all = TypeSchemas::get();
    let mut gvks = kinds.clone();
    for (name, kind) in META_KINDS {
        let entry = gvks.entry(format!("{META}.{name}")).or_default();
        if !kind.is_empty() {
            // Meta kinds are served in every group-version; upstream lists them under core v1
            // and under each group.
            entry.insert(Gvk::new("", "v1", kind));
            if !group.is_empty() {
                entry.insert(Gvk::new(group, version, kind));
            }
        }
    }
    let mut out = Map::new();
    for name in closure(all, gvks.keys().cloned()) {
        let Some(schema) = all.definitions.get(&name) else {
            continue;
        };
        let mut schema = normalize(&name, schema.clone());
        decorate(&name, &mut schema);
        if let (Some(set), Some(obj)) = (gvks.get(&name), schema.as_object_mut()) {
            if !set.is_empty() {
                let list: Vec<Value> = set.iter().map(Gvk::to_json).collect();
                obj.insert("x-kubernetes-group-version-kind".into(), Value::Array(list));
            }
        }
        out.insert(name, schema);
    }
    out
}

/// Every schema reachable from `roots` through references, in name order.
fn closure(all: &TypeSchemas, roots: impl Iterator<Item = String>) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    let mut todo: Vec<String> = roots.collect();
    while let Some(name) = todo.pop() {
        if !seen.insert(name.clone()) {
            continue;
        }
        if let Some(schema) = all.definitions.get(&name) {
            collect_refs(schema, &mut todo);
        }
    }
    seen
}

fn collect_refs(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("$ref", Value::String(r)) => {
                        if let Some(name) = r.strip_prefix(REF_PREFIX) {
                            out.push(name.to_string());
                        }
                    }
                    _ => collect_refs(v, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| collect_refs(v, out)),
        _ => {}
    }
}

/// Puts a few scalar types in the shape upstream's OpenAPI v3 gives them.
fn normalize(name: &str, mut schema: Value) -> Value {
    let Some(obj) = schema.as_object_mut() else {
        return schema;
    };
    match name {
        "io.k8s.apimachinery.pkg.util.intstr.IntOrString" => {
            obj.remove("x-kubernetes-int-or-string");
            obj.insert("format".into(), json!("int-or-string"));
            obj.insert("oneOf".into(), json!([{"type": "integer"}, {"type": "string"}]));
        }
        "io.k8s.apimachinery.pkg.api.resource.Quantity" => {
            obj.remove("x-kubernetes-int-or-string");
            obj.insert("oneOf".into(), json!([{"type": "string"}, {"type": "number"}]));
        }
        "io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1.JSON" => {
            obj.remove("type");
            obj.insert("x-kubernetes-preserve-unknown-fields".into(), json!(true));
        }
        _ => {}
    }
    schema
}

/// Adds the list, map and patch extensions of skiff's description to a schema.
pub fn decorate(name: &str, schema: &mut Value) {
    let Ok(semantics) = Semantics::get() else {
        return;
    };
    let Some(described) = semantics.of_type(name) else {
        return;
    };
    let Some(obj) = schema.as_object_mut() else {
        return;
    };
    obj.extend(described.own.extensions());
    let Some(props) = obj.get_mut("properties").and_then(Value::as_object_mut) else {
        return;
    };
    for (field, field_semantics) in &described.fields {
        if let Some(Value::Object(prop)) = props.get_mut(field) {
            prop.extend(field_semantics.extensions());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apps_schemas_carry_kinds_and_merge_keys() {
        let mut kinds = BTreeMap::new();
        kinds
            .entry("io.k8s.api.apps.v1.Deployment".to_string())
            .or_insert_with(BTreeSet::new)
            .insert(Gvk::new("apps", "v1", "Deployment"));
        let s = schemas("apps", "v1", &kinds);
        let deployment = &s["io.k8s.api.apps.v1.Deployment"];
        assert_eq!(
            deployment["x-kubernetes-group-version-kind"],
            json!([{"group": "apps", "kind": "Deployment", "version": "v1"}])
        );
        let containers = &s["io.k8s.api.core.v1.PodSpec"]["properties"]["containers"];
        assert_eq!(containers["x-kubernetes-patch-merge-key"], json!("name"));
        assert_eq!(containers["x-kubernetes-patch-strategy"], json!("merge"));
        assert!(s.contains_key("io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"));
        assert!(s.contains_key("io.k8s.apimachinery.pkg.apis.meta.v1.DeleteOptions"));
        let text = serde_json::to_string(&s).expect("json");
        for r in text.split("\"$ref\":\"").skip(1) {
            let target = r.split('"').next().unwrap_or_default();
            let name = target.strip_prefix(REF_PREFIX).expect("component ref");
            assert!(s.contains_key(name), "dangling {target}");
        }
    }
}
