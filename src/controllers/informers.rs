//! Shared informers: one watch and one cache per resource (and selector) for every component of
//! a process, as upstream's shared informer factory. Each controller, the scheduler and the
//! simulated kubelet subscribe with their own handler; they all read the same [`Store`]. Without
//! this, every pod change was encoded, sent, decoded and cached once per component.
//!
//! Objects are cached without their managedFields (as upstream's controller manager and scheduler
//! trim them); an update sent without managedFields keeps the live object's.

use std::any::{Any, TypeId};
use std::collections::{HashMap, HashSet};
use std::fmt::Debug;
use std::sync::Arc;

use futures::future::BoxFuture;
use futures::StreamExt;
use kube::runtime::reflector::store::WriterDropped;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::{Api, Resource};
use parking_lot::Mutex;
use serde::de::DeserializeOwned;
use tokio::sync::watch;

use super::informer::{spawn_named, Change};

type Handler<K> = Box<dyn for<'a> FnMut(Change<'a, K>) + Send>;

/// Waiting for a shared cache to be filled. kube-rs's `Store::wait_until_ready` wakes only one
/// of several tasks waiting on clones of the same store (its one-shot keeps one waker), so a
/// shared store is awaited with `ready()`, which polls again every few milliseconds until the
/// store is filled.
pub trait StoreReady {
    fn ready(&self) -> BoxFuture<'_, Result<(), WriterDropped>>;
}

impl<K> StoreReady for Store<K>
where
    K: Resource<DynamicType = ()> + Clone + Send + Sync + 'static,
{
    fn ready(&self) -> BoxFuture<'_, Result<(), WriterDropped>> {
        Box::pin(async move {
            loop {
                let poll = tokio::time::timeout(READY_POLL, self.wait_until_ready());
                if let Ok(result) = poll.await {
                    return result;
                }
            }
        })
    }
}

/// How often [`StoreReady::ready`] looks again.
const READY_POLL: std::time::Duration = std::time::Duration::from_millis(20);

/// The informers of one process (or one cluster of components). Cheap to clone.
#[derive(Clone, Default)]
pub struct Informers {
    shared: Arc<Mutex<HashMap<Key, Arc<dyn Any + Send + Sync>>>>,
}

impl Debug for Informers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Informers").field("running", &self.shared.lock().len()).finish()
    }
}

/// What makes two informers the same: the type, the URL (scope) and the selectors.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Key {
    type_id: TypeId,
    url: String,
    labels: Option<String>,
    fields: Option<String>,
}

/// One shared informer: its cache and its subscribers.
struct Shared<K: Resource<DynamicType = ()> + 'static> {
    store: Store<K>,
    subscribers: Mutex<Subscribers<K>>,
    /// Turns true when the watch task ends.
    ended: watch::Receiver<bool>,
}

struct Subscribers<K> {
    /// The first list has been delivered.
    synced: bool,
    next_id: u64,
    handlers: Vec<(u64, Handler<K>)>,
    /// The watch task, stopped when the last subscriber leaves.
    watch_task: Option<tokio::task::AbortHandle>,
    /// The last subscriber left and the watch stopped: a new subscriber starts a new informer.
    stopped: bool,
}

impl<K> Subscribers<K> {
    fn each(&mut self, mut f: impl FnMut(&mut Handler<K>)) {
        for (_, h) in self.handlers.iter_mut() {
            f(h);
        }
    }
}

impl Informers {
    pub fn new() -> Informers {
        Informers::default()
    }

    /// Subscribes `handler` (named `name` in logs) to the shared informer of `api` with
    /// `config`, starting it if it is the first subscriber. The handler first gets every cached
    /// object and `Synced` (at once if the informer has synced, else when it does), then each
    /// change after the cache has applied it. Returns the shared store (wait for it with
    /// `wait_until_ready`) and a task that ends when the informer does; aborting the task ends
    /// the subscription.
    pub fn spawn<K>(
        &self,
        name: &str,
        api: Api<K>,
        config: watcher::Config,
        handler: impl for<'a> FnMut(Change<'a, K>) + Send + 'static,
    ) -> (Store<K>, tokio::task::JoinHandle<()>)
    where
        K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    {
        let key = Key {
            type_id: TypeId::of::<K>(),
            url: api.resource_url().to_string(),
            labels: config.label_selector.clone(),
            fields: config.field_selector.clone(),
        };
        let (shared, id) = {
            let mut map = self.shared.lock();
            let existing = map.get(&key).cloned().and_then(|a| a.downcast::<Shared<K>>().ok());
            let handler: Handler<K> = Box::new(handler);
            let attempt = match existing.filter(|s| !*s.ended.borrow()) {
                Some(s) => s.subscribe(handler).map(|id| (s, id)),
                None => Err(handler),
            };
            match attempt {
                Ok(found) => found,
                // None yet, or its last subscriber left and it stopped: a new one.
                Err(handler) => {
                    let s = start(&key, api, config);
                    map.insert(key, s.clone());
                    let id = s.subscribe(handler).unwrap_or_default();
                    (s, id)
                }
            }
        };
        let store = shared.store.clone();
        // Made outside the task, so that aborting it before it first runs still unsubscribes.
        let subscription = Subscription { shared: shared.clone(), id };
        let mut ended = shared.ended.clone();
        let task = spawn_named(name, async move {
            let _subscription = subscription;
            let _ = ended.wait_for(|e| *e).await;
        });
        (store, task)
    }
}

