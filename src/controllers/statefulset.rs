//! The StatefulSet controller: pods with stable names `<set>-<ordinal>` (labels
//! statefulset.kubernetes.io/pod-name and apps.kubernetes.io/pod-index, hostname, and the
//! serviceName as subdomain), each with its PersistentVolumeClaims `<template>-<set>-<ordinal>`
//! created before it and kept as persistentVolumeClaimRetentionPolicy says. OrderedReady creates
//! pod N only once pods below N are Running and Ready and removes pods from the highest ordinal
//! down, one at a time; Parallel does both at once. Templates are recorded as ControllerRevisions
//! ([`super::history`]); pods carry their revision's name in controller-revision-hash. The
//! RollingUpdate strategy replaces pods at or above the partition from the highest ordinal down,
//! one at a time, each after the previous is Ready; OnDelete only uses the new template for pods
//! someone else deleted. Status (replicas, readyReplicas, currentReplicas, updatedReplicas,
//! availableReplicas, currentRevision, updateRevision, collisionCount, observedGeneration) is
//! what `kubectl rollout status` reads.

mod claims;
mod status;

use claims::ensure_claims;
use status::write_status;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use k8s_openapi::api::apps::v1::{ControllerRevision, StatefulSet, StatefulSetSpec};
use k8s_openapi::api::core::v1::{
    PersistentVolumeClaim, PersistentVolumeClaimVolumeSource, Pod, PodTemplateSpec, Volume,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Api, Client, ResourceExt};
use serde_json::json;

use super::events::record;
use super::history::{self, CONTROLLER_REVISION_HASH_LABEL};
use super::informer::Change;
use super::informers::{Informers, StoreReady};
use super::podutil::api_message;
use super::podutil::{self, key_of, split_key};
use super::queue::WorkQueue;
use super::recheck::OwnerRecheck;
use super::worker::{run_workers, Action};
use super::AbortOnDrop;

/// The label with the pod's own name (so a Service can select one pod).
pub const POD_NAME_LABEL: &str = "statefulset.kubernetes.io/pod-name";
/// The label with the pod's ordinal.
pub const POD_INDEX_LABEL: &str = "apps.kubernetes.io/pod-index";
const MANAGER: &str = "statefulset-controller";

/// What can go wrong syncing a StatefulSet.
#[derive(Debug, thiserror::Error)]
pub enum StatefulSetError {
    #[error("cannot {action} for stateful set {key}")]
    Api {
        action: &'static str,
        key: String,
        #[source]
        source: kube::Error,
    },
    #[error("an informer of the statefulset controller stopped")]
    InformerStopped,
}

struct Ctx {
    client: Client,
    sets: Store<StatefulSet>,
    pods: Store<Pod>,
    revisions: Store<ControllerRevision>,
    claims: Store<PersistentVolumeClaim>,
}

/// Runs the controller with `workers` concurrent syncs until an informer stops.
pub async fn run(
    client: Client,
    informers: Informers,
    workers: usize,
) -> Result<(), StatefulSetError> {
    let queue = WorkQueue::new();
    let q = queue.clone();
    let (sets, sets_task) = informers.spawn(
        "statefulset-informer",
        Api::<StatefulSet>::all(client.clone()),
        watcher::Config::default(),
        move |c| match c {
            Change::Applied(s) | Change::Deleted(s) => q.add(key_of(s)),
            Change::Synced => {}
        },
    );
    let (q, for_pods) = (queue.clone(), sets.clone());
    let (pods, pods_task) = informers.spawn(
        "statefulset-pod-informer",
        Api::<Pod>::all(client.clone()),
        watcher::Config::default(),
        move |c| match c {
            Change::Applied(pod) | Change::Deleted(pod) => {
                for key in podutil::owners_of(
                    &for_pods,
                    |s: &StatefulSet| s.spec.as_ref().map(|s| &s.selector),
                    &pod.metadata,
                    pod.metadata.deletion_timestamp.is_some(),
                ) {
                    q.add(key);
                }
            }
            Change::Synced => {}
        },
    );
    let (q, for_revs) = (queue.clone(), sets.clone());
    let (revisions, revs_task) = informers.spawn(
        "statefulset-revision-informer",
        Api::<ControllerRevision>::all(client.clone()),
        watcher::Config::default(),
        move |c| match c {
            Change::Applied(r) | Change::Deleted(r) => {
                for key in podutil::owners_of(
                    &for_revs,
                    |s: &StatefulSet| s.spec.as_ref().map(|s| &s.selector),
                    &r.metadata,
                    false,
                ) {
                    q.add(key);
                }
            }
            Change::Synced => {}
        },
    );
    let (claims, claims_task) = informers.spawn(
        "statefulset-pvc-informer",
        Api::<PersistentVolumeClaim>::all(client.clone()),
        watcher::Config::default(),
        |_| {},
    );
    let _guard = AbortOnDrop(vec![
        sets_task.abort_handle(),
        pods_task.abort_handle(),
        revs_task.abort_handle(),
        claims_task.abort_handle(),
    ]);
    let ready =
        futures::future::join4(sets.ready(), pods.ready(), revisions.ready(), claims.ready()).await;
    if ready.0.is_err() || ready.1.is_err() || ready.2.is_err() || ready.3.is_err() {
        return Err(StatefulSetError::InformerStopped);
    }
    let ctx = Arc::new(Ctx { client, sets, pods, revisions, claims });
    let workers = run_workers("statefulset", queue, workers, move |key| {
        let ctx = ctx.clone();
        async move { sync(&ctx, &key).await }
    });
    tokio::select! {
        _ = workers => {}
        _ = sets_task => {}
        _ = pods_task => {}
        _ = revs_task => {}
        _ = claims_task => {}
    }
    Err(StatefulSetError::InformerStopped)
}

