//! ControllerRevisions (apps/v1), the history StatefulSets and DaemonSets keep of their pod
//! templates: one revision per distinct template, named `<owner>-<hash>` and labelled with the
//! hash (`controller-revision-hash`); its data is a strategic merge patch that puts the template
//! back (`{"spec": {"template": {..., "$patch": "replace"}}}`, the shape `kubectl rollout undo`
//! applies). Revision numbers grow with each change; an old template that comes back gets the next
//! number instead of a new object. Name collisions raise the owner's collisionCount. Orphan
//! revisions whose labels match the owner's selector are adopted; owned ones that no longer match
//! are released; the oldest unused ones beyond revisionHistoryLimit are deleted.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::apps::v1::ControllerRevision;
use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::runtime::RawExtension;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::reflector::Store;
use kube::{Api, Resource, ResourceExt};
use serde_json::{json, Value};

use super::podutil::{self, controller_of, selector_matches};
use super::recheck::{Owner, OwnerRecheck};

/// The label on revisions (and DaemonSet pods: the hash; StatefulSet pods: the revision name)
/// that says which revision an object belongs to.
pub const CONTROLLER_REVISION_HASH_LABEL: &str = "controller-revision-hash";
/// The alphabet hash values are written in (no vowels, no look-alikes, as upstream).
const SAFE_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
/// Owner names longer than this are cut before `-<hash>` is appended (as upstream).
const MAX_PREFIX: usize = 223;

/// The data of a revision for `template`: a strategic merge patch replacing spec.template.
pub fn template_patch(template: &PodTemplateSpec) -> Value {
    let mut t = serde_json::to_value(template).unwrap_or_else(|_| json!({}));
    if let Some(m) = t.as_object_mut() {
        m.insert("$patch".into(), json!("replace"));
    }
    json!({"spec": {"template": t}})
}

/// The pod template a revision restores, if its data has the expected shape.
pub fn template_of(rev: &ControllerRevision) -> Option<PodTemplateSpec> {
    let mut t = rev.data.as_ref()?.0.get("spec")?.get("template")?.clone();
    t.as_object_mut()?.remove("$patch");
    serde_json::from_value(t).ok()
}

/// FNV-1a (32 bit) over the data's JSON and the collision count, in the safe alphabet.
pub fn hash_of(data: &Value, collision_count: Option<i32>) -> String {
    let mut h: u32 = 0x811c_9dc5;
    let mut feed = |bytes: &[u8]| {
        for b in bytes {
            h ^= u32::from(*b);
            h = h.wrapping_mul(0x0100_0193);
        }
    };
    feed(&serde_json::to_vec(data).unwrap_or_default());
    if let Some(c) = collision_count {
        feed(&(c as u32).to_le_bytes());
    }
    h.to_string()
        .bytes()
        .map(|b| SAFE_ALPHABET[usize::from(b) % SAFE_ALPHABET.len()] as char)
        .collect()
}

/// `<owner>-<hash>`, the owner's name cut to fit.
pub fn revision_name(owner: &str, hash: &str) -> String {
    let mut prefix = owner.to_string();
    if prefix.len() > MAX_PREFIX {
        let mut cut = MAX_PREFIX;
        while !prefix.is_char_boundary(cut) {
            cut -= 1;
        }
        prefix.truncate(cut);
    }
    format!("{prefix}-{hash}")
}

/// The hash label of a revision.
pub fn hash_label(rev: &ControllerRevision) -> &str {
    rev.labels().get(CONTROLLER_REVISION_HASH_LABEL).map(String::as_str).unwrap_or("")
}

/// A new revision of `owner` with `data`, labelled with the template's labels and the hash.
pub fn new_revision<K: Resource<DynamicType = ()>>(
    owner: &K,
    template_labels: &BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
    data: Value,
    revision: i64,
    collision_count: Option<i32>,
) -> ControllerRevision {
    let hash = hash_of(&data, collision_count);
    let mut labels = template_labels.clone();
    labels.insert(CONTROLLER_REVISION_HASH_LABEL.into(), hash.clone());
    ControllerRevision {
        metadata: ObjectMeta {
            name: Some(revision_name(&owner.name_any(), &hash)),
            namespace: owner.namespace(),
            labels: Some(labels),
            annotations: (!annotations.is_empty()).then_some(annotations),
            owner_references: Some(vec![podutil::controller_ref(owner)]),
            ..Default::default()
        },
        data: Some(RawExtension(data)),
        revision,
    }
}