impl<K: Resource<DynamicType = ()> + Clone + 'static> Shared<K> {
    /// Adds a handler; gives it back when the informer has stopped (its last subscriber left).
    fn subscribe(&self, mut handler: Handler<K>) -> Result<u64, Handler<K>> {
        let mut subs = self.subscribers.lock();
        if subs.stopped {
            return Err(handler);
        }
        if subs.synced {
            for obj in self.store.state() {
                handler(Change::Applied(&obj));
            }
            handler(Change::Synced);
        }
        subs.next_id += 1;
        let id = subs.next_id;
        subs.handlers.push((id, handler));
        Ok(id)
    }
}

/// Removes a handler when its task ends (or is aborted); the last one to go stops the watch (as
/// a component that stops, such as a scheduler that is restarted, must not leave a watch of
/// every pod behind).
struct Subscription<K: Resource<DynamicType = ()> + 'static> {
    shared: Arc<Shared<K>>,
    id: u64,
}

impl<K: Resource<DynamicType = ()> + 'static> Drop for Subscription<K> {
    fn drop(&mut self) {
        let mut subs = self.shared.subscribers.lock();
        subs.handlers.retain(|(id, _)| *id != self.id);
        if subs.handlers.is_empty() {
            subs.stopped = true;
            if let Some(task) = subs.watch_task.take() {
                task.abort();
            }
        }
    }
}

