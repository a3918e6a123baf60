//! Storage benchmark (run by scripts/bench-store): durable creates at 1, 16 and 64 writers with
//! latency percentiles, a 10,000-object list from the cache, one write fanned out to 1,000
//! watchers, the database size after a churn run, and the same create load against Debian's
//! etcd-server for the skiff/etcd ratio. It prints figures; it asserts nothing.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use skiff::store::etcd::{EtcdBackend, EtcdTls};
use skiff::store::sqlite::{SqliteBackend, SqliteOptions};
use skiff::store::{Backend, CacheOptions, ListOptions, Store};
use skiff::testing::etcd_server::EtcdServer;

const VALUE_BYTES: usize = 1024;

fn value(i: usize) -> Bytes {
    let mut v = format!("{{\"i\":{i},\"pad\":\"").into_bytes();
    v.resize(VALUE_BYTES - 2, b'x');
    v.extend_from_slice(b"\"}");
    Bytes::from(v)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

async fn sqlite_store(dir: &tempfile::TempDir, opts: SqliteOptions) -> Store {
    let backend =
        SqliteBackend::open(&SqliteBackend::db_path(dir.path()), opts).expect("open sqlite");
    Store::open(Arc::new(backend), CacheOptions::default()).await.expect("open store")
}

struct Run {
    per_sec: f64,
    p50: Duration,
    p99: Duration,
}

/// `writers` tasks create keys as fast as they can for about `secs` seconds.
async fn creates(store: &Store, writers: usize, secs: f64, tag: &str) -> Run {
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let started = Instant::now();
    let tasks: Vec<_> = (0..writers)
        .map(|w| {
            let store = store.clone();
            let tag = tag.to_string();
            tokio::spawn(async move {
                let mut lat = Vec::new();
                let mut i = 0;
                while Instant::now() < deadline {
                    let t = Instant::now();
                    store.create(&format!("/bench/{tag}/{w}/{i}"), value(i)).await.expect("create");
                    lat.push(t.elapsed());
                    i += 1;
                }
                lat
            })
        })
        .collect();
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await.expect("writer"));
    }
    let elapsed = started.elapsed().as_secs_f64();
    lat.sort();
    Run {
        per_sec: lat.len() as f64 / elapsed,
        p50: percentile(&lat, 0.5),
        p99: percentile(&lat, 0.99),
    }
}

