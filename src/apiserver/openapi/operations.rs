//! The `paths` of one group-version's document: for each resource its collection, item,
//! all-namespaces, watch and subresource paths, with operations named and tagged as upstream
//! names them, carrying `x-kubernetes-action` and `x-kubernetes-group-version-kind`, the query
//! parameters each verb accepts, and the request and response bodies.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Map, Value};

use super::components::Gvk;
use super::resources::{Served, ServedSub};
use crate::registry::merge::schemas::REF_PREFIX;
use crate::registry::merge::TypeSchemas;

const META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1";

/// Collects paths and the schemas (with their kinds) the operations use.
pub struct PathsBuilder {
    group: String,
    version: String,
    pub paths: Map<String, Value>,
    /// Schema name to the kinds it is served as.
    pub kinds: BTreeMap<String, BTreeSet<Gvk>>,
}

impl PathsBuilder {
    pub fn new(group: &str, version: &str) -> Self {
        let mut builder = PathsBuilder {
            group: group.into(),
            version: version.into(),
            paths: Map::new(),
            kinds: BTreeMap::new(),
        };
        let root = format!("{}/", builder.base());
        let op = json!({
            "tags": [builder.tag()],
            "description": "get available resources",
            "operationId": format!("get{}APIResources", builder.prefix()),
            "responses": responses(&[("200", "OK")], Some(&schema_ref(&format!("{META}.APIResourceList"))), false),
        });
        builder.paths.insert(root, json!({"get": op}));
        builder
    }

