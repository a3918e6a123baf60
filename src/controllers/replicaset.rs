//! The ReplicaSet controller: keeps the number of active pods a ReplicaSet controls equal to
//! spec.replicas. It adopts orphan pods its selector matches, releases owned pods whose labels no
//! longer match, creates missing pods in slow-start batches (1, 2, 4, ...) and deletes surplus
//! ones (unscheduled, pending and unready first), and reports replicas, fullyLabeledReplicas,
//! readyReplicas, availableReplicas and observedGeneration in status. Each pod it creates or
//! deletes is an event on the set (SuccessfulCreate, SuccessfulDelete, or the Failed ones).
//!
//! The same controller runs ReplicationControllers ([`Replicated`] is what it needs of a kind;
//! `replicationcontroller.rs` presents an RC as a ReplicaSet), as upstream's does.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use k8s_openapi::api::apps::v1::{ReplicaSet, ReplicaSetCondition, ReplicaSetStatus};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, OwnerReference, Time};
use kube::api::{Patch, PatchParams};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Api, Client, ResourceExt};
use serde_json::json;

use super::expectations::Expectations;
use super::informer::Change;
use super::informers::{Informers, StoreReady};
use super::ownerindex::PodIndex;
use super::podcontrol::PodControl;
use super::podutil::api_message;
use super::podutil::{self, controller_of, is_active, key_of, selector_matches, split_key};
use super::queue::WorkQueue;
use super::recheck::OwnerRecheck;
use super::worker::{run_workers, Action};

/// The condition a set carries while creating or deleting its pods fails.
const REPLICA_FAILURE: &str = "ReplicaFailure";
/// The most pods created or deleted in one sync (upstream's burstReplicas).
pub const BURST_REPLICAS: usize = 500;
/// What the controller needs of a kind it keeps replicas for.
pub trait Replicated:
    kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
    + Clone
    + std::fmt::Debug
    + serde::de::DeserializeOwned
    + Send
    + Sync
    + 'static
{
    /// The controller's name: task names and the field manager of its writes.
    const CONTROLLER: &'static str;
    /// The object as a ReplicaSet (same metadata; spec and status with the same meaning).
    fn view(&self) -> Cow<'_, ReplicaSet>;
    /// The pod selector.
    fn selector(&self) -> Option<Cow<'_, LabelSelector>>;
}

impl Replicated for ReplicaSet {
    const CONTROLLER: &'static str = "replicaset-controller";

    fn view(&self) -> Cow<'_, ReplicaSet> {
        Cow::Borrowed(self)
    }

    fn selector(&self) -> Option<Cow<'_, LabelSelector>> {
        self.spec.as_ref().map(|s| Cow::Borrowed(&s.selector))
    }
}

/// What can go wrong syncing a ReplicaSet.
#[derive(Debug, thiserror::Error)]
pub enum ReplicaSetError {
    #[error("cannot {action} for replica set {key}")]
    Api {
        action: &'static str,
        key: String,
        #[source]
        source: kube::Error,
    },
    #[error("an informer of the replicaset controller stopped")]
    InformerStopped,
}

struct Ctx<K: Replicated> {
    client: Client,
    sets: Store<K>,
    pods: Store<Pod>,
    /// The pods each set may claim (its own and its namespace's orphans).
    index: PodIndex,
    expectations: Expectations,
}

/// Runs the controller with `workers` concurrent syncs until an informer stops.
pub async fn run(
    client: Client,
    informers: Informers,
    workers: usize,
) -> Result<(), ReplicaSetError> {
    run_for::<ReplicaSet>(client, informers, workers).await
}

