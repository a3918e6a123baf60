//! Deployments: defaults (1 replica, RollingUpdate 25%/25%, revisionHistoryLimit 10,
//! progressDeadlineSeconds 600, pod template defaults), a selector that must match the
//! template and may not change, and the READY / UP-TO-DATE / AVAILABLE columns.

use serde_json::{json, Value};

use super::podspec::{
    self, default_template, int_cell, non_negative, validate_selector_and_template,
};
use crate::apiserver::status::StatusCause;
use crate::registry::object::{self, default_field};
use crate::registry::strategy::{Column, Strategy};
use crate::registry::validation as v;

/// The Deployment strategy.
pub struct DeploymentStrategy;

impl Strategy for DeploymentStrategy {
    fn default(&self, obj: &mut Value) {
        let Some(spec) = object::ensure_object(obj, "spec") else { return };
        default_field(spec, "replicas", json!(1));
        default_field(spec, "strategy", json!({}));
        if let Some(st) = spec.get_mut("strategy").and_then(Value::as_object_mut) {
            default_field(st, "type", json!("RollingUpdate"));
            if st.get("type").and_then(Value::as_str) == Some("RollingUpdate") {
                default_field(st, "rollingUpdate", json!({}));
                if let Some(ru) = st.get_mut("rollingUpdate").and_then(Value::as_object_mut) {
                    default_field(ru, "maxUnavailable", json!("25%"));
                    default_field(ru, "maxSurge", json!("25%"));
                }
            }
        }
        default_field(spec, "revisionHistoryLimit", json!(10));
        default_field(spec, "progressDeadlineSeconds", json!(600));
        default_template(spec.get_mut("template"));
    }

    fn validate(&self, obj: &Value) -> Vec<StatusCause> {
        let mut out = vec![];
        validate_selector_and_template(obj, &mut out);
        for f in ["spec.replicas", "spec.revisionHistoryLimit", "spec.minReadySeconds"] {
            non_negative(obj, f, &mut out);
        }
        match object::str_at(obj, "spec.strategy.type") {
            Some("Recreate") if object::path(obj, "spec.strategy.rollingUpdate").is_some() => {
                out.push(v::forbidden(
                    "spec.strategy.rollingUpdate",
                    "may not be specified when strategy `type` is 'Recreate'",
                ));
            }
            Some("Recreate" | "RollingUpdate") | None => {}
            Some(other) => out.push(v::not_supported(
                "spec.strategy.type",
                &json!(other),
                &["Recreate", "RollingUpdate"],
            )),
        }
        if object::path(obj, "spec.template.spec.restartPolicy")
            .and_then(Value::as_str)
            .is_some_and(|p| p != "Always")
        {
            out.push(v::not_supported(
                "spec.template.spec.restartPolicy",
                &object::path(obj, "spec.template.spec.restartPolicy").cloned().unwrap_or_default(),
                &["Always"],
            ));
        }
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
            Column::new("Ready", "string", 0, |o| {
                let ready =
                    object::path(o, "status.readyReplicas").and_then(Value::as_i64).unwrap_or(0);
                let want = object::path(o, "spec.replicas").and_then(Value::as_i64).unwrap_or(0);
                json!(format!("{ready}/{want}"))
            }),
            Column::new("Up-to-date", "integer", 0, |o| int_cell(o, "status.updatedReplicas")),
            Column::new("Available", "integer", 0, |o| int_cell(o, "status.availableReplicas")),
            Column::AGE,
            podspec::CONTAINERS,
            podspec::IMAGES,
            podspec::SELECTOR,
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deploy() -> Value {
        json!({"spec": {"selector": {"matchLabels": {"app": "a"}},
               "template": {"metadata": {"labels": {"app": "a"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}}})
    }

    #[test]
    fn defaults_and_validation() {
        let mut d = deploy();
        DeploymentStrategy.default(&mut d);
        assert_eq!(d["spec"]["replicas"], 1);
        assert_eq!(
            d["spec"]["strategy"],
            json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}})
        );
        assert_eq!(d["spec"]["revisionHistoryLimit"], 10);
        assert_eq!(d["spec"]["progressDeadlineSeconds"], 600);
        assert!(DeploymentStrategy.validate(&d).is_empty());
        let mut bad = d.clone();
        bad["spec"]["template"]["metadata"]["labels"] = json!({"app": "b"});
        assert_eq!(DeploymentStrategy.validate(&bad)[0].field, "spec.template.metadata.labels");
        let mut moved = d.clone();
        moved["spec"]["selector"] = json!({"matchLabels": {"app": "b"}});
        moved["spec"]["template"]["metadata"]["labels"] = json!({"app": "b"});
        assert_eq!(DeploymentStrategy.validate_update(&moved, &d)[0].field, "spec.selector");
    }
}
