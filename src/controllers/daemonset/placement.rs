//! Where daemon pods go: the tolerations every daemon pod gets, the required node affinity that
//! pins a pod to its node, whether a node should run (or may keep) a daemon pod, and the pod
//! itself.

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{
    Affinity, Node, NodeAffinity, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, Pod,
    PodSpec, Toleration,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::ResourceExt;

use super::{TEMPLATE_GENERATION_ANNOTATION, TEMPLATE_GENERATION_LABEL};
use crate::controllers::history::CONTROLLER_REVISION_HASH_LABEL;
use crate::controllers::podutil;
use crate::scheduler::filters;

/// Adds the tolerations every daemon pod gets (upstream's list) unless already present.
pub fn add_default_tolerations(spec: &mut PodSpec) {
    let mut wanted = vec![
        ("node.kubernetes.io/not-ready", "NoExecute"),
        ("node.kubernetes.io/unreachable", "NoExecute"),
        ("node.kubernetes.io/disk-pressure", "NoSchedule"),
        ("node.kubernetes.io/memory-pressure", "NoSchedule"),
        ("node.kubernetes.io/pid-pressure", "NoSchedule"),
        ("node.kubernetes.io/unschedulable", "NoSchedule"),
    ];
    if spec.host_network == Some(true) {
        wanted.push(("node.kubernetes.io/network-unavailable", "NoSchedule"));
    }
    let tolerations = spec.tolerations.get_or_insert_with(Vec::new);
    for (key, effect) in wanted {
        let t = Toleration {
            key: Some(key.into()),
            operator: Some("Exists".into()),
            effect: Some(effect.into()),
            ..Default::default()
        };
        if !tolerations.contains(&t) {
            tolerations.push(t);
        }
    }
}

/// `affinity` with its required node affinity pinned to `node` by a matchFields requirement on
/// metadata.name (in every term, keeping their matchExpressions).
pub fn pin_to_node(affinity: Option<Affinity>, node: &str) -> Affinity {
    let pin = NodeSelectorRequirement {
        key: "metadata.name".into(),
        operator: "In".into(),
        values: Some(vec![node.into()]),
    };
    let mut affinity = affinity.unwrap_or_default();
    let na = affinity.node_affinity.get_or_insert_with(NodeAffinity::default);
    let required = na
        .required_during_scheduling_ignored_during_execution
        .get_or_insert_with(|| NodeSelector { node_selector_terms: vec![] });
    if required.node_selector_terms.is_empty() {
        required.node_selector_terms.push(NodeSelectorTerm::default());
    }
    for term in &mut required.node_selector_terms {
        term.match_fields = Some(vec![pin.clone()]);
    }
    affinity
}

/// The node a daemon pod is for: its spec.nodeName, else the node its affinity pins it to.
pub fn target_node(pod: &Pod) -> Option<String> {
    let spec = pod.spec.as_ref()?;
    if let Some(n) = spec.node_name.as_ref().filter(|n| !n.is_empty()) {
        return Some(n.clone());
    }
    let terms = &spec
        .affinity
        .as_ref()?
        .node_affinity
        .as_ref()?
        .required_during_scheduling_ignored_during_execution
        .as_ref()?
        .node_selector_terms;
    terms.iter().find_map(|t| {
        t.match_fields.iter().flatten().find_map(|r| {
            let values = r.values.as_deref().unwrap_or(&[]);
            (r.key == "metadata.name" && r.operator == "In" && values.len() == 1)
                .then(|| values[0].clone())
        })
    })
}

/// Whether a daemon pod from `spec` (default tolerations included) should be started on `node`,
/// and whether one already there may keep running.
pub fn placement(spec: &PodSpec, node: &Node) -> (bool, bool) {
    if let Some(n) = spec.node_name.as_deref().filter(|n| !n.is_empty()) {
        if Some(n) != node.metadata.name.as_deref() {
            return (false, false);
        }
    }
    if !filters::matches_node_selector_and_affinity(spec, node) {
        return (false, false);
    }
    let tolerations = spec.tolerations.as_deref().unwrap_or(&[]);
    let mut run = true;
    for taint in node.spec.as_ref().and_then(|s| s.taints.as_deref()).unwrap_or(&[]) {
        if filters::tolerated(taint, tolerations) {
            continue;
        }
        match taint.effect.as_str() {
            "NoExecute" => return (false, false),
            "NoSchedule" => run = false,
            _ => {}
        }
    }
    (run, true)
}

/// A pod of `ds` for `node`, labelled with the revision `hash`.
pub fn new_pod(ds: &DaemonSet, node: &str, hash: &str) -> Pod {
    let template = ds.spec.as_ref().map(|s| s.template.clone()).unwrap_or_default();
    let tmeta = template.metadata.unwrap_or_default();
    let mut labels = tmeta.labels.unwrap_or_default();
    labels.insert(CONTROLLER_REVISION_HASH_LABEL.into(), hash.into());
    if let Some(g) = ds.annotations().get(TEMPLATE_GENERATION_ANNOTATION) {
        labels.insert(TEMPLATE_GENERATION_LABEL.into(), g.clone());
    }
    let mut spec = template.spec.unwrap_or_default();
    add_default_tolerations(&mut spec);
    spec.affinity = Some(pin_to_node(spec.affinity.take(), node));
    let mut prefix = format!("{}-", ds.name_any());
    if prefix.len() > 58 {
        prefix.truncate(57);
        prefix.push('-');
    }
    Pod {
        metadata: ObjectMeta {
            generate_name: Some(prefix),
            namespace: ds.namespace(),
            labels: Some(labels),
            annotations: tmeta.annotations,
            finalizers: tmeta.finalizers,
            owner_references: Some(vec![podutil::controller_ref(ds)]),
            ..Default::default()
        },
        spec: Some(spec),
        status: None,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn node(name: &str, labels: serde_json::Value, taints: serde_json::Value) -> Node {
        serde_json::from_value(json!({
            "metadata": {"name": name, "labels": labels},
            "spec": {"taints": taints},
        }))
        .unwrap()
    }

    #[test]
    fn placement_follows_selectors_and_taints() {
        let mut spec: PodSpec = serde_json::from_value(json!({
            "containers": [{"name": "c", "image": "i"}],
            "nodeSelector": {"role": "edge"},
        }))
        .unwrap();
        add_default_tolerations(&mut spec);
        let plain = node("a", json!({"role": "edge"}), json!([]));
        assert_eq!(placement(&spec, &plain), (true, true));
        let other = node("b", json!({"role": "core"}), json!([]));
        assert_eq!(placement(&spec, &other), (false, false));
        let no_schedule =
            node("c", json!({"role": "edge"}), json!([{"key": "k", "effect": "NoSchedule"}]));
        assert_eq!(placement(&spec, &no_schedule), (false, true));
        let no_execute =
            node("d", json!({"role": "edge"}), json!([{"key": "k", "effect": "NoExecute"}]));
        assert_eq!(placement(&spec, &no_execute), (false, false));
        let cordoned = node(
            "e",
            json!({"role": "edge"}),
            json!([{"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"}]),
        );
        assert_eq!(placement(&spec, &cordoned), (true, true), "daemon pods tolerate cordons");
    }

    #[test]
    fn pods_are_pinned_to_their_node() {
        let ds: DaemonSet = serde_json::from_value(json!({
            "metadata": {"name": "agent", "namespace": "kube-system", "uid": "u"},
            "spec": {
                "selector": {"matchLabels": {"app": "agent"}},
                "template": {"metadata": {"labels": {"app": "agent"}},
                    "spec": {"hostNetwork": true, "containers": [{"name": "c", "image": "i"}]}},
            },
        }))
        .unwrap();
        let pod = new_pod(&ds, "n1", "abc");
        assert_eq!(target_node(&pod).as_deref(), Some("n1"));
        assert_eq!(pod.metadata.labels.as_ref().unwrap()[CONTROLLER_REVISION_HASH_LABEL], "abc");
        let tolerations = pod.spec.as_ref().unwrap().tolerations.clone().unwrap();
        assert_eq!(tolerations.len(), 7, "{tolerations:?}");
        let again = pin_to_node(pod.spec.unwrap().affinity, "n2");
        let terms =
            again.node_affinity.unwrap().required_during_scheduling_ignored_during_execution;
        assert_eq!(terms.unwrap().node_selector_terms.len(), 1);
    }
}
