//! CronJobs end to end. In an in-process cluster a cronjob whose lastScheduleTime lies minutes
//! back has a start time due at once (the latest minute boundary), so firings, concurrency
//! policies and history limits are seen without waiting for the clock. Against a spawned
//! `skiff server --simulate-nodes 2`, real kubectl creates a job, a cronjob, a job from the
//! cronjob (`kubectl create job --from=cronjob/NAME`) and is refused an invalid schedule.

use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, Timelike, Utc};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use serde_json::{json, Value};
use skiff::controllers::cluster::{wait_for, LocalCluster};
use skiff::controllers::cronjob::SCHEDULED_TIMESTAMP;
use skiff::testing::skiff_server::{kubectl_binaries, run_kubectl, SkiffProcess, SpawnOptions};

const T: Duration = Duration::from_secs(30);

fn cronjob(name: &str, run: f64, code: i32, spec: Value) -> CronJob {
    let mut c = json!({
        "apiVersion": "batch/v1", "kind": "CronJob",
        "metadata": {"name": name},
        "spec": {
            "schedule": "* * * * *",
            "jobTemplate": {
                "metadata": {"labels": {"cron": name}},
                "spec": {"backoffLimit": 0, "template": {
                    "metadata": {"annotations": {
                        "skiff.dev/simulate-run-seconds": run.to_string(),
                        "skiff.dev/simulate-exit-code": code.to_string(),
                    }},
                    "spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox"}]},
                }},
            },
        },
    });
    for (k, v) in spec.as_object().unwrap() {
        c["spec"][k] = v.clone();
    }
    serde_json::from_value(c).expect("valid cronjob")
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Puts lastScheduleTime (and `active`) minutes back, so the latest minute boundary is due.
async fn make_due(api: &Api<CronJob>, name: &str, active: Value) {
    let back = Utc::now() - chrono::Duration::minutes(3);
    let patch = json!({"status": {"lastScheduleTime": rfc3339(back), "active": active}});
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(patch))
        .await
        .expect("patch status");
}

async fn jobs_of(jobs: &Api<Job>, cron: &str) -> Vec<Job> {
    jobs.list(&ListParams::default().labels(&format!("cron={cron}"))).await.expect("list").items
}

fn job_ref(j: &Job) -> Value {
    json!({"apiVersion": "batch/v1", "kind": "Job", "namespace": "default",
           "name": j.name_any(), "uid": j.uid()})
}

