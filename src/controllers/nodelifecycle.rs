//! The node lifecycle controller, with upstream's taint-based eviction. Every monitor period it
//! looks at each node's Lease (kube-node-lease) and Ready heartbeat: a node heard from neither
//! within the grace period gets its Ready, MemoryPressure, DiskPressure and PIDPressure
//! conditions set to Unknown ("NodeStatusUnknown", "Kubelet stopped posting node status."). From
//! the conditions follow the taints: node.kubernetes.io/unreachable (Ready Unknown) or not-ready
//! (Ready False) as NoExecute and NoSchedule, the pressure, network-unavailable and
//! unschedulable NoSchedule taints, all removed when the condition clears. The pods of a node
//! that is not ready are marked Ready=False. When every node is down at once the controller
//! assumes the trouble is its own and adds no NoExecute taints (removing those it had added).
//!
//! The taint eviction half deletes the pods on nodes with NoExecute taints: at once when a
//! taint is not tolerated, else when the shortest matching tolerationSeconds has run out since
//! the taint was first seen on the pod's node (no tolerationSeconds: never). Evicted pods get
//! the DisruptionTarget condition and a TaintManagerEviction event.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, NodeCondition, Pod, PodCondition, Taint, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Api, Client, ResourceExt};
use serde_json::json;
use tokio::sync::Notify;

use super::informer::Change;
use super::informers::{Informers, StoreReady};
use super::podutil::{self, key_of};

/// The namespace of node Leases.
pub const NODE_LEASE_NAMESPACE: &str = "kube-node-lease";
/// The taint of a node whose Ready condition is Unknown.
pub const TAINT_UNREACHABLE: &str = "node.kubernetes.io/unreachable";
/// The taint of a node whose Ready condition is False.
pub const TAINT_NOT_READY: &str = "node.kubernetes.io/not-ready";
/// The reason of conditions set Unknown for lack of news.
pub const REASON_STATUS_UNKNOWN: &str = "NodeStatusUnknown";
/// The message of conditions set Unknown for lack of news.
pub const MESSAGE_STATUS_UNKNOWN: &str = "Kubelet stopped posting node status.";
const REASON_NEVER_UPDATED: &str = "NodeStatusNeverUpdated";
const MESSAGE_NEVER_UPDATED: &str = "Kubelet never posted node status.";
/// The conditions set Unknown when a node goes silent.
const WATCHED_CONDITIONS: &[&str] = &["Ready", "MemoryPressure", "DiskPressure", "PIDPressure"];
/// NoSchedule taints by condition (taint-nodes-by-condition): (condition, status, taint key).
const NO_SCHEDULE_TAINTS: &[(&str, &str, &str)] = &[
    ("Ready", "False", TAINT_NOT_READY),
    ("Ready", "Unknown", TAINT_UNREACHABLE),
    ("MemoryPressure", "True", "node.kubernetes.io/memory-pressure"),
    ("DiskPressure", "True", "node.kubernetes.io/disk-pressure"),
    ("PIDPressure", "True", "node.kubernetes.io/pid-pressure"),
    ("NetworkUnavailable", "True", "node.kubernetes.io/network-unavailable"),
];
const TAINT_UNSCHEDULABLE: &str = "node.kubernetes.io/unschedulable";
const MANAGER: &str = "node-lifecycle-controller";
const EVICTION_MANAGER: &str = "taint-eviction-controller";
/// The longest the eviction loop sleeps without a change.
const EVICTION_RECHECK: Duration = Duration::from_secs(1);

/// How the controller judges node health.
#[derive(Clone, Debug)]
pub struct NodeLifecycleOptions {
    /// How often node health is checked (upstream's --node-monitor-period, 5 s).
    pub monitor_period: Duration,
    /// How long a node may stay silent before it is Unknown (--node-monitor-grace-period).
    pub grace_period: Duration,
    /// The same for a node that never posted a Ready condition (--node-startup-grace-period).
    pub startup_grace_period: Duration,
}

impl Default for NodeLifecycleOptions {
    fn default() -> Self {
        NodeLifecycleOptions {
            monitor_period: Duration::from_secs(5),
            grace_period: Duration::from_secs(40),
            startup_grace_period: Duration::from_secs(60),
        }
    }
}