    /// Adds every path of one resource.
    pub fn add(&mut self, r: &Served) {
        let schemas = TypeSchemas::get();
        let api_version = api_version(r.group, r.version);
        let Some(type_name) = schemas.root_type(&api_version, r.kind).map(str::to_string) else {
            return;
        };
        let gvk = Gvk::new(r.group, r.version, r.kind);
        self.note(&type_name, gvk.clone());
        let list_type = format!("{type_name}List");
        let list_kind = format!("{}List", r.kind);
        let has_list = r.verbs.contains(&"list") && schemas.definitions.contains_key(&list_type);
        if has_list {
            self.note(&list_type, Gvk::new(r.group, r.version, &list_kind));
        }
        let ns = if r.namespaced { "Namespaced" } else { "" };
        let ns_path = if r.namespaced {
            "/namespaces/{namespace}"
        } else {
            ""
        };
        let base = self.base();
        let collection = format!("{base}{ns_path}/{}", r.plural);
        let item = format!("{collection}/{{name}}");
        let kind = r.kind;
        let this = schema_ref(&type_name);
        let mut scope_params = Vec::new();
        if r.namespaced {
            scope_params.push(path_param(
                "namespace",
                "object name and auth scope, such as for teams and projects",
            ));
        }
        let verb = |v: &str| r.verbs.contains(&v);

        // The collection.
        let mut ops = Map::new();
        if has_list {
            ops.insert(
                "get".into(),
                self.op(
                    &format!("list{}{ns}{kind}", self.prefix()),
                    "list",
                    &gvk,
                    &format!("list or watch objects of kind {kind}"),
                    list_params(),
                    None,
                    responses(&[("200", "OK")], Some(&schema_ref(&list_type)), true),
                ),
            );
        }
        if verb("create") {
            ops.insert(
                "post".into(),
                self.op(
                    &format!("create{}{ns}{kind}", self.prefix()),
                    "post",
                    &gvk,
                    &format!("create a {kind}"),
                    write_params(),
                    Some(body(&this)),
                    responses(
                        &[("200", "OK"), ("201", "Created"), ("202", "Accepted")],
                        Some(&this),
                        false,
                    ),
                ),
            );
        }
        if verb("deletecollection") {
            ops.insert(
                "delete".into(),
                self.op(
                    &format!("delete{}Collection{ns}{kind}", self.prefix()),
                    "deletecollection",
                    &gvk,
                    &format!("delete collection of {kind}"),
                    deletecollection_params(),
                    Some(delete_body()),
                    responses(&[("200", "OK")], Some(&status_ref()), false),
                ),
            );
        }
        self.insert(&collection, ops, with_pretty(scope_params.clone()));

        // One object.
        let mut item_params = vec![path_param("name", &format!("name of the {kind}"))];
        item_params.extend(scope_params.clone());
        let mut ops = Map::new();
        if verb("get") {
            ops.insert(
                "get".into(),
                self.op(
                    &format!("read{}{ns}{kind}", self.prefix()),
                    "get",
                    &gvk,
                    &format!("read the specified {kind}"),
                    Vec::new(),
                    None,
                    responses(&[("200", "OK")], Some(&this), false),
                ),
            );
        }
        if verb("update") {
            ops.insert(
                "put".into(),
                self.op(
                    &format!("replace{}{ns}{kind}", self.prefix()),
                    "put",
                    &gvk,
                    &format!("replace the specified {kind}"),
                    write_params(),
                    Some(body(&this)),
                    responses(&[("200", "OK"), ("201", "Created")], Some(&this), false),
                ),
            );
        }
        if verb("patch") {
            ops.insert(
                "patch".into(),
                self.op(
                    &format!("patch{}{ns}{kind}", self.prefix()),
                    "patch",
                    &gvk,
                    &format!("partially update the specified {kind}"),
                    patch_params(),
                    Some(patch_body()),
                    responses(&[("200", "OK"), ("201", "Created")], Some(&this), false),
                ),
            );
        }
        if verb("delete") {
            ops.insert(
                "delete".into(),
                self.op(
                    &format!("delete{}{ns}{kind}", self.prefix()),
                    "delete",
                    &gvk,
                    &format!("delete a {kind}"),
                    delete_params(),
                    Some(delete_body()),
                    responses(
                        &[("200", "OK"), ("202", "Accepted")],
                        Some(&status_ref()),
                        false,
                    ),
                ),
            );
        }
        self.insert(&item, ops, with_pretty(item_params.clone()));

        // Across namespaces, and the deprecated watch paths.
        if has_list && r.namespaced {
            let mut ops = Map::new();
            ops.insert(
                "get".into(),
                self.op(
                    &format!("list{}{kind}ForAllNamespaces", self.prefix()),
                    "list",
                    &gvk,
                    &format!("list or watch objects of kind {kind}"),
                    list_params(),
                    None,
                    responses(&[("200", "OK")], Some(&schema_ref(&list_type)), true),
                ),
            );
            self.insert(
                &format!("{base}/{}", r.plural),
                ops,
                with_pretty(Vec::new()),
            );
        }
        if verb("watch") {
            let event = schema_ref(&format!("{META}.WatchEvent"));
            let watch = |b: &Self, id: String, action: &str, what: String| {
                b.op(
                    &id,
                    action,
                    &gvk,
                    &what,
                    list_params(),
                    None,
                    responses(&[("200", "OK")], Some(&event), true),
                )
            };
            let p = self.prefix();
            let mut ops = Map::new();
            ops.insert(
                "get".into(),
                watch(
                    self,
                    format!("watch{p}{ns}{kind}List"),
                    "watchlist",
                    format!("watch individual changes to a list of {kind}"),
                ),
            );
            self.insert(
                &format!("{base}/watch{ns_path}/{}", r.plural),
                ops,
                with_pretty(scope_params.clone()),
            );
            let mut ops = Map::new();
            ops.insert(
                "get".into(),
                watch(
                    self,
                    format!("watch{p}{ns}{kind}"),
                    "watch",
                    format!("watch changes to an object of kind {kind}"),
                ),
            );
            self.insert(
                &format!("{base}/watch{ns_path}/{}/{{name}}", r.plural),
                ops,
                with_pretty(item_params.clone()),
            );
            if r.namespaced {
                let mut ops = Map::new();
                ops.insert(
                    "get".into(),
                    watch(
                        self,
                        format!("watch{p}{kind}ListForAllNamespaces"),
                        "watchlist",
                        format!("watch individual changes to a list of {kind}"),
                    ),
                );
                self.insert(
                    &format!("{base}/watch/{}", r.plural),
                    ops,
                    with_pretty(Vec::new()),
                );
            }
        }

        for sub in &r.subresources {
            self.add_subresource(r, sub, &gvk, &this, &item, &item_params);
        }
    }

