//! (in progress) Consistent backups of the SQLite database, and restores.
#![allow(unused)]
use std::path::Path;

/// What a snapshot holds.
#[derive(Clone, Debug)]
pub struct SnapshotInfo {
    pub revision: i64,
    pub keys: u64,
    pub bytes: u64,
}

/// Writes a consistent copy of the database at `db_path` (which may be in use) to `out`.
pub fn save(db_path: &Path, out: &Path) -> super::Result<SnapshotInfo> {
    Err(super::StoreError::Invalid("not yet".into()))
}

/// Checks `file` is a skiff snapshot and installs it as the database of `data_dir`.
/// Refuses to replace an existing database unless `force`.
pub fn restore(file: &Path, data_dir: &Path, force: bool) -> super::Result<SnapshotInfo> {
    Err(super::StoreError::Invalid("not yet".into()))
}
