//! The DaemonSet controller: one pod on every node the template may run on (nodeSelector,
//! required node affinity, taints against the template's tolerations plus the tolerations
//! upstream gives every daemon pod). Each pod is pinned to its node by a required node affinity
//! on the field metadata.name, which the scheduler honours when it binds the pod. Pods on nodes
//! they no longer fit are deleted (a NoSchedule taint only stops new pods; NoExecute evicts).
//! Templates are recorded as ControllerRevisions ([`super::history`]) and pods carry the
//! revision's hash in controller-revision-hash. RollingUpdate replaces pods within maxUnavailable
//! (delete, then create) or maxSurge (create, then delete once the new pod is available);
//! OnDelete replaces only pods someone else deleted. Status (desiredNumberScheduled,
//! currentNumberScheduled, numberReady, numberAvailable, numberUnavailable,
//! updatedNumberScheduled, numberMisscheduled, observedGeneration) is what
//! `kubectl rollout status` reads; `kubectl rollout undo` patches a revision's data back.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use futures::future::join_all;
use k8s_openapi::api::apps::v1::{ControllerRevision, DaemonSet, DaemonSetSpec};
use k8s_openapi::api::core::v1::{
    Affinity, Node, NodeAffinity, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, Pod,
    PodSpec, Toleration,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Api, Client, ResourceExt};
use serde_json::json;

use super::expectations::Expectations;
use super::history::{self, CONTROLLER_REVISION_HASH_LABEL};
use super::informer::{self, Change};
use super::podutil::{self, key_of, split_key};
use super::queue::WorkQueue;
use super::rollout;
use super::worker::{run_workers, Action};
use super::AbortOnDrop;
use crate::scheduler::filters;

/// The label with the DaemonSet's template generation (deprecated upstream, still set).
pub const TEMPLATE_GENERATION_LABEL: &str = "pod-template-generation";
/// The annotation the API server keeps the template generation in.
pub const TEMPLATE_GENERATION_ANNOTATION: &str = "deprecated.daemonset.template.generation";
/// The most pods created or deleted in one sync.
const BURST: usize = 250;
const MANAGER: &str = "daemonset-controller";

/// What can go wrong syncing a DaemonSet.
#[derive(Debug, thiserror::Error)]
pub enum DaemonSetError {
    #[error("cannot {action} for daemon set {key}")]
    Api {
        action: &'static str,
        key: String,
        #[source]
        source: kube::Error,
    },
    #[error("an informer of the daemonset controller stopped")]
    InformerStopped,
}

struct Ctx {
    client: Client,
    sets: Store<DaemonSet>,
    pods: Store<Pod>,
    nodes: Store<Node>,
    revisions: Store<ControllerRevision>,
    expectations: Expectations,
}

