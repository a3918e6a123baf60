//! Filters: whether a pod may go on a node, in the order of upstream's default profile
//! (NodeUnschedulable, NodeName, TaintToleration, NodeAffinity, NodePorts, NodeResourcesFit,
//! PodTopologySpread, InterPodAffinity). The first failing filter gives the reasons upstream
//! reports for that node.

use std::collections::{BTreeMap, HashMap};

use k8s_openapi::api::core::v1::{
    Node, NodeSelectorRequirement, NodeSelectorTerm, Pod, PodSpec, Taint, Toleration,
};

use super::cache::{HostPort, NodeInfo};
use super::resources::Resources;
use super::{interpod, spread};

pub const REASON_UNSCHEDULABLE: &str = "node(s) were unschedulable";
pub const REASON_NODE_NAME: &str = "node(s) didn't match the requested node name";
pub const REASON_AFFINITY: &str = "node(s) didn't match Pod's node affinity/selector";
pub const REASON_PORTS: &str = "node(s) didn't have free ports for the requested pod ports";
pub const REASON_TOO_MANY_PODS: &str = "Too many pods";
/// The taint nodes carry when cordoned.
pub const UNSCHEDULABLE_TAINT: &str = "node.kubernetes.io/unschedulable";

/// What the filters need from a pod, computed once per scheduling attempt.
pub struct PodFacts<'a> {
    pub pod: &'a Pod,
    pub spec: &'a PodSpec,
    pub requests: Resources,
    pub ports: Vec<HostPort>,
}

/// What the filters compute once per scheduling cycle: topology spread and inter-pod affinity
/// counts, and the resources of higher-or-equal priority pods nominated to each node (which
/// the pod must leave room for).
#[derive(Clone, Debug, Default)]
pub struct CycleState {
    pub spread: Option<spread::FilterState>,
    pub interpod: Option<interpod::FilterState>,
    pub nominated: HashMap<String, Resources>,
}

/// Whether the pod fits the node: None, or the reasons it does not.
pub fn check(facts: &PodFacts<'_>, info: &NodeInfo, state: &CycleState) -> Option<Vec<String>> {
    // The node object is read only when the node or the pod asks for it: with thousands of
    // nodes, reading each one's object costs more than the checks themselves.
    let one = |r: &str| Some(vec![r.to_string()]);
    let tolerations = facts.spec.tolerations.as_deref().unwrap_or(&[]);
    if info.unschedulable {
        let cordon = Taint {
            key: UNSCHEDULABLE_TAINT.into(),
            effect: "NoSchedule".into(),
            ..Default::default()
        };
        if !tolerated(&cordon, tolerations) {
            return one(REASON_UNSCHEDULABLE);
        }
    }
    if let Some(want) = facts.spec.node_name.as_deref().filter(|n| !n.is_empty()) {
        if want != info.name() {
            return one(REASON_NODE_NAME);
        }
    }
    let taint = if info.tainted { untolerated_taint(&info.node, tolerations) } else { None };
    if let Some(t) = taint {
        return Some(vec![format!(
            "node(s) had untolerated taint {{{}: {}}}",
            t.key,
            t.value.as_deref().unwrap_or("")
        )]);
    }
    let constrained = facts.spec.node_selector.is_some() || facts.spec.affinity.is_some();
    if constrained && !matches_node_selector_and_affinity(facts.spec, &info.node) {
        return one(REASON_AFFINITY);
    }
    if facts.ports.iter().any(|p| info.used_ports.iter().any(|u| ports_conflict(p, u))) {
        return one(REASON_PORTS);
    }
    let nominated =
        if state.nominated.is_empty() { None } else { state.nominated.get(info.name()) };
    let reasons = insufficient(&facts.requests, info, nominated);
    if !reasons.is_empty() {
        return Some(reasons);
    }
    if let Some(r) = state.spread.as_ref().and_then(|s| s.check(info)) {
        return one(r);
    }
    if let Some(r) = state.interpod.as_ref().and_then(|s| s.check(facts.pod, info)) {
        return one(r);
    }
    None
}

/// Whether a filter failure can be resolved by removing pods (resources, ports) rather than
/// never (selectors, taints): decides upstream's preemption wording.
pub fn resolvable_by_preemption(reason: &str) -> bool {
    reason.starts_with("Insufficient ")
        || [
            REASON_TOO_MANY_PODS,
            REASON_PORTS,
            spread::REASON_SKEW,
            interpod::REASON_ANTI_AFFINITY,
            interpod::REASON_EXISTING_ANTI_AFFINITY,
        ]
        .contains(&reason)
}

fn insufficient(req: &Resources, info: &NodeInfo, nominated: Option<&Resources>) -> Vec<String> {
    let alloc = &info.allocatable;
    let with_nominated;
    let used = match nominated {
        None => &info.requested,
        Some(n) => {
            let mut u = info.requested.clone();
            u.add(n);
            with_nominated = u;
            &with_nominated
        }
    };
    let mut out = vec![];
    if used.pods + 1 > alloc.pods {
        out.push(REASON_TOO_MANY_PODS.to_string());
    }
    if req.milli_cpu > 0 && req.milli_cpu > alloc.milli_cpu - used.milli_cpu {
        out.push("Insufficient cpu".into());
    }
    if req.memory > 0 && req.memory > alloc.memory - used.memory {
        out.push("Insufficient memory".into());
    }
    if req.ephemeral_storage > 0
        && req.ephemeral_storage > alloc.ephemeral_storage - used.ephemeral_storage
    {
        out.push("Insufficient ephemeral-storage".into());
    }
    for (name, want) in &req.scalar {
        let have = alloc.scalar.get(name).copied().unwrap_or(0)
            - used.scalar.get(name).copied().unwrap_or(0);
        if *want > 0 && *want > have {
            out.push(format!("Insufficient {name}"));
        }
    }
    out
}

