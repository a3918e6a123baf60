//! Services: defaults (ClusterIP, sessionAffinity None, single-stack IPv4, TCP ports whose
//! targetPort is the port, internalTrafficPolicy Cluster), cluster IPs allocated from
//! 10.43.0.0/16 and node ports from 30000-32767, validation, and the `kubectl get svc` columns.
//!
//! Each allocated cluster IP is an IPAddress object (networking.k8s.io/v1) whose parentRef is
//! the service, as upstream's allocator keeps them: creating its key atomically is the claim,
//! so no two services get one IP even with several API servers on one etcd.

use std::net::Ipv4Addr;

use async_trait::async_trait;
use rand::Rng;
use serde_json::{json, Value};

use super::pods::none_if_empty;
use crate::apiserver::status::{ApiError, StatusCause};
use crate::registry::catalog::catalog;
use crate::registry::object::{self, default_field};
use crate::registry::strategy::{Column, Ctx, Strategy};
use crate::registry::validation::{self as v, NameRule};
use crate::store::{ListOptions, Store, StoreError};

/// The Service strategy.
pub struct ServiceStrategy;

/// The service IP range.
pub const SERVICE_CIDR: (Ipv4Addr, u8) = (Ipv4Addr::new(10, 43, 0, 0), 16);
/// The node port range.
pub const NODE_PORTS: std::ops::RangeInclusive<i64> = 30000..=32767;
const IPADDRESS_PREFIX: &str = "/registry/networking.k8s.io/ipaddresses/";

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
        if let Some(ip) = spec
            .get("clusterIP")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(String::from)
        {
            default_field(spec, "clusterIPs", json!([ip]));
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
        // Keep allocated node ports for ports that keep their number.
        let old_ports =
            object::path(old, "spec.ports").and_then(Value::as_array).cloned().unwrap_or_default();
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
                    out.push(v::invalid(
                        "spec.clusterIPs[0]",
                        &json!(n),
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
        if kind != "ExternalName" && object::str_at(obj, "spec.clusterIP") != Some("None") {
            let had = old.and_then(cluster_ip);
            match cluster_ip(obj) {
                Some(ip) if had.as_deref() == Some(ip.as_str()) => {}
                Some(ip) => claim_ip(store, obj, &ip, dry_run).await?,
                None => {
                    let ip = allocate_ip(store, obj, dry_run).await?;
                    object::set_at(obj, "spec.clusterIP", json!(ip));
                    object::set_at(obj, "spec.clusterIPs", json!([ip]));
                }
            }
        }
        if kind == "NodePort"
            || (kind == "LoadBalancer"
                && object::path(obj, "spec.allocateLoadBalancerNodePorts") != Some(&json!(false)))
        {
            allocate_node_ports(store, obj).await?;
        }
        Ok(())
    }

    async fn release(&self, store: &Store, obj: &Value, replaced_by: Option<&Value>) {
        let Some(ip) = cluster_ip(obj) else { return };
        if replaced_by.and_then(cluster_ip).as_deref() == Some(ip.as_str()) {
            return;
        }
        let key = format!("{IPADDRESS_PREFIX}{ip}");
        if let Ok(Some(kv)) = store.get(&key, None).await {
            let owner: Value = serde_json::from_slice(&kv.value).unwrap_or_default();
            let same = object::str_at(&owner, "spec.parentRef.name") == Some(object::name(obj))
                && object::str_at(&owner, "spec.parentRef.namespace")
                    == Some(object::namespace(obj));
            if same {
                if let Err(e) = store.delete(&key, Some(kv.mod_revision)).await {
                    tracing::warn!(ip = %ip, error = %e, "could not release service ip");
                }
            }
        }
    }
}

/// The cluster IP of a service, if it has a real one.
fn cluster_ip(obj: &Value) -> Option<String> {
    object::str_at(obj, "spec.clusterIP")
        .filter(|s| !s.is_empty() && *s != "None")
        .map(String::from)
}

fn in_range(ip: Ipv4Addr) -> bool {
    let (net, bits) = SERVICE_CIDR;
    let mask = u32::MAX << (32 - bits);
    (u32::from(ip) & mask) == u32::from(net)
}

/// Claims a requested IP; 422 if it is outside the range or taken.
async fn claim_ip(store: &Store, svc: &Value, ip: &str, dry_run: bool) -> Result<(), ApiError> {
    let invalid = |why: String| {
        let cause = v::invalid(
            "spec.clusterIPs",
            &json!([ip]),
            &format!("failed to allocate IP {ip}: {why}"),
        );
        ApiError::invalid("", "Service", object::name(svc), vec![cause])
    };
    let parsed: Ipv4Addr = ip.parse().map_err(|_| invalid("not a valid IPv4 address".into()))?;
    if !in_range(parsed) {
        return Err(invalid(format!(
            "the provided IP ({ip}) is not in the valid range. The range of valid IPs is {}/{}",
            SERVICE_CIDR.0, SERVICE_CIDR.1
        )));
    }
    let key = format!("{IPADDRESS_PREFIX}{ip}");
    if dry_run {
        return match store.get(&key, None).await {
            Ok(None) => Ok(()),
            Ok(Some(_)) => Err(invalid("provided IP is already allocated".into())),
            Err(e) => Err(ApiError::internal(e.to_string())),
        };
    }
    match store.create(&key, ip_address_object(svc, ip).into()).await {
        Ok(_) => Ok(()),
        Err(StoreError::AlreadyExists { .. }) => {
            Err(invalid("provided IP is already allocated".into()))
        }
        Err(e) => Err(ApiError::internal(e.to_string())),
    }
}

/// Allocates a free IP (random first, then a scan).
async fn allocate_ip(store: &Store, svc: &Value, dry_run: bool) -> Result<String, ApiError> {
    let (net, bits) = SERVICE_CIDR;
    let size = 1u32 << (32 - bits);
    let base = u32::from(net);
    // Offset 0 is the network, 1 the kubernetes service, the last the broadcast address.
    let candidate = |offset: u32| Ipv4Addr::from(base + offset).to_string();
    let mut tries: Vec<u32> = (0..32).map(|_| rand::rng().random_range(2..size - 1)).collect();
    tries.extend(2..size - 1);
    for offset in tries {
        let ip = candidate(offset);
        let key = format!("{IPADDRESS_PREFIX}{ip}");
        if dry_run {
            if let Ok(None) = store.get(&key, None).await {
                return Ok(ip);
            }
            continue;
        }
        match store.create(&key, ip_address_object(svc, &ip).into()).await {
            Ok(_) => return Ok(ip),
            Err(StoreError::AlreadyExists { .. }) => continue,
            Err(e) => return Err(ApiError::internal(e.to_string())),
        }
    }
    Err(ApiError::internal("failed to allocate a serviceIP: range is full"))
}

/// The IPAddress object recording an allocation.
fn ip_address_object(svc: &Value, ip: &str) -> Vec<u8> {
    let obj = json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "IPAddress",
        "metadata": {
            "name": ip,
            "uid": uuid::Uuid::new_v4().to_string(),
            "creationTimestamp": object::now_rfc3339(),
            "labels": {
                "ipaddress.kubernetes.io/ip-family": "IPv4",
                "ipaddress.kubernetes.io/managed-by": "ipallocator.k8s.io",
            },
        },
        "spec": {"parentRef": {"group": "", "resource": "services", "namespace": object::namespace(svc), "name": object::name(svc)}},
    });
    serde_json::to_vec(&obj).unwrap_or_default()
}

