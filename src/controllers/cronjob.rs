//! The CronJob controller: creates a Job from spec.jobTemplate at each start time of
//! spec.schedule (in spec.timeZone), named `<cronjob>-<start time in minutes since the epoch>`
//! with the scheduled time in the `batch.kubernetes.io/cronjob-scheduled-timestamp`
//! annotation. It honours suspend, startingDeadlineSeconds (a start later than that is
//! skipped) and concurrencyPolicy (Allow, Forbid: skip while a job runs, Replace: delete the
//! running jobs first), keeps status.active, lastScheduleTime and lastSuccessfulTime, and
//! deletes finished jobs beyond successfulJobsHistoryLimit / failedJobsHistoryLimit.

pub mod schedule;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{DeleteParams, PostParams, PropagationPolicy};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Api, Client, ResourceExt};

use super::events::record as record_event;
use super::informer::Change;
use super::informers::{Informers, StoreReady};
use super::job::is_finished;
use super::podutil::{self, controller_of, key_of, split_key};
use super::queue::WorkQueue;
use super::worker::{run_workers, Action};
use schedule::{Missed, Schedule};

/// The annotation holding the time a job was scheduled for (RFC 3339, in the cronjob's zone).
pub const SCHEDULED_TIMESTAMP: &str = "batch.kubernetes.io/cronjob-scheduled-timestamp";
/// The annotation `kubectl create job --from=cronjob/NAME` puts on the jobs it makes.
pub const INSTANTIATE: &str = "cronjob.kubernetes.io/instantiate";
const MANAGER: &str = "cronjob-controller";

/// What can go wrong syncing a CronJob.
#[derive(Debug, thiserror::Error)]
pub enum CronJobError {
    #[error("cannot {action} for cronjob {key}")]
    Api {
        action: &'static str,
        key: String,
        #[source]
        source: kube::Error,
    },
    #[error("an informer of the cronjob controller stopped")]
    InformerStopped,
}

struct Ctx {
    client: Client,
    cronjobs: Store<CronJob>,
    jobs: Store<Job>,
}

/// Runs the controller with `workers` concurrent syncs until an informer stops.
pub async fn run(client: Client, informers: Informers, workers: usize) -> Result<(), CronJobError> {
    let queue = WorkQueue::new();
    let q = queue.clone();
    let (cronjobs, cj_task) = informers.spawn(
        "cronjob-informer",
        Api::<CronJob>::all(client.clone()),
        watcher::Config::default(),
        move |c| match c {
            Change::Applied(cj) | Change::Deleted(cj) => q.add(key_of(cj)),
            Change::Synced => {}
        },
    );
    let q = queue.clone();
    let (jobs, jobs_task) = informers.spawn(
        "cronjob-job-informer",
        Api::<Job>::all(client.clone()),
        watcher::Config::default(),
        move |c| match c {
            Change::Applied(job) | Change::Deleted(job) => {
                if let Some(owner) = controller_of(&job.metadata).filter(|o| o.kind == "CronJob") {
                    q.add(format!("{}/{}", job.namespace().unwrap_or_default(), owner.name));
                }
            }
            Change::Synced => {}
        },
    );
    let _guard = super::AbortOnDrop(vec![cj_task.abort_handle(), jobs_task.abort_handle()]);
    let ready = futures::future::join(cronjobs.ready(), jobs.ready());
    if ready.await.0.is_err() {
        return Err(CronJobError::InformerStopped);
    }
    let ctx = Arc::new(Ctx { client, cronjobs, jobs });
    let workers = run_workers("cronjob", queue, workers, move |key| {
        let ctx = ctx.clone();
        async move { sync(&ctx, &key, Utc::now()).await }
    });
    tokio::select! {
        _ = workers => {}
        _ = cj_task => {}
        _ = jobs_task => {}
    }
    Err(CronJobError::InformerStopped)
}

/// The name of the job for a start time: the cronjob's name and the minutes since the epoch.
pub fn job_name(cronjob: &str, scheduled: DateTime<Utc>) -> String {
    format!("{cronjob}-{}", scheduled.timestamp().div_euclid(60))
}

fn time_of(t: &Option<Time>) -> Option<DateTime<Utc>> {
    t.as_ref().map(podutil::time_of)
}

