//! The etcd v3 backend: skiff's keys live under one key prefix of a real etcd cluster, and
//! etcd's own revisions are skiff's revisions.
//!
//! Writes are single-key transactions whose compare clauses carry the preconditions, and whose
//! else branch reads the key so that a failed precondition is reported from the same revision.
//! [`EtcdBackend::compacted_revision`] asks etcd itself (see there), so it stays right when
//! another process compacts the cluster.

mod backend;
mod endpoint;
mod errors;
mod keys;
mod watch;

#[cfg(test)]
mod tests;

use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, GetOptions, KvClient, ResponseHeader, Txn,
    TxnOpResponse, TxnResponse, WatchClient,
};

use super::{Backend, KeyValue, ListPage, Result, Revision, StoreError};
pub use endpoint::{parse_endpoints, Endpoints};
use keys::{range_end, Keys};

/// The key prefix skiff's keys live under unless [`EtcdOptions::key_prefix`] says otherwise.
pub const DEFAULT_KEY_PREFIX: &str = "/skiff";

/// Largest gRPC message accepted from etcd (a page or a watch batch of big values).
const MAX_DECODING_MESSAGE: usize = i32::MAX as usize;
/// HTTP/2 ping interval and ack timeout; etcd drops clients that ping more often than every 5s.
const KEEP_ALIVE: (Duration, Duration) = (Duration::from_secs(10), Duration::from_secs(10));
/// Times [`Backend::load`] restarts at a newer revision when a compaction overtakes it.
const LOAD_ATTEMPTS: usize = 3;

/// Client TLS for etcds:// endpoints.
#[derive(Clone, Debug, Default)]
pub struct EtcdTls {
    pub ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
}

/// Tuning of the etcd backend.
#[derive(Clone, Debug)]
pub struct EtcdOptions {
    /// Prepended to every key inside etcd, so skiff's keys never mix with other users'. Ranges
    /// cover every etcd key starting with it, so it must not be a prefix of another user's
    /// keys ("/skiff" also covers "/skiffy/..."); skiff's own keys start with "/".
    pub key_prefix: String,
    /// Deadline of each unary request (watches are not limited).
    pub request_timeout: Duration,
    /// Deadline of establishing a connection to a member.
    pub connect_timeout: Duration,
    /// Whether [`Backend::compact`] waits until etcd has physically removed the history.
    pub physical_compaction: bool,
    /// Keys per request when [`Backend::load`] pages through the prefix.
    pub load_page_size: usize,
}

impl Default for EtcdOptions {
    fn default() -> Self {
        EtcdOptions {
            key_prefix: DEFAULT_KEY_PREFIX.to_string(),
            request_timeout: Duration::from_secs(15),
            connect_timeout: Duration::from_secs(5),
            physical_compaction: false,
            load_page_size: 1_000,
        }
    }
}

/// A [`Backend`] over an etcd v3 cluster.
pub struct EtcdBackend {
    /// Kept alive: it owns the sender of the balanced channel's endpoint set.
    _client: Client,
    kv: KvClient,
    watch: WatchClient,
    keys: Keys,
    opts: EtcdOptions,
    /// The highest compacted revision this process has seen (its own compactions, watch
    /// cancellations, probes). A lower bound of etcd's; never above it.
    compacted: Arc<AtomicI64>,
}

/// Why an etcd request failed, before the caller adds revision context.
enum Fail {
    /// The requested revision is below etcd's compacted revision.
    Compacted,
    /// The requested revision is above etcd's current revision.
    Future,
    Store(StoreError),
}

impl EtcdBackend {
    /// Connects to `etcd://host:port[,host:port...]` or `etcds://...` (with `tls`).
    pub async fn connect(endpoint_url: &str, tls: EtcdTls) -> Result<EtcdBackend> {
        Self::connect_with(endpoint_url, tls, EtcdOptions::default()).await
    }

