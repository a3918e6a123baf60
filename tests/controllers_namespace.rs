//! The namespace and service account controllers in an in-process cluster: a new namespace gets
//! a `default` service account; deleting a namespace deletes what is in it, then the namespace.

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, ServiceAccount};
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::Api;
use serde_json::json;
use skiff::controllers::cluster::{wait_for, LocalCluster};

const T: Duration = Duration::from_secs(25);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespace_delete_empties_it_then_removes_it() {
    let cluster = LocalCluster::start(2).await.expect("cluster");
    let client = cluster.client.clone();
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": "team"}})).unwrap();
    namespaces.create(&PostParams::default(), &ns).await.unwrap();

    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), "team");
    wait_for(T, "the default service account", || async {
        accounts.get_opt("default").await.ok()?
    })
    .await
    .unwrap();

    let maps: Api<ConfigMap> = Api::namespaced(client.clone(), "team");
    let cm: ConfigMap =
        serde_json::from_value(json!({"metadata": {"name": "settings"}, "data": {"a": "b"}}))
            .unwrap();
    maps.create(&PostParams::default(), &cm).await.unwrap();
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "team");
    let d: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "app"},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "app"}},
            "template": {"metadata": {"labels": {"app": "app"}},
                         "spec": {"containers": [{"name": "c", "image": "nginx"}]}},
        },
    }))
    .unwrap();
    deployments.create(&PostParams::default(), &d).await.unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), "team");
    wait_for(T, "2 running pods", || async {
        let ps = pods.list(&ListParams::default()).await.ok()?.items;
        let running = ps
            .iter()
            .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
            .count();
        (running == 2).then_some(())
    })
    .await
    .unwrap();

    namespaces.delete("team", &DeleteParams::default()).await.unwrap();
    let gone = wait_for(T, "namespace team gone", || async {
        match namespaces.get_opt("team").await {
            Ok(None) => Some(true),
            _ => None,
        }
    })
    .await;
    if let Err(e) = gone {
        let ns = namespaces.get_opt("team").await.unwrap();
        panic!("{e}: {:?}", ns.map(|n| n.status));
    }
    // Nothing is left behind (the names can be used again).
    assert!(maps.list(&ListParams::default()).await.map(|l| l.items.is_empty()).unwrap_or(true));
    assert!(pods.list(&ListParams::default()).await.map(|l| l.items.is_empty()).unwrap_or(true));
}
