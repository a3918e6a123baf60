//! Deployments end to end in an in-process cluster: rollout to available pods on simulated
//! nodes, scaling, a template change rolling out a new ReplicaSet, garbage collection of
//! ReplicaSets and pods when the deployment is deleted, and proportional scaling of a stuck
//! rollout (also while paused, when template changes wait for the resume).

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::Api;
use serde_json::json;
use skiff::agent::simulated::NEVER_READY_ANNOTATION;
use skiff::controllers::cluster::{wait_for, LocalCluster};

/// Generous: the machine running the tests may be loaded.
const T: Duration = Duration::from_secs(60);

fn deployment(name: &str, replicas: i32, image: &str) -> Deployment {
    serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "c", "image": image}]},
            },
        },
    }))
    .expect("valid deployment")
}

/// What `kubectl rollout status` checks: the rollout of the current generation is complete.
fn rolled_out(d: &Deployment, replicas: i32) -> bool {
    let Some(st) = d.status.as_ref() else { return false };
    st.observed_generation >= d.metadata.generation
        && st.replicas == Some(replicas).filter(|r| *r > 0)
        && st.updated_replicas == Some(replicas).filter(|r| *r > 0)
        && st.available_replicas == Some(replicas).filter(|r| *r > 0)
        && st.unavailable_replicas.is_none()
}

async fn wait_rolled_out(api: &Api<Deployment>, name: &str, replicas: i32) -> Deployment {
    wait_for(T, &format!("{name} rolled out with {replicas} replicas"), || async {
        let d = api.get(name).await.ok()?;
        rolled_out(&d, replicas).then_some(d)
    })
    .await
    .unwrap()
}

async fn live_pods(pods: &Api<Pod>, app: &str) -> Vec<Pod> {
    let list = pods.list(&ListParams::default().labels(&format!("app={app}"))).await.expect("list");
    list.items.into_iter().filter(|p| p.metadata.deletion_timestamp.is_none()).collect()
}

