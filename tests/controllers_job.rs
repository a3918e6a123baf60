//! Jobs end to end in an in-process cluster with simulated nodes (containers of Job pods exit
//! after a short run; annotations make them fail or run longer): completion with parallelism,
//! failure with exponential back-off, Indexed jobs, deadlines, pod failure policies, suspend
//! and resume, pods deleted early still being counted through the tracking finalizer, and
//! orphans the selector matches adopted (released again once they stop matching).

use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::Api;
use serde_json::{json, Value};
use skiff::controllers::cluster::{wait_for, ComponentOptions, LocalCluster};
use skiff::controllers::job::{COMPLETION_INDEX, TRACKING_FINALIZER};

const T: Duration = Duration::from_secs(30);

async fn cluster() -> LocalCluster {
    let mut opts = ComponentOptions { simulate_nodes: 2, ..Default::default() };
    // A 3 s back-off base keeps the back-off test short and its delays measurable.
    opts.controller_options.job_pod_failure_backoff = Duration::from_secs(3);
    LocalCluster::start_with(opts).await.expect("cluster")
}

/// A job whose pods run `run` seconds and exit with `code`; `spec` is merged into its spec.
fn job(name: &str, run: f64, code: i32, spec: Value) -> Job {
    let mut j = json!({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": name},
        "spec": {
            "template": {
                "metadata": {"annotations": {
                    "skiff.dev/simulate-run-seconds": run.to_string(),
                    "skiff.dev/simulate-exit-code": code.to_string(),
                }},
                "spec": {"restartPolicy": "Never", "containers": [{"name": "main", "image": "busybox"}]},
            },
        },
    });
    for (k, v) in spec.as_object().unwrap() {
        j["spec"][k] = v.clone();
    }
    serde_json::from_value(j).expect("valid job")
}

fn condition(j: &Job, kind: &str) -> Option<(String, String, String)> {
    let c = j.status.as_ref()?.conditions.as_ref()?.iter().find(|c| c.type_ == kind)?;
    Some((
        c.status.clone(),
        c.reason.clone().unwrap_or_default(),
        c.message.clone().unwrap_or_default(),
    ))
}

async fn wait_condition(api: &Api<Job>, name: &str, kind: &str) -> Job {
    wait_for(T, &format!("job {name} condition {kind}"), || async {
        let j = api.get(name).await.ok()?;
        (condition(&j, kind)?.0 == "True").then_some(j)
    })
    .await
    .unwrap()
}

