//! ReplicationControllers run like ReplicaSets (upstream runs them with the same controller):
//! pods made to match with the RC as controller, status counts, scaling through /scale with
//! real kubectl (newest and oldest), adoption of a matching orphan, SuccessfulCreate and
//! SuccessfulDelete events in `kubectl describe`, and pods collected with the RC.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, ReplicationController};
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::Api;
use serde_json::json;
use skiff::controllers::cluster::wait_for;
use skiff::testing::kubectl_cluster::KubectlCluster;

const SKIFF: &str = env!("CARGO_BIN_EXE_skiff");

/// Generous: the machine running the tests may be loaded.
const T: Duration = Duration::from_secs(60);

/// Live pods labelled app=web, with the kind of their controller.
async fn pods_of(pods: &Api<Pod>) -> Vec<(String, Option<String>)> {
    let list = pods.list(&ListParams::default().labels("app=web")).await.expect("list pods");
    list.items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .map(|p| {
            let owner = p
                .metadata
                .owner_references
                .unwrap_or_default()
                .into_iter()
                .find(|o| o.controller == Some(true))
                .map(|o| o.kind);
            (p.metadata.name.unwrap_or_default(), owner)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replication_controller_keeps_its_pods() {
    let c = KubectlCluster::start(std::path::Path::new(SKIFF), 2, &[]).await;
    let client = c.server.client().await.expect("client");
    let rcs: Api<ReplicationController> = Api::default_namespaced(client.clone());
    let pods: Api<Pod> = Api::default_namespaced(client);
    let rc: ReplicationController = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {"replicas": 3, "selector": {"app": "web"}, "template": {
            "metadata": {"labels": {"app": "web"}},
            "spec": {"containers": [{"name": "c", "image": "nginx"}]}}},
    }))
    .expect("valid rc");
    // A matching orphan made first is adopted instead of a new pod being made.
    let orphan: Pod = serde_json::from_value(json!({
        "metadata": {"name": "stray", "labels": {"app": "web"}},
        "spec": {"containers": [{"name": "c", "image": "nginx"}]},
    }))
    .expect("valid pod");
    pods.create(&PostParams::default(), &orphan).await.expect("create orphan");
    rcs.create(&PostParams::default(), &rc).await.expect("create rc");
    wait_for(T, "three available replicas", || async {
        let s = rcs.get("web").await.ok()?.status?;
        (s.replicas == 3 && s.ready_replicas == Some(3) && s.available_replicas == Some(3))
            .then_some(())
    })
    .await
    .expect("rc status");
    let owned = pods_of(&pods).await;
    assert_eq!(owned.len(), 3, "{owned:?}");
    assert!(owned.iter().all(|(_, k)| k.as_deref() == Some("ReplicationController")), "{owned:?}");
    assert!(owned.iter().any(|(n, _)| n == "stray"), "the orphan was adopted: {owned:?}");

    // kubectl scales it through /scale.
    // kubectl describe tells the story in the controller's events.
    let created = owned.iter().find(|(n, _)| n != "stray").expect("a created pod").0.clone();
    wait_for(T, "SuccessfulCreate in describe", || async {
        let out = c.ok(&["describe", "rc", "web"]).await;
        let line = out.lines().find(|l| l.contains("SuccessfulCreate"))?.to_string();
        (line.contains("replication-controller") && line.contains("Created pod: ")).then_some(())
    })
    .await
    .expect("creation events");
    assert!(c.ok(&["describe", "rc", "web"]).await.contains(&format!("Created pod: {created}")));

    c.ok(&["scale", "rc/web", "--replicas=1"]).await;
    wait_for(T, "one pod left", || async { (pods_of(&pods).await.len() == 1).then_some(()) })
        .await
        .expect("scaled down");
    wait_for(T, "SuccessfulDelete in describe", || async {
        let out = c.ok(&["describe", "rc", "web"]).await;
        out.lines()
            .any(|l| l.contains("SuccessfulDelete") && l.contains("Deleted pod: "))
            .then_some(())
    })
    .await
    .expect("deletion events");

    c.ok_old(&["scale", "rc/web", "--replicas=2"]).await;
    wait_for(T, "two pods", || async { (pods_of(&pods).await.len() == 2).then_some(()) })
        .await
        .expect("scaled up");

    rcs.delete("web", &DeleteParams::default()).await.expect("delete rc");
    wait_for(T, "pods collected", || async { pods_of(&pods).await.is_empty().then_some(()) })
        .await
        .expect("garbage collected");
}
