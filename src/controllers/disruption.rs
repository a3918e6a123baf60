//! The disruption controller (upstream's pkg/controller/disruption): keeps the status of every
//! PodDisruptionBudget current — the pods its selector picks in its namespace, how many of them
//! are healthy (Ready, not being deleted, not just evicted), how many must be (minAvailable, or
//! the expected count less maxUnavailable, percentages taken of the scale of the pods'
//! controllers: ReplicationController, Deployment, ReplicaSet, StatefulSet or any kind with a
//! scale subresource), the disruptions that leaves, observedGeneration and the
//! DisruptionAllowed condition (SufficientPods / InsufficientPods, SyncFailed when the status
//! cannot be computed). Entries the eviction subresource adds to status.disruptedPods are kept
//! until their pod is being deleted or gone, or for at most [`DELETION_TIMEOUT`]. Pods whose
//! DisruptionTarget condition went stale (set, but the pod never deleted) get it reset to False.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::{Pod, ReplicationController};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    Condition, LabelSelector, ObjectMeta, OwnerReference, Time,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, PostParams};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Api, Client, Resource, ResourceExt};
use parking_lot::Mutex;

use super::events::record;
use super::informer::Change;
use super::informers::{Informers, StoreReady};
use super::ownerindex::{lookup, PodIndex};
use super::podutil::{self, key_of, split_key};
use super::queue::WorkQueue;
use super::worker::{run_workers, Action};

/// How long an entry of status.disruptedPods is trusted: the eviction that added it should have
/// deleted its pod by then.
pub const DELETION_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a DisruptionTarget condition may stay on a pod that is not being deleted.
pub const STALE_POD_DISRUPTION_TIMEOUT: Duration = Duration::from_secs(120);
/// The status condition this controller keeps.
pub const DISRUPTION_ALLOWED: &str = "DisruptionAllowed";
const COMPONENT: &str = "controllermanager";

/// What can go wrong syncing a budget.
#[derive(Debug, thiserror::Error)]
pub enum DisruptionError {
    #[error("cannot {action} {key}")]
    Api {
        action: &'static str,
        key: String,
        #[source]
        source: kube::Error,
    },
    #[error("found no controllers for pod {0:?}")]
    NoController(String),
    #[error("{0} does not implement the scale subresource")]
    NoScale(String),
    #[error("invalid selector: {0}")]
    InvalidSelector(String),
    #[error("invalid value for IntOrString: {0}")]
    InvalidIntOrPercent(String),
    #[error("an informer of the disruption controller stopped")]
    InformerStopped,
}

impl DisruptionError {
    fn is_conflict(&self) -> bool {
        matches!(self, DisruptionError::Api { source: kube::Error::Api(e), .. } if e.code == 409)
    }
}

struct Ctx {
    client: Client,
    budgets: Store<PodDisruptionBudget>,
    pods: Store<Pod>,
    pod_index: PodIndex,
    replica_sets: Store<ReplicaSet>,
    deployments: Store<Deployment>,
    stateful_sets: Store<StatefulSet>,
    controllers: Store<ReplicationController>,
}

