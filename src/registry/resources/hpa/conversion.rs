//! autoscaling/v1 ⇄ autoscaling/v2 for HorizontalPodAutoscalers.
//!
//! autoscaling/v1 has room for one CPU utilization target only. As upstream does, whatever else
//! the stored v2 object holds travels through v1 in annotations, so a v1 client that reads an
//! object and writes it back loses nothing:
//! - `autoscaling.alpha.kubernetes.io/metrics`: every metric but the CPU utilization one, in the
//!   v1 (v2beta1-like) MetricSpec shape;
//! - `.../current-metrics`: every current metric, in the v1 MetricStatus shape;
//! - `.../conditions`: the status conditions;
//! - `.../behavior`: spec.behavior, keyed by Go field names (upstream marshals its internal type,
//!   which has no json tags), read back case-insensitively.
//!
//! Converting to v2 turns the annotations back into fields and removes them; v2 never shows them.

use serde_json::{json, Map, Value};

use crate::registry::object;

pub const METRICS_ANNOTATION: &str = "autoscaling.alpha.kubernetes.io/metrics";
pub const CURRENT_METRICS_ANNOTATION: &str = "autoscaling.alpha.kubernetes.io/current-metrics";
pub const CONDITIONS_ANNOTATION: &str = "autoscaling.alpha.kubernetes.io/conditions";
pub const BEHAVIOR_ANNOTATION: &str = "autoscaling.alpha.kubernetes.io/behavior";

/// The annotations only conversion writes; never stored, never shown in v2.
pub const ROUND_TRIP_ANNOTATIONS: [&str; 4] =
    [METRICS_ANNOTATION, CURRENT_METRICS_ANNOTATION, CONDITIONS_ANNOTATION, BEHAVIOR_ANNOTATION];

/// The CPU utilization target an HPA without metrics gets.
pub const DEFAULT_CPU_UTILIZATION: i64 = 80;

pub fn cpu_metric(target: i64) -> Value {
    json!({"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": target}}})
}

/// A field that is there and not null.
fn field<'a>(v: &'a Value, key: &str) -> Option<&'a Value> {
    v.get(key).filter(|x| !x.is_null())
}

/// Copies `from[key]` to `out[to]` when it is there.
fn copy(out: &mut Map<String, Value>, to: &str, from: &Value, key: &str) {
    if let Some(x) = field(from, key) {
        out.insert(to.into(), x.clone());
    }
}

/// A quantity Go declares by value: a missing one is the zero quantity, "0".
fn quantity(from: &Value, key: &str) -> Value {
    field(from, key).cloned().unwrap_or_else(|| json!("0"))
}

fn string(from: &Value, key: &str) -> Value {
    field(from, key).cloned().unwrap_or_else(|| json!(""))
}

fn empty() -> Value {
    Value::Object(Map::new())
}

/// A CrossVersionObjectReference (the same fields in both versions).
fn reference(r: Option<&Value>) -> Value {
    let r = r.cloned().unwrap_or_else(empty);
    let mut out = Map::new();
    out.insert("kind".into(), string(&r, "kind"));
    out.insert("name".into(), string(&r, "name"));
    copy(&mut out, "apiVersion", &r, "apiVersion");
    Value::Object(out)
}

/// The CPU metric v1 carries as targetCPUUtilizationPercentage.
fn is_cpu_utilization(m: &Value) -> bool {
    object::str_at(m, "type") == Some("Resource")
        && m.pointer("/resource/name").and_then(Value::as_str) == Some("cpu")
        && m.pointer("/resource/target/averageUtilization").is_some_and(|u| !u.is_null())
}

/// v2 metric source's (metric name, selector).
fn identifier(src: &Value) -> (Value, Option<Value>) {
    let metric = src.get("metric").cloned().unwrap_or_else(empty);
    (string(&metric, "name"), field(&metric, "selector").cloned())
}

