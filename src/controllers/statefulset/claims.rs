//! A StatefulSet's PersistentVolumeClaims: creating each ordinal's claims from the
//! volumeClaimTemplates and keeping their owner references as the retention policy says.

use k8s_openapi::api::apps::v1::StatefulSetSpec;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::reflector::ObjectRef;
use kube::ResourceExt;
use serde_json::json;

use super::{claim_name, record, StatefulSetError, View, MANAGER};
use crate::controllers::podutil;
use crate::controllers::podutil::api_message;

/// whenDeleted and whenScaled of the retention policy (Retain when unset).
pub(super) fn retention(spec: &StatefulSetSpec) -> (bool, bool) {
    let p = spec.persistent_volume_claim_retention_policy.as_ref();
    let delete = |v: Option<&String>| v.map(String::as_str) == Some("Delete");
    (
        delete(p.and_then(|p| p.when_deleted.as_ref())),
        delete(p.and_then(|p| p.when_scaled.as_ref())),
    )
}

/// An owner reference to a pod marking it as controller.
pub(super) fn pod_ref(pod: &Pod) -> OwnerReference {
    OwnerReference {
        api_version: "v1".into(),
        kind: "Pod".into(),
        name: pod.name_any(),
        uid: pod.uid().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// Creates the claims of `ordinal` that do not exist; with `pod` (and whether its ordinal is in
/// range), makes their owner references follow the retention policy: whenDeleted=Delete makes
/// the set their controller, whenScaled=Delete makes a scaled-down pod their controller.
pub(super) async fn ensure_claims(
    view: &View<'_>,
    ordinal: i32,
    pod: Option<(&Pod, bool)>,
) -> Result<(), StatefulSetError> {
    let spec = view.spec();
    let templates = spec.volume_claim_templates.as_deref().unwrap_or(&[]);
    if templates.is_empty() {
        return Ok(());
    }
    let set = view.set.as_ref();
    let ns = set.namespace().unwrap_or_default();
    let (when_deleted, when_scaled) = retention(spec);
    let set_uid = set.uid().unwrap_or_default();
    for t in templates {
        let name = claim_name(t.metadata.name.as_deref().unwrap_or(""), &set.name_any(), ordinal);
        let Some(existing) = view.ctx.claims.get(&ObjectRef::new(&name).within(&ns)) else {
            let mut labels = t.metadata.labels.clone().unwrap_or_default();
            for (k, v) in spec.selector.match_labels.iter().flatten() {
                labels.insert(k.clone(), v.clone());
            }
            let claim = PersistentVolumeClaim {
                metadata: ObjectMeta {
                    name: Some(name.clone()),
                    namespace: Some(ns.clone()),
                    labels: Some(labels),
                    annotations: t.metadata.annotations.clone(),
                    owner_references: when_deleted.then(|| vec![podutil::controller_ref(set)]),
                    ..Default::default()
                },
                spec: t.spec.clone(),
                status: None,
            };
            match view.claims_api.create(&PostParams::default(), &claim).await {
                Ok(_) => {
                    tracing::debug!(statefulset = %view.key, claim = %name, "created claim");
                    let message = format!(
                        "create Claim {name} Pod {}-{ordinal} in StatefulSet {} success",
                        set.name_any(),
                        set.name_any()
                    );
                    record(&view.ctx.client, MANAGER, set, false, "SuccessfulCreate", message);
                }
                Err(kube::Error::Api(e)) if e.code == 409 => {}
                Err(e) => {
                    // The claim's failure, and for a pod about to be made, the pod's.
                    let (set_name, why) = (set.name_any(), api_message(&e));
                    let pod_in_set = format!("Pod {set_name}-{ordinal} in StatefulSet {set_name}");
                    let message =
                        format!("create Claim {name} for {pod_in_set} failed error: {why}");
                    record(&view.ctx.client, MANAGER, set, true, "FailedCreate", message);
                    if pod.is_none() {
                        let why = format!("failed to create PVC {name}: {why}");
                        let message = format!("create {pod_in_set} failed error: {why}");
                        record(&view.ctx.client, MANAGER, set, true, "FailedCreate", message);
                    }
                    return Err(view.err("create a persistent volume claim")(e));
                }
            }
            continue;
        };
        let Some((pod, in_range)) = pod else { continue };
        if existing.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let refs = existing.metadata.owner_references.clone().unwrap_or_default();
        let ours = |r: &OwnerReference| {
            r.uid == set_uid
                || r.uid == pod.uid().unwrap_or_default()
                || (r.kind == "StatefulSet" && r.name == set.name_any())
                || (r.kind == "Pod" && r.name == pod.name_any())
        };
        let mut want: Vec<OwnerReference> = refs.iter().filter(|r| !ours(r)).cloned().collect();
        let foreign_controller = want.iter().any(|r| r.controller == Some(true));
        if !foreign_controller {
            if !in_range && when_scaled {
                want.push(pod_ref(pod));
            } else if when_deleted {
                want.push(podutil::controller_ref(set));
            }
        }
        if want != refs {
            let patch = json!({"metadata": {
                "ownerReferences": want,
                "resourceVersion": existing.metadata.resource_version,
            }});
            let pp = PatchParams { field_manager: Some(MANAGER.into()), ..Default::default() };
            match view.claims_api.patch(&name, &pp, &Patch::Merge(patch)).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => return Err(view.err("update a claim's owners")(e)),
            }
        }
    }
    Ok(())
}
