//! Authorization: may this user do this? The request is first described as
//! [`RequestAttributes`] (verb, API group, resource, namespace, name, or a non-resource path),
//! parsed from method, path and query the way kube-apiserver's request-info parsing does; then an
//! [`Authorizer`] decides.
//!
//! How it is wired: [`middleware`] runs after authentication for every request; it reuses the
//! `RequestAttributes` that the metrics stage already put in the extensions (or parses them), asks
//! the authorizer, and answers 403 Forbidden (metav1.Status, upstream wording) on a denial. Allowed
//! requests reach the handlers with `RequestAttributes` and an [`AuthorizerHandle`] in their
//! extensions, so a handler that needs a second decision (for another verb or object) can call
//! [`AuthorizerHandle::check`] and return its `ApiError`.
//!
//! [`DefaultPolicy`] stands in until RBAC: system:masters may do everything; anyone may read the
//! health endpoints and /version; authenticated users may read discovery and OpenAPI and create
//! self reviews; node agents (system:nodes) may read everything and write what a kubelet writes
//! (nodes, pod status and deletion, node leases, events); everything else is forbidden.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, Method, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::status::{ApiError, StatusDetails};
use super::UserInfo;

/// The group whose members may do anything.
pub const MASTERS_GROUP: &str = "system:masters";

/// What a request asks to do, as authorization and metrics see it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RequestAttributes {
    /// Kubernetes verb (get, list, watch, create, update, patch, delete, deletecollection, proxy)
    /// for resource requests; the lowercased HTTP method for others.
    pub verb: String,
    pub path: String,
    pub resource_request: bool,
    /// "api" or "apis" (resource requests only).
    pub api_prefix: String,
    pub api_group: String,
    pub api_version: String,
    pub namespace: String,
    pub resource: String,
    pub subresource: String,
    pub name: String,
    /// A server-side apply (PATCH with application/apply-patch+yaml).
    pub apply: bool,
    /// Watches, proxies, exec/attach/port-forward and logs: not counted against the in-flight cap.
    pub long_running: bool,
}

/// A decision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    Allow,
    /// Denied, with an optional reason appended to the message.
    Deny(String),
    /// This authorizer does not know; the next one (or denial) applies.
    NoOpinion,
}

/// Decides whether a user may do what the attributes describe.
#[async_trait]
pub trait Authorizer: Send + Sync + 'static {
    async fn authorize(&self, user: &UserInfo, attrs: &RequestAttributes) -> Decision;
}

/// The authorizer of the server, in request extensions for handlers that need further decisions.
#[derive(Clone)]
pub struct AuthorizerHandle(pub Arc<dyn Authorizer>);

impl AuthorizerHandle {
    /// Ok if allowed; otherwise the Forbidden error upstream would return.
    pub async fn check(&self, user: &UserInfo, attrs: &RequestAttributes) -> Result<(), ApiError> {
        match self.0.authorize(user, attrs).await {
            Decision::Allow => Ok(()),
            Decision::Deny(reason) => Err(forbidden(user, attrs, &reason)),
            Decision::NoOpinion => Err(forbidden(user, attrs, "")),
        }
    }
}

/// The policy until RBAC exists (see the module docs).
#[derive(Clone, Copy, Debug, Default)]
pub struct DefaultPolicy;

#[async_trait]
impl Authorizer for DefaultPolicy {
    async fn authorize(&self, user: &UserInfo, attrs: &RequestAttributes) -> Decision {
        if user.groups.iter().any(|g| g == MASTERS_GROUP) {
            return Decision::Allow;
        }
        if !attrs.resource_request {
            if attrs.verb == "get" && super::authn::is_public_path(&attrs.path) {
                return Decision::Allow;
            }
            let authenticated = user.groups.iter().any(|g| g == super::authn::AUTHENTICATED_GROUP);
            if authenticated && attrs.verb == "get" && is_discovery_path(&attrs.path) {
                return Decision::Allow;
            }
            return Decision::NoOpinion;
        }
        let self_review = matches!(
            (attrs.api_group.as_str(), attrs.resource.as_str()),
            ("authorization.k8s.io", "selfsubjectaccessreviews" | "selfsubjectrulesreviews")
                | ("authentication.k8s.io", "selfsubjectreviews")
        );
        if self_review && attrs.verb == "create" {
            return Decision::Allow;
        }
        if user.groups.iter().any(|g| g == super::join::NODES_GROUP) && node_may(attrs) {
            return Decision::Allow;
        }
        Decision::NoOpinion
    }
}

