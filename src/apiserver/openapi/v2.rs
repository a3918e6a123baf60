//! The OpenAPI v2 (Swagger 2.0) document at /openapi/v2, derived from the v3 documents: all
//! their schemas as `definitions` and all their paths, in v2 form. kubectl up to 1.28 loads it
//! (as protobuf) before `create`, `apply` and `explain`; newer kubectl reads v3 instead.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

use bytes::Bytes;
use serde_json::{json, Map, Value};

use super::document::{compact, documents, hash_hex};
use super::protobuf;

/// The v2 document in both encodings.
#[derive(Debug)]
pub struct SwaggerV2 {
    pub json: Bytes,
    pub protobuf: Bytes,
    /// Upper-case hex hash of the JSON form.
    pub hash: String,
}

static BUILT: OnceLock<SwaggerV2> = OnceLock::new();
/// Set when the build begins.
static STARTED: AtomicBool = AtomicBool::new(false);

/// The v2 document, built on first use.
pub fn swagger() -> &'static SwaggerV2 {
    BUILT.get_or_init(|| {
        STARTED.store(true, Ordering::Relaxed);
        let doc = build();
        let json = compact(serde_json::to_vec(&doc).unwrap_or_default());
        SwaggerV2 { hash: hash_hex(&json), protobuf: compact(protobuf::document(&doc)), json }
    })
}

/// Whether the v2 document has been built.
pub fn is_built() -> bool {
    BUILT.get().is_some()
}

/// Whether building the v2 document has begun (it may not have finished).
pub fn build_started() -> bool {
    STARTED.load(Ordering::Relaxed)
}

/// Builds the Swagger 2.0 document from the v3 documents.
pub fn build() -> Value {
    let mut definitions = Map::new();
    let mut paths = Map::new();
    for d in documents() {
        let Ok(v3) = serde_json::from_slice::<Value>(&d.body) else { continue };
        if let Some(schemas) = v3["components"]["schemas"].as_object() {
            for (name, s) in schemas {
                let converted = schema(s);
                match definitions.get_mut(name) {
                    Some(existing) => merge_kinds(existing, &converted),
                    None => {
                        definitions.insert(name.clone(), converted);
                    }
                }
            }
        }
        if let Some(items) = v3["paths"].as_object() {
            for (path, item) in items {
                paths.insert(path.clone(), path_item(item));
            }
        }
    }
    json!({
        "swagger": "2.0",
        "info": {"title": "Kubernetes", "version": "v1.33.0"},
        "paths": paths,
        "definitions": definitions,
        "securityDefinitions": {
            "BearerToken": {"type": "apiKey", "name": "authorization", "in": "header",
                            "description": "Bearer Token authentication"},
        },
        "security": [{"BearerToken": []}],
    })
}

/// Unions the group-version-kinds of a schema seen in several documents (DeleteOptions, ...).
fn merge_kinds(existing: &mut Value, other: &Value) {
    const GVK: &str = "x-kubernetes-group-version-kind";
    let Some(more) = other.get(GVK).and_then(Value::as_array) else { return };
    let Some(obj) = existing.as_object_mut() else { return };
    let list = obj.entry(GVK).or_insert_with(|| json!([]));
    if let Some(list) = list.as_array_mut() {
        for gvk in more {
            if !list.contains(gvk) {
                list.push(gvk.clone());
            }
        }
    }
}

/// A v3 schema in v2 form: `#/definitions/` references, a referencing `allOf` collapsed into
/// `$ref`, no `oneOf` or `nullable`.
pub fn schema(s: &Value) -> Value {
    match s {
        Value::Object(obj) => {
            let mut out = Map::new();
            for (k, v) in obj {
                match k.as_str() {
                    "$ref" => {
                        let target = v.as_str().unwrap_or_default();
                        let name = target.rsplit('/').next().unwrap_or_default();
                        out.insert(k.clone(), json!(format!("#/definitions/{name}")));
                    }
                    "allOf" => match v.as_array().map(Vec::as_slice) {
                        Some([only]) if only.get("$ref").is_some() => {
                            out.insert("$ref".into(), schema(only)["$ref"].clone());
                        }
                        _ => {
                            out.insert(k.clone(), schema(v));
                        }
                    },
                    "oneOf" => {
                        out.entry("type").or_insert(json!("string"));
                    }
                    "nullable" | "default" if obj.contains_key("allOf") => {}
                    "nullable" => {}
                    "properties" => {
                        let props: Map<String, Value> = v
                            .as_object()
                            .into_iter()
                            .flatten()
                            .map(|(p, ps)| (p.clone(), schema(ps)))
                            .collect();
                        out.insert(k.clone(), Value::Object(props));
                    }
                    "items" | "additionalProperties" if v.is_object() => {
                        out.insert(k.clone(), schema(v));
                    }
                    _ => {
                        out.insert(k.clone(), v.clone());
                    }
                }
            }
            Value::Object(out)
        }
        Value::Array(items) => Value::Array(items.iter().map(schema).collect()),
        other => other.clone(),
    }
}

