//! ReplicaSets: 1 replica by default, selector matching the template (immutable), the
//! DESIRED / CURRENT / READY columns and the status.replicas field selector.

use serde_json::{json, Value};

use super::podspec::{
    self, default_template, int_cell, non_negative, validate_selector_and_template,
};
use crate::apiserver::status::StatusCause;
use crate::registry::object::{self, default_field};
use crate::registry::strategy::{Column, Strategy};
use crate::registry::validation as v;

/// The ReplicaSet strategy.
pub struct ReplicaSetStrategy;

impl Strategy for ReplicaSetStrategy {
    fn default(&self, obj: &mut Value) {
        let Some(spec) = object::ensure_object(obj, "spec") else { return };
        default_field(spec, "replicas", json!(1));
        default_template(spec.get_mut("template"));
    }

    fn validate(&self, obj: &Value) -> Vec<StatusCause> {
        let mut out = vec![];
        validate_selector_and_template(obj, &mut out);
        non_negative(obj, "spec.replicas", &mut out);
        out
    }

    fn validate_update(&self, new: &Value, old: &Value) -> Vec<StatusCause> {
        let mut out = self.validate(new);
        v::check_immutable(new, old, "spec.selector", &mut out);
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
            podspec::CONTAINERS,
            podspec::IMAGES,
            podspec::SELECTOR,
        ]
    }
}
