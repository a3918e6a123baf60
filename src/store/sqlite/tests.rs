//! Tests of the SQLite backend: semantics, concurrency, MVCC reads, events, recovery, schema
//! guards and a full disk. Compaction has its own file (`compaction_tests.rs`).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;

use super::{SqliteBackend, SqliteOptions};
use crate::store::{Backend, Event, EventKind, EventStream, Revision, StoreError};

pub(super) fn manual() -> SqliteOptions {
    SqliteOptions { compaction_interval: Duration::ZERO, ..Default::default() }
}

pub(super) fn open(dir: &Path, opts: SqliteOptions) -> SqliteBackend {
    let _ = tracing_subscriber::fmt().with_test_writer().with_env_filter("info").try_init();
    SqliteBackend::open(&SqliteBackend::db_path(dir), opts).expect("open")
}

pub(super) fn val(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

pub(super) fn log_rows(path: &Path) -> i64 {
    let conn =
        rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap();
    conn.query_row("SELECT count(*) FROM log", [], |r| r.get(0)).unwrap()
}

/// Reads events from `stream` until one at `until` arrives.
pub(super) async fn collect(stream: &mut EventStream, until: Revision) -> Vec<Event> {
    let mut out = Vec::new();
    while out.last().map(Event::revision).unwrap_or(0) < until {
        let batch = tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .expect("events arrive")
            .expect("stream open")
            .expect("no error");
        assert!(!batch.is_empty(), "empty batch");
        out.extend(batch);
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn create_get_update_delete() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path(), manual());
    assert_eq!(db.name(), "sqlite");
    assert_eq!(db.current_revision().await.unwrap(), 0);

    let a = db.create("/a", val("v1")).await.unwrap();
    assert_eq!((a.create_revision, a.mod_revision), (1, 1));
    assert_eq!(
        db.create("/a", val("x")).await,
        Err(StoreError::AlreadyExists { key: "/a".into() })
    );
    let a2 = db.update("/a", val("v2"), Some(1)).await.unwrap();
    assert_eq!((a2.create_revision, a2.mod_revision, a2.value.clone()), (1, 2, val("v2")));
    assert_eq!(
        db.update("/a", val("v3"), Some(1)).await,
        Err(StoreError::Conflict { key: "/a".into(), expected: 1, current: 2 })
    );
    assert_eq!(
        db.update("/nope", val("x"), None).await,
        Err(StoreError::NotFound { key: "/nope".into() })
    );
    assert_eq!(db.delete("/nope", None).await, Err(StoreError::NotFound { key: "/nope".into() }));
    assert_eq!(
        db.delete("/a", Some(7)).await,
        Err(StoreError::Conflict { key: "/a".into(), expected: 7, current: 2 })
    );
    assert!(matches!(db.create("", val("x")).await, Err(StoreError::Invalid(_))));
    // Failed requests took no revision.
    assert_eq!(db.current_revision().await.unwrap(), 2);

    let gone = db.delete("/a", Some(2)).await.unwrap();
    assert_eq!((gone.value.clone(), gone.create_revision, gone.mod_revision), (val("v2"), 1, 3));
    assert_eq!(db.get_at("/a", 0).await.unwrap(), None);
    assert_eq!(db.get_at("/a", 3).await.unwrap(), None);
    assert_eq!(db.get_at("/a", 2).await.unwrap().unwrap().value, val("v2"));
    assert_eq!(db.get_at("/a", 1).await.unwrap().unwrap().value, val("v1"));
    assert_eq!(
        db.get_at("/a", 9).await,
        Err(StoreError::FutureRevision { requested: 9, current: 3 })
    );
    assert_eq!(
        db.update("/a", val("x"), None).await,
        Err(StoreError::NotFound { key: "/a".into() })
    );

    let again = db.create("/a", val("new")).await.unwrap();
    assert_eq!((again.create_revision, again.mod_revision), (4, 4));
    let plain = db.update("/a", val("newer"), None).await.unwrap();
    assert_eq!((plain.create_revision, plain.mod_revision), (4, 5));
    assert_eq!(db.get_at("/a", 0).await.unwrap(), Some(plain));
    assert_eq!(db.revision(), 5);
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_cas_has_one_winner_per_round() {
    let dir = tempfile::tempdir().unwrap();
    let db = Arc::new(open(dir.path(), manual()));
    let mut rev = db.create("/cas", val("0")).await.unwrap().mod_revision;
    for round in 0..20 {
        let tasks: Vec<_> = (0..32)
            .map(|i| {
                let db = db.clone();
                tokio::spawn(async move {
                    db.update("/cas", val(&format!("{round}-{i}")), Some(rev)).await
                })
            })
            .collect();
        let mut winners = Vec::new();
        let mut conflicts = 0;
        for task in tasks {
            match task.await.unwrap() {
                Ok(kv) => winners.push(kv),
                Err(StoreError::Conflict { expected, current, .. }) => {
                    assert_eq!(expected, rev);
                    assert!(current > rev);
                    conflicts += 1;
                }
                Err(e) => panic!("unexpected {e:?}"),
            }
        }
        assert_eq!(winners.len(), 1, "round {round}");
        assert_eq!(conflicts, 31);
        assert_eq!(winners[0].mod_revision, rev + 1, "a conflict takes no revision");
        rev = winners[0].mod_revision;
        assert_eq!(db.get_at("/cas", 0).await.unwrap().unwrap(), winners[0]);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn list_at_an_old_revision_sees_the_old_state() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path(), manual());
    db.create("/a/1", val("a1")).await.unwrap();
    db.create("/a/2", val("a2")).await.unwrap();
    db.create("/b/1", val("b1")).await.unwrap();
    let before = db.revision();
    db.update("/a/1", val("a1'"), None).await.unwrap();
    db.delete("/a/2", None).await.unwrap();
    db.create("/a/3", val("a3")).await.unwrap();
    db.create("/a", val("not under /a/")).await.unwrap();

    let old = db.list_at("/a/", None, 0, before).await.unwrap();
    assert_eq!(old.revision, before);
    let got: Vec<_> =
        old.items.iter().map(|kv| (kv.key.as_str(), kv.value.clone(), kv.mod_revision)).collect();
    assert_eq!(got, vec![("/a/1", val("a1"), 1), ("/a/2", val("a2"), 2)]);
    assert!(!old.more);

    let now = db.list_at("/a/", None, 0, 0).await.unwrap();
    assert_eq!(now.revision, db.revision());
    let keys: Vec<_> = now.items.iter().map(|kv| kv.key.as_str()).collect();
    assert_eq!(keys, vec!["/a/1", "/a/3"]);
    assert_eq!(now.items[0].value, val("a1'"));

    let all = db.list_at("", None, 0, before).await.unwrap();
    assert_eq!(all.items.len(), 3);
    let page = db.list_at("", Some("/a/1"), 1, before).await.unwrap();
    assert_eq!(page.items[0].key, "/a/2");
    assert!(page.more);
    assert_eq!(
        db.list_at("/a/", None, 0, 99).await.unwrap_err(),
        StoreError::FutureRevision { requested: 99, current: db.revision() }
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn pagination_at_a_fixed_revision_while_writes_continue() {
    let dir = tempfile::tempdir().unwrap();
    let db = Arc::new(open(dir.path(), manual()));
    for i in 0..100 {
        db.create(&format!("/p/{i:03}"), val(&format!("v{i}"))).await.unwrap();
    }
    let at = db.revision();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let churn = {
        let (db, stop) = (db.clone(), stop.clone());
        tokio::spawn(async move {
            let mut n = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let i = n % 100;
                db.update(&format!("/p/{i:03}"), val("changed"), None).await.ok();
                db.create(&format!("/p/{i:03}x{n}"), val("extra")).await.unwrap();
                if i.is_multiple_of(3) {
                    db.delete(&format!("/p/{:03}", (i + 1) % 100), None).await.ok();
                }
                n += 1;
            }
        })
    };
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = db.list_at("/p/", after.as_deref(), 7, at).await.unwrap();
        assert_eq!(page.revision, at);
        assert!(page.items.len() <= 7);
        for kv in &page.items {
            let i: usize = kv.key[3..].parse().unwrap();
            assert_eq!(kv.value, val(&format!("v{i}")));
        }
        seen.extend(page.items.iter().map(|kv| kv.key.clone()));
        after = page.items.last().map(|kv| kv.key.clone());
        if !page.more {
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    churn.await.unwrap();
    let expected: Vec<_> = (0..100).map(|i| format!("/p/{i:03}")).collect();
    assert_eq!(seen, expected);
    assert!(db.revision() > at + 10, "writes went on meanwhile");
}

/// (revision, kind, key, value, previous value)
type Expect = (Revision, EventKind, &'static str, &'static str, Option<&'static str>);

fn check_events(got: &[Event], want: &[Expect]) {
    let got: Vec<_> = got
        .iter()
        .map(|e| {
            (
                e.revision(),
                e.kind,
                e.kv.key.clone(),
                e.kv.value.clone(),
                e.prev.as_ref().map(|p| p.value.clone()),
            )
        })
        .collect();
    let want: Vec<_> = want
        .iter()
        .map(|(r, k, key, v, p)| (*r, *k, key.to_string(), val(v), p.map(val)))
        .collect();
    assert_eq!(got, want);
}

#[tokio::test(flavor = "multi_thread")]
async fn events_from_several_starting_points() {
    use EventKind::*;
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path(), manual());
    let mut early = db.events(0).await.unwrap();
    db.create("/a", val("a1")).await.unwrap(); // 1
    db.create("/b", val("b1")).await.unwrap(); // 2
    db.update("/a", val("a2"), Some(1)).await.unwrap(); // 3
    db.delete("/b", None).await.unwrap(); // 4
    db.create("/b", val("b2")).await.unwrap(); // 5
    let mut from0 = db.events(0).await.unwrap();
    let mut from2 = db.events(2).await.unwrap();
    let mut from5 = db.events(5).await.unwrap();
    let mut future = db.events(6).await.unwrap();
    db.update("/b", val("b3"), None).await.unwrap(); // 6
    db.delete("/a", Some(3)).await.unwrap(); // 7

    let all: Vec<Expect> = vec![
        (1, Create, "/a", "a1", None),
        (2, Create, "/b", "b1", None),
        (3, Update, "/a", "a2", Some("a1")),
        (4, Delete, "/b", "b1", Some("b1")),
        (5, Create, "/b", "b2", None),
        (6, Update, "/b", "b3", Some("b2")),
        (7, Delete, "/a", "a2", Some("a2")),
    ];
    check_events(&collect(&mut early, 7).await, &all);
    check_events(&collect(&mut from0, 7).await, &all);
    check_events(&collect(&mut from2, 7).await, &all[2..]);
    check_events(&collect(&mut from5, 7).await, &all[5..]);
    check_events(&collect(&mut future, 7).await, &all[6..]);

    // Nothing further is pending, and later batches still arrive in order.
    db.create("/c", val("c1")).await.unwrap(); // 8
    check_events(&collect(&mut early, 8).await, &[(8, Create, "/c", "c1", None)]);
    let e = &collect(&mut from2, 8).await[0];
    assert_eq!((e.kv.create_revision, e.kv.mod_revision), (8, 8));
}

#[tokio::test(flavor = "multi_thread")]
async fn event_details_of_deletes() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path(), manual());
    db.create("/k", val("one")).await.unwrap(); // 1
    db.update("/k", val("two"), None).await.unwrap(); // 2
    let mut live = db.events(2).await.unwrap();
    db.delete("/k", None).await.unwrap(); // 3
    let mut replay = db.events(2).await.unwrap();
    for stream in [&mut live, &mut replay] {
        let e = collect(stream, 3).await.remove(0);
        assert_eq!(e.kind, EventKind::Delete);
        assert_eq!(
            (e.kv.value.clone(), e.kv.create_revision, e.kv.mod_revision),
            (val("two"), 1, 3)
        );
        let prev = e.prev.unwrap();
        assert_eq!((prev.value, prev.create_revision, prev.mod_revision), (val("two"), 1, 2));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn reopen_recovers_every_key() {
    let dir = tempfile::tempdir().unwrap();
    let mut want = BTreeMap::new();
    {
        let db = open(dir.path(), manual());
        for i in 0..200 {
            let key = format!("/r/{i:03}");
            let kv = db.create(&key, val(&format!("v{i}"))).await.unwrap();
            want.insert(key, kv);
        }
        for i in (0..200).step_by(3) {
            let key = format!("/r/{i:03}");
            let kv = db.update(&key, val(&format!("u{i}")), None).await.unwrap();
            want.insert(key, kv);
        }
        for i in (0..200).step_by(7) {
            let key = format!("/r/{i:03}");
            db.delete(&key, None).await.unwrap();
            want.remove(&key);
        }
    }
    let db = open(dir.path(), manual());
    let rev = db.revision();
    assert_eq!(rev, 200 + 67 + 29);
    let (items, at) = db.load().await.unwrap();
    assert_eq!(at, rev);
    let got: BTreeMap<_, _> = items.into_iter().map(|kv| (kv.key.clone(), kv)).collect();
    assert_eq!(got, want);
    // The index was rebuilt: preconditions hold across the restart.
    let (key, kv) = want.iter().next().unwrap();
    assert!(matches!(db.create(key, val("x")).await, Err(StoreError::AlreadyExists { .. })));
    let next = db.update(key, val("after"), Some(kv.mod_revision)).await.unwrap();
    assert_eq!((next.mod_revision, next.create_revision), (rev + 1, kv.create_revision));
    assert_eq!(db.create("/r/000", val("again")).await.unwrap().mod_revision, rev + 2);
}

fn assert_refused(path: &Path, what: &str) {
    let before = std::fs::read(path).unwrap();
    match SqliteBackend::open(path, manual()) {
        Err(StoreError::Corrupt(msg)) => {
            assert!(
                msg.contains(&path.display().to_string()),
                "{what}: message names the file: {msg}"
            )
        }
        Err(e) => panic!("{what}: expected Corrupt, got {e:?}"),
        Ok(_) => panic!("{what}: expected Corrupt, opened it"),
    }
    assert_eq!(std::fs::read(path).unwrap(), before, "{what}: file untouched");
}

#[tokio::test(flavor = "multi_thread")]
async fn refuses_files_that_are_not_usable() {
    let dir = tempfile::tempdir().unwrap();

    let text = dir.path().join("text.db");
    std::fs::write(&text, "apiVersion: v1\nkind: Pod\n").unwrap();
    assert_refused(&text, "text file");

    let foreign = dir.path().join("foreign.db");
    {
        let conn = rusqlite::Connection::open(&foreign).unwrap();
        conn.execute_batch("CREATE TABLE t (x); INSERT INTO t VALUES (1);").unwrap();
    }
    assert_refused(&foreign, "foreign database");

    let other_app = dir.path().join("other-app.db");
    {
        let conn = rusqlite::Connection::open(&other_app).unwrap();
        conn.execute_batch("PRAGMA application_id = 42;").unwrap();
    }
    assert_refused(&other_app, "another application's database");

    let newer = dir.path().join("newer.db");
    {
        let db = SqliteBackend::open(&newer, manual()).unwrap();
        db.create("/k", val("v")).await.unwrap();
    }
    {
        let conn = rusqlite::Connection::open(&newer).unwrap();
        conn.execute_batch("PRAGMA user_version = 99;").unwrap();
    }
    assert_refused(&newer, "newer schema");

    let damaged = dir.path().join("damaged.db");
    {
        let db = SqliteBackend::open(&damaged, manual()).unwrap();
        for i in 0..300 {
            db.create(&format!("/k/{i}"), Bytes::from(vec![b'x'; 300])).await.unwrap();
        }
    }
    let mut bytes = std::fs::read(&damaged).unwrap();
    assert!(bytes.len() > 8 * 4096);
    for page in 2..bytes.len() / 4096 {
        let at = page * 4096;
        bytes[at..at + 64].fill(0xa5);
    }
    std::fs::write(&damaged, &bytes).unwrap();
    assert_refused(&damaged, "damaged pages");

    // An empty file is a new database; the parent directory is created private.
    let fresh = dir.path().join("sub").join("dir").join("fresh.db");
    let db = SqliteBackend::open(&fresh, manual()).unwrap();
    db.create("/k", val("v")).await.unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(fresh.parent().unwrap()).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
    }
    let empty = dir.path().join("empty.db");
    std::fs::write(&empty, b"").unwrap();
    let db = SqliteBackend::open(&empty, manual()).unwrap();
    assert_eq!(db.create("/k", val("v")).await.unwrap().mod_revision, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn writer_options_are_on_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path(), manual());
    db.create("/k", val("v")).await.unwrap();
    let conn = rusqlite::Connection::open(db.path()).unwrap();
    let get = |p: &str| {
        conn.query_row(&format!("PRAGMA {p}"), [], |r| r.get::<_, rusqlite::types::Value>(0))
            .unwrap()
    };
    assert_eq!(get("journal_mode"), rusqlite::types::Value::Text("wal".into()));
    assert_eq!(get("auto_vacuum"), rusqlite::types::Value::Integer(2));
    assert_eq!(
        get("application_id"),
        rusqlite::types::Value::Integer(super::APPLICATION_ID.into())
    );
    assert_eq!(get("user_version"), rusqlite::types::Value::Integer(super::SCHEMA_VERSION.into()));
}

fn run(cmd: &str, args: &[&str]) -> bool {
    std::process::Command::new(cmd)
        .args(args)
        .stderr(std::process::Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// Writes 1 KiB values until a write fails; returns the acknowledged keys and the failure.
async fn fill(db: &SqliteBackend, from: usize) -> (Vec<(String, Revision)>, StoreError) {
    let mut acked = Vec::new();
    for i in from.. {
        let key = format!("/fill/{i:06}");
        match db.create(&key, Bytes::from(vec![(i % 251) as u8; 1024])).await {
            Ok(kv) => acked.push((key, kv.mod_revision)),
            Err(e) => return (acked, e),
        }
        assert!(i < from + 1_000_000, "storage never filled up");
    }
    unreachable!()
}

async fn check_acked(db: &SqliteBackend, acked: &[(String, Revision)]) {
    for (i, (key, rev)) in acked.iter().enumerate() {
        let kv = db.get_at(key, 0).await.unwrap().unwrap_or_else(|| panic!("{key} lost"));
        assert_eq!(kv.mod_revision, *rev);
        let n: usize = key[6..].parse().unwrap();
        assert_eq!(kv.value.len(), 1024, "{i}");
        assert!(kv.value.iter().all(|b| *b == (n % 251) as u8));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn full_disk_fails_writes_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let mnt_str = mnt.to_str().unwrap();
    if run("mount", &["-t", "tmpfs", "-o", "size=4m", "tmpfs", mnt_str]) {
        let result = tokio::spawn(full_tmpfs(mnt.clone())).await;
        assert!(run("umount", &[mnt_str]), "unmount");
        result.unwrap();
    } else {
        // Not allowed to mount: cap the database size instead.
        full_page_limit(&mnt).await;
    }
}

async fn full_tmpfs(mnt: std::path::PathBuf) {
    let db = open(&mnt, manual());
    let (acked, err) = fill(&db, 0).await;
    assert!(matches!(err, StoreError::WriteFailed(_)), "{err:?}");
    assert!(acked.len() > 100, "only {} writes fit", acked.len());
    assert!(matches!(
        db.create("/still-full", Bytes::from(vec![0; 4096])).await,
        Err(StoreError::WriteFailed(_))
    ));
    check_acked(&db, &acked).await;
    assert_eq!(db.revision(), acked.last().unwrap().1);

    assert!(run("mount", &["-o", "remount,size=64m", mnt.to_str().unwrap()]), "remount");
    let kv = db.create("/after", val("space again")).await.unwrap();
    assert_eq!(kv.mod_revision, acked.last().unwrap().1 + 1);
    check_acked(&db, &acked).await;
    drop(db);
    let db = open(&mnt, manual());
    check_acked(&db, &acked).await;
    assert_eq!(db.get_at("/after", 0).await.unwrap().unwrap().value, val("space again"));
}

#[tokio::test(flavor = "multi_thread")]
async fn page_limit_fails_writes_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    full_page_limit(dir.path()).await;
}

async fn full_page_limit(dir: &Path) {
    let small = SqliteOptions { max_db_pages: 256, ..manual() };
    let db = open(dir, small);
    let (acked, err) = fill(&db, 0).await;
    assert!(matches!(err, StoreError::WriteFailed(_)), "{err:?}");
    assert!(acked.len() > 500);
    check_acked(&db, &acked).await;
    // The rolled-back create left nothing behind in the key index.
    let failed = format!("/fill/{:06}", acked.len());
    assert_eq!(db.get_at(&failed, 0).await.unwrap(), None);
    let page = db.list_at("/fill/", Some(&acked.last().unwrap().0), 0, 0).await.unwrap();
    assert!(page.items.is_empty(), "{:?}", page.items.first().map(|kv| &kv.key));
    assert!(matches!(db.update(&failed, val("x"), None).await, Err(StoreError::NotFound { .. })));
    drop(db);
    let db = open(dir, manual());
    check_acked(&db, &acked).await;
    db.create("/after", val("space again")).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_database_has_one_writer() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path(), manual());
    db.create("/k", val("v")).await.unwrap();
    let second = SqliteBackend::open(&SqliteBackend::db_path(dir.path()), manual());
    assert!(matches!(second, Err(StoreError::Unavailable(_))), "a second writer is refused");
    // Once the first is gone, the next open takes over (waiting briefly if needed).
    let closer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(200));
        drop(db);
    });
    let db = open(dir.path(), manual());
    closer.join().unwrap();
    assert_eq!(db.get_at("/k", 0).await.unwrap().unwrap().value, val("v"));
}

#[tokio::test(flavor = "multi_thread")]
async fn new_databases_use_the_configured_page_size_and_keep_it() {
    let dir = tempfile::tempdir().unwrap();
    let page_size = |dir: &Path| -> i64 {
        let conn = rusqlite::Connection::open(SqliteBackend::db_path(dir)).unwrap();
        conn.pragma_query_value(None, "page_size", |r| r.get(0)).unwrap()
    };
    let db = open(dir.path(), manual());
    db.create("/k", val("v")).await.unwrap();
    drop(db);
    assert_eq!(page_size(dir.path()), 16384);
    // An existing database keeps its page size whatever the options say.
    let db = open(dir.path(), SqliteOptions { page_size: 4096, ..manual() });
    db.create("/k2", val("v")).await.unwrap();
    drop(db);
    assert_eq!(page_size(dir.path()), 16384);
    let other = tempfile::tempdir().unwrap();
    drop(open(other.path(), SqliteOptions { page_size: 4096, ..manual() }));
    assert_eq!(page_size(other.path()), 4096);
}

/// Writes to one key that land in the same group commit each stay readable at their revision.
#[tokio::test(flavor = "multi_thread")]
async fn every_revision_of_a_batch_is_readable() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path(), manual());
    let first = db.create("/same", val("0")).await.unwrap();
    let writes: Vec<_> = (1..=40)
        .map(|i| {
            let db = db.clone();
            tokio::spawn(async move {
                if i % 2 == 0 {
                    db.update("/same", val(&i.to_string()), None).await.unwrap()
                } else {
                    db.create(&format!("/other/{i:02}"), val(&i.to_string())).await.unwrap()
                }
            })
        })
        .collect();
    let mut written = vec![first];
    for w in writes {
        written.push(w.await.unwrap());
    }
    for kv in &written {
        let got = db.get_at(&kv.key, kv.mod_revision).await.unwrap().expect("readable");
        assert_eq!((got.value, got.mod_revision), (kv.value.clone(), kv.mod_revision));
        let page = db.list_at("/", None, 0, kv.mod_revision).await.unwrap();
        let same = page.items.iter().find(|item| item.key == "/same").unwrap();
        let want = written
            .iter()
            .filter(|w| w.key == "/same" && w.mod_revision <= kv.mod_revision)
            .max_by_key(|w| w.mod_revision)
            .unwrap();
        assert_eq!(same.value, want.value);
        let others = written
            .iter()
            .filter(|w| w.key != "/same" && w.mod_revision <= kv.mod_revision)
            .count();
        assert_eq!(page.items.len(), others + 1);
    }
}

