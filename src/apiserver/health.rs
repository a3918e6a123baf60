//! /healthz, /livez and /readyz with their per-check sub-paths, `?verbose` and `?exclude=`, in
//! upstream's plain-text shape ("[+]ping ok" lines, then "<endpoint> check passed").
//!
//! /healthz and /livez pass as soon as the server answers (unless the datastore failed); /readyz
//! also waits for the datastore to be open and the bootstrap objects to exist, fails while the
//! datastore does not answer its periodic probe ([`probe_datastore`]), and fails again once
//! shutdown has begun. A failing /readyz answers 503; failing /healthz and /livez answer 500.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

/// Readiness facts the checks read, set by the server as start-up proceeds.
#[derive(Debug, Default)]
pub struct Health {
    store_open: AtomicBool,
    store_failed: AtomicBool,
    /// The last datastore probe failed (cleared by the next that passes).
    store_unreachable: AtomicBool,
    bootstrapped: AtomicBool,
    shutting_down: AtomicBool,
}

impl Health {
    pub fn new() -> Arc<Health> {
        Arc::new(Health::default())
    }
    pub fn set_store_open(&self) {
        self.store_open.store(true, Ordering::Release);
    }
    pub fn set_store_failed(&self) {
        self.store_failed.store(true, Ordering::Release);
    }
    pub fn set_store_reachable(&self, reachable: bool) {
        self.store_unreachable.store(!reachable, Ordering::Release);
    }

    pub fn set_bootstrapped(&self) {
        self.bootstrapped.store(true, Ordering::Release);
    }
    pub fn set_shutting_down(&self) {
        self.shutting_down.store(true, Ordering::Release);
    }
    /// Whether /readyz passes.
    pub fn is_ready(&self) -> bool {
        Endpoint::Readyz.checks().iter().all(|c| self.run(*c).is_ok())
    }

    fn run(&self, check: Check) -> Result<(), &'static str> {
        let ok = |b: bool, why| if b { Ok(()) } else { Err(why) };
        match check {
            Check::Ping | Check::Log => Ok(()),
            Check::Etcd => ok(!self.store_failed.load(Ordering::Acquire), "the datastore failed"),
            Check::EtcdReadiness => {
                ok(self.store_open.load(Ordering::Acquire), "the datastore is not open yet")?;
                ok(!self.store_unreachable.load(Ordering::Acquire), "the datastore does not answer")
            }
            Check::Bootstrap => {
                ok(self.bootstrapped.load(Ordering::Acquire), "bootstrap not finished")
            }
            Check::Shutdown => {
                ok(!self.shutting_down.load(Ordering::Acquire), "the server is shutting down")
            }
        }
    }
}

/// How often, and how long at most, the datastore is asked for its revision.
pub const PROBE_PERIOD: std::time::Duration = std::time::Duration::from_secs(2);

/// Asks the datastore for its current revision every [`PROBE_PERIOD`] (with the same timeout)
/// and records whether it answered, for /readyz's etcd-readiness check. Ends when shutdown
/// begins or the datastore is closed (it holds no strong reference between probes).
pub async fn probe_datastore(health: Arc<Health>, backend: Arc<dyn crate::store::Backend>) {
    let backend = Arc::downgrade(&backend);
    let mut last = true;
    loop {
        tokio::time::sleep(PROBE_PERIOD).await;
        if health.shutting_down.load(Ordering::Acquire) {
            return;
        }
        let Some(backend) = backend.upgrade() else { return };
        let answer = tokio::time::timeout(PROBE_PERIOD, backend.current_revision()).await;
        let reachable = matches!(answer, Ok(Ok(_)));
        if reachable != last {
            match &answer {
                Ok(Ok(_)) => tracing::info!(backend = backend.name(), "datastore answers again"),
                Ok(Err(e)) => {
                    tracing::warn!(backend = backend.name(), error = %e, "datastore probe failed")
                }
                Err(_) => tracing::warn!(backend = backend.name(), "datastore probe timed out"),
            }
            last = reachable;
        }
        health.set_store_reachable(reachable);
    }
}

