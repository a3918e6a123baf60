//! The REST verbs over the registry for everything under /api and /apis: the path says which
//! resource (see `request::parse_path`), the method and query say which verb; discovery
//! documents answer the group and version roots.
//!
//! Other components may serve connect-style subresources (pods/log, exec, attach, portforward,
//! proxy, serviceaccounts/token) by merging a router with those exact routes over this one:
//! axum prefers them to the catch-all used here.

pub(crate) mod decode;
pub(crate) mod patch;
pub mod protobuf;
mod read;
mod response;
mod subresources;
pub mod table;
mod write;

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method};
use axum::response::{IntoResponse, Response};
use axum::Router;
use bytes::Bytes;

use super::request::{self, Query, ResourcePath, Target};
use super::status::ApiError;
use super::UserInfo;
use crate::registry::catalog::{catalog, ResourceInfo};
use crate::registry::Registry;
use crate::store::Store;
use response::Shape;

pub use decode::{decode_object, FieldValidation};

/// The largest request body read (upstream's limit is 3 MiB for most objects).
pub const MAX_BODY_BYTES: usize = 3 * 1024 * 1024;

/// The routes under /api and /apis. Expects a `UserInfo` in each request's extensions.
pub fn api_router(store: Store) -> Router {
    let state = Arc::new(ApiState { registry: Registry::new(store) });
    Router::new().fallback(handle).with_state(state)
}

/// What every handler shares.
pub(crate) struct ApiState {
    pub registry: Registry,
}

/// One request to a resource, decoded as far as every verb needs.
pub(crate) struct Req {
    pub res: &'static ResourceInfo,
    pub path: ResourcePath,
    pub query: Query,
    pub headers: HeaderMap,
    pub user: Option<UserInfo>,
    pub body: Bytes,
    pub shape: Shape,
}

impl Req {
    pub fn namespace(&self) -> Option<&str> {
        self.path.namespace.as_deref()
    }

    pub fn name(&self) -> &str {
        self.path.name.as_deref().unwrap_or("")
    }
}

async fn handle(State(state): State<Arc<ApiState>>, req: Request) -> Response {
    match route(&state, req).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn route(state: &ApiState, req: Request) -> Result<Response, ApiError> {
    let target = request::parse_path(req.uri().path()).ok_or_else(not_found_path)?;
    let resource = match target {
        Target::Resource(p) => p,
        other => {
            if req.method() != Method::GET && req.method() != Method::HEAD {
                return Err(method_not_allowed());
            }
            return super::discovery::serve(&other, req.headers());
        }
    };
    let res = catalog()
        .find(&resource.group, &resource.version, &resource.resource)
        .ok_or_else(not_found_path)?;
    if !res.namespaced && resource.namespace.is_some() {
        return Err(not_found_path());
    }
    if let Some(sub) = &resource.subresource {
        if res.subresource(sub).is_none() {
            return Err(not_found_path());
        }
    }
    let query = Query::from_uri(req.uri())?;
    let output = request::negotiate(req.headers())?;
    let include =
        table::IncludeObject::parse(query.get("includeObject")).map_err(ApiError::bad_request)?;
    let method = req.method().clone();
    let user = req.extensions().get::<UserInfo>().cloned();
    let headers = req.headers().clone();
    let body = read_body(req.into_body()).await?;
    let r = Req {
        res,
        path: resource,
        query,
        headers,
        user,
        body,
        shape: Shape { output, include, warnings: vec![] },
    };
    let has_name = r.path.name.is_some();
    let sub = r.path.subresource.clone();
    let verb_allowed = |verb: &str| -> Result<(), ApiError> {
        let verbs = match &sub {
            Some(s) => res.subresource(s).map(|s| s.verbs).unwrap_or(&[]),
            None => res.verbs,
        };
        if verbs.contains(&verb) {
            Ok(())
        } else {
            Err(method_not_allowed())
        }
    };
    let watch = r.path.legacy_watch || r.query.bool("watch")?.unwrap_or(false);
    let reg = &state.registry;
    match (&method, has_name, sub.as_deref()) {
        (&Method::GET, _, _) if watch => {
            verb_allowed("watch")?;
            read::watch(reg, r).await
        }
        (&Method::GET, false, None) => {
            verb_allowed("list")?;
            read::list(reg, r).await
        }
        (&Method::GET, true, None) => {
            verb_allowed("get")?;
            read::get(reg, r).await
        }
        (&Method::GET, true, Some(s)) => {
            verb_allowed("get")?;
            subresources::get(reg, r, s).await
        }
        (&Method::POST, false, None) => {
            verb_allowed("create")?;
            write::create(reg, r).await
        }
        (&Method::POST, true, Some(s)) => {
            verb_allowed("create")?;
            subresources::create(reg, r, s).await
        }
        (&Method::PUT, true, _) => {
            verb_allowed("update")?;
            write::update(reg, r).await
        }
        (&Method::PATCH, true, _) => {
            verb_allowed("patch")?;
            patch::patch(reg, r).await
        }
        (&Method::DELETE, true, None) => {
            verb_allowed("delete")?;
            write::delete(reg, r).await
        }
        (&Method::DELETE, false, None) => {
            verb_allowed("deletecollection")?;
            write::delete_collection(reg, r).await
        }
        _ => Err(method_not_allowed()),
    }
}

async fn read_body(body: Body) -> Result<Bytes, ApiError> {
    axum::body::to_bytes(body, MAX_BODY_BYTES).await.map_err(|e| {
        ApiError::request_entity_too_large(format!("the request body could not be read: {e}"))
    })
}

/// The 404 upstream gives for paths it does not serve.
pub(crate) fn not_found_path() -> ApiError {
    ApiError::new(404, "NotFound", "the server could not find the requested resource")
        .with_details(Default::default())
}

pub(crate) fn method_not_allowed() -> ApiError {
    ApiError::method_not_supported(
        "the server does not allow this method on the requested resource",
    )
    .with_details(Default::default())
}

/// The field manager of an update: fieldManager, else the client's User-Agent up to its first
/// "/" (as upstream), else "unknown".
pub(crate) fn field_manager(r: &Req) -> Result<String, ApiError> {
    if let Some(m) = r.query.get("fieldManager").filter(|m| !m.is_empty()) {
        if m.len() > 128 {
            return Err(ApiError::bad_request(format!(
                "fieldManager: Too long: may not be more than 128 bytes (got {})",
                m.len()
            )));
        }
        return Ok(m.to_string());
    }
    let ua =
        r.headers.get(axum::http::header::USER_AGENT).and_then(|v| v.to_str().ok()).unwrap_or("");
    let prefix: String = ua.split('/').next().unwrap_or("").chars().take(128).collect();
    Ok(if prefix.is_empty() { "unknown".into() } else { prefix })
}

/// Write options from the query (dryRun, fieldManager) and the user.
pub(crate) fn write_options(r: &Req) -> Result<crate::registry::WriteOptions, ApiError> {
    Ok(crate::registry::WriteOptions {
        dry_run: r.query.dry_run()?,
        field_manager: field_manager(r)?,
        user: r.user.clone(),
        fields_recorded: false,
        create_if_missing: false,
    })
}