/// A v2 MetricSpec in the v1 annotation shape.
fn metric_spec_to_v1(m: &Value) -> Value {
    let mut out = Map::new();
    out.insert("type".into(), string(m, "type"));
    if let Some(o) = field(m, "object") {
        let (name, selector) = identifier(o);
        let target = o.get("target").cloned().unwrap_or_else(empty);
        let mut v = Map::new();
        v.insert("target".into(), reference(o.get("describedObject")));
        v.insert("metricName".into(), name);
        v.insert("targetValue".into(), quantity(&target, "value"));
        if let Some(s) = selector {
            v.insert("selector".into(), s);
        }
        copy(&mut v, "averageValue", &target, "averageValue");
        out.insert("object".into(), Value::Object(v));
    }
    if let Some(p) = field(m, "pods") {
        let (name, selector) = identifier(p);
        let target = p.get("target").cloned().unwrap_or_else(empty);
        let mut v = Map::new();
        v.insert("metricName".into(), name);
        v.insert("targetAverageValue".into(), quantity(&target, "averageValue"));
        if let Some(s) = selector {
            v.insert("selector".into(), s);
        }
        out.insert("pods".into(), Value::Object(v));
    }
    for key in ["resource", "containerResource"] {
        if let Some(r) = field(m, key) {
            let target = r.get("target").cloned().unwrap_or_else(empty);
            let mut v = Map::new();
            v.insert("name".into(), string(r, "name"));
            copy(&mut v, "targetAverageUtilization", &target, "averageUtilization");
            copy(&mut v, "targetAverageValue", &target, "averageValue");
            if key == "containerResource" {
                v.insert("container".into(), string(r, "container"));
            }
            out.insert(key.into(), Value::Object(v));
        }
    }
    if let Some(e) = field(m, "external") {
        let (name, selector) = identifier(e);
        let target = e.get("target").cloned().unwrap_or_else(empty);
        let mut v = Map::new();
        v.insert("metricName".into(), name);
        if let Some(s) = selector {
            v.insert("metricSelector".into(), s);
        }
        copy(&mut v, "targetValue", &target, "value");
        copy(&mut v, "targetAverageValue", &target, "averageValue");
        out.insert("external".into(), Value::Object(v));
    }
    Value::Object(out)
}

/// A v1-shaped metric identifier back to v2's {name, selector}.
fn identifier_from_v1(src: &Value, selector_key: &str) -> Value {
    let mut id = Map::new();
    id.insert("name".into(), string(src, "metricName"));
    copy(&mut id, "selector", src, selector_key);
    Value::Object(id)
}

/// A MetricSpec from the v1 annotation back to v2.
fn metric_spec_from_v1(m: &Value) -> Value {
    let mut out = Map::new();
    out.insert("type".into(), string(m, "type"));
    if let Some(o) = field(m, "object") {
        let average = field(o, "averageValue");
        let mut target = Map::new();
        target
            .insert("type".into(), json!(if average.is_some() { "AverageValue" } else { "Value" }));
        // Upstream always sets value from v1's (required) targetValue; an AverageValue target
        // written from v2 has none, and gets none back here.
        if average.is_none() || field(o, "targetValue").is_some_and(|v| v != "0") {
            target.insert("value".into(), quantity(o, "targetValue"));
        }
        copy(&mut target, "averageValue", o, "averageValue");
        out.insert(
            "object".into(),
            json!({
                "describedObject": reference(o.get("target")),
                "metric": identifier_from_v1(o, "selector"),
                "target": Value::Object(target),
            }),
        );
    }
    if let Some(p) = field(m, "pods") {
        out.insert(
            "pods".into(),
            json!({
                "metric": identifier_from_v1(p, "selector"),
                "target": {"type": "AverageValue", "averageValue": quantity(p, "targetAverageValue")},
            }),
        );
    }
    for key in ["resource", "containerResource"] {
        if let Some(r) = field(m, key) {
            let utilization = field(r, "targetAverageUtilization");
            let mut target = Map::new();
            let kind = if utilization.is_some() { "Utilization" } else { "AverageValue" };
            target.insert("type".into(), json!(kind));
            copy(&mut target, "averageUtilization", r, "targetAverageUtilization");
            copy(&mut target, "averageValue", r, "targetAverageValue");
            let mut v = Map::new();
            v.insert("name".into(), string(r, "name"));
            if key == "containerResource" {
                v.insert("container".into(), string(r, "container"));
            }
            v.insert("target".into(), Value::Object(target));
            out.insert(key.into(), Value::Object(v));
        }
    }
    if let Some(e) = field(m, "external") {
        let mut target = Map::new();
        let kind = if field(e, "targetValue").is_some() { "Value" } else { "AverageValue" };
        target.insert("type".into(), json!(kind));
        copy(&mut target, "value", e, "targetValue");
        copy(&mut target, "averageValue", e, "targetAverageValue");
        out.insert(
            "external".into(),
            json!({
                "metric": identifier_from_v1(e, "metricSelector"),
                "target": Value::Object(target),
            }),
        );
    }
    Value::Object(out)
}