/// The health routes (no authentication needed; see authn).
pub fn router(health: Arc<Health>) -> Router {
    let mut r = Router::new();
    for ep in [Endpoint::Healthz, Endpoint::Livez, Endpoint::Readyz] {
        let all = move |State(h): State<Arc<Health>>, Query(q): Query<HashMap<String, String>>| async move {
            overall(&h, ep, &q)
        };
        let one = move |State(h): State<Arc<Health>>, Path(name): Path<String>| async move {
            single(&h, ep, &name)
        };
        r = r.route(ep.path(), get(all)).route(&format!("{}/{{*check}}", ep.path()), get(one));
    }
    r.with_state(health)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Endpoint {
    Healthz,
    Livez,
    Readyz,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Check {
    Ping,
    Log,
    Etcd,
    EtcdReadiness,
    Bootstrap,
    Shutdown,
}

impl Check {
    fn name(self) -> &'static str {
        match self {
            Check::Ping => "ping",
            Check::Log => "log",
            Check::Etcd => "etcd",
            Check::EtcdReadiness => "etcd-readiness",
            Check::Bootstrap => "poststarthook/skiff-bootstrap",
            Check::Shutdown => "shutdown",
        }
    }
}

impl Endpoint {
    fn path(self) -> &'static str {
        match self {
            Endpoint::Healthz => "/healthz",
            Endpoint::Livez => "/livez",
            Endpoint::Readyz => "/readyz",
        }
    }
    fn label(self) -> &'static str {
        &self.path()[1..]
    }
    fn checks(self) -> &'static [Check] {
        match self {
            Endpoint::Healthz | Endpoint::Livez => &[Check::Ping, Check::Log, Check::Etcd],
            Endpoint::Readyz => &[
                Check::Ping,
                Check::Log,
                Check::Etcd,
                Check::EtcdReadiness,
                Check::Bootstrap,
                Check::Shutdown,
            ],
        }
    }
    fn failure_code(self) -> StatusCode {
        match self {
            Endpoint::Readyz => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

fn overall(h: &Health, ep: Endpoint, q: &HashMap<String, String>) -> Response {
    let verbose = q.contains_key("verbose");
    let excluded: Vec<&str> =
        q.get("exclude").map(|e| e.split(',').map(str::trim).collect()).unwrap_or_default();
    let mut lines = String::new();
    let mut failed = false;
    for check in ep.checks() {
        if excluded.contains(&check.name()) {
            lines.push_str(&format!("[+]{} excluded: ok\n", check.name()));
            continue;
        }
        match h.run(*check) {
            Ok(()) => lines.push_str(&format!("[+]{} ok\n", check.name())),
            Err(_) => {
                failed = true;
                lines.push_str(&format!("[-]{} failed: reason withheld\n", check.name()));
            }
        }
    }
    if failed {
        let body = format!("{lines}{} check failed\n", ep.label());
        return text(ep.failure_code(), body);
    }
    if verbose {
        return text(StatusCode::OK, format!("{lines}{} check passed\n", ep.label()));
    }
    text(StatusCode::OK, "ok".to_string())
}

fn single(h: &Health, ep: Endpoint, name: &str) -> Response {
    let check =
        ep.checks().iter().find(|c| c.name() == name || c.name().ends_with(&format!("/{name}")));
    match check {
        None => text(StatusCode::NOT_FOUND, "404 page not found\n".to_string()),
        Some(c) => match h.run(*c) {
            Ok(()) => text(StatusCode::OK, "ok".to_string()),
            Err(why) => text(ep.failure_code(), format!("internal server error: {why}\n")),
        },
    }
}

fn text(code: StatusCode, body: String) -> Response {
    (
        code,
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn readyz_waits_for_the_store_and_bootstrap() {
        let h = Health::default();
        assert_eq!(overall(&h, Endpoint::Livez, &q(&[])).status(), StatusCode::OK);
        assert_eq!(
            overall(&h, Endpoint::Readyz, &q(&[])).status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
        h.set_store_open();
        h.set_bootstrapped();
        assert!(h.is_ready());
        assert_eq!(overall(&h, Endpoint::Readyz, &q(&[])).status(), StatusCode::OK);
        assert_eq!(single(&h, Endpoint::Readyz, "ping").status(), StatusCode::OK);
        assert_eq!(single(&h, Endpoint::Readyz, "nope").status(), StatusCode::NOT_FOUND);
        h.set_shutting_down();
        assert!(!h.is_ready());
        assert_eq!(
            overall(&h, Endpoint::Readyz, &q(&[("exclude", "shutdown")])).status(),
            StatusCode::OK
        );
    }
}
