//! A Deployment's life told through real kubectl (the newest and the oldest installed) against a
//! `skiff server` with simulated nodes: create, scale, set image, rollout status, rollout
//! history (with --revision and the change-cause copied to the ReplicaSet), rollout undo (to the
//! previous revision and --to-revision, the old ReplicaSet reused with the next revision and its
//! revision-history), pause (scaling still works, a new image waits), resume, the history limit,
//! and describe telling the story in ScalingReplicaSet events.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use skiff::controllers::cluster::wait_for;
use skiff::testing::kubectl_cluster::KubectlCluster;

const SKIFF: &str = env!("CARGO_BIN_EXE_skiff");
/// Generous: the machine running the tests may be loaded.
const T: Duration = Duration::from_secs(90);

/// The shared harness plus this story's helpers.
struct Cluster(KubectlCluster);

impl std::ops::Deref for Cluster {
    type Target = KubectlCluster;
    fn deref(&self) -> &KubectlCluster {
        &self.0
    }
}

impl Cluster {
    async fn start() -> Cluster {
        Cluster(KubectlCluster::start(Path::new(SKIFF), 2, &[]).await)
    }

    async fn rolled_out(&self) {
        let out = self.ok(&["rollout", "status", "deployment/web", "--timeout=90s"]).await;
        assert!(out.contains("successfully rolled out"), "{out}");
    }

    /// The deployment's ReplicaSets by image: (revision, revision-history, spec.replicas).
    async fn sets(&self) -> BTreeMap<String, (String, String, i64)> {
        let out = self.ok(&["get", "rs", "-l", "app=web", "-o", "json"]).await;
        let list: Value = serde_json::from_str(&out).expect("rs list is JSON");
        let mut by_image = BTreeMap::new();
        for rs in list["items"].as_array().into_iter().flatten() {
            let a = &rs["metadata"]["annotations"];
            let text = |k: &str| a[k].as_str().unwrap_or("").to_string();
            let image = rs["spec"]["template"]["spec"]["containers"][0]["image"].as_str();
            by_image.insert(
                image.unwrap_or("").to_string(),
                (
                    text("deployment.kubernetes.io/revision"),
                    text("deployment.kubernetes.io/revision-history"),
                    rs["spec"]["replicas"].as_i64().unwrap_or(0),
                ),
            );
        }
        by_image
    }

    /// Waits until `check` holds for [`Cluster::sets`]; fails showing the last state.
    async fn wait_sets(
        &self,
        what: &str,
        check: impl Fn(&BTreeMap<String, (String, String, i64)>) -> bool,
    ) {
        let last = std::sync::Mutex::new(BTreeMap::new());
        let found = wait_for(T, what, || async {
            let sets = self.sets().await;
            let hit = check(&sets);
            *last.lock().expect("not poisoned") = sets;
            hit.then_some(())
        })
        .await;
        assert!(found.is_ok(), "{what}: last saw {:?}", last.lock().expect("not poisoned"));
    }

    /// Polls the newest kubectl's output of `args` until it contains every one of `want`.
    async fn wait_output(&self, args: &[&str], want: &[&str]) -> String {
        let last = std::sync::Mutex::new(String::new());
        let found = wait_for(T, &format!("{args:?} showing {want:?}"), || async {
            let out = self.ok(args).await;
            let hit = want.iter().all(|w| out.contains(w));
            *last.lock().expect("not poisoned") = out.clone();
            hit.then_some(out)
        })
        .await;
        match found {
            Ok(out) => out,
            Err(e) => panic!("{e}: last output:\n{}", last.lock().expect("not poisoned")),
        }
    }
}

fn entry<'a>(
    sets: &'a BTreeMap<String, (String, String, i64)>,
    image: &str,
) -> (&'a str, &'a str, i64) {
    sets.get(image).map(|(r, h, n)| (r.as_str(), h.as_str(), *n)).unwrap_or(("", "", -1))
}

