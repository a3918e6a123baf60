//! Scores: how good a feasible node is for a pod, as upstream's default plugins weigh it —
//! NodeResourcesFit with LeastAllocated (weight 1), NodeResourcesBalancedAllocation (1),
//! NodeAffinity preferred terms (2) and TaintToleration's PreferNoSchedule count (3); the
//! InterPodAffinity (2) and PodTopologySpread (2) scores come from [`super::interpod`] and
//! [`super::spread`]. Plugin scores are 0..=100 and normalized across the feasible nodes where
//! upstream normalizes.

use k8s_openapi::api::core::v1::PodSpec;

use super::cache::NodeInfo;
use super::filters::{term_matches, tolerated};
use super::resources::Resources;
use super::rows::FitRow;

const MAX_SCORE: i64 = 100;
/// The default profile's weight of InterPodAffinity.
pub const INTER_POD_AFFINITY_WEIGHT: i64 = 2;
/// The default profile's weight of PodTopologySpread.
pub const POD_TOPOLOGY_SPREAD_WEIGHT: i64 = 2;

/// Adds a plugin's scores (None: the plugin had nothing to say) with its weight.
pub fn add_weighted(total: &mut [i64], plugin: Option<Vec<i64>>, weight: i64) {
    for (t, s) in total.iter_mut().zip(plugin.into_iter().flatten()) {
        *t += weight * s;
    }
}

/// The total weighted score of each feasible node, in the order given.
pub fn score(spec: &PodSpec, non_zero: &Resources, nodes: &[&NodeInfo]) -> Vec<i64> {
    let mut affinity: Vec<i64> = nodes.iter().map(|n| preferred_affinity(spec, n)).collect();
    normalize(&mut affinity, false);
    let mut taints: Vec<i64> = nodes.iter().map(|n| prefer_no_schedule_count(spec, n)).collect();
    normalize(&mut taints, true);
    nodes
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let used = FitRow::of(n).fractions(non_zero);
            least_allocated(used) + balanced(used) + 2 * affinity[i] + 3 * taints[i]
        })
        .collect()
}

/// [`score`] for a plain pod on plain nodes, from their fit rows: no preferred node affinity
/// (0) and no taints (the reversed PreferNoSchedule count normalizes to 100 on every node).
pub fn score_rows(non_zero: &Resources, rows: &[&FitRow]) -> Vec<i64> {
    rows.iter()
        .map(|r| {
            let used = r.fractions(non_zero);
            least_allocated(used) + balanced(used) + 3 * MAX_SCORE
        })
        .collect()
}

/// Mean free fraction of cpu and memory after placing the pod, 0..=100.
fn least_allocated((cpu, mem): (f64, f64)) -> i64 {
    (((1.0 - cpu) + (1.0 - mem)) / 2.0 * MAX_SCORE as f64) as i64
}

/// How evenly cpu and memory would be used: 100 minus the standard deviation, 0..=100.
fn balanced((cpu, mem): (f64, f64)) -> i64 {
    let std = (cpu - mem).abs() / 2.0;
    ((1.0 - std) * MAX_SCORE as f64) as i64
}

fn preferred_affinity(spec: &PodSpec, n: &NodeInfo) -> i64 {
    let Some(terms) = spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|na| na.preferred_during_scheduling_ignored_during_execution.as_ref())
    else {
        return 0;
    };
    terms
        .iter()
        .filter(|t| t.weight != 0 && term_matches(&t.preference, &n.node))
        .map(|t| i64::from(t.weight))
        .sum()
}

fn prefer_no_schedule_count(spec: &PodSpec, n: &NodeInfo) -> i64 {
    if !n.tainted {
        return 0;
    }
    let tolerations = spec.tolerations.as_deref().unwrap_or(&[]);
    n.node
        .spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .map(|ts| {
            ts.iter()
                .filter(|t| t.effect == "PreferNoSchedule" && !tolerated(t, tolerations))
                .count() as i64
        })
        .unwrap_or(0)
}

/// Scales scores to 0..=100 by the maximum (reversed: fewer is better).
fn normalize(scores: &mut [i64], reverse: bool) {
    let max = scores.iter().copied().max().unwrap_or(0);
    for s in scores.iter_mut() {
        let v = if max == 0 { 0 } else { *s * MAX_SCORE / max };
        *s = if reverse { MAX_SCORE - v } else { v };
    }
}
