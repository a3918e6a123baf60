//! Pod topology spread constraints, as upstream's PodTopologySpread plugin: DoNotSchedule
//! constraints filter nodes by skew (maxSkew, minDomains, nodeAffinityPolicy and
//! nodeTaintsPolicy), ScheduleAnyway constraints score them (fewer matching pods in a node's
//! domains scores higher). Domain counts are computed once per scheduling cycle.
//!
//! A pod without constraints of its own is scored as upstream's system defaults (defaultingType
//! System): ScheduleAnyway with maxSkew 3 on the hostname and maxSkew 5 on the zone, selecting
//! the pods the Services, ReplicationControllers, ReplicaSets and StatefulSets that select the
//! pod select ([`SelectingObjects::default_selector`]); a pod selected by none gets none.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use k8s_openapi::api::apps::v1::{ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::{
    Node, Pod, ReplicationController, Service, TopologySpreadConstraint,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::runtime::reflector::Store;
use kube::runtime::watcher;
use kube::{Api, Client};
use parking_lot::Mutex;

use super::cache::{NodeInfo, PodInfo};
use super::filters::{matches_node_selector_and_affinity, untolerated_taint};
use crate::controllers::podutil::{selector_is_empty, selector_matches};

pub const REASON_MISSING_LABEL: &str =
    "node(s) didn't match pod topology spread constraints (missing required label)";
pub const REASON_SKEW: &str = "node(s) didn't match pod topology spread constraints";
const HOSTNAME: &str = "kubernetes.io/hostname";
const ZONE: &str = "topology.kubernetes.io/zone";
/// The system default constraints' maxSkew on the hostname and on the zone.
const DEFAULT_HOSTNAME_SKEW: i64 = 3;
const DEFAULT_ZONE_SKEW: i64 = 5;
const MAX_SCORE: i64 = 100;

/// One constraint made ready to count pods.
#[derive(Clone, Debug)]
pub struct Constraint {
    pub max_skew: i64,
    pub topology_key: String,
    pub min_domains: i64,
    /// None: the selector was absent (matches nothing).
    selector: Option<LabelSelector>,
    honor_node_affinity: bool,
    honor_taints: bool,
}

impl Constraint {
    fn new(pod: &Pod, c: &TopologySpreadConstraint) -> Constraint {
        let mut selector = c.label_selector.clone();
        if let Some(sel) = selector.as_mut() {
            let labels = pod.metadata.labels.as_ref();
            for key in c.match_label_keys.iter().flatten() {
                if let Some(v) = labels.and_then(|l| l.get(key)) {
                    sel.match_labels
                        .get_or_insert_with(BTreeMap::new)
                        .insert(key.clone(), v.clone());
                }
            }
        }
        Constraint {
            max_skew: i64::from(c.max_skew),
            topology_key: c.topology_key.clone(),
            min_domains: i64::from(c.min_domains.unwrap_or(1)),
            selector,
            honor_node_affinity: c.node_affinity_policy.as_deref() != Some("Ignore"),
            honor_taints: c.node_taints_policy.as_deref() == Some("Honor"),
        }
    }

    /// Whether a pod's labels match the selector.
    fn selects(&self, pod: &Pod) -> bool {
        let empty = BTreeMap::new();
        self.selector
            .as_ref()
            .is_some_and(|s| selector_matches(s, pod.metadata.labels.as_ref().unwrap_or(&empty)))
    }

    /// Upstream counts nothing for a selector without requirements.
    fn counts_anything(&self) -> bool {
        self.selector.as_ref().is_some_and(|s| !selector_is_empty(s))
    }

    /// Matching pods on a node: same namespace as the incoming pod, not terminating.
    fn count_on(&self, ns: &str, pods: &[std::sync::Arc<PodInfo>]) -> i64 {
        if !self.counts_anything() {
            return 0;
        }
        pods.iter()
            .filter(|p| {
                !p.terminating()
                    && p.pod.metadata.namespace.as_deref() == Some(ns)
                    && self.selects(&p.pod)
            })
            .count() as i64
    }

    /// Whether the node counts for this constraint (nodeAffinityPolicy, nodeTaintsPolicy).
    fn includes(&self, pod: &Pod, node: &Node) -> bool {
        let spec = pod.spec.as_ref();
        if self.honor_node_affinity
            && spec.is_some_and(|s| !matches_node_selector_and_affinity(s, node))
        {
            return false;
        }
        if self.honor_taints {
            let tolerations = spec.and_then(|s| s.tolerations.as_deref()).unwrap_or(&[]);
            if untolerated_taint(node, tolerations).is_some() {
                return false;
            }
        }
        true
    }
}

