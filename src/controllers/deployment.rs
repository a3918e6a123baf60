//! The Deployment controller: one ReplicaSet per pod template (named by the template's
//! pod-template-hash), rolled between with the RollingUpdate (maxSurge / maxUnavailable) or
//! Recreate strategy; revisions in the deployment.kubernetes.io/revision annotation; old
//! ReplicaSets beyond revisionHistoryLimit deleted; status (replicas, updatedReplicas,
//! readyReplicas, availableReplicas, unavailableReplicas, observedGeneration) and the Available
//! and Progressing conditions with upstream's reasons and messages — what
//! `kubectl rollout status` reads. The arithmetic lives in [`super::rollout`].

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use k8s_openapi::api::apps::v1::{Deployment, DeploymentCondition, DeploymentStatus, ReplicaSet};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Api, Client, ResourceExt};
use serde_json::json;

use super::informer::{self, Change};
use super::podutil::{self, controller_of, key_of, selector_matches, split_key};
use super::queue::WorkQueue;
use super::rollout::{self, DEFAULT_PROGRESS_DEADLINE, POD_TEMPLATE_HASH_LABEL};
use super::worker::{run_workers, Action};
use super::AbortOnDrop;

pub const REVISION_ANNOTATION: &str = "deployment.kubernetes.io/revision";
pub const DESIRED_REPLICAS_ANNOTATION: &str = "deployment.kubernetes.io/desired-replicas";
pub const MAX_REPLICAS_ANNOTATION: &str = "deployment.kubernetes.io/max-replicas";
/// Annotations of a Deployment not copied to its ReplicaSets.
const NOT_COPIED: &[&str] = &[
    "kubectl.kubernetes.io/last-applied-configuration",
    REVISION_ANNOTATION,
    "deployment.kubernetes.io/revision-history",
    DESIRED_REPLICAS_ANNOTATION,
    MAX_REPLICAS_ANNOTATION,
    "deprecated.deployment.rollback.to",
];
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
    #[error("an informer of the deployment controller stopped")]
    InformerStopped,
}

struct Ctx {
    client: Client,
    deployments: Store<Deployment>,
    sets: Store<ReplicaSet>,
}

