//! DaemonSets end to end: a pod on every eligible node, pinned by node affinity and bound by the
//! scheduler; NoSchedule taints skip nodes unless tolerated, NoExecute taints evict; a new node
//! gets a pod; rolling updates within maxUnavailable and with maxSurge; a rollback by applying a
//! ControllerRevision's data; and `kubectl rollout status|history|undo` against the real binary.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{ControllerRevision, DaemonSet};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::Api;
use serde_json::{json, Value};
use skiff::controllers::cluster::{wait_for, LocalCluster};
use skiff::controllers::daemonset::target_node;
use skiff::testing::skiff_server::{kubectl_binaries, run_kubectl, SkiffProcess, SpawnOptions};

const T: Duration = Duration::from_secs(30);
const SKIFF: &str = env!("CARGO_BIN_EXE_skiff");

fn daemon_set(name: &str, extra: Value) -> DaemonSet {
    let mut v = json!({
        "apiVersion": "apps/v1", "kind": "DaemonSet",
        "metadata": {"name": name},
        "spec": {
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "c", "image": "app:1"}]},
            },
        },
    });
    merge(&mut v["spec"], extra);
    serde_json::from_value(v).expect("valid daemon set")
}

fn merge(into: &mut Value, from: Value) {
    match (into, from) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                merge(a.entry(k).or_insert(Value::Null), v);
            }
        }
        (a, b) => *a = b,
    }
}

/// A node without a kubelet behind it: ready, with room for pods.
fn bare_node(name: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
        "status": {
            "capacity": {"cpu": "4", "memory": "8Gi", "pods": "110"},
            "allocatable": {"cpu": "4", "memory": "8Gi", "pods": "110"},
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}],
        },
    })
}

fn ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn image(p: &Pod) -> String {
    p.spec.as_ref().unwrap().containers[0].image.clone().unwrap_or_default()
}

async fn live_pods(pods: &Api<Pod>, app: &str) -> Vec<Pod> {
    let list = pods.list(&ListParams::default().labels(&format!("app={app}"))).await.unwrap();
    list.items.into_iter().filter(|p| p.metadata.deletion_timestamp.is_none()).collect()
}

/// Live pods by the node they are for.
async fn by_node(pods: &Api<Pod>, app: &str) -> BTreeMap<String, Vec<Pod>> {
    let mut out: BTreeMap<String, Vec<Pod>> = BTreeMap::new();
    for p in live_pods(pods, app).await {
        out.entry(target_node(&p).expect("pinned to a node")).or_default().push(p);
    }
    out
}

fn counts(ds: &DaemonSet) -> (i32, i32, i32, i32, i32, i32) {
    let st = ds.status.clone().unwrap_or_default();
    (
        st.desired_number_scheduled,
        st.current_number_scheduled,
        st.number_ready,
        st.updated_number_scheduled.unwrap_or(0),
        st.number_available.unwrap_or(0),
        st.number_misscheduled,
    )
}

async fn wait_counts(api: &Api<DaemonSet>, name: &str, want: (i32, i32, i32, i32, i32, i32)) {
    let r = wait_for(T, &format!("{name} status {want:?}"), || async {
        let ds = api.get(name).await.ok()?;
        let observed = ds.status.as_ref()?.observed_generation >= ds.metadata.generation;
        (observed && counts(&ds) == want).then_some(())
    })
    .await;
    if r.is_err() {
        let ds = api.get(name).await.unwrap();
        panic!("{name}: status {:?}, want {want:?}", counts(&ds));
    }
}

async fn patch<K>(api: &Api<K>, name: &str, p: Patch<Value>) -> K
where
    K: Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    api.patch(name, &PatchParams::default(), &p).await.expect("patch")
}

