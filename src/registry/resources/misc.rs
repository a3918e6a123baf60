//! Smaller resources whose strategy is mostly their `kubectl get` columns: leases, service
//! accounts, endpoints, endpoint slices, ingresses, pod disruption budgets, storage classes,
//! priority classes and certificate signing requests (which also record who asked).

use serde_json::{json, Value};

use super::pods::none_if_empty;
use crate::apiserver::status::StatusCause;
use crate::registry::object::{self, default_field};
use crate::registry::strategy::{Column, Ctx, Strategy};
use crate::registry::validation as v;

/// coordination.k8s.io Leases.
pub struct LeaseStrategy;

impl Strategy for LeaseStrategy {
    fn allow_create_on_update(&self) -> bool {
        true
    }

    fn columns(&self) -> Vec<Column> {
        vec![
            Column::NAME,
            Column::new("Holder", "string", 0, |o| {
                json!(object::str_at(o, "spec.holderIdentity").unwrap_or(""))
            }),
            Column::AGE,
        ]
    }
}

/// ServiceAccounts.
pub struct ServiceAccountStrategy;

impl Strategy for ServiceAccountStrategy {
    fn columns(&self) -> Vec<Column> {
        vec![
            Column::NAME,
            Column::new("Secrets", "integer", 0, |o| {
                json!(o.get("secrets").and_then(Value::as_array).map_or(0, Vec::len))
            }),
            Column::AGE,
        ]
    }
}

/// Endpoints (PUT may create them, as endpoint controllers expect).
pub struct EndpointsStrategy;

impl Strategy for EndpointsStrategy {
    fn allow_create_on_update(&self) -> bool {
        true
    }

    fn columns(&self) -> Vec<Column> {
        vec![
            Column::NAME,
            Column::new("Endpoints", "string", 0, |o| json!(endpoints(o))),
            Column::AGE,
        ]
    }
}

fn endpoints(o: &Value) -> String {
    let mut out = vec![];
    for subset in o.get("subsets").and_then(Value::as_array).into_iter().flatten() {
        let ports: Vec<i64> = subset
            .get("ports")
            .and_then(Value::as_array)
            .map(|p| p.iter().filter_map(|x| x.get("port").and_then(Value::as_i64)).collect())
            .unwrap_or_default();
        for addr in subset.get("addresses").and_then(Value::as_array).into_iter().flatten() {
            let ip = addr.get("ip").and_then(Value::as_str).unwrap_or("");
            if ports.is_empty() {
                out.push(ip.to_string());
            }
            for p in &ports {
                out.push(format!("{ip}:{p}"));
            }
        }
    }
    if out.is_empty() {
        return "<none>".into();
    }
    let more = out.len().saturating_sub(3);
    out.truncate(3);
    let mut s = out.join(",");
    if more > 0 {
        s.push_str(&format!(" + {more} more..."));
    }
    s
}

/// discovery.k8s.io EndpointSlices.
pub struct EndpointSliceStrategy;

impl Strategy for EndpointSliceStrategy {
    fn columns(&self) -> Vec<Column> {
        vec![
            Column::NAME,
            Column::new("AddressType", "string", 0, |o| {
                json!(object::str_at(o, "addressType").unwrap_or(""))
            }),
            Column::new("Ports", "string", 0, |o| {
                let ports: Vec<String> = o
                    .get("ports")
                    .and_then(Value::as_array)
                    .map(|p| {
                        p.iter()
                            .filter_map(|x| x.get("port").and_then(Value::as_i64))
                            .map(|p| p.to_string())
                            .collect()
                    })
                    .unwrap_or_default();
                json!(if ports.is_empty() { "<unset>".to_string() } else { ports.join(",") })
            }),
            Column::new("Endpoints", "string", 0, |o| {
                let addrs: Vec<String> = o
                    .get("endpoints")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .flat_map(|e| {
                        e.get("addresses").and_then(Value::as_array).cloned().unwrap_or_default()
                    })
                    .filter_map(|a| a.as_str().map(String::from))
                    .collect();
                json!(if addrs.is_empty() { "<unset>".to_string() } else { addrs.join(",") })
            }),
            Column::AGE,
        ]
    }
}

/// networking.k8s.io Ingresses.
pub struct IngressStrategy;

