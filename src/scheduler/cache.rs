//! The scheduler's cache of nodes and of what is placed on them: the pods on each node with
//! their requested resources and host ports, from bound pods the informer reports and from pods
//! the scheduler has assumed onto a node while their binding is in flight (assume-on-bind), so
//! the next pod is placed against up-to-date allocations without waiting for the watch. It also
//! remembers which pending pods are nominated to a node by preemption.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::ResourceExt;

use super::resources::{node_allocatable, pod_requests, Resources};
use super::rows::FitRow;

/// A host port a pod uses: (protocol, host IP, port).
pub type HostPort = (String, String, i32);

/// A pod and what the scheduler derives from it once.
#[derive(Debug)]
pub struct PodInfo {
    pub pod: Arc<Pod>,
    pub uid: String,
    pub requests: Resources,
    pub non_zero: Resources,
    pub ports: Vec<HostPort>,
    pub priority: i32,
    /// Whether the pod has terms that weigh in other pods' InterPodAffinity scores: required
    /// affinity, preferred affinity or preferred anti-affinity (required anti-affinity does not).
    pub has_scoring_terms: bool,
    /// Whether the pod has required pod anti-affinity terms.
    pub has_required_anti_affinity: bool,
    /// Whether some of those terms use a topology key other than the node's hostname.
    pub has_non_host_anti_affinity: bool,
    /// The pod's affinity terms as written (empty without affinity), parsed once.
    pub terms: super::interpod::PodTerms,
}

impl PodInfo {
    pub fn new(pod: Arc<Pod>) -> PodInfo {
        let aff = pod.spec.as_ref().and_then(|s| s.affinity.as_ref());
        let has_affinity =
            aff.is_some_and(|a| a.pod_affinity.is_some() || a.pod_anti_affinity.is_some());
        let has_required_anti_affinity = aff
            .and_then(|a| a.pod_anti_affinity.as_ref())
            .and_then(|a| a.required_during_scheduling_ignored_during_execution.as_ref())
            .is_some_and(|t| !t.is_empty());
        let terms: super::interpod::PodTerms =
            if has_affinity { super::interpod::raw_terms(&pod) } else { Default::default() };
        PodInfo {
            uid: pod.metadata.uid.clone().unwrap_or_default(),
            requests: pod_requests(&pod, false),
            non_zero: pod_requests(&pod, true),
            ports: host_ports(&pod),
            priority: priority_of(&pod),
            has_scoring_terms: !terms.affinity.is_empty() || terms.has_preferred(),
            has_required_anti_affinity,
            has_non_host_anti_affinity: terms
                .anti_affinity
                .iter()
                .any(|t| t.topology_key != super::interpod::HOSTNAME),
            terms,
            pod,
        }
    }

    /// Whether the pod is being deleted.
    pub fn terminating(&self) -> bool {
        self.pod.metadata.deletion_timestamp.is_some()
    }
}

/// A pod's priority (spec.priority, 0 when unset).
pub fn priority_of(pod: &Pod) -> i32 {
    pod.spec.as_ref().and_then(|s| s.priority).unwrap_or(0)
}

/// One node and what is placed on it.
#[derive(Clone, Debug)]
pub struct NodeInfo {
    pub node: Arc<Node>,
    pub allocatable: Resources,
    /// The sum of the requests of the pods on the node.
    pub requested: Resources,
    /// The same with the scoring defaults for containers without requests.
    pub non_zero_requested: Resources,
    pub used_ports: Vec<HostPort>,
    pub pods: Vec<Arc<PodInfo>>,
    /// How many of the pods have terms that weigh in other pods' scores.
    pub pods_with_scoring_terms: usize,
    /// How many of the pods have required pod anti-affinity.
    pub pods_with_required_anti_affinity: usize,
    /// How many have required anti-affinity with a topology key other than the hostname.
    pub pods_with_non_host_anti_affinity: usize,
    /// Pods that are not terminating, by the uid of their first owner (the system default
    /// spread counts a pod's siblings with it, as upstream's PodsWithOwnerRef).
    pub owned: std::collections::HashMap<String, usize>,
    /// What the filters read of the node object, kept here so that a pod without node
    /// constraints is checked and scored without touching the node: spec.unschedulable, and
    /// whether the node has taints at all.
    pub unschedulable: bool,
    pub tainted: bool,
    /// How many of the pods carry each label pair, by [`label_pair`]: lets a pod affinity
    /// term whose selector needs a pair no pod here has skip the node's pods. The keys are
    /// hashes already, so the map does not hash them again.
    pub label_pairs: nohash_hasher::IntMap<u64, u32>,
}

