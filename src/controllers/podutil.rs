//! Small facts about pods and owner references that several controllers share: whether a pod is
//! active, ready or available, which object controls it, and label selector matching.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use kube::{Resource, ResourceExt};

/// Whether a pod counts toward its controller's replicas: not finished, not being deleted.
pub fn is_active(pod: &Pod) -> bool {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("");
    phase != "Succeeded" && phase != "Failed" && pod.metadata.deletion_timestamp.is_none()
}

/// The time the pod's Ready condition became True, if it is True.
pub fn ready_since(pod: &Pod) -> Option<Option<DateTime<Utc>>> {
    let conds = pod.status.as_ref()?.conditions.as_ref()?;
    let ready = conds.iter().find(|c| c.type_ == "Ready")?;
    (ready.status == "True").then(|| ready.last_transition_time.as_ref().map(time_of))
}

/// A metav1 Time as a chrono time.
pub fn time_of(t: &k8s_openapi::apimachinery::pkg::apis::meta::v1::Time) -> DateTime<Utc> {
    DateTime::from_timestamp(t.0.as_second(), t.0.subsec_nanosecond().max(0) as u32)
        .unwrap_or_default()
}

/// Whether the pod's Ready condition is True.
pub fn is_ready(pod: &Pod) -> bool {
    ready_since(pod).is_some()
}

/// Whether the pod has been ready for at least `min_ready_seconds` at `now`.
pub fn is_available(pod: &Pod, min_ready_seconds: i32, now: DateTime<Utc>) -> bool {
    match ready_since(pod) {
        None => false,
        Some(_) if min_ready_seconds <= 0 => true,
        Some(None) => false,
        Some(Some(since)) => since + chrono::Duration::seconds(min_ready_seconds.into()) <= now,
    }
}

/// The owner reference with controller=true, if any.
pub fn controller_of(meta: &ObjectMeta) -> Option<&OwnerReference> {
    meta.owner_references.as_ref()?.iter().find(|r| r.controller == Some(true))
}

/// An owner reference to `owner` marking it as the controller that blocks owner deletion.
pub fn controller_ref<K: Resource<DynamicType = ()>>(owner: &K) -> OwnerReference {
    OwnerReference {
        api_version: K::api_version(&()).into_owned(),
        kind: K::kind(&()).into_owned(),
        name: owner.name_any(),
        uid: owner.uid().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// Whether `labels` satisfy a metav1 LabelSelector (an empty selector matches everything; a
/// malformed operator matches nothing).
pub fn selector_matches(sel: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    if let Some(ml) = &sel.match_labels {
        if ml.iter().any(|(k, v)| labels.get(k) != Some(v)) {
            return false;
        }
    }
    for req in sel.match_expressions.iter().flatten() {
        let values = req.values.as_deref().unwrap_or(&[]);
        let have = labels.get(&req.key);
        let ok = match req.operator.as_str() {
            "In" => have.is_some_and(|v| values.contains(v)),
            "NotIn" => have.is_none_or(|v| !values.contains(v)),
            "Exists" => have.is_some(),
            "DoesNotExist" => have.is_none(),
            _ => false,
        };
        if !ok {
            return false;
        }
    }
    true
}

/// Whether a selector has no requirements at all.
pub fn selector_is_empty(sel: &LabelSelector) -> bool {
    sel.match_labels.as_ref().is_none_or(|m| m.is_empty())
        && sel.match_expressions.as_ref().is_none_or(|e| e.is_empty())
}

/// `namespace/name` of an object (just `name` when cluster-scoped).
pub fn key_of<K: Resource>(obj: &K) -> String {
    let meta = obj.meta();
    let name = meta.name.as_deref().unwrap_or("");
    match meta.namespace.as_deref() {
        Some(ns) if !ns.is_empty() => format!("{ns}/{name}"),
        _ => name.to_string(),
    }
}

/// Splits a key made by [`key_of`] into (namespace, name).
pub fn split_key(key: &str) -> (Option<&str>, &str) {
    match key.split_once('/') {
        Some((ns, name)) => (Some(ns), name),
        None => (None, key),
    }
}

/// The controllers of kind `K` an event about a dependent (pod or revision) concerns: its
/// controller if that is a `K`, else, for an orphan not being deleted, every `K` in its
/// namespace whose (non-empty) selector matches its labels. Keys are "namespace/name".
pub fn owners_of<K>(
    owners: &kube::runtime::reflector::Store<K>,
    selector: fn(&K) -> Option<&LabelSelector>,
    meta: &ObjectMeta,
    deleting: bool,
) -> Vec<String>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    owners_by(owners, |k| selector(k).map(std::borrow::Cow::Borrowed), meta, deleting)
}

/// Like [`owners_of`], for kinds whose selector must be built (a ReplicationController's map).
pub fn owners_by<K>(
    owners: &kube::runtime::reflector::Store<K>,
    selector: impl Fn(&K) -> Option<std::borrow::Cow<'_, LabelSelector>>,
    meta: &ObjectMeta,
    deleting: bool,
) -> Vec<String>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    let ns = meta.namespace.clone().unwrap_or_default();
    if let Some(owner) = controller_of(meta) {
        return if owner.kind == K::kind(&()) {
            vec![format!("{ns}/{}", owner.name)]
        } else {
            vec![]
        };
    }
    if deleting {
        return vec![];
    }
    let empty = BTreeMap::new();
    let labels = meta.labels.as_ref().unwrap_or(&empty);
    owners
        .state()
        .iter()
        .filter(|o| o.meta().namespace.as_deref() == Some(ns.as_str()))
        .filter(|o| {
            selector(o)
                .is_some_and(|sel| !selector_is_empty(&sel) && selector_matches(&sel, labels))
        })
        .map(|o| key_of(o.as_ref()))
        .collect()
}

/// What an API error says (its Status message), as upstream's event messages quote it.
pub fn api_message(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(ae) => ae.message.clone(),
        other => other.to_string(),
    }
}

/// Whether a create was refused because the namespace is terminating.
pub fn namespace_terminating(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(ae) if ae.code == 403 && ae.message.contains("being terminated"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    #[test]
    fn selectors_match_labels_and_expressions() {
        let labels: BTreeMap<String, String> =
            [("app".to_string(), "web".to_string())].into_iter().collect();
        let mut sel = LabelSelector {
            match_labels: Some([("app".to_string(), "web".to_string())].into_iter().collect()),
            ..Default::default()
        };
        assert!(selector_matches(&sel, &labels));
        sel.match_expressions = Some(vec![LabelSelectorRequirement {
            key: "tier".into(),
            operator: "Exists".into(),
            values: None,
        }]);
        assert!(!selector_matches(&sel, &labels));
        assert!(selector_matches(&LabelSelector::default(), &labels));
    }
}