    fn add_subresource(
        &mut self,
        r: &Served,
        sub: &ServedSub,
        parent: &Gvk,
        parent_schema: &Value,
        item: &str,
        item_params: &[Value],
    ) {
        let schemas = TypeSchemas::get();
        let (gvk, schema) = match sub.kind {
            None => (parent.clone(), Some(parent_schema.clone())),
            Some((g, v, k)) => {
                let gvk = Gvk::new(g, v, k);
                let name = schemas.root_type(&api_version(g, v), k).map(str::to_string);
                if let Some(name) = &name {
                    self.note(name, gvk.clone());
                }
                (gvk, name.map(|n| schema_ref(&n)))
            }
        };
        let p = self.prefix();
        let ns = if r.namespaced { "Namespaced" } else { "" };
        let what = format!("{}{}", r.kind, capitalize(sub.name));
        let path = format!("{item}/{}", sub.name);
        let connect = sub.kind.is_some_and(|(_, _, k)| k.ends_with("Options"));
        let text = json!({"type": "string"});
        let mut ops = Map::new();
        for verb in sub.verbs {
            let (method, op) = match (*verb, connect) {
                ("get", true)
                | ("create", true)
                | ("update", true)
                | ("patch", true)
                | ("delete", true) => {
                    let method = http_method(verb);
                    let id = format!("connect{p}{}{ns}{what}", capitalize(method));
                    (
                        method,
                        self.op(
                            &id,
                            "connect",
                            &gvk,
                            &format!(
                                "connect {} requests to {} of {}",
                                method.to_uppercase(),
                                sub.name,
                                r.kind
                            ),
                            Vec::new(),
                            None,
                            responses(&[("200", "OK")], Some(&text), false),
                        ),
                    )
                }
                ("get", false) if sub.name == "log" => (
                    "get",
                    self.op(
                        &format!("read{p}{ns}{what}"),
                        "get",
                        &gvk,
                        &format!("read log of the specified {}", r.kind),
                        log_params(),
                        None,
                        responses(&[("200", "OK")], Some(&text), false),
                    ),
                ),
                ("get", false) => (
                    "get",
                    self.op(
                        &format!("read{p}{ns}{what}"),
                        "get",
                        &gvk,
                        &format!("read {} of the specified {}", sub.name, r.kind),
                        Vec::new(),
                        None,
                        responses(&[("200", "OK")], schema.as_ref(), false),
                    ),
                ),
                ("update", false) => (
                    "put",
                    self.op(
                        &format!("replace{p}{ns}{what}"),
                        "put",
                        &gvk,
                        &format!("replace {} of the specified {}", sub.name, r.kind),
                        write_params(),
                        schema.as_ref().map(body),
                        responses(&[("200", "OK"), ("201", "Created")], schema.as_ref(), false),
                    ),
                ),
                ("patch", false) => (
                    "patch",
                    self.op(
                        &format!("patch{p}{ns}{what}"),
                        "patch",
                        &gvk,
                        &format!("partially update {} of the specified {}", sub.name, r.kind),
                        patch_params(),
                        Some(patch_body()),
                        responses(&[("200", "OK"), ("201", "Created")], schema.as_ref(), false),
                    ),
                ),
                ("create", false) => (
                    "post",
                    self.op(
                        &format!("create{p}{ns}{what}"),
                        "post",
                        &gvk,
                        &format!("create {} of a {}", sub.name, r.kind),
                        write_params(),
                        schema.as_ref().map(body),
                        responses(
                            &[("200", "OK"), ("201", "Created"), ("202", "Accepted")],
                            schema.as_ref(),
                            false,
                        ),
                    ),
                ),
                _ => continue,
            };
            ops.insert(method.into(), op);
        }
        self.insert(&path, ops, with_pretty(item_params.to_vec()));
    }

