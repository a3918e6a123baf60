//! State shared by the scheduler's informer handlers and its scheduling loop: the cache (whose
//! changes wait, in order, while a cycle holds it), the queue, and the unschedulable pods.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::ResourceExt;
use parking_lot::Mutex;

use super::cache::{priority_of, Cache};
use super::queue;
use super::unschedulable::Recorded;
use super::DEFAULT_SCHEDULER_NAME;
use crate::controllers::podutil::key_of;

/// State shared by the informer handlers and the scheduling loop.
pub(super) struct Shared {
    pub(super) cache: Mutex<Cache>,
    pub(super) queue: queue::SchedulingQueue,
    /// Keys of pods that fit no node, waiting for a cluster change; true when another pod
    /// being placed may make them fit (pod affinity, topology spread).
    pub(super) unschedulable: Mutex<HashMap<String, bool>>,
    /// FailedScheduling events recorded.
    pub(super) recorded: Recorded,
    /// Whether the cache may hold nominations (pending pod events need the cache lock only then).
    pub(super) any_nominated: std::sync::atomic::AtomicBool,
    /// Cache changes the informer handlers could not apply at once because a scheduling cycle
    /// held the cache; applied, in order, before the next use of the cache. The handlers run on
    /// the shared informers' tasks, so they must never wait for a scheduling cycle.
    pub(super) deferred: Mutex<Vec<Deferred>>,
    /// The shared pod informer's cache: placed pods share its copies (set once it exists).
    pub(super) pod_store: std::sync::OnceLock<Store<Pod>>,
}

/// A cache change waiting for the cache lock.
pub(super) enum Deferred {
    Node(Node),
    NodeGone(String),
    Pod(Arc<Pod>),
    PodGone(String),
}

/// What applying cache changes asks for once the cache lock is released.
#[derive(Default)]
pub(super) struct FollowUp {
    /// Queue every unschedulable pod again.
    pub(super) flush_all: bool,
    /// Queue the unschedulable pods that wait for other pods.
    pub(super) flush_waiting: bool,
}

impl Shared {
    pub(super) fn new() -> Shared {
        Shared {
            cache: Mutex::new(Cache::default()),
            queue: queue::SchedulingQueue::new(),
            unschedulable: Mutex::new(HashMap::new()),
            recorded: Recorded::default(),
            any_nominated: std::sync::atomic::AtomicBool::new(false),
            deferred: Mutex::new(Vec::new()),
            pod_store: std::sync::OnceLock::new(),
        }
    }

    /// Runs `change` on the cache now if no scheduling cycle holds it (after any deferred
    /// changes), else defers what `defer` makes.
    pub(super) fn change_cache(
        &self,
        change: impl FnOnce(&Shared, &mut Cache, &mut FollowUp),
        defer: impl FnOnce() -> Deferred,
    ) {
        let mut follow = FollowUp::default();
        match self.cache.try_lock() {
            Some(mut cache) => {
                self.apply_deferred(&mut cache, &mut follow);
                change(self, &mut cache, &mut follow);
            }
            None => self.deferred.lock().push(defer()),
        }
        self.follow_up(follow);
    }

    /// Applies the deferred changes, oldest first (the caller holds the cache).
    pub(super) fn apply_deferred(&self, cache: &mut Cache, follow: &mut FollowUp) {
        let changes = std::mem::take(&mut *self.deferred.lock());
        for change in changes {
            match change {
                Deferred::Node(node) => apply_node(cache, &node, follow),
                Deferred::NodeGone(name) => cache.remove_node(&name),
                Deferred::Pod(pod) => self.apply_pod(cache, &pod, follow),
                Deferred::PodGone(uid) => apply_pod_gone(cache, &uid, follow),
            }
        }
    }

    /// The informer cache's copy of this version of the pod (a pod the cache keeps then costs
    /// no second copy), or a new one when the cache no longer holds that version.
    pub(super) fn shared_copy(&self, pod: &Pod) -> Arc<Pod> {
        self.pod_store
            .get()
            .and_then(|store| store.get(&ObjectRef::from_obj(pod)))
            .filter(|cached| cached.metadata.resource_version == pod.metadata.resource_version)
            .unwrap_or_else(|| Arc::new(pod.clone()))
    }

    /// Applies deferred changes if there are any (the periodic drain, for when no cycle runs).
    pub(super) fn drain_deferred(&self) {
        if self.deferred.lock().is_empty() {
            return;
        }
        let mut follow = FollowUp::default();
        self.apply_deferred(&mut self.cache.lock(), &mut follow);
        self.follow_up(follow);
    }

    pub(super) fn follow_up(&self, follow: FollowUp) {
        if follow.flush_all {
            self.flush_unschedulable();
        } else if follow.flush_waiting {
            self.flush_waiting_for_pods();
        }
    }

