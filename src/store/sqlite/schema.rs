//! The on-disk layout: tables, pragmas, and the checks that a file is a usable skiff database.
//!
//! A database is skiff's when its header carries [`APPLICATION_ID`]; its `user_version` is the
//! schema version. Anything else that already holds tables is refused with `Corrupt` and left
//! exactly as it was.

use std::io::Read;
use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, ErrorCode, OpenFlags};

use crate::store::{Result, Revision, StoreError};

/// Marks a database file as skiff's ("skif").
pub const APPLICATION_ID: i32 = 0x736b_6966;
/// The schema version this build writes and understands. Version 1 also had an on-disk key
/// index, `log_key_revision ON log (key, revision)`; version 2 keeps that index in memory
/// ([`super::keys`]), and opening a version-1 database for writing drops it (see [`migrate`]).
pub const SCHEMA_VERSION: i32 = 2;

/// The revision log and the meta table.
const CREATE_TABLES: &str = "
CREATE TABLE log (
    revision INTEGER PRIMARY KEY,
    key BLOB NOT NULL,
    value BLOB NOT NULL,
    create_revision INTEGER NOT NULL,
    prev_revision INTEGER NOT NULL,
    deleted INTEGER NOT NULL
);
CREATE TABLE meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
INSERT INTO meta (name, value) VALUES ('compacted', 0), ('compact_cursor', 0);
";

/// The first bytes of every SQLite database file.
const SQLITE_MAGIC: &[u8; 16] = b"SQLite format 3\0";

/// Tuning applied to the write connection.
#[derive(Clone, Debug)]
pub struct WriterPragmas {
    pub busy_timeout: Duration,
    pub page_size: u32,
    pub wal_autocheckpoint_pages: u32,
    pub wal_size_limit: i64,
    pub cache_kib: i64,
    pub max_db_pages: u32,
}

/// Maps an SQLite error to the store's error: damaged files become `Corrupt`, the rest `other`.
pub fn map_err(path: &Path, e: rusqlite::Error, other: fn(String) -> StoreError) -> StoreError {
    match e.sqlite_error_code() {
        Some(ErrorCode::DatabaseCorrupt) | Some(ErrorCode::NotADatabase) => {
            StoreError::Corrupt(format!("{}: {e}", path.display()))
        }
        _ => match e {
            rusqlite::Error::FromSqlConversionFailure(..)
            | rusqlite::Error::InvalidColumnType(..) => {
                StoreError::Corrupt(format!("{}: unexpected stored data: {e}", path.display()))
            }
            e => other(format!("{}: {e}", path.display())),
        },
    }
}

fn corrupt(path: &Path, why: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("{}: {why}", path.display()))
}

/// Creates the directory that holds `path` (mode 0700 for the directories it creates).
pub fn create_parent(path: &Path) -> Result<()> {
    let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) else {
        return Ok(());
    };
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir).map_err(|e| {
        StoreError::Unavailable(format!("{}: cannot create directory: {e}", dir.display()))
    })
}

/// Fails with `Corrupt` unless `path` is absent, empty, or starts like an SQLite database.
pub fn check_header(path: &Path) -> Result<()> {
    let mut file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(StoreError::Unavailable(format!("{}: {e}", path.display()))),
    };
    let mut head = [0u8; 16];
    let mut read = 0;
    while read < head.len() {
        match file.read(&mut head[read..]) {
            Ok(0) => break,
            Ok(n) => read += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(StoreError::Unavailable(format!("{}: {e}", path.display()))),
        }
    }
    if read == 0 || head == *SQLITE_MAGIC {
        Ok(())
    } else {
        Err(corrupt(path, "not an SQLite database"))
    }
}

/// What an opened file turned out to be.
#[derive(Debug, PartialEq, Eq)]
pub enum Kind {
    /// No tables and no marks: safe to initialise.
    Fresh,
    /// A skiff database of a version this build reads.
    Skiff,
}

/// Identifies the database on `conn` without writing anything.
pub fn probe(conn: &Connection, path: &Path) -> Result<Kind> {
    let app: i32 = pragma_int(conn, path, "application_id")?;
    let version: i32 = pragma_int(conn, path, "user_version")?;
    let objects: i64 = conn
        .query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))
        .map_err(|e| map_err(path, e, StoreError::Unavailable))?;
    if app == APPLICATION_ID {
        if version > SCHEMA_VERSION {
            return Err(corrupt(
                path,
                format!(
                    "schema version {version} is newer than this build supports ({SCHEMA_VERSION})"
                ),
            ));
        }
        if version < 1 {
            return Err(corrupt(path, format!("unknown schema version {version}")));
        }
        // Version 1 also has its key index; a version-1 file opened read-only keeps it.
        let (wanted, expected) = if version == 1 {
            ("'log', 'log_key_revision', 'meta'", 3)
        } else {
            ("'log', 'meta'", 2)
        };
        let ours: i64 = conn
            .query_row(
                &format!("SELECT count(*) FROM sqlite_master WHERE name IN ({wanted})"),
                [],
                |r| r.get(0),
            )
            .map_err(|e| map_err(path, e, StoreError::Unavailable))?;
        if ours != expected {
            return Err(corrupt(path, "skiff tables are missing"));
        }
        return Ok(Kind::Skiff);
    }
    if app == 0 && version == 0 && objects == 0 {
        return Ok(Kind::Fresh);
    }
    Err(corrupt(
        path,
        format!("not a skiff database (application_id {app:#x}, {objects} schema objects)"),
    ))
}

