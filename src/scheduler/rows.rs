//! Fit rows: the few numbers of each node that a plain pod (no node name, selector, affinity,
//! host ports, extended resources, and no spread, inter-pod or nomination state this cycle) is
//! filtered and scored on, packed one row per node in the cache's node order. With thousands of
//! nodes, reading each node's [`NodeInfo`] cost more in memory traffic than the checks
//! themselves; the rows are one small array. A node with anything more to check (cordoned,
//! tainted) is not `plain` and goes through the full filters; so does every pod that is not
//! plain. The verdicts and scores are the same as the full filters' and scores'.

use super::cache::NodeInfo;
use super::filters::{CycleState, PodFacts};
use super::resources::Resources;

/// What the filters and scores read of a node for a plain pod.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct FitRow {
    /// Not cordoned and without taints: nothing but resources to check.
    pub plain: bool,
    pub free_pods: i64,
    pub free_cpu: i64,
    pub free_memory: i64,
    pub free_ephemeral: i64,
    /// Requested with the scoring defaults, and allocatable (cpu, memory), for the scores.
    pub non_zero_cpu: i64,
    pub non_zero_memory: i64,
    pub alloc_cpu: i64,
    pub alloc_memory: i64,
}

impl FitRow {
    pub fn of(info: &NodeInfo) -> FitRow {
        let (a, r) = (&info.allocatable, &info.requested);
        FitRow {
            plain: !info.unschedulable && !info.tainted,
            free_pods: a.pods - r.pods,
            free_cpu: a.milli_cpu - r.milli_cpu,
            free_memory: a.memory - r.memory,
            free_ephemeral: a.ephemeral_storage - r.ephemeral_storage,
            non_zero_cpu: info.non_zero_requested.milli_cpu,
            non_zero_memory: info.non_zero_requested.memory,
            alloc_cpu: a.milli_cpu,
            alloc_memory: a.memory,
        }
    }

    /// Whether a plain pod asking for `req` fits a plain node (the resources filter).
    pub fn fits(&self, req: &Resources) -> bool {
        self.free_pods >= 1
            && (req.milli_cpu <= 0 || req.milli_cpu <= self.free_cpu)
            && (req.memory <= 0 || req.memory <= self.free_memory)
            && (req.ephemeral_storage <= 0 || req.ephemeral_storage <= self.free_ephemeral)
    }

    /// The fractions of cpu and memory used once a pod asking for `non_zero` is placed.
    pub fn fractions(&self, non_zero: &Resources) -> (f64, f64) {
        let frac = |used: i64, want: i64, alloc: i64| {
            if alloc <= 0 {
                1.0
            } else {
                ((used + want) as f64 / alloc as f64).min(1.0)
            }
        };
        (
            frac(self.non_zero_cpu, non_zero.milli_cpu, self.alloc_cpu),
            frac(self.non_zero_memory, non_zero.memory, self.alloc_memory),
        )
    }
}

/// Whether the pod is plain this cycle: only resources decide where it fits.
pub fn plain_pod(facts: &PodFacts<'_>, state: &CycleState) -> bool {
    let spec = facts.spec;
    spec.node_name.as_deref().is_none_or(str::is_empty)
        && spec.node_selector.is_none()
        && spec.affinity.is_none()
        && facts.ports.is_empty()
        && facts.requests.scalar.is_empty()
        && state.nominated.is_empty()
        && state.spread.is_none()
        && state.interpod.is_none()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use k8s_openapi::api::core::v1::{Node, Pod};
    use serde_json::json;

    use super::*;
    use crate::scheduler::cache::Cache;
    use crate::scheduler::{filters, resources, scores};

    fn node(name: &str, cpu: &str, pods: &str, extra: serde_json::Value) -> Arc<Node> {
        let mut n = json!({"metadata": {"name": name},
            "status": {"allocatable": {"cpu": cpu, "memory": "1Gi", "pods": pods}}});
        if let Some(spec) = extra.get("spec") {
            n["spec"] = spec.clone();
        }
        Arc::new(serde_json::from_value(n).expect("node"))
    }

    fn pod(name: &str, cpu: &str, node: Option<&str>) -> Arc<Pod> {
        let mut p = json!({"metadata": {"name": name, "namespace": "d", "uid": name},
            "spec": {"containers": [{"name": "c", "image": "i",
                "resources": {"requests": {"cpu": cpu, "memory": "64Mi"}}}]}});
        if let Some(n) = node {
            p["spec"]["nodeName"] = json!(n);
        }
        Arc::new(serde_json::from_value(p).expect("pod"))
    }

    #[test]
    fn rows_follow_the_cache_and_agree_with_the_full_filters_and_scores() {
        let mut cache = Cache::default();
        cache.set_node(node("a", "1", "110", json!({})));
        cache.set_node(node("b", "2", "2", json!({})));
        cache.set_node(node("c", "4", "110", json!({"spec": {"unschedulable": true}})));
        let taint = json!({"spec": {"taints": [{"key": "k", "effect": "PreferNoSchedule"}]}});
        cache.set_node(node("d", "4", "110", taint));
        cache.set_node(node("e", "500m", "110", json!({})));
        for (i, n) in ["a", "b", "b", "e"].iter().enumerate() {
            cache.update_pod(&pod(&format!("p{i}"), "400m", Some(n)));
        }
        cache.remove_node("a");
        cache.set_node(node("a", "1", "110", json!({})));
        cache.update_pod(&pod("p9", "100m", Some("a")));
        cache.remove_pod("p3");
        let rows = cache.rows();
        assert_eq!(rows.len(), cache.nodes().len());
        for (row, info) in rows.iter().zip(cache.nodes()) {
            assert_eq!(*row, FitRow::of(info), "row of {} is current", info.name());
        }
        let plain: Vec<&str> = cache
            .nodes()
            .iter()
            .zip(rows)
            .filter(|(_, r)| r.plain)
            .map(|(n, _)| n.name())
            .collect();
        assert_eq!(plain.len(), 3, "cordoned and tainted nodes are not plain: {plain:?}");

        let state = CycleState::default();
        for cpu in ["0", "100m", "600m", "1500m", "3"] {
            let p = pod("new", cpu, None);
            let facts = PodFacts {
                pod: &p,
                spec: p.spec.as_ref().expect("spec"),
                requests: resources::pod_requests(&p, false),
                ports: vec![],
            };
            assert!(plain_pod(&facts, &state));
            let non_zero = resources::pod_requests(&p, true);
            for (row, info) in rows.iter().zip(cache.nodes()).filter(|(r, _)| r.plain) {
                let full = filters::check(&facts, info, &state).is_none();
                assert_eq!(row.fits(&facts.requests), full, "cpu {cpu} on {}", info.name());
                assert_eq!(
                    scores::score(facts.spec, &non_zero, &[info]),
                    scores::score_rows(&non_zero, &[row]),
                    "score of cpu {cpu} on {}",
                    info.name()
                );
            }
        }
        let pinned = pod("pinned", "1", Some("a"));
        let facts = PodFacts {
            pod: &pinned,
            spec: pinned.spec.as_ref().expect("spec"),
            requests: resources::pod_requests(&pinned, false),
            ports: vec![],
        };
        assert!(!plain_pod(&facts, &state), "a node name is more than resources");
    }
}
