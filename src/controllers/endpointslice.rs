//! The EndpointSlice controller: for each Service with a selector, IPv4 EndpointSlices of the
//! pods it selects (up to 100 endpoints a slice, one set of slices per distinct port list, since
//! named target ports resolve per pod). Each endpoint has its address, the conditions ready,
//! serving and terminating (pods being deleted stay listed as terminating), nodeName, zone (the
//! node's topology.kubernetes.io/zone) and targetRef. Slices carry the kubernetes.io/service-name
//! and endpointslice.kubernetes.io/managed-by labels (plus the service's own), the service as
//! controlling owner (the garbage collector removes them with it) and the
//! last-change-trigger-time annotation; a service without endpoints keeps one empty placeholder
//! slice. Existing slices are updated in place where they can be, to keep churn low.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1::{Node, Pod, Service};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{DeleteParams, PostParams, Preconditions};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Api, Client, ResourceExt};
use parking_lot::Mutex;

use super::endpoints::{
    find_port, format_trigger_time, hostname_for_service, pod_ips, pod_reference, selected_pods,
    service_selector, should_pod_be_in_endpoints, PodServices, TriggerTimeTracker, HEADLESS_LABEL,
    LAST_CHANGE_TRIGGER_TIME,
};
use super::informer::Change;
use super::informers::{Informers, StoreReady};
use super::ownerindex::PodIndex;
use super::podutil::{self, key_of, split_key};
use super::queue::WorkQueue;
use super::worker::{run_workers, Action};

/// The label naming the controller that manages a slice.
pub const MANAGED_BY_LABEL: &str = "endpointslice.kubernetes.io/managed-by";
/// This controller's value of [`MANAGED_BY_LABEL`].
pub const CONTROLLER_NAME: &str = "endpointslice-controller.k8s.io";
/// The label naming the service a slice belongs to.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// The most endpoints this controller puts in one slice (upstream's --max-endpoints-per-slice).
pub const MAX_ENDPOINTS_PER_SLICE: usize = 100;
/// The node label whose value becomes an endpoint's zone.
pub const ZONE_LABEL: &str = "topology.kubernetes.io/zone";
/// How soon a service is looked at again while the slice cache lags this controller's writes.
const STALE_CACHE_RETRY: Duration = Duration::from_millis(100);

/// What can go wrong syncing a service's slices.
#[derive(Debug, thiserror::Error)]
pub enum EndpointSliceError {
    #[error("cannot {action} endpoint slices of service {key}")]
    Api {
        action: &'static str,
        key: String,
        #[source]
        source: kube::Error,
    },
    #[error("an informer of the endpointslice controller stopped")]
    InformerStopped,
}

struct Ctx {
    client: Client,
    services: Store<Service>,
    pods: Store<Pod>,
    pod_index: PodIndex,
    slices: Store<EndpointSlice>,
    nodes: Store<Node>,
    triggers: TriggerTimeTracker,
    written: SliceTracker,
}

