//! The TARGETS column of `kubectl get hpa`, as upstream's table printer writes it: one
//! "current/target" cell per metric (the current value is the status metric at the same index),
//! at most two of them and then "+ N more...".

use serde_json::Value;

use crate::registry::admission::quantity::Quantity;

/// How many metrics the column shows before "+ N more...".
const SHOWN: usize = 2;
const UNKNOWN: &str = "<unknown>";

/// A quantity in canonical form; "<nil>" where there is none (Go prints a nil *Quantity so).
fn quantity(v: Option<&Value>) -> String {
    match v {
        Some(Value::String(s)) => Quantity::parse(s).map_or_else(|| s.clone(), |q| q.to_string()),
        Some(Value::Number(n)) => {
            let s = n.to_string();
            Quantity::parse(&s).map_or(s, |q| q.to_string())
        }
        _ => "<nil>".into(),
    }
}

fn present<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    v.pointer(path).filter(|x| !x.is_null())
}

/// The status metric's `source` (e.g. "pods"), when the status at this index has one.
fn status_source<'a>(status: Option<&'a Value>, source: &str) -> Option<&'a Value> {
    status.and_then(|s| s.get(source)).filter(|x| !x.is_null())
}

/// Resource and ContainerResource: "name: current/target", by value or by utilization.
fn resource_cell(spec: &Value, status: Option<&Value>) -> String {
    let name = spec.get("name").and_then(Value::as_str).unwrap_or("");
    if let Some(target) = present(spec, "/target/averageValue") {
        let current =
            status.map_or(UNKNOWN.into(), |s| quantity(present(s, "/current/averageValue")));
        return format!("{name}: {current}/{}", quantity(Some(target)));
    }
    let current = status
        .and_then(|s| present(s, "/current/averageUtilization"))
        .and_then(Value::as_i64)
        .map_or(UNKNOWN.into(), |u| format!("{u}%"));
    let target = present(spec, "/target/averageUtilization")
        .and_then(Value::as_i64)
        .map_or("<auto>".into(), |u| format!("{u}%"));
    format!("{name}: {current}/{target}")
}

/// Object and External: "current/target", or "current/target (avg)" for an AverageValue target.
fn value_cell(spec: &Value, status: Option<&Value>) -> String {
    if let Some(target) = present(spec, "/target/averageValue") {
        let current = status
            .and_then(|s| present(s, "/current/averageValue"))
            .map_or(UNKNOWN.into(), |q| quantity(Some(q)));
        return format!("{current}/{} (avg)", quantity(Some(target)));
    }
    let current = status.map_or(UNKNOWN.into(), |s| quantity(present(s, "/current/value")));
    format!("{current}/{}", quantity(present(spec, "/target/value")))
}

fn cell(spec: &Value, status: Option<&Value>) -> String {
    let empty = Value::Null;
    let source = |key: &str| spec.get(key).unwrap_or(&empty);
    match spec.get("type").and_then(Value::as_str).unwrap_or("") {
        "Resource" => resource_cell(source("resource"), status_source(status, "resource")),
        "ContainerResource" => {
            resource_cell(source("containerResource"), status_source(status, "containerResource"))
        }
        "Pods" => {
            let current = status_source(status, "pods")
                .map_or(UNKNOWN.into(), |s| quantity(present(s, "/current/averageValue")));
            format!("{current}/{}", quantity(present(source("pods"), "/target/averageValue")))
        }
        "Object" => value_cell(source("object"), status_source(status, "object")),
        "External" => value_cell(source("external"), status_source(status, "external")),
        _ => "<unknown type>".into(),
    }
}