/// Runs the controller with `workers` concurrent syncs until an informer stops.
pub async fn run(client: Client, workers: usize) -> Result<(), DaemonSetError> {
    let queue = WorkQueue::new();
    let q = queue.clone();
    let (sets, sets_task) = informer::spawn(
        "daemonset-informer",
        Api::<DaemonSet>::all(client.clone()),
        watcher::Config::default(),
        move |c| match c {
            Change::Applied(s) | Change::Deleted(s) => q.add(key_of(s)),
            Change::Synced => {}
        },
    );
    let (q, for_pods) = (queue.clone(), sets.clone());
    let (pods, pods_task) = informer::spawn(
        "daemonset-pod-informer",
        Api::<Pod>::all(client.clone()),
        watcher::Config::default(),
        move |c| match c {
            Change::Applied(pod) | Change::Deleted(pod) => {
                let deleting = pod.metadata.deletion_timestamp.is_some();
                for key in podutil::owners_of(
                    &for_pods,
                    |d: &DaemonSet| d.spec.as_ref().map(|s| &s.selector),
                    &pod.metadata,
                    deleting,
                ) {
                    q.add(key);
                }
            }
            Change::Synced => {}
        },
    );
    let (q, for_nodes) = (queue.clone(), sets.clone());
    let (nodes, nodes_task) = informer::spawn(
        "daemonset-node-informer",
        Api::<Node>::all(client.clone()),
        watcher::Config::default(),
        move |c| match c {
            Change::Applied(_) | Change::Deleted(_) => {
                for ds in for_nodes.state() {
                    q.add(key_of(ds.as_ref()));
                }
            }
            Change::Synced => {}
        },
    );
    let (q, for_revs) = (queue.clone(), sets.clone());
    let (revisions, revs_task) = informer::spawn(
        "daemonset-revision-informer",
        Api::<ControllerRevision>::all(client.clone()),
        watcher::Config::default(),
        move |c| match c {
            Change::Applied(r) | Change::Deleted(r) => {
                for key in podutil::owners_of(
                    &for_revs,
                    |d: &DaemonSet| d.spec.as_ref().map(|s| &s.selector),
                    &r.metadata,
                    false,
                ) {
                    q.add(key);
                }
            }
            Change::Synced => {}
        },
    );
    let _guard = AbortOnDrop(vec![
        sets_task.abort_handle(),
        pods_task.abort_handle(),
        nodes_task.abort_handle(),
        revs_task.abort_handle(),
    ]);
    let ready = futures::future::join4(
        sets.wait_until_ready(),
        pods.wait_until_ready(),
        nodes.wait_until_ready(),
        revisions.wait_until_ready(),
    )
    .await;
    if ready.0.is_err() || ready.1.is_err() || ready.2.is_err() || ready.3.is_err() {
        return Err(DaemonSetError::InformerStopped);
    }
    let ctx = Arc::new(Ctx {
        client,
        sets,
        pods,
        nodes,
        revisions,
        expectations: Expectations::default(),
    });
    let workers = run_workers("daemonset", queue, workers, move |key| {
        let ctx = ctx.clone();
        async move { sync(&ctx, &key).await }
    });
    tokio::select! {
        _ = workers => {}
        _ = sets_task => {}
        _ = pods_task => {}
        _ = nodes_task => {}
        _ = revs_task => {}
    }
    Err(DaemonSetError::InformerStopped)
}

/// Adds the tolerations every daemon pod gets (upstream's list) unless already present.
pub fn add_default_tolerations(spec: &mut PodSpec) {
    let mut wanted = vec![
        ("node.kubernetes.io/not-ready", "NoExecute"),
        ("node.kubernetes.io/unreachable", "NoExecute"),
        ("node.kubernetes.io/disk-pressure", "NoSchedule"),
        ("node.kubernetes.io/memory-pressure", "NoSchedule"),
        ("node.kubernetes.io/pid-pressure", "NoSchedule"),
        ("node.kubernetes.io/unschedulable", "NoSchedule"),
    ];
    if spec.host_network == Some(true) {
        wanted.push(("node.kubernetes.io/network-unavailable", "NoSchedule"));
    }
    let tolerations = spec.tolerations.get_or_insert_with(Vec::new);
    for (key, effect) in wanted {
        let t = Toleration {
            key: Some(key.into()),
            operator: Some("Exists".into()),
            effect: Some(effect.into()),
            ..Default::default()
        };
        if !tolerations.contains(&t) {
            tolerations.push(t);
        }
    }
}

/// `affinity` with its required node affinity pinned to `node` by a matchFields requirement on
/// metadata.name (in every term, keeping their matchExpressions).
pub fn pin_to_node(affinity: Option<Affinity>, node: &str) -> Affinity {
    let pin = NodeSelectorRequirement {
        key: "metadata.name".into(),
        operator: "In".into(),
        values: Some(vec![node.into()]),
    };
    let mut affinity = affinity.unwrap_or_default();
    let na = affinity.node_affinity.get_or_insert_with(NodeAffinity::default);
    let required = na
        .required_during_scheduling_ignored_during_execution
        .get_or_insert_with(|| NodeSelector { node_selector_terms: vec![] });
    if required.node_selector_terms.is_empty() {
        required.node_selector_terms.push(NodeSelectorTerm::default());
    }
    for term in &mut required.node_selector_terms {
        term.match_fields = Some(vec![pin.clone()]);
    }
    affinity
}

