//! Tests of the SQLite backend's compaction: what it keeps and removes, and the automatic
//! compaction that bounds the file while keeping recent revisions for continued lists.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::tests::{collect, log_rows, manual, open, val};
use super::SqliteOptions;
use crate::store::{Backend, StoreError};

#[tokio::test(flavor = "multi_thread")]
async fn compaction_keeps_live_values_and_removes_history() {
    let dir = tempfile::tempdir().unwrap();
    let opts = SqliteOptions { compaction_step_rows: 3, ..manual() };
    let db = open(dir.path(), opts);
    db.create("/a", val("a0")).await.unwrap(); // 1
    for i in 1..=5 {
        db.update("/a", val(&format!("a{i}")), None).await.unwrap(); // 2..=6
    }
    db.create("/b", val("b")).await.unwrap(); // 7
    db.delete("/b", None).await.unwrap(); // 8
    db.create("/c", val("c")).await.unwrap(); // 9
    db.update("/c", val("c2"), None).await.unwrap(); // 10
    assert_eq!(log_rows(db.path()), 10);

    db.compact(9).await.unwrap();
    assert_eq!(db.compacted_revision().await.unwrap(), 9);
    // Left: /a at 6, /c at 9 (still needed at revision 9) and 10.
    assert_eq!(log_rows(db.path()), 3);
    assert_eq!(db.get_at("/a", 8).await, Err(StoreError::TooOld { requested: 8, oldest: 9 }));
    assert!(matches!(db.list_at("/", None, 0, 3).await, Err(StoreError::TooOld { .. })));
    assert!(matches!(db.events(5).await, Err(StoreError::TooOld { requested: 5, oldest: 9 })));
    let at9 = db.list_at("/", None, 0, 9).await.unwrap();
    let got: Vec<_> =
        at9.items.iter().map(|kv| (kv.key.as_str(), kv.value.clone(), kv.mod_revision)).collect();
    assert_eq!(got, vec![("/a", val("a5"), 6), ("/c", val("c"), 9)]);
    assert_eq!(db.get_at("/c", 0).await.unwrap().unwrap().value, val("c2"));
    assert_eq!(db.get_at("/b", 9).await.unwrap(), None);
    let (items, rev) = db.load().await.unwrap();
    assert_eq!(rev, 10);
    assert_eq!(items.len(), 2);

    let mut stream = db.events(9).await.unwrap();
    let e = collect(&mut stream, 10).await;
    assert_eq!(e.len(), 1);
    assert_eq!(e[0].prev.as_ref().unwrap().value, val("c"));

    assert_eq!(
        db.compact(99).await,
        Err(StoreError::FutureRevision { requested: 99, current: 10 })
    );
    db.compact(4).await.unwrap(); // already compacted past it: nothing to do
    assert_eq!(db.compacted(), 9);
    // Compacting away a trailing tombstone keeps the revision counter.
    db.delete("/c", None).await.unwrap(); // 11
    db.compact(11).await.unwrap();
    assert_eq!(log_rows(db.path()), 1);
    assert_eq!(db.revision(), 11);
    drop(db);
    let db = open(dir.path(), manual());
    assert_eq!((db.revision(), db.compacted()), (11, 11));
    assert_eq!(db.create("/d", val("d")).await.unwrap().mod_revision, 12);
}

/// Rewriting one key many times must not grow the file without bound.
#[tokio::test(flavor = "multi_thread")]
async fn automatic_compaction_bounds_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let opts = SqliteOptions {
        compaction_interval: Duration::from_millis(20),
        retain_revisions: 100,
        retain_time: Duration::ZERO,
        wal_autocheckpoint_pages: 100,
        wal_size_limit: 256 << 10,
        ..Default::default()
    };
    let db = Arc::new(open(dir.path(), opts));
    db.create("/hot", Bytes::from(vec![0u8; 1024])).await.unwrap();
    let writers: Vec<_> = (0..16u8)
        .map(|w| {
            let db = db.clone();
            tokio::spawn(async move {
                for i in 0..1875u32 {
                    let mut value = vec![w; 1024];
                    value[..4].copy_from_slice(&i.to_le_bytes());
                    db.update("/hot", Bytes::from(value), None).await.unwrap();
                }
            })
        })
        .collect();
    let mut peak = 0;
    for w in writers {
        while !w.is_finished() {
            peak = peak.max(db.disk_usage());
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        w.await.unwrap();
    }
    assert_eq!(db.revision(), 30_001);
    tokio::time::sleep(Duration::from_millis(100)).await;
    db.flush().await.unwrap();
    let size = db.disk_usage();
    eprintln!(
        "after 30000 rewrites: {size} bytes on disk (peak {peak}), compacted to {}",
        db.compacted()
    );
    assert!(size < 2 << 20, "database and WAL use {size} bytes after 30000 rewrites");
    assert!(peak < 8 << 20, "peak use {peak} bytes");
    assert!(db.compacted() > 29_000, "compacted to {}", db.compacted());
    assert!(log_rows(db.path()) < 1_000);
    assert_eq!(db.get_at("/hot", 0).await.unwrap().unwrap().mod_revision, 30_001);
}

/// A list continued at the revision of its first page still works after many more writes than
/// `retain_revisions`, as long as that revision is younger than `retain_time`; older, it expires.
#[tokio::test(flavor = "multi_thread")]
async fn automatic_compaction_keeps_recent_revisions_for_continued_lists() {
    let dir = tempfile::tempdir().unwrap();
    let opts = SqliteOptions {
        compaction_interval: Duration::from_millis(20),
        retain_revisions: 10,
        retain_time: Duration::from_millis(5000),
        ..Default::default()
    };
    let db = open(dir.path(), opts);
    for i in 0..20 {
        db.create(&format!("/items/{i:02}"), val("v0")).await.unwrap();
    }
    let first_page = db.revision();
    for round in 1..=30 {
        for i in 0..20 {
            db.update(&format!("/items/{i:02}"), val(&format!("v{round}")), None).await.unwrap();
        }
    }
    // 600 revisions later, with compaction running every 20 ms (retain_time leaves room for a
    // loaded machine: the updates must finish within it).
    tokio::time::sleep(Duration::from_millis(200)).await;
    let page = db.list_at("/items/", Some("/items/10"), 5, first_page).await.unwrap();
    let values: Vec<_> = page.items.iter().map(|kv| kv.value.clone()).collect();
    assert_eq!(values, vec![val("v0"); 5], "the list continues at its first page's revision");
    assert!(db.compacted() < first_page, "compacted to {}", db.compacted());
    // Once the first page is older than retain_time, its revision goes.
    tokio::time::timeout(Duration::from_secs(30), async {
        while db.compacted() < first_page {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("compaction reaches the revision once it is old enough");
    assert!(matches!(
        db.list_at("/items/", Some("/items/10"), 5, first_page - 1).await,
        Err(StoreError::TooOld { .. })
    ));
    // The newest `retain_revisions` stay whatever their age.
    assert!(db.compacted() <= db.revision() - 10);
}
