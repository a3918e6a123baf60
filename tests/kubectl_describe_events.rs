//! `kubectl describe` (the newest installed kubectl) tells a workload's story in the Events
//! table, in upstream's words and from upstream's components: a ReplicaSet's SuccessfulCreate /
//! SuccessfulDelete ("Created pod: NAME", "Deleted pod: NAME") and a FailedCreate warning quoting
//! the API's refusal (with the ReplicaFailure condition while it lasts); a StatefulSet's pod and
//! claim events ("create Pod web-0 in StatefulSet web successful", "create Claim data-web-0 Pod
//! web-0 in StatefulSet web success", "delete Pod ..."); a DaemonSet's pod events from
//! daemonset-controller.

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::ListParams;
use kube::{Api, Client};
use serde_json::json;
use skiff::controllers::cluster::wait_for;
use skiff::testing::kubectl_cluster::KubectlCluster;

const SKIFF: &str = env!("CARGO_BIN_EXE_skiff");

/// Generous: the machine running the tests may be loaded.
const T: Duration = Duration::from_secs(90);

/// One row of describe's Events table.
#[derive(Debug, Clone, PartialEq)]
struct Row {
    type_: String,
    reason: String,
    from: String,
    message: String,
}

/// The rows of the Events table in `describe` output, cut at the header's column positions.
fn events(describe: &str) -> Vec<Row> {
    let mut lines = describe.lines().skip_while(|l| !l.starts_with("Events:"));
    lines.next();
    let Some(header) = lines.next() else { return vec![] };
    let col = |name: &str| header.find(name);
    let (Some(reason), Some(age), Some(from), Some(message)) =
        (col("Reason"), col("Age"), col("From"), col("Message"))
    else {
        return vec![];
    };
    let cut =
        |l: &str, a: usize, b: usize| l.get(a..b.min(l.len())).unwrap_or("").trim().to_string();
    lines
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .map(|l| Row {
            type_: cut(l, 0, reason),
            reason: cut(l, reason, age),
            from: cut(l, from, message),
            message: cut(l, message, l.len()),
        })
        .collect()
}

fn row(type_: &str, reason: &str, from: &str, message: &str) -> Row {
    Row { type_: type_.into(), reason: reason.into(), from: from.into(), message: message.into() }
}

/// Waits until `kubectl describe KIND NAME` (in `ns`) shows a row `pick` chooses; returns it.
async fn wait_row(
    c: &KubectlCluster,
    ns: &str,
    kind: &str,
    name: &str,
    pick: impl Fn(&[Row]) -> Option<Row>,
) -> Row {
    let last = std::sync::Mutex::new(String::new());
    let (last, pick) = (&last, &pick);
    let found = wait_for(T, &format!("events of {kind} {name}"), || async move {
        let out = c.ok(&["-n", ns, "describe", kind, name]).await;
        let rows = events(&out);
        *last.lock().unwrap() = out;
        pick(&rows)
    })
    .await;
    found.unwrap_or_else(|_| panic!("describe {kind} {name}:\n{}", last.lock().unwrap()))
}

/// Waits until `kubectl describe KIND NAME` (in `ns`) shows every row of `want`.
async fn wait_rows(c: &KubectlCluster, ns: &str, kind: &str, name: &str, want: &[Row]) {
    wait_row(c, ns, kind, name, |rows| {
        let missing = want.iter().find(|w| !rows.contains(w));
        match missing {
            None => rows.first().cloned(),
            Some(_) => None,
        }
    })
    .await;
}

/// Names of the pods labelled `selector` in `ns`, not being deleted.
async fn pod_names(client: &Client, ns: &str, selector: &str) -> Vec<String> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let list = pods.list(&ListParams::default().labels(selector)).await.expect("list pods");
    let mut names: Vec<String> = list
        .items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter_map(|p| p.metadata.name)
        .collect();
    names.sort();
    names
}

async fn wait_pods(client: &Client, ns: &str, selector: &str, n: usize) -> Vec<String> {
    wait_for(T, &format!("{n} pods {selector}"), || async {
        let names = pod_names(client, ns, selector).await;
        (names.len() == n).then_some(names)
    })
    .await
    .expect("pods")
}

