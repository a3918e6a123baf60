//! Workload stories told through real kubectl (the newest and the oldest installed) against a
//! `skiff server` with simulated nodes: cascading deletes in the three modes, namespace
//! deletion (and creation refused while one terminates), and jobs that complete or fail after
//! back-off.

use std::path::Path;
use std::time::Duration;

use serde_json::json;
use skiff::controllers::cluster::wait_for;
use skiff::testing::kubectl_cluster::KubectlCluster;

const SKIFF: &str = env!("CARGO_BIN_EXE_skiff");
/// Generous: the machine running the tests may be loaded.
const T: Duration = Duration::from_secs(90);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cascading_deletes_in_all_three_modes() {
    let c = KubectlCluster::start(Path::new(SKIFF), 2, &[]).await;
    for name in ["bg", "fg", "orphan"] {
        c.ok(&["create", "deployment", name, "--image=nginx", "--replicas=2"]).await;
    }
    for name in ["bg", "fg", "orphan"] {
        let out =
            c.ok(&["rollout", "status", &format!("deployment/{name}"), "--timeout=90s"]).await;
        assert!(out.contains("successfully rolled out"), "{out}");
    }

    // Background (the default): the deployment goes at once, the collector takes the rest.
    c.ok(&["delete", "deployment", "bg"]).await;
    wait_for(T, "bg's replica set and pods collected", || async {
        c.names(&["rs,pods", "-l", "app=bg"]).await.is_empty().then_some(())
    })
    .await
    .expect("background cascade");

    // Foreground: kubectl waits for the deployment, which goes only after its dependents.
    c.ok(&["delete", "deployment", "fg", "--cascade=foreground"]).await;
    let out = c.run(&c.newest, &["get", "deployment", "fg"]).await;
    assert!(out.stderr.contains("\"fg\" not found"), "{}{}", out.stdout, out.stderr);
    assert_eq!(c.names(&["rs", "-l", "app=fg"]).await, Vec::<String>::new(), "dependents first");

    // Orphan (with kubectl 1.27 too): the replica set and its pods stay, without an owner.
    let rs = c.names(&["rs", "-l", "app=orphan"]).await;
    assert_eq!(rs.len(), 1, "{rs:?}");
    c.ok_old(&["delete", "deployment", "orphan", "--cascade=orphan"]).await;
    wait_for(T, "the orphaned replica set released", || async {
        let owners = c
            .ok(&[
                "get",
                "rs",
                "-l",
                "app=orphan",
                "-o",
                "jsonpath={.items[*].metadata.ownerReferences}",
            ])
            .await;
        owners.trim().is_empty().then_some(())
    })
    .await
    .expect("owner reference removed");
    assert_eq!(c.names(&["rs", "-l", "app=orphan"]).await, rs, "the replica set stays");
    let pods = c.ok(&["get", "pods", "-l", "app=orphan", "--no-headers"]).await;
    assert_eq!(pods.lines().filter(|l| l.contains("Running")).count(), 2, "{pods}");
    let out = c.run(&c.newest, &["get", "deployment", "orphan"]).await;
    assert!(!out.success(), "the deployment is gone");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_namespace_deletes_its_contents_and_refuses_new_ones() {
    let c = KubectlCluster::start(Path::new(SKIFF), 2, &[]).await;
    c.ok(&["create", "namespace", "doomed"]).await;
    c.ok(&["create", "configmap", "settings", "-n", "doomed", "--from-literal=a=b"]).await;
    c.ok(&["create", "deployment", "web", "-n", "doomed", "--image=nginx"]).await;
    c.ok(&["rollout", "status", "deployment/web", "-n", "doomed", "--timeout=90s"]).await;
    // kubectl waits until the namespace is gone.
    c.ok_old(&["delete", "namespace", "doomed", "--timeout=90s"]).await;
    let out = c.run(&c.newest, &["get", "namespace", "doomed"]).await;
    assert!(out.stderr.contains("namespaces \"doomed\" not found"), "{}", out.stderr);
    let left = c.ok(&["get", "all,configmaps", "-n", "doomed", "-o", "name"]).await;
    assert!(left.trim().is_empty(), "nothing left: {left}");

    // A finalizer holds the namespace in Terminating; creating in it is refused meanwhile.
    c.ok(&["create", "namespace", "held"]).await;
    c.apply(
        "hold",
        json!({"apiVersion": "v1", "kind": "ConfigMap",
               "metadata": {"name": "hold", "namespace": "held", "finalizers": ["example.com/hold"]}}),
    )
    .await;
    c.ok(&["delete", "namespace", "held", "--wait=false"]).await;
    wait_for(T, "the namespace Terminating", || async {
        let phase = c.ok(&["get", "namespace", "held", "-o", "jsonpath={.status.phase}"]).await;
        (phase == "Terminating").then_some(())
    })
    .await
    .expect("terminating");
    let out = c.run(&c.newest, &["create", "configmap", "late", "-n", "held"]).await;
    assert!(!out.success(), "creation refused");
    assert!(
        out.stderr.contains(
            "unable to create new content in namespace held because it is being terminated"
        ),
        "{}",
        out.stderr
    );
    let path =
        r#"jsonpath={.status.conditions[?(@.type=="NamespaceFinalizersRemaining")].message}"#;
    wait_for(T, "the finalizer named in the namespace's conditions", || async {
        let message = c.ok(&["get", "namespace", "held", "-o", path]).await;
        message.contains("example.com/hold in 1 resource instances").then_some(())
    })
    .await
    .expect("NamespaceFinalizersRemaining condition");
    let patch = r#"{"metadata":{"finalizers":null}}"#;
    c.ok(&["patch", "configmap", "hold", "-n", "held", "--type=merge", "-p", patch]).await;
    wait_for(T, "the held namespace gone", || async {
        let out = c.run(&c.newest, &["get", "namespace", "held"]).await;
        (!out.success() && out.stderr.contains("not found")).then_some(())
    })
    .await
    .expect("namespace deleted once the finalizer is gone");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_complete_or_fail_after_back_off() {
    let c = KubectlCluster::start(Path::new(SKIFF), 2, &[]).await;
    c.ok(&["create", "job", "ok", "--image=busybox", "--", "true"]).await;
    let out = c.ok(&["wait", "--for=condition=complete", "job/ok", "--timeout=90s"]).await;
    assert!(out.contains("job.batch/ok condition met"), "{out}");
    let row = c.ok_old(&["get", "job", "ok", "--no-headers"]).await;
    assert!(row.contains("1/1"), "{row}");

    // Every attempt exits 3; backoffLimit 1 allows two attempts, the second after a back-off.
    c.apply(
        "bad",
        json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "bad"},
               "spec": {"backoffLimit": 1, "template": {
                   "metadata": {"annotations": {"skiff.dev/simulate-exit-code": "3"}},
                   "spec": {"restartPolicy": "Never",
                            "containers": [{"name": "c", "image": "busybox"}]}}}}),
    )
    .await;
    let out = c.ok(&["wait", "--for=condition=failed", "job/bad", "--timeout=120s"]).await;
    assert!(out.contains("job.batch/bad condition met"), "{out}");
    let describe = c.ok(&["describe", "job", "bad"]).await;
    assert!(describe.contains("BackoffLimitExceeded"), "{describe}");
    assert!(describe.contains("Job has reached the specified backoff limit"), "{describe}");
    let pods = c.ok(&["get", "pods", "-l", "job-name=bad", "--no-headers"]).await;
    assert_eq!(pods.lines().filter(|l| l.contains("Error")).count(), 2, "two attempts: {pods}");
}
