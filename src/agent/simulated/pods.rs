//! The pod lifecycle on simulated nodes, as a kubelet reports it: a bound pod becomes Running
//! with its conditions, IPs and container statuses; a pod whose restartPolicy is Never or
//! OnFailure (or that asks for a run time) ends after a while (Succeeded, or Failed with the
//! exit code asked for; a container that may restart restarts instead); a pod being deleted has
//! its containers stopped and is then removed with a final zero-grace delete.
//!
//! Simulated containers use nothing, so a running pod declares its usage in annotations:
//! [`CPU_USAGE_ANNOTATION`] and [`MEMORY_USAGE_ANNOTATION`] hold quantities ("250m", "64Mi")
//! for the whole pod, what a kubelet's summary would report and metrics-server would serve.
//! The HPA controller reads them (`controllers::horizontal::metrics`); a pod without them has
//! no sample, as a pod metrics-server has not scraped yet.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Api, Client};
use serde_json::{json, Value};

use super::node::{host_ip, pod_cidr_base};
use super::{
    SimulatedError, SimulatedOptions, EXIT_CODE_ANNOTATION, NEVER_READY_ANNOTATION,
    RUN_SECONDS_ANNOTATION,
};
use crate::controllers::informer::Change;
use crate::controllers::informers::StoreReady;
use crate::controllers::podutil::{key_of, split_key};
use crate::controllers::queue::WorkQueue;
use crate::controllers::worker::{run_workers, Action};

/// The pod's CPU usage, a quantity ("250m"), while it runs on a simulated node.
pub const CPU_USAGE_ANNOTATION: &str = "skiff.dev/simulate-cpu-usage";
/// The pod's memory usage, a quantity ("64Mi"), while it runs on a simulated node.
pub const MEMORY_USAGE_ANNOTATION: &str = "skiff.dev/simulate-memory-usage";

/// The usage a pod declares for `resource` ("cpu" or "memory"), as written in its annotation.
pub fn declared_usage<'a>(pod: &'a Pod, resource: &str) -> Option<&'a str> {
    match resource {
        "cpu" => annotation(pod, CPU_USAGE_ANNOTATION),
        "memory" => annotation(pod, MEMORY_USAGE_ANNOTATION),
        _ => None,
    }
}

/// How long a Job's containers run when no annotation says otherwise.
pub const DEFAULT_JOB_RUN: Duration = Duration::from_secs(1);
const MANAGER: &str = "skiff-simulated-kubelet";
/// How often the pods of a stopped node are looked at again.
const STOPPED_NODE_RECHECK: Duration = Duration::from_secs(1);

/// What can go wrong writing a pod's state.
#[derive(Debug, thiserror::Error)]
pub enum PodSyncError {
    #[error("cannot {action} pod {key}")]
    Api {
        action: &'static str,
        key: String,
        #[source]
        source: kube::Error,
    },
}

struct Ctx {
    client: Client,
    pods: Store<Pod>,
    /// Node name -> index.
    nodes: HashMap<String, usize>,
    /// Next pod address per node (the last octet).
    next_ip: Vec<AtomicU32>,
    switch: super::NodeSwitch,
}

/// Watches pods and drives those on the simulated nodes.
pub async fn run(client: Client, opts: Arc<SimulatedOptions>) -> Result<(), SimulatedError> {
    let nodes: HashMap<String, usize> = (0..opts.count).map(|i| (opts.node_name(i), i)).collect();
    let queue = WorkQueue::new();
    let (q, ours) = (queue.clone(), nodes.clone());
    let (pods, task) = opts.informers.spawn(
        "simulated-pod-informer",
        Api::<Pod>::all(client.clone()),
        watcher::Config::default(),
        move |c| {
            if let Change::Applied(pod) = c {
                let node = pod.spec.as_ref().and_then(|s| s.node_name.as_deref()).unwrap_or("");
                if ours.contains_key(node) {
                    q.add(key_of(pod));
                }
            }
        },
    );
    let _guard = crate::controllers::AbortOnDrop(vec![task.abort_handle()]);
    if pods.ready().await.is_err() {
        return Err(SimulatedError::Stopped);
    }
    let next_ip = (0..opts.count).map(|_| AtomicU32::new(2)).collect();
    let workers = opts.workers;
    let switch = opts.switch.clone();
    let ctx = Arc::new(Ctx { client, pods, nodes, next_ip, switch });
    let run = run_workers("simulated-kubelet", queue, workers, move |key| {
        let ctx = ctx.clone();
        async move { sync(&ctx, &key).await }
    });
    tokio::select! {
        _ = run => {}
        _ = task => {}
    }
    Err(SimulatedError::Stopped)
}