/// The node a daemon pod is for: its spec.nodeName, else the node its affinity pins it to.
pub fn target_node(pod: &Pod) -> Option<String> {
    let spec = pod.spec.as_ref()?;
    if let Some(n) = spec.node_name.as_ref().filter(|n| !n.is_empty()) {
        return Some(n.clone());
    }
    let terms = &spec
        .affinity
        .as_ref()?
        .node_affinity
        .as_ref()?
        .required_during_scheduling_ignored_during_execution
        .as_ref()?
        .node_selector_terms;
    terms.iter().find_map(|t| {
        t.match_fields.iter().flatten().find_map(|r| {
            let values = r.values.as_deref().unwrap_or(&[]);
            (r.key == "metadata.name" && r.operator == "In" && values.len() == 1)
                .then(|| values[0].clone())
        })
    })
}

/// Whether a daemon pod from `spec` (default tolerations included) should be started on `node`,
/// and whether one already there may keep running.
pub fn placement(spec: &PodSpec, node: &Node) -> (bool, bool) {
    if let Some(n) = spec.node_name.as_deref().filter(|n| !n.is_empty()) {
        if Some(n) != node.metadata.name.as_deref() {
            return (false, false);
        }
    }
    if !filters::matches_node_selector_and_affinity(spec, node) {
        return (false, false);
    }
    let tolerations = spec.tolerations.as_deref().unwrap_or(&[]);
    let mut run = true;
    for taint in node.spec.as_ref().and_then(|s| s.taints.as_deref()).unwrap_or(&[]) {
        if filters::tolerated(taint, tolerations) {
            continue;
        }
        match taint.effect.as_str() {
            "NoExecute" => return (false, false),
            "NoSchedule" => run = false,
            _ => {}
        }
    }
    (run, true)
}

/// A pod of `ds` for `node`, labelled with the revision `hash`.
pub fn new_pod(ds: &DaemonSet, node: &str, hash: &str) -> Pod {
    let template = ds.spec.as_ref().map(|s| s.template.clone()).unwrap_or_default();
    let tmeta = template.metadata.unwrap_or_default();
    let mut labels = tmeta.labels.unwrap_or_default();
    labels.insert(CONTROLLER_REVISION_HASH_LABEL.into(), hash.into());
    if let Some(g) = ds.annotations().get(TEMPLATE_GENERATION_ANNOTATION) {
        labels.insert(TEMPLATE_GENERATION_LABEL.into(), g.clone());
    }
    let mut spec = template.spec.unwrap_or_default();
    add_default_tolerations(&mut spec);
    spec.affinity = Some(pin_to_node(spec.affinity.take(), node));
    let mut prefix = format!("{}-", ds.name_any());
    if prefix.len() > 58 {
        prefix.truncate(57);
        prefix.push('-');
    }
    Pod {
        metadata: ObjectMeta {
            generate_name: Some(prefix),
            namespace: ds.namespace(),
            labels: Some(labels),
            annotations: tmeta.annotations,
            finalizers: tmeta.finalizers,
            owner_references: Some(vec![podutil::controller_ref(ds)]),
            ..Default::default()
        },
        spec: Some(spec),
        status: None,
    }
}

fn phase(pod: &Pod) -> &str {
    pod.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("")
}

fn terminating(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_some()
}

fn hash_of_pod(pod: &Pod) -> &str {
    pod.labels().get(CONTROLLER_REVISION_HASH_LABEL).map(String::as_str).unwrap_or("")
}

fn by_age(pods: &mut [Arc<Pod>]) {
    pods.sort_by_key(|p| (p.metadata.creation_timestamp.as_ref().map(|t| t.0), p.name_any()));
}

