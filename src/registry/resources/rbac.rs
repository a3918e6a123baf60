//! RBAC: Roles and ClusterRoles (rules need verbs and, unless they name non-resource URLs,
//! resources), RoleBindings and ClusterRoleBindings (roleRef required and immutable, subject
//! kinds), path-segment names, and the ROLE / USERS / GROUPS / SERVICEACCOUNTS columns.

use serde_json::{json, Value};

use crate::apiserver::status::StatusCause;
use crate::registry::object;
use crate::registry::strategy::{Column, Strategy};
use crate::registry::validation::{self as v, NameRule};

/// The Role and ClusterRole strategy.
pub struct RoleStrategy;

/// The RoleBinding strategy (`cluster`: ClusterRoleBinding, which may only name ClusterRoles).
pub struct BindingStrategy {
    pub cluster: bool,
}

impl Strategy for RoleStrategy {
    fn name_rule(&self) -> NameRule {
        NameRule::PathSegment
    }

    fn validate(&self, obj: &Value) -> Vec<StatusCause> {
        let mut out = vec![];
        for (i, rule) in
            obj.get("rules").and_then(Value::as_array).into_iter().flatten().enumerate()
        {
            let empty =
                |f: &str| rule.get(f).and_then(Value::as_array).is_none_or(|a| a.is_empty());
            if empty("verbs") {
                out.push(v::required(
                    &format!("rules[{i}].verbs"),
                    "verbs must contain at least one value",
                ));
            }
            if empty("nonResourceURLs") {
                if empty("apiGroups") {
                    out.push(v::required(
                        &format!("rules[{i}].apiGroups"),
                        "resource rules must supply at least one api group",
                    ));
                }
                if empty("resources") {
                    out.push(v::required(
                        &format!("rules[{i}].resources"),
                        "resource rules must supply at least one resource",
                    ));
                }
            }
        }
        out
    }

    fn columns(&self) -> Vec<Column> {
        vec![
            Column::NAME,
            Column::new("Created At", "string", 0, |o| {
                object::path(o, "metadata.creationTimestamp").cloned().unwrap_or(Value::Null)
            }),
        ]
    }
}

impl Strategy for BindingStrategy {
    fn name_rule(&self) -> NameRule {
        NameRule::PathSegment
    }

    fn validate(&self, obj: &Value) -> Vec<StatusCause> {
        let mut out = vec![];
        let allowed: &[&str] =
            if self.cluster { &["ClusterRole"] } else { &["ClusterRole", "Role"] };
        match object::str_at(obj, "roleRef.kind") {
            None | Some("") => out.push(v::required("roleRef.kind", "")),
            Some(k) if !allowed.contains(&k) => {
                out.push(v::not_supported("roleRef.kind", &json!(k), allowed))
            }
            _ => {}
        }
        if object::str_at(obj, "roleRef.name").unwrap_or("").is_empty() {
            out.push(v::required("roleRef.name", ""));
        }
        if object::str_at(obj, "roleRef.apiGroup") != Some("rbac.authorization.k8s.io") {
            out.push(v::not_supported(
                "roleRef.apiGroup",
                object::path(obj, "roleRef.apiGroup").unwrap_or(&Value::Null),
                &["rbac.authorization.k8s.io"],
            ));
        }
        for (i, s) in
            obj.get("subjects").and_then(Value::as_array).into_iter().flatten().enumerate()
        {
            let kind = s.get("kind").and_then(Value::as_str).unwrap_or("");
            if !["User", "Group", "ServiceAccount"].contains(&kind) {
                out.push(v::not_supported(
                    &format!("subjects[{i}].kind"),
                    &json!(kind),
                    &["Group", "ServiceAccount", "User"],
                ));
            }
            if s.get("name").and_then(Value::as_str).unwrap_or("").is_empty() {
                out.push(v::required(&format!("subjects[{i}].name"), ""));
            }
        }
        out
    }

    fn validate_update(&self, new: &Value, old: &Value) -> Vec<StatusCause> {
        let mut out = self.validate(new);
        if new.get("roleRef") != old.get("roleRef") {
            out.push(v::invalid(
                "roleRef",
                new.get("roleRef").unwrap_or(&Value::Null),
                "cannot change roleRef",
            ));
        }
        out
    }

    fn columns(&self) -> Vec<Column> {
        vec![
            Column::NAME,
            Column::new("Role", "string", 0, |o| {
                json!(format!(
                    "{}/{}",
                    object::str_at(o, "roleRef.kind").unwrap_or(""),
                    object::str_at(o, "roleRef.name").unwrap_or("")
                ))
            }),
            Column::AGE,
            Column::new("Users", "string", 1, |o| json!(subjects(o, "User"))),
            Column::new("Groups", "string", 1, |o| json!(subjects(o, "Group"))),
            Column::new("ServiceAccounts", "string", 1, |o| json!(subjects(o, "ServiceAccount"))),
        ]
    }
}

fn subjects(o: &Value, kind: &str) -> String {
    o.get("subjects")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter(|s| s.get("kind").and_then(Value::as_str) == Some(kind))
                .map(|s| {
                    let name = s.get("name").and_then(Value::as_str).unwrap_or("");
                    match s.get("namespace").and_then(Value::as_str) {
                        Some(ns) if kind == "ServiceAccount" => format!("{ns}/{name}"),
                        _ => name.to_string(),
                    }
                })
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bindings_keep_their_role() {
        let b = json!({"roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "r"},
                       "subjects": [{"kind": "User", "name": "alice"}]});
        let s = BindingStrategy { cluster: false };
        assert!(s.validate(&b).is_empty());
        let mut moved = b.clone();
        moved["roleRef"]["name"] = json!("other");
        assert_eq!(s.validate_update(&moved, &b)[0].field, "roleRef");
        assert_eq!(BindingStrategy { cluster: true }.validate(&b)[0].field, "roleRef.kind");
        assert_eq!(subjects(&b, "User"), "alice");
        let bad_role = json!({"rules": [{"apiGroups": [""], "resources": ["pods"]}]});
        assert_eq!(RoleStrategy.validate(&bad_role)[0].field, "rules[0].verbs");
    }
}
