//! Services: defaults (ClusterIP, sessionAffinity None, single-stack IPv4, TCP ports whose
//! targetPort is the port, internalTrafficPolicy Cluster), cluster IPs allocated from
//! 10.43.0.0/16 (`ipaddresses`) and node ports from 30000-32767 (`nodeports`), both claimed
//! atomically through the store and released on delete or when an update drops them,
//! validation, and the `kubectl get svc` columns.

use std::net::Ipv4Addr;

use async_trait::async_trait;
use serde_json::{json, Value};

use super::ipaddresses;
pub use super::ipaddresses::SERVICE_CIDR;
use super::nodeports::{self, needs_node_ports, NODE_PORTS};
use super::pods::none_if_empty;
use crate::apiserver::status::{ApiError, StatusCause};
use crate::registry::object::{self, default_field};
use crate::registry::strategy::{Column, Ctx, Strategy};
use crate::registry::validation::{self as v, NameRule};
use crate::store::Store;

/// The Service strategy.
pub struct ServiceStrategy;

#[async_trait]
impl Strategy for ServiceStrategy {
    fn name_rule(&self) -> NameRule {
        NameRule::Dns1035Label
    }

    fn tracks_generation(&self) -> Option<bool> {
        Some(false)
    }

    fn default(&self, obj: &mut Value) {
        let Some(spec) = object::ensure_object(obj, "spec") else { return };
        default_field(spec, "type", json!("ClusterIP"));
        let kind = spec.get("type").and_then(Value::as_str).unwrap_or("ClusterIP").to_string();
        default_field(spec, "sessionAffinity", json!("None"));
        if spec.get("sessionAffinity").and_then(Value::as_str) == Some("ClientIP") {
            default_field(
                spec,
                "sessionAffinityConfig",
                json!({"clientIP": {"timeoutSeconds": 10800}}),
            );
        }
        if spec.get("healthCheckNodePort").and_then(Value::as_i64) == Some(0) {
            spec.remove("healthCheckNodePort");
        }
        if let Some(ports) = spec.get_mut("ports").and_then(Value::as_array_mut) {
            for p in ports {
                if let Some(pm) = p.as_object_mut() {
                    // 0 means "allocate one" (protobuf clients always send the field).
                    if pm.get("nodePort").and_then(Value::as_i64) == Some(0) {
                        pm.remove("nodePort");
                    }
                    default_field(pm, "protocol", json!("TCP"));
                    if let Some(port) = pm.get("port").cloned() {
                        default_field(pm, "targetPort", port);
                    }
                }
            }
        }
        if kind == "ExternalName" {
            return;
        }
        default_field(spec, "internalTrafficPolicy", json!("Cluster"));
        if kind == "NodePort" || kind == "LoadBalancer" {
            default_field(spec, "externalTrafficPolicy", json!("Cluster"));
        }
        if kind == "LoadBalancer" {
            default_field(spec, "allocateLoadBalancerNodePorts", json!(true));
        }
        // clusterIP and clusterIPs[0] say the same thing: fill in whichever is missing.
        let ip = spec.get("clusterIP").and_then(Value::as_str).unwrap_or("").to_string();
        let first = spec
            .get("clusterIPs")
            .and_then(Value::as_array)
            .and_then(|a| a.first())
            .and_then(Value::as_str)
            .map(String::from);
        match (ip.is_empty(), first) {
            (false, None) => {
                spec.insert("clusterIPs".into(), json!([ip]));
            }
            (true, Some(first)) => {
                spec.insert("clusterIP".into(), json!(first));
            }
            _ => {}
        }
        default_field(spec, "ipFamilies", json!(["IPv4"]));
        default_field(spec, "ipFamilyPolicy", json!("SingleStack"));
    }

    fn prepare_for_create(&self, _ctx: &Ctx, obj: &mut Value) {
        obj["status"] = json!({"loadBalancer": {}});
    }

