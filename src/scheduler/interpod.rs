//! Inter-pod affinity and anti-affinity, as upstream's InterPodAffinity plugin: required terms
//! filter nodes (the pod's own affinity and anti-affinity, and the symmetric check that existing
//! pods' required anti-affinity does not exclude the pod), preferred terms score them. Counts per
//! topology domain are computed once per scheduling cycle ([`FilterState`], [`score`]) so each
//! node is checked by map lookups.

use std::collections::{BTreeMap, HashMap, HashSet};

use k8s_openapi::api::core::v1::{Namespace, Pod, PodAffinityTerm, WeightedPodAffinityTerm};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};

use super::cache::{label_pair, NodeInfo, PodInfo};
use crate::controllers::podutil::selector_matches;

pub const REASON_AFFINITY: &str = "node(s) didn't match pod affinity rules";
pub const REASON_ANTI_AFFINITY: &str = "node(s) didn't match pod anti-affinity rules";
pub const REASON_EXISTING_ANTI_AFFINITY: &str =
    "node(s) didn't satisfy existing pods anti-affinity rules";
/// The weight existing pods' required affinity terms add to nodes the pod matches
/// (upstream's hardPodAffinityWeight default).
const HARD_POD_AFFINITY_WEIGHT: i64 = 1;
const MAX_SCORE: i64 = 100;
/// The well-known hostname label: with unique values, its topology domains are single nodes.
pub const HOSTNAME: &str = "kubernetes.io/hostname";

/// Counts per topology key, then per value of that key.
type Counts = HashMap<String, HashMap<String, i64>>;

/// A pod affinity term made ready to match pods: its selector (with matchLabelKeys and
/// mismatchLabelKeys folded in), the namespaces it covers and its topology key.
#[derive(Clone, Debug)]
pub struct AffinityTerm {
    selector: Option<LabelSelector>,
    namespaces: HashSet<String>,
    namespace_selector: Option<LabelSelector>,
    pub topology_key: String,
    /// The label pairs a matching pod must have: per requirement of the selector that names
    /// values (matchLabels, In), the pairs of which one is needed, by [`label_pair`].
    needed_pairs: Vec<Vec<u64>>,
}

impl AffinityTerm {
    /// The term of `owner` (whose namespace is the default and whose labels fill
    /// matchLabelKeys).
    pub fn new(owner: &Pod, t: &PodAffinityTerm) -> AffinityTerm {
        let mut selector = t.label_selector.clone();
        let labels = owner.metadata.labels.as_ref();
        let mut fold = |keys: Option<&Vec<String>>, op: &str| {
            for key in keys.into_iter().flatten() {
                let Some(sel) = selector.as_mut() else { return };
                if let Some(v) = labels.and_then(|l| l.get(key)) {
                    sel.match_expressions.get_or_insert_with(Vec::new).push(
                        LabelSelectorRequirement {
                            key: key.clone(),
                            operator: op.into(),
                            values: Some(vec![v.clone()]),
                        },
                    );
                }
            }
        };
        fold(t.match_label_keys.as_ref(), "In");
        fold(t.mismatch_label_keys.as_ref(), "NotIn");
        let mut namespaces: HashSet<String> = t.namespaces.iter().flatten().cloned().collect();
        if namespaces.is_empty() && t.namespace_selector.is_none() {
            namespaces.insert(owner.metadata.namespace.clone().unwrap_or_default());
        }
        let needed_pairs = selector.as_ref().map(needed_pairs).unwrap_or_default();
        AffinityTerm {
            needed_pairs,
            selector,
            namespaces,
            namespace_selector: t.namespace_selector.clone(),
            topology_key: t.topology_key.clone(),
        }
    }

