//! ResourceQuota (usage published by the controller, admission refusing what would exceed it,
//! even under concurrent creates), LimitRange (defaults, min/max/ratio), and service cluster IP
//! and node port allocation, through kube-rs and the real kubectl 1.33.

use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::core::v1::{LimitRange, Namespace, Pod, ResourceQuota, Service};
use k8s_openapi::api::networking::v1::IPAddress;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::{json, Value};
use skiff::controllers::cluster::wait_for;
use skiff::testing::skiff_server::{run_kubectl, InProcessServer};

const KUBECTL: &str = "/usr/lib/google-cloud-sdk/bin/kubectl.1.33";
const WAIT: Duration = Duration::from_secs(60);

async fn namespace(client: &Client, name: &str) {
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
    Api::<Namespace>::all(client.clone()).create(&PostParams::default(), &ns).await.unwrap();
}

fn pod(name: &str, resources: Value) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"containers": [{"name": "app", "image": "busybox", "resources": resources}]},
    }))
    .unwrap()
}

/// The API error a write failed with (code, message).
fn api_error<T: std::fmt::Debug>(r: Result<T, kube::Error>) -> (u16, String) {
    match r {
        Err(kube::Error::Api(e)) => (e.code, e.message),
        other => panic!("expected an API error, got {other:?}"),
    }
}

/// Waits until the quota's status.used[resource] is `want`.
async fn wait_used(quotas: &Api<ResourceQuota>, name: &str, resource: &str, want: &str) {
    let what = format!("quota {name} used {resource}={want}");
    wait_for(WAIT, &what, || async {
        let q = quotas.get(name).await.ok()?;
        let used = q.status?.used?;
        (used.get(resource)?.0 == want).then_some(())
    })
    .await
    .unwrap();
}

/// Runs kubectl 1.33 (skipped where it is not installed: None).
async fn kubectl(kubeconfig: &Path, args: &[&str]) -> Option<(bool, String, String)> {
    if !Path::new(KUBECTL).exists() {
        eprintln!("{KUBECTL} not installed; skipping the kubectl part");
        return None;
    }
    let out = run_kubectl(Path::new(KUBECTL), kubeconfig, args).await.expect("kubectl runs");
    Some((out.success(), out.stdout, out.stderr))
}