/// The revisions `kubectl rollout history` lists.
fn revisions(history: &str) -> Vec<String> {
    history
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|w| w.chars().all(|c| c.is_ascii_digit()))
        .map(str::to_string)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deployment_rollouts_history_undo_pause_resume_and_events() {
    let c = Cluster::start().await;
    c.ok(&["create", "deployment", "web", "--image=app:1", "--replicas=2"]).await;
    c.rolled_out().await;
    c.ok_old(&["scale", "deployment", "web", "--replicas=4"]).await;
    c.rolled_out().await;

    // Two template changes; the change-cause on the deployment is copied to its new ReplicaSet.
    for (bin_old, image) in [(false, "app:2"), (true, "app:3")] {
        let set = ["set", "image", "deployment/web", &format!("app={image}")];
        let cause = format!("kubernetes.io/change-cause=image {image}");
        let annotate = ["annotate", "deployment", "web", "--overwrite", cause.as_str()];
        if bin_old {
            c.ok_old(&set).await;
            c.ok_old(&annotate).await;
        } else {
            c.ok(&set).await;
            c.ok(&annotate).await;
        }
        c.rolled_out().await;
        c.wait_output(&["rollout", "history", "deployment/web"], &[&format!("image {image}")])
            .await;
    }
    let history = c.ok(&["rollout", "history", "deployment/web"]).await;
    assert_eq!(revisions(&history), ["1", "2", "3"], "{history}");
    let detail = c.ok_old(&["rollout", "history", "deployment/web", "--revision=1"]).await;
    assert!(detail.contains("app:1") && !detail.contains("app:2"), "{detail}");
    let detail = c.ok(&["rollout", "history", "deployment/web", "--revision=2"]).await;
    assert!(detail.contains("app:2"), "{detail}");

    // Undo goes back to revision 2's ReplicaSet, which becomes revision 4.
    let out = c.ok(&["rollout", "undo", "deployment/web"]).await;
    assert!(out.contains("rolled back"), "{out}");
    c.rolled_out().await;
    c.wait_sets("app:2's replica set is revision 4", |s| {
        entry(s, "app:2") == ("4", "2", 4) && entry(s, "app:3").2 == 0 && s.len() == 3
    })
    .await;
    let history = c.ok(&["rollout", "history", "deployment/web"]).await;
    assert_eq!(revisions(&history), ["1", "3", "4"], "{history}");
    let four = history.lines().find(|l| l.starts_with("4 ")).unwrap_or("");
    assert!(four.ends_with("image app:2"), "the cause came back with the template: {history}");
    let image = c.ok(&["get", "deploy", "web", "-o", "jsonpath={.spec.template.spec.containers[0].image} {.metadata.annotations.deployment\\.kubernetes\\.io/revision}"]).await;
    assert_eq!(image, "app:2 4");

    // And to revision 1 explicitly (kubectl 1.27).
    let out = c.ok_old(&["rollout", "undo", "deployment/web", "--to-revision=1"]).await;
    assert!(out.contains("rolled back"), "{out}");
    c.rolled_out().await;
    c.wait_sets("app:1's replica set is revision 5", |s| {
        entry(s, "app:1") == ("5", "1", 4) && entry(s, "app:2") == ("4", "2", 0)
    })
    .await;

    // Paused: a new image waits, scaling does not.
    c.ok(&["rollout", "pause", "deployment/web"]).await;
    c.ok(&["set", "image", "deployment/web", "app=app:4"]).await;
    c.ok_old(&["scale", "deployment", "web", "--replicas=3"]).await;
    let jsonpath = "jsonpath={.metadata.generation} {.status.observedGeneration} \
                    {.status.conditions[?(@.type==\"Progressing\")].reason}";
    wait_for(T, "the paused changes observed", || async {
        let out = c.ok(&["get", "deploy", "web", "-o", jsonpath]).await;
        let f: Vec<&str> = out.split_whitespace().collect();
        (f.len() == 3 && f[0] == f[1] && f[2] == "DeploymentPaused").then_some(())
    })
    .await
    .expect("paused deployment observed");
    c.wait_sets("the paused deployment scaled in place", |s| {
        entry(s, "app:1") == ("5", "1", 3) && s.len() == 3
    })
    .await;
    let out = c.run(&c.newest, &["rollout", "undo", "deployment/web"]).await;
    assert!(!out.success() && out.stderr.contains("paused"), "{}{}", out.stdout, out.stderr);

    // Resumed: app:4 rolls out as revision 6.
    c.ok_old(&["rollout", "resume", "deployment/web"]).await;
    c.rolled_out().await;
    c.wait_sets("app:4 rolled out", |s| {
        entry(s, "app:4") == ("6", "", 3) && entry(s, "app:1").2 == 0
    })
    .await;

    // Describe tells the story (both kubectl versions).
    let want = [
        "ScalingReplicaSet",
        "Scaled up replica set web-",
        "from 0 to 2",
        "from 2 to 4",
        "Scaled down replica set web-",
        "NewReplicaSet:",
    ];
    let out = c.wait_output(&["describe", "deployment", "web"], &want).await;
    let new_rs = out.lines().find(|l| l.starts_with("NewReplicaSet:")).unwrap_or("");
    assert!(new_rs.contains("(3/3 replicas created)"), "{out}");
    let out = c.ok_old(&["describe", "deployment", "web"]).await;
    assert!(out.contains("Scaled up replica set web-"), "{out}");

    // A history limit of 1 keeps one old ReplicaSet besides the current one.
    c.ok(&["patch", "deployment", "web", "-p", "{\"spec\":{\"revisionHistoryLimit\":1}}"]).await;
    c.wait_sets("old replica sets cleaned up", |s| {
        s.len() == 2 && entry(s, "app:4").0 == "6" && entry(s, "app:1").0 == "5"
    })
    .await;
    let history = c.ok(&["rollout", "history", "deployment/web"]).await;
    assert_eq!(revisions(&history), ["5", "6"], "{history}");
}
