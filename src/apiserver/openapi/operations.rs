//! The `paths` of one group-version's document: for each resource its collection, item,
//! all-namespaces, watch and subresource paths, with operations named and tagged as upstream
//! names them, carrying `x-kubernetes-action` and `x-kubernetes-group-version-kind`, the query
//! parameters each verb accepts, and the request and response bodies.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Map, Value};

use super::components::Gvk;
use super::parameters::*;
use super::resources::{Served, ServedSub};
use crate::registry::merge::TypeSchemas;

/// Collects paths and the schemas (with the kinds they are served as) the operations use.
pub struct PathsBuilder {
    group: String,
    version: String,
    pub paths: Map<String, Value>,
    /// Schema name to the kinds it is served as.
    pub kinds: BTreeMap<String, BTreeSet<Gvk>>,
}

/// One operation before it is rendered under its path.
struct Op {
    method: &'static str,
    id: String,
    action: &'static str,
    description: String,
    params: Vec<Value>,
    body: Option<Value>,
    responses: Value,
}

impl Op {
    fn new(method: &'static str, id: String, action: &'static str, description: String) -> Self {
        Op {
            method,
            id,
            action,
            description,
            params: Vec::new(),
            body: None,
            responses: responses(&[("200", "OK")], None, false),
        }
    }

    fn params(mut self, params: Vec<Value>) -> Self {
        self.params = params;
        self
    }

    fn body(mut self, body: Option<Value>) -> Self {
        self.body = body;
        self
    }

    /// Responds with `schema` under each of `codes`.
    fn returns(mut self, codes: &[(&str, &str)], schema: Option<&Value>) -> Self {
        self.responses = responses(codes, schema, false);
        self
    }

    /// Responds with `schema`, also as a watch stream.
    fn streams(mut self, schema: &Value) -> Self {
        self.responses = responses(&[("200", "OK")], Some(schema), true);
        self
    }
}

const OK: &[(&str, &str)] = &[("200", "OK")];
const OK_CREATED: &[(&str, &str)] = &[("200", "OK"), ("201", "Created")];
const OK_CREATED_ACCEPTED: &[(&str, &str)] =
    &[("200", "OK"), ("201", "Created"), ("202", "Accepted")];
const OK_ACCEPTED: &[(&str, &str)] = &[("200", "OK"), ("202", "Accepted")];

impl PathsBuilder {
    pub fn new(group: &str, version: &str) -> Self {
        let mut b = PathsBuilder {
            group: group.into(),
            version: version.into(),
            paths: Map::new(),
            kinds: BTreeMap::new(),
        };
        let id = format!("get{}APIResources", b.prefix());
        let op = Op::new("get", id, "", "get available resources".into())
            .returns(OK, Some(&schema_ref(&format!("{META}.APIResourceList"))));
        let mut rendered = b.render(None, op);
        if let Some(map) = rendered.as_object_mut() {
            map.remove("x-kubernetes-action");
        }
        b.paths.insert(format!("{}/", b.base()), json!({ "get": rendered }));
        b
    }