/// Runs the controller until an informer stops.
pub async fn run(client: Client, workers: usize) -> Result<(), DeploymentError> {
    let queue = WorkQueue::new();
    let q = queue.clone();
    let (deployments, d_task) = informer::spawn(
        "deployment-informer",
        Api::<Deployment>::all(client.clone()),
        watcher::Config::default(),
        move |c| match c {
            Change::Applied(d) | Change::Deleted(d) => q.add(key_of(d)),
            Change::Synced => {}
        },
    );
    let (q, ds) = (queue.clone(), deployments.clone());
    let (sets, rs_task) = informer::spawn(
        "deployment-replicaset-informer",
        Api::<ReplicaSet>::all(client.clone()),
        watcher::Config::default(),
        move |c| match c {
            Change::Applied(rs) | Change::Deleted(rs) => {
                let ns = rs.namespace().unwrap_or_default();
                match controller_of(&rs.metadata) {
                    Some(o) if o.kind == "Deployment" => q.add(format!("{ns}/{}", o.name)),
                    Some(_) => {}
                    None => {
                        for d in ds.state() {
                            let sel = d.spec.as_ref().map(|s| &s.selector);
                            if d.namespace().as_deref() == Some(ns.as_str())
                                && sel.is_some_and(|s| {
                                    !podutil::selector_is_empty(s)
                                        && selector_matches(s, rs.labels())
                                })
                            {
                                q.add(key_of(d.as_ref()));
                            }
                        }
                    }
                }
            }
            Change::Synced => {}
        },
    );
    let _guard = AbortOnDrop(vec![d_task.abort_handle(), rs_task.abort_handle()]);
    let ready =
        futures::future::join(deployments.wait_until_ready(), sets.wait_until_ready()).await;
    if ready.0.is_err() || ready.1.is_err() {
        return Err(DeploymentError::InformerStopped);
    }
    let ctx = Arc::new(Ctx { client, deployments, sets });
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

/// One sync's view of a deployment and its replica sets.
struct View<'a> {
    ctx: &'a Ctx,
    key: &'a str,
    d: Arc<Deployment>,
    rs_api: Api<ReplicaSet>,
    /// The ReplicaSet of the current template, if any.
    new_rs: Option<ReplicaSet>,
    /// The others, oldest first.
    old: Vec<ReplicaSet>,
    /// Condition set while finding or creating the new ReplicaSet.
    progress_note: Option<(&'static str, String)>,
}

impl View<'_> {
    fn err(&self, action: &'static str) -> impl FnOnce(kube::Error) -> DeploymentError {
        let key = self.key.to_string();
        move |source| DeploymentError::Api { action, key, source }
    }

    fn replicas(&self) -> i32 {
        self.d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1).max(0)
    }

    fn all(&self) -> impl Iterator<Item = &ReplicaSet> {
        self.new_rs.iter().chain(self.old.iter())
    }
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
    let mut view =
        View { ctx, key, d: d.clone(), rs_api, new_rs: None, old: vec![], progress_note: None };
    claim(&mut view).await?;
    let deleting = d.metadata.deletion_timestamp.is_some();
    let paused = spec.paused.unwrap_or(false);
    if deleting || paused {
        return sync_status(&view).await;
    }
    let recreate = spec.strategy.as_ref().and_then(|s| s.type_.as_deref()) == Some("Recreate");
    if recreate {
        // Old pods go first; the new set is scaled up only once none is left.
        let mut scaled = false;
        for rs in view.old.clone() {
            if rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0) > 0 {
                scale(&view, &rs, 0).await?;
                scaled = true;
            }
        }
        let old_running =
            view.old.iter().any(|rs| rs.status.as_ref().is_some_and(|s| s.replicas > 0));
        if scaled || old_running {
            return sync_status(&view).await;
        }
        ensure_new_rs(&mut view).await?;
        if let Some(new_rs) = view.new_rs.clone() {
            let want = view.replicas();
            if new_rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0) != want {
                scale(&view, &new_rs, want).await?;
            }
        }
    } else {
        ensure_new_rs(&mut view).await?;
        reconcile_new(&view).await?;
        reconcile_old(&mut view).await?;
    }
    cleanup(&view).await?;
    sync_status(&view).await
}

/// Sorts the deployment's ReplicaSets into new and old, adopting orphans whose labels match and
/// releasing owned sets that no longer match.
async fn claim(view: &mut View<'_>) -> Result<(), DeploymentError> {
    let d = view.d.clone();
    let Some(spec) = d.spec.as_ref() else { return Ok(()) };
    let uid = d.uid().unwrap_or_default();
    let ns = d.namespace().unwrap_or_default();
    let mut mine = vec![];
    for rs in view.ctx.sets.state() {
        if rs.namespace().as_deref() != Some(ns.as_str()) {
            continue;
        }
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
                let patch = json!({"metadata": {
                    "ownerReferences": [podutil::controller_ref(d.as_ref())],
                    "uid": rs.metadata.uid,
                }});
                if patch_rs(view, &rs.name_any(), &Patch::Strategic(patch), "adopt a replica set")
                    .await?
                {
                    mine.push((*rs).clone());
                }
            }
            _ => {}
        }
    }
    mine.sort_by_key(|rs| {
        (rs.metadata.creation_timestamp.as_ref().map(podutil::time_of), rs.name_any())
    });
    let template = spec.template.clone();
    let pos = mine.iter().position(|rs| rollout::same_template(&template, rs));
    view.new_rs = pos.map(|i| mine.remove(i));
    view.old = mine;
    Ok(())
}

/// Patches a ReplicaSet; false if it is gone.
async fn patch_rs(
    view: &View<'_>,
    name: &str,
    patch: &Patch<serde_json::Value>,
    action: &'static str,
) -> Result<bool, DeploymentError> {
    let pp = PatchParams { field_manager: Some(MANAGER.into()), ..Default::default() };
    match view.rs_api.patch(name, &pp, patch).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => Ok(false),
        Err(e) => Err(view.err(action)(e)),
    }
}

fn revision_of(rs: &ReplicaSet) -> i64 {
    rs.annotations().get(REVISION_ANNOTATION).and_then(|r| r.parse().ok()).unwrap_or(0)
}