/// Runs the controller with `workers` concurrent syncs until an informer stops.
pub async fn run(
    client: Client,
    informers: Informers,
    workers: usize,
) -> Result<(), EndpointSliceError> {
    let queue = WorkQueue::new();
    let q = queue.clone();
    let (services, svc_task) = informers.spawn(
        "endpointslice-service-informer",
        Api::<Service>::all(client.clone()),
        watcher::Config::default(),
        move |c| match c {
            Change::Applied(s) | Change::Deleted(s) => q.add(key_of(s)),
            Change::Synced => {}
        },
    );
    let (q, index) = (queue.clone(), PodServices::new(services.clone()));
    let pod_index = PodIndex::default();
    let idx = pod_index.clone();
    let (pods, pods_task) = informers.spawn(
        "endpointslice-pod-informer",
        Api::<Pod>::all(client.clone()),
        watcher::Config::default(),
        move |c| match c {
            Change::Applied(p) => {
                idx.observe(&c);
                index.changed(p, false).into_iter().for_each(|k| q.add(k))
            }
            Change::Deleted(p) => {
                idx.observe(&c);
                index.changed(p, true).into_iter().for_each(|k| q.add(k))
            }
            Change::Synced => {}
        },
    );
    let q = queue.clone();
    let (slices, slices_task) = informers.spawn(
        "endpointslice-informer",
        Api::<EndpointSlice>::all(client.clone()),
        watcher::Config::default().labels(&format!("{MANAGED_BY_LABEL}={CONTROLLER_NAME}")),
        move |c| match c {
            Change::Applied(s) | Change::Deleted(s) => {
                if let (Some(ns), Some(svc)) = (s.namespace(), s.labels().get(SERVICE_NAME_LABEL)) {
                    q.add(format!("{ns}/{svc}"));
                }
            }
            Change::Synced => {}
        },
    );
    let (nodes, nodes_task) = informers.spawn(
        "endpointslice-node-informer",
        Api::<Node>::all(client.clone()),
        watcher::Config::default(),
        |_| {},
    );
    let _guard = super::AbortOnDrop(vec![
        svc_task.abort_handle(),
        pods_task.abort_handle(),
        slices_task.abort_handle(),
        nodes_task.abort_handle(),
    ]);
    let ready =
        futures::future::join4(services.ready(), pods.ready(), slices.ready(), nodes.ready()).await;
    if ready.0.is_err() || ready.1.is_err() || ready.2.is_err() || ready.3.is_err() {
        return Err(EndpointSliceError::InformerStopped);
    }
    let ctx = Arc::new(Ctx {
        client,
        services,
        pods,
        pod_index,
        slices,
        nodes,
        triggers: TriggerTimeTracker::default(),
        written: SliceTracker::default(),
    });
    let workers = run_workers("endpointslice", queue, workers, move |key| {
        let ctx = ctx.clone();
        async move { sync(&ctx, &key).await }
    });
    tokio::select! {
        _ = workers => {}
        _ = svc_task => {}
        _ = pods_task => {}
        _ = slices_task => {}
        _ = nodes_task => {}
    }
    Err(EndpointSliceError::InformerStopped)
}

/// A slice's ports in a comparable form (an empty name and no name are the same).
type PortsKey = Vec<(String, i32, String, Option<String>)>;

fn ports_key(ports: Option<&[EndpointPort]>) -> PortsKey {
    ports
        .unwrap_or(&[])
        .iter()
        .map(|p| {
            (
                p.name.clone().unwrap_or_default(),
                p.port.unwrap_or(0),
                p.protocol.clone().unwrap_or_else(|| "TCP".into()),
                p.app_protocol.clone(),
            )
        })
        .collect()
}

/// The ports of a group of endpoints, and the endpoints by pod uid.
type PortGroup = (Vec<EndpointPort>, Vec<(String, Endpoint)>);

/// What one sync writes.
#[derive(Default)]
struct Plan {
    create: Vec<EndpointSlice>,
    update: Vec<EndpointSlice>,
    delete: Vec<Arc<EndpointSlice>>,
}