    /// Like [`EtcdBackend::connect`], with explicit options. Fails with `Invalid` for a
    /// malformed URL or missing TLS files, and with `Unavailable` if no member answers a read
    /// within the request timeout.
    pub async fn connect_with(
        endpoint_url: &str,
        tls: EtcdTls,
        opts: EtcdOptions,
    ) -> Result<EtcdBackend> {
        let endpoints = parse_endpoints(endpoint_url)?;
        let mut connect = ConnectOptions::new()
            .with_connect_timeout(opts.connect_timeout)
            .with_keep_alive(KEEP_ALIVE.0, KEEP_ALIVE.1)
            .with_require_leader(true);
        if endpoints.tls {
            connect = connect.with_tls(endpoint::load_tls(&tls)?);
        } else if endpoint::any_tls_file(&tls) {
            return Err(StoreError::Invalid(format!(
                "etcd TLS files were given but {endpoint_url:?} is a plain etcd:// endpoint \
                 (use etcds://)"
            )));
        }
        let client = match tokio::time::timeout(
            opts.request_timeout,
            Client::connect(&endpoints.urls, Some(connect)),
        )
        .await
        {
            Ok(Ok(client)) => client,
            Ok(Err(e)) => return Err(errors::map(e, false)),
            Err(_) => return Err(errors::timed_out("connect", opts.request_timeout)),
        };
        if opts.key_prefix.is_empty() {
            tracing::warn!("etcd key prefix is empty; skiff will see every key in the cluster");
        }
        let kv = client.kv_client().max_decoding_message_size(MAX_DECODING_MESSAGE);
        let watch = client.watch_client().max_decoding_message_size(MAX_DECODING_MESSAGE);
        let backend = EtcdBackend {
            _client: client,
            kv,
            watch,
            keys: Keys::new(&opts.key_prefix),
            opts,
            compacted: Arc::new(AtomicI64::new(0)),
        };
        let revision = backend.current_revision().await?;
        tracing::info!(
            endpoints = ?endpoints.urls,
            tls = endpoints.tls,
            key_prefix = %backend.opts.key_prefix,
            revision,
            "connected to etcd"
        );
        Ok(backend)
    }

    /// The prefix skiff's keys carry inside etcd.
    pub fn key_prefix(&self) -> &str {
        &self.opts.key_prefix
    }