/// A v2 MetricStatus in the v1 annotation shape.
fn metric_status_to_v1(m: &Value) -> Value {
    let mut out = Map::new();
    out.insert("type".into(), string(m, "type"));
    if let Some(o) = field(m, "object") {
        let (name, selector) = identifier(o);
        let current = o.get("current").cloned().unwrap_or_else(empty);
        let mut v = Map::new();
        v.insert("target".into(), reference(o.get("describedObject")));
        v.insert("metricName".into(), name);
        v.insert("currentValue".into(), quantity(&current, "value"));
        if let Some(s) = selector {
            v.insert("selector".into(), s);
        }
        copy(&mut v, "averageValue", &current, "averageValue");
        out.insert("object".into(), Value::Object(v));
    }
    if let Some(p) = field(m, "pods") {
        let (name, selector) = identifier(p);
        let current = p.get("current").cloned().unwrap_or_else(empty);
        let mut v = Map::new();
        v.insert("metricName".into(), name);
        v.insert("currentAverageValue".into(), quantity(&current, "averageValue"));
        if let Some(s) = selector {
            v.insert("selector".into(), s);
        }
        out.insert("pods".into(), Value::Object(v));
    }
    for key in ["resource", "containerResource"] {
        if let Some(r) = field(m, key) {
            let current = r.get("current").cloned().unwrap_or_else(empty);
            let mut v = Map::new();
            v.insert("name".into(), string(r, "name"));
            copy(&mut v, "currentAverageUtilization", &current, "averageUtilization");
            v.insert("currentAverageValue".into(), quantity(&current, "averageValue"));
            if key == "containerResource" {
                v.insert("container".into(), string(r, "container"));
            }
            out.insert(key.into(), Value::Object(v));
        }
    }
    if let Some(e) = field(m, "external") {
        let (name, selector) = identifier(e);
        let current = e.get("current").cloned().unwrap_or_else(empty);
        let mut v = Map::new();
        v.insert("metricName".into(), name);
        if let Some(s) = selector {
            v.insert("metricSelector".into(), s);
        }
        v.insert("currentValue".into(), quantity(&current, "value"));
        copy(&mut v, "currentAverageValue", &current, "averageValue");
        out.insert("external".into(), Value::Object(v));
    }
    Value::Object(out)
}

/// A MetricStatus from the v1 annotation back to v2.
fn metric_status_from_v1(m: &Value) -> Value {
    let mut out = Map::new();
    out.insert("type".into(), string(m, "type"));
    if let Some(o) = field(m, "object") {
        let mut current = Map::new();
        current.insert("value".into(), quantity(o, "currentValue"));
        copy(&mut current, "averageValue", o, "averageValue");
        out.insert(
            "object".into(),
            json!({
                "describedObject": reference(o.get("target")),
                "metric": identifier_from_v1(o, "selector"),
                "current": Value::Object(current),
            }),
        );
    }
    if let Some(p) = field(m, "pods") {
        out.insert(
            "pods".into(),
            json!({
                "metric": identifier_from_v1(p, "selector"),
                "current": {"averageValue": quantity(p, "currentAverageValue")},
            }),
        );
    }
    for key in ["resource", "containerResource"] {
        if let Some(r) = field(m, key) {
            let mut current = Map::new();
            current.insert("averageValue".into(), quantity(r, "currentAverageValue"));
            copy(&mut current, "averageUtilization", r, "currentAverageUtilization");
            let mut v = Map::new();
            v.insert("name".into(), string(r, "name"));
            if key == "containerResource" {
                v.insert("container".into(), string(r, "container"));
            }
            v.insert("current".into(), Value::Object(current));
            out.insert(key.into(), Value::Object(v));
        }
    }
    if let Some(e) = field(m, "external") {
        let mut current = Map::new();
        current.insert("value".into(), quantity(e, "currentValue"));
        copy(&mut current, "averageValue", e, "currentAverageValue");
        out.insert(
            "external".into(),
            json!({
                "metric": identifier_from_v1(e, "metricSelector"),
                "current": Value::Object(current),
            }),
        );
    }
    Value::Object(out)
}

