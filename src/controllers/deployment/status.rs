//! A Deployment's status as upstream computes it: the counts summed over its ReplicaSets, the
//! Available condition, and, during a rollout, the Progressing condition (progress, completion,
//! the progress deadline); the paused and resumed markers on Progressing; requeues so a stuck
//! rollout is seen to pass its deadline. A paused deployment's deadline is never checked.

use std::time::Duration;

use chrono::Utc;
use k8s_openapi::api::apps::v1::{Deployment, DeploymentCondition, DeploymentStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Patch, PatchParams};
use kube::{Api, ResourceExt};
use serde_json::json;

use super::{available, spec_replicas, DeploymentError, View, MANAGER};
use crate::controllers::podutil;
use crate::controllers::rollout::DEFAULT_PROGRESS_DEADLINE;
use crate::controllers::worker::Action;

const PROGRESSING: &str = "Progressing";
const TIMED_OUT: &str = "ProgressDeadlineExceeded";
const NEW_RS_AVAILABLE: &str = "NewReplicaSetAvailable";
const PAUSED: &str = "DeploymentPaused";

/// spec.progressDeadlineSeconds, None when it is "never" (MaxInt32).
pub(super) fn progress_deadline(d: &Deployment) -> Option<i32> {
    let s = d.spec.as_ref().and_then(|s| s.progress_deadline_seconds);
    Some(s.unwrap_or(DEFAULT_PROGRESS_DEADLINE)).filter(|s| *s != i32::MAX)
}

pub(super) fn progressing(conditions: &[DeploymentCondition]) -> Option<&DeploymentCondition> {
    conditions.iter().find(|c| c.type_ == PROGRESSING)
}

/// Whether `status` shows every replica updated, running and available for the current
/// generation.
pub(super) fn complete(d: &Deployment, status: Option<&DeploymentStatus>) -> bool {
    let Some(s) = status else { return false };
    let replicas = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    s.updated_replicas.unwrap_or(0) == replicas
        && s.replicas.unwrap_or(0) == replicas
        && s.available_replicas.unwrap_or(0) == replicas
        && s.observed_generation >= d.metadata.generation
}

fn now() -> Time {
    Time(k8s_openapi::jiff::Timestamp::now())
}

/// Sets a condition as upstream does: nothing changes when its status and reason are the same;
/// otherwise it is replaced (moved last), keeping lastTransitionTime if the status is unchanged.
pub(super) fn set_condition(
    conditions: &mut Vec<DeploymentCondition>,
    kind: &str,
    value: &str,
    reason: &str,
    message: &str,
) {
    let now = now();
    let mut transition = now.clone();
    if let Some(c) = conditions.iter().find(|c| c.type_ == kind) {
        if c.status == value && c.reason.as_deref() == Some(reason) {
            return;
        }
        if c.status == value {
            transition = c.last_transition_time.clone().unwrap_or(transition);
        }
    }
    conditions.retain(|c| c.type_ != kind);
    conditions.push(DeploymentCondition {
        type_: kind.into(),
        status: value.into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        last_transition_time: Some(transition),
        last_update_time: Some(now),
    });
}

/// Marks Progressing Unknown with DeploymentPaused when the deployment is paused, and with
/// DeploymentResumed when it no longer is (so the time paused never counts against the
/// deadline); a reported timeout is left alone. Written at once, as upstream.
pub(super) async fn check_paused_conditions(view: &mut View<'_>) -> Result<(), DeploymentError> {
    if progress_deadline(&view.d).is_none() {
        return Ok(());
    }
    let reason = progressing(&view.conditions).and_then(|c| c.reason.clone());
    if reason.as_deref() == Some(TIMED_OUT) {
        return Ok(());
    }
    let paused_marked = reason.as_deref() == Some(PAUSED);
    let (reason, message) = match (view.paused(), paused_marked) {
        (true, false) => (PAUSED, "Deployment is paused"),
        (false, true) => ("DeploymentResumed", "Deployment is resumed"),
        _ => return Ok(()),
    };
    set_condition(&mut view.conditions, PROGRESSING, "Unknown", reason, message);
    let patch = json!({"status": {"conditions": view.conditions}});
    write(view, &patch).await.map(|_| ())
}