/// Runs the controller with `workers` concurrent syncs until an informer stops.
pub async fn run(
    client: Client,
    informers: Informers,
    workers: usize,
) -> Result<(), DisruptionError> {
    let queue = WorkQueue::new();
    let stale_queue = WorkQueue::new();
    let q = queue.clone();
    let (budgets, budgets_task) = informers.spawn(
        "disruption-pdb-informer",
        Api::<PodDisruptionBudget>::all(client.clone()),
        watcher::Config::default(),
        move |c| match c {
            Change::Applied(b) | Change::Deleted(b) => q.add(key_of(b)),
            Change::Synced => {}
        },
    );
    let (q, sq, index) = (queue.clone(), stale_queue.clone(), PodBudgets::new(budgets.clone()));
    let pod_index = PodIndex::default();
    let idx = pod_index.clone();
    let (pods, pods_task) = informers.spawn(
        "disruption-pod-informer",
        Api::<Pod>::all(client.clone()),
        watcher::Config::default(),
        move |c| match c {
            Change::Applied(p) => {
                idx.observe(&c);
                index.changed(p, false).into_iter().for_each(|k| q.add(k));
                if let Some(wait) = stale_disruption_wait(p, Utc::now()) {
                    sq.add_after(key_of(p), wait);
                }
            }
            Change::Deleted(p) => {
                idx.observe(&c);
                index.changed(p, true).into_iter().for_each(|k| q.add(k))
            }
            Change::Synced => {}
        },
    );
    let (replica_sets, rs_task) =
        lister::<ReplicaSet>(&informers, &client, "disruption-replicaset-informer");
    let (deployments, d_task) =
        lister::<Deployment>(&informers, &client, "disruption-deployment-informer");
    let (stateful_sets, ss_task) =
        lister::<StatefulSet>(&informers, &client, "disruption-statefulset-informer");
    let (controllers, rc_task) = lister::<ReplicationController>(
        &informers,
        &client,
        "disruption-replicationcontroller-informer",
    );
    let tasks = vec![budgets_task, pods_task, rs_task, d_task, ss_task, rc_task];
    let _guard = super::AbortOnDrop(tasks.iter().map(|t| t.abort_handle()).collect());
    let ready = futures::future::join3(
        futures::future::join(budgets.ready(), pods.ready()),
        futures::future::join(replica_sets.ready(), deployments.ready()),
        futures::future::join(stateful_sets.ready(), controllers.ready()),
    )
    .await;
    let all_ready = [ready.0 .0, ready.0 .1, ready.1 .0, ready.1 .1, ready.2 .0, ready.2 .1]
        .iter()
        .all(Result::is_ok);
    if !all_ready {
        return Err(DisruptionError::InformerStopped);
    }
    let ctx = Arc::new(Ctx {
        client,
        budgets,
        pods,
        pod_index,
        replica_sets,
        deployments,
        stateful_sets,
        controllers,
    });
    let c = ctx.clone();
    let workers = run_workers("disruption", queue, workers, move |key| {
        let ctx = c.clone();
        async move { sync(&ctx, &key).await }
    });
    let stale_workers = run_workers("disruption-stale-pod", stale_queue, 1, move |key| {
        let ctx = ctx.clone();
        async move { sync_stale_pod(&ctx, &key).await }
    });
    tokio::select! {
        _ = workers => {}
        _ = stale_workers => {}
        _ = futures::future::select_all(tasks) => {}
    }
    Err(DisruptionError::InformerStopped)
}

/// An informer used only as a cache (no handler), as upstream's listers of the pods' controllers.
fn lister<K>(
    informers: &Informers,
    client: &Client,
    name: &str,
) -> (Store<K>, tokio::task::JoinHandle<()>)
where
    K: Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    informers.spawn(name, Api::<K>::all(client.clone()), watcher::Config::default(), |_| {})
}

/// Which budgets select each pod, so that a pod whose labels changed also wakes the budgets it
/// left.
struct PodBudgets {
    budgets: Store<PodDisruptionBudget>,
    last: Mutex<HashMap<String, Vec<String>>>,
}

impl PodBudgets {
    fn new(budgets: Store<PodDisruptionBudget>) -> PodBudgets {
        PodBudgets { budgets, last: Mutex::new(HashMap::new()) }
    }

    /// The keys of the budgets selecting `pod` now or before this change.
    fn changed(&self, pod: &Pod, deleted: bool) -> Vec<String> {
        let ns = pod.namespace().unwrap_or_default();
        let now: Vec<String> = self
            .budgets
            .state()
            .iter()
            .filter(|b| b.namespace().as_deref() == Some(ns.as_str()))
            .filter(|b| selects(b, &pod.metadata).unwrap_or(false))
            .map(|b| key_of(b.as_ref()))
            .collect();
        let key = key_of(pod);
        let mut last = self.last.lock();
        let before = if deleted || now.is_empty() {
            last.remove(&key).unwrap_or_default()
        } else {
            last.insert(key, now.clone()).unwrap_or_default()
        };
        let all: BTreeSet<String> = now.into_iter().chain(before).collect();
        all.into_iter().collect()
    }
}