/// One node's facts for a sync.
struct NodeView {
    name: String,
    should_run: bool,
    may_continue: bool,
    /// The daemon pods for the node, oldest first.
    pods: Vec<Arc<Pod>>,
}

/// One sync's view of a daemon set.
struct View<'a> {
    ctx: &'a Ctx,
    key: &'a str,
    ds: Arc<DaemonSet>,
    pods_api: Api<Pod>,
    hash: String,
    nodes: Vec<NodeView>,
    min_ready: i32,
}

impl View<'_> {
    fn err(&self, action: &'static str) -> impl FnOnce(kube::Error) -> DaemonSetError {
        let key = self.key.to_string();
        move |source| DaemonSetError::Api { action, key, source }
    }

    fn spec(&self) -> &DaemonSetSpec {
        self.ds.spec.as_ref().expect("synced daemon sets have a spec")
    }
}

async fn sync(ctx: &Ctx, key: &str) -> Result<Action, DaemonSetError> {
    let (ns, name) = split_key(key);
    let ns = ns.unwrap_or("default");
    let Some(ds) = ctx.sets.get(&ObjectRef::new(name).within(ns)) else {
        ctx.expectations.clear(key);
        return Ok(Action::Done);
    };
    let Some(spec) = ds.spec.as_ref() else { return Ok(Action::Done) };
    if podutil::selector_is_empty(&spec.selector) {
        return Ok(Action::Done);
    }
    let err = |action: &'static str| {
        let key = key.to_string();
        move |source| DaemonSetError::Api { action, key, source }
    };
    let pods_api: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);
    let revs_api: Api<ControllerRevision> = Api::namespaced(ctx.client.clone(), ns);
    let pods = history::claim_pods(&pods_api, &ctx.pods, ds.as_ref(), &spec.selector, |_| true)
        .await
        .map_err(err("claim pods"))?;
    let revisions = history::claim(&revs_api, &ctx.revisions, ds.as_ref(), &spec.selector)
        .await
        .map_err(err("claim revisions"))?;

    // The current revision: the one holding this template, numbered last.
    let mut collision = ds.status.as_ref().and_then(|s| s.collision_count).unwrap_or(0);
    let data = history::template_patch(&spec.template);
    let next = history::next_number(&revisions);
    let current = match revisions.iter().rposition(|r| history::same_data(r, &data)) {
        Some(i) if i + 1 == revisions.len() => revisions[i].clone(),
        Some(i) => history::renumber(&revs_api, &revisions[i], next)
            .await
            .map_err(err("renumber a revision"))?,
        None => {
            let labels = spec.template.metadata.as_ref().and_then(|m| m.labels.clone());
            let rev = history::new_revision(
                ds.as_ref(),
                &labels.unwrap_or_default(),
                BTreeMap::new(),
                data.clone(),
                next,
                Some(collision),
            );
            history::create(&revs_api, ds.as_ref(), rev, &mut collision)
                .await
                .map_err(err("create a revision"))?
                .0
        }
    };
    let hash = match history::hash_label(&current) {
        "" => history::hash_of(&data, Some(collision)),
        h => h.to_string(),
    };

    // Pods by the node they are for; nodes with their placement.
    let mut by_node: BTreeMap<String, Vec<Arc<Pod>>> = BTreeMap::new();
    let mut orphaned = vec![];
    for p in &pods {
        match target_node(p) {
            Some(n) => by_node.entry(n).or_default().push(p.clone()),
            None => orphaned.push(p.clone()),
        }
    }
    let mut template_spec = spec.template.spec.clone().unwrap_or_default();
    add_default_tolerations(&mut template_spec);
    let mut nodes = vec![];
    for node in ctx.nodes.state() {
        let name = node.name_any();
        let (should_run, may_continue) = placement(&template_spec, &node);
        let mut here = by_node.remove(&name).unwrap_or_default();
        by_age(&mut here);
        nodes.push(NodeView { name, should_run, may_continue, pods: here });
    }
    nodes.sort_by(|a, b| a.name.cmp(&b.name));
    // Pods for nodes that are gone: unscheduled ones are deleted here (bound ones are the pod
    // garbage collector's).
    orphaned.extend(by_node.into_values().flatten().filter(|p| {
        p.spec.as_ref().and_then(|s| s.node_name.as_deref()).is_none_or(|n| n.is_empty())
    }));

    let view = View {
        ctx,
        key,
        ds: ds.clone(),
        pods_api,
        hash,
        nodes,
        min_ready: spec.min_ready_seconds.unwrap_or(0),
    };
    let mut requeue = None;
    let satisfied = ctx.expectations.satisfied(
        key,
        |n| ctx.pods.get(&ObjectRef::new(n).within(ns)).is_some(),
        |u| !pods.iter().any(|p| p.metadata.uid.as_deref() == Some(u) && !terminating(p)),
    );
    if satisfied && ds.metadata.deletion_timestamp.is_none() {
        let (mut create, mut delete) = manage(&view);
        delete.extend(orphaned.iter().filter(|p| !terminating(p)).cloned());
        let rolling =
            spec.update_strategy.as_ref().and_then(|s| s.type_.as_deref()) != Some("OnDelete");
        if rolling {
            let (c, d, r) = rolling_update(&view);
            create.extend(c);
            delete.extend(d);
            requeue = r;
        }
        create.sort();
        create.dedup();
        let mut seen = std::collections::HashSet::new();
        delete.retain(|p| seen.insert(p.metadata.uid.clone()));
        sync_nodes(&view, create, delete).await?;
    }
    let status_requeue = write_status(&view, collision).await?;
    requeue = match (requeue, status_requeue) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };

    let limit = spec.revision_history_limit.unwrap_or(10).max(0) as usize;
    let current_name = current.name_any();
    let live = |r: &ControllerRevision| {
        r.name_any() == current_name || {
            let h = history::hash_label(r);
            !h.is_empty() && pods.iter().any(|p| hash_of_pod(p) == h)
        }
    };
    history::truncate(&revs_api, &revisions, &live, limit)
        .await
        .map_err(err("delete old revisions"))?;
    Ok(requeue.map_or(Action::Done, Action::RequeueAfter))
}