async fn sync(ctx: &Ctx, key: &str) -> Result<Action, EndpointSliceError> {
    let (ns, name) = split_key(key);
    let ns = ns.unwrap_or("default");
    let Some(svc) = ctx.services.get(&ObjectRef::new(name).within(ns)) else {
        // The garbage collector removes the slices with their owner.
        ctx.triggers.delete_service(key);
        ctx.written.forget(key);
        return Ok(Action::Done);
    };
    if svc.metadata.deletion_timestamp.is_some() {
        return Ok(Action::Done);
    }
    let Some(spec) = svc.spec.as_ref() else { return Ok(Action::Done) };
    if spec.type_.as_deref() == Some("ExternalName") {
        return Ok(Action::Done);
    }
    let Some(selector) = service_selector(&svc) else { return Ok(Action::Done) };
    if !ctx.written.caught_up(key, &ctx.slices, ns) {
        return Ok(Action::RequeueAfter(STALE_CACHE_RETRY));
    }
    let pods = selected_pods(&ctx.pods, &ctx.pod_index, ns, selector);
    let (trigger, seen) = ctx.triggers.compute(key, &svc, &pods);
    let publish_not_ready = spec.publish_not_ready_addresses.unwrap_or(false);

    // The endpoints wanted, grouped by their port list.
    let mut wanted: BTreeMap<PortsKey, PortGroup> = BTreeMap::new();
    for pod in &pods {
        if !should_pod_be_in_endpoints(pod, true) {
            continue;
        }
        let Some(ip) = pod_ips(pod)
            .into_iter()
            .find(|ip| ip.parse::<std::net::IpAddr>().is_ok_and(|a| a.is_ipv4()))
        else {
            continue;
        };
        let ports: Vec<EndpointPort> = spec
            .ports
            .iter()
            .flatten()
            .filter_map(|sp| {
                find_port(pod, sp).map(|port| EndpointPort {
                    name: Some(sp.name.clone().unwrap_or_default()),
                    port: Some(port),
                    protocol: Some(sp.protocol.clone().unwrap_or_else(|| "TCP".into())),
                    app_protocol: sp.app_protocol.clone(),
                })
            })
            .collect();
        let endpoint = pod_to_endpoint(ctx, pod, &svc, ip, publish_not_ready);
        let entry = wanted.entry(ports_key(Some(&ports))).or_insert_with(|| (ports, vec![]));
        entry.1.push((pod.metadata.uid.clone().unwrap_or_else(|| pod.name_any()), endpoint));
    }

    let labels = slice_labels(&svc);
    let uid = svc.uid().unwrap_or_default();
    let mut existing: Vec<Arc<EndpointSlice>> = ctx
        .slices
        .state()
        .into_iter()
        .filter(|s| s.namespace().as_deref() == Some(ns))
        .filter(|s| s.labels().get(SERVICE_NAME_LABEL).map(String::as_str) == Some(name))
        .collect();
    existing.sort_by_key(|s| s.name_any());
    let mut plan = Plan::default();
    let mut by_ports: HashMap<PortsKey, Vec<Arc<EndpointSlice>>> = HashMap::new();
    for s in &existing {
        let owned = s.owner_references().iter().any(|r| r.uid == uid && r.controller == Some(true));
        if !owned || s.address_type != "IPv4" {
            plan.delete.push(s.clone());
        } else {
            by_ports.entry(ports_key(s.ports.as_deref())).or_default().push(s.clone());
        }
    }
    for (pkey, (ports, endpoints)) in wanted {
        let slices = by_ports.remove(&pkey).unwrap_or_default();
        plan_ports(&mut plan, &svc, &labels, ports, endpoints, slices);
    }
    plan.delete.extend(by_ports.into_values().flatten());
    // A service without endpoints keeps one empty placeholder slice.
    if plan.create.is_empty() && plan.update.is_empty() && plan.delete.len() == existing.len() {
        let keep = plan
            .delete
            .iter()
            .position(|s| {
                s.endpoints.is_empty()
                    && s.ports.as_ref().is_none_or(|p| p.is_empty())
                    && s.address_type == "IPv4"
                    && s.owner_references().iter().any(|r| r.uid == uid)
            })
            .filter(|_| plan.delete.len() == 1);
        match keep {
            Some(i) => {
                let s = plan.delete.remove(i);
                if s.metadata.labels.as_ref() != Some(&labels) {
                    let mut s = (*s).clone();
                    s.metadata.labels = Some(labels.clone());
                    plan.update.push(s);
                }
            }
            None => plan.create.push(new_slice(&svc, &labels, None, vec![])),
        }
    }
    apply(ctx, key, ns, plan, trigger).await?;
    ctx.triggers.save(key, seen);
    Ok(Action::Done)
}