/// Starts the watch and cache of one shared informer.
fn start<K>(key: &Key, api: Api<K>, config: watcher::Config) -> Arc<Shared<K>>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    let writer = reflector::store::Writer::new(());
    let store = writer.as_reader();
    let (ended_tx, ended) = watch::channel(false);
    let shared = Arc::new(Shared {
        store,
        subscribers: Mutex::new(Subscribers {
            synced: false,
            next_id: 0,
            handlers: vec![],
            watch_task: None,
            stopped: false,
        }),
        ended,
    });
    let stream = watcher::watcher(api, config)
        .default_backoff()
        .modify(|obj: &mut K| obj.meta_mut().managed_fields = None);
    let stream = reflector::reflector(writer, stream);
    let s = shared.clone();
    let url = key.url.clone();
    let task = spawn_named(&format!("informer {url}"), async move {
        let mut stream = std::pin::pin!(stream);
        // The cache as it was when a relist began (after the first list).
        let mut before_relist: Option<Vec<Arc<K>>> = None;
        while let Some(item) = stream.next().await {
            let mut subs = s.subscribers.lock();
            match item {
                // A (re)list fills a buffer the cache takes over only at InitDone: subscribers
                // get the listed objects from the cache then, so that a handler never reads
                // the cache older than the change it was told about.
                Ok(Event::InitApply(_)) => {}
                Ok(Event::Apply(o)) => subs.each(|h| h(Change::Applied(&o))),
                Ok(Event::Delete(o)) => subs.each(|h| h(Change::Deleted(&o))),
                Ok(Event::Init) => {
                    if subs.synced {
                        before_relist = Some(s.store.state());
                    }
                }
                Ok(Event::InitDone) => {
                    subs.synced = true;
                    let now = s.store.state();
                    // As upstream's Replace: what the new list lacks was deleted meanwhile.
                    if let Some(before) = before_relist.take() {
                        let listed: HashSet<ObjectRef<K>> =
                            now.iter().map(|o| ObjectRef::from_obj(&**o)).collect();
                        for gone in
                            before.iter().filter(|o| !listed.contains(&ObjectRef::from_obj(&***o)))
                        {
                            subs.each(|h| h(Change::Deleted(gone)));
                        }
                    }
                    for obj in &now {
                        subs.each(|h| h(Change::Applied(obj)));
                    }
                    subs.each(|h| h(Change::Synced));
                }
                Err(e) => tracing::debug!(informer = %url, error = %e, "watch failed; retrying"),
            }
        }
        tracing::warn!(informer = %url, "informer stream ended");
        let _ = ended_tx.send(true);
    });
    shared.subscribers.lock().watch_task = Some(task.abort_handle());
    shared
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::ResourceExt;

    #[tokio::test]
    async fn subscribers_share_one_cache_and_late_ones_get_the_cached_objects() {
        let cluster = crate::controllers::cluster::LocalCluster::start_with(
            crate::controllers::ComponentOptions { controllers: false, ..Default::default() },
        )
        .await
        .expect("cluster");
        let api: Api<ConfigMap> = Api::namespaced(cluster.client.clone(), "default");
        let mut cm = ConfigMap::default();
        cm.metadata.name = Some("first".into());
        api.create(&Default::default(), &cm).await.expect("create");

        let informers = Informers::new();
        let seen = Arc::new(Mutex::new(Vec::<String>::new()));
        let s = seen.clone();
        let (store, _task) = informers.spawn(
            "one",
            Api::<ConfigMap>::all(cluster.client.clone()),
            Default::default(),
            move |c| match c {
                Change::Applied(o) => s.lock().push(format!("one applied {}", o.name_any())),
                Change::Deleted(o) => s.lock().push(format!("one deleted {}", o.name_any())),
                Change::Synced => s.lock().push("one synced".into()),
            },
        );
        // Two subscribers waiting for the first list at once both see it complete.
        let (early, _early_task) = informers.spawn(
            "early",
            Api::<ConfigMap>::all(cluster.client.clone()),
            Default::default(),
            |_| {},
        );
        let both = futures::future::join(store.ready(), early.ready());
        let both = tokio::time::timeout(std::time::Duration::from_secs(30), both).await;
        let (a, b) = both.expect("both waiters are woken");
        a.expect("ready");
        b.expect("ready");
        let s = seen.clone();
        let (store2, task2) = informers.spawn(
            "two",
            Api::<ConfigMap>::all(cluster.client.clone()),
            Default::default(),
            move |c| match c {
                Change::Applied(o) => s.lock().push(format!("two applied {}", o.name_any())),
                Change::Deleted(o) => s.lock().push(format!("two deleted {}", o.name_any())),
                Change::Synced => s.lock().push("two synced".into()),
            },
        );
        assert_eq!(informers.shared.lock().len(), 1, "one informer for both");
        let cached = store2.get(&reflector::ObjectRef::new("first").within("default"));
        let cached = cached.expect("the second subscriber reads the shared cache");
        assert!(cached.metadata.managed_fields.is_none(), "managedFields are trimmed");
        {
            let seen = seen.lock();
            assert!(seen.contains(&"one applied first".to_string()), "{seen:?}");
            assert!(seen.contains(&"two applied first".to_string()), "{seen:?}");
            assert_eq!(seen.last().map(String::as_str), Some("two synced"), "{seen:?}");
        }
        task2.abort();
        let _ = task2.await;
        cm.metadata.name = Some("second".into());
        api.create(&Default::default(), &cm).await.expect("create");
        let s = seen.clone();
        crate::controllers::cluster::wait_for(
            std::time::Duration::from_secs(30),
            "the first subscriber to see the second object",
            move || {
                let found = s.lock().contains(&"one applied second".to_string());
                async move { found.then_some(()) }
            },
        )
        .await
        .expect("seen");
        assert!(
            !seen.lock().contains(&"two applied second".to_string()),
            "an aborted subscription gets nothing more"
        );
    }

    #[tokio::test]
    async fn the_last_subscriber_to_leave_stops_the_watch_and_a_new_one_starts_it_again() {
        let cluster = crate::controllers::cluster::LocalCluster::start_with(
            crate::controllers::ComponentOptions { controllers: false, ..Default::default() },
        )
        .await
        .expect("cluster");
        let all = || Api::<ConfigMap>::all(cluster.client.clone());
        let informers = Informers::new();
        let (store, first) = informers.spawn("first", all(), Default::default(), |_| {});
        store.ready().await.expect("ready");
        let (_, second) = informers.spawn("second", all(), Default::default(), |_| {});
        let running = |informers: &Informers| {
            let map = informers.shared.lock();
            let any = map.values().next().cloned().expect("one informer");
            any.downcast::<Shared<ConfigMap>>().ok().expect("configmaps")
        };
        let old = running(&informers);
        first.abort();
        let _ = first.await;
        assert!(old.ended.has_changed().is_ok(), "a subscriber is left: the watch runs");
        second.abort();
        let _ = second.await;
        // The watch task is aborted: its end signal's sender is gone.
        let ended = tokio::time::timeout(std::time::Duration::from_secs(30), async {
            while old.ended.has_changed().is_ok() {
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
        });
        ended.await.expect("the watch stops once nobody subscribes");

        let mut cm = ConfigMap::default();
        cm.metadata.name = Some("later".into());
        let api: Api<ConfigMap> = Api::namespaced(cluster.client.clone(), "default");
        api.create(&Default::default(), &cm).await.expect("create");
        let (store, _third) = informers.spawn("third", all(), Default::default(), |_| {});
        store.ready().await.expect("a new informer fills a new cache");
        assert!(!Arc::ptr_eq(&old, &running(&informers)), "a new informer");
        let later = store.get(&reflector::ObjectRef::new("later").within("default"));
        assert!(later.is_some(), "the new informer lists what the old one never saw");
    }
}

