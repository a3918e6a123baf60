//! Rollout arithmetic of the Deployment controller: maxSurge and maxUnavailable resolved against
//! the replica count, how far a new ReplicaSet may scale up, how a scaling event is shared out
//! among several active ReplicaSets (proportional scaling), the revision annotations of the new
//! ReplicaSet (revision, revision-history, what is copied from the deployment), the
//! pod-template-hash of a template and whether a ReplicaSet runs a given template.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

/// The label that tells a Deployment's ReplicaSets (and their pods) apart.
pub const POD_TEMPLATE_HASH_LABEL: &str = "pod-template-hash";
/// spec.progressDeadlineSeconds when unset.
pub const DEFAULT_PROGRESS_DEADLINE: i32 = 600;
/// The revision annotation of a Deployment and its ReplicaSets.
pub const REVISION_ANNOTATION: &str = "deployment.kubernetes.io/revision";
/// Earlier revisions a ReplicaSet had before a rollback made it current again.
pub const REVISION_HISTORY_ANNOTATION: &str = "deployment.kubernetes.io/revision-history";
pub const DESIRED_REPLICAS_ANNOTATION: &str = "deployment.kubernetes.io/desired-replicas";
pub const MAX_REPLICAS_ANNOTATION: &str = "deployment.kubernetes.io/max-replicas";
/// Annotations of a Deployment never copied to its ReplicaSets (nor back by a rollback).
pub const NOT_COPIED: &[&str] = &[
    "kubectl.kubernetes.io/last-applied-configuration",
    REVISION_ANNOTATION,
    REVISION_HISTORY_ANNOTATION,
    DESIRED_REPLICAS_ANNOTATION,
    MAX_REPLICAS_ANNOTATION,
    "deprecated.deployment.rollback.to",
];
/// How long the revision-history annotation may grow (characters), as upstream.
const MAX_REVISION_HISTORY_CHARS: usize = 2000;
/// The alphabet hash values are written in (no vowels, no look-alikes; upstream's).
const SAFE_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// Resolves an int-or-percent against `total`, rounding percentages up or down.
pub fn resolve(v: Option<&IntOrString>, default_percent: i32, total: i32, round_up: bool) -> i32 {
    let pct = |p: i32| {
        let scaled = i64::from(p) * i64::from(total);
        (if round_up { (scaled + 99) / 100 } else { scaled / 100 }) as i32
    };
    match v {
        None => pct(default_percent),
        Some(IntOrString::Int(i)) => *i,
        Some(IntOrString::String(s)) => {
            match s.strip_suffix('%').and_then(|n| n.parse::<i32>().ok()) {
                Some(p) => pct(p),
                None => s.parse().unwrap_or(0),
            }
        }
    }
}

/// (maxSurge, maxUnavailable) of a deployment: both 0 for Recreate; for RollingUpdate the
/// defaults are 25% each, surge rounded up, unavailable down, and unavailable at least 1 when
/// both would be 0.
pub fn surge_and_unavailable(d: &Deployment) -> (i32, i32) {
    let spec = d.spec.as_ref();
    let replicas = spec.and_then(|s| s.replicas).unwrap_or(1).max(0);
    let strategy = spec.and_then(|s| s.strategy.as_ref());
    if strategy.and_then(|s| s.type_.as_deref()) == Some("Recreate") {
        return (0, 0);
    }
    let ru = strategy.and_then(|s| s.rolling_update.as_ref());
    let surge = resolve(ru.and_then(|r| r.max_surge.as_ref()), 25, replicas, true).max(0);
    let mut unavailable =
        resolve(ru.and_then(|r| r.max_unavailable.as_ref()), 25, replicas, false).max(0);
    if surge == 0 && unavailable == 0 {
        unavailable = 1;
    }
    (surge, unavailable.min(replicas))
}

