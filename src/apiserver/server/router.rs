//! The router: the request stages in front of the API (see the module docs of
//! [`super`] for their order) and the hand-off to the API and OpenAPI routers once the store is
//! open.

use std::sync::{Arc, OnceLock};

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::middleware::{from_fn_with_state, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use futures::StreamExt;
use tokio::sync::{watch, Semaphore};
use tower::ServiceExt;
use tower_http::compression::predicate::Predicate;
use tower_http::compression::CompressionLayer;

use super::limits::{body_limit, inflight_limit, InflightLimit};
use super::stopped;
use crate::apiserver::authn::{self, Authenticator};
use crate::apiserver::authz::{self, AuthorizerHandle, DefaultPolicy, RequestAttributes};
use crate::apiserver::config::ServerConfig;
use crate::apiserver::health::{self, Health};
use crate::apiserver::metrics::{self, Metrics};
use crate::apiserver::status::ApiError;
use crate::apiserver::version;

/// Complete response bodies at least this large are gzipped for clients that accept it.
const COMPRESS_MIN_BYTES: u64 = 1024;

/// The routers that need the store, installed once it is open.
#[derive(Clone)]
pub(super) struct ApiRoutes {
    pub(super) api: Router,
    pub(super) openapi: Router,
}

pub(super) fn build_app(
    config: &ServerConfig,
    authenticator: Authenticator,
    ca_pem: &str,
    health: Arc<Health>,
    metrics: Arc<Metrics>,
    api: Arc<OnceLock<ApiRoutes>>,
    stop: watch::Receiver<bool>,
) -> Router {
    let authenticator = Arc::new(authenticator);
    let ca_pem = ca_pem.to_string();
    let authorizer = AuthorizerHandle(Arc::new(DefaultPolicy));
    let limit = Arc::new(InflightLimit {
        permits: Arc::new(Semaphore::new(config.max_requests_inflight.max(1))),
        metrics: metrics.clone(),
    });
    Router::new()
        .merge(health::router(health))
        .merge(version::router())
        .route("/metrics", get(metrics::handler).with_state(metrics.clone()))
        .route(crate::apiserver::join::CA_PATH, get(move || std::future::ready(ca_pem.clone())))
        .fallback(move |req: Request| dispatch_api(api.clone(), req))
        .layer(DefaultBodyLimit::max(config.max_request_body_bytes))
        .layer(from_fn_with_state(authorizer, authz::middleware))
        .layer(from_fn_with_state(config.max_request_body_bytes, body_limit))
        .layer(from_fn_with_state(limit, inflight_limit))
        .layer(from_fn_with_state(authenticator, authn::middleware))
        .layer(CompressionLayer::new().gzip(true).compress_when(LargeCompleteBodies))
        .layer(from_fn_with_state(stop, end_streams_on_shutdown))
        .layer(from_fn_with_state(metrics, metrics::middleware))
}

/// Sends /api, /apis and /openapi requests to the routers written by the API layer.
async fn dispatch_api(api: Arc<OnceLock<ApiRoutes>>, req: Request) -> Response {
    let Some(routes) = api.get() else {
        return ApiError::service_unavailable(
            "the server is starting up: the datastore is not ready yet",
        )
        .into_response();
    };
    let path = req.uri().path();
    let router = if path == "/openapi" || path.starts_with("/openapi/") {
        routes.openapi.clone()
    } else {
        routes.api.clone()
    };
    match router.oneshot(req).await {
        Ok(response) => response,
        Err(never) => match never {},
    }
}

/// Ends long-running response streams (watches) when shutdown begins, so connections can drain.
async fn end_streams_on_shutdown(
    State(stop): State<watch::Receiver<bool>>,
    req: Request,
    next: Next,
) -> Response {
    let long_running = req.extensions().get::<RequestAttributes>().is_some_and(|a| a.long_running);
    let response = next.run(req).await;
    if !long_running || !response.status().is_success() {
        return response;
    }
    let mut stop = stop.clone();
    let ended = async move { stopped(&mut stop).await };
    let (parts, body) = response.into_parts();
    let stream = body.into_data_stream().take_until(Box::pin(ended));
    Response::from_parts(parts, Body::from_stream(stream))
}

/// Compresses only complete bodies of a known, large enough size: never streams.
#[derive(Clone, Copy, Debug)]
struct LargeCompleteBodies;

impl Predicate for LargeCompleteBodies {
    fn should_compress<B>(&self, response: &axum::http::Response<B>) -> bool
    where
        B: axum::body::HttpBody,
    {
        let streaming_type = response
            .headers()
            .get(axum::http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| ct.starts_with("text/event-stream"));
        response.status().is_success()
            && !streaming_type
            && response.body().size_hint().exact().is_some_and(|n| n >= COMPRESS_MIN_BYTES)
    }
}
