//! The storage test suite: every behaviour of the store, run against both backends (embedded
//! SQLite, and Debian's etcd-server started on loopback ports) through the watch cache.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use parking_lot::Mutex;
use skiff::store::etcd::{EtcdBackend, EtcdTls};
use skiff::store::sqlite::{SqliteBackend, SqliteOptions};
use skiff::store::{
    Backend, CacheOptions, Event, EventKind, KeyValue, ListOptions, Revision, Store, StoreError,
    Watcher,
};
use skiff::testing::etcd_server::EtcdServer;

/// Where a backend keeps its data, so a test can open it again as after a restart.
enum Fixture {
    Sqlite(tempfile::TempDir),
    Etcd(EtcdServer),
}

impl Fixture {
    fn sqlite() -> Fixture {
        Fixture::Sqlite(tempfile::tempdir().expect("temp dir"))
    }

    async fn etcd() -> Fixture {
        Fixture::Etcd(
            tokio::task::spawn_blocking(EtcdServer::start)
                .await
                .unwrap()
                .expect("start etcd-server"),
        )
    }

    async fn backend(&self) -> Arc<dyn Backend> {
        match self {
            Fixture::Sqlite(dir) => {
                let opts = SqliteOptions {
                    // Compaction is driven by the tests here.
                    compaction_interval: Duration::from_secs(3600),
                    ..SqliteOptions::default()
                };
                Arc::new(
                    SqliteBackend::open(&SqliteBackend::db_path(dir.path()), opts)
                        .expect("open sqlite"),
                )
            }
            Fixture::Etcd(server) => Arc::new(
                EtcdBackend::connect(&server.endpoint_url(), EtcdTls::default())
                    .await
                    .expect("connect etcd"),
            ),
        }
    }

    async fn store_with(&self, opts: CacheOptions) -> Store {
        Store::open(self.backend().await, opts).await.expect("open store")
    }

    async fn store(&self) -> Store {
        self.store_with(CacheOptions::default()).await
    }
}

fn val(s: impl Into<String>) -> Bytes {
    Bytes::from(s.into())
}

/// Takes `n` events from a watcher, failing the test if they do not come within a few seconds.
async fn take(w: &mut Watcher, n: usize) -> Vec<Event> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        match tokio::time::timeout(Duration::from_secs(10), w.next()).await {
            Ok(Some(Ok(ev))) => out.push(ev),
            Ok(Some(Err(e))) => panic!("watch failed after {} events: {e}", out.len()),
            Ok(None) => panic!("watch ended after {} of {n} events", out.len()),
            Err(_) => panic!("timed out after {} of {n} events", out.len()),
        }
    }
    out
}

/// Nothing more arrives on the watcher for a short while.
async fn quiet(w: &mut Watcher) {
    if let Ok(item) = tokio::time::timeout(Duration::from_millis(200), w.next()).await {
        panic!("unexpected watch item: {item:?}");
    }
}

