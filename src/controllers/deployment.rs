//! The Deployment controller, as upstream's: one ReplicaSet per pod template (named by the
//! template's pod-template-hash), rolled between with the RollingUpdate (maxSurge /
//! maxUnavailable) or Recreate strategy. A paused deployment rolls nothing out but still scales;
//! a scaling event while several ReplicaSets are active is shared out among them in proportion
//! to their size (the desired-replicas and max-replicas annotations say what each was sized
//! for). Revisions live in the deployment.kubernetes.io/revision annotation: a rollback (kubectl
//! rollout undo puts an old template back) makes the old ReplicaSet current again with the next
//! revision, its earlier ones kept in revision-history. Old ReplicaSets beyond
//! revisionHistoryLimit are deleted. Every scaling is a ScalingReplicaSet event on the
//! deployment. Status and the Available / Progressing conditions are in [`status`]; the
//! arithmetic is in [`super::rollout`].

mod status;

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentCondition, ReplicaSet};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Api, Client, ResourceExt};
use serde_json::json;

use super::events;
use super::informer::Change;
use super::informers::{Informers, StoreReady};
use super::ownerindex::{lookup, OwnerIndex};
use super::podutil::{self, controller_of, key_of, selector_matches, split_key};
use super::queue::WorkQueue;
use super::recheck::OwnerRecheck;
use super::rollout::{self, Share, POD_TEMPLATE_HASH_LABEL};
pub use super::rollout::{
    DESIRED_REPLICAS_ANNOTATION, MAX_REPLICAS_ANNOTATION, REVISION_ANNOTATION,
    REVISION_HISTORY_ANNOTATION,
};
use super::worker::{run_workers, Action};
use super::AbortOnDrop;

const MANAGER: &str = "deployment-controller";

/// What can go wrong syncing a Deployment.
#[derive(Debug, thiserror::Error)]
pub enum DeploymentError {
    #[error("cannot {action} for deployment {key}")]
    Api {
        action: &'static str,
        key: String,
        #[source]
        source: kube::Error,
    },
    #[error("replica set {name} exists with another template; collision count raised")]
    HashCollision { name: String },
    #[error("replica set {name} changed since it was read; retrying")]
    Conflict { name: String },
    #[error("replica set {name} has more available replicas than it wants; waiting for it to scale down")]
    ScaleDownPending { name: String },
    #[error("an informer of the deployment controller stopped")]
    InformerStopped,
}

struct Ctx {
    client: Client,
    deployments: Store<Deployment>,
    sets: Store<ReplicaSet>,
    /// The replica sets by controller, and the orphans by namespace.
    index: OwnerIndex<ReplicaSet>,
}

/// Runs the controller until an informer stops.
pub async fn run(
    client: Client,
    informers: Informers,
    workers: usize,
) -> Result<(), DeploymentError> {
    let queue = WorkQueue::new();
    let q = queue.clone();
    let (deployments, d_task) = informers.spawn(
        "deployment-informer",
        Api::<Deployment>::all(client.clone()),
        watcher::Config::default(),
        move |c| match c {
            Change::Applied(d) | Change::Deleted(d) => q.add(key_of(d)),
            Change::Synced => {}
        },
    );
    let (q, ds) = (queue.clone(), deployments.clone());
    let index = OwnerIndex::default();
    let idx = index.clone();
    let (sets, rs_task) = informers.spawn(
        "deployment-replicaset-informer",
        Api::<ReplicaSet>::all(client.clone()),
        watcher::Config::default(),
        move |c| {
            idx.observe(&c);
            if let Change::Applied(rs) | Change::Deleted(rs) = c {
                queue_owners(&q, &ds, rs);
            }
        },
    );
    let _guard = AbortOnDrop(vec![d_task.abort_handle(), rs_task.abort_handle()]);
    let ready = futures::future::join(deployments.ready(), sets.ready()).await;
    if ready.0.is_err() || ready.1.is_err() {
        return Err(DeploymentError::InformerStopped);
    }
    let ctx = Arc::new(Ctx { client, deployments, sets, index });
    let workers = run_workers("deployment", queue, workers, move |key| {
        let ctx = ctx.clone();
        async move { sync(&ctx, &key).await }
    });
    tokio::select! {
        _ = workers => {}
        _ = d_task => {}
        _ = rs_task => {}
    }
    Err(DeploymentError::InformerStopped)
}

