//! Objects every cluster has from its first start: the namespaces default, kube-system,
//! kube-public and kube-node-lease, the system-node-critical and system-cluster-critical
//! PriorityClasses, and the `kubernetes` service in default. Created through
//! the registry (so defaults, validation and allocations apply) only where missing.

use serde_json::json;

use super::catalog::catalog;
use super::{Registry, WriteOptions};
use crate::store::Store;

/// The namespaces every cluster starts with.
pub const SYSTEM_NAMESPACES: &[&str] =
    &["default", "kube-system", "kube-public", "kube-node-lease"];
/// The cluster IP of the `kubernetes` service (the first address of the service range).
pub const KUBERNETES_SERVICE_IP: &str = "10.43.0.1";
/// The port the API server listens on behind the `kubernetes` service.
pub const KUBERNETES_TARGET_PORT: u16 = 6443;

/// What can go wrong creating the defaults.
#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    #[error("creating {what}: {source}")]
    Create { what: String, source: crate::apiserver::status::ApiError },
}

/// Creates the namespaces default, kube-system, kube-public and kube-node-lease and the
/// `kubernetes` service in default, where they are missing.
pub async fn ensure_defaults(store: &Store) -> anyhow::Result<()> {
    let registry = Registry::new(store.clone());
    let opts = WriteOptions { field_manager: "skiff".into(), ..Default::default() };
    let namespaces = catalog().find("", "v1", "namespaces").expect("namespaces are in the catalog");
    for ns in SYSTEM_NAMESPACES {
        let obj = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
        create_missing(&registry, namespaces, obj, &opts, &format!("namespace {ns}")).await?;
    }
    let classes = catalog().find("scheduling.k8s.io", "v1", "priorityclasses");
    for (name, value) in super::resources::pods::priority::SYSTEM_PRIORITY_CLASSES {
        let obj = json!({"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass",
            "metadata": {"name": name}, "value": value, "description": "Built-in class for system critical pods."});
        let res = classes.expect("priorityclasses are in the catalog");
        create_missing(&registry, res, obj, &opts, &format!("priorityclass {name}")).await?;
    }
    let services = catalog().find("", "v1", "services").expect("services are in the catalog");
    let svc = json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": "kubernetes",
            "namespace": "default",
            "labels": {"component": "apiserver", "provider": "kubernetes"},
        },
        "spec": {
            "type": "ClusterIP",
            "clusterIP": KUBERNETES_SERVICE_IP,
            "clusterIPs": [KUBERNETES_SERVICE_IP],
            "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": KUBERNETES_TARGET_PORT}],
            "sessionAffinity": "None",
        },
    });
    create_missing(&registry, services, svc, &opts, "service default/kubernetes").await?;
    Ok(())
}

async fn create_missing(
    registry: &Registry,
    res: &'static super::ResourceInfo,
    obj: serde_json::Value,
    opts: &WriteOptions,
    what: &str,
) -> Result<(), BootstrapError> {
    let (ns, name) =
        (super::object::namespace(&obj).to_string(), super::object::name(&obj).to_string());
    let ns = (!ns.is_empty()).then_some(ns.as_str());
    match registry.get_raw(res, ns, &name).await {
        Ok(Some(_)) => return Ok(()),
        Ok(None) => {}
        Err(source) => return Err(BootstrapError::Create { what: what.to_string(), source }),
    }
    match registry.create(res, obj, opts).await {
        Ok(_) => {
            tracing::info!(object = what, "created default object");
            Ok(())
        }
        Err(e) if e.reason == "AlreadyExists" => Ok(()),
        Err(source) => Err(BootstrapError::Create { what: what.to_string(), source }),
    }
}

/// Points the `kubernetes` service at the API server: the Endpoints and EndpointSlice named
/// `kubernetes` in default, with `address`:`port` as their one endpoint (what upstream's
/// endpoint reconciler keeps). Creates or replaces them; the server calls it once its
/// advertised address is known.
pub async fn reconcile_kubernetes_endpoints(
    store: &Store,
    address: std::net::IpAddr,
    port: u16,
) -> anyhow::Result<()> {
    let registry = Registry::new(store.clone());
    let opts = WriteOptions {
        field_manager: "skiff".into(),
        create_if_missing: true,
        ..Default::default()
    };
    let ip = address.to_string();
    let family = if address.is_ipv4() { "IPv4" } else { "IPv6" };
    let endpoints = catalog().find("", "v1", "endpoints").expect("endpoints are in the catalog");
    let ep = json!({
        "apiVersion": "v1",
        "kind": "Endpoints",
        "metadata": {"name": "kubernetes", "namespace": "default",
                     "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"}},
        "subsets": [{"addresses": [{"ip": ip}], "ports": [{"name": "https", "port": port, "protocol": "TCP"}]}],
    });
    let slices = catalog()
        .find("discovery.k8s.io", "v1", "endpointslices")
        .expect("endpointslices are in the catalog");
    let slice = json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {"name": "kubernetes", "namespace": "default",
                     "labels": {"kubernetes.io/service-name": "kubernetes"}},
        "addressType": family,
        "endpoints": [{"addresses": [ip], "conditions": {"ready": true}}],
        "ports": [{"name": "https", "port": port, "protocol": "TCP"}],
    });
    for (res, obj) in [(endpoints, ep), (slices, slice)] {
        let what = format!("{} default/kubernetes", res.plural);
        registry
            .update(
                res,
                Some("default"),
                "kubernetes",
                super::UpdatePart::Main,
                &opts,
                &|current| {
                    let mut next = obj.clone();
                    if let Some(cur) = current {
                        // Keep identity; replace the content.
                        next["metadata"] = cur["metadata"].clone();
                        next["metadata"]["labels"] = obj["metadata"]["labels"].clone();
                        if let Some(m) = next["metadata"].as_object_mut() {
                            m.remove("resourceVersion");
                        }
                    }
                    Ok(next)
                },
            )
            .await
            .map_err(|source| BootstrapError::Create { what, source })?;
    }
    Ok(())
}
