//! (in progress) The embedded SQLite backend.
#![allow(unused)]
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Tuning of the SQLite backend.
#[derive(Clone, Debug)]
pub struct SqliteOptions {
    /// How often background compaction runs.
    pub compaction_interval: Duration,
    /// How many recent revisions compaction keeps.
    pub retain_revisions: i64,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        SqliteOptions { compaction_interval: Duration::from_secs(10), retain_revisions: 10_000 }
    }
}

pub struct SqliteBackend {}

impl SqliteBackend {
    /// The database file inside a data dir.
    pub fn db_path(data_dir: &Path) -> PathBuf {
        data_dir.join("db").join("state.db")
    }
    /// Opens (creating if absent) the database at `path`, checking it is skiff's and not newer.
    pub fn open(path: &Path, opts: SqliteOptions) -> super::Result<SqliteBackend> {
        Err(super::StoreError::Unavailable("not yet".into()))
    }
}