/// Runs the controller for kind `K`.
pub async fn run_for<K: Replicated>(
    client: Client,
    informers: Informers,
    workers: usize,
) -> Result<(), ReplicaSetError> {
    let queue = WorkQueue::new();
    let q = queue.clone();
    let name = K::CONTROLLER;
    let (sets, sets_task) = informers.spawn(
        name,
        Api::<K>::all(client.clone()),
        watcher::Config::default(),
        move |c| match c {
            Change::Applied(rs) | Change::Deleted(rs) => q.add(key_of(rs)),
            Change::Synced => {}
        },
    );
    let (q, sets_for_pods) = (queue.clone(), sets.clone());
    let index = PodIndex::default();
    let idx = index.clone();
    let (pods, pods_task) = informers.spawn(
        name,
        Api::<Pod>::all(client.clone()),
        watcher::Config::default(),
        move |c| match c {
            Change::Applied(pod) | Change::Deleted(pod) => {
                idx.observe(&c);
                for key in podutil::owners_by(
                    &sets_for_pods,
                    |k: &K| k.selector(),
                    &pod.metadata,
                    pod.metadata.deletion_timestamp.is_some(),
                ) {
                    q.add(key);
                }
            }
            Change::Synced => {}
        },
    );
    let _guard = super::AbortOnDrop(vec![sets_task.abort_handle(), pods_task.abort_handle()]);
    let ready = futures::future::join(sets.ready(), pods.ready());
    if ready.await.0.is_err() {
        return Err(ReplicaSetError::InformerStopped);
    }
    let ctx = Arc::new(Ctx { client, sets, pods, index, expectations: Expectations::default() });
    let workers = run_workers(name, queue, workers, move |key| {
        let ctx = ctx.clone();
        async move { sync(&ctx, &key).await }
    });
    tokio::select! {
        _ = workers => {}
        _ = sets_task => {}
        _ = pods_task => {}
    }
    Err(ReplicaSetError::InformerStopped)
}

async fn sync<K: Replicated>(ctx: &Ctx<K>, key: &str) -> Result<Action, ReplicaSetError> {
    let (ns, name) = split_key(key);
    let ns = ns.unwrap_or("default");
    let Some(owner) = ctx.sets.get(&ObjectRef::new(name).within(ns)) else {
        ctx.expectations.clear(key);
        return Ok(Action::Done);
    };
    let owner_ref = podutil::controller_ref(owner.as_ref());
    let rs = owner.view();
    let Some(spec) = rs.spec.as_ref() else { return Ok(Action::Done) };
    let uid = rs.uid().unwrap_or_default();
    let err = |action: &'static str| {
        let key = key.to_string();
        move |source| ReplicaSetError::Api { action, key, source }
    };
    let pods_api: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);

    // Claim: owned pods that still match, plus orphans that match (adopted).
    let mut owned: Vec<Arc<Pod>> = vec![];
    let mut recheck = OwnerRecheck::new(ctx.client.clone(), owner.as_ref());
    let claimable = ctx.index.claimable(ns, &uid);
    let claimable = claimable.iter().filter_map(|k| {
        let (_, pod_name) = split_key(k);
        ctx.pods.get(&ObjectRef::new(pod_name).within(ns))
    });
    for pod in claimable {
        if pod.namespace().as_deref() != Some(ns) {
            continue;
        }
        let matches = selector_matches(&spec.selector, pod.labels());
        match controller_of(&pod.metadata) {
            Some(r) if r.uid == uid => {
                if matches || rs.metadata.deletion_timestamp.is_some() {
                    owned.push(pod);
                } else {
                    release(&pods_api, &pod, &uid).await.map_err(err("release a pod"))?;
                }
            }
            Some(_) => {}
            None if matches
                && is_active(&pod)
                && rs.metadata.deletion_timestamp.is_none()
                && !podutil::selector_is_empty(&spec.selector) =>
            {
                if !recheck.may_adopt().await.map_err(err("read the owner"))? {
                    continue;
                }
                match adopt(&pods_api, &pod, &owner_ref).await {
                    Ok(()) => owned.push(pod),
                    Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
                    Err(e) => return Err(err("adopt a pod")(e)),
                }
            }
            None => {}
        }
    }
    let active: Vec<Arc<Pod>> = owned.iter().filter(|p| is_active(p)).cloned().collect();

    let satisfied = ctx.expectations.satisfied(
        key,
        |n| ctx.pods.get(&ObjectRef::new(n).within(ns)).is_some(),
        |u| !active.iter().any(|p| p.metadata.uid.as_deref() == Some(u)),
    );
    let managed = if satisfied && rs.metadata.deletion_timestamp.is_none() {
        manage_replicas(ctx, key, owner.as_ref(), &rs, &owner_ref, &active, &pods_api).await
    } else {
        Ok(())
    };

    // Status is written even when managing failed (its ReplicaFailure condition says so).
    let rs_api: Api<K> = Api::namespaced(ctx.client.clone(), ns);
    let (mut status, requeue) = compute_status(&rs, &active);
    let wanted = rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    replica_failure(&mut status, managed.as_ref().err(), active.len() as i32 - wanted);
    let current = rs.status.clone().unwrap_or_default();
    let changed = current.conditions != status.conditions
        || current.replicas != status.replicas
        || current.fully_labeled_replicas.unwrap_or(0)
            != status.fully_labeled_replicas.unwrap_or(0)
        || current.ready_replicas.unwrap_or(0) != status.ready_replicas.unwrap_or(0)
        || current.available_replicas.unwrap_or(0) != status.available_replicas.unwrap_or(0)
        || current.observed_generation != status.observed_generation;
    if changed {
        let patch = json!({"status": {
            "replicas": status.replicas,
            "fullyLabeledReplicas": status.fully_labeled_replicas,
            "readyReplicas": status.ready_replicas,
            "availableReplicas": status.available_replicas,
            "observedGeneration": status.observed_generation,
            "conditions": status.conditions,
        }});
        match rs_api
            .patch_status(
                name,
                &PatchParams { field_manager: Some(K::CONTROLLER.into()), ..Default::default() },
                &Patch::Merge(&patch),
            )
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => return Ok(Action::Done),
            Err(e) => return Err(err("update status")(e)),
        }
    }
    managed?;
    Ok(match requeue {
        Some(d) => Action::RequeueAfter(d),
        None => Action::Done,
    })
}

