//! The garbage collector's graph of owner references, kept small: at 100,000 pods it holds an
//! entry per pod, so uids, namespaces and owner references are shared rather than copied.
//! - A uid is one `Arc<str>`, shared by the node's key, its owners' dependent sets and, when the
//!   object is itself an owner, the dependents map's key.
//! - The owner references of the dependents of one owner are one shared `Arc<OwnerReference>`
//!   as long as they are equal (the pods of one ReplicaSet carry identical references).
//! - Namespaces are interned; only the two finalizers the collector acts on are kept, as flags.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

use super::{FOREGROUND_FINALIZER, ORPHAN_FINALIZER};

/// A uid, shared wherever the graph refers to it.
pub type Uid = Arc<str>;

/// One object of the graph.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    /// Index into the collector's watched kinds.
    pub kind: u16,
    pub namespace: Option<Arc<str>>,
    pub name: Box<str>,
    pub owners: Box<[Arc<OwnerReference>]>,
    pub deleting: bool,
    /// Holds the `orphan` finalizer.
    pub orphan: bool,
    /// Holds the `foregroundDeletion` finalizer.
    pub foreground: bool,
}

impl Node {
    /// Whether the collector may have something to do for this object itself.
    fn has_work(&self) -> bool {
        !self.owners.is_empty() || (self.deleting && (self.orphan || self.foreground))
    }

    /// Whether a change from `self` to `new` can change what the collector decides.
    fn same_decision_as(&self, new: &Node) -> bool {
        self.deleting == new.deleting
            && self.orphan == new.orphan
            && self.foreground == new.foreground
            && self.owners == new.owners
    }
}

/// What an informer saw of one object, before it is made compact.
pub struct Seen<'a> {
    pub kind: u16,
    pub namespace: Option<&'a str>,
    pub name: &'a str,
    pub owners: &'a [OwnerReference],
    pub deleting: bool,
    pub finalizers: &'a [String],
}

/// The dependents of one owner uid, and the reference they (mostly) share.
#[derive(Default)]
struct Dependents {
    reference: Option<Arc<OwnerReference>>,
    uids: HashSet<Uid>,
}

#[derive(Default)]
pub struct Graph {
    nodes: HashMap<Uid, Node>,
    /// Owner uid -> its dependents (owners may be absent from `nodes`).
    dependents: HashMap<Uid, Dependents>,
    namespaces: HashSet<Arc<str>>,
}

impl Graph {
    pub fn contains(&self, uid: &str) -> bool {
        self.nodes.contains_key(uid)
    }

    pub fn get(&self, uid: &str) -> Option<Node> {
        self.nodes.get(uid).cloned()
    }

    /// The objects that name `owner` as an owner and are in the graph, with their uids.
    pub fn dependents_of(&self, owner: &str) -> Vec<(Uid, Node)> {
        let Some(d) = self.dependents.get(owner) else { return vec![] };
        d.uids.iter().filter_map(|u| Some((u.clone(), self.nodes.get(u)?.clone()))).collect()
    }

    /// The graph's shared copy of `uid`, or a new one.
    fn uid(&self, uid: &str) -> Uid {
        match self.nodes.get_key_value(uid) {
            Some((k, _)) => k.clone(),
            None => match self.dependents.get_key_value(uid) {
                Some((k, _)) => k.clone(),
                None => Arc::from(uid),
            },
        }
    }

    fn namespace(&mut self, ns: &str) -> Arc<str> {
        if let Some(n) = self.namespaces.get(ns) {
            return n.clone();
        }
        let n: Arc<str> = Arc::from(ns);
        self.namespaces.insert(n.clone());
        n
    }

    fn compact(&mut self, seen: &Seen<'_>) -> Node {
        let owners = seen
            .owners
            .iter()
            .map(|o| match self.dependents.get(o.uid.as_str()).and_then(|d| d.reference.as_ref()) {
                Some(shared) if **shared == *o => shared.clone(),
                _ => Arc::new(o.clone()),
            })
            .collect();
        let has = |f: &str| seen.finalizers.iter().any(|x| x == f);
        Node {
            kind: seen.kind,
            namespace: seen.namespace.map(|ns| self.namespace(ns)),
            name: seen.name.into(),
            owners,
            deleting: seen.deleting,
            orphan: has(ORPHAN_FINALIZER),
            foreground: has(FOREGROUND_FINALIZER),
        }
    }

    /// Records an object; returns the uids to look at: the object itself when it is new or
    /// when its owners, deletion or collector finalizers changed and it has work.
    pub fn upsert(&mut self, uid: &str, seen: Seen<'_>) -> Vec<Uid> {
        let node = self.compact(&seen);
        let uid = self.uid(uid);
        let old = self.nodes.remove(&uid);
        if let Some(old) = &old {
            for o in old.owners.iter() {
                self.unlink(&o.uid, &uid);
            }
        }
        for o in node.owners.iter() {
            let owner = self.uid(&o.uid);
            let d = self.dependents.entry(owner).or_default();
            if d.reference.is_none() {
                d.reference = Some(o.clone());
            }
            d.uids.insert(uid.clone());
        }
        let changed = old.as_ref().is_none_or(|old| !old.same_decision_as(&node));
        let dirty = if changed && node.has_work() { vec![uid.clone()] } else { vec![] };
        self.nodes.insert(uid, node);
        dirty
    }