fn template(app: &str) -> serde_json::Value {
    json!({"metadata": {"labels": {"app": app}},
           "spec": {"containers": [{"name": "c", "image": "nginx"}]}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn describe_shows_controller_events_in_upstreams_words() {
    let c = KubectlCluster::start(std::path::Path::new(SKIFF), 2, &[]).await;
    let client = c.server.client().await.expect("client");

    // ReplicaSet: created pods, then a deleted one after scaling down.
    c.apply(
        "rs",
        json!({"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": "web"},
               "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                        "template": template("web")}}),
    )
    .await;
    let made = wait_pods(&client, "default", "app=web", 2).await;
    let rc = "replicaset-controller";
    let want: Vec<Row> = made
        .iter()
        .map(|p| row("Normal", "SuccessfulCreate", rc, &format!("Created pod: {p}")))
        .collect();
    wait_rows(&c, "default", "replicaset", "web", &want).await;
    c.ok(&["scale", "replicaset/web", "--replicas=1"]).await;
    let left = wait_pods(&client, "default", "app=web", 1).await;
    let gone = made.iter().find(|p| !left.contains(p)).expect("a deleted pod");
    let want = [row("Normal", "SuccessfulDelete", rc, &format!("Deleted pod: {gone}"))];
    wait_rows(&c, "default", "replicaset", "web", &want).await;

    // A refused create is a FailedCreate warning quoting the refusal.
    c.ok(&["create", "namespace", "capped"]).await;
    c.ok(&["-n", "capped", "create", "quota", "none", "--hard=pods=0"]).await;
    wait_for(T, "the quota's status", || async {
        let args = ["-n", "capped", "get", "quota", "none", "-o", "jsonpath={.status.hard}"];
        (!c.ok(&args).await.trim().is_empty()).then_some(())
    })
    .await
    .expect("quota status");
    c.apply(
        "capped",
        json!({"apiVersion": "apps/v1", "kind": "ReplicaSet",
               "metadata": {"name": "capped", "namespace": "capped"},
               "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "capped"}},
                        "template": template("capped")}}),
    )
    .await;
    let refused = wait_row(&c, "capped", "replicaset", "capped", |rows| {
        rows.iter().find(|r| r.reason == "FailedCreate").cloned()
    })
    .await;
    assert_eq!((refused.type_.as_str(), refused.from.as_str()), ("Warning", rc), "{refused:?}");
    assert!(
        refused.message.starts_with("Error creating: pods ")
            && refused.message.ends_with(
                "is forbidden: exceeded quota: none, requested: pods=1, used: pods=0, \
                 limited: pods=0"
            ),
        "{refused:?}"
    );

    // The set carries ReplicaFailure while it cannot make its pods, and loses it once it can.
    let jsonpath = r#"jsonpath={.status.conditions[?(@.type=="ReplicaFailure")]['status','reason','message']}"#;
    let get = ["-n", "capped", "get", "replicaset", "capped", "-o", jsonpath];
    let failure = wait_for(T, "ReplicaFailure", || async {
        let out = c.ok(&get).await;
        (!out.trim().is_empty()).then_some(out)
    })
    .await
    .expect("a ReplicaFailure condition");
    assert!(
        failure.starts_with("True FailedCreate pods ") && failure.ends_with("limited: pods=0"),
        "{failure}"
    );
    c.ok(&["-n", "capped", "patch", "quota", "none", "-p", r#"{"spec":{"hard":{"pods":"1"}}}"#])
        .await;
    wait_for(T, "ReplicaFailure gone", || async {
        let out = c.ok(&get).await;
        (out.trim().is_empty() && pod_names(&client, "capped", "app=capped").await.len() == 1)
            .then_some(())
    })
    .await
    .expect("the condition dropped once the pod is made");

    // StatefulSet: claims before pods, in order; a scaled-down pod deleted.
    c.apply(
        "sts",
        json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "db"},
               "spec": {"replicas": 2, "serviceName": "db",
                        "selector": {"matchLabels": {"app": "db"}}, "template": template("db"),
                        "volumeClaimTemplates": [{"metadata": {"name": "data"},
                            "spec": {"accessModes": ["ReadWriteOnce"],
                                     "resources": {"requests": {"storage": "1Gi"}}}}]}}),
    )
    .await;
    let sc = "statefulset-controller";
    let mut want = vec![];
    for i in 0..2 {
        want.push(row(
            "Normal",
            "SuccessfulCreate",
            sc,
            &format!("create Claim data-db-{i} Pod db-{i} in StatefulSet db success"),
        ));
        want.push(row(
            "Normal",
            "SuccessfulCreate",
            sc,
            &format!("create Pod db-{i} in StatefulSet db successful"),
        ));
    }
    wait_rows(&c, "default", "statefulset", "db", &want).await;
    c.ok(&["scale", "statefulset/db", "--replicas=1"]).await;
    let want =
        [row("Normal", "SuccessfulDelete", sc, "delete Pod db-1 in StatefulSet db successful")];
    wait_rows(&c, "default", "statefulset", "db", &want).await;

    // DaemonSet: a pod per labelled node; unlabelling a node deletes its pod.
    let nodes = c.names(&["nodes"]).await;
    assert_eq!(nodes.len(), 2, "{nodes:?}");
    for n in &nodes {
        c.ok(&["label", n, "agent=yes"]).await;
    }
    c.apply(
        "ds",
        json!({"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "agent"},
               "spec": {"selector": {"matchLabels": {"app": "agent"}},
                        "template": {"metadata": {"labels": {"app": "agent"}},
                                     "spec": {"nodeSelector": {"agent": "yes"},
                                              "containers": [{"name": "c", "image": "agent"}]}}}}),
    )
    .await;
    let made = wait_pods(&client, "default", "app=agent", 2).await;
    let dc = "daemonset-controller";
    let want: Vec<Row> = made
        .iter()
        .map(|p| row("Normal", "SuccessfulCreate", dc, &format!("Created pod: {p}")))
        .collect();
    wait_rows(&c, "default", "daemonset", "agent", &want).await;
    c.ok(&["label", &nodes[1], "agent-"]).await;
    let left = wait_pods(&client, "default", "app=agent", 1).await;
    let gone = made.iter().find(|p| !left.contains(p)).expect("a deleted pod");
    let want = [row("Normal", "SuccessfulDelete", dc, &format!("Deleted pod: {gone}"))];
    wait_rows(&c, "default", "daemonset", "agent", &want).await;
}

#[test]
fn the_events_table_is_cut_at_its_columns() {
    let out =
        "Name: web\nEvents:\n  Type     Reason            Age   From                   Message\n  \
               ----     ------            ----  ----                   -------\n  \
               Normal   SuccessfulCreate  5s    replicaset-controller  Created pod: web-abc\n  \
               Warning  FailedCreate      2s    replicaset-controller  Error creating: no\n";
    assert_eq!(
        events(out),
        vec![
            row("Normal", "SuccessfulCreate", "replicaset-controller", "Created pod: web-abc"),
            row("Warning", "FailedCreate", "replicaset-controller", "Error creating: no"),
        ]
    );
    assert!(events("Events:  <none>\n").is_empty());
}