/// A v3 path item in v2 form.
fn path_item(item: &Value) -> Value {
    let mut out = Map::new();
    let Some(obj) = item.as_object() else { return Value::Object(out) };
    for (k, v) in obj {
        match k.as_str() {
            "parameters" => {
                out.insert(k.clone(), parameters(v));
            }
            "get" | "put" | "post" | "delete" | "patch" | "head" | "options" => {
                out.insert(k.clone(), operation(v));
            }
            _ => {}
        }
    }
    Value::Object(out)
}

fn parameters(v: &Value) -> Value {
    let list = v.as_array().into_iter().flatten().map(|p| {
        let mut out = Map::new();
        for key in ["name", "in", "description", "required"] {
            if let Some(x) = p.get(key) {
                out.insert(key.into(), x.clone());
            }
        }
        if let Some(s) = p.get("schema").and_then(Value::as_object) {
            for (k, x) in s {
                out.insert(k.clone(), x.clone());
            }
        }
        Value::Object(out)
    });
    Value::Array(list.collect())
}

fn operation(op: &Value) -> Value {
    let mut out = Map::new();
    for key in ["tags", "description", "operationId"] {
        if let Some(v) = op.get(key) {
            out.insert(key.into(), v.clone());
        }
    }
    let mut params = parameters(op.get("parameters").unwrap_or(&Value::Null));
    let mut consumes = vec![json!("*/*")];
    if let Some(content) = op["requestBody"]["content"].as_object() {
        consumes = content.keys().map(|k| json!(k)).collect();
        if let Some(s) = content.values().next().and_then(|c| c.get("schema")) {
            let required = op["requestBody"]["required"].as_bool().unwrap_or(false);
            let body =
                json!({"name": "body", "in": "body", "required": required, "schema": schema(s)});
            if let Some(list) = params.as_array_mut() {
                list.insert(0, body);
            }
        }
    }
    out.insert("consumes".into(), Value::Array(consumes));
    let mut produces: Vec<Value> = Vec::new();
    let mut responses = Map::new();
    for (code, r) in op["responses"].as_object().into_iter().flatten() {
        let mut response = Map::new();
        response.insert("description".into(), r.get("description").cloned().unwrap_or(json!("")));
        if let Some(content) = r.get("content").and_then(Value::as_object) {
            for (media, c) in content {
                if !produces.contains(&json!(media)) {
                    produces.push(json!(media));
                }
                if !response.contains_key("schema") {
                    if let Some(s) = c.get("schema") {
                        response.insert("schema".into(), schema(s));
                    }
                }
            }
        }
        responses.insert(code.clone(), Value::Object(response));
    }
    out.insert("produces".into(), Value::Array(produces));
    out.insert("parameters".into(), params);
    out.insert("responses".into(), Value::Object(responses));
    out.insert("schemes".into(), json!(["https"]));
    for (k, v) in op.as_object().into_iter().flatten().filter(|(k, _)| k.starts_with("x-")) {
        out.insert(k.clone(), v.clone());
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v2_has_definitions_with_kinds_and_merge_keys() {
        let doc = build();
        let defs = &doc["definitions"];
        let deployment = &defs["io.k8s.api.apps.v1.Deployment"];
        assert_eq!(deployment["x-kubernetes-group-version-kind"][0]["kind"], "Deployment");
        assert_eq!(
            deployment["properties"]["spec"]["$ref"],
            "#/definitions/io.k8s.api.apps.v1.DeploymentSpec"
        );
        let containers = &defs["io.k8s.api.core.v1.PodSpec"]["properties"]["containers"];
        assert_eq!(containers["x-kubernetes-patch-merge-key"], "name");
        assert_eq!(containers["items"]["$ref"], "#/definitions/io.k8s.api.core.v1.Container");
        let delete = defs["io.k8s.apimachinery.pkg.apis.meta.v1.DeleteOptions"]
            ["x-kubernetes-group-version-kind"]
            .as_array()
            .map(Vec::len)
            .unwrap_or_default();
        assert!(delete > 5);
        let text = doc.to_string();
        assert!(!text.contains("#/components/"));
        let int_or_string = &defs["io.k8s.apimachinery.pkg.util.intstr.IntOrString"];
        assert!(int_or_string.get("oneOf").is_none());
        assert_eq!(int_or_string["type"], "string");
        let patch =
            &doc["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]["patch"];
        assert!(patch["consumes"]
            .as_array()
            .is_some_and(|c| c.contains(&json!("application/strategic-merge-patch+json"))));
        assert_eq!(patch["parameters"][0]["in"], "body");
        assert!(!swagger().protobuf.is_empty());
    }
}
