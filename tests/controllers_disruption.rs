//! PodDisruptionBudgets end to end: the disruption controller's status (healthy, desired and
//! expected pods, disruptionsAllowed, observedGeneration, the DisruptionAllowed condition, the
//! scale of the pods' controller for percentages); the eviction subresource taking disruptions
//! from the budget, recording them in status.disruptedPods and refusing with upstream's 429 once
//! none is left (unready and pending pods go without using the budget); and the real
//! `kubectl drain` (1.33 and 1.27) retrying evictions until replacements are Ready elsewhere,
//! then `kubectl uncordon`.

use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use kube::Api;
use serde_json::{json, Value};
use skiff::agent::simulated::NEVER_READY_ANNOTATION;
use skiff::controllers::cluster::{wait_for, LocalCluster};
use skiff::testing::skiff_server::{
    kubectl_binaries, request, run_kubectl, InProcessServer, Kubectl, RawResponse,
};

const T: Duration = Duration::from_secs(60);
const BUDGET_MESSAGE: &str = "Cannot evict pod as it would violate the pod's disruption budget.";

fn deployment(name: &str, replicas: i32) -> Deployment {
    serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "c", "image": "nginx"}]},
            },
        },
    }))
    .unwrap()
}

fn budget(name: &str, app: &str, spec: Value) -> PodDisruptionBudget {
    let mut spec = spec;
    spec["selector"] = json!({"matchLabels": {"app": app}});
    serde_json::from_value(json!({
        "apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
        "metadata": {"name": name},
        "spec": spec,
    }))
    .unwrap()
}

fn pod(name: &str, app: &str, extra: Value) -> Pod {
    let mut p = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": app}},
        "spec": {"containers": [{"name": "c", "image": "nginx"}]},
    });
    if let Some(a) = extra.get("annotations") {
        p["metadata"]["annotations"] = a.clone();
    }
    if let Some(s) = extra.get("nodeSelector") {
        p["spec"]["nodeSelector"] = s.clone();
    }
    serde_json::from_value(p).unwrap()
}

fn ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn phase(p: &Pod) -> &str {
    p.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("")
}

fn node_of(p: &Pod) -> &str {
    p.spec.as_ref().and_then(|s| s.node_name.as_deref()).unwrap_or("")
}

/// (currentHealthy, desiredHealthy, expectedPods, disruptionsAllowed) once the controller has
/// observed the budget's generation.
fn counts(b: &PodDisruptionBudget) -> Option<(i32, i32, i32, i32)> {
    let s = b.status.as_ref()?;
    (s.observed_generation? == b.metadata.generation?).then_some((
        s.current_healthy,
        s.desired_healthy,
        s.expected_pods,
        s.disruptions_allowed,
    ))
}

fn condition(b: &PodDisruptionBudget) -> Option<(String, String)> {
    let c =
        b.status.as_ref()?.conditions.as_ref()?.iter().find(|c| c.type_ == "DisruptionAllowed")?;
    Some((c.status.clone(), c.reason.clone()))
}

async fn wait_counts(api: &Api<PodDisruptionBudget>, name: &str, want: (i32, i32, i32, i32)) {
    let what = format!("budget {name} at {want:?}");
    let waited = wait_for(T, &what, || async {
        let b = api.get(name).await.ok()?;
        (counts(&b) == Some(want)).then_some(())
    })
    .await;
    if let Err(e) = waited {
        panic!("{e}: {:?}", api.get(name).await.ok().and_then(|b| b.status));
    }
}

async fn evict(client: &kube::Client, ns: &str, name: &str) -> RawResponse {
    let body = json!({"apiVersion": "policy/v1", "kind": "Eviction",
                      "metadata": {"name": name, "namespace": ns}});
    request(
        client,
        "POST",
        &format!("/api/v1/namespaces/{ns}/pods/{name}/eviction"),
        &[("content-type", "application/json")],
        body.to_string().into_bytes(),
    )
    .await
    .expect("eviction request")
}