fn to_time(t: DateTime<Utc>) -> Time {
    Time(k8s_openapi::jiff::Timestamp::from_second(t.timestamp()).unwrap_or_default())
}

fn succeeded(job: &Job) -> bool {
    job.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Complete" && c.status == "True"))
}

/// What concurrencyPolicy allows when a start time is due.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Concurrency {
    /// Create the job.
    Start,
    /// Skip this start: a job still runs and the policy is Forbid.
    Skip,
    /// Delete the running jobs, then create the new one.
    ReplaceThenStart,
}

/// The concurrency decision for a due start time with `active` jobs running.
pub fn concurrency(policy: Option<&str>, active: usize) -> Concurrency {
    match (policy.unwrap_or("Allow"), active) {
        (_, 0) => Concurrency::Start,
        ("Forbid", _) => Concurrency::Skip,
        ("Replace", _) => Concurrency::ReplaceThenStart,
        _ => Concurrency::Start,
    }
}

/// The finished jobs to delete so at most `successful` succeeded and `failed` failed ones
/// remain (None: keep all), oldest (by start time, then name) first.
pub fn history_victims<'a>(
    jobs: &[&'a Job],
    successful: Option<i32>,
    failed: Option<i32>,
) -> Vec<&'a Job> {
    let mut out = vec![];
    for (ok, limit) in [(true, successful), (false, failed)] {
        let Some(limit) = limit else { continue };
        let mut list: Vec<&Job> =
            jobs.iter().copied().filter(|j| is_finished(j) && succeeded(j) == ok).collect();
        list.sort_by(|a, b| {
            let ta = a.status.as_ref().and_then(|s| time_of(&s.start_time));
            let tb = b.status.as_ref().and_then(|s| time_of(&s.start_time));
            // Jobs that never started sort last, as upstream orders them.
            let key = |t: Option<DateTime<Utc>>| (t.is_none(), t);
            key(ta).cmp(&key(tb)).then_with(|| a.name_any().cmp(&b.name_any()))
        });
        let extra = list.len().saturating_sub(limit.max(0) as usize);
        out.extend(list.into_iter().take(extra));
    }
    out
}

/// The job for start time `scheduled`: the template's metadata and spec, the deterministic
/// name, the scheduled-timestamp annotation and the cronjob as controlling owner.
pub fn job_from_template(cj: &CronJob, scheduled: DateTime<Utc>, zone: chrono_tz::Tz) -> Job {
    let template = cj.spec.as_ref().map(|s| s.job_template.clone()).unwrap_or_default();
    let meta = template.metadata.unwrap_or_default();
    let mut annotations: BTreeMap<String, String> = meta.annotations.unwrap_or_default();
    annotations.insert(
        SCHEDULED_TIMESTAMP.into(),
        scheduled.with_timezone(&zone).to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    );
    Job {
        metadata: ObjectMeta {
            name: Some(job_name(&cj.name_any(), scheduled)),
            namespace: cj.namespace(),
            labels: meta.labels,
            annotations: Some(annotations),
            owner_references: Some(vec![podutil::controller_ref(cj)]),
            ..Default::default()
        },
        spec: template.spec,
        status: None,
    }
}

fn reference(job: &Job) -> ObjectReference {
    ObjectReference {
        api_version: Some("batch/v1".into()),
        kind: Some("Job".into()),
        name: Some(job.name_any()),
        namespace: job.namespace(),
        uid: job.uid(),
        resource_version: job.resource_version(),
        ..Default::default()
    }
}

