//! Where the scheduler places pods among simulated nodes labelled with zones: required pod
//! anti-affinity spreads a deployment one replica per node and leaves the extra replica
//! Pending with upstream's FailedScheduling event (read back with the real `kubectl describe`),
//! required affinity co-locates, topology spread keeps zones within maxSkew, and a
//! high-priority pod preempts a low-priority one on a full cluster (PriorityClass admission,
//! nominatedNodeName, DisruptionTarget, Preempted event; preemptionPolicy Never waits), and a
//! bound pod has upstream's Scheduled event.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Event, Node, Pod};
use k8s_openapi::api::scheduling::v1::PriorityClass;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::{json, Value};
use skiff::controllers::cluster::{wait_for, ComponentOptions, LocalCluster};
use skiff::testing::skiff_server::{kubectl_binaries, run_kubectl, InProcessServer};

const T: Duration = Duration::from_secs(60);
const ZONE: &str = "topology.kubernetes.io/zone";

fn pod(name: &str, labels: Value, spec: Value) -> Pod {
    let mut spec = spec;
    let requests = spec.get("requests").cloned().unwrap_or(json!({}));
    spec["containers"] =
        json!([{"name": "c", "image": "nginx", "resources": {"requests": requests}}]);
    if let Some(o) = spec.as_object_mut() {
        o.remove("requests");
    }
    serde_json::from_value(json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": labels}, "spec": spec}))
    .expect("valid pod")
}

/// Waits for `n` nodes and labels skiff-sim-i with the zone `zones[i]`.
async fn label_zones(client: &Client, zones: &[&str]) {
    let nodes: Api<Node> = Api::all(client.clone());
    wait_for(T, "nodes registered", || async {
        (nodes.list(&Default::default()).await.ok()?.items.len() == zones.len()).then_some(())
    })
    .await
    .unwrap();
    for (i, zone) in zones.iter().enumerate() {
        let patch = json!({"metadata": {"labels": {ZONE: zone}}});
        nodes
            .patch(&format!("skiff-sim-{i}"), &PatchParams::default(), &Patch::Merge(patch))
            .await
            .unwrap();
    }
    // The scheduler sees the labels once the nodes carry them in its cache; wait for the API.
    wait_for(T, "zones labelled", || async {
        let list = nodes.list(&ListParams::default().labels(ZONE)).await.ok()?;
        (list.items.len() == zones.len()).then_some(())
    })
    .await
    .unwrap();
}

async fn node_of(pods: &Api<Pod>, name: &str) -> Option<String> {
    pods.get(name).await.ok()?.spec?.node_name.filter(|n| !n.is_empty())
}

/// Node name → zone.
async fn zones_of(client: &Client) -> BTreeMap<String, String> {
    let nodes: Api<Node> = Api::all(client.clone());
    nodes
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|n| {
            let zone = n.metadata.labels.as_ref()?.get(ZONE)?.clone();
            Some((n.metadata.name?, zone))
        })
        .collect()
}