/// Creates or deletes pods so the active count approaches spec.replicas.
async fn manage_replicas<K: Replicated>(
    ctx: &Ctx<K>,
    key: &str,
    obj: &K,
    rs: &ReplicaSet,
    owner: &OwnerReference,
    active: &[Arc<Pod>],
    pods_api: &Api<Pod>,
) -> Result<(), ReplicaSetError> {
    let want = rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1).max(0) as usize;
    let have = active.len();
    let control = PodControl {
        client: &ctx.client,
        component: K::CONTROLLER,
        owner: obj,
        api: pods_api,
        expectations: &ctx.expectations,
        key,
    };
    let err = |action| move |source| ReplicaSetError::Api { action, key: key.to_string(), source };
    if have < want {
        let pod = pod_for(rs, owner.clone());
        let pods = vec![pod; (want - have).min(BURST_REPLICAS)];
        control.create(pods).await.map_err(err("create pods"))?;
    } else if have > want {
        let mut victims: Vec<&Arc<Pod>> = active.iter().collect();
        victims.sort_by_key(|p| deletion_rank(p));
        let victims = victims.into_iter().take((have - want).min(BURST_REPLICAS));
        control.delete(victims.map(|p| p.as_ref())).await.map_err(err("delete pods"))?;
    }
    Ok(())
}

/// The order pods are deleted in when scaling down: lower sorts first.
fn deletion_rank(pod: &Pod) -> (u8, u8, u8, i64, std::cmp::Reverse<String>) {
    let scheduled =
        pod.spec.as_ref().and_then(|s| s.node_name.as_deref()).is_some_and(|n| !n.is_empty());
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("");
    let phase_rank = match phase {
        "Pending" | "" => 0,
        "Unknown" => 1,
        _ => 2,
    };
    let restarts: i64 = pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .map(|cs| cs.iter().map(|c| i64::from(c.restart_count)).sum())
        .unwrap_or(0);
    let created = pod
        .metadata
        .creation_timestamp
        .as_ref()
        .map(|t| podutil::time_of(t).to_rfc3339())
        .unwrap_or_default();
    // Newer pods go first: compare creation times in reverse.
    (
        scheduled as u8,
        phase_rank,
        podutil::is_ready(pod) as u8,
        -restarts,
        std::cmp::Reverse(created),
    )
}

/// A pod for `rs`: the template's labels, annotations and spec, generateName from the set's
/// name, and the set as controlling owner.
pub fn pod_from_template(rs: &ReplicaSet) -> Pod {
    pod_for(rs, podutil::controller_ref(rs))
}