/// Gives every port without a nodePort a free one (free: no other service uses it); a
/// requested one must be free.
async fn allocate_node_ports(store: &Store, svc: &mut Value) -> Result<(), ApiError> {
    let mut used = used_node_ports(store, svc).await?;
    let name = object::name(svc).to_string();
    let Some(ports) = svc.pointer_mut("/spec/ports").and_then(Value::as_array_mut) else {
        return Ok(());
    };
    for (i, p) in ports.iter_mut().enumerate() {
        match p.get("nodePort").and_then(Value::as_i64) {
            Some(np) if used.contains(&np) => {
                let cause = v::invalid(
                    &format!("spec.ports[{i}].nodePort"),
                    &json!(np),
                    "provided port is already allocated",
                );
                return Err(ApiError::invalid("", "Service", &name, vec![cause]));
            }
            Some(np) => used.push(np),
            None => {
                let free = (0..64)
                    .map(|_| rand::rng().random_range(NODE_PORTS))
                    .chain(NODE_PORTS)
                    .find(|np| !used.contains(np))
                    .ok_or_else(|| {
                        ApiError::internal("failed to allocate a nodePort: range is full")
                    })?;
                used.push(free);
                p["nodePort"] = json!(free);
            }
        }
    }
    Ok(())
}

/// Node ports in use by services other than `svc`.
async fn used_node_ports(store: &Store, svc: &Value) -> Result<Vec<i64>, ApiError> {
    let services =
        catalog().find("", "v1", "services").ok_or_else(|| ApiError::internal("no services"))?;
    let prefix = crate::registry::Registry::prefix(services, None);
    let page = store
        .list(&prefix, &ListOptions::default())
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let mut used = vec![];
    for kv in page.items {
        let other: Value = serde_json::from_slice(&kv.value).unwrap_or_default();
        if object::name(&other) == object::name(svc)
            && object::namespace(&other) == object::namespace(svc)
        {
            continue;
        }
        for p in object::path(&other, "spec.ports").and_then(Value::as_array).into_iter().flatten()
        {
            if let Some(np) = p.get("nodePort").and_then(Value::as_i64) {
                used.push(np);
            }
        }
    }
    Ok(used)
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
        assert!(in_range("10.43.200.1".parse().unwrap()));
        assert!(!in_range("10.44.0.1".parse().unwrap()));
    }

    #[test]
    fn columns_render() {
        let s = json!({"spec": {"type": "NodePort", "clusterIP": "10.43.0.9", "ports": [{"port": 80, "nodePort": 30080, "protocol": "TCP"}]}});
        assert_eq!(ports_cell(&s), "80:30080/TCP");
        assert_eq!(external_ip(&s), "<none>");
        assert_eq!(external_ip(&json!({"spec": {"type": "LoadBalancer"}})), "<pending>");
    }
}