    #[allow(clippy::too_many_arguments)]
    fn op(
        &self,
        id: &str,
        action: &str,
        gvk: &Gvk,
        description: &str,
        params: Vec<Value>,
        request: Option<Value>,
        responses: Value,
    ) -> Value {
        let mut op = Map::new();
        op.insert("tags".into(), json!([self.tag()]));
        op.insert("description".into(), json!(description));
        op.insert("operationId".into(), json!(id));
        if !params.is_empty() {
            op.insert("parameters".into(), Value::Array(params));
        }
        if let Some(body) = request {
            op.insert("requestBody".into(), body);
        }
        op.insert("responses".into(), responses);
        op.insert("x-kubernetes-action".into(), json!(action));
        op.insert("x-kubernetes-group-version-kind".into(), gvk.to_json());
        Value::Object(op)
    }

    fn insert(&mut self, path: &str, ops: Map<String, Value>, params: Vec<Value>) {
        if ops.is_empty() {
            return;
        }
        let mut item = ops;
        item.insert("parameters".into(), Value::Array(params));
        self.paths.insert(path.to_string(), Value::Object(item));
    }

    fn note(&mut self, schema: &str, gvk: Gvk) {
        self.kinds
            .entry(schema.to_string())
            .or_default()
            .insert(gvk);
    }

    /// `/api/v1` or `/apis/<group>/<version>`.
    fn base(&self) -> String {
        if self.group.is_empty() {
            format!("/api/{}", self.version)
        } else {
            format!("/apis/{}/{}", self.group, self.version)
        }
    }

    /// The operation-id infix: `CoreV1`, `AppsV1`, `RbacAuthorizationV1`.
    fn prefix(&self) -> String {
        let words = group_words(&self.group);
        let mut out: String = words.iter().map(|w| capitalize(w)).collect();
        out.push_str(&capitalize(&self.version));
        out
    }

    /// The tag: `core_v1`, `apps_v1`, `rbacAuthorization_v1`.
    fn tag(&self) -> String {
        let words = group_words(&self.group);
        let mut out = String::new();
        for (i, w) in words.iter().enumerate() {
            out.push_str(&if i == 0 { w.to_string() } else { capitalize(w) });
        }
        format!("{out}_{}", self.version)
    }
}

fn group_words(group: &str) -> Vec<&str> {
    if group.is_empty() {
        return vec!["core"];
    }
    let trimmed = group.strip_suffix(".k8s.io").unwrap_or(group);
    trimmed.split('.').collect()
}

fn capitalize(word: &str) -> String {
    let mut chars = word.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

fn http_method(verb: &str) -> &'static str {
    match verb {
        "create" => "post",
        "update" => "put",
        "patch" => "patch",
        "delete" => "delete",
        _ => "get",
    }
}

pub fn api_version(group: &str, version: &str) -> String {
    if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    }
}

fn schema_ref(name: &str) -> Value {
    json!({"$ref": format!("{REF_PREFIX}{name}")})
}

fn status_ref() -> Value {
    schema_ref(&format!("{META}.Status"))
}

fn body(schema: &Value) -> Value {
    json!({"content": {"*/*": {"schema": schema}}, "required": true})
}

fn delete_body() -> Value {
    json!({"content": {"*/*": {"schema": schema_ref(&format!("{META}.DeleteOptions"))}}})
}

fn patch_body() -> Value {
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

fn responses(codes: &[(&str, &str)], schema: Option<&Value>, stream: bool) -> Value {
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
                content.insert(
                    "application/json;stream=watch".into(),
                    json!({"schema": schema}),
                );
            }
            response.insert("content".into(), Value::Object(content));
        }
        out.insert((*code).into(), Value::Object(response));
    }
    out.insert("401".into(), json!({"description": "Unauthorized"}));
    Value::Object(out)
}

