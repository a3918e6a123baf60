//! skiff's list semantics description (`openapi/list-semantics.yaml`) against the types it
//! describes and, when a copy is at hand (`../shared/reference/kubernetes-v1.33-swagger.json`),
//! against upstream's published OpenAPI: every merge key, patch strategy, list type, map key,
//! map type and union upstream declares for a served GA type is described with the same value,
//! and nothing else is.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde_json::{Map, Value};
use skiff::registry::merge::{Semantics, TypeSchemas};

/// The extensions the description covers.
const KEYS: &[&str] = &[
    "x-kubernetes-list-map-keys",
    "x-kubernetes-list-type",
    "x-kubernetes-map-type",
    "x-kubernetes-patch-merge-key",
    "x-kubernetes-patch-strategy",
    "x-kubernetes-unions",
];

/// The packages of the served GA group-versions plus meta/v1.
const PACKAGES: &[&str] = &[
    "io.k8s.api.admissionregistration.v1",
    "io.k8s.api.apps.v1",
    "io.k8s.api.authentication.v1",
    "io.k8s.api.authorization.v1",
    "io.k8s.api.autoscaling.v1",
    "io.k8s.api.autoscaling.v2",
    "io.k8s.api.batch.v1",
    "io.k8s.api.certificates.v1",
    "io.k8s.api.coordination.v1",
    "io.k8s.api.core.v1",
    "io.k8s.api.discovery.v1",
    "io.k8s.api.events.v1",
    "io.k8s.api.flowcontrol.v1",
    "io.k8s.api.networking.v1",
    "io.k8s.api.node.v1",
    "io.k8s.api.policy.v1",
    "io.k8s.api.rbac.v1",
    "io.k8s.api.scheduling.v1",
    "io.k8s.api.storage.v1",
    "io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1",
    "io.k8s.apimachinery.pkg.apis.meta.v1",
    "io.k8s.kube-aggregator.pkg.apis.apiregistration.v1",
];

fn in_scope(type_name: &str) -> bool {
    type_name.rsplit_once('.').is_some_and(|(package, _)| PACKAGES.contains(&package))
}

/// (type, field or ".") -> the covered extensions, from a schema map.
fn covered(schema: &Map<String, Value>) -> Map<String, Value> {
    schema
        .iter()
        .filter(|(k, _)| KEYS.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

type Facts = BTreeMap<(String, String), Map<String, Value>>;

fn skiff_facts() -> Facts {
    let semantics = Semantics::get().expect("the description parses");
    let mut out = Facts::new();
    for (type_name, described) in semantics.types() {
        let own = described.own.extensions();
        if !own.is_empty() {
            out.insert((type_name.to_string(), ".".into()), own);
        }
        for (field, s) in &described.fields {
            out.insert((type_name.to_string(), field.clone()), s.extensions());
        }
    }
    out
}

fn upstream_facts(swagger: &Value) -> Facts {
    let mut out = Facts::new();
    let definitions = swagger["definitions"].as_object().expect("definitions");
    for (type_name, schema) in definitions.iter().filter(|(n, _)| in_scope(n)) {
        let Some(schema) = schema.as_object() else { continue };
        let own = covered(schema);
        if !own.is_empty() {
            out.insert((type_name.clone(), ".".into()), own);
        }
        let Some(props) = schema.get("properties").and_then(Value::as_object) else { continue };
        for (field, prop) in props {
            let Some(prop) = prop.as_object() else { continue };
            let ext = covered(prop);
            if !ext.is_empty() {
                out.insert((type_name.clone(), field.clone()), ext);
            }
        }
    }
    out
}

#[test]
fn description_names_real_types_and_fields() {
    let schemas = TypeSchemas::get();
    let mut problems = Vec::new();
    for ((type_name, field), _) in skiff_facts() {
        assert!(in_scope(&type_name), "{type_name} is outside the served packages");
        let Some(schema) = schemas.definitions.get(&type_name) else {
            problems.push(format!("{type_name}: no such schema"));
            continue;
        };
        if field != "." && schema["properties"].get(&field).is_none() {
            problems.push(format!("{type_name}.{field}: no such field"));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn description_matches_upstream_when_available() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/reference/kubernetes-v1.33-swagger.json");
    let Ok(text) = std::fs::read_to_string(&path) else {
        eprintln!("{} not present: parity with upstream not checked", path.display());
        return;
    };
    let swagger: Value = serde_json::from_str(&text).expect("swagger parses");
    let upstream = upstream_facts(&swagger);
    let ours = skiff_facts();
    let mut problems = Vec::new();
    for (key, want) in &upstream {
        match ours.get(key) {
            Some(got) if got == want => {}
            Some(got) => {
                problems.push(format!("{}.{}: skiff {got:?}, upstream {want:?}", key.0, key.1))
            }
            None => problems.push(format!("{}.{}: missing, upstream {want:?}", key.0, key.1)),
        }
    }
    for (key, got) in &ours {
        if !upstream.contains_key(key) {
            problems.push(format!("{}.{}: skiff {got:?}, upstream declares nothing", key.0, key.1));
        }
    }
    assert!(upstream.len() > 300, "suspiciously few upstream facts: {}", upstream.len());
    assert!(problems.is_empty(), "{} differences:\n{}", problems.len(), problems.join("\n"));
}
