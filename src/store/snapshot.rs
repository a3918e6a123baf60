//! Consistent backups of the SQLite database, and restores.
//!
//! `save` copies a database that a running server may be writing, from a separate read-only
//! connection (`VACUUM INTO` reads one snapshot of it), so the server never stops. `restore`
//! checks a copy like `open` would and installs it atomically in a data dir.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use super::sqlite::{self, SqliteBackend};
use super::{Result, StoreError};

/// What a snapshot holds.
#[derive(Clone, Debug)]
pub struct SnapshotInfo {
    pub revision: i64,
    pub keys: u64,
    pub bytes: u64,
}

fn io_err(path: &Path, what: &str, e: std::io::Error) -> StoreError {
    StoreError::Unavailable(format!("{}: {what}: {e}", path.display()))
}

/// A sibling path of `path` with `suffix` appended to its file name.
fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// Creates an empty file readable only by its owner; fails if it exists.
fn create_private(path: &Path) -> Result<File> {
    let mut opts = OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    opts.open(path).map_err(|e| io_err(path, "cannot create", e))
}

fn sync_file(path: &Path) -> Result<()> {
    File::open(path).and_then(|f| f.sync_all()).map_err(|e| io_err(path, "cannot sync", e))
}

fn sync_dir(path: &Path) -> Result<()> {
    match path.parent().filter(|d| !d.as_os_str().is_empty()) {
        Some(dir) => sync_file(dir),
        None => Ok(()),
    }
}

fn remove_if_present(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err(path, "cannot remove", e)),
    }
}

/// Removes the WAL and shared-memory files that belong to the database at `path`.
fn remove_sidecars(path: &Path) -> Result<()> {
    remove_if_present(&with_suffix(path, "-wal"))?;
    remove_if_present(&with_suffix(path, "-shm"))
}

/// Checks that the (closed, private) copy at `path` is a sound skiff database and describes it.
fn inspect(path: &Path) -> Result<SnapshotInfo> {
    let info = (|| {
        let conn = sqlite::open_checked_readonly(path)?;
        sqlite::quick_check(&conn, path)?;
        let (revision, keys) = sqlite::describe(&conn, path)?;
        drop(conn);
        let bytes = std::fs::metadata(path).map_err(|e| io_err(path, "cannot stat", e))?.len();
        Ok(SnapshotInfo { revision, keys, bytes })
    })();
    remove_sidecars(path)?;
    info
}

/// Writes a consistent copy of the database at `db_path` (which may be in use) to `out`.
pub fn save(db_path: &Path, out: &Path) -> super::Result<SnapshotInfo> {
    if out.exists() {
        return Err(StoreError::Invalid(format!(
            "{}: already exists; not overwriting it",
            out.display()
        )));
    }
    if !db_path.exists() {
        return Err(StoreError::Invalid(format!("{}: no database there", db_path.display())));
    }
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| io_err(dir, "cannot create directory", e))?;
    }
    let tmp = with_suffix(out, &format!(".tmp-{}", std::process::id()));
    let tmp_str = tmp
        .to_str()
        .ok_or_else(|| StoreError::Invalid(format!("{}: path is not valid UTF-8", tmp.display())))?
        .to_owned();
    remove_if_present(&tmp)?;
    drop(create_private(&tmp)?);
    let copied = (|| {
        let source = sqlite::open_checked_readonly(db_path)?;
        source.execute("VACUUM INTO ?1", [&tmp_str]).map_err(|e| {
            StoreError::Unavailable(format!("{}: snapshot failed: {e}", db_path.display()))
        })?;
        drop(source);
        sync_file(&tmp)?;
        inspect(&tmp)
    })();
    let info = match copied {
        Ok(info) => info,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
    };
    // A hard link never replaces an existing file, unlike rename.
    let linked = std::fs::hard_link(&tmp, out);
    let _ = std::fs::remove_file(&tmp);
    linked.map_err(|e| io_err(out, "cannot install snapshot", e))?;
    sync_dir(out)?;
    tracing::info!(
        source = %db_path.display(),
        out = %out.display(),
        revision = info.revision,
        keys = info.keys,
        bytes = info.bytes,
        "saved snapshot"
    );
    Ok(info)
}

