//! IPAddress (networking.k8s.io/v1): one per allocated service IP, named by the address, and
//! the service IP allocator that creates them (upstream's MultiCIDRServiceAllocator keeps its
//! allocations the same way): creating the object's key is the atomic claim, so no two
//! services get one IP even with several API servers on one etcd.

use std::net::Ipv4Addr;

use rand::Rng;
use serde_json::{json, Value};

use crate::apiserver::status::{ApiError, StatusCause};
use crate::registry::object;
use crate::registry::strategy::{Column, Strategy};
use crate::registry::validation::{self as v, NameRule};
use crate::store::{KeyValue, Store, StoreError};

/// The IPAddress strategy.
pub struct IpAddressStrategy;

impl Strategy for IpAddressStrategy {
    fn name_rule(&self) -> NameRule {
        NameRule::IpAddress
    }

    fn validate(&self, obj: &Value) -> Vec<StatusCause> {
        let mut out = vec![];
        if object::path(obj, "spec.parentRef").is_none() {
            out.push(v::required("spec.parentRef", ""));
        }
        for f in ["resource", "name"] {
            let path = format!("spec.parentRef.{f}");
            if object::path(obj, "spec.parentRef").is_some()
                && object::str_at(obj, &path).unwrap_or("").is_empty()
            {
                out.push(v::required(&path, ""));
            }
        }
        out
    }

    fn validate_update(&self, new: &Value, old: &Value) -> Vec<StatusCause> {
        let mut out = self.validate(new);
        v::check_immutable(new, old, "spec.parentRef", &mut out);
        out
    }

    fn columns(&self) -> Vec<Column> {
        vec![
            Column::NAME,
            Column::new("ParentRef", "string", 0, |o| {
                let r = |f: &str| {
                    object::str_at(o, &format!("spec.parentRef.{f}")).unwrap_or("").to_string()
                };
                json!(format!("{}/{}/{}", r("resource"), r("namespace"), r("name")))
            }),
        ]
    }
}

/// The service IP range.
pub const SERVICE_CIDR: (Ipv4Addr, u8) = (Ipv4Addr::new(10, 43, 0, 0), 16);
const IPADDRESS_PREFIX: &str = "/registry/networking.k8s.io/ipaddresses/";

/// Whether `ip` is in the service range.
pub fn in_range(ip: Ipv4Addr) -> bool {
    let (net, bits) = SERVICE_CIDR;
    let mask = u32::MAX << (32 - bits);
    (u32::from(ip) & mask) == u32::from(net)
}

/// The 422 for a service whose requested IP cannot be had.
fn ip_invalid(svc: &Value, ip: &str, why: &str) -> ApiError {
    let ips: Vec<String> = object::path(svc, "spec.clusterIPs")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str().map(|s| format!("{s:?}")))
        .collect();
    let cause = StatusCause {
        reason: "FieldValueInvalid".into(),
        message: format!(
            "Invalid value: []string{{{}}}: failed to allocate IP {ip}: {why}",
            ips.join(", ")
        ),
        field: "spec.clusterIPs".into(),
    };
    ApiError::invalid("", "Service", object::name(svc), vec![cause])
}

/// Whether the IPAddress stored under `kv` belongs to `svc`.
fn owned_by(kv: &KeyValue, svc: &Value) -> bool {
    let owner: Value = serde_json::from_slice(&kv.value).unwrap_or_default();
    object::str_at(&owner, "spec.parentRef.resource") == Some("services")
        && object::str_at(&owner, "spec.parentRef.name") == Some(object::name(svc))
        && object::str_at(&owner, "spec.parentRef.namespace") == Some(object::namespace(svc))
}

/// Claims a requested IP for `svc`: 422 if it is outside the range or another service holds
/// it. Claiming an IP the service already holds succeeds (a retried write).
pub async fn claim(store: &Store, svc: &Value, ip: &str, dry_run: bool) -> Result<(), ApiError> {
    let parsed: Ipv4Addr =
        ip.parse().map_err(|_| ip_invalid(svc, ip, "not a valid IPv4 address"))?;
    if !in_range(parsed) {
        let why = format!(
            "the provided IP ({ip}) is not in the valid range. The range of valid IPs is {}/{}",
            SERVICE_CIDR.0, SERVICE_CIDR.1
        );
        return Err(ip_invalid(svc, ip, &why));
    }
    let key = format!("{IPADDRESS_PREFIX}{ip}");
    let taken = |kv: Option<KeyValue>| match kv {
        Some(kv) if !owned_by(&kv, svc) => {
            Err(ip_invalid(svc, ip, "provided IP is already allocated"))
        }
        _ => Ok(()),
    };
    if dry_run {
        return taken(store.get(&key, None).await.map_err(internal)?);
    }
    match store.create(&key, ip_address_object(svc, ip).into()).await {
        Ok(_) => Ok(()),
        Err(StoreError::AlreadyExists { .. }) => {
            taken(store.get(&key, None).await.map_err(internal)?)
        }
        Err(e) => Err(internal(e)),
    }
}

/// Allocates a free IP for `svc` (random offsets first, then a scan of the range). Creating the
/// IPAddress object is the claim, so concurrent allocations never share an IP.
pub async fn allocate(store: &Store, svc: &Value, dry_run: bool) -> Result<String, ApiError> {
    let (net, bits) = SERVICE_CIDR;
    let size = 1u32 << (32 - bits);
    let base = u32::from(net);
    // Offset 0 is the network, 1 the kubernetes service, the last the broadcast address.
    let mut tries: Vec<u32> = (0..32).map(|_| rand::rng().random_range(2..size - 1)).collect();
    tries.extend(2..size - 1);
    for offset in tries {
        let ip = Ipv4Addr::from(base + offset).to_string();
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
            Err(e) => return Err(internal(e)),
        }
    }
    Err(ApiError::internal("failed to allocate a serviceIP: range is full"))
}

/// Releases `ip` if `svc` holds it.
pub async fn release(store: &Store, svc: &Value, ip: &str) {
    let key = format!("{IPADDRESS_PREFIX}{ip}");
    if let Ok(Some(kv)) = store.get(&key, None).await {
        if owned_by(&kv, svc) {
            if let Err(e) = store.delete(&key, Some(kv.mod_revision)).await {
                tracing::warn!(ip = %ip, error = %e, "could not release service ip");
            }
        }
    }
}

fn internal(e: StoreError) -> ApiError {
    ApiError::internal(e.to_string())
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
