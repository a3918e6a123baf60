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
use k8s_openapi::api::apps::v1::{ControllerRevision, DaemonSet, DaemonSetSpec};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Patch, PatchParams};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Api, Client, ResourceExt};
use serde_json::json;

use super::events::record;
use super::expectations::Expectations;
use super::history::{self, CONTROLLER_REVISION_HASH_LABEL};
use super::informer::Change;
use super::informers::{Informers, StoreReady};
use super::podcontrol::PodControl;
use super::podutil::{self, key_of, split_key};
use super::queue::WorkQueue;
use super::recheck::OwnerRecheck;
use super::worker::{run_workers, Action};
use super::AbortOnDrop;

mod placement;
mod update;

pub use placement::{add_default_tolerations, new_pod, pin_to_node, placement, target_node};
use update::{rolling_update, surge_and_unavailable};

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
pub async fn run(
    client: Client,
    informers: Informers,
    workers: usize,
) -> Result<(), DaemonSetError> {
    let queue = WorkQueue::new();
    let q = queue.clone();
    let (sets, sets_task) = informers.spawn(
        "daemonset-informer",
        Api::<DaemonSet>::all(client.clone()),
        watcher::Config::default(),
        move |c| match c {
            Change::Applied(s) | Change::Deleted(s) => q.add(key_of(s)),
            Change::Synced => {}
        },
    );
    let (q, for_pods) = (queue.clone(), sets.clone());
    let (pods, pods_task) = informers.spawn(
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
    let (nodes, nodes_task) = informers.spawn(
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
    let (revisions, revs_task) = informers.spawn(
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
    let ready =
        futures::future::join4(sets.ready(), pods.ready(), nodes.ready(), revisions.ready()).await;
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
    /// Records an event on the daemon set, as upstream's daemonset-controller does.
    fn event(&self, warning: bool, reason: &str, message: String) {
        record(&self.ctx.client, MANAGER, self.ds.as_ref(), warning, reason, message);
    }

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
    let mut recheck = OwnerRecheck::new(ctx.client.clone(), ds.as_ref());
    let pods = history::claim_pods(
        &pods_api,
        &ctx.pods,
        ds.as_ref(),
        &mut recheck,
        &spec.selector,
        |_| true,
    )
    .await
    .map_err(err("claim pods"))?;
    let revisions =
        history::claim(&revs_api, &ctx.revisions, ds.as_ref(), &mut recheck, &spec.selector)
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
                if phase(p) == "Failed" {
                    let message = format!(
                        "Found failed daemon pod {}/{} on node {}, will try to kill it",
                        p.namespace().unwrap_or_default(),
                        p.name_any(),
                        node.name
                    );
                    view.event(true, "FailedDaemonPod", message);
                }
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

/// Creates pods for `create` (slow start: 1, 2, 4, ...) and deletes `delete`.
async fn sync_nodes(
    view: &View<'_>,
    create: Vec<String>,
    delete: Vec<Arc<Pod>>,
) -> Result<(), DaemonSetError> {
    let ctx = view.ctx;
    let control = PodControl {
        client: &ctx.client,
        component: MANAGER,
        owner: view.ds.as_ref(),
        api: &view.pods_api,
        expectations: &ctx.expectations,
        key: view.key,
    };
    let delete = delete.iter().take(BURST).map(|p| p.as_ref());
    control.delete(delete).await.map_err(view.err("delete pods"))?;
    let pods = create.iter().take(BURST).map(|node| new_pod(&view.ds, node, &view.hash)).collect();
    control.create(pods).await.map_err(view.err("create pods"))?;
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