fn annotation<'a>(pod: &'a Pod, name: &str) -> Option<&'a str> {
    pod.metadata.annotations.as_ref()?.get(name).map(String::as_str)
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

async fn sync(ctx: &Ctx, key: &str) -> Result<Action, PodSyncError> {
    let (ns, name) = split_key(key);
    let ns = ns.unwrap_or("default");
    let Some(pod) = ctx.pods.get(&ObjectRef::new(name).within(ns)) else { return Ok(Action::Done) };
    let node = pod.spec.as_ref().and_then(|s| s.node_name.clone()).unwrap_or_default();
    let Some(&index) = ctx.nodes.get(&node) else { return Ok(Action::Done) };
    if ctx.switch.is_stopped(&node) {
        return Ok(Action::RequeueAfter(STOPPED_NODE_RECHECK));
    }
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);
    let err = |action: &'static str| {
        let key = key.to_string();
        move |source| PodSyncError::Api { action, key, source }
    };
    let phase = pod.status.as_ref().and_then(|s| s.phase.clone()).unwrap_or_default();

    if let Some(deleted_at) = pod.metadata.deletion_timestamp.as_ref() {
        // The containers stop at once (or after the stop time asked for, within the grace
        // period); then the pod is removed for good.
        let _ = deleted_at;
        // A finalizer (a Job's tracking finalizer) keeps the pod: it ends Failed, as a
        // kubelet reports a pod whose containers it killed.
        let kept = pod.metadata.finalizers.as_ref().is_some_and(|f| !f.is_empty());
        if kept && phase != "Succeeded" && phase != "Failed" {
            let started = pod
                .status
                .as_ref()
                .and_then(|s| s.start_time.as_ref())
                .map(crate::controllers::podutil::time_of)
                .unwrap_or_else(Utc::now);
            let status = finished_status(&pod, started, Utc::now(), 137);
            patch_status(&api, name, status).await.map_err(err("stop"))?;
            return Ok(Action::Done);
        }
        let dp = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: pod.metadata.uid.clone(),
                resource_version: None,
            }),
            ..Default::default()
        };
        return match api.delete(name, &dp).await {
            Ok(_) => Ok(Action::Done),
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => Ok(Action::Done),
            Err(e) => Err(err("delete")(e)),
        };
    }
    if phase == "Succeeded" || phase == "Failed" {
        return Ok(Action::Done);
    }
    let started = pod
        .status
        .as_ref()
        .and_then(|s| s.start_time.as_ref())
        .map(crate::controllers::podutil::time_of);
    let Some(started) = started.filter(|_| phase == "Running") else {
        let status = running_status(ctx, &pod, index, Utc::now(), 0);
        patch_status(&api, name, status).await.map_err(err("start"))?;
        return Ok(match run_time(&pod) {
            Some(d) => Action::RequeueAfter(d),
            None => Action::Done,
        });
    };
    let Some(run) = run_time(&pod) else { return Ok(Action::Done) };
    let restarts: i32 = pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|cs| cs.first())
        .map(|c| c.restart_count)
        .unwrap_or(0);
    // Each run of the containers lasts `run`; restarts began at start + restarts * run.
    let ends =
        started + chrono::Duration::from_std(run * (restarts as u32 + 1)).unwrap_or_default();
    let now = Utc::now();
    if now < ends {
        return Ok(Action::RequeueAfter(
            (ends - now).to_std().unwrap_or(Duration::from_millis(10)),
        ));
    }
    let code: i32 =
        annotation(&pod, EXIT_CODE_ANNOTATION).and_then(|v| v.parse().ok()).unwrap_or(0);
    let policy = pod.spec.as_ref().and_then(|s| s.restart_policy.as_deref()).unwrap_or("Always");
    let finishes = match policy {
        "Never" => true,
        "OnFailure" => code == 0,
        _ => false,
    };
    if finishes {
        let status = finished_status(&pod, started, now, code);
        patch_status(&api, name, status).await.map_err(err("finish"))?;
        return Ok(Action::Done);
    }
    let status = restarted_status(ctx, &pod, index, started, now, code, restarts + 1);
    patch_status(&api, name, status).await.map_err(err("restart"))?;
    Ok(Action::RequeueAfter(run))
}

