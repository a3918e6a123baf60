//! The scheduler: places pending pods (schedulerName default-scheduler, no nodeName) on nodes
//! through the pods/binding subresource, highest priority first ([`queue`]). One scheduling
//! loop filters nodes (see [`filters`], with [`spread`] and [`interpod`] counts computed once
//! per cycle), scores the feasible ones (see [`scores`]), assumes the pod onto the best node in
//! its cache and binds in the background, so the next pod is placed while bindings are in
//! flight. A pod no node fits may
//! preempt lower-priority pods ([`preemption`]); otherwise it gets PodScheduled=False and a
//! FailedScheduling event ([`unschedulable`]) and is tried again when nodes change, pods leave
//! nodes, or (when it waits for other pods: affinity, spread) pods are placed.

pub mod cache;
pub mod filters;
pub mod interpod;
pub mod preemption;
pub mod queue;
pub mod resources;
pub mod rows;
pub mod scheduled;
pub mod scores;
mod shared;
pub mod spread;
pub mod unschedulable;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Binding, Namespace, Node, ObjectReference, Pod};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::PostParams;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Api, Client, ResourceExt};
use tokio::sync::Semaphore;

use crate::controllers::informer::{spawn_named, Change};
use crate::controllers::informers::StoreReady;
use crate::controllers::podutil::{key_of, split_key};
use cache::{priority_of, Cache};
use filters::{CycleState, PodFacts};
use shared::{apply_node, apply_pod_gone, on_pod, responsible_for, Deferred, FollowUp, Shared};
use unschedulable::fit_error_message;

/// The scheduler name pods ask for by default.
pub const DEFAULT_SCHEDULER_NAME: &str = "default-scheduler";
/// Below this many nodes every node is checked (upstream's minFeasibleNodesToFind).
const MIN_FEASIBLE_NODES_TO_FIND: usize = 100;
/// How often unschedulable pods are tried again even without a cluster change.
const UNSCHEDULABLE_RETRY: Duration = Duration::from_secs(60);
/// How often cache changes deferred by the informer handlers are applied when no scheduling
/// cycle does it first.
const DEFERRED_DRAIN: Duration = Duration::from_millis(50);

/// How the scheduler runs.
#[derive(Clone, Debug)]
pub struct SchedulerOptions {
    /// Percentage of nodes to check before settling for the feasible ones found (0: adaptive,
    /// as upstream: 50% minus 1% per 125 nodes, at least 5%).
    pub percentage_of_nodes_to_score: u32,
    /// Bindings in flight at once.
    pub bind_concurrency: usize,
    /// The shared informers the scheduler subscribes to.
    pub informers: crate::controllers::informers::Informers,
}

impl Default for SchedulerOptions {
    fn default() -> Self {
        SchedulerOptions {
            percentage_of_nodes_to_score: 0,
            bind_concurrency: 256,
            informers: Default::default(),
        }
    }
}

/// What ends the scheduler.
#[derive(Debug, thiserror::Error)]
pub enum SchedulerError {
    #[error("an informer of the scheduler stopped")]
    InformerStopped,
}

struct Scheduler {
    client: Client,
    shared: Arc<Shared>,
    pods: Store<Pod>,
    namespaces: Store<Namespace>,
    pdbs: Store<PodDisruptionBudget>,
    /// Services and controllers, for the system default spread constraints.
    selecting: spread::SelectingObjects,
    next_start: AtomicUsize,
    binds: Arc<Semaphore>,
    events: scheduled::ScheduledEvents,
    opts: SchedulerOptions,
}

