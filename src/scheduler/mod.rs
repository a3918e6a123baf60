//! The scheduler: places pending pods (schedulerName default-scheduler, no nodeName) on nodes
//! through the pods/binding subresource. One scheduling loop filters nodes (see [`filters`]),
//! scores the feasible ones (see [`scores`]), assumes the pod onto the best node in its cache and
//! binds in the background, so the next pod is placed while bindings are in flight. A pod no
//! node fits gets PodScheduled=False (reason Unschedulable, upstream's message) and is tried
//! again when nodes change or pods leave nodes.

pub mod cache;
pub mod filters;
pub mod resources;
pub mod scores;

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Binding, Node, ObjectReference, Pod};
use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Api, Client, ResourceExt};
use parking_lot::Mutex;
use serde_json::json;
use tokio::sync::Semaphore;

use crate::controllers::informer::{self, spawn_named, Change};
use crate::controllers::podutil::{key_of, split_key};
use crate::controllers::queue::WorkQueue;
use cache::Cache;
use filters::PodFacts;

/// The scheduler name pods ask for by default.
pub const DEFAULT_SCHEDULER_NAME: &str = "default-scheduler";
/// Below this many nodes every node is checked (upstream's minFeasibleNodesToFind).
const MIN_FEASIBLE_NODES_TO_FIND: usize = 100;
/// How often unschedulable pods are tried again even without a cluster change.
const UNSCHEDULABLE_RETRY: Duration = Duration::from_secs(60);

/// How the scheduler runs.
#[derive(Clone, Debug)]
pub struct SchedulerOptions {
    /// Percentage of nodes to check before settling for the feasible ones found (0: adaptive,
    /// as upstream: 50% minus 1% per 125 nodes, at least 5%).
    pub percentage_of_nodes_to_score: u32,
    /// Bindings in flight at once.
    pub bind_concurrency: usize,
}

impl Default for SchedulerOptions {
    fn default() -> Self {
        SchedulerOptions { percentage_of_nodes_to_score: 0, bind_concurrency: 256 }
    }
}

/// What ends the scheduler.
#[derive(Debug, thiserror::Error)]
pub enum SchedulerError {
    #[error("an informer of the scheduler stopped")]
    InformerStopped,
}

/// State shared by the informer handlers and the scheduling loop.
struct Shared {
    cache: Mutex<Cache>,
    queue: WorkQueue,
    /// Keys of pods that fit no node, waiting for a cluster change.
    unschedulable: Mutex<HashSet<String>>,
}

impl Shared {
    /// Queues every unschedulable pod again (something that may make them fit happened).
    fn flush_unschedulable(&self) {
        let keys: Vec<String> = self.unschedulable.lock().drain().collect();
        for k in keys {
            self.queue.add(k);
        }
    }
}

struct Scheduler {
    client: Client,
    shared: Arc<Shared>,
    pods: Store<Pod>,
    next_start: AtomicUsize,
    binds: Arc<Semaphore>,
    opts: SchedulerOptions,
}