    /// Resolves the namespace selector against every namespace (done once per cycle for the
    /// incoming pod's terms, so matching needs no namespace labels).
    fn resolve_namespaces(&mut self, all: &[std::sync::Arc<Namespace>]) {
        let Some(sel) = self.namespace_selector.take() else { return };
        let empty = BTreeMap::new();
        for ns in all {
            if selector_matches(&sel, ns.metadata.labels.as_ref().unwrap_or(&empty)) {
                self.namespaces.insert(ns.metadata.name.clone().unwrap_or_default());
            }
        }
    }

    /// Whether some pod on the node may match: false when the selector matches nothing or
    /// needs a label pair none of the node's pods has.
    pub fn may_match_on(&self, node: &NodeInfo) -> bool {
        self.selector.is_some()
            && self
                .needed_pairs
                .iter()
                .all(|any_of| any_of.iter().any(|p| node.label_pairs.contains_key(p)))
    }

    /// Whether `pod` is in the term's namespaces and matches its selector (`ns_labels`: the
    /// labels of the pod's namespace, for an unresolved namespace selector).
    pub fn matches(&self, pod: &Pod, ns_labels: Option<&BTreeMap<String, String>>) -> bool {
        let ns = pod.metadata.namespace.as_deref().unwrap_or("");
        let in_ns = self.namespaces.contains(ns)
            || self
                .namespace_selector
                .as_ref()
                .is_some_and(|s| ns_labels.is_some_and(|l| selector_matches(s, l)));
        let empty = BTreeMap::new();
        in_ns
            && self.selector.as_ref().is_some_and(|s| {
                selector_matches(s, pod.metadata.labels.as_ref().unwrap_or(&empty))
            })
    }
}

/// The label pairs a pod must have to match `sel`: one list of alternatives per matchLabels
/// entry and per In requirement (the other operators name no pair a pod must have).
fn needed_pairs(sel: &LabelSelector) -> Vec<Vec<u64>> {
    let labels = sel.match_labels.iter().flatten().map(|(k, v)| vec![label_pair(k, v)]);
    let ins = sel
        .match_expressions
        .iter()
        .flatten()
        .filter(|r| r.operator == "In")
        .map(|r| r.values.iter().flatten().map(|v| label_pair(&r.key, v)).collect::<Vec<_>>());
    labels.chain(ins).collect()
}

/// The incoming pod's terms, each list possibly empty.
#[derive(Clone, Debug, Default)]
pub struct PodTerms {
    pub affinity: Vec<AffinityTerm>,
    pub anti_affinity: Vec<AffinityTerm>,
    pub preferred_affinity: Vec<(i64, AffinityTerm)>,
    pub preferred_anti_affinity: Vec<(i64, AffinityTerm)>,
}

impl PodTerms {
    /// The pod's own terms, namespace selectors resolved against `namespaces`.
    pub fn of(pod: &Pod, namespaces: &[std::sync::Arc<Namespace>]) -> PodTerms {
        let mut t = raw_terms(pod);
        for term in t.affinity.iter_mut().chain(t.anti_affinity.iter_mut()) {
            term.resolve_namespaces(namespaces);
        }
        for (_, term) in t.preferred_affinity.iter_mut().chain(t.preferred_anti_affinity.iter_mut())
        {
            term.resolve_namespaces(namespaces);
        }
        t
    }

    pub fn has_required(&self) -> bool {
        !self.affinity.is_empty() || !self.anti_affinity.is_empty()
    }

    pub fn has_preferred(&self) -> bool {
        !self.preferred_affinity.is_empty() || !self.preferred_anti_affinity.is_empty()
    }
}

