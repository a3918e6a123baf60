//! The pod garbage collector. Every period it force-deletes: finished pods (Succeeded or
//! Failed) above the threshold, evicted ones first and then the oldest; pods bound to nodes that
//! no longer exist, once the node has been missing for the quarantine time and a fresh read
//! confirms it (pods not yet finished are first marked Failed with a DisruptionTarget
//! condition); terminating pods that were never scheduled; and terminating pods on nodes that
//! are not ready and carry the node.kubernetes.io/out-of-service taint.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Node, Pod, PodCondition};
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions};
use kube::runtime::reflector::Store;
use kube::runtime::watcher;
use kube::{Api, Client, ResourceExt};
use serde_json::json;

use super::informer;
use super::informers::{Informers, StoreReady};
use super::podutil::{self, key_of};

/// The taint that marks a node as out of service (its terminating pods may go).
pub const TAINT_OUT_OF_SERVICE: &str = "node.kubernetes.io/out-of-service";
const MANAGER: &str = "pod-garbage-collector";

/// When and how much the collector deletes.
#[derive(Clone, Debug)]
pub struct PodGcOptions {
    /// Finished pods kept before the oldest are deleted (--terminated-pod-gc-threshold; 0: no
    /// limit).
    pub terminated_threshold: usize,
    /// How often the collector runs (upstream: 20 s).
    pub period: Duration,
    /// How long a node must be missing before its pods go (upstream: 40 s).
    pub quarantine: Duration,
}

impl Default for PodGcOptions {
    fn default() -> Self {
        PodGcOptions {
            terminated_threshold: 12500,
            period: Duration::from_secs(20),
            quarantine: Duration::from_secs(40),
        }
    }
}

/// What ends the collector.
#[derive(Debug, thiserror::Error)]
pub enum PodGcError {
    #[error("an informer of the pod garbage collector stopped")]
    InformerStopped,
}

struct Ctx {
    client: Client,
    opts: PodGcOptions,
    pods: Store<Pod>,
    nodes: Store<Node>,
}

/// Runs the collector until an informer stops.
pub async fn run(
    client: Client,
    informers: Informers,
    opts: PodGcOptions,
) -> Result<(), PodGcError> {
    let (pods, pods_task) = informers.spawn(
        "podgc-pod-informer",
        Api::<Pod>::all(client.clone()),
        watcher::Config::default(),
        |_| {},
    );
    let (nodes, nodes_task) = informers.spawn(
        "podgc-node-informer",
        Api::<Node>::all(client.clone()),
        watcher::Config::default(),
        |_| {},
    );
    let _guard = super::AbortOnDrop(vec![pods_task.abort_handle(), nodes_task.abort_handle()]);
    let ready = futures::future::join(pods.ready(), nodes.ready()).await;
    if ready.0.is_err() || ready.1.is_err() {
        return Err(PodGcError::InformerStopped);
    }
    let ctx = Arc::new(Ctx { client, opts, pods, nodes });
    let gc = informer::spawn_named("podgc", async move {
        let mut missing: HashMap<String, Instant> = HashMap::new();
        let mut tick = tokio::time::interval(ctx.opts.period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            gc_pass(&ctx, &mut missing).await;
        }
    });
    let _gc = super::AbortOnDrop(vec![gc.abort_handle()]);
    tokio::select! {
        _ = gc => {}
        _ = pods_task => {}
        _ = nodes_task => {}
    }
    Err(PodGcError::InformerStopped)
}

fn phase(pod: &Pod) -> &str {
    pod.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("")
}

fn node_of(pod: &Pod) -> &str {
    pod.spec.as_ref().and_then(|s| s.node_name.as_deref()).unwrap_or("")
}

async fn gc_pass(ctx: &Ctx, missing: &mut HashMap<String, Instant>) {
    let pods = ctx.pods.state();
    let nodes = ctx.nodes.state();
    if ctx.opts.terminated_threshold > 0 {
        gc_terminated(ctx, &pods).await;
    }
    gc_terminating_out_of_service(ctx, &pods, &nodes).await;
    gc_orphaned(ctx, &pods, &nodes, missing).await;
    for pod in pods.iter().filter(|p| p.metadata.deletion_timestamp.is_some()) {
        if node_of(pod).is_empty() {
            force_delete(ctx, pod, None).await;
        }
    }
}