/// The TARGETS cell of an autoscaling/v2 object.
pub fn targets(o: &Value) -> String {
    let specs = o.pointer("/spec/metrics").and_then(Value::as_array).map_or(&[][..], Vec::as_slice);
    if specs.is_empty() {
        return "<none>".into();
    }
    let statuses = o
        .pointer("/status/currentMetrics")
        .and_then(Value::as_array)
        .map_or(&[][..], Vec::as_slice);
    let cells: Vec<String> =
        specs.iter().take(SHOWN).enumerate().map(|(i, s)| cell(s, statuses.get(i))).collect();
    let text = cells.join(", ");
    if specs.len() > SHOWN {
        format!("{text} + {} more...", specs.len() - SHOWN)
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn hpa(metrics: Value, current: Value) -> Value {
        json!({"spec": {"metrics": metrics}, "status": {"currentMetrics": current}})
    }

    #[test]
    fn every_metric_type_prints_current_over_target() {
        let cases = [
            (
                json!({"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 50}}}),
                json!({"type": "Resource", "resource": {"name": "cpu", "current": {"averageUtilization": 80, "averageValue": "400m"}}}),
                "cpu: 80%/50%",
            ),
            (
                json!({"type": "Resource", "resource": {"name": "cpu", "target": {"type": "AverageValue", "averageValue": "500m"}}}),
                json!({"type": "Resource", "resource": {"name": "cpu", "current": {"averageValue": "0.25"}}}),
                "cpu: 250m/500m",
            ),
            (
                json!({"type": "Pods", "pods": {"metric": {"name": "qps"}, "target": {"type": "AverageValue", "averageValue": "1000"}}}),
                json!({"type": "Pods", "pods": {"metric": {"name": "qps"}, "current": {"averageValue": "250"}}}),
                "250/1k",
            ),
            (
                json!({"type": "Object", "object": {"metric": {"name": "hits"}, "target": {"type": "Value", "value": "10k"}}}),
                json!({"type": "Object", "object": {"metric": {"name": "hits"}, "current": {"value": "2k"}}}),
                "2k/10k",
            ),
            (
                json!({"type": "Object", "object": {"metric": {"name": "hits"}, "target": {"type": "AverageValue", "averageValue": "100"}}}),
                json!({"type": "Object", "object": {"metric": {"name": "hits"}, "current": {"value": "0", "averageValue": "50"}}}),
                "50/100 (avg)",
            ),
            (
                json!({"type": "External", "external": {"metric": {"name": "queue"}, "target": {"type": "Value", "value": "30"}}}),
                json!({"type": "External", "external": {"metric": {"name": "queue"}, "current": {"value": "12"}}}),
                "12/30",
            ),
            (
                json!({"type": "External", "external": {"metric": {"name": "queue"}, "target": {"type": "AverageValue", "averageValue": "30"}}}),
                json!({"type": "External", "external": {"metric": {"name": "queue"}, "current": {"averageValue": "7"}}}),
                "7/30 (avg)",
            ),
            (
                json!({"type": "ContainerResource", "containerResource": {"name": "memory", "container": "app", "target": {"type": "AverageValue", "averageValue": "512Mi"}}}),
                json!({"type": "ContainerResource", "containerResource": {"name": "memory", "container": "app", "current": {"averageValue": "256Mi"}}}),
                "memory: 256Mi/512Mi",
            ),
            (
                json!({"type": "ContainerResource", "containerResource": {"name": "cpu", "container": "app", "target": {"type": "Utilization", "averageUtilization": 60}}}),
                json!({"type": "ContainerResource", "containerResource": {"name": "cpu", "container": "app", "current": {"averageUtilization": 30}}}),
                "cpu: 30%/60%",
            ),
        ];
        for (spec, status, want) in cases {
            assert_eq!(targets(&hpa(json!([spec.clone()]), json!([status]))), want, "{spec}");
        }
    }

    #[test]
    fn unknown_current_values_and_more_metrics() {
        let metrics = json!([
            {"type": "Resource", "resource": {"name": "cpu", "target": {"type": "AverageValue", "averageValue": "500m"}}},
            {"type": "Pods", "pods": {"metric": {"name": "qps"}, "target": {"type": "AverageValue", "averageValue": "10"}}},
            {"type": "External", "external": {"metric": {"name": "q"}, "target": {"type": "AverageValue", "averageValue": "3"}}},
            {"type": "Object", "object": {"metric": {"name": "o"}, "target": {"type": "Value", "value": "1"}}},
        ]);
        assert_eq!(
            targets(&hpa(metrics.clone(), Value::Null)),
            "cpu: <unknown>/500m, <unknown>/10 + 2 more..."
        );
        // Statuses are matched by position, as upstream matches them.
        let current = json!([{"type": "Resource", "resource": {"name": "cpu", "current": {"averageValue": "250m"}}}]);
        assert_eq!(targets(&hpa(metrics, current)), "cpu: 250m/500m, <unknown>/10 + 2 more...");
        let cpu = json!([{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization"}}}]);
        assert_eq!(targets(&hpa(cpu, json!([]))), "cpu: <unknown>/<auto>");
        assert_eq!(targets(&json!({"spec": {}})), "<none>");
        assert_eq!(targets(&hpa(json!([{"type": "Nonsense"}]), Value::Null)), "<unknown type>");
    }
}