async fn semantics(f: Fixture) {
    let s = f.store().await;
    let a = s.create("/t/a", val("1")).await.unwrap();
    assert_eq!(a.create_revision, a.mod_revision);
    assert!(matches!(s.create("/t/a", val("x")).await, Err(StoreError::AlreadyExists { .. })));
    let b = s.create("/t/b", val("2")).await.unwrap();
    assert!(b.mod_revision > a.mod_revision, "revisions increase");

    let a2 = s.update("/t/a", val("1b"), Some(a.mod_revision)).await.unwrap();
    assert!(a2.mod_revision > b.mod_revision);
    assert_eq!(a2.create_revision, a.create_revision);
    match s.update("/t/a", val("stale"), Some(a.mod_revision)).await {
        Err(StoreError::Conflict { expected, current, .. }) => {
            assert_eq!((expected, current), (a.mod_revision, a2.mod_revision));
        }
        other => panic!("stale update must conflict, got {other:?}"),
    }
    assert!(matches!(s.update("/t/none", val("x"), None).await, Err(StoreError::NotFound { .. })));
    assert!(matches!(s.delete("/t/none", None).await, Err(StoreError::NotFound { .. })));
    assert!(matches!(
        s.delete("/t/a", Some(a.mod_revision)).await,
        Err(StoreError::Conflict { .. })
    ));

    // Reads at the latest revision and at past ones.
    assert_eq!(s.get("/t/a", None).await.unwrap().unwrap().value, val("1b"));
    assert_eq!(s.get("/t/a", Some(a.mod_revision)).await.unwrap().unwrap().value, val("1"));
    assert_eq!(s.get("/t/b", Some(a.mod_revision)).await.unwrap(), None);

    let gone = s.delete("/t/a", Some(a2.mod_revision)).await.unwrap();
    assert_eq!(gone.value, val("1b"), "delete returns the last value");
    assert!(gone.mod_revision > a2.mod_revision);
    assert_eq!(s.get("/t/a", None).await.unwrap(), None);
    assert_eq!(s.get("/t/a", Some(a2.mod_revision)).await.unwrap().unwrap().value, val("1b"));

    // A re-created key starts a new incarnation.
    let a3 = s.create("/t/a", val("new")).await.unwrap();
    assert_eq!(a3.create_revision, a3.mod_revision);
    let page = s.list("/t/", &ListOptions::default()).await.unwrap();
    let keys: Vec<_> = page.items.iter().map(|kv| kv.key.as_str()).collect();
    assert_eq!(keys, ["/t/a", "/t/b"]);
    assert_eq!(page.revision, a3.mod_revision);
    assert!(s.list("/u/", &ListOptions::default()).await.unwrap().items.is_empty());
}

async fn cas_race(f: Fixture) {
    let s = f.store().await;
    let mut current = s.create("/race/k", val("0")).await.unwrap();
    for round in 0..10 {
        let tasks: Vec<_> = (0..64)
            .map(|i| {
                let s = s.clone();
                let expected = current.mod_revision;
                tokio::spawn(async move {
                    s.update("/race/k", val(format!("{round}-{i}")), Some(expected)).await
                })
            })
            .collect();
        let mut winners = Vec::new();
        for t in tasks {
            match t.await.unwrap() {
                Ok(kv) => winners.push(kv),
                Err(StoreError::Conflict { .. }) => {}
                Err(e) => panic!("unexpected error: {e}"),
            }
        }
        assert_eq!(winners.len(), 1, "exactly one writer wins round {round}");
        let stored = s.get("/race/k", None).await.unwrap().unwrap();
        assert_eq!(stored, winners[0]);
        current = stored;
    }
}

/// Writes a mixed history under /w/ (and noise under /x/), returning the expected events.
async fn write_history(s: &Store, n: usize) -> Vec<(EventKind, String, Bytes, Revision)> {
    let mut log = Vec::new();
    let mut live: BTreeMap<String, Revision> = BTreeMap::new();
    for i in 0..n {
        let key = format!("/w/k{}", i % 7);
        let value = val(format!("v{i}"));
        if i % 5 == 4 {
            s.create(&format!("/x/noise{i}"), value.clone()).await.unwrap();
        }
        match live.get(&key).copied() {
            Some(rev) if i % 3 == 0 => {
                let kv = s.delete(&key, Some(rev)).await.unwrap();
                live.remove(&key);
                log.push((EventKind::Delete, key, kv.value, kv.mod_revision));
            }
            Some(rev) => {
                let kv = s.update(&key, value.clone(), Some(rev)).await.unwrap();
                live.insert(key.clone(), kv.mod_revision);
                log.push((EventKind::Update, key, value, kv.mod_revision));
            }
            None => {
                let kv = s.create(&key, value.clone()).await.unwrap();
                live.insert(key.clone(), kv.mod_revision);
                log.push((EventKind::Create, key, value, kv.mod_revision));
            }
        }
    }
    log
}