/// Queues the deployment controlling `rs` or, for an orphan, every deployment of its namespace
/// whose selector matches it.
fn queue_owners(q: &WorkQueue, ds: &Store<Deployment>, rs: &ReplicaSet) {
    let ns = rs.namespace().unwrap_or_default();
    match controller_of(&rs.metadata) {
        Some(o) if o.kind == "Deployment" => q.add(format!("{ns}/{}", o.name)),
        Some(_) => {}
        None => {
            for d in ds.state() {
                let sel = d.spec.as_ref().map(|s| &s.selector);
                if d.namespace().as_deref() == Some(ns.as_str())
                    && sel.is_some_and(|s| {
                        !podutil::selector_is_empty(s) && selector_matches(s, rs.labels())
                    })
                {
                    q.add(key_of(d.as_ref()));
                }
            }
        }
    }
}

/// One sync's view of a deployment and its replica sets.
struct View<'a> {
    ctx: &'a Ctx,
    key: &'a str,
    d: Arc<Deployment>,
    rs_api: Api<ReplicaSet>,
    /// The deployment's ReplicaSets, oldest first (creation time, then name).
    sets: Vec<ReplicaSet>,
    /// Which of them runs the current template.
    new: Option<usize>,
    /// The deployment's conditions as this sync has set them so far.
    conditions: Vec<DeploymentCondition>,
}

impl View<'_> {
    fn err(&self, action: &'static str) -> impl FnOnce(kube::Error) -> DeploymentError {
        let key = self.key.to_string();
        move |source| DeploymentError::Api { action, key, source }
    }

    fn replicas(&self) -> i32 {
        self.d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1).max(0)
    }

    fn surge(&self) -> i32 {
        rollout::surge_and_unavailable(&self.d).0
    }

    fn max_unavailable(&self) -> i32 {
        rollout::surge_and_unavailable(&self.d).1
    }

    fn paused(&self) -> bool {
        self.d.spec.as_ref().and_then(|s| s.paused).unwrap_or(false)
    }

    fn recreate(&self) -> bool {
        let strategy = self.d.spec.as_ref().and_then(|s| s.strategy.as_ref());
        strategy.and_then(|s| s.type_.as_deref()) == Some("Recreate")
    }

    fn new_rs(&self) -> Option<&ReplicaSet> {
        self.new.map(|i| &self.sets[i])
    }

    /// Indices of the old ReplicaSets, oldest first.
    fn old(&self) -> Vec<usize> {
        (0..self.sets.len()).filter(|i| Some(*i) != self.new).collect()
    }

    fn all(&self) -> impl Iterator<Item = &ReplicaSet> {
        self.sets.iter()
    }

    fn event(&self, reason: &str, message: String) {
        events::record(&self.ctx.client, MANAGER, self.d.as_ref(), false, reason, message);
    }
}

fn spec_replicas(rs: &ReplicaSet) -> i32 {
    rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0)
}

fn available(rs: &ReplicaSet) -> i32 {
    rs.status.as_ref().and_then(|s| s.available_replicas).unwrap_or(0)
}

fn revision_of(rs: &ReplicaSet) -> i64 {
    rs.annotations().get(REVISION_ANNOTATION).and_then(|r| r.parse().ok()).unwrap_or(0)
}

fn annotation_i32(rs: &ReplicaSet, name: &str) -> Option<i32> {
    rs.annotations().get(name).and_then(|v| v.parse().ok())
}

async fn sync(ctx: &Ctx, key: &str) -> Result<Action, DeploymentError> {
    let (ns, name) = split_key(key);
    let ns = ns.unwrap_or("default");
    let Some(d) = ctx.deployments.get(&ObjectRef::new(name).within(ns)) else {
        return Ok(Action::Done);
    };
    let Some(spec) = d.spec.as_ref() else { return Ok(Action::Done) };
    if podutil::selector_is_empty(&spec.selector) {
        return Ok(Action::Done);
    }
    let rs_api: Api<ReplicaSet> = Api::namespaced(ctx.client.clone(), ns);
    let conditions = d.status.as_ref().and_then(|s| s.conditions.clone()).unwrap_or_default();
    let mut view = View { ctx, key, d: d.clone(), rs_api, sets: vec![], new: None, conditions };
    claim(&mut view).await?;
    if d.metadata.deletion_timestamp.is_some() {
        sync_new_rs(&mut view, false).await?;
        return status::sync_status(&view, false).await;
    }
    status::check_paused_conditions(&mut view).await?;
    sync_new_rs(&mut view, false).await?;
    if view.paused() || is_scaling_event(&view) {
        scale(&mut view).await?;
        if view.paused() {
            cleanup(&view).await?;
        }
        return status::sync_status(&view, false).await;
    }
    if view.recreate() {
        rollout_recreate(&mut view).await
    } else {
        rollout_rolling(&mut view).await
    }
}