/// The Go field names of HorizontalPodAutoscalerBehavior and what they hold, as (json, Go).
const RULES_FIELDS: [(&str, &str); 4] = [
    ("stabilizationWindowSeconds", "StabilizationWindowSeconds"),
    ("selectPolicy", "SelectPolicy"),
    ("policies", "Policies"),
    ("tolerance", "Tolerance"),
];
const POLICY_FIELDS: [(&str, &str); 3] =
    [("type", "Type"), ("value", "Value"), ("periodSeconds", "PeriodSeconds")];
const BEHAVIOR_FIELDS: [(&str, &str); 2] = [("scaleUp", "ScaleUp"), ("scaleDown", "ScaleDown")];

/// spec.behavior as upstream writes it into the annotation: Go field names, nulls included.
fn behavior_to_annotation(b: &Value) -> Value {
    let rules = |r: Option<&Value>| -> Value {
        let Some(r) = r else { return Value::Null };
        let mut out = Map::new();
        for (json_name, go_name) in RULES_FIELDS {
            let v = match (json_name, field(r, json_name)) {
                ("policies", Some(Value::Array(ps))) => Value::Array(
                    ps.iter()
                        .map(|p| {
                            let fields = POLICY_FIELDS.iter().map(|(j, g)| {
                                (g.to_string(), field(p, j).cloned().unwrap_or(Value::Null))
                            });
                            Value::Object(fields.collect())
                        })
                        .collect(),
                ),
                (_, v) => v.cloned().unwrap_or(Value::Null),
            };
            out.insert(go_name.into(), v);
        }
        Value::Object(out)
    };
    let fields = BEHAVIOR_FIELDS.iter().map(|(j, g)| (g.to_string(), rules(field(b, j))));
    Value::Object(fields.collect())
}

/// The value of `key` in `v`, matched case-insensitively as Go's encoding/json does.
fn field_ci<'a>(v: &'a Value, key: &str) -> Option<&'a Value> {
    let m = v.as_object()?;
    m.get(key)
        .or_else(|| m.iter().find(|(k, _)| k.eq_ignore_ascii_case(key)).map(|(_, x)| x))
        .filter(|x| !x.is_null())
}

/// The behavior annotation back to spec.behavior (None when it holds nothing).
fn behavior_from_annotation(a: &Value) -> Option<Value> {
    let rules = |r: &Value| -> Value {
        let mut out = Map::new();
        for (json_name, go_name) in RULES_FIELDS {
            match (json_name, field_ci(r, go_name)) {
                ("policies", Some(Value::Array(ps))) => {
                    let policies = ps.iter().map(|p| {
                        let fields = POLICY_FIELDS.iter().filter_map(|(j, g)| {
                            field_ci(p, g).map(|x| (j.to_string(), x.clone()))
                        });
                        Value::Object(fields.collect())
                    });
                    out.insert(json_name.into(), Value::Array(policies.collect()));
                }
                (_, Some(x)) => {
                    out.insert(json_name.into(), x.clone());
                }
                (_, None) => {}
            }
        }
        Value::Object(out)
    };
    let mut out = Map::new();
    for (json_name, go_name) in BEHAVIOR_FIELDS {
        if let Some(r) = field_ci(a, go_name) {
            out.insert(json_name.into(), rules(r));
        }
    }
    (!out.is_empty()).then_some(Value::Object(out))
}