async fn watch_from_every_revision(f: Fixture) {
    let s = f.store().await;
    let base = s.revision();
    let log = write_history(&s, 120).await;
    let last = log.last().unwrap().3;
    for from in base..=last {
        let expected: Vec<_> = log.iter().filter(|e| e.3 > from).collect();
        let mut w = s.watch("/w/", from);
        let got = take(&mut w, expected.len()).await;
        for (ev, (kind, key, value, rev)) in got.iter().zip(expected) {
            assert_eq!(
                (ev.kind, &ev.kv.key, &ev.kv.value, ev.revision()),
                (*kind, key, value, *rev)
            );
            if ev.kind != EventKind::Create {
                assert!(ev.prev.is_some(), "updates and deletes carry the previous value");
            }
        }
        quiet(&mut w).await;
    }
    // A live watcher sees later writes too, once each.
    let mut w = s.watch("/w/", last);
    let kv = s.create("/w/late", val("l")).await.unwrap();
    let ev = take(&mut w, 1).await;
    assert_eq!((ev[0].kind, ev[0].revision()), (EventKind::Create, kv.mod_revision));
    quiet(&mut w).await;
}

async fn paginated_list_is_consistent_during_writes(f: Fixture) {
    let s = f.store().await;
    for i in 0..300 {
        s.create(&format!("/p/{i:04}"), val(format!("init{i}"))).await.unwrap();
    }
    let base = s.revision();
    let ops: Arc<Mutex<Vec<(Revision, String, Option<Bytes>)>>> = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (s, ops, stop) = (s.clone(), ops.clone(), stop.clone());
        tokio::spawn(async move {
            let mut i = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let key = format!("/p/{:04}", (i * 37) % 320);
                let value = val(format!("w{i}"));
                let res = if i % 4 == 0 {
                    s.delete(&key, None).await.map(|kv| (kv.mod_revision, None))
                } else {
                    match s.update(&key, value.clone(), None).await {
                        Err(StoreError::NotFound { .. }) => s.create(&key, value.clone()).await,
                        other => other,
                    }
                    .map(|kv| (kv.mod_revision, Some(value)))
                };
                if let Ok((rev, v)) = res {
                    ops.lock().push((rev, key, v));
                }
                i += 1;
            }
        })
    };
    let mut snapshots = Vec::new();
    for _ in 0..5 {
        let mut page =
            s.list("/p/", &ListOptions { limit: 40, ..Default::default() }).await.unwrap();
        let revision = page.revision;
        let mut items = std::mem::take(&mut page.items);
        while page.more {
            let opts = ListOptions {
                revision: Some(revision),
                start_after: items.last().map(|kv| kv.key.clone()),
                limit: 40,
            };
            page = s.list("/p/", &opts).await.unwrap();
            assert_eq!(page.revision, revision, "every page is read at the first page's revision");
            items.append(&mut page.items);
            // Give the writer room to commit between pages.
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        snapshots.push((revision, items));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writer.await.unwrap();
    let ops = ops.lock().clone();
    assert!(ops.len() > 20, "the writer made progress during the lists");
    for (revision, items) in snapshots {
        // The model: the initial keys, then every acknowledged write at or below the revision.
        let mut model: BTreeMap<String, Bytes> =
            (0..300).map(|i| (format!("/p/{i:04}"), val(format!("init{i}")))).collect();
        let mut sorted: Vec<_> = ops.iter().filter(|o| o.0 <= revision).collect();
        sorted.sort_by_key(|o| o.0);
        for (_, key, v) in sorted {
            match v {
                Some(v) => model.insert(key.clone(), v.clone()),
                None => model.remove(key),
            };
        }
        let got: BTreeMap<String, Bytes> = items.into_iter().map(|kv| (kv.key, kv.value)).collect();
        assert_eq!(got, model, "paginated list at revision {revision} (base {base})");
    }
}

/// The first item of a watch that must fail: its `TooOld` error.
async fn too_old_error(w: &mut Watcher) -> (Revision, Revision) {
    match tokio::time::timeout(Duration::from_secs(10), w.next()).await {
        Ok(Some(Err(StoreError::TooOld { requested, oldest }))) => (requested, oldest),
        other => panic!("expected the watch to fail as too old, got {other:?}"),
    }
}

async fn too_old(f: Fixture) {
    let s = f.store_with(CacheOptions { window_events: 10, ..Default::default() }).await;
    let first = s.create("/o/a", val("0")).await.unwrap();
    for i in 1..40 {
        s.update("/o/a", val(format!("{i}")), None).await.unwrap();
    }
    s.create("/x/other", val("x")).await.unwrap();
    let mut old = s.watch("/o/", first.mod_revision);
    // Behind the window, the backend's history serves the watch, then the window and feed.
    let evs = take(&mut old, 39).await;
    let values: Vec<_> = evs.iter().map(|e| e.kv.value.clone()).collect();
    assert_eq!(values, (1..40).map(|i| val(format!("{i}"))).collect::<Vec<_>>());
    assert!(evs.iter().all(|e| e.prev.is_some()), "history carries previous values");
    let late = s.update("/o/a", val("late"), None).await.unwrap();
    assert_eq!(take(&mut old, 1).await[0].kv, late);
    quiet(&mut old).await;
    let head = s.revision();
    let mut recent = s.watch("/o/", head - 9);
    take(&mut recent, 8).await;
    s.compact(head - 5).await.unwrap();
    let (requested, oldest) = too_old_error(&mut s.watch("/o/", first.mod_revision)).await;
    assert_eq!(requested, first.mod_revision);
    assert!(oldest > requested);
    assert!(matches!(
        s.get("/o/a", Some(first.mod_revision)).await,
        Err(StoreError::TooOld { .. })
    ));
    let opts = ListOptions { revision: Some(head - 10), ..Default::default() };
    assert!(matches!(s.list("/o/", &opts).await, Err(StoreError::TooOld { .. })));
    assert_eq!(s.get("/o/a", None).await.unwrap().unwrap().value, val("late"));
}

async fn compaction(f: Fixture) {
    let s = f.store().await;
    let log = write_history(&s, 200).await;
    let at = log[120].3;
    let before =
        s.list("/w/", &ListOptions { revision: Some(at), ..Default::default() }).await.unwrap();
    let latest = s.list("/", &ListOptions::default()).await.unwrap();
    s.compact(at).await.unwrap();
    assert_eq!(s.store_backend_compacted().await, at);
    // History at and above the compaction point is intact; below it is gone.
    let again =
        s.list("/w/", &ListOptions { revision: Some(at), ..Default::default() }).await.unwrap();
    assert_eq!(again.items, before.items);
    let backend_latest = s.backend().list_at("/", None, 0, s.revision()).await.unwrap();
    assert_eq!(backend_latest.items, latest.items, "every live value survives compaction");
    for (_, key, _, rev) in log.iter().filter(|e| e.3 > at) {
        assert!(s.get(key, Some(*rev)).await.is_ok());
    }
    assert!(matches!(s.backend().get_at("/w/k1", at - 1).await, Err(StoreError::TooOld { .. })));
    // The store goes on after compaction.
    let kv = s.create("/w/after", val("a")).await.unwrap();
    assert!(kv.mod_revision > latest.revision);
}

async fn restart_recovery(f: Fixture) {
    let (before, last) = {
        let s = f.store().await;
        write_history(&s, 100).await;
        let page = s.list("/", &ListOptions::default()).await.unwrap();
        (page.items, page.revision)
    };
    // Give the dropped store's tasks a moment to stop.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let s = f.store().await;
    let after = s.list("/", &ListOptions::default()).await.unwrap();
    assert_eq!(after.items, before, "every key is back with its exact revision and value");
    assert!(after.revision >= last);
    let kv = s.create("/w/new", val("n")).await.unwrap();
    assert!(kv.mod_revision > last, "revisions keep increasing after a restart");
}

/// Reads `n` events from a watcher one at a time with a pause before each, as a consumer busy
/// elsewhere would.
async fn take_slowly(w: &mut Watcher, n: usize) -> Vec<Event> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        tokio::time::sleep(Duration::from_millis(1)).await;
        out.extend(take(w, 1).await);
    }
    out
}

