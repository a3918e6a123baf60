//! What pods a Job should run: the create/delete plan that fills parallelism (and, for Indexed
//! jobs, the pending indexes), success policy rules, and per-index failure counts.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;

use super::failurepolicy::{self, Verdict};
use super::{indexes, is_failed, BURST, INDEX_FAILURE_COUNT};

/// The index of the first success policy rule the completed indexes satisfy.
pub(super) fn success_policy_met(
    spec: &k8s_openapi::api::batch::v1::JobSpec,
    completed: &BTreeSet<i32>,
) -> Option<usize> {
    let policy = spec.success_policy.as_ref()?;
    if spec.completion_mode.as_deref() != Some("Indexed") {
        return None;
    }
    let limit = spec.completions.unwrap_or(0);
    policy.rules.iter().position(|rule| {
        let wanted = rule.succeeded_indexes.as_deref().map(|s| indexes::parse(s, limit));
        let done = match &wanted {
            Some(w) => w.intersection(completed).count() as i32,
            None => completed.len() as i32,
        };
        match (rule.succeeded_count, &wanted) {
            (Some(n), _) => done >= n,
            (None, Some(w)) => done == w.len() as i32 && !w.is_empty(),
            (None, None) => false,
        }
    })
}

/// Per completion index, how many counted failures its pods had (backoffLimitPerIndex): one
/// more than the count on its latest failed pod; ignored failures do not count.
pub(super) fn index_failure_counts(job: &Job, pods: &[Arc<Pod>]) -> HashMap<i32, i32> {
    let mut out: HashMap<i32, i32> = HashMap::new();
    if job.spec.as_ref().and_then(|s| s.backoff_limit_per_index).is_none() {
        return out;
    }
    let policy = job.spec.as_ref().and_then(|s| s.pod_failure_policy.as_ref());
    for p in pods.iter().filter(|p| is_failed(p, job)) {
        let Some(i) = indexes::of_pod(p) else { continue };
        let ignored = policy.is_some_and(|pol| failurepolicy::evaluate(pol, p) == Verdict::Ignore);
        let n = index_failures(p) + i32::from(!ignored);
        let e = out.entry(i).or_insert(0);
        *e = (*e).max(n);
    }
    out
}

pub(super) fn index_failures(pod: &Pod) -> i32 {
    pod.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(INDEX_FAILURE_COUNT))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// What pods to run: how many (and, for Indexed jobs, which indexes) to create, and which
/// active pods are surplus.
pub(super) struct Plan<'a> {
    pub(super) indexed: bool,
    pub(super) completions: Option<i32>,
    pub(super) parallelism: i32,
    pub(super) succeeded: i32,
    pub(super) completed: &'a BTreeSet<i32>,
    pub(super) failed_indexes: &'a BTreeSet<i32>,
    pub(super) terminating: i32,
}

impl Plan<'_> {
    /// (indexes to create — None for NonIndexed pods — , pods to delete).
    pub(super) fn diff(&self, active: &[Arc<Pod>]) -> (Vec<Option<i32>>, Vec<Arc<Pod>>) {
        if !self.indexed {
            let want = match self.completions {
                Some(c) => (c - self.succeeded).clamp(0, self.parallelism),
                None if self.succeeded > 0 => 0,
                None => self.parallelism,
            };
            let have = active.len() as i32;
            if have > want {
                // Newest first.
                let surplus = active.iter().rev().take((have - want) as usize).cloned().collect();
                return (vec![], surplus);
            }
            let n = (want - have - self.terminating).max(0) as usize;
            return (vec![None; n.min(BURST)], vec![]);
        }
        let limit = self.completions.unwrap_or(0);
        let mut seen: BTreeSet<i32> = BTreeSet::new();
        let mut surplus = vec![];
        let mut keep = vec![];
        for p in active {
            match indexes::of_pod(p) {
                Some(i)
                    if i < limit
                        && !self.completed.contains(&i)
                        && !self.failed_indexes.contains(&i)
                        && seen.insert(i) =>
                {
                    keep.push(p.clone())
                }
                _ => surplus.push(p.clone()),
            }
        }
        if keep.len() as i32 > self.parallelism {
            let extra = keep.len() - self.parallelism as usize;
            surplus.extend(keep.iter().rev().take(extra).cloned());
            return (vec![], surplus);
        }
        let room = (self.parallelism - keep.len() as i32 - self.terminating).max(0) as usize;
        let pending: Vec<Option<i32>> = (0..limit)
            .filter(|i| {
                !seen.contains(i) && !self.completed.contains(i) && !self.failed_indexes.contains(i)
            })
            .take(room.min(BURST))
            .map(Some)
            .collect();
        (pending, surplus)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_fill_parallelism_and_pending_indexes() {
        let none = BTreeSet::new();
        let plan = Plan {
            indexed: false,
            completions: Some(3),
            parallelism: 2,
            succeeded: 2,
            completed: &none,
            failed_indexes: &none,
            terminating: 0,
        };
        assert_eq!(plan.diff(&[]).0.len(), 1);
        let completed: BTreeSet<i32> = [0, 2].into_iter().collect();
        let plan = Plan {
            indexed: true,
            completions: Some(5),
            parallelism: 2,
            completed: &completed,
            ..plan
        };
        assert_eq!(plan.diff(&[]).0, vec![Some(1), Some(3)]);
        let work_queue = Plan { indexed: false, completions: None, succeeded: 1, ..plan };
        assert!(work_queue.diff(&[]).0.is_empty());
    }
}
