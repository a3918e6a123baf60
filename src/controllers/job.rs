//! The Job controller: runs pods until spec.completions of them succeed (NonIndexed) or every
//! completion index has a succeeded pod (Indexed), at most spec.parallelism at a time. Failed
//! pods are replaced after an exponential back-off (10 s doubling, at most 10 min) until
//! backoffLimit is passed; spec.podFailurePolicy can fail the job at once, ignore a failure or
//! fail an index; activeDeadlineSeconds bounds the run; suspend deletes the active pods.
//!
//! Pods carry the `batch.kubernetes.io/job-tracking` finalizer, so a finished (or deleted)
//! pod is counted exactly once: its uid goes to status.uncountedTerminatedPods, then the
//! finalizer is removed, then the uid moves to status.succeeded / status.failed. A finishing
//! job first gets SuccessCriteriaMet or FailureTarget; Complete or Failed follow once no pod is
//! left running or uncounted.

pub mod adoption;
mod backoff;
pub mod failurepolicy;
pub mod indexes;
mod plan;
mod pods;
mod status;

use super::events::record as record_event;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::future::join_all;
use k8s_openapi::api::batch::v1::{Job, JobStatus, UncountedTerminatedPods};
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Api, Client, ResourceExt};
use parking_lot::Mutex;

use super::expectations::Expectations;
use super::informer::Change;
use super::informers::{Informers, StoreReady};
use super::ownerindex::{lookup, PodIndex};
use super::podutil::{self, controller_of, key_of, split_key};
use super::queue::WorkQueue;
use super::worker::{run_workers, Action};
pub use backoff::backoff_delay;
use backoff::{remaining_backoff, BackoffRecord};
use failurepolicy::Verdict;
use plan::{index_failure_counts, index_failures, success_policy_met, Plan};
pub use pods::pod_from_template;
use pods::{create_pods, delete_pods, remove_finalizer};
pub use status::is_finished;
use status::{condition_true, set_condition, to_time, write_status};

/// The finalizer that keeps a job's pod until the job has counted it.
pub const TRACKING_FINALIZER: &str = "batch.kubernetes.io/job-tracking";
/// The annotation (and label) holding an Indexed job pod's completion index.
pub const COMPLETION_INDEX: &str = "batch.kubernetes.io/job-completion-index";
/// The pod annotation counting earlier failures of the same index (backoffLimitPerIndex).
pub const INDEX_FAILURE_COUNT: &str = "batch.kubernetes.io/job-index-failure-count";
/// The controller name in spec.managedBy that this controller serves.
pub const MANAGED_BY: &str = "kubernetes.io/job-controller";
/// The first delay before a failed pod is replaced; it doubles with each further failure.
pub const DEFAULT_POD_FAILURE_BACKOFF: Duration = Duration::from_secs(10);
/// The longest delay before a failed pod is replaced.
pub const MAX_POD_FAILURE_BACKOFF: Duration = Duration::from_secs(600);
/// The most pods created or deleted in one sync.
const BURST: usize = 500;
const MANAGER: &str = "job-controller";
/// How soon to look again after a write lost a race.
const RETRY: Duration = Duration::from_millis(200);

/// How the controller runs.
#[derive(Clone, Debug)]
pub struct JobOptions {
    pub workers: usize,
    /// The base of the failure back-off (upstream: 10 s); tests shorten it.
    pub pod_failure_backoff: Duration,
}

impl Default for JobOptions {
    fn default() -> Self {
        JobOptions { workers: 5, pod_failure_backoff: DEFAULT_POD_FAILURE_BACKOFF }
    }
}

/// What can go wrong syncing a Job.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error("cannot {action} for job {key}")]
    Api {
        action: &'static str,
        key: String,
        #[source]
        source: kube::Error,
    },
    #[error("an informer of the job controller stopped")]
    InformerStopped,
}