/// Whether the budget's selector picks the object: a missing selector picks nothing, an empty
/// one everything (policy/v1).
fn selects(pdb: &PodDisruptionBudget, meta: &ObjectMeta) -> Result<bool, DisruptionError> {
    let Some(sel) = pdb.spec.as_ref().and_then(|s| s.selector.as_ref()) else {
        return Ok(false);
    };
    check_selector(sel)?;
    let empty = BTreeMap::new();
    Ok(podutil::selector_matches(sel, meta.labels.as_ref().unwrap_or(&empty)))
}

fn check_selector(sel: &LabelSelector) -> Result<(), DisruptionError> {
    for req in sel.match_expressions.iter().flatten() {
        let values = req.values.as_deref().unwrap_or(&[]);
        match req.operator.as_str() {
            "In" | "NotIn" if values.is_empty() => {
                return Err(DisruptionError::InvalidSelector(format!(
                    "for 'in', 'notin' operators, values set can't be empty (key {:?})",
                    req.key
                )))
            }
            "In" | "NotIn" => {}
            "Exists" | "DoesNotExist" if !values.is_empty() => {
                return Err(DisruptionError::InvalidSelector(format!(
                    "values set must be empty for exists and does not exist (key {:?})",
                    req.key
                )))
            }
            "Exists" | "DoesNotExist" => {}
            other => {
                return Err(DisruptionError::InvalidSelector(format!(
                    "{other:?} is not a valid label selector operator"
                )))
            }
        }
    }
    Ok(())
}

async fn sync(ctx: &Ctx, key: &str) -> Result<Action, DisruptionError> {
    let (ns, name) = split_key(key);
    let ns = ns.unwrap_or("default");
    let Some(pdb) = ctx.budgets.get(&ObjectRef::new(name).within(ns)) else {
        return Ok(Action::Done);
    };
    let now = Utc::now();
    match try_sync(ctx, &pdb, now).await {
        Ok(action) => Ok(action),
        Err(e) if e.is_conflict() => Err(e),
        Err(e) => {
            tracing::warn!(budget = %key, error = %super::worker::error_chain(&e), "cannot sync the budget; allowing no disruption");
            fail_safe(ctx, &pdb, &e).await?;
            Ok(Action::Done)
        }
    }
}

async fn try_sync(
    ctx: &Ctx,
    pdb: &PodDisruptionBudget,
    now: DateTime<Utc>,
) -> Result<Action, DisruptionError> {
    let ns = pdb.namespace().unwrap_or_default();
    let pods = pods_of(ctx, pdb, &ns)?;
    let (expected, desired, unmanaged) = match expected_pod_count(ctx, pdb, &pods).await {
        Ok(counts) => counts,
        Err(e) => {
            record(
                &ctx.client,
                COMPONENT,
                pdb,
                true,
                "CalculateExpectedPodCountFailed",
                format!("Failed to calculate the number of expected pods: {e}"),
            );
            return Err(e);
        }
    };
    let Disrupted { kept, recheck, not_deleted } = disrupted_pods(pdb, &pods, now);
    let healthy = count_healthy(&pods, &kept, now);
    let written = update_status(ctx, pdb, healthy, desired, expected, kept).await?;
    if written {
        for pod in &not_deleted {
            tracing::info!(pod = %key_of(pod.as_ref()), budget = %key_of(pdb), "pod was expected to be deleted but it wasn't");
            let ns = pdb.namespace().unwrap_or_default();
            let msg = format!(
                "Pod was expected by PDB {ns}/{} to be deleted but it wasn't",
                pdb.name_any()
            );
            record(&ctx.client, COMPONENT, pod.as_ref(), true, "NotDeleted", msg);
        }
        if pods.is_empty() {
            record(&ctx.client, COMPONENT, pdb, false, "NoPods", "No matching pods found".into());
        }
        if !unmanaged.is_empty() {
            let selector = pdb
                .spec
                .as_ref()
                .and_then(|s| s.selector.as_ref())
                .map(|s| serde_json::to_string(s).unwrap_or_default())
                .unwrap_or_default();
            record(&ctx.client, COMPONENT,
                pdb,
                true,
                "UnmanagedPods",
                format!(
                    "Pods selected by this PodDisruptionBudget (selector: {selector}) were found to be unmanaged. As a result, the status of the PDB cannot be calculated correctly, which may result in undefined behavior. To account for these pods please set \".spec.minAvailable\" field of the PDB to an integer value."
                ),
            );
        }
    }
    Ok(match recheck {
        Some(at) => Action::RequeueAfter((at - now).to_std().unwrap_or(Duration::ZERO)),
        None => Action::Done,
    })
}