/// What a node agent may do until RBAC: read anything; write nodes, pods' status and their
/// deletion, Leases, and Events.
fn node_may(attrs: &RequestAttributes) -> bool {
    if matches!(attrs.verb.as_str(), "get" | "list" | "watch") {
        return true;
    }
    let writes = matches!(attrs.verb.as_str(), "create" | "update" | "patch" | "delete");
    let sub = attrs.subresource.as_str();
    writes
        && match (attrs.api_group.as_str(), attrs.resource.as_str()) {
            ("", "nodes") => sub.is_empty() || sub == "status",
            ("", "pods") => sub == "status" || (sub.is_empty() && attrs.verb == "delete"),
            ("coordination.k8s.io", "leases") => sub.is_empty(),
            ("", "events") | ("events.k8s.io", "events") => sub.is_empty(),
            _ => false,
        }
}

/// Discovery documents and OpenAPI, readable by every authenticated user upstream.
fn is_discovery_path(path: &str) -> bool {
    ["/api", "/apis", "/openapi"].iter().any(|root| {
        path == *root || path.strip_prefix(root).is_some_and(|rest| rest.starts_with('/'))
    })
}

impl RequestAttributes {
    /// Describes a request from its method, URI and headers.
    pub fn parse(method: &Method, uri: &Uri, headers: &HeaderMap) -> RequestAttributes {
        let path = uri.path().to_string();
        let mut attrs = RequestAttributes {
            verb: method.as_str().to_ascii_lowercase(),
            path: path.clone(),
            ..Default::default()
        };
        let mut parts: Vec<&str> =
            path.trim_matches('/').split('/').filter(|s| !s.is_empty()).collect();
        if parts.len() < 3 || (parts[0] != "api" && parts[0] != "apis") {
            return attrs;
        }
        attrs.api_prefix = parts[0].to_string();
        parts.remove(0);
        if attrs.api_prefix == "apis" {
            if parts.len() < 3 {
                return attrs;
            }
            attrs.api_group = parts.remove(0).to_string();
        }
        attrs.resource_request = true;
        attrs.api_version = parts.remove(0).to_string();

        attrs.verb = match *method {
            Method::POST => "create",
            Method::GET | Method::HEAD => "get",
            Method::PUT => "update",
            Method::PATCH => "patch",
            Method::DELETE => "delete",
            _ => "",
        }
        .to_string();
        if attrs.verb.is_empty() {
            attrs.verb = method.as_str().to_ascii_lowercase();
        }
        if parts.first() == Some(&"watch") {
            parts.remove(0);
            attrs.verb = "watch".into();
        } else if parts.first() == Some(&"proxy") {
            parts.remove(0);
            attrs.verb = "proxy".into();
        }

        if parts.first() == Some(&"namespaces") && parts.len() > 1 {
            attrs.namespace = parts[1].to_string();
            // "namespaces/x/status" is the namespace's own subresource; anything else after the
            // name is a resource inside that namespace.
            if parts.len() > 2 && !matches!(parts[2], "status" | "finalize") {
                parts.drain(..2);
            }
        }
        match parts.len() {
            0 => {}
            1 => attrs.resource = parts[0].to_string(),
            2 => {
                attrs.resource = parts[0].to_string();
                attrs.name = parts[1].to_string();
            }
            _ => {
                attrs.resource = parts[0].to_string();
                attrs.name = parts[1].to_string();
                attrs.subresource = parts[2].to_string();
            }
        }

        let query: HashMap<String, String> =
            Query::<HashMap<String, String>>::try_from_uri(uri).map(|q| q.0).unwrap_or_default();
        if attrs.name.is_empty() && attrs.verb == "get" {
            attrs.verb =
                if query.get("watch").is_some_and(|w| parse_bool(w)) { "watch" } else { "list" }
                    .into();
        }
        if attrs.name.is_empty() && attrs.verb == "delete" {
            attrs.verb = "deletecollection".into();
        }
        if matches!(attrs.verb.as_str(), "list" | "watch") {
            if let Some(name) = query.get("fieldSelector").and_then(|s| exact_name(s)) {
                attrs.name = name;
            }
        }
        if attrs.verb == "patch" {
            attrs.apply = headers
                .get(axum::http::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|ct| ct.starts_with("application/apply-patch"));
        }
        let follow = query.get("follow").is_some_and(|f| parse_bool(f));
        attrs.long_running = matches!(attrs.verb.as_str(), "watch" | "proxy")
            || matches!(attrs.subresource.as_str(), "exec" | "attach" | "portforward" | "proxy")
            || (attrs.subresource == "log" && follow);
        attrs
    }

