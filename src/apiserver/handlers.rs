//! (in progress) The REST verbs over the registry.
use axum::Router;

use crate::store::Store;

/// The routes under /api and /apis. Expects a `UserInfo` in each request's extensions.
pub fn api_router(_store: Store) -> Router {
    Router::new()
}