/// Whether the pod has no constraints of its own, so the system defaults apply.
pub fn uses_system_defaults(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.topology_spread_constraints.as_ref())
        .is_none_or(|c| c.is_empty())
}

/// The system default ScheduleAnyway constraints with the given selector.
fn system_defaults(selector: &LabelSelector) -> Vec<Constraint> {
    [(HOSTNAME, DEFAULT_HOSTNAME_SKEW), (ZONE, DEFAULT_ZONE_SKEW)]
        .into_iter()
        .map(|(key, max_skew)| Constraint {
            max_skew,
            topology_key: key.to_string(),
            min_domains: 1,
            selector: Some(selector.clone()),
            honor_node_affinity: true,
            honor_taints: false,
        })
        .collect()
}

/// The Services and controllers whose selectors make the default spread selector.
#[derive(Clone)]
pub struct SelectingObjects {
    services: Store<Service>,
    rcs: Store<ReplicationController>,
    rss: Store<ReplicaSet>,
    sss: Store<StatefulSet>,
    /// Counts changes to the four kinds: a remembered selector is good while it stands still.
    generation: Arc<AtomicU64>,
    /// Default selectors by namespace and pod labels, for one generation: the pods of one
    /// controller share their labels, so one look through every Service and controller of the
    /// namespace serves them all (at 1,000 ReplicaSets, that look cost each pod more than all
    /// its filters).
    memo: Arc<Mutex<SelectorMemo>>,
}

#[derive(Default)]
struct SelectorMemo {
    generation: u64,
    selectors: HashMap<(String, BTreeMap<String, String>), Option<LabelSelector>>,
}

/// A handler that counts every change of an informer into `generation`.
fn bump<K>(
    generation: &Arc<AtomicU64>,
) -> impl for<'a> FnMut(crate::controllers::informer::Change<'a, K>) + Send + 'static {
    let generation = generation.clone();
    move |_| {
        generation.fetch_add(1, Ordering::AcqRel);
    }
}

/// Remembered selectors at most; past it the memo starts again.
const MEMO_LIMIT: usize = 4096;

impl SelectingObjects {
    /// Subscribes to the shared informers of the four kinds.
    pub fn spawn(
        informers: &crate::controllers::informers::Informers,
        client: &Client,
    ) -> (SelectingObjects, Vec<tokio::task::JoinHandle<()>>) {
        let cfg = watcher::Config::default;
        let generation = Arc::new(AtomicU64::new(0));
        let (services, t1) = informers.spawn(
            "scheduler-service-informer",
            Api::<Service>::all(client.clone()),
            cfg(),
            bump(&generation),
        );
        let (rcs, t2) = informers.spawn(
            "scheduler-replicationcontroller-informer",
            Api::<ReplicationController>::all(client.clone()),
            cfg(),
            bump(&generation),
        );
        let (rss, t3) = informers.spawn(
            "scheduler-replicaset-informer",
            Api::<ReplicaSet>::all(client.clone()),
            cfg(),
            bump(&generation),
        );
        let (sss, t4) = informers.spawn(
            "scheduler-statefulset-informer",
            Api::<StatefulSet>::all(client.clone()),
            cfg(),
            bump(&generation),
        );
        let objects =
            SelectingObjects { services, rcs, rss, sss, generation, memo: Arc::default() };
        (objects, vec![t1, t2, t3, t4])
    }

    /// Waits until the four caches are filled.
    pub async fn ready(&self) -> Result<(), kube::runtime::reflector::store::WriterDropped> {
        use crate::controllers::informers::StoreReady;
        self.services.ready().await?;
        self.rcs.ready().await?;
        self.rss.ready().await?;
        self.sss.ready().await
    }

