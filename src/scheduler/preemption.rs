//! Preemption, as upstream's DefaultPreemption post-filter: when a pod fits no node, find nodes
//! where removing lower-priority pods makes it fit (fewest PodDisruptionBudget violations,
//! then the lowest victim priorities, the fewest victims), evict the victims (DisruptionTarget
//! condition, delete, a Preempted event) and nominate the node for the pod, which is placed
//! there once the victims are gone.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1::{Pod, PodCondition};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions};
use kube::{Api, Client, ResourceExt};
use serde_json::json;

use super::cache::{priority_of, Cache, NodeInfo, PodInfo};
use super::filters::{self, CycleState, PodFacts};
use crate::controllers::podutil::{selector_is_empty, selector_matches, time_of};

/// The reason of the DisruptionTarget condition on a preempted pod.
pub const REASON_PREEMPTION: &str = "PreemptionByScheduler";
pub const NO_VICTIMS: &str = "No preemption victims found for incoming pod";
pub const NOT_HELPFUL: &str = "Preemption is not helpful for scheduling";
/// Dry runs stop after this share (percent) of the nodes has yielded candidates, but not
/// before this many (upstream's minCandidateNodesPercentage and minCandidateNodesAbsolute).
const MIN_CANDIDATE_NODES_PERCENTAGE: usize = 10;
const MIN_CANDIDATE_NODES_ABSOLUTE: usize = 100;

/// A node where the pod fits once the victims are gone.
#[derive(Clone, Debug)]
pub struct Candidate {
    pub node: String,
    /// Highest priority first.
    pub victims: Vec<Arc<PodInfo>>,
    pub pdb_violations: usize,
}

/// What a failed preemption attempt says (after "preemption: " in the pod's message).
pub type Refusal = String;

/// Whether the pod may preempt at all (upstream's PodEligibleToPreemptOthers).
pub fn eligible(pod: &Pod, cache: &Cache) -> Result<(), Refusal> {
    if pod.spec.as_ref().and_then(|s| s.preemption_policy.as_deref()) == Some("Never") {
        return Err("not eligible due to preemptionPolicy=Never.".into());
    }
    if let Some(node) = super::nominated_node(cache, pod).and_then(|n| cache.node(n)) {
        let priority = priority_of(pod);
        let waiting =
            node.pods.iter().any(|p| p.priority < priority && p.terminating() && preempted(&p.pod));
        if waiting {
            return Err("not eligible due to a terminating pod on the nominated node.".into());
        }
    }
    Ok(())
}

/// Whether a pod carries the DisruptionTarget condition preemption sets.
fn preempted(pod: &Pod) -> bool {
    pod.status.as_ref().and_then(|s| s.conditions.as_ref()).is_some_and(|cs| {
        cs.iter().any(|c| {
            c.type_ == "DisruptionTarget"
                && c.status == "True"
                && c.reason.as_deref() == Some(REASON_PREEMPTION)
        })
    })
}

/// Finds the best candidate among `potential` nodes (those whose failure removing pods may
/// resolve), or the fit-error text explaining why there is none.
pub fn find_candidate(
    facts: &PodFacts<'_>,
    state: &CycleState,
    nodes: &[NodeInfo],
    potential: &[usize],
    pdbs: &[Arc<PodDisruptionBudget>],
) -> Result<Candidate, Refusal> {
    let total = nodes.len();
    let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
    let mut evaluated = 0usize;
    let mut candidates: Vec<Candidate> = vec![];
    let want = (potential.len() * MIN_CANDIDATE_NODES_PERCENTAGE / 100)
        .max(MIN_CANDIDATE_NODES_ABSOLUTE)
        .min(potential.len());
    let offset = if potential.is_empty() { 0 } else { rand::random_range(0..potential.len()) };
    for i in 0..potential.len() {
        let info = &nodes[potential[(offset + i) % potential.len()]];
        evaluated += 1;
        match select_victims(facts, state, info, pdbs) {
            Ok(c) => candidates.push(c),
            Err(rs) => {
                for r in rs {
                    *reasons.entry(r).or_insert(0) += 1;
                }
            }
        }
        if candidates.iter().any(|c| c.pdb_violations == 0) && candidates.len() >= want {
            break;
        }
    }
    if let Some(best) = pick_one(candidates) {
        return Ok(best);
    }
    if total > evaluated {
        *reasons.entry(NOT_HELPFUL.to_string()).or_insert(0) += total - evaluated;
    }
    Err(format!("0/{total} nodes are available: {}.", histogram(&reasons)))
}