fn pragma_int(conn: &Connection, path: &Path, name: &str) -> Result<i32> {
    conn.pragma_query_value(None, name, |r| r.get(0))
        .map_err(|e| map_err(path, e, StoreError::Unavailable))
}

/// Runs `PRAGMA quick_check`; anything but "ok" is `Corrupt`.
pub fn quick_check(conn: &Connection, path: &Path) -> Result<()> {
    let mut stmt =
        conn.prepare("PRAGMA quick_check(5)").map_err(|e| map_err(path, e, StoreError::Corrupt))?;
    let rows: Vec<String> = stmt
        .query_map([], |r| r.get::<_, String>(0))
        .and_then(|rows| rows.collect())
        .map_err(|e| map_err(path, e, StoreError::Corrupt))?;
    if rows.len() == 1 && rows[0] == "ok" {
        Ok(())
    } else {
        Err(corrupt(path, format!("integrity check failed: {}", rows.join("; "))))
    }
}

/// Creates the schema on a fresh database, inside one transaction.
fn initialise(conn: &Connection, path: &Path, page_size: u32) -> Result<()> {
    let fail = |e| map_err(path, e, StoreError::Unavailable);
    // auto_vacuum and page_size only take effect if set before the first table exists.
    // page_size first: setting auto_vacuum fixes the page size of an empty database.
    conn.pragma_update(None, "page_size", page_size).map_err(fail)?;
    conn.execute_batch("PRAGMA auto_vacuum = INCREMENTAL").map_err(fail)?;
    set_wal(conn, path)?;
    conn.execute_batch("BEGIN IMMEDIATE").map_err(fail)?;
    let created = (|| {
        // Another process may have initialised it between the probe and the lock.
        if probe(conn, path)? == Kind::Fresh {
            conn.execute_batch(CREATE_TABLES).map_err(fail)?;
            conn.pragma_update(None, "application_id", APPLICATION_ID).map_err(fail)?;
            conn.pragma_update(None, "user_version", SCHEMA_VERSION).map_err(fail)?;
        }
        conn.execute_batch("COMMIT").map_err(fail)
    })();
    if created.is_err() && !conn.is_autocommit() {
        let _ = conn.execute_batch("ROLLBACK");
    }
    created?;
    tracing::info!(path = %path.display(), "created sqlite database");
    Ok(())
}

/// Brings a skiff database of an older schema version to [`SCHEMA_VERSION`], in one
/// transaction. From version 1: drops the on-disk key index (its pages go to the free list, for
/// new rows or the next vacuum).
fn migrate(conn: &Connection, path: &Path) -> Result<()> {
    let version = pragma_int(conn, path, "user_version")?;
    if version >= SCHEMA_VERSION {
        return Ok(());
    }
    let fail = |e| map_err(path, e, StoreError::Unavailable);
    conn.execute_batch("BEGIN IMMEDIATE").map_err(fail)?;
    let migrated = (|| {
        conn.execute_batch("DROP INDEX IF EXISTS log_key_revision").map_err(fail)?;
        conn.pragma_update(None, "user_version", SCHEMA_VERSION).map_err(fail)?;
        conn.execute_batch("COMMIT").map_err(fail)
    })();
    if migrated.is_err() && !conn.is_autocommit() {
        let _ = conn.execute_batch("ROLLBACK");
    }
    migrated?;
    tracing::info!(path = %path.display(), from = version, to = SCHEMA_VERSION, "migrated sqlite database schema");
    Ok(())
}

fn set_wal(conn: &Connection, path: &Path) -> Result<()> {
    let mode: String = conn
        .pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))
        .map_err(|e| map_err(path, e, StoreError::Unavailable))?;
    if mode.eq_ignore_ascii_case("wal") {
        Ok(())
    } else {
        Err(StoreError::Unavailable(format!(
            "{}: cannot enable WAL (journal mode {mode})",
            path.display()
        )))
    }
}

/// Clamps a timeout to what SQLite accepts.
pub fn busy_ms(timeout: Duration) -> Duration {
    timeout.min(Duration::from_secs(600))
}