async fn slow_watcher_catches_up(f: Fixture) {
    // A window of 30 events and buffers of 8: a watcher that reads slowly overflows its buffer
    // and must catch up from the window and from the backend's history.
    let s = f.store_with(CacheOptions { watcher_buffer: 8, window_events: 30 }).await;
    let start = s.revision();
    let mut slow = s.watch("/s/", start);
    let mut fast = s.watch("/s/", start);
    let reader = tokio::spawn(async move { take(&mut fast, 100).await.len() });
    let mut written = Vec::new();
    for i in 0..100 {
        written.push(s.create(&format!("/s/{i:03}"), val("x")).await.unwrap().mod_revision);
        s.create(&format!("/n/{i:03}"), val("other prefix")).await.unwrap();
    }
    assert_eq!(reader.await.unwrap(), 100, "a reading watcher gets everything");
    let got = take_slowly(&mut slow, 100).await;
    let revisions: Vec<_> = got.iter().map(Event::revision).collect();
    assert_eq!(revisions, written, "every event once, in order, none from other prefixes");
    let late = s.create("/s/late", val("l")).await.unwrap();
    assert_eq!(take(&mut slow, 1).await[0].kv, late, "and it rejoins the live feed");
    quiet(&mut slow).await;
    // Behind its buffer but within the window, any backend catches up from the window.
    let start = s.revision();
    let mut slow = s.watch("/w/", start);
    let mut written = Vec::new();
    for i in 0..20 {
        written.push(s.create(&format!("/w/{i:03}"), val("x")).await.unwrap().mod_revision);
    }
    let got = take(&mut slow, 20).await;
    assert_eq!(got.iter().map(Event::revision).collect::<Vec<_>>(), written);
    quiet(&mut slow).await;
}