/// A label pair's key in [`NodeInfo::label_pairs`]: a hash of key and value (a collision only
/// costs a scan of the node's pods).
pub fn label_pair(key: &str, value: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    // SipHash with fixed keys: the same pair gives the same hash everywhere in the process.
    let mut h = std::hash::DefaultHasher::new();
    (key, value).hash(&mut h);
    h.finish()
}

impl NodeInfo {
    pub fn new(node: Arc<Node>) -> NodeInfo {
        let mut info = NodeInfo {
            allocatable: Resources::default(),
            node: node.clone(),
            requested: Resources::default(),
            non_zero_requested: Resources::default(),
            used_ports: vec![],
            pods: vec![],
            pods_with_scoring_terms: 0,
            pods_with_required_anti_affinity: 0,
            pods_with_non_host_anti_affinity: 0,
            owned: Default::default(),
            unschedulable: false,
            tainted: false,
            label_pairs: Default::default(),
        };
        info.set_node(node);
        info
    }

    /// Replaces the node object (its pods and their totals stay).
    pub fn set_node(&mut self, node: Arc<Node>) {
        self.allocatable = node_allocatable(&node);
        let spec = node.spec.as_ref();
        self.unschedulable = spec.and_then(|s| s.unschedulable).unwrap_or(false);
        self.tainted = spec.and_then(|s| s.taints.as_ref()).is_some_and(|ts| !ts.is_empty());
        self.node = node;
    }

    pub fn name(&self) -> &str {
        self.node.metadata.name.as_deref().unwrap_or("")
    }

    /// The node's label `key`.
    pub fn label(&self, key: &str) -> Option<&String> {
        self.node.metadata.labels.as_ref().and_then(|l| l.get(key))
    }

    /// Adds a pod to the node's totals.
    pub fn add_pod(&mut self, p: &Arc<PodInfo>) {
        self.requested.add(&p.requests);
        self.non_zero_requested.add(&p.non_zero);
        self.used_ports.extend(p.ports.iter().cloned());
        self.pods_with_scoring_terms += usize::from(p.has_scoring_terms);
        self.pods_with_required_anti_affinity += usize::from(p.has_required_anti_affinity);
        self.pods_with_non_host_anti_affinity += usize::from(p.has_non_host_anti_affinity);
        if let Some(owner) = counted_owner(p) {
            *self.owned.entry(owner.to_string()).or_insert(0) += 1;
        }
        for (k, v) in p.pod.metadata.labels.iter().flatten() {
            *self.label_pairs.entry(label_pair(k, v)).or_insert(0) += 1;
        }
        self.pods.push(p.clone());
    }

    /// Removes a pod (by uid) from the node's totals; the removed pod, if it was there.
    pub fn remove_pod(&mut self, uid: &str) -> Option<Arc<PodInfo>> {
        let i = self.pods.iter().position(|p| p.uid == uid)?;
        let p = self.pods.swap_remove(i);
        self.requested.sub(&p.requests);
        self.non_zero_requested.sub(&p.non_zero);
        for port in &p.ports {
            if let Some(j) = self.used_ports.iter().position(|u| u == port) {
                self.used_ports.swap_remove(j);
            }
        }
        self.pods_with_scoring_terms -= usize::from(p.has_scoring_terms);
        self.pods_with_required_anti_affinity -= usize::from(p.has_required_anti_affinity);
        self.pods_with_non_host_anti_affinity -= usize::from(p.has_non_host_anti_affinity);
        if let Some(owner) = counted_owner(&p) {
            if let Some(n) = self.owned.get_mut(owner) {
                *n -= 1;
                if *n == 0 {
                    self.owned.remove(owner);
                }
            }
        }
        for (k, v) in p.pod.metadata.labels.iter().flatten() {
            let pair = label_pair(k, v);
            if let Some(n) = self.label_pairs.get_mut(&pair) {
                *n -= 1;
                if *n == 0 {
                    self.label_pairs.remove(&pair);
                }
            }
        }
        Some(p)
    }

    /// Pods on the node that are not terminating and whose first owner has this uid.
    pub fn owned_by(&self, owner: &str) -> usize {
        self.owned.get(owner).copied().unwrap_or(0)
    }
}