/// A pod's terms as written (namespace selectors unresolved).
pub fn raw_terms(pod: &Pod) -> PodTerms {
    let Some(a) = pod.spec.as_ref().and_then(|s| s.affinity.as_ref()) else {
        return PodTerms::default();
    };
    let required = |ts: Option<&Vec<PodAffinityTerm>>| -> Vec<AffinityTerm> {
        ts.into_iter().flatten().map(|t| AffinityTerm::new(pod, t)).collect()
    };
    let preferred = |ts: Option<&Vec<WeightedPodAffinityTerm>>| -> Vec<(i64, AffinityTerm)> {
        ts.into_iter()
            .flatten()
            .map(|t| (i64::from(t.weight), AffinityTerm::new(pod, &t.pod_affinity_term)))
            .collect()
    };
    let aff = a.pod_affinity.as_ref();
    let anti = a.pod_anti_affinity.as_ref();
    PodTerms {
        affinity: required(
            aff.and_then(|x| x.required_during_scheduling_ignored_during_execution.as_ref()),
        ),
        anti_affinity: required(
            anti.and_then(|x| x.required_during_scheduling_ignored_during_execution.as_ref()),
        ),
        preferred_affinity: preferred(
            aff.and_then(|x| x.preferred_during_scheduling_ignored_during_execution.as_ref()),
        ),
        preferred_anti_affinity: preferred(
            anti.and_then(|x| x.preferred_during_scheduling_ignored_during_execution.as_ref()),
        ),
    }
}

/// What the filter needs, counted once per cycle over every placed pod.
#[derive(Clone, Debug)]
pub struct FilterState {
    terms: PodTerms,
    /// Whether the incoming pod matches all its own affinity terms (the first pod of a group).
    self_match: bool,
    /// Domains where existing pods' required anti-affinity matches the incoming pod.
    existing_anti: Counts,
    /// Domains with pods matching all the incoming pod's affinity terms, per term key.
    affinity: Counts,
    /// Domains with pods matching one of the incoming pod's anti-affinity terms.
    anti: Counts,
    ns_labels: Option<BTreeMap<String, String>>,
    /// Whether required anti-affinity terms with the hostname key (the incoming pod's and
    /// existing pods') are left out of the counts and checked on each node's own pods instead:
    /// exact when no two nodes share a hostname, and much cheaper than counting every placed
    /// pod when the search stops after a sample of the nodes.
    host_local: bool,
}

impl FilterState {
    /// None when neither the pod nor any placed pod has required terms. `unique_hostnames`:
    /// no two nodes share a hostname label value (see [`FilterState::host_local`]).
    pub fn compute(
        pod: &Pod,
        terms: &PodTerms,
        ns_labels: Option<&BTreeMap<String, String>>,
        nodes: &[NodeInfo],
        any_existing_anti: bool,
        unique_hostnames: bool,
    ) -> Option<FilterState> {
        if !terms.has_required() && !any_existing_anti {
            return None;
        }
        let mut s = FilterState {
            self_match: !terms.affinity.is_empty()
                && terms.affinity.iter().all(|t| t.matches(pod, ns_labels)),
            terms: terms.clone(),
            existing_anti: HashMap::new(),
            affinity: HashMap::new(),
            anti: HashMap::new(),
            ns_labels: ns_labels.cloned(),
            host_local: unique_hostnames,
        };
        // Which pods must be counted: all, for the incoming pod's counted terms; else only
        // those with existing anti-affinity terms that are counted.
        let counted = |t: &AffinityTerm| !(unique_hostnames && t.topology_key == HOSTNAME);
        let own = !terms.affinity.is_empty() || terms.anti_affinity.iter().any(counted);
        for n in nodes {
            let existing = any_existing_anti
                && if unique_hostnames {
                    n.pods_with_non_host_anti_affinity > 0
                } else {
                    n.pods_with_required_anti_affinity > 0
                };
            if !existing && !own {
                continue;
            }
            for p in &n.pods {
                if own || p.has_required_anti_affinity {
                    s.count(pod, p, n, 1, existing);
                }
            }
        }
        Some(s)
    }

    /// Whether the term is checked on each node's own pods rather than counted.
    fn is_host_local(&self, t: &AffinityTerm) -> bool {
        self.host_local && t.topology_key == HOSTNAME
    }