async fn sync(ctx: &Ctx, key: &str, now: DateTime<Utc>) -> Result<Action, CronJobError> {
    let (ns, name) = split_key(key);
    let ns = ns.unwrap_or("default");
    let Some(cj) = ctx.cronjobs.get(&ObjectRef::new(name).within(ns)) else {
        return Ok(Action::Done);
    };
    if cj.metadata.deletion_timestamp.is_some() {
        return Ok(Action::Done);
    }
    let err = |action: &'static str| {
        let key = key.to_string();
        move |source| CronJobError::Api { action, key, source }
    };
    let spec = cj.spec.clone().unwrap_or_default();
    let uid = cj.uid().unwrap_or_default();
    let jobs_api: Api<Job> = Api::namespaced(ctx.client.clone(), ns);
    let cj_api: Api<CronJob> = Api::namespaced(ctx.client.clone(), ns);
    let owned: Vec<Arc<Job>> = ctx
        .jobs
        .state()
        .into_iter()
        .filter(|j| j.namespace().as_deref() == Some(ns))
        .filter(|j| controller_of(&j.metadata).is_some_and(|o| o.uid == uid))
        .collect();
    let mut status = cj.status.clone().unwrap_or_default();
    let original = status.clone();
    let mut active: Vec<ObjectReference> = status.active.clone().unwrap_or_default();
    let in_active = |active: &[ObjectReference], j: &Job| active.iter().any(|r| r.uid == j.uid());

    // Reconcile the active list with the jobs that exist.
    for j in &owned {
        let found = in_active(&active, j);
        if !found && !is_finished(j) {
            record_event(
                &ctx.client,
                MANAGER,
                cj.as_ref(),
                true,
                "UnexpectedJob",
                format!("Saw a job that the controller did not create or forgot: {}", j.name_any()),
            );
        } else if found && is_finished(j) {
            active.retain(|r| r.uid != j.uid());
            let cond = if succeeded(j) { "Complete" } else { "Failed" };
            record_event(
                &ctx.client,
                MANAGER,
                cj.as_ref(),
                false,
                "SawCompletedJob",
                format!("Saw completed job: {}, condition: {cond}", j.name_any()),
            );
        }
        if succeeded(j) {
            let done = j.status.as_ref().and_then(|s| time_of(&s.completion_time));
            if done.is_some() && done > time_of(&status.last_successful_time) {
                status.last_successful_time = done.map(to_time);
            }
        }
    }
    let mut missing = vec![];
    for r in &active {
        if owned.iter().any(|j| j.uid() == r.uid) {
            continue;
        }
        // The cache may lag: ask the API before declaring the job gone.
        let rname = r.name.clone().unwrap_or_default();
        match jobs_api.get_opt(&rname).await.map_err(err("get a job"))? {
            Some(j) if j.uid() == r.uid => {}
            _ => missing.push(r.clone()),
        }
    }
    for r in missing {
        record_event(
            &ctx.client,
            MANAGER,
            cj.as_ref(),
            true,
            "MissingJob",
            format!("Active job went missing: {}", r.name.clone().unwrap_or_default()),
        );
        active.retain(|a| a.uid != r.uid);
    }

    // History limits.
    let refs: Vec<&Job> = owned.iter().map(|j| j.as_ref()).collect();
    for victim in
        history_victims(&refs, spec.successful_jobs_history_limit, spec.failed_jobs_history_limit)
    {
        delete_job(&jobs_api, victim).await.map_err(err("delete a job"))?;
        record_event(
            &ctx.client,
            MANAGER,
            cj.as_ref(),
            false,
            "SuccessfulDelete",
            format!("Deleted job {}", victim.name_any()),
        );
    }

    let mut requeue = None;
    let result = plan_start(ctx, &cj, &spec, &status, &active, now);
    let schedule = match result {
        Ok(v) => v,
        Err(event) => {
            if let Some((reason, message)) = event {
                record_event(&ctx.client, MANAGER, cj.as_ref(), true, reason, message);
            }
            None
        }
    };
    if let Some((sched, scheduled)) = schedule {
        requeue = next_requeue(&sched, now);
        if let Some(scheduled) = scheduled {
            let decision = concurrency(spec.concurrency_policy.as_deref(), active.len());
            match decision {
                Concurrency::Skip => record_event(
                    &ctx.client,
                    MANAGER,
                    cj.as_ref(),
                    false,
                    "JobAlreadyActive",
                    "Not starting job because prior execution is running and concurrency policy is Forbid".into(),
                ),
                Concurrency::Start | Concurrency::ReplaceThenStart => {
                    if decision == Concurrency::ReplaceThenStart {
                        for r in active.clone() {
                            let rname = r.name.clone().unwrap_or_default();
                            if let Some(j) = jobs_api.get_opt(&rname).await.map_err(err("get a job"))? {
                                delete_job(&jobs_api, &j).await.map_err(err("delete a job"))?;
                                record_event(
                                    &ctx.client,
                                    MANAGER,
                                    cj.as_ref(),
                                    false,
                                    "SuccessfulDelete",
                                    format!("Deleted job {rname}"),
                                );
                            }
                            active.retain(|a| a.uid != r.uid);
                        }
                    }
                    let job = job_from_template(&cj, scheduled, sched.zone());
                    match jobs_api.create(&PostParams::default(), &job).await {
                        Ok(created) => {
                            record_event(
                                &ctx.client,
                                MANAGER,
                                cj.as_ref(),
                                false,
                                "SuccessfulCreate",
                                format!("Created job {}", created.name_any()),
                            );
                            active.push(reference(&created));
                            status.last_schedule_time = Some(to_time(scheduled));
                        }
                        Err(kube::Error::Api(e)) if e.code == 409 => {
                            // Created before (by an earlier sync whose status write was lost).
                            let jname = job.name_any();
                            if let Some(j) = jobs_api.get_opt(&jname).await.map_err(err("get a job"))? {
                                if controller_of(&j.metadata).is_some_and(|o| o.uid == uid) {
                                    if !is_finished(&j) && !in_active(&active, &j) {
                                        active.push(reference(&j));
                                    }
                                    status.last_schedule_time = Some(to_time(scheduled));
                                }
                            }
                        }
                        Err(kube::Error::Api(e))
                            if e.code == 403 && e.message.contains("being terminated") => {}
                        Err(e) => {
                            record_event(
                                &ctx.client,
                                MANAGER,
                                cj.as_ref(),
                                true,
                                "FailedCreate",
                                format!("Error creating job: {e}"),
                            );
                            return Err(err("create a job")(e));
                        }
                    }
                }
            }
        }
    }

    status.active = (!active.is_empty()).then_some(active);
    if status != original {
        let mut updated = (*cj).clone();
        updated.status = Some(status);
        let pp = PostParams { field_manager: Some(MANAGER.into()), ..Default::default() };
        match cj_api.replace_status(name, &pp, &updated).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => return Ok(Action::Done),
            Err(e) => return Err(err("update status")(e)),
        }
    }
    Ok(match requeue {
        Some(d) => Action::RequeueAfter(d),
        None => Action::Done,
    })
}