/// Sorts the deployment's ReplicaSets, adopting orphans whose labels match and releasing owned
/// sets that no longer match, and finds the one of the current template.
async fn claim(view: &mut View<'_>) -> Result<(), DeploymentError> {
    let d = view.d.clone();
    let Some(spec) = d.spec.as_ref() else { return Ok(()) };
    let uid = d.uid().unwrap_or_default();
    let ns = d.namespace().unwrap_or_default();
    let mut recheck = OwnerRecheck::new(view.ctx.client.clone(), d.as_ref());
    let mut mine = vec![];
    for rs in lookup(&view.ctx.sets, &view.ctx.index.claimable(&ns, &uid)) {
        let matches = selector_matches(&spec.selector, rs.labels());
        match controller_of(&rs.metadata) {
            Some(o) if o.uid == uid => {
                if matches {
                    mine.push((*rs).clone());
                } else {
                    let patch = json!({"metadata": {"ownerReferences": [{"$patch": "delete", "uid": uid}]}});
                    patch_rs(
                        view,
                        &rs.name_any(),
                        &Patch::Strategic(patch),
                        "release a replica set",
                    )
                    .await?;
                }
            }
            None if matches && d.metadata.deletion_timestamp.is_none() => {
                if !recheck.may_adopt().await.map_err(view.err("read the deployment"))? {
                    continue;
                }
                let patch = json!({"metadata": {
                    "ownerReferences": [podutil::controller_ref(d.as_ref())],
                    "uid": rs.metadata.uid,
                }});
                if let Some(adopted) =
                    patch_rs(view, &rs.name_any(), &Patch::Strategic(patch), "adopt a replica set")
                        .await?
                {
                    mine.push(adopted);
                }
            }
            _ => {}
        }
    }
    mine.sort_by_key(|rs| {
        (rs.metadata.creation_timestamp.as_ref().map(podutil::time_of), rs.name_any())
    });
    let template = &spec.template;
    view.new = mine.iter().position(|rs| rollout::same_template(template, rs));
    view.sets = mine;
    Ok(())
}

/// Patches a ReplicaSet; None if it is gone or changed meanwhile.
async fn patch_rs(
    view: &View<'_>,
    name: &str,
    patch: &Patch<serde_json::Value>,
    action: &'static str,
) -> Result<Option<ReplicaSet>, DeploymentError> {
    let pp = PatchParams { field_manager: Some(MANAGER.into()), ..Default::default() };
    match view.rs_api.patch(name, &pp, patch).await {
        Ok(rs) => Ok(Some(rs)),
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => Ok(None),
        Err(e) => Err(view.err(action)(e)),
    }
}

/// Merge-patches ReplicaSet `i` on the condition that it is still what this sync read, and
/// keeps the view's copy current. False if it is gone.
async fn update_rs(
    view: &mut View<'_>,
    i: usize,
    mut patch: serde_json::Value,
    action: &'static str,
) -> Result<bool, DeploymentError> {
    let name = view.sets[i].name_any();
    patch["metadata"]["resourceVersion"] = json!(view.sets[i].metadata.resource_version);
    let pp = PatchParams { field_manager: Some(MANAGER.into()), ..Default::default() };
    match view.rs_api.patch(&name, &pp, &Patch::Merge(patch)).await {
        Ok(rs) => {
            view.sets[i] = rs;
            Ok(true)
        }
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(false),
        Err(kube::Error::Api(e)) if e.code == 409 => Err(DeploymentError::Conflict { name }),
        Err(e) => Err(view.err(action)(e)),
    }
}

