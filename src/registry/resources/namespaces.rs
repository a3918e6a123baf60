//! Namespaces: phase Active and the `kubernetes` finalizer on create, the
//! kubernetes.io/metadata.name label, deletion that waits (phase Terminating) until the namespace
//! controller has emptied the namespace and cleared spec.finalizers through /finalize, and the
//! system namespaces that may not be deleted.

use serde_json::{json, Value};

use crate::apiserver::status::{ApiError, StatusCause};
use crate::registry::object;
use crate::registry::strategy::{Column, Ctx, Strategy};
use crate::registry::validation::NameRule;

/// The Namespace strategy.
pub struct NamespaceStrategy;

/// The finalizer the namespace controller removes once a namespace is empty.
pub const KUBERNETES_FINALIZER: &str = "kubernetes";
/// The label every namespace carries with its own name.
pub const NAME_LABEL: &str = "kubernetes.io/metadata.name";
/// Namespaces that may never be deleted.
pub const IMMORTAL: &[&str] = &["default", "kube-system", "kube-public"];

impl Strategy for NamespaceStrategy {
    fn name_rule(&self) -> NameRule {
        NameRule::Label
    }

    fn tracks_generation(&self) -> Option<bool> {
        Some(false)
    }

    fn default(&self, obj: &mut Value) {
        let name = object::name(obj).to_string();
        if !name.is_empty() {
            let meta = object::meta_mut(obj);
            let labels = meta.entry("labels").or_insert_with(|| json!({}));
            if let Some(l) = labels.as_object_mut() {
                l.insert(NAME_LABEL.into(), json!(name));
            }
        }
    }

    fn prepare_for_create(&self, _ctx: &Ctx, obj: &mut Value) {
        obj["status"] = json!({"phase": "Active"});
        object::set_at(obj, "spec.finalizers", json!([KUBERNETES_FINALIZER]));
        self.default(obj);
    }

    fn prepare_for_update(&self, _ctx: &Ctx, new: &mut Value, old: &Value) {
        // spec.finalizers change only through /finalize.
        match object::path(old, "spec.finalizers") {
            Some(f) => object::set_at(new, "spec.finalizers", f.clone()),
            None => {
                object::remove_at(new, "spec.finalizers");
            }
        }
    }

    fn validate(&self, obj: &Value) -> Vec<StatusCause> {
        let mut out = vec![];
        for (i, f) in object::path(obj, "spec.finalizers")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            let name = f.as_str().unwrap_or("");
            let errs = crate::registry::validation::qualified_name(name);
            if !errs.is_empty() {
                out.push(crate::registry::validation::invalid(
                    &format!("spec.finalizers[{i}]"),
                    f,
                    &errs.join("; "),
                ));
            }
        }
        out
    }

    fn validate_status_update(&self, new: &Value, _old: &Value) -> Vec<StatusCause> {
        match object::str_at(new, "status.phase") {
            None | Some("Active" | "Terminating") => vec![],
            Some(p) => vec![crate::registry::validation::not_supported(
                "status.phase",
                &json!(p),
                &["Active", "Terminating"],
            )],
        }
    }

    fn field_labels(&self) -> &'static [&'static str] {
        &["status.phase"]
    }

    fn columns(&self) -> Vec<Column> {
        vec![
            Column::NAME,
            Column::new("Status", "string", 0, |o| {
                json!(object::str_at(o, "status.phase").unwrap_or(""))
            }),
            Column::AGE,
        ]
    }

    fn return_deleted_object(&self) -> bool {
        true
    }

    fn check_delete(&self, obj: &Value) -> Result<(), ApiError> {
        let name = object::name(obj);
        if IMMORTAL.contains(&name) {
            return Err(ApiError::forbidden(format!(
                "namespaces \"{name}\" is forbidden: this namespace may not be deleted"
            )));
        }
        Ok(())
    }

    fn defer_delete(&self, obj: &mut Value) -> bool {
        if self.finalized(obj) {
            return false;
        }
        object::set_at(obj, "status.phase", json!("Terminating"));
        true
    }

    fn finalized(&self, obj: &Value) -> bool {
        object::path(obj, "spec.finalizers").and_then(Value::as_array).is_none_or(|f| f.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_sets_phase_finalizer_and_label() {
        let mut ns = json!({"metadata": {"name": "team"}});
        NamespaceStrategy.prepare_for_create(&Ctx::default(), &mut ns);
        assert_eq!(ns["status"]["phase"], "Active");
        assert_eq!(ns["spec"]["finalizers"], json!(["kubernetes"]));
        assert_eq!(ns["metadata"]["labels"][NAME_LABEL], "team");
        assert!(NamespaceStrategy.defer_delete(&mut ns));
        assert_eq!(ns["status"]["phase"], "Terminating");
        assert!(NamespaceStrategy.check_delete(&json!({"metadata": {"name": "default"}})).is_err());
    }
}