const NODES: [&str; 3] = ["skiff-sim-0", "skiff-sim-1", "skiff-sim-2"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_pods_follow_nodes_taints_updates_and_rollback() {
    let cluster = LocalCluster::start(3).await.expect("cluster");
    let client = cluster.client.clone();
    let sets: Api<DaemonSet> = Api::default_namespaced(client.clone());
    let pods: Api<Pod> = Api::default_namespaced(client.clone());
    let nodes: Api<Node> = Api::all(client.clone());
    let revisions: Api<ControllerRevision> = Api::default_namespaced(client.clone());
    wait_for(T, "3 nodes", || async {
        (nodes.list(&ListParams::default()).await.ok()?.items.len() == 3).then_some(())
    })
    .await
    .unwrap();
    let taint = json!({"spec": {"taints": [{"key": "dedicated", "value": "infra", "effect": "NoSchedule"}]}});
    patch(&nodes, NODES[2], Patch::Merge(taint)).await;
    // The controller must see the taint before "agent" exists, or it may place a pod on that
    // node first (which then stays, counted as misscheduled, as upstream). A canary's desired
    // count of 2 shows the taint has reached the controller's node informer.
    sets.create(&PostParams::default(), &daemon_set("canary", json!({}))).await.unwrap();
    wait_for(T, "the controller sees the taint", || async {
        let ds = sets.get("canary").await.ok()?;
        (ds.status?.desired_number_scheduled == 2).then_some(())
    })
    .await
    .unwrap();
    sets.delete("canary", &DeleteParams::default()).await.unwrap();

    let surge = json!({"updateStrategy": {"type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}});
    sets.create(&PostParams::default(), &daemon_set("agent", surge)).await.unwrap();
    let tolerant = json!({"template": {"spec": {"tolerations": [
        {"key": "dedicated", "operator": "Equal", "value": "infra", "effect": "NoSchedule"}]}}});
    sets.create(&PostParams::default(), &daemon_set("tolerant", tolerant)).await.unwrap();

    wait_counts(&sets, "agent", (2, 2, 2, 2, 2, 0)).await;
    wait_counts(&sets, "tolerant", (3, 3, 3, 3, 3, 0)).await;
    let placed = by_node(&pods, "agent").await;
    assert_eq!(placed.keys().map(String::as_str).collect::<Vec<_>>(), &NODES[..2]);
    for (node, ps) in &placed {
        assert_eq!(ps.len(), 1);
        let p = &ps[0];
        assert_eq!(
            p.spec.as_ref().unwrap().node_name.as_deref(),
            Some(node.as_str()),
            "bound where pinned"
        );
        let tolerations = p.spec.as_ref().unwrap().tolerations.clone().unwrap();
        assert!(tolerations
            .iter()
            .any(|t| t.key.as_deref() == Some("node.kubernetes.io/unschedulable")));
    }
    let placed = by_node(&pods, "tolerant").await;
    assert_eq!(placed.keys().map(String::as_str).collect::<Vec<_>>(), &NODES[..]);
    let revs = revisions.list(&ListParams::default().labels("app=agent")).await.unwrap().items;
    assert_eq!(revs.len(), 1);
    let rev1 = revs[0].clone();
    assert_eq!(rev1.revision, 1);
    let hash1 = rev1.metadata.labels.as_ref().unwrap()["controller-revision-hash"].clone();
    for ps in by_node(&pods, "agent").await.values() {
        assert_eq!(ps[0].metadata.labels.as_ref().unwrap()["controller-revision-hash"], hash1);
    }

    // A NoExecute taint evicts the pods that do not tolerate it.
    let evict = json!({"spec": {"taints": [{"key": "maintenance", "effect": "NoExecute"}]}});
    patch(&nodes, NODES[1], Patch::Merge(evict)).await;
    wait_counts(&sets, "agent", (1, 1, 1, 1, 1, 0)).await;
    wait_counts(&sets, "tolerant", (2, 2, 2, 2, 2, 0)).await;
    patch(&nodes, NODES[1], Patch::Merge(json!({"spec": {"taints": null}}))).await;
    wait_counts(&sets, "agent", (2, 2, 2, 2, 2, 0)).await;
    wait_counts(&sets, "tolerant", (3, 3, 3, 3, 3, 0)).await;

    // Rolling updates: maxUnavailable 1 (tolerant) and maxSurge 1 (agent).
    let app2 =
        json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "app:2"}]}}}});
    patch(&sets, "tolerant", Patch::Strategic(app2.clone())).await;
    patch(&sets, "agent", Patch::Strategic(app2)).await;
    let deadline = tokio::time::Instant::now() + T;
    loop {
        let tolerant = by_node(&pods, "tolerant").await;
        let serving = NODES
            .iter()
            .filter(|n| tolerant.get(**n).is_some_and(|ps| ps.iter().any(ready)))
            .count();
        assert!(serving >= 2, "maxUnavailable 1: {serving} of 3 nodes serving");
        let agent = by_node(&pods, "agent").await;
        for n in &NODES[..2] {
            let ps = agent.get(*n).map(Vec::as_slice).unwrap_or(&[]);
            assert!(ps.iter().any(ready), "maxSurge keeps {n} serving");
            assert!(ps.len() <= 2);
        }
        let done = |m: &BTreeMap<String, Vec<Pod>>, n: usize| {
            m.len() == n
                && m.values().all(|ps| ps.len() == 1 && image(&ps[0]) == "app:2" && ready(&ps[0]))
        };
        if done(&tolerant, 3) && done(&agent, 2) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "rolling updates did not finish");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    wait_counts(&sets, "agent", (2, 2, 2, 2, 2, 0)).await;
    wait_counts(&sets, "tolerant", (3, 3, 3, 3, 3, 0)).await;
    let revs = revisions.list(&ListParams::default().labels("app=agent")).await.unwrap().items;
    assert_eq!(revs.iter().map(|r| r.revision).collect::<BTreeSet<_>>(), [1, 2].into());
    let ds = sets.get("agent").await.unwrap();
    let generation =
        &ds.metadata.annotations.as_ref().unwrap()["deprecated.daemonset.template.generation"];
    assert_eq!(generation, "2");
    for ps in by_node(&pods, "agent").await.values() {
        assert_eq!(&ps[0].metadata.labels.as_ref().unwrap()["pod-template-generation"], generation);
    }

    // Rolling back is patching a revision's data back (what kubectl rollout undo does).
    let data = rev1.data.clone().unwrap().0;
    patch(&sets, "agent", Patch::Strategic(data)).await;
    wait_for(T, "agent back on app:1", || async {
        let m = by_node(&pods, "agent").await;
        (m.len() == 2
            && m.values().all(|ps| {
                ps.len() == 1
                    && image(&ps[0]) == "app:1"
                    && ps[0].metadata.labels.as_ref().unwrap()["controller-revision-hash"] == hash1
            }))
        .then_some(())
    })
    .await
    .unwrap();
    wait_counts(&sets, "agent", (2, 2, 2, 2, 2, 0)).await;
    let back = revisions.get(&rev1.metadata.name.clone().unwrap()).await.unwrap();
    assert_eq!(back.revision, 3, "the old revision is renumbered, not copied");
    let all = revisions.list(&ListParams::default().labels("app=agent")).await.unwrap().items;
    assert_eq!(all.len(), 2);

    // A new node gets a pod of every daemon set that fits it; the scheduler binds it there.
    nodes
        .create(&PostParams::default(), &serde_json::from_value(bare_node("late")).unwrap())
        .await
        .unwrap();
    for app in ["agent", "tolerant"] {
        wait_for(T, &format!("{app} pod bound to the new node"), || async {
            let m = by_node(&pods, app).await;
            let p = m.get("late")?.first()?.clone();
            (p.spec?.node_name.as_deref() == Some("late")).then_some(())
        })
        .await
        .unwrap();
    }
    let ds = sets.get("tolerant").await.unwrap();
    assert_eq!(counts(&ds).0, 4);
    assert!(cluster.running());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_rollout_status_history_and_undo_on_a_daemon_set() {
    let Some(kubectl) = kubectl_binaries().pop() else {
        eprintln!("no kubectl found; skipping");
        return;
    };
    let server = SkiffProcess::spawn_with(
        Path::new(SKIFF),
        SpawnOptions { args: vec!["--simulate-nodes".into(), "3".into()], ..Default::default() },
    )
    .await
    .expect("skiff starts");
    let k = |args: Vec<String>| {
        let (bin, kc) = (kubectl.path.clone(), server.kubeconfig.clone());
        async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let out = run_kubectl(&bin, &kc, &args).await.expect("kubectl runs");
            assert!(out.success(), "kubectl {args:?}: {}{}", out.stdout, out.stderr);
            out.stdout
        }
    };
    let s = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let client = server.client().await.expect("client");
    let nodes: Api<Node> = Api::all(client.clone());
    wait_for(T, "3 nodes", || async {
        (nodes.list(&ListParams::default()).await.ok()?.items.len() == 3).then_some(())
    })
    .await
    .unwrap();
    k(s(&["taint", "nodes", NODES[2], "dedicated=infra:NoSchedule"])).await;
    let manifest = server.data_dir.join("agent.json");
    std::fs::write(&manifest, serde_json::to_string(&daemon_set("agent", json!({}))).unwrap())
        .unwrap();
    k(s(&["apply", "-f", manifest.to_str().unwrap()])).await;
    let out = k(s(&["rollout", "status", "daemonset/agent", "--timeout=60s"])).await;
    assert!(out.contains("daemon set \"agent\" successfully rolled out"), "{out}");
    let out =
        k(s(&["get", "daemonset", "agent", "-o", "jsonpath={.status.desiredNumberScheduled}"]))
            .await;
    assert_eq!(out, "2", "the tainted node is skipped");
    let pods: Api<Pod> = Api::default_namespaced(client.clone());
    let placed = by_node(&pods, "agent").await;
    assert_eq!(placed.keys().map(String::as_str).collect::<Vec<_>>(), &NODES[..2]);

    k(s(&["set", "image", "daemonset/agent", "c=app:2"])).await;
    let out = k(s(&["rollout", "status", "daemonset/agent", "--timeout=60s"])).await;
    assert!(out.contains("successfully rolled out"), "{out}");
    let history = k(s(&["rollout", "history", "daemonset/agent"])).await;
    let revs: Vec<&str> = history.lines().filter_map(|l| l.split_whitespace().next()).collect();
    assert!(revs.contains(&"1") && revs.contains(&"2"), "{history}");
    let detail = k(s(&["rollout", "history", "daemonset/agent", "--revision=1"])).await;
    assert!(detail.contains("app:1"), "{detail}");

    let out = k(s(&["rollout", "undo", "daemonset/agent"])).await;
    assert!(out.contains("rolled back"), "{out}");
    let out = k(s(&["rollout", "status", "daemonset/agent", "--timeout=60s"])).await;
    assert!(out.contains("successfully rolled out"), "{out}");
    let out = k(s(&[
        "get",
        "daemonset",
        "agent",
        "-o",
        "jsonpath={.spec.template.spec.containers[0].image}",
    ]))
    .await;
    assert_eq!(out, "app:1");
    wait_for(T, "pods back on app:1", || async {
        let m = by_node(&pods, "agent").await;
        (m.len() == 2 && m.values().all(|ps| ps.len() == 1 && image(&ps[0]) == "app:1"))
            .then_some(())
    })
    .await
    .unwrap();

    // A new node gets a pod.
    let node = server.data_dir.join("node.json");
    std::fs::write(&node, bare_node("late").to_string()).unwrap();
    k(s(&["apply", "-f", node.to_str().unwrap()])).await;
    wait_for(T, "a pod for the new node", || async {
        by_node(&pods, "agent").await.contains_key("late").then_some(())
    })
    .await
    .unwrap();
    let out = k(s(&["get", "daemonset", "agent"])).await;
    let row: Vec<&str> = out.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(row[1], "3", "DESIRED counts the new node: {out}");
}