fn condition(d: &Deployment, kind: &str) -> (String, String, String) {
    let c = d
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == kind))
        .unwrap_or_else(|| panic!("no {kind} condition"));
    (c.status.clone(), c.reason.clone().unwrap_or_default(), c.message.clone().unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deployment_rolls_out_scales_updates_and_is_collected() {
    let cluster = LocalCluster::start(3).await.expect("cluster");
    let client = cluster.client.clone();
    let deployments: Api<Deployment> = Api::default_namespaced(client.clone());
    let sets: Api<ReplicaSet> = Api::default_namespaced(client.clone());
    let pods: Api<Pod> = Api::default_namespaced(client.clone());

    deployments.create(&PostParams::default(), &deployment("web", 3, "nginx:1")).await.unwrap();
    let d = wait_rolled_out(&deployments, "web", 3).await;
    assert_eq!(condition(&d, "Available").1, "MinimumReplicasAvailable");
    let (status, reason, message) = condition(&d, "Progressing");
    assert_eq!((status.as_str(), reason.as_str()), ("True", "NewReplicaSetAvailable"));
    assert!(message.ends_with("has successfully progressed."), "{message}");
    assert_eq!(d.metadata.annotations.as_ref().unwrap()["deployment.kubernetes.io/revision"], "1");
    let running = live_pods(&pods, "web").await;
    assert_eq!(running.len(), 3);
    for p in &running {
        assert_eq!(p.status.as_ref().unwrap().phase.as_deref(), Some("Running"));
        assert!(p.spec.as_ref().unwrap().node_name.is_some());
        assert!(p.metadata.labels.as_ref().unwrap().contains_key("pod-template-hash"));
    }

    let scale = |n: i32| json!({"spec": {"replicas": n}});
    deployments.patch("web", &PatchParams::default(), &Patch::Merge(scale(5))).await.unwrap();
    wait_rolled_out(&deployments, "web", 5).await;
    wait_for(T, "5 pods", || async { (live_pods(&pods, "web").await.len() == 5).then_some(()) })
        .await
        .unwrap();
    deployments.patch("web", &PatchParams::default(), &Patch::Merge(scale(1))).await.unwrap();
    wait_rolled_out(&deployments, "web", 1).await;
    wait_for(T, "1 pod", || async { (live_pods(&pods, "web").await.len() == 1).then_some(()) })
        .await
        .unwrap();

    // A template change rolls out a second ReplicaSet; the first is scaled to zero.
    deployments.patch("web", &PatchParams::default(), &Patch::Merge(scale(3))).await.unwrap();
    let image = json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "nginx:2"}]}}}});
    deployments.patch("web", &PatchParams::default(), &Patch::Strategic(image)).await.unwrap();
    let d = wait_rolled_out(&deployments, "web", 3).await;
    assert_eq!(d.metadata.annotations.as_ref().unwrap()["deployment.kubernetes.io/revision"], "2");
    let all = sets.list(&ListParams::default().labels("app=web")).await.unwrap().items;
    assert_eq!(all.len(), 2, "two revisions kept");
    let mut by_rev: Vec<(String, i32)> = all
        .iter()
        .map(|rs| {
            (
                rs.metadata.annotations.as_ref().unwrap()["deployment.kubernetes.io/revision"]
                    .clone(),
                rs.spec.as_ref().unwrap().replicas.unwrap(),
            )
        })
        .collect();
    by_rev.sort();
    assert_eq!(by_rev, vec![("1".to_string(), 0), ("2".to_string(), 3)]);
    wait_for(T, "only new pods", || async {
        let ps = live_pods(&pods, "web").await;
        (ps.len() == 3
            && ps.iter().all(|p| {
                p.spec.as_ref().unwrap().containers[0].image.as_deref() == Some("nginx:2")
            }))
        .then_some(())
    })
    .await
    .unwrap();

    // Deleting the deployment collects its ReplicaSets and their pods.
    deployments.delete("web", &DeleteParams::default()).await.unwrap();
    wait_for(T, "replica sets and pods collected", || async {
        let rs = sets.list(&ListParams::default().labels("app=web")).await.ok()?.items.len();
        let ps = pods.list(&ListParams::default().labels("app=web")).await.ok()?.items.len();
        (rs == 0 && ps == 0).then_some(())
    })
    .await
    .unwrap();
    assert!(cluster.running());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recreate_replaces_all_pods() {
    let cluster = LocalCluster::start(2).await.expect("cluster");
    let deployments: Api<Deployment> = Api::default_namespaced(cluster.client.clone());
    let pods: Api<Pod> = Api::default_namespaced(cluster.client.clone());
    let mut d = deployment("batch", 2, "app:1");
    d.spec.as_mut().unwrap().strategy =
        Some(serde_json::from_value(json!({"type": "Recreate"})).unwrap());
    deployments.create(&PostParams::default(), &d).await.unwrap();
    wait_rolled_out(&deployments, "batch", 2).await;
    let image =
        json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "app:2"}]}}}});
    deployments.patch("batch", &PatchParams::default(), &Patch::Strategic(image)).await.unwrap();
    wait_rolled_out(&deployments, "batch", 2).await;
    wait_for(T, "only app:2 pods", || async {
        let ps = live_pods(&pods, "batch").await;
        (ps.len() == 2
            && ps
                .iter()
                .all(|p| p.spec.as_ref().unwrap().containers[0].image.as_deref() == Some("app:2")))
        .then_some(())
    })
    .await
    .unwrap();
}

/// Each ReplicaSet's spec.replicas by its first container's image.
async fn sizes_by_image(sets: &Api<ReplicaSet>, app: &str) -> BTreeMap<String, i32> {
    let list = sets.list(&ListParams::default().labels(&format!("app={app}"))).await;
    list.map(|l| l.items)
        .unwrap_or_default()
        .iter()
        .map(|rs| {
            let spec = rs.spec.as_ref().expect("spec");
            let t = spec.template.as_ref().and_then(|t| t.spec.as_ref()).expect("template");
            (t.containers[0].image.clone().unwrap_or_default(), spec.replicas.unwrap_or(0))
        })
        .collect()
}