    /// Adds (sign 1) or removes (-1) an existing pod's contribution (preemption's what-if).
    pub fn update(&mut self, incoming: &Pod, p: &PodInfo, node: &NodeInfo, sign: i64) {
        self.count(incoming, p, node, sign, p.has_required_anti_affinity);
    }

    fn count(&mut self, incoming: &Pod, p: &PodInfo, node: &NodeInfo, sign: i64, existing: bool) {
        if existing && p.has_required_anti_affinity {
            for t in &p.terms.anti_affinity {
                if self.is_host_local(t) {
                    continue;
                }
                if let Some(v) = node.label(&t.topology_key) {
                    if t.matches(incoming, self.ns_labels.as_ref()) {
                        bump(&mut self.existing_anti, &t.topology_key, v, sign);
                    }
                }
            }
        }
        if !self.terms.affinity.is_empty()
            && self.terms.affinity.iter().all(|t| t.matches(&p.pod, None))
        {
            for t in &self.terms.affinity {
                if let Some(v) = node.label(&t.topology_key) {
                    bump(&mut self.affinity, &t.topology_key, v, sign);
                }
            }
        }
        for t in &self.terms.anti_affinity {
            if self.is_host_local(t) {
                continue;
            }
            if let Some(v) = node.label(&t.topology_key) {
                if t.matches(&p.pod, None) {
                    bump(&mut self.anti, &t.topology_key, v, sign);
                }
            }
        }
    }

    /// None if the node passes for the `incoming` pod, or the reason it does not.
    pub fn check(&self, incoming: &Pod, node: &NodeInfo) -> Option<&'static str> {
        if !self.satisfies_affinity(node) {
            return Some(REASON_AFFINITY);
        }
        let host = self.host_local && node.label(HOSTNAME).is_some();
        for t in &self.terms.anti_affinity {
            if self.is_host_local(t) {
                if host && t.may_match_on(node) && node.pods.iter().any(|p| t.matches(&p.pod, None))
                {
                    return Some(REASON_ANTI_AFFINITY);
                }
            } else if let Some(v) = node.label(&t.topology_key) {
                if get(&self.anti, &t.topology_key, v) > 0 {
                    return Some(REASON_ANTI_AFFINITY);
                }
            }
        }
        for (key, values) in &self.existing_anti {
            if node.label(key).and_then(|v| values.get(v)).is_some_and(|c| *c > 0) {
                return Some(REASON_EXISTING_ANTI_AFFINITY);
            }
        }
        if host && node.pods_with_required_anti_affinity > 0 {
            let excluded = node.pods.iter().filter(|p| p.has_required_anti_affinity).any(|p| {
                p.terms.anti_affinity.iter().any(|t| {
                    t.topology_key == HOSTNAME && t.matches(incoming, self.ns_labels.as_ref())
                })
            });
            if excluded {
                return Some(REASON_EXISTING_ANTI_AFFINITY);
            }
        }
        None
    }

    fn satisfies_affinity(&self, node: &NodeInfo) -> bool {
        let mut pods_exist = true;
        for t in &self.terms.affinity {
            match node.label(&t.topology_key) {
                Some(v) => {
                    if get(&self.affinity, &t.topology_key, v) <= 0 {
                        pods_exist = false;
                    }
                }
                None => return false,
            }
        }
        // No pod anywhere matches: the pod may start the group if it matches its own terms.
        pods_exist
            || (self.affinity.values().flat_map(|v| v.values()).all(|c| *c <= 0) && self.self_match)
    }
}

fn bump(m: &mut Counts, key: &str, value: &str, by: i64) {
    let values = match m.get_mut(key) {
        Some(v) => v,
        None => m.entry(key.to_string()).or_default(),
    };
    match values.get_mut(value) {
        Some(c) => *c += by,
        None => {
            values.insert(value.to_string(), by);
        }
    }
}