/// "n reason, m reason" sorted as upstream sorts its reasons histogram.
pub fn histogram(reasons: &BTreeMap<String, usize>) -> String {
    let mut parts: Vec<String> = reasons.iter().map(|(r, n)| format!("{n} {r}")).collect();
    parts.sort();
    parts.join(", ")
}

/// The fewest, least important pods to remove from the node so the pod fits, or the filter
/// reasons why even removing every lower-priority pod is not enough.
pub fn select_victims(
    facts: &PodFacts<'_>,
    state: &CycleState,
    info: &NodeInfo,
    pdbs: &[Arc<PodDisruptionBudget>],
) -> Result<Candidate, Vec<String>> {
    let priority = priority_of(facts.pod);
    let mut node = info.clone();
    let mut state = state.clone();
    let mut potential: Vec<Arc<PodInfo>> =
        info.pods.iter().filter(|p| p.priority < priority).cloned().collect();
    if potential.is_empty() {
        return Err(vec![NO_VICTIMS.to_string()]);
    }
    for p in &potential {
        node.remove_pod(&p.uid);
        update_state(&mut state, facts.pod, p, &node, -1);
    }
    if let Some(rs) = filters::check(facts, &node, &state) {
        return Err(rs);
    }
    potential.sort_by(|a, b| more_important(a, b));
    let (violating, fine) = split_by_pdb(&potential, pdbs);
    let mut victims = vec![];
    let mut pdb_violations = 0;
    for (p, violates) in violating.iter().map(|p| (p, true)).chain(fine.iter().map(|p| (p, false)))
    {
        node.add_pod(p);
        update_state(&mut state, facts.pod, p, &node, 1);
        if filters::check(facts, &node, &state).is_some() {
            node.remove_pod(&p.uid);
            update_state(&mut state, facts.pod, p, &node, -1);
            victims.push(p.clone());
            pdb_violations += usize::from(violates);
        }
    }
    if victims.is_empty() {
        return Err(vec![NO_VICTIMS.to_string()]);
    }
    victims.sort_by(|a, b| more_important(a, b));
    Ok(Candidate { node: info.name().to_string(), victims, pdb_violations })
}

fn update_state(state: &mut CycleState, incoming: &Pod, p: &PodInfo, node: &NodeInfo, sign: i64) {
    if let Some(s) = state.spread.as_mut() {
        s.update(incoming, p, node, sign);
    }
    if let Some(s) = state.interpod.as_mut() {
        s.update(incoming, p, node, sign);
    }
}

fn start_time(p: &PodInfo) -> DateTime<Utc> {
    p.pod.status.as_ref().and_then(|s| s.start_time.as_ref()).map(time_of).unwrap_or_else(Utc::now)
}

/// Higher priority first, then the earlier started.
fn more_important(a: &PodInfo, b: &PodInfo) -> std::cmp::Ordering {
    b.priority.cmp(&a.priority).then_with(|| start_time(a).cmp(&start_time(b)))
}

/// Victims whose removal would break a PodDisruptionBudget, and the others.
fn split_by_pdb(
    pods: &[Arc<PodInfo>],
    pdbs: &[Arc<PodDisruptionBudget>],
) -> (Vec<Arc<PodInfo>>, Vec<Arc<PodInfo>>) {
    let mut allowed: Vec<i32> = pdbs
        .iter()
        .map(|p| p.status.as_ref().map(|s| s.disruptions_allowed).unwrap_or(0))
        .collect();
    let (mut violating, mut fine) = (vec![], vec![]);
    for p in pods {
        let mut violated = false;
        if let Some(labels) = p.pod.metadata.labels.as_ref().filter(|l| !l.is_empty()) {
            for (i, pdb) in pdbs.iter().enumerate() {
                if pdb.metadata.namespace != p.pod.metadata.namespace {
                    continue;
                }
                let Some(sel) = pdb.spec.as_ref().and_then(|s| s.selector.as_ref()) else {
                    continue;
                };
                if selector_is_empty(sel) || !selector_matches(sel, labels) {
                    continue;
                }
                let disrupted = pdb
                    .status
                    .as_ref()
                    .and_then(|s| s.disrupted_pods.as_ref())
                    .is_some_and(|d| d.contains_key(&p.pod.name_any()));
                if disrupted {
                    continue;
                }
                allowed[i] -= 1;
                if allowed[i] < 0 {
                    violated = true;
                }
            }
        }
        if violated {
            violating.push(p.clone());
        } else {
            fine.push(p.clone());
        }
    }
    (violating, fine)
}

