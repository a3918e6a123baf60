//! Events: one store for both APIs. events.k8s.io/v1 Events are stored as core v1 Events and
//! converted on the way in and out (regarding/involvedObject, note/message,
//! reportingController/reportingComponent, deprecated* fields), so `kubectl describe` sees what
//! controllers record through either API. Field selectors and the `kubectl get events` columns.

use serde_json::{json, Map, Value};

use crate::registry::catalog::Conversion;
use crate::registry::object;
use crate::registry::strategy::{Column, Strategy};

/// The Event strategy (both APIs).
pub struct EventStrategy;

/// events.k8s.io/v1 served, core v1 stored.
pub const EVENTS_V1_CONVERSION: Conversion = Conversion {
    storage_group: "core",
    storage_version: "v1",
    storage_resource: "events",
    to_storage: to_core,
    from_storage: from_core,
};

/// (events.k8s.io/v1 field, core v1 field) pairs that only change name.
const RENAMES: &[(&str, &str)] = &[
    ("regarding", "involvedObject"),
    ("note", "message"),
    ("reportingController", "reportingComponent"),
    ("deprecatedSource", "source"),
    ("deprecatedFirstTimestamp", "firstTimestamp"),
    ("deprecatedLastTimestamp", "lastTimestamp"),
    ("deprecatedCount", "count"),
];

impl Strategy for EventStrategy {
    fn allow_create_on_update(&self) -> bool {
        true
    }

    fn field_labels(&self) -> &'static [&'static str] {
        &[
            "involvedObject.kind",
            "involvedObject.namespace",
            "involvedObject.name",
            "involvedObject.uid",
            "involvedObject.apiVersion",
            "involvedObject.resourceVersion",
            "involvedObject.fieldPath",
            "regarding.kind",
            "regarding.namespace",
            "regarding.name",
            "regarding.uid",
            "regarding.apiVersion",
            "regarding.resourceVersion",
            "regarding.fieldPath",
            "reason",
            "reportingComponent",
            "reportingController",
            "source",
            "type",
        ]
    }

    fn field_value(&self, obj: &Value, field: &str) -> String {
        let core = core_view(obj);
        let field = field.replacen("regarding.", "involvedObject.", 1);
        let field =
            if field == "reportingController" { "reportingComponent".to_string() } else { field };
        match field.as_str() {
            "source" => object::str_at(&core, "source.component").unwrap_or("").to_string(),
            f => object::scalar_string(object::path(&core, f)),
        }
    }

    fn columns(&self) -> Vec<Column> {
        vec![
            Column::new("Last Seen", "string", 0, |o| json!(last_seen(&core_view(o)))),
            Column::new("Type", "string", 0, |o| {
                json!(object::str_at(&core_view(o), "type").unwrap_or(""))
            }),
            Column::new("Reason", "string", 0, |o| {
                json!(object::str_at(&core_view(o), "reason").unwrap_or(""))
            }),
            Column::new("Object", "string", 0, |o| json!(target(&core_view(o)))),
            Column::new("Subobject", "string", 1, |o| {
                json!(object::str_at(&core_view(o), "involvedObject.fieldPath").unwrap_or(""))
            }),
            Column::new("Source", "string", 1, |o| json!(source(&core_view(o)))),
            Column::new("Message", "string", 0, |o| {
                json!(object::str_at(&core_view(o), "message").unwrap_or("").trim())
            }),
            Column::new("First Seen", "string", 1, |o| json!(first_seen(&core_view(o)))),
            Column::new("Count", "string", 1, |o| {
                json!(object::path(&core_view(o), "count")
                    .and_then(Value::as_i64)
                    .unwrap_or(0)
                    .to_string())
            }),
            Column { priority: 1, ..Column::NAME },
        ]
    }
}

/// A served events.k8s.io/v1 object as core v1.
pub fn to_core(v: Value) -> Value {
    let Value::Object(mut m) = v else { return v };
    for (new, old) in RENAMES {
        if let Some(x) = m.remove(*new) {
            m.insert((*old).to_string(), x);
        }
    }
    m.insert("apiVersion".into(), json!("v1"));
    m.insert("kind".into(), json!("Event"));
    Value::Object(m)
}

/// A stored core v1 event as events.k8s.io/v1.
pub fn from_core(v: Value) -> Value {
    let Value::Object(m) = v else { return v };
    let mut out = Map::new();
    for (k, x) in m {
        let renamed = RENAMES.iter().find(|(_, old)| *old == k).map(|(new, _)| (*new).to_string());
        out.insert(renamed.unwrap_or(k), x);
    }
    out.insert("apiVersion".into(), json!("events.k8s.io/v1"));
    out.insert("kind".into(), json!("Event"));
    Value::Object(out)
}

fn core_view(o: &Value) -> Value {
    if object::str_at(o, "apiVersion") == Some("events.k8s.io/v1") {
        to_core(o.clone())
    } else {
        o.clone()
    }
}

fn first_seen(e: &Value) -> String {
    match object::path(e, "firstTimestamp").filter(|t| !t.is_null()) {
        Some(t) => object::age(t),
        None => object::age(object::path(e, "eventTime").unwrap_or(&Value::Null)),
    }
}

fn last_seen(e: &Value) -> String {
    let first = first_seen(e);
    let last = match object::path(e, "lastTimestamp").filter(|t| !t.is_null()) {
        Some(t) => object::age(t),
        None => first.clone(),
    };
    if let Some(series) = e.get("series").filter(|s| !s.is_null()) {
        let count = series.get("count").and_then(Value::as_i64).unwrap_or(0);
        let observed = object::age(series.get("lastObservedTime").unwrap_or(&Value::Null));
        return format!("{observed} (x{count} over {first})");
    }
    match e.get("count").and_then(Value::as_i64) {
        Some(n) if n > 1 => format!("{last} (x{n} over {first})"),
        _ => last,
    }
}

fn target(e: &Value) -> String {
    let kind = object::str_at(e, "involvedObject.kind").unwrap_or("").to_ascii_lowercase();
    match object::str_at(e, "involvedObject.name").filter(|n| !n.is_empty()) {
        Some(n) => format!("{kind}/{n}"),
        None => kind,
    }
}

fn source(e: &Value) -> String {
    let component = object::str_at(e, "source.component")
        .or_else(|| object::str_at(e, "reportingComponent"))
        .unwrap_or("");
    match object::str_at(e, "source.host").filter(|h| !h.is_empty()) {
        Some(h) => format!("{component}, {h}"),
        None => component.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversion_round_trips() {
        let v1 = json!({"apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": {"name": "e"},
                        "regarding": {"kind": "Pod", "name": "p"}, "note": "hello", "reportingController": "ctl",
                        "reason": "Started", "type": "Normal", "eventTime": "2024-01-01T00:00:00.000000Z"});
        let core = to_core(v1.clone());
        assert_eq!(core["involvedObject"]["name"], "p");
        assert_eq!(core["message"], "hello");
        assert_eq!(core["apiVersion"], "v1");
        assert_eq!(from_core(core), v1);
        assert_eq!(EventStrategy.field_value(&v1, "involvedObject.name"), "p");
        assert_eq!(EventStrategy.field_value(&v1, "regarding.kind"), "Pod");
        assert_eq!(target(&to_core(v1)), "pod/p");
    }
}
