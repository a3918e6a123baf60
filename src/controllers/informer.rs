//! Informers: a kube-rs reflector (a watcher whose events keep an in-memory [`Store`] current)
//! whose events are handed to a controller's handler after the store has applied them, so a
//! handler that queues a key never runs ahead of the cache the reconcile will read.

use std::fmt::Debug;
use std::hash::Hash;

use futures::StreamExt;
use kube::runtime::reflector::{self, Store};
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

/// Starts a reflector over `api` as the named task `name`, calling `handler` for each change.
/// Returns the store (wait for it with `wait_until_ready`) and the task, which runs until the
/// process ends (watch errors are retried with backoff).
pub fn spawn<K>(
    name: &str,
    api: Api<K>,
    config: watcher::Config,
    handler: impl FnMut(Change<'_, K>) + Send + 'static,
) -> (Store<K>, tokio::task::JoinHandle<()>)
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + Hash + Clone + Send + Sync,
{
    spawn_with(name, api, config, Default::default(), handler)
}

/// Like [`spawn`] for a resource whose type is only known at run time (DynamicObject).
pub fn spawn_with<K>(
    name: &str,
    api: Api<K>,
    config: watcher::Config,
    dyntype: K::DynamicType,
    mut handler: impl FnMut(Change<'_, K>) + Send + 'static,
) -> (Store<K>, tokio::task::JoinHandle<()>)
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Eq + Hash + Clone + Send + Sync,
{
    let writer = reflector::store::Writer::new(dyntype);
    let reader = writer.as_reader();
    let stream = reflector::reflector(writer, watcher::watcher(api, config).default_backoff());
    let task_name = name.to_string();
    let task = async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(item) = stream.next().await {
            match item {
                Ok(Event::Apply(o)) | Ok(Event::InitApply(o)) => handler(Change::Applied(&o)),
                Ok(Event::Delete(o)) => handler(Change::Deleted(&o)),
                Ok(Event::InitDone) => handler(Change::Synced),
                Ok(Event::Init) => {}
                Err(e) => {
                    tracing::debug!(informer = %task_name, error = %e, "watch failed; retrying")
                }
            }
        }
        tracing::warn!(informer = %task_name, "informer stream ended");
    };
    let handle = spawn_named(name, task);
    (reader, handle)
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
