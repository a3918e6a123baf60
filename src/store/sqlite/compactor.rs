//! Compaction of the revision log, in small steps the writer runs between write batches.
//!
//! Compacting to revision C removes every row superseded by a newer row at or below C and every
//! tombstone at or below C, so the state at every revision from C on stays readable. The
//! compacted revision is recorded first (reads below it fail from then on), then a cursor walks
//! the rows in (cursor, C] in revision order: each row at or below C deletes the row it
//! superseded, and a tombstone deletes itself; the key index drops the versions of the rows
//! deleted. Afterwards free pages are handed back to the file
//! system with `PRAGMA incremental_vacuum`, also in steps, and the WAL is checkpointed.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use rusqlite::Connection;
use tokio::sync::oneshot;

use crate::store::{Result, Revision, StoreError};

use super::schema;
use super::Shared;

/// How long to wait before retrying after a failed step (a full disk, say).
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// The compaction state the writer thread owns.
pub struct Compactor {
    path: PathBuf,
    /// The compacted revision (as recorded in meta).
    target: Revision,
    /// Rows up to here have been processed.
    cursor: Revision,
    step_rows: usize,
    vacuum_pages: u32,
    busy_timeout: Duration,
    vacuum_pending: bool,
    retry_at: Option<Instant>,
    /// Callers of `compact` waiting for the rows to be gone.
    waiters: Vec<oneshot::Sender<Result<()>>>,
    /// Callers waiting for vacuum and a truncating checkpoint.
    flush_waiters: Vec<oneshot::Sender<Result<()>>>,
    removed: u64,
}

impl Compactor {
    /// Resumes from the state recorded in the database.
    pub fn load(
        conn: &Connection,
        path: &Path,
        step_rows: usize,
        vacuum_pages: u32,
        busy_timeout: Duration,
    ) -> Result<Compactor> {
        let read = |name| {
            schema::meta(conn, name).map_err(|e| schema::map_err(path, e, StoreError::Unavailable))
        };
        let target = read("compacted")?;
        let cursor = read("compact_cursor")?.min(target);
        Ok(Compactor {
            path: path.to_owned(),
            target,
            cursor,
            step_rows: step_rows.max(1),
            vacuum_pages: vacuum_pages.max(1),
            busy_timeout: schema::busy_ms(busy_timeout),
            vacuum_pending: false,
            retry_at: None,
            waiters: Vec::new(),
            flush_waiters: Vec::new(),
            removed: 0,
        })
    }

    pub fn compacted(&self) -> Revision {
        self.target
    }

    /// When the next step is due: None when idle.
    pub fn next_step(&self) -> Option<Instant> {
        let busy =
            self.cursor < self.target || self.vacuum_pending || !self.flush_waiters.is_empty();
        busy.then(|| self.retry_at.unwrap_or_else(Instant::now))
    }

    /// Records a new compacted revision and schedules the row removal. `reply` (if any) is
    /// answered once the rows are gone.
    pub fn start(
        &mut self,
        conn: &Connection,
        shared: &Shared,
        revision: Revision,
        reply: Option<oneshot::Sender<Result<()>>>,
    ) {
        if revision <= self.target {
            if let Some(reply) = reply {
                if self.cursor < self.target {
                    self.waiters.push(reply);
                } else {
                    let _ = reply.send(Ok(()));
                }
            }
            return;
        }
        let recorded = (|| {
            conn.execute_batch("BEGIN IMMEDIATE")?;
            schema::set_meta(conn, "compacted", revision)?;
            conn.execute_batch("COMMIT")
        })();
        if let Err(e) = recorded {
            rollback(conn);
            tracing::warn!(path = %self.path.display(), revision, error = %e, "recording compaction failed");
            if let Some(reply) = reply {
                let _ = reply.send(Err(schema::map_err(&self.path, e, StoreError::WriteFailed)));
            }
            return;
        }
        tracing::debug!(revision, from = self.target, "compaction started");
        self.target = revision;
        shared.compacted.store(revision, Ordering::Release);
        self.retry_at = None;
        if let Some(reply) = reply {
            self.waiters.push(reply);
        }
    }

    /// Asks for free pages to be returned and the WAL truncated; `reply` is answered after.
    pub fn flush(&mut self, reply: oneshot::Sender<Result<()>>) {
        self.vacuum_pending = true;
        self.retry_at = None;
        self.flush_waiters.push(reply);
    }