/// The parent name and ordinal a pod's name gives (`<parent>-<ordinal>`).
pub fn parent_and_ordinal(name: &str) -> Option<(&str, i32)> {
    let (parent, ord) = name.rsplit_once('-')?;
    if ord.is_empty() || !ord.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((parent, ord.parse().ok()?))
}

fn ordinal_of(pod: &Pod) -> i32 {
    parent_and_ordinal(pod.metadata.name.as_deref().unwrap_or("")).map_or(-1, |(_, o)| o)
}

fn phase(pod: &Pod) -> &str {
    pod.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("")
}

fn terminating(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_some()
}

fn running_and_ready(pod: &Pod) -> bool {
    phase(pod) == "Running" && podutil::is_ready(pod)
}

fn healthy(pod: &Pod) -> bool {
    running_and_ready(pod) && !terminating(pod)
}

fn revision_of(pod: &Pod) -> &str {
    pod.labels().get(CONTROLLER_REVISION_HASH_LABEL).map(String::as_str).unwrap_or("")
}

/// The name of claim template `template`'s claim for `ordinal`.
pub fn claim_name(template: &str, set: &str, ordinal: i32) -> String {
    format!("{template}-{set}-{ordinal}")
}

/// A pod of `set` at `ordinal` from `template`, labelled with `revision`.
pub fn new_pod(set: &StatefulSet, template: &PodTemplateSpec, ordinal: i32, revision: &str) -> Pod {
    let spec = set.spec.as_ref();
    let tmeta = template.metadata.clone().unwrap_or_default();
    let name = format!("{}-{ordinal}", set.name_any());
    let mut labels = tmeta.labels.unwrap_or_default();
    labels.insert(POD_NAME_LABEL.into(), name.clone());
    labels.insert(POD_INDEX_LABEL.into(), ordinal.to_string());
    labels.insert(CONTROLLER_REVISION_HASH_LABEL.into(), revision.into());
    let mut pod_spec = template.spec.clone().unwrap_or_default();
    pod_spec.hostname = Some(name.clone());
    pod_spec.subdomain = spec.and_then(|s| s.service_name.clone()).filter(|s| !s.is_empty());
    let templates = spec.and_then(|s| s.volume_claim_templates.clone()).unwrap_or_default();
    if !templates.is_empty() {
        let mut volumes: Vec<Volume> = templates
            .iter()
            .map(|t| {
                let tname = t.metadata.name.clone().unwrap_or_default();
                Volume {
                    name: tname.clone(),
                    persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                        claim_name: claim_name(&tname, &set.name_any(), ordinal),
                        read_only: None,
                    }),
                    ..Default::default()
                }
            })
            .collect();
        for v in pod_spec.volumes.take().unwrap_or_default() {
            if !volumes.iter().any(|c| c.name == v.name) {
                volumes.push(v);
            }
        }
        pod_spec.volumes = Some(volumes);
    }
    Pod {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: set.namespace(),
            labels: Some(labels),
            annotations: tmeta.annotations,
            finalizers: tmeta.finalizers,
            owner_references: Some(vec![podutil::controller_ref(set)]),
            ..Default::default()
        },
        spec: Some(pod_spec),
        status: None,
    }
}

/// One sync's view of a set.
struct View<'a> {
    ctx: &'a Ctx,
    key: &'a str,
    set: Arc<StatefulSet>,
    pods_api: Api<Pod>,
    claims_api: Api<PersistentVolumeClaim>,
    current_template: PodTemplateSpec,
    current_name: String,
    update_name: String,
    min_ready: i32,
}

