//! The single writer: one thread owns the write connection and commits requests in groups.
//!
//! Every pending request (up to a cap) goes into one transaction, each write at the next
//! revision. Preconditions are checked against the in-memory key index ([`super::keys`]), so
//! they need no SQL read; a failed precondition fails only its request and takes no revision.
//! Each write adds its version to the index as it is applied (readers never look above the
//! published revision). Only after the commit does the batch become visible: the current
//! revision is published, events go to subscribers, and callers get their answers. A failed
//! commit rolls everything back, removes the batch's versions from the index and answers every
//! request with `WriteFailed`. Compaction steps run between batches.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError, TryRecvError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rusqlite::{CachedStatement, Connection, OptionalExtension};
use tokio::sync::{mpsc, oneshot};

use crate::store::{Event, EventKind, KeyValue, Result, Revision, StoreError};

use super::compactor::{rollback, Compactor};
use super::keys::{KeyIndex, Version};
use super::{reader, schema, Shared};

/// The longest a short batch waits for more writes before committing.
const MAX_LINGER: Duration = Duration::from_millis(1);

/// Where a request's answer goes.
pub type Reply<T> = oneshot::Sender<Result<T>>;

/// Batches of committed events, shared between subscribers.
pub type EventBatch = Arc<Vec<Event>>;

/// One write.
pub enum Op {
    Create { key: String, value: Bytes },
    Update { key: String, value: Bytes, expected: Option<Revision>, known: Option<Known> },
    Delete { key: String, expected: Option<Revision>, known: Option<Known> },
}

/// A version of the key the caller holds (revision and value): the value replaced or deleted,
/// without reading it back, when its revision is the one replaced.
pub type Known = (Revision, Bytes);

/// What the writer thread is asked to do.
pub enum Request {
    Write(Op, Reply<KeyValue>),
    /// Events above `after`: the ones already committed, then every later batch.
    Subscribe {
        after: Revision,
        reply: Reply<Subscription>,
    },
    Compact {
        revision: Revision,
        reply: Reply<()>,
    },
    /// Return free pages and truncate the WAL.
    Flush(Reply<()>),
    Shutdown,
}

/// A new subscriber's backlog and its feed of later batches.
pub struct Subscription {
    pub backlog: Vec<Event>,
    pub live: mpsc::UnboundedReceiver<EventBatch>,
}

/// Settings the writer needs.
pub struct Config {
    pub max_batch: usize,
    pub compaction_interval: Duration,
    pub retain_revisions: i64,
    pub retain_time: Duration,
}

struct Subscriber {
    after: Revision,
    tx: mpsc::UnboundedSender<EventBatch>,
}

/// The writer thread's state.
pub struct Writer {
    conn: Connection,
    path: PathBuf,
    shared: Arc<Shared>,
    config: Config,
    current: Revision,
    subscribers: Vec<Subscriber>,
    compactor: Compactor,
    next_auto_compaction: Option<Instant>,
    /// The current revision at each automatic compaction run of the last `retain_time`, oldest
    /// first.
    marks: VecDeque<(Instant, Revision)>,
    /// Size of the last batch: about how many callers write concurrently.
    expected: usize,
    /// How long the last commit took.
    last_commit: Duration,
}

/// The statements one batch uses.
struct Statements<'c> {
    insert: CachedStatement<'c>,
    value: CachedStatement<'c>,
}

impl Statements<'_> {
    /// The value written at `revision`: the caller's copy when it is of that revision.
    fn value_of(&mut self, revision: Revision, known: Option<Known>) -> rusqlite::Result<Bytes> {
        match known {
            Some((at, value)) if at == revision => Ok(value),
            _ => self.value_at(revision),
        }
    }

    fn value_at(&mut self, revision: Revision) -> rusqlite::Result<Bytes> {
        let value: Option<Vec<u8>> = self.value.query_row([revision], |r| r.get(0)).optional()?;
        Ok(value.map(Bytes::from).unwrap_or_else(|| {
            tracing::warn!(revision, "previous value missing from the log");
            Bytes::new()
        }))
    }

    fn insert(
        &mut self,
        revision: Revision,
        key: &str,
        value: &[u8],
        create_revision: Revision,
        prev_revision: Revision,
        deleted: bool,
    ) -> rusqlite::Result<()> {
        self.insert.execute(rusqlite::params![
            revision,
            key.as_bytes(),
            value,
            create_revision,
            prev_revision,
            deleted
        ])?;
        Ok(())
    }
}