fn get(m: &Counts, key: &str, value: &str) -> i64 {
    m.get(key).and_then(|values| values.get(value)).copied().unwrap_or(0)
}

/// The InterPodAffinity scores (0..=100, normalized) of the feasible nodes, or None when
/// nothing contributes (every node scores 0).
pub fn score(
    pod: &Pod,
    terms: &PodTerms,
    ns_labels: Option<&BTreeMap<String, String>>,
    all: &[NodeInfo],
    feasible: &[&NodeInfo],
    any_existing_affinity: bool,
) -> Option<Vec<i64>> {
    let has_preferred = terms.has_preferred();
    if !has_preferred && !any_existing_affinity {
        return None;
    }
    let mut topo: HashMap<String, HashMap<String, i64>> = HashMap::new();
    let mut add = |node: &NodeInfo, key: &str, w: i64| {
        if let Some(v) = node.label(key) {
            *topo.entry(key.to_string()).or_default().entry(v.clone()).or_insert(0) += w;
        }
    };
    for n in all {
        if !has_preferred && n.pods_with_scoring_terms == 0 {
            continue;
        }
        for p in &n.pods {
            for (w, t) in &terms.preferred_affinity {
                if t.matches(&p.pod, None) {
                    add(n, &t.topology_key, *w);
                }
            }
            for (w, t) in &terms.preferred_anti_affinity {
                if t.matches(&p.pod, None) {
                    add(n, &t.topology_key, -*w);
                }
            }
            if !p.has_scoring_terms {
                continue;
            }
            let theirs = &p.terms;
            for t in &theirs.affinity {
                if t.matches(pod, ns_labels) {
                    add(n, &t.topology_key, HARD_POD_AFFINITY_WEIGHT);
                }
            }
            for (w, t) in &theirs.preferred_affinity {
                if t.matches(pod, ns_labels) {
                    add(n, &t.topology_key, *w);
                }
            }
            for (w, t) in &theirs.preferred_anti_affinity {
                if t.matches(pod, ns_labels) {
                    add(n, &t.topology_key, -*w);
                }
            }
        }
    }
    if topo.is_empty() {
        return None;
    }
    let raw: Vec<i64> = feasible
        .iter()
        .map(|n| {
            topo.iter()
                .filter_map(|(k, values)| n.label(k).and_then(|v| values.get(v)))
                .sum::<i64>()
        })
        .collect();
    Some(normalize_min_max(&raw))
}