/// What ends the controller.
#[derive(Debug, thiserror::Error)]
pub enum NodeLifecycleError {
    #[error("an informer of the node lifecycle controller stopped")]
    InformerStopped,
}

struct Ctx {
    client: Client,
    opts: NodeLifecycleOptions,
    nodes: Store<Node>,
    leases: Store<Lease>,
    pods: Store<Pod>,
}

/// What was last heard from a node, and when.
struct Health {
    /// When news last came (a new heartbeat or lease renewal).
    probe: Instant,
    heartbeat: Option<Time>,
    lease_renewed: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime>,
}

/// Runs the controller until an informer stops.
pub async fn run(
    client: Client,
    informers: Informers,
    opts: NodeLifecycleOptions,
) -> Result<(), NodeLifecycleError> {
    let changed = Arc::new(Notify::new());
    let n = changed.clone();
    let (nodes, nodes_task) = informers.spawn(
        "nodelifecycle-node-informer",
        Api::<Node>::all(client.clone()),
        watcher::Config::default(),
        move |_| n.notify_one(),
    );
    let (leases, leases_task) = informers.spawn(
        "nodelifecycle-lease-informer",
        Api::<Lease>::namespaced(client.clone(), NODE_LEASE_NAMESPACE),
        watcher::Config::default(),
        |_| {},
    );
    let n = changed.clone();
    let (pods, pods_task) = informers.spawn(
        "nodelifecycle-pod-informer",
        Api::<Pod>::all(client.clone()),
        watcher::Config::default(),
        move |c| {
            if let Change::Applied(_) = c {
                n.notify_one()
            }
        },
    );
    let _guard = super::AbortOnDrop(vec![
        nodes_task.abort_handle(),
        leases_task.abort_handle(),
        pods_task.abort_handle(),
    ]);
    let ready = futures::future::join3(nodes.ready(), leases.ready(), pods.ready()).await;
    if ready.0.is_err() || ready.1.is_err() || ready.2.is_err() {
        return Err(NodeLifecycleError::InformerStopped);
    }
    let ctx = Arc::new(Ctx { client, opts, nodes, leases, pods });
    let monitor = super::informer::spawn_named("nodelifecycle-monitor", monitor_loop(ctx.clone()));
    let evictions =
        super::informer::spawn_named("taint-eviction", eviction_loop(ctx.clone(), changed.clone()));
    let _loops = super::AbortOnDrop(vec![monitor.abort_handle(), evictions.abort_handle()]);
    tokio::select! {
        _ = monitor => {}
        _ = evictions => {}
        _ = nodes_task => {}
        _ = leases_task => {}
        _ = pods_task => {}
    }
    Err(NodeLifecycleError::InformerStopped)
}

async fn monitor_loop(ctx: Arc<Ctx>) {
    let mut health: HashMap<String, Health> = HashMap::new();
    let mut halted = false;
    let mut tick = tokio::time::interval(ctx.opts.monitor_period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        monitor_pass(&ctx, &mut health, &mut halted).await;
    }
}

fn condition<'a>(node: &'a Node, kind: &str) -> Option<&'a NodeCondition> {
    node.status.as_ref()?.conditions.as_ref()?.iter().find(|c| c.type_ == kind)
}

fn now_time() -> Time {
    Time(k8s_openapi::jiff::Timestamp::now())
}

