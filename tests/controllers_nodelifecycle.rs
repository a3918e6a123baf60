//! Node lifecycle end to end: a simulated node that stops renewing its Lease goes Ready=Unknown
//! with the unreachable taints, its pods are marked not ready, those whose toleration runs out
//! are evicted and replaced on the other nodes; restarted, the node is Ready and untainted.
//! A NoExecute taint nobody tolerates evicts at once.

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::Api;
use serde_json::json;
use skiff::controllers::cluster::{wait_for, ComponentOptions, LocalCluster};
use skiff::controllers::nodelifecycle::NodeLifecycleOptions;

const T: Duration = Duration::from_secs(30);

async fn cluster() -> LocalCluster {
    let mut opts = ComponentOptions {
        simulate_nodes: 3,
        node_lease_renew: Duration::from_millis(300),
        ..Default::default()
    };
    opts.controller_options.node_lifecycle = NodeLifecycleOptions {
        monitor_period: Duration::from_millis(200),
        grace_period: Duration::from_secs(2),
        startup_grace_period: Duration::from_secs(2),
    };
    LocalCluster::start_with(opts).await.expect("cluster")
}

fn ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn node_of(p: &Pod) -> String {
    p.spec.as_ref().and_then(|s| s.node_name.clone()).unwrap_or_default()
}

fn ready_condition(n: &Node) -> Option<k8s_openapi::api::core::v1::NodeCondition> {
    n.status.as_ref()?.conditions.as_ref()?.iter().find(|c| c.type_ == "Ready").cloned()
}

fn has_taint(n: &Node, key: &str, effect: &str) -> bool {
    n.spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .is_some_and(|ts| ts.iter().any(|t| t.key == key && t.effect == effect))
}