/// Upstream's pickOneNodeForPreemption order: fewest PDB violations, lowest highest-priority
/// victim, lowest priority sum, fewest victims, latest start of the most important victims.
pub fn pick_one(mut candidates: Vec<Candidate>) -> Option<Candidate> {
    let key = |c: &Candidate| {
        let highest = c.victims.first().map(|v| v.priority).unwrap_or(i32::MIN);
        let sum: i64 =
            c.victims.iter().map(|v| i64::from(v.priority) + i64::from(i32::MAX) + 1).sum();
        let earliest = c
            .victims
            .iter()
            .filter(|v| v.priority == highest)
            .map(|v| start_time(v))
            .min()
            .unwrap_or_else(Utc::now);
        (c.pdb_violations, highest, sum, c.victims.len(), std::cmp::Reverse(earliest))
    };
    let mut best: Option<usize> = None;
    for i in 0..candidates.len() {
        if best.is_none_or(|b| key(&candidates[i]) < key(&candidates[b])) {
            best = Some(i);
        }
    }
    best.map(|b| candidates.swap_remove(b))
}

/// The pending pods of lower priority nominated to `node`, whose nomination is cleared.
pub fn lower_priority_nominated(cache: &Cache, node: &str, priority: i32) -> Vec<Arc<Pod>> {
    cache
        .nominated()
        .filter(|(n, p)| *n == node && p.priority < priority)
        .map(|(_, p)| p.pod.clone())
        .collect()
}