/// The pods the budget's selector picks in its namespace.
fn pods_of(
    ctx: &Ctx,
    pdb: &PodDisruptionBudget,
    ns: &str,
) -> Result<Vec<Arc<Pod>>, DisruptionError> {
    let mut out = vec![];
    for pod in lookup(&ctx.pods, &ctx.pod_index.in_namespace(ns)) {
        if pod.namespace().as_deref() == Some(ns) && selects(pdb, &pod.metadata)? {
            out.push(pod);
        }
    }
    Ok(out)
}

/// (expected pods, desired healthy, names of pods without a controller).
async fn expected_pod_count(
    ctx: &Ctx,
    pdb: &PodDisruptionBudget,
    pods: &[Arc<Pod>],
) -> Result<(i32, i32, Vec<String>), DisruptionError> {
    let spec = pdb.spec.as_ref();
    if let Some(max_unavailable) = spec.and_then(|s| s.max_unavailable.as_ref()) {
        let (expected, unmanaged) = expected_scale(ctx, pods).await?;
        let max = scaled_value(max_unavailable, expected)?;
        return Ok((expected, (expected - max).max(0), unmanaged));
    }
    match spec.and_then(|s| s.min_available.as_ref()) {
        Some(IntOrString::Int(n)) => Ok((pods.len() as i32, *n, vec![])),
        Some(min @ IntOrString::String(_)) => {
            let (expected, unmanaged) = expected_scale(ctx, pods).await?;
            Ok((expected, scaled_value(min, expected)?, unmanaged))
        }
        None => Ok((0, 0, vec![])),
    }
}

/// An int, or a percentage of `total` rounded up.
fn scaled_value(v: &IntOrString, total: i32) -> Result<i32, DisruptionError> {
    match v {
        IntOrString::Int(n) => Ok(*n),
        IntOrString::String(s) => {
            let pct: i64 = s
                .strip_suffix('%')
                .and_then(|p| p.parse().ok())
                .ok_or_else(|| DisruptionError::InvalidIntOrPercent(format!("{s:?}")))?;
            let scaled = (pct * i64::from(total) + 99).div_euclid(100);
            Ok(scaled.clamp(i64::from(i32::MIN), i64::from(i32::MAX)) as i32)
        }
    }
}

/// The sum of the scales of the pods' controllers (each counted once), and the pods without
/// a controller.
async fn expected_scale(
    ctx: &Ctx,
    pods: &[Arc<Pod>],
) -> Result<(i32, Vec<String>), DisruptionError> {
    let mut scales: HashMap<String, i32> = HashMap::new();
    let mut unmanaged = vec![];
    for pod in pods {
        let Some(owner) = podutil::controller_of(&pod.metadata) else {
            unmanaged.push(pod.name_any());
            continue;
        };
        if scales.contains_key(&owner.uid) {
            continue;
        }
        let ns = pod.namespace().unwrap_or_default();
        match controller_scale(ctx, owner, &ns).await? {
            Some((uid, scale)) => {
                scales.insert(uid, scale);
            }
            None => return Err(DisruptionError::NoController(pod.name_any())),
        }
    }
    Ok((scales.values().sum(), unmanaged))
}

fn group_of(api_version: &str) -> &str {
    api_version.split_once('/').map(|(g, _)| g).unwrap_or("")
}

fn is_kind(owner: &OwnerReference, kind: &str, groups: &[&str]) -> bool {
    owner.kind == kind && groups.contains(&group_of(&owner.api_version))
}