/// The uid of the pod's first owner, when the pod counts in [`NodeInfo::owned`].
fn counted_owner(p: &PodInfo) -> Option<&str> {
    if p.terminating() {
        return None;
    }
    p.pod.metadata.owner_references.as_ref()?.first().map(|o| o.uid.as_str())
}

/// Where a pod is placed.
#[derive(Clone, Debug)]
struct Placement {
    node: String,
    info: Arc<PodInfo>,
    assumed: bool,
}

/// Nodes by name and pods by uid.
#[derive(Default)]
pub struct Cache {
    nodes: Vec<NodeInfo>,
    /// Each node's [`FitRow`], in the order of `nodes`, kept current with it.
    rows: Vec<FitRow>,
    index: HashMap<String, usize>,
    pods: HashMap<String, Placement>,
    /// Pods placed on nodes the cache does not know yet.
    orphans: HashSet<String>,
    /// Pods on known nodes with terms that weigh in others' scores, and with required
    /// anti-affinity.
    with_scoring_terms: usize,
    with_required_anti_affinity: usize,
    /// Nodes per value of the hostname label, and how many nodes carry that label.
    hostnames: HashMap<String, usize>,
    hostname_labelled: usize,
    /// Pending pods nominated to a node by preemption, by uid.
    nominated: HashMap<String, Nomination>,
}

/// A pending pod's nominated node ("" once cleared) as of a revision of the pod, so an older
/// informer event does not undo the scheduler's newer decision.
#[derive(Debug)]
struct Nomination {
    node: String,
    info: Arc<PodInfo>,
    revision: u64,
}

fn revision_of(pod: &Pod) -> u64 {
    pod.metadata.resource_version.as_deref().and_then(|r| r.parse().ok()).unwrap_or(0)
}

impl Cache {
    pub fn nodes(&self) -> &[NodeInfo] {
        &self.nodes
    }

    pub fn rows(&self) -> &[FitRow] {
        &self.rows
    }

    pub fn node(&self, name: &str) -> Option<&NodeInfo> {
        self.index.get(name).map(|i| &self.nodes[*i])
    }

    /// Whether any placed pod has terms that weigh in other pods' InterPodAffinity scores.
    pub fn any_scoring_terms(&self) -> bool {
        self.with_scoring_terms > 0
    }

    /// Whether no two nodes share a value of the hostname label, so a hostname topology domain
    /// is one node (its pods can be checked on the node itself).
    pub fn unique_hostnames(&self) -> bool {
        self.hostnames.len() == self.hostname_labelled
    }

    fn count_hostname(&mut self, node: &Node, add: bool) {
        let Some(v) = node.metadata.labels.as_ref().and_then(|l| l.get(super::interpod::HOSTNAME))
        else {
            return;
        };
        if add {
            *self.hostnames.entry(v.clone()).or_insert(0) += 1;
            self.hostname_labelled += 1;
        } else if let Some(c) = self.hostnames.get_mut(v) {
            *c -= 1;
            if *c == 0 {
                self.hostnames.remove(v);
            }
            self.hostname_labelled -= 1;
        }
    }

    /// Whether any placed pod has required pod anti-affinity.
    pub fn any_required_anti_affinity(&self) -> bool {
        self.with_required_anti_affinity > 0
    }

    /// Whether a pod (by uid) is assumed or bound in the cache.
    pub fn is_placed(&self, uid: &str) -> bool {
        self.pods.contains_key(uid)
    }

    /// The pending pods nominated to nodes: (node, pod).
    pub fn nominated(&self) -> impl Iterator<Item = (&str, &Arc<PodInfo>)> {
        self.nominated.values().filter(|n| !n.node.is_empty()).map(|n| (n.node.as_str(), &n.info))
    }

    /// Whether any nomination (or cleared nomination) is recorded.
    pub fn has_nominations(&self) -> bool {
        !self.nominated.is_empty()
    }

    /// The pod's nominated node as the cache knows it: Some(None) once cleared, None when the
    /// cache has no record (then the pod's status says).
    pub fn nominated_node(&self, uid: &str) -> Option<Option<&str>> {
        self.nominated.get(uid).map(|n| Some(n.node.as_str()).filter(|n| !n.is_empty()))
    }