/// Deletes the finished pods above the threshold: evicted ones first, then the oldest.
async fn gc_terminated(ctx: &Ctx, pods: &[Arc<Pod>]) {
    let mut finished: Vec<&Arc<Pod>> =
        pods.iter().filter(|p| matches!(phase(p), "Succeeded" | "Failed")).collect();
    let excess = finished.len().saturating_sub(ctx.opts.terminated_threshold);
    if excess == 0 {
        return;
    }
    finished.sort_by_key(|p| {
        let evicted = p.status.as_ref().and_then(|s| s.reason.as_deref()) == Some("Evicted");
        let created = p.metadata.creation_timestamp.as_ref().map(podutil::time_of);
        (!evicted, created, p.name_any())
    });
    tracing::info!(count = excess, "deleting finished pods above the threshold");
    for pod in finished.into_iter().take(excess) {
        force_delete(ctx, pod, None).await;
    }
}

/// Deletes terminating pods on out-of-service nodes that are not ready.
async fn gc_terminating_out_of_service(ctx: &Ctx, pods: &[Arc<Pod>], nodes: &[Arc<Node>]) {
    let out: HashSet<String> = nodes
        .iter()
        .filter(|n| {
            let ready = n
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"))
                .is_some_and(|c| c.status == "True");
            let tainted = n
                .spec
                .as_ref()
                .and_then(|s| s.taints.as_ref())
                .is_some_and(|ts| ts.iter().any(|t| t.key == TAINT_OUT_OF_SERVICE));
            !ready && tainted
        })
        .map(|n| n.name_any())
        .collect();
    for pod in pods {
        if pod.metadata.deletion_timestamp.is_some() && out.contains(node_of(pod)) {
            let reason = ("DeletionByPodGC", "PodGC: node is out-of-service");
            force_delete(ctx, pod, Some(reason)).await;
        }
    }
}

/// Deletes the pods of nodes that have been missing for the quarantine time.
async fn gc_orphaned(
    ctx: &Ctx,
    pods: &[Arc<Pod>],
    nodes: &[Arc<Node>],
    missing: &mut HashMap<String, Instant>,
) {
    let existing: HashSet<String> = nodes.iter().map(|n| n.name_any()).collect();
    let now = Instant::now();
    let mut wanted: HashSet<String> = HashSet::new();
    for pod in pods {
        let node = node_of(pod);
        if !node.is_empty() && !existing.contains(node) {
            wanted.insert(node.to_string());
            missing.entry(node.to_string()).or_insert(now);
        }
    }
    missing.retain(|n, _| wanted.contains(n));
    let api: Api<Node> = Api::all(ctx.client.clone());
    let mut gone: HashSet<String> = HashSet::new();
    for (node, since) in missing.iter() {
        if now.duration_since(*since) < ctx.opts.quarantine {
            continue;
        }
        // The cache may lag: only a fresh read that finds no node counts.
        if let Ok(None) = api.get_opt(node).await {
            gone.insert(node.clone());
        }
    }
    for pod in pods {
        if gone.contains(node_of(pod)) {
            tracing::info!(pod = %key_of(pod.as_ref()), node = node_of(pod), "deleting pod of a missing node");
            let reason = ("DeletionByPodGC", "PodGC: node no longer exists");
            force_delete(ctx, pod, Some(reason)).await;
        }
    }
    for node in gone {
        missing.remove(&node);
    }
}

/// Deletes a pod at once; a pod not yet finished is first marked Failed, with a DisruptionTarget
/// condition when `reason` says why.
async fn force_delete(ctx: &Ctx, pod: &Pod, reason: Option<(&str, &str)>) {
    let ns = pod.namespace().unwrap_or_default();
    let name = pod.name_any();
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    if !matches!(phase(pod), "Succeeded" | "Failed") {
        let mut conds: Vec<PodCondition> =
            pod.status.as_ref().and_then(|s| s.conditions.clone()).unwrap_or_default();
        if let Some((r, m)) = reason {
            conds.retain(|c| c.type_ != "DisruptionTarget");
            conds.push(PodCondition {
                type_: "DisruptionTarget".into(),
                status: "True".into(),
                reason: Some(r.into()),
                message: Some(m.into()),
                last_transition_time: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                    k8s_openapi::jiff::Timestamp::now(),
                )),
                ..Default::default()
            });
        }
        let patch = json!({"status": {"phase": "Failed", "conditions": conds}});
        let pp = PatchParams { field_manager: Some(MANAGER.into()), ..Default::default() };
        if let Err(e) = api.patch_status(&name, &pp, &Patch::Merge(&patch)).await {
            tracing::debug!(pod = %name, error = %e, "cannot mark pod failed");
        }
    }
    let dp = DeleteParams {
        grace_period_seconds: Some(0),
        preconditions: Some(Preconditions {
            uid: pod.metadata.uid.clone(),
            resource_version: None,
        }),
        ..Default::default()
    };
    match api.delete(&name, &dp).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
        Err(e) => tracing::warn!(pod = %format!("{ns}/{name}"), error = %e, "cannot delete pod"),
    }
}
