//! StatefulSets end to end: ordered creation (pod N only after N-1 is Ready, a never-ready pod
//! stalls the set), stable names, identity labels and claims, scale down from the highest
//! ordinal, partitioned rolling updates in reverse order, Parallel and OnDelete, claim retention,
//! and `kubectl rollout status` against the real binary.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{ControllerRevision, StatefulSet};
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::Api;
use serde_json::{json, Value};
use skiff::controllers::cluster::{wait_for, LocalCluster};
use skiff::testing::skiff_server::{kubectl_binaries, run_kubectl, SkiffProcess, SpawnOptions};

const T: Duration = Duration::from_secs(30);
const SKIFF: &str = env!("CARGO_BIN_EXE_skiff");

fn set(name: &str, replicas: i32, extra: Value) -> StatefulSet {
    let mut v = json!({
        "apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "serviceName": name,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "c", "image": "app:1"}]},
            },
        },
    });
    merge(&mut v["spec"], extra);
    serde_json::from_value(v).expect("valid stateful set")
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

async fn patch_set(
    sets: &Api<StatefulSet>,
    name: &str,
    patch: Patch<Value>,
) -> kube::Result<StatefulSet> {
    sets.patch(name, &PatchParams::default(), &patch).await
}

fn ordinal(p: &Pod) -> i32 {
    p.metadata.name.as_deref().unwrap().rsplit_once('-').unwrap().1.parse().unwrap()
}

fn ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn revision(p: &Pod) -> String {
    p.metadata.labels.as_ref().unwrap()["controller-revision-hash"].clone()
}

/// The set's live (not terminating) pods by ordinal.
async fn pods_of(pods: &Api<Pod>, app: &str) -> Vec<Pod> {
    let list = pods.list(&ListParams::default().labels(&format!("app={app}"))).await.unwrap();
    let mut out: Vec<Pod> =
        list.items.into_iter().filter(|p| p.metadata.deletion_timestamp.is_none()).collect();
    out.sort_by_key(ordinal);
    out
}

