//! Registration and heartbeats of simulated nodes: each Node is created (or its status taken
//! over) with its capacity, addresses and conditions; its Lease in kube-node-lease is renewed
//! every `lease_renew`, and its Ready condition's heartbeat every `status_refresh` (neither while
//! the node is stopped through its [`super::NodeSwitch`]).

use std::sync::Arc;

use chrono::Utc;
use futures::stream::{self, StreamExt};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::{json, Value};

use super::{SimulatedError, SimulatedOptions, SIMULATED_LABEL};

/// The namespace of node Leases.
pub const NODE_LEASE_NAMESPACE: &str = "kube-node-lease";
/// The kubelet version simulated nodes report.
pub const KUBELET_VERSION: &str = "v1.33.0";
const LEASE_DURATION_SECONDS: i32 = 40;
const CONCURRENCY: usize = 64;
const MANAGER: &str = "skiff-simulated-kubelet";

/// The address of simulated node `index` (172.20.0.0/16 and up).
pub fn host_ip(index: usize) -> String {
    format!("172.{}.{}.{}", 20 + index / 65536, (index / 256) % 256, index % 256)
}

/// The pod CIDR of simulated node `index`: a /24 in 10.64.0.0/10.
pub fn pod_cidr_base(index: usize) -> (usize, usize) {
    (64 + index / 256, index % 256)
}

fn ready_conditions(now: &str) -> Value {
    let cond = |t: &str, s: &str, reason: &str, msg: &str| {
        json!({"type": t, "status": s, "reason": reason, "message": msg,
               "lastHeartbeatTime": now, "lastTransitionTime": now})
    };
    json!([
        cond(
            "MemoryPressure",
            "False",
            "KubeletHasSufficientMemory",
            "kubelet has sufficient memory available"
        ),
        cond("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
        cond(
            "PIDPressure",
            "False",
            "KubeletHasSufficientPID",
            "kubelet has sufficient PID available"
        ),
        cond("Ready", "True", "KubeletReady", "kubelet is posting ready status"),
    ])
}

fn node_status(opts: &SimulatedOptions, index: usize, now: &str) -> Value {
    let c = &opts.capacity;
    let resources = json!({
        "cpu": c.cpu, "memory": c.memory, "pods": c.pods.to_string(),
        "ephemeral-storage": c.ephemeral_storage,
    });
    let name = opts.node_name(index);
    json!({
        "capacity": resources,
        "allocatable": resources,
        "conditions": ready_conditions(now),
        "addresses": [
            {"type": "InternalIP", "address": host_ip(index)},
            {"type": "Hostname", "address": name},
        ],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
        "nodeInfo": {
            "machineID": format!("{:032x}", index),
            "systemUUID": format!("00000000-0000-0000-0000-{:012x}", index),
            "bootID": format!("{:08x}-0000-0000-0000-000000000000", index),
            "kernelVersion": "6.1.0-skiff",
            "osImage": "skiff simulated node",
            "containerRuntimeVersion": "skiff-simulated://0.1.0",
            "kubeletVersion": KUBELET_VERSION,
            "kubeProxyVersion": "",
            "operatingSystem": "linux",
            "architecture": "amd64",
        },
    })
}

fn node_object(opts: &SimulatedOptions, index: usize, now: &str) -> Value {
    let name = opts.node_name(index);
    let (a, b) = pod_cidr_base(index);
    let cidr = format!("10.{a}.{b}.0/24");
    json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "beta.kubernetes.io/os": "linux",
                "beta.kubernetes.io/arch": "amd64",
                "node.kubernetes.io/instance-type": "skiff-simulated",
                SIMULATED_LABEL: "true",
            },
            "annotations": {"node.alpha.kubernetes.io/ttl": "0"},
        },
        "spec": {"podCIDR": cidr, "podCIDRs": [cidr]},
        "status": node_status(opts, index, now),
    })
}

/// Creates (or updates the status of) every node and its Lease.
pub async fn register_all(
    client: &Client,
    opts: &Arc<SimulatedOptions>,
) -> Result<(), SimulatedError> {
    let results: Vec<Result<(), SimulatedError>> = stream::iter(0..opts.count)
        .map(|i| register(client, opts, i))
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    results.into_iter().collect()
}

async fn register(
    client: &Client,
    opts: &SimulatedOptions,
    index: usize,
) -> Result<(), SimulatedError> {
    let name = opts.node_name(index);
    let err = |source| SimulatedError::Register { node: name.clone(), source };
    let nodes: Api<Node> = Api::all(client.clone());
    let now = Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let obj = node_object(opts, index, &now);
    let node: Node =
        serde_json::from_value(obj.clone()).map_err(|e| err(kube::Error::SerdeError(e)))?;
    match nodes.create(&PostParams::default(), &node).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(e) => return Err(err(e)),
    }
    // The create may not keep status (and an existing node has an old one): set it.
    let pp = PatchParams { field_manager: Some(MANAGER.into()), ..Default::default() };
    nodes
        .patch_status(&name, &pp, &Patch::Merge(json!({"status": obj["status"]})))
        .await
        .map_err(err)?;
    renew_lease(client, opts, &name).await.map_err(err)?;
    Ok(())
}

