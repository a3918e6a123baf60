//! Small accessors over objects held as `serde_json::Value`: dotted-path lookups, metadata
//! fields, and setting defaults only where a field is absent.

use serde_json::{Map, Value};

/// The value at a dotted path ("spec.template.metadata"); None if any step is missing.
pub fn path<'a>(obj: &'a Value, dotted: &str) -> Option<&'a Value> {
    let mut cur = obj;
    for part in dotted.split('.') {
        cur = cur.get(part)?;
    }
    Some(cur)
}

/// The string at a dotted path, if it is a string.
pub fn str_at<'a>(obj: &'a Value, dotted: &str) -> Option<&'a str> {
    path(obj, dotted).and_then(Value::as_str)
}

/// The object at a dotted path, created (as empty objects) where missing. Returns None only if
/// a step exists and is not an object.
pub fn ensure_object<'a>(obj: &'a mut Value, dotted: &str) -> Option<&'a mut Map<String, Value>> {
    let mut cur = obj;
    if cur.is_null() {
        *cur = Value::Object(Map::new());
    }
    for part in dotted.split('.').filter(|p| !p.is_empty()) {
        let map = cur.as_object_mut()?;
        let next = map.entry(part.to_string()).or_insert_with(|| Value::Object(Map::new()));
        if next.is_null() {
            *next = Value::Object(Map::new());
        }
        cur = next;
    }
    cur.as_object_mut()
}

/// Sets `key` in the object `map` to `value` unless it is present and not null.
pub fn default_field(map: &mut Map<String, Value>, key: &str, value: Value) {
    match map.get(key) {
        Some(v) if !v.is_null() => {}
        _ => {
            map.insert(key.to_string(), value);
        }
    }
}

/// Sets a default at `dotted` (the last step is the field) where the parent is an object.
pub fn default_at(obj: &mut Value, dotted: &str, value: Value) {
    let (parent, key) = match dotted.rsplit_once('.') {
        Some((p, k)) => (p, k),
        None => ("", dotted),
    };
    if let Some(map) = ensure_object(obj, parent) {
        default_field(map, key, value);
    }
}

/// Removes the field at a dotted path, if present.
pub fn remove_at(obj: &mut Value, dotted: &str) -> Option<Value> {
    let (parent, key) = match dotted.rsplit_once('.') {
        Some((p, k)) => (p, k),
        None => ("", dotted),
    };
    let mut cur = obj;
    for part in parent.split('.').filter(|p| !p.is_empty()) {
        cur = cur.get_mut(part)?;
    }
    cur.as_object_mut()?.remove(key)
}

/// Sets the field at a dotted path, creating parents.
pub fn set_at(obj: &mut Value, dotted: &str, value: Value) {
    let (parent, key) = match dotted.rsplit_once('.') {
        Some((p, k)) => (p, k),
        None => ("", dotted),
    };
    if let Some(map) = ensure_object(obj, parent) {
        map.insert(key.to_string(), value);
    }
}

/// metadata.name ("" if unset).
pub fn name(obj: &Value) -> &str {
    str_at(obj, "metadata.name").unwrap_or("")
}

/// metadata.namespace ("" if unset).
pub fn namespace(obj: &Value) -> &str {
    str_at(obj, "metadata.namespace").unwrap_or("")
}

/// metadata.uid ("" if unset).
pub fn uid(obj: &Value) -> &str {
    str_at(obj, "metadata.uid").unwrap_or("")
}

/// metadata.resourceVersion ("" if unset).
pub fn resource_version(obj: &Value) -> &str {
    str_at(obj, "metadata.resourceVersion").unwrap_or("")
}

/// The metadata object, created if missing.
pub fn meta_mut(obj: &mut Value) -> &mut Map<String, Value> {
    if !obj.is_object() {
        *obj = Value::Object(Map::new());
    }
    let map = obj.as_object_mut().expect("just made an object");
    let meta = map.entry("metadata").or_insert_with(|| Value::Object(Map::new()));
    if !meta.is_object() {
        *meta = Value::Object(Map::new());
    }
    meta.as_object_mut().expect("just made an object")
}

