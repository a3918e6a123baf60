//! A Job's status: its conditions (set keeping the transition time when nothing changes),
//! whether it has finished, and the compare-and-swap write of the status subresource.

use chrono::{DateTime, Utc};
use k8s_openapi::api::batch::v1::{Job, JobCondition, JobStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::PostParams;
use kube::{Api, ResourceExt};

use super::MANAGER;

pub(super) fn to_time(t: DateTime<Utc>) -> Time {
    Time(k8s_openapi::jiff::Timestamp::from_second(t.timestamp()).unwrap_or_default())
}

pub(super) fn condition_true<'a>(status: &'a JobStatus, kind: &str) -> Option<&'a JobCondition> {
    status.conditions.as_ref()?.iter().find(|c| c.type_ == kind && c.status == "True")
}

/// Whether the job has finished (Complete or Failed is True).
pub fn is_finished(job: &Job) -> bool {
    job.status.as_ref().is_some_and(|s| {
        condition_true(s, "Complete").is_some() || condition_true(s, "Failed").is_some()
    })
}

/// Sets a condition, keeping its transition time when its status does not change.
pub(super) fn set_condition(
    status: &mut JobStatus,
    kind: &str,
    value: bool,
    reason: &str,
    message: &str,
) {
    let now = to_time(Utc::now());
    let v = if value { "True" } else { "False" };
    let conds = status.conditions.get_or_insert_with(Vec::new);
    if let Some(c) = conds.iter_mut().find(|c| c.type_ == kind) {
        if c.status != v {
            c.last_transition_time = Some(now.clone());
        }
        c.status = v.into();
        c.reason = Some(reason.into());
        c.message = Some(message.into());
        c.last_probe_time = Some(now);
        return;
    }
    conds.push(JobCondition {
        type_: kind.into(),
        status: v.into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        last_probe_time: Some(now.clone()),
        last_transition_time: Some(now),
    });
}

/// Replaces the job's status (compare-and-swap on its resourceVersion); None if it is gone.
pub(super) async fn write_status(api: &Api<Job>, job: &Job) -> Result<Option<Job>, kube::Error> {
    let pp = PostParams { field_manager: Some(MANAGER.into()), ..Default::default() };
    match api.replace_status(&job.name_any(), &pp, job).await {
        Ok(j) => Ok(Some(j)),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(None),
        Err(e) => Err(e),
    }
}