/// Runs the scheduler until an informer stops.
pub async fn run(client: Client, opts: SchedulerOptions) -> Result<(), SchedulerError> {
    let shared = Arc::new(Shared {
        cache: Mutex::new(Cache::default()),
        queue: WorkQueue::new(),
        unschedulable: Mutex::new(HashSet::new()),
    });
    let s = shared.clone();
    let (nodes, nodes_task) = informer::spawn(
        "scheduler-node-informer",
        Api::<Node>::all(client.clone()),
        watcher::Config::default(),
        move |c| match c {
            Change::Applied(node) => {
                let relevant = {
                    let mut cache = s.cache.lock();
                    let changed = cache
                        .node(&node.name_any())
                        .is_none_or(|old| relevant_change(&old.node, node));
                    cache.set_node(Arc::new(node.clone()));
                    changed
                };
                if relevant {
                    s.flush_unschedulable();
                }
            }
            Change::Deleted(node) => s.cache.lock().remove_node(&node.name_any()),
            Change::Synced => {}
        },
    );
    let s = shared.clone();
    let (pods, pods_task) = informer::spawn(
        "scheduler-pod-informer",
        Api::<Pod>::all(client.clone()),
        watcher::Config::default(),
        move |c| match c {
            Change::Applied(pod) => on_pod(&s, pod),
            Change::Deleted(pod) => {
                let uid = pod.metadata.uid.clone().unwrap_or_default();
                let was_placed = {
                    let mut cache = s.cache.lock();
                    let placed = cache.is_placed(&uid);
                    cache.remove_pod(&uid);
                    placed
                };
                s.unschedulable.lock().remove(&key_of(pod));
                if was_placed {
                    s.flush_unschedulable();
                }
            }
            Change::Synced => {}
        },
    );
    let mut guard =
        crate::controllers::AbortOnDrop(vec![nodes_task.abort_handle(), pods_task.abort_handle()]);
    let ready = futures::future::join(nodes.wait_until_ready(), pods.wait_until_ready()).await;
    if ready.0.is_err() || ready.1.is_err() {
        return Err(SchedulerError::InformerStopped);
    }
    let sched = Arc::new(Scheduler {
        client,
        shared: shared.clone(),
        pods,
        next_start: AtomicUsize::new(0),
        binds: Arc::new(Semaphore::new(opts.bind_concurrency.max(1))),
        opts,
    });
    let periodic = shared.clone();
    let flusher = spawn_named("scheduler-unschedulable-flush", async move {
        loop {
            tokio::time::sleep(UNSCHEDULABLE_RETRY).await;
            periodic.flush_unschedulable();
        }
    });
    let loop_task = spawn_named("scheduler-loop", async move {
        loop {
            let key = sched.shared.queue.get().await;
            let began = std::time::Instant::now();
            sched.schedule_one(&key).await;
            tracing::trace!(pod = %key, elapsed_us = began.elapsed().as_micros() as u64, "scheduling cycle");
            sched.shared.queue.done(&key);
        }
    });
    guard.0.extend([flusher.abort_handle(), loop_task.abort_handle()]);
    tracing::info!("scheduler started");
    tokio::select! {
        _ = loop_task => {}
        _ = flusher => {}
        _ = nodes_task => {}
        _ = pods_task => {}
    }
    Err(SchedulerError::InformerStopped)
}

fn on_pod(s: &Shared, pod: &Pod) {
    let assigned =
        pod.spec.as_ref().and_then(|sp| sp.node_name.as_deref()).is_some_and(|n| !n.is_empty());
    if assigned {
        let freed = {
            let mut cache = s.cache.lock();
            let uid = pod.metadata.uid.clone().unwrap_or_default();
            let before = cache.is_placed(&uid);
            cache.update_pod(pod);
            before && !cache.is_placed(&uid)
        };
        if freed {
            s.flush_unschedulable();
        }
        return;
    }
    if responsible_for(pod) {
        let key = key_of(pod);
        if !s.unschedulable.lock().contains(&key) {
            s.queue.add(key);
        }
    }
}

/// Whether this scheduler should place the pod.
fn responsible_for(pod: &Pod) -> bool {
    let Some(spec) = pod.spec.as_ref() else { return false };
    spec.node_name.as_deref().is_none_or(|n| n.is_empty())
        && spec.scheduler_name.as_deref().unwrap_or(DEFAULT_SCHEDULER_NAME)
            == DEFAULT_SCHEDULER_NAME
        && pod.metadata.deletion_timestamp.is_none()
        && !matches!(
            pod.status.as_ref().and_then(|s| s.phase.as_deref()),
            Some("Succeeded" | "Failed")
        )
}

/// Whether a node update can make an unschedulable pod fit.
fn relevant_change(old: &Node, new: &Node) -> bool {
    let spec =
        |n: &Node| n.spec.as_ref().map(|s| (s.unschedulable, s.taints.clone())).unwrap_or_default();
    let alloc = |n: &Node| n.status.as_ref().and_then(|s| s.allocatable.clone());
    old.metadata.labels != new.metadata.labels || spec(old) != spec(new) || alloc(old) != alloc(new)
}