    /// Adds every path of one resource.
    pub fn add(&mut self, r: &Served) {
        let schemas = TypeSchemas::get();
        let Some(type_name) =
            schemas.root_type(&api_version(r.group, r.version), r.kind).map(str::to_string)
        else {
            return;
        };
        let gvk = Gvk::new(r.group, r.version, r.kind);
        self.note(&type_name, gvk.clone());
        let list_type = format!("{type_name}List");
        let has_list = r.verbs.contains(&"list") && schemas.definitions.contains_key(&list_type);
        if has_list {
            self.note(&list_type, Gvk::new(r.group, r.version, &format!("{}List", r.kind)));
        }
        let verb = |v: &str| r.verbs.contains(&v);
        let (p, k) = (self.prefix(), r.kind);
        let ns = if r.namespaced { "Namespaced" } else { "" };
        let ns_path = if r.namespaced { "/namespaces/{namespace}" } else { "" };
        let base = self.base();
        let collection = format!("{base}{ns_path}/{}", r.plural);
        let item = format!("{collection}/{{name}}");
        let this = schema_ref(&type_name);
        let list = schema_ref(&list_type);
        let event = schema_ref(&format!("{META}.WatchEvent"));
        let scope: Vec<Value> = if r.namespaced {
            vec![path_param(
                "namespace",
                "object name and auth scope, such as for teams and projects",
            )]
        } else {
            Vec::new()
        };
        let mut named = vec![path_param("name", &format!("name of the {k}"))];
        named.extend(scope.clone());

        let mut ops = Vec::new();
        if has_list {
            ops.push(
                Op::new(
                    "get",
                    format!("list{p}{ns}{k}"),
                    "list",
                    format!("list or watch objects of kind {k}"),
                )
                .params(list_params())
                .streams(&list),
            );
        }
        if verb("create") {
            ops.push(
                Op::new("post", format!("create{p}{ns}{k}"), "post", format!("create a {k}"))
                    .params(write_params())
                    .body(Some(body(&this)))
                    .returns(OK_CREATED_ACCEPTED, Some(&this)),
            );
        }
        if verb("deletecollection") {
            ops.push(
                Op::new(
                    "delete",
                    format!("delete{p}Collection{ns}{k}"),
                    "deletecollection",
                    format!("delete collection of {k}"),
                )
                .params(deletecollection_params())
                .body(Some(delete_body()))
                .returns(OK, Some(&status_ref())),
            );
        }
        self.path(&collection, &scope, &gvk, ops);

        let mut ops = Vec::new();
        if verb("get") {
            ops.push(
                Op::new("get", format!("read{p}{ns}{k}"), "get", format!("read the specified {k}"))
                    .returns(OK, Some(&this)),
            );
        }
        if verb("update") {
            ops.push(
                Op::new(
                    "put",
                    format!("replace{p}{ns}{k}"),
                    "put",
                    format!("replace the specified {k}"),
                )
                .params(write_params())
                .body(Some(body(&this)))
                .returns(OK_CREATED, Some(&this)),
            );
        }
        if verb("patch") {
            ops.push(
                Op::new(
                    "patch",
                    format!("patch{p}{ns}{k}"),
                    "patch",
                    format!("partially update the specified {k}"),
                )
                .params(patch_params())
                .body(Some(patch_body()))
                .returns(OK_CREATED, Some(&this)),
            );
        }
        if verb("delete") {
            ops.push(
                Op::new("delete", format!("delete{p}{ns}{k}"), "delete", format!("delete a {k}"))
                    .params(delete_params())
                    .body(Some(delete_body()))
                    .returns(OK_ACCEPTED, Some(&status_ref())),
            );
        }
        self.path(&item, &named, &gvk, ops);

        if has_list && r.namespaced {
            let op = Op::new(
                "get",
                format!("list{p}{k}ForAllNamespaces"),
                "list",
                format!("list or watch objects of kind {k}"),
            )
            .params(list_params())
            .streams(&list);
            self.path(&format!("{base}/{}", r.plural), &[], &gvk, vec![op]);
        }
        if verb("watch") {
            let watch = |id: String, action: &'static str, what: &str| {
                Op::new("get", id, action, format!("watch {what} of kind {k}"))
                    .params(list_params())
                    .streams(&event)
            };
            let op =
                watch(format!("watch{p}{ns}{k}List"), "watchlist", "changes to a list of objects");
            self.path(&format!("{base}/watch{ns_path}/{}", r.plural), &scope, &gvk, vec![op]);
            let op = watch(format!("watch{p}{ns}{k}"), "watch", "changes to an object");
            self.path(
                &format!("{base}/watch{ns_path}/{}/{{name}}", r.plural),
                &named,
                &gvk,
                vec![op],
            );
            if r.namespaced {
                let op = watch(
                    format!("watch{p}{k}ListForAllNamespaces"),
                    "watchlist",
                    "changes to a list of objects",
                );
                self.path(&format!("{base}/watch/{}", r.plural), &[], &gvk, vec![op]);
            }
        }

