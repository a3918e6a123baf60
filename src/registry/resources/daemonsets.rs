//! DaemonSets: RollingUpdate (maxUnavailable 1, maxSurge 0) and revisionHistoryLimit 10 by
//! default, selector and template checks, and the DESIRED ... NODE SELECTOR columns.

use serde_json::{json, Value};

use super::podspec::{self, default_template, int_cell, validate_selector_and_template};
use crate::apiserver::status::StatusCause;
use crate::registry::object::{self, default_field};
use crate::registry::strategy::{Column, Strategy};
use crate::registry::validation as v;

/// The DaemonSet strategy.
pub struct DaemonSetStrategy;

impl Strategy for DaemonSetStrategy {
    fn default(&self, obj: &mut Value) {
        let Some(spec) = object::ensure_object(obj, "spec") else { return };
        default_field(spec, "updateStrategy", json!({}));
        if let Some(us) = spec.get_mut("updateStrategy").and_then(Value::as_object_mut) {
            default_field(us, "type", json!("RollingUpdate"));
            if us.get("type").and_then(Value::as_str) == Some("RollingUpdate") {
                default_field(us, "rollingUpdate", json!({}));
                if let Some(ru) = us.get_mut("rollingUpdate").and_then(Value::as_object_mut) {
                    default_field(ru, "maxUnavailable", json!(1));
                    default_field(ru, "maxSurge", json!(0));
                }
            }
        }
        default_field(spec, "revisionHistoryLimit", json!(10));
        default_template(spec.get_mut("template"));
    }

    fn validate(&self, obj: &Value) -> Vec<StatusCause> {
        let mut out = vec![];
        validate_selector_and_template(obj, &mut out);
        out
    }

    fn validate_update(&self, new: &Value, old: &Value) -> Vec<StatusCause> {
        let mut out = self.validate(new);
        v::check_immutable(new, old, "spec.selector", &mut out);
        out
    }

    fn columns(&self) -> Vec<Column> {
        vec![
            Column::NAME,
            Column::new("Desired", "integer", 0, |o| int_cell(o, "status.desiredNumberScheduled")),
            Column::new("Current", "integer", 0, |o| int_cell(o, "status.currentNumberScheduled")),
            Column::new("Ready", "integer", 0, |o| int_cell(o, "status.numberReady")),
            Column::new("Up-to-date", "integer", 0, |o| {
                int_cell(o, "status.updatedNumberScheduled")
            }),
            Column::new("Available", "integer", 0, |o| int_cell(o, "status.numberAvailable")),
            Column::new("Node Selector", "string", 0, |o| {
                let mut s: Vec<String> =
                    object::string_map(object::path(o, "spec.template.spec.nodeSelector"))
                        .iter()
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect();
                s.sort();
                json!(if s.is_empty() { "<none>".to_string() } else { s.join(",") })
            }),
            Column::AGE,
            podspec::CONTAINERS,
            podspec::IMAGES,
            podspec::SELECTOR,
        ]
    }
}
