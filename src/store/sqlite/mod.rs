//! The embedded SQLite backend: a revision log in one database file in the data dir.
//!
//! Every write appends a row at the next revision; reads at any retained revision pick, per
//! key, the newest row at or below it. One writer thread owns the write connection and commits
//! requests in groups ([`writer`]); reads go through a small pool of read-only connections on
//! blocking threads ([`reader`]); old history is removed in small steps between write batches
//! ([`compactor`]). The file layout and its safety checks live in [`schema`].

mod compactor;
mod keys;
mod reader;
mod schema;
mod writer;

#[cfg(test)]
mod compaction_tests;
#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{mpsc as std_mpsc, Arc};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use parking_lot::{Mutex, RwLock};
use rusqlite::Connection;
use tokio::sync::{oneshot, Semaphore};
use tokio_stream::wrappers::UnboundedReceiverStream;

use super::{Backend, Event, EventStream, KeyValue, ListPage, Result, Revision, StoreError};
use reader::ReadError;
use writer::{Op, Request};

pub(crate) use schema::{
    check_header, create_parent, describe, lock, open_checked_readonly, quick_check,
};
pub use schema::{APPLICATION_ID, SCHEMA_VERSION};

/// Tuning of the SQLite backend.
#[derive(Clone, Debug)]
pub struct SqliteOptions {
    /// How often background compaction runs (zero: never automatically).
    pub compaction_interval: Duration,
    /// How many recent revisions compaction keeps. Older history serves lists continued at an
    /// old revision, exact-revision reads and watchers catching up behind the in-memory window,
    /// so the default is small: a key rewritten for hours keeps the file near its live size.
    pub retain_revisions: i64,
    /// How long compaction keeps a revision, whatever `retain_revisions` says: a paged list
    /// continues at the revision of its first page, so its continue token stays good for this
    /// long under any write rate (kube-apiserver compacts etcd every 5 minutes to the revision of
    /// the previous run, keeping 5 to 10 minutes).
    pub retain_time: Duration,
    /// The most write requests committed in one transaction.
    pub max_batch: usize,
    /// Log rows one compaction step examines (one short transaction each).
    pub compaction_step_rows: usize,
    /// Free pages one vacuum step hands back to the file system.
    pub vacuum_step_pages: u32,
    /// Page size, in bytes, of a database this backend creates (existing files keep theirs).
    /// Larger pages mean fewer WAL frames, and so fewer writes, per group commit.
    pub page_size: u32,
    /// WAL size, in pages, that triggers an automatic checkpoint.
    pub wal_autocheckpoint_pages: u32,
    /// Bytes the WAL file is cut back to once it has been checkpointed. Above the checkpoint
    /// size (`wal_autocheckpoint_pages` × page size: 16 MiB by default), so that under load the
    /// WAL is reused in place instead of being cut and grown again after every checkpoint (growing
    /// a file costs a metadata sync per commit); the compactor empties it once writes go quiet.
    pub wal_size_limit: i64,
    /// Page cache of the write connection, KiB.
    pub cache_kib: i64,
    /// Read-only connections serving reads concurrently.
    pub readers: usize,
    /// How long a connection waits for a lock before giving up.
    pub busy_timeout: Duration,
    /// Upper bound on the database size in pages (0: none); writes beyond it fail.
    pub max_db_pages: u32,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        SqliteOptions {
            compaction_interval: Duration::from_secs(5),
            retain_revisions: 1_000,
            retain_time: Duration::from_secs(300),
            max_batch: 512,
            compaction_step_rows: 200,
            vacuum_step_pages: 16,
            page_size: 16 << 10,
            wal_autocheckpoint_pages: 1000,
            wal_size_limit: 32 << 20,
            cache_kib: 16 << 10,
            readers: 4,
            busy_timeout: Duration::from_secs(5),
            max_db_pages: 0,
        }
    }
}

/// Revisions and the key index shared between the writer thread and readers.
pub(crate) struct Shared {
    current: AtomicI64,
    compacted: AtomicI64,
    /// Written only by the writer thread; see [`keys`].
    keys: RwLock<keys::KeyIndex>,
}

/// The SQLite backend. Cheap to clone; the writer stops when the last clone is dropped.
#[derive(Clone)]
pub struct SqliteBackend {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    shared: Arc<Shared>,
    requests: std_mpsc::Sender<Request>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
    readers: Mutex<Vec<Connection>>,
    read_permits: Arc<Semaphore>,
    busy_timeout: Duration,
    /// Held until the writer has stopped (fields drop after `Drop::drop`).
    _lock: std::fs::File,
}

/// How long `open` waits for a previous owner of the database to close it.
const LOCK_WAIT: Duration = Duration::from_secs(3);

impl Drop for Inner {
    fn drop(&mut self) {
        let _ = self.requests.send(Request::Shutdown);
        if let Some(handle) = self.writer.lock().take() {
            let _ = handle.join();
        }
    }
}

fn stopped() -> StoreError {
    StoreError::Unavailable("the sqlite writer has stopped".into())
}

