//! Endpoints and EndpointSlices end to end: a service over a deployment's pods gets ready
//! addresses with its named target port resolved per pod; a never-ready pod is listed as not
//! ready; scaling down drops addresses; a deleted pod shows as terminating in its slice; a
//! service without a selector (and the `kubernetes` service) is left alone.

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Endpoints, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::Api;
use serde_json::json;
use skiff::controllers::cluster::{wait_for, LocalCluster};

const T: Duration = Duration::from_secs(30);

fn deployment(name: &str, replicas: i32, annotations: serde_json::Value) -> Deployment {
    serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name, "tier": "web"}, "annotations": annotations},
                "spec": {"containers": [{"name": "c", "image": "nginx",
                    "ports": [{"name": "http", "containerPort": 8080}]}]},
            },
        },
    }))
    .unwrap()
}

fn service(name: &str, selector: serde_json::Value) -> Service {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "labels": {"team": "a"}},
        "spec": {"selector": selector,
                 "ports": [{"name": "web", "port": 80, "targetPort": "http"}]},
    }))
    .unwrap()
}

/// (ready IPs, not-ready IPs, ports) of an Endpoints object.
fn addresses(ep: &Endpoints) -> (Vec<String>, Vec<String>, Vec<i32>) {
    let (mut ready, mut not_ready, mut ports) = (vec![], vec![], vec![]);
    for s in ep.subsets.iter().flatten() {
        ready.extend(s.addresses.iter().flatten().map(|a| a.ip.clone()));
        not_ready.extend(s.not_ready_addresses.iter().flatten().map(|a| a.ip.clone()));
        ports.extend(s.ports.iter().flatten().map(|p| p.port));
    }
    ports.sort();
    ports.dedup();
    (ready, not_ready, ports)
}