/// One look at every node: health, conditions, taints, pod readiness. `halted` says whether
/// the last pass found every node down.
async fn monitor_pass(ctx: &Ctx, health: &mut HashMap<String, Health>, halted: &mut bool) {
    let nodes = ctx.nodes.state();
    let names: HashSet<String> = nodes.iter().map(|n| n.name_any()).collect();
    health.retain(|n, _| names.contains(n));
    let mut current: Vec<Node> = Vec::with_capacity(nodes.len());
    for node in nodes {
        let name = node.name_any();
        let now = Instant::now();
        let h = health.entry(name.clone()).or_insert_with(|| Health {
            probe: now,
            heartbeat: None,
            lease_renewed: None,
        });
        let ready = condition(&node, "Ready");
        let heartbeat = ready.and_then(|c| c.last_heartbeat_time.clone());
        if heartbeat.is_some() && heartbeat != h.heartbeat {
            h.heartbeat = heartbeat;
            h.probe = now;
        }
        let lease = ctx.leases.get(&ObjectRef::new(&name).within(NODE_LEASE_NAMESPACE));
        let renewed = lease.and_then(|l| l.spec.as_ref().and_then(|s| s.renew_time.clone()));
        if let Some(r) = renewed {
            if h.lease_renewed.as_ref().is_none_or(|last| r.0 > last.0) {
                h.lease_renewed = Some(r);
                h.probe = now;
            }
        }
        let grace =
            if ready.is_none() { ctx.opts.startup_grace_period } else { ctx.opts.grace_period };
        let mut node = (*node).clone();
        if now.duration_since(h.probe) > grace {
            if let Some(updated) = mark_unknown(ctx, &node).await {
                node = updated;
            }
        }
        current.push(node);
    }
    // Every node down at once: the trouble is more likely ours; evict nobody.
    let all_down = !current.is_empty()
        && current.iter().all(|n| condition(n, "Ready").is_none_or(|c| c.status != "True"));
    if all_down && !*halted {
        tracing::warn!(nodes = current.len(), "no node is ready; taint-based evictions halted");
    } else if !all_down && *halted {
        tracing::info!(
            nodes = current.len(),
            "a node is ready again; taint-based evictions resume"
        );
    }
    *halted = all_down;
    for node in &current {
        update_taints(ctx, node, all_down).await;
        if condition(node, "Ready").is_some_and(|c| c.status != "True") {
            mark_pods_not_ready(ctx, &node.name_any()).await;
        }
    }
}

/// Sets the watched conditions of a silent node to Unknown; returns the node as written.
async fn mark_unknown(ctx: &Ctx, node: &Node) -> Option<Node> {
    let mut node = node.clone();
    let now = now_time();
    let created = node.metadata.creation_timestamp.clone();
    let status = node.status.get_or_insert_with(Default::default);
    let conds = status.conditions.get_or_insert_with(Vec::new);
    let mut changed = false;
    for kind in WATCHED_CONDITIONS {
        match conds.iter_mut().find(|c| c.type_ == *kind) {
            Some(c) if c.status == "Unknown" => {}
            Some(c) => {
                c.status = "Unknown".into();
                c.reason = Some(REASON_STATUS_UNKNOWN.into());
                c.message = Some(MESSAGE_STATUS_UNKNOWN.into());
                c.last_transition_time = Some(now.clone());
                changed = true;
            }
            None => {
                conds.push(NodeCondition {
                    type_: kind.to_string(),
                    status: "Unknown".into(),
                    reason: Some(REASON_NEVER_UPDATED.into()),
                    message: Some(MESSAGE_NEVER_UPDATED.into()),
                    last_heartbeat_time: created.clone(),
                    last_transition_time: Some(now.clone()),
                });
                changed = true;
            }
        }
    }
    if !changed {
        return None;
    }
    let name = node.name_any();
    tracing::info!(node = %name, "node stopped posting status; conditions set to Unknown");
    let api: Api<Node> = Api::all(ctx.client.clone());
    let pp = PostParams { field_manager: Some(MANAGER.into()), ..Default::default() };
    match api.replace_status(&name, &pp, &node).await {
        Ok(n) => {
            super::events::record(
                &ctx.client,
                MANAGER,
                &n,
                false,
                "NodeNotReady",
                format!("Node {name} status is now: NodeNotReady"),
            );
            Some(n)
        }
        Err(e) => {
            tracing::debug!(node = %name, error = %e, "cannot set node conditions; retrying");
            None
        }
    }
}

