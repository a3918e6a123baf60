//! ReplicationControllers: 1 replica and a selector taken from the template labels by default,
//! the DESIRED / CURRENT / READY columns and the status.replicas field selector.

use serde_json::{json, Value};

use super::podspec::{default_template, int_cell, non_negative, validate_pod_spec};
use crate::apiserver::status::StatusCause;
use crate::registry::object::{self, default_field};
use crate::registry::strategy::{Column, Strategy};
use crate::registry::validation as v;

/// The ReplicationController strategy.
pub struct ReplicationControllerStrategy;

impl Strategy for ReplicationControllerStrategy {
    fn default(&self, obj: &mut Value) {
        let labels = object::path(obj, "spec.template.metadata.labels").cloned();
        let Some(spec) = object::ensure_object(obj, "spec") else { return };
        default_field(spec, "replicas", json!(1));
        if let Some(l) = labels {
            default_field(spec, "selector", l);
        }
        default_template(spec.get_mut("template"));
    }

    fn validate(&self, obj: &Value) -> Vec<StatusCause> {
        let mut out = vec![];
        non_negative(obj, "spec.replicas", &mut out);
        let selector = object::string_map(object::path(obj, "spec.selector"));
        if selector.is_empty() {
            out.push(v::required("spec.selector", ""));
        }
        let labels = object::string_map(object::path(obj, "spec.template.metadata.labels"));
        if !selector.iter().all(|s| labels.contains(s)) {
            out.push(v::invalid(
                "spec.template.metadata.labels",
                object::path(obj, "spec.template.metadata.labels").unwrap_or(&Value::Null),
                "`selector` does not match template `labels`",
            ));
        }
        if object::path(obj, "spec.template").is_some() {
            out.extend(validate_pod_spec(
                object::path(obj, "spec.template.spec"),
                "spec.template.spec",
            ));
        }
        out
    }

    fn field_labels(&self) -> &'static [&'static str] {
        &["status.replicas"]
    }

    fn field_value(&self, obj: &Value, field: &str) -> String {
        match field {
            "status.replicas" => {
                object::path(obj, field).and_then(Value::as_i64).unwrap_or(0).to_string()
            }
            other => object::scalar_string(object::path(obj, other)),
        }
    }

    fn columns(&self) -> Vec<Column> {
        vec![
            Column::NAME,
            Column::new("Desired", "integer", 0, |o| int_cell(o, "spec.replicas")),
            Column::new("Current", "integer", 0, |o| int_cell(o, "status.replicas")),
            Column::new("Ready", "integer", 0, |o| int_cell(o, "status.readyReplicas")),
            Column::AGE,
        ]
    }
}
