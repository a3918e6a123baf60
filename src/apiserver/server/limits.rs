//! Admission limits in front of the API: the in-flight cap (429) and the body size cap (413).

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::header::CONTENT_LENGTH;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use tokio::sync::Semaphore;

use crate::apiserver::authn;
use crate::apiserver::authz::{self, RequestAttributes};
use crate::apiserver::metrics::Metrics;
use crate::apiserver::status::ApiError;

/// A refused request body up to this size is read and discarded before the 413 goes out.
const DRAIN_MAX_BYTES: u64 = 16 * 1024 * 1024;

/// The in-flight cap: long-running requests and health checks are exempt.
pub(super) struct InflightLimit {
    pub(super) permits: Arc<Semaphore>,
    pub(super) metrics: Arc<Metrics>,
}

struct InflightGuard {
    metrics: Arc<Metrics>,
    mutating: bool,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl Drop for InflightGuard {
    fn drop(&mut self) {
        self.metrics.inflight(self.mutating, false);
    }
}

pub(super) async fn inflight_limit(
    State(limit): State<Arc<InflightLimit>>,
    req: Request,
    next: Next,
) -> Response {
    let (exempt, mutating) = match req.extensions().get::<RequestAttributes>() {
        Some(a) => (a.long_running || authn::is_public_path(&a.path), a.is_mutating()),
        None => (authn::is_public_path(req.uri().path()), false),
    };
    // As upstream's exempt priority level (API Priority and Fairness): system:masters (the
    // admin, and the in-process controllers, scheduler and simulated nodes) is never turned
    // away, so the cluster's own work does not fail with 429 under load.
    let exempt = exempt
        || req
            .extensions()
            .get::<crate::apiserver::UserInfo>()
            .is_some_and(|u| u.groups.iter().any(|g| g == authz::MASTERS_GROUP));
    if exempt {
        return next.run(req).await;
    }
    let Ok(permit) = limit.permits.clone().try_acquire_owned() else {
        limit.metrics.rejected(mutating);
        tracing::debug!(path = %req.uri().path(), "too many requests in flight");
        return ApiError::too_many_requests(1).into_response();
    };
    limit.metrics.inflight(mutating, true);
    let _guard = InflightGuard { metrics: limit.metrics.clone(), mutating, _permit: permit };
    next.run(req).await
}

/// Caps request bodies with a 413 Status. A declared length over the cap is refused before the
/// handler runs; a body of unknown length (chunked) is read here up to the cap and handed on
/// whole. A refused body is still read and discarded (up to [`DRAIN_MAX_BYTES`]) so that clients
/// which only read the answer after sending everything (hyper, urllib3) get the 413 rather than
/// a broken pipe.
pub(super) async fn body_limit(State(max): State<usize>, req: Request, next: Next) -> Response {
    let too_large = || {
        ApiError::request_entity_too_large(format!("Request entity too large: limit is {max}"))
            .into_response()
    };
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if let Some(len) = declared {
        if len > max as u64 {
            if len <= DRAIN_MAX_BYTES {
                drain(req.into_body().into_data_stream(), DRAIN_MAX_BYTES).await;
            }
            return too_large();
        }
        return next.run(req).await;
    }
    let long_running = req.extensions().get::<RequestAttributes>().is_some_and(|a| a.long_running);
    let may_have_body = !matches!(
        *req.method(),
        axum::http::Method::GET | axum::http::Method::HEAD | axum::http::Method::CONNECT
    );
    if long_running || !may_have_body || req.headers().contains_key(axum::http::header::UPGRADE) {
        return next.run(req).await;
    }
    let (parts, body) = req.into_parts();
    let mut stream = body.into_data_stream();
    let mut buf = bytes::BytesMut::new();
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(chunk) if buf.len() + chunk.len() > max => {
                drain(stream, DRAIN_MAX_BYTES).await;
                return too_large();
            }
            Ok(chunk) => buf.extend_from_slice(&chunk),
            Err(e) => {
                tracing::debug!(error = %e, "cannot read a request body");
                return ApiError::bad_request("unable to read the request body").into_response();
            }
        }
    }
    next.run(Request::from_parts(parts, Body::from(buf.freeze()))).await
}