async fn wait_sizes(sets: &Api<ReplicaSet>, app: &str, want: &[(&str, i32)]) {
    let want: BTreeMap<String, i32> = want.iter().map(|(i, n)| (i.to_string(), *n)).collect();
    let last = std::sync::Mutex::new(BTreeMap::new());
    let found = wait_for(Duration::from_secs(90), "replica set sizes", || async {
        let now = sizes_by_image(sets, app).await;
        let hit = now == want;
        *last.lock().unwrap() = now;
        hit.then_some(())
    })
    .await;
    let last = last.lock().unwrap().clone();
    assert!(found.is_ok(), "wanted {want:?}, last saw {last:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scaling_a_stuck_rollout_is_proportional_and_paused_deployments_still_scale() {
    let cluster = LocalCluster::start(3).await.expect("cluster");
    let client = cluster.client.clone();
    let deployments: Api<Deployment> = Api::default_namespaced(client.clone());
    let sets: Api<ReplicaSet> = Api::default_namespaced(client.clone());
    let pp = PatchParams::default();

    // Upstream's e2e numbers: 10 replicas, maxSurge 3, maxUnavailable 2.
    let mut d = deployment("prop", 10, "app:1");
    d.spec.as_mut().unwrap().strategy = Some(
        serde_json::from_value(
            json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 3, "maxUnavailable": 2}}),
        )
        .unwrap(),
    );
    deployments.create(&PostParams::default(), &d).await.unwrap();
    wait_rolled_out(&deployments, "prop", 10).await;

    // The new template's pods never become ready: the rollout stops at 8 old + 5 new.
    let stuck = json!({"spec": {"template": {
        "metadata": {"annotations": {NEVER_READY_ANNOTATION: "true"}},
        "spec": {"containers": [{"name": "c", "image": "app:2"}]},
    }}});
    deployments.patch("prop", &pp, &Patch::Strategic(stuck)).await.unwrap();
    wait_sizes(&sets, "prop", &[("app:1", 8), ("app:2", 5)]).await;

    // Scaling to 30 shares the 20 extra replicas (33 allowed with surge) by size.
    deployments.patch("prop", &pp, &Patch::Merge(json!({"spec": {"replicas": 30}}))).await.unwrap();
    wait_sizes(&sets, "prop", &[("app:1", 20), ("app:2", 13)]).await;
    for rs in sets.list(&ListParams::default().labels("app=prop")).await.unwrap().items {
        let a = rs.metadata.annotations.unwrap();
        assert_eq!(a["deployment.kubernetes.io/desired-replicas"], "30");
        assert_eq!(a["deployment.kubernetes.io/max-replicas"], "33");
    }

    // Paused, it still scales proportionally; a template change waits for the resume.
    let pause = |p: bool| Patch::Merge(json!({"spec": {"paused": p}}));
    deployments.patch("prop", &pp, &pause(true)).await.unwrap();
    deployments.patch("prop", &pp, &Patch::Merge(json!({"spec": {"replicas": 10}}))).await.unwrap();
    wait_sizes(&sets, "prop", &[("app:1", 8), ("app:2", 5)]).await;
    let unstuck = json!({"spec": {"template": {
        "metadata": {"annotations": {NEVER_READY_ANNOTATION: null}},
        "spec": {"containers": [{"name": "c", "image": "app:3"}]},
    }}});
    deployments.patch("prop", &pp, &Patch::Strategic(unstuck)).await.unwrap();
    let d = wait_for(T, "the paused template change observed", || async {
        let d = deployments.get("prop").await.ok()?;
        let st = d.status.as_ref()?;
        (st.observed_generation >= d.metadata.generation).then_some(d)
    })
    .await
    .unwrap();
    let (status, reason, message) = condition(&d, "Progressing");
    assert_eq!((status.as_str(), reason.as_str()), ("Unknown", "DeploymentPaused"), "{message}");
    assert_eq!(sizes_by_image(&sets, "prop").await.len(), 2, "no replica set while paused");
    assert_eq!(d.metadata.annotations.as_ref().unwrap()["deployment.kubernetes.io/revision"], "2");

    // Resumed, the new template rolls out as revision 3.
    deployments.patch("prop", &pp, &pause(false)).await.unwrap();
    let d = wait_rolled_out(&deployments, "prop", 10).await;
    assert_eq!(d.metadata.annotations.as_ref().unwrap()["deployment.kubernetes.io/revision"], "3");
    wait_sizes(&sets, "prop", &[("app:1", 0), ("app:2", 0), ("app:3", 10)]).await;
    assert!(cluster.running());
}