/// Checks `file` is a skiff snapshot and installs it as the database of `data_dir`.
/// Refuses to replace an existing database unless `force`. The server must not be running on
/// `data_dir` meanwhile.
pub fn restore(file: &Path, data_dir: &Path, force: bool) -> super::Result<SnapshotInfo> {
    let target = SqliteBackend::db_path(data_dir);
    if target.exists() && !force {
        return Err(StoreError::Invalid(format!(
            "{}: a database already exists; restore with force to replace it",
            target.display()
        )));
    }
    sqlite::check_header(file)?;
    sqlite::create_parent(&target)?;
    // A running server holds this lock; never swap the file under it.
    let _lock = sqlite::lock(&target, std::time::Duration::ZERO)?;
    let tmp = with_suffix(&target, &format!(".restore-{}", std::process::id()));
    remove_if_present(&tmp)?;
    remove_sidecars(&tmp)?;
    let staged = (|| {
        let mut src = File::open(file).map_err(|e| io_err(file, "cannot open", e))?;
        let mut dst = create_private(&tmp)?;
        std::io::copy(&mut src, &mut dst).map_err(|e| io_err(&tmp, "cannot copy", e))?;
        dst.flush().map_err(|e| io_err(&tmp, "cannot write", e))?;
        dst.sync_all().map_err(|e| io_err(&tmp, "cannot sync", e))?;
        drop(dst);
        inspect(&tmp).map_err(|e| match e {
            StoreError::Corrupt(why) => StoreError::Corrupt(
                why.replace(&tmp.display().to_string(), &file.display().to_string()),
            ),
            e => e,
        })
    })();
    let info = match staged {
        Ok(info) => info,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            let _ = remove_sidecars(&tmp);
            return Err(e);
        }
    };
    // A stale WAL would be replayed into the new file: remove it before the file appears.
    remove_sidecars(&target)?;
    std::fs::rename(&tmp, &target).map_err(|e| io_err(&target, "cannot install", e))?;
    sync_dir(&target)?;
    tracing::info!(
        snapshot = %file.display(),
        target = %target.display(),
        revision = info.revision,
        keys = info.keys,
        "restored snapshot"
    );
    Ok(info)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    use bytes::Bytes;
    use parking_lot::Mutex;

    use super::{restore, save};
    use crate::store::sqlite::{SqliteBackend, SqliteOptions};
    use crate::store::{Backend, StoreError};

    fn opts() -> SqliteOptions {
        SqliteOptions { compaction_interval: Duration::ZERO, ..Default::default() }
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn save_while_writing_then_restore() {
        let live = tempfile::tempdir().unwrap();
        let db =
            Arc::new(SqliteBackend::open(&SqliteBackend::db_path(live.path()), opts()).unwrap());
        for i in 0..100 {
            db.create(&format!("/pre/{i}"), Bytes::from(format!("p{i}"))).await.unwrap();
        }
        let acked: Arc<Mutex<Vec<(String, i64, Bytes)>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let writers: Vec<_> = (0..8)
            .map(|w| {
                let (db, acked, stop) = (db.clone(), acked.clone(), stop.clone());
                tokio::spawn(async move {
                    let mut i = 0;
                    while !stop.load(Ordering::Relaxed) {
                        let key = format!("/w/{w}/{}", i % 20);
                        let value = Bytes::from(format!("{w}.{i}"));
                        let kv = match db.update(&key, value.clone(), None).await {
                            Err(StoreError::NotFound { .. }) => {
                                db.create(&key, value.clone()).await.unwrap()
                            }
                            other => other.unwrap(),
                        };
                        acked.lock().push((key, kv.mod_revision, value));
                        i += 1;
                    }
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(200)).await;
        let out_dir = tempfile::tempdir().unwrap();
        let out = out_dir.path().join("backup").join("snap.db");
        let path = db.path().to_owned();
        let copy = out.clone();
        let info = tokio::task::spawn_blocking(move || save(&path, &copy)).await.unwrap().unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        stop.store(true, Ordering::Relaxed);
        for w in writers {
            w.await.unwrap();
        }
        assert!(
            info.revision > 100 && info.revision < db.revision(),
            "{info:?} vs {}",
            db.revision()
        );
        assert!(info.bytes > 0 && info.bytes == std::fs::metadata(&out).unwrap().len());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&out).unwrap().permissions().mode() & 0o777, 0o600);
        }
        // Saving over an existing file is refused.
        assert!(matches!(save(db.path(), &out), Err(StoreError::Invalid(_))));

        // The state at the snapshot's revision, from the acknowledged writes.
        let mut model = std::collections::BTreeMap::new();
        let mut writes = acked.lock().clone();
        writes.sort_by_key(|w| w.1);
        for (key, rev, value) in writes.iter().filter(|w| w.1 <= info.revision) {
            model.insert(key.clone(), (*rev, value.clone()));
        }
        for i in 0..100 {
            model.insert(format!("/pre/{i}"), (i + 1, Bytes::from(format!("p{i}"))));
        }
        assert_eq!(info.keys as usize, model.len());

        let restored = tempfile::tempdir().unwrap();
        let got = restore(&out, restored.path(), false).unwrap();
        assert_eq!((got.revision, got.keys), (info.revision, info.keys));
        let db2 = SqliteBackend::open(&SqliteBackend::db_path(restored.path()), opts()).unwrap();
        assert_eq!(db2.revision(), info.revision);
        let (items, at) = db2.load().await.unwrap();
        assert_eq!(at, info.revision);
        let state: std::collections::BTreeMap<_, _> =
            items.into_iter().map(|kv| (kv.key, (kv.mod_revision, kv.value))).collect();
        assert_eq!(state, model);
        let next = db2.create("/after-restore", Bytes::from_static(b"x")).await.unwrap();
        assert_eq!(next.mod_revision, info.revision + 1);
        drop(db2);

        // An existing database is only replaced with force; the WAL of the old one goes too.
        assert!(matches!(restore(&out, restored.path(), false), Err(StoreError::Invalid(_))));
        let running =
            SqliteBackend::open(&SqliteBackend::db_path(restored.path()), opts()).unwrap();
        assert!(
            matches!(restore(&out, restored.path(), true), Err(StoreError::Unavailable(_))),
            "never replaced under a running server"
        );
        drop(running);
        restore(&out, restored.path(), true).unwrap();
        let db3 = SqliteBackend::open(&SqliteBackend::db_path(restored.path()), opts()).unwrap();
        assert_eq!(db3.revision(), info.revision);
        assert_eq!(db3.get_at("/after-restore", 0).await.unwrap(), None);
    }

    #[test]
    fn restore_refuses_files_that_are_not_skiff_databases() {
        let dir = tempfile::tempdir().unwrap();
        let text = dir.path().join("snap.txt");
        std::fs::write(&text, "not a database at all").unwrap();
        let target = dir.path().join("data");
        assert!(matches!(restore(&text, &target, false), Err(StoreError::Corrupt(_))));
        let foreign = dir.path().join("foreign.db");
        {
            let conn = rusqlite::Connection::open(&foreign).unwrap();
            conn.execute_batch("CREATE TABLE t (x)").unwrap();
        }
        assert!(matches!(restore(&foreign, &target, false), Err(StoreError::Corrupt(_))));
        assert!(!SqliteBackend::db_path(&target).exists(), "nothing was installed");
        let leftovers: Vec<_> =
            std::fs::read_dir(SqliteBackend::db_path(&target).parent().unwrap())
                .map(|d| {
                    d.filter_map(|e| e.ok())
                        .map(|e| e.file_name())
                        .filter(|n| !n.to_string_lossy().ends_with(".lock"))
                        .collect()
                })
                .unwrap_or_default();
        assert!(leftovers.is_empty(), "{leftovers:?}");
        assert!(matches!(save(&foreign, &dir.path().join("out.db")), Err(StoreError::Corrupt(_))));
        assert!(!dir.path().join("out.db").exists());
    }
}