/// Finds or creates the ReplicaSet of the current template and keeps the revision annotations
/// (on it and on the deployment) current.
async fn ensure_new_rs(view: &mut View<'_>) -> Result<(), DeploymentError> {
    let d = view.d.clone();
    let revision = view.old.iter().map(revision_of).max().unwrap_or(0) + 1;
    let replicas = view.replicas();
    let (surge, _) = rollout::surge_and_unavailable(&d);
    match view.new_rs.clone() {
        Some(rs) => {
            let mut annotations = BTreeMap::new();
            if revision_of(&rs) < revision {
                annotations.insert(REVISION_ANNOTATION.to_string(), revision.to_string());
            }
            if !annotations.is_empty() {
                let patch = json!({"metadata": {"annotations": annotations}});
                patch_rs(view, &rs.name_any(), &Patch::Merge(patch), "update the revision").await?;
                if let Some(r) = view.new_rs.as_mut() {
                    r.metadata.annotations.get_or_insert_with(Default::default).extend(annotations);
                }
            }
            if !has_progressing(&d) {
                view.progress_note = Some((
                    "FoundNewReplicaSet",
                    format!("Found new replica set \"{}\"", rs.name_any()),
                ));
            }
        }
        None => {
            let collision = d.status.as_ref().and_then(|s| s.collision_count);
            let template = d.spec.as_ref().map(|s| s.template.clone()).unwrap_or_default();
            let hash = rollout::pod_template_hash(&template, collision);
            let name = format!("{}-{hash}", d.name_any());
            let total: i32 =
                view.all().map(|rs| rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0)).sum();
            let recreate =
                d.spec.as_ref().and_then(|s| s.strategy.as_ref()).and_then(|s| s.type_.as_deref())
                    == Some("Recreate");
            let initial = if recreate {
                replicas
            } else {
                rollout::new_rs_scale_up(replicas, surge, total, 0)
            };
            let rs = new_replica_set(&d, &name, &hash, initial, revision, surge);
            let created = match view.rs_api.create(&PostParams::default(), &rs).await {
                Ok(rs) => {
                    tracing::info!(deployment = %view.key, replicaset = %name, revision, "created new replica set");
                    view.progress_note = Some((
                        "NewReplicaSetCreated",
                        format!("Created new replica set \"{name}\""),
                    ));
                    rs
                }
                Err(kube::Error::Api(e)) if e.code == 409 => {
                    let existing =
                        view.rs_api.get_opt(&name).await.map_err(view.err("get a replica set"))?;
                    match existing {
                        Some(rs)
                            if controller_of(&rs.metadata)
                                .is_some_and(|o| Some(&o.uid) == d.metadata.uid.as_ref())
                                && rollout::same_template(&template, &rs) =>
                        {
                            rs
                        }
                        _ => {
                            let count = collision.unwrap_or(0).saturating_add(1);
                            let patch = json!({"status": {"collisionCount": count}});
                            let api: Api<Deployment> = Api::namespaced(
                                view.ctx.client.clone(),
                                &d.namespace().unwrap_or_default(),
                            );
                            api.patch_status(
                                &d.name_any(),
                                &PatchParams::default(),
                                &Patch::Merge(&patch),
                            )
                            .await
                            .map_err(view.err("raise the collision count"))?;
                            return Err(DeploymentError::HashCollision { name });
                        }
                    }
                }
                Err(e) => return Err(view.err("create a replica set")(e)),
            };
            view.new_rs = Some(created);
        }
    }
    // The deployment carries its current revision.
    let new_revision = view.new_rs.as_ref().map(revision_of).unwrap_or(revision).to_string();
    if d.annotations().get(REVISION_ANNOTATION) != Some(&new_revision) {
        let api: Api<Deployment> =
            Api::namespaced(view.ctx.client.clone(), &d.namespace().unwrap_or_default());
        let patch = json!({"metadata": {"annotations": {REVISION_ANNOTATION: new_revision}}});
        let pp = PatchParams { field_manager: Some(MANAGER.into()), ..Default::default() };
        match api.patch(&d.name_any(), &pp, &Patch::Merge(&patch)).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(view.err("annotate the revision")(e)),
        }
    }
    Ok(())
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
    let mut annotations: BTreeMap<String, String> = d
        .annotations()
        .iter()
        .filter(|(k, _)| !NOT_COPIED.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    annotations.insert(REVISION_ANNOTATION.into(), revision.to_string());
    annotations.insert(DESIRED_REPLICAS_ANNOTATION.into(), spec.replicas.unwrap_or(1).to_string());
    annotations
        .insert(MAX_REPLICAS_ANNOTATION.into(), (spec.replicas.unwrap_or(1) + surge).to_string());
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

/// Sets a ReplicaSet's replicas (and the desired/max annotations).
async fn scale(view: &View<'_>, rs: &ReplicaSet, replicas: i32) -> Result<(), DeploymentError> {
    let (surge, _) = rollout::surge_and_unavailable(&view.d);
    let desired = view.replicas();
    let patch = json!({
        "metadata": {"annotations": {
            DESIRED_REPLICAS_ANNOTATION: desired.to_string(),
            MAX_REPLICAS_ANNOTATION: (desired + surge).to_string(),
        }},
        "spec": {"replicas": replicas},
    });
    tracing::debug!(deployment = %view.key, replicaset = %rs.name_any(), replicas, "scaling replica set");
    patch_rs(view, &rs.name_any(), &Patch::Merge(patch), "scale a replica set").await.map(|_| ())
}

fn spec_replicas(rs: &ReplicaSet) -> i32 {
    rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0)
}