/// Finds the ReplicaSet of the current template and brings its annotations (revision above
/// every old one, revision-history, the deployment's own annotations) and minReadySeconds up to
/// date; creates it when `create` and there is none. The deployment then carries its revision.
async fn sync_new_rs(view: &mut View<'_>, create: bool) -> Result<(), DeploymentError> {
    let d = view.d.clone();
    let revision =
        view.old().into_iter().map(|i| revision_of(&view.sets[i])).max().unwrap_or(0) + 1;
    let min_ready = d.spec.as_ref().and_then(|s| s.min_ready_seconds).unwrap_or(0);
    if let Some(i) = view.new {
        let rs = &view.sets[i];
        let before = rs.annotations().clone();
        let mut annotations = before.clone();
        let changed =
            rollout::sync_new_rs_annotations(d.annotations(), &mut annotations, revision, None);
        let min_ready_changed =
            rs.spec.as_ref().and_then(|s| s.min_ready_seconds).unwrap_or(0) != min_ready;
        if changed || min_ready_changed {
            let changes: BTreeMap<&String, &String> =
                annotations.iter().filter(|(k, v)| before.get(*k) != Some(*v)).collect();
            if before.get(REVISION_ANNOTATION) != annotations.get(REVISION_ANNOTATION) {
                tracing::info!(deployment = %view.key, replicaset = %rs.name_any(), revision, "replica set of the current template gets the next revision");
            }
            let patch = json!({
                "metadata": {"annotations": changes},
                "spec": {"minReadySeconds": min_ready},
            });
            update_rs(view, i, patch, "update the new replica set's annotations").await?;
        }
        let rs = &view.sets[i];
        let name = rs.name_any();
        let current = rs.annotations().get(REVISION_ANNOTATION).cloned().unwrap_or_default();
        set_deployment_revision(view, &current).await?;
        if status::progress_deadline(&d).is_some()
            && status::progressing(&view.conditions).is_none()
        {
            status::set_condition(
                &mut view.conditions,
                "Progressing",
                "True",
                "FoundNewReplicaSet",
                &format!("Found new replica set \"{name}\""),
            );
        }
        return Ok(());
    }
    if !create {
        return Ok(());
    }
    let collision = d.status.as_ref().and_then(|s| s.collision_count);
    let template = d.spec.as_ref().map(|s| s.template.clone()).unwrap_or_default();
    let hash = rollout::pod_template_hash(&template, collision);
    let name = format!("{}-{hash}", d.name_any());
    let replicas = view.replicas();
    let total: i32 = view.all().map(spec_replicas).sum();
    let initial = if view.recreate() {
        replicas
    } else {
        rollout::new_rs_scale_up(replicas, view.surge(), total, 0)
    };
    let rs = new_replica_set(&d, &name, &hash, initial, revision, view.surge());
    let (created, fresh) = match view.rs_api.create(&PostParams::default(), &rs).await {
        Ok(rs) => (rs, true),
        Err(kube::Error::Api(e)) if e.code == 409 => {
            let existing =
                view.rs_api.get_opt(&name).await.map_err(view.err("get a replica set"))?;
            match existing {
                Some(rs)
                    if controller_of(&rs.metadata)
                        .is_some_and(|o| Some(&o.uid) == d.metadata.uid.as_ref())
                        && rollout::same_template(&template, &rs) =>
                {
                    (rs, false)
                }
                _ => {
                    let count = collision.unwrap_or(0).saturating_add(1);
                    let patch = json!({"status": {"collisionCount": count}});
                    let api: Api<Deployment> = Api::namespaced(
                        view.ctx.client.clone(),
                        &d.namespace().unwrap_or_default(),
                    );
                    api.patch_status(&d.name_any(), &PatchParams::default(), &Patch::Merge(&patch))
                        .await
                        .map_err(view.err("raise the collision count"))?;
                    return Err(DeploymentError::HashCollision { name });
                }
            }
        }
        Err(e) => return Err(view.err("create a replica set")(e)),
    };
    if fresh {
        tracing::info!(deployment = %view.key, replicaset = %name, revision, replicas = initial, "created new replica set");
        if initial > 0 {
            view.event(
                "ScalingReplicaSet",
                format!("Scaled up replica set {name} from 0 to {initial}"),
            );
        }
        if status::progress_deadline(&d).is_some() {
            status::set_condition(
                &mut view.conditions,
                "Progressing",
                "True",
                "NewReplicaSetCreated",
                &format!("Created new replica set \"{name}\""),
            );
        }
    }
    view.sets.push(created);
    view.new = Some(view.sets.len() - 1);
    set_deployment_revision(view, &revision.to_string()).await
}

