//! The service node port allocator (30000-32767). Each allocated port is a key
//! `/registry/ranges/servicenodeports/<port>` naming the service that holds it; creating the
//! key is the atomic claim, so concurrent creates never share a port. Ports of services stored
//! before these keys existed are found by a scan of the services and claimed when next written.

use rand::Rng;
use serde_json::{json, Value};

use crate::apiserver::status::ApiError;
use crate::registry::catalog::catalog;
use crate::registry::object;
use crate::registry::validation as v;
use crate::store::{KeyValue, ListOptions, Store, StoreError};

/// The node port range.
pub const NODE_PORTS: std::ops::RangeInclusive<i64> = 30000..=32767;
const PREFIX: &str = "/registry/ranges/servicenodeports/";

/// Whether a service of this type gets node ports.
pub fn needs_node_ports(svc: &Value) -> bool {
    match object::str_at(svc, "spec.type").unwrap_or("ClusterIP") {
        "NodePort" => true,
        "LoadBalancer" => {
            object::path(svc, "spec.allocateLoadBalancerNodePorts") != Some(&json!(false))
        }
        _ => false,
    }
}

/// The node ports a service holds.
pub fn node_ports(svc: &Value) -> Vec<i64> {
    let mut out: Vec<i64> = object::path(svc, "spec.ports")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|p| p.get("nodePort").and_then(Value::as_i64))
        .filter(|np| *np != 0)
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

/// Claims every requested node port of `svc` and allocates one for each port without; 422
/// "provided port is already allocated" when another service holds a requested one. On failure
/// nothing this call claimed stays claimed.
pub async fn allocate(store: &Store, svc: &mut Value, dry_run: bool) -> Result<(), ApiError> {
    let legacy = legacy_ports(store, svc).await?;
    let name = object::name(svc).to_string();
    let snapshot = svc.clone();
    let mut mine: Vec<i64> = vec![];
    let mut claimed: Vec<i64> = vec![];
    let count = object::path(svc, "spec.ports").and_then(Value::as_array).map_or(0, Vec::len);
    for i in 0..count {
        let requested = svc
            .pointer(&format!("/spec/ports/{i}/nodePort"))
            .and_then(Value::as_i64)
            .filter(|np| *np != 0);
        let result = match requested {
            Some(np) if mine.contains(&np) => Ok(np),
            Some(np) if legacy.contains(&np) => Err(np),
            Some(np) => match claim(store, &snapshot, np, dry_run).await? {
                Claim::New => {
                    claimed.push(np);
                    Ok(np)
                }
                Claim::Held => Ok(np),
                Claim::Taken => Err(np),
            },
            None => {
                let mut found = None;
                let candidates = (0..64).map(|_| rand::rng().random_range(NODE_PORTS));
                for np in candidates.chain(NODE_PORTS) {
                    if mine.contains(&np) || legacy.contains(&np) {
                        continue;
                    }
                    if let Claim::New = claim(store, &snapshot, np, dry_run).await? {
                        claimed.push(np);
                        found = Some(np);
                        break;
                    }
                }
                match found {
                    Some(np) => Ok(np),
                    None => {
                        release_ports(store, &snapshot, &claimed).await;
                        return Err(ApiError::internal(
                            "failed to allocate a nodePort: range is full",
                        ));
                    }
                }
            }
        };
        match result {
            Ok(np) => {
                mine.push(np);
                if let Some(p) = svc.pointer_mut(&format!("/spec/ports/{i}")) {
                    p["nodePort"] = json!(np);
                }
            }
            Err(np) => {
                if !dry_run {
                    release_ports(store, &snapshot, &claimed).await;
                }
                let cause = v::invalid(
                    &format!("spec.ports[{i}].nodePort"),
                    &json!(np),
                    "provided port is already allocated",
                );
                return Err(ApiError::invalid("", "Service", &name, vec![cause]));
            }
        }
    }
    Ok(())
}

/// Releases the node ports `svc` holds that `replaced_by` (its successor) does not.
pub async fn release(store: &Store, svc: &Value, replaced_by: Option<&Value>) {
    let keep = replaced_by.map(node_ports).unwrap_or_default();
    let gone: Vec<i64> = node_ports(svc).into_iter().filter(|np| !keep.contains(np)).collect();
    release_ports(store, svc, &gone).await;
}

enum Claim {
    /// Claimed now (or free, in a dry run).
    New,
    /// Already held by this service.
    Held,
    /// Held by another service.
    Taken,
}

async fn claim(store: &Store, svc: &Value, np: i64, dry_run: bool) -> Result<Claim, ApiError> {
    let key = format!("{PREFIX}{np}");
    let held = |kv: Option<KeyValue>| match kv {
        None => Claim::New,
        Some(kv) if owned_by(&kv, svc) => Claim::Held,
        Some(_) => Claim::Taken,
    };
    let internal = |e: StoreError| ApiError::internal(e.to_string());
    if dry_run {
        return Ok(held(store.get(&key, None).await.map_err(internal)?));
    }
    let owner = json!({"namespace": object::namespace(svc), "name": object::name(svc)});
    match store.create(&key, serde_json::to_vec(&owner).unwrap_or_default().into()).await {
        Ok(_) => Ok(Claim::New),
        Err(StoreError::AlreadyExists { .. }) => {
            match held(store.get(&key, None).await.map_err(internal)?) {
                // Released in between: try again on the next candidate (or report it taken).
                Claim::New => Ok(Claim::Taken),
                other => Ok(other),
            }
        }
        Err(e) => Err(internal(e)),
    }
}