impl Writer {
    /// Loads the index of live keys and the current revision from the database.
    pub fn new(
        conn: Connection,
        path: PathBuf,
        shared: Arc<Shared>,
        compactor: Compactor,
        config: Config,
    ) -> Result<Writer> {
        let fail = |e| schema::map_err(&path, e, StoreError::Unavailable);
        let current = schema::current_revision(&conn).map_err(fail)?;
        *shared.keys.write() = KeyIndex::load(&conn).map_err(fail)?;
        shared.current.store(current, Ordering::Release);
        shared.compacted.store(compactor.compacted(), Ordering::Release);
        let next_auto_compaction = if config.compaction_interval.is_zero() {
            None
        } else {
            Instant::now().checked_add(config.compaction_interval)
        };
        Ok(Writer {
            conn,
            path,
            shared,
            config,
            current,
            subscribers: Vec::new(),
            compactor,
            next_auto_compaction,
            marks: VecDeque::new(),
            expected: 1,
            last_commit: Duration::ZERO,
        })
    }

    pub fn live_keys(&self) -> usize {
        self.shared.keys.read().live_keys()
    }

    /// Serves requests until `Shutdown` or until every sender is gone.
    pub fn run(mut self, rx: Receiver<Request>) {
        let mut batch: Vec<(Op, Reply<KeyValue>)> = Vec::with_capacity(self.config.max_batch);
        loop {
            let first = match self.wait_time() {
                Some(wait) if wait.is_zero() => match rx.try_recv() {
                    Ok(req) => Some(req),
                    Err(TryRecvError::Empty) => None,
                    Err(TryRecvError::Disconnected) => break,
                },
                Some(wait) => match rx.recv_timeout(wait) {
                    Ok(req) => Some(req),
                    Err(RecvTimeoutError::Timeout) => None,
                    Err(RecvTimeoutError::Disconnected) => break,
                },
                None => match rx.recv() {
                    Ok(req) => Some(req),
                    Err(_) => break,
                },
            };
            let mut stop = first.is_some_and(|req| self.take(req, &mut batch));
            while !stop && batch.len() < self.config.max_batch {
                match rx.try_recv() {
                    Ok(req) => stop = self.take(req, &mut batch),
                    Err(_) => break,
                }
            }
            // Group commit: if fewer writes are pending than went into the last batch, their
            // callers are probably about to send again; wait a moment for them.
            let expected = self.expected.min(self.config.max_batch);
            if !stop && !batch.is_empty() && batch.len() < expected {
                let deadline = Instant::now() + self.linger();
                while !stop && !batch.is_empty() && batch.len() < expected {
                    let left = deadline.saturating_duration_since(Instant::now());
                    match rx.recv_timeout(left) {
                        Ok(req) => stop = self.take(req, &mut batch),
                        Err(_) => break,
                    }
                }
            }
            if !batch.is_empty() {
                self.expected = batch.len();
            }
            self.commit_batch(&mut batch);
            if stop {
                break;
            }
            self.maintain();
        }
        self.subscribers.clear();
        if let Err((_, e)) = self.conn.close() {
            tracing::warn!(path = %self.path.display(), error = %e, "closing the sqlite database failed");
        }
        tracing::debug!("sqlite writer stopped");
    }

    /// Adds a request to the batch, or handles a control request after committing the batch.
    /// Returns true on `Shutdown`.
    fn take(&mut self, req: Request, batch: &mut Vec<(Op, Reply<KeyValue>)>) -> bool {
        match req {
            Request::Write(op, reply) => batch.push((op, reply)),
            Request::Shutdown => return true,
            other => {
                self.commit_batch(batch);
                self.control(other);
            }
        }
        false
    }

    /// How long a short batch waits for more writes: half the last commit, at most 1 ms.
    fn linger(&self) -> Duration {
        (self.last_commit / 2).min(MAX_LINGER)
    }

    /// How long the loop may block waiting for requests (None: indefinitely).
    fn wait_time(&self) -> Option<Duration> {
        let deadline = match (self.next_auto_compaction, self.compactor.next_step()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }?;
        Some(deadline.saturating_duration_since(Instant::now()))
    }