fn available(rs: &ReplicaSet) -> i32 {
    rs.status.as_ref().and_then(|s| s.available_replicas).unwrap_or(0)
}

/// Scales the new ReplicaSet up as far as maxSurge allows (or down to the desired count).
async fn reconcile_new(view: &View<'_>) -> Result<(), DeploymentError> {
    let Some(new_rs) = view.new_rs.as_ref() else { return Ok(()) };
    let want = view.replicas();
    let current = spec_replicas(new_rs);
    if current == want {
        return Ok(());
    }
    if current > want {
        return scale(view, new_rs, want).await;
    }
    let (surge, _) = rollout::surge_and_unavailable(&view.d);
    let total: i32 = view.all().map(spec_replicas).sum();
    let target = rollout::new_rs_scale_up(want, surge, total, current);
    if target != current {
        scale(view, new_rs, target).await?;
    }
    Ok(())
}

/// Scales old ReplicaSets down as far as maxUnavailable allows: unhealthy pods first.
async fn reconcile_old(view: &mut View<'_>) -> Result<(), DeploymentError> {
    let old_count: i32 = view.old.iter().map(spec_replicas).sum();
    if old_count == 0 {
        return Ok(());
    }
    let (_, unavailable) = rollout::surge_and_unavailable(&view.d);
    let min_available = view.replicas() - unavailable;
    let all_count: i32 = view.all().map(spec_replicas).sum();
    let new_unavailable =
        view.new_rs.as_ref().map(|rs| spec_replicas(rs) - available(rs)).unwrap_or(0);
    let mut max_down = all_count - min_available - new_unavailable;
    if max_down <= 0 {
        return Ok(());
    }
    // Unhealthy replicas of old sets go first; they do not count toward availability.
    let mut cleaned = 0;
    for i in 0..view.old.len() {
        if max_down <= 0 {
            break;
        }
        let rs = view.old[i].clone();
        let unhealthy = spec_replicas(&rs) - available(&rs);
        if unhealthy <= 0 {
            continue;
        }
        let down = unhealthy.min(max_down);
        let target = spec_replicas(&rs) - down;
        scale(view, &rs, target).await?;
        if let Some(s) = view.old[i].spec.as_mut() {
            s.replicas = Some(target);
        }
        max_down -= down;
        cleaned += down;
    }
    // Then available ones, while enough stay available.
    let available_total: i32 = view.all().map(available).sum();
    let mut remaining = (available_total - min_available).min(max_down);
    let _ = cleaned;
    for i in 0..view.old.len() {
        if remaining <= 0 {
            break;
        }
        let rs = view.old[i].clone();
        let current = spec_replicas(&rs);
        if current == 0 {
            continue;
        }
        let down = current.min(remaining);
        scale(view, &rs, current - down).await?;
        if let Some(s) = view.old[i].spec.as_mut() {
            s.replicas = Some(current - down);
        }
        remaining -= down;
    }
    Ok(())
}