fn kubectl() -> Option<PathBuf> {
    let preferred = PathBuf::from("/usr/lib/google-cloud-sdk/bin/kubectl.1.33");
    if preferred.is_file() {
        return Some(preferred);
    }
    kubectl_binaries().pop().map(|k| k.path)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anti_affinity_spreads_replicas_and_describe_shows_why_the_extra_one_waits() {
    let Some(kubectl) = kubectl() else {
        eprintln!("no kubectl found; skipping");
        return;
    };
    let server = InProcessServer::start_with(|c| {
        c.components = Some(ComponentOptions { simulate_nodes: 3, ..Default::default() });
    })
    .await
    .expect("server");
    let client = server.client.clone();
    label_zones(&client, &["zone-a", "zone-a", "zone-b"]).await;
    let manifest = server.data_dir().join("web.yaml");
    let deployment = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {
            "replicas": 4,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {
                    "affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
                        {"labelSelector": {"matchLabels": {"app": "web"}},
                         "topologyKey": "kubernetes.io/hostname"}]}},
                    "containers": [{"name": "c", "image": "nginx"}],
                },
            },
        },
    });
    std::fs::write(&manifest, serde_json::to_string(&deployment).unwrap()).unwrap();
    let out =
        run_kubectl(&kubectl, &server.kubeconfig, &["apply", "-f", manifest.to_str().unwrap()])
            .await
            .expect("kubectl runs");
    assert!(out.success(), "{}{}", out.stdout, out.stderr);

    let pods: Api<Pod> = Api::default_namespaced(client.clone());
    let (placed, pending) = wait_for(T, "3 replicas placed and 1 refused", || async {
        let list = pods.list(&ListParams::default().labels("app=web")).await.ok()?;
        if list.items.len() != 4 {
            return None;
        }
        let mut placed = vec![];
        let mut pending = vec![];
        for p in list.items {
            let name = p.metadata.name.clone()?;
            match p.spec.as_ref()?.node_name.clone() {
                Some(n) => placed.push(n),
                None => {
                    let refused = p.status.as_ref()?.conditions.as_ref()?.iter().any(|c| {
                        c.type_ == "PodScheduled" && c.reason.as_deref() == Some("Unschedulable")
                    });
                    if !refused {
                        return None;
                    }
                    pending.push(name);
                }
            }
        }
        (placed.len() == 3 && pending.len() == 1).then_some((placed, pending))
    })
    .await
    .unwrap();
    let mut distinct = placed.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), 3, "one replica per node: {placed:?}");

    let want = "0/3 nodes are available: 3 node(s) didn't match pod anti-affinity rules. \
                preemption: 0/3 nodes are available: 3 No preemption victims found for incoming pod.";
    let described = wait_for(T, "the FailedScheduling event", || async {
        let out = run_kubectl(&kubectl, &server.kubeconfig, &["describe", "pod", &pending[0]])
            .await
            .ok()?;
        (out.success() && out.stdout.contains("FailedScheduling")).then_some(out.stdout)
    })
    .await
    .unwrap();
    let line = described
        .lines()
        .find(|l| l.contains("FailedScheduling"))
        .expect("an event line")
        .to_string();
    assert!(line.trim_start().starts_with("Warning"), "{line}");
    assert!(line.contains("default-scheduler"), "{line}");
    assert!(line.contains(want), "{line}");
    assert!(described.contains("Status:           Pending"), "{described}");
    assert!(
        described
            .lines()
            .any(|l| l.trim_start().starts_with("PodScheduled") && l.contains("False")),
        "{described}"
    );

    // Scaling down to 3 lets every replica run; a fourth node would have taken the fourth.
    let out =
        run_kubectl(&kubectl, &server.kubeconfig, &["scale", "deployment/web", "--replicas=3"])
            .await
            .expect("kubectl runs");
    assert!(out.success(), "{}{}", out.stdout, out.stderr);
    wait_for(T, "3 replicas, all placed", || async {
        let list = pods.list(&ListParams::default().labels("app=web")).await.ok()?;
        let live: Vec<&Pod> =
            list.items.iter().filter(|p| p.metadata.deletion_timestamp.is_none()).collect();
        (live.len() == 3
            && live.iter().all(|p| p.spec.as_ref().is_some_and(|s| s.node_name.is_some())))
        .then_some(())
    })
    .await
    .unwrap();
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn required_affinity_co_locates_and_spread_keeps_zones_within_max_skew() {
    let cluster = LocalCluster::start(3).await.expect("cluster");
    let client = cluster.client.clone();
    label_zones(&client, &["zone-a", "zone-a", "zone-b"]).await;
    let pods: Api<Pod> = Api::default_namespaced(client.clone());
    let pp = PostParams::default();

    // Affinity: followers go where the leader is, even though the least allocated node would
    // be elsewhere.
    pods.create(&pp, &pod("leader", json!({"app": "cache"}), json!({"requests": {"cpu": "4"}})))
        .await
        .unwrap();
    let home = wait_for(T, "leader placed", || node_of(&pods, "leader")).await.unwrap();
    let follow = json!({"affinity": {"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
        {"labelSelector": {"matchLabels": {"app": "cache"}}, "topologyKey": "kubernetes.io/hostname"}]}}});
    for i in 0..3 {
        pods.create(
            &pp,
            &pod(&format!("follower-{i}"), json!({"app": "follower"}), follow.clone()),
        )
        .await
        .unwrap();
    }
    for i in 0..3 {
        let name = format!("follower-{i}");
        let node = wait_for(T, "follower placed", || node_of(&pods, &name)).await.unwrap();
        assert_eq!(node, home, "{name}");
    }
    // Nothing matches this selector: the pod waits with upstream's reason.
    let lonely = json!({"affinity": {"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
        {"labelSelector": {"matchLabels": {"app": "nobody"}}, "topologyKey": "kubernetes.io/hostname"}]}}});
    pods.create(&pp, &pod("lonely", json!({"app": "lonely"}), lonely)).await.unwrap();
    let message = wait_for(T, "lonely refused", || async {
        let p = pods.get("lonely").await.ok()?;
        let c = p.status?.conditions?.into_iter().find(|c| c.type_ == "PodScheduled")?;
        c.message
    })
    .await
    .unwrap();
    assert_eq!(
        message,
        "0/3 nodes are available: 3 node(s) didn't match pod affinity rules. \
         preemption: 0/3 nodes are available: 3 Preemption is not helpful for scheduling."
    );
    // A matching pod arriving lets it in (retried when pods are placed).
    pods.create(&pp, &pod("somebody", json!({"app": "nobody"}), json!({}))).await.unwrap();
    let there = wait_for(T, "somebody placed", || node_of(&pods, "somebody")).await.unwrap();
    assert_eq!(wait_for(T, "lonely placed", || node_of(&pods, "lonely")).await.unwrap(), there);

    // Topology spread: zone-a has two nodes, zone-b one; six pods split 3/3 across zones.
    let spread = json!({"topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": ZONE,
        "whenUnsatisfiable": "DoNotSchedule", "labelSelector": {"matchLabels": {"app": "spread"}}}]});
    for i in 0..6 {
        pods.create(&pp, &pod(&format!("spread-{i}"), json!({"app": "spread"}), spread.clone()))
            .await
            .unwrap();
    }
    let zones = zones_of(&client).await;
    let mut per_zone: BTreeMap<String, usize> = BTreeMap::new();
    for i in 0..6 {
        let name = format!("spread-{i}");
        let node = wait_for(T, "spread pod placed", || node_of(&pods, &name)).await.unwrap();
        *per_zone.entry(zones[&node].clone()).or_insert(0) += 1;
    }
    assert_eq!(per_zone, BTreeMap::from([("zone-a".into(), 3), ("zone-b".into(), 3)]));
}