        for sub in &r.subresources {
            self.add_subresource(r, sub, (&gvk, &this), &item, &named);
        }
    }

    fn add_subresource(
        &mut self,
        r: &Served,
        sub: &ServedSub,
        parent: (&Gvk, &Value),
        item: &str,
        named: &[Value],
    ) {
        let (gvk, schema) = match sub.kind {
            None => (parent.0.clone(), Some(parent.1.clone())),
            Some((g, v, k)) => {
                let gvk = Gvk::new(g, v, k);
                let name = TypeSchemas::get().root_type(&api_version(g, v), k).map(str::to_string);
                if let Some(name) = &name {
                    self.note(name, gvk.clone());
                }
                (gvk, name.map(|n| schema_ref(&n)))
            }
        };
        let p = self.prefix();
        let ns = if r.namespaced { "Namespaced" } else { "" };
        let what = format!("{}{}", r.kind, capitalize(sub.name));
        let (name, kind) = (sub.name, r.kind);
        let connect = sub.kind.is_some_and(|(_, _, k)| k.ends_with("Options"));
        let text = json!({"type": "string"});
        let mut ops = Vec::new();
        for verb in sub.verbs {
            let op = match (*verb, connect) {
                (_, true) => {
                    let method = http_method(verb);
                    let id = format!("connect{p}{}{ns}{what}", capitalize(method));
                    let description =
                        format!("connect {} requests to {name} of {kind}", method.to_uppercase());
                    Op::new(method, id, "connect", description).returns(OK, Some(&text))
                }
                ("get", false) if name == "log" => Op::new(
                    "get",
                    format!("read{p}{ns}{what}"),
                    "get",
                    format!("read log of the specified {kind}"),
                )
                .params(log_params())
                .returns(OK, Some(&text)),
                ("get", false) => Op::new(
                    "get",
                    format!("read{p}{ns}{what}"),
                    "get",
                    format!("read {name} of the specified {kind}"),
                )
                .returns(OK, schema.as_ref()),
                ("update", false) => Op::new(
                    "put",
                    format!("replace{p}{ns}{what}"),
                    "put",
                    format!("replace {name} of the specified {kind}"),
                )
                .params(write_params())
                .body(schema.as_ref().map(body))
                .returns(OK_CREATED, schema.as_ref()),
                ("patch", false) => Op::new(
                    "patch",
                    format!("patch{p}{ns}{what}"),
                    "patch",
                    format!("partially update {name} of the specified {kind}"),
                )
                .params(patch_params())
                .body(Some(patch_body()))
                .returns(OK_CREATED, schema.as_ref()),
                ("create", false) => Op::new(
                    "post",
                    format!("create{p}{ns}{what}"),
                    "post",
                    format!("create {name} of a {kind}"),
                )
                .params(write_params())
                .body(schema.as_ref().map(body))
                .returns(OK_CREATED_ACCEPTED, schema.as_ref()),
                _ => continue,
            };
            ops.push(op);
        }
        self.path(&format!("{item}/{name}"), named, &gvk, ops);
    }

    /// Adds a path with its operations and its path-level parameters (plus `pretty`).
    fn path(&mut self, path: &str, params: &[Value], gvk: &Gvk, ops: Vec<Op>) {
        if ops.is_empty() {
            return;
        }
        let mut item = Map::new();
        for op in ops {
            let method = op.method;
            item.insert(method.into(), self.render(Some(gvk), op));
        }
        item.insert("parameters".into(), Value::Array(with_pretty(params.to_vec())));
        self.paths.insert(path.to_string(), Value::Object(item));
    }

    fn render(&self, gvk: Option<&Gvk>, op: Op) -> Value {
        let mut out = Map::new();
        out.insert("tags".into(), json!([self.tag()]));
        out.insert("description".into(), json!(op.description));
        out.insert("operationId".into(), json!(op.id));
        if !op.params.is_empty() {
            out.insert("parameters".into(), Value::Array(op.params));
        }
        if let Some(body) = op.body {
            out.insert("requestBody".into(), body);
        }
        out.insert("responses".into(), op.responses);
        out.insert("x-kubernetes-action".into(), json!(op.action));
        if let Some(gvk) = gvk {
            out.insert("x-kubernetes-group-version-kind".into(), gvk.to_json());
        }
        Value::Object(out)
    }

    fn note(&mut self, schema: &str, gvk: Gvk) {
        self.kinds.entry(schema.to_string()).or_default().insert(gvk);
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
        let mut out: String = group_words(&self.group).iter().map(|w| capitalize(w)).collect();
        out.push_str(&capitalize(&self.version));
        out
    }

    /// The tag: `core_v1`, `apps_v1`, `rbacAuthorization_v1`.
    fn tag(&self) -> String {
        let mut out = String::new();
        for (i, w) in group_words(&self.group).iter().enumerate() {
            out.push_str(&if i == 0 { w.to_string() } else { capitalize(w) });
        }
        format!("{out}_{}", self.version)
    }
}

fn group_words(group: &str) -> Vec<&str> {
    if group.is_empty() {
        return vec!["core"];
    }
    group.strip_suffix(".k8s.io").unwrap_or(group).split('.').collect()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_upstream() {
        let b = PathsBuilder::new("rbac.authorization.k8s.io", "v1");
        assert_eq!(b.prefix(), "RbacAuthorizationV1");
        assert_eq!(b.tag(), "rbacAuthorization_v1");
        let core = PathsBuilder::new("", "v1");
        assert_eq!((core.prefix().as_str(), core.tag().as_str()), ("CoreV1", "core_v1"));
        assert_eq!(
            PathsBuilder::new("flowcontrol.apiserver.k8s.io", "v1").prefix(),
            "FlowcontrolApiserverV1"
        );
    }
}