/// The controller `owner` names, if it exists with that uid, and its scale: upstream's finders
/// in order (ReplicationController, Deployment through its ReplicaSet, a ReplicaSet no
/// Deployment controls, StatefulSet), then the scale subresource of any other kind.
async fn controller_scale(
    ctx: &Ctx,
    owner: &OwnerReference,
    ns: &str,
) -> Result<Option<(String, i32)>, DisruptionError> {
    let same = |m: &ObjectMeta, uid: &str| m.uid.as_deref() == Some(uid);
    if is_kind(owner, "ReplicationController", &[""]) {
        if let Some(rc) = ctx.controllers.get(&ObjectRef::new(&owner.name).within(ns)) {
            if same(&rc.metadata, &owner.uid) {
                let n = rc.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
                return Ok(Some((owner.uid.clone(), n)));
            }
        }
    }
    if is_kind(owner, "ReplicaSet", &["apps", "extensions"]) {
        if let Some(rs) = ctx.replica_sets.get(&ObjectRef::new(&owner.name).within(ns)) {
            if same(&rs.metadata, &owner.uid) {
                match podutil::controller_of(&rs.metadata) {
                    Some(d) if is_kind(d, "Deployment", &["apps", "extensions"]) => {
                        if let Some(dep) = ctx.deployments.get(&ObjectRef::new(&d.name).within(ns))
                        {
                            if same(&dep.metadata, &d.uid) {
                                let n = dep.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
                                return Ok(Some((d.uid.clone(), n)));
                            }
                        }
                    }
                    Some(d) if d.kind == "Deployment" => {}
                    _ => {
                        let n = rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
                        return Ok(Some((owner.uid.clone(), n)));
                    }
                }
            }
        }
    }
    if is_kind(owner, "StatefulSet", &["apps"]) {
        if let Some(ss) = ctx.stateful_sets.get(&ObjectRef::new(&owner.name).within(ns)) {
            if same(&ss.metadata, &owner.uid) {
                let n = ss.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
                return Ok(Some((owner.uid.clone(), n)));
            }
        }
    }
    scale_subresource(ctx, owner, ns).await
}

/// The scale of any kind through its scale subresource (found by discovery).
async fn scale_subresource(
    ctx: &Ctx,
    owner: &OwnerReference,
    ns: &str,
) -> Result<Option<(String, i32)>, DisruptionError> {
    let (group, version) = match owner.api_version.split_once('/') {
        Some((g, v)) => (g, v),
        None => ("", owner.api_version.as_str()),
    };
    let gvk = GroupVersionKind::gvk(group, version, &owner.kind);
    let api_err = |action: &'static str| {
        let key = format!("{} {ns}/{}", owner.kind, owner.name);
        move |source| DisruptionError::Api { action, key, source }
    };
    let (ar, caps): (ApiResource, _) =
        kube::discovery::pinned_kind(&ctx.client, &gvk).await.map_err(api_err("discover"))?;
    let api: Api<DynamicObject> = Api::namespaced_with(ctx.client.clone(), ns, &ar);
    match api.get_subresource("scale", &owner.name).await {
        Ok(scale) => {
            if scale.metadata.uid.as_deref() != Some(owner.uid.as_str()) {
                return Ok(None);
            }
            let n = scale.data.pointer("/spec/replicas").and_then(|v| v.as_i64()).unwrap_or(0);
            Ok(Some((owner.uid.clone(), n as i32)))
        }
        Err(kube::Error::Api(e)) if e.code == 404 => {
            if caps.subresources.iter().any(|(sub, _)| sub.plural.ends_with("scale")) {
                Ok(None)
            } else {
                let gr = if ar.group.is_empty() {
                    ar.plural.clone()
                } else {
                    format!("{}.{}", ar.plural, ar.group)
                };
                Err(DisruptionError::NoScale(gr))
            }
        }
        Err(e) => Err(api_err("read the scale of")(e)),
    }
}

/// What is left of status.disruptedPods: the entries still to trust (their pod exists, is not
/// being deleted and the timeout has not passed), when the earliest of them runs out, and the
/// pods whose entry ran out although they were never deleted.
struct Disrupted {
    kept: BTreeMap<String, Time>,
    recheck: Option<DateTime<Utc>>,
    not_deleted: Vec<Arc<Pod>>,
}

fn disrupted_pods(pdb: &PodDisruptionBudget, pods: &[Arc<Pod>], now: DateTime<Utc>) -> Disrupted {
    let mut out = Disrupted { kept: BTreeMap::new(), recheck: None, not_deleted: vec![] };
    let Some(listed) = pdb.status.as_ref().and_then(|s| s.disrupted_pods.as_ref()) else {
        return out;
    };
    for pod in pods {
        if pod.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let name = pod.name_any();
        let Some(at) = listed.get(&name) else { continue };
        let expires = podutil::time_of(at) + chrono_of(DELETION_TIMEOUT);
        if expires < now {
            out.not_deleted.push(pod.clone());
        } else {
            out.recheck = Some(out.recheck.map_or(expires, |r| r.min(expires)));
            out.kept.insert(name, at.clone());
        }
    }
    out
}