fn assert_budget_refusal(r: &RawResponse, pdb: &str) -> String {
    assert_eq!(r.status, 429, "{}", r.body);
    let v = r.json();
    assert_eq!(v["kind"], "Status", "{v}");
    assert_eq!(v["reason"], "TooManyRequests", "{v}");
    assert_eq!(v["message"], BUDGET_MESSAGE, "{v}");
    assert_eq!(v["details"]["causes"][0]["reason"], "DisruptionBudget", "{v}");
    assert!(r.headers.get("retry-after").is_none(), "no Retry-After: {:?}", r.headers);
    let cause = v["details"]["causes"][0]["message"].as_str().unwrap_or("").to_string();
    assert!(cause.starts_with(&format!("The disruption budget {pdb} needs ")), "{cause}");
    cause
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn budget_status_follows_pods_and_controllers() {
    let cluster = LocalCluster::start(2).await.expect("cluster");
    let c = cluster.client.clone();
    let pp = PostParams::default();
    let deploys: Api<Deployment> = Api::default_namespaced(c.clone());
    let budgets: Api<PodDisruptionBudget> = Api::default_namespaced(c.clone());

    deploys.create(&pp, &deployment("web", 3)).await.unwrap();
    budgets.create(&pp, &budget("web", "web", json!({"minAvailable": 2}))).await.unwrap();
    wait_counts(&budgets, "web", (3, 2, 3, 1)).await;
    let b = budgets.get("web").await.unwrap();
    assert_eq!(condition(&b), Some(("True".into(), "SufficientPods".into())));
    assert!(b.status.as_ref().unwrap().disrupted_pods.is_none());

    // A percentage is taken of the controller's scale (the Deployment's replicas, rounded up).
    deploys.create(&pp, &deployment("api", 2)).await.unwrap();
    budgets.create(&pp, &budget("api", "api", json!({"maxUnavailable": "50%"}))).await.unwrap();
    wait_counts(&budgets, "api", (2, 1, 2, 1)).await;
    let scale = json!({"spec": {"replicas": 4}});
    deploys.patch("api", &PatchParams::default(), &Patch::Merge(&scale)).await.unwrap();
    wait_counts(&budgets, "api", (4, 2, 4, 2)).await;

    // A spec change is observed (generation), and too strict a budget allows nothing.
    let strict = json!({"spec": {"maxUnavailable": 0}});
    budgets.patch("api", &PatchParams::default(), &Patch::Merge(&strict)).await.unwrap();
    wait_counts(&budgets, "api", (4, 4, 4, 0)).await;
    let b = budgets.get("api").await.unwrap();
    assert_eq!(condition(&b), Some(("False".into(), "InsufficientPods".into())));
    assert_eq!(b.status.as_ref().unwrap().observed_generation, Some(2));

    // No pods: nothing expected, nothing allowed.
    budgets.create(&pp, &budget("none", "none", json!({"minAvailable": 1}))).await.unwrap();
    wait_counts(&budgets, "none", (0, 1, 0, 0)).await;
    assert!(cluster.running());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eviction_takes_from_the_budget_and_refuses_when_none_is_left() {
    let cluster = LocalCluster::start(2).await.expect("cluster");
    let c = cluster.client.clone();
    let pp = PostParams::default();
    let pods: Api<Pod> = Api::default_namespaced(c.clone());
    let budgets: Api<PodDisruptionBudget> = Api::default_namespaced(c.clone());

    // Bare pods, so nothing replaces an evicted one: three ready, one never ready, one that
    // can never be scheduled (Pending).
    for i in 0..3 {
        pods.create(&pp, &pod(&format!("solo-{i}"), "solo", json!({}))).await.unwrap();
    }
    let unready = json!({"annotations": {NEVER_READY_ANNOTATION: "true"}});
    pods.create(&pp, &pod("solo-unready", "solo", unready)).await.unwrap();
    let nowhere = json!({"nodeSelector": {"skiff.dev/no-such-node": "x"}});
    pods.create(&pp, &pod("solo-pending", "solo", nowhere)).await.unwrap();
    wait_for(T, "three ready pods and one running unready", || async {
        let list = pods.list(&ListParams::default().labels("app=solo")).await.ok()?.items;
        let n_ready = list.iter().filter(|p| ready(p)).count();
        let unready_running = list
            .iter()
            .any(|p| p.metadata.name.as_deref() == Some("solo-unready") && phase(p) == "Running");
        (n_ready == 3 && unready_running).then_some(())
    })
    .await
    .unwrap();
    budgets.create(&pp, &budget("solo", "solo", json!({"minAvailable": 2}))).await.unwrap();
    wait_counts(&budgets, "solo", (3, 2, 5, 1)).await;

    // Watch the budget to see what the eviction writes before the controller catches up.
    let rv = budgets.get("solo").await.unwrap().metadata.resource_version.unwrap();
    let wp = WatchParams::default().fields("metadata.name=solo");
    let mut stream = budgets.watch(&wp, &rv).await.unwrap().boxed();

    let r = evict(&c, "default", "solo-0").await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.json()["status"], "Success", "{}", r.body);
    let taken = tokio::time::timeout(T, async {
        while let Some(ev) = stream.try_next().await.unwrap() {
            if let WatchEvent::Modified(b) = ev {
                let s = b.status.clone().unwrap_or_default();
                if s.disrupted_pods.as_ref().is_some_and(|m| m.contains_key("solo-0")) {
                    return b;
                }
            }
        }
        panic!("watch ended");
    })
    .await
    .expect("the eviction records solo-0 in disruptedPods");
    let s = taken.status.as_ref().unwrap();
    assert_eq!(s.disruptions_allowed, 0);
    assert_eq!(condition(&taken), Some(("False".into(), "InsufficientPods".into())));

    // Nothing is left: the next eviction is refused, as upstream words it.
    let r = evict(&c, "default", "solo-1").await;
    assert_budget_refusal(&r, "solo");
    assert!(pods.get_opt("solo-1").await.unwrap().is_some(), "solo-1 was not deleted");

    // Once the controller has counted the loss, the cause gives the settled numbers, and the
    // entry of the deleted pod is gone from disruptedPods.
    wait_counts(&budgets, "solo", (2, 2, 4, 0)).await;
    let b = budgets.get("solo").await.unwrap();
    assert!(b.status.as_ref().unwrap().disrupted_pods.as_ref().is_none_or(|m| m.is_empty()));
    let r = evict(&c, "default", "solo-1").await;
    let cause = assert_budget_refusal(&r, "solo");
    assert_eq!(cause, "The disruption budget solo needs 2 healthy pods and has 2 currently");

    // An unready pod may go while the budget is met (IfHealthyBudget), without using it; a
    // Pending pod is no disruption at all.
    let r = evict(&c, "default", "solo-unready").await;
    assert_eq!(r.status, 201, "{}", r.body);
    let r = evict(&c, "default", "solo-pending").await;
    assert_eq!(r.status, 201, "{}", r.body);
    wait_counts(&budgets, "solo", (2, 2, 2, 0)).await;

    // Two budgets over one pod: upstream's 500.
    budgets.create(&pp, &budget("solo-too", "solo", json!({"maxUnavailable": 1}))).await.unwrap();
    let r = evict(&c, "default", "solo-2").await;
    assert_eq!(r.status, 500, "{}", r.body);
    assert_eq!(
        r.json()["message"],
        "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support."
    );
    assert!(cluster.running());
}

/// kubectl `args` against the server; panics with its output when it fails.
async fn kubectl(k: &Kubectl, server: &InProcessServer, args: &[&str]) -> (String, String) {
    let out = run_kubectl(&k.path, &server.kubeconfig, args).await.expect("kubectl runs");
    assert!(out.success(), "kubectl {} {args:?}: {}{}", k.version, out.stdout, out.stderr);
    (out.stdout, out.stderr)
}

const NODES: [&str; 3] = ["skiff-sim-0", "skiff-sim-1", "skiff-sim-2"];

/// Three replicas all on skiff-sim-0 under a budget of minAvailable 2; `kubectl drain` of that
/// node can evict only one at a time and has to retry until each replacement is Ready elsewhere.
async fn drain_scenario(k: &Kubectl, server: &InProcessServer) {
    let c = server.client.clone();
    let ns = format!("drain-{}", k.version.replace('.', "-"));
    let pp = PostParams::default();
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(c.clone());
    let namespace = serde_json::from_value(json!({"metadata": {"name": ns}})).unwrap();
    namespaces.create(&pp, &namespace).await.unwrap();
    let nodes: Api<Node> = Api::all(c.clone());
    let pods: Api<Pod> = Api::namespaced(c.clone(), &ns);
    let deploys: Api<Deployment> = Api::namespaced(c.clone(), &ns);
    let budgets: Api<PodDisruptionBudget> = Api::namespaced(c.clone(), &ns);

    for n in &NODES[1..] {
        kubectl(k, server, &["cordon", n]).await;
    }
    deploys.create(&pp, &deployment("web", 3)).await.unwrap();
    budgets.create(&pp, &budget("web", "web", json!({"minAvailable": 2}))).await.unwrap();
    wait_for(T, "three ready pods on skiff-sim-0", || async {
        let list = pods.list(&ListParams::default().labels("app=web")).await.ok()?.items;
        let placed = list.iter().filter(|p| ready(p) && node_of(p) == NODES[0]).count();
        (list.len() == 3 && placed == 3).then_some(())
    })
    .await
    .unwrap();
    wait_counts(&budgets, "web", (3, 2, 3, 1)).await;
    for n in &NODES[1..] {
        kubectl(k, server, &["uncordon", n]).await;
    }

    let (out, err) = kubectl(
        k,
        server,
        &["drain", NODES[0], "--ignore-daemonsets", "--delete-emptydir-data", "--timeout=100s"],
    )
    .await;
    assert!(out.contains(&format!("node/{} drained", NODES[0])), "{out}{err}");
    assert!(
        err.contains(BUDGET_MESSAGE) || out.contains(BUDGET_MESSAGE),
        "drain retried evictions the budget refused: {out}{err}"
    );
    let node = nodes.get(NODES[0]).await.unwrap();
    assert_eq!(node.spec.as_ref().and_then(|s| s.unschedulable), Some(true), "cordoned");
    let list = pods.list(&ListParams::default().labels("app=web")).await.unwrap().items;
    assert!(list.iter().all(|p| node_of(p) != NODES[0]), "no pod left on the drained node");
    wait_for(T, "three ready pods elsewhere", || async {
        let list = pods.list(&ListParams::default().labels("app=web")).await.ok()?.items;
        let ok = list.len() == 3 && list.iter().all(|p| ready(p) && node_of(p) != NODES[0]);
        ok.then_some(())
    })
    .await
    .unwrap();
    wait_counts(&budgets, "web", (3, 2, 3, 1)).await;

    let (out, _) = kubectl(k, server, &["uncordon", NODES[0]]).await;
    assert!(out.contains(&format!("node/{} uncordoned", NODES[0])), "{out}");
    let node = nodes.get(NODES[0]).await.unwrap();
    assert_ne!(node.spec.as_ref().and_then(|s| s.unschedulable), Some(true), "uncordoned");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_drain_waits_for_the_budget() {
    let binaries: Vec<Kubectl> = kubectl_binaries()
        .into_iter()
        .filter(|k| k.version == "1.33" || k.version == "1.27")
        .collect();
    if binaries.is_empty() {
        eprintln!("no kubectl.1.33 or kubectl.1.27 found; skipping");
        return;
    }
    let server = InProcessServer::start_with(|c| {
        if let Some(components) = c.components.as_mut() {
            components.simulate_nodes = 3;
        }
    })
    .await
    .expect("server starts");
    let nodes: Api<Node> = Api::all(server.client.clone());
    wait_for(T, "three ready nodes", || async {
        let list = nodes.list(&ListParams::default()).await.ok()?.items;
        let ready = list.iter().filter(|n| {
            n.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        });
        (ready.count() == 3).then_some(())
    })
    .await
    .unwrap();
    // Newest first; each version drains skiff-sim-0 again once the previous one uncordoned it.
    for k in binaries.iter().rev() {
        drain_scenario(k, &server).await;
    }
}