async fn events_carry_values(f: Fixture) {
    let s = f.store().await;
    let mut w = s.watch("/e/", s.revision());
    let c = s.create("/e/a", val("1")).await.unwrap();
    let u = s.update("/e/a", val("2"), Some(c.mod_revision)).await.unwrap();
    let d = s.delete("/e/a", None).await.unwrap();
    let evs = take(&mut w, 3).await;
    assert_eq!(evs[0], Event { kind: EventKind::Create, kv: c.clone(), prev: None });
    assert_eq!(evs[1], Event { kind: EventKind::Update, kv: u.clone(), prev: Some(c) });
    let expect_deleted = KeyValue { mod_revision: d.mod_revision, ..u.clone() };
    assert_eq!(evs[2].kind, EventKind::Delete);
    assert_eq!(evs[2].kv, expect_deleted);
    assert_eq!(evs[2].prev.as_ref(), Some(&u));
}

trait CompactedExt {
    async fn store_backend_compacted(&self) -> Revision;
}

impl CompactedExt for Store {
    async fn store_backend_compacted(&self) -> Revision {
        self.backend().compacted_revision().await.unwrap()
    }
}

macro_rules! suite {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    super::$name(super::Fixture::sqlite()).await
                }
            )*
        }
        mod etcd {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    super::$name(super::Fixture::etcd().await).await
                }
            )*
        }
    };
}

suite!(
    semantics,
    cas_race,
    watch_from_every_revision,
    paginated_list_is_consistent_during_writes,
    too_old,
    compaction,
    restart_recovery,
    slow_watcher_catches_up,
    events_carry_values,
);