    /// Upstream's default selector: the labels of the Services' and ReplicationControllers'
    /// selectors and the requirements of the ReplicaSets' and StatefulSets' selectors, of
    /// those in the pod's namespace selecting the pod. None when nothing selects it.
    pub fn default_selector(&self, pod: &Pod) -> Option<LabelSelector> {
        let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
        let labels = pod.metadata.labels.clone().unwrap_or_default();
        // Read before the stores: a change while computing makes the result stale at once.
        let generation = self.generation.load(Ordering::Acquire);
        let key = (ns.to_string(), labels);
        {
            let mut memo = self.memo.lock();
            if memo.generation != generation || memo.selectors.len() >= MEMO_LIMIT {
                memo.selectors.clear();
                memo.generation = generation;
            }
            if let Some(found) = memo.selectors.get(&key) {
                return found.clone();
            }
        }
        let found = self.compute_default_selector(ns, &key.1);
        let mut memo = self.memo.lock();
        if memo.generation == generation {
            memo.selectors.insert(key, found.clone());
        }
        found
    }

    fn compute_default_selector(
        &self,
        ns: &str,
        labels: &BTreeMap<String, String>,
    ) -> Option<LabelSelector> {
        let map_selects =
            |m: Option<&BTreeMap<String, String>>| -> Option<BTreeMap<String, String>> {
                let m = m.filter(|m| !m.is_empty())?;
                m.iter().all(|(k, v)| labels.get(k) == Some(v)).then(|| m.clone())
            };
        let selector_selects = |s: Option<&LabelSelector>| -> Option<LabelSelector> {
            let s = s.filter(|s| !selector_is_empty(s))?;
            selector_matches(s, labels).then(|| s.clone())
        };
        let in_ns = |o: Option<&str>| o == Some(ns);
        let mut match_labels: BTreeMap<String, String> = BTreeMap::new();
        let mut requirements = LabelSelector::default();
        let mut any = false;
        for svc in self.services.state().iter().filter(|o| in_ns(o.metadata.namespace.as_deref())) {
            if let Some(m) = map_selects(svc.spec.as_ref().and_then(|s| s.selector.as_ref())) {
                match_labels.extend(m);
                any = true;
            }
        }
        for rc in self.rcs.state().iter().filter(|o| in_ns(o.metadata.namespace.as_deref())) {
            if let Some(m) = map_selects(rc.spec.as_ref().and_then(|s| s.selector.as_ref())) {
                match_labels.extend(m);
                any = true;
            }
        }
        let mut add = |s: LabelSelector| {
            let reqs = &mut requirements;
            for (k, v) in s.match_labels.into_iter().flatten() {
                reqs.match_expressions.get_or_insert_with(Vec::new).push(
                    k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement {
                        key: k,
                        operator: "In".into(),
                        values: Some(vec![v]),
                    },
                );
            }
            reqs.match_expressions
                .get_or_insert_with(Vec::new)
                .extend(s.match_expressions.into_iter().flatten());
        };
        for rs in self.rss.state().iter().filter(|o| in_ns(o.metadata.namespace.as_deref())) {
            if let Some(s) = selector_selects(rs.spec.as_ref().map(|s| &s.selector)) {
                add(s);
                any = true;
            }
        }
        for ss in self.sss.state().iter().filter(|o| in_ns(o.metadata.namespace.as_deref())) {
            if let Some(s) = selector_selects(ss.spec.as_ref().map(|s| &s.selector)) {
                add(s);
                any = true;
            }
        }
        if !any {
            return None;
        }
        if !match_labels.is_empty() {
            requirements.match_labels = Some(match_labels);
        }
        Some(requirements).filter(|s| !selector_is_empty(s))
    }
}

/// The pod's constraints with `when` ("DoNotSchedule" or "ScheduleAnyway").
pub fn constraints(pod: &Pod, when: &str) -> Vec<Constraint> {
    pod.spec
        .as_ref()
        .and_then(|s| s.topology_spread_constraints.as_ref())
        .into_iter()
        .flatten()
        .filter(|c| c.when_unsatisfiable == when)
        .map(|c| Constraint::new(pod, c))
        .collect()
}

fn has_all_keys(node: &NodeInfo, cs: &[Constraint]) -> bool {
    cs.iter().all(|c| node.label(&c.topology_key).is_some())
}

/// The filter's per-cycle counts.
#[derive(Clone, Debug)]
pub struct FilterState {
    constraints: Vec<Constraint>,
    namespace: String,
    self_match: Vec<bool>,
    /// Counts per topology key, then per value.
    counts: HashMap<String, HashMap<String, i64>>,
    /// The smallest count per topology key and the number of domains of that key.
    minimum: HashMap<String, (i64, i64)>,
}