impl View<'_> {
    /// Records a pod's create, update or delete (`verb`) on the set in upstream's words.
    fn pod_event(&self, verb: &str, pod: &Pod, failure: Option<&kube::Error>) {
        let (set, name) = (self.set.name_any(), pod.name_any());
        let lower = verb.to_lowercase();
        let (reason, message, warning) = match failure {
            None => (
                format!("Successful{verb}"),
                format!("{lower} Pod {name} in StatefulSet {set} successful"),
                false,
            ),
            Some(e) => {
                let why = api_message(e);
                (
                    format!("Failed{verb}"),
                    format!("{lower} Pod {name} in StatefulSet {set} failed error: {why}"),
                    true,
                )
            }
        };
        record(&self.ctx.client, MANAGER, self.set.as_ref(), warning, &reason, message);
    }

    fn err(&self, action: &'static str) -> impl FnOnce(kube::Error) -> StatefulSetError {
        let key = self.key.to_string();
        move |source| StatefulSetError::Api { action, key, source }
    }

    fn spec(&self) -> &StatefulSetSpec {
        self.set.spec.as_ref().expect("synced sets have a spec")
    }
}

async fn sync(ctx: &Ctx, key: &str) -> Result<Action, StatefulSetError> {
    let (ns, name) = split_key(key);
    let ns = ns.unwrap_or("default");
    let Some(set) = ctx.sets.get(&ObjectRef::new(name).within(ns)) else {
        return Ok(Action::Done);
    };
    let Some(spec) = set.spec.as_ref() else { return Ok(Action::Done) };
    if podutil::selector_is_empty(&spec.selector) {
        return Ok(Action::Done);
    }
    let err = |action: &'static str| {
        let key = key.to_string();
        move |source| StatefulSetError::Api { action, key, source }
    };
    let pods_api: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);
    let revs_api: Api<ControllerRevision> = Api::namespaced(ctx.client.clone(), ns);
    let set_name = set.name_any();
    let mut recheck = OwnerRecheck::new(ctx.client.clone(), set.as_ref());
    let pods = history::claim_pods(
        &pods_api,
        &ctx.pods,
        set.as_ref(),
        &mut recheck,
        &spec.selector,
        |p| {
            parent_and_ordinal(p.metadata.name.as_deref().unwrap_or(""))
                .is_some_and(|(parent, _)| parent == set_name)
        },
    )
    .await
    .map_err(err("claim pods"))?;
    let pods: Vec<Arc<Pod>> = pods
        .into_iter()
        .filter(|p| {
            parent_and_ordinal(p.metadata.name.as_deref().unwrap_or(""))
                .is_some_and(|(parent, _)| parent == set_name)
        })
        .collect();
    let revisions =
        history::claim(&revs_api, &ctx.revisions, set.as_ref(), &mut recheck, &spec.selector)
            .await
            .map_err(err("claim revisions"))?;

    // The update revision is the current template's; the current one is the status's.
    let status = set.status.clone().unwrap_or_default();
    let mut collision = status.collision_count.unwrap_or(0);
    let data = history::template_patch(&spec.template);
    let next = history::next_number(&revisions);
    let equal = revisions.iter().rposition(|r| history::same_data(r, &data));
    let update_rev = match equal {
        Some(i) if i + 1 == revisions.len() => revisions[i].clone(),
        Some(i) => history::renumber(&revs_api, &revisions[i], next)
            .await
            .map_err(err("renumber a revision"))?,
        None => {
            let labels = spec.template.metadata.as_ref().and_then(|m| m.labels.clone());
            let rev = history::new_revision(
                set.as_ref(),
                &labels.unwrap_or_default(),
                set.annotations().clone(),
                data,
                next,
                Some(collision),
            );
            history::create(&revs_api, set.as_ref(), rev, &mut collision)
                .await
                .map_err(err("create a revision"))?
                .0
        }
    };
    let current_rev = status
        .current_revision
        .as_ref()
        .and_then(|n| revisions.iter().find(|r| &r.name_any() == n))
        .cloned()
        .unwrap_or_else(|| update_rev.clone());
    let view = View {
        ctx,
        key,
        set: set.clone(),
        pods_api,
        claims_api: Api::namespaced(ctx.client.clone(), ns),
        current_template: history::template_of(&current_rev).unwrap_or(spec.template.clone()),
        current_name: current_rev.name_any(),
        update_name: update_rev.name_any(),
        min_ready: spec.min_ready_seconds.unwrap_or(0),
    };

    let mut requeue = None;
    if set.metadata.deletion_timestamp.is_none() {
        requeue = update_pods(&view, &pods).await?;
    }
    let status_requeue = write_status(&view, &pods, collision).await?;
    requeue = match (requeue, status_requeue) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };

    // Old revisions no pod uses are dropped beyond revisionHistoryLimit.
    let limit = spec.revision_history_limit.unwrap_or(10).max(0) as usize;
    let live = |r: &ControllerRevision| {
        let n = r.name_any();
        n == view.current_name || n == view.update_name || pods.iter().any(|p| revision_of(p) == n)
    };
    history::truncate(&revs_api, &revisions, &live, limit)
        .await
        .map_err(err("delete old revisions"))?;
    Ok(requeue.map_or(Action::Done, Action::RequeueAfter))
}