    fn prepare_for_update(&self, _ctx: &Ctx, new: &mut Value, old: &Value) {
        // A client that omits the allocated IP keeps it (as upstream does).
        let new_type = object::str_at(new, "spec.type").unwrap_or("ClusterIP").to_string();
        if new_type != "ExternalName" && cluster_ip(new).is_none() {
            if let Some(ip) = object::path(old, "spec.clusterIP").cloned() {
                object::set_at(new, "spec.clusterIP", ip.clone());
                object::set_at(new, "spec.clusterIPs", json!([ip]));
            }
        }
        if new_type == "ExternalName" {
            object::remove_at(new, "spec.clusterIP");
            object::remove_at(new, "spec.clusterIPs");
        }
        // A changed clusterIP with clusterIPs left as they were speaks for both (validation
        // then refuses the change, as upstream's does).
        let new_ip = object::str_at(new, "spec.clusterIP").unwrap_or("").to_string();
        if !new_ip.is_empty()
            && Some(new_ip.as_str()) != object::str_at(old, "spec.clusterIP")
            && cluster_ips(new) == cluster_ips(old)
        {
            object::set_at(new, "spec.clusterIPs", json!([new_ip]));
        }
        // Keep allocated node ports for ports that keep their number, while the type needs
        // them; a type that no longer needs them drops the ones the client left unchanged.
        let old_ports =
            object::path(old, "spec.ports").and_then(Value::as_array).cloned().unwrap_or_default();
        if !needs_node_ports(new) {
            if needs_node_ports(old) {
                let same = |p: &Value| {
                    old_ports.iter().any(|o| {
                        o.get("port") == p.get("port") && o.get("nodePort") == p.get("nodePort")
                    })
                };
                if let Some(ports) = new.pointer_mut("/spec/ports").and_then(Value::as_array_mut) {
                    for p in ports.iter_mut().filter(|p| same(p)) {
                        if let Some(pm) = p.as_object_mut() {
                            pm.remove("nodePort");
                        }
                    }
                }
            }
            return;
        }
        if let Some(ports) = new.pointer_mut("/spec/ports").and_then(Value::as_array_mut) {
            for p in ports.iter_mut().filter(|p| p.get("nodePort").is_none()) {
                let same = old_ports.iter().find(|o| {
                    o.get("port") == p.get("port") && o.get("protocol") == p.get("protocol")
                });
                if let Some(np) = same.and_then(|o| o.get("nodePort")) {
                    p["nodePort"] = np.clone();
                }
            }
        }
    }

    fn validate(&self, obj: &Value) -> Vec<StatusCause> {
        let mut out = vec![];
        let kind = object::str_at(obj, "spec.type").unwrap_or("ClusterIP");
        let supported = ["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"];
        if !supported.contains(&kind) {
            out.push(v::not_supported("spec.type", &json!(kind), &supported));
        }
        let ports =
            object::path(obj, "spec.ports").and_then(Value::as_array).cloned().unwrap_or_default();
        let headless = object::str_at(obj, "spec.clusterIP") == Some("None");
        if ports.is_empty() && kind != "ExternalName" && !headless {
            out.push(v::required("spec.ports", ""));
        }
        let mut names = std::collections::HashSet::new();
        for (i, p) in ports.iter().enumerate() {
            let port = p.get("port").and_then(Value::as_i64).unwrap_or(0);
            if !(1..=65535).contains(&port) {
                out.push(v::invalid(
                    &format!("spec.ports[{i}].port"),
                    &json!(port),
                    "must be between 1 and 65535, inclusive",
                ));
            }
            let name = p.get("name").and_then(Value::as_str).unwrap_or("");
            if ports.len() > 1 && name.is_empty() {
                out.push(v::required(&format!("spec.ports[{i}].name"), ""));
            }
            if !names.insert(name.to_string()) {
                out.push(v::duplicate(&format!("spec.ports[{i}].name"), &json!(name)));
            }
            if let Some(proto) = p.get("protocol").and_then(Value::as_str) {
                if !["TCP", "UDP", "SCTP"].contains(&proto) {
                    out.push(v::not_supported(
                        &format!("spec.ports[{i}].protocol"),
                        &json!(proto),
                        &["SCTP", "TCP", "UDP"],
                    ));
                }
            }
            if let Some(np) = p.get("nodePort").and_then(Value::as_i64) {
                if kind != "NodePort" && kind != "LoadBalancer" && np != 0 {
                    out.push(v::forbidden(
                        &format!("spec.ports[{i}].nodePort"),
                        "may not be used when `type` is 'ClusterIP'",
                    ));
                } else if !NODE_PORTS.contains(&np) {
                    out.push(v::invalid(
                        &format!("spec.ports[{i}].nodePort"),
                        &json!(np),
                        "provided port is not in the valid range. The range of valid ports is 30000-32767",
                    ));
                }
            }
        }
        if kind == "ExternalName"
            && object::str_at(obj, "spec.externalName").unwrap_or("").is_empty()
        {
            out.push(v::required("spec.externalName", ""));
        }
        let ips = cluster_ips(obj);
        if let (Some(ip), Some(first)) = (object::str_at(obj, "spec.clusterIP"), ips.first()) {
            if !ip.is_empty() && ip != first {
                out.push(invalid_ips(
                    "spec.clusterIPs",
                    &ips,
                    "first value must match `clusterIP`",
                ));
            }
        }
        if let Some(ip) =
            object::str_at(obj, "spec.clusterIP").filter(|s| !s.is_empty() && *s != "None")
        {
            if ip.parse::<Ipv4Addr>().is_err() {
                out.push(v::invalid(
                    "spec.clusterIPs[0]",
                    &json!(ip),
                    "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)",
                ));
            }
        }
        out
    }

