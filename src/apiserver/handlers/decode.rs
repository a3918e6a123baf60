//! Decoding request objects through their k8s-openapi type: wrong types are a 400, unknown
//! fields are dropped and reported according to fieldValidation (Strict: 400, Warn: Warning
//! header, Ignore: silently).

use serde_json::Value;

use crate::apiserver::status::ApiError;
use crate::registry::catalog::ResourceInfo;

/// The fieldValidation parameter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FieldValidation {
    Ignore,
    Warn,
    Strict,
}

impl FieldValidation {
    /// Parses fieldValidation (default Warn, as upstream).
    pub fn parse(v: Option<&str>) -> Result<Self, ApiError> {
        match v {
            None | Some("") | Some("Warn") => Ok(FieldValidation::Warn),
            Some("Ignore") => Ok(FieldValidation::Ignore),
            Some("Strict") => Ok(FieldValidation::Strict),
            Some(other) => Err(ApiError::bad_request(format!(
                "fieldValidation: Unsupported value: \"{other}\": supported values: \"Ignore\", \"Strict\", \"Warn\""
            ))),
        }
    }
}

/// Decodes `value` as an object of `res`; returns it (unknown fields dropped) and warnings.
pub fn decode_object(
    res: &ResourceInfo,
    mut value: Value,
    validation: FieldValidation,
) -> Result<(Value, Vec<String>), ApiError> {
    coerce_quantities(&mut value, "");
    // Upstream wraps every decode failure, strict ones included, in this sentence.
    let cannot_handle = |e: &dyn std::fmt::Display| {
        ApiError::bad_request(format!(
            "{kind} in version \"{v}\" cannot be handled as a {kind}: {e}",
            kind = res.kind,
            v = res.version
        ))
    };
    let decoded = (res.decode)(&value).map_err(|e| cannot_handle(&e))?;
    let mut unknown = vec![];
    unknown_fields(&value, &decoded, "", &mut unknown);
    let mut decoded = decoded;
    omit_empty(&mut decoded);
    unknown.sort();
    let warnings = match validation {
        FieldValidation::Strict if !unknown.is_empty() => {
            let list: Vec<String> =
                unknown.iter().map(|f| format!("unknown field \"{f}\"")).collect();
            return Err(cannot_handle(&format!("strict decoding error: {}", list.join(", "))));
        }
        FieldValidation::Warn => unknown.iter().map(|f| format!("unknown field \"{f}\"")).collect(),
        _ => vec![],
    };
    Ok((decoded, warnings))
}

/// Drops the empty values Go's `omitempty` leaves out of upstream's objects, so they read back
/// as upstream's do: empty maps and lists and zero generation in object metadata (top level and
/// pod, job and claim templates), and empty node selectors, overheads and resource maps in pod
/// specs.
pub fn omit_empty(obj: &mut Value) {
    omit_empty_meta(obj.get_mut("metadata"));
    let Some(spec) = obj.get_mut("spec") else {
        return;
    };
    for template in ["template", "jobTemplate"] {
        if let Some(t) = spec.get_mut(template) {
            omit_empty_meta(t.get_mut("metadata"));
            omit_empty_pod_spec(t.get_mut("spec"));
            if let Some(inner) = t.pointer_mut("/spec/template") {
                omit_empty_meta(inner.get_mut("metadata"));
                omit_empty_pod_spec(inner.get_mut("spec"));
            }
        }
    }
    if let Some(Value::Array(claims)) = spec.get_mut("volumeClaimTemplates") {
        for claim in claims {
            omit_empty_meta(claim.get_mut("metadata"));
        }
    }
    if spec.get("containers").is_some() {
        omit_empty_pod_spec(Some(spec));
    }
}

fn is_empty_value(v: &Value) -> bool {
    match v {
        Value::Object(m) => m.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::String(s) => s.is_empty(),
        _ => false,
    }
}

fn omit_empty_meta(meta: Option<&mut Value>) {
    let Some(Value::Object(meta)) = meta else {
        return;
    };
    meta.retain(|k, v| match k.as_str() {
        "labels" | "annotations" | "ownerReferences" | "finalizers" | "managedFields" | "name"
        | "generateName" | "namespace" | "uid" | "resourceVersion" | "selfLink" => {
            !is_empty_value(v)
        }
        "generation" => v.as_i64() != Some(0),
        _ => true,
    });
}

fn omit_empty_pod_spec(spec: Option<&mut Value>) {
    let Some(Value::Object(spec)) = spec else {
        return;
    };
    spec.retain(|k, v| !(matches!(k.as_str(), "nodeSelector" | "overhead") && is_empty_value(v)));
    for list in ["initContainers", "containers", "ephemeralContainers"] {
        let Some(Value::Array(containers)) = spec.get_mut(list) else {
            continue;
        };
        for c in containers {
            if let Some(Value::Object(r)) = c.get_mut("resources") {
                r.retain(|k, v| {
                    !(matches!(k.as_str(), "limits" | "requests") && is_empty_value(v))
                });
            }
        }
    }
}