#[cfg(test)]
mod relist_tests {
    use super::*;
    use crate::controllers::informer::Change;
    use crate::store::sqlite::{SqliteBackend, SqliteOptions};
    use crate::store::CacheOptions;
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::api::{DeleteParams, PostParams};
    use kube::ResourceExt;
    use std::sync::OnceLock;

    fn cm(name: &str, data: &str) -> ConfigMap {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name}, "data": {"v": data},
        }))
        .unwrap()
    }

    /// A watch that fell behind while its history was compacted away gets 410 and must list
    /// again. Subscribers then hear of every listed object only once the cache holds it, and of
    /// the objects the new list lacks as deleted (as upstream's Replace).
    #[tokio::test(flavor = "multi_thread")]
    async fn a_relist_reports_deletions_and_never_runs_ahead_of_the_cache() {
        let dir = tempfile::tempdir().unwrap();
        let opts =
            SqliteOptions { compaction_interval: std::time::Duration::ZERO, ..Default::default() };
        let backend = SqliteBackend::open(&SqliteBackend::db_path(dir.path()), opts).unwrap();
        let cache = CacheOptions { window_events: 1, watcher_buffer: 1 };
        let store = crate::store::Store::open(Arc::new(backend), cache).await.unwrap();
        crate::registry::bootstrap::ensure_defaults(&store).await.unwrap();
        let client = crate::controllers::client::in_process_client(store.clone());
        let api: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
        for i in 0..20 {
            api.create(&PostParams::default(), &cm(&format!("cm-{i}"), "0")).await.unwrap();
        }

        let informers = Informers::new();
        let cell: Arc<OnceLock<Store<ConfigMap>>> = Arc::default();
        #[derive(Default)]
        struct Seen {
            stale: Vec<String>,
            deleted: Vec<String>,
            lists: usize,
        }
        let seen = Arc::new(Mutex::new(Seen::default()));
        // Held by the test, it stops the informer in its handler, so the watch falls behind.
        let gate = Arc::new(std::sync::Mutex::new(()));
        let (c, s, g) = (cell.clone(), seen.clone(), gate.clone());
        let (cache, _task) = informers.spawn(
            "relist",
            Api::<ConfigMap>::namespaced(client.clone(), "default"),
            Default::default(),
            move |change| match change {
                Change::Applied(o) => {
                    drop(g.lock());
                    let cached = c.get().and_then(|st| st.get(&ObjectRef::from_obj(o)));
                    if cached.is_some_and(|x| x.resource_version() != o.resource_version()) {
                        s.lock().stale.push(o.name_any());
                    }
                }
                Change::Deleted(o) => s.lock().deleted.push(o.name_any()),
                Change::Synced => s.lock().lists += 1,
            },
        );
        let _ = cell.set(cache.clone());
        cache.ready().await.unwrap();

        // More writes than the watch's buffers hold (256 in the response stream, one in the
        // store watcher) while the informer is stopped, then their history compacted away.
        let hold = gate.lock().unwrap();
        let patch = |name: String, v: &'static str| {
            let api = api.clone();
            async move {
                let p = serde_json::json!({"data": {"v": v}});
                let pp = kube::api::PatchParams::default();
                api.patch(&name, &pp, &kube::api::Patch::Merge(&p)).await.map(|_| ())
            }
        };
        for round in 0..16 {
            let v = if round % 2 == 0 { "2" } else { "3" };
            let writes = (1..20).map(|i| patch(format!("cm-{i}"), v));
            for r in futures::future::join_all(writes).await {
                r.unwrap();
            }
        }
        api.delete("cm-0", &DeleteParams::default()).await.unwrap();
        let writes = (1..20).map(|i| patch(format!("cm-{i}"), "1"));
        for r in futures::future::join_all(writes).await {
            r.unwrap();
        }
        store.compact(store.revision()).await.unwrap();
        drop(hold);
        let settled = tokio::time::timeout(std::time::Duration::from_secs(30), async {
            loop {
                let fresh = cache.state().len() == 19
                    && cache.state().iter().all(|o| o.data.as_ref().unwrap()["v"] == "1");
                if fresh && seen.lock().lists >= 2 {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        })
        .await;
        let seen = seen.lock();
        assert!(settled.is_ok(), "no relist seen ({} lists)", seen.lists);
        assert!(
            seen.stale.is_empty(),
            "told of objects the cache did not hold yet: {:?}",
            seen.stale
        );
        assert_eq!(seen.deleted, vec!["cm-0".to_string()]);
    }
}