/// Deletes the oldest empty old ReplicaSets beyond revisionHistoryLimit (default 10).
async fn cleanup(view: &View<'_>) -> Result<(), DeploymentError> {
    let limit =
        view.d.spec.as_ref().and_then(|s| s.revision_history_limit).unwrap_or(10).max(0) as usize;
    let empty: Vec<&ReplicaSet> = view
        .old
        .iter()
        .filter(|rs| {
            spec_replicas(rs) == 0
                && rs.status.as_ref().is_none_or(|s| s.replicas == 0)
                && rs.metadata.deletion_timestamp.is_none()
        })
        .collect();
    if empty.len() <= limit {
        return Ok(());
    }
    let mut by_revision = empty;
    by_revision.sort_by_key(|rs| revision_of(rs));
    for rs in by_revision.iter().take(by_revision.len() - limit) {
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

fn has_progressing(d: &Deployment) -> bool {
    d.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Progressing"))
}

/// Computes status and conditions and writes them if they changed.
async fn sync_status(view: &View<'_>) -> Result<Action, DeploymentError> {
    let d = &view.d;
    let old = d.status.clone().unwrap_or_default();
    let replicas = view.replicas();
    let (_, unavailable) = rollout::surge_and_unavailable(d);
    let sum = |f: &dyn Fn(&ReplicaSet) -> i32| view.all().map(f).sum::<i32>();
    let actual = sum(&|rs| rs.status.as_ref().map(|s| s.replicas).unwrap_or(0));
    let ready = sum(&|rs| rs.status.as_ref().and_then(|s| s.ready_replicas).unwrap_or(0));
    let avail = sum(&available);
    let total_spec = sum(&spec_replicas);
    let updated =
        view.new_rs.as_ref().and_then(|rs| rs.status.as_ref()).map(|s| s.replicas).unwrap_or(0);
    let nz = |n: i32| (n > 0).then_some(n);
    let mut status = DeploymentStatus {
        observed_generation: d.metadata.generation,
        replicas: nz(actual),
        updated_replicas: nz(updated),
        ready_replicas: nz(ready),
        available_replicas: nz(avail),
        unavailable_replicas: nz((total_spec - avail).max(0)),
        collision_count: old.collision_count,
        conditions: old.conditions.clone(),
        ..Default::default()
    };
    let now = Time(jiff_now());
    if avail >= replicas - unavailable {
        set_condition(
            &mut status,
            "Available",
            "True",
            "MinimumReplicasAvailable",
            "Deployment has minimum availability.",
            &now,
        );
    } else {
        set_condition(
            &mut status,
            "Available",
            "False",
            "MinimumReplicasUnavailable",
            "Deployment does not have minimum availability.",
            &now,
        );
    }
    let mut requeue = None;
    let mut touched = false;
    let deadline = d
        .spec
        .as_ref()
        .and_then(|s| s.progress_deadline_seconds)
        .unwrap_or(DEFAULT_PROGRESS_DEADLINE);
    let paused = d.spec.as_ref().and_then(|s| s.paused).unwrap_or(false);
    let new_name = view.new_rs.as_ref().map(|rs| rs.name_any()).unwrap_or_default();
    if let Some((reason, message)) = &view.progress_note {
        set_condition(&mut status, "Progressing", "True", reason, message, &now);
    } else if paused {
        set_condition(
            &mut status,
            "Progressing",
            "Unknown",
            "DeploymentPaused",
            "Deployment is paused",
            &now,
        );
    } else if view.new_rs.is_some() {
        let complete = updated == replicas
            && actual == replicas
            && avail == replicas
            && status.observed_generation >= d.metadata.generation;
        let progressed = updated > old.updated_replicas.unwrap_or(0)
            || actual < old.replicas.unwrap_or(0)
            || ready > old.ready_replicas.unwrap_or(0)
            || avail > old.available_replicas.unwrap_or(0);
        let current = status
            .conditions
            .as_ref()
            .and_then(|cs| cs.iter().find(|c| c.type_ == "Progressing"))
            .cloned();
        if complete {
            set_condition(
                &mut status,
                "Progressing",
                "True",
                "NewReplicaSetAvailable",
                &format!("ReplicaSet \"{new_name}\" has successfully progressed."),
                &now,
            );
        } else if progressed {
            set_condition(
                &mut status,
                "Progressing",
                "True",
                "ReplicaSetUpdated",
                &format!("ReplicaSet \"{new_name}\" is progressing."),
                &now,
            );
            // Progress restarts the deadline.
            if let Some(c) =
                status.conditions.iter_mut().flatten().find(|c| c.type_ == "Progressing")
            {
                c.last_update_time = Some(now.clone());
                touched = true;
            }
            requeue = Some(Duration::from_secs(deadline.max(1) as u64));
        } else if let Some(c) =
            current.filter(|c| c.reason.as_deref() != Some("NewReplicaSetAvailable"))
        {
            let since = c.last_update_time.as_ref().map(podutil::time_of).unwrap_or_else(Utc::now);
            let due = since + chrono::Duration::seconds(deadline.into());
            if Utc::now() >= due {
                set_condition(
                    &mut status,
                    "Progressing",
                    "False",
                    "ProgressDeadlineExceeded",
                    &format!("ReplicaSet \"{new_name}\" has timed out progressing."),
                    &now,
                );
            } else {
                requeue = (due - Utc::now()).to_std().ok().map(|d| d + Duration::from_millis(10));
            }
        }
    }
    if touched || status_differs(&old, &status) {
        let api: Api<Deployment> =
            Api::namespaced(view.ctx.client.clone(), &d.namespace().unwrap_or_default());
        let patch = json!({"status": {
            "observedGeneration": status.observed_generation,
            "replicas": status.replicas,
            "updatedReplicas": status.updated_replicas,
            "readyReplicas": status.ready_replicas,
            "availableReplicas": status.available_replicas,
            "unavailableReplicas": status.unavailable_replicas,
            "collisionCount": status.collision_count,
            "conditions": status.conditions,
        }});
        let pp = PatchParams { field_manager: Some(MANAGER.into()), ..Default::default() };
        match api.patch_status(&d.name_any(), &pp, &Patch::Merge(&patch)).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => return Ok(Action::Done),
            Err(e) => return Err(view.err("update status")(e)),
        }
    }
    Ok(requeue.map_or(Action::Done, Action::RequeueAfter))
}

fn jiff_now() -> k8s_openapi::jiff::Timestamp {
    k8s_openapi::jiff::Timestamp::now()
}

/// Compares statuses ignoring condition timestamps.
fn status_differs(a: &DeploymentStatus, b: &DeploymentStatus) -> bool {
    let conds = |s: &DeploymentStatus| {
        s.conditions
            .iter()
            .flatten()
            .map(|c| (c.type_.clone(), c.status.clone(), c.reason.clone(), c.message.clone()))
            .collect::<Vec<_>>()
    };
    (
        a.observed_generation,
        a.replicas,
        a.updated_replicas,
        a.ready_replicas,
        a.available_replicas,
        a.unavailable_replicas,
        a.collision_count,
    ) != (
        b.observed_generation,
        b.replicas,
        b.updated_replicas,
        b.ready_replicas,
        b.available_replicas,
        b.unavailable_replicas,
        b.collision_count,
    ) || conds(a) != conds(b)
}

/// Sets a condition; lastTransitionTime moves only when the status changes, lastUpdateTime when
/// anything does (upstream keeps both when status and reason are unchanged).
fn set_condition(
    status: &mut DeploymentStatus,
    kind: &str,
    value: &str,
    reason: &str,
    message: &str,
    now: &Time,
) {
    let conds = status.conditions.get_or_insert_with(Vec::new);
    match conds.iter_mut().find(|c| c.type_ == kind) {
        Some(c) => {
            if c.status == value
                && c.reason.as_deref() == Some(reason)
                && c.message.as_deref() == Some(message)
            {
                return;
            }
            if c.status != value {
                c.last_transition_time = Some(now.clone());
            }
            c.status = value.into();
            c.reason = Some(reason.into());
            c.message = Some(message.into());
            c.last_update_time = Some(now.clone());
        }
        None => conds.push(DeploymentCondition {
            type_: kind.into(),
            status: value.into(),
            reason: Some(reason.into()),
            message: Some(message.into()),
            last_transition_time: Some(now.clone()),
            last_update_time: Some(now.clone()),
        }),
    }
}