/// Paths (dotted, `[i]` for list items) present and non-null in `original` but gone from
/// `decoded`.
pub fn unknown_fields(original: &Value, decoded: &Value, path: &str, out: &mut Vec<String>) {
    match (original, decoded) {
        (Value::Object(o), Value::Object(d)) => {
            for (k, v) in o {
                if v.is_null() {
                    continue;
                }
                let p = if path.is_empty() { k.clone() } else { format!("{path}.{k}") };
                match d.get(k) {
                    Some(dv) => unknown_fields(v, dv, &p, out),
                    None if is_free_form(path) => {}
                    None => out.push(p),
                }
            }
        }
        (Value::Array(o), Value::Array(d)) => {
            for (i, (ov, dv)) in o.iter().zip(d.iter()).enumerate() {
                unknown_fields(ov, dv, &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

/// Map-valued fields whose keys are data, not schema (a dropped key there is an empty value the
/// typed form did not keep, not an unknown field).
fn is_free_form(path: &str) -> bool {
    let last = path.rsplit('.').next().unwrap_or(path);
    matches!(
        last,
        "labels"
            | "annotations"
            | "data"
            | "stringData"
            | "binaryData"
            | "selector"
            | "matchLabels"
            | "nodeSelector"
    )
}

/// Map fields whose values are resource.Quantity strings, which clients may send as numbers.
const QUANTITY_MAPS: &[&str] = &[
    "limits",
    "requests",
    "hard",
    "used",
    "capacity",
    "allocatable",
    "overhead",
    "max",
    "min",
    "default",
    "defaultRequest",
    "maxLimitRequestRatio",
];

/// Turns JSON numbers where a Quantity is expected into their string form.
pub fn coerce_quantities(v: &mut Value, field: &str) {
    match v {
        Value::Object(m) => {
            let quantity_map = QUANTITY_MAPS.contains(&field);
            for (k, child) in m.iter_mut() {
                if (quantity_map || k == "sizeLimit" || k == "storage") && child.is_number() {
                    *child = Value::String(number_string(child));
                } else {
                    coerce_quantities(child, k);
                }
            }
        }
        Value::Array(items) => {
            for item in items {
                coerce_quantities(item, "");
            }
        }
        _ => {}
    }
}

fn number_string(v: &Value) -> String {
    match v.as_f64() {
        Some(f) if v.is_f64() && f.fract() != 0.0 => {
            let milli = (f * 1000.0).round() as i64;
            if milli % 1000 == 0 {
                (milli / 1000).to_string()
            } else {
                format!("{milli}m")
            }
        }
        _ => v.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::catalog::catalog;
    use serde_json::json;

    fn pods() -> &'static ResourceInfo {
        catalog().find("", "v1", "pods").unwrap()
    }

    fn pod() -> Value {
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "labels": {"a": "b"}},
               "spec": {"foo": 1, "containers": [{"name": "c", "image": "i", "bar": true,
                        "resources": {"limits": {"cpu": 1, "memory": 0.5}}}]}})
    }

    #[test]
    fn strict_rejects_unknown_fields() {
        let e = decode_object(pods(), pod(), FieldValidation::Strict).unwrap_err();
        assert_eq!(e.code, 400);
        assert_eq!(
            e.message,
            "Pod in version \"v1\" cannot be handled as a Pod: strict decoding error: \
             unknown field \"spec.containers[0].bar\", unknown field \"spec.foo\""
        );
    }

    #[test]
    fn warn_reports_and_drops() {
        let (obj, warnings) = decode_object(pods(), pod(), FieldValidation::Warn).unwrap();
        assert_eq!(warnings.len(), 2);
        assert!(obj["spec"].get("foo").is_none());
        assert_eq!(obj["spec"]["containers"][0]["resources"]["limits"]["cpu"], "1");
        assert_eq!(obj["spec"]["containers"][0]["resources"]["limits"]["memory"], "500m");
        let (_, none) = decode_object(pods(), pod(), FieldValidation::Ignore).unwrap();
        assert!(none.is_empty());
    }

    #[test]
    fn empty_metadata_values_are_omitted() {
        let rs = json!({"apiVersion": "apps/v1", "kind": "ReplicaSet",
            "metadata": {"name": "r", "ownerReferences": [], "finalizers": [], "annotations": {}},
            "spec": {"selector": {"matchLabels": {"a": "b"}}, "template": {
                "metadata": {"labels": {"a": "b"}, "annotations": {}, "generation": 0},
                "spec": {"nodeSelector": {}, "containers": [{"name": "c", "image": "i",
                    "resources": {"limits": {}, "requests": {"cpu": "1"}}}]}}}});
        let res = catalog().find("apps", "v1", "replicasets").unwrap();
        let (obj, _) = decode_object(res, rs, FieldValidation::Strict).unwrap();
        assert_eq!(obj["metadata"], json!({"name": "r"}));
        assert_eq!(obj["spec"]["template"]["metadata"], json!({"labels": {"a": "b"}}));
        let spec = &obj["spec"]["template"]["spec"];
        assert!(spec.get("nodeSelector").is_none());
        assert_eq!(spec["containers"][0]["resources"], json!({"requests": {"cpu": "1"}}));
    }

    #[test]
    fn wrong_types_are_bad_requests() {
        let bad = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": 5}});
        let e = decode_object(pods(), bad, FieldValidation::Strict).unwrap_err();
        assert!(
            e.message.starts_with("Pod in version \"v1\" cannot be handled as a Pod:"),
            "{}",
            e.message
        );
    }
}
