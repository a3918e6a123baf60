//! meta.k8s.io Table rendering for `kubectl get`: column definitions from the resource's
//! strategy, one row per object with its cells, and the object itself as PartialObjectMetadata
//! (or whole, or not at all, per includeObject).

use serde_json::{json, Map, Value};

use crate::registry::catalog::ResourceInfo;
use crate::registry::object;
use crate::registry::strategy::Column;

/// What a row carries besides its cells (the includeObject parameter).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IncludeObject {
    None,
    Metadata,
    Object,
}

impl IncludeObject {
    /// Parses includeObject (default Metadata).
    pub fn parse(v: Option<&str>) -> Result<Self, String> {
        match v {
            None | Some("") | Some("Metadata") => Ok(IncludeObject::Metadata),
            Some("None") => Ok(IncludeObject::None),
            Some("Object") => Ok(IncludeObject::Object),
            Some(other) => Err(format!(
                "includeObject: Unsupported value: \"{other}\": supported values: \"Metadata\", \"None\", \"Object\""
            )),
        }
    }
}

/// A Table of `items` with list metadata `list_meta` (resourceVersion, continue).
pub fn table(
    res: &ResourceInfo,
    items: &[Value],
    list_meta: Value,
    version: &str,
    include: IncludeObject,
) -> Value {
    let columns = res.strategy.columns();
    let defs: Vec<Value> = columns
        .iter()
        .map(|c| {
            json!({
                "name": c.name,
                // "date" cells are rendered as ages (strings); "timestamp" cells are upstream's
                // date columns, printed as the RFC 3339 time itself.
                "type": match c.type_ {
                    "date" => "string",
                    "timestamp" => "date",
                    other => other,
                },
                "format": c.format,
                "description": c.description,
                "priority": c.priority,
            })
        })
        .collect();
    let rows: Vec<Value> = items.iter().map(|o| row(&columns, o, version, include)).collect();
    json!({
        "kind": "Table",
        "apiVersion": format!("meta.k8s.io/{version}"),
        "metadata": list_meta,
        "columnDefinitions": defs,
        "rows": rows,
    })
}

/// PartialObjectMetadata of an object.
pub fn partial_metadata(obj: &Value, version: &str) -> Value {
    json!({
        "kind": "PartialObjectMetadata",
        "apiVersion": format!("meta.k8s.io/{version}"),
        "metadata": obj.get("metadata").cloned().unwrap_or_else(|| Value::Object(Map::new())),
    })
}

fn row(columns: &[Column], obj: &Value, version: &str, include: IncludeObject) -> Value {
    let cells: Vec<Value> = columns
        .iter()
        .map(|c| {
            let v = (c.cell)(obj);
            if c.type_ == "date" {
                Value::from(object::age(&v))
            } else {
                v
            }
        })
        .collect();
    let mut r = json!({"cells": cells});
    match include {
        IncludeObject::None => {}
        IncludeObject::Metadata => r["object"] = partial_metadata(obj, version),
        IncludeObject::Object => r["object"] = obj.clone(),
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::catalog::catalog;

    use crate::registry::object::human_duration;

    #[test]
    fn durations_read_like_kubectl() {
        let cases = [
            (-5, "<invalid>"),
            (0, "0s"),
            (119, "119s"),
            (200, "3m20s"),
            (180, "3m"),
            (900, "15m"),
            (3 * 3600 + 600, "3h10m"),
            (20 * 3600, "20h"),
            (3 * 86400 + 3600, "3d1h"),
            (30 * 86400, "30d"),
            (3 * 365 * 86400 + 86400, "3y1d"),
            (10 * 365 * 86400, "10y"),
        ];
        for (secs, want) in cases {
            assert_eq!(human_duration(secs), want, "{secs}");
        }
    }

    #[test]
    fn default_table_has_name_and_age() {
        let res = catalog().find("", "v1", "podtemplates").unwrap();
        let obj = json!({"metadata": {"name": "t", "creationTimestamp": "2020-01-01T00:00:00Z"}});
        let t = table(res, &[obj], json!({"resourceVersion": "5"}), "v1", IncludeObject::Metadata);
        assert_eq!(t["columnDefinitions"][0]["name"], "Name");
        assert_eq!(t["columnDefinitions"][0]["format"], "name");
        assert_eq!(t["rows"][0]["cells"][0], "t");
        assert!(
            t["rows"][0]["cells"][1].as_str().unwrap().ends_with('y')
                || t["rows"][0]["cells"][1].as_str().unwrap().contains('y')
        );
        assert_eq!(t["rows"][0]["object"]["kind"], "PartialObjectMetadata");
        assert_eq!(IncludeObject::parse(Some("None")).unwrap(), IncludeObject::None);
    }
}