    /// A pod's change as the cache sees it: placement of assigned pods, nominations of others.
    pub(super) fn apply_pod(&self, cache: &mut Cache, pod: &Arc<Pod>, follow: &mut FollowUp) {
        if is_assigned(pod) {
            let uid = pod.metadata.uid.clone().unwrap_or_default();
            let before = cache.is_placed(&uid);
            cache.update_pod(pod);
            let after = cache.is_placed(&uid);
            follow.flush_all |= before && !after;
            follow.flush_waiting |= !before && after;
            return;
        }
        let nominated = pod.status.as_ref().and_then(|st| st.nominated_node_name.as_deref());
        let nominated =
            nominated.filter(|n| !n.is_empty() && pod.metadata.deletion_timestamp.is_none());
        cache.observe_nomination(pod, nominated);
        self.any_nominated.store(cache.has_nominations(), Ordering::Relaxed);
    }

    /// Queues every unschedulable pod again (something that may make them fit happened).
    pub(super) fn flush_unschedulable(&self) {
        let keys: Vec<String> = self.unschedulable.lock().drain().map(|(k, _)| k).collect();
        self.queue.add_all(keys);
    }

    /// Queues the unschedulable pods that wait for other pods (a pod was placed).
    pub(super) fn flush_waiting_for_pods(&self) {
        let keys: Vec<String> = {
            let mut m = self.unschedulable.lock();
            if !m.values().any(|w| *w) {
                return;
            }
            let keys: Vec<String> = m.iter().filter(|(_, w)| **w).map(|(k, _)| k.clone()).collect();
            for k in &keys {
                m.remove(k);
            }
            keys
        };
        self.queue.add_all(keys);
    }
}

pub(super) fn is_assigned(pod: &Pod) -> bool {
    pod.spec.as_ref().and_then(|sp| sp.node_name.as_deref()).is_some_and(|n| !n.is_empty())
}

pub(super) fn apply_node(cache: &mut Cache, node: &Node, follow: &mut FollowUp) {
    let changed = cache.node(&node.name_any()).is_none_or(|old| relevant_change(&old.node, node));
    cache.set_node(Arc::new(node.clone()));
    follow.flush_all |= changed;
}

pub(super) fn apply_pod_gone(cache: &mut Cache, uid: &str, follow: &mut FollowUp) {
    follow.flush_all |= cache.is_placed(uid);
    cache.remove_pod(uid);
}

pub(super) fn on_pod(s: &Shared, pod: &Pod) {
    let nominated = pod.status.as_ref().and_then(|st| st.nominated_node_name.as_deref());
    let nominated = nominated.is_some_and(|n| !n.is_empty());
    if is_assigned(pod) || nominated || s.any_nominated.load(Ordering::Relaxed) {
        let pod = s.shared_copy(pod);
        s.change_cache(
            |s, cache, follow| s.apply_pod(cache, &pod, follow),
            || Deferred::Pod(pod.clone()),
        );
    }
    if is_assigned(pod) {
        return;
    }
    if responsible_for(pod) {
        let key = key_of(pod);
        s.queue.set_priority(&key, priority_of(pod));
        if !s.unschedulable.lock().contains_key(&key) {
            s.queue.add(key);
        }
    }
}

/// Whether this scheduler should place the pod.
pub(super) fn responsible_for(pod: &Pod) -> bool {
    let Some(spec) = pod.spec.as_ref() else { return false };
    spec.node_name.as_deref().is_none_or(|n| n.is_empty())
        && spec.scheduler_name.as_deref().unwrap_or(DEFAULT_SCHEDULER_NAME)
            == DEFAULT_SCHEDULER_NAME
        && pod.metadata.deletion_timestamp.is_none()
        && !matches!(
            pod.status.as_ref().and_then(|s| s.phase.as_deref()),
            Some("Succeeded" | "Failed")
        )
}

/// Whether a node update can make an unschedulable pod fit.
pub(super) fn relevant_change(old: &Node, new: &Node) -> bool {
    let spec =
        |n: &Node| n.spec.as_ref().map(|s| (s.unschedulable, s.taints.clone())).unwrap_or_default();
    let alloc = |n: &Node| n.status.as_ref().and_then(|s| s.allocatable.clone());
    old.metadata.labels != new.metadata.labels || spec(old) != spec(new) || alloc(old) != alloc(new)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str) -> Node {
        serde_json::from_value(serde_json::json!({"metadata": {"name": name}})).expect("node")
    }

    #[test]
    fn handler_changes_wait_for_a_busy_cache_and_apply_in_order() {
        let shared = Shared::new();
        let add = |name: &str| {
            let n = node(name);
            shared.change_cache(
                |_, cache, follow| apply_node(cache, &n, follow),
                || Deferred::Node(n.clone()),
            )
        };
        add("a");
        assert!(shared.cache.lock().node("a").is_some(), "applied at once when free");
        {
            // A scheduling cycle holds the cache: the handler does not wait for it.
            let _cycle = shared.cache.lock();
            add("b");
            shared.change_cache(
                |_, cache, _| cache.remove_node("a"),
                || Deferred::NodeGone("a".into()),
            );
            assert_eq!(shared.deferred.lock().len(), 2);
        }
        shared.drain_deferred();
        let cache = shared.cache.lock();
        assert!(cache.node("b").is_some());
        assert!(cache.node("a").is_none(), "the removal came after the add");
        assert!(shared.deferred.lock().is_empty());
    }
}
