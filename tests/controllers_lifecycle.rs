//! Pods on simulated nodes go through a kubelet's lifecycle; the garbage collector honours
//! orphan and foreground propagation.

use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::Api;
use serde_json::{json, Value};
use skiff::controllers::cluster::{wait_for, LocalCluster};

const T: Duration = Duration::from_secs(20);

fn pod(name: &str, annotations: Value, restart: &str) -> Pod {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "annotations": annotations},
        "spec": {"restartPolicy": restart, "containers": [{"name": "main", "image": "busybox"}]},
    }))
    .expect("valid pod")
}

async fn phase(pods: &Api<Pod>, name: &str) -> Option<String> {
    pods.get(name).await.ok()?.status?.phase
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_run_finish_fail_and_are_deleted_gracefully() {
    let cluster = LocalCluster::start(1).await.expect("cluster");
    let pods: Api<Pod> = Api::default_namespaced(cluster.client.clone());
    let pp = PostParams::default();
    pods.create(&pp, &pod("server", json!({}), "Always")).await.unwrap();
    pods.create(&pp, &pod("job", json!({"skiff.dev/simulate-run-seconds": "0.2"}), "Never"))
        .await
        .unwrap();
    pods.create(
        &pp,
        &pod(
            "crash",
            json!({"skiff.dev/simulate-exit-code": "3", "skiff.dev/simulate-run-seconds": "0.2"}),
            "Never",
        ),
    )
    .await
    .unwrap();
    pods.create(&pp, &pod("lazy", json!({"skiff.dev/simulate-never-ready": "true"}), "Always"))
        .await
        .unwrap();

    wait_for(T, "server running", || async {
        (phase(&pods, "server").await? == "Running").then_some(())
    })
    .await
    .unwrap();
    let server = pods.get("server").await.unwrap();
    let st = server.status.unwrap();
    assert!(st.pod_ip.is_some() && st.host_ip.is_some() && st.start_time.is_some());
    let conds: Vec<(String, String)> =
        st.conditions.unwrap().into_iter().map(|c| (c.type_, c.status)).collect();
    for kind in ["Initialized", "Ready", "ContainersReady", "PodScheduled"] {
        assert!(conds.contains(&(kind.to_string(), "True".to_string())), "{kind} in {conds:?}");
    }
    let cs = &st.container_statuses.unwrap()[0];
    assert!(cs.ready && cs.started == Some(true) && cs.restart_count == 0);
    assert!(cs.state.as_ref().unwrap().running.is_some());

    wait_for(T, "job succeeded", || async {
        (phase(&pods, "job").await? == "Succeeded").then_some(())
    })
    .await
    .unwrap();
    let job = pods.get("job").await.unwrap();
    let term = job.status.unwrap().container_statuses.unwrap()[0]
        .state
        .clone()
        .unwrap()
        .terminated
        .unwrap();
    assert_eq!((term.exit_code, term.reason.as_deref()), (0, Some("Completed")));

    wait_for(T, "crash failed", || async {
        (phase(&pods, "crash").await? == "Failed").then_some(())
    })
    .await
    .unwrap();
    let crash = pods.get("crash").await.unwrap();
    let term = crash.status.unwrap().container_statuses.unwrap()[0]
        .state
        .clone()
        .unwrap()
        .terminated
        .unwrap();
    assert_eq!((term.exit_code, term.reason.as_deref()), (3, Some("Error")));

    wait_for(T, "lazy running", || async {
        (phase(&pods, "lazy").await? == "Running").then_some(())
    })
    .await
    .unwrap();
    let lazy = pods.get("lazy").await.unwrap().status.unwrap();
    let ready = lazy.conditions.unwrap().into_iter().find(|c| c.type_ == "Ready").unwrap();
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_deref()),
        ("False", Some("ContainersNotReady"))
    );

    // A graceful delete marks the pod; the node stops it and removes it.
    pods.delete("server", &DeleteParams::default()).await.unwrap();
    wait_for(T, "server removed", || async {
        pods.get_opt("server").await.ok()?.is_none().then_some(())
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orphan_and_foreground_propagation() {
    let cluster = LocalCluster::start(1).await.expect("cluster");
    let client = cluster.client.clone();
    let deployments: Api<Deployment> = Api::default_namespaced(client.clone());
    let sets: Api<ReplicaSet> = Api::default_namespaced(client.clone());
    let pods: Api<Pod> = Api::default_namespaced(client.clone());
    let make = |name: &str| -> Deployment {
        serde_json::from_value(json!({
            "metadata": {"name": name},
            "spec": {"replicas": 2, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}},
                                  "spec": {"containers": [{"name": "c", "image": "nginx"}]}}},
        }))
        .unwrap()
    };
    for name in ["kept", "fg"] {
        deployments.create(&PostParams::default(), &make(name)).await.unwrap();
        wait_for(T, "2 pods", || async {
            let n = pods
                .list(&ListParams::default().labels(&format!("app={name}")))
                .await
                .ok()?
                .items
                .len();
            (n == 2).then_some(())
        })
        .await
        .unwrap();
    }

    // Orphan: the deployment goes, its replica set stays without an owner.
    deployments.delete("kept", &DeleteParams::orphan()).await.unwrap();
    wait_for(T, "kept deleted", || async {
        deployments.get_opt("kept").await.ok()?.is_none().then_some(())
    })
    .await
    .unwrap();
    let rs = sets.list(&ListParams::default().labels("app=kept")).await.unwrap().items;
    assert_eq!(rs.len(), 1);
    assert!(rs[0].metadata.owner_references.as_ref().is_none_or(|o| o.is_empty()));

    // Foreground: the deployment stays until its replica sets and pods are gone.
    deployments.delete("fg", &DeleteParams::foreground()).await.unwrap();
    wait_for(T, "fg and dependents gone", || async {
        let d = deployments.get_opt("fg").await.ok()?;
        let n = pods.list(&ListParams::default().labels("app=fg")).await.ok()?.items.len();
        if let Some(d) = &d {
            // While it exists, it is marked for deletion.
            assert!(d.metadata.deletion_timestamp.is_some());
        }
        (d.is_none() && n == 0).then_some(())
    })
    .await
    .unwrap();
    assert_eq!(sets.list(&ListParams::default().labels("app=fg")).await.unwrap().items.len(), 0);
}