impl FilterState {
    /// None when the pod has no DoNotSchedule constraints.
    pub fn compute(pod: &Pod, nodes: &[NodeInfo]) -> Option<FilterState> {
        let constraints = constraints(pod, "DoNotSchedule");
        if constraints.is_empty() {
            return None;
        }
        let namespace = pod.metadata.namespace.clone().unwrap_or_default();
        let mut counts = HashMap::new();
        for n in nodes {
            if !has_all_keys(n, &constraints) {
                continue;
            }
            for c in &constraints {
                if !c.includes(pod, &n.node) {
                    continue;
                }
                let value = n.label(&c.topology_key).cloned().unwrap_or_default();
                let slot: &mut HashMap<String, i64> =
                    counts.entry(c.topology_key.clone()).or_default();
                *slot.entry(value).or_insert(0) += c.count_on(&namespace, &n.pods);
            }
        }
        let self_match = constraints.iter().map(|c| c.selects(pod)).collect();
        let mut s =
            FilterState { constraints, namespace, self_match, counts, minimum: HashMap::new() };
        s.recompute_minimum();
        Some(s)
    }

    fn recompute_minimum(&mut self) {
        self.minimum.clear();
        for (key, values) in &self.counts {
            let min = values.values().copied().min().unwrap_or(i64::MAX);
            self.minimum.insert(key.clone(), (min, values.len() as i64));
        }
    }

    /// Adds (1) or removes (-1) an existing pod (preemption's what-if).
    pub fn update(&mut self, incoming: &Pod, p: &PodInfo, node: &NodeInfo, sign: i64) {
        if p.pod.metadata.namespace.as_deref() != Some(self.namespace.as_str())
            || !has_all_keys(node, &self.constraints)
            || p.terminating()
        {
            return;
        }
        for c in &self.constraints {
            if !c.counts_anything() || !c.selects(&p.pod) || !c.includes(incoming, &node.node) {
                continue;
            }
            let value = node.label(&c.topology_key).cloned().unwrap_or_default();
            *self.counts.entry(c.topology_key.clone()).or_default().entry(value).or_insert(0) +=
                sign;
        }
        self.recompute_minimum();
    }

    /// None if the node passes, or the reason it does not.
    pub fn check(&self, node: &NodeInfo) -> Option<&'static str> {
        for (i, c) in self.constraints.iter().enumerate() {
            let Some(value) = node.label(&c.topology_key) else {
                return Some(REASON_MISSING_LABEL);
            };
            let (mut min, domains) =
                self.minimum.get(&c.topology_key).copied().unwrap_or((i64::MAX, 0));
            if domains < c.min_domains {
                min = 0;
            }
            let here =
                self.counts.get(&c.topology_key).and_then(|m| m.get(value)).copied().unwrap_or(0);
            let skew = here.saturating_add(i64::from(self.self_match[i])).saturating_sub(min);
            if skew > c.max_skew {
                return Some(REASON_SKEW);
            }
        }
        None
    }
}