/// Creates or renews a node's Lease.
async fn renew_lease(
    client: &Client,
    _opts: &SimulatedOptions,
    name: &str,
) -> Result<(), kube::Error> {
    let leases: Api<Lease> = Api::namespaced(client.clone(), NODE_LEASE_NAMESPACE);
    let now = Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let pp = PatchParams { field_manager: Some(MANAGER.into()), ..Default::default() };
    let patch = json!({"spec": {"renewTime": now}});
    match leases.patch(name, &pp, &Patch::Merge(&patch)).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => {
            let lease: Lease = serde_json::from_value(json!({
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {
                    "name": name,
                    "namespace": NODE_LEASE_NAMESPACE,
                    "ownerReferences": [],
                },
                "spec": {
                    "holderIdentity": name,
                    "leaseDurationSeconds": LEASE_DURATION_SECONDS,
                    "renewTime": now,
                },
            }))
            .map_err(kube::Error::SerdeError)?;
            match leases.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(()),
                Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
                Err(e) => Err(e),
            }
        }
        Err(e) => Err(e),
    }
}

/// Renews every Lease each `lease_renew` and refreshes the Ready heartbeat each
/// `status_refresh`; failures are logged and retried at the next tick (a real kubelet also
/// keeps going when the API is briefly unavailable).
pub async fn heartbeat(client: Client, opts: Arc<SimulatedOptions>) {
    let mut lease_tick = tokio::time::interval(opts.lease_renew);
    let mut status_tick = tokio::time::interval(opts.status_refresh);
    lease_tick.tick().await;
    status_tick.tick().await;
    // Nodes seen stopped: once restarted they post a fresh Ready status with their lease.
    let mut stopped: std::collections::HashSet<usize> = Default::default();
    loop {
        tokio::select! {
            _ = lease_tick.tick() => {
                let restarted: Vec<usize> = stopped
                    .iter()
                    .copied()
                    .filter(|i| !opts.switch.is_stopped(&opts.node_name(*i)))
                    .collect();
                for i in restarted {
                    let now = Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
                    let patch = json!({"status": {"conditions": ready_conditions(&now)}});
                    let pp = PatchParams { field_manager: Some(MANAGER.into()), ..Default::default() };
                    let nodes: Api<Node> = Api::all(client.clone());
                    if nodes.patch_status(&opts.node_name(i), &pp, &Patch::Strategic(&patch)).await.is_ok() {
                        stopped.remove(&i);
                    }
                }
                stopped.extend((0..opts.count).filter(|i| opts.switch.is_stopped(&opts.node_name(*i))));
                let failures = stream::iter(0..opts.count)
                    .filter(|i| futures::future::ready(!opts.switch.is_stopped(&opts.node_name(*i))))
                    .map(|i| {
                        let (client, opts) = (client.clone(), opts.clone());
                        async move { renew_lease(&client, &opts, &opts.node_name(i)).await.is_err() }
                    })
                    .buffer_unordered(CONCURRENCY)
                    .filter(|failed| futures::future::ready(*failed))
                    .count()
                    .await;
                if failures > 0 {
                    tracing::warn!(failures, "some node leases could not be renewed");
                }
            }
            _ = status_tick.tick() => {
                let now = Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
                let nodes: Api<Node> = Api::all(client.clone());
                let pp = PatchParams { field_manager: Some(MANAGER.into()), ..Default::default() };
                let failures = stream::iter(0..opts.count)
                    .filter(|i| futures::future::ready(!opts.switch.is_stopped(&opts.node_name(*i))))
                    .map(|i| {
                        let (nodes, pp, opts, now) = (nodes.clone(), pp.clone(), opts.clone(), now.clone());
                        async move {
                            let mut conds = ready_conditions(&now);
                            // Keep transition times: only the heartbeat moves.
                            if let Some(list) = conds.as_array_mut() {
                                for c in list.iter_mut() {
                                    if let Some(o) = c.as_object_mut() {
                                        o.remove("lastTransitionTime");
                                    }
                                }
                            }
                            let patch = json!({"status": {"conditions": conds}});
                            nodes.patch_status(&opts.node_name(i), &pp, &Patch::Strategic(&patch)).await.is_err()
                        }
                    })
                    .buffer_unordered(CONCURRENCY)
                    .filter(|failed| futures::future::ready(*failed))
                    .count()
                    .await;
                if failures > 0 {
                    tracing::warn!(failures, "some node heartbeats could not be written");
                }
            }
        }
    }
}