impl SqliteBackend {
    /// The database file inside a data dir.
    pub fn db_path(data_dir: &Path) -> PathBuf {
        data_dir.join("db").join("state.db")
    }

    /// Opens (creating if absent) the database at `path`, checking it is skiff's and not newer.
    pub fn open(path: &Path, opts: SqliteOptions) -> super::Result<SqliteBackend> {
        let pragmas = schema::WriterPragmas {
            busy_timeout: opts.busy_timeout,
            page_size: opts.page_size,
            wal_autocheckpoint_pages: opts.wal_autocheckpoint_pages,
            wal_size_limit: opts.wal_size_limit,
            cache_kib: opts.cache_kib,
            max_db_pages: opts.max_db_pages,
        };
        schema::create_parent(path)?;
        let lock = schema::lock(path, LOCK_WAIT)?;
        let conn = schema::open_writer(path, &pragmas)?;
        let compactor = compactor::Compactor::load(
            &conn,
            path,
            opts.compaction_step_rows,
            opts.vacuum_step_pages,
            opts.busy_timeout,
        )?;
        let shared = Arc::new(Shared {
            current: AtomicI64::new(0),
            compacted: AtomicI64::new(0),
            keys: RwLock::new(keys::KeyIndex::default()),
        });
        let config = writer::Config {
            max_batch: opts.max_batch.max(1),
            compaction_interval: opts.compaction_interval,
            retain_revisions: opts.retain_revisions,
            retain_time: opts.retain_time,
        };
        let writer = writer::Writer::new(conn, path.to_owned(), shared.clone(), compactor, config)?;
        let keys = writer.live_keys();
        let first_reader = schema::open_reader(path, opts.busy_timeout)?;
        let (requests, rx) = std_mpsc::channel();
        let handle = std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| StoreError::Unavailable(format!("cannot start the sqlite writer: {e}")))?;
        tracing::info!(
            path = %path.display(),
            revision = shared.current.load(Ordering::Acquire),
            compacted = shared.compacted.load(Ordering::Acquire),
            keys,
            "opened sqlite database"
        );
        Ok(SqliteBackend {
            inner: Arc::new(Inner {
                path: path.to_owned(),
                shared,
                requests,
                writer: Mutex::new(Some(handle)),
                readers: Mutex::new(vec![first_reader]),
                read_permits: Arc::new(Semaphore::new(opts.readers.max(1))),
                busy_timeout: opts.busy_timeout,
                _lock: lock,
            }),
        })
    }

    /// The database file this backend uses.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// The latest committed revision.
    pub fn revision(&self) -> Revision {
        self.inner.shared.current.load(Ordering::Acquire)
    }

    /// The revision history has been compacted to.
    pub fn compacted(&self) -> Revision {
        self.inner.shared.compacted.load(Ordering::Acquire)
    }

    /// Bytes the database occupies on disk: the file plus its WAL.
    pub fn disk_usage(&self) -> u64 {
        let mut wal = self.inner.path.clone().into_os_string();
        wal.push("-wal");
        [self.inner.path.as_path(), Path::new(&wal)]
            .iter()
            .filter_map(|p| std::fs::metadata(p).ok())
            .map(|m| m.len())
            .sum()
    }

    /// Finishes pending compaction, returns free pages to the file system and truncates the
    /// WAL. Runs in small steps between writes.
    pub async fn flush(&self) -> Result<()> {
        let (reply, rx) = oneshot::channel();
        self.send(Request::Flush(reply))?;
        rx.await.map_err(|_| stopped())?
    }

    fn send(&self, req: Request) -> Result<()> {
        self.inner.requests.send(req).map_err(|_| stopped())
    }

    async fn write(&self, op: Op) -> Result<KeyValue> {
        let (reply, rx) = oneshot::channel();
        self.send(Request::Write(op, reply))?;
        rx.await.map_err(|_| stopped())?
    }

    /// Runs `f` on a pooled read-only connection inside one read transaction, on a blocking
    /// thread. `f` gets the current revision as of just before the transaction began.
    async fn read<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection, &Shared, Revision) -> Result<T, ReadError> + Send + 'static,
    {
        let permit =
            self.inner.read_permits.clone().acquire_owned().await.map_err(|_| stopped())?;
        let inner = self.inner.clone();
        let task = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let pooled = inner.readers.lock().pop();
            let conn = match pooled {
                Some(conn) => conn,
                None => schema::open_reader(&inner.path, inner.busy_timeout)?,
            };
            let current = inner.shared.current.load(Ordering::Acquire);
            let result = match conn.unchecked_transaction() {
                Ok(tx) => {
                    let result = f(&conn, &inner.shared, current);
                    drop(tx);
                    result
                }
                Err(e) => Err(ReadError::Sql(e)),
            };
            inner.readers.lock().push(conn);
            result.map_err(|e| match e {
                ReadError::Store(e) => e,
                ReadError::Sql(e) => schema::map_err(&inner.path, e, StoreError::Unavailable),
            })
        });
        task.await.map_err(|e| StoreError::Unavailable(format!("read task failed: {e}")))?
    }
}

