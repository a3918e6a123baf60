//! Rollout arithmetic of the Deployment controller: maxSurge and maxUnavailable resolved against
//! the replica count, how far a new ReplicaSet may scale up, the pod-template-hash of a template
//! and whether a ReplicaSet runs a given template.

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

/// The label that tells a Deployment's ReplicaSets (and their pods) apart.
pub const POD_TEMPLATE_HASH_LABEL: &str = "pod-template-hash";
/// spec.progressDeadlineSeconds when unset.
pub const DEFAULT_PROGRESS_DEADLINE: i32 = 600;
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
    feed(&serde_json::to_vec(template).unwrap_or_default());
    if let Some(c) = collision_count {
        feed(&(c as u32).to_le_bytes());
    }
    h.to_string()
        .bytes()
        .map(|b| SAFE_ALPHABET[usize::from(b) % SAFE_ALPHABET.len()] as char)
        .collect()
}

/// Whether a ReplicaSet's template is `template` apart from the pod-template-hash label.
pub fn same_template(template: &PodTemplateSpec, rs: &ReplicaSet) -> bool {
    let Some(mut theirs) = rs.spec.as_ref().and_then(|s| s.template.clone()) else { return false };
    let mut ours = template.clone();
    for t in [&mut theirs, &mut ours] {
        if let Some(labels) = t.metadata.as_mut().and_then(|m| m.labels.as_mut()) {
            labels.remove(POD_TEMPLATE_HASH_LABEL);
        }
    }
    serde_json::to_value(&ours).ok() == serde_json::to_value(&theirs).ok()
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

    #[test]
    fn hashes_use_the_safe_alphabet_and_change_with_collisions() {
        let t = PodTemplateSpec::default();
        let a = pod_template_hash(&t, None);
        assert!(a.bytes().all(|b| SAFE_ALPHABET.contains(&b)));
        assert_ne!(a, pod_template_hash(&t, Some(1)));
    }
}