fn annotations_mut(obj: &mut Map<String, Value>) -> Option<&mut Map<String, Value>> {
    let meta = obj.entry("metadata").or_insert_with(empty);
    if !meta.is_object() {
        *meta = empty();
    }
    let annotations = meta.as_object_mut()?.entry("annotations").or_insert_with(empty);
    if !annotations.is_object() {
        *annotations = empty();
    }
    annotations.as_object_mut()
}

/// Removes the round-trip annotations (and an annotations map they leave empty).
pub fn drop_round_trip_annotations(obj: &mut Value) {
    let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) else { return };
    let Some(Value::Object(a)) = meta.get_mut("annotations") else { return };
    if !ROUND_TRIP_ANNOTATIONS.iter().any(|k| a.contains_key(*k)) {
        return;
    }
    for k in ROUND_TRIP_ANNOTATIONS {
        a.remove(k);
    }
    if a.is_empty() {
        meta.remove("annotations");
    }
}

/// Takes an annotation out of `obj` and parses it as JSON (unparsable ones are dropped, with a
/// debug line: upstream refuses the object instead).
fn take_annotation(obj: &mut Value, key: &str) -> Option<Value> {
    let text =
        obj.pointer_mut("/metadata/annotations").and_then(Value::as_object_mut)?.remove(key)?;
    let parsed = text.as_str().and_then(|t| serde_json::from_str(t).ok());
    if parsed.is_none() {
        tracing::debug!(annotation = key, "unparsable autoscaling round-trip annotation ignored");
    }
    parsed
}

/// An autoscaling/v1 object as autoscaling/v2.
pub fn v1_to_v2(v: Value) -> Value {
    let mut v = v;
    let metrics_note = take_annotation(&mut v, METRICS_ANNOTATION);
    let current_note = take_annotation(&mut v, CURRENT_METRICS_ANNOTATION);
    let conditions_note = take_annotation(&mut v, CONDITIONS_ANNOTATION);
    let behavior_note = take_annotation(&mut v, BEHAVIOR_ANNOTATION);
    drop_round_trip_annotations(&mut v);
    if let Some(a) = v.pointer("/metadata/annotations").and_then(Value::as_object) {
        if a.is_empty() {
            if let Some(meta) = v.get_mut("metadata").and_then(Value::as_object_mut) {
                meta.remove("annotations");
            }
        }
    }
    let Value::Object(mut m) = v else { return v };
    m.insert("apiVersion".into(), json!("autoscaling/v2"));
    let spec = m.entry("spec").or_insert_with(empty);
    if let Value::Object(spec) = spec {
        let cpu = spec.remove("targetCPUUtilizationPercentage").and_then(|t| t.as_i64());
        // The other metrics first, then the CPU one, as upstream orders them.
        let mut metrics: Vec<Value> = metrics_note
            .as_ref()
            .and_then(Value::as_array)
            .map(|ms| ms.iter().map(metric_spec_from_v1).collect())
            .unwrap_or_default();
        metrics.extend(cpu.map(cpu_metric));
        if metrics.is_empty() {
            metrics.push(cpu_metric(DEFAULT_CPU_UTILIZATION));
        }
        spec.insert("metrics".into(), Value::Array(metrics));
        if let Some(b) = behavior_note.as_ref().and_then(behavior_from_annotation) {
            spec.insert("behavior".into(), b);
        }
    }
    if let Some(Value::Object(status)) = m.get_mut("status") {
        let cpu = status.remove("currentCPUUtilizationPercentage").and_then(|t| t.as_i64());
        if let Some(c) = cpu {
            status.insert(
                "currentMetrics".into(),
                json!([{"type": "Resource", "resource": {"name": "cpu", "current": {"averageUtilization": c}}}]),
            );
        }
        // The annotation has more than the percentage: it wins.
        if let Some(Value::Array(current)) = &current_note {
            let current = current.iter().map(metric_status_from_v1).collect();
            status.insert("currentMetrics".into(), Value::Array(current));
        }
        if let Some(Value::Array(conditions)) = conditions_note {
            status.insert("conditions".into(), Value::Array(conditions));
        }
    }
    Value::Object(m)
}

