//! (in progress) OpenAPI v3 documents for every served group-version.
use axum::Router;

/// The routes under /openapi/v3.
pub fn openapi_router() -> Router {
    Router::new()
}