/// Scales scores to 0..=100 between their minimum and maximum (all 0 when they are equal).
pub fn normalize_min_max(raw: &[i64]) -> Vec<i64> {
    let min = raw.iter().copied().min().unwrap_or(0);
    let max = raw.iter().copied().max().unwrap_or(0);
    raw.iter()
        .map(|s| {
            if max > min {
                (MAX_SCORE as f64 * ((s - min) as f64 / (max - min) as f64)) as i64
            } else {
                0
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::cache::NodeInfo;
    use serde_json::json;
    use std::sync::Arc;

    fn pod(name: &str, labels: serde_json::Value, affinity: serde_json::Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "default", "uid": name, "labels": labels},
            "spec": {"containers": [{"name": "c"}], "affinity": affinity},
        }))
        .unwrap()
    }

    fn node(name: &str, zone: &str, pods: Vec<Pod>) -> NodeInfo {
        let n: k8s_openapi::api::core::v1::Node = serde_json::from_value(json!({
            "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name,
                "topology.kubernetes.io/zone": zone}},
        }))
        .unwrap();
        let mut info = NodeInfo::new(Arc::new(n));
        for p in pods {
            info.add_pod(&Arc::new(PodInfo::new(Arc::new(p))));
        }
        info
    }

    const ZONE: &str = "topology.kubernetes.io/zone";

    fn anti(key: &str) -> serde_json::Value {
        json!({"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
            {"labelSelector": {"matchLabels": {"app": "web"}}, "topologyKey": key}]}})
    }

    /// The filter's verdict per node, the same whether hostname terms are counted or checked
    /// on each node (the test nodes' hostnames are unique).
    fn check_all(incoming: &Pod, nodes: &[NodeInfo]) -> Vec<Option<&'static str>> {
        let terms = PodTerms::of(incoming, &[]);
        let any = nodes.iter().any(|n| n.pods_with_required_anti_affinity > 0);
        let verdicts = |host_local: bool| -> Vec<Option<&'static str>> {
            match FilterState::compute(incoming, &terms, None, nodes, any, host_local) {
                None => nodes.iter().map(|_| None).collect(),
                Some(s) => nodes.iter().map(|n| s.check(incoming, n)).collect(),
            }
        };
        let counted = verdicts(false);
        assert_eq!(counted, verdicts(true), "host-local checks agree with counts");
        counted
    }

    #[test]
    fn anti_affinity_filters_by_topology_domain() {
        let web = |n: &str| pod(n, json!({"app": "web"}), anti("topology.kubernetes.io/zone"));
        let nodes = vec![
            node("a", "z1", vec![web("w1")]),
            node("b", "z1", vec![]),
            node("c", "z2", vec![]),
        ];
        let got = check_all(&web("w2"), &nodes);
        assert_eq!(got, vec![Some(REASON_ANTI_AFFINITY), Some(REASON_ANTI_AFFINITY), None]);
        // Symmetry: a pod without terms that an existing pod's anti-affinity excludes.
        let plain = pod("p", json!({"app": "web"}), json!(null));
        let got = check_all(&plain, &nodes);
        assert_eq!(
            got,
            vec![Some(REASON_EXISTING_ANTI_AFFINITY), Some(REASON_EXISTING_ANTI_AFFINITY), None]
        );
        let other = pod("o", json!({"app": "db"}), json!(null));
        assert_eq!(check_all(&other, &nodes), vec![None, None, None]);
    }

    #[test]
    fn hostname_anti_affinity_excludes_only_the_node_itself() {
        let web = |n: &str| pod(n, json!({"app": "web"}), anti(HOSTNAME));
        let nodes = vec![
            node("a", "z1", vec![web("w1")]),
            node("b", "z1", vec![pod("d", json!({"app": "db"}), json!(null))]),
            node("c", "z2", vec![]),
        ];
        assert_eq!(check_all(&web("w2"), &nodes), vec![Some(REASON_ANTI_AFFINITY), None, None]);
        let plain = pod("p", json!({"app": "web"}), json!(null));
        assert_eq!(
            check_all(&plain, &nodes),
            vec![Some(REASON_EXISTING_ANTI_AFFINITY), None, None]
        );
        // Both kinds of term at once: the zone term is counted, the hostname one checked.
        let both = pod(
            "x",
            json!({"app": "web"}),
            json!({"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
                {"labelSelector": {"matchLabels": {"app": "db"}}, "topologyKey": ZONE},
                {"labelSelector": {"matchLabels": {"app": "web"}}, "topologyKey": HOSTNAME}]}}),
        );
        assert_eq!(
            check_all(&both, &nodes),
            vec![Some(REASON_ANTI_AFFINITY), Some(REASON_ANTI_AFFINITY), None]
        );
    }

    #[test]
    fn hostname_terms_skip_nodes_by_label_pairs_without_changing_verdicts() {
        let on_host = |sel: serde_json::Value| {
            pod(
                "x",
                json!({"app": "web"}),
                json!({"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
                    {"labelSelector": sel, "topologyKey": HOSTNAME}]}}),
            )
        };
        let mut nodes = vec![
            node("a", "z1", vec![pod("w", json!({"app": "web", "tier": "1"}), json!(null))]),
            node("b", "z1", vec![pod("d", json!({"app": "db"}), json!(null))]),
            node("c", "z2", vec![]),
        ];
        // The pairs count the pods carrying them, and go with the last of those pods.
        let web = label_pair("app", "web");
        assert_eq!(nodes[0].label_pairs.get(&web), Some(&1));
        assert_eq!(nodes[1].label_pairs.get(&web), None);
        let cases = [
            (json!({"matchLabels": {"app": "web"}}), [true, false, false]),
            (json!({"matchLabels": {"app": "web", "tier": "2"}}), [false, false, false]),
            (
                json!({"matchExpressions": [{"key": "app", "operator": "In", "values": ["db", "x"]}]}),
                [false, true, false],
            ),
            (
                json!({"matchExpressions": [{"key": "app", "operator": "NotIn", "values": ["db"]}]}),
                [true, false, false],
            ),
            (
                json!({"matchExpressions": [{"key": "tier", "operator": "Exists"}]}),
                [true, false, false],
            ),
            (json!({}), [true, true, false]),
        ];
        for (sel, excluded) in &cases {
            let want: Vec<_> = excluded.iter().map(|e| e.then_some(REASON_ANTI_AFFINITY)).collect();
            assert_eq!(check_all(&on_host(sel.clone()), &nodes), want, "{sel}");
        }
        let terms = PodTerms::of(&on_host(json!({"matchLabels": {"app": "web"}})), &[]);
        let term = &terms.anti_affinity[0];
        assert!(term.may_match_on(&nodes[0]) && !term.may_match_on(&nodes[1]));
        nodes[0].remove_pod("w");
        assert!(nodes[0].label_pairs.is_empty());
        assert!(!term.may_match_on(&nodes[0]));
    }

    #[test]
    fn affinity_needs_a_matching_pod_in_the_domain_unless_it_is_the_first() {
        let aff = json!({"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
            {"labelSelector": {"matchLabels": {"app": "cache"}}, "topologyKey": "kubernetes.io/hostname"}]}});
        let incoming = pod("x", json!({"app": "web"}), aff.clone());
        let nodes = vec![
            node("a", "z1", vec![pod("c1", json!({"app": "cache"}), json!(null))]),
            node("b", "z1", vec![]),
        ];
        assert_eq!(check_all(&incoming, &nodes), vec![None, Some(REASON_AFFINITY)]);
        // No cache pod anywhere: only a pod matching its own terms may go anywhere.
        let empty = vec![node("a", "z1", vec![]), node("b", "z1", vec![])];
        assert_eq!(
            check_all(&incoming, &empty),
            vec![Some(REASON_AFFINITY), Some(REASON_AFFINITY)]
        );
        let first = pod("y", json!({"app": "cache"}), aff);
        assert_eq!(check_all(&first, &empty), vec![None, None]);
    }

    #[test]
    fn preferred_terms_score_by_weight_and_normalize() {
        let pref = json!({"podAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
            {"weight": 10, "podAffinityTerm": {"labelSelector": {"matchLabels": {"app": "cache"}},
             "topologyKey": "topology.kubernetes.io/zone"}}]},
            "podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
            {"weight": 5, "podAffinityTerm": {"labelSelector": {"matchLabels": {"app": "web"}},
             "topologyKey": "kubernetes.io/hostname"}}]}});
        let incoming = pod("x", json!({"app": "web"}), pref);
        let nodes = vec![
            node("a", "z1", vec![pod("c", json!({"app": "cache"}), json!(null))]),
            node("b", "z1", vec![pod("w", json!({"app": "web"}), json!(null))]),
            node("c", "z2", vec![]),
        ];
        let terms = PodTerms::of(&incoming, &[]);
        let feasible: Vec<&NodeInfo> = nodes.iter().collect();
        // Raw: a 10, b 10-5=5, c 0 → normalized 100, 50, 0.
        assert_eq!(
            score(&incoming, &terms, None, &nodes, &feasible, false),
            Some(vec![100, 50, 0])
        );
    }
}