fn chrono_of(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or_else(|_| chrono::Duration::zero())
}

/// Ready pods, leaving out those being deleted and those an eviction just took.
fn count_healthy(pods: &[Arc<Pod>], disrupted: &BTreeMap<String, Time>, now: DateTime<Utc>) -> i32 {
    let mut n = 0;
    for pod in pods {
        if pod.metadata.deletion_timestamp.is_some() {
            continue;
        }
        if let Some(at) = disrupted.get(&pod.name_any()) {
            if podutil::time_of(at) + chrono_of(DELETION_TIMEOUT) > now {
                continue;
            }
        }
        if podutil::is_ready(pod) {
            n += 1;
        }
    }
    n
}

/// Writes the computed status unless the budget already has it; returns whether it wrote.
async fn update_status(
    ctx: &Ctx,
    pdb: &PodDisruptionBudget,
    healthy: i32,
    desired: i32,
    expected: i32,
    disrupted: BTreeMap<String, Time>,
) -> Result<bool, DisruptionError> {
    // No disruption while no pod is expected: a budget whose first pods just appeared is safe
    // until this controller has counted them.
    let allowed = if expected <= 0 { 0 } else { (healthy - desired).max(0) };
    let generation = pdb.metadata.generation.unwrap_or(0);
    let current = pdb.status.clone().unwrap_or_default();
    let current_disrupted = current.disrupted_pods.clone().unwrap_or_default();
    if current.current_healthy == healthy
        && current.desired_healthy == desired
        && current.expected_pods == expected
        && current.disruptions_allowed == allowed
        && current_disrupted == disrupted
        && current.observed_generation.unwrap_or(0) == generation
        && conditions_up_to_date(pdb)
    {
        return Ok(false);
    }
    let mut status = PodDisruptionBudgetStatus {
        current_healthy: healthy,
        desired_healthy: desired,
        expected_pods: expected,
        disruptions_allowed: allowed,
        disrupted_pods: (!disrupted.is_empty()).then_some(disrupted),
        observed_generation: Some(generation),
        conditions: current.conditions.clone(),
    };
    let (ok, reason) =
        if allowed > 0 { ("True", "SufficientPods") } else { ("False", "InsufficientPods") };
    set_condition(&mut status, ok, reason, String::new());
    write_status(ctx, pdb, status).await?;
    Ok(true)
}

/// Whether DisruptionAllowed says what disruptionsAllowed does, for the current generation.
fn conditions_up_to_date(pdb: &PodDisruptionBudget) -> bool {
    let Some(status) = pdb.status.as_ref() else { return false };
    let Some(cond) = status.conditions.iter().flatten().find(|c| c.type_ == DISRUPTION_ALLOWED)
    else {
        return false;
    };
    if status.observed_generation.unwrap_or(0) != pdb.metadata.generation.unwrap_or(0) {
        return false;
    }
    if status.disruptions_allowed > 0 {
        cond.status == "True" && cond.reason == "SufficientPods"
    } else {
        cond.status == "False" && cond.reason == "InsufficientPods"
    }
}

/// Sets DisruptionAllowed (a new transition time only when its status changes).
fn set_condition(status: &mut PodDisruptionBudgetStatus, ok: &str, reason: &str, message: String) {
    let observed = status.observed_generation;
    let conditions = status.conditions.get_or_insert_with(Vec::new);
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    match conditions.iter_mut().find(|c| c.type_ == DISRUPTION_ALLOWED) {
        Some(c) => {
            if c.status != ok {
                c.last_transition_time = now;
            }
            c.status = ok.into();
            c.reason = reason.into();
            c.message = message;
            c.observed_generation = observed;
        }
        None => conditions.push(Condition {
            type_: DISRUPTION_ALLOWED.into(),
            status: ok.into(),
            reason: reason.into(),
            message,
            observed_generation: observed,
            last_transition_time: now,
        }),
    }
}