/// Which nodes need a pod and which pods must go, apart from updates.
fn manage(view: &View<'_>) -> (Vec<String>, Vec<Arc<Pod>>) {
    let surge = surge_and_unavailable(view).0 > 0;
    let (mut create, mut delete) = (vec![], vec![]);
    for node in &view.nodes {
        if node.should_run && node.pods.is_empty() {
            create.push(node.name.clone());
            continue;
        }
        if !node.may_continue {
            delete.extend(node.pods.iter().filter(|p| !terminating(p)).cloned());
            continue;
        }
        let mut running = vec![];
        for p in node.pods.iter().filter(|p| !terminating(p)) {
            if matches!(phase(p), "Failed" | "Succeeded") {
                tracing::info!(daemonset = %view.key, pod = %p.name_any(), node = %node.name, "deleting finished daemon pod");
                delete.push(p.clone());
            } else {
                running.push(p.clone());
            }
        }
        if !surge {
            // One pod per node: the oldest stays.
            delete.extend(running.iter().skip(1).cloned());
            continue;
        }
        if running.is_empty() {
            if node.should_run {
                create.push(node.name.clone());
            }
            continue;
        }
        // Surging: an old and a new pod may overlap until the new one is ready.
        let (mut newest, mut oldest_old) = (None, None);
        for p in &running {
            let slot = if hash_of_pod(p) == view.hash { &mut newest } else { &mut oldest_old };
            if slot.is_none() {
                *slot = Some(p.clone());
            } else {
                delete.push(p.clone());
            }
        }
        if let (Some(new), Some(old)) = (&newest, &oldest_old) {
            if !podutil::is_ready(old) || podutil::is_ready(new) {
                delete.push(old.clone());
            }
        }
    }
    (create, delete)
}