struct Ctx {
    client: Client,
    jobs: Store<Job>,
    pods: Store<Pod>,
    index: PodIndex,
    expectations: Expectations,
    /// Per job: uids of pods whose finalizer this controller removed, until the cache agrees.
    unfinalized: Mutex<HashMap<String, HashSet<String>>>,
    backoff: Mutex<HashMap<String, BackoffRecord>>,
    /// Per job: the resourceVersion of this controller's latest status write. A cached job
    /// older than that is not acted on (its counts would be stale).
    written: Mutex<HashMap<String, u64>>,
    base_backoff: Duration,
}

/// Runs the controller until an informer stops.
pub async fn run(client: Client, informers: Informers, opts: JobOptions) -> Result<(), JobError> {
    let queue = WorkQueue::new();
    let q = queue.clone();
    let (jobs, jobs_task) = informers.spawn(
        "job-informer",
        Api::<Job>::all(client.clone()),
        watcher::Config::default(),
        move |c| match c {
            Change::Applied(j) | Change::Deleted(j) => q.add(key_of(j)),
            Change::Synced => {}
        },
    );
    let (q, for_pods) = (queue.clone(), jobs.clone());
    let index = PodIndex::default();
    let idx = index.clone();
    let (pods, pods_task) = informers.spawn(
        "job-pod-informer",
        Api::<Pod>::all(client.clone()),
        watcher::Config::default(),
        move |c| match c {
            // Its job, or for an orphan every job whose selector matches it (to adopt it).
            Change::Applied(pod) | Change::Deleted(pod) => {
                idx.observe(&c);
                for key in podutil::owners_of(
                    &for_pods,
                    |j: &Job| j.spec.as_ref().and_then(|s| s.selector.as_ref()),
                    &pod.metadata,
                    pod.metadata.deletion_timestamp.is_some(),
                ) {
                    q.add(key);
                }
            }
            Change::Synced => {}
        },
    );
    let _guard = super::AbortOnDrop(vec![jobs_task.abort_handle(), pods_task.abort_handle()]);
    let ready = futures::future::join(jobs.ready(), pods.ready());
    if ready.await.0.is_err() {
        return Err(JobError::InformerStopped);
    }
    let ctx = Arc::new(Ctx {
        client,
        jobs,
        pods,
        index,
        expectations: Expectations::default(),
        unfinalized: Mutex::new(HashMap::new()),
        backoff: Mutex::new(HashMap::new()),
        written: Mutex::new(HashMap::new()),
        base_backoff: opts.pod_failure_backoff,
    });
    let workers = run_workers("job", queue, opts.workers, move |key| {
        let ctx = ctx.clone();
        async move { sync(&ctx, &key).await }
    });
    tokio::select! {
        _ = workers => {}
        _ = jobs_task => {}
        _ = pods_task => {}
    }
    Err(JobError::InformerStopped)
}

impl Ctx {
    fn record_write(&self, key: &str, job: &Job) {
        if let Some(rv) = job.resource_version().and_then(|v| v.parse::<u64>().ok()) {
            self.written.lock().insert(key.to_string(), rv);
        }
    }
}

fn has_finalizer(pod: &Pod) -> bool {
    pod.metadata.finalizers.as_ref().is_some_and(|f| f.iter().any(|f| f == TRACKING_FINALIZER))
}

fn phase(pod: &Pod) -> &str {
    pod.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("")
}

fn is_terminal(pod: &Pod) -> bool {
    matches!(phase(pod), "Succeeded" | "Failed")
}

/// Replacement pods wait until a failed pod has fully terminated (spec.podReplacementPolicy
/// Failed, the default with a pod failure policy).
fn only_replace_failed(job: &Job) -> bool {
    let spec = job.spec.as_ref();
    match spec.and_then(|s| s.pod_replacement_policy.as_deref()) {
        Some(p) => p == "Failed",
        None => spec.is_some_and(|s| s.pod_failure_policy.is_some()),
    }
}

/// Whether a pod counts as failed: phase Failed or, unless only failed pods are replaced,
/// deleted before it succeeded.
fn is_failed(pod: &Pod, job: &Job) -> bool {
    if phase(pod) == "Failed" {
        return true;
    }
    if only_replace_failed(job) {
        return false;
    }
    pod.metadata.deletion_timestamp.is_some() && phase(pod) != "Succeeded"
}