/// How long the containers run before exiting, if they exit at all.
fn run_time(pod: &Pod) -> Option<Duration> {
    if let Some(s) = annotation(pod, RUN_SECONDS_ANNOTATION).and_then(|v| v.parse::<f64>().ok()) {
        return Some(Duration::from_secs_f64(s.max(0.0)));
    }
    let policy = pod.spec.as_ref().and_then(|s| s.restart_policy.as_deref()).unwrap_or("Always");
    if policy != "Always" || annotation(pod, EXIT_CODE_ANNOTATION).is_some() {
        return Some(DEFAULT_JOB_RUN);
    }
    None
}

async fn patch_status(api: &Api<Pod>, name: &str, status: Value) -> Result<(), kube::Error> {
    let pp = PatchParams { field_manager: Some(MANAGER.into()), ..Default::default() };
    match api.patch_status(name, &pp, &Patch::Merge(json!({ "status": status }))).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(e),
    }
}

fn pod_ip(ctx: &Ctx, pod: &Pod, index: usize) -> String {
    if let Some(ip) = pod.status.as_ref().and_then(|s| s.pod_ip.clone()).filter(|i| !i.is_empty()) {
        return ip;
    }
    if pod.spec.as_ref().and_then(|s| s.host_network).unwrap_or(false) {
        return host_ip(index);
    }
    let (a, b) = pod_cidr_base(index);
    let n = ctx.next_ip.get(index).map(|c| c.fetch_add(1, Ordering::Relaxed)).unwrap_or(2);
    format!("10.{a}.{b}.{}", 2 + n % 252)
}

fn container_names(pod: &Pod) -> Vec<(String, String)> {
    pod.spec
        .as_ref()
        .map(|s| {
            s.containers
                .iter()
                .map(|c| (c.name.clone(), c.image.clone().unwrap_or_default()))
                .collect()
        })
        .unwrap_or_default()
}

fn condition(
    kind: &str,
    ready: bool,
    at: &str,
    reason: Option<&str>,
    message: Option<String>,
) -> Value {
    let mut c = json!({"type": kind, "status": if ready { "True" } else { "False" },
                       "lastProbeTime": null, "lastTransitionTime": at});
    if let Some(r) = reason {
        c["reason"] = json!(r);
    }
    if let Some(m) = message {
        c["message"] = json!(m);
    }
    c
}

fn conditions(pod: &Pod, at: &str, ready: bool, init_done: bool) -> Value {
    let names: Vec<String> = container_names(pod).into_iter().map(|(n, _)| n).collect();
    let unready =
        (!ready).then(|| format!("containers with unready status: [{}]", names.join(" ")));
    let reason = (!ready).then_some("ContainersNotReady");
    json!([
        condition("PodReadyToStartContainers", true, at, None, None),
        condition("Initialized", init_done, at, None, None),
        condition("Ready", ready, at, reason, unready.clone()),
        condition("ContainersReady", ready, at, reason, unready),
        condition("PodScheduled", true, at, None, None),
    ])
}