/// maxSurge and maxUnavailable against the number of nodes that should run a pod (percentages
/// round up; unavailable is at least 1 when both are 0).
fn surge_and_unavailable(view: &View<'_>) -> (i32, i32) {
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
fn rolling_update(view: &View<'_>) -> (Vec<String>, Vec<Arc<Pod>>, Option<Duration>) {
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

/// Creates pods for `create` (slow start: 1, 2, 4, ...) and deletes `delete`.
async fn sync_nodes(
    view: &View<'_>,
    create: Vec<String>,
    delete: Vec<Arc<Pod>>,
) -> Result<(), DaemonSetError> {
    let ctx = view.ctx;
    let delete: Vec<Arc<Pod>> = delete.into_iter().take(BURST).collect();
    if !delete.is_empty() {
        ctx.expectations.expect_deletions(
            view.key,
            delete.iter().filter_map(|p| p.metadata.uid.clone()).collect(),
        );
        let results = join_all(delete.iter().map(|p| {
            let dp = DeleteParams {
                preconditions: Some(Preconditions {
                    uid: p.metadata.uid.clone(),
                    resource_version: None,
                }),
                ..Default::default()
            };
            let name = p.name_any();
            async move { view.pods_api.delete(&name, &dp).await }
        }))
        .await;
        for r in results {
            match r {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
                Err(e) => {
                    ctx.expectations.clear(view.key);
                    return Err(view.err("delete pods")(e));
                }
            }
        }
        tracing::debug!(daemonset = %view.key, deleted = delete.len(), "deleted daemon pods");
    }
    let mut remaining: Vec<String> = create.into_iter().take(BURST).collect();
    let mut batch = 1usize;
    while !remaining.is_empty() {
        let now: Vec<String> = remaining.drain(..batch.min(remaining.len())).collect();
        let pp = PostParams::default();
        let results = join_all(now.iter().map(|node| {
            let pod = new_pod(&view.ds, node, &view.hash);
            let pp = &pp;
            async move { view.pods_api.create(pp, &pod).await }
        }))
        .await;
        let mut created = vec![];
        let mut failure = None;
        for r in results {
            match r {
                Ok(p) => created.push(p.name_any()),
                Err(e) => failure = Some(e),
            }
        }
        tracing::debug!(daemonset = %view.key, created = created.len(), "created daemon pods");
        ctx.expectations.expect_creations(view.key, created);
        if let Some(e) = failure {
            if matches!(&e, kube::Error::Api(ae) if ae.code == 403 && ae.message.contains("being terminated"))
            {
                return Ok(());
            }
            return Err(view.err("create pods")(e));
        }
        batch *= 2;
    }
    Ok(())
}

/// Counts nodes and pods into status and writes it if it changed.
async fn write_status(view: &View<'_>, collision: i32) -> Result<Option<Duration>, DaemonSetError> {
    let ds = &view.ds;
    let now = Utc::now();
    let (mut desired, mut current, mut ready, mut available, mut updated, mut misscheduled) =
        (0, 0, 0, 0, 0, 0);
    let mut requeue = None;
    for node in &view.nodes {
        let first = node.pods.iter().find(|p| !terminating(p));
        if !node.should_run {
            if first.is_some() {
                misscheduled += 1;
            }
            continue;
        }
        desired += 1;
        let Some(pod) = first else { continue };
        current += 1;
        if podutil::is_ready(pod) {
            ready += 1;
            if podutil::is_available(pod, view.min_ready, now) {
                available += 1;
            } else {
                requeue = Some(Duration::from_secs(view.min_ready.max(1) as u64));
            }
        }
        let generation = ds.annotations().get(TEMPLATE_GENERATION_ANNOTATION);
        if hash_of_pod(pod) == view.hash
            || generation.is_some_and(|g| pod.labels().get(TEMPLATE_GENERATION_LABEL) == Some(g))
        {
            updated += 1;
        }
    }
    let old = ds.status.clone().unwrap_or_default();
    let unavailable = desired - available;
    let changed = (
        old.desired_number_scheduled,
        old.current_number_scheduled,
        old.number_ready,
        old.number_available.unwrap_or(0),
        old.number_unavailable.unwrap_or(0),
        old.updated_number_scheduled.unwrap_or(0),
        old.number_misscheduled,
        old.observed_generation,
        old.collision_count.unwrap_or(0),
    ) != (
        desired,
        current,
        ready,
        available,
        unavailable,
        updated,
        misscheduled,
        ds.metadata.generation,
        collision,
    );
    if changed {
        let api: Api<DaemonSet> =
            Api::namespaced(view.ctx.client.clone(), &ds.namespace().unwrap_or_default());
        let nz = |n: i32| (n > 0).then_some(n);
        let patch = json!({"status": {
            "observedGeneration": ds.metadata.generation,
            "desiredNumberScheduled": desired,
            "currentNumberScheduled": current,
            "numberReady": ready,
            "numberAvailable": nz(available),
            "numberUnavailable": nz(unavailable),
            "updatedNumberScheduled": nz(updated),
            "numberMisscheduled": misscheduled,
            "collisionCount": nz(collision),
        }});
        let pp = PatchParams { field_manager: Some(MANAGER.into()), ..Default::default() };
        match api.patch_status(&ds.name_any(), &pp, &Patch::Merge(&patch)).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(view.err("update status")(e)),
        }
    }
    Ok(requeue)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, labels: serde_json::Value, taints: serde_json::Value) -> Node {
        serde_json::from_value(json!({
            "metadata": {"name": name, "labels": labels},
            "spec": {"taints": taints},
        }))
        .unwrap()
    }

    #[test]
    fn placement_follows_selectors_and_taints() {
        let mut spec: PodSpec = serde_json::from_value(json!({
            "containers": [{"name": "c", "image": "i"}],
            "nodeSelector": {"role": "edge"},
        }))
        .unwrap();
        add_default_tolerations(&mut spec);
        let plain = node("a", json!({"role": "edge"}), json!([]));
        assert_eq!(placement(&spec, &plain), (true, true));
        let other = node("b", json!({"role": "core"}), json!([]));
        assert_eq!(placement(&spec, &other), (false, false));
        let no_schedule =
            node("c", json!({"role": "edge"}), json!([{"key": "k", "effect": "NoSchedule"}]));
        assert_eq!(placement(&spec, &no_schedule), (false, true));
        let no_execute =
            node("d", json!({"role": "edge"}), json!([{"key": "k", "effect": "NoExecute"}]));
        assert_eq!(placement(&spec, &no_execute), (false, false));
        let cordoned = node(
            "e",
            json!({"role": "edge"}),
            json!([{"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"}]),
        );
        assert_eq!(placement(&spec, &cordoned), (true, true), "daemon pods tolerate cordons");
    }

    #[test]
    fn pods_are_pinned_to_their_node() {
        let ds: DaemonSet = serde_json::from_value(json!({
            "metadata": {"name": "agent", "namespace": "kube-system", "uid": "u"},
            "spec": {
                "selector": {"matchLabels": {"app": "agent"}},
                "template": {"metadata": {"labels": {"app": "agent"}},
                    "spec": {"hostNetwork": true, "containers": [{"name": "c", "image": "i"}]}},
            },
        }))
        .unwrap();
        let pod = new_pod(&ds, "n1", "abc");
        assert_eq!(target_node(&pod).as_deref(), Some("n1"));
        assert_eq!(pod.metadata.labels.as_ref().unwrap()[CONTROLLER_REVISION_HASH_LABEL], "abc");
        let tolerations = pod.spec.as_ref().unwrap().tolerations.clone().unwrap();
        assert_eq!(tolerations.len(), 7, "{tolerations:?}");
        let again = pin_to_node(pod.spec.unwrap().affinity, "n2");
        let terms =
            again.node_affinity.unwrap().required_during_scheduling_ignored_during_execution;
        assert_eq!(terms.unwrap().node_selector_terms.len(), 1);
    }
}