/// The replicas a new ReplicaSet scales up to: toward `replicas` without the total passing
/// `replicas + surge`.
pub fn new_rs_scale_up(replicas: i32, surge: i32, total_now: i32, new_now: i32) -> i32 {
    let max_total = replicas + surge;
    if total_now >= max_total {
        return new_now;
    }
    let up = (max_total - total_now).min(replicas - new_now).max(0);
    new_now + up
}

/// How many replicas a scaling event adds (or, negative, removes) across the active ReplicaSets:
/// the total may reach `replicas + surge` (nothing when scaling to zero).
pub fn replicas_to_add(replicas: i32, surge: i32, total_now: i32) -> i32 {
    let allowed = if replicas > 0 { replicas.saturating_add(surge) } else { 0 };
    allowed - total_now
}

/// One active ReplicaSet in a proportional scaling: its replicas and its max-replicas annotation
/// (the deployment's replicas plus surge when it was last scaled).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Share {
    pub replicas: i32,
    pub max_replicas: Option<i32>,
}

/// New sizes for `sets` when `to_add` replicas are shared out among them in proportion to their
/// size. `sets` come largest first (ties: newest first when adding, oldest first when removing);
/// the first takes whatever rounding leaves over. `status_replicas` stands in for a missing
/// max-replicas annotation.
pub fn proportional_sizes(
    sets: &[Share],
    replicas: i32,
    surge: i32,
    status_replicas: i32,
    to_add: i32,
) -> Vec<i32> {
    let max_now = i64::from(replicas) + i64::from(surge);
    let mut added = 0;
    let mut sizes: Vec<i32> = sets
        .iter()
        .map(|s| {
            if to_add == 0 || s.replicas == 0 || added == to_add {
                return s.replicas;
            }
            let fraction = if replicas == 0 {
                -s.replicas
            } else {
                let before = s.max_replicas.filter(|m| *m > 0).unwrap_or(status_replicas).max(0);
                if before == 0 {
                    0
                } else {
                    let scaled = (i64::from(s.replicas) * max_now) as f64 / before as f64;
                    (scaled.round() as i64 - i64::from(s.replicas)) as i32
                }
            };
            let allowed = to_add - added;
            let share = if to_add > 0 { fraction.min(allowed) } else { fraction.max(allowed) };
            added += share;
            s.replicas + share
        })
        .collect();
    if let Some(first) = sizes.first_mut() {
        *first = (*first + to_add - added).max(0);
    }
    sizes
}

/// Brings a (new) ReplicaSet's annotations up to date with its deployment: copies the
/// deployment's annotations (all but [`NOT_COPIED`]), raises the revision to `new_revision` if
/// it is lower (a rollback: the old revision joins revision-history), and, for a ReplicaSet
/// about to be created, sets desired-replicas and max-replicas. Returns whether anything changed.
pub fn sync_new_rs_annotations(
    deployment: &BTreeMap<String, String>,
    rs: &mut BTreeMap<String, String>,
    new_revision: i64,
    creating: Option<(i32, i32)>,
) -> bool {
    let mut changed = false;
    for (k, v) in deployment {
        if NOT_COPIED.contains(&k.as_str()) || rs.get(k) == Some(v) {
            continue;
        }
        rs.insert(k.clone(), v.clone());
        changed = true;
    }
    let old = rs.get(REVISION_ANNOTATION).cloned();
    let old_number = match old.as_deref() {
        None | Some("") => 0,
        Some(s) => match s.parse::<i64>() {
            Ok(n) => n,
            Err(_) => return changed,
        },
    };
    if old_number < new_revision {
        rs.insert(REVISION_ANNOTATION.into(), new_revision.to_string());
        changed = true;
        if let Some(old) = old.filter(|o| !o.is_empty()) {
            let history = rs.get(REVISION_HISTORY_ANNOTATION).cloned().unwrap_or_default();
            if history.is_empty() {
                rs.insert(REVISION_HISTORY_ANNOTATION.into(), old);
            } else {
                // Oldest entries go first when the list grows too long.
                let mut entries: Vec<&str> = history.split(',').collect();
                let mut len = history.len() + old.len() + 1;
                let mut start = 0;
                while len > MAX_REVISION_HISTORY_CHARS && start < entries.len() {
                    len -= entries[start].len() + 1;
                    start += 1;
                }
                if len <= MAX_REVISION_HISTORY_CHARS {
                    entries.drain(..start);
                    entries.push(&old);
                    rs.insert(REVISION_HISTORY_ANNOTATION.into(), entries.join(","));
                }
            }
        }
    }
    if let Some((desired, max)) = creating {
        changed |= set_replicas_annotations(rs, desired, max);
    }
    changed
}