/// A database written by schema version 1 (which had an on-disk key index) opens with all its
/// history, and loses the index; read-only inspection does not change it.
#[tokio::test(flavor = "multi_thread")]
async fn version_1_databases_open_and_are_migrated() {
    let dir = tempfile::tempdir().unwrap();
    let path = SqliteBackend::db_path(dir.path());
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch(
            "PRAGMA journal_mode = WAL;
             CREATE TABLE log (
                 revision INTEGER PRIMARY KEY, key BLOB NOT NULL, value BLOB NOT NULL,
                 create_revision INTEGER NOT NULL, prev_revision INTEGER NOT NULL,
                 deleted INTEGER NOT NULL);
             CREATE INDEX log_key_revision ON log (key, revision);
             CREATE TABLE meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
             INSERT INTO meta (name, value) VALUES ('compacted', 0), ('compact_cursor', 0);
             INSERT INTO log VALUES (1, CAST('/a' AS BLOB), CAST('a1' AS BLOB), 1, 0, 0);
             INSERT INTO log VALUES (2, CAST('/a' AS BLOB), CAST('a2' AS BLOB), 1, 1, 0);
             INSERT INTO log VALUES (3, CAST('/b' AS BLOB), CAST('b3' AS BLOB), 3, 0, 0);
             INSERT INTO log VALUES (4, CAST('/b' AS BLOB), CAST('' AS BLOB), 3, 3, 1);
             PRAGMA user_version = 1;",
        )
        .unwrap();
        conn.pragma_update(None, "application_id", super::APPLICATION_ID).unwrap();
    }
    let objects = |path: &Path| -> Vec<String> {
        let conn = rusqlite::Connection::open(path).unwrap();
        let mut stmt = conn.prepare("SELECT name FROM sqlite_master ORDER BY name").unwrap();
        let names = stmt.query_map([], |r| r.get(0)).unwrap().map(Result::unwrap).collect();
        names
    };
    {
        let conn = super::open_checked_readonly(&path).unwrap();
        assert_eq!(super::describe(&conn, &path).unwrap(), (4, 1));
    }
    assert!(objects(&path).contains(&"log_key_revision".to_string()));

    let db = open(dir.path(), manual());
    assert_eq!(db.revision(), 4);
    assert!(!objects(&path).contains(&"log_key_revision".to_string()));
    let at = |rev| {
        let db = db.clone();
        async move {
            let page = db.list_at("/", None, 0, rev).await.unwrap();
            page.items.into_iter().map(|kv| (kv.key, kv.value, kv.mod_revision)).collect::<Vec<_>>()
        }
    };
    assert_eq!(at(1).await, vec![("/a".into(), val("a1"), 1)]);
    assert_eq!(at(3).await, vec![("/a".into(), val("a2"), 2), ("/b".into(), val("b3"), 3)]);
    assert_eq!(at(4).await, vec![("/a".into(), val("a2"), 2)]);
    assert_eq!(db.get_at("/b", 4).await.unwrap(), None);
    let b = db.create("/b", val("b5")).await.unwrap();
    assert_eq!((b.mod_revision, b.create_revision), (5, 5));
    let a = db.update("/a", val("a6"), Some(2)).await.unwrap();
    assert_eq!(a.create_revision, 1);
    drop(db);
    let conn = rusqlite::Connection::open(&path).unwrap();
    let version: i32 = conn.pragma_query_value(None, "user_version", |r| r.get(0)).unwrap();
    assert_eq!(version, super::SCHEMA_VERSION);
}

