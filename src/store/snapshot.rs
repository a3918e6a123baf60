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
        return Err(StoreError::Invalid(format!("{}: already exists; not overwriting it", out.display())));
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
        source
            .execute("VACUUM INTO ?1", [&tmp_str])
            .map_err(|e| StoreError::Unavailable(format!("{}: snapshot failed: {e}", db_path.display())))?;
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
            StoreError::Corrupt(why) => StoreError::Corrupt(why.replace(&tmp.display().to_string(), &file.display().to_string())),
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