    /// The scheduler's own decision: nominates the pod to `node` ("" clears the nomination).
    pub fn nominate(&mut self, pod: &Pod, node: &str) {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let info = Arc::new(PodInfo::new(Arc::new(pod.clone())));
        let n = Nomination { node: node.to_string(), info, revision: revision_of(pod) };
        self.nominated.insert(uid, n);
    }

    /// What an informer event says about a pending pod's nominated node; ignored when not
    /// newer than what is recorded.
    pub fn observe_nomination(&mut self, pod: &Pod, node: Option<&str>) {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let revision = revision_of(pod);
        match self.nominated.get(&uid) {
            Some(n) if n.revision >= revision => {}
            None if node.is_none() => {}
            _ => {
                let info = Arc::new(PodInfo::new(Arc::new(pod.clone())));
                let node = node.unwrap_or("").to_string();
                self.nominated.insert(uid, Nomination { node, info, revision });
            }
        }
    }

    /// Adds or replaces a node, keeping what is placed on it.
    pub fn set_node(&mut self, node: Arc<Node>) {
        let name = node.name_any();
        self.count_hostname(&node, true);
        match self.index.get(&name).copied() {
            Some(i) => {
                let old = self.nodes[i].node.clone();
                self.count_hostname(&old, false);
                self.nodes[i].set_node(node);
                self.rows[i] = FitRow::of(&self.nodes[i]);
            }
            None => {
                self.index.insert(name.clone(), self.nodes.len());
                let info = NodeInfo::new(node);
                self.rows.push(FitRow::of(&info));
                self.nodes.push(info);
                let orphans: Vec<String> = self.orphans.iter().cloned().collect();
                for uid in orphans {
                    if let Some(p) = self.pods.get(&uid).cloned().filter(|p| p.node == name) {
                        self.orphans.remove(&uid);
                        self.apply(&p, true);
                    }
                }
            }
        }
    }

    pub fn remove_node(&mut self, name: &str) {
        let Some(i) = self.index.remove(name) else { return };
        let gone = self.nodes.swap_remove(i);
        self.rows.swap_remove(i);
        self.count_hostname(&gone.node, false);
        self.with_scoring_terms -= gone.pods_with_scoring_terms;
        self.with_required_anti_affinity -= gone.pods_with_required_anti_affinity;
        if let Some(moved) = self.nodes.get(i) {
            self.index.insert(moved.name().to_string(), i);
        }
        for (uid, p) in &self.pods {
            if p.node == name {
                self.orphans.insert(uid.clone());
            }
        }
    }

    /// Places a pod on `node` before its binding is confirmed.
    pub fn assume(&mut self, pod: &Arc<Pod>, node: &str) {
        self.nominated.remove(pod.metadata.uid.as_deref().unwrap_or_default());
        self.place(pod.clone(), node, true);
    }

    /// Undoes [`assume`](Cache::assume) after a failed binding (a no-op once the informer has
    /// confirmed the pod).
    pub fn forget(&mut self, uid: &str) {
        if self.pods.get(uid).is_some_and(|p| p.assumed) {
            self.remove_pod(uid);
        }
    }

    /// Records what the informer says about a pod: a bound, non-terminal pod is placed on its
    /// node; anything else is removed.
    /// Records an assigned pod's new version. The cache keeps the `Arc` it is given, so callers
    /// pass the informer cache's own copy rather than a clone of it.
    pub fn update_pod(&mut self, pod: &Arc<Pod>) {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let node = pod.spec.as_ref().and_then(|s| s.node_name.clone()).unwrap_or_default();
        let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("");
        if node.is_empty() || phase == "Succeeded" || phase == "Failed" {
            if !node.is_empty() || !self.pods.get(&uid).is_some_and(|p| p.assumed) {
                self.remove_pod(&uid);
            }
            return;
        }
        self.nominated.remove(&uid);
        if let Some(p) = self.pods.get_mut(&uid) {
            if Arc::ptr_eq(&p.info.pod, pod) {
                p.assumed = false;
                return;
            }
        }
        // Placed again even when nothing the scheduler uses changed: the old version must not
        // stay alive here after the informer has let it go.
        self.place(pod.clone(), &node, false);
    }

    pub fn remove_pod(&mut self, uid: &str) {
        self.nominated.remove(uid);
        if let Some(p) = self.pods.remove(uid) {
            if !self.orphans.remove(uid) {
                self.apply(&p, false);
            }
        }
    }