    fn unlink(&mut self, owner: &str, dependent: &str) {
        if let Some(d) = self.dependents.get_mut(owner) {
            d.uids.remove(dependent);
            if d.uids.is_empty() {
                self.dependents.remove(owner);
            }
        }
    }

    /// Forgets an object; returns its dependents and owners (they may have work now).
    pub fn remove(&mut self, uid: &str) -> Vec<Uid> {
        let mut dirty: Vec<Uid> =
            self.dependents.get(uid).map(|d| d.uids.iter().cloned().collect()).unwrap_or_default();
        if let Some(old) = self.nodes.remove(uid) {
            for o in old.owners.iter() {
                dirty.push(self.uid(&o.uid));
                self.unlink(&o.uid, uid);
            }
            if let Some(ns) = old.namespace {
                // The interned copy and this one: no other object is in that namespace.
                if Arc::strong_count(&ns) == 2 {
                    self.namespaces.remove(&ns);
                }
            }
        }
        dirty
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner(name: &str, uid: &str) -> OwnerReference {
        OwnerReference {
            api_version: "apps/v1".into(),
            kind: "ReplicaSet".into(),
            name: name.into(),
            uid: uid.into(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        }
    }

    fn seen<'a>(name: &'a str, owners: &'a [OwnerReference], fins: &'a [String]) -> Seen<'a> {
        Seen { kind: 0, namespace: Some("ns"), name, owners, deleting: false, finalizers: fins }
    }

    #[test]
    fn dependents_of_one_owner_share_its_reference_uid_and_namespace() {
        let mut g = Graph::default();
        let rs = [owner("rs", "u-rs")];
        g.upsert("u-rs", Seen { kind: 1, ..seen("rs", &[], &[]) });
        g.upsert("u-a", seen("a", &rs, &[]));
        g.upsert("u-b", seen("b", &rs, &[]));
        let (a, b) = (g.get("u-a").unwrap(), g.get("u-b").unwrap());
        assert!(Arc::ptr_eq(&a.owners[0], &b.owners[0]), "one shared owner reference");
        assert!(Arc::ptr_eq(a.namespace.as_ref().unwrap(), b.namespace.as_ref().unwrap()));
        let (key, _) = g.dependents.get_key_value("u-rs").unwrap();
        let (node_key, _) = g.nodes.get_key_value("u-rs").unwrap();
        assert!(Arc::ptr_eq(key, node_key), "the owner's uid is stored once");
        let mut deps: Vec<String> =
            g.dependents_of("u-rs").into_iter().map(|(u, _)| u.to_string()).collect();
        deps.sort();
        assert_eq!(deps, ["u-a", "u-b"]);
        // A reference that differs (another name) is kept as it is, not as the shared one.
        let other = [owner("renamed", "u-rs")];
        g.upsert("u-c", seen("c", &other, &[]));
        assert_eq!(&*g.get("u-c").unwrap().owners[0].name, "renamed");
    }

    #[test]
    fn only_changes_that_matter_to_the_collector_make_an_object_dirty() {
        let mut g = Graph::default();
        let rs = [owner("rs", "u-rs")];
        assert_eq!(g.upsert("u-a", seen("a", &rs, &[])).len(), 1, "new with an owner");
        assert!(g.upsert("u-a", seen("a", &rs, &[])).is_empty(), "same owners: nothing to do");
        let two = [owner("rs", "u-rs"), owner("rs2", "u-rs2")];
        assert_eq!(g.upsert("u-a", seen("a", &two, &[])).len(), 1, "owners changed");
        assert!(g.upsert("u-free", seen("free", &[], &[])).is_empty(), "no owner, no work");
        let fins = [ORPHAN_FINALIZER.to_string()];
        assert!(g.upsert("u-free", seen("free", &[], &fins)).is_empty(), "not deleting yet");
        let deleting = Seen { deleting: true, ..seen("free", &[], &fins) };
        assert_eq!(g.upsert("u-free", deleting).len(), 1, "deleting with the orphan finalizer");
        let n = g.get("u-free").unwrap();
        assert!(n.orphan && !n.foreground && n.deleting);
    }

    #[test]
    fn removing_an_object_wakes_its_owners_and_dependents_and_forgets_it() {
        let mut g = Graph::default();
        let rs = [owner("rs", "u-rs")];
        g.upsert("u-rs", Seen { kind: 1, ..seen("rs", &[], &[]) });
        g.upsert("u-a", seen("a", &rs, &[]));
        let woken: Vec<String> = g.remove("u-rs").iter().map(|u| u.to_string()).collect();
        assert_eq!(woken, ["u-a"], "the dependents of a removed owner");
        assert!(g.contains("u-a") && !g.contains("u-rs"));
        assert_eq!(g.dependents_of("u-rs").len(), 1, "the missing owner still has dependents");
        let woken: Vec<String> = g.remove("u-a").iter().map(|u| u.to_string()).collect();
        assert_eq!(woken, ["u-rs"], "the owners of a removed dependent");
        assert!(g.dependents.is_empty() && g.nodes.is_empty());
        assert!(g.namespaces.is_empty(), "a namespace nothing refers to is forgotten");
    }
}
