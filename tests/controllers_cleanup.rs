//! Clean-up controllers end to end: the pod garbage collector deletes finished pods above its
//! threshold (oldest first) and the pods of a node that does not exist (after the quarantine);
//! the TTL-after-finished controller deletes a finished Job, and its pods, once its TTL is up.

use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{ListParams, PostParams};
use kube::Api;
use serde_json::json;
use skiff::controllers::cluster::{wait_for, ComponentOptions, LocalCluster};
use skiff::controllers::podgc::PodGcOptions;

const T: Duration = Duration::from_secs(30);

async fn cluster() -> LocalCluster {
    let mut opts = ComponentOptions { simulate_nodes: 1, ..Default::default() };
    opts.controller_options.pod_gc = PodGcOptions {
        terminated_threshold: 2,
        period: Duration::from_millis(200),
        quarantine: Duration::from_secs(1),
    };
    LocalCluster::start_with(opts).await.expect("cluster")
}

fn pod(name: &str, node: &str, labels: serde_json::Value) -> Pod {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": labels,
                     "annotations": {"skiff.dev/simulate-run-seconds": "0.2"}},
        "spec": {"nodeName": node, "restartPolicy": "Never",
                 "containers": [{"name": "c", "image": "busybox"}]},
    }))
    .unwrap()
}

fn phase(p: &Pod) -> &str {
    p.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_gc_deletes_surplus_finished_pods_and_orphans() {
    let cluster = cluster().await;
    let pods: Api<Pod> = Api::default_namespaced(cluster.client.clone());
    let pp = PostParams::default();

    // A pod bound to a node that does not exist goes after the quarantine.
    pods.create(&pp, &pod("orphan", "ghost", json!({"kind": "orphan"}))).await.unwrap();

    // Four finished pods, a second apart: the two oldest go.
    for i in 0..4 {
        pods.create(&pp, &pod(&format!("done-{i}"), "skiff-sim-0", json!({"kind": "done"})))
            .await
            .unwrap();
        if i < 3 {
            tokio::time::sleep(Duration::from_millis(1100)).await;
        }
    }
    let left = wait_for(T, "two finished pods left", || async {
        let list = pods.list(&ListParams::default().labels("kind=done")).await.unwrap().items;
        let names: Vec<String> = list.iter().filter_map(|p| p.metadata.name.clone()).collect();
        (list.len() == 2 && list.iter().all(|p| phase(p) == "Succeeded")).then_some(names)
    })
    .await
    .unwrap();
    assert_eq!(left, ["done-2", "done-3"]);

    wait_for(T, "the orphan pod gone", || async {
        pods.get_opt("orphan").await.unwrap().is_none().then_some(())
    })
    .await
    .unwrap();
    // A running pod on an existing node stays.
    pods.create(&pp, &pod("alive", "skiff-sim-0", json!({}))).await.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(pods.get_opt("alive").await.unwrap().is_some());
    assert!(cluster.running());
}

fn job(name: &str, ttl: Option<i32>) -> Job {
    serde_json::from_value(json!({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": name},
        "spec": {
            "ttlSecondsAfterFinished": ttl,
            "template": {
                "metadata": {"annotations": {"skiff.dev/simulate-run-seconds": "0.3"}},
                "spec": {"restartPolicy": "Never",
                         "containers": [{"name": "c", "image": "busybox"}]},
            },
        },
    }))
    .unwrap()
}

fn finished(j: &Job) -> bool {
    j.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Complete" && c.status == "True"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finished_jobs_are_deleted_after_their_ttl() {
    let cluster = cluster().await;
    let jobs: Api<Job> = Api::default_namespaced(cluster.client.clone());
    let pods: Api<Pod> = Api::default_namespaced(cluster.client.clone());
    let pp = PostParams::default();
    jobs.create(&pp, &job("short", Some(2))).await.unwrap();
    jobs.create(&pp, &job("long", Some(3600))).await.unwrap();
    jobs.create(&pp, &job("none", None)).await.unwrap();
    wait_for(T, "all jobs complete", || async {
        let list = jobs.list(&ListParams::default()).await.unwrap().items;
        (list.len() == 3 && list.iter().all(finished)).then_some(())
    })
    .await
    .unwrap();
    let done_at = std::time::Instant::now();
    wait_for(T, "the short-lived job deleted", || async {
        jobs.get_opt("short").await.unwrap().is_none().then_some(())
    })
    .await
    .unwrap();
    assert!(done_at.elapsed() > Duration::from_millis(200), "not before its TTL");
    wait_for(T, "its pods deleted", || async {
        let lp = ListParams::default().labels("job-name=short");
        pods.list(&lp).await.unwrap().items.is_empty().then_some(())
    })
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(jobs.get_opt("long").await.unwrap().is_some());
    assert!(jobs.get_opt("none").await.unwrap().is_some());
    assert!(cluster.running());
}