impl Strategy for IngressStrategy {
    fn columns(&self) -> Vec<Column> {
        vec![
            Column::NAME,
            Column::new("Class", "string", 0, |o| {
                none_if_empty(object::str_at(o, "spec.ingressClassName"))
            }),
            Column::new("Hosts", "string", 0, |o| {
                let hosts: Vec<String> = object::path(o, "spec.rules")
                    .and_then(Value::as_array)
                    .map(|r| {
                        r.iter()
                            .filter_map(|x| x.get("host").and_then(Value::as_str).map(String::from))
                            .collect()
                    })
                    .unwrap_or_default();
                json!(if hosts.is_empty() { "*".to_string() } else { hosts.join(",") })
            }),
            Column::new("Address", "string", 0, |o| {
                let ips: Vec<String> = object::path(o, "status.loadBalancer.ingress")
                    .and_then(Value::as_array)
                    .map(|a| {
                        a.iter()
                            .filter_map(|i| {
                                i.get("ip")
                                    .or_else(|| i.get("hostname"))
                                    .and_then(Value::as_str)
                                    .map(String::from)
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                json!(ips.join(","))
            }),
            Column::new("Ports", "string", 0, |o| {
                json!(if object::path(o, "spec.tls")
                    .and_then(Value::as_array)
                    .is_some_and(|t| !t.is_empty())
                {
                    "80, 443"
                } else {
                    "80"
                })
            }),
            Column::AGE,
        ]
    }
}

/// policy PodDisruptionBudgets.
pub struct PodDisruptionBudgetStrategy;

impl Strategy for PodDisruptionBudgetStrategy {
    fn validate(&self, obj: &Value) -> Vec<StatusCause> {
        let mut out = vec![];
        if object::path(obj, "spec.minAvailable").is_some()
            && object::path(obj, "spec.maxUnavailable").is_some()
        {
            out.push(v::invalid(
                "spec",
                &Value::Null,
                "minAvailable and maxUnavailable cannot be both set",
            ));
        }
        out
    }

    fn columns(&self) -> Vec<Column> {
        vec![
            Column::NAME,
            Column::new("Min Available", "string", 0, |o| int_or_na(o, "spec.minAvailable")),
            Column::new("Max Unavailable", "string", 0, |o| int_or_na(o, "spec.maxUnavailable")),
            Column::new("Allowed Disruptions", "integer", 0, |o| {
                json!(object::path(o, "status.disruptionsAllowed")
                    .and_then(Value::as_i64)
                    .unwrap_or(0))
            }),
            Column::AGE,
        ]
    }
}

fn int_or_na(o: &Value, f: &str) -> Value {
    match object::path(o, f) {
        Some(Value::String(s)) => json!(s),
        Some(Value::Number(n)) => json!(n.to_string()),
        _ => json!("N/A"),
    }
}

/// storage.k8s.io StorageClasses.
pub struct StorageClassStrategy;

impl Strategy for StorageClassStrategy {
    fn default(&self, obj: &mut Value) {
        if let Some(m) = obj.as_object_mut() {
            default_field(m, "reclaimPolicy", json!("Delete"));
            default_field(m, "volumeBindingMode", json!("Immediate"));
        }
    }

    fn columns(&self) -> Vec<Column> {
        vec![
            Column {
                cell: |o| {
                    let default = object::path(o, "metadata.annotations")
                        .and_then(|a| a.get("storageclass.kubernetes.io/is-default-class"))
                        .and_then(Value::as_str)
                        == Some("true");
                    let name = object::name(o);
                    json!(if default { format!("{name} (default)") } else { name.to_string() })
                },
                ..Column::NAME
            },
            Column::new("Provisioner", "string", 0, |o| {
                json!(object::str_at(o, "provisioner").unwrap_or(""))
            }),
            Column::new("ReclaimPolicy", "string", 0, |o| {
                json!(object::str_at(o, "reclaimPolicy").unwrap_or("Delete"))
            }),
            Column::new("VolumeBindingMode", "string", 0, |o| {
                json!(object::str_at(o, "volumeBindingMode").unwrap_or("Immediate"))
            }),
            Column::new("AllowVolumeExpansion", "string", 0, |o| {
                json!(o
                    .get("allowVolumeExpansion")
                    .and_then(Value::as_bool)
                    .unwrap_or(false)
                    .to_string())
            }),
            Column::AGE,
        ]
    }
}

/// scheduling.k8s.io PriorityClasses.
pub struct PriorityClassStrategy;

impl Strategy for PriorityClassStrategy {
    fn default(&self, obj: &mut Value) {
        if let Some(m) = obj.as_object_mut() {
            default_field(m, "preemptionPolicy", json!("PreemptLowerPriority"));
        }
    }

    fn validate_update(&self, new: &Value, old: &Value) -> Vec<StatusCause> {
        let mut out = self.validate(new);
        v::check_immutable(new, old, "value", &mut out);
        v::check_immutable(new, old, "preemptionPolicy", &mut out);
        out
    }

    fn columns(&self) -> Vec<Column> {
        vec![
            Column::NAME,
            Column::new("Value", "integer", 0, |o| {
                json!(o.get("value").and_then(Value::as_i64).unwrap_or(0))
            }),
            Column::new("Global-Default", "boolean", 0, |o| {
                json!(o.get("globalDefault").and_then(Value::as_bool).unwrap_or(false))
            }),
            Column::AGE,
            Column::new("PreemptionPolicy", "string", 0, |o| {
                json!(object::str_at(o, "preemptionPolicy").unwrap_or(""))
            }),
        ]
    }
}

/// certificates.k8s.io CertificateSigningRequests: the requester's identity is recorded on
/// create, whatever the body says.
pub struct CsrStrategy;

impl Strategy for CsrStrategy {
    fn tracks_generation(&self) -> Option<bool> {
        Some(false)
    }

    fn prepare_for_create(&self, ctx: &Ctx, obj: &mut Value) {
        let Some(spec) = object::ensure_object(obj, "spec") else { return };
        for f in ["username", "uid", "groups", "extra"] {
            spec.remove(f);
        }
        if let Some(user) = &ctx.user {
            spec.insert("username".into(), json!(user.name));
            if !user.uid.is_empty() {
                spec.insert("uid".into(), json!(user.uid));
            }
            spec.insert("groups".into(), json!(user.groups));
        }
    }

    fn prepare_for_update(&self, _ctx: &Ctx, new: &mut Value, old: &Value) {
        if let Some(spec) = old.get("spec") {
            new["spec"] = spec.clone();
        }
    }

    fn validate(&self, obj: &Value) -> Vec<StatusCause> {
        let mut out = vec![];
        if object::str_at(obj, "spec.request").unwrap_or("").is_empty() {
            out.push(v::required("spec.request", ""));
        }
        if object::str_at(obj, "spec.signerName").unwrap_or("").is_empty() {
            out.push(v::required("spec.signerName", ""));
        }
        out
    }

    fn field_labels(&self) -> &'static [&'static str] {
        &["spec.signerName"]
    }

    fn columns(&self) -> Vec<Column> {
        vec![
            Column::NAME,
            Column::AGE,
            Column::new("SignerName", "string", 0, |o| {
                json!(object::str_at(o, "spec.signerName").unwrap_or(""))
            }),
            Column::new("Requestor", "string", 0, |o| {
                json!(object::str_at(o, "spec.username").unwrap_or(""))
            }),
            Column::new("RequestedDuration", "string", 0, |o| {
                match object::path(o, "spec.expirationSeconds").and_then(Value::as_i64) {
                    Some(s) => json!(object::human_duration(s)),
                    None => json!("<none>"),
                }
            }),
            Column::new("Condition", "string", 0, |o| {
                let conds: Vec<String> = object::path(o, "status.conditions")
                    .and_then(Value::as_array)
                    .map(|c| {
                        c.iter()
                            .filter_map(|x| x.get("type").and_then(Value::as_str).map(String::from))
                            .collect()
                    })
                    .unwrap_or_default();
                let issued = object::str_at(o, "status.certificate").is_some_and(|c| !c.is_empty());
                let mut s = if conds.is_empty() { "Pending".to_string() } else { conds.join(",") };
                if issued {
                    s.push_str(",Issued");
                }
                json!(s)
            }),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apiserver::UserInfo;

    #[test]
    fn csr_records_the_requester() {
        let mut csr = json!({"spec": {"request": "eA==", "signerName": "kubernetes.io/kube-apiserver-client", "username": "forged"}});
        let ctx = Ctx {
            user: Some(UserInfo {
                name: "alice".into(),
                uid: String::new(),
                groups: vec!["devs".into()],
            }),
            dry_run: false,
        };
        CsrStrategy.prepare_for_create(&ctx, &mut csr);
        assert_eq!(csr["spec"]["username"], "alice");
        assert_eq!(csr["spec"]["groups"], json!(["devs"]));
        assert!(CsrStrategy.validate(&csr).is_empty());
    }

    #[test]
    fn endpoint_cells() {
        let ep = json!({"subsets": [{"addresses": [{"ip": "10.0.0.1"}, {"ip": "10.0.0.2"}], "ports": [{"port": 80}]}]});
        assert_eq!(endpoints(&ep), "10.0.0.1:80,10.0.0.2:80");
        assert_eq!(endpoints(&json!({})), "<none>");
    }
}