fn check_key(key: &str) -> Result<()> {
    if key.is_empty() {
        return Err(StoreError::Invalid("empty key".into()));
    }
    Ok(())
}

#[async_trait]
impl Backend for SqliteBackend {
    fn name(&self) -> &'static str {
        "sqlite"
    }

    async fn current_revision(&self) -> Result<Revision> {
        Ok(self.revision())
    }

    async fn load(&self) -> Result<(Vec<KeyValue>, Revision)> {
        self.read(|conn, shared, current| {
            let revision = reader::resolve(conn, 0, current)?;
            let (items, _) = reader::list_at(conn, shared, "", None, 0, revision)?;
            Ok((items, revision))
        })
        .await
    }

    async fn events(&self, after: Revision) -> Result<EventStream> {
        let after = after.max(0);
        let compacted = self.compacted();
        if after < compacted {
            return Err(StoreError::TooOld { requested: after, oldest: compacted });
        }
        // Committed history from a reader, then the writer fills the gap and subscribes.
        let (history, upto) = self
            .read(move |conn, _, current| {
                let compacted = schema::meta(conn, "compacted")?;
                if after < compacted {
                    return Err(StoreError::TooOld { requested: after, oldest: compacted }.into());
                }
                if after >= current {
                    return Ok((Vec::new(), after));
                }
                Ok((reader::history(conn, after, current)?, current))
            })
            .await?;
        let (reply, rx) = oneshot::channel();
        self.send(Request::Subscribe { after: upto, reply })?;
        let sub = rx.await.map_err(|_| stopped())?.map_err(|e| match e {
            StoreError::TooOld { oldest, .. } => StoreError::TooOld { requested: after, oldest },
            e => e,
        })?;
        let head: Vec<Result<Vec<_>>> =
            [history, sub.backlog].into_iter().filter(|b| !b.is_empty()).map(Ok).collect();
        let live = UnboundedReceiverStream::new(sub.live)
            .map(|batch| Ok(Arc::try_unwrap(batch).unwrap_or_else(|shared| (*shared).clone())));
        Ok(Box::pin(futures::stream::iter(head).chain(live)))
    }

    async fn history(
        &self,
        prefix: &str,
        after: Revision,
        upto: Revision,
        limit: usize,
    ) -> Result<Vec<Event>> {
        let prefix = prefix.to_owned();
        self.read(move |conn, _, current| {
            let compacted = schema::meta(conn, "compacted")?;
            if after < compacted {
                return Err(StoreError::TooOld { requested: after, oldest: compacted }.into());
            }
            Ok(reader::history_under(conn, &prefix, after, upto.min(current), limit)?)
        })
        .await
    }

    async fn get_at(&self, key: &str, revision: Revision) -> Result<Option<KeyValue>> {
        let key = key.to_owned();
        self.read(move |conn, shared, current| {
            let revision = reader::resolve(conn, revision, current)?;
            reader::get_at(conn, shared, &key, revision)
        })
        .await
    }

    async fn list_at(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
        revision: Revision,
    ) -> Result<ListPage> {
        let prefix = prefix.to_owned();
        let start_after = start_after.map(str::to_owned);
        self.read(move |conn, shared, current| {
            let revision = reader::resolve(conn, revision, current)?;
            let (items, more) =
                reader::list_at(conn, shared, &prefix, start_after.as_deref(), limit, revision)?;
            Ok(ListPage { items, revision, more })
        })
        .await
    }

    async fn create(&self, key: &str, value: Bytes) -> Result<KeyValue> {
        check_key(key)?;
        self.write(Op::Create { key: key.to_owned(), value }).await
    }

    async fn update(
        &self,
        key: &str,
        value: Bytes,
        expected: Option<Revision>,
    ) -> Result<KeyValue> {
        self.update_known(key, value, expected, None).await
    }

    async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<KeyValue> {
        self.delete_known(key, expected, None).await
    }

    async fn update_known(
        &self,
        key: &str,
        value: Bytes,
        expected: Option<Revision>,
        known: Option<KeyValue>,
    ) -> Result<KeyValue> {
        check_key(key)?;
        let known = known.filter(|k| k.key == key).map(|k| (k.mod_revision, k.value));
        self.write(Op::Update { key: key.to_owned(), value, expected, known }).await
    }

    async fn delete_known(
        &self,
        key: &str,
        expected: Option<Revision>,
        known: Option<KeyValue>,
    ) -> Result<KeyValue> {
        check_key(key)?;
        let known = known.filter(|k| k.key == key).map(|k| (k.mod_revision, k.value));
        self.write(Op::Delete { key: key.to_owned(), expected, known }).await
    }

    async fn compact(&self, revision: Revision) -> Result<()> {
        let (reply, rx) = oneshot::channel();
        self.send(Request::Compact { revision, reply })?;
        rx.await.map_err(|_| stopped())?
    }

    async fn compacted_revision(&self) -> Result<Revision> {
        Ok(self.compacted())
    }
}