/// Creates, deletes and replaces pods; returns when to look again for a time-based wait.
async fn update_pods(
    view: &View<'_>,
    pods: &[Arc<Pod>],
) -> Result<Option<Duration>, StatefulSetError> {
    let spec = view.spec();
    let start = spec.ordinals.as_ref().and_then(|o| o.start).unwrap_or(0).max(0);
    let count = spec.replicas.unwrap_or(1).max(0);
    let monotonic = spec.pod_management_policy.as_deref() != Some("Parallel");
    let mut slots: Vec<Option<Arc<Pod>>> = vec![None; count as usize];
    let mut condemned: Vec<Arc<Pod>> = vec![];
    for p in pods {
        let ord = ordinal_of(p);
        if ord >= start && ord < start + count {
            slots[(ord - start) as usize] = Some(p.clone());
        } else if ord >= 0 {
            condemned.push(p.clone());
        }
    }
    condemned.sort_by_key(|p| ordinal_of(p));
    // The lowest unhealthy ordinal, missing pods included.
    let first_unhealthy = slots
        .iter()
        .enumerate()
        .filter(|(_, p)| p.as_ref().is_none_or(|p| !healthy(p)))
        .map(|(i, _)| start + i as i32)
        .chain(condemned.iter().filter(|p| !healthy(p)).map(|p| ordinal_of(p)))
        .min();
    let strategy = spec.update_strategy.as_ref();
    let on_delete = strategy.and_then(|s| s.type_.as_deref()) == Some("OnDelete");
    let partition = strategy
        .and_then(|s| s.rolling_update.as_ref())
        .and_then(|r| r.partition)
        .unwrap_or(0)
        .max(0);
    let now = Utc::now();
    let mut requeue = None;

    for (i, slot) in slots.iter().enumerate() {
        let ord = start + i as i32;
        if let Some(p) = slot {
            if matches!(phase(p), "Failed" | "Succeeded") && !terminating(p) {
                tracing::info!(statefulset = %view.key, pod = %p.name_any(), "recreating finished pod");
                delete_pod(view, p).await?;
                if monotonic {
                    return Ok(None);
                }
                continue;
            }
        }
        let Some(p) = slot else {
            // Pods below the partition are made from the current revision.
            let (template, revision) = if !on_delete && (i as i32) < partition {
                (&view.current_template, view.current_name.as_str())
            } else {
                (&spec.template, view.update_name.as_str())
            };
            ensure_claims(view, ord, None).await?;
            let pod = new_pod(&view.set, template, ord, revision);
            match view.pods_api.create(&PostParams::default(), &pod).await {
                Ok(_) => {
                    tracing::debug!(statefulset = %view.key, pod = %pod.name_any(), "created pod");
                    view.pod_event("Create", &pod, None);
                }
                Err(kube::Error::Api(e)) if e.code == 409 => {}
                Err(kube::Error::Api(e))
                    if e.code == 403 && e.message.contains("being terminated") =>
                {
                    return Ok(None)
                }
                Err(e) => {
                    view.pod_event("Create", &pod, Some(&e));
                    return Err(view.err("create a pod")(e));
                }
            }
            if monotonic {
                return Ok(None);
            }
            continue;
        };
        if terminating(p) {
            if monotonic {
                return Ok(None);
            }
            continue;
        }
        if monotonic && !running_and_ready(p) {
            return Ok(None);
        }
        if monotonic && !podutil::is_available(p, view.min_ready, now) {
            return Ok(Some(Duration::from_secs(view.min_ready.max(1) as u64)));
        }
        if !identity_matches(view, p, ord) {
            let name = p.name_any();
            let patch = json!({"metadata": {"labels": {
                POD_NAME_LABEL: name,
                POD_INDEX_LABEL: ord.to_string(),
            }}});
            let pp = PatchParams { field_manager: Some(MANAGER.into()), ..Default::default() };
            match view.pods_api.patch(&name, &pp, &Patch::Merge(patch)).await {
                Ok(_) => view.pod_event("Update", p, None),
                Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
                Err(e) => {
                    view.pod_event("Update", p, Some(&e));
                    return Err(view.err("update a pod's identity")(e));
                }
            }
        }
        ensure_claims(view, ord, Some((p, true))).await?;
    }

    // Scale down: highest ordinal first; in order, only a healthy pod or the first unhealthy.
    for p in condemned.iter().rev() {
        if terminating(p) {
            if monotonic {
                return Ok(requeue);
            }
            continue;
        }
        if monotonic && !running_and_ready(p) && first_unhealthy != Some(ordinal_of(p)) {
            return Ok(requeue);
        }
        ensure_claims(view, ordinal_of(p), Some((p, false))).await?;
        tracing::info!(statefulset = %view.key, pod = %p.name_any(), "deleting pod for scale down");
        delete_pod(view, p).await?;
        if monotonic {
            return Ok(requeue);
        }
    }

    if on_delete {
        return Ok(requeue);
    }
    // Rolling update: the highest ordinal not at the update revision goes, one at a time.
    for i in (partition.min(count) as usize..slots.len()).rev() {
        let Some(p) = &slots[i] else { continue };
        if revision_of(p) != view.update_name && !terminating(p) {
            tracing::info!(statefulset = %view.key, pod = %p.name_any(), "deleting pod for update");
            delete_pod(view, p).await?;
            return Ok(requeue);
        }
        if !healthy(p) {
            return Ok(requeue);
        }
        if !podutil::is_available(p, view.min_ready, now) {
            requeue = Some(Duration::from_secs(view.min_ready.max(1) as u64));
            return Ok(requeue);
        }
    }
    Ok(requeue)
}

