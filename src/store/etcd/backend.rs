//! The [`Backend`] operations of [`EtcdBackend`], each a single etcd request (a transaction
//! for writes) except where a revision bound must be looked up for an error.

use std::sync::atomic::Ordering;

use async_trait::async_trait;
use bytes::Bytes;
use etcd_client::{
    CompactionOptions, Compare, CompareOp, DeleteOptions, GetOptions, Txn, TxnOp, TxnOpResponse,
    WatchOptions,
};

use super::keys::range_end;
use super::{header_revision, watch, EtcdBackend, Fail, LOAD_ATTEMPTS};
use crate::store::{Backend, Event, EventStream, KeyValue, ListPage, Result, Revision, StoreError};

fn check_revision(revision: Revision) -> Result<()> {
    if revision < 0 {
        return Err(StoreError::Invalid(format!("negative revision {revision}")));
    }
    Ok(())
}

#[async_trait]
impl Backend for EtcdBackend {
    fn name(&self) -> &'static str {
        "etcd"
    }

    async fn current_revision(&self) -> Result<Revision> {
        let opts = GetOptions::new().with_count_only();
        let mut kv = self.kv.clone();
        match self.rpc("revision", false, kv.get(self.keys.prefix().to_vec(), Some(opts))).await {
            Ok(resp) => header_revision(resp.header()),
            Err(fail) => Err(self.read_error(fail, 0).await),
        }
    }

    async fn load(&self) -> Result<(Vec<KeyValue>, Revision)> {
        let mut attempt = 1;
        loop {
            match self.load_once().await {
                Err(StoreError::TooOld { requested, .. }) if attempt < LOAD_ATTEMPTS => {
                    tracing::info!(
                        revision = requested,
                        attempt,
                        "etcd compacted during load; restarting"
                    );
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    async fn events(&self, after: Revision) -> Result<EventStream> {
        let stream = self.watch_after(after).await?;
        tracing::debug!(after, "etcd watch started");
        Ok(watch::event_stream(stream, self.keys.clone(), after, self.compacted.clone()))
    }

    async fn history(
        &self,
        prefix: &str,
        after: Revision,
        upto: Revision,
        limit: usize,
    ) -> Result<Vec<Event>> {
        check_revision(after)?;
        if upto <= after || limit == 0 {
            return Ok(vec![]);
        }
        let stream = self.watch_after(after).await?;
        let (keys, compacted) = (self.keys.clone(), self.compacted.clone());
        let read = watch::history(stream, keys, prefix, (after, upto), limit, compacted);
        match tokio::time::timeout(self.opts.request_timeout, read).await {
            Ok(result) => result,
            Err(_) => {
                Err(StoreError::Unavailable("etcd did not replay the history in time".into()))
            }
        }
    }

    async fn get_at(&self, key: &str, revision: Revision) -> Result<Option<KeyValue>> {
        check_revision(revision)?;
        let opts = GetOptions::new().with_revision(revision);
        let mut kv = self.kv.clone();
        match self.rpc("get", false, kv.get(self.keys.encode(key), Some(opts))).await {
            Ok(mut resp) => Ok(resp.take_kvs().into_iter().next().map(|kv| self.keys.owned(kv))),
            Err(fail) => Err(self.read_error(fail, revision).await),
        }
    }

    async fn list_at(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
        revision: Revision,
    ) -> Result<ListPage> {
        check_revision(revision)?;
        let low = self.keys.encode(prefix);
        let end = range_end(&low);
        let start = match start_after {
            Some(after) => self.keys.encode_after(after).max(low),
            None => low,
        };
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.range(start, end, limit, revision).await
    }

    async fn create(&self, key: &str, value: Bytes) -> Result<KeyValue> {
        let k = self.keys.encode(key);
        let txn = Txn::new()
            .when([Compare::create_revision(k.clone(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(k, value.clone(), None)]);
        let (resp, revision) = self.txn(txn).await?;
        if !resp.succeeded() {
            return Err(StoreError::AlreadyExists { key: key.to_string() });
        }
        Ok(KeyValue {
            key: key.to_string(),
            value,
            create_revision: revision,
            mod_revision: revision,
        })
    }

    async fn update(
        &self,
        key: &str,
        value: Bytes,
        expected: Option<Revision>,
    ) -> Result<KeyValue> {
        let k = self.keys.encode(key);
        let keys_only = || Some(GetOptions::new().with_keys_only());
        let txn = Txn::new()
            .when(Self::preconditions(&k, expected))
            .and_then([
                TxnOp::put(k.clone(), value.clone(), None),
                TxnOp::get(k.clone(), keys_only()),
            ])
            .or_else([TxnOp::get(k, keys_only())]);
        let (resp, revision) = self.txn(txn).await?;
        if !resp.succeeded() {
            return Err(Self::precondition_error(key, expected, &resp));
        }
        let create_revision = resp
            .op_responses()
            .into_iter()
            .find_map(|op| match op {
                TxnOpResponse::Get(get) => get.kvs().first().map(|kv| kv.create_revision()),
                _ => None,
            })
            .unwrap_or_else(|| {
                tracing::warn!(
                    key,
                    revision,
                    "etcd update response lacks the key's create revision"
                );
                0
            });
        Ok(KeyValue { key: key.to_string(), value, create_revision, mod_revision: revision })
    }

    async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<KeyValue> {
        let k = self.keys.encode(key);
        let txn = Txn::new()
            .when(Self::preconditions(&k, expected))
            .and_then([TxnOp::delete(k.clone(), Some(DeleteOptions::new().with_prev_key()))])
            .or_else([TxnOp::get(k, Some(GetOptions::new().with_keys_only()))]);
        let (resp, revision) = self.txn(txn).await?;
        if !resp.succeeded() {
            return Err(Self::precondition_error(key, expected, &resp));
        }
        let prev = resp.op_responses().into_iter().find_map(|op| match op {
            TxnOpResponse::Delete(del) => del.prev_kvs().first().map(|kv| self.keys.copied(kv)),
            _ => None,
        });
        match prev {
            Some(prev) => Ok(KeyValue { mod_revision: revision, ..prev }),
            None => Err(StoreError::NotFound { key: key.to_string() }),
        }
    }

    async fn compact(&self, revision: Revision) -> Result<()> {
        if revision <= 0 {
            return Ok(());
        }
        let mut opts = CompactionOptions::new();
        if self.opts.physical_compaction {
            opts = opts.with_physical();
        }
        let mut kv = self.kv.clone();
        match self.rpc("compact", true, kv.compact(revision, Some(opts))).await {
            Ok(_) => {
                self.note_compacted(revision);
                tracing::info!(revision, "compacted etcd");
                Ok(())
            }
            // Already compacted at or past `revision`: nothing left to do.
            Err(Fail::Compacted) => Ok(()),
            Err(fail) => Err(self.read_error(fail, revision).await),
        }
    }

    /// Finds etcd's compacted revision by probing: etcd keeps it in memory but reports it only
    /// through failed reads, so this checks whether the last known value is still current (one
    /// count-only read), and otherwise binary-searches the lowest readable revision between it
    /// and the current revision (about log2(revisions) reads). Returns 0 when nothing above
    /// revision 1 was compacted.
    async fn compacted_revision(&self) -> Result<Revision> {
        let known = self.compacted.load(Ordering::Relaxed);
        if known > 0 && self.readable(known).await? {
            return Ok(known);
        }
        let mut high = self.current_revision().await?;
        let mut low = known + 1;
        if low > high {
            return Ok(known);
        }
        while low < high {
            let mid = low + (high - low) / 2;
            if self.readable(mid).await? {
                high = mid;
            } else {
                low = mid + 1;
            }
        }
        let found = if low <= 1 { known } else { low };
        self.note_compacted(found);
        Ok(found)
    }
}

impl EtcdBackend {
    /// A watch over skiff's whole key space from `after + 1` (with previous values), or
    /// `TooOld` once `after` is compacted.
    async fn watch_after(&self, after: Revision) -> Result<etcd_client::WatchStream> {
        check_revision(after)?;
        // etcd serves watches from the compacted revision itself, but skiff's contract drops
        // the events at it, so check that `after` is still readable first.
        if after > 0 && !self.readable(after).await? {
            let oldest = self.compacted_revision().await?;
            return Err(StoreError::TooOld { requested: after, oldest });
        }
        let opts = WatchOptions::new()
            .with_range(range_end(self.keys.prefix()))
            .with_prev_key()
            .with_start_revision(after + 1);
        let mut client = self.watch.clone();
        self.rpc("watch", false, client.watch(self.keys.prefix().to_vec(), Some(opts)))
            .await
            .map_err(|fail| match fail {
                Fail::Store(e) => e,
                Fail::Compacted | Fail::Future => {
                    StoreError::Unavailable("etcd refused the watch".into())
                }
            })
    }
}
