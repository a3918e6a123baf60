//! ConfigMaps: key validation, the `immutable` flag, and the DATA column.

use serde_json::{json, Value};

use crate::apiserver::status::StatusCause;
use crate::registry::strategy::{Column, Strategy};
use crate::registry::validation as v;

/// The ConfigMap strategy.
pub struct ConfigMapStrategy;

/// The most data a ConfigMap or Secret may hold.
pub const MAX_DATA_BYTES: usize = 1024 * 1024;

impl Strategy for ConfigMapStrategy {
    fn validate(&self, obj: &Value) -> Vec<StatusCause> {
        let mut out = vec![];
        let mut total = 0;
        let data = obj.get("data").and_then(Value::as_object);
        let binary = obj.get("binaryData").and_then(Value::as_object);
        for (field, map) in [("data", data), ("binaryData", binary)] {
            for (k, val) in map.into_iter().flatten() {
                total += k.len() + val.as_str().map_or(0, str::len);
                for why in config_key(k) {
                    out.push(v::invalid(&format!("{field}[{k}]"), &json!(k), &why));
                }
            }
        }
        if let (Some(d), Some(b)) = (data, binary) {
            for k in d.keys().filter(|k| b.contains_key(*k)) {
                out.push(v::invalid(
                    &format!("data[{k}]"),
                    &json!(k),
                    "duplicate of key present in binaryData",
                ));
            }
        }
        if total > MAX_DATA_BYTES {
            out.push(v::too_long("", MAX_DATA_BYTES));
        }
        out
    }

    fn validate_update(&self, new: &Value, old: &Value) -> Vec<StatusCause> {
        let mut out = self.validate(new);
        immutable_data(new, old, &["data", "binaryData"], &mut out);
        out
    }

    fn columns(&self) -> Vec<Column> {
        vec![Column::NAME, Column::new("Data", "integer", 0, |o| json!(data_count(o))), Column::AGE]
    }
}

/// Enforces the `immutable` flag of ConfigMaps and Secrets.
pub fn immutable_data(new: &Value, old: &Value, fields: &[&str], out: &mut Vec<StatusCause>) {
    if old.get("immutable").and_then(Value::as_bool) != Some(true) {
        return;
    }
    if new.get("immutable").and_then(Value::as_bool) != Some(true) {
        out.push(v::forbidden("immutable", "field is immutable when `immutable` is set"));
    }
    for f in fields {
        if new.get(*f) != old.get(*f) {
            out.push(v::forbidden(f, "field is immutable when `immutable` is set"));
        }
    }
}

/// Number of keys in data and binaryData.
pub fn data_count(o: &Value) -> usize {
    ["data", "binaryData"]
        .iter()
        .filter_map(|f| o.get(*f).and_then(Value::as_object))
        .map(|m| m.len())
        .sum()
}

/// Why `key` is not a valid ConfigMap/Secret key.
pub fn config_key(key: &str) -> Vec<String> {
    let mut errs = vec![];
    if key.len() > 253 {
        errs.push("must be no more than 253 characters".into());
    }
    if key.is_empty()
        || !key.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        errs.push(
            "a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  \
             or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')"
                .into(),
        );
    }
    if key == "." || key == ".." || key.starts_with("..") {
        errs.push("must not be '.' or '..' or start with '..'".into());
    }
    errs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_immutability() {
        assert!(
            ConfigMapStrategy.validate(&json!({"data": {"ok.key": "1", "bad key": "2"}})).len()
                == 1
        );
        let old = json!({"immutable": true, "data": {"a": "1"}});
        let new = json!({"immutable": true, "data": {"a": "2"}});
        assert_eq!(ConfigMapStrategy.validate_update(&new, &old)[0].field, "data");
        assert_eq!(data_count(&json!({"data": {"a": "1"}, "binaryData": {"b": ""}})), 2);
    }
}
