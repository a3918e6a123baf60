//! Large read-only data built on first use rather than at start-up (the OpenAPI documents, the
//! type schemas behind strategic merge patch): the build runs on a blocking thread, so the async
//! workers keep serving meanwhile, and the build's scratch memory goes back to the system
//! afterwards. Idle memory right after start stays small (issue #3: under 40 MB).

/// Runs `build` on a blocking thread unless `built` says it has already run, and waits for it.
/// Concurrent callers may each start a thread; the builds themselves are once-only
/// (`OnceLock`), so the later ones just wait for the first.
pub async fn ensure_built(built: fn() -> bool, build: fn()) {
    if built() {
        return;
    }
    let started = std::time::Instant::now();
    let done = tokio::task::spawn_blocking(move || {
        build();
        release_free_memory();
    })
    .await;
    if let Err(e) = done {
        // The caller builds inline on its own use; nothing is lost but the worker's time.
        tracing::warn!(error = %e, "a lazy build did not finish on its thread");
    }
    tracing::debug!(elapsed_ms = started.elapsed().as_millis() as u64, "lazy build done");
}

/// Hands free heap pages back to the system. glibc keeps freed memory in its arenas for reuse;
/// after a one-time build that allocated tens of megabytes of scratch values, it would otherwise
/// stay resident for the life of the process.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free memory to the system; it may be called at any time
    // from any thread and touches no memory the program still uses.
    unsafe {
        libc::malloc_trim(0);
    }
}