    /// Starts automatic compaction when it is due, then runs one compaction step if any is due.
    fn maintain(&mut self) {
        let now = Instant::now();
        if self.next_auto_compaction.is_some_and(|due| due <= now) {
            self.next_auto_compaction = now.checked_add(self.config.compaction_interval);
            let target = self.auto_compaction_target(now);
            if target > self.compactor.compacted() {
                self.compactor.start(&self.conn, &self.shared, target, None);
            }
        }
        if self.compactor.next_step().is_some_and(|at| at <= Instant::now()) {
            self.compactor.step(&self.conn, &self.shared);
        }
    }

    /// The revision automatic compaction may remove history up to: the newer of the revisions
    /// current `retain_time` ago and `retain_revisions` back is kept.
    fn auto_compaction_target(&mut self, now: Instant) -> Revision {
        self.marks.push_back((now, self.current));
        let old = |mark: &(Instant, Revision)| {
            now.saturating_duration_since(mark.0) >= self.config.retain_time
        };
        // Only the newest old-enough mark matters; it stays as the bound of later runs.
        while self.marks.get(1).is_some_and(old) {
            self.marks.pop_front();
        }
        let old_enough = self.marks.front().filter(|m| old(m)).map_or(0, |m| m.1);
        old_enough.min(self.current - self.config.retain_revisions.max(0))
    }

    fn control(&mut self, req: Request) {
        match req {
            Request::Subscribe { after, reply } => self.subscribe(after, reply),
            Request::Compact { revision, reply } => {
                if revision > self.current {
                    let _ = reply.send(Err(StoreError::FutureRevision {
                        requested: revision,
                        current: self.current,
                    }));
                } else {
                    self.compactor.start(&self.conn, &self.shared, revision, Some(reply));
                }
            }
            Request::Flush(reply) => self.compactor.flush(reply),
            Request::Write(..) | Request::Shutdown => {}
        }
    }

    /// Registers a subscriber together with the committed events it has not seen.
    fn subscribe(&mut self, after: Revision, reply: Reply<Subscription>) {
        let compacted = self.compactor.compacted();
        if after < compacted {
            let _ = reply.send(Err(StoreError::TooOld { requested: after, oldest: compacted }));
            return;
        }
        let backlog = if after < self.current {
            match reader::history(&self.conn, after, self.current) {
                Ok(events) => events,
                Err(e) => {
                    let _ =
                        reply.send(Err(schema::map_err(&self.path, e, StoreError::Unavailable)));
                    return;
                }
            }
        } else {
            Vec::new()
        };
        let (tx, live) = mpsc::unbounded_channel();
        if reply.send(Ok(Subscription { backlog, live })).is_ok() {
            self.subscribers.push(Subscriber { after, tx });
        }
    }

    /// Applies and commits a group of writes, then answers them.
    fn commit_batch(&mut self, batch: &mut Vec<(Op, Reply<KeyValue>)>) {
        if batch.is_empty() {
            return;
        }
        let size = batch.len();
        let want_events = !self.subscribers.is_empty();
        let mut replies = Vec::with_capacity(size);
        let mut results = Vec::with_capacity(size);
        let mut events = Vec::with_capacity(if want_events { size } else { 0 });
        let mut next = self.current + 1;
        let started = Instant::now();
        let mut failure =
            self.conn.prepare_cached("BEGIN IMMEDIATE").and_then(|mut s| s.execute([])).err();
        {
            // Readers wait while the batch is applied (a few hundred microseconds), not while
            // it commits.
            let mut keys = self.shared.keys.write();
            let mut stmts = None;
            if failure.is_none() {
                match prepare(&self.conn) {
                    Ok(s) => stmts = Some(s),
                    Err(e) => failure = Some(e),
                }
            }
            for (op, reply) in batch.drain(..) {
                replies.push(reply);
                let Some(stmts) = stmts.as_mut().filter(|_| failure.is_none()) else { continue };
                match apply(stmts, &mut keys, op, next, want_events, &mut events) {
                    Ok(result) => {
                        if result.is_ok() {
                            next += 1;
                        }
                        results.push(result);
                    }
                    Err(e) => failure = Some(e),
                }
            }
        }
        if failure.is_none() {
            failure = self.conn.prepare_cached("COMMIT").and_then(|mut s| s.execute([])).err();
        }
        self.last_commit = started.elapsed();
        if let Some(e) = failure {
            rollback(&self.conn);
            let mut keys = self.shared.keys.write();
            for kv in results.iter().flatten() {
                keys.truncate_after(&kv.key, self.current);
            }
            drop(keys);
            let err = StoreError::WriteFailed(format!("{}: {e}", self.path.display()));
            tracing::error!(path = %self.path.display(), error = %e, batch = size, "write batch failed, rolled back");
            for reply in replies {
                let _ = reply.send(Err(err.clone()));
            }
            return;
        }
        self.current = next - 1;
        self.shared.current.store(self.current, Ordering::Release);
        self.publish(events);
        for (reply, result) in replies.into_iter().zip(results) {
            let _ = reply.send(result);
        }
    }

