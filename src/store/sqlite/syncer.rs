//! Durability off the writer's critical path.
//!
//! The write connection runs with `synchronous = NORMAL`: a commit appends its frames to the WAL
//! without waiting for the disk. The writer hands each committed batch to this thread, which
//! makes the WAL durable with `fdatasync` and only then publishes the batch: the current
//! revision, events to subscribers, and the callers' answers. One `fdatasync` covers every batch
//! committed before it began, so while the disk syncs one batch the writer already applies the
//! next. Checkpoints keep syncing the WAL and the database file themselves (NORMAL does that),
//! so acknowledged writes are exactly as durable as with `synchronous = FULL`.
//!
//! A failed `fdatasync` leaves the state of the file unknown: the batch and every later one are
//! answered with an error, and the backend refuses writes until it is reopened.

use std::fs::File;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, SyncSender};
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::mpsc;

use crate::store::{Event, KeyValue, Result, Revision, StoreError};

use super::writer::{EventBatch, Reply};
use super::Shared;

/// Committed batches waiting for the disk, at most; the writer blocks beyond that.
const QUEUE: usize = 8;

/// A watcher of committed events.
pub struct Subscriber {
    /// Events at or below this revision were already delivered (in its backlog).
    pub after: Revision,
    pub tx: mpsc::UnboundedSender<EventBatch>,
}

/// Subscribers, registered by the writer and fed by the syncer.
pub type Subscribers = Arc<Mutex<Vec<Subscriber>>>;

/// A committed batch: the revision it ends at, its events, and each caller's answer.
pub struct Committed {
    pub revision: Revision,
    pub events: Vec<Event>,
    pub answers: Vec<(Reply<KeyValue>, Result<KeyValue>)>,
}

pub enum Msg {
    Batch(Committed),
    /// Answered once every batch sent before it is published.
    Barrier(std::sync::mpsc::Sender<()>),
}

/// The sending side the writer keeps.
pub struct Handle {
    tx: Option<SyncSender<Msg>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Handle {
    /// Starts the syncer thread for the database at `db_path`.
    pub fn start(
        db_path: PathBuf,
        shared: Arc<Shared>,
        subscribers: Subscribers,
    ) -> std::io::Result<Handle> {
        let (tx, rx) = std::sync::mpsc::sync_channel(QUEUE);
        let mut wal = db_path.into_os_string();
        wal.push("-wal");
        let syncer = Syncer { wal_path: wal.into(), wal: None, shared, subscribers, failed: None };
        let thread =
            std::thread::Builder::new().name("sqlite-sync".into()).spawn(move || syncer.run(rx))?;
        Ok(Handle { tx: Some(tx), thread: Some(thread) })
    }

    /// Hands a committed batch over. If the syncer is gone its callers learn the store stopped.
    pub fn send(&self, batch: Committed) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(Msg::Batch(batch));
        }
    }

    /// Waits until every batch sent so far is published (or failed).
    pub fn drain(&self) {
        let Some(tx) = &self.tx else { return };
        let (done, wait) = std::sync::mpsc::channel();
        if tx.send(Msg::Barrier(done)).is_ok() {
            let _ = wait.recv();
        }
    }

    /// Publishes what is queued, then stops the thread.
    pub fn stop(&mut self) {
        self.tx = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.stop();
    }
}

struct Syncer {
    wal_path: PathBuf,
    wal: Option<File>,
    shared: Arc<Shared>,
    subscribers: Subscribers,
    /// Why the WAL could not be synced, once that happened.
    failed: Option<StoreError>,
}

impl Syncer {
    fn run(mut self, rx: Receiver<Msg>) {
        while let Ok(first) = rx.recv() {
            let mut msgs = vec![first];
            while msgs.len() < QUEUE * 2 {
                match rx.try_recv() {
                    Ok(msg) => msgs.push(msg),
                    Err(_) => break,
                }
            }
            let synced =
                if msgs.iter().any(|m| matches!(m, Msg::Batch(_))) { self.sync() } else { Ok(()) };
            for msg in msgs {
                match msg {
                    Msg::Batch(batch) => self.finish(batch, &synced),
                    Msg::Barrier(done) => {
                        let _ = done.send(());
                    }
                }
            }
        }
        self.subscribers.lock().clear();
        tracing::debug!("sqlite syncer stopped");
    }

    /// Makes everything written to the WAL so far durable.
    fn sync(&mut self) -> Result<()> {
        if let Some(err) = &self.failed {
            return Err(err.clone());
        }
        let result = match &self.wal {
            Some(file) => file.sync_data(),
            None => File::open(&self.wal_path).and_then(|file| {
                file.sync_data()?;
                self.wal = Some(file);
                Ok(())
            }),
        };
        result.map_err(|e| {
            let err = StoreError::WriteFailed(format!(
                "{}: fdatasync failed, writes refused until restart: {e}",
                self.wal_path.display()
            ));
            tracing::error!(path = %self.wal_path.display(), error = %e, "syncing the WAL failed");
            self.shared.failed.store(true, Ordering::Release);
            self.failed = Some(err.clone());
            err
        })
    }

    /// Publishes a durable batch, or fails its callers.
    fn finish(&self, batch: Committed, synced: &Result<()>) {
        if let Err(err) = synced {
            for (reply, _) in batch.answers {
                let _ = reply.send(Err(err.clone()));
            }
            return;
        }
        self.shared.current.fetch_max(batch.revision, Ordering::AcqRel);
        self.publish(batch.events);
        for (reply, result) in batch.answers {
            let _ = reply.send(result);
        }
    }

    /// Sends a batch's events to every subscriber, dropping the ones that are gone.
    fn publish(&self, events: Vec<Event>) {
        let (Some(first), Some(last)) = (events.first(), events.last()) else { return };
        let (first, last) = (first.revision(), last.revision());
        let batch = Arc::new(events);
        self.subscribers.lock().retain(|sub| {
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