fn manifest(dir: &Path, name: &str, body: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, body).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quota_usage_is_published_and_enforced() {
    let server = InProcessServer::start().await.expect("server starts");
    let client = server.client.clone();
    namespace(&client, "q1").await;
    let quotas: Api<ResourceQuota> = Api::namespaced(client.clone(), "q1");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "q1");
    let quota: ResourceQuota = serde_json::from_value(json!({
        "metadata": {"name": "compute"},
        "spec": {"hard": {"pods": "2", "requests.cpu": "1", "requests.memory": "1Gi",
            "limits.cpu": "2", "limits.memory": "2Gi", "services": "5"}},
    }))
    .unwrap();
    quotas.create(&PostParams::default(), &quota).await.unwrap();
    wait_used(&quotas, "compute", "pods", "0").await;
    let q = quotas.get("compute").await.unwrap();
    assert_eq!(q.status.unwrap().hard.unwrap()["requests.memory"].0, "1Gi");

    // A quota on compute resources needs every container to state them.
    let (code, message) =
        api_error(pods.create(&PostParams::default(), &pod("bare", json!({}))).await);
    assert_eq!(code, 403);
    assert_eq!(
        message,
        "pods \"bare\" is forbidden: failed quota: compute: must specify limits.cpu for: app; \
         limits.memory for: app; requests.cpu for: app; requests.memory for: app"
    );

    let sized = |cpu: &str| json!({"requests": {"cpu": cpu, "memory": "256Mi"}, "limits": {"cpu": "1", "memory": "512Mi"}});
    pods.create(&PostParams::default(), &pod("p1", sized("500m"))).await.unwrap();
    wait_used(&quotas, "compute", "requests.cpu", "500m").await;
    wait_used(&quotas, "compute", "pods", "1").await;
    wait_used(&quotas, "compute", "limits.memory", "512Mi").await;

    let (code, message) =
        api_error(pods.create(&PostParams::default(), &pod("p2", sized("600m"))).await);
    assert_eq!(code, 403);
    assert_eq!(
        message,
        "pods \"p2\" is forbidden: exceeded quota: compute, requested: requests.cpu=600m, \
         used: requests.cpu=500m, limited: requests.cpu=1"
    );

    // The same refusal through kubectl, and the usage `kubectl describe quota` shows.
    let dir = server.kubeconfig.parent().unwrap().to_path_buf();
    let file = manifest(
        &dir,
        "p3.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p3\n  namespace: q1\nspec:\n  containers:\n  \
         - name: app\n    image: busybox\n    resources:\n      requests: {cpu: 700m, memory: 256Mi}\n      \
         limits: {cpu: '1', memory: 512Mi}\n",
    );
    let kc = server.kubeconfig.clone();
    if let Some((ok, _, stderr)) = kubectl(&kc, &["create", "-f", file.to_str().unwrap()]).await {
        assert!(!ok);
        assert!(
            stderr.contains(
                "Error from server (Forbidden): error when creating \"",
            ) && stderr.contains(
                "pods \"p3\" is forbidden: exceeded quota: compute, requested: requests.cpu=700m, \
                 used: requests.cpu=500m, limited: requests.cpu=1"
            ),
            "{stderr}"
        );
        let (ok, out, err) =
            kubectl(&kc, &["describe", "quota", "compute", "-n", "q1"]).await.unwrap();
        assert!(ok, "{err}");
        let rows: Vec<Vec<&str>> =
            out.lines().map(|l| l.split_whitespace().collect::<Vec<_>>()).collect();
        for want in [
            ["pods", "1", "2"],
            ["requests.cpu", "500m", "1"],
            ["requests.memory", "256Mi", "1Gi"],
            ["limits.cpu", "1", "2"],
            ["limits.memory", "512Mi", "2Gi"],
            ["services", "0", "5"],
        ] {
            assert!(rows.iter().any(|r| r == &want), "no row {want:?} in:\n{out}");
        }
    }

    // Deleting the pod gives its share back.
    pods.delete("p1", &DeleteParams::default().grace_period(0)).await.unwrap();
    wait_used(&quotas, "compute", "pods", "0").await;
    wait_used(&quotas, "compute", "requests.cpu", "0").await;
    pods.create(&PostParams::default(), &pod("p4", sized("600m"))).await.unwrap();
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_creates_cannot_exceed_a_quota() {
    let server = InProcessServer::start().await.expect("server starts");
    let client = server.client.clone();
    namespace(&client, "q2").await;
    let quotas: Api<ResourceQuota> = Api::namespaced(client.clone(), "q2");
    let quota: ResourceQuota = serde_json::from_value(json!({
        "metadata": {"name": "count"}, "spec": {"hard": {"pods": "5", "count/configmaps": "20"}},
    }))
    .unwrap();
    quotas.create(&PostParams::default(), &quota).await.unwrap();
    wait_used(&quotas, "count", "pods", "0").await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "q2");
    let creates = (0..20).map(|i| {
        let pods = pods.clone();
        async move { pods.create(&PostParams::default(), &pod(&format!("p{i}"), json!({}))).await }
    });
    let results = futures::future::join_all(creates).await;
    let mut admitted = 0;
    for r in results {
        match r {
            Ok(_) => admitted += 1,
            Err(kube::Error::Api(e)) => {
                assert_eq!(e.code, 403, "{}", e.message);
                assert!(
                    e.message.contains("exceeded quota: count, requested: pods=1"),
                    "{}",
                    e.message
                );
            }
            Err(e) => panic!("unexpected error {e}"),
        }
    }
    assert_eq!(admitted, 5, "exactly the quota's five pods are admitted");
    assert_eq!(pods.list(&ListParams::default()).await.unwrap().items.len(), 5);
    wait_used(&quotas, "count", "pods", "5").await;
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limit_ranges_default_and_bound_containers() {
    let server = InProcessServer::start().await.expect("server starts");
    let client = server.client.clone();
    namespace(&client, "lr").await;
    let lr: LimitRange = serde_json::from_value(json!({
        "metadata": {"name": "bounds"},
        "spec": {"limits": [{"type": "Container",
            "default": {"cpu": "500m", "memory": "256Mi"},
            "defaultRequest": {"cpu": "100m", "memory": "128Mi"},
            "max": {"cpu": "1", "memory": "1Gi"},
            "min": {"cpu": "50m"},
            "maxLimitRequestRatio": {"cpu": "10"}}]},
    }))
    .unwrap();
    Api::<LimitRange>::namespaced(client.clone(), "lr")
        .create(&PostParams::default(), &lr)
        .await
        .unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), "lr");

    let created = pods.create(&PostParams::default(), &pod("plain", json!({}))).await.unwrap();
    let res = serde_json::to_value(&created.spec.unwrap().containers[0].resources).unwrap();
    assert_eq!(res["requests"], json!({"cpu": "100m", "memory": "128Mi"}));
    assert_eq!(res["limits"], json!({"cpu": "500m", "memory": "256Mi"}));
    assert_eq!(
        created.metadata.annotations.unwrap()["kubernetes.io/limit-ranger"],
        "LimitRanger plugin set: cpu, memory request for container app; cpu, memory limit for container app"
    );

    let cases = [
        (
            "big",
            json!({"limits": {"cpu": "2"}}),
            "maximum cpu usage per Container is 1, but limit is 2",
        ),
        (
            "ratio",
            json!({"requests": {"cpu": "50m"}, "limits": {"cpu": "1"}}),
            "cpu max limit to request ratio per Container is 10, but provided ratio is 20.000000",
        ),
        (
            "small",
            json!({"requests": {"cpu": "10m"}, "limits": {"cpu": "100m"}}),
            "minimum cpu usage per Container is 50m, but request is 10m",
        ),
    ];
    for (name, resources, why) in cases {
        let (code, message) =
            api_error(pods.create(&PostParams::default(), &pod(name, resources)).await);
        assert_eq!(code, 403, "{name}");
        assert_eq!(message, format!("pods \"{name}\" is forbidden: {why}"));
    }
    // A generated name does not exist yet when admission refuses: the message quotes the
    // prefix, as upstream's admission errors do.
    let mut unnamed = pod("big", json!({"limits": {"cpu": "2"}}));
    unnamed.metadata.name = None;
    unnamed.metadata.generate_name = Some("big-".into());
    let (code, message) = api_error(pods.create(&PostParams::default(), &unnamed).await);
    assert_eq!(code, 403);
    assert_eq!(
        message,
        "pods \"big-\" is forbidden: maximum cpu usage per Container is 1, but limit is 2"
    );

    let dir = server.kubeconfig.parent().unwrap().to_path_buf();
    let file = manifest(
        &dir,
        "big.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: big\n  namespace: lr\nspec:\n  containers:\n  \
         - name: app\n    image: busybox\n    resources:\n      limits: {cpu: '2'}\n",
    );
    if let Some((ok, _, stderr)) =
        kubectl(&server.kubeconfig, &["create", "-f", file.to_str().unwrap()]).await
    {
        assert!(!ok);
        assert!(
            stderr.contains("Error from server (Forbidden): error when creating \"")
                && stderr.contains(
                    "pods \"big\" is forbidden: maximum cpu usage per Container is 1, but limit is 2"
                ),
            "{stderr}"
        );
        let args = ["describe", "limitrange", "bounds", "-n", "lr"];
        let (ok, out, err) = kubectl(&server.kubeconfig, &args).await.unwrap();
        assert!(ok, "{err}");
        let rows: Vec<Vec<&str>> =
            out.lines().map(|l| l.split_whitespace().collect::<Vec<_>>()).collect();
        for want in [
            vec!["Container", "cpu", "50m", "1", "100m", "500m", "10"],
            vec!["Container", "memory", "-", "1Gi", "128Mi", "256Mi", "-"],
        ] {
            assert!(rows.iter().any(|r| r == &want), "no row {want:?} in:\n{out}");
        }
    }

    // A LimitRange whose values contradict each other is refused.
    let bad: LimitRange = serde_json::from_value(json!({
        "metadata": {"name": "bad"},
        "spec": {"limits": [{"type": "Container", "default": {"cpu": "500m"},
            "defaultRequest": {"cpu": "800m"}}]},
    }))
    .unwrap();
    let (code, message) = api_error(
        Api::<LimitRange>::namespaced(client.clone(), "lr")
            .create(&PostParams::default(), &bad)
            .await,
    );
    assert_eq!(code, 422);
    assert_eq!(
        message,
        "LimitRange \"bad\" is invalid: spec.limits[0].defaultRequest[cpu]: Invalid value: \"800m\": \
         default request value 800m is greater than default limit value 500m"
    );
    server.stop().await.unwrap();
}