/// Writes a status patch; false if the deployment is gone.
async fn write(view: &View<'_>, patch: &serde_json::Value) -> Result<bool, DeploymentError> {
    let d = &view.d;
    let api: Api<Deployment> =
        Api::namespaced(view.ctx.client.clone(), &d.namespace().unwrap_or_default());
    let pp = PatchParams { field_manager: Some(MANAGER.into()), ..Default::default() };
    match api.patch_status(&d.name_any(), &pp, &Patch::Merge(patch)).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(false),
        Err(e) => Err(view.err("update status")(e)),
    }
}

/// Computes status and conditions and writes them if they changed. With `rollout` (not paused,
/// not a pure scaling) the Progressing condition follows the rollout and its deadline.
pub(super) async fn sync_status(view: &View<'_>, rollout: bool) -> Result<Action, DeploymentError> {
    let d = &view.d;
    let old = d.status.clone().unwrap_or_default();
    let replicas = view.replicas();
    let sum =
        |f: &dyn Fn(&k8s_openapi::api::apps::v1::ReplicaSet) -> i32| view.all().map(f).sum::<i32>();
    let actual = sum(&|rs| rs.status.as_ref().map(|s| s.replicas).unwrap_or(0));
    let ready = sum(&|rs| rs.status.as_ref().and_then(|s| s.ready_replicas).unwrap_or(0));
    let avail = sum(&available);
    let total_spec = sum(&spec_replicas);
    let updated = view.new_rs().and_then(|rs| rs.status.as_ref()).map(|s| s.replicas).unwrap_or(0);
    let nz = |n: i32| (n > 0).then_some(n);
    let mut status = DeploymentStatus {
        observed_generation: d.metadata.generation,
        replicas: nz(actual),
        updated_replicas: nz(updated),
        ready_replicas: nz(ready),
        available_replicas: nz(avail),
        unavailable_replicas: nz((total_spec - avail).max(0)),
        collision_count: old.collision_count,
        ..Default::default()
    };
    let mut conditions = view.conditions.clone();
    if avail >= replicas - view.max_unavailable() {
        let msg = "Deployment has minimum availability.";
        set_condition(&mut conditions, "Available", "True", "MinimumReplicasAvailable", msg);
    } else {
        let msg = "Deployment does not have minimum availability.";
        set_condition(&mut conditions, "Available", "False", "MinimumReplicasUnavailable", msg);
    }
    let mut requeue = None;
    let mut touched = false;
    if rollout {
        match progress_deadline(d) {
            None => conditions.retain(|c| c.type_ != PROGRESSING),
            Some(deadline) => {
                touched = progress(view, &old, &mut status, &mut conditions, deadline);
                status.conditions = Some(conditions.clone());
                requeue = stuck_requeue(d, &status, &conditions, deadline);
            }
        }
    }
    status.conditions = Some(conditions);
    if touched || status_differs(&old, &status) {
        let patch = json!({"status": {
            "observedGeneration": status.observed_generation,
            "replicas": status.replicas,
            "updatedReplicas": status.updated_replicas,
            "readyReplicas": status.ready_replicas,
            "availableReplicas": status.available_replicas,
            "unavailableReplicas": status.unavailable_replicas,
            "collisionCount": status.collision_count,
            "conditions": status.conditions,
        }});
        if !write(view, &patch).await? {
            return Ok(Action::Done);
        }
    }
    Ok(requeue.map_or(Action::Done, Action::RequeueAfter))
}