/// Whether two revision data are the same (compared as JSON, key order aside).
pub fn same_data(rev: &ControllerRevision, data: &Value) -> bool {
    rev.data.as_ref().is_some_and(|d| &d.0 == data)
}

/// Sorts revisions by number, then creation time, then name (oldest first).
pub fn sort(revs: &mut [ControllerRevision]) {
    revs.sort_by(|a, b| {
        let t = |r: &ControllerRevision| r.metadata.creation_timestamp.as_ref().map(|t| t.0);
        (a.revision, t(a), a.name_any()).cmp(&(b.revision, t(b), b.name_any()))
    });
}

/// The next revision number after sorted `revs`.
pub fn next_number(revs: &[ControllerRevision]) -> i64 {
    revs.last().map_or(1, |r| r.revision + 1)
}

/// Revisions of `owner` in the cache: its own that still match `selector`, plus orphans that
/// match (adopted through the API, once `recheck` finds the owner live). Owned ones that stopped
/// matching are released.
pub async fn claim<K: Owner>(
    api: &Api<ControllerRevision>,
    cache: &Store<ControllerRevision>,
    owner: &K,
    recheck: &mut OwnerRecheck<K>,
    selector: &LabelSelector,
) -> Result<Vec<ControllerRevision>, kube::Error> {
    let uid = owner.uid().unwrap_or_default();
    let ns = owner.namespace();
    let deleting = owner.meta().deletion_timestamp.is_some();
    let mut out = vec![];
    let all: Vec<Arc<ControllerRevision>> = cache.state();
    for rev in all {
        if rev.namespace() != ns {
            continue;
        }
        let matches = selector_matches(selector, rev.labels());
        match controller_of(&rev.metadata) {
            Some(r) if r.uid == uid => {
                if matches || deleting {
                    out.push((*rev).clone());
                } else {
                    let patch = json!({"metadata": {
                        "ownerReferences": [{"$patch": "delete", "uid": uid}],
                        "uid": rev.metadata.uid,
                    }});
                    ignore_gone(
                        api.patch(
                            &rev.name_any(),
                            &PatchParams::default(),
                            &Patch::Strategic(patch),
                        )
                        .await,
                    )?;
                }
            }
            None if matches && !deleting && !podutil::selector_is_empty(selector) => {
                if !recheck.may_adopt().await? {
                    continue;
                }
                let patch = json!({"metadata": {
                    "ownerReferences": [podutil::controller_ref(owner)],
                    "uid": rev.metadata.uid,
                }});
                let pp = PatchParams::default();
                if let Some(r) =
                    ignore_gone(api.patch(&rev.name_any(), &pp, &Patch::Strategic(patch)).await)?
                {
                    out.push(r);
                }
            }
            _ => {}
        }
    }
    sort(&mut out);
    Ok(out)
}