    /// Runs one unary request under the request timeout and classifies its error.
    async fn rpc<T>(
        &self,
        what: &'static str,
        write: bool,
        fut: impl Future<Output = std::result::Result<T, etcd_client::Error>>,
    ) -> std::result::Result<T, Fail> {
        match tokio::time::timeout(self.opts.request_timeout, fut).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) if errors::is_compacted(&e) => Err(Fail::Compacted),
            Ok(Err(e)) if errors::is_future(&e) => Err(Fail::Future),
            Ok(Err(e)) => {
                let err = errors::map(e, write);
                tracing::debug!(request = what, error = %err, "etcd request failed");
                Err(Fail::Store(err))
            }
            Err(_) => Err(Fail::Store(errors::timed_out(what, self.opts.request_timeout))),
        }
    }

    /// Turns a failed read at `revision` into the store error, looking up the bounds.
    async fn read_error(&self, fail: Fail, revision: Revision) -> StoreError {
        match fail {
            Fail::Compacted => {
                let oldest = match self.compacted_revision().await {
                    Ok(rev) => rev,
                    Err(_) => self.compacted.load(Ordering::Relaxed),
                };
                StoreError::TooOld { requested: revision, oldest }
            }
            Fail::Future => {
                let current = self.current_revision().await.unwrap_or(revision - 1);
                StoreError::FutureRevision { requested: revision, current }
            }
            Fail::Store(e) => e,
        }
    }

    /// A write failed: compaction errors cannot happen there, so everything is a store error.
    fn write_error(fail: Fail) -> StoreError {
        match fail {
            Fail::Store(e) => e,
            Fail::Compacted | Fail::Future => {
                StoreError::WriteFailed("etcd refused a write over revisions".into())
            }
        }
    }

    fn note_compacted(&self, revision: Revision) {
        self.compacted.fetch_max(revision, Ordering::Relaxed);
    }

    /// Whether etcd still serves reads at `revision` (false once it is below the compacted
    /// revision). A cheap count-only read of one key.
    async fn readable(&self, revision: Revision) -> Result<bool> {
        let opts = GetOptions::new().with_count_only().with_revision(revision);
        let mut kv = self.kv.clone();
        match self.rpc("probe", false, kv.get(self.keys.prefix().to_vec(), Some(opts))).await {
            Ok(_) | Err(Fail::Future) => Ok(true),
            Err(Fail::Compacted) => Ok(false),
            Err(Fail::Store(e)) => Err(e),
        }
    }

    /// Runs a single-key transaction (a write).
    async fn txn(&self, txn: Txn) -> Result<(TxnResponse, Revision)> {
        let mut kv = self.kv.clone();
        let resp = self.rpc("txn", true, kv.txn(txn)).await.map_err(Self::write_error)?;
        let revision = header_revision(resp.header())?;
        Ok((resp, revision))
    }

    /// Reads `[start, end)` at `revision` (0 = latest), at most `limit` keys (0 = all).
    async fn range(
        &self,
        start: Vec<u8>,
        end: Vec<u8>,
        limit: i64,
        revision: Revision,
    ) -> Result<ListPage> {
        let opts = GetOptions::new().with_range(end).with_limit(limit).with_revision(revision);
        let mut kv = self.kv.clone();
        let mut resp = match self.rpc("range", false, kv.get(start, Some(opts))).await {
            Ok(resp) => resp,
            Err(fail) => return Err(self.read_error(fail, revision).await),
        };
        let read_at = if revision > 0 { revision } else { header_revision(resp.header())? };
        let more = resp.more();
        let items = resp.take_kvs().into_iter().map(|kv| self.keys.owned(kv)).collect();
        Ok(ListPage { items, revision: read_at, more })
    }

    /// Every live key under the prefix at one revision, or `TooOld` if a compaction
    /// overtook the pagination.
    async fn load_once(&self) -> Result<(Vec<KeyValue>, Revision)> {
        let end = range_end(self.keys.prefix());
        let page_size = i64::try_from(self.opts.load_page_size.max(1)).unwrap_or(i64::MAX);
        let mut page = self.range(self.keys.prefix().to_vec(), end.clone(), page_size, 0).await?;
        let revision = page.revision;
        let mut items = std::mem::take(&mut page.items);
        while page.more {
            let Some(last) = items.last() else { break };
            let start = self.keys.encode_after(&last.key);
            page = self.range(start, end.clone(), page_size, revision).await?;
            if page.items.is_empty() {
                break;
            }
            items.append(&mut page.items);
        }
        Ok((items, revision))
    }

    /// Compare clauses for update/delete: the key is live and, if asked, at `expected`.
    fn preconditions(k: &[u8], expected: Option<Revision>) -> Vec<Compare> {
        let mut cmp = vec![Compare::create_revision(k.to_vec(), CompareOp::Greater, 0)];
        if let Some(expected) = expected {
            cmp.push(Compare::mod_revision(k.to_vec(), CompareOp::Equal, expected));
        }
        cmp
    }

    /// The error for a failed update/delete precondition, from the else branch's read.
    fn precondition_error(key: &str, expected: Option<Revision>, resp: &TxnResponse) -> StoreError {
        let current = resp.op_responses().into_iter().find_map(|op| match op {
            TxnOpResponse::Get(get) => Some(get.kvs().first().map(|kv| kv.mod_revision())),
            _ => None,
        });
        match (current.flatten(), expected) {
            (Some(current), Some(expected)) => {
                StoreError::Conflict { key: key.to_string(), expected, current }
            }
            _ => StoreError::NotFound { key: key.to_string() },
        }
    }
}

/// The revision in a response header.
fn header_revision(header: Option<&ResponseHeader>) -> Result<Revision> {
    header
        .map(|h| h.revision())
        .ok_or_else(|| StoreError::Unavailable("etcd response without a header".into()))
}