/// Checks on every observation that the pods form a prefix 0..k of which all but the last are
/// Ready (the OrderedReady invariant), until `done` holds.
async fn watch_ordered(pods: &Api<Pod>, app: &str, done: impl Fn(&[Pod]) -> bool) -> Vec<Pod> {
    let deadline = tokio::time::Instant::now() + T;
    loop {
        let ps = pods_of(pods, app).await;
        let ords: Vec<i32> = ps.iter().map(ordinal).collect();
        assert_eq!(ords, (0..ps.len() as i32).collect::<Vec<_>>(), "pods form a prefix");
        for p in ps.iter().take(ps.len().saturating_sub(1)) {
            assert!(
                ready(p),
                "{} is Ready before a later pod exists",
                p.metadata.name.as_ref().unwrap()
            );
        }
        if done(&ps) {
            return ps;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out; pods {ords:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn wait_status(
    sets: &Api<StatefulSet>,
    name: &str,
    what: &str,
    f: impl Fn(&StatefulSet) -> bool,
) -> StatefulSet {
    wait_for(T, what, || async {
        let s = sets.get(name).await.ok()?;
        let st = s.status.as_ref()?;
        (st.observed_generation >= s.metadata.generation && f(&s)).then_some(s)
    })
    .await
    .unwrap()
}

fn status_tuple(s: &StatefulSet) -> (i32, i32, i32, i32) {
    let st = s.status.as_ref().unwrap();
    (
        st.replicas,
        st.ready_replicas.unwrap_or(0),
        st.current_replicas.unwrap_or(0),
        st.updated_replicas.unwrap_or(0),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ordered_ready_scales_in_order_keeps_claims_and_updates_by_partition() {
    let cluster = LocalCluster::start(3).await.expect("cluster");
    let client = cluster.client.clone();
    let sets: Api<StatefulSet> = Api::default_namespaced(client.clone());
    let pods: Api<Pod> = Api::default_namespaced(client.clone());
    let claims: Api<PersistentVolumeClaim> = Api::default_namespaced(client.clone());
    let revisions: Api<ControllerRevision> = Api::default_namespaced(client.clone());

    let claim_template = json!({"volumeClaimTemplates": [{
        "metadata": {"name": "data"},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
    }]});
    sets.create(&PostParams::default(), &set("web", 3, claim_template)).await.unwrap();
    let ps = watch_ordered(&pods, "web", |ps| ps.len() == 3 && ps.iter().all(ready)).await;
    for p in &ps {
        let name = p.metadata.name.clone().unwrap();
        let labels = p.metadata.labels.as_ref().unwrap();
        assert_eq!(labels["statefulset.kubernetes.io/pod-name"], name);
        assert_eq!(labels["apps.kubernetes.io/pod-index"], ordinal(p).to_string());
        let spec = p.spec.as_ref().unwrap();
        assert_eq!(spec.hostname.as_deref(), Some(name.as_str()));
        assert_eq!(spec.subdomain.as_deref(), Some("web"));
        let vol = spec.volumes.as_ref().unwrap().iter().find(|v| v.name == "data").unwrap();
        let claim = format!("data-{name}");
        assert_eq!(vol.persistent_volume_claim.as_ref().unwrap().claim_name, claim);
        let pvc = claims.get(&claim).await.expect("claim created");
        assert_eq!(pvc.metadata.labels.as_ref().unwrap()["app"], "web");
        assert!(pvc.metadata.owner_references.is_none(), "Retain: no owners");
    }
    let s = wait_status(&sets, "web", "3 ready", |s| status_tuple(s) == (3, 3, 3, 3)).await;
    let st = s.status.clone().unwrap();
    let rev1 = st.current_revision.clone().unwrap();
    assert_eq!(st.update_revision.as_deref(), Some(rev1.as_str()));
    assert_eq!(st.available_replicas, Some(3));
    let cr = revisions.get(&rev1).await.expect("revision exists");
    assert_eq!(cr.revision, 1);
    assert_eq!(cr.data.as_ref().unwrap().0["spec"]["template"]["$patch"], "replace");
    assert!(ps.iter().all(|p| revision(p) == rev1));

    // Scale down: the highest ordinal goes first; claims stay.
    patch_set(&sets, "web", Patch::Merge(json!({"spec": {"replicas": 1}}))).await.unwrap();
    watch_ordered(&pods, "web", |ps| ps.len() == 1).await;
    for n in 0..3 {
        claims.get(&format!("data-web-{n}")).await.expect("claims are retained");
    }
    patch_set(&sets, "web", Patch::Merge(json!({"spec": {"replicas": 3}}))).await.unwrap();
    watch_ordered(&pods, "web", |ps| ps.len() == 3 && ps.iter().all(ready)).await;

    // A partitioned update replaces only ordinals >= partition.
    let update = json!({"spec": {
        "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": 2}},
        "template": {"spec": {"containers": [{"name": "c", "image": "app:2"}]}},
    }});
    patch_set(&sets, "web", Patch::Strategic(update)).await.unwrap();
    let s =
        wait_status(&sets, "web", "partition rolled", |s| status_tuple(s) == (3, 3, 2, 1)).await;
    let st = s.status.clone().unwrap();
    let rev2 = st.update_revision.clone().unwrap();
    assert_ne!(rev2, rev1);
    assert_eq!(st.current_revision.as_deref(), Some(rev1.as_str()));
    let ps = pods_of(&pods, "web").await;
    let revs: Vec<String> = ps.iter().map(revision).collect();
    assert_eq!(revs, vec![rev1.clone(), rev1.clone(), rev2.clone()]);
    assert_eq!(revisions.get(&rev2).await.unwrap().revision, 2);

    // Partition 0: the rest follow, highest ordinal first, one at a time.
    patch_set(
        &sets,
        "web",
        Patch::Merge(json!({"spec": {"updateStrategy": {"rollingUpdate": {"partition": 0}}}})),
    )
    .await
    .unwrap();
    let deadline = tokio::time::Instant::now() + T;
    loop {
        let ps = pods_of(&pods, "web").await;
        // Updated pods are always a suffix of the ordinals.
        let updated: Vec<bool> = ps.iter().map(|p| revision(p) == rev2).collect();
        let first = updated.iter().position(|u| *u).unwrap_or(updated.len());
        assert!(updated[first..].iter().all(|u| *u), "updates go in reverse order: {updated:?}");
        if ps.len() == 3 && updated.iter().all(|u| *u) && ps.iter().all(ready) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "update did not finish");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let s = wait_status(&sets, "web", "update complete", |s| {
        s.status.as_ref().unwrap().current_revision.as_deref() == Some(rev2.as_str())
    })
    .await;
    assert_eq!(status_tuple(&s), (3, 3, 3, 3));
    for p in pods_of(&pods, "web").await {
        assert_eq!(p.spec.unwrap().containers[0].image.as_deref(), Some("app:2"));
    }
    assert!(cluster.running());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn never_ready_pod_stalls_ordered_set_but_not_parallel_one() {
    let cluster = LocalCluster::start(2).await.expect("cluster");
    let sets: Api<StatefulSet> = Api::default_namespaced(cluster.client.clone());
    let pods: Api<Pod> = Api::default_namespaced(cluster.client.clone());
    let lazy = json!({"template": {"metadata": {"annotations": {"skiff.dev/simulate-never-ready": "true"}}}});
    sets.create(&PostParams::default(), &set("stall", 3, lazy.clone())).await.unwrap();
    let mut parallel = lazy;
    merge(&mut parallel, json!({"podManagementPolicy": "Parallel"}));
    sets.create(&PostParams::default(), &set("par", 3, parallel)).await.unwrap();

    wait_for(T, "stall-0 running", || async {
        let p = pods.get("stall-0").await.ok()?;
        (p.status?.phase? == "Running").then_some(())
    })
    .await
    .unwrap();
    wait_for(T, "all parallel pods running", || async {
        let ps = pods_of(&pods, "par").await;
        (ps.len() == 3
            && ps
                .iter()
                .all(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")))
        .then_some(())
    })
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let names: Vec<String> =
        pods_of(&pods, "stall").await.into_iter().map(|p| p.metadata.name.unwrap()).collect();
    assert_eq!(names, vec!["stall-0"], "OrderedReady waits for stall-0 to be Ready");
    let s = sets.get("stall").await.unwrap();
    assert_eq!(status_tuple(&s), (1, 0, 1, 1));

    // Parallel scale down removes every surplus pod at once, unready or not.
    patch_set(&sets, "par", Patch::Merge(json!({"spec": {"replicas": 0}}))).await.unwrap();
    wait_for(T, "parallel set scaled to zero", || async {
        pods_of(&pods, "par").await.is_empty().then_some(())
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_delete_and_claim_retention_delete() {
    let cluster = LocalCluster::start(2).await.expect("cluster");
    let client = cluster.client.clone();
    let sets: Api<StatefulSet> = Api::default_namespaced(client.clone());
    let pods: Api<Pod> = Api::default_namespaced(client.clone());
    let claims: Api<PersistentVolumeClaim> = Api::default_namespaced(client.clone());
    let extra = json!({
        "updateStrategy": {"type": "OnDelete"},
        "persistentVolumeClaimRetentionPolicy": {"whenDeleted": "Delete", "whenScaled": "Delete"},
        "volumeClaimTemplates": [{"metadata": {"name": "data"},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}],
    });
    sets.create(&PostParams::default(), &set("db", 2, extra)).await.unwrap();
    watch_ordered(&pods, "db", |ps| ps.len() == 2 && ps.iter().all(ready)).await;
    let pvc = claims.get("data-db-0").await.unwrap();
    let owner = &pvc.metadata.owner_references.as_ref().expect("whenDeleted=Delete: owned")[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str(), owner.controller),
        ("StatefulSet", "db", Some(true))
    );

    // OnDelete: a new template touches no pod until one is deleted.
    let image =
        json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "app:2"}]}}}});
    patch_set(&sets, "db", Patch::Strategic(image)).await.unwrap();
    let s = wait_status(&sets, "db", "new update revision", |s| {
        let st = s.status.as_ref().unwrap();
        st.update_revision != st.current_revision
    })
    .await;
    let rev2 = s.status.unwrap().update_revision.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(pods_of(&pods, "db").await.iter().all(|p| revision(p) != rev2));
    pods.delete("db-1", &DeleteParams::default()).await.unwrap();
    wait_for(T, "db-1 recreated at the new revision", || async {
        let p = pods.get("db-1").await.ok()?;
        (revision(&p) == rev2 && ready(&p)).then_some(())
    })
    .await
    .unwrap();
    assert_ne!(revision(&pods.get("db-0").await.unwrap()), rev2);

    // whenScaled=Delete: the claim of a removed ordinal goes with its pod.
    patch_set(&sets, "db", Patch::Merge(json!({"spec": {"replicas": 1}}))).await.unwrap();
    wait_for(T, "data-db-1 deleted", || async {
        claims.get_opt("data-db-1").await.ok()?.is_none().then_some(())
    })
    .await
    .unwrap();
    claims.get("data-db-0").await.expect("in-range claim kept");
    // whenDeleted=Delete: the rest go with the set.
    sets.delete("db", &DeleteParams::default()).await.unwrap();
    wait_for(T, "claims and pods collected", || async {
        let c = claims.list(&ListParams::default()).await.ok()?.items.len();
        let p = pods_of(&pods, "db").await.len();
        (c == 0 && p == 0).then_some(())
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_rollout_status_follows_a_stateful_set() {
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
    let dir = server.data_dir.clone();
    let manifest = dir.join("web.yaml");
    std::fs::write(
        &manifest,
        serde_json::to_string(&set(
            "web",
            3,
            json!({"volumeClaimTemplates": [{"metadata": {"name": "data"},
                "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}]}),
        ))
        .unwrap(),
    )
    .unwrap();
    k(s(&["apply", "-f", manifest.to_str().unwrap()])).await;
    let out = k(s(&["rollout", "status", "statefulset/web", "--timeout=60s"])).await;
    assert!(out.contains("partitioned roll out complete: 3 new pods have been updated"), "{out}");
    let pvcs = k(s(&["get", "pvc", "-o", "name"])).await;
    let names: BTreeSet<&str> = pvcs.lines().collect();
    let want: BTreeSet<&str> = [
        "persistentvolumeclaim/data-web-0",
        "persistentvolumeclaim/data-web-1",
        "persistentvolumeclaim/data-web-2",
    ]
    .into();
    assert_eq!(names, want);
    let describe = k(s(&["describe", "statefulset", "web"])).await;
    for line in [
        "SuccessfulCreate",
        "create Pod web-0 in StatefulSet web successful",
        "create Claim data-web-2 Pod web-2 in StatefulSet web success",
    ] {
        assert!(describe.contains(line), "{line}: {describe}");
    }
    let out = k(s(&["get", "statefulset", "web"])).await;
    assert!(out.lines().nth(1).unwrap().contains("3/3"), "{out}");

    // A partitioned update: rollout status reports the partition done.
    k(s(&[
        "patch",
        "statefulset",
        "web",
        "-p",
        r#"{"spec":{"updateStrategy":{"rollingUpdate":{"partition":1}}}}"#,
    ]))
    .await;
    k(s(&["set", "image", "statefulset/web", "c=app:2"])).await;
    let out = k(s(&["rollout", "status", "statefulset/web", "--timeout=60s"])).await;
    assert!(out.contains("partitioned roll out complete: 2 new pods have been updated"), "{out}");
    let images = k(s(&[
        "get",
        "pods",
        "-l",
        "app=web",
        "-o",
        "jsonpath={range .items[*]}{.metadata.name}={.spec.containers[0].image} {end}",
    ]))
    .await;
    let mut images: Vec<&str> = images.split_whitespace().collect();
    images.sort();
    assert_eq!(images, vec!["web-0=app:1", "web-1=app:2", "web-2=app:2"]);
    let history = k(s(&["rollout", "history", "statefulset/web"])).await;
    assert!(history.contains('1') && history.contains('2'), "{history}");

    // Scale down removes web-2 first.
    k(s(&["scale", "statefulset/web", "--replicas=2"])).await;
    let client = server.client().await.expect("client");
    let pods: Api<Pod> = Api::default_namespaced(client);
    wait_for(T, "web-2 removed", || async {
        (pods_of(&pods, "web").await.len() == 2).then_some(())
    })
    .await
    .unwrap();
    let names: Vec<String> =
        pods_of(&pods, "web").await.into_iter().map(|p| p.metadata.name.unwrap()).collect();
    assert_eq!(names, vec!["web-0", "web-1"]);
}