/// Creates `rev` for `owner`; when the name is taken by another template (or another owner) the
/// collision count is raised and the name recomputed. Returns the revision (the existing one if
/// an equal revision of this owner already had the name) and whether the count changed.
pub async fn create<K: Resource<DynamicType = ()>>(
    api: &Api<ControllerRevision>,
    owner: &K,
    mut rev: ControllerRevision,
    collision_count: &mut i32,
) -> Result<(ControllerRevision, bool), kube::Error> {
    let data = rev.data.as_ref().map(|d| d.0.clone()).unwrap_or_default();
    let mut raised = false;
    let mut attempts = 0;
    loop {
        attempts += 1;
        let hash = hash_of(&data, Some(*collision_count));
        rev.metadata.name = Some(revision_name(&owner.name_any(), &hash));
        rev.metadata
            .labels
            .get_or_insert_with(Default::default)
            .insert(CONTROLLER_REVISION_HASH_LABEL.into(), hash);
        match api.create(&PostParams::default(), &rev).await {
            Ok(r) => return Ok((r, raised)),
            Err(kube::Error::Api(e)) if e.code == 409 => {
                let existing = api.get_opt(&rev.name_any()).await?;
                if let Some(ex) = existing {
                    let ours = controller_of(&ex.metadata)
                        .is_some_and(|o| Some(&o.uid) == owner.meta().uid.as_ref());
                    if ours && same_data(&ex, &data) {
                        return Ok((ex, raised));
                    }
                }
                if attempts >= 10 {
                    // Give up for now; the next sync goes on from the raised count.
                    return Err(kube::Error::Api(e));
                }
                *collision_count = collision_count.saturating_add(1);
                raised = true;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Gives an existing revision a new number (an old template came back).
pub async fn renumber(
    api: &Api<ControllerRevision>,
    rev: &ControllerRevision,
    number: i64,
) -> Result<ControllerRevision, kube::Error> {
    if rev.revision == number {
        return Ok(rev.clone());
    }
    let patch =
        json!({"metadata": {"resourceVersion": rev.metadata.resource_version}, "revision": number});
    api.patch(&rev.name_any(), &PatchParams::default(), &Patch::Merge(patch)).await
}

/// Deletes the oldest revisions not in `live` (names) until at most `limit` unused ones remain.
pub async fn truncate(
    api: &Api<ControllerRevision>,
    revs: &[ControllerRevision],
    live: &(dyn Fn(&ControllerRevision) -> bool + Sync),
    limit: usize,
) -> Result<(), kube::Error> {
    let unused: Vec<&ControllerRevision> = revs.iter().filter(|r| !live(r)).collect();
    if unused.len() <= limit {
        return Ok(());
    }
    for rev in &unused[..unused.len() - limit] {
        let dp = DeleteParams {
            preconditions: Some(Preconditions {
                uid: rev.metadata.uid.clone(),
                resource_version: None,
            }),
            ..Default::default()
        };
        match api.delete(&rev.name_any(), &dp).await {
            Ok(_) => tracing::debug!(revision = %rev.name_any(), "deleted old controller revision"),
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Pods of `owner` in the cache: its own that still match `selector`, plus active orphans that
/// match and pass `member` (adopted through the API). Owned ones that stopped matching are
/// released. (Not revisions, but the same claiming rules, shared by StatefulSets and DaemonSets.)
pub async fn claim_pods<K: Owner>(
    api: &Api<Pod>,
    cache: &Store<Pod>,
    owner: &K,
    recheck: &mut OwnerRecheck<K>,
    selector: &LabelSelector,
    member: impl Fn(&Pod) -> bool,
) -> Result<Vec<Arc<Pod>>, kube::Error> {
    let uid = owner.uid().unwrap_or_default();
    let ns = owner.namespace();
    let deleting = owner.meta().deletion_timestamp.is_some();
    let mut out = vec![];
    for pod in cache.state() {
        if pod.namespace() != ns {
            continue;
        }
        let matches = selector_matches(selector, pod.labels());
        match controller_of(&pod.metadata) {
            Some(r) if r.uid == uid => {
                if matches || deleting {
                    out.push(pod);
                } else {
                    let patch = json!({"metadata": {
                        "ownerReferences": [{"$patch": "delete", "uid": uid}],
                        "uid": pod.metadata.uid,
                    }});
                    let pp = PatchParams::default();
                    ignore_gone(api.patch(&pod.name_any(), &pp, &Patch::Strategic(patch)).await)?;
                }
            }
            None if matches
                && !deleting
                && podutil::is_active(&pod)
                && !podutil::selector_is_empty(selector)
                && member(&pod) =>
            {
                if !recheck.may_adopt().await? {
                    continue;
                }
                let patch = json!({"metadata": {
                    "ownerReferences": [podutil::controller_ref(owner)],
                    "uid": pod.metadata.uid,
                }});
                let pp = PatchParams::default();
                if let Some(p) =
                    ignore_gone(api.patch(&pod.name_any(), &pp, &Patch::Strategic(patch)).await)?
                {
                    out.push(Arc::new(p));
                }
            }
            _ => {}
        }
    }
    Ok(out)
}

fn ignore_gone<T>(r: Result<T, kube::Error>) -> Result<Option<T>, kube::Error> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 || e.code == 422 => Ok(None),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_round_trips_and_hashes_change_with_collisions() {
        let template: PodTemplateSpec = serde_json::from_value(json!({
            "metadata": {"labels": {"app": "x"}},
            "spec": {"containers": [{"name": "c", "image": "i:1"}]},
        }))
        .unwrap();
        let data = template_patch(&template);
        assert_eq!(data["spec"]["template"]["$patch"], "replace");
        let rev = ControllerRevision {
            metadata: Default::default(),
            data: Some(RawExtension(data.clone())),
            revision: 1,
        };
        assert_eq!(template_of(&rev), Some(template));
        let a = hash_of(&data, None);
        assert!(a.bytes().all(|b| SAFE_ALPHABET.contains(&b)));
        assert_ne!(a, hash_of(&data, Some(1)));
        assert_eq!(revision_name("web", &a), format!("web-{a}"));
    }
}
