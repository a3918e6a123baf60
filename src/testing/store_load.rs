//! A write load against the embedded store, for crash tests and quick load checks: concurrent
//! writers create and update keys through the watch cache, and every acknowledged write is
//! printed as one line `ack KEY REVISION VALUE`, so a test can kill the process at any moment and
//! then check that everything acknowledged survived.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use crate::store::sqlite::{SqliteBackend, SqliteOptions};
use crate::store::{CacheOptions, Store, StoreError};

/// Keys each writer cycles through.
const KEYS_PER_WRITER: u64 = 16;

/// Runs `writers` writers until the process is killed (or `limit` writes each, when given).
pub async fn run(
    data_dir: &Path,
    writers: usize,
    run_id: &str,
    limit: Option<u64>,
) -> anyhow::Result<()> {
    let opts = SqliteOptions {
        // Keep the whole history so a checker can read every acknowledged revision back.
        compaction_interval: Duration::from_secs(24 * 3600),
        ..SqliteOptions::default()
    };
    let backend = SqliteBackend::open(&SqliteBackend::db_path(data_dir), opts)?;
    let store = Store::open(Arc::new(backend), CacheOptions::default()).await?;
    let out = Arc::new(parking_lot::Mutex::new(std::io::stdout()));
    let tasks: Vec<_> = (0..writers)
        .map(|w| {
            let (store, out, run_id) = (store.clone(), out.clone(), run_id.to_string());
            tokio::spawn(async move { writer(store, out, w, run_id, limit).await })
        })
        .collect();
    for t in tasks {
        t.await??;
    }
    Ok(())
}

async fn writer(
    store: Store,
    out: Arc<parking_lot::Mutex<std::io::Stdout>>,
    w: usize,
    run_id: String,
    limit: Option<u64>,
) -> anyhow::Result<()> {
    let mut i = 0u64;
    while limit.is_none_or(|l| i < l) {
        let key = format!("/load/{run_id}/w{w}/k{}", i % KEYS_PER_WRITER);
        let value = format!("{run_id}.{w}.{i}");
        let bytes = Bytes::from(value.clone());
        let kv = match store.update(&key, bytes.clone(), None).await {
            Err(StoreError::NotFound { .. }) => store.create(&key, bytes).await?,
            other => other?,
        };
        {
            let mut out = out.lock();
            writeln!(out, "ack {key} {} {value}", kv.mod_revision)?;
            out.flush()?;
        }
        i += 1;
    }
    Ok(())
}