/// Moves Progressing along (complete, progressing, timed out) unless the latest rollout already
/// completed. Returns whether lastUpdateTime was refreshed for progress.
fn progress(
    view: &View<'_>,
    old: &DeploymentStatus,
    status: &mut DeploymentStatus,
    conditions: &mut Vec<DeploymentCondition>,
    deadline: i32,
) -> bool {
    let d = &view.d;
    let current = progressing(conditions).cloned();
    let done = status.replicas == status.updated_replicas
        && current.as_ref().and_then(|c| c.reason.as_deref()) == Some(NEW_RS_AVAILABLE);
    if done {
        return false;
    }
    let subject = match view.new_rs() {
        Some(rs) => format!("ReplicaSet \"{}\"", rs.name_any()),
        None => format!("Deployment \"{}\"", d.name_any()),
    };
    status.conditions = Some(conditions.clone());
    let count = |v: Option<i32>| v.unwrap_or(0);
    let old_old = count(old.replicas) - count(old.updated_replicas);
    let new_old = count(status.replicas) - count(status.updated_replicas);
    if complete(d, Some(status)) {
        let msg = format!("{subject} has successfully progressed.");
        set_condition(conditions, PROGRESSING, "True", NEW_RS_AVAILABLE, &msg);
        false
    } else if count(status.updated_replicas) > count(old.updated_replicas)
        || new_old < old_old
        || count(status.ready_replicas) > count(old.ready_replicas)
        || count(status.available_replicas) > count(old.available_replicas)
    {
        // Progress refreshes lastUpdateTime even when the reason stays the same.
        let now = now();
        let transition = current
            .filter(|c| c.status == "True")
            .and_then(|c| c.last_transition_time)
            .unwrap_or_else(|| now.clone());
        conditions.retain(|c| c.type_ != PROGRESSING);
        conditions.push(DeploymentCondition {
            type_: PROGRESSING.into(),
            status: "True".into(),
            reason: Some("ReplicaSetUpdated".into()),
            message: Some(format!("{subject} is progressing.")),
            last_transition_time: Some(transition),
            last_update_time: Some(now),
        });
        true
    } else {
        if timed_out(conditions, deadline) {
            let msg = format!("{subject} has timed out progressing.");
            set_condition(conditions, PROGRESSING, "False", TIMED_OUT, &msg);
        }
        false
    }
}

/// Whether the Progressing condition has seen no update for the deadline.
fn timed_out(conditions: &[DeploymentCondition], deadline: i32) -> bool {
    let Some(c) = progressing(conditions) else { return false };
    match c.reason.as_deref() {
        Some(NEW_RS_AVAILABLE) => false,
        Some(TIMED_OUT) => true,
        _ => {
            let since = c.last_update_time.as_ref().map(podutil::time_of).unwrap_or_else(Utc::now);
            since + chrono::Duration::seconds(deadline.into()) < Utc::now()
        }
    }
}

/// When to look again so an unfinished rollout is seen to pass its deadline.
fn stuck_requeue(
    d: &Deployment,
    status: &DeploymentStatus,
    conditions: &[DeploymentCondition],
    deadline: i32,
) -> Option<Duration> {
    let c = progressing(conditions)?;
    if complete(d, Some(status)) || c.reason.as_deref() == Some(TIMED_OUT) {
        return None;
    }
    let since = c.last_update_time.as_ref().map(podutil::time_of).unwrap_or_else(Utc::now);
    let due = since + chrono::Duration::seconds(deadline.into());
    let after = (due - Utc::now()).to_std().unwrap_or_default();
    Some(after.max(Duration::from_secs(1)))
}

/// Compares statuses ignoring condition timestamps.
fn status_differs(a: &DeploymentStatus, b: &DeploymentStatus) -> bool {
    let conds = |s: &DeploymentStatus| {
        s.conditions
            .iter()
            .flatten()
            .map(|c| (c.type_.clone(), c.status.clone(), c.reason.clone(), c.message.clone()))
            .collect::<Vec<_>>()
    };
    (
        a.observed_generation,
        a.replicas,
        a.updated_replicas,
        a.ready_replicas,
        a.available_replicas,
        a.unavailable_replicas,
        a.collision_count,
    ) != (
        b.observed_generation,
        b.replicas,
        b.updated_replicas,
        b.ready_replicas,
        b.available_replicas,
        b.unavailable_replicas,
        b.collision_count,
    ) || conds(a) != conds(b)
}
