//! The scheduler in an in-process cluster with simulated nodes: pods that fit nowhere get
//! PodScheduled=False with upstream's message and a FailedScheduling event, and are placed
//! once something changes; node selectors, taints and cordoned nodes are respected.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Event, Node, Pod};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::Api;
use serde_json::{json, Value};
use skiff::controllers::cluster::{wait_for, LocalCluster};

const T: Duration = Duration::from_secs(20);

fn pod(name: &str, spec: Value) -> Pod {
    let mut spec = spec;
    spec["containers"] = json!([{"name": "c", "image": "nginx",
        "resources": spec.get("requests").map(|r| json!({"requests": r})).unwrap_or(json!({}))}]);
    if let Some(o) = spec.as_object_mut() {
        o.remove("requests");
    }
    serde_json::from_value(
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec}),
    )
    .expect("valid pod")
}

async fn scheduled_condition(pods: &Api<Pod>, name: &str) -> Option<(String, String, String)> {
    let p = pods.get(name).await.ok()?;
    let c = p.status?.conditions?.into_iter().find(|c| c.type_ == "PodScheduled")?;
    Some((c.status, c.reason.unwrap_or_default(), c.message.unwrap_or_default()))
}

async fn node_of(pods: &Api<Pod>, name: &str) -> Option<String> {
    pods.get(name).await.ok()?.spec?.node_name.filter(|n| !n.is_empty())
}