/// The taints this controller manages that `node` should carry, as (key, effect).
fn wanted_taints(node: &Node, evictions_halted: bool) -> BTreeMap<(String, String), ()> {
    let mut out = BTreeMap::new();
    for (kind, status, key) in NO_SCHEDULE_TAINTS {
        if condition(node, kind).is_some_and(|c| c.status == *status) {
            out.insert((key.to_string(), "NoSchedule".to_string()), ());
        }
    }
    if node.spec.as_ref().and_then(|s| s.unschedulable).unwrap_or(false) {
        out.insert((TAINT_UNSCHEDULABLE.to_string(), "NoSchedule".to_string()), ());
    }
    if !evictions_halted {
        match condition(node, "Ready").map(|c| c.status.as_str()) {
            Some("False") => {
                out.insert((TAINT_NOT_READY.into(), "NoExecute".into()), ());
            }
            Some("Unknown") => {
                out.insert((TAINT_UNREACHABLE.into(), "NoExecute".into()), ());
            }
            _ => {}
        }
    }
    out
}

fn managed(key: &str, effect: &str) -> bool {
    match effect {
        "NoSchedule" => {
            key == TAINT_UNSCHEDULABLE || NO_SCHEDULE_TAINTS.iter().any(|(_, _, k)| *k == key)
        }
        "NoExecute" => key == TAINT_NOT_READY || key == TAINT_UNREACHABLE,
        _ => false,
    }
}

/// Adds the managed taints the node lacks and removes those it no longer should carry.
async fn update_taints(ctx: &Ctx, node: &Node, evictions_halted: bool) {
    let wanted = wanted_taints(node, evictions_halted);
    let taints = node.spec.as_ref().and_then(|s| s.taints.clone()).unwrap_or_default();
    let mut next: Vec<Taint> = taints
        .iter()
        .filter(|t| {
            !managed(&t.key, &t.effect) || wanted.contains_key(&(t.key.clone(), t.effect.clone()))
        })
        .cloned()
        .collect();
    for (key, effect) in wanted.keys() {
        if !next.iter().any(|t| &t.key == key && &t.effect == effect) {
            next.push(Taint {
                key: key.clone(),
                effect: effect.clone(),
                time_added: Some(now_time()),
                value: None,
            });
        }
    }
    if next == taints {
        return;
    }
    let mut node = node.clone();
    node.spec.get_or_insert_with(Default::default).taints = (!next.is_empty()).then_some(next);
    let api: Api<Node> = Api::all(ctx.client.clone());
    let pp = PostParams { field_manager: Some(MANAGER.into()), ..Default::default() };
    if let Err(e) = api.replace(&node.name_any(), &pp, &node).await {
        tracing::debug!(node = %node.name_any(), error = %e, "cannot update node taints; retrying");
    }
}

/// Sets Ready=False on the pods of a node that is not ready.
async fn mark_pods_not_ready(ctx: &Ctx, node: &str) {
    for pod in ctx.pods.state() {
        if pod.spec.as_ref().and_then(|s| s.node_name.as_deref()) != Some(node)
            || !podutil::is_ready(&pod)
        {
            continue;
        }
        let mut pod = (*pod).clone();
        if let Some(c) = pod
            .status
            .as_mut()
            .and_then(|s| s.conditions.as_mut())
            .and_then(|cs| cs.iter_mut().find(|c| c.type_ == "Ready"))
        {
            c.status = "False".into();
            c.last_transition_time = Some(now_time());
        }
        let api: Api<Pod> =
            Api::namespaced(ctx.client.clone(), &pod.namespace().unwrap_or_default());
        let pp = PostParams { field_manager: Some(MANAGER.into()), ..Default::default() };
        match api.replace_status(&pod.name_any(), &pp, &pod).await {
            Ok(_) => tracing::debug!(pod = %key_of(&pod), node, "marked pod not ready"),
            Err(e) => tracing::debug!(pod = %key_of(&pod), error = %e, "cannot mark pod not ready"),
        }
    }
}

/// Whether a toleration covers a taint (upstream's ToleratesTaint).
pub fn tolerates(t: &Toleration, taint: &Taint) -> bool {
    let effect = t.effect.as_deref().unwrap_or("");
    if !effect.is_empty() && effect != taint.effect {
        return false;
    }
    let key = t.key.as_deref().unwrap_or("");
    if !key.is_empty() && key != taint.key {
        return false;
    }
    match t.operator.as_deref().unwrap_or("Equal") {
        "Exists" => true,
        "Equal" | "" => t.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or(""),
        _ => false,
    }
}