fn owned_by(kv: &KeyValue, svc: &Value) -> bool {
    let owner: Value = serde_json::from_slice(&kv.value).unwrap_or_default();
    owner.get("namespace").and_then(Value::as_str) == Some(object::namespace(svc))
        && owner.get("name").and_then(Value::as_str) == Some(object::name(svc))
}

async fn release_ports(store: &Store, svc: &Value, ports: &[i64]) {
    for np in ports {
        let key = format!("{PREFIX}{np}");
        if let Ok(Some(kv)) = store.get(&key, None).await {
            if owned_by(&kv, svc) {
                if let Err(e) = store.delete(&key, Some(kv.mod_revision)).await {
                    tracing::warn!(node_port = np, error = %e, "could not release node port");
                }
            }
        }
    }
}

/// Node ports of other services that hold no key (stored before the keys existed).
async fn legacy_ports(store: &Store, svc: &Value) -> Result<Vec<i64>, ApiError> {
    let services =
        catalog().find("", "v1", "services").ok_or_else(|| ApiError::internal("no services"))?;
    let prefix = crate::registry::Registry::prefix(services, None);
    let internal = |e: StoreError| ApiError::internal(e.to_string());
    let page = store.list(&prefix, &ListOptions::default()).await.map_err(internal)?;
    let keys = store.list(PREFIX, &ListOptions::default()).await.map_err(internal)?;
    let keyed: Vec<&str> = keys.items.iter().map(|kv| &kv.key[PREFIX.len()..]).collect();
    let mut used = vec![];
    for kv in page.items {
        let other: Value = serde_json::from_slice(&kv.value).unwrap_or_default();
        if object::name(&other) == object::name(svc)
            && object::namespace(&other) == object::namespace(svc)
        {
            continue;
        }
        for np in node_ports(&other) {
            if !keyed.contains(&np.to_string().as_str()) {
                used.push(np);
            }
        }
    }
    Ok(used)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::skiff_server::TempDir;

    async fn store(dir: &TempDir) -> Store {
        crate::testing::sqlite_store(dir.path()).await
    }

    fn svc(name: &str, node_port: Option<i64>) -> Value {
        let mut port = json!({"port": 80});
        if let Some(np) = node_port {
            port["nodePort"] = json!(np);
        }
        json!({"metadata": {"name": name, "namespace": "default"},
            "spec": {"type": "NodePort", "ports": [port]}})
    }

    #[tokio::test]
    async fn concurrent_allocations_never_share_a_port_or_ip() {
        let dir = TempDir::new("nodeports").unwrap();
        let store = store(&dir).await;
        let runs = (0..40).map(|i| {
            let store = store.clone();
            async move {
                let mut s = svc(&format!("s{i}"), None);
                allocate(&store, &mut s, false).await.unwrap();
                let ip = super::super::ipaddresses::allocate(&store, &s, false).await.unwrap();
                (node_ports(&s)[0], ip)
            }
        });
        let got = futures::future::join_all(runs).await;
        let ports: std::collections::HashSet<i64> = got.iter().map(|(p, _)| *p).collect();
        let ips: std::collections::HashSet<&String> = got.iter().map(|(_, ip)| ip).collect();
        assert_eq!((ports.len(), ips.len()), (40, 40));

        // A requested port: exclusive, idempotent for its holder, free again once released.
        // (One the 40 random allocations above did not take.)
        let free = (30500..).find(|p| !ports.contains(p)).unwrap();
        let mut a = svc("a", Some(free));
        allocate(&store, &mut a, false).await.unwrap();
        allocate(&store, &mut a.clone(), false).await.unwrap();
        let err = allocate(&store, &mut svc("b", Some(free)), false).await.unwrap_err();
        assert!(err.message.ends_with("provided port is already allocated"), "{}", err.message);
        release(&store, &a, None).await;
        allocate(&store, &mut svc("b", Some(free)), false).await.unwrap();
    }

    #[test]
    fn node_port_types() {
        assert!(needs_node_ports(&json!({"spec": {"type": "NodePort"}})));
        assert!(needs_node_ports(&json!({"spec": {"type": "LoadBalancer"}})));
        assert!(!needs_node_ports(
            &json!({"spec": {"type": "LoadBalancer", "allocateLoadBalancerNodePorts": false}})
        ));
        assert!(!needs_node_ports(&json!({"spec": {"type": "ClusterIP"}})));
        let svc =
            json!({"spec": {"ports": [{"nodePort": 30001}, {"nodePort": 30001}, {"port": 1}]}});
        assert_eq!(node_ports(&svc), vec![30001]);
    }
}