/// An autoscaling/v2 object as autoscaling/v1; what v1 has no field for goes into annotations.
pub fn v2_to_v1(v: Value) -> Value {
    let mut v = v;
    drop_round_trip_annotations(&mut v);
    let Value::Object(mut m) = v else { return v };
    m.insert("apiVersion".into(), json!("autoscaling/v1"));
    let mut notes: Vec<(&str, Value)> = vec![];
    if let Some(Value::Object(spec)) = m.get_mut("spec") {
        let metrics = spec.remove("metrics");
        let metrics = metrics.as_ref().and_then(Value::as_array).map(Vec::as_slice).unwrap_or(&[]);
        let cpu = metrics
            .iter()
            .find(|x| {
                object::str_at(x, "type") == Some("Resource")
                    && x.pointer("/resource/name").and_then(Value::as_str) == Some("cpu")
            })
            .and_then(|x| x.pointer("/resource/target/averageUtilization").and_then(Value::as_i64));
        if let Some(c) = cpu {
            spec.insert("targetCPUUtilizationPercentage".into(), json!(c));
        }
        let others: Vec<Value> =
            metrics.iter().filter(|x| !is_cpu_utilization(x)).map(metric_spec_to_v1).collect();
        if !others.is_empty() {
            notes.push((METRICS_ANNOTATION, Value::Array(others)));
        }
        if let Some(b) = spec.remove("behavior").filter(|b| !b.is_null()) {
            notes.push((BEHAVIOR_ANNOTATION, behavior_to_annotation(&b)));
        }
    }
    if let Some(Value::Object(status)) = m.get_mut("status") {
        let current = status.remove("currentMetrics");
        let current = current.as_ref().and_then(Value::as_array).map(Vec::as_slice).unwrap_or(&[]);
        let cpu = current
            .iter()
            .filter(|x| {
                object::str_at(x, "type") == Some("Resource")
                    && x.pointer("/resource/name").and_then(Value::as_str) == Some("cpu")
            })
            .filter_map(|x| {
                x.pointer("/resource/current/averageUtilization").and_then(Value::as_i64)
            })
            .last();
        if let Some(c) = cpu {
            status.insert("currentCPUUtilizationPercentage".into(), json!(c));
        }
        if !current.is_empty() {
            let current = current.iter().map(metric_status_to_v1).collect();
            notes.push((CURRENT_METRICS_ANNOTATION, Value::Array(current)));
        }
        if let Some(Value::Array(conditions)) = status.remove("conditions") {
            if !conditions.is_empty() {
                notes.push((CONDITIONS_ANNOTATION, Value::Array(conditions)));
            }
        }
        if !status.contains_key("currentReplicas") {
            status.insert("currentReplicas".into(), json!(0));
        }
    }
    if !notes.is_empty() {
        if let Some(annotations) = annotations_mut(&mut m) {
            for (key, value) in notes {
                annotations.insert(key.into(), Value::String(value.to_string()));
            }
        }
    }
    Value::Object(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v2_object() -> Value {
        json!({
            "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "h", "annotations": {"team": "a"}},
            "spec": {
                "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "d"},
                "minReplicas": 1, "maxReplicas": 10,
                "metrics": [
                    {"type": "Resource", "resource": {"name": "memory", "target": {"type": "AverageValue", "averageValue": "500Mi"}}},
                    {"type": "Pods", "pods": {"metric": {"name": "qps"}, "target": {"type": "AverageValue", "averageValue": "1k"}}},
                    {"type": "Object", "object": {"describedObject": {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "name": "main"},
                        "metric": {"name": "hits", "selector": {"matchLabels": {"a": "b"}}}, "target": {"type": "Value", "value": "10k"}}},
                    {"type": "External", "external": {"metric": {"name": "queue"}, "target": {"type": "AverageValue", "averageValue": "30"}}},
                    {"type": "ContainerResource", "containerResource": {"name": "cpu", "container": "app", "target": {"type": "Utilization", "averageUtilization": 60}}},
                    {"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 50}}},
                ],
                "behavior": {
                    "scaleUp": {"stabilizationWindowSeconds": 0, "selectPolicy": "Max",
                                "policies": [{"type": "Pods", "value": 4, "periodSeconds": 15}, {"type": "Percent", "value": 100, "periodSeconds": 15}]},
                    "scaleDown": {"stabilizationWindowSeconds": 300, "policies": [{"type": "Percent", "value": 10, "periodSeconds": 60}]},
                },
            },
            "status": {
                "currentReplicas": 2, "desiredReplicas": 2,
                "currentMetrics": [
                    {"type": "Pods", "pods": {"metric": {"name": "qps"}, "current": {"averageValue": "250"}}},
                    {"type": "Resource", "resource": {"name": "cpu", "current": {"averageValue": "120m", "averageUtilization": 40}}},
                ],
                "conditions": [{"type": "AbleToScale", "status": "True", "reason": "ReadyForNewScale", "lastTransitionTime": "2025-01-01T00:00:00Z"}],
            },
        })
    }

    #[test]
    fn v2_survives_a_trip_through_v1() {
        let v2 = v2_object();
        let v1 = v2_to_v1(v2.clone());
        assert_eq!(v1["spec"]["targetCPUUtilizationPercentage"], 50);
        assert_eq!(v1["status"]["currentCPUUtilizationPercentage"], 40);
        assert!(v1["spec"].get("metrics").is_none() && v1["spec"].get("behavior").is_none());
        let a = &v1["metadata"]["annotations"];
        assert_eq!(a["team"], "a");
        let metrics: Value =
            serde_json::from_str(a[METRICS_ANNOTATION].as_str().expect("metrics")).expect("json");
        assert_eq!(metrics.as_array().map(Vec::len), Some(5));
        assert_eq!(
            metrics[1],
            json!({"type": "Pods", "pods": {"metricName": "qps", "targetAverageValue": "1k"}})
        );
        let behavior: Value =
            serde_json::from_str(a[BEHAVIOR_ANNOTATION].as_str().expect("behavior")).expect("json");
        assert_eq!(behavior["ScaleDown"]["StabilizationWindowSeconds"], 300);
        assert_eq!(behavior["ScaleDown"]["SelectPolicy"], Value::Null);
        assert_eq!(
            behavior["ScaleUp"]["Policies"][0],
            json!({"Type": "Pods", "Value": 4, "PeriodSeconds": 15})
        );

        let back = v1_to_v2(v1);
        assert_eq!(back["spec"], v2["spec"]);
        assert_eq!(back["metadata"], v2["metadata"]);
        assert_eq!(back["status"]["conditions"], v2["status"]["conditions"]);
        assert_eq!(back["status"]["currentMetrics"], v2["status"]["currentMetrics"]);
    }

    #[test]
    fn plain_v1_converts_without_annotations() {
        let v1 = json!({"apiVersion": "autoscaling/v1", "kind": "HorizontalPodAutoscaler", "metadata": {"name": "h"},
                        "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "d"}, "maxReplicas": 5, "targetCPUUtilizationPercentage": 50}});
        let v2 = v1_to_v2(v1.clone());
        assert_eq!(v2["spec"]["metrics"], json!([cpu_metric(50)]));
        let again = v2_to_v1(v2);
        assert_eq!(again["spec"], v1["spec"]);
        assert_eq!(again["metadata"], v1["metadata"]);
        // Without a target, v1 gets upstream's default.
        let bare = json!({"spec": {"scaleTargetRef": {"kind": "Deployment", "name": "d"}, "maxReplicas": 5}});
        assert_eq!(v1_to_v2(bare)["spec"]["metrics"], json!([cpu_metric(DEFAULT_CPU_UTILIZATION)]));
    }

    #[test]
    fn behavior_annotation_reads_any_key_case() {
        let a = json!({"scaleup": {"stabilizationwindowseconds": 5, "Policies": null}, "ScaleDown": null});
        assert_eq!(
            behavior_from_annotation(&a),
            Some(json!({"scaleUp": {"stabilizationWindowSeconds": 5}}))
        );
    }
}