/// metadata.labels as (key, value) pairs.
pub fn labels(obj: &Value) -> Vec<(&str, &str)> {
    string_map(path(obj, "metadata.labels"))
}

/// A JSON object of strings as pairs (non-strings skipped).
pub fn string_map(v: Option<&Value>) -> Vec<(&str, &str)> {
    v.and_then(Value::as_object)
        .map(|m| m.iter().filter_map(|(k, v)| Some((k.as_str(), v.as_str()?))).collect())
        .unwrap_or_default()
}

/// metadata.finalizers.
pub fn finalizers(obj: &Value) -> Vec<String> {
    path(obj, "metadata.finalizers")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(|v| v.as_str().map(String::from)).collect())
        .unwrap_or_default()
}

/// Replaces metadata.finalizers (removing the field when empty).
pub fn set_finalizers(obj: &mut Value, finalizers: &[String]) {
    let meta = meta_mut(obj);
    if finalizers.is_empty() {
        meta.remove("finalizers");
    } else {
        meta.insert("finalizers".into(), Value::from(finalizers.to_vec()));
    }
}

/// Whether metadata.deletionTimestamp is set.
pub fn is_deleting(obj: &Value) -> bool {
    path(obj, "metadata.deletionTimestamp").is_some_and(|v| !v.is_null())
}

/// Renders a scalar for selectors and table cells ("" for null/missing).
pub fn scalar_string(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

/// The current time as upstream formats metav1.Time (RFC 3339, seconds, Z).
pub fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// The current time as metav1.MicroTime (RFC 3339 with microseconds).
pub fn now_micro() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// The age of an RFC 3339 timestamp as kubectl shows it ("<unknown>" if unset).
pub fn age(ts: &Value) -> String {
    let Some(t) = ts.as_str().and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok()) else {
        return "<unknown>".into();
    };
    let secs = (chrono::Utc::now() - t.with_timezone(&chrono::Utc)).num_seconds();
    human_duration(secs)
}

/// A duration in seconds rendered the way Kubernetes prints ages: precise when short, coarser
/// as it grows ("45s", "3m20s", "15m", "5h10m", "2d3h", "3y45d").
pub fn human_duration(secs: i64) -> String {
    if secs < -1 {
        return "<invalid>".into();
    }
    if secs < 0 {
        return "0s".into();
    }
    if secs < 120 {
        return format!("{secs}s");
    }
    let minutes = secs / 60;
    if minutes < 10 {
        let s = secs % 60;
        return if s == 0 { format!("{minutes}m") } else { format!("{minutes}m{s}s") };
    }
    if minutes < 180 {
        return format!("{minutes}m");
    }
    let hours = secs / 3600;
    if hours < 8 {
        let m = minutes % 60;
        return if m == 0 { format!("{hours}h") } else { format!("{hours}h{m}m") };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    if hours < 24 * 8 {
        let h = hours % 24;
        return if h == 0 { format!("{}d", hours / 24) } else { format!("{}d{h}h", hours / 24) };
    }
    if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    }
    if hours < 24 * 365 * 8 {
        let d = (hours / 24) % 365;
        return if d == 0 {
            format!("{}y", hours / 24 / 365)
        } else {
            format!("{}y{d}d", hours / 24 / 365)
        };
    }
    format!("{}y", hours / 24 / 365)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn defaults_only_fill_gaps() {
        let mut o = json!({"spec": {"replicas": 3, "paused": null}});
        default_at(&mut o, "spec.replicas", json!(1));
        default_at(&mut o, "spec.paused", json!(false));
        default_at(&mut o, "spec.strategy.type", json!("RollingUpdate"));
        assert_eq!(
            o,
            json!({"spec": {"replicas": 3, "paused": false, "strategy": {"type": "RollingUpdate"}}})
        );
        assert_eq!(remove_at(&mut o, "spec.paused"), Some(json!(false)));
        assert_eq!(str_at(&o, "spec.strategy.type"), Some("RollingUpdate"));
    }
}
