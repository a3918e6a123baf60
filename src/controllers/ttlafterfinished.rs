//! The TTL-after-finished controller: deletes a Job spec.ttlSecondsAfterFinished seconds after
//! it finished (the transition time of its Complete or Failed condition), with background
//! propagation so the garbage collector removes its pods. Before deleting it reads the Job
//! afresh, in case its TTL was changed, and deletes only that version of it.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use k8s_openapi::api::batch::v1::Job;
use kube::api::{DeleteParams, Preconditions, PropagationPolicy};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Api, Client, ResourceExt};

use super::informer::Change;
use super::informers::{Informers, StoreReady};
use super::podutil::{self, key_of, split_key};
use super::queue::WorkQueue;
use super::worker::{run_workers, Action};

/// What can go wrong cleaning up a Job.
#[derive(Debug, thiserror::Error)]
pub enum TtlError {
    #[error("cannot {action} job {key}")]
    Api {
        action: &'static str,
        key: String,
        #[source]
        source: kube::Error,
    },
    #[error("an informer of the ttl-after-finished controller stopped")]
    InformerStopped,
}

struct Ctx {
    client: Client,
    jobs: Store<Job>,
}

/// Runs the controller with `workers` concurrent syncs until its informer stops.
pub async fn run(client: Client, informers: Informers, workers: usize) -> Result<(), TtlError> {
    let queue = WorkQueue::new();
    let q = queue.clone();
    let (jobs, task) = informers.spawn(
        "ttlafterfinished-job-informer",
        Api::<Job>::all(client.clone()),
        watcher::Config::default(),
        move |c| {
            if let Change::Applied(job) = c {
                if needs_cleanup(job) {
                    q.add(key_of(job));
                }
            }
        },
    );
    let _guard = super::AbortOnDrop(vec![task.abort_handle()]);
    if jobs.ready().await.is_err() {
        return Err(TtlError::InformerStopped);
    }
    let ctx = Arc::new(Ctx { client, jobs });
    let workers = run_workers("ttlafterfinished", queue, workers, move |key| {
        let ctx = ctx.clone();
        async move { sync(&ctx, &key).await }
    });
    tokio::select! {
        _ = workers => {}
        _ = task => {}
    }
    Err(TtlError::InformerStopped)
}

/// Whether the job has a TTL, has finished and is not being deleted.
pub fn needs_cleanup(job: &Job) -> bool {
    job.metadata.deletion_timestamp.is_none()
        && job.spec.as_ref().and_then(|s| s.ttl_seconds_after_finished).is_some()
        && finished_at(job).is_some()
}

/// When the job finished: the transition time of its true Complete or Failed condition.
pub fn finished_at(job: &Job) -> Option<DateTime<Utc>> {
    let conds = job.status.as_ref()?.conditions.as_ref()?;
    conds
        .iter()
        .find(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True")
        .and_then(|c| c.last_transition_time.as_ref())
        .map(podutil::time_of)
}

/// How long until the job expires (zero: now); None if it needs no cleanup.
fn time_left(job: &Job, now: DateTime<Utc>) -> Option<Duration> {
    if !needs_cleanup(job) {
        return None;
    }
    let ttl = job.spec.as_ref()?.ttl_seconds_after_finished?;
    let expires = finished_at(job)? + chrono::Duration::seconds(ttl.into());
    Some((expires - now).to_std().unwrap_or(Duration::ZERO))
}

async fn sync(ctx: &Ctx, key: &str) -> Result<Action, TtlError> {
    let (ns, name) = split_key(key);
    let ns = ns.unwrap_or("default");
    let Some(job) = ctx.jobs.get(&ObjectRef::new(name).within(ns)) else {
        return Ok(Action::Done);
    };
    match time_left(&job, Utc::now()) {
        None => return Ok(Action::Done),
        Some(d) if !d.is_zero() => return Ok(Action::RequeueAfter(d)),
        Some(_) => {}
    }
    let err = |action: &'static str| {
        let key = key.to_string();
        move |source| TtlError::Api { action, key, source }
    };
    // The cache may be old: the TTL may have changed since.
    let api: Api<Job> = Api::namespaced(ctx.client.clone(), ns);
    let Some(fresh) = api.get_opt(name).await.map_err(err("get"))? else {
        return Ok(Action::Done);
    };
    match time_left(&fresh, Utc::now()) {
        None => return Ok(Action::Done),
        Some(d) if !d.is_zero() => return Ok(Action::RequeueAfter(d)),
        Some(_) => {}
    }
    tracing::info!(job = %key, "deleting finished job whose TTL expired");
    let dp = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Background),
        preconditions: Some(Preconditions {
            uid: fresh.uid(),
            resource_version: fresh.resource_version(),
        }),
        ..Default::default()
    };
    match api.delete(name, &dp).await {
        Ok(_) => Ok(Action::Done),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(Action::Done),
        Err(e) => Err(err("delete")(e)),
    }
}