fn pinned_pod(name: &str, node: &str, tolerations: serde_json::Value) -> Pod {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name},
        "spec": {"nodeName": node, "tolerations": tolerations,
                 "containers": [{"name": "c", "image": "busybox"}]},
    }))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_node_is_tainted_and_its_pods_evicted() {
    let cluster = cluster().await;
    let c = cluster.client.clone();
    let nodes: Api<Node> = Api::all(c.clone());
    let pods: Api<Pod> = Api::default_namespaced(c.clone());
    let deploys: Api<Deployment> = Api::default_namespaced(c.clone());
    let pp = PostParams::default();

    // Every pod gets the admission's 300 s tolerations unless it says otherwise.
    let probe = pods.create(&pp, &pinned_pod("probe", "skiff-sim-0", json!([]))).await.unwrap();
    let tolerations = probe.spec.as_ref().unwrap().tolerations.clone().unwrap();
    for key in ["node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"] {
        assert!(
            tolerations.iter().any(|t| t.key.as_deref() == Some(key)
                && t.effect.as_deref() == Some("NoExecute")
                && t.toleration_seconds == Some(300)),
            "default toleration for {key}: {tolerations:?}"
        );
    }
    pods.delete("probe", &Default::default()).await.unwrap();

    let deploy: Deployment = serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "app"},
        "spec": {
            "replicas": 6,
            "selector": {"matchLabels": {"app": "app"}},
            "template": {
                "metadata": {"labels": {"app": "app"}},
                "spec": {
                    "tolerations": [{"key": "node.kubernetes.io/unreachable", "operator": "Exists",
                                     "effect": "NoExecute", "tolerationSeconds": 2}],
                    "containers": [{"name": "c", "image": "nginx"}],
                },
            },
        },
    }))
    .unwrap();
    deploys.create(&pp, &deploy).await.unwrap();
    let running = wait_for(T, "six ready pods", || async {
        let list = pods.list(&ListParams::default().labels("app=app")).await.unwrap().items;
        (list.len() == 6 && list.iter().all(ready)).then_some(list)
    })
    .await
    .unwrap();
    let victim_node = node_of(&running[0]);
    let victims: Vec<String> = running
        .iter()
        .filter(|p| node_of(p) == victim_node)
        .filter_map(|p| p.metadata.name.clone())
        .collect();
    // A pod that tolerates the node's absence for an hour: marked not ready, never evicted.
    let patient = pinned_pod(
        "patient",
        &victim_node,
        json!([{"key": "node.kubernetes.io/unreachable", "operator": "Exists",
                "effect": "NoExecute", "tolerationSeconds": 3600}]),
    );
    pods.create(&pp, &patient).await.unwrap();
    wait_for(T, "the patient pod ready", || async {
        pods.get_opt("patient").await.unwrap().filter(ready).map(|_| ())
    })
    .await
    .unwrap();

    cluster.nodes.stop(&victim_node);
    let node = wait_for(T, "the stopped node Unknown and tainted", || async {
        let n = nodes.get(&victim_node).await.unwrap();
        let r = ready_condition(&n)?;
        let tainted = has_taint(&n, "node.kubernetes.io/unreachable", "NoExecute")
            && has_taint(&n, "node.kubernetes.io/unreachable", "NoSchedule");
        (r.status == "Unknown" && tainted).then_some(n)
    })
    .await
    .unwrap();
    let r = ready_condition(&node).unwrap();
    assert_eq!(r.reason.as_deref(), Some("NodeStatusUnknown"));
    assert_eq!(r.message.as_deref(), Some("Kubelet stopped posting node status."));
    let memory = node.status.as_ref().unwrap().conditions.as_ref().unwrap();
    assert!(memory.iter().all(|c| c.status == "Unknown"), "all conditions Unknown: {memory:?}");

    wait_for(T, "the patient pod not ready", || async {
        let p = pods.get("patient").await.unwrap();
        (!ready(&p)).then_some(())
    })
    .await
    .unwrap();

    // The deployment's pods there are evicted (their 2 s run out) and replaced elsewhere.
    wait_for(T, "six ready pods on the other nodes", || async {
        let list = pods.list(&ListParams::default().labels("app=app")).await.unwrap().items;
        let live: Vec<&Pod> =
            list.iter().filter(|p| p.metadata.deletion_timestamp.is_none()).collect();
        let ok = live.len() == 6
            && live.iter().all(|p| ready(p) && node_of(p) != victim_node)
            && victims.iter().all(|v| {
                list.iter().all(|p| p.metadata.name.as_ref() != Some(v))
                    || list.iter().any(|p| {
                        p.metadata.name.as_ref() == Some(v)
                            && p.metadata.deletion_timestamp.is_some()
                    })
            });
        ok.then_some(())
    })
    .await
    .unwrap();
    for v in &victims {
        if let Some(p) = pods.get_opt(v).await.unwrap() {
            let conds = p.status.as_ref().unwrap().conditions.clone().unwrap_or_default();
            let target = conds.iter().find(|c| c.type_ == "DisruptionTarget");
            assert_eq!(
                target.and_then(|c| c.reason.as_deref()),
                Some("DeletionByTaintManager"),
                "{conds:?}"
            );
        }
    }
    let patient = pods.get("patient").await.unwrap();
    assert!(patient.metadata.deletion_timestamp.is_none(), "the patient pod stays");

    // Back again: Ready, no taints.
    cluster.nodes.start(&victim_node);
    wait_for(T, "the node ready and untainted", || async {
        let n = nodes.get(&victim_node).await.unwrap();
        let r = ready_condition(&n)?;
        let untainted =
            n.spec.as_ref().and_then(|s| s.taints.as_ref()).is_none_or(|t| t.is_empty());
        (r.status == "True" && untainted).then_some(())
    })
    .await
    .unwrap();
    assert!(cluster.running());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untolerated_no_execute_taint_evicts_at_once() {
    let cluster = cluster().await;
    let c = cluster.client.clone();
    let nodes: Api<Node> = Api::all(c.clone());
    let pods: Api<Pod> = Api::default_namespaced(c.clone());
    let pp = PostParams::default();
    let node = "skiff-sim-1";
    pods.create(&pp, &pinned_pod("intolerant", node, json!([]))).await.unwrap();
    let tolerant = pinned_pod(
        "tolerant",
        node,
        json!([{"key": "skiff.dev/drain", "operator": "Exists", "effect": "NoExecute"}]),
    );
    pods.create(&pp, &tolerant).await.unwrap();
    wait_for(T, "both pods ready", || async {
        let list = pods.list(&ListParams::default()).await.unwrap().items;
        (list.len() == 2 && list.iter().all(ready)).then_some(())
    })
    .await
    .unwrap();
    let patch = json!({"spec": {"taints": [{"key": "skiff.dev/drain", "effect": "NoExecute"}]}});
    nodes.patch(node, &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    wait_for(Duration::from_secs(5), "the intolerant pod evicted", || async {
        let gone = pods
            .get_opt("intolerant")
            .await
            .unwrap()
            .is_none_or(|p| p.metadata.deletion_timestamp.is_some());
        gone.then_some(())
    })
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let tolerant = pods.get("tolerant").await.unwrap();
    assert!(tolerant.metadata.deletion_timestamp.is_none(), "a tolerated taint evicts nobody");
    assert!(cluster.running());
}
