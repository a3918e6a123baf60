//! OpenAPI v3 documents for every served group-version, under /openapi/v3, and the OpenAPI v2
//! document derived from them at /openapi/v2 (JSON, or protobuf for kubectl up to 1.28).
//!
//! `/openapi/v3` is the index: each group-version's key (`api/v1`, `apis/apps/v1`) with the URL
//! of its document, carrying the document's hash. A document fetched with its current hash is
//! immutable and cacheable for a year; with a stale hash the client is redirected to the
//! current one. Documents are built once, on the first request for them (never at start-up: they
//! and their build's scratch values are tens of megabytes), from k8s-openapi's schemas, skiff's
//! list semantics description and the served resources, and are what `kubectl explain`, kubectl's
//! field validation detection and kubectl apply's patch computation read.

mod components;
mod document;
mod operations;
mod parameters;
mod protobuf;
mod resources;
mod v2;

use axum::body::Body;
use axum::extract::Path;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE, ETAG, EXPIRES, IF_NONE_MATCH, LOCATION};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde_json::{json, Map, Value};

use super::status::ApiError;

pub use document::{hash_hex, Document};

/// The routes under /openapi/v3 (and /openapi/v2). Nothing is built until a client asks: the
/// first request builds the v3 documents (or the v2 document) on a blocking thread and waits.
pub fn openapi_router() -> Router {
    Router::new()
        .route("/openapi/v2", get(swagger_v2))
        .route("/openapi/v3", get(index))
        .route("/openapi/v3/", get(index))
        .route("/openapi/v3/api/{version}", get(core_document))
        .route("/openapi/v3/apis/{group}/{version}", get(group_document))
}

/// The index body: every document's key and current URL.
pub fn index_json() -> Value {
    let mut paths = Map::new();
    for doc in document::documents() {
        let url = format!("/openapi/v3/{}?hash={}", doc.key, doc.hash);
        paths.insert(doc.key.clone(), json!({"serverRelativeURL": url}));
    }
    json!({ "paths": paths })
}

/// Which builds have begun so far: (v3 documents, v2 document). Start-up begins neither.
pub fn builds_started() -> (bool, bool) {
    (document::build_started(), v2::build_started())
}

/// Builds the v3 documents unless built, off the async workers.
async fn ensure_v3() {
    crate::apiserver::lazy::ensure_built(document::is_built, || {
        document::documents();
    })
    .await;
}

/// The serialized document of a group-version (`""` for core), if served.
pub fn document(group: &str, version: &str) -> Option<&'static Document> {
    document::find(&document::key(group, version))
}

async fn index(headers: HeaderMap) -> Response {
    ensure_v3().await;
    let body = serde_json::to_vec(&index_json()).unwrap_or_default();
    let etag = format!("\"{}\"", hash_hex(&body));
    if not_modified(&headers, &etag) {
        return cached(StatusCode::NOT_MODIFIED, &etag, "no-cache, private", Body::empty());
    }
    cached(StatusCode::OK, &etag, "no-cache, private", Body::from(body))
}

/// The media type /openapi/v2 protobuf is answered with (kubectl asks for it with `@v1.0`, a
/// form Go's media type parser rejects in a response, so the answer spells it `.v1.0`).
pub const PROTOBUF_V2: &str = "application/com.github.proto-openapi.spec.v2.v1.0+protobuf";

async fn swagger_v2(headers: HeaderMap) -> Response {
    crate::apiserver::lazy::ensure_built(v2::is_built, || {
        v2::swagger();
    })
    .await;
    let doc = v2::swagger();
    let wants_protobuf = headers
        .get_all(axum::http::header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("protobuf"));
    let (etag, body, media) = if wants_protobuf {
        (format!("\"{}-pb\"", doc.hash), doc.protobuf.clone(), PROTOBUF_V2)
    } else {
        (format!("\"{}\"", doc.hash), doc.json.clone(), "application/json")
    };
    let (status, body) = if not_modified(&headers, &etag) {
        (StatusCode::NOT_MODIFIED, Body::empty())
    } else {
        (StatusCode::OK, Body::from(body))
    };
    let mut response = cached(status, &etag, "no-cache, private", body);
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(media));
    response.headers_mut().insert(axum::http::header::VARY, HeaderValue::from_static("Accept"));
    response
}

async fn core_document(Path(version): Path<String>, headers: HeaderMap, uri: Uri) -> Response {
    ensure_v3().await;
    serve(&document::key("", &version), &headers, &uri)
}

async fn group_document(
    Path((group, version)): Path<(String, String)>,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    ensure_v3().await;
    serve(&document::key(&group, &version), &headers, &uri)
}

fn serve(key: &str, headers: &HeaderMap, uri: &Uri) -> Response {
    let Some(doc) = document::find(key) else {
        return ApiError::new(
            404,
            "NotFound",
            format!("the server could not find /openapi/v3/{key}"),
        )
        .into_response();
    };
    let etag = format!("\"{}\"", doc.hash);
    let asked = query_value(uri, "hash");
    match asked {
        Some(hash) if hash != doc.hash => {
            let location = format!("/openapi/v3/{}?hash={}", doc.key, doc.hash);
            let mut response = StatusCode::MOVED_PERMANENTLY.into_response();
            if let Ok(v) = HeaderValue::from_str(&location) {
                response.headers_mut().insert(LOCATION, v);
            }
            response
        }
        Some(_) => {
            let status = if not_modified(headers, &etag) {
                StatusCode::NOT_MODIFIED
            } else {
                StatusCode::OK
            };
            let body =
                if status == StatusCode::OK { Body::from(doc.body.clone()) } else { Body::empty() };
            let mut response = cached(status, &etag, "public, immutable", body);
            let expires = (chrono::Utc::now() + chrono::Duration::days(365))
                .format("%a, %d %b %Y %H:%M:%S GMT")
                .to_string();
            if let Ok(v) = HeaderValue::from_str(&expires) {
                response.headers_mut().insert(EXPIRES, v);
            }
            response
        }
        None if not_modified(headers, &etag) => {
            cached(StatusCode::NOT_MODIFIED, &etag, "no-cache, private", Body::empty())
        }
        None => cached(StatusCode::OK, &etag, "no-cache, private", Body::from(doc.body.clone())),
    }
}

fn cached(status: StatusCode, etag: &str, cache_control: &'static str, body: Body) -> Response {
    let mut response = (status, body).into_response();
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static(cache_control));
    if let Ok(v) = HeaderValue::from_str(etag) {
        headers.insert(ETAG, v);
    }
    response
}

fn not_modified(headers: &HeaderMap, etag: &str) -> bool {
    headers
        .get_all(IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|tag| {
            let tag = tag.trim();
            tag == "*" || tag == etag || tag.strip_prefix("W/") == Some(etag)
        })
}

fn query_value(uri: &Uri, name: &str) -> Option<String> {
    uri.query()?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name).then(|| v.to_string())
    })
}

#[cfg(test)]
mod tests;