/// Runs the scheduler until an informer stops.
pub async fn run(client: Client, opts: SchedulerOptions) -> Result<(), SchedulerError> {
    let shared = Arc::new(Shared::new());
    let s = shared.clone();
    let (nodes, nodes_task) = opts.informers.spawn(
        "scheduler-node-informer",
        Api::<Node>::all(client.clone()),
        watcher::Config::default(),
        move |c| match c {
            Change::Applied(node) => s.change_cache(
                |_, cache, follow| apply_node(cache, node, follow),
                || Deferred::Node(node.clone()),
            ),
            Change::Deleted(node) => s.change_cache(
                |_, cache, _| cache.remove_node(&node.name_any()),
                || Deferred::NodeGone(node.name_any()),
            ),
            Change::Synced => {}
        },
    );
    let s = shared.clone();
    let (pods, pods_task) = opts.informers.spawn(
        "scheduler-pod-informer",
        Api::<Pod>::all(client.clone()),
        watcher::Config::default(),
        move |c| match c {
            Change::Applied(pod) => on_pod(&s, pod),
            Change::Deleted(pod) => {
                let uid = pod.metadata.uid.clone().unwrap_or_default();
                let key = key_of(pod);
                s.queue.remove(&key);
                s.unschedulable.lock().remove(&key);
                s.recorded.forget(&key);
                s.change_cache(
                    |_, cache, follow| apply_pod_gone(cache, &uid, follow),
                    || Deferred::PodGone(uid.clone()),
                );
            }
            Change::Synced => {}
        },
    );
    let _ = shared.pod_store.set(pods.clone());
    let (namespaces, ns_task) = opts.informers.spawn(
        "scheduler-namespace-informer",
        Api::<Namespace>::all(client.clone()),
        watcher::Config::default(),
        |_| {},
    );
    let (pdbs, pdb_task) = opts.informers.spawn(
        "scheduler-pdb-informer",
        Api::<PodDisruptionBudget>::all(client.clone()),
        watcher::Config::default(),
        |_| {},
    );
    let (selecting, selecting_tasks) = spread::SelectingObjects::spawn(&opts.informers, &client);
    let mut guard = crate::controllers::AbortOnDrop(vec![
        nodes_task.abort_handle(),
        pods_task.abort_handle(),
        ns_task.abort_handle(),
        pdb_task.abort_handle(),
    ]);
    guard.0.extend(selecting_tasks.iter().map(|t| t.abort_handle()));
    let ready =
        futures::future::join4(nodes.ready(), pods.ready(), namespaces.ready(), pdbs.ready()).await;
    if ready.0.is_err() || ready.1.is_err() || ready.2.is_err() || ready.3.is_err() {
        return Err(SchedulerError::InformerStopped);
    }
    if selecting.ready().await.is_err() {
        return Err(SchedulerError::InformerStopped);
    }
    let selecting_stopped = futures::future::select_all(selecting_tasks);
    let (events, events_writer) = scheduled::ScheduledEvents::start(client.clone());
    let events_task = spawn_named("scheduler-events", events_writer);
    guard.0.push(events_task.abort_handle());
    let sched = Arc::new(Scheduler {
        client,
        shared: shared.clone(),
        pods,
        namespaces,
        pdbs,
        selecting,
        next_start: AtomicUsize::new(0),
        binds: Arc::new(Semaphore::new(opts.bind_concurrency.max(1))),
        events,
        opts,
    });
    let periodic = shared.clone();
    let flusher = spawn_named("scheduler-unschedulable-flush", async move {
        loop {
            tokio::time::sleep(UNSCHEDULABLE_RETRY).await;
            periodic.flush_unschedulable();
        }
    });
    // Deferred cache changes reach the cache within DEFERRED_DRAIN even when no cycle runs.
    let draining = shared.clone();
    let drainer = spawn_named("scheduler-deferred-drain", async move {
        loop {
            tokio::time::sleep(DEFERRED_DRAIN).await;
            draining.drain_deferred();
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
    guard.0.extend([flusher.abort_handle(), drainer.abort_handle(), loop_task.abort_handle()]);
    tracing::info!("scheduler started");
    tokio::select! {
        _ = loop_task => {}
        _ = flusher => {}
        _ = drainer => {}
        _ = nodes_task => {}
        _ = pods_task => {}
        _ = ns_task => {}
        _ = pdb_task => {}
        _ = selecting_stopped => {}
    }
    Err(SchedulerError::InformerStopped)
}

/// Why no node fits: the reasons histogram and the nodes where removing pods may help.
struct FitFailure {
    total: usize,
    reasons: BTreeMap<String, usize>,
    potential: Vec<usize>,
}

/// What a scheduling attempt decided.
enum Decision {
    Bind(String),
    /// Preemption chose a node: victims to evict, pods whose nomination is cleared.
    Preempt {
        message: String,
        candidate: preemption::Candidate,
        demoted: Vec<Arc<Pod>>,
    },
    /// `nominated`: None keeps the pod's nominated node, Some("") clears it.
    Unschedulable {
        message: String,
        nominated: Option<String>,
        waits_for_pods: bool,
    },
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
        let ns_obj = self.namespaces.get(&ObjectRef::new(&ns));
        let ns_labels = ns_obj.as_ref().and_then(|n| n.metadata.labels.as_ref());
        let terms = if spec
            .affinity
            .as_ref()
            .is_some_and(|a| a.pod_affinity.is_some() || a.pod_anti_affinity.is_some())
        {
            let all = if uses_namespace_selector(&pod) { self.namespaces.state() } else { vec![] };
            interpod::PodTerms::of(&pod, &all)
        } else {
            interpod::PodTerms::default()
        };
        let mut follow = FollowUp::default();
        let decision = {
            let mut cache = self.shared.cache.lock();
            self.shared.apply_deferred(&mut cache, &mut follow);
            if cache.is_placed(&uid) {
                drop(cache);
                self.shared.follow_up(follow);
                return;
            }
            let state = cycle_state(&cache, &pod, &terms, ns_labels);
            match self.find_node(&cache, &facts, &state, &non_zero, &terms, ns_labels) {
                Ok(node) => {
                    cache.assume(&pod, &node);
                    Decision::Bind(node)
                }
                Err(None) => Decision::Unschedulable {
                    message: "no nodes available to schedule pods".into(),
                    nominated: None,
                    waits_for_pods: false,
                },
                Err(Some(fit)) => self.post_filter(&mut cache, &facts, &state, fit),
            }
        };
        self.shared.follow_up(follow);
        match decision {
            Decision::Bind(node) => {
                self.shared.recorded.forget(key);
                self.shared.flush_waiting_for_pods();
                self.bind(pod.clone(), key.to_string(), uid, node).await
            }
            Decision::Preempt { message, candidate, demoted } => {
                tracing::info!(
                    pod = %key,
                    node = %candidate.node,
                    victims = candidate.victims.len(),
                    "preempting lower-priority pods"
                );
                preemption::evict(&self.client, &pod, &candidate, demoted);
                self.park(key, false);
                unschedulable::record(
                    &self.client,
                    &self.shared.recorded,
                    key,
                    &pod,
                    message,
                    Some(&candidate.node),
                );
            }
            Decision::Unschedulable { message, nominated, waits_for_pods } => {
                tracing::debug!(pod = %key, %message, "pod is unschedulable");
                self.park(key, waits_for_pods);
                unschedulable::record(
                    &self.client,
                    &self.shared.recorded,
                    key,
                    &pod,
                    message,
                    nominated.as_deref(),
                );
            }
        }
    }

    /// Keeps an unschedulable pod aside until the cluster changes (or the periodic retry).
    fn park(&self, key: &str, waits_for_pods: bool) {
        self.shared.unschedulable.lock().insert(key.to_string(), waits_for_pods);
        self.shared.queue.add_after(key.to_string(), UNSCHEDULABLE_RETRY);
    }

    /// Preemption after a failed attempt (upstream's PostFilter).
    fn post_filter(
        &self,
        cache: &mut Cache,
        facts: &PodFacts<'_>,
        state: &CycleState,
        fit: FitFailure,
    ) -> Decision {
        let waits_for_pods =
            fit.reasons.keys().any(|r| r == interpod::REASON_AFFINITY || r == spread::REASON_SKEW);
        let total = fit.total;
        let attempt =
            preemption::eligible(facts.pod, cache).map_err(|r| (r, None)).and_then(|()| {
                if fit.potential.is_empty() {
                    return Err((
                        format!(
                            "0/{total} nodes are available: {total} {}.",
                            preemption::NOT_HELPFUL
                        ),
                        Some(String::new()),
                    ));
                }
                let pdbs = self.pdbs.state();
                preemption::find_candidate(facts, state, cache.nodes(), &fit.potential, &pdbs)
                    .map_err(|r| (r, Some(String::new())))
            });
        match attempt {
            Ok(candidate) => {
                let priority = priority_of(facts.pod);
                let demoted =
                    preemption::lower_priority_nominated(cache, &candidate.node, priority);
                for d in &demoted {
                    cache.nominate(d, "");
                }
                cache.nominate(facts.pod, &candidate.node);
                self.shared.any_nominated.store(true, Ordering::Relaxed);
                Decision::Preempt {
                    message: fit_error_message(total, &fit.reasons, ""),
                    candidate,
                    demoted,
                }
            }
            Err((post, nominated)) => {
                let clear = nominated.is_some() && nominated_node(cache, facts.pod).is_some();
                if clear {
                    cache.nominate(facts.pod, "");
                }
                Decision::Unschedulable {
                    message: fit_error_message(total, &fit.reasons, &post),
                    nominated: if clear { nominated } else { None },
                    waits_for_pods,
                }
            }
        }
    }

    /// The best node for the pod, or why none fits (None: there are no nodes).
    fn find_node(
        &self,
        cache: &Cache,
        facts: &PodFacts<'_>,
        state: &CycleState,
        non_zero: &resources::Resources,
        terms: &interpod::PodTerms,
        ns_labels: Option<&BTreeMap<String, String>>,
    ) -> Result<String, Option<FitFailure>> {
        let nodes = cache.nodes();
        let total = nodes.len();
        if total == 0 {
            return Err(None);
        }
        // A pod nominated by preemption goes to its node if it fits there now.
        if let Some(info) = nominated_node(cache, facts.pod).and_then(|n| cache.node(n)) {
            if filters::check(facts, info, state).is_none() {
                return Ok(info.name().to_string());
            }
        }
        let want = feasible_to_find(total, self.opts.percentage_of_nodes_to_score);
        let start = self.next_start.load(Ordering::Relaxed) % total;
        let mut feasible = Vec::with_capacity(want.min(total));
        let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
        let mut potential = vec![];
        let mut processed = 0;
        // A plain pod is checked on its node's fit row (see [`rows`]) where the row is plain.
        let plain = rows::plain_pod(facts, state);
        let fit_rows = cache.rows();
        let mut feasible_rows: Vec<&rows::FitRow> = vec![];
        for i in 0..total {
            let index = (start + i) % total;
            let info = &nodes[index];
            processed += 1;
            let row = &fit_rows[index];
            let verdict = if plain && row.plain && row.fits(&facts.requests) {
                None
            } else {
                filters::check(facts, info, state)
            };
            match verdict {
                None => {
                    feasible.push(info);
                    feasible_rows.push(row);
                    if feasible.len() >= want {
                        break;
                    }
                }
                Some(rs) => {
                    if rs.iter().all(|r| filters::resolvable_by_preemption(r)) {
                        potential.push(index);
                    }
                    for r in rs {
                        *reasons.entry(r).or_insert(0) += 1;
                    }
                }
            }
        }
        self.next_start.store((start + processed) % total, Ordering::Relaxed);
        tracing::trace!(processed, feasible = feasible.len(), "filtered nodes");
        if feasible.is_empty() {
            return Err(Some(FitFailure { total, reasons, potential }));
        }
        if feasible.len() == 1 {
            return Ok(feasible[0].name().to_string());
        }
        let mut scores = if plain && feasible_rows.iter().all(|r| r.plain) {
            scores::score_rows(non_zero, &feasible_rows)
        } else {
            scores::score(facts.spec, non_zero, &feasible)
        };
        let affinity = interpod::score(
            facts.pod,
            terms,
            ns_labels,
            nodes,
            &feasible,
            cache.any_scoring_terms(),
        );
        scores::add_weighted(&mut scores, affinity, scores::INTER_POD_AFFINITY_WEIGHT);
        // Once per cycle, and only for pods without constraints of their own.
        let default_selector = if spread::uses_system_defaults(facts.pod) {
            self.selecting.default_selector(facts.pod)
        } else {
            None
        };
        let spreading = spread::score(facts.pod, default_selector.as_ref(), nodes, &feasible);
        scores::add_weighted(&mut scores, spreading, scores::POD_TOPOLOGY_SPREAD_WEIGHT);
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
        let events = self.events.clone();
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
                Ok(_) => {
                    tracing::trace!(
                        pod = %key,
                        node = %node,
                        elapsed_us = began.elapsed().as_micros() as u64,
                        "bound"
                    );
                    events.scheduled(pod, node);
                }
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
}

/// The pod's nominated node: the cache's record (the scheduler's latest decision), else the
/// pod's status.
pub(crate) fn nominated_node<'a>(cache: &'a Cache, pod: &'a Pod) -> Option<&'a str> {
    let uid = pod.metadata.uid.as_deref().unwrap_or("");
    match cache.nominated_node(uid) {
        Some(n) => n,
        None => pod
            .status
            .as_ref()
            .and_then(|s| s.nominated_node_name.as_deref())
            .filter(|n| !n.is_empty()),
    }
}

/// The filters' per-cycle state for the pod.
fn cycle_state(
    cache: &Cache,
    pod: &Pod,
    terms: &interpod::PodTerms,
    ns_labels: Option<&BTreeMap<String, String>>,
) -> CycleState {
    let nodes = cache.nodes();
    let uid = pod.metadata.uid.as_deref().unwrap_or("");
    let priority = priority_of(pod);
    let mut nominated: HashMap<String, resources::Resources> = HashMap::new();
    for (node, p) in cache.nominated() {
        if p.uid != uid && p.priority >= priority {
            nominated.entry(node.to_string()).or_default().add(&p.requests);
        }
    }
    CycleState {
        spread: spread::FilterState::compute(pod, nodes),
        interpod: interpod::FilterState::compute(
            pod,
            terms,
            ns_labels,
            nodes,
            cache.any_required_anti_affinity(),
            cache.unique_hostnames(),
        ),
        nominated,
    }
}

/// Whether any of the pod's affinity terms selects namespaces by label.
fn uses_namespace_selector(pod: &Pod) -> bool {
    let Some(a) = pod.spec.as_ref().and_then(|s| s.affinity.as_ref()) else { return false };
    let req = |ts: Option<&Vec<k8s_openapi::api::core::v1::PodAffinityTerm>>| {
        ts.into_iter().flatten().any(|t| t.namespace_selector.is_some())
    };
    let pref = |ts: Option<&Vec<k8s_openapi::api::core::v1::WeightedPodAffinityTerm>>| {
        ts.into_iter().flatten().any(|t| t.pod_affinity_term.namespace_selector.is_some())
    };
    let aff = a.pod_affinity.as_ref();
    let anti = a.pod_anti_affinity.as_ref();
    req(aff.and_then(|x| x.required_during_scheduling_ignored_during_execution.as_ref()))
        || req(anti.and_then(|x| x.required_during_scheduling_ignored_during_execution.as_ref()))
        || pref(aff.and_then(|x| x.preferred_during_scheduling_ignored_during_execution.as_ref()))
        || pref(anti.and_then(|x| x.preferred_during_scheduling_ignored_during_execution.as_ref()))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn feasible_nodes_to_find() {
        assert_eq!(feasible_to_find(50, 0), 50);
        assert_eq!(feasible_to_find(5000, 0), 500);
    }
}