fn base_status(ctx: &Ctx, pod: &Pod, index: usize, phase: &str, start: &str) -> Value {
    let ip = pod_ip(ctx, pod, index);
    let host = host_ip(index);
    let init: Vec<Value> = pod
        .spec
        .as_ref()
        .and_then(|s| s.init_containers.as_ref())
        .map(|ics| {
            ics.iter()
                .map(|c| {
                    json!({
                        "name": c.name, "image": c.image, "imageID": image_id(c.image.as_deref()),
                        "containerID": container_id(pod, &c.name, 0), "ready": true, "restartCount": 0,
                        "started": false,
                        "state": {"terminated": {"exitCode": 0, "reason": "Completed",
                                                 "startedAt": start, "finishedAt": start}},
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    let mut status = json!({
        "phase": phase,
        "hostIP": host, "hostIPs": [{"ip": host}],
        "podIP": ip, "podIPs": [{"ip": ip}],
        "startTime": start,
    });
    if !init.is_empty() {
        status["initContainerStatuses"] = json!(init);
    }
    status
}

fn image_id(image: Option<&str>) -> String {
    format!("skiff-simulated://{}", image.unwrap_or(""))
}

fn container_id(pod: &Pod, name: &str, restart: i32) -> String {
    format!("skiff-simulated://{}-{name}-{restart}", pod.metadata.uid.as_deref().unwrap_or(""))
}

fn running_status(ctx: &Ctx, pod: &Pod, index: usize, now: DateTime<Utc>, restarts: i32) -> Value {
    let at = rfc3339(now);
    let ready = annotation(pod, NEVER_READY_ANNOTATION) != Some("true");
    let mut status = base_status(ctx, pod, index, "Running", &at);
    status["conditions"] = conditions(pod, &at, ready, true);
    status["containerStatuses"] = json!(container_names(pod)
        .iter()
        .map(|(n, image)| json!({
            "name": n, "image": image, "imageID": image_id(Some(image)),
            "containerID": container_id(pod, n, restarts), "ready": ready,
            "restartCount": restarts, "started": true,
            "state": {"running": {"startedAt": at}},
        }))
        .collect::<Vec<_>>());
    status
}

fn finished_status(pod: &Pod, started: DateTime<Utc>, now: DateTime<Utc>, code: i32) -> Value {
    let (start, at) = (rfc3339(started), rfc3339(now));
    let reason = if code == 0 { "Completed" } else { "Error" };
    let restarts = pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|cs| cs.first())
        .map(|c| c.restart_count)
        .unwrap_or(0);
    let mut conds = conditions(pod, &at, false, true);
    if let Some(list) = conds.as_array_mut() {
        for c in list.iter_mut() {
            if c["type"] == "Ready" || c["type"] == "ContainersReady" {
                c["reason"] = json!("PodCompleted");
                c.as_object_mut().map(|o| o.remove("message"));
            }
            if c["type"] == "PodReadyToStartContainers" {
                c["status"] = json!("False");
            }
        }
    }
    json!({
        "phase": if code == 0 { "Succeeded" } else { "Failed" },
        "conditions": conds,
        "containerStatuses": container_names(pod).iter().map(|(n, image)| json!({
            "name": n, "image": image, "imageID": image_id(Some(image)),
            "containerID": container_id(pod, n, restarts), "ready": false,
            "restartCount": restarts, "started": false,
            "state": {"terminated": {"exitCode": code, "reason": reason,
                                     "startedAt": start, "finishedAt": at,
                                     "containerID": container_id(pod, n, restarts)}},
        })).collect::<Vec<_>>(),
    })
}

fn restarted_status(
    ctx: &Ctx,
    pod: &Pod,
    index: usize,
    started: DateTime<Utc>,
    now: DateTime<Utc>,
    code: i32,
    restarts: i32,
) -> Value {
    let mut status = running_status(ctx, pod, index, now, restarts);
    status["startTime"] = json!(rfc3339(started));
    let reason = if code == 0 { "Completed" } else { "Error" };
    if let Some(list) = status["containerStatuses"].as_array_mut() {
        for c in list.iter_mut() {
            c["lastState"] = json!({"terminated": {"exitCode": code, "reason": reason,
                                                   "startedAt": rfc3339(started), "finishedAt": rfc3339(now)}});
        }
    }
    status
}
