//! The pods a Job makes and removes: a pod from the template (tracking finalizer, controller
//! reference, completion index), their creation and deletion through [`PodControl`], and
//! removal of the tracking finalizer once a pod is counted.

use std::collections::HashMap;
use std::sync::Arc;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{EnvVar, EnvVarSource, ObjectFieldSelector, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Patch, PatchParams};
use kube::{Api, ResourceExt};
use serde_json::json;

use super::{Ctx, BURST, COMPLETION_INDEX, INDEX_FAILURE_COUNT, MANAGER, TRACKING_FINALIZER};
use crate::controllers::podcontrol::PodControl;
use crate::controllers::podutil;

/// A pod for `job` (with `index` for Indexed jobs): the template, the tracking finalizer, the
/// job as controlling owner and, for an index, its annotation, label, hostname and env var.
pub fn pod_from_template(job: &Job, index: Option<i32>) -> Pod {
    let template = job.spec.as_ref().map(|s| s.template.clone()).unwrap_or_default();
    let tmeta = template.metadata.unwrap_or_default();
    let mut spec = template.spec;
    let mut labels = tmeta.labels.unwrap_or_default();
    let mut annotations = tmeta.annotations.unwrap_or_default();
    let mut finalizers = tmeta.finalizers.unwrap_or_default();
    if !finalizers.iter().any(|f| f == TRACKING_FINALIZER) {
        finalizers.push(TRACKING_FINALIZER.into());
    }
    let mut prefix = format!("{}-", job.name_any());
    if let Some(i) = index {
        prefix = format!("{}-{i}-", job.name_any());
        annotations.insert(COMPLETION_INDEX.into(), i.to_string());
        labels.insert(COMPLETION_INDEX.into(), i.to_string());
        if let Some(s) = spec.as_mut() {
            if s.hostname.as_deref().is_none_or(str::is_empty) {
                s.hostname = Some(format!("{}-{i}", job.name_any()));
            }
            let env = EnvVar {
                name: "JOB_COMPLETION_INDEX".into(),
                value: None,
                value_from: Some(EnvVarSource {
                    field_ref: Some(ObjectFieldSelector {
                        api_version: None,
                        field_path: format!("metadata.labels['{COMPLETION_INDEX}']"),
                    }),
                    ..Default::default()
                }),
            };
            for c in s.containers.iter_mut().chain(s.init_containers.iter_mut().flatten()) {
                let list = c.env.get_or_insert_with(Vec::new);
                if !list.iter().any(|e| e.name == env.name) {
                    list.push(env.clone());
                }
            }
        }
    }
    if prefix.len() > 58 {
        prefix.truncate(57);
        prefix.push('-');
    }
    Pod {
        metadata: ObjectMeta {
            generate_name: Some(prefix),
            namespace: job.namespace(),
            labels: Some(labels),
            annotations: (!annotations.is_empty()).then_some(annotations),
            finalizers: Some(finalizers),
            owner_references: Some(vec![podutil::controller_ref(job)]),
            ..Default::default()
        },
        spec,
        status: None,
    }
}

fn control<'a>(ctx: &'a Ctx, key: &'a str, api: &'a Api<Pod>, job: &'a Job) -> PodControl<'a, Job> {
    PodControl {
        client: &ctx.client,
        component: MANAGER,
        owner: job,
        api,
        expectations: &ctx.expectations,
        key,
    }
}

/// Creates a pod per entry of `indexes` (see [`PodControl::create`]); a pod of an index that
/// failed before carries its failure count.
pub(super) async fn create_pods(
    ctx: &Ctx,
    key: &str,
    api: &Api<Pod>,
    job: &Job,
    indexes: &[Option<i32>],
    failures: &HashMap<i32, i32>,
) -> Result<usize, kube::Error> {
    let pods = indexes
        .iter()
        .map(|i| {
            let mut pod = pod_from_template(job, *i);
            if let Some(n) = i.and_then(|i| failures.get(&i)).filter(|n| **n > 0) {
                let a = pod.metadata.annotations.get_or_insert_with(Default::default);
                a.insert(INDEX_FAILURE_COUNT.into(), n.to_string());
            }
            pod
        })
        .collect();
    control(ctx, key, api, job).create(pods).await
}

/// Deletes up to [`BURST`] of `victims`.
pub(super) async fn delete_pods(
    ctx: &Ctx,
    key: &str,
    api: &Api<Pod>,
    job: &Job,
    victims: &[Arc<Pod>],
) -> Result<(), kube::Error> {
    control(ctx, key, api, job).delete(victims.iter().take(BURST).map(|p| p.as_ref())).await
}

/// Removes the tracking finalizer from `pod`: true when it is gone (or the pod is), false when
/// the pod changed meanwhile (try again with a fresher copy).
pub(super) async fn remove_finalizer(api: &Api<Pod>, pod: &Pod) -> Result<bool, kube::Error> {
    let Some(list) = pod.metadata.finalizers.as_ref() else { return Ok(true) };
    let Some(i) = list.iter().position(|f| f == TRACKING_FINALIZER) else { return Ok(true) };
    let path = format!("/metadata/finalizers/{i}");
    let patch: json_patch::Patch = serde_json::from_value(json!([
        {"op": "test", "path": "/metadata/uid", "value": pod.metadata.uid},
        {"op": "test", "path": path, "value": TRACKING_FINALIZER},
        {"op": "remove", "path": path},
    ]))
    .expect("a valid JSON patch");
    let pp = PatchParams { field_manager: Some(MANAGER.into()), ..Default::default() };
    match api.patch(&pod.name_any(), &pp, &Patch::<()>::Json(patch)).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(true),
        // The finalizer list changed meanwhile: a later sync sees the new one.
        Err(kube::Error::Api(e)) if e.code == 422 || e.code == 409 => Ok(false),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn indexed_pods_carry_their_index() {
        let job: Job = serde_json::from_value(json!({
            "metadata": {"name": "idx", "namespace": "ns", "uid": "u"},
            "spec": {"completionMode": "Indexed", "completions": 3, "template": {
                "metadata": {"labels": {"a": "b"}},
                "spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "i"}]}}},
        }))
        .unwrap();
        let pod = pod_from_template(&job, Some(2));
        assert_eq!(pod.metadata.generate_name.as_deref(), Some("idx-2-"));
        assert_eq!(pod.metadata.annotations.as_ref().unwrap()[COMPLETION_INDEX], "2");
        assert_eq!(pod.metadata.labels.as_ref().unwrap()[COMPLETION_INDEX], "2");
        assert_eq!(pod.metadata.finalizers.as_deref(), Some(&[TRACKING_FINALIZER.to_string()][..]));
        let spec = pod.spec.unwrap();
        assert_eq!(spec.hostname.as_deref(), Some("idx-2"));
        assert_eq!(spec.containers[0].env.as_ref().unwrap()[0].name, "JOB_COMPLETION_INDEX");
        let owner = &pod.metadata.owner_references.unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.controller, owner.block_owner_deletion),
            ("Job", Some(true), Some(true))
        );
    }
}
