//! /metrics in the Prometheus (OpenMetrics) text format: request counts and latencies by verb and
//! resource, long-running requests and requests in flight, and figures from the store.
//!
//! [`middleware`] is the outermost request stage: it parses the request's
//! [`RequestAttributes`] once (authorization reuses them), records the outcome, and keeps
//! long-running responses (watches) out of gzip by dropping their Accept-Encoding.

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use super::authz::RequestAttributes;
use super::status::ApiError;
use crate::store::Store;

/// Latency buckets (seconds), as upstream's request-duration histogram roughly uses.
const DURATION_BUCKETS: [f64; 16] =
    [0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    verb: &'static str,
    group: String,
    resource: String,
    subresource: String,
    code: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DurationLabels {
    verb: &'static str,
    group: String,
    resource: String,
    subresource: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    request_kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BackendLabels {
    backend: &'static str,
}

type HistogramFamily = Family<DurationLabels, Histogram, fn() -> Histogram>;

/// The server's metrics. Cheap to share (`Arc`).
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    durations: HistogramFamily,
    longrunning: Family<DurationLabels, Gauge>,
    inflight: Family<KindLabels, Gauge>,
    rejected: Family<KindLabels, Counter>,
    store_revision: Gauge,
    store_info: Family<BackendLabels, Gauge>,
    resident_memory: Gauge,
    store: OnceLock<Store>,
}

impl Metrics {
    pub fn new() -> Arc<Metrics> {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        let durations: HistogramFamily =
            Family::new_with_constructor(|| Histogram::new(DURATION_BUCKETS.iter().copied()));
        let longrunning = Family::<DurationLabels, Gauge>::default();
        let inflight = Family::<KindLabels, Gauge>::default();
        let rejected = Family::<KindLabels, Counter>::default();
        let store_revision = Gauge::default();
        let store_info = Family::<BackendLabels, Gauge>::default();
        let resident_memory = Gauge::default();
        let start_time = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "apiserver_request",
            "Requests by verb, group, resource, subresource and HTTP response code",
            requests.clone(),
        );
        registry.register(
            "apiserver_request_duration_seconds",
            "Time to answer a request (to the response head), by verb, group and resource",
            durations.clone(),
        );
        registry.register(
            "apiserver_longrunning_requests",
            "Long-running requests (watches, exec, logs) currently open",
            longrunning.clone(),
        );
        registry.register(
            "apiserver_current_inflight_requests",
            "Requests being served that count against the in-flight limit",
            inflight.clone(),
        );
        registry.register(
            "apiserver_dropped_requests",
            "Requests refused with 429 because the in-flight limit was reached",
            rejected.clone(),
        );
        registry.register(
            "skiff_store_revision",
            "The latest revision the store has applied",
            store_revision.clone(),
        );
        registry.register(
            "skiff_store_info",
            "The storage backend in use (value is always 1)",
            store_info.clone(),
        );
        registry.register(
            "process_resident_memory_bytes",
            "Resident memory size in bytes",
            resident_memory.clone(),
        );
        registry.register(
            "process_start_time_seconds",
            "Start time of the process since the Unix epoch in seconds",
            start_time.clone(),
        );
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or_default();
        start_time.set(now);
        Arc::new(Metrics {
            registry,
            requests,
            durations,
            longrunning,
            inflight,
            rejected,
            store_revision,
            store_info,
            resident_memory,
            store: OnceLock::new(),
        })
    }

    /// Makes the store's figures part of every scrape.
    pub fn set_store(&self, store: Store) {
        self.store_info.get_or_create(&BackendLabels { backend: store.backend_name() }).set(1);
        let _ = self.store.set(store);
    }

    /// Counts a request entering (true) or leaving (false) the in-flight limit.
    pub fn inflight(&self, mutating: bool, entering: bool) {
        let g = self.inflight.get_or_create(&kind(mutating));
        if entering {
            g.inc();
        } else {
            g.dec();
        }
    }

    /// Counts a request refused by the in-flight limit.
    pub fn rejected(&self, mutating: bool) {
        self.rejected.get_or_create(&kind(mutating)).inc();
    }

    /// The text exposition of every metric.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        if let Some(store) = self.store.get() {
            self.store_revision.set(store.revision());
        }
        if let Some(rss) = resident_memory_bytes() {
            self.resident_memory.set(rss);
        }
        let mut out = String::with_capacity(16 * 1024);
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

fn kind(mutating: bool) -> KindLabels {
    KindLabels { request_kind: if mutating { "mutating" } else { "readOnly" } }
}

/// The /metrics handler.
pub async fn handler(State(metrics): State<Arc<Metrics>>) -> Response {
    match metrics.encode() {
        Ok(text) => (
            [(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")],
            text,
        )
            .into_response(),
        Err(_) => ApiError::internal("cannot encode metrics").into_response(),
    }
}

/// Decrements the long-running gauge when the response body is dropped.
struct LongRunningGuard {
    metrics: Arc<Metrics>,
    labels: DurationLabels,
}

impl Drop for LongRunningGuard {
    fn drop(&mut self) {
        self.metrics.longrunning.get_or_create(&self.labels).dec();
    }
}

/// The outermost middleware (see the module docs).
pub async fn middleware(
    State(metrics): State<Arc<Metrics>>,
    mut req: Request,
    next: Next,
) -> Response {
    let method = req.method().clone();
    let attrs = RequestAttributes::parse(&method, req.uri(), req.headers());
    let labels = DurationLabels {
        verb: attrs.metrics_verb(&method),
        group: attrs.api_group.clone(),
        resource: attrs.resource.clone(),
        subresource: attrs.subresource.clone(),
    };
    let long_running = attrs.long_running;
    if long_running {
        // Streams must reach the client as they are written: never compress them.
        req.headers_mut().remove(header::ACCEPT_ENCODING);
    }
    req.extensions_mut().insert(attrs);

    let start = Instant::now();
    let response = next.run(req).await;
    let code = response.status().as_u16();
    metrics
        .requests
        .get_or_create(&RequestLabels {
            verb: labels.verb,
            group: labels.group.clone(),
            resource: labels.resource.clone(),
            subresource: labels.subresource.clone(),
            code,
        })
        .inc();
    if !long_running {
        metrics.durations.get_or_create(&labels).observe(start.elapsed().as_secs_f64());
        return response;
    }
    if !response.status().is_success() {
        return response;
    }
    // Keep the long-running gauge up for as long as the response body is being streamed.
    metrics.longrunning.get_or_create(&labels).inc();
    let guard = LongRunningGuard { metrics: metrics.clone(), labels };
    let (parts, body) = response.into_parts();
    let stream = body.into_data_stream().map(move |chunk| {
        let _keep = &guard;
        chunk
    });
    Response::from_parts(parts, Body::from_stream(stream))
}

/// The process's resident set size, from /proc (Linux).
pub fn resident_memory_bytes() -> Option<i64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: i64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages * if page > 0 { page as i64 } else { 4096 })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_the_metric_names() {
        let m = Metrics::new();
        m.requests
            .get_or_create(&RequestLabels {
                verb: "LIST",
                group: String::new(),
                resource: "pods".into(),
                subresource: String::new(),
                code: 200,
            })
            .inc();
        m.inflight(false, true);
        let text = m.encode().expect("encode");
        for name in [
            "apiserver_request_total",
            "apiserver_current_inflight_requests",
            "process_resident_memory_bytes",
            "process_start_time_seconds",
        ] {
            assert!(text.contains(name), "{name} missing:\n{text}");
        }
        assert!(resident_memory_bytes().is_some_and(|r| r > 0));
    }
}