/// When the status cannot be computed: allow no disruption, and say why (SyncFailed).
async fn fail_safe(
    ctx: &Ctx,
    pdb: &PodDisruptionBudget,
    err: &DisruptionError,
) -> Result<(), DisruptionError> {
    let mut status = pdb.status.clone().unwrap_or_default();
    status.disruptions_allowed = 0;
    set_condition(&mut status, "False", "SyncFailed", err.to_string());
    write_status(ctx, pdb, status).await
}

/// PUT /status with the budget's resourceVersion (a conflict is retried from a fresh cache).
async fn write_status(
    ctx: &Ctx,
    pdb: &PodDisruptionBudget,
    status: PodDisruptionBudgetStatus,
) -> Result<(), DisruptionError> {
    let ns = pdb.namespace().unwrap_or_default();
    let api: Api<PodDisruptionBudget> = Api::namespaced(ctx.client.clone(), &ns);
    let mut new = pdb.clone();
    new.status = Some(status);
    match api.replace_status(&pdb.name_any(), &PostParams::default(), &new).await {
        Ok(_) => Ok(()),
        // Gone meanwhile: nothing to keep.
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(source) => Err(DisruptionError::Api {
            action: "update the status of budget",
            key: key_of(pdb),
            source,
        }),
    }
}

/// How long until the pod's DisruptionTarget condition counts as stale (None: it never will —
/// no such condition, the pod is being deleted or finished, or the kubelet set it).
fn stale_disruption_wait(pod: &Pod, now: DateTime<Utc>) -> Option<Duration> {
    if pod.metadata.deletion_timestamp.is_some() {
        return None;
    }
    let status = pod.status.as_ref()?;
    if matches!(status.phase.as_deref(), Some("Succeeded" | "Failed")) {
        return None;
    }
    let cond = status.conditions.iter().flatten().find(|c| c.type_ == "DisruptionTarget")?;
    if cond.status != "True" || cond.reason.as_deref() == Some("TerminationByKubelet") {
        return None;
    }
    let since = cond.last_transition_time.as_ref().map(podutil::time_of).unwrap_or(now);
    let stale_at = since + chrono_of(STALE_POD_DISRUPTION_TIMEOUT);
    Some((stale_at - now).to_std().unwrap_or(Duration::ZERO))
}

/// Resets a stale DisruptionTarget condition to False.
async fn sync_stale_pod(ctx: &Ctx, key: &str) -> Result<Action, DisruptionError> {
    let (ns, name) = split_key(key);
    let ns = ns.unwrap_or("default");
    let Some(pod) = ctx.pods.get(&ObjectRef::new(name).within(ns)) else {
        return Ok(Action::Done);
    };
    let Some(wait) = stale_disruption_wait(&pod, Utc::now()) else { return Ok(Action::Done) };
    if !wait.is_zero() {
        return Ok(Action::RequeueAfter(wait));
    }
    let mut new = (*pod).clone();
    if let Some(c) = new
        .status
        .as_mut()
        .and_then(|s| s.conditions.as_mut())
        .and_then(|cs| cs.iter_mut().find(|c| c.type_ == "DisruptionTarget"))
    {
        c.status = "False".into();
        c.reason = None;
        c.message = None;
        c.last_transition_time = Some(Time(k8s_openapi::jiff::Timestamp::now()));
    }
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);
    match api.replace_status(name, &PostParams::default(), &new).await {
        Ok(_) => {
            tracing::info!(pod = %key, "reset stale DisruptionTarget condition to False");
            Ok(Action::Done)
        }
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(Action::Done),
        Err(source) => Err(DisruptionError::Api {
            action: "reset the DisruptionTarget condition of pod",
            key: key.to_string(),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentages_round_up() {
        let pct = |s: &str| IntOrString::String(s.into());
        assert_eq!(scaled_value(&pct("50%"), 3).unwrap(), 2);
        assert_eq!(scaled_value(&pct("34%"), 3).unwrap(), 2);
        assert_eq!(scaled_value(&pct("0%"), 3).unwrap(), 0);
        assert_eq!(scaled_value(&IntOrString::Int(1), 3).unwrap(), 1);
        assert!(scaled_value(&pct("half"), 3).is_err());
    }
}
