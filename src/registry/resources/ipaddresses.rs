//! IPAddress (networking.k8s.io/v1): one per allocated service IP, named by the address.

use serde_json::{json, Value};

use crate::apiserver::status::StatusCause;
use crate::registry::object;
use crate::registry::strategy::{Column, Strategy};
use crate::registry::validation::{self as v, NameRule};

/// The IPAddress strategy.
pub struct IpAddressStrategy;

impl Strategy for IpAddressStrategy {
    fn name_rule(&self) -> NameRule {
        NameRule::IpAddress
    }

    fn validate(&self, obj: &Value) -> Vec<StatusCause> {
        let mut out = vec![];
        if object::path(obj, "spec.parentRef").is_none() {
            out.push(v::required("spec.parentRef", ""));
        }
        for f in ["resource", "name"] {
            let path = format!("spec.parentRef.{f}");
            if object::path(obj, "spec.parentRef").is_some()
                && object::str_at(obj, &path).unwrap_or("").is_empty()
            {
                out.push(v::required(&path, ""));
            }
        }
        out
    }

    fn validate_update(&self, new: &Value, old: &Value) -> Vec<StatusCause> {
        let mut out = self.validate(new);
        v::check_immutable(new, old, "spec.parentRef", &mut out);
        out
    }

    fn columns(&self) -> Vec<Column> {
        vec![
            Column::NAME,
            Column::new("ParentRef", "string", 0, |o| {
                let r = |f: &str| {
                    object::str_at(o, &format!("spec.parentRef.{f}")).unwrap_or("").to_string()
                };
                json!(format!("{}/{}/{}", r("resource"), r("namespace"), r("name")))
            }),
        ]
    }
}
