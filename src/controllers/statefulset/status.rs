//! A StatefulSet's status: counting its pods by readiness, availability and revision, and
//! patching status when the counts change.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Patch, PatchParams};
use kube::{Api, ResourceExt};
use serde_json::json;

use super::{phase, revision_of, running_and_ready, terminating, StatefulSetError, View, MANAGER};
use crate::controllers::podutil;

/// Counts pods into status and writes it if it changed; returns when availability may change.
pub(super) async fn write_status(
    view: &View<'_>,
    pods: &[Arc<Pod>],
    collision: i32,
) -> Result<Option<Duration>, StatefulSetError> {
    let set = &view.set;
    let spec = view.spec();
    let now = Utc::now();
    let (mut replicas, mut ready, mut available, mut current, mut updated) = (0, 0, 0, 0, 0);
    let mut requeue = None;
    for p in pods {
        if phase(p).is_empty() {
            continue;
        }
        replicas += 1;
        if running_and_ready(p) {
            ready += 1;
            if podutil::is_available(p, view.min_ready, now) {
                available += 1;
            } else {
                requeue = Some(Duration::from_secs(view.min_ready.max(1) as u64));
            }
        }
        if !terminating(p) {
            if revision_of(p) == view.current_name {
                current += 1;
            }
            if revision_of(p) == view.update_name {
                updated += 1;
            }
        }
    }
    let mut current_name = view.current_name.clone();
    let rolling =
        spec.update_strategy.as_ref().and_then(|s| s.type_.as_deref()) != Some("OnDelete");
    // A finished rolling update makes the update revision current. (Every wanted pod must
    // exist: a pod deleted for the update and not yet recreated is missing, not finished.)
    let wanted = spec.replicas.unwrap_or(1).max(0);
    if rolling && updated == replicas && ready == replicas && replicas >= wanted {
        current = updated;
        current_name = view.update_name.clone();
    }
    let old = set.status.clone().unwrap_or_default();
    let nz = |n: i32| (n > 0).then_some(n);
    let changed = old.replicas != replicas
        || old.ready_replicas.unwrap_or(0) != ready
        || old.available_replicas.unwrap_or(0) != available
        || old.current_replicas.unwrap_or(0) != current
        || old.updated_replicas.unwrap_or(0) != updated
        || old.current_revision.as_deref() != Some(current_name.as_str())
        || old.update_revision.as_deref() != Some(view.update_name.as_str())
        || old.observed_generation != set.metadata.generation
        || old.collision_count.unwrap_or(0) != collision;
    if changed {
        let api: Api<StatefulSet> =
            Api::namespaced(view.ctx.client.clone(), &set.namespace().unwrap_or_default());
        let patch = json!({"status": {
            "observedGeneration": set.metadata.generation,
            "replicas": replicas,
            "readyReplicas": nz(ready),
            "availableReplicas": available,
            "currentReplicas": nz(current),
            "updatedReplicas": nz(updated),
            "currentRevision": current_name,
            "updateRevision": view.update_name,
            "collisionCount": collision,
        }});
        let pp = PatchParams { field_manager: Some(MANAGER.into()), ..Default::default() };
        match api.patch_status(&set.name_any(), &pp, &Patch::Merge(&patch)).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(view.err("update status")(e)),
        }
    }
    Ok(requeue)
}