async fn create_class(client: &Client, name: &str, value: i32, never: bool) {
    let classes: Api<PriorityClass> = Api::all(client.clone());
    let pc: PriorityClass = serde_json::from_value(json!({
        "apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass",
        "metadata": {"name": name}, "value": value,
        "preemptionPolicy": if never { "Never" } else { "PreemptLowerPriority" },
    }))
    .unwrap();
    classes.create(&PostParams::default(), &pc).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_high_priority_pod_preempts_a_low_priority_one_on_a_full_cluster() {
    let cluster = LocalCluster::start(3).await.expect("cluster");
    let client = cluster.client.clone();
    label_zones(&client, &["zone-a", "zone-a", "zone-b"]).await;
    let pods: Api<Pod> = Api::default_namespaced(client.clone());
    let pp = PostParams::default();
    create_class(&client, "low", 10, false).await;
    create_class(&client, "patient", 500, true).await;
    create_class(&client, "high", 1000, false).await;

    // Priority admission.
    let critical = pod("critical", json!({}), json!({"priorityClassName": "system-node-critical"}));
    let created = pods.create(&pp, &critical).await.unwrap();
    assert_eq!(created.spec.as_ref().unwrap().priority, Some(2_000_001_000));
    let unknown = pod("unknown", json!({}), json!({"priorityClassName": "nope"}));
    match pods.create(&pp, &unknown).await {
        Err(kube::Error::Api(e)) => {
            assert_eq!(e.code, 403);
            assert!(
                e.message.contains("no PriorityClass with name nope was found"),
                "{}",
                e.message
            );
        }
        other => panic!("expected Forbidden, got {other:?}"),
    }
    pods.delete("critical", &Default::default()).await.unwrap();

    // Fill every node (32 cpu each) with a low-priority pod.
    let big = |name: &str, class: &str| {
        pod(
            name,
            json!({"app": name}),
            json!({"priorityClassName": class, "requests": {"cpu": "30"}}),
        )
    };
    for i in 0..3 {
        let created = pods.create(&pp, &big(&format!("low-{i}"), "low")).await.unwrap();
        assert_eq!(created.spec.as_ref().unwrap().priority, Some(10));
    }
    for i in 0..3 {
        let name = format!("low-{i}");
        wait_for(T, "low pod placed", || node_of(&pods, &name)).await.unwrap();
    }

    // preemptionPolicy Never: waits, and says why.
    pods.create(&pp, &big("patient", "patient")).await.unwrap();
    let message = wait_for(T, "patient refused", || async {
        let p = pods.get("patient").await.ok()?;
        let c = p.status?.conditions?.into_iter().find(|c| c.type_ == "PodScheduled")?;
        c.message
    })
    .await
    .unwrap();
    assert_eq!(
        message,
        "0/3 nodes are available: 3 Insufficient cpu. preemption: not eligible due to preemptionPolicy=Never."
    );

    // The high-priority pod evicts one low-priority pod and takes its node.
    pods.create(&pp, &big("high", "high")).await.unwrap();
    let node = wait_for(T, "high placed", || node_of(&pods, "high")).await.unwrap();
    let high = pods.get("high").await.unwrap();
    assert_eq!(high.status.as_ref().unwrap().nominated_node_name.as_deref(), Some(node.as_str()));
    let remaining = wait_for(T, "one victim gone", || async {
        let mut left = vec![];
        for i in 0..3 {
            if let Ok(p) = pods.get(&format!("low-{i}")).await {
                left.push(p);
            }
        }
        (left.len() == 2).then_some(left)
    })
    .await
    .unwrap();
    assert!(remaining.iter().all(|p| p.spec.as_ref().unwrap().node_name.as_deref() != Some(&node)));
    let events: Api<Event> = Api::default_namespaced(client.clone());
    let preempted = wait_for(T, "Preempted event", || async {
        let list = events.list(&Default::default()).await.ok()?;
        list.items.into_iter().find(|e| e.reason.as_deref() == Some("Preempted"))
    })
    .await
    .unwrap();
    let uid = high.metadata.uid.clone().unwrap();
    assert_eq!(
        preempted.message.as_deref(),
        Some(format!("Preempted by pod {uid} on node {node}").as_str())
    );
    assert_eq!(preempted.source.and_then(|s| s.component).as_deref(), Some("default-scheduler"));
    // The patient pod still waits: the freed room went to the more important pod.
    assert!(node_of(&pods, "patient").await.is_none());

    // A globalDefault class names itself on pods that name none.
    let classes: Api<PriorityClass> = Api::all(client.clone());
    let default: PriorityClass = serde_json::from_value(json!({
        "apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass",
        "metadata": {"name": "everyday"}, "value": 7, "globalDefault": true,
    }))
    .unwrap();
    classes.create(&pp, &default).await.unwrap();
    let plain = pods.create(&pp, &pod("plain", json!({}), json!({}))).await.unwrap();
    let spec = plain.spec.unwrap();
    assert_eq!((spec.priority_class_name.as_deref(), spec.priority), (Some("everyday"), Some(7)));
    assert_eq!(spec.preemption_policy.as_deref(), Some("PreemptLowerPriority"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bound_pod_has_the_scheduled_event_that_describe_shows() {
    let Some(kubectl) = kubectl() else {
        eprintln!("no kubectl found; skipping");
        return;
    };
    let server = InProcessServer::start_with(|c| {
        c.components = Some(ComponentOptions { simulate_nodes: 1, ..Default::default() });
    })
    .await
    .expect("server");
    let client = server.client.clone();
    let pods: Api<Pod> = Api::default_namespaced(client.clone());
    pods.create(&PostParams::default(), &pod("solo", json!({"app": "solo"}), json!({})))
        .await
        .unwrap();
    let node = wait_for(T, "the pod bound", || node_of(&pods, "solo")).await.unwrap();

    // The event, as upstream's scheduler records it.
    let events: Api<Event> = Api::default_namespaced(client.clone());
    let want = format!("Successfully assigned default/solo to {node}");
    let event = wait_for(T, "the Scheduled event", || async {
        let list = events.list(&ListParams::default()).await.ok()?;
        list.items.into_iter().find(|e| {
            e.reason.as_deref() == Some("Scheduled")
                && e.involved_object.name.as_deref() == Some("solo")
        })
    })
    .await
    .unwrap();
    assert_eq!(event.message.as_deref(), Some(want.as_str()));
    assert_eq!(event.type_.as_deref(), Some("Normal"));
    assert_eq!(event.involved_object.kind.as_deref(), Some("Pod"));
    assert_eq!(
        event.source.as_ref().and_then(|s| s.component.as_deref()),
        Some("default-scheduler")
    );

    // kubectl describe lists it under Events.
    let out = run_kubectl(&kubectl, &server.kubeconfig, &["describe", "pod", "solo"])
        .await
        .expect("kubectl runs");
    assert!(out.success(), "{}{}", out.stdout, out.stderr);
    let line = out
        .stdout
        .lines()
        .find(|l| l.contains("Scheduled") && l.contains("Successfully assigned"))
        .unwrap_or_else(|| panic!("no Scheduled event line: {}", out.stdout));
    assert!(line.trim_start().starts_with("Normal"), "{line}");
    assert!(line.contains("default-scheduler"), "{line}");
    assert!(line.contains(&want), "{line}");
    server.stop().await.unwrap();
}