/// Plans the slices of one port list: endpoints already in a slice stay there (updated if they
/// changed), those gone are removed, new ones fill slices with room and then new slices.
fn plan_ports(
    plan: &mut Plan,
    svc: &Service,
    labels: &BTreeMap<String, String>,
    ports: Vec<EndpointPort>,
    endpoints: Vec<(String, Endpoint)>,
    slices: Vec<Arc<EndpointSlice>>,
) {
    let mut remaining: BTreeMap<String, Endpoint> = endpoints.into_iter().collect();
    let mut kept: Vec<(Arc<EndpointSlice>, Vec<Endpoint>)> = vec![];
    for s in slices {
        let eps: Vec<Endpoint> =
            s.endpoints.iter().filter_map(|e| remaining.remove(&endpoint_key(e))).collect();
        kept.push((s, eps));
    }
    let mut queue = remaining.into_values();
    for (s, eps) in kept.iter_mut() {
        let _ = s;
        while eps.len() < MAX_ENDPOINTS_PER_SLICE {
            match queue.next() {
                Some(e) => eps.push(e),
                None => break,
            }
        }
    }
    let rest: Vec<Endpoint> = queue.collect();
    for chunk in rest.chunks(MAX_ENDPOINTS_PER_SLICE) {
        plan.create.push(new_slice(svc, labels, Some(ports.clone()), chunk.to_vec()));
    }
    for (s, eps) in kept {
        if eps.is_empty() {
            plan.delete.push(s);
        } else if eps != s.endpoints || s.metadata.labels.as_ref() != Some(labels) {
            let mut s = (*s).clone();
            s.endpoints = eps;
            s.metadata.labels = Some(labels.clone());
            plan.update.push(s);
        }
    }
}

/// The key an endpoint is matched by across syncs: its pod's uid.
fn endpoint_key(e: &Endpoint) -> String {
    let r = e.target_ref.as_ref();
    r.and_then(|r| r.uid.clone()).or_else(|| r.and_then(|r| r.name.clone())).unwrap_or_default()
}

fn pod_to_endpoint(
    ctx: &Ctx,
    pod: &Pod,
    svc: &Service,
    ip: String,
    publish_not_ready: bool,
) -> Endpoint {
    let serving = podutil::is_ready(pod);
    let terminating = pod.metadata.deletion_timestamp.is_some();
    let ready = publish_not_ready || (serving && !terminating);
    let node_name = pod.spec.as_ref().and_then(|s| s.node_name.clone()).filter(|n| !n.is_empty());
    let zone = node_name
        .as_ref()
        .and_then(|n| ctx.nodes.get(&ObjectRef::new(n)))
        .and_then(|n| n.labels().get(ZONE_LABEL).cloned());
    Endpoint {
        addresses: vec![ip],
        conditions: Some(EndpointConditions {
            ready: Some(ready),
            serving: Some(serving),
            terminating: Some(terminating),
        }),
        hostname: hostname_for_service(pod, svc),
        node_name,
        zone,
        target_ref: Some(pod_reference(pod)),
        ..Default::default()
    }
}

