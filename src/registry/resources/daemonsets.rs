//! DaemonSets: RollingUpdate (maxUnavailable 1, maxSurge 0) and revisionHistoryLimit 10 by
//! default, the template generation (annotation deprecated.daemonset.template.generation: 1 on
//! create, raised with each template change), selector and template checks, and the DESIRED ...
//! NODE SELECTOR columns.

use serde_json::{json, Value};

use super::podspec::{self, default_template, int_cell, validate_selector_and_template};
use crate::apiserver::status::StatusCause;
use crate::registry::object::{self, default_field};
use crate::registry::strategy::{Column, Ctx, Strategy};
use crate::registry::validation as v;

/// The DaemonSet strategy.
pub struct DaemonSetStrategy;

/// Where the template generation is kept in apps/v1.
const TEMPLATE_GENERATION: &str = "deprecated.daemonset.template.generation";

fn set_template_generation(obj: &mut Value, generation: i64) {
    if let Some(a) = object::ensure_object(obj, "metadata.annotations") {
        a.insert(TEMPLATE_GENERATION.into(), json!(generation.to_string()));
    }
}

fn template_generation(obj: &Value) -> i64 {
    object::path(obj, "metadata.annotations")
        .and_then(|a| a.get(TEMPLATE_GENERATION))
        .and_then(Value::as_str)
        .and_then(|g| g.parse().ok())
        .unwrap_or(0)
}

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

    fn prepare_for_create(&self, _ctx: &Ctx, obj: &mut Value) {
        let generation = template_generation(obj).max(1);
        set_template_generation(obj, generation);
    }

    fn prepare_for_update(&self, _ctx: &Ctx, new: &mut Value, old: &Value) {
        let mut generation = template_generation(old);
        if new.pointer("/spec/template") != old.pointer("/spec/template") {
            generation += 1;
        }
        set_template_generation(new, generation.max(1));
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
