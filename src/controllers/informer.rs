//! What informers tell their handlers ([`Change`]), the garbage collector's metadata-only watch,
//! and named tasks. The shared, cached informers every other component uses are in
//! [`super::informers`]: there a handler is called after the cache has applied the change, so a
//! handler that queues a key never runs ahead of the cache the reconcile will read.

use std::fmt::Debug;

use futures::StreamExt;
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::{Api, Resource};
use serde::de::DeserializeOwned;

/// What an informer tells its handler.
pub enum Change<'a, K> {
    /// An object was created or updated (or listed during a (re)list).
    Applied(&'a K),
    /// An object was deleted.
    Deleted(&'a K),
    /// A (re)list finished: the store holds the complete current state.
    Synced,
}

/// A watch without a cache over `api` (for a metadata-only watch, an
/// `Api<PartialObjectMeta<_>>`) as the named task `name`, calling
/// `handler` for each change, without a cache: for the garbage collector, which keeps only its
/// graph of owner references. The returned receiver turns true once the first list has been
/// delivered; its sender drops when the task ends.
pub fn spawn_metadata<K>(
    name: &str,
    api: Api<K>,
    config: watcher::Config,
    mut handler: impl FnMut(Change<'_, K>) + Send + 'static,
) -> (tokio::sync::watch::Receiver<bool>, tokio::task::JoinHandle<()>)
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Clone + Send + Sync,
{
    let (ready_tx, ready) = tokio::sync::watch::channel(false);
    let stream = watcher::watcher(api, config).default_backoff();
    let task_name = name.to_string();
    let task = async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(item) = stream.next().await {
            match item {
                Ok(Event::Apply(o)) | Ok(Event::InitApply(o)) => handler(Change::Applied(&o)),
                Ok(Event::Delete(o)) => handler(Change::Deleted(&o)),
                Ok(Event::InitDone) => {
                    handler(Change::Synced);
                    let _ = ready_tx.send(true);
                }
                Ok(Event::Init) => {}
                Err(e) => {
                    tracing::debug!(informer = %task_name, error = %e, "watch failed; retrying")
                }
            }
        }
        tracing::warn!(informer = %task_name, "informer stream ended");
    };
    let handle = spawn_named(name, task);
    (ready, handle)
}

/// Spawns a future as a task named by a tracing span (`task = name`), so its logs say which
/// task they come from.
pub fn spawn_named<F>(name: &str, fut: F) -> tokio::task::JoinHandle<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    use tracing::Instrument;
    tokio::spawn(fut.instrument(tracing::info_span!("task", name = %name)))
}