fn service(name: &str, spec: Value) -> Service {
    let mut spec = spec;
    spec["ports"] = spec.get("ports").cloned().unwrap_or(json!([{"port": 80}]));
    serde_json::from_value(json!({"metadata": {"name": name}, "spec": spec})).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_get_distinct_cluster_ips_and_node_ports() {
    let server = InProcessServer::start().await.expect("server starts");
    let client = server.client.clone();
    let svcs: Api<Service> = Api::namespaced(client.clone(), "default");
    let pp = PostParams::default();

    let creates =
        (0..50).map(|i| {
            let svcs = svcs.clone();
            async move {
                svcs.create(&PostParams::default(), &service(&format!("s{i}"), json!({}))).await
            }
        });
    let mut ips = HashSet::new();
    for r in futures::future::join_all(creates).await {
        let svc = r.expect("service created");
        let spec = svc.spec.unwrap();
        let ip = spec.cluster_ip.unwrap();
        assert_eq!(spec.cluster_ips.unwrap(), vec![ip.clone()]);
        let addr: Ipv4Addr = ip.parse().unwrap();
        assert_eq!(addr.octets()[..2], [10, 43], "{ip} is in the service range");
        assert!(ips.insert(ip.clone()), "{ip} allocated twice");
    }
    assert_eq!(ips.len(), 50);
    let recorded =
        Api::<IPAddress>::all(client.clone()).list(&ListParams::default()).await.unwrap();
    let recorded: HashSet<String> =
        recorded.items.into_iter().filter_map(|a| a.metadata.name).collect();
    assert!(ips.is_subset(&recorded), "every allocation is an IPAddress");

    // A requested IP: taken, out of range, free again after delete.
    let fixed = json!({"clusterIP": "10.43.100.100"});
    svcs.create(&pp, &service("fixed", fixed.clone())).await.unwrap();
    let (code, message) = api_error(svcs.create(&pp, &service("dup", fixed.clone())).await);
    assert_eq!(code, 422);
    assert_eq!(
        message,
        "Service \"dup\" is invalid: spec.clusterIPs: Invalid value: []string{\"10.43.100.100\"}: \
         failed to allocate IP 10.43.100.100: provided IP is already allocated"
    );
    let (_, message) =
        api_error(svcs.create(&pp, &service("far", json!({"clusterIP": "10.99.0.5"}))).await);
    assert!(
        message.ends_with(
            "failed to allocate IP 10.99.0.5: the provided IP (10.99.0.5) is not in the valid range. \
             The range of valid IPs is 10.43.0.0/16"
        ),
        "{message}"
    );
    let (code, message) = api_error(
        svcs.patch(
            "fixed",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"clusterIP": "10.43.7.7"}})),
        )
        .await,
    );
    assert_eq!(code, 422);
    assert!(
        message.contains(
            "spec.clusterIPs[0]: Invalid value: []string{\"10.43.7.7\"}: may not change once set"
        ),
        "{message}"
    );
    svcs.delete("fixed", &DeleteParams::default()).await.unwrap();
    let again = svcs.create(&pp, &service("again", fixed)).await.unwrap();
    assert_eq!(again.spec.unwrap().cluster_ip.as_deref(), Some("10.43.100.100"));

    // Node ports: a requested one is exclusive, and released by a type change or a delete.
    let node_port = |np: Option<i64>| {
        let mut port = json!({"port": 80});
        if let Some(np) = np {
            port["nodePort"] = json!(np);
        }
        json!({"type": "NodePort", "ports": [port]})
    };
    svcs.create(&pp, &service("np1", node_port(Some(30100)))).await.unwrap();
    let (code, message) =
        api_error(svcs.create(&pp, &service("np2", node_port(Some(30100)))).await);
    assert_eq!(code, 422);
    assert_eq!(
        message,
        "Service \"np2\" is invalid: spec.ports[0].nodePort: Invalid value: 30100: provided port is already allocated"
    );
    let np3 = svcs.create(&pp, &service("np3", node_port(None))).await.unwrap();
    let auto = np3.spec.unwrap().ports.unwrap()[0].node_port.unwrap();
    assert!((30000..=32767).contains(&auto) && auto != 30100, "{auto}");
    let (_, message) =
        api_error(svcs.create(&pp, &service("np4", node_port(Some(auto.into())))).await);
    assert!(message.ends_with("provided port is already allocated"), "{message}");

    let to_cluster_ip = Patch::Merge(json!({"spec": {"type": "ClusterIP"}}));
    let np1 = svcs.patch("np1", &PatchParams::default(), &to_cluster_ip).await.unwrap();
    assert_eq!(np1.spec.unwrap().ports.unwrap()[0].node_port, None, "node port dropped");
    svcs.create(&pp, &service("np2", node_port(Some(30100)))).await.unwrap();
    svcs.delete("np3", &DeleteParams::default()).await.unwrap();
    svcs.create(&pp, &service("np4", node_port(Some(auto.into())))).await.unwrap();
    server.stop().await.unwrap();
}

