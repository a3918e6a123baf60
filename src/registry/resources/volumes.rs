//! PersistentVolumes and PersistentVolumeClaims: Filesystem mode and (PVs) the Retain reclaim
//! policy by default, phase Pending on create, claim validation and the columns of
//! `kubectl get pv,pvc`.

use serde_json::{json, Value};

use super::pods::none_if_empty;
use crate::apiserver::status::StatusCause;
use crate::registry::object::{self, default_field};
use crate::registry::strategy::{Column, Ctx, Strategy};
use crate::registry::validation as v;

/// The PersistentVolume strategy.
pub struct PersistentVolumeStrategy;

/// The PersistentVolumeClaim strategy.
pub struct PersistentVolumeClaimStrategy;

const ACCESS_MODES: &[&str] =
    &["ReadWriteOnce", "ReadOnlyMany", "ReadWriteMany", "ReadWriteOncePod"];

impl Strategy for PersistentVolumeStrategy {
    fn tracks_generation(&self) -> Option<bool> {
        Some(false)
    }

    fn default(&self, obj: &mut Value) {
        let Some(spec) = object::ensure_object(obj, "spec") else { return };
        default_field(spec, "persistentVolumeReclaimPolicy", json!("Retain"));
        default_field(spec, "volumeMode", json!("Filesystem"));
    }

    fn prepare_for_create(&self, _ctx: &Ctx, obj: &mut Value) {
        obj["status"] = json!({"phase": "Pending"});
    }

    fn validate(&self, obj: &Value) -> Vec<StatusCause> {
        let mut out = vec![];
        access_modes(obj, &mut out);
        if object::path(obj, "spec.capacity.storage").is_none() {
            out.push(v::required("spec.capacity", ""));
        }
        out
    }

    fn columns(&self) -> Vec<Column> {
        vec![
            Column::NAME,
            Column::new("Capacity", "string", 0, |o| {
                json!(object::str_at(o, "spec.capacity.storage").unwrap_or(""))
            }),
            Column::new("Access Modes", "string", 0, |o| json!(modes(o))),
            Column::new("Reclaim Policy", "string", 0, |o| {
                json!(object::str_at(o, "spec.persistentVolumeReclaimPolicy").unwrap_or(""))
            }),
            Column::new("Status", "string", 0, |o| {
                json!(object::str_at(o, "status.phase").unwrap_or(""))
            }),
            Column::new("Claim", "string", 0, |o| {
                match (
                    object::str_at(o, "spec.claimRef.namespace"),
                    object::str_at(o, "spec.claimRef.name"),
                ) {
                    (Some(ns), Some(n)) => json!(format!("{ns}/{n}")),
                    _ => json!(""),
                }
            }),
            Column::new("StorageClass", "string", 0, |o| {
                json!(object::str_at(o, "spec.storageClassName").unwrap_or(""))
            }),
            Column::new("VolumeAttributesClass", "string", 0, |o| {
                none_if_empty(object::str_at(o, "spec.volumeAttributesClassName"))
            }),
            Column::new("Reason", "string", 0, |o| {
                json!(object::str_at(o, "status.reason").unwrap_or(""))
            }),
            Column::AGE,
            Column::new("VolumeMode", "string", 1, |o| {
                json!(object::str_at(o, "spec.volumeMode").unwrap_or(""))
            }),
        ]
    }
}

impl Strategy for PersistentVolumeClaimStrategy {
    fn tracks_generation(&self) -> Option<bool> {
        Some(false)
    }

    fn default(&self, obj: &mut Value) {
        let Some(spec) = object::ensure_object(obj, "spec") else { return };
        default_field(spec, "volumeMode", json!("Filesystem"));
    }

    fn prepare_for_create(&self, _ctx: &Ctx, obj: &mut Value) {
        obj["status"] = json!({"phase": "Pending"});
    }

    fn validate(&self, obj: &Value) -> Vec<StatusCause> {
        let mut out = vec![];
        access_modes(obj, &mut out);
        if object::path(obj, "spec.resources.requests.storage").is_none() {
            out.push(v::required("spec.resources[storage]", ""));
        }
        out
    }

