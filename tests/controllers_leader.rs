//! Leader election between two real `skiff server` processes sharing one etcd: exactly one runs
//! the controllers and the scheduler (a Deployment's pods are made once), and when the leader is
//! killed the other takes the kube-system/skiff-controllers Lease over and the controllers work
//! again (seen through stock kubectl: the Lease's holder, a scale and its rollout status); a
//! leader stopped gracefully releases the Lease.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{Event, Namespace, Pod};
use kube::api::{ListParams, PostParams};
use kube::runtime::watcher;
use kube::{Api, Client};
use serde_json::json;
use skiff::controllers::cluster::wait_for;
use skiff::testing::etcd_server::EtcdServer;
use skiff::testing::skiff_server::{kubectl_binaries, run_kubectl, SkiffProcess, SpawnOptions};

const SKIFF: &str = env!("CARGO_BIN_EXE_skiff");
const NS: &str = "leader-test";
/// Generous: the machine running the tests may be loaded.
const T: Duration = Duration::from_secs(90);
/// A lease duration (15 s), the acquire retry with jitter and slack for a loaded machine.
const TAKEOVER: Duration = Duration::from_secs(120);

async fn spawn(endpoint: &str, simulate_nodes: usize) -> SkiffProcess {
    let args = vec![
        "--datastore-endpoint".to_string(),
        endpoint.to_string(),
        "--simulate-nodes".to_string(),
        simulate_nodes.to_string(),
    ];
    SkiffProcess::spawn_with(Path::new(SKIFF), SpawnOptions { args, ..Default::default() })
        .await
        .expect("skiff server starts")
}

async fn lease_spec(leases: &Api<Lease>) -> Option<LeaseSpec> {
    leases.get_opt("skiff-controllers").await.ok().flatten().and_then(|l| l.spec)
}

/// The identity a server campaigns as, from its log.
fn identity(server: &SkiffProcess) -> Option<String> {
    let log = server.log();
    let line = log.lines().find(|l| l.contains("campaigning for leadership"))?;
    let field = line.split_whitespace().find_map(|w| w.strip_prefix("identity="))?;
    Some(field.trim_matches('"').to_string())
}

fn holder(spec: &LeaseSpec) -> String {
    spec.holder_identity.clone().unwrap_or_default()
}

fn deployment(replicas: i32) -> Deployment {
    serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": NS},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "c", "image": "nginx"}]},
            },
        },
    }))
    .expect("valid deployment")
}

