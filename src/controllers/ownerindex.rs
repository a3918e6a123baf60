//! Objects indexed by their controller: what a workload controller claims from (its own pods or
//! replica sets and the orphans of its namespace) without scanning every object in the cluster
//! on each sync, as upstream's controller-UID and orphan indexes. Fed from an informer's
//! handler, before the handler queues anything, so a sync never reads an index behind the cache.

use std::collections::{HashMap, HashSet};
use std::marker::PhantomData;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::Resource;
use parking_lot::RwLock;

use super::informer::Change;
use super::podutil::{controller_of, key_of, split_key};

/// Object keys (`namespace/name`) by controller uid, and orphans by namespace. Cheap to clone.
#[derive(Debug)]
pub struct OwnerIndex<K> {
    inner: Arc<RwLock<State>>,
    kind: PhantomData<fn(&K)>,
}

/// Pods by controller: the ReplicaSet, Job, disruption and endpoints controllers' index.
pub type PodIndex = OwnerIndex<Pod>;

impl<K> Clone for OwnerIndex<K> {
    fn clone(&self) -> Self {
        OwnerIndex { inner: self.inner.clone(), kind: PhantomData }
    }
}

impl<K> Default for OwnerIndex<K> {
    fn default() -> Self {
        OwnerIndex { inner: Arc::default(), kind: PhantomData }
    }
}

#[derive(Debug, Default)]
struct State {
    /// Bucket -> object keys.
    buckets: HashMap<Bucket, HashSet<String>>,
    /// Object key -> its bucket.
    of_key: HashMap<String, Bucket>,
    /// Namespace -> keys of all its objects.
    namespaces: HashMap<String, HashSet<String>>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Bucket {
    Owner(String),
    Orphan(String),
}

fn bucket_of<K: Resource>(obj: &K) -> Bucket {
    let meta = obj.meta();
    match controller_of(meta) {
        Some(owner) => Bucket::Owner(owner.uid.clone()),
        None => Bucket::Orphan(meta.namespace.clone().unwrap_or_default()),
    }
}

impl<K: Resource> OwnerIndex<K> {
    /// Applies one informer change.
    pub fn observe(&self, change: &Change<'_, K>) {
        match change {
            Change::Applied(obj) => {
                let key = key_of(*obj);
                let bucket = bucket_of(*obj);
                let mut st = self.inner.write();
                if st.of_key.get(&key) == Some(&bucket) {
                    return;
                }
                st.remove(&key);
                let ns = obj.meta().namespace.clone().unwrap_or_default();
                st.namespaces.entry(ns).or_default().insert(key.clone());
                st.buckets.entry(bucket.clone()).or_default().insert(key.clone());
                st.of_key.insert(key, bucket);
            }
            Change::Deleted(obj) => self.inner.write().remove(&key_of(*obj)),
            Change::Synced => {}
        }
    }

    /// Keys of the objects controlled by `owner_uid` and of the orphans in `namespace`.
    pub fn claimable(&self, namespace: &str, owner_uid: &str) -> Vec<String> {
        let st = self.inner.read();
        let owned = st.buckets.get(&Bucket::Owner(owner_uid.to_string()));
        let orphans = st.buckets.get(&Bucket::Orphan(namespace.to_string()));
        owned.into_iter().chain(orphans).flatten().cloned().collect()
    }

    /// Keys of the objects controlled by `owner_uid`.
    pub fn owned_by(&self, owner_uid: &str) -> Vec<String> {
        let st = self.inner.read();
        st.buckets
            .get(&Bucket::Owner(owner_uid.to_string()))
            .into_iter()
            .flatten()
            .cloned()
            .collect()
    }

    /// Keys of every object in `namespace`.
    pub fn in_namespace(&self, namespace: &str) -> Vec<String> {
        let st = self.inner.read();
        st.namespaces.get(namespace).into_iter().flatten().cloned().collect()
    }
}

/// The cached objects behind index keys (keys whose object has left the cache are skipped).
pub fn lookup<K>(store: &Store<K>, keys: &[String]) -> Vec<Arc<K>>
where
    K: Resource<DynamicType = ()> + Clone,
{
    keys.iter()
        .filter_map(|k| {
            let (ns, name) = split_key(k);
            let r = ObjectRef::new(name);
            store.get(&match ns {
                Some(ns) => r.within(ns),
                None => r,
            })
        })
        .collect()
}

impl State {
    fn remove(&mut self, key: &str) {
        let Some(old) = self.of_key.remove(key) else { return };
        let (ns, _) = split_key(key);
        let ns = ns.unwrap_or_default();
        if let Some(keys) = self.namespaces.get_mut(ns) {
            keys.remove(key);
            if keys.is_empty() {
                self.namespaces.remove(ns);
            }
        }
        if let Some(keys) = self.buckets.get_mut(&old) {
            keys.remove(key);
            if keys.is_empty() {
                self.buckets.remove(&old);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(ns: &str, name: &str, owner: Option<&str>) -> Pod {
        let mut meta = json!({"name": name, "namespace": ns});
        if let Some(uid) = owner {
            meta["ownerReferences"] = json!([{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                "name": "rs", "uid": uid, "controller": true}]);
        }
        serde_json::from_value(json!({"metadata": meta})).expect("pod")
    }

    fn sorted(mut v: Vec<String>) -> Vec<String> {
        v.sort();
        v
    }

    #[test]
    fn owned_pods_and_orphans_of_the_namespace_follow_changes() {
        let index = PodIndex::default();
        index.observe(&Change::Applied(&pod("a", "p1", Some("u1"))));
        index.observe(&Change::Applied(&pod("a", "p2", None)));
        index.observe(&Change::Applied(&pod("b", "p3", None)));
        index.observe(&Change::Applied(&pod("a", "p4", Some("u2"))));
        assert_eq!(sorted(index.claimable("a", "u1")), ["a/p1", "a/p2"]);
        // Adopted: the orphan moves to its owner.
        index.observe(&Change::Applied(&pod("a", "p2", Some("u1"))));
        assert_eq!(sorted(index.claimable("a", "u2")), ["a/p4"]);
        assert_eq!(sorted(index.claimable("a", "u1")), ["a/p1", "a/p2"]);
        // Released, then deleted.
        index.observe(&Change::Applied(&pod("a", "p1", None)));
        assert_eq!(sorted(index.claimable("a", "u2")), ["a/p1", "a/p4"]);
        index.observe(&Change::Deleted(&pod("a", "p1", None)));
        assert_eq!(sorted(index.claimable("a", "u2")), ["a/p4"]);
        assert_eq!(sorted(index.claimable("b", "u9")), ["b/p3"]);
        assert_eq!(sorted(index.owned_by("u2")), ["a/p4"]);
        assert_eq!(sorted(index.in_namespace("a")), ["a/p2", "a/p4"]);
        index.observe(&Change::Deleted(&pod("b", "p3", None)));
        assert!(index.in_namespace("b").is_empty());
    }
}