async fn nodes_ready(client: &kube::Client, n: usize) {
    let nodes: Api<Node> = Api::all(client.clone());
    wait_for(T, "nodes", || async {
        (nodes.list(&Default::default()).await.ok()?.items.len() == n).then_some(())
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_too_big_for_every_node_is_unschedulable_until_it_fits() {
    let cluster = LocalCluster::start(3).await.expect("cluster");
    let client = cluster.client.clone();
    nodes_ready(&client, 3).await;
    let pods: Api<Pod> = Api::default_namespaced(client.clone());
    pods.create(&PostParams::default(), &pod("huge", json!({"requests": {"cpu": "64"}})))
        .await
        .unwrap();
    let (status, reason, message) = wait_for(T, "PodScheduled=False", || async {
        scheduled_condition(&pods, "huge").await.filter(|c| c.0 == "False")
    })
    .await
    .unwrap();
    assert_eq!((status.as_str(), reason.as_str()), ("False", "Unschedulable"));
    assert_eq!(
        message,
        "0/3 nodes are available: 3 Insufficient cpu. preemption: 0/3 nodes are available: 3 No preemption victims found for incoming pod."
    );
    assert!(node_of(&pods, "huge").await.is_none());
    // The failure is also a Warning event from default-scheduler about the pod.
    let events: Api<Event> = Api::default_namespaced(client.clone());
    let event = wait_for(T, "FailedScheduling event", || async {
        let list = events.list(&Default::default()).await.ok()?;
        list.items.into_iter().find(|e| {
            e.reason.as_deref() == Some("FailedScheduling")
                && e.involved_object.name.as_deref() == Some("huge")
        })
    })
    .await
    .unwrap();
    assert_eq!(event.type_.as_deref(), Some("Warning"));
    assert_eq!(event.message.as_deref(), Some(message.as_str()));
    assert_eq!(event.source.and_then(|s| s.component).as_deref(), Some("default-scheduler"));
    assert_eq!(event.involved_object.kind.as_deref(), Some("Pod"));

    // A bigger node joins: the pod is retried and lands there.
    let nodes: Api<Node> = Api::all(client.clone());
    let big: Node = serde_json::from_value(json!({
        "metadata": {"name": "big", "labels": {"size": "big"}},
        "status": {"capacity": {"cpu": "128", "memory": "512Gi", "pods": "110"},
                   "allocatable": {"cpu": "128", "memory": "512Gi", "pods": "110"}},
    }))
    .unwrap();
    nodes.create(&PostParams::default(), &big).await.unwrap();
    let status = json!({"status": {"capacity": {"cpu": "128", "memory": "512Gi", "pods": "110"},
                                   "allocatable": {"cpu": "128", "memory": "512Gi", "pods": "110"}}});
    nodes.patch_status("big", &PatchParams::default(), &Patch::Merge(status)).await.unwrap();
    let node = wait_for(T, "huge placed", || async { node_of(&pods, "huge").await }).await.unwrap();
    assert_eq!(node, "big");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn selectors_taints_and_cordons_are_respected() {
    let cluster = LocalCluster::start(3).await.expect("cluster");
    let client = cluster.client.clone();
    nodes_ready(&client, 3).await;
    let nodes: Api<Node> = Api::all(client.clone());
    let pods: Api<Pod> = Api::default_namespaced(client.clone());
    let pp = PatchParams::default();
    // skiff-sim-0: tainted; skiff-sim-1: cordoned; skiff-sim-2: labelled disk=ssd.
    let taint =
        json!({"spec": {"taints": [{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}]}});
    nodes.patch("skiff-sim-0", &pp, &Patch::Merge(taint)).await.unwrap();
    nodes
        .patch("skiff-sim-1", &pp, &Patch::Merge(json!({"spec": {"unschedulable": true}})))
        .await
        .unwrap();
    nodes
        .patch("skiff-sim-2", &pp, &Patch::Merge(json!({"metadata": {"labels": {"disk": "ssd"}}})))
        .await
        .unwrap();

    pods.create(&PostParams::default(), &pod("plain", json!({}))).await.unwrap();
    pods.create(&PostParams::default(), &pod("tolerant", json!({
        "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"}],
        "nodeSelector": {"kubernetes.io/hostname": "skiff-sim-0"},
    })))
    .await
    .unwrap();
    pods.create(&PostParams::default(), &pod("hdd", json!({"nodeSelector": {"disk": "hdd"}})))
        .await
        .unwrap();
    assert_eq!(
        wait_for(T, "plain placed", || async { node_of(&pods, "plain").await }).await.unwrap(),
        "skiff-sim-2"
    );
    assert_eq!(
        wait_for(T, "tolerant placed", || async { node_of(&pods, "tolerant").await })
            .await
            .unwrap(),
        "skiff-sim-0"
    );
    let (_, _, message) = wait_for(T, "hdd unschedulable", || async {
        scheduled_condition(&pods, "hdd").await.filter(|c| c.0 == "False")
    })
    .await
    .unwrap();
    assert!(message.starts_with("0/3 nodes are available: "), "{message}");
    for part in [
        "1 node(s) didn't match Pod's node affinity/selector",
        "1 node(s) had untolerated taint {dedicated: gpu}",
        "1 node(s) were unschedulable",
        "preemption: 0/3 nodes are available: 3 Preemption is not helpful for scheduling.",
    ] {
        assert!(message.contains(part), "{message} lacks {part}");
    }

    // Host ports: a second pod asking for the same port cannot share the node.
    let ported = |name: &str| {
        let mut p = pod(name, json!({"nodeSelector": {"disk": "ssd"}}));
        p.spec.as_mut().unwrap().containers[0].ports =
            Some(vec![
                serde_json::from_value(json!({"containerPort": 80, "hostPort": 8080})).unwrap()
            ]);
        p
    };
    pods.create(&PostParams::default(), &ported("port-a")).await.unwrap();
    wait_for(T, "port-a placed", || async { node_of(&pods, "port-a").await }).await.unwrap();
    pods.create(&PostParams::default(), &ported("port-b")).await.unwrap();
    let (_, _, message) = wait_for(T, "port-b unschedulable", || async {
        scheduled_condition(&pods, "port-b").await.filter(|c| c.0 == "False")
    })
    .await
    .unwrap();
    assert!(
        message.contains("1 node(s) didn't have free ports for the requested pod ports"),
        "{message}"
    );
    // Once port-a is gone, port-b fits.
    pods.delete("port-a", &DeleteParams::default()).await.unwrap();
    wait_for(T, "port-b placed", || async { node_of(&pods, "port-b").await }).await.unwrap();
}