    fn place(&mut self, pod: Arc<Pod>, node: &str, assumed: bool) {
        let info = Arc::new(PodInfo::new(pod));
        let uid = info.uid.clone();
        self.remove_pod(&uid);
        let p = Placement { node: node.to_string(), info, assumed };
        if self.index.contains_key(node) {
            self.apply(&p, true);
        } else {
            self.orphans.insert(uid.clone());
        }
        self.pods.insert(uid, p);
    }

    fn apply(&mut self, p: &Placement, add: bool) {
        let Some(&i) = self.index.get(&p.node) else { return };
        let info = &mut self.nodes[i];
        let (scoring, anti) =
            (usize::from(p.info.has_scoring_terms), usize::from(p.info.has_required_anti_affinity));
        if add {
            info.add_pod(&p.info);
            self.with_scoring_terms += scoring;
            self.with_required_anti_affinity += anti;
        } else if info.remove_pod(&p.info.uid).is_some() {
            self.with_scoring_terms -= scoring;
            self.with_required_anti_affinity -= anti;
        }
        self.rows[i] = FitRow::of(&self.nodes[i]);
    }
}

/// The host ports a pod's containers ask for.
pub fn host_ports(pod: &Pod) -> Vec<HostPort> {
    let Some(spec) = pod.spec.as_ref() else { return vec![] };
    spec.containers
        .iter()
        .flat_map(|c| c.ports.iter().flatten())
        .filter(|p| p.host_port.is_some_and(|h| h > 0))
        .map(|p| {
            (
                p.protocol.clone().unwrap_or_else(|| "TCP".into()),
                p.host_ip.clone().filter(|h| !h.is_empty()).unwrap_or_else(|| "0.0.0.0".into()),
                p.host_port.unwrap_or(0),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(uid: &str, owner: Option<&str>, terminating: bool) -> Arc<PodInfo> {
        let mut meta = json!({"name": uid, "namespace": "d", "uid": uid});
        if let Some(o) = owner {
            meta["ownerReferences"] =
                json!([{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs", "uid": o}]);
        }
        if terminating {
            meta["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
        }
        let pod: Pod =
            serde_json::from_value(json!({"metadata": meta, "spec": {"containers": []}}))
                .expect("pod");
        Arc::new(PodInfo::new(Arc::new(pod)))
    }

    #[test]
    fn nodes_tally_live_pods_by_first_owner() {
        let node: Node = serde_json::from_value(json!({"metadata": {"name": "n"}})).expect("node");
        let mut info = NodeInfo::new(Arc::new(node));
        info.add_pod(&pod("a", Some("rs1"), false));
        info.add_pod(&pod("b", Some("rs1"), false));
        info.add_pod(&pod("c", Some("rs2"), false));
        info.add_pod(&pod("d", Some("rs1"), true));
        info.add_pod(&pod("e", None, false));
        assert_eq!((info.owned_by("rs1"), info.owned_by("rs2")), (2, 1), "terminating not counted");
        info.remove_pod("a");
        info.remove_pod("d");
        info.remove_pod("c");
        assert_eq!((info.owned_by("rs1"), info.owned_by("rs2")), (1, 0));
        assert_eq!(info.owned.len(), 1, "empty tallies are dropped");
    }

    #[test]
    fn placed_pods_keep_the_informers_copy_of_their_latest_version() {
        let mut cache = Cache::default();
        let node: Node = serde_json::from_value(json!({"metadata": {"name": "n"}})).expect("node");
        cache.set_node(Arc::new(node));
        let version = |rv: &str, phase: &str| -> Arc<Pod> {
            Arc::new(
                serde_json::from_value(json!({
                    "metadata": {"name": "p", "namespace": "d", "uid": "u", "resourceVersion": rv},
                    "spec": {"nodeName": "n", "containers": []},
                    "status": {"phase": phase},
                }))
                .expect("pod"),
            )
        };
        let first = version("1", "Pending");
        cache.update_pod(&first);
        // A status-only update (nothing the scheduler uses changed) still lets the old go.
        let second = version("2", "Running");
        cache.update_pod(&second);
        assert_eq!(Arc::strong_count(&first), 1, "the cache let the first version go");
        let held = &cache.node("n").expect("node").pods;
        assert_eq!(held.len(), 1);
        assert!(Arc::ptr_eq(&held[0].pod, &second), "the cache holds the copy it was given");
        cache.update_pod(&second);
        assert_eq!(cache.node("n").expect("node").pods.len(), 1);
    }
}
