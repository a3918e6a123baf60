//! The RollingUpdate strategy's share of a sync: maxSurge and maxUnavailable resolved against
//! the nodes that should run a pod, and which nodes get a surge pod and which old pods go.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use k8s_openapi::api::core::v1::Pod;

use super::{hash_of_pod, terminating, NodeView, View};
use crate::controllers::{podutil, rollout};

/// maxSurge and maxUnavailable against the number of nodes that should run a pod (percentages
/// round up; unavailable is at least 1 when both are 0).
pub(super) fn surge_and_unavailable(view: &View<'_>) -> (i32, i32) {
    let spec = view.spec();
    let desired = view.nodes.iter().filter(|n| n.should_run).count() as i32;
    let ru = spec.update_strategy.as_ref().and_then(|s| s.rolling_update.as_ref());
    let surge = rollout::resolve(ru.and_then(|r| r.max_surge.as_ref()), 0, desired, true).max(0);
    let mut unavailable =
        rollout::resolve(ru.and_then(|r| r.max_unavailable.as_ref()), 0, desired, true).max(0);
    if ru.and_then(|r| r.max_unavailable.as_ref()).is_none() && surge == 0 {
        unavailable = 1;
    }
    if surge == 0 && unavailable == 0 {
        unavailable = 1;
    }
    (surge, unavailable)
}

/// A node's pod of the current revision and its pod of an older one, either may be missing.
type NewAndOld = (Option<Arc<Pod>>, Option<Arc<Pod>>);

/// The new and the old pod on a node (none if there is more than one of either).
fn new_and_old(view: &View<'_>, node: &NodeView) -> Option<NewAndOld> {
    let (mut new, mut old) = (None, None);
    for p in node.pods.iter().filter(|p| !terminating(p)) {
        let slot = if hash_of_pod(p) == view.hash { &mut new } else { &mut old };
        if slot.is_some() {
            return None;
        }
        *slot = Some(p.clone());
    }
    Some((new, old))
}

/// The rolling update's share: nodes to surge onto, old pods to replace, and when to look again.
pub(super) fn rolling_update(view: &View<'_>) -> (Vec<String>, Vec<Arc<Pod>>, Option<Duration>) {
    let (max_surge, max_unavailable) = surge_and_unavailable(view);
    let now = Utc::now();
    let available = |p: &Pod| podutil::is_available(p, view.min_ready, now);
    let mut requeue = None;
    let mut wait_ready = |p: &Pod| {
        if podutil::is_ready(p) && view.min_ready > 0 {
            requeue = Some(Duration::from_secs(view.min_ready as u64));
        }
    };
    let with_pods = view.nodes.iter().filter(|n| !n.pods.is_empty());
    if max_surge == 0 {
        // A node still waiting for its pod is unavailable too.
        let mut unavailable = view
            .nodes
            .iter()
            .filter(|n| n.should_run && n.pods.iter().all(|p| terminating(p)))
            .count() as i32;
        let (mut must, mut candidates) = (vec![], vec![]);
        for node in with_pods {
            let Some((new, old)) = new_and_old(view, node) else {
                unavailable += 1;
                continue;
            };
            match (new, old) {
                // Counted above.
                (None, None) => {}
                (Some(_), Some(_)) => unavailable += 1,
                (Some(new), None) => {
                    if !available(&new) {
                        wait_ready(&new);
                        unavailable += 1;
                    }
                }
                (None, Some(old)) => {
                    if !available(&old) {
                        must.push(old);
                    } else if unavailable < max_unavailable {
                        candidates.push(old);
                    }
                }
            }
        }
        let room = (max_unavailable - unavailable).max(0) as usize;
        must.extend(candidates.into_iter().take(room));
        return (vec![], must, requeue);
    }
    let mut surged = 0;
    let (mut must, mut candidates, mut delete) = (vec![], vec![], vec![]);
    for node in with_pods {
        let Some((new, old)) = new_and_old(view, node) else { continue };
        let Some(old) = old else { continue };
        match new {
            None if !available(&old) => must.push(node.name.clone()),
            None => {
                if surged < max_surge && node.should_run {
                    candidates.push(node.name.clone());
                }
            }
            Some(new) if !available(&new) => {
                wait_ready(&new);
                surged += 1;
            }
            Some(_) => delete.push(old),
        }
    }
    let room = (max_surge - surged).max(0) as usize;
    must.extend(candidates.into_iter().take(room));
    (must, delete, requeue)
}