/// Writes the deployment's revision annotation if it differs.
async fn set_deployment_revision(view: &View<'_>, revision: &str) -> Result<(), DeploymentError> {
    let d = &view.d;
    if revision.is_empty()
        || d.annotations().get(REVISION_ANNOTATION).map(String::as_str) == Some(revision)
    {
        return Ok(());
    }
    let api: Api<Deployment> =
        Api::namespaced(view.ctx.client.clone(), &d.namespace().unwrap_or_default());
    let patch = json!({"metadata": {"annotations": {REVISION_ANNOTATION: revision}}});
    let pp = PatchParams { field_manager: Some(MANAGER.into()), ..Default::default() };
    match api.patch(&d.name_any(), &pp, &Patch::Merge(&patch)).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(view.err("annotate the revision")(e)),
    }
}

fn new_replica_set(
    d: &Deployment,
    name: &str,
    hash: &str,
    replicas: i32,
    revision: i64,
    surge: i32,
) -> ReplicaSet {
    let spec = d.spec.clone().unwrap_or_default();
    let mut template = spec.template.clone();
    let tmeta = template.metadata.get_or_insert_with(Default::default);
    tmeta
        .labels
        .get_or_insert_with(Default::default)
        .insert(POD_TEMPLATE_HASH_LABEL.into(), hash.into());
    let labels = tmeta.labels.clone();
    let mut selector = spec.selector.clone();
    selector
        .match_labels
        .get_or_insert_with(Default::default)
        .insert(POD_TEMPLATE_HASH_LABEL.into(), hash.into());
    let mut annotations = BTreeMap::new();
    let desired = spec.replicas.unwrap_or(1);
    rollout::sync_new_rs_annotations(
        d.annotations(),
        &mut annotations,
        revision,
        Some((desired, desired + surge)),
    );
    ReplicaSet {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: d.namespace(),
            labels,
            annotations: Some(annotations),
            owner_references: Some(vec![podutil::controller_ref(d)]),
            ..Default::default()
        },
        spec: Some(k8s_openapi::api::apps::v1::ReplicaSetSpec {
            replicas: Some(replicas),
            min_ready_seconds: spec.min_ready_seconds,
            selector,
            template: Some(template),
        }),
        status: None,
    }
}

/// Sets ReplicaSet `i` to `replicas` (and its desired/max-replicas annotations to the
/// deployment's), recording a ScalingReplicaSet event when its size changes. Returns whether it
/// did.
async fn scale_rs(view: &mut View<'_>, i: usize, replicas: i32) -> Result<bool, DeploymentError> {
    let desired = view.replicas();
    let max = desired + view.surge();
    let rs = &view.sets[i];
    let from = spec_replicas(rs);
    let mut annotations = rs.annotations().clone();
    let annotations_changed = rollout::set_replicas_annotations(&mut annotations, desired, max);
    if from == replicas && !annotations_changed {
        return Ok(false);
    }
    let name = rs.name_any();
    let patch = json!({
        "metadata": {"annotations": {
            DESIRED_REPLICAS_ANNOTATION: desired.to_string(),
            MAX_REPLICAS_ANNOTATION: max.to_string(),
        }},
        "spec": {"replicas": replicas},
    });
    if !update_rs(view, i, patch, "scale a replica set").await? || from == replicas {
        return Ok(false);
    }
    let direction = if from < replicas { "up" } else { "down" };
    tracing::info!(deployment = %view.key, replicaset = %name, from, to = replicas, "scaled replica set");
    view.event(
        "ScalingReplicaSet",
        format!("Scaled {direction} replica set {name} from {from} to {replicas}"),
    );
    Ok(true)
}

/// [`scale_rs`] unless the size is already right.
async fn resize(view: &mut View<'_>, i: usize, replicas: i32) -> Result<bool, DeploymentError> {
    if spec_replicas(&view.sets[i]) == replicas {
        return Ok(false);
    }
    scale_rs(view, i, replicas).await
}