fn ports_conflict(a: &HostPort, b: &HostPort) -> bool {
    a.0 == b.0 && a.2 == b.2 && (a.1 == b.1 || a.1 == "0.0.0.0" || b.1 == "0.0.0.0")
}

/// The first NoSchedule or NoExecute taint of the node the tolerations do not cover.
pub fn untolerated_taint<'a>(node: &'a Node, tolerations: &[Toleration]) -> Option<&'a Taint> {
    node.spec.as_ref()?.taints.as_ref()?.iter().find(|t| {
        (t.effect == "NoSchedule" || t.effect == "NoExecute") && !tolerated(t, tolerations)
    })
}

/// Whether any toleration covers the taint.
pub fn tolerated(taint: &Taint, tolerations: &[Toleration]) -> bool {
    tolerations.iter().any(|t| {
        let effect_ok = t.effect.as_deref().is_none_or(|e| e.is_empty() || e == taint.effect);
        let key = t.key.as_deref().unwrap_or("");
        let op = t.operator.as_deref().unwrap_or("Equal");
        let key_ok = (key.is_empty() && op == "Exists") || key == taint.key;
        let value_ok = match op {
            "Exists" => true,
            "Equal" | "" => {
                t.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or("")
            }
            _ => false,
        };
        effect_ok && key_ok && value_ok
    })
}

/// nodeSelector and required node affinity.
pub fn matches_node_selector_and_affinity(spec: &PodSpec, node: &Node) -> bool {
    let empty = BTreeMap::new();
    let labels = node.metadata.labels.as_ref().unwrap_or(&empty);
    if let Some(sel) = &spec.node_selector {
        if sel.iter().any(|(k, v)| labels.get(k) != Some(v)) {
            return false;
        }
    }
    let required = spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|na| na.required_during_scheduling_ignored_during_execution.as_ref());
    match required {
        None => true,
        Some(sel) => sel.node_selector_terms.iter().any(|t| term_matches(t, node)),
    }
}

/// One node selector term: every expression and field requirement holds (an empty term matches
/// nothing).
pub fn term_matches(term: &NodeSelectorTerm, node: &Node) -> bool {
    let exprs = term.match_expressions.as_deref().unwrap_or(&[]);
    let fields = term.match_fields.as_deref().unwrap_or(&[]);
    if exprs.is_empty() && fields.is_empty() {
        return false;
    }
    let empty = BTreeMap::new();
    let labels = node.metadata.labels.as_ref().unwrap_or(&empty);
    let name = node.metadata.name.clone().unwrap_or_default();
    exprs.iter().all(|r| requirement_holds(r, labels.get(&r.key)))
        && fields.iter().all(|r| r.key == "metadata.name" && requirement_holds(r, Some(&name)))
}

fn requirement_holds(r: &NodeSelectorRequirement, have: Option<&String>) -> bool {
    let values = r.values.as_deref().unwrap_or(&[]);
    let number = |s: &str| s.parse::<i64>().ok();
    match r.operator.as_str() {
        "In" => have.is_some_and(|v| values.contains(v)),
        "NotIn" => have.is_none_or(|v| !values.contains(v)),
        "Exists" => have.is_some(),
        "DoesNotExist" => have.is_none(),
        "Gt" | "Lt" => {
            let (Some(h), Some(want)) =
                (have.and_then(|h| number(h)), values.first().and_then(|v| number(v)))
            else {
                return false;
            };
            if r.operator == "Gt" {
                h > want
            } else {
                h < want
            }
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tolerations_cover_taints_as_upstream() {
        let taint = Taint {
            key: "dedicated".into(),
            value: Some("gpu".into()),
            effect: "NoSchedule".into(),
            ..Default::default()
        };
        let t = |key: Option<&str>, op: Option<&str>, value: Option<&str>, effect: Option<&str>| {
            Toleration {
                key: key.map(Into::into),
                operator: op.map(Into::into),
                value: value.map(Into::into),
                effect: effect.map(Into::into),
                toleration_seconds: None,
            }
        };
        let cases = [
            (t(Some("dedicated"), None, Some("gpu"), None), true),
            (t(Some("dedicated"), Some("Equal"), Some("cpu"), None), false),
            (t(Some("dedicated"), Some("Exists"), None, Some("NoSchedule")), true),
            (t(None, Some("Exists"), None, None), true),
            (t(Some("dedicated"), Some("Exists"), None, Some("NoExecute")), false),
        ];
        for (tol, want) in cases {
            assert_eq!(tolerated(&taint, std::slice::from_ref(&tol)), want, "{tol:?}");
        }
    }
}
