//! Field validation helpers: the name rules Kubernetes applies (DNS-1123 subdomain and label,
//! DNS-1035 label, path segment), label and annotation checks, and constructors for the
//! per-field causes an Invalid status lists.

use serde_json::Value;

use crate::apiserver::status::StatusCause;

/// How the names of one kind are checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NameRule {
    /// A DNS-1123 subdomain (most kinds).
    Subdomain,
    /// A DNS-1123 label (namespaces).
    Label,
    /// A DNS-1035 label (services).
    Dns1035Label,
    /// Anything usable as one URL path segment (RBAC, events).
    PathSegment,
    /// An IP address in canonical form (networking IPAddress).
    IpAddress,
}

impl NameRule {
    /// The reasons `name` breaks this rule (empty when it is fine).
    pub fn check(self, name: &str) -> Vec<String> {
        match self {
            NameRule::Subdomain => dns1123_subdomain(name),
            NameRule::Label => dns1123_label(name),
            NameRule::Dns1035Label => dns1035_label(name),
            NameRule::PathSegment => path_segment_name(name),
            NameRule::IpAddress => match name.parse::<std::net::IpAddr>() {
                Ok(ip) if ip.to_string() == name => vec![],
                Ok(ip) => vec![format!("must be in canonical form (\"{ip}\")")],
                Err(_) => {
                    vec!["must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)".into()]
                }
            },
        }
    }
}

/// A "Required value" cause.
pub fn required(field: &str, detail: &str) -> StatusCause {
    let message = if detail.is_empty() {
        "Required value".to_string()
    } else {
        format!("Required value: {detail}")
    };
    cause("FieldValueRequired", field, message)
}

/// An "Invalid value" cause.
pub fn invalid(field: &str, value: &Value, detail: &str) -> StatusCause {
    let shown = show_value(value);
    let message = if detail.is_empty() {
        format!("Invalid value: {shown}")
    } else {
        format!("Invalid value: {shown}: {detail}")
    };
    cause("FieldValueInvalid", field, message)
}

/// An "Unsupported value" cause listing what is supported.
pub fn not_supported(field: &str, value: &Value, supported: &[&str]) -> StatusCause {
    let list: Vec<String> = supported.iter().map(|s| format!("\"{s}\"")).collect();
    cause(
        "FieldValueNotSupported",
        field,
        format!("Unsupported value: {}: supported values: {}", show_value(value), list.join(", ")),
    )
}

/// A "Forbidden" cause.
pub fn forbidden(field: &str, detail: &str) -> StatusCause {
    cause("FieldValueForbidden", field, format!("Forbidden: {detail}"))
}

/// A "Duplicate value" cause.
pub fn duplicate(field: &str, value: &Value) -> StatusCause {
    cause("FieldValueDuplicate", field, format!("Duplicate value: {}", show_value(value)))
}

/// A "Too long" cause.
pub fn too_long(field: &str, max: usize) -> StatusCause {
    cause("FieldValueTooLong", field, format!("Too long: may not be more than {max} bytes"))
}

/// The cause for a field that may not change after creation.
pub fn immutable(field: &str, value: &Value) -> StatusCause {
    invalid(field, value, "field is immutable")
}

/// Checks that `new` and `old` agree at `path` (dotted, from the object root); an
/// "immutable" cause otherwise.
pub fn check_immutable(new: &Value, old: &Value, path: &str, out: &mut Vec<StatusCause>) {
    let n = crate::registry::object::path(new, path);
    let o = crate::registry::object::path(old, path);
    if n != o {
        out.push(immutable(path, n.unwrap_or(&Value::Null)));
    }
}

/// Why `name` is not a DNS-1123 subdomain.
pub fn dns1123_subdomain(name: &str) -> Vec<String> {
    let mut errs = vec![];
    if name.len() > 253 {
        errs.push("must be no more than 253 characters".to_string());
    }
    let ok = !name.is_empty() && name.split('.').all(is_label_chars);
    if !ok {
        errs.push(
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', \
             and must start and end with an alphanumeric character (e.g. 'example.com', regex used for \
             validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
                .to_string(),
        );
    }
    errs
}

/// Why `name` is not a DNS-1123 label.
pub fn dns1123_label(name: &str) -> Vec<String> {
    let mut errs = vec![];
    if name.len() > 63 {
        errs.push("must be no more than 63 characters".to_string());
    }
    if !is_label_chars(name) {
        errs.push(
            "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and \
             must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used \
             for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
                .to_string(),
        );
    }
    errs
}

/// Why `name` is not a DNS-1035 label.
pub fn dns1035_label(name: &str) -> Vec<String> {
    let mut errs = vec![];
    if name.len() > 63 {
        errs.push("must be no more than 63 characters".to_string());
    }
    let starts_alpha = name.chars().next().is_some_and(|c| c.is_ascii_lowercase());
    if !is_label_chars(name) || !starts_alpha {
        errs.push(
            "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an \
             alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', \
             regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')"
                .to_string(),
        );
    }
    errs
}