/// Opens the write connection: validates (or creates) the database, then sets the pragmas.
pub fn open_writer(path: &Path, pragmas: &WriterPragmas) -> Result<Connection> {
    create_parent(path)?;
    check_header(path)?;
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags)
        .map_err(|e| map_err(path, e, StoreError::Unavailable))?;
    let fail = |e| map_err(path, e, StoreError::Unavailable);
    conn.busy_timeout(busy_ms(pragmas.busy_timeout)).map_err(fail)?;
    match probe(&conn, path)? {
        Kind::Fresh => initialise(&conn, path, pragmas.page_size)?,
        Kind::Skiff => {
            quick_check(&conn, path)?;
            migrate(&conn, path)?;
        }
    }
    set_wal(&conn, path)?;
    conn.execute_batch("PRAGMA synchronous = FULL").map_err(fail)?;
    conn.pragma_update(None, "wal_autocheckpoint", pragmas.wal_autocheckpoint_pages)
        .map_err(fail)?;
    let _: i64 = conn
        .pragma_update_and_check(None, "journal_size_limit", pragmas.wal_size_limit, |r| r.get(0))
        .map_err(fail)?;
    conn.pragma_update(None, "cache_size", -pragmas.cache_kib.max(256)).map_err(fail)?;
    if pragmas.max_db_pages > 0 {
        let _: i64 = conn
            .pragma_update_and_check(None, "max_page_count", pragmas.max_db_pages, |r| r.get(0))
            .map_err(fail)?;
    }
    conn.set_prepared_statement_cache_capacity(32);
    Ok(conn)
}

/// Opens a read-only connection to an existing skiff database.
pub fn open_reader(path: &Path, busy_timeout: Duration) -> Result<Connection> {
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags)
        .map_err(|e| map_err(path, e, StoreError::Unavailable))?;
    conn.busy_timeout(busy_ms(busy_timeout))
        .map_err(|e| map_err(path, e, StoreError::Unavailable))?;
    conn.set_prepared_statement_cache_capacity(32);
    Ok(conn)
}

/// Reads an integer from the meta table.
pub fn meta(conn: &Connection, name: &str) -> rusqlite::Result<i64> {
    conn.prepare_cached("SELECT value FROM meta WHERE name = ?1")?.query_row([name], |r| r.get(0))
}

/// Writes an integer to the meta table (inside the caller's transaction).
pub fn set_meta(conn: &Connection, name: &str, value: i64) -> rusqlite::Result<()> {
    conn.prepare_cached("INSERT OR REPLACE INTO meta (name, value) VALUES (?1, ?2)")?
        .execute(rusqlite::params![name, value])?;
    Ok(())
}

/// The latest revision the database holds: the newest row, or the compacted revision if
/// compaction removed it (a trailing tombstone).
pub fn current_revision(conn: &Connection) -> rusqlite::Result<Revision> {
    let newest: Option<i64> =
        conn.prepare_cached("SELECT max(revision) FROM log")?.query_row([], |r| r.get(0))?;
    Ok(newest.unwrap_or(0).max(meta(conn, "compacted")?))
}

/// Opens an existing database read-only after checking it is a skiff database.
pub fn open_checked_readonly(path: &Path) -> Result<Connection> {
    check_header(path)?;
    let conn = open_reader(path, Duration::from_secs(5))?;
    match probe(&conn, path)? {
        Kind::Skiff => Ok(conn),
        Kind::Fresh => Err(corrupt(path, "empty, not a skiff database")),
    }
}

/// The latest revision and the number of live keys of the database on `conn`.
pub fn describe(conn: &Connection, path: &Path) -> Result<(Revision, u64)> {
    let fail = |e| map_err(path, e, StoreError::Unavailable);
    let revision = current_revision(conn).map_err(fail)?;
    let keys = super::keys::KeyIndex::load(conn).map_err(fail)?.live_keys();
    Ok((revision, keys as u64))
}

/// The lock file that keeps a second writer (another process, or a second open in this one)
/// away from a database.
pub fn lock_path(path: &Path) -> std::path::PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".lock");
    std::path::PathBuf::from(name)
}

/// Takes the exclusive lock of the database at `path`, waiting up to `wait` for a previous
/// owner (a backend being dropped) to let go. The lock lasts as long as the returned file.
pub fn lock(path: &Path, wait: Duration) -> Result<std::fs::File> {
    let lock = lock_path(path);
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&lock)
        .map_err(|e| StoreError::Unavailable(format!("{}: {e}", lock.display())))?;
    let started = std::time::Instant::now();
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(file),
            Err(std::fs::TryLockError::WouldBlock) if started.elapsed() < wait => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(StoreError::Unavailable(format!(
                    "{}: the database is in use by another skiff process",
                    path.display()
                )))
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(StoreError::Unavailable(format!(
                    "{}: cannot lock: {e}",
                    lock.display()
                )))
            }
        }
    }
}