    /// Runs one small step of whatever work is pending.
    pub fn step(&mut self, conn: &Connection, shared: &Shared) {
        if self.retry_at.is_some_and(|t| t > Instant::now()) {
            return;
        }
        let result = if self.cursor < self.target {
            self.compact_step(conn, shared)
        } else if self.vacuum_pending {
            self.vacuum_step(conn)
        } else if !self.flush_waiters.is_empty() {
            self.checkpoint(conn)
        } else {
            Ok(())
        };
        match result {
            Ok(()) => self.retry_at = None,
            Err(e) => {
                rollback(conn);
                tracing::warn!(path = %self.path.display(), error = %e, "compaction step failed, will retry");
                self.retry_at = Some(Instant::now() + RETRY_AFTER);
                // Callers learn of the failure; the work itself is retried in the background.
                let err = schema::map_err(&self.path, e, StoreError::WriteFailed);
                for waiter in self.waiters.drain(..).chain(self.flush_waiters.drain(..)) {
                    let _ = waiter.send(Err(err.clone()));
                }
            }
        }
    }

    /// Removes the rows made obsolete by the next few hundred rows at or below the target.
    fn compact_step(&mut self, conn: &Connection, shared: &Shared) -> rusqlite::Result<()> {
        conn.execute_batch("BEGIN IMMEDIATE")?;
        let mut scanned = 0usize;
        let mut last = self.cursor;
        // (key, revision) of every row deleted.
        let mut gone: Vec<(String, Revision)> = Vec::new();
        {
            let mut rows = conn.prepare_cached(
                "SELECT revision, prev_revision, deleted, key FROM log \
                 WHERE revision > ?1 AND revision <= ?2 ORDER BY revision LIMIT ?3",
            )?;
            let mut delete = conn.prepare_cached("DELETE FROM log WHERE revision = ?1")?;
            let mut found =
                rows.query(rusqlite::params![self.cursor, self.target, self.step_rows as i64])?;
            while let Some(row) = found.next()? {
                let revision: Revision = row.get(0)?;
                let prev: Revision = row.get(1)?;
                let deleted: bool = row.get(2)?;
                if prev > 0 || deleted {
                    let key = String::from_utf8_lossy(row.get_ref(3)?.as_blob()?).into_owned();
                    if prev > 0 && delete.execute([prev])? > 0 {
                        self.removed += 1;
                        gone.push((key.clone(), prev));
                    }
                    if deleted && delete.execute([revision])? > 0 {
                        self.removed += 1;
                        gone.push((key, revision));
                    }
                }
                scanned += 1;
                last = revision;
            }
        }
        let cursor = if scanned < self.step_rows { self.target } else { last };
        schema::set_meta(conn, "compact_cursor", cursor)?;
        conn.execute_batch("COMMIT")?;
        let mut keys = shared.keys.write();
        for (key, revision) in &gone {
            keys.remove(key, *revision);
        }
        drop(keys);
        self.cursor = cursor;
        if cursor >= self.target {
            tracing::debug!(revision = self.target, removed = self.removed, "compaction finished");
            self.removed = 0;
            self.vacuum_pending = true;
            for waiter in self.waiters.drain(..) {
                let _ = waiter.send(Ok(()));
            }
        }
        Ok(())
    }

    /// Gives up to `vacuum_pages` free pages back to the file system.
    fn vacuum_step(&mut self, conn: &Connection) -> rusqlite::Result<()> {
        let free: i64 = conn.pragma_query_value(None, "freelist_count", |r| r.get(0))?;
        if free > 0 {
            // The pragma frees one page per step: run it to the end.
            let mut stmt =
                conn.prepare_cached(&format!("PRAGMA incremental_vacuum({})", self.vacuum_pages))?;
            let mut rows = stmt.query([])?;
            while rows.next()?.is_some() {}
        }
        if free <= i64::from(self.vacuum_pages) {
            self.vacuum_pending = false;
            if self.flush_waiters.is_empty() {
                // Empty the WAL too, unless a reader is using it right now.
                self.truncate_wal(conn, Duration::ZERO)?;
            }
        }
        Ok(())
    }

    /// Checkpoints the WAL and truncates it, waiting only briefly for readers.
    fn checkpoint(&mut self, conn: &Connection) -> rusqlite::Result<()> {
        let done = self.truncate_wal(conn, Duration::from_millis(200))?;
        let result = if done {
            Ok(())
        } else {
            Err(StoreError::Unavailable(format!(
                "{}: readers kept the WAL busy",
                self.path.display()
            )))
        };
        for waiter in self.flush_waiters.drain(..) {
            let _ = waiter.send(result.clone());
        }
        Ok(())
    }
}

impl Compactor {
    /// Checkpoints the whole WAL and truncates it, waiting at most `wait` for readers. Returns
    /// whether it got through.
    fn truncate_wal(&self, conn: &Connection, wait: Duration) -> rusqlite::Result<bool> {
        conn.busy_timeout(wait)?;
        let busy = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get::<_, i64>(0));
        conn.busy_timeout(self.busy_timeout)?;
        Ok(busy? == 0)
    }
}

/// Ends an open transaction, if any (after a failure).
pub fn rollback(conn: &Connection) {
    if !conn.is_autocommit() {
        let _ = conn.execute_batch("ROLLBACK");
    }
}