/// Waits until the deployment has `n` available replicas, every pod bound to a node.
async fn wait_available(client: &Client, n: i32) {
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), NS);
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    wait_for(T, &format!("{n} available replicas on nodes"), || async {
        let d = deployments.get("web").await.ok()?;
        let available = d.status.and_then(|s| s.available_replicas).unwrap_or(0);
        let list = pods.list(&ListParams::default()).await.ok()?;
        let bound = list
            .items
            .iter()
            .filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some())
            .count();
        (available == n && list.items.len() == n as usize && bound == n as usize).then_some(())
    })
    .await
    .expect("deployment available");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_server_leads_and_another_takes_over_when_it_dies() {
    let etcd = tokio::task::spawn_blocking(EtcdServer::start)
        .await
        .expect("etcd task")
        .expect("start etcd-server");
    let endpoint = etcd.endpoint_url();

    // The first server finds no Lease and leads.
    let a = spawn(&endpoint, 0).await;
    let leases: Api<Lease> = Api::namespaced(a.client().await.expect("client a"), "kube-system");
    let first = wait_for(T, "the first server to hold the lease", || async {
        let a_id = identity(&a)?;
        lease_spec(&leases).await.filter(|s| holder(s) == a_id)
    })
    .await
    .expect("first leader");
    let leader_a = holder(&first);

    // The second campaigns but waits; its simulated node runs the pods.
    let b = spawn(&endpoint, 1).await;
    let client = b.client().await.expect("client b");
    wait_for(T, "the second server to see the lease held", || async {
        b.log().contains("lease held by another candidate").then_some(())
    })
    .await
    .expect("second server campaigns");
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-system");
    let spec = lease_spec(&leases).await.expect("lease");
    assert_eq!(holder(&spec), leader_a, "the first server still leads");
    let b_id = identity(&b).expect("the second server campaigns");
    assert_ne!(b_id, leader_a, "the identities differ");
    assert!(!b.log().contains("became leader"), "the second server does not lead");

    // Every pod ever made in the namespace, by name.
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace =
        serde_json::from_value(json!({"metadata": {"name": NS}})).expect("namespace");
    namespaces.create(&PostParams::default(), &ns).await.expect("create namespace");
    let seen = Arc::new(Mutex::new(BTreeSet::<String>::new()));
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    let watch = {
        let seen = seen.clone();
        tokio::spawn(async move {
            let mut events = std::pin::pin!(watcher(pods, watcher::Config::default()));
            while let Some(event) = events.next().await {
                if let Ok(watcher::Event::Apply(p) | watcher::Event::InitApply(p)) = event {
                    if let Some(name) = p.metadata.name {
                        seen.lock().expect("lock").insert(name);
                    }
                }
            }
        })
    };
    let names = |seen: &Arc<Mutex<BTreeSet<String>>>| seen.lock().expect("lock").clone();

    let deployments: Api<Deployment> = Api::namespaced(client.clone(), NS);
    deployments.create(&PostParams::default(), &deployment(2)).await.expect("create deployment");
    wait_available(&client, 2).await;
    let replicasets: Api<ReplicaSet> = Api::namespaced(client.clone(), NS);
    let rs = replicasets.list(&ListParams::default()).await.expect("list replicasets");
    assert_eq!(rs.items.len(), 1, "one ReplicaSet");
    assert_eq!(names(&seen).len(), 2, "each pod made once: {:?}", names(&seen));

    // Kill the leader: the other takes the Lease over once it expires.
    let pid = a.pid().expect("leader pid");
    // SAFETY: signalling our own child process.
    unsafe {
        libc::kill(pid as libc::pid_t, libc::SIGKILL);
    }
    let taken = wait_for(TAKEOVER, "the second server to take the lease", || async {
        lease_spec(&leases).await.filter(|s| holder(s) != leader_a)
    })
    .await
    .expect("takeover");
    let leader_b = holder(&taken);
    assert_eq!(leader_b, b_id, "the survivor holds the lease");
    assert!(
        taken.lease_transitions.unwrap_or(0) > first.lease_transitions.unwrap_or(0),
        "a takeover counts a transition: {taken:?}"
    );
    assert!(taken.acquire_time > first.acquire_time, "a new acquire time");

    // The new leader announces itself on the Lease.
    let events: Api<Event> = Api::namespaced(client.clone(), "kube-system");
    let message = format!("{leader_b} became leader");
    wait_for(T, "a LeaderElection event", || async {
        let list = events.list(&ListParams::default()).await.ok()?;
        list.items
            .into_iter()
            .find(|e| {
                e.reason.as_deref() == Some("LeaderElection")
                    && e.message.as_deref() == Some(message.as_str())
                    && e.involved_object.kind.as_deref() == Some("Lease")
            })
            .map(|_| ())
    })
    .await
    .expect("leader election event");

    // Through stock kubectl against the survivor: it names the new holder of the Lease, and
    // the controllers and the scheduler work again there (scale, then rollout status).
    let kubectl = kubectl_binaries().last().expect("kubectl binaries are installed").path.clone();
    let k = |args: &[&str]| {
        let (bin, kc) = (kubectl.clone(), b.kubeconfig.clone());
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let out = run_kubectl(&bin, &kc, &args).await.expect("kubectl runs");
            assert!(out.success(), "kubectl {args:?}: {}{}", out.stdout, out.stderr);
            out.stdout
        }
    };
    let jsonpath = "jsonpath={.spec.holderIdentity}";
    let shown =
        k(&["get", "lease", "skiff-controllers", "-n", "kube-system", "-o", jsonpath]).await;
    assert_eq!(shown, leader_b);
    k(&["scale", "deployment/web", "--replicas=4", "-n", NS]).await;
    let status = k(&["rollout", "status", "deployment/web", "-n", NS, "--timeout=90s"]).await;
    assert!(status.contains("successfully rolled out"), "{status}");
    wait_available(&client, 4).await;
    assert_eq!(names(&seen).len(), 4, "each pod made once: {:?}", names(&seen));
    watch.abort();

    // A leader stopped gracefully gives the Lease up on its way out, so a third server need
    // not wait for it to expire.
    let mut b = b;
    let c = spawn(&endpoint, 0).await;
    let c_client = c.client().await.expect("client c");
    wait_for(T, "the third server to see the lease held", || async {
        c.log().contains("lease held by another candidate").then_some(())
    })
    .await
    .expect("third server campaigns");
    let status = b.stop(Duration::from_secs(30)).await.expect("stop the leader");
    assert!(status.success(), "graceful stop: {status:?}\n{}", b.log());
    assert!(b.log().contains("released the lease"), "{}", b.log());
    let leases: Api<Lease> = Api::namespaced(c_client, "kube-system");
    let after = lease_spec(&leases).await.expect("lease");
    assert_ne!(holder(&after), leader_b, "the stopped leader no longer holds the lease");
    let c_id = identity(&c).expect("the third server campaigns");
    wait_for(TAKEOVER, "the third server to take the lease", || async {
        lease_spec(&leases).await.filter(|s| holder(s) == c_id)
    })
    .await
    .expect("takeover after release");
}