async fn pods_of(pods: &Api<Pod>, job: &str) -> Vec<Pod> {
    let lp = ListParams::default().labels(&format!("batch.kubernetes.io/job-name={job}"));
    let mut list = pods.list(&lp).await.expect("list pods").items;
    list.sort_by_key(|p| p.metadata.creation_timestamp.clone().map(|t| t.0));
    list
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_complete_fail_with_backoff_and_run_indexed() {
    let cluster = cluster().await;
    let jobs: Api<Job> = Api::default_namespaced(cluster.client.clone());
    let pods: Api<Pod> = Api::default_namespaced(cluster.client.clone());
    let pp = PostParams::default();

    // completions 3, parallelism 2: never more than two pods at once, then Complete.
    jobs.create(&pp, &job("three", 0.5, 0, json!({"completions": 3, "parallelism": 2})))
        .await
        .unwrap();
    // backoffLimit 2: the third failure fails the job; replacements wait 3 s, then 6 s.
    jobs.create(&pp, &job("flaky", 0.3, 1, json!({"backoffLimit": 2}))).await.unwrap();
    // Indexed: one pod per index, each knowing its index.
    jobs.create(
        &pp,
        &job(
            "idx",
            0.5,
            0,
            json!({"completions": 3, "parallelism": 3, "completionMode": "Indexed"}),
        ),
    )
    .await
    .unwrap();

    // restartPolicy OnFailure: container restarts count toward backoffLimit.
    let mut restarts = job("restarts", 0.3, 3, json!({"backoffLimit": 1}));
    restarts.spec.as_mut().unwrap().template.spec.as_mut().unwrap().restart_policy =
        Some("OnFailure".into());
    jobs.create(&pp, &restarts).await.unwrap();

    let most_active = std::sync::atomic::AtomicI32::new(0);
    let three = wait_for(T, "job three complete", || async {
        let j = jobs.get("three").await.ok()?;
        let active = j.status.as_ref()?.active.unwrap_or(0);
        most_active.fetch_max(active, std::sync::atomic::Ordering::Relaxed);
        (condition(&j, "Complete")?.0 == "True").then_some(j)
    })
    .await
    .unwrap();
    let most_active = most_active.into_inner();
    assert!(most_active <= 2, "at most parallelism pods run: {most_active}");
    let st = three.status.clone().unwrap();
    assert_eq!(st.succeeded, Some(3));
    assert_eq!(st.failed, None);
    assert_eq!(st.active, None);
    assert_eq!(st.ready, Some(0));
    assert_eq!(st.terminating, Some(0));
    assert!(st.start_time.is_some() && st.completion_time.is_some());
    let u = st.uncounted_terminated_pods.unwrap_or_default();
    assert!(u.succeeded.is_none() && u.failed.is_none());
    let (_, reason, message) =
        condition(&three, "SuccessCriteriaMet").expect("SuccessCriteriaMet first");
    assert_eq!(
        (reason.as_str(), message.as_str()),
        ("CompletionsReached", "Reached expected number of succeeded pods")
    );
    assert_eq!(condition(&three, "Complete").unwrap().1, "CompletionsReached");
    let ps = pods_of(&pods, "three").await;
    assert_eq!(ps.len(), 3);
    let uid = three.metadata.uid.clone().unwrap();
    for p in &ps {
        let labels = p.metadata.labels.as_ref().unwrap();
        assert_eq!(labels["batch.kubernetes.io/controller-uid"], uid);
        assert_eq!(labels["controller-uid"], uid);
        assert_eq!(labels["job-name"], "three");
        let owner = &p.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!((owner.kind.as_str(), owner.uid.as_str()), ("Job", uid.as_str()));
        assert_eq!((owner.controller, owner.block_owner_deletion), (Some(true), Some(true)));
        assert!(
            !p.metadata.finalizers.iter().flatten().any(|f| f == TRACKING_FINALIZER),
            "finalizer removed once counted"
        );
        assert_eq!(p.status.as_ref().unwrap().phase.as_deref(), Some("Succeeded"));
    }

    let idx = wait_condition(&jobs, "idx", "Complete").await;
    let st = idx.status.clone().unwrap();
    assert_eq!(st.completed_indexes.as_deref(), Some("0-2"));
    assert_eq!(st.succeeded, Some(3));
    let mut seen: Vec<(String, String)> = pods_of(&pods, "idx")
        .await
        .iter()
        .map(|p| {
            let index = p.metadata.annotations.as_ref().unwrap()[COMPLETION_INDEX].clone();
            assert_eq!(p.metadata.labels.as_ref().unwrap()[COMPLETION_INDEX], index);
            assert!(p.metadata.name.as_ref().unwrap().starts_with(&format!("idx-{index}-")));
            (index, p.spec.as_ref().unwrap().hostname.clone().unwrap())
        })
        .collect();
    seen.sort();
    assert_eq!(
        seen,
        [("0", "idx-0"), ("1", "idx-1"), ("2", "idx-2")]
            .map(|(a, b)| (a.to_string(), b.to_string()))
    );

    let flaky = wait_condition(&jobs, "flaky", "Failed").await;
    let (_, reason, message) = condition(&flaky, "Failed").unwrap();
    assert_eq!(
        (reason.as_str(), message.as_str()),
        ("BackoffLimitExceeded", "Job has reached the specified backoff limit")
    );
    assert_eq!(condition(&flaky, "FailureTarget").unwrap().1, "BackoffLimitExceeded");
    assert!(condition(&flaky, "Complete").is_none());
    let st = flaky.status.clone().unwrap();
    assert_eq!(st.failed, Some(3));
    assert!(st.completion_time.is_none(), "a failed job has no completion time");
    // Each replacement is created a back-off after its predecessor finished (both times in
    // whole seconds, the delay measured from the truncated finish time): 3 s, then 6 s.
    let flaky_pods = pods_of(&pods, "flaky").await;
    assert_eq!(flaky_pods.len(), 3, "no pod after the limit");
    let created: Vec<i64> = flaky_pods
        .iter()
        .map(|p| p.metadata.creation_timestamp.as_ref().unwrap().0.as_second())
        .collect();
    let finished: Vec<i64> = flaky_pods
        .iter()
        .map(|p| {
            let cs = &p.status.as_ref().unwrap().container_statuses.as_ref().unwrap()[0];
            let t = cs.state.as_ref().unwrap().terminated.as_ref().unwrap();
            t.finished_at.as_ref().unwrap().0.as_second()
        })
        .collect();
    let (wait1, wait2) = (created[1] - finished[0], created[2] - finished[1]);
    assert!(wait1 >= 3, "first replacement waits the 3 s base: {wait1}");
    assert!(wait2 >= 6 && wait2 > wait1, "then twice as long: {wait1}, {wait2}");

    let restarts = wait_condition(&jobs, "restarts", "Failed").await;
    assert_eq!(condition(&restarts, "Failed").unwrap().1, "BackoffLimitExceeded");
    // The one pod restarted in place; stopping it when the job failed counted it once.
    assert_eq!(restarts.status.as_ref().unwrap().failed, Some(1));
    assert!(cluster.running());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadlines_failure_policies_suspend_and_early_deletion() {
    let cluster = cluster().await;
    let jobs: Api<Job> = Api::default_namespaced(cluster.client.clone());
    let pods: Api<Pod> = Api::default_namespaced(cluster.client.clone());
    let pp = PostParams::default();

    jobs.create(
        &pp,
        &job(
            "slow",
            60.0,
            0,
            json!({"activeDeadlineSeconds": 2, "parallelism": 2, "completions": 2}),
        ),
    )
    .await
    .unwrap();
    let policy = json!({"podFailurePolicy": {"rules": [
        {"action": "Ignore", "onExitCodes": {"operator": "In", "values": [7]}},
        {"action": "FailJob", "onExitCodes": {"containerName": "main", "operator": "In", "values": [42]}},
    ]}});
    jobs.create(&pp, &job("fatal", 0.3, 42, policy)).await.unwrap();
    jobs.create(&pp, &job("paused", 0.5, 0, json!({"suspend": true}))).await.unwrap();
    jobs.create(&pp, &job("victim", 60.0, 0, json!({}))).await.unwrap();
    let per_index = json!({"completionMode": "Indexed", "completions": 2, "parallelism": 2,
                           "backoffLimitPerIndex": 1});
    jobs.create(&pp, &job("perindex", 0.3, 1, per_index)).await.unwrap();

    // activeDeadlineSeconds: running pods are stopped and the job fails.
    let slow = wait_condition(&jobs, "slow", "Failed").await;
    let (_, reason, message) = condition(&slow, "Failed").unwrap();
    assert_eq!(
        (reason.as_str(), message.as_str()),
        ("DeadlineExceeded", "Job was active longer than specified deadline")
    );
    let st = slow.status.clone().unwrap();
    assert_eq!((st.active, st.failed), (None, Some(2)));
    wait_for(T, "slow's pods stopped", || async {
        pods_of(&pods, "slow")
            .await
            .iter()
            .all(|p| p.status.as_ref().unwrap().phase.as_deref() == Some("Failed"))
            .then_some(())
    })
    .await
    .unwrap();

    // podFailurePolicy FailJob on exit code 42.
    let fatal = wait_condition(&jobs, "fatal", "Failed").await;
    let (_, reason, message) = condition(&fatal, "Failed").unwrap();
    assert_eq!(reason, "PodFailurePolicy");
    let pod = &pods_of(&pods, "fatal").await[0];
    let want = format!(
        "Container main for pod default/{} failed with exit code 42 matching FailJob rule at index 1",
        pod.metadata.name.as_ref().unwrap()
    );
    assert_eq!(message, want);
    assert_eq!(fatal.status.as_ref().unwrap().failed, Some(1));

    // backoffLimitPerIndex 1: each index fails twice, then the job fails with FailedIndexes.
    let perindex = wait_condition(&jobs, "perindex", "Failed").await;
    let (_, reason, _) = condition(&perindex, "Failed").unwrap();
    assert_eq!(reason, "FailedIndexes");
    let st = perindex.status.clone().unwrap();
    assert_eq!((st.failed_indexes.as_deref(), st.failed), (Some("0,1"), Some(4)));
    let counts: Vec<String> = pods_of(&pods, "perindex")
        .await
        .iter()
        .map(|p| {
            let a = p.metadata.annotations.as_ref().unwrap();
            format!(
                "{}:{}",
                a[COMPLETION_INDEX],
                a.get("batch.kubernetes.io/job-index-failure-count").map_or("0", |s| s.as_str())
            )
        })
        .collect();
    let mut counts = counts;
    counts.sort();
    assert_eq!(counts, ["0:0", "0:1", "1:0", "1:1"]);

    // Suspended: no pods; resumed: runs to completion.
    let paused = wait_condition(&jobs, "paused", "Suspended").await;
    let (_, reason, message) = condition(&paused, "Suspended").unwrap();
    assert_eq!((reason.as_str(), message.as_str()), ("JobSuspended", "Job suspended"));
    assert!(pods_of(&pods, "paused").await.is_empty());
    assert!(paused.status.as_ref().unwrap().start_time.is_none());
    jobs.patch(
        "paused",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"suspend": false}})),
    )
    .await
    .unwrap();
    let done = wait_condition(&jobs, "paused", "Complete").await;
    let (status, reason, _) = condition(&done, "Suspended").unwrap();
    assert_eq!((status.as_str(), reason.as_str()), ("False", "JobResumed"));
    assert_eq!(done.status.as_ref().unwrap().succeeded, Some(1));

    // A running pod deleted early is counted as failed (its finalizer held it) and replaced;
    // suspending then stops the replacement.
    let first = wait_for(T, "victim's pod running", || async {
        let ps = pods_of(&pods, "victim").await;
        let p = ps.into_iter().next()?;
        (p.status.as_ref()?.phase.as_deref() == Some("Running")).then_some(p)
    })
    .await
    .unwrap();
    assert!(first.metadata.finalizers.iter().flatten().any(|f| f == TRACKING_FINALIZER));
    pods.delete(first.metadata.name.as_ref().unwrap(), &DeleteParams::default()).await.unwrap();
    wait_for(T, "the deleted pod counted and replaced", || async {
        let j = jobs.get("victim").await.ok()?;
        let st = j.status.as_ref()?;
        let ps = pods_of(&pods, "victim").await;
        let gone = !ps.iter().any(|p| p.metadata.uid == first.metadata.uid);
        (st.failed == Some(1) && st.active == Some(1) && gone).then_some(())
    })
    .await
    .unwrap();
    jobs.patch(
        "victim",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"suspend": true}})),
    )
    .await
    .unwrap();
    let victim = wait_for(T, "victim suspended with no pods", || async {
        let j = jobs.get("victim").await.ok()?;
        let ps = pods_of(&pods, "victim").await;
        (condition(&j, "Suspended")?.0 == "True"
            && j.status.as_ref()?.active.is_none()
            && ps.is_empty())
        .then_some(j)
    })
    .await
    .unwrap();
    assert!(condition(&victim, "Failed").is_none());
    assert!(cluster.running());
}