async fn list_10k(store: &Store) {
    let writers = 32;
    let tasks: Vec<_> = (0..writers)
        .map(|w| {
            let store = store.clone();
            tokio::spawn(async move {
                for i in (w..10_000).step_by(writers) {
                    store.create(&format!("/list/{i:05}"), value(i)).await.expect("create");
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("loader");
    }
    let mut lat = Vec::new();
    for _ in 0..30 {
        let t = Instant::now();
        let page = store.list("/list/", &ListOptions::default()).await.expect("list");
        lat.push(t.elapsed());
        assert_eq!(page.items.len(), 10_000);
    }
    lat.sort();
    println!(
        "list 10,000 x 1 KiB from the cache: p50 {}, p99 {}",
        ms(percentile(&lat, 0.5)),
        ms(percentile(&lat, 0.99))
    );
}

async fn fan_out(store: &Store) {
    let watchers = 1000;
    let mut lat = Vec::new();
    for round in 0..30 {
        let from = store.revision();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let mut tasks = Vec::new();
        for _ in 0..watchers {
            let mut w = store.watch("/fan/", from);
            let tx = tx.clone();
            tasks.push(tokio::spawn(async move {
                if let Some(Ok(_)) = w.next().await {
                    let _ = tx.send(Instant::now());
                }
            }));
        }
        tokio::task::yield_now().await;
        let t = Instant::now();
        store.create(&format!("/fan/{round}"), value(round)).await.expect("create");
        let mut last = t;
        for _ in 0..watchers {
            last = last.max(rx.recv().await.expect("delivery"));
        }
        lat.push(last - t);
        for task in tasks {
            let _ = task.await;
        }
    }
    lat.sort();
    println!(
        "one write reaching 1,000 watchers (write start to last delivery): p50 {}, p99 {}",
        ms(percentile(&lat, 0.5)),
        ms(percentile(&lat, 0.99))
    );
}

async fn churn(rewrites: usize) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = sqlite_store(&dir, SqliteOptions::default()).await;
    let key = "/churn/key";
    store.create(key, value(0)).await.expect("create");
    let started = Instant::now();
    let writers = 16;
    let tasks: Vec<_> = (0..writers)
        .map(|w| {
            let store = store.clone();
            tokio::spawn(async move {
                for i in (w..rewrites).step_by(writers) {
                    store.update(key, value(i), None).await.expect("update");
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("churn writer");
    }
    let elapsed = started.elapsed();
    let db = SqliteBackend::db_path(dir.path());
    let size = disk_size(&db);
    println!(
        "churn: one 1 KiB key rewritten {rewrites} times in {:.1} s; database + WAL {:.2} MiB right after",
        elapsed.as_secs_f64(),
        size as f64 / 1048576.0
    );
    // Let background compaction and vacuum catch up as they would during an hour-long run.
    tokio::time::sleep(SqliteOptions::default().compaction_interval * 2 + Duration::from_secs(1))
        .await;
    println!(
        "churn: database + WAL {:.2} MiB after background compaction (live data: 1 key of 1 KiB)",
        disk_size(&db) as f64 / 1048576.0
    );
}

fn disk_size(db: &std::path::Path) -> u64 {
    let mut total = 0;
    for suffix in ["", "-wal", "-shm"] {
        let mut p = db.as_os_str().to_owned();
        p.push(suffix);
        total += std::fs::metadata(&p).map(|m| m.len()).unwrap_or(0);
    }
    total
}

async fn etcd_creates(writers: usize, secs: f64) -> Option<Run> {
    let server = match tokio::task::spawn_blocking(EtcdServer::start).await.expect("join") {
        Ok(s) => s,
        Err(e) => {
            println!("etcd: not run ({e})");
            return None;
        }
    };
    let backend: Arc<dyn Backend> = Arc::new(
        EtcdBackend::connect(&server.endpoint_url(), EtcdTls::default())
            .await
            .expect("connect etcd"),
    );
    let store = Store::open(backend, CacheOptions::default()).await.expect("store over etcd");
    Some(creates(&store, writers, secs, "etcd").await)
}

#[tokio::main]
async fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let secs = if quick { 1.0 } else { 5.0 };
    // `--writers N`: only the SQLite create load at N writers (for profiling).
    let only: Option<usize> = std::env::args()
        .skip_while(|a| a != "--writers")
        .nth(1)
        .map(|n| n.parse().expect("--writers takes a number"));
    println!("skiff store benchmark (SQLite WAL, synchronous=FULL; values of {VALUE_BYTES} bytes)");
    let mut sqlite64 = None;
    for writers in only.map_or(vec![1, 16, 64], |n| vec![n]) {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = sqlite_store(&dir, SqliteOptions::default()).await;
        let run = creates(&store, writers, secs, "c").await;
        println!(
            "sqlite durable creates, {writers:>2} writers: {:>8.0}/s  p50 {}  p99 {}",
            run.per_sec,
            ms(run.p50),
            ms(run.p99)
        );
        if writers == 64 {
            sqlite64 = Some(run.per_sec);
        }
    }
    if only.is_some() {
        return;
    }
    {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = sqlite_store(&dir, SqliteOptions::default()).await;
        list_10k(&store).await;
        fan_out(&store).await;
    }
    churn(if quick { 36_000 } else { 360_000 }).await;
    if let Some(etcd) = etcd_creates(64, secs).await {
        println!(
            "etcd durable creates, 64 writers (same load, etcd-client): {:>8.0}/s  p50 {}  p99 {}",
            etcd.per_sec,
            ms(etcd.p50),
            ms(etcd.p99)
        );
        if let Some(s) = sqlite64 {
            println!("ratio skiff/etcd at 64 writers: {:.2}", s / etcd.per_sec);
        }
    }
}