/// A pod from `rs`'s template with `owner` as its controller.
fn pod_for(rs: &ReplicaSet, owner: OwnerReference) -> Pod {
    let template = rs.spec.as_ref().and_then(|s| s.template.clone()).unwrap_or_default();
    let tmeta = template.metadata.unwrap_or_default();
    let mut prefix = format!("{}-", rs.name_any());
    if prefix.len() > 58 {
        prefix.truncate(57);
        prefix.push('-');
    }
    Pod {
        metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
            generate_name: Some(prefix),
            namespace: rs.namespace(),
            labels: tmeta.labels,
            annotations: tmeta.annotations,
            finalizers: tmeta.finalizers,
            owner_references: Some(vec![owner]),
            ..Default::default()
        },
        spec: template.spec,
        status: None,
    }
}

fn compute_status(rs: &ReplicaSet, active: &[Arc<Pod>]) -> (ReplicaSetStatus, Option<Duration>) {
    let spec = rs.spec.as_ref();
    let min_ready = spec.and_then(|s| s.min_ready_seconds).unwrap_or(0);
    let template_labels: BTreeMap<String, String> = spec
        .and_then(|s| s.template.as_ref())
        .and_then(|t| t.metadata.as_ref())
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    let now = Utc::now();
    let (mut labeled, mut ready, mut available) = (0, 0, 0);
    let mut requeue: Option<Duration> = None;
    for p in active {
        let labels = p.labels();
        if template_labels.iter().all(|(k, v)| labels.get(k) == Some(v)) {
            labeled += 1;
        }
        if podutil::is_ready(p) {
            ready += 1;
            if podutil::is_available(p, min_ready, now) {
                available += 1;
            } else {
                let d = Duration::from_secs(min_ready.max(1) as u64);
                requeue = Some(requeue.map_or(d, |r| r.min(d)));
            }
        }
    }
    let nz = |n: i32| (n > 0).then_some(n);
    let status = ReplicaSetStatus {
        replicas: active.len() as i32,
        fully_labeled_replicas: nz(labeled),
        ready_replicas: nz(ready),
        available_replicas: nz(available),
        observed_generation: rs.metadata.generation,
        conditions: rs.status.as_ref().and_then(|s| s.conditions.clone()),
        ..Default::default()
    };
    (status, requeue)
}

/// Sets the ReplicaFailure condition when managing pods failed and it is not yet set (reason
/// FailedCreate when pods were missing, FailedDelete when there were too many; the message is
/// the error's), and drops it once managing succeeds, as upstream does.
fn replica_failure(status: &mut ReplicaSetStatus, failure: Option<&ReplicaSetError>, diff: i32) {
    let conditions = status.conditions.get_or_insert_with(Vec::new);
    let has = conditions.iter().any(|c| c.type_ == REPLICA_FAILURE);
    match failure {
        Some(e) if !has => {
            let message = match e {
                ReplicaSetError::Api { source, .. } => api_message(source),
                other => other.to_string(),
            };
            let reason = match diff.cmp(&0) {
                std::cmp::Ordering::Less => Some("FailedCreate".to_string()),
                std::cmp::Ordering::Greater => Some("FailedDelete".to_string()),
                std::cmp::Ordering::Equal => None,
            };
            conditions.push(ReplicaSetCondition {
                type_: REPLICA_FAILURE.into(),
                status: "True".into(),
                reason,
                message: Some(message),
                last_transition_time: Some(Time(k8s_openapi::jiff::Timestamp::now())),
            });
        }
        None => conditions.retain(|c| c.type_ != REPLICA_FAILURE),
        Some(_) => {}
    }
    if conditions.is_empty() {
        status.conditions = None;
    }
}

async fn adopt(api: &Api<Pod>, pod: &Pod, owner: &OwnerReference) -> Result<(), kube::Error> {
    let patch = json!({"metadata": {
        "ownerReferences": [owner],
        "uid": pod.metadata.uid,
    }});
    api.patch(&pod.name_any(), &PatchParams::default(), &Patch::Strategic(&patch)).await.map(|_| ())
}

async fn release(api: &Api<Pod>, pod: &Pod, owner_uid: &str) -> Result<(), kube::Error> {
    let patch = json!({"metadata": {
        "ownerReferences": [{"$patch": "delete", "uid": owner_uid}],
        "uid": pod.metadata.uid,
    }});
    match api.patch(&pod.name_any(), &PatchParams::default(), &Patch::Strategic(&patch)).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => Ok(()),
        Err(e) => Err(e),
    }
}