/// Whether the deployment's replicas changed since its active ReplicaSets were sized.
fn is_scaling_event(view: &View<'_>) -> bool {
    let replicas = view.replicas();
    view.all().filter(|rs| spec_replicas(rs) > 0).any(|rs| {
        annotation_i32(rs, DESIRED_REPLICAS_ANNOTATION).is_some_and(|desired| desired != replicas)
    })
}

/// Scales for a changed replica count (or a paused deployment): a lone active ReplicaSet (or,
/// with none active, the newest) takes the whole count; a saturated new one leaves the old ones
/// empty; otherwise, rolling, the change is shared among the active sets by their size.
async fn scale(view: &mut View<'_>) -> Result<(), DeploymentError> {
    let replicas = view.replicas();
    let active: Vec<usize> =
        (0..view.sets.len()).filter(|i| spec_replicas(&view.sets[*i]) > 0).collect();
    let lone = match active.len() {
        0 => view.new.or_else(|| view.old().last().copied()),
        1 => Some(active[0]),
        _ => None,
    };
    if let Some(i) = lone {
        resize(view, i, replicas).await?;
        return Ok(());
    }
    let saturated = view.new_rs().is_some_and(|rs| {
        spec_replicas(rs) == replicas
            && annotation_i32(rs, DESIRED_REPLICAS_ANNOTATION) == Some(replicas)
            && available(rs) == replicas
    });
    if saturated {
        for i in view.old() {
            if spec_replicas(&view.sets[i]) > 0 {
                resize(view, i, 0).await?;
            }
        }
        return Ok(());
    }
    if view.recreate() {
        return Ok(());
    }
    let surge = view.surge();
    let total: i32 = active.iter().map(|i| spec_replicas(&view.sets[*i])).sum();
    let to_add = rollout::replicas_to_add(replicas, surge, total);
    // Largest first; among equals the newest first when adding, the oldest when removing
    // (`sets` is oldest first).
    let mut order = active;
    order.sort_by(|a, b| {
        let by_size = spec_replicas(&view.sets[*b]).cmp(&spec_replicas(&view.sets[*a]));
        by_size.then(if to_add > 0 { b.cmp(a) } else { a.cmp(b) })
    });
    let shares: Vec<Share> = order
        .iter()
        .map(|i| Share {
            replicas: spec_replicas(&view.sets[*i]),
            max_replicas: annotation_i32(&view.sets[*i], MAX_REPLICAS_ANNOTATION),
        })
        .collect();
    let status_replicas = view.d.status.as_ref().and_then(|s| s.replicas).unwrap_or(0);
    let sizes = rollout::proportional_sizes(&shares, replicas, surge, status_replicas, to_add);
    tracing::debug!(deployment = %view.key, to_add, ?sizes, "proportional scaling");
    for (i, size) in order.into_iter().zip(sizes) {
        scale_rs(view, i, size).await?;
    }
    Ok(())
}

/// RollingUpdate: the new ReplicaSet up as far as maxSurge allows, then old ones down as far as
/// maxUnavailable allows; old history cleaned once the rollout is complete.
async fn rollout_rolling(view: &mut View<'_>) -> Result<Action, DeploymentError> {
    if view.new.is_none() {
        sync_new_rs(view, true).await?;
    }
    if reconcile_new(view).await? || reconcile_old(view).await? {
        return status::sync_status(view, true).await;
    }
    if status::complete(&view.d, view.d.status.as_ref()) {
        cleanup(view).await?;
    }
    status::sync_status(view, true).await
}

/// Recreate: every old pod goes before the new ReplicaSet is created and scaled up.
async fn rollout_recreate(view: &mut View<'_>) -> Result<Action, DeploymentError> {
    let mut scaled = false;
    for i in view.old() {
        if spec_replicas(&view.sets[i]) > 0 {
            scaled |= resize(view, i, 0).await?;
        }
    }
    let old_running = view
        .old()
        .into_iter()
        .any(|i| view.sets[i].status.as_ref().is_some_and(|s| s.replicas > 0));
    if scaled || old_running {
        return status::sync_status(view, true).await;
    }
    if view.new.is_none() {
        sync_new_rs(view, true).await?;
    }
    if let Some(i) = view.new {
        let replicas = view.replicas();
        resize(view, i, replicas).await?;
    }
    if status::complete(&view.d, view.d.status.as_ref()) {
        cleanup(view).await?;
    }
    status::sync_status(view, true).await
}