#[tokio::test(flavor = "multi_thread")]
async fn known_versions_stand_in_for_the_replaced_value_only_at_its_revision() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path(), manual());
    let one = db.create("/k", val("one")).await.unwrap(); // 1
    let mut events = db.events(1).await.unwrap();
    // The caller's copy of revision 1: the update's event takes those very bytes.
    db.update_known("/k", val("two"), Some(1), Some(one.clone())).await.unwrap(); // 2
    let e = collect(&mut events, 2).await.remove(0);
    let prev = e.prev.expect("prev");
    assert_eq!((prev.mod_revision, prev.value.as_ptr()), (1, one.value.as_ptr()));
    // A copy of an older revision (or of another key) is not used: the value is read back.
    let three = db.update_known("/k", val("three"), None, Some(one.clone())).await.unwrap(); // 3
    let e = collect(&mut events, 3).await.remove(0);
    assert_eq!(e.prev.expect("prev").value, val("two"));
    let other = crate::store::KeyValue { key: "/other".into(), ..three.clone() };
    db.update_known("/k", val("four"), None, Some(other)).await.unwrap(); // 4
    let e = collect(&mut events, 4).await.remove(0);
    assert_eq!(e.prev.expect("prev").value, val("three"));
    // Deletes return the known last value, and read it back when the copy is stale.
    let four = db.get_at("/k", 4).await.unwrap().unwrap();
    let gone = db.delete_known("/k", None, Some(four.clone())).await.unwrap(); // 5
    assert_eq!((gone.value.as_ptr(), gone.mod_revision), (four.value.as_ptr(), 5));
    db.create("/k", val("again")).await.unwrap(); // 6
    let gone = db.delete_known("/k", None, Some(four)).await.unwrap(); // 7
    assert_eq!(gone.value, val("again"));
}