impl Scheduler {
    async fn schedule_one(&self, key: &str) {
        let (ns, name) = split_key(key);
        let ns = ns.unwrap_or("default").to_string();
        let Some(pod) = self.pods.get(&ObjectRef::new(name).within(&ns)) else { return };
        if !responsible_for(&pod) {
            return;
        }
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let Some(spec) = pod.spec.as_ref() else { return };
        self.shared.unschedulable.lock().remove(key);
        let facts = PodFacts {
            pod: &pod,
            spec,
            requests: resources::pod_requests(&pod, false),
            ports: cache::host_ports(&pod),
        };
        let non_zero = resources::pod_requests(&pod, true);
        let chosen = {
            let mut cache = self.shared.cache.lock();
            if cache.is_placed(&uid) {
                return;
            }
            match self.find_node(&cache, &facts, &non_zero) {
                Ok(node) => {
                    cache.assume(&pod, &node);
                    Ok(node)
                }
                Err(msg) => Err(msg),
            }
        };
        match chosen {
            Ok(node) => self.bind(pod.clone(), key.to_string(), uid, node).await,
            Err(message) => {
                self.shared.unschedulable.lock().insert(key.to_string());
                self.shared.queue.add_after(key.to_string(), UNSCHEDULABLE_RETRY);
                tracing::debug!(pod = %key, %message, "pod is unschedulable");
                self.mark_unschedulable(&pod, message);
            }
        }
    }

    /// The best node for the pod, or upstream's explanation of why none fits.
    fn find_node(
        &self,
        cache: &Cache,
        facts: &PodFacts<'_>,
        non_zero: &resources::Resources,
    ) -> Result<String, String> {
        let nodes = cache.nodes();
        let total = nodes.len();
        if total == 0 {
            return Err("no nodes available to schedule pods".into());
        }
        let want = feasible_to_find(total, self.opts.percentage_of_nodes_to_score);
        let start = self.next_start.load(Ordering::Relaxed) % total;
        let mut feasible = Vec::with_capacity(want.min(total));
        let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
        let mut resolvable = 0usize;
        let mut processed = 0;
        for i in 0..total {
            let info = &nodes[(start + i) % total];
            processed += 1;
            match filters::check(facts, info) {
                None => {
                    feasible.push(info);
                    if feasible.len() >= want {
                        break;
                    }
                }
                Some(rs) => {
                    if rs.iter().all(|r| filters::resolvable_by_preemption(r)) {
                        resolvable += 1;
                    }
                    for r in rs {
                        *reasons.entry(r).or_insert(0) += 1;
                    }
                }
            }
        }
        self.next_start.store((start + processed) % total, Ordering::Relaxed);
        if feasible.is_empty() {
            return Err(fit_error_message(total, &reasons, resolvable));
        }
        if feasible.len() == 1 {
            return Ok(feasible[0].name().to_string());
        }
        let scores = scores::score(facts.spec, non_zero, &feasible);
        let mut best = 0;
        let mut ties = 1u32;
        for (i, s) in scores.iter().enumerate().skip(1) {
            if *s > scores[best] {
                best = i;
                ties = 1;
            } else if *s == scores[best] {
                ties += 1;
                if rand::random_range(0..ties) == 0 {
                    best = i;
                }
            }
        }
        Ok(feasible[best].name().to_string())
    }