fn owned_job(cj: &CronJob, name: &str, run: f64) -> Job {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"cron": cj.name_any()}, "ownerReferences": [{
            "apiVersion": "batch/v1", "kind": "CronJob", "name": cj.name_any(),
            "uid": cj.uid(), "controller": true}]},
        "spec": {"template": {
            "metadata": {"annotations": {"skiff.dev/simulate-run-seconds": run.to_string()}},
            "spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox"}]}}},
    }))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cronjobs_fire_honour_concurrency_and_keep_history() {
    let cluster = LocalCluster::start(2).await.expect("cluster");
    let cronjobs: Api<CronJob> = Api::default_namespaced(cluster.client.clone());
    let jobs: Api<Job> = Api::default_namespaced(cluster.client.clone());
    let pp = PostParams::default();

    // A due start time creates `<name>-<minutes>` with the scheduled-timestamp annotation.
    cronjobs.create(&pp, &cronjob("tick", 0.3, 0, json!({}))).await.unwrap();
    make_due(&cronjobs, "tick", Value::Null).await;
    let job =
        wait_for(T, "tick's job", || async { jobs_of(&jobs, "tick").await.into_iter().next() })
            .await
            .unwrap();
    let stamp = job.annotations()[SCHEDULED_TIMESTAMP].clone();
    let scheduled = DateTime::parse_from_rfc3339(&stamp).unwrap().with_timezone(&Utc);
    assert_eq!(scheduled.second(), 0, "start times are minute boundaries: {stamp}");
    assert!(Utc::now() - scheduled < chrono::Duration::minutes(2), "the latest boundary: {stamp}");
    assert_eq!(job.name_any(), format!("tick-{}", scheduled.timestamp() / 60));
    let owner = &job.owner_references()[0];
    assert_eq!((owner.kind.as_str(), owner.name.as_str()), ("CronJob", "tick"));
    assert_eq!((owner.controller, owner.block_owner_deletion), (Some(true), Some(true)));
    let cj = wait_for(T, "tick's job completed and recorded", || async {
        let cj = cronjobs.get("tick").await.ok()?;
        let st = cj.status.as_ref()?;
        (st.active.is_none() && st.last_successful_time.is_some()).then_some(cj)
    })
    .await
    .unwrap();
    let st = cj.status.unwrap();
    assert_eq!(st.last_schedule_time.unwrap().0.as_second(), scheduled.timestamp());

    // Forbid: a running job keeps the next start from happening.
    cronjobs
        .create(&pp, &cronjob("forbid", 60.0, 0, json!({"concurrencyPolicy": "Forbid"})))
        .await
        .unwrap();
    let cj = cronjobs.get("forbid").await.unwrap();
    let running = jobs.create(&pp, &owned_job(&cj, "forbid-running", 60.0)).await.unwrap();
    make_due(&cronjobs, "forbid", json!([job_ref(&running)])).await;
    // Replace: the running job is deleted and the new one started.
    cronjobs
        .create(&pp, &cronjob("replace", 60.0, 0, json!({"concurrencyPolicy": "Replace"})))
        .await
        .unwrap();
    let cj = cronjobs.get("replace").await.unwrap();
    let old = jobs.create(&pp, &owned_job(&cj, "replace-old", 60.0)).await.unwrap();
    make_due(&cronjobs, "replace", json!([job_ref(&old)])).await;
    let replaced = wait_for(T, "replace's new job, old one gone", || async {
        let names: Vec<String> =
            jobs_of(&jobs, "replace").await.iter().map(|j| j.name_any()).collect();
        (names.len() == 1 && names[0] != "replace-old").then(|| names[0].clone())
    })
    .await
    .unwrap();
    wait_for(T, "replace's active list names the new job", || async {
        let cj = cronjobs.get("replace").await.ok()?;
        let active: Vec<String> = cj.status?.active?.into_iter().filter_map(|r| r.name).collect();
        (active == [replaced.clone()]).then_some(())
    })
    .await
    .unwrap();
    let events: Api<k8s_openapi::api::core::v1::Event> =
        Api::default_namespaced(cluster.client.clone());
    wait_for(T, "forbid's JobAlreadyActive event", || async {
        let list = events.list(&ListParams::default()).await.ok()?.items;
        list.iter()
            .any(|e| {
                e.involved_object.name.as_deref() == Some("forbid")
                    && e.reason.as_deref() == Some("JobAlreadyActive")
            })
            .then_some(())
    })
    .await
    .unwrap();
    let forbid: Vec<String> = jobs_of(&jobs, "forbid").await.iter().map(|j| j.name_any()).collect();
    assert_eq!(forbid, vec!["forbid-running".to_string()], "Forbid started nothing");

    // History limits: one successful job kept, no failed one.
    cronjobs
        .create(
            &pp,
            &cronjob(
                "history",
                0.2,
                0,
                json!({"suspend": true, "successfulJobsHistoryLimit": 1, "failedJobsHistoryLimit": 0}),
            ),
        )
        .await
        .unwrap();
    let cj = cronjobs.get("history").await.unwrap();
    jobs.create(&pp, &owned_job(&cj, "history-a", 0.2)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    jobs.create(&pp, &owned_job(&cj, "history-b", 0.2)).await.unwrap();
    let mut failing = owned_job(&cj, "history-f", 0.2);
    failing.spec.as_mut().unwrap().backoff_limit = Some(0);
    failing
        .spec
        .as_mut()
        .unwrap()
        .template
        .metadata
        .as_mut()
        .unwrap()
        .annotations
        .as_mut()
        .unwrap()
        .insert("skiff.dev/simulate-exit-code".into(), "1".into());
    jobs.create(&pp, &failing).await.unwrap();
    wait_for(T, "only the newest successful job kept", || async {
        let names: Vec<String> =
            jobs_of(&jobs, "history").await.iter().map(|j| j.name_any()).collect();
        (names == ["history-b"]).then_some(())
    })
    .await
    .unwrap();
    // Suspended: no job even though lastScheduleTime lies minutes back.
    make_due(&cronjobs, "history", Value::Null).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let names: Vec<String> = jobs_of(&jobs, "history").await.iter().map(|j| j.name_any()).collect();
    assert_eq!(names, ["history-b"], "a suspended cronjob starts nothing");

    // Validation: schedule and time zone.
    for (spec, field) in [
        (json!({"schedule": "61 * * * *"}), "spec.schedule"),
        (json!({"schedule": "0 0 * * 7"}), "spec.schedule"),
        (json!({"schedule": "TZ=UTC 0 0 * * *"}), "spec.schedule"),
        (json!({"timeZone": "Mars/Olympus"}), "spec.timeZone"),
    ] {
        let e = cronjobs.create(&pp, &cronjob("bad", 1.0, 0, spec.clone())).await.unwrap_err();
        let kube::Error::Api(s) = e else { panic!("{spec}: {e}") };
        assert_eq!((s.code, s.reason.as_str()), (422, "Invalid"), "{spec}");
        let causes = s.details.map(|d| d.causes).unwrap_or_default();
        assert!(causes.iter().any(|c| c.field == field), "{spec}: {causes:?}");
    }
    cronjobs
        .create(
            &pp,
            &cronjob("zoned", 1.0, 0, json!({"schedule": "@daily", "timeZone": "Asia/Tokyo"})),
        )
        .await
        .unwrap();
    assert!(cluster.running());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_runs_jobs_and_jobs_from_cronjobs() {
    let Some(kubectl) = kubectl_binaries().pop() else {
        eprintln!("no kubectl binaries: skipped");
        return;
    };
    let server = SkiffProcess::spawn_with(
        Path::new(env!("CARGO_BIN_EXE_skiff")),
        SpawnOptions { args: vec!["--simulate-nodes".into(), "2".into()], ..Default::default() },
    )
    .await
    .expect("skiff starts");
    let k = |args: Vec<&'static str>| {
        let (bin, cfg) = (kubectl.path.clone(), server.kubeconfig.clone());
        async move { run_kubectl(&bin, &cfg, &args).await.expect("kubectl runs") }
    };
    let ok = |out: &skiff::testing::skiff_server::KubectlOutput, what: &str| {
        assert!(out.success(), "{what}: {}{}", out.stdout, out.stderr);
    };

    ok(&k(vec!["create", "job", "pi", "--image=busybox", "--", "true"]).await, "create job");
    ok(
        &k(vec!["wait", "--for=condition=complete", "job/pi", "--timeout=60s"]).await,
        "job pi completes",
    );
    let out = k(vec!["get", "job", "pi", "-o", "jsonpath={.status.succeeded}"]).await;
    assert_eq!(out.stdout, "1");
    let out = k(vec!["get", "jobs"]).await;
    ok(&out, "get jobs");
    assert!(out.stdout.contains("Complete") && out.stdout.contains("1/1"), "{}", out.stdout);

    ok(
        &k(vec![
            "create",
            "cronjob",
            "hello",
            "--image=busybox",
            "--schedule=*/5 * * * *",
            "--",
            "true",
        ])
        .await,
        "create cronjob",
    );
    ok(&k(vec!["create", "job", "--from=cronjob/hello", "hello-manual"]).await, "job from cronjob");
    ok(
        &k(vec!["wait", "--for=condition=complete", "job/hello-manual", "--timeout=60s"]).await,
        "the manual job completes",
    );
    let out = k(vec![
        "get",
        "job",
        "hello-manual",
        "-o",
        "jsonpath={.metadata.annotations.cronjob\\.kubernetes\\.io/instantiate} {.metadata.ownerReferences[0].kind}/{.metadata.ownerReferences[0].name}",
    ])
    .await;
    assert_eq!(out.stdout, "manual CronJob/hello");
    let out = k(vec!["get", "cronjob", "hello"]).await;
    ok(&out, "get cronjob");
    assert!(out.stdout.contains("*/5 * * * *"), "{}", out.stdout);

    let out = k(vec!["create", "cronjob", "bad", "--image=busybox", "--schedule=61 * * * *"]).await;
    assert!(!out.success());
    assert!(
        out.stderr.contains("spec.schedule") && out.stderr.contains("Invalid value"),
        "{}",
        out.stderr
    );
}