fn path_param(name: &str, description: &str) -> Value {
    json!({"name": name, "in": "path", "description": description, "required": true, "schema": {"type": "string", "uniqueItems": true}})
}

fn query(name: &str, kind: &str, description: &str) -> Value {
    let schema = match kind {
        "integer" => json!({"type": "integer", "uniqueItems": true}),
        other => json!({"type": other, "uniqueItems": true}),
    };
    json!({"name": name, "in": "query", "description": description, "schema": schema})
}

fn with_pretty(mut params: Vec<Value>) -> Vec<Value> {
    params.push(query(
        "pretty",
        "string",
        "If 'true', the output is pretty printed.",
    ));
    params
}

fn dry_run() -> Value {
    query("dryRun", "string", "When present, the request is processed but nothing is persisted. The only valid value is All.")
}

fn field_manager() -> Value {
    query(
        "fieldManager",
        "string",
        "The name of the actor making these changes, recorded in managedFields.",
    )
}

fn field_validation() -> Value {
    query("fieldValidation", "string", "How to treat unknown or duplicate fields in the request body: Ignore (drop them), Warn (drop them with a warning header; the default) or Strict (reject the request).")
}

fn write_params() -> Vec<Value> {
    vec![dry_run(), field_manager(), field_validation()]
}

fn patch_params() -> Vec<Value> {
    vec![
        dry_run(),
        field_manager(),
        field_validation(),
        query("force", "boolean", "Apply requests only: take ownership of fields other managers own instead of failing with a conflict."),
    ]
}

fn selector_params() -> Vec<Value> {
    vec![
        query(
            "continue",
            "string",
            "The continue token of a previous paginated list response.",
        ),
        query(
            "fieldSelector",
            "string",
            "Restricts the result to objects whose fields match.",
        ),
        query(
            "labelSelector",
            "string",
            "Restricts the result to objects whose labels match.",
        ),
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
        query(
            "timeoutSeconds",
            "integer",
            "A time limit for the call, whatever its activity.",
        ),
    ]
}

fn list_params() -> Vec<Value> {
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

fn delete_params() -> Vec<Value> {
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
        query(
            "orphanDependents",
            "boolean",
            "Deprecated: use propagationPolicy.",
        ),
        query(
            "propagationPolicy",
            "string",
            "Whether and how dependents are garbage collected: Orphan, Background or Foreground.",
        ),
    ]
}

fn deletecollection_params() -> Vec<Value> {
    let mut params = delete_params();
    params.extend(selector_params());
    params
}

fn log_params() -> Vec<Value> {
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
        query(
            "previous",
            "boolean",
            "The log of the previous terminated container.",
        ),
        query(
            "sinceSeconds",
            "integer",
            "Only lines newer than this many seconds.",
        ),
        query(
            "sinceTime",
            "string",
            "Only lines newer than this RFC 3339 time.",
        ),
        query("stream", "string", "All, Stdout or Stderr."),
        query("tailLines", "integer", "Only this many lines from the end."),
        query(
            "timestamps",
            "boolean",
            "Prefix each line with its timestamp.",
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_upstream() {
        let b = PathsBuilder::new("rbac.authorization.k8s.io", "v1");
        assert_eq!(b.prefix(), "RbacAuthorizationV1");
        assert_eq!(b.tag(), "rbacAuthorization_v1");
        let core = PathsBuilder::new("", "v1");
        assert_eq!(
            (core.prefix().as_str(), core.tag().as_str()),
            ("CoreV1", "core_v1")
        );
        assert_eq!(
            PathsBuilder::new("flowcontrol.apiserver.k8s.io", "v1").prefix(),
            "FlowcontrolApiserverV1"
        );
    }
}