    fn validate_update(&self, new: &Value, old: &Value) -> Vec<StatusCause> {
        let mut out = self.validate(new);
        let strip = |o: &Value| {
            let mut s = o.get("spec").cloned().unwrap_or_default();
            if let Some(m) = s.as_object_mut() {
                m.remove("resources");
                m.remove("volumeAttributesClassName");
                if old.pointer("/spec/volumeName").is_none() {
                    m.remove("volumeName");
                }
            }
            s
        };
        if strip(new) != strip(old) {
            out.push(v::forbidden(
                "spec",
                "spec is immutable after creation except resources.requests and volumeAttributesClassName for bound claims",
            ));
        }
        out
    }

    fn columns(&self) -> Vec<Column> {
        vec![
            Column::NAME,
            Column::new("Status", "string", 0, |o| {
                json!(object::str_at(o, "status.phase").unwrap_or(""))
            }),
            Column::new("Volume", "string", 0, |o| {
                json!(object::str_at(o, "spec.volumeName").unwrap_or(""))
            }),
            Column::new("Capacity", "string", 0, |o| {
                json!(object::str_at(o, "status.capacity.storage").unwrap_or(""))
            }),
            Column::new("Access Modes", "string", 0, |o| {
                json!(if object::path(o, "status.accessModes").is_some() {
                    status_modes(o)
                } else {
                    String::new()
                })
            }),
            Column::new("StorageClass", "string", 0, |o| {
                json!(object::str_at(o, "spec.storageClassName").unwrap_or(""))
            }),
            Column::new("VolumeAttributesClass", "string", 0, |o| {
                none_if_empty(object::str_at(o, "spec.volumeAttributesClassName"))
            }),
            Column::AGE,
            Column::new("VolumeMode", "string", 1, |o| {
                json!(object::str_at(o, "spec.volumeMode").unwrap_or(""))
            }),
        ]
    }
}

fn access_modes(obj: &Value, out: &mut Vec<StatusCause>) {
    let modes = object::path(obj, "spec.accessModes")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if modes.is_empty() {
        out.push(v::required("spec.accessModes", ""));
    }
    for (i, m) in modes.iter().enumerate() {
        if !m.as_str().is_some_and(|s| ACCESS_MODES.contains(&s)) {
            out.push(v::not_supported(&format!("spec.accessModes[{i}]"), m, ACCESS_MODES));
        }
    }
}

fn short_modes(list: Option<&Value>) -> String {
    list.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|m| match m.as_str()? {
                    "ReadWriteOnce" => Some("RWO"),
                    "ReadOnlyMany" => Some("ROX"),
                    "ReadWriteMany" => Some("RWX"),
                    "ReadWriteOncePod" => Some("RWOP"),
                    _ => None,
                })
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default()
}

fn modes(o: &Value) -> String {
    short_modes(object::path(o, "spec.accessModes"))
}

fn status_modes(o: &Value) -> String {
    short_modes(object::path(o, "status.accessModes"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims_default_and_validate() {
        let mut pvc = json!({"spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}});
        PersistentVolumeClaimStrategy.default(&mut pvc);
        PersistentVolumeClaimStrategy.prepare_for_create(&Ctx::default(), &mut pvc);
        assert_eq!(pvc["spec"]["volumeMode"], "Filesystem");
        assert_eq!(pvc["status"]["phase"], "Pending");
        assert!(PersistentVolumeClaimStrategy.validate(&pvc).is_empty());
        assert_eq!(modes(&pvc), "RWO");
        let mut bigger = pvc.clone();
        bigger["spec"]["resources"]["requests"]["storage"] = json!("2Gi");
        assert!(PersistentVolumeClaimStrategy.validate_update(&bigger, &pvc).is_empty());
        bigger["spec"]["accessModes"] = json!(["ReadWriteMany"]);
        assert_eq!(PersistentVolumeClaimStrategy.validate_update(&bigger, &pvc)[0].field, "spec");
    }
}