/// Sets desired-replicas and max-replicas; returns whether either changed.
pub fn set_replicas_annotations(rs: &mut BTreeMap<String, String>, desired: i32, max: i32) -> bool {
    let mut changed = false;
    for (k, v) in [(DESIRED_REPLICAS_ANNOTATION, desired), (MAX_REPLICAS_ANNOTATION, max)] {
        let v = v.to_string();
        if rs.get(k) != Some(&v) {
            rs.insert(k.into(), v);
            changed = true;
        }
    }
    changed
}

/// FNV-1a (32 bit) of the template's JSON, and of the collision count if any, written with
/// upstream's safe alphabet.
pub fn pod_template_hash(template: &PodTemplateSpec, collision_count: Option<i32>) -> String {
    let mut h: u32 = 0x811c_9dc5;
    let mut feed = |bytes: &[u8]| {
        for b in bytes {
            h ^= u32::from(*b);
            h = h.wrapping_mul(0x0100_0193);
        }
    };
    feed(&serde_json::to_vec(&normalized(template)).unwrap_or_default());
    if let Some(c) = collision_count {
        feed(&(c as u32).to_le_bytes());
    }
    h.to_string()
        .bytes()
        .map(|b| SAFE_ALPHABET[usize::from(b) % SAFE_ALPHABET.len()] as char)
        .collect()
}

/// Go fields of a pod template that are plain booleans: false and unset are the same value
/// upstream, but a body decoded from protobuf spells the false out.
const PLAIN_BOOLS: &[&str] =
    &["stdin", "stdinOnce", "tty", "hostNetwork", "hostPID", "hostIPC", "readOnly"];

/// A template's JSON without the pod-template-hash label and without plain booleans that are
/// false, so that templates upstream deems equal compare (and hash) equal.
fn normalized(template: &PodTemplateSpec) -> serde_json::Value {
    fn strip(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::Object(m) => {
                m.retain(|k, v| {
                    !(PLAIN_BOOLS.contains(&k.as_str()) && v == &serde_json::Value::Bool(false))
                });
                m.values_mut().for_each(strip);
            }
            serde_json::Value::Array(a) => a.iter_mut().for_each(strip),
            _ => {}
        }
    }
    let mut t = template.clone();
    if let Some(labels) = t.metadata.as_mut().and_then(|m| m.labels.as_mut()) {
        labels.remove(POD_TEMPLATE_HASH_LABEL);
    }
    let mut v = serde_json::to_value(&t).unwrap_or_default();
    strip(&mut v);
    v
}