/// Reads and discards at most `limit` more bytes of a body (for at most a few seconds).
async fn drain(mut stream: axum::body::BodyDataStream, limit: u64) {
    let mut seen = 0u64;
    let read = async {
        while let Some(Ok(chunk)) = stream.next().await {
            seen += chunk.len() as u64;
            if seen > limit {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(5), read).await;
}

#[cfg(test)]
mod tests {
    use axum::middleware::from_fn_with_state;
    use axum::routing::get;
    use axum::Router;
    use tower::ServiceExt;

    use super::*;

    fn attrs_for(uri: &str) -> RequestAttributes {
        let uri: axum::http::Uri = uri.parse().expect("uri");
        RequestAttributes::parse(&axum::http::Method::GET, &uri, &axum::http::HeaderMap::new())
    }

    fn req(uri: &str) -> Request {
        let mut r = Request::get(uri).body(Body::empty()).expect("request");
        r.extensions_mut().insert(attrs_for(uri));
        r
    }

    #[tokio::test]
    async fn inflight_cap_answers_429_and_exempts_long_running() {
        let permits = Arc::new(Semaphore::new(1));
        let limit = Arc::new(InflightLimit { permits: permits.clone(), metrics: Metrics::new() });
        let gate = Arc::new(Semaphore::new(0));
        let g = gate.clone();
        let app = Router::new()
            .route(
                "/api/v1/pods",
                get(move || {
                    let g = g.clone();
                    async move {
                        let _ = g.acquire().await.map(|p| p.forget());
                        "done"
                    }
                }),
            )
            .layer(from_fn_with_state(limit, inflight_limit));

        let first = tokio::spawn(app.clone().oneshot(req("/api/v1/pods")));
        while permits.available_permits() > 0 {
            tokio::task::yield_now().await;
        }
        let second = app.clone().oneshot(req("/api/v1/pods")).await.expect("infallible");
        assert_eq!(second.status(), 429);
        assert_eq!(second.headers().get("retry-after").and_then(|v| v.to_str().ok()), Some("1"));

        // system:masters is exempt.
        let mut admin = req("/api/v1/pods");
        admin.extensions_mut().insert(crate::apiserver::UserInfo {
            name: "admin".into(),
            uid: String::new(),
            groups: vec![authz::MASTERS_GROUP.into()],
        });
        let admin = tokio::spawn(app.clone().oneshot(admin));

        // A watch is not counted: it reaches the (blocked) handler instead of getting 429.
        let watch = tokio::spawn(app.clone().oneshot(req("/api/v1/pods?watch=true")));
        gate.add_permits(3);
        assert_eq!(admin.await.expect("join").expect("infallible").status(), 200);
        assert_eq!(watch.await.expect("join").expect("infallible").status(), 200);
        assert_eq!(first.await.expect("join").expect("infallible").status(), 200);
        assert_eq!(permits.available_permits(), 1);
    }

    #[tokio::test]
    async fn declared_bodies_over_the_cap_get_413() {
        let app = Router::new()
            .route("/api/v1/namespaces", axum::routing::post(|| async { "created" }))
            .layer(from_fn_with_state(10usize, body_limit));
        let big = Request::post("/api/v1/namespaces")
            .header(CONTENT_LENGTH, "11")
            .body(Body::from("01234567890"))
            .expect("request");
        let r = app.clone().oneshot(big).await.expect("infallible");
        assert_eq!(r.status(), 413);
        let small = Request::post("/api/v1/namespaces")
            .header(CONTENT_LENGTH, "2")
            .body(Body::from("{}"))
            .expect("request");
        assert_eq!(app.oneshot(small).await.expect("infallible").status(), 200);
    }
}
