//! Which pods a Job controls, as upstream's ControllerRefManager decides it for jobs: its own
//! pods that still match the selector; orphans that match are adopted (the job becomes their
//! controller and they get the tracking finalizer, so their end is counted); its pods that stopped
//! matching are released (owner reference and tracking finalizer removed). Adoption first checks,
//! with a live read, that the job is still there and not being deleted ([`OwnerRecheck`]).

use std::sync::Arc;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Patch, PatchParams};
use kube::runtime::reflector::Store;
use kube::{Api, ResourceExt};
use serde_json::json;

use super::TRACKING_FINALIZER;
use crate::controllers::ownerindex::{lookup, PodIndex};
use crate::controllers::podutil::{self, controller_of, selector_matches};
use crate::controllers::recheck::OwnerRecheck;

/// The job's pods after adopting matching orphans and releasing pods that no longer match.
pub async fn claim_pods(
    pods_api: &Api<Pod>,
    jobs_api: &Api<Job>,
    cache: &Store<Pod>,
    index: &PodIndex,
    job: &Job,
) -> Result<Vec<Arc<Pod>>, kube::Error> {
    let uid = job.uid().unwrap_or_default();
    let ns = job.namespace();
    let deleting = job.metadata.deletion_timestamp.is_some();
    // A job without a (non-empty) selector adopts and releases nothing.
    let selector = job
        .spec
        .as_ref()
        .and_then(|s| s.selector.as_ref())
        .filter(|s| !podutil::selector_is_empty(s));
    let mut recheck = OwnerRecheck::new(jobs_api.clone().into_client(), job);
    let mut out = vec![];
    // Its own pods and the orphans of its namespace: pods of other controllers are never
    // claimed, so they need not be read.
    let claimable = index.claimable(ns.as_deref().unwrap_or_default(), &uid);
    for pod in lookup(cache, &claimable) {
        if pod.namespace() != ns {
            continue;
        }
        let matches = selector.is_some_and(|s| selector_matches(s, pod.labels()));
        let pod_deleting = pod.metadata.deletion_timestamp.is_some();
        match controller_of(&pod.metadata) {
            Some(r) if r.uid == uid => {
                if matches || selector.is_none() {
                    out.push(pod);
                } else if !deleting && !pod_deleting {
                    release(pods_api, &pod, &uid).await?;
                }
            }
            None if matches && !deleting && !pod_deleting => {
                if !recheck.may_adopt().await? {
                    continue;
                }
                if let Some(p) = adopt(pods_api, &pod, job).await? {
                    tracing::debug!(job = %job.name_any(), pod = %p.name_any(), "adopted pod");
                    out.push(Arc::new(p));
                }
            }
            _ => {}
        }
    }
    Ok(out)
}

async fn adopt(api: &Api<Pod>, pod: &Pod, job: &Job) -> Result<Option<Pod>, kube::Error> {
    let patch = json!({"metadata": {
        "ownerReferences": [podutil::controller_ref(job)],
        "finalizers": [TRACKING_FINALIZER],
        "uid": pod.metadata.uid,
    }});
    ignore_gone(api.patch(&pod.name_any(), &PatchParams::default(), &Patch::Strategic(patch)).await)
}

async fn release(api: &Api<Pod>, pod: &Pod, uid: &str) -> Result<(), kube::Error> {
    tracing::debug!(pod = %pod.name_any(), "releasing pod that no longer matches its job");
    let patch = json!({"metadata": {
        "ownerReferences": [{"$patch": "delete", "uid": uid}],
        "$deleteFromPrimitiveList/finalizers": [TRACKING_FINALIZER],
        "uid": pod.metadata.uid,
    }});
    ignore_gone(api.patch(&pod.name_any(), &PatchParams::default(), &Patch::Strategic(patch)).await)
        .map(|_| ())
}

/// A pod that is gone, or was replaced or changed under us, is skipped.
fn ignore_gone<T>(r: Result<T, kube::Error>) -> Result<Option<T>, kube::Error> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 || e.code == 422 => Ok(None),
        Err(e) => Err(e),
    }
}