    /// The verb as upstream's metrics report it: GET, LIST, WATCH, POST, PUT, PATCH, APPLY,
    /// DELETE, CONNECT...
    pub fn metrics_verb(&self, method: &Method) -> &'static str {
        if self.resource_request {
            match self.verb.as_str() {
                "list" => return "LIST",
                "watch" => return "WATCH",
                "patch" if self.apply => return "APPLY",
                _ => {}
            }
            if matches!(self.subresource.as_str(), "exec" | "attach" | "portforward" | "proxy")
                || self.verb == "proxy"
            {
                return "CONNECT";
            }
        }
        match *method {
            Method::GET => "GET",
            Method::HEAD => "HEAD",
            Method::POST => "POST",
            Method::PUT => "PUT",
            Method::PATCH => "PATCH",
            Method::DELETE => "DELETE",
            Method::OPTIONS => "OPTIONS",
            Method::CONNECT => "CONNECT",
            _ => "other",
        }
    }

    /// Mutating requests, as the in-flight accounting splits them.
    pub fn is_mutating(&self) -> bool {
        !matches!(self.verb.as_str(), "get" | "list" | "watch" | "head" | "options")
    }
}

/// The Forbidden error for a denied request, worded as upstream.
pub fn forbidden(user: &UserInfo, attrs: &RequestAttributes, reason: &str) -> ApiError {
    let mut detail = if !attrs.resource_request {
        format!("User {:?} cannot {} path {:?}", user.name, attrs.verb, attrs.path)
    } else {
        let mut resource = attrs.resource.clone();
        if !attrs.subresource.is_empty() {
            resource = format!("{resource}/{}", attrs.subresource);
        }
        if attrs.namespace.is_empty() {
            format!(
                "User {:?} cannot {} resource {:?} in API group {:?} at the cluster scope",
                user.name, attrs.verb, resource, attrs.api_group
            )
        } else {
            format!(
                "User {:?} cannot {} resource {:?} in API group {:?} in the namespace {:?}",
                user.name, attrs.verb, resource, attrs.api_group, attrs.namespace
            )
        }
    };
    if !reason.is_empty() {
        detail = format!("{detail}: {reason}");
    }
    let (group, resource) = if attrs.resource_request {
        (attrs.api_group.as_str(), attrs.resource.as_str())
    } else {
        ("", "")
    };
    let qualified = match (group.is_empty(), resource.is_empty()) {
        (_, true) => String::new(),
        (true, false) => resource.to_string(),
        (false, false) => format!("{resource}.{group}"),
    };
    let message = match (qualified.is_empty(), attrs.name.is_empty() || !attrs.resource_request) {
        (true, true) => format!("forbidden: {detail}"),
        (false, true) => format!("{qualified} is forbidden: {detail}"),
        (_, false) => format!("{qualified} {:?} is forbidden: {detail}", attrs.name),
    };
    ApiError::forbidden(message).with_details(StatusDetails {
        name: if attrs.resource_request { attrs.name.clone() } else { String::new() },
        group: group.to_string(),
        kind: resource.to_string(),
        ..Default::default()
    })
}

/// The axum middleware: authorizes the request (see the module docs). Expects [`UserInfo`] in the
/// extensions (authentication runs first); a request without one is treated as anonymous.
pub async fn middleware(
    State(authorizer): State<AuthorizerHandle>,
    mut req: Request,
    next: Next,
) -> Response {
    let attrs = match req.extensions().get::<RequestAttributes>() {
        Some(a) => a.clone(),
        None => {
            let a = RequestAttributes::parse(req.method(), req.uri(), req.headers());
            req.extensions_mut().insert(a.clone());
            a
        }
    };
    let user =
        req.extensions().get::<UserInfo>().cloned().unwrap_or_else(super::authn::anonymous_user);
    if let Err(err) = authorizer.check(&user, &attrs).await {
        tracing::debug!(user = %user.name, verb = %attrs.verb, path = %attrs.path, "forbidden");
        return err.into_response();
    }
    req.extensions_mut().insert(authorizer);
    next.run(req).await
}

/// strconv.ParseBool's accepted spellings of true.
fn parse_bool(s: &str) -> bool {
    matches!(s, "1" | "t" | "T" | "true" | "TRUE" | "True")
}

