//! Nodes: status may be set on create, the spec.unschedulable field selector, and the
//! STATUS / ROLES / VERSION columns (wide: addresses, OS image, kernel, runtime).

use serde_json::{json, Value};

use super::pods::none_if_empty;
use crate::registry::object;
use crate::registry::strategy::{Column, Strategy};

/// The Node strategy.
pub struct NodeStrategy;

impl Strategy for NodeStrategy {
    fn tracks_generation(&self) -> Option<bool> {
        Some(false)
    }

    fn keeps_status_on_create(&self) -> bool {
        true
    }

    fn field_labels(&self) -> &'static [&'static str] {
        &["spec.unschedulable"]
    }

    fn field_value(&self, obj: &Value, field: &str) -> String {
        match field {
            "spec.unschedulable" => {
                object::path(obj, field).and_then(Value::as_bool).unwrap_or(false).to_string()
            }
            other => object::scalar_string(object::path(obj, other)),
        }
    }

    fn columns(&self) -> Vec<Column> {
        vec![
            Column::NAME,
            Column::new("Status", "string", 0, |o| json!(node_status(o))),
            Column::new("Roles", "string", 0, |o| json!(roles(o))),
            Column::AGE,
            Column::new("Version", "string", 0, |o| {
                json!(object::str_at(o, "status.nodeInfo.kubeletVersion").unwrap_or(""))
            }),
            Column::new("Internal-IP", "string", 1, |o| {
                none_if_empty(address(o, "InternalIP").as_deref())
            }),
            Column::new("External-IP", "string", 1, |o| {
                none_if_empty(address(o, "ExternalIP").as_deref())
            }),
            Column::new("OS-Image", "string", 1, |o| {
                json!(object::str_at(o, "status.nodeInfo.osImage").unwrap_or("<unknown>"))
            }),
            Column::new("Kernel-Version", "string", 1, |o| {
                json!(object::str_at(o, "status.nodeInfo.kernelVersion").unwrap_or("<unknown>"))
            }),
            Column::new("Container-Runtime", "string", 1, |o| {
                json!(object::str_at(o, "status.nodeInfo.containerRuntimeVersion")
                    .unwrap_or("<unknown>"))
            }),
        ]
    }
}

fn node_status(o: &Value) -> String {
    let ready = object::path(o, "status.conditions")
        .and_then(Value::as_array)
        .and_then(|cs| cs.iter().find(|c| c.get("type").and_then(Value::as_str) == Some("Ready")))
        .and_then(|c| c.get("status").and_then(Value::as_str));
    let mut s = match ready {
        Some("True") => "Ready".to_string(),
        // Unknown too: kubectl's printer says "Not" + the condition for anything but True.
        Some(_) => "NotReady".to_string(),
        None => "Unknown".to_string(),
    };
    if object::path(o, "spec.unschedulable").and_then(Value::as_bool) == Some(true) {
        s.push_str(",SchedulingDisabled");
    }
    s
}

fn roles(o: &Value) -> String {
    let mut roles: Vec<String> = object::labels(o)
        .iter()
        .filter_map(|(k, v)| {
            if let Some(r) = k.strip_prefix("node-role.kubernetes.io/") {
                (!r.is_empty()).then(|| r.to_string())
            } else if *k == "kubernetes.io/role" {
                (!v.is_empty()).then(|| v.to_string())
            } else {
                None
            }
        })
        .collect();
    roles.sort();
    roles.dedup();
    if roles.is_empty() {
        "<none>".into()
    } else {
        roles.join(",")
    }
}

fn address(o: &Value, kind: &str) -> Option<String> {
    object::path(o, "status.addresses")
        .and_then(Value::as_array)?
        .iter()
        .find(|a| a.get("type").and_then(Value::as_str) == Some(kind))
        .and_then(|a| a.get("address").and_then(Value::as_str).map(String::from))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_columns() {
        let n = json!({"metadata": {"labels": {"node-role.kubernetes.io/control-plane": ""}},
                       "spec": {"unschedulable": true},
                       "status": {"conditions": [{"type": "Ready", "status": "True"}]}});
        assert_eq!(node_status(&n), "Ready,SchedulingDisabled");
        assert_eq!(roles(&n), "control-plane");
        assert_eq!(NodeStrategy.field_value(&json!({}), "spec.unschedulable"), "false");
    }
}