fn identity_matches(view: &View<'_>, pod: &Pod, ordinal: i32) -> bool {
    let labels = pod.labels();
    labels.get(POD_NAME_LABEL) == pod.metadata.name.as_ref()
        && labels.get(POD_INDEX_LABEL) == Some(&ordinal.to_string())
        && pod.namespace() == view.set.namespace()
}

async fn delete_pod(view: &View<'_>, pod: &Pod) -> Result<(), StatefulSetError> {
    let dp = DeleteParams {
        preconditions: Some(Preconditions {
            uid: pod.metadata.uid.clone(),
            resource_version: None,
        }),
        ..Default::default()
    };
    match view.pods_api.delete(&pod.name_any(), &dp).await {
        Ok(_) => {
            view.pod_event("Delete", pod, None);
            Ok(())
        }
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => Ok(()),
        Err(e) => {
            view.pod_event("Delete", pod, Some(&e));
            Err(view.err("delete a pod")(e))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_give_parents_and_ordinals() {
        assert_eq!(parent_and_ordinal("web-0"), Some(("web", 0)));
        assert_eq!(parent_and_ordinal("my-db-12"), Some(("my-db", 12)));
        assert_eq!(parent_and_ordinal("web-x"), None);
        assert_eq!(parent_and_ordinal("web"), None);
        assert_eq!(claim_name("data", "web", 2), "data-web-2");
    }

    #[test]
    fn pods_get_identity_storage_and_revision() {
        let set: StatefulSet = serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "default", "uid": "u1"},
            "spec": {
                "serviceName": "nginx",
                "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "c", "image": "i"}],
                             "volumes": [{"name": "data", "emptyDir": {}}, {"name": "tmp", "emptyDir": {}}]}},
                "volumeClaimTemplates": [{"metadata": {"name": "data"}, "spec": {}}],
            },
        }))
        .unwrap();
        let t = set.spec.as_ref().unwrap().template.clone();
        let pod = new_pod(&set, &t, 3, "web-abc");
        assert_eq!(pod.metadata.name.as_deref(), Some("web-3"));
        let labels = pod.metadata.labels.clone().unwrap();
        assert_eq!(labels[POD_NAME_LABEL], "web-3");
        assert_eq!(labels[POD_INDEX_LABEL], "3");
        assert_eq!(labels[CONTROLLER_REVISION_HASH_LABEL], "web-abc");
        let spec = pod.spec.unwrap();
        assert_eq!(
            (spec.hostname.as_deref(), spec.subdomain.as_deref()),
            (Some("web-3"), Some("nginx"))
        );
        let vols = spec.volumes.unwrap();
        assert_eq!(vols.len(), 2);
        assert_eq!(vols[0].persistent_volume_claim.as_ref().unwrap().claim_name, "data-web-3");
        assert_eq!(vols[1].name, "tmp");
    }
}