    fn validate_update(&self, new: &Value, old: &Value) -> Vec<StatusCause> {
        let mut out = self.validate(new);
        let types = (object::str_at(old, "spec.type"), object::str_at(new, "spec.type"));
        let external = types.0 == Some("ExternalName") || types.1 == Some("ExternalName");
        if !external {
            if let (Some(o), n) = (cluster_ip(old), cluster_ip(new)) {
                if n.as_deref() != Some(o.as_str()) {
                    out.push(invalid_ips(
                        "spec.clusterIPs[0]",
                        &cluster_ips(new),
                        "may not change once set",
                    ));
                }
            }
        }
        out
    }

    fn field_labels(&self) -> &'static [&'static str] {
        &["spec.clusterIP", "spec.type"]
    }

    fn columns(&self) -> Vec<Column> {
        vec![
            Column::NAME,
            Column::new("Type", "string", 0, |o| {
                json!(object::str_at(o, "spec.type").unwrap_or(""))
            }),
            Column::new("Cluster-IP", "string", 0, |o| {
                none_if_empty(object::str_at(o, "spec.clusterIP"))
            }),
            Column::new("External-IP", "string", 0, |o| json!(external_ip(o))),
            Column::new("Port(s)", "string", 0, |o| json!(ports_cell(o))),
            Column::AGE,
            Column::new("Selector", "string", 1, |o| {
                let mut s: Vec<String> = object::string_map(object::path(o, "spec.selector"))
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect();
                s.sort();
                json!(if s.is_empty() { "<none>".to_string() } else { s.join(",") })
            }),
        ]
    }

    fn return_deleted_object(&self) -> bool {
        true
    }

    async fn allocate(
        &self,
        store: &Store,
        obj: &mut Value,
        old: Option<&Value>,
        dry_run: bool,
    ) -> Result<(), ApiError> {
        let kind = object::str_at(obj, "spec.type").unwrap_or("ClusterIP").to_string();
        let mut new_ip = None;
        if kind != "ExternalName" && object::str_at(obj, "spec.clusterIP") != Some("None") {
            let had = old.and_then(cluster_ip);
            match cluster_ip(obj) {
                Some(ip) if had.as_deref() == Some(ip.as_str()) => {}
                Some(ip) => {
                    ipaddresses::claim(store, obj, &ip, dry_run).await?;
                    new_ip = Some(ip);
                }
                None => {
                    let ip = ipaddresses::allocate(store, obj, dry_run).await?;
                    object::set_at(obj, "spec.clusterIP", json!(ip));
                    object::set_at(obj, "spec.clusterIPs", json!([ip]));
                    new_ip = Some(ip);
                }
            }
        }
        if nodeports::needs_node_ports(obj) {
            if let Err(e) = nodeports::allocate(store, obj, dry_run).await {
                if let (Some(ip), false) = (new_ip, dry_run) {
                    ipaddresses::release(store, obj, &ip).await;
                }
                return Err(e);
            }
        }
        Ok(())
    }

    async fn release(&self, store: &Store, obj: &Value, replaced_by: Option<&Value>) {
        nodeports::release(store, obj, replaced_by).await;
        let Some(ip) = cluster_ip(obj) else { return };
        if replaced_by.and_then(cluster_ip).as_deref() == Some(ip.as_str()) {
            return;
        }
        ipaddresses::release(store, obj, &ip).await;
    }
}