/// Evicts the victims in the background: DisruptionTarget condition, delete (with the
/// victim's uid as precondition), and a Preempted event on each; clears the nomination of
/// `demoted` pods.
pub fn evict(client: &Client, preemptor: &Pod, candidate: &Candidate, demoted: Vec<Arc<Pod>>) {
    let scheduler = preemptor
        .spec
        .as_ref()
        .and_then(|s| s.scheduler_name.clone())
        .unwrap_or_else(|| super::DEFAULT_SCHEDULER_NAME.into());
    let by = format!(
        "Preempted by pod {} on node {}",
        preemptor.metadata.uid.as_deref().unwrap_or(""),
        candidate.node
    );
    for victim in &candidate.victims {
        let pod = victim.pod.clone();
        let client = client.clone();
        let message = format!("{scheduler}: preempting to accommodate a higher priority pod");
        let by = by.clone();
        tokio::spawn(async move {
            let ns = pod.namespace().unwrap_or_default();
            let name = pod.name_any();
            let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
            let mut conds: Vec<PodCondition> = pod
                .status
                .as_ref()
                .and_then(|s| s.conditions.clone())
                .unwrap_or_default()
                .into_iter()
                .filter(|c| c.type_ != "DisruptionTarget")
                .collect();
            conds.push(PodCondition {
                type_: "DisruptionTarget".into(),
                status: "True".into(),
                reason: Some(REASON_PREEMPTION.into()),
                message: Some(message),
                last_transition_time: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                    k8s_openapi::jiff::Timestamp::now(),
                )),
                ..Default::default()
            });
            let pp = PatchParams {
                field_manager: Some(super::DEFAULT_SCHEDULER_NAME.into()),
                ..Default::default()
            };
            let patch = json!({"status": {"conditions": conds}});
            if let Err(e) = api.patch_status(&name, &pp, &Patch::Merge(&patch)).await {
                tracing::debug!(pod = %name, error = %e, "cannot mark the victim as a disruption target");
            }
            let dp = DeleteParams {
                preconditions: Some(Preconditions {
                    uid: pod.metadata.uid.clone(),
                    resource_version: None,
                }),
                ..Default::default()
            };
            match api.delete(&name, &dp).await {
                Ok(_) => {
                    tracing::info!(pod = %format!("{ns}/{name}"), "preempted");
                    crate::controllers::events::record(
                        &client,
                        super::DEFAULT_SCHEDULER_NAME,
                        pod.as_ref(),
                        false,
                        "Preempted",
                        by,
                    );
                }
                Err(e) => {
                    tracing::warn!(pod = %name, error = %e, "cannot delete the preemption victim")
                }
            }
        });
    }
    for pod in demoted {
        let api: Api<Pod> = Api::namespaced(client.clone(), &pod.namespace().unwrap_or_default());
        let name = pod.name_any();
        tokio::spawn(async move {
            let patch = json!({"status": {"nominatedNodeName": null}});
            let pp = PatchParams::default();
            if let Err(e) = api.patch_status(&name, &pp, &Patch::Merge(&patch)).await {
                tracing::debug!(pod = %name, error = %e, "cannot clear the nominated node");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Node;
    use serde_json::json;

    fn pod(name: &str, priority: i32, cpu: &str) -> Arc<Pod> {
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": name, "namespace": "default", "uid": name, "labels": {"app": name}},
                "spec": {"priority": priority, "containers": [{"name": "c",
                    "resources": {"requests": {"cpu": cpu}}}]},
            }))
            .unwrap(),
        )
    }

    fn node(name: &str, cpu: &str, pods: &[Arc<Pod>]) -> NodeInfo {
        let n: Node = serde_json::from_value(json!({"metadata": {"name": name},
            "status": {"allocatable": {"cpu": cpu, "memory": "1Gi", "pods": "110"}}}))
        .unwrap();
        let mut info = NodeInfo::new(Arc::new(n));
        for p in pods {
            info.add_pod(&Arc::new(PodInfo::new(p.clone())));
        }
        info
    }

    fn facts(p: &Pod) -> PodFacts<'_> {
        PodFacts {
            pod: p,
            spec: p.spec.as_ref().unwrap(),
            requests: super::super::resources::pod_requests(p, false),
            ports: vec![],
        }
    }

    #[test]
    fn victims_are_the_fewest_lowest_priority_pods() {
        let incoming = pod("high", 100, "2");
        let n = node("a", "4", &[pod("low1", 1, "1"), pod("low2", 2, "1"), pod("mid", 50, "2")]);
        let c = select_victims(&facts(&incoming), &CycleState::default(), &n, &[]).unwrap();
        // Reprieved most important first: mid still fits beside the pod, the low ones do not.
        let names: Vec<String> = c.victims.iter().map(|v| v.pod.name_any()).collect();
        assert_eq!(names, vec!["low2", "low1"]);
        // Equal or higher priority pods are never victims.
        let n = node("b", "4", &[pod("peer", 100, "4")]);
        let err = select_victims(&facts(&incoming), &CycleState::default(), &n, &[]).unwrap_err();
        assert_eq!(err, vec![NO_VICTIMS.to_string()]);
    }

    #[test]
    fn candidates_prefer_lower_victim_priority_then_fewer_victims() {
        let incoming = pod("high", 100, "2");
        let nodes = vec![
            node("a", "2", &[pod("mid", 50, "2")]),
            node("b", "2", &[pod("l1", 1, "1"), pod("l2", 1, "1")]),
            node("c", "2", &[pod("l3", 1, "2")]),
        ];
        let c = find_candidate(&facts(&incoming), &CycleState::default(), &nodes, &[0, 1, 2], &[])
            .unwrap();
        assert_eq!(c.node, "c");
        // A PodDisruptionBudget with no disruptions allowed steers preemption elsewhere,
        // even to a node with a more important victim.
        let pdb: PodDisruptionBudget = serde_json::from_value(json!({
            "metadata": {"name": "keep", "namespace": "default"},
            "spec": {"selector": {"matchLabels": {"app": "l3"}}},
            "status": {"disruptionsAllowed": 0, "currentHealthy": 1, "desiredHealthy": 1,
                       "expectedPods": 1},
        }))
        .unwrap();
        let pdbs = [Arc::new(pdb)];
        let c = find_candidate(&facts(&incoming), &CycleState::default(), &nodes, &[0, 2], &pdbs)
            .unwrap();
        assert_eq!((c.node.as_str(), c.pdb_violations), ("a", 0));
        let none = vec![node("a", "1", &[pod("l", 1, "1")])];
        let err = find_candidate(&facts(&incoming), &CycleState::default(), &none, &[0], &[])
            .unwrap_err();
        assert_eq!(err, "0/1 nodes are available: 1 Insufficient cpu.");
    }
}
