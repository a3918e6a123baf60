//! StatefulSets: defaults (1 replica, OrderedReady, RollingUpdate with partition 0,
//! revisionHistoryLimit 10, Retain PVC policies), selector and template checks, and the READY
//! column.

use serde_json::{json, Value};

use super::podspec::{self, default_template, non_negative, validate_selector_and_template};
use crate::apiserver::status::StatusCause;
use crate::registry::object::{self, default_field};
use crate::registry::strategy::{Column, Strategy};
use crate::registry::validation as v;

/// The StatefulSet strategy.
pub struct StatefulSetStrategy;

impl Strategy for StatefulSetStrategy {
    fn default(&self, obj: &mut Value) {
        let Some(spec) = object::ensure_object(obj, "spec") else { return };
        default_field(spec, "replicas", json!(1));
        default_field(spec, "podManagementPolicy", json!("OrderedReady"));
        default_field(spec, "updateStrategy", json!({}));
        if let Some(us) = spec.get_mut("updateStrategy").and_then(Value::as_object_mut) {
            default_field(us, "type", json!("RollingUpdate"));
            if us.get("type").and_then(Value::as_str) == Some("RollingUpdate") {
                default_field(us, "rollingUpdate", json!({}));
                if let Some(ru) = us.get_mut("rollingUpdate").and_then(Value::as_object_mut) {
                    default_field(ru, "partition", json!(0));
                }
            }
        }
        default_field(spec, "revisionHistoryLimit", json!(10));
        default_field(
            spec,
            "persistentVolumeClaimRetentionPolicy",
            json!({"whenDeleted": "Retain", "whenScaled": "Retain"}),
        );
        default_template(spec.get_mut("template"));
        if let Some(claims) = spec.get_mut("volumeClaimTemplates").and_then(Value::as_array_mut) {
            for c in claims {
                if let Some(cs) = c.get_mut("spec").and_then(Value::as_object_mut) {
                    default_field(cs, "volumeMode", json!("Filesystem"));
                }
                if let Some(c) = c.as_object_mut() {
                    default_field(c, "apiVersion", json!("v1"));
                    default_field(c, "kind", json!("PersistentVolumeClaim"));
                }
            }
        }
    }

    fn validate(&self, obj: &Value) -> Vec<StatusCause> {
        let mut out = vec![];
        validate_selector_and_template(obj, &mut out);
        non_negative(obj, "spec.replicas", &mut out);
        match object::str_at(obj, "spec.podManagementPolicy") {
            None | Some("OrderedReady" | "Parallel") => {}
            Some(p) => out.push(v::not_supported(
                "spec.podManagementPolicy",
                &json!(p),
                &["OrderedReady", "Parallel"],
            )),
        }
        out
    }

    fn validate_update(&self, new: &Value, old: &Value) -> Vec<StatusCause> {
        let mut out = self.validate(new);
        // Only replicas, ordinals, template, updateStrategy, persistentVolumeClaimRetentionPolicy
        // and minReadySeconds may change.
        let mut masked = new.get("spec").cloned().unwrap_or_default();
        let old_spec = old.get("spec").cloned().unwrap_or_default();
        for f in [
            "replicas",
            "ordinals",
            "template",
            "updateStrategy",
            "persistentVolumeClaimRetentionPolicy",
            "minReadySeconds",
            "revisionHistoryLimit",
        ] {
            match old_spec.get(f) {
                Some(val) => masked[f] = val.clone(),
                None => {
                    if let Some(m) = masked.as_object_mut() {
                        m.remove(f);
                    }
                }
            }
        }
        if masked != old_spec {
            out.push(v::forbidden(
                "spec",
                "updates to statefulset spec for fields other than 'replicas', 'ordinals', 'template', \
                 'updateStrategy', 'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden",
            ));
        }
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
            Column::AGE,
            podspec::CONTAINERS,
            podspec::IMAGES,
        ]
    }
}