    /// Binds in the background; a failed binding is undone in the cache and retried.
    async fn bind(&self, pod: Arc<Pod>, key: String, uid: String, node: String) {
        let Ok(permit) = self.binds.clone().acquire_owned().await else { return };
        let client = self.client.clone();
        let shared = self.shared.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let ns = pod.namespace().unwrap_or_default();
            let binding = Binding {
                metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                    name: pod.metadata.name.clone(),
                    namespace: pod.metadata.namespace.clone(),
                    uid: pod.metadata.uid.clone(),
                    ..Default::default()
                },
                target: ObjectReference {
                    kind: Some("Node".into()),
                    name: Some(node.clone()),
                    ..Default::default()
                },
            };
            let api: Api<Pod> = Api::namespaced(client, &ns);
            let began = std::time::Instant::now();
            let result: Result<serde_json::Value, kube::Error> = api
                .create_subresource("binding", &pod.name_any(), &PostParams::default(), &binding)
                .await;
            match result {
                Ok(_) => tracing::trace!(
                    pod = %key,
                    node = %node,
                    elapsed_us = began.elapsed().as_micros() as u64,
                    "bound"
                ),
                Err(e) => {
                    shared.cache.lock().forget(&uid);
                    match &e {
                        kube::Error::Api(ae) if ae.code == 404 || ae.code == 409 => {
                            tracing::debug!(pod = %key, node = %node, error = %ae.message, "binding refused")
                        }
                        _ => {
                            tracing::warn!(pod = %key, node = %node, error = %e, "binding failed; retrying");
                            shared.queue.add_rate_limited(key);
                        }
                    }
                }
            }
        });
    }

    /// Sets PodScheduled=False (Unschedulable) with `message` unless the pod already says so.
    fn mark_unschedulable(&self, pod: &Pod, message: String) {
        let current = pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|cs| cs.iter().find(|c| c.type_ == "PodScheduled"));
        if current.is_some_and(|c| {
            c.status == "False"
                && c.reason.as_deref() == Some("Unschedulable")
                && c.message.as_deref() == Some(&message)
        }) {
            return;
        }
        let transition = match current {
            Some(c) if c.status == "False" => {
                c.last_transition_time.as_ref().map(crate::controllers::podutil::time_of)
            }
            _ => None,
        }
        .unwrap_or_else(chrono::Utc::now);
        let patch = json!({"status": {"conditions": [{
            "type": "PodScheduled",
            "status": "False",
            "reason": "Unschedulable",
            "message": message,
            "lastProbeTime": null,
            "lastTransitionTime": transition.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        }]}});
        let api: Api<Pod> =
            Api::namespaced(self.client.clone(), &pod.namespace().unwrap_or_default());
        let name = pod.name_any();
        tokio::spawn(async move {
            let pp = PatchParams {
                field_manager: Some("default-scheduler".into()),
                ..Default::default()
            };
            if let Err(e) = api.patch_status(&name, &pp, &Patch::Strategic(&patch)).await {
                tracing::debug!(pod = %name, error = %e, "cannot record the unschedulable condition");
            }
        });
    }
}

/// How many feasible nodes to find before scoring (upstream's numFeasibleNodesToFind).
pub fn feasible_to_find(total: usize, percentage: u32) -> usize {
    if total < MIN_FEASIBLE_NODES_TO_FIND {
        return total;
    }
    let pct = if percentage == 0 {
        (50 - (total / 125) as i64).max(5) as usize
    } else {
        percentage.min(100) as usize
    };
    (total * pct / 100).max(MIN_FEASIBLE_NODES_TO_FIND)
}

/// Upstream's FitError message with the preemption post-filter's note.
pub fn fit_error_message(
    total: usize,
    reasons: &BTreeMap<String, usize>,
    resolvable: usize,
) -> String {
    let mut parts: Vec<String> = reasons.iter().map(|(r, n)| format!("{n} {r}")).collect();
    parts.sort();
    let mut preemption = vec![];
    if resolvable > 0 {
        preemption.push(format!("{resolvable} No preemption victims found for incoming pod"));
    }
    if total > resolvable {
        preemption.push(format!("{} Preemption is not helpful for scheduling", total - resolvable));
    }
    preemption.sort();
    format!(
        "0/{total} nodes are available: {}. preemption: 0/{total} nodes are available: {}.",
        parts.join(", "),
        preemption.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fit_errors_read_as_upstream() {
        let reasons: BTreeMap<String, usize> =
            [("Insufficient cpu".to_string(), 3)].into_iter().collect();
        assert_eq!(
            fit_error_message(3, &reasons, 3),
            "0/3 nodes are available: 3 Insufficient cpu. preemption: 0/3 nodes are available: 3 No preemption victims found for incoming pod."
        );
        assert_eq!(feasible_to_find(50, 0), 50);
        assert_eq!(feasible_to_find(5000, 0), 500);
    }
}