/// The service's labels (but the reserved ones), service-name, managed-by and, for a headless
/// service, service.kubernetes.io/headless.
fn slice_labels(svc: &Service) -> BTreeMap<String, String> {
    let mut labels: BTreeMap<String, String> = svc
        .labels()
        .iter()
        .filter(|(k, _)| {
            k.as_str() != SERVICE_NAME_LABEL
                && k.as_str() != MANAGED_BY_LABEL
                && k.as_str() != HEADLESS_LABEL
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if svc.spec.as_ref().and_then(|s| s.cluster_ip.as_deref()) == Some("None") {
        labels.insert(HEADLESS_LABEL.into(), String::new());
    }
    labels.insert(SERVICE_NAME_LABEL.into(), svc.name_any());
    labels.insert(MANAGED_BY_LABEL.into(), CONTROLLER_NAME.into());
    labels
}

fn new_slice(
    svc: &Service,
    labels: &BTreeMap<String, String>,
    ports: Option<Vec<EndpointPort>>,
    endpoints: Vec<Endpoint>,
) -> EndpointSlice {
    let mut prefix = format!("{}-", svc.name_any());
    if prefix.len() > 58 {
        prefix.truncate(57);
        prefix.push('-');
    }
    EndpointSlice {
        metadata: ObjectMeta {
            generate_name: Some(prefix),
            namespace: svc.namespace(),
            labels: Some(labels.clone()),
            owner_references: Some(vec![podutil::controller_ref(svc)]),
            ..Default::default()
        },
        address_type: "IPv4".into(),
        endpoints,
        ports,
    }
}

fn set_trigger(meta: &mut ObjectMeta, trigger: Option<DateTime<Utc>>) {
    match trigger {
        Some(t) => {
            meta.annotations
                .get_or_insert_with(BTreeMap::new)
                .insert(LAST_CHANGE_TRIGGER_TIME.into(), format_trigger_time(t));
        }
        None => {
            if let Some(a) = meta.annotations.as_mut() {
                a.remove(LAST_CHANGE_TRIGGER_TIME);
            }
        }
    }
}

/// Writes a plan: creates first, then updates, then deletes (so a service never loses all its
/// endpoints in between), noting every write for the stale-cache check.
async fn apply(
    ctx: &Ctx,
    key: &str,
    ns: &str,
    plan: Plan,
    trigger: Option<DateTime<Utc>>,
) -> Result<(), EndpointSliceError> {
    let err = |action: &'static str| {
        let key = key.to_string();
        move |source| EndpointSliceError::Api { action, key, source }
    };
    let api: Api<EndpointSlice> = Api::namespaced(ctx.client.clone(), ns);
    let pp = PostParams::default();
    for mut s in plan.create {
        set_trigger(&mut s.metadata, trigger);
        match api.create(&pp, &s).await {
            Ok(created) => ctx.written.wrote(key, &created),
            Err(kube::Error::Api(e)) if e.code == 403 && e.message.contains("being terminated") => {
                return Ok(())
            }
            Err(e) => return Err(err("create")(e)),
        }
    }
    for mut s in plan.update {
        set_trigger(&mut s.metadata, trigger);
        let updated = api.replace(&s.name_any(), &pp, &s).await.map_err(err("update"))?;
        ctx.written.wrote(key, &updated);
    }
    for s in plan.delete {
        let dp = DeleteParams {
            preconditions: Some(Preconditions { uid: s.uid(), resource_version: None }),
            ..Default::default()
        };
        match api.delete(&s.name_any(), &dp).await {
            Ok(_) => ctx.written.deleted(key, &s.name_any()),
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
            Err(e) => return Err(err("delete")(e)),
        }
    }
    Ok(())
}

/// This controller's recent writes per service, so a sync never plans from a slice cache that
/// has not yet seen them (which would create duplicate slices).
#[derive(Default)]
struct SliceTracker {
    /// Service key -> slice name -> resourceVersion written (None: deleted) and when.
    writes: Mutex<HashMap<String, HashMap<String, Written>>>,
}

/// A write: the resourceVersion it made (None: a delete) and when.
type Written = (Option<u64>, Instant);

/// How long a write is waited for in the cache (a slice deleted by someone else right after it
/// was written never shows up).
const WRITE_VISIBLE_WITHIN: Duration = Duration::from_secs(10);

impl SliceTracker {
    fn wrote(&self, key: &str, slice: &EndpointSlice) {
        let rv = slice.resource_version().and_then(|v| v.parse().ok());
        if rv.is_some() {
            let entry = (rv, Instant::now());
            self.writes.lock().entry(key.into()).or_default().insert(slice.name_any(), entry);
        }
    }

    fn deleted(&self, key: &str, name: &str) {
        let entry = (None, Instant::now());
        self.writes.lock().entry(key.into()).or_default().insert(name.into(), entry);
    }

    fn forget(&self, key: &str) {
        self.writes.lock().remove(key);
    }

    /// Whether the cache shows every write made for `key` (those it shows are forgotten).
    fn caught_up(&self, key: &str, slices: &Store<EndpointSlice>, ns: &str) -> bool {
        let mut writes = self.writes.lock();
        let Some(w) = writes.get_mut(key) else { return true };
        w.retain(|name, (rv, at)| {
            if at.elapsed() > WRITE_VISIBLE_WITHIN {
                return false;
            }
            let cached = slices.get(&ObjectRef::new(name).within(ns));
            match (rv, cached) {
                (None, None) => false,
                (None, Some(_)) => true,
                (Some(_), None) => true,
                (Some(want), Some(s)) => {
                    let have: u64 =
                        s.resource_version().and_then(|v| v.parse().ok()).unwrap_or(u64::MAX);
                    have < *want
                }
            }
        });
        let done = w.is_empty();
        if done {
            writes.remove(key);
        }
        done
    }
}
