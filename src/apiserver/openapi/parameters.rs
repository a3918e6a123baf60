//! The pieces operations are made of: query and path parameters per verb, request bodies and
//! responses, and references to component schemas.

use serde_json::{json, Map, Value};

use crate::registry::merge::schemas::REF_PREFIX;

pub const META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1";

pub fn api_version(group: &str, version: &str) -> String {
    if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    }
}

pub fn schema_ref(name: &str) -> Value {
    json!({"$ref": format!("{REF_PREFIX}{name}")})
}

pub fn status_ref() -> Value {
    schema_ref(&format!("{META}.Status"))
}

pub fn body(schema: &Value) -> Value {
    json!({"content": {"*/*": {"schema": schema}}, "required": true})
}

pub fn delete_body() -> Value {
    json!({"content": {"*/*": {"schema": schema_ref(&format!("{META}.DeleteOptions"))}}})
}

pub fn patch_body() -> Value {
    let patch = schema_ref(&format!("{META}.Patch"));
    json!({
        "content": {
            "application/apply-patch+yaml": {"schema": patch},
            "application/json-patch+json": {"schema": patch},
            "application/merge-patch+json": {"schema": patch},
            "application/strategic-merge-patch+json": {"schema": patch},
        },
        "required": true,
    })
}

pub fn responses(codes: &[(&str, &str)], schema: Option<&Value>, stream: bool) -> Value {
    let mut out = Map::new();
    for (code, description) in codes {
        let mut response = Map::new();
        response.insert("description".into(), json!(description));
        if let Some(schema) = schema {
            let mut content = Map::new();
            for media in ["application/json", "application/yaml"] {
                content.insert(media.into(), json!({"schema": schema}));
            }
            if stream {
                content.insert("application/json;stream=watch".into(), json!({"schema": schema}));
            }
            response.insert("content".into(), Value::Object(content));
        }
        out.insert((*code).into(), Value::Object(response));
    }
    out.insert("401".into(), json!({"description": "Unauthorized"}));
    Value::Object(out)
}

pub fn path_param(name: &str, description: &str) -> Value {
    json!({"name": name, "in": "path", "description": description, "required": true, "schema": {"type": "string", "uniqueItems": true}})
}

pub fn query(name: &str, kind: &str, description: &str) -> Value {
    let schema = match kind {
        "integer" => json!({"type": "integer", "uniqueItems": true}),
        other => json!({"type": other, "uniqueItems": true}),
    };
    json!({"name": name, "in": "query", "description": description, "schema": schema})
}

pub fn with_pretty(mut params: Vec<Value>) -> Vec<Value> {
    params.push(query("pretty", "string", "If 'true', the output is pretty printed."));
    params
}

pub fn dry_run() -> Value {
    query("dryRun", "string", "When present, the request is processed but nothing is persisted. The only valid value is All.")
}

pub fn field_manager() -> Value {
    query(
        "fieldManager",
        "string",
        "The name of the actor making these changes, recorded in managedFields.",
    )
}

pub fn field_validation() -> Value {
    query("fieldValidation", "string", "How to treat unknown or duplicate fields in the request body: Ignore (drop them), Warn (drop them with a warning header; the default) or Strict (reject the request).")
}

pub fn write_params() -> Vec<Value> {
    vec![dry_run(), field_manager(), field_validation()]
}

pub fn patch_params() -> Vec<Value> {
    vec![
        dry_run(),
        field_manager(),
        field_validation(),
        query("force", "boolean", "Apply requests only: take ownership of fields other managers own instead of failing with a conflict."),
    ]
}

pub fn selector_params() -> Vec<Value> {
    vec![
        query("continue", "string", "The continue token of a previous paginated list response."),
        query("fieldSelector", "string", "Restricts the result to objects whose fields match."),
        query("labelSelector", "string", "Restricts the result to objects whose labels match."),
        query(
            "limit",
            "integer",
            "The maximum number of objects to return; more can be fetched with the continue token.",
        ),
        query(
            "resourceVersion",
            "string",
            "The resource version the request is served at (see resourceVersionMatch).",
        ),
        query(
            "resourceVersionMatch",
            "string",
            "How resourceVersion applies: Exact or NotOlderThan.",
        ),
        query(
            "sendInitialEvents",
            "boolean",
            "With watch: first send synthetic ADDED events for the current state, then a bookmark.",
        ),
        query("timeoutSeconds", "integer", "A time limit for the call, whatever its activity."),
    ]
}

pub fn list_params() -> Vec<Value> {
    let mut params = vec![query(
        "allowWatchBookmarks",
        "boolean",
        "With watch: the client accepts BOOKMARK events.",
    )];
    params.extend(selector_params());
    params.push(query(
        "watch",
        "boolean",
        "Watch for changes instead of listing, as a stream of events.",
    ));
    params
}

pub fn delete_params() -> Vec<Value> {
    vec![
        dry_run(),
        query(
            "gracePeriodSeconds",
            "integer",
            "Seconds before the object is deleted; zero deletes immediately.",
        ),
        query(
            "ignoreStoreReadErrorWithClusterBreakingPotential",
            "boolean",
            "Delete an object that cannot be read from storage. Unsafe.",
        ),
        query("orphanDependents", "boolean", "Deprecated: use propagationPolicy."),
        query(
            "propagationPolicy",
            "string",
            "Whether and how dependents are garbage collected: Orphan, Background or Foreground.",
        ),
    ]
}

pub fn deletecollection_params() -> Vec<Value> {
    let mut params = delete_params();
    params.extend(selector_params());
    params
}

pub fn log_params() -> Vec<Value> {
    vec![
        query(
            "container",
            "string",
            "The container to read logs of; optional when the pod has one container.",
        ),
        query("follow", "boolean", "Stream the log."),
        query(
            "insecureSkipTLSVerifyBackend",
            "boolean",
            "Do not verify the serving certificate of the backend.",
        ),
        query("limitBytes", "integer", "Stop after this many bytes."),
        query("previous", "boolean", "The log of the previous terminated container."),
        query("sinceSeconds", "integer", "Only lines newer than this many seconds."),
        query("sinceTime", "string", "Only lines newer than this RFC 3339 time."),
        query("stream", "string", "All, Stdout or Stderr."),
        query("tailLines", "integer", "Only this many lines from the end."),
        query("timestamps", "boolean", "Prefix each line with its timestamp."),
    ]
}