/// An event to record instead of starting a job.
type Skip = Option<(&'static str, String)>;

/// The schedule and the start time due now, if any: None when suspended or the start is
/// already handled; an event when the schedule is unusable or the start is too late.
#[allow(clippy::type_complexity)]
fn plan_start(
    ctx: &Ctx,
    cj: &CronJob,
    spec: &k8s_openapi::api::batch::v1::CronJobSpec,
    status: &k8s_openapi::api::batch::v1::CronJobStatus,
    active: &[ObjectReference],
    now: DateTime<Utc>,
) -> Result<Option<(Schedule, Option<DateTime<Utc>>)>, Skip> {
    let _ = ctx;
    if spec.suspend == Some(true) {
        return Ok(None);
    }
    let sched = match schedule::parse(&spec.schedule, spec.time_zone.as_deref()) {
        Ok(s) => s,
        Err(schedule::ScheduleError::TimeZone(tz)) => {
            return Err(Some(("UnknownTimeZone", format!("invalid timeZone: {tz:?}"))));
        }
        Err(e) => return Err(Some(("UnparseableSchedule", format!("unparseable schedule: {e}")))),
    };
    let earliest = time_of(&status.last_schedule_time)
        .or_else(|| time_of(&cj.metadata.creation_timestamp))
        .unwrap_or(now);
    let (due, missed) =
        match schedule::most_recent(&sched, earliest, spec.starting_deadline_seconds, now) {
            Ok(v) => v,
            Err(why) => return Err(Some(("InvalidSchedule", format!("invalid schedule: {why}")))),
        };
    if missed == Missed::Many {
        record_event(
            &ctx.client,
            MANAGER,
            cj,
            true,
            "TooManyMissedTimes",
            "too many missed start times. Set or decrease .spec.startingDeadlineSeconds or check clock skew".into(),
        );
    }
    let Some(due) = due else { return Ok(Some((sched, None))) };
    if let Some(sds) = spec.starting_deadline_seconds {
        if due + chrono::Duration::seconds(sds) < now {
            record_event(
                &ctx.client,
                MANAGER,
                cj,
                true,
                "MissSchedule",
                format!("Missed scheduled time to start a job: {}", due.to_rfc2822()),
            );
            return Ok(Some((sched, None)));
        }
    }
    let name = job_name(&cj.name_any(), due);
    let handled = active.iter().any(|r| r.name.as_deref() == Some(name.as_str()))
        || time_of(&status.last_schedule_time) == Some(due);
    Ok(Some((sched, (!handled).then_some(due))))
}

/// How long until the start after `now` (plus a little, so the sync sees it as due).
fn next_requeue(sched: &Schedule, now: DateTime<Utc>) -> Option<Duration> {
    let next = sched.next(now)?;
    Some((next - now).to_std().unwrap_or_default() + Duration::from_millis(100))
}

async fn delete_job(api: &Api<Job>, job: &Job) -> Result<(), kube::Error> {
    let dp = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Background),
        preconditions: Some(kube::api::Preconditions { uid: job.uid(), resource_version: None }),
        ..Default::default()
    };
    match api.delete(&job.name_any(), &dp).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn finished_job(name: &str, ok: bool, start: &str) -> Job {
        serde_json::from_value(json!({
            "metadata": {"name": name},
            "status": {"startTime": start, "conditions": [
                {"type": if ok { "Complete" } else { "Failed" }, "status": "True"}]},
        }))
        .unwrap()
    }

    #[test]
    fn names_count_minutes_since_the_epoch() {
        let t = DateTime::parse_from_rfc3339("2024-03-10T10:05:00Z").unwrap().with_timezone(&Utc);
        assert_eq!(job_name("hello", t), format!("hello-{}", t.timestamp() / 60));
        assert_eq!(job_name("hello", t), "hello-28501085");
    }

    #[test]
    fn concurrency_policies() {
        assert_eq!(concurrency(None, 0), Concurrency::Start);
        assert_eq!(concurrency(Some("Allow"), 2), Concurrency::Start);
        assert_eq!(concurrency(Some("Forbid"), 1), Concurrency::Skip);
        assert_eq!(concurrency(Some("Forbid"), 0), Concurrency::Start);
        assert_eq!(concurrency(Some("Replace"), 1), Concurrency::ReplaceThenStart);
    }

    #[test]
    fn history_limits_delete_the_oldest_finished_jobs() {
        let jobs = [
            finished_job("s1", true, "2024-01-01T00:01:00Z"),
            finished_job("s2", true, "2024-01-01T00:02:00Z"),
            finished_job("s3", true, "2024-01-01T00:03:00Z"),
            finished_job("f1", false, "2024-01-01T00:01:30Z"),
            finished_job("f2", false, "2024-01-01T00:02:30Z"),
        ];
        let refs: Vec<&Job> = jobs.iter().collect();
        let names = |v: Vec<&Job>| v.iter().map(|j| j.name_any()).collect::<Vec<_>>();
        assert_eq!(names(history_victims(&refs, Some(1), Some(1))), ["s1", "s2", "f1"]);
        assert_eq!(names(history_victims(&refs, Some(3), Some(0))), ["f1", "f2"]);
        assert!(history_victims(&refs, None, None).is_empty());
    }

    #[test]
    fn jobs_from_the_template_carry_the_scheduled_time() {
        let cj: CronJob = serde_json::from_value(json!({
            "metadata": {"name": "nightly", "namespace": "ns", "uid": "u1"},
            "spec": {"schedule": "0 3 * * *", "timeZone": "Europe/Paris", "jobTemplate": {
                "metadata": {"labels": {"team": "a"}},
                "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "i"}]}}}}},
        }))
        .unwrap();
        let t = DateTime::parse_from_rfc3339("2024-07-01T01:00:00Z").unwrap().with_timezone(&Utc);
        let job = job_from_template(&cj, t, chrono_tz::Europe::Paris);
        assert_eq!(job.metadata.name.as_deref(), Some("nightly-28663260"));
        assert_eq!(
            job.metadata.annotations.as_ref().unwrap()[SCHEDULED_TIMESTAMP],
            "2024-07-01T03:00:00+02:00"
        );
        assert_eq!(job.metadata.labels.as_ref().unwrap()["team"], "a");
        let owner = &job.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.uid.as_str(), owner.controller),
            ("CronJob", "u1", Some(true))
        );
    }
}