/// Priority admission runs before quota (as upstream's plugin order): a pod without a class
/// gets the globalDefault class first, so a quota scoped to that class counts it; a pod refused
/// for an unknown class is never charged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quota_scoped_by_priority_class_sees_the_default_class() {
    let server = InProcessServer::start().await.expect("server starts");
    let client = server.client.clone();
    namespace(&client, "q5").await;
    let classes: Api<k8s_openapi::api::scheduling::v1::PriorityClass> = Api::all(client.clone());
    let vip = serde_json::from_value(json!({
        "metadata": {"name": "vip"}, "value": 1000, "globalDefault": true,
    }))
    .unwrap();
    classes.create(&PostParams::default(), &vip).await.unwrap();
    let quotas: Api<ResourceQuota> = Api::namespaced(client.clone(), "q5");
    for q in [
        json!({"metadata": {"name": "vip-pods"}, "spec": {"hard": {"pods": "1"}, "scopeSelector":
            {"matchExpressions": [{"scopeName": "PriorityClass", "operator": "In", "values": ["vip"]}]}}}),
        json!({"metadata": {"name": "all-pods"}, "spec": {"hard": {"pods": "10"}}}),
    ] {
        let q: ResourceQuota = serde_json::from_value(q).unwrap();
        quotas.create(&PostParams::default(), &q).await.unwrap();
    }
    wait_used(&quotas, "vip-pods", "pods", "0").await;
    wait_used(&quotas, "all-pods", "pods", "0").await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "q5");
    let a = pods.create(&PostParams::default(), &pod("a", json!({}))).await.unwrap();
    let spec = a.spec.unwrap();
    assert_eq!((spec.priority_class_name.as_deref(), spec.priority), (Some("vip"), Some(1000)));
    let (code, message) =
        api_error(pods.create(&PostParams::default(), &pod("b", json!({}))).await);
    assert_eq!(code, 403, "{message}");
    assert!(message.contains("exceeded quota: vip-pods"), "{message}");

    let mut unknown = pod("c", json!({}));
    unknown.spec.as_mut().unwrap().priority_class_name = Some("nope".into());
    let (code, message) = api_error(pods.create(&PostParams::default(), &unknown).await);
    assert_eq!(code, 403, "{message}");
    assert!(message.contains("no PriorityClass with name nope was found"), "{message}");
    let used = quotas.get("all-pods").await.unwrap().status.unwrap().used.unwrap();
    assert_eq!(used["pods"].0, "1", "the refused pod was not charged");
    server.stop().await.unwrap();
}
