//! ReplicaSet controller, scheduler and simulated nodes together in an in-process cluster.

use std::time::Duration;

use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::Api;
use serde_json::json;
use skiff::controllers::cluster::{wait_for, LocalCluster};

const T: Duration = Duration::from_secs(20);

fn replicaset(name: &str, replicas: i32) -> ReplicaSet {
    serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "ReplicaSet",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "c", "image": "nginx",
                          "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}}]},
            },
        },
    }))
    .expect("valid replica set")
}

async fn running_pods(pods: &Api<Pod>, app: &str) -> Vec<Pod> {
    let list =
        pods.list(&ListParams::default().labels(&format!("app={app}"))).await.expect("list pods");
    list.items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicaset_pods_run_on_simulated_nodes_and_scale() {
    let cluster = LocalCluster::start(3).await.expect("cluster");
    let client = cluster.client.clone();
    let nodes: Api<Node> = Api::all(client.clone());
    wait_for(T, "3 nodes", || async {
        (nodes.list(&Default::default()).await.ok()?.items.len() == 3).then_some(())
    })
    .await
    .unwrap();
    let sets: Api<ReplicaSet> = Api::default_namespaced(client.clone());
    let pods: Api<Pod> = Api::default_namespaced(client.clone());
    sets.create(&PostParams::default(), &replicaset("web", 3)).await.expect("create");
    wait_for(T, "3 ready replicas", || async {
        let rs = sets.get("web").await.ok()?;
        let st = rs.status?;
        (st.ready_replicas == Some(3)
            && st.available_replicas == Some(3)
            && st.observed_generation == Some(1))
        .then_some(())
    })
    .await
    .unwrap();
    let running = running_pods(&pods, "web").await;
    assert_eq!(running.len(), 3);
    for p in &running {
        let st = p.status.as_ref().unwrap();
        assert!(p
            .spec
            .as_ref()
            .unwrap()
            .node_name
            .as_deref()
            .unwrap_or("")
            .starts_with("skiff-sim-"));
        assert!(st.pod_ip.is_some() && st.host_ip.is_some());
        let owner = &p.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.controller, owner.block_owner_deletion),
            ("ReplicaSet", Some(true), Some(true))
        );
    }

    sets.patch("web", &PatchParams::default(), &Patch::Merge(json!({"spec": {"replicas": 1}})))
        .await
        .unwrap();
    wait_for(T, "1 pod left", || async {
        let all = pods.list(&ListParams::default().labels("app=web")).await.ok()?;
        let rs = sets.get("web").await.ok()?;
        (all.items.len() == 1 && rs.status?.replicas == 1).then_some(())
    })
    .await
    .unwrap();
    assert!(cluster.running());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_orphan_pod_is_adopted() {
    let cluster = LocalCluster::start(1).await.expect("cluster");
    let client = cluster.client.clone();
    let pods: Api<Pod> = Api::default_namespaced(client.clone());
    let orphan: Pod = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "stray", "labels": {"app": "adopt"}},
        "spec": {"containers": [{"name": "c", "image": "nginx"}]},
    }))
    .unwrap();
    pods.create(&PostParams::default(), &orphan).await.unwrap();
    let sets: Api<ReplicaSet> = Api::default_namespaced(client.clone());
    sets.create(&PostParams::default(), &replicaset("adopt", 2)).await.unwrap();
    wait_for(T, "adoption", || async {
        let p = pods.get("stray").await.ok()?;
        let owners = p.metadata.owner_references?;
        (owners.len() == 1 && owners[0].name == "adopt").then_some(())
    })
    .await
    .unwrap();
    wait_for(T, "2 replicas", || async {
        let all = pods.list(&ListParams::default().labels("app=adopt")).await.ok()?;
        (all.items.len() == 2).then_some(())
    })
    .await
    .unwrap();
}