/// The name a field selector pins with `metadata.name=X` (or `==`), if any.
fn exact_name(selector: &str) -> Option<String> {
    selector.split(',').find_map(|term| {
        let (k, v) = term.split_once("==").or_else(|| term.split_once('='))?;
        (k.trim() == "metadata.name" && !k.ends_with('!')).then(|| v.trim().to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(method: Method, uri: &str) -> RequestAttributes {
        let uri: Uri = uri.parse().expect("uri");
        RequestAttributes::parse(&method, &uri, &HeaderMap::new())
    }

    #[test]
    fn parses_like_upstream() {
        // (method, uri, verb, group, namespace, resource, name, subresource, resource_request)
        let cases = [
            (Method::GET, "/api/v1/namespaces", "list", "", "", "namespaces", "", "", true),
            (
                Method::GET,
                "/api/v1/namespaces/default",
                "get",
                "",
                "default",
                "namespaces",
                "default",
                "",
                true,
            ),
            (
                Method::PUT,
                "/api/v1/namespaces/x/finalize",
                "update",
                "",
                "x",
                "namespaces",
                "x",
                "finalize",
                true,
            ),
            (
                Method::GET,
                "/api/v1/namespaces/ns/pods?watch=true",
                "watch",
                "",
                "ns",
                "pods",
                "",
                "",
                true,
            ),
            (
                Method::GET,
                "/api/v1/namespaces/ns/pods?watch=1",
                "watch",
                "",
                "ns",
                "pods",
                "",
                "",
                true,
            ),
            (
                Method::GET,
                "/api/v1/watch/namespaces/ns/pods",
                "watch",
                "",
                "ns",
                "pods",
                "",
                "",
                true,
            ),
            (
                Method::GET,
                "/api/v1/namespaces/ns/pods/p/log",
                "get",
                "",
                "ns",
                "pods",
                "p",
                "log",
                true,
            ),
            (
                Method::DELETE,
                "/apis/apps/v1/namespaces/ns/deployments",
                "deletecollection",
                "apps",
                "ns",
                "deployments",
                "",
                "",
                true,
            ),
            (
                Method::POST,
                "/apis/apps/v1/namespaces/ns/deployments",
                "create",
                "apps",
                "ns",
                "deployments",
                "",
                "",
                true,
            ),
            (Method::GET, "/apis/apps/v1", "get", "", "", "", "", "", false),
            (Method::GET, "/api/v1", "get", "", "", "", "", "", false),
            (
                Method::GET,
                "/api/v1/nodes?fieldSelector=metadata.name%3Dn1",
                "list",
                "",
                "",
                "nodes",
                "n1",
                "",
                true,
            ),
            (Method::POST, "/healthz", "post", "", "", "", "", "", false),
        ];
        for (m, uri, verb, group, ns, res, name, sub, rr) in cases {
            let a = parse(m, uri);
            assert_eq!(
                (
                    a.verb.as_str(),
                    a.api_group.as_str(),
                    a.namespace.as_str(),
                    a.resource.as_str(),
                    a.name.as_str(),
                    a.subresource.as_str(),
                    a.resource_request
                ),
                (verb, group, ns, res, name, sub, rr),
                "{uri}"
            );
        }
        assert!(parse(Method::GET, "/api/v1/pods?watch=true").long_running);
        assert!(parse(Method::POST, "/api/v1/namespaces/a/pods/b/exec").long_running);
        assert!(!parse(Method::GET, "/api/v1/pods").long_running);
        assert_eq!(parse(Method::GET, "/api/v1/pods").metrics_verb(&Method::GET), "LIST");
    }

    fn user(name: &str, groups: &[&str]) -> UserInfo {
        UserInfo {
            name: name.into(),
            uid: String::new(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
        }
    }

    #[test]
    fn forbidden_messages() {
        let bob = user("bob", &["system:authenticated"]);
        let e = forbidden(&bob, &parse(Method::GET, "/api/v1/namespaces/default/pods"), "");
        assert_eq!(e.message, "pods is forbidden: User \"bob\" cannot list resource \"pods\" in API group \"\" in the namespace \"default\"");
        let e = forbidden(
            &bob,
            &parse(Method::GET, "/apis/apps/v1/namespaces/d/deployments/web/scale"),
            "",
        );
        assert_eq!(e.message, "deployments.apps \"web\" is forbidden: User \"bob\" cannot get resource \"deployments/scale\" in API group \"apps\" in the namespace \"d\"");
        let e = forbidden(&bob, &parse(Method::GET, "/api/v1/nodes"), "");
        assert_eq!(e.message, "nodes is forbidden: User \"bob\" cannot list resource \"nodes\" in API group \"\" at the cluster scope");
        let e = forbidden(&bob, &parse(Method::GET, "/metrics"), "");
        assert_eq!(e.message, "forbidden: User \"bob\" cannot get path \"/metrics\"");
        assert_eq!(e.code, 403);
    }

    #[tokio::test]
    async fn default_policy() {
        let p = DefaultPolicy;
        let admin = user("system:admin", &["system:masters", "system:authenticated"]);
        let bob = user("bob", &["system:authenticated"]);
        let anon = super::super::authn::anonymous_user();
        let pods = parse(Method::GET, "/api/v1/pods");
        assert_eq!(p.authorize(&admin, &pods).await, Decision::Allow);
        assert_eq!(p.authorize(&bob, &pods).await, Decision::NoOpinion);
        assert_eq!(p.authorize(&bob, &parse(Method::GET, "/apis")).await, Decision::Allow);
        assert_eq!(p.authorize(&anon, &parse(Method::GET, "/apis")).await, Decision::NoOpinion);
        assert_eq!(p.authorize(&anon, &parse(Method::GET, "/readyz")).await, Decision::Allow);
    }
}