    /// Sends a committed batch's events to every subscriber, dropping the ones that are gone.
    fn publish(&mut self, events: Vec<Event>) {
        let (Some(first), Some(last)) = (events.first(), events.last()) else { return };
        let (first, last) = (first.revision(), last.revision());
        let batch = Arc::new(events);
        self.subscribers.retain(|sub| {
            if sub.after >= last {
                !sub.tx.is_closed()
            } else if sub.after >= first {
                let part = batch.iter().filter(|e| e.revision() > sub.after).cloned().collect();
                sub.tx.send(Arc::new(part)).is_ok()
            } else {
                sub.tx.send(batch.clone()).is_ok()
            }
        });
    }
}

fn prepare(conn: &Connection) -> rusqlite::Result<Statements<'_>> {
    Ok(Statements {
        insert: conn.prepare_cached(
            "INSERT INTO log (revision, key, value, create_revision, prev_revision, deleted) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?,
        value: conn.prepare_cached("SELECT value FROM log WHERE revision = ?1")?,
    })
}

/// The live version of `key`, if it matches `expected`.
fn check(keys: &KeyIndex, key: &str, expected: Option<Revision>) -> Result<Version> {
    let Some(live) = keys.live(key) else {
        return Err(StoreError::NotFound { key: key.to_owned() });
    };
    match expected {
        Some(expected) if expected != live.revision => {
            Err(StoreError::Conflict { key: key.to_owned(), expected, current: live.revision })
        }
        _ => Ok(live),
    }
}

/// Applies one write at `revision`. The outer error is an SQL failure (the batch fails); the
/// inner one is this request's own answer (a failed precondition).
fn apply(
    stmts: &mut Statements<'_>,
    keys: &mut KeyIndex,
    op: Op,
    revision: Revision,
    want_events: bool,
    events: &mut Vec<Event>,
) -> rusqlite::Result<Result<KeyValue>> {
    match op {
        Op::Create { key, value } => {
            if keys.live(&key).is_some() {
                return Ok(Err(StoreError::AlreadyExists { key }));
            }
            stmts.insert(revision, &key, &value, revision, 0, false)?;
            keys.push(&key, Version { revision, create_revision: revision });
            let kv = KeyValue { key, value, create_revision: revision, mod_revision: revision };
            if want_events {
                events.push(Event { kind: EventKind::Create, kv: kv.clone(), prev: None });
            }
            Ok(Ok(kv))
        }
        Op::Update { key, value, expected, known } => {
            let entry = match check(keys, &key, expected) {
                Ok(entry) => entry,
                Err(e) => return Ok(Err(e)),
            };
            stmts.insert(revision, &key, &value, entry.create_revision, entry.revision, false)?;
            let prev =
                if want_events { Some(stmts.value_of(entry.revision, known)?) } else { None };
            keys.push(&key, Version { revision, create_revision: entry.create_revision });
            let kv = KeyValue {
                key,
                value,
                create_revision: entry.create_revision,
                mod_revision: revision,
            };
            if let Some(prev) = prev {
                let prev = KeyValue { value: prev, mod_revision: entry.revision, ..kv.clone() };
                events.push(Event { kind: EventKind::Update, kv: kv.clone(), prev: Some(prev) });
            }
            Ok(Ok(kv))
        }
        Op::Delete { key, expected, known } => {
            let entry = match check(keys, &key, expected) {
                Ok(entry) => entry,
                Err(e) => return Ok(Err(e)),
            };
            let last = stmts.value_of(entry.revision, known)?;
            stmts.insert(revision, &key, &[], entry.create_revision, entry.revision, true)?;
            keys.push(&key, Version::tombstone(revision));
            let kv = KeyValue {
                key,
                value: last,
                create_revision: entry.create_revision,
                mod_revision: revision,
            };
            if want_events {
                let prev = KeyValue { mod_revision: entry.revision, ..kv.clone() };
                events.push(Event { kind: EventKind::Delete, kv: kv.clone(), prev: Some(prev) });
            }
            Ok(Ok(kv))
        }
    }
}