/// Pods labelled `selector` that are not being deleted.
async fn live_pods(pods: &Api<Pod>, selector: &str) -> Vec<Pod> {
    let list = pods.list(&ListParams::default().labels(selector)).await.expect("list pods");
    list.items.into_iter().filter(|p| p.metadata.deletion_timestamp.is_none()).collect()
}

/// The Job that is `pod`'s controller, and whether the pod carries the tracking finalizer.
fn job_control(pod: &Pod) -> (Option<String>, bool) {
    let owner = pod
        .metadata
        .owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true) && o.kind == "Job")
        .map(|o| o.name.clone());
    (owner, pod.metadata.finalizers.iter().flatten().any(|f| f == TRACKING_FINALIZER))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_adopt_matching_orphans_and_release_pods_that_stop_matching() {
    let cluster = cluster().await;
    let jobs: Api<Job> = Api::default_namespaced(cluster.client.clone());
    let pods: Api<Pod> = Api::default_namespaced(cluster.client.clone());
    let pp = PostParams::default();
    let run = json!({"skiff.dev/simulate-run-seconds": "600", "skiff.dev/simulate-exit-code": "0"});
    let orphan: Pod = serde_json::from_value(json!({
        "metadata": {"name": "loner", "labels": {"app": "adopt"}, "annotations": run},
        "spec": {"restartPolicy": "Never", "containers": [{"name": "main", "image": "busybox"}]},
    }))
    .unwrap();
    pods.create(&pp, &orphan).await.unwrap();
    let mut j = job(
        "adopter",
        600.0,
        0,
        json!({
            "manualSelector": true,
            "selector": {"matchLabels": {"app": "adopt"}},
            "parallelism": 1,
            "completions": 1,
        }),
    );
    let t = j.spec.as_mut().unwrap().template.metadata.get_or_insert_with(Default::default);
    t.labels = Some([("app".to_string(), "adopt".to_string())].into());
    jobs.create(&pp, &j).await.unwrap();

    // The orphan gets the job as controller and the tracking finalizer.
    wait_for(T, "the orphan adopted", || async {
        let p = pods.get("loner").await.ok()?;
        (job_control(&p) == (Some("adopter".into()), true)).then_some(())
    })
    .await
    .unwrap();
    wait_for(T, "one active pod", || async {
        let j = jobs.get("adopter").await.ok()?;
        let live = live_pods(&pods, "app=adopt").await;
        (j.status?.active == Some(1) && live.len() == 1).then_some(())
    })
    .await
    .unwrap();

    // Relabelled out of the selector, it is released (owner and finalizer gone) and replaced.
    let relabel = json!({"metadata": {"labels": {"app": "gone"}}});
    pods.patch("loner", &PatchParams::default(), &Patch::Merge(relabel)).await.unwrap();
    wait_for(T, "the pod released", || async {
        let p = pods.get("loner").await.ok()?;
        (job_control(&p) == (None, false)).then_some(())
    })
    .await
    .unwrap();
    wait_for(T, "a replacement pod", || async {
        let live = live_pods(&pods, "app=adopt").await;
        let p = live.first()?;
        (live.len() == 1 && job_control(p) == (Some("adopter".into()), true)).then_some(())
    })
    .await
    .unwrap();
    assert!(cluster.running());
}