/// When a pod finished: the latest container finish time, else when its deletion was asked
/// for (the deletion timestamp less the grace period), else now.
fn finish_time(pod: &Pod, now: DateTime<Utc>) -> DateTime<Utc> {
    let status = pod.status.as_ref();
    let latest = status
        .into_iter()
        .flat_map(|s| s.container_statuses.iter().flatten())
        .filter_map(|c| c.state.as_ref()?.terminated.as_ref()?.finished_at.as_ref())
        .map(podutil::time_of)
        .max();
    let deleted = pod.metadata.deletion_timestamp.as_ref().map(|t| {
        let grace = pod.metadata.deletion_grace_period_seconds.unwrap_or(0);
        podutil::time_of(t) - chrono::Duration::seconds(grace)
    });
    latest.or(deleted).unwrap_or(now).min(now)
}

/// The reason for ending a job that is on its way to finishing.
#[derive(Clone, Debug)]
enum Ending {
    Success(String, String),
    Failure(String, String),
}

async fn sync(ctx: &Ctx, key: &str) -> Result<Action, JobError> {
    let (ns, name) = split_key(key);
    let ns = ns.unwrap_or("default");
    let pods_api: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);
    let err = |action: &'static str| {
        let key = key.to_string();
        move |source| JobError::Api { action, key, source }
    };
    let job = ctx.jobs.get(&ObjectRef::new(name).within(ns));
    let uid = job.as_ref().and_then(|j| j.uid()).unwrap_or_default();

    // Pods of an earlier job of this name (or of one that is gone) lose the finalizer.
    let strays: Vec<Arc<Pod>> = lookup(&ctx.pods, &ctx.index.in_namespace(ns))
        .into_iter()
        .filter(|p| p.namespace().as_deref() == Some(ns) && has_finalizer(p))
        .filter(|p| {
            controller_of(&p.metadata)
                .is_some_and(|o| o.kind == "Job" && o.name == name && o.uid != uid)
        })
        .collect();
    let mut retry = false;
    for p in &strays {
        retry |= !remove_finalizer(&pods_api, p).await.map_err(err("remove a pod finalizer"))?;
    }
    let Some(job) = job else {
        ctx.expectations.clear(key);
        ctx.unfinalized.lock().remove(key);
        ctx.backoff.lock().remove(key);
        ctx.written.lock().remove(key);
        return Ok(if retry { Action::RequeueAfter(RETRY) } else { Action::Done });
    };
    if job.spec.as_ref().and_then(|s| s.managed_by.as_deref()).is_some_and(|m| m != MANAGED_BY) {
        return Ok(Action::Done);
    }
    let Some(spec) = job.spec.clone() else { return Ok(Action::Done) };
    let cached = job.resource_version().and_then(|v| v.parse::<u64>().ok());
    if let (Some(c), Some(w)) = (cached, ctx.written.lock().get(key).copied()) {
        if c < w {
            // The informer has not yet seen our last write; its event requeues the job.
            return Ok(Action::RequeueAfter(Duration::from_millis(100)));
        }
    }
    let mut pods: Vec<Arc<Pod>> = lookup(&ctx.pods, &ctx.index.owned_by(&uid))
        .into_iter()
        .filter(|p| p.namespace().as_deref() == Some(ns))
        .filter(|p| controller_of(&p.metadata).is_some_and(|o| o.uid == uid))
        .collect();
    pods.sort_by_key(|p| p.metadata.creation_timestamp.as_ref().map(podutil::time_of));

    // Pods whose finalizer we removed stay skipped until the cache shows it gone.
    let skip: HashSet<String> = {
        let mut map = ctx.unfinalized.lock();
        let set = map.entry(key.to_string()).or_default();
        set.retain(|u| {
            pods.iter().any(|p| p.metadata.uid.as_deref() == Some(u) && has_finalizer(p))
        });
        set.clone()
    };

    if is_finished(&job) {
        for p in pods.iter().filter(|p| has_finalizer(p)) {
            retry |=
                !remove_finalizer(&pods_api, p).await.map_err(err("remove a pod finalizer"))?;
        }
        return Ok(if retry { Action::RequeueAfter(RETRY) } else { Action::Done });
    }
    // Matching orphans are adopted, pods that stopped matching released.
    let jobs_api: Api<Job> = Api::namespaced(ctx.client.clone(), ns);
    let mut pods = adoption::claim_pods(&pods_api, &jobs_api, &ctx.pods, &ctx.index, &job)
        .await
        .map_err(err("claim pods"))?;
    pods.sort_by_key(|p| p.metadata.creation_timestamp.as_ref().map(podutil::time_of));

    let active_now = |p: &Pod| !is_terminal(p) && p.metadata.deletion_timestamp.is_none();
    let satisfied = ctx.expectations.satisfied(
        key,
        |n| ctx.pods.get(&ObjectRef::new(n).within(ns)).is_some(),
        |u| !pods.iter().any(|p| p.metadata.uid.as_deref() == Some(u) && active_now(p)),
    );
    if !satisfied {
        return Ok(Action::RequeueAfter(Duration::from_secs(1)));
    }

    let now = Utc::now();
    let mut status = job.status.clone().unwrap_or_default();
    let indexed = spec.completion_mode.as_deref() == Some("Indexed");
    let completions = spec.completions;
    let parallelism = spec.parallelism.unwrap_or(1).max(0);
    let limit = completions.unwrap_or(0);
    let uncounted = status.uncounted_terminated_pods.clone().unwrap_or_default();
    let mut unc_succeeded: BTreeSet<String> = uncounted.succeeded.into_iter().flatten().collect();
    let mut unc_failed: BTreeSet<String> = uncounted.failed.into_iter().flatten().collect();
    let mut completed = indexes::parse(status.completed_indexes.as_deref().unwrap_or(""), limit);
    let mut failed_indexes = indexes::parse(status.failed_indexes.as_deref().unwrap_or(""), limit);
    let per_index = spec.backoff_limit_per_index.filter(|_| indexed);

    let mut ending: Option<Ending> = if let Some(c) = condition_true(&status, "FailureTarget") {
        Some(Ending::Failure(
            c.reason.clone().unwrap_or_default(),
            c.message.clone().unwrap_or_default(),
        ))
    } else {
        condition_true(&status, "SuccessCriteriaMet").map(|c| {
            Ending::Success(
                c.reason.clone().unwrap_or_default(),
                c.message.clone().unwrap_or_default(),
            )
        })
    };

    // Count pods that finished since the last sync (first into uncountedTerminatedPods).
    let mut unfinalize: Vec<Arc<Pod>> = vec![];
    let mut finished: Vec<(DateTime<Utc>, bool)> = vec![];
    let mut flush = false;
    for pod in &pods {
        let pod_uid = pod.metadata.uid.clone().unwrap_or_default();
        if !has_finalizer(pod) || skip.contains(&pod_uid) {
            continue;
        }
        if unc_succeeded.contains(&pod_uid) || unc_failed.contains(&pod_uid) {
            unfinalize.push(pod.clone());
            continue;
        }
        let index = indexes::of_pod(pod).filter(|i| *i < limit);
        if phase(pod) == "Succeeded" {
            if indexed {
                if let Some(i) = index {
                    completed.insert(i);
                }
            }
            unc_succeeded.insert(pod_uid);
            finished.push((finish_time(pod, now), true));
            unfinalize.push(pod.clone());
            flush = true;
        } else if is_failed(pod, &job) || matches!(ending, Some(Ending::Failure(..))) {
            unfinalize.push(pod.clone());
            let verdict = match &spec.pod_failure_policy {
                Some(policy) if phase(pod) == "Failed" => failurepolicy::evaluate(policy, pod),
                _ => Verdict::Count,
            };
            match verdict {
                Verdict::Ignore => continue,
                Verdict::FailJob(message) => {
                    if ending.is_none() {
                        record_event(
                            &ctx.client,
                            MANAGER,
                            job.as_ref(),
                            true,
                            "PodFailurePolicy",
                            message.clone(),
                        );
                        ending = Some(Ending::Failure("PodFailurePolicy".into(), message));
                    }
                }
                Verdict::FailIndex => {
                    if let (Some(i), Some(_)) = (index, per_index) {
                        failed_indexes.insert(i);
                    }
                }
                Verdict::Count => {
                    if let (Some(i), Some(lim)) = (index, per_index) {
                        if index_failures(pod) + 1 > lim {
                            failed_indexes.insert(i);
                        }
                    }
                }
            }
            if !indexed || index.is_some() {
                unc_failed.insert(pod_uid);
                finished.push((finish_time(pod, now), false));
                flush = true;
            }
        }
    }
    finished.sort_by_key(|(t, _)| *t);
    if !finished.is_empty() {
        let mut map = ctx.backoff.lock();
        let rec = map.entry(key.to_string()).or_default();
        for (t, ok) in &finished {
            if *ok {
                rec.failures = 0;
            } else {
                rec.failures += 1;
                rec.last_failure = Some(rec.last_failure.map_or(*t, |l| l.max(*t)));
            }
        }
    }

    let mut current = (*job).clone();
    let set_uncounted = |st: &mut JobStatus, s: &BTreeSet<String>, f: &BTreeSet<String>| {
        st.uncounted_terminated_pods = Some(UncountedTerminatedPods {
            succeeded: (!s.is_empty()).then(|| s.iter().cloned().collect()),
            failed: (!f.is_empty()).then(|| f.iter().cloned().collect()),
        });
    };
    if flush {
        set_uncounted(&mut status, &unc_succeeded, &unc_failed);
        if indexed {
            status.completed_indexes = Some(indexes::format(&completed));
            if per_index.is_some() {
                status.failed_indexes = Some(indexes::format(&failed_indexes));
            }
        }
        current.status = Some(status.clone());
        current =
            match write_status(&jobs_api, &current).await.map_err(err("record finished pods"))? {
                Some(j) => {
                    ctx.record_write(key, &j);
                    j
                }
                None => return Ok(Action::Done),
            };
    }

    // Remove the finalizers of counted (and ignored) pods; then count them for good.
    let results =
        join_all(
            unfinalize.iter().map(|p| {
                let api = pods_api.clone();
                let p = p.clone();
                async move {
                    (p.metadata.uid.clone().unwrap_or_default(), remove_finalizer(&api, &p).await)
                }
            }),
        )
        .await;
    let mut released: HashSet<String> = HashSet::new();
    for (u, r) in results {
        if r.map_err(err("remove a pod finalizer"))? {
            released.insert(u);
        } else {
            retry = true;
        }
    }
    ctx.unfinalized.lock().entry(key.to_string()).or_default().extend(released.iter().cloned());
    let gone = |u: &String| {
        released.contains(u)
            || !pods.iter().any(|p| p.metadata.uid.as_ref() == Some(u) && has_finalizer(p))
    };
    let moved_s: Vec<String> = unc_succeeded.iter().filter(|u| gone(u)).cloned().collect();
    let moved_f: Vec<String> = unc_failed.iter().filter(|u| gone(u)).cloned().collect();
    for u in &moved_s {
        unc_succeeded.remove(u);
    }
    for u in &moved_f {
        unc_failed.remove(u);
    }
    let mut succeeded = status.succeeded.unwrap_or(0) + moved_s.len() as i32;
    let failed = status.failed.unwrap_or(0) + moved_f.len() as i32;
    if indexed {
        succeeded = completed.len() as i32;
    }
    let succeeded_all = if indexed { succeeded } else { succeeded + unc_succeeded.len() as i32 };
    let failed_all = failed + unc_failed.len() as i32;

    let active: Vec<Arc<Pod>> = pods.iter().filter(|p| active_now(p)).cloned().collect();
    let terminating =
        pods.iter().filter(|p| p.metadata.deletion_timestamp.is_some() && !is_terminal(p)).count()
            as i32;
    let suspended = spec.suspend == Some(true);
    let mut requeue: Option<Duration> = None;
    let mut want_requeue = |d: Duration| requeue = Some(requeue.map_or(d, |r: Duration| r.min(d)));
    if retry {
        want_requeue(RETRY);
    }

    // Decide whether the job is finishing.
    if ending.is_none() {
        let restarts: i32 = if spec.template.spec.as_ref().and_then(|s| s.restart_policy.as_deref())
            == Some("OnFailure")
        {
            active
                .iter()
                .flat_map(|p| {
                    let s = p.status.as_ref();
                    s.into_iter()
                        .flat_map(|s| {
                            s.container_statuses
                                .iter()
                                .flatten()
                                .chain(s.init_container_statuses.iter().flatten())
                        })
                        .map(|c| c.restart_count)
                        .collect::<Vec<_>>()
                })
                .sum()
        } else {
            0
        };
        let backoff_limit = spec.backoff_limit.unwrap_or(6);
        let started = status.start_time.as_ref().map(podutil::time_of);
        if per_index.is_none() && failed_all + restarts > backoff_limit {
            ending = Some(Ending::Failure(
                "BackoffLimitExceeded".into(),
                "Job has reached the specified backoff limit".into(),
            ));
        } else if per_index.is_some()
            && spec.max_failed_indexes.is_some_and(|m| failed_indexes.len() as i32 > m)
        {
            ending = Some(Ending::Failure(
                "MaxFailedIndexesExceeded".into(),
                "Job has exceeded the specified maximal number of failed indexes".into(),
            ));
        } else if let (Some(ads), Some(start), false) =
            (spec.active_deadline_seconds, started, suspended)
        {
            let deadline = start + chrono::Duration::seconds(ads);
            if now >= deadline {
                ending = Some(Ending::Failure(
                    "DeadlineExceeded".into(),
                    "Job was active longer than specified deadline".into(),
                ));
            } else {
                want_requeue(
                    (deadline - now).to_std().unwrap_or_default() + Duration::from_millis(10),
                );
            }
        }
        if ending.is_none() {
            let done = if indexed {
                completed.len() as i32 + failed_indexes.len() as i32 >= limit
            } else {
                match completions {
                    Some(c) => succeeded_all >= c,
                    None => succeeded_all > 0 && active.is_empty(),
                }
            };
            if done && indexed && !failed_indexes.is_empty() {
                ending =
                    Some(Ending::Failure("FailedIndexes".into(), "Job has failed indexes".into()));
            } else if done {
                ending = Some(Ending::Success(
                    "CompletionsReached".into(),
                    "Reached expected number of succeeded pods".into(),
                ));
            } else if let Some(rule) = success_policy_met(&spec, &completed) {
                ending = Some(Ending::Success(
                    "SuccessPolicy".into(),
                    format!("Matched rules at index {rule}"),
                ));
            }
        }
        match &ending {
            Some(Ending::Failure(reason, message)) => {
                set_condition(&mut status, "FailureTarget", true, reason, message);
                if reason != "PodFailurePolicy" {
                    record_event(&ctx.client, MANAGER, job.as_ref(), true, reason, message.clone());
                }
            }
            Some(Ending::Success(reason, message)) => {
                set_condition(&mut status, "SuccessCriteriaMet", true, reason, message);
            }
            None => {}
        }
        if ending.is_some() {
            want_requeue(Duration::ZERO);
        }
    }

    let mut active_count = active.len() as i32;
    if let Some(end) = &ending {
        // Stop what still runs; finish once nothing runs and every pod is counted.
        if !active.is_empty() {
            delete_pods(ctx, key, &pods_api, &job, &active).await.map_err(err("delete pods"))?;
            active_count = 0;
        }
        let pending = pods.iter().any(|p| {
            has_finalizer(p) && !released.contains(p.metadata.uid.as_deref().unwrap_or(""))
        });
        if active.is_empty()
            && terminating == 0
            && unc_succeeded.is_empty()
            && unc_failed.is_empty()
            && !pending
        {
            match end {
                Ending::Success(reason, message) => {
                    set_condition(&mut status, "Complete", true, reason, message);
                    status.completion_time = Some(to_time(now));
                    record_event(
                        &ctx.client,
                        MANAGER,
                        job.as_ref(),
                        false,
                        "Completed",
                        "Job completed".into(),
                    );
                }
                Ending::Failure(reason, message) => {
                    set_condition(&mut status, "Failed", true, reason, message);
                }
            }
        }
    } else if suspended {
        if !active.is_empty() {
            delete_pods(ctx, key, &pods_api, &job, &active).await.map_err(err("delete pods"))?;
            active_count = 0;
        }
        if condition_true(&status, "Suspended").is_none() {
            set_condition(&mut status, "Suspended", true, "JobSuspended", "Job suspended");
            record_event(
                &ctx.client,
                MANAGER,
                job.as_ref(),
                false,
                "Suspended",
                "Job suspended".into(),
            );
        }
        status.start_time = None;
    } else {
        if condition_true(&status, "Suspended").is_some() {
            set_condition(&mut status, "Suspended", false, "JobResumed", "Job resumed");
            record_event(
                &ctx.client,
                MANAGER,
                job.as_ref(),
                false,
                "Resumed",
                "Job resumed".into(),
            );
            status.start_time = Some(to_time(now));
        }
        if status.start_time.is_none() {
            status.start_time = Some(to_time(now));
            if let Some(ads) = spec.active_deadline_seconds {
                want_requeue(Duration::from_secs(ads.max(0) as u64) + Duration::from_millis(10));
            }
        }
        if job.metadata.deletion_timestamp.is_none() {
            let plan = Plan {
                indexed,
                completions,
                parallelism,
                succeeded: succeeded_all,
                completed: &completed,
                failed_indexes: &failed_indexes,
                terminating: if only_replace_failed(&job) { terminating } else { 0 },
            };
            let (create, delete) = plan.diff(&active);
            if !delete.is_empty() {
                delete_pods(ctx, key, &pods_api, &job, &delete)
                    .await
                    .map_err(err("delete pods"))?;
                active_count -= delete.len() as i32;
            }
            if !create.is_empty() {
                let rec = ctx.backoff.lock().get(key).copied().unwrap_or_default();
                let wait = remaining_backoff(rec, ctx.base_backoff, now);
                if wait.is_zero() {
                    let created = create_pods(
                        ctx,
                        key,
                        &pods_api,
                        &job,
                        &create,
                        &index_failure_counts(&job, &pods),
                    )
                    .await
                    .map_err(err("create pods"))?;
                    active_count += created as i32;
                } else {
                    want_requeue(wait);
                }
            }
        }
    }

    // The rest of the status.
    status.active = Some(active_count);
    status.ready = Some(active.iter().filter(|p| podutil::is_ready(p)).count() as i32)
        .filter(|_| active_count > 0)
        .or(Some(0));
    status.terminating = Some(terminating);
    status.succeeded = Some(succeeded);
    status.failed = Some(failed);
    set_uncounted(&mut status, &unc_succeeded, &unc_failed);
    if indexed {
        status.completed_indexes = Some(indexes::format(&completed));
        if per_index.is_some() {
            status.failed_indexes = Some(indexes::format(&failed_indexes));
        }
    }
    let nz = |v: Option<i32>| v.filter(|n| *n != 0);
    let mut normal = status.clone();
    normal.active = nz(normal.active);
    normal.succeeded = nz(normal.succeeded);
    normal.failed = nz(normal.failed);
    status = normal;
    if current.status.as_ref() != Some(&status) {
        current.status = Some(status);
        match write_status(&jobs_api, &current).await.map_err(err("update status"))? {
            Some(j) => ctx.record_write(key, &j),
            None => return Ok(Action::Done),
        }
    }
    Ok(match requeue {
        Some(d) => Action::RequeueAfter(d),
        None => Action::Done,
    })
}