/// How long a pod with `tolerations` may stay on a node with NoExecute `taints`: None if some
/// taint is not tolerated (evict now), Some(None) if forever, else the shortest
/// tolerationSeconds among the tolerations used (the first matching one per taint).
pub fn toleration_time(taints: &[Taint], tolerations: &[Toleration]) -> Option<Option<Duration>> {
    let mut min: Option<Duration> = None;
    for taint in taints {
        let t = tolerations.iter().find(|t| tolerates(t, taint))?;
        if let Some(secs) = t.toleration_seconds {
            let d = Duration::from_secs(secs.max(0) as u64);
            min = Some(min.map_or(d, |m| m.min(d)));
        }
    }
    Some(min)
}

async fn eviction_loop(ctx: Arc<Ctx>, changed: Arc<Notify>) {
    // Pod key -> (uid, when its node's NoExecute taints were first seen for it).
    let mut tracked: HashMap<String, (String, Instant)> = HashMap::new();
    let mut evicted: HashSet<String> = HashSet::new();
    loop {
        let next = eviction_pass(&ctx, &mut tracked, &mut evicted).await;
        let wait = next.map_or(EVICTION_RECHECK, |at| {
            at.saturating_duration_since(Instant::now()).min(EVICTION_RECHECK)
        });
        tokio::select! {
            _ = changed.notified() => {
                // Let a burst of changes settle.
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// Evicts the pods whose time is up; returns when the next one is due.
async fn eviction_pass(
    ctx: &Ctx,
    tracked: &mut HashMap<String, (String, Instant)>,
    evicted: &mut HashSet<String>,
) -> Option<Instant> {
    let tainted: HashMap<String, Vec<Taint>> = ctx
        .nodes
        .state()
        .iter()
        .filter_map(|n| {
            let t: Vec<Taint> = n
                .spec
                .as_ref()
                .and_then(|s| s.taints.as_ref())
                .into_iter()
                .flatten()
                .filter(|t| t.effect == "NoExecute")
                .cloned()
                .collect();
            (!t.is_empty()).then(|| (n.name_any(), t))
        })
        .collect();
    if tainted.is_empty() {
        // No node has a NoExecute taint: nothing to evict or time, and no pod scan (a pass runs
        // after every pod change, so scanning here would cost O(pods) per pod write).
        tracked.clear();
        return None;
    }
    let now = Instant::now();
    let mut next: Option<Instant> = None;
    let mut seen: HashSet<String> = HashSet::new();
    let mut due: Vec<Arc<Pod>> = vec![];
    let pods = ctx.pods.state();
    {
        let uids: HashSet<&str> = pods.iter().filter_map(|p| p.metadata.uid.as_deref()).collect();
        evicted.retain(|u| uids.contains(u.as_str()));
    }
    for pod in pods {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        if pod.metadata.deletion_timestamp.is_some() || evicted.contains(&uid) {
            continue;
        }
        let Some(node) = pod.spec.as_ref().and_then(|s| s.node_name.as_deref()) else { continue };
        let Some(taints) = tainted.get(node) else { continue };
        let tolerations = pod.spec.as_ref().and_then(|s| s.tolerations.as_deref()).unwrap_or(&[]);
        let key = key_of(pod.as_ref());
        match toleration_time(taints, tolerations) {
            None => due.push(pod),
            Some(None) => {}
            Some(Some(limit)) => {
                seen.insert(key.clone());
                let entry = tracked.entry(key).or_insert_with(|| (uid.clone(), now));
                if entry.0 != uid {
                    *entry = (uid, now);
                }
                let at = entry.1 + limit;
                if at <= now {
                    due.push(pod);
                } else {
                    next = Some(next.map_or(at, |n: Instant| n.min(at)));
                }
            }
        }
    }
    tracked.retain(|k, _| seen.contains(k));
    for pod in due {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        if evict(ctx, &pod).await {
            evicted.insert(uid);
            tracked.remove(&key_of(pod.as_ref()));
        }
    }
    next
}

/// Marks the pod as a disruption target and deletes it; false if that failed (retried later).
async fn evict(ctx: &Ctx, pod: &Pod) -> bool {
    let ns = pod.namespace().unwrap_or_default();
    let name = pod.name_any();
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    tracing::info!(pod = %format!("{ns}/{name}"), "evicting pod from a NoExecute-tainted node");
    super::events::record(
        &ctx.client,
        EVICTION_MANAGER,
        pod,
        false,
        "TaintManagerEviction",
        format!("Marking for deletion Pod {ns}/{name}"),
    );
    let mut conds: Vec<PodCondition> = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default()
        .into_iter()
        .filter(|c| c.type_ != "DisruptionTarget")
        .collect();
    conds.push(PodCondition {
        type_: "DisruptionTarget".into(),
        status: "True".into(),
        reason: Some("DeletionByTaintManager".into()),
        message: Some("Taint manager: deleting due to NoExecute taint".into()),
        last_transition_time: Some(now_time()),
        ..Default::default()
    });
    let pp = PatchParams { field_manager: Some(EVICTION_MANAGER.into()), ..Default::default() };
    let patch = json!({"status": {"conditions": conds}});
    if let Err(e) = api.patch_status(&name, &pp, &Patch::Merge(&patch)).await {
        if !matches!(&e, kube::Error::Api(ae) if ae.code == 404) {
            tracing::debug!(pod = %name, error = %e, "cannot mark pod as a disruption target");
        }
    }
    let dp = DeleteParams {
        preconditions: Some(Preconditions {
            uid: pod.metadata.uid.clone(),
            resource_version: None,
        }),
        ..Default::default()
    };
    match api.delete(&name, &dp).await {
        Ok(_) => true,
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => true,
        Err(e) => {
            tracing::warn!(pod = %name, error = %e, "cannot evict pod; retrying");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn taint(key: &str) -> Taint {
        Taint { key: key.into(), effect: "NoExecute".into(), ..Default::default() }
    }

    fn tol(key: Option<&str>, op: &str, secs: Option<i64>) -> Toleration {
        Toleration {
            key: key.map(String::from),
            operator: Some(op.into()),
            effect: Some("NoExecute".into()),
            toleration_seconds: secs,
            value: None,
        }
    }

    #[test]
    fn toleration_times_as_upstream() {
        let unreachable = [taint(TAINT_UNREACHABLE)];
        assert_eq!(toleration_time(&unreachable, &[]), None, "not tolerated: now");
        let t = [tol(Some(TAINT_UNREACHABLE), "Exists", Some(300))];
        assert_eq!(toleration_time(&unreachable, &t), Some(Some(Duration::from_secs(300))));
        let t = [tol(Some(TAINT_UNREACHABLE), "Exists", None)];
        assert_eq!(toleration_time(&unreachable, &t), Some(None), "forever");
        let t = [tol(None, "Exists", Some(5)), tol(Some(TAINT_UNREACHABLE), "Exists", Some(2))];
        assert_eq!(
            toleration_time(&unreachable, &t),
            Some(Some(Duration::from_secs(5))),
            "the first matching toleration counts"
        );
        let both = [taint(TAINT_UNREACHABLE), taint("other")];
        let t = [tol(Some(TAINT_UNREACHABLE), "Exists", Some(2))];
        assert_eq!(toleration_time(&both, &t), None);
    }

    #[test]
    fn taints_follow_conditions() {
        let node: Node = serde_json::from_value(json!({
            "metadata": {"name": "n"},
            "spec": {"unschedulable": true},
            "status": {"conditions": [
                {"type": "Ready", "status": "Unknown"},
                {"type": "DiskPressure", "status": "True"},
            ]},
        }))
        .unwrap();
        let keys: Vec<(String, String)> = wanted_taints(&node, false).into_keys().collect();
        let has = |k: &str, e: &str| keys.contains(&(k.to_string(), e.to_string()));
        assert!(has(TAINT_UNREACHABLE, "NoExecute") && has(TAINT_UNREACHABLE, "NoSchedule"));
        assert!(has("node.kubernetes.io/disk-pressure", "NoSchedule"));
        assert!(has(TAINT_UNSCHEDULABLE, "NoSchedule"));
        assert!(!has(TAINT_NOT_READY, "NoExecute"));
        let halted: Vec<_> = wanted_taints(&node, true).into_keys().collect();
        assert!(!halted.iter().any(|(_, e)| e == "NoExecute"));
    }
}
