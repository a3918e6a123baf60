//! Secrets: type Opaque by default, stringData folded into data (base64), per-type required
//! keys, the type may not change, the `immutable` flag, and the TYPE and DATA columns.

use base64::Engine;
use serde_json::{json, Value};

use super::configmaps::{config_key, data_count, immutable_data, MAX_DATA_BYTES};
use crate::apiserver::status::StatusCause;
use crate::registry::object;
use crate::registry::strategy::{Column, Strategy};
use crate::registry::validation as v;

/// The Secret strategy.
pub struct SecretStrategy;

impl Strategy for SecretStrategy {
    fn default(&self, obj: &mut Value) {
        let Some(m) = obj.as_object_mut() else { return };
        object::default_field(m, "type", json!("Opaque"));
        if let Some(Value::Object(string_data)) = m.remove("stringData") {
            let data = m.entry("data").or_insert_with(|| json!({}));
            if !data.is_object() {
                *data = json!({});
            }
            if let Some(d) = data.as_object_mut() {
                for (k, val) in string_data {
                    let s = val.as_str().unwrap_or_default();
                    d.insert(k, json!(base64::engine::general_purpose::STANDARD.encode(s)));
                }
            }
        }
    }

    fn validate(&self, obj: &Value) -> Vec<StatusCause> {
        let mut out = vec![];
        let data = obj.get("data").and_then(Value::as_object);
        let mut total = 0;
        for (k, val) in data.into_iter().flatten() {
            total += val.as_str().map_or(0, |s| s.len() * 3 / 4);
            for why in config_key(k) {
                out.push(v::invalid(&format!("data[{k}]"), &json!(k), &why));
            }
        }
        if total > MAX_DATA_BYTES {
            out.push(v::too_long("data", MAX_DATA_BYTES));
        }
        let has = |k: &str| data.is_some_and(|d| d.contains_key(k));
        match object::str_at(obj, "type").unwrap_or("Opaque") {
            "kubernetes.io/service-account-token" => {
                let annotation = object::path(obj, "metadata.annotations")
                    .and_then(|a| a.get("kubernetes.io/service-account.name"))
                    .and_then(Value::as_str)
                    .unwrap_or("");
                if annotation.is_empty() {
                    out.push(v::required(
                        "metadata.annotations[kubernetes.io/service-account.name]",
                        "",
                    ));
                }
            }
            "kubernetes.io/dockercfg" if !has(".dockercfg") => {
                out.push(v::required("data[.dockercfg]", ""))
            }
            "kubernetes.io/dockerconfigjson" if !has(".dockerconfigjson") => {
                out.push(v::required("data[.dockerconfigjson]", ""))
            }
            "kubernetes.io/basic-auth" if !has("username") && !has("password") => {
                out.push(v::required("data[username]", ""));
                out.push(v::required("data[password]", ""));
            }
            "kubernetes.io/ssh-auth" if !has("ssh-privatekey") => {
                out.push(v::required("data[ssh-privatekey]", ""))
            }
            "kubernetes.io/tls" => {
                for k in ["tls.crt", "tls.key"] {
                    if !has(k) {
                        out.push(v::required(&format!("data[{k}]"), ""));
                    }
                }
            }
            _ => {}
        }
        out
    }

    fn validate_update(&self, new: &Value, old: &Value) -> Vec<StatusCause> {
        let mut out = self.validate(new);
        if new.get("type") != old.get("type") {
            out.push(v::immutable("type", new.get("type").unwrap_or(&Value::Null)));
        }
        immutable_data(new, old, &["data"], &mut out);
        out
    }

    fn field_labels(&self) -> &'static [&'static str] {
        &["type"]
    }

    fn columns(&self) -> Vec<Column> {
        vec![
            Column::NAME,
            Column::new("Type", "string", 0, |o| json!(object::str_at(o, "type").unwrap_or(""))),
            Column::new("Data", "integer", 0, |o| json!(data_count(o))),
            Column::AGE,
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn string_data_folds_into_data() {
        let mut s = json!({"data": {"a": "YQ=="}, "stringData": {"b": "hello"}});
        SecretStrategy.default(&mut s);
        assert_eq!(s["type"], "Opaque");
        assert_eq!(s["data"]["b"], "aGVsbG8=");
        assert!(s.get("stringData").is_none());
        let tls = json!({"type": "kubernetes.io/tls", "data": {"tls.crt": ""}});
        assert_eq!(SecretStrategy.validate(&tls)[0].field, "data[tls.key]");
        let old = json!({"type": "Opaque"});
        assert_eq!(SecretStrategy.validate_update(&json!({"type": "x"}), &old)[0].field, "type");
    }
}