/// Whether a ReplicaSet's template is `template` apart from the pod-template-hash label (and
/// the spelling of plain booleans).
pub fn same_template(template: &PodTemplateSpec, rs: &ReplicaSet) -> bool {
    let Some(theirs) = rs.spec.as_ref().and_then(|s| s.template.as_ref()) else { return false };
    normalized(template) == normalized(theirs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn surge_and_unavailable_resolve_as_upstream() {
        let cases = [
            (None, 10, true, 3),
            (None, 10, false, 2),
            (Some(IntOrString::String("50%".into())), 3, true, 2),
            (Some(IntOrString::Int(2)), 3, false, 2),
        ];
        for (v, total, up, want) in cases {
            assert_eq!(resolve(v.as_ref(), 25, total, up), want, "{v:?} of {total}");
        }
        assert_eq!(new_rs_scale_up(3, 1, 3, 0), 1);
        assert_eq!(new_rs_scale_up(3, 1, 4, 1), 1);
        assert_eq!(new_rs_scale_up(5, 2, 0, 0), 5);
    }

    fn share(replicas: i32, max: i32) -> Share {
        Share { replicas, max_replicas: Some(max) }
    }

    #[test]
    fn scaling_mid_rollout_is_shared_by_size() {
        // Upstream's e2e: 10 replicas, maxSurge 3, stuck at 8 old + 5 new, scaled to 30.
        let to_add = replicas_to_add(30, 3, 13);
        assert_eq!(to_add, 20);
        assert_eq!(proportional_sizes(&[share(8, 13), share(5, 13)], 30, 3, 13, to_add), [20, 13]);
        // And back down to 10.
        let to_add = replicas_to_add(10, 3, 33);
        assert_eq!(proportional_sizes(&[share(20, 33), share(13, 33)], 10, 3, 33, to_add), [8, 5]);
        // Scaling to zero empties every set.
        let to_add = replicas_to_add(0, 0, 7);
        assert_eq!(proportional_sizes(&[share(4, 8), share(3, 8)], 0, 0, 7, to_add), [0, 0]);
        // Leftovers go to the first; a missing annotation falls back to status.replicas.
        let sets = [share(3, 6), Share { replicas: 3, max_replicas: None }];
        let to_add = replicas_to_add(7, 0, 6);
        assert_eq!(proportional_sizes(&sets, 7, 0, 6, to_add), [4, 3]);
    }

    #[test]
    fn rollback_keeps_revision_history() {
        let d: BTreeMap<String, String> = [
            ("kubernetes.io/change-cause".to_string(), "v2".to_string()),
            (REVISION_ANNOTATION.to_string(), "7".to_string()),
        ]
        .into();
        let mut rs: BTreeMap<String, String> =
            [(REVISION_ANNOTATION.to_string(), "2".to_string())].into();
        assert!(sync_new_rs_annotations(&d, &mut rs, 4, None));
        assert_eq!(rs[REVISION_ANNOTATION], "4");
        assert_eq!(rs[REVISION_HISTORY_ANNOTATION], "2");
        assert_eq!(rs["kubernetes.io/change-cause"], "v2");
        assert!(sync_new_rs_annotations(&d, &mut rs, 6, None));
        assert_eq!(rs[REVISION_HISTORY_ANNOTATION], "2,4");
        assert!(!sync_new_rs_annotations(&d, &mut rs, 5, None), "a lower revision changes nothing");
        let mut fresh = BTreeMap::new();
        assert!(sync_new_rs_annotations(&d, &mut fresh, 1, Some((3, 4))));
        assert_eq!(fresh[REVISION_ANNOTATION], "1");
        assert!(!fresh.contains_key(REVISION_HISTORY_ANNOTATION));
        assert_eq!(
            (fresh[DESIRED_REPLICAS_ANNOTATION].as_str(), fresh[MAX_REPLICAS_ANNOTATION].as_str()),
            ("3", "4")
        );
    }

    #[test]
    fn hashes_use_the_safe_alphabet_and_change_with_collisions() {
        let t = PodTemplateSpec::default();
        let a = pod_template_hash(&t, None);
        assert!(a.bytes().all(|b| SAFE_ALPHABET.contains(&b)));
        assert_ne!(a, pod_template_hash(&t, Some(1)));
        let spelled: PodTemplateSpec = serde_json::from_value(serde_json::json!({
            "spec": {"hostIPC": false, "containers": [{"name": "c", "tty": false}]},
        }))
        .unwrap();
        let plain: PodTemplateSpec =
            serde_json::from_value(serde_json::json!({"spec": {"containers": [{"name": "c"}]}}))
                .unwrap();
        assert_eq!(pod_template_hash(&spelled, None), pod_template_hash(&plain, None));
        let rs = ReplicaSet {
            spec: Some(k8s_openapi::api::apps::v1::ReplicaSetSpec {
                template: Some(spelled),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert!(same_template(&plain, &rs));
    }
}