/// Why `name` cannot be one URL path segment.
pub fn path_segment_name(name: &str) -> Vec<String> {
    if name == "." || name == ".." {
        return vec![format!("may not be '{name}'")];
    }
    let mut errs = vec![];
    for bad in ["/", "%"] {
        if name.contains(bad) {
            errs.push(format!("may not contain '{bad}'"));
        }
    }
    errs
}

/// Validates metadata.labels (keys are qualified names, values short label values).
pub fn validate_labels(labels: Option<&Value>, field: &str, out: &mut Vec<StatusCause>) {
    let Some(map) = labels.and_then(Value::as_object) else {
        return;
    };
    for (k, v) in map {
        for why in qualified_name(k) {
            out.push(invalid(field, &Value::String(k.clone()), &why));
        }
        match v.as_str() {
            Some(s) => {
                for why in label_value(s) {
                    out.push(invalid(&format!("{field}[{k}]"), v, &why));
                }
            }
            None => out.push(invalid(&format!("{field}[{k}]"), v, "must be a string")),
        }
    }
}

/// Validates metadata.annotations (qualified-name keys, at most 256 KiB in total).
pub fn validate_annotations(annotations: Option<&Value>, field: &str, out: &mut Vec<StatusCause>) {
    let Some(map) = annotations.and_then(Value::as_object) else {
        return;
    };
    let mut total = 0;
    for (k, v) in map {
        total += k.len() + v.as_str().map_or(0, str::len);
        for why in qualified_name(&k.to_ascii_lowercase()) {
            out.push(invalid(field, &Value::String(k.clone()), &why));
        }
    }
    if total > 256 * 1024 {
        out.push(too_long(field, 256 * 1024));
    }
}

/// Why `key` is not a qualified name ("prefix/name" with a DNS subdomain prefix).
pub fn qualified_name(key: &str) -> Vec<String> {
    let (prefix, name) = match key.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    let mut errs = vec![];
    if let Some(p) = prefix {
        if p.is_empty() {
            errs.push("prefix part must be non-empty".to_string());
        } else {
            errs.extend(dns1123_subdomain(p).into_iter().map(|e| format!("prefix part {e}")));
        }
    }
    if name.is_empty() {
        errs.push("name part must be non-empty".to_string());
    } else if name.len() > 63 {
        errs.push("name part must be no more than 63 characters".to_string());
    }
    if !name.is_empty() && !is_qualified_chars(name) {
        errs.push(
            "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end \
             with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for \
             validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')"
                .to_string(),
        );
    }
    errs
}

/// Why `value` is not a label value.
pub fn label_value(value: &str) -> Vec<String> {
    let mut errs = vec![];
    if value.len() > 63 {
        errs.push("must be no more than 63 characters".to_string());
    }
    if !value.is_empty() && !is_qualified_chars(value) {
        errs.push(
            "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or \
             '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  \
             or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"
                .to_string(),
        );
    }
    errs
}

fn cause(reason: &str, field: &str, message: String) -> StatusCause {
    StatusCause { reason: reason.to_string(), message, field: field.to_string() }
}

fn show_value(v: &Value) -> String {
    match v {
        Value::String(s) => format!("{s:?}"),
        Value::Null => "null".to_string(),
        other => other.to_string(),
    }
}

fn is_label_chars(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
}

fn is_qualified_chars(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.iter().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_rules() {
        let cases = [
            (NameRule::Subdomain, "web-1.example", true),
            (NameRule::Subdomain, "Web", false),
            (NameRule::Subdomain, "-a", false),
            (NameRule::Subdomain, "", false),
            (NameRule::Label, "kube-system", true),
            (NameRule::Label, "a.b", false),
            (NameRule::Dns1035Label, "svc-1", true),
            (NameRule::Dns1035Label, "1svc", false),
            (NameRule::PathSegment, "system:controller:x", true),
            (NameRule::PathSegment, "a/b", false),
            (NameRule::PathSegment, "..", false),
            (NameRule::IpAddress, "10.43.0.1", true),
            (NameRule::IpAddress, "10.43.0.01", false),
        ];
        for (rule, name, ok) in cases {
            assert_eq!(rule.check(name).is_empty(), ok, "{rule:?} {name:?}");
        }
    }

    #[test]
    fn labels_are_checked() {
        let mut out = vec![];
        let labels = serde_json::json!({"app": "web", "example.com/tier": "front", "bad key": "x", "k": "-v"});
        validate_labels(Some(&labels), "metadata.labels", &mut out);
        assert_eq!(out.len(), 2, "{out:?}");
        assert_eq!(out[1].field, "metadata.labels[k]");
    }

    #[test]
    fn cause_messages() {
        let c = not_supported("spec.restartPolicy", &"X".into(), &["Always", "Never"]);
        assert_eq!(c.message, "Unsupported value: \"X\": supported values: \"Always\", \"Never\"");
        assert_eq!(required("spec.containers", "").message, "Required value");
    }
}
