//! The worker loop every controller shares: take a key from the work queue, reconcile it, then
//! forget it (success), queue it again later (requeue), or retry it with backoff (failure).

use std::future::Future;
use std::time::Duration;

use super::informer::spawn_named;
use super::queue::WorkQueue;

/// What a reconcile asks for after succeeding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Nothing until the next change.
    Done,
    /// Look again after this long (a time-based condition, such as minReadySeconds).
    RequeueAfter(Duration),
}

/// Runs `workers` workers over `queue` until the process ends.
pub async fn run_workers<F, Fut, E>(
    controller: &'static str,
    queue: WorkQueue,
    workers: usize,
    reconcile: F,
) where
    F: Fn(String) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<Action, E>> + Send + 'static,
    E: std::error::Error + Send + 'static,
{
    let mut handles = Vec::with_capacity(workers.max(1));
    for i in 0..workers.max(1) {
        let (queue, reconcile) = (queue.clone(), reconcile.clone());
        let name = format!("{controller}-worker-{i}");
        handles.push(spawn_named(&name, async move {
            loop {
                let key = queue.get().await;
                let started = std::time::Instant::now();
                match reconcile(key.clone()).await {
                    Ok(action) => {
                        queue.forget(&key);
                        if let Action::RequeueAfter(d) = action {
                            queue.add_after(key.clone(), d);
                        }
                    }
                    Err(e) => {
                        tracing::warn!(
                            controller,
                            key = %key,
                            failures = queue.failures(&key),
                            error = %error_chain(&e),
                            "reconcile failed; retrying"
                        );
                        queue.add_rate_limited(key.clone());
                    }
                }
                tracing::trace!(controller, key = %key, elapsed_us = started.elapsed().as_micros() as u64, "reconciled");
                queue.done(&key);
            }
        }));
    }
    let _guard = super::AbortOnDrop(handles.iter().map(|h| h.abort_handle()).collect());
    futures::future::join_all(handles).await;
}

/// An error and its causes, joined with ": " (for logs).
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let s = c.to_string();
        if !out.contains(&s) {
            out.push_str(": ");
            out.push_str(&s);
        }
        cur = c.source();
    }
    out
}