async fn slices_of(api: &Api<EndpointSlice>, svc: &str) -> Vec<EndpointSlice> {
    let lp = ListParams::default().labels(&format!("kubernetes.io/service-name={svc}"));
    api.list(&lp).await.unwrap().items
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_get_endpoints_and_slices_of_their_pods() {
    let cluster = LocalCluster::start(2).await.expect("cluster");
    let c = cluster.client.clone();
    let deploys: Api<Deployment> = Api::default_namespaced(c.clone());
    let services: Api<Service> = Api::default_namespaced(c.clone());
    let endpoints: Api<Endpoints> = Api::default_namespaced(c.clone());
    let slices: Api<EndpointSlice> = Api::default_namespaced(c.clone());
    let pods: Api<Pod> = Api::default_namespaced(c.clone());
    let pp = PostParams::default();

    deploys.create(&pp, &deployment("web", 3, json!({}))).await.unwrap();
    deploys
        .create(&pp, &deployment("slow", 1, json!({"skiff.dev/simulate-never-ready": "true"})))
        .await
        .unwrap();
    services.create(&pp, &service("web", json!({"app": "web"}))).await.unwrap();
    services.create(&pp, &service("slow", json!({"app": "slow"}))).await.unwrap();
    let manual: Service = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "manual"},
        "spec": {"ports": [{"port": 80}]},
    }))
    .unwrap();
    services.create(&pp, &manual).await.unwrap();

    // Three ready addresses on the resolved port.
    let ep = wait_for(T, "three ready addresses", || async {
        let ep = endpoints.get_opt("web").await.unwrap()?;
        let (ready, not_ready, ports) = addresses(&ep);
        (ready.len() == 3 && not_ready.is_empty() && ports == [8080]).then_some(ep)
    })
    .await
    .unwrap();
    let labels = ep.metadata.labels.clone().unwrap_or_default();
    assert_eq!(labels.get("team").map(String::as_str), Some("a"), "service labels copied");
    assert!(
        ep.metadata
            .annotations
            .as_ref()
            .is_some_and(|a| a.contains_key("endpoints.kubernetes.io/last-change-trigger-time")),
        "trigger time annotation: {:?}",
        ep.metadata.annotations
    );
    let addr = &ep.subsets.as_ref().unwrap()[0].addresses.as_ref().unwrap()[0];
    assert!(addr.node_name.as_deref().is_some_and(|n| n.starts_with("skiff-sim-")));
    let target = addr.target_ref.as_ref().unwrap();
    assert_eq!(target.kind.as_deref(), Some("Pod"));
    assert!(target.uid.is_some());
    let port = &ep.subsets.as_ref().unwrap()[0].ports.as_ref().unwrap()[0];
    assert_eq!(port.name.as_deref(), Some("web"));

    // The slice: three ready endpoints, labels, owner, address type.
    let slice = wait_for(T, "a slice with three ready endpoints", || async {
        let list = slices_of(&slices, "web").await;
        let ready = list
            .iter()
            .flat_map(|s| s.endpoints.iter())
            .filter(|e| e.conditions.as_ref().and_then(|c| c.ready) == Some(true))
            .count();
        (list.len() == 1 && ready == 3).then(|| list[0].clone())
    })
    .await
    .unwrap();
    let labels = slice.metadata.labels.clone().unwrap();
    assert_eq!(
        labels.get("endpointslice.kubernetes.io/managed-by").map(String::as_str),
        Some("endpointslice-controller.k8s.io")
    );
    assert_eq!(labels.get("team").map(String::as_str), Some("a"));
    assert_eq!(slice.address_type, "IPv4");
    let svc = services.get("web").await.unwrap();
    let owner = &slice.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.uid.as_str()),
        ("Service", svc.metadata.uid.as_deref().unwrap())
    );
    assert_eq!(owner.controller, Some(true));
    let ports = slice.ports.as_ref().unwrap();
    assert_eq!((ports[0].name.as_deref(), ports[0].port), (Some("web"), Some(8080)));
    let e = &slice.endpoints[0];
    assert!(e.node_name.is_some() && e.target_ref.is_some());
    let conds = e.conditions.as_ref().unwrap();
    assert_eq!((conds.serving, conds.terminating), (Some(true), Some(false)));

    // The never-ready pod: a not-ready address, and ready=false, serving=false.
    wait_for(T, "a not-ready address", || async {
        let ep = endpoints.get_opt("slow").await.unwrap()?;
        let (ready, not_ready, _) = addresses(&ep);
        (ready.is_empty() && not_ready.len() == 1).then_some(())
    })
    .await
    .unwrap();
    wait_for(T, "a not-ready slice endpoint", || async {
        let list = slices_of(&slices, "slow").await;
        let e = list.first()?.endpoints.first()?.clone();
        let c = e.conditions?;
        (c.ready == Some(false) && c.serving == Some(false)).then_some(())
    })
    .await
    .unwrap();

    // publishNotReadyAddresses: the never-ready pod becomes a ready address.
    services
        .patch(
            "slow",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"publishNotReadyAddresses": true}})),
        )
        .await
        .unwrap();
    wait_for(T, "the unready pod published", || async {
        let ep = endpoints.get_opt("slow").await.unwrap()?;
        let (ready, not_ready, _) = addresses(&ep);
        (ready.len() == 1 && not_ready.is_empty()).then_some(())
    })
    .await
    .unwrap();

    // Scale down: two addresses left.
    deploys
        .patch("web", &PatchParams::default(), &Patch::Merge(json!({"spec": {"replicas": 2}})))
        .await
        .unwrap();
    wait_for(T, "two ready addresses", || async {
        let ep = endpoints.get_opt("web").await.unwrap()?;
        let n = slices_of(&slices, "web").await.iter().map(|s| s.endpoints.len()).sum::<usize>();
        (addresses(&ep).0.len() == 2 && n == 2).then_some(())
    })
    .await
    .unwrap();

    // A deleted pod (its grace period keeps it) shows as terminating in the slice and leaves
    // the Endpoints at once.
    let victim = pods
        .list(&ListParams::default().labels("app=web"))
        .await
        .unwrap()
        .items
        .into_iter()
        .find(|p| p.metadata.deletion_timestamp.is_none())
        .unwrap();
    let victim_name = victim.metadata.name.clone().unwrap();
    // Its node stops (no kubelet finishes the deletion), so the pod stays terminating.
    cluster.nodes.stop(victim.spec.as_ref().unwrap().node_name.as_deref().unwrap());
    pods.delete(&victim_name, &DeleteParams::default()).await.unwrap();
    wait_for(T, "a terminating endpoint", || async {
        let list = slices_of(&slices, "web").await;
        let e = list.iter().flat_map(|s| s.endpoints.iter()).find(|e| {
            e.target_ref.as_ref().and_then(|r| r.name.as_deref()) == Some(victim_name.as_str())
        })?;
        let c = e.conditions.clone()?;
        (c.terminating == Some(true) && c.ready == Some(false)).then_some(())
    })
    .await
    .unwrap();
    wait_for(T, "the endpoints without the terminating pod", || async {
        let ep = endpoints.get_opt("web").await.unwrap()?;
        let names: Vec<String> = ep
            .subsets
            .iter()
            .flatten()
            .flat_map(|s| s.addresses.iter().flatten())
            .filter_map(|a| a.target_ref.as_ref().and_then(|r| r.name.clone()))
            .collect();
        (!names.is_empty() && !names.contains(&victim_name)).then_some(())
    })
    .await
    .unwrap();
    // No selector (as the kubernetes service): no Endpoints, no slices from the controllers.
    assert!(endpoints.get_opt("manual").await.unwrap().is_none());
    assert!(slices_of(&slices, "manual").await.is_empty());
    let managed = slices_of(&slices, "kubernetes").await.into_iter().any(|s| {
        s.metadata.labels.unwrap_or_default().contains_key("endpointslice.kubernetes.io/managed-by")
    });
    assert!(!managed, "the kubernetes service has no controller-made slices");

    // A deleted service takes its Endpoints with it.
    services.delete("slow", &DeleteParams::default()).await.unwrap();
    wait_for(T, "the endpoints of a deleted service gone", || async {
        endpoints.get_opt("slow").await.unwrap().is_none().then_some(())
    })
    .await
    .unwrap();
    assert!(cluster.running());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_without_pods_has_a_placeholder_slice() {
    let cluster = LocalCluster::start(1).await.expect("cluster");
    let c = cluster.client.clone();
    let services: Api<Service> = Api::default_namespaced(c.clone());
    let endpoints: Api<Endpoints> = Api::default_namespaced(c.clone());
    let slices: Api<EndpointSlice> = Api::default_namespaced(c.clone());
    services
        .create(&PostParams::default(), &service("empty", json!({"app": "none"})))
        .await
        .unwrap();
    let ep = wait_for(T, "empty endpoints", || async { endpoints.get_opt("empty").await.unwrap() })
        .await
        .unwrap();
    assert!(ep.subsets.as_ref().is_none_or(|s| s.is_empty()));
    let list = wait_for(T, "a placeholder slice", || async {
        let list = slices_of(&slices, "empty").await;
        (!list.is_empty()).then_some(list)
    })
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let list2 = slices_of(&slices, "empty").await;
    assert_eq!(list2.len(), 1, "one placeholder, not recreated: {list2:?}");
    assert_eq!(list[0].metadata.name, list2[0].metadata.name);
    assert!(list2[0].endpoints.is_empty());
}
