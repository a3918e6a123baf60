//! Helpers shared by the integration tests and the benchmarks: local etcd servers and skiff
//! processes on ephemeral loopback ports. Not used by the server itself.

pub mod etcd_server;
pub mod kubectl_cluster;
pub mod skiff_server;
pub mod store_load;

/// A store on a fresh SQLite database in `data_dir` with default options, for unit tests that
/// drive the registry or an allocator against the real store.
pub async fn sqlite_store(data_dir: &std::path::Path) -> crate::store::Store {
    use crate::store::sqlite::{SqliteBackend, SqliteOptions};
    let path = SqliteBackend::db_path(data_dir);
    std::fs::create_dir_all(path.parent().expect("a data dir")).expect("data dir");
    let backend = SqliteBackend::open(&path, SqliteOptions::default()).expect("sqlite");
    let backend = std::sync::Arc::new(backend);
    crate::store::Store::open(backend, Default::default()).await.expect("store")
}