/// The PodTopologySpread scores (0..=100, normalized) of the feasible nodes, or None when the
/// pod has no ScheduleAnyway constraints.
///
/// `default_selector` is the system default constraints' selector, used when the pod has no
/// constraints of its own; with the defaults, a node missing a topology label only skips that
/// constraint instead of scoring 0.
pub fn score(
    pod: &Pod,
    default_selector: Option<&LabelSelector>,
    all: &[NodeInfo],
    feasible: &[&NodeInfo],
) -> Option<Vec<i64>> {
    let (cs, require_all) = match default_selector {
        Some(sel) if uses_system_defaults(pod) => (system_defaults(sel), false),
        _ => (constraints(pod, "ScheduleAnyway"), true),
    };
    if cs.is_empty() {
        return None;
    }
    // The system defaults count a pod's siblings (pods with the same first owner) from the
    // node's tally, as upstream does, instead of matching every pod on every node.
    let owner = pod
        .metadata
        .owner_references
        .as_ref()
        .and_then(|o| o.first())
        .map(|o| o.uid.as_str())
        .filter(|_| !require_all);
    let has_all_keys = |n: &NodeInfo, cs: &[Constraint]| !require_all || has_all_keys(n, cs);
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let mut ignored: HashSet<usize> = HashSet::new();
    // Borrowed keys: this runs for every feasible node of every pod.
    let mut counts: HashMap<(&str, &str), i64> = HashMap::new();
    let mut sizes = vec![0usize; cs.len()];
    // Whether a domain count of the constraint is read at all: only a scored node that has the
    // topology label reads one (without any, e.g. zones on unzoned nodes, nothing is counted).
    let mut read = vec![false; cs.len()];
    for (j, n) in feasible.iter().enumerate() {
        if !has_all_keys(n, &cs) {
            ignored.insert(j);
            continue;
        }
        for (i, c) in cs.iter().enumerate() {
            if c.topology_key == HOSTNAME {
                continue;
            }
            let value = n.label(&c.topology_key);
            read[i] |= value.is_some();
            let pair = (c.topology_key.as_str(), value.map_or("", String::as_str));
            if let Entry::Vacant(e) = counts.entry(pair) {
                e.insert(0);
                sizes[i] += 1;
            }
        }
    }
    let weights: Vec<f64> = cs
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let size =
                if c.topology_key == HOSTNAME { feasible.len() - ignored.len() } else { sizes[i] };
            ((size + 2) as f64).ln()
        })
        .collect();
    let counted = |i: usize, c: &Constraint| c.topology_key != HOSTNAME && read[i];
    let any_counted = cs.iter().enumerate().any(|(i, c)| counted(i, c));
    for n in all.iter().filter(|_| any_counted) {
        if !has_all_keys(n, &cs) {
            continue;
        }
        for (i, c) in cs.iter().enumerate() {
            if !counted(i, c) || !c.includes(pod, &n.node) {
                continue;
            }
            let pair =
                (c.topology_key.as_str(), n.label(&c.topology_key).map_or("", String::as_str));
            if let Some(count) = counts.get_mut(&pair) {
                *count += match owner {
                    Some(o) => n.owned_by(o) as i64,
                    None => c.count_on(&ns, &n.pods),
                };
            }
        }
    }
    let raw: Vec<i64> = feasible
        .iter()
        .enumerate()
        .map(|(j, n)| {
            if ignored.contains(&j) {
                return 0;
            }
            let mut s = 0f64;
            for (i, c) in cs.iter().enumerate() {
                let Some(value) = n.label(&c.topology_key) else { continue };
                let count = if c.topology_key == HOSTNAME {
                    match owner {
                        Some(o) => n.owned_by(o) as i64,
                        None => c.count_on(&ns, &n.pods),
                    }
                } else {
                    counts.get(&(c.topology_key.as_str(), value.as_str())).copied().unwrap_or(0)
                };
                s += count as f64 * weights[i] + (c.max_skew - 1) as f64;
            }
            s.round() as i64
        })
        .collect();
    let considered =
        || raw.iter().enumerate().filter(|(j, _)| !ignored.contains(j)).map(|(_, s)| *s);
    let min = considered().min().unwrap_or(0);
    let max = considered().max().unwrap_or(0).max(0);
    Some(
        raw.iter()
            .enumerate()
            .map(|(j, s)| {
                if ignored.contains(&j) {
                    0
                } else if max == 0 {
                    MAX_SCORE
                } else {
                    MAX_SCORE * (max + min - s) / max
                }
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::sync::Arc;

    fn pod(name: &str, tsc: serde_json::Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "default", "uid": name, "labels": {"app": "web"}},
            "spec": {"containers": [{"name": "c"}], "topologySpreadConstraints": tsc},
        }))
        .unwrap()
    }

    fn node(name: &str, zone: Option<&str>, pods: usize) -> NodeInfo {
        let mut labels = json!({"kubernetes.io/hostname": name});
        if let Some(z) = zone {
            labels["topology.kubernetes.io/zone"] = json!(z);
        }
        let n: Node =
            serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}})).unwrap();
        let mut info = NodeInfo::new(Arc::new(n));
        for i in 0..pods {
            let p = pod(&format!("{name}-{i}"), json!([]));
            info.add_pod(&Arc::new(PodInfo::new(Arc::new(p))));
        }
        info
    }

    #[test]
    fn default_selectors_are_remembered_until_a_selecting_object_changes() {
        use kube::runtime::reflector::store::Writer;
        use kube::runtime::watcher::Event;
        let mut rss = Writer::<ReplicaSet>::default();
        let objects = SelectingObjects {
            services: Writer::<Service>::default().as_reader(),
            rcs: Writer::<ReplicationController>::default().as_reader(),
            rss: rss.as_reader(),
            sss: Writer::<StatefulSet>::default().as_reader(),
            generation: Arc::default(),
            memo: Arc::default(),
        };
        let p = pod("p", json!([]));
        assert_eq!(objects.default_selector(&p), None);
        let rs: ReplicaSet = serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"selector": {"matchLabels": {"app": "web"}}},
        }))
        .unwrap();
        rss.apply_watcher_event(&Event::Apply(rs));
        // The answer stands until an informer reports a change...
        assert_eq!(objects.default_selector(&p), None);
        objects.generation.fetch_add(1, Ordering::AcqRel);
        // ...then it is worked out again.
        let selector = objects.default_selector(&p).expect("the ReplicaSet selects the pod");
        let reqs = selector.match_expressions.unwrap();
        assert_eq!(reqs.len(), 1);
        assert_eq!((reqs[0].key.as_str(), reqs[0].operator.as_str()), ("app", "In"));
        // Another namespace's pod with the same labels has its own answer.
        let mut other = pod("q", json!([]));
        other.metadata.namespace = Some("other".into());
        assert_eq!(objects.default_selector(&other), None);
    }

    fn zone_constraint(max_skew: i32, when: &str, min_domains: Option<i32>) -> serde_json::Value {
        json!([{"maxSkew": max_skew, "topologyKey": "topology.kubernetes.io/zone",
            "whenUnsatisfiable": when, "minDomains": min_domains,
            "labelSelector": {"matchLabels": {"app": "web"}}}])
    }

    #[test]
    fn skew_filters_nodes_in_crowded_domains() {
        let nodes = vec![node("a", Some("z1"), 2), node("b", Some("z2"), 1), node("c", None, 0)];
        let incoming = pod("x", zone_constraint(1, "DoNotSchedule", None));
        let s = FilterState::compute(&incoming, &nodes).unwrap();
        let got: Vec<_> = nodes.iter().map(|n| s.check(n)).collect();
        assert_eq!(got, vec![Some(REASON_SKEW), None, Some(REASON_MISSING_LABEL)]);
        // minDomains above the domain count makes the global minimum 0: z2 (1 + 1 - 0 = 2) fails too.
        let incoming = pod("x", zone_constraint(1, "DoNotSchedule", Some(3)));
        let s = FilterState::compute(&incoming, &nodes).unwrap();
        assert_eq!(s.check(&nodes[1]), Some(REASON_SKEW));
        // Removing a pod from z1 (preemption's what-if) lets z1 in again.
        let mut s =
            FilterState::compute(&pod("x", zone_constraint(1, "DoNotSchedule", None)), &nodes)
                .unwrap();
        let victim = nodes[0].pods[0].clone();
        s.update(&incoming, &victim, &nodes[0], -1);
        assert_eq!(s.check(&nodes[0]), None);
    }

    #[test]
    fn schedule_anyway_prefers_emptier_domains() {
        let nodes =
            vec![node("a", Some("z1"), 3), node("b", Some("z2"), 1), node("c", Some("z2"), 0)];
        let incoming = pod("x", zone_constraint(1, "ScheduleAnyway", None));
        let feasible: Vec<&NodeInfo> = nodes.iter().collect();
        let got = score(&incoming, None, &nodes, &feasible).unwrap();
        // counts z1 3, z2 1; weight ln(4): raw 4 and 1 → 100*(4+1-4)/4 = 25, 100.
        assert_eq!(got, vec![25, 100, 100]);
        assert!(score(&pod("y", json!([])), None, &nodes, &feasible).is_none());
    }

    #[test]
    fn system_defaults_spread_selected_pods_over_unzoned_nodes() {
        let nodes = vec![node("a", None, 3), node("b", None, 1), node("c", None, 0)];
        let feasible: Vec<&NodeInfo> = nodes.iter().collect();
        let incoming = pod("x", json!([]));
        let sel: LabelSelector =
            serde_json::from_value(json!({"matchLabels": {"app": "web"}})).unwrap();
        let got = score(&incoming, Some(&sel), &nodes, &feasible).unwrap();
        assert!(got[2] > got[1] && got[1] > got[0], "{got:?}");
        // The pod's own constraints win over the defaults.
        let own = pod("x", zone_constraint(1, "ScheduleAnyway", None));
        assert_eq!(score(&own, Some(&sel), &nodes, &feasible).unwrap(), vec![0, 0, 0]);
    }
}