/// Scales the new ReplicaSet up as far as maxSurge allows (or down to the desired count).
async fn reconcile_new(view: &mut View<'_>) -> Result<bool, DeploymentError> {
    let Some(i) = view.new else { return Ok(false) };
    let want = view.replicas();
    let current = spec_replicas(&view.sets[i]);
    if current == want {
        return Ok(false);
    }
    if current > want {
        return resize(view, i, want).await;
    }
    let total: i32 = view.all().map(spec_replicas).sum();
    let target = rollout::new_rs_scale_up(want, view.surge(), total, current);
    resize(view, i, target).await
}

/// Scales old ReplicaSets down as far as maxUnavailable allows: their unhealthy replicas first,
/// then available ones while enough stay available. Returns whether anything was scaled.
async fn reconcile_old(view: &mut View<'_>) -> Result<bool, DeploymentError> {
    let old: Vec<usize> =
        view.old().into_iter().filter(|i| spec_replicas(&view.sets[*i]) > 0).collect();
    if old.is_empty() {
        return Ok(false);
    }
    let min_available = view.replicas() - view.max_unavailable();
    let all_count: i32 = view.all().map(spec_replicas).sum();
    let new_unavailable = view.new_rs().map(|rs| spec_replicas(rs) - available(rs)).unwrap_or(0);
    let max_down = all_count - min_available - new_unavailable;
    if max_down <= 0 {
        return Ok(false);
    }
    let mut cleaned = 0;
    for &i in &old {
        if cleaned >= max_down {
            break;
        }
        let (current, avail) = (spec_replicas(&view.sets[i]), available(&view.sets[i]));
        if current == 0 || current == avail {
            continue;
        }
        if current < avail {
            // Its last scale-down has not taken effect yet: "cleaning" the surplus would scale
            // it up. Try again later, as upstream does.
            return Err(DeploymentError::ScaleDownPending { name: view.sets[i].name_any() });
        }
        let down = (max_down - cleaned).min(current - avail);
        resize(view, i, current - down).await?;
        cleaned += down;
    }
    let available_total: i32 = view.all().map(available).sum();
    let mut scaled = 0;
    if available_total > min_available {
        let to_scale = available_total - min_available;
        for &i in &old {
            if scaled >= to_scale {
                break;
            }
            let current = spec_replicas(&view.sets[i]);
            if current == 0 {
                continue;
            }
            let down = current.min(to_scale - scaled);
            resize(view, i, current - down).await?;
            scaled += down;
        }
    }
    Ok(cleaned + scaled > 0)
}

/// Deletes old ReplicaSets beyond revisionHistoryLimit (default 10), lowest revision first,
/// skipping any that still has or wants pods.
async fn cleanup(view: &View<'_>) -> Result<(), DeploymentError> {
    let limit = view.d.spec.as_ref().and_then(|s| s.revision_history_limit).unwrap_or(10);
    if limit == i32::MAX {
        return Ok(());
    }
    let mut alive: Vec<&ReplicaSet> = view
        .old()
        .into_iter()
        .map(|i| &view.sets[i])
        .filter(|rs| rs.metadata.deletion_timestamp.is_none())
        .collect();
    let excess = alive.len() as i64 - i64::from(limit.max(0));
    if excess <= 0 {
        return Ok(());
    }
    alive.sort_by_key(|rs| revision_of(rs)); // stable: creation order among equals
    for rs in alive.into_iter().take(excess as usize) {
        let st = rs.status.as_ref();
        let observed = st.and_then(|s| s.observed_generation).unwrap_or(0);
        if st.is_some_and(|s| s.replicas != 0)
            || spec_replicas(rs) != 0
            || rs.metadata.generation.unwrap_or(0) > observed
        {
            continue;
        }
        let dp = DeleteParams {
            preconditions: Some(Preconditions {
                uid: rs.metadata.uid.clone(),
                resource_version: None,
            }),
            ..Default::default()
        };
        match view.rs_api.delete(&rs.name_any(), &dp).await {
            Ok(_) => {
                tracing::debug!(deployment = %view.key, replicaset = %rs.name_any(), "deleted old replica set")
            }
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
            Err(e) => return Err(view.err("delete an old replica set")(e)),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