/// The cluster IP of a service, if it has a real one.
fn cluster_ip(obj: &Value) -> Option<String> {
    object::str_at(obj, "spec.clusterIP")
        .filter(|s| !s.is_empty() && *s != "None")
        .map(String::from)
}

/// spec.clusterIPs as strings.
fn cluster_ips(obj: &Value) -> Vec<String> {
    object::path(obj, "spec.clusterIPs")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str().map(String::from))
        .collect()
}

/// An "Invalid value" cause whose value is a list of IPs, shown as upstream shows a []string.
fn invalid_ips(field: &str, ips: &[String], detail: &str) -> StatusCause {
    let shown: Vec<String> = ips.iter().map(|ip| format!("{ip:?}")).collect();
    StatusCause {
        reason: "FieldValueInvalid".into(),
        message: format!("Invalid value: []string{{{}}}: {detail}", shown.join(", ")),
        field: field.into(),
    }
}

fn external_ip(o: &Value) -> String {
    match object::str_at(o, "spec.type").unwrap_or("ClusterIP") {
        "ExternalName" => object::str_at(o, "spec.externalName").unwrap_or("").to_string(),
        "LoadBalancer" => {
            let ips: Vec<String> = object::path(o, "status.loadBalancer.ingress")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|i| {
                    i.get("ip")
                        .or_else(|| i.get("hostname"))
                        .and_then(Value::as_str)
                        .map(String::from)
                })
                .collect();
            if ips.is_empty() {
                "<pending>".into()
            } else {
                ips.join(",")
            }
        }
        _ => {
            let ext: Vec<String> = object::path(o, "spec.externalIPs")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(|x| x.as_str().map(String::from)).collect())
                .unwrap_or_default();
            if ext.is_empty() {
                "<none>".into()
            } else {
                ext.join(",")
            }
        }
    }
}

fn ports_cell(o: &Value) -> String {
    let ports: Vec<String> = object::path(o, "spec.ports")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|p| {
            let port = p.get("port").and_then(Value::as_i64).unwrap_or(0);
            let proto = p.get("protocol").and_then(Value::as_str).unwrap_or("TCP");
            match p.get("nodePort").and_then(Value::as_i64) {
                Some(np) => format!("{port}:{np}/{proto}"),
                None => format!("{port}/{proto}"),
            }
        })
        .collect();
    if ports.is_empty() {
        "<none>".into()
    } else {
        ports.join(",")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_follow_upstream() {
        let mut s = json!({"spec": {"ports": [{"port": 80}], "selector": {"app": "web"}}});
        ServiceStrategy.default(&mut s);
        let spec = &s["spec"];
        assert_eq!(spec["type"], "ClusterIP");
        assert_eq!(spec["sessionAffinity"], "None");
        assert_eq!(spec["ports"][0]["protocol"], "TCP");
        assert_eq!(spec["ports"][0]["targetPort"], 80);
        assert_eq!(spec["ipFamilies"], json!(["IPv4"]));
        assert_eq!(spec["ipFamilyPolicy"], "SingleStack");
        assert_eq!(spec["internalTrafficPolicy"], "Cluster");
        assert!(ipaddresses::in_range("10.43.200.1".parse().unwrap()));
        assert!(!ipaddresses::in_range("10.44.0.1".parse().unwrap()));
    }

    #[test]
    fn columns_render() {
        let s = json!({"spec": {"type": "NodePort", "clusterIP": "10.43.0.9", "ports": [{"port": 80, "nodePort": 30080, "protocol": "TCP"}]}});
        assert_eq!(ports_cell(&s), "80:30080/TCP");
        assert_eq!(external_ip(&s), "<none>");
        assert_eq!(external_ip(&json!({"spec": {"type": "LoadBalancer"}})), "<pending>");
    }
}
