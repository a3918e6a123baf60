//! Upstream scheduler defaults: a ReplicaSet's pods (no topologySpreadConstraints of their
//! own) spread over nodes by the system default spread constraints even when resource scoring
//! prefers one node, and the scheduling queue hands out the highest-priority pending pod first.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::api::scheduling::v1::PriorityClass;
use kube::api::{ListParams, PostParams};
use kube::{Api, Client};
use serde_json::{json, Value};
use skiff::controllers::cluster::{wait_for, LocalCluster};

const T: Duration = Duration::from_secs(90);

fn pod(name: &str, labels: Value, spec: Value) -> Pod {
    serde_json::from_value(json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": labels}, "spec": spec}))
    .expect("valid pod")
}

fn container(cpu: &str) -> Value {
    json!([{"name": "c", "image": "nginx", "resources": {"requests": {"cpu": cpu}}}])
}

async fn wait_nodes(client: &Client, n: usize) -> Vec<String> {
    let nodes: Api<Node> = Api::all(client.clone());
    let mut names: Vec<String> = wait_for(T, "nodes registered", || async {
        let list = nodes.list(&Default::default()).await.ok()?.items;
        (list.len() == n).then(|| list.into_iter().filter_map(|n| n.metadata.name).collect())
    })
    .await
    .unwrap();
    names.sort();
    names
}

async fn node_of(pods: &Api<Pod>, name: &str) -> Option<String> {
    pods.get(name).await.ok()?.spec?.node_name.filter(|n| !n.is_empty())
}

fn running(p: &Pod) -> bool {
    p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_set_pods_spread_over_nodes_by_the_system_default_constraints() {
    let cluster = LocalCluster::start(4).await.expect("cluster");
    let client = cluster.client.clone();
    let nodes = wait_nodes(&client, 4).await;
    let pods: Api<Pod> = Api::default_namespaced(client.clone());
    let pp = PostParams::default();
    // Unrelated pods placed directly, unevenly: the first node is empty, the others hold 8,
    // 16 and 24 of their 32 cpu, so resource scoring alone puts all eight replicas (1 cpu
    // each) on the first node.
    for (i, node) in nodes.iter().enumerate().skip(1) {
        let filler = pod(
            &format!("filler-{i}"),
            json!({"role": "filler"}),
            json!({"nodeName": node, "containers": container(&format!("{}", 8 * i))}),
        );
        pods.create(&pp, &filler).await.unwrap();
    }
    wait_for(T, "fillers running", || async {
        let list = pods.list(&ListParams::default().labels("role=filler")).await.ok()?;
        (list.items.len() == 3 && list.items.iter().all(running)).then_some(())
    })
    .await
    .unwrap();

    let rss: Api<ReplicaSet> = Api::default_namespaced(client.clone());
    let rs: ReplicaSet = serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "ReplicaSet",
        "metadata": {"name": "web"},
        "spec": {
            "replicas": 8,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": container("1")},
            },
        },
    }))
    .unwrap();
    rss.create(&pp, &rs).await.unwrap();
    let placed: BTreeMap<String, usize> = wait_for(T, "replicas placed", || async {
        let list = pods.list(&ListParams::default().labels("app=web")).await.ok()?;
        let mut per_node: BTreeMap<String, usize> = nodes.iter().map(|n| (n.clone(), 0)).collect();
        let mut bound = 0;
        for p in &list.items {
            if let Some(n) = p.spec.as_ref().and_then(|s| s.node_name.clone()) {
                *per_node.entry(n).or_insert(0) += 1;
                bound += 1;
            }
        }
        (bound == 8).then_some(per_node)
    })
    .await
    .unwrap();
    eprintln!("replicas per node: {placed:?}");
    let min = placed.values().copied().min().unwrap_or(0);
    let max = placed.values().copied().max().unwrap_or(0);
    assert!(min >= 1, "every node gets a replica: {placed:?}");
    assert!(max - min <= 3, "hostname skew within the default maxSkew 3: {placed:?}");

    // A pod nothing selects gets no default constraints: resource scoring sends it to the
    // least loaded node (the first one stays the least loaded with at most 3 cpu used).
    pods.create(&pp, &pod("loner", json!({"app": "loner"}), json!({"containers": container("1")})))
        .await
        .unwrap();
    let node = wait_for(T, "loner placed", || node_of(&pods, "loner")).await.unwrap();
    assert_eq!(node, nodes[0], "{placed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_highest_priority_pending_pod_is_scheduled_first() {
    let cluster = LocalCluster::start(1).await.expect("cluster");
    let client = cluster.client.clone();
    wait_nodes(&client, 1).await;
    let pods: Api<Pod> = Api::default_namespaced(client.clone());
    let pp = PostParams::default();
    let classes: Api<PriorityClass> = Api::all(client.clone());
    let pc: PriorityClass = serde_json::from_value(json!({
        "apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass",
        "metadata": {"name": "high"}, "value": 1000, "preemptionPolicy": "Never",
    }))
    .unwrap();
    classes.create(&pp, &pc).await.unwrap();

    // The node (32 cpu) is full; every waiting pod needs 20 cpu, so one fits once it is freed.
    pods.create(&pp, &pod("blocker", json!({}), json!({"containers": container("30")})))
        .await
        .unwrap();
    wait_for(T, "blocker placed", || node_of(&pods, "blocker")).await.unwrap();
    let mut names: Vec<String> = (0..20).map(|i| format!("low-{i}")).collect();
    for name in &names {
        pods.create(
            &pp,
            &pod(name, json!({"wait": "yes"}), json!({"containers": container("20")})),
        )
        .await
        .unwrap();
    }
    let high = pod(
        "high",
        json!({"wait": "yes"}),
        json!({"priorityClassName": "high", "containers": container("20")}),
    );
    pods.create(&pp, &high).await.unwrap();
    names.push("high".into());
    // All of them were tried and found unschedulable.
    wait_for(T, "all pending pods unschedulable", || async {
        let list = pods.list(&ListParams::default().labels("wait=yes")).await.ok()?;
        let unschedulable = list
            .items
            .iter()
            .filter(|p| {
                p.status.as_ref().and_then(|s| s.conditions.as_ref()).is_some_and(|cs| {
                    cs.iter().any(|c| c.type_ == "PodScheduled" && c.status == "False")
                })
            })
            .count();
        (unschedulable == names.len()).then_some(())
    })
    .await
    .unwrap();

    pods.delete("blocker", &Default::default()).await.unwrap();
    let bound = wait_for(T, "one waiting pod bound", || async {
        let list = pods.list(&ListParams::default().labels("wait=yes")).await.ok()?;
        let bound: Vec<String> = list
            .items
            .iter()
            .filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_deref()).is_some())
            .filter_map(|p| p.metadata.name.clone())
            .collect();
        (!bound.is_empty()).then_some(bound)
    })
    .await
    .unwrap();
    assert_eq!(bound, vec!["high".to_string()], "the high-priority pod goes first");
}
