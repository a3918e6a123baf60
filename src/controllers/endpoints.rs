//! The Endpoints controller: keeps the Endpoints object named after each Service with a
//! selector in line with the pods it selects — ready addresses and notReadyAddresses (all ready
//! with publishNotReadyAddresses; terminating pods only then), ports resolved per pod (a named
//! targetPort is looked up in the pod's containers), nodeName and targetRef, the service's
//! labels (plus service.kubernetes.io/headless), the last-change-trigger-time annotation and
//! upstream's 1000-address cap. Services without a selector (such as `kubernetes`) and
//! ExternalName services are left alone; an Endpoints object whose service is gone is deleted.
//! The pod facts shared with the EndpointSlice controller live here too.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1::{
    EndpointAddress, EndpointPort, EndpointSubset, Endpoints, ObjectReference, Pod, Service,
    ServicePort,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{DeleteParams, PostParams};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Api, Client, ResourceExt};
use parking_lot::Mutex;

use super::informer::Change;
use super::informers::{Informers, StoreReady};
use super::ownerindex::{lookup, PodIndex};
use super::podutil::{self, key_of, split_key};
use super::queue::WorkQueue;
use super::worker::{run_workers, Action};

/// The annotation with the time of the pod or service change that led to the last write.
pub const LAST_CHANGE_TRIGGER_TIME: &str = "endpoints.kubernetes.io/last-change-trigger-time";
/// The annotation set when addresses were dropped above [`MAX_CAPACITY`].
pub const OVER_CAPACITY: &str = "endpoints.kubernetes.io/over-capacity";
/// The label marking the endpoints of a headless service.
pub const HEADLESS_LABEL: &str = "service.kubernetes.io/headless";
/// The most addresses one Endpoints object holds.
pub const MAX_CAPACITY: usize = 1000;
const LEADER_ANNOTATION: &str = "control-plane.alpha.kubernetes.io/leader";

/// What can go wrong syncing a service's Endpoints.
#[derive(Debug, thiserror::Error)]
pub enum EndpointsError {
    #[error("cannot {action} endpoints {key}")]
    Api {
        action: &'static str,
        key: String,
        #[source]
        source: kube::Error,
    },
    #[error("an informer of the endpoints controller stopped")]
    InformerStopped,
}

struct Ctx {
    client: Client,
    services: Store<Service>,
    pods: Store<Pod>,
    pod_index: PodIndex,
    endpoints: Store<Endpoints>,
    triggers: TriggerTimeTracker,
}

/// Runs the controller with `workers` concurrent syncs until an informer stops.
pub async fn run(
    client: Client,
    informers: Informers,
    workers: usize,
) -> Result<(), EndpointsError> {
    let queue = WorkQueue::new();
    let q = queue.clone();
    let (services, svc_task) = informers.spawn(
        "endpoints-service-informer",
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
        "endpoints-pod-informer",
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
    let mut leftovers_checked = false;
    let (endpoints, ep_task) = informers.spawn(
        "endpoints-informer",
        Api::<Endpoints>::all(client.clone()),
        watcher::Config::default(),
        move |c| match c {
            Change::Deleted(e) => q.add(key_of(e)),
            // Once at start: endpoints whose service is gone get deleted.
            Change::Applied(e) if !leftovers_checked => {
                if !e.annotations().contains_key(LEADER_ANNOTATION) {
                    q.add(key_of(e))
                }
            }
            Change::Synced => leftovers_checked = true,
            Change::Applied(_) => {}
        },
    );
    let _guard = super::AbortOnDrop(vec![
        svc_task.abort_handle(),
        pods_task.abort_handle(),
        ep_task.abort_handle(),
    ]);
    let ready = futures::future::join3(services.ready(), pods.ready(), endpoints.ready()).await;
    if ready.0.is_err() || ready.1.is_err() || ready.2.is_err() {
        return Err(EndpointsError::InformerStopped);
    }
    let ctx = Arc::new(Ctx {
        client,
        services,
        pods,
        pod_index,
        endpoints,
        triggers: TriggerTimeTracker::default(),
    });
    let workers = run_workers("endpoints", queue, workers, move |key| {
        let ctx = ctx.clone();
        async move { sync(&ctx, &key).await }
    });
    tokio::select! {
        _ = workers => {}
        _ = svc_task => {}
        _ = pods_task => {}
        _ = ep_task => {}
    }
    Err(EndpointsError::InformerStopped)
}

async fn sync(ctx: &Ctx, key: &str) -> Result<Action, EndpointsError> {
    let (ns, name) = split_key(key);
    let ns = ns.unwrap_or("default");
    let err = |action: &'static str| {
        let key = key.to_string();
        move |source| EndpointsError::Api { action, key, source }
    };
    let api: Api<Endpoints> = Api::namespaced(ctx.client.clone(), ns);
    let Some(svc) = ctx.services.get(&ObjectRef::new(name).within(ns)) else {
        ctx.triggers.delete_service(key);
        return match api.delete(name, &DeleteParams::default()).await {
            Ok(_) => Ok(Action::Done),
            Err(kube::Error::Api(e)) if e.code == 404 => Ok(Action::Done),
            Err(e) => Err(err("delete")(e)),
        };
    };
    let Some(spec) = svc.spec.as_ref() else { return Ok(Action::Done) };
    if spec.type_.as_deref() == Some("ExternalName") {
        return Ok(Action::Done);
    }
    let Some(selector) = service_selector(&svc) else { return Ok(Action::Done) };
    let pods = selected_pods(&ctx.pods, &ctx.pod_index, ns, selector);
    let (trigger, seen) = ctx.triggers.compute(key, &svc, &pods);
    let publish_not_ready = spec.publish_not_ready_addresses.unwrap_or(false);
    let ports = spec.ports.as_deref().unwrap_or(&[]);
    let headless = !service_ip_set(&svc);

    // (address, port, ready) triples, then repacked into subsets.
    let mut entries: Vec<(EndpointAddress, Option<EndpointPort>, bool)> = vec![];
    for pod in &pods {
        if !should_pod_be_in_endpoints(pod, publish_not_ready) {
            continue;
        }
        let Some(ip) = pod_ip_for_service(pod, &svc) else { continue };
        let address = EndpointAddress {
            ip,
            hostname: hostname_for_service(pod, &svc),
            node_name: pod
                .spec
                .as_ref()
                .and_then(|s| s.node_name.clone())
                .filter(|n| !n.is_empty()),
            target_ref: Some(pod_reference(pod)),
        };
        let ready = publish_not_ready || podutil::is_ready(pod);
        if ports.is_empty() {
            if spec.cluster_ip.as_deref() == Some("None") {
                entries.push((address, None, ready));
            }
            continue;
        }
        for sp in ports {
            let Some(port) = find_port(pod, sp) else { continue };
            let ep = EndpointPort {
                name: sp.name.clone(),
                port,
                protocol: Some(sp.protocol.clone().unwrap_or_else(|| "TCP".into())),
                app_protocol: sp.app_protocol.clone(),
            };
            entries.push((address.clone(), Some(ep), ready));
        }
    }
    let subsets = repack(entries);

    let current = ctx.endpoints.get(&ObjectRef::new(name).within(ns));
    let svc_labels = svc.metadata.labels.clone().unwrap_or_default();
    if let Some(cur) = current.as_deref() {
        let mut cur_labels = cur.metadata.labels.clone().unwrap_or_default();
        cur_labels.remove(HEADLESS_LABEL);
        let cur_subsets = cur.subsets.clone().unwrap_or_default();
        let over = cur.annotations().contains_key(OVER_CAPACITY);
        let capacity_ok = !over && address_count(&cur_subsets) <= MAX_CAPACITY;
        if cur_subsets == subsets && cur_labels == svc_labels && capacity_ok {
            ctx.triggers.save(key, seen);
            return Ok(Action::Done);
        }
    }
    let mut new = current.as_deref().cloned().unwrap_or_else(|| Endpoints {
        metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
            name: Some(name.to_string()),
            namespace: Some(ns.to_string()),
            ..Default::default()
        },
        subsets: None,
    });
    let mut labels = svc_labels;
    if headless {
        labels.insert(HEADLESS_LABEL.into(), String::new());
    }
    new.metadata.labels = Some(labels);
    let annotations = new.metadata.annotations.get_or_insert_with(BTreeMap::new);
    match trigger {
        Some(t) => {
            annotations.insert(LAST_CHANGE_TRIGGER_TIME.into(), format_trigger_time(t));
        }
        None => {
            annotations.remove(LAST_CHANGE_TRIGGER_TIME);
        }
    }
    let mut subsets = subsets;
    if truncate(&mut subsets) {
        annotations.insert(OVER_CAPACITY.into(), "truncated".into());
    } else {
        annotations.remove(OVER_CAPACITY);
    }
    new.subsets = (!subsets.is_empty()).then_some(subsets);
    let result = if current.is_none() {
        api.create(&PostParams::default(), &new).await.map(|_| ())
    } else {
        api.replace(name, &PostParams::default(), &new).await.map(|_| ())
    };
    match result {
        Ok(()) => {
            ctx.triggers.save(key, seen);
            Ok(Action::Done)
        }
        // A terminating namespace refuses new objects: nothing to retry.
        Err(kube::Error::Api(e))
            if current.is_none() && e.code == 403 && e.message.contains("being terminated") =>
        {
            Ok(Action::Done)
        }
        Err(e) => Err(err(if current.is_none() { "create" } else { "update" })(e)),
    }
}

/// The selector of a service that has one (a missing or empty selector selects nothing here).
pub fn service_selector(svc: &Service) -> Option<&BTreeMap<String, String>> {
    svc.spec.as_ref()?.selector.as_ref().filter(|s| !s.is_empty())
}

/// Whether the service has a cluster IP (false: headless).
pub fn service_ip_set(svc: &Service) -> bool {
    let ip = svc.spec.as_ref().and_then(|s| s.cluster_ip.as_deref()).unwrap_or("");
    !ip.is_empty() && ip != "None"
}

/// The pods of `ns` whose labels carry every pair of `selector`, by name.
pub fn selected_pods(
    pods: &Store<Pod>,
    index: &PodIndex,
    ns: &str,
    selector: &BTreeMap<String, String>,
) -> Vec<Arc<Pod>> {
    let mut out: Vec<Arc<Pod>> = lookup(pods, &index.in_namespace(ns))
        .into_iter()
        .filter(|p| p.namespace().as_deref() == Some(ns))
        .filter(|p| {
            let labels = p.labels();
            selector.iter().all(|(k, v)| labels.get(k) == Some(v))
        })
        .collect();
    out.sort_by_key(|p| p.name_any());
    out
}

/// Whether a pod belongs in a service's endpoints: it has an IP, has not finished, and is not
/// being deleted unless terminating pods are wanted.
pub fn should_pod_be_in_endpoints(pod: &Pod, include_terminating: bool) -> bool {
    let status = pod.status.as_ref();
    let phase = status.and_then(|s| s.phase.as_deref()).unwrap_or("");
    if phase == "Succeeded" || phase == "Failed" {
        return false;
    }
    let has_ip = status.is_some_and(|s| {
        s.pod_ip.as_deref().is_some_and(|i| !i.is_empty())
            || s.pod_ips.as_ref().is_some_and(|l| !l.is_empty())
    });
    has_ip && (include_terminating || pod.metadata.deletion_timestamp.is_none())
}

/// The pod's addresses (status.podIPs, else status.podIP).
pub fn pod_ips(pod: &Pod) -> Vec<String> {
    let Some(status) = pod.status.as_ref() else { return vec![] };
    let mut ips: Vec<String> =
        status.pod_ips.iter().flatten().map(|p| p.ip.clone()).filter(|i| !i.is_empty()).collect();
    if ips.is_empty() {
        ips.extend(status.pod_ip.clone().filter(|i| !i.is_empty()));
    }
    ips
}

/// The pod address of the service's IP family (its first family; IPv4 when unset).
fn pod_ip_for_service(pod: &Pod, svc: &Service) -> Option<String> {
    let v6 = svc
        .spec
        .as_ref()
        .and_then(|s| s.ip_families.as_ref())
        .and_then(|f| f.first())
        .is_some_and(|f| f == "IPv6");
    pod_ips(pod).into_iter().find(|ip| {
        ip.parse::<std::net::IpAddr>().is_ok_and(|a| if v6 { a.is_ipv6() } else { a.is_ipv4() })
    })
}

/// The pod's hostname when its subdomain names the service (in the same namespace).
pub fn hostname_for_service(pod: &Pod, svc: &Service) -> Option<String> {
    let spec = pod.spec.as_ref()?;
    let hostname = spec.hostname.as_deref().filter(|h| !h.is_empty())?;
    let same = spec.subdomain.as_deref() == Some(svc.name_any().as_str())
        && pod.namespace() == svc.namespace();
    same.then(|| hostname.to_string())
}

/// A reference to the pod (kind, namespace, name, uid).
pub fn pod_reference(pod: &Pod) -> ObjectReference {
    ObjectReference {
        kind: Some("Pod".into()),
        namespace: pod.namespace(),
        name: Some(pod.name_any()),
        uid: pod.metadata.uid.clone(),
        ..Default::default()
    }
}

/// The pod port a service port's targetPort means: a number as is, a name looked up among the
/// pod's container ports (and restartable init containers) with the same protocol.
pub fn find_port(pod: &Pod, sp: &ServicePort) -> Option<i32> {
    let protocol = sp.protocol.as_deref().unwrap_or("TCP");
    match sp.target_port.as_ref() {
        None => Some(sp.port),
        Some(IntOrString::Int(n)) => Some(*n),
        Some(IntOrString::String(name)) => {
            let spec = pod.spec.as_ref()?;
            let sidecars = spec
                .init_containers
                .iter()
                .flatten()
                .filter(|c| c.restart_policy.as_deref() == Some("Always"));
            spec.containers
                .iter()
                .chain(sidecars)
                .flat_map(|c| c.ports.iter().flatten())
                .find(|p| {
                    p.name.as_deref() == Some(name.as_str())
                        && p.protocol.as_deref().unwrap_or("TCP") == protocol
                })
                .map(|p| p.container_port)
        }
    }
}

/// An RFC 3339 UTC time with as many fraction digits as needed.
pub fn format_trigger_time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}

type PortKey = (Option<String>, i32, Option<String>, Option<String>);
type AddressKey = (String, String);

/// Packs (address, port, ready) entries into subsets: ports that share the same ready and
/// not-ready address sets share a subset; addresses sorted by IP, ports by name and number.
fn repack(entries: Vec<(EndpointAddress, Option<EndpointPort>, bool)>) -> Vec<EndpointSubset> {
    let mut addresses: HashMap<AddressKey, EndpointAddress> = HashMap::new();
    let mut by_port: BTreeMap<PortKey, (BTreeSet<AddressKey>, BTreeSet<AddressKey>)> =
        BTreeMap::new();
    let mut port_values: HashMap<PortKey, Option<EndpointPort>> = HashMap::new();
    for (addr, port, ready) in entries {
        let akey = (
            addr.ip.clone(),
            addr.target_ref.as_ref().and_then(|r| r.uid.clone()).unwrap_or_default(),
        );
        let pkey: PortKey = match &port {
            Some(p) => (p.name.clone(), p.port, p.protocol.clone(), p.app_protocol.clone()),
            None => (None, 0, None, None),
        };
        let sets = by_port.entry(pkey.clone()).or_default();
        if ready {
            sets.0.insert(akey.clone());
        } else {
            sets.1.insert(akey.clone());
        }
        port_values.insert(pkey, port);
        // An address ready for one port and not for another keeps its first form.
        addresses.entry(akey).or_insert(addr);
    }
    // Ports grouped by their (ready, not ready) address sets.
    let mut groups: BTreeMap<(Vec<AddressKey>, Vec<AddressKey>), Vec<PortKey>> = BTreeMap::new();
    for (pkey, (ready, not_ready)) in by_port {
        // Ready wins for an address listed both ways for the same port.
        let not_ready: Vec<AddressKey> =
            not_ready.into_iter().filter(|a| !ready.contains(a)).collect();
        groups.entry((ready.into_iter().collect(), not_ready)).or_default().push(pkey);
    }
    let addrs = |keys: &[AddressKey]| -> Option<Vec<EndpointAddress>> {
        let list: Vec<EndpointAddress> =
            keys.iter().filter_map(|k| addresses.get(k).cloned()).collect();
        (!list.is_empty()).then_some(list)
    };
    groups
        .into_iter()
        .map(|((ready, not_ready), ports)| {
            let ports: Vec<EndpointPort> =
                ports.iter().filter_map(|k| port_values.get(k).cloned().flatten()).collect();
            EndpointSubset {
                addresses: addrs(&ready),
                not_ready_addresses: addrs(&not_ready),
                ports: (!ports.is_empty()).then_some(ports),
            }
        })
        .collect()
}

fn address_count(subsets: &[EndpointSubset]) -> usize {
    subsets
        .iter()
        .map(|s| {
            s.addresses.as_ref().map_or(0, Vec::len)
                + s.not_ready_addresses.as_ref().map_or(0, Vec::len)
        })
        .sum()
}

/// Caps the subsets at [`MAX_CAPACITY`] addresses, keeping ready ones first and sharing the cut
/// among subsets in proportion; returns whether anything was dropped.
fn truncate(subsets: &mut [EndpointSubset]) -> bool {
    let ready: usize = subsets.iter().map(|s| s.addresses.as_ref().map_or(0, Vec::len)).sum();
    let not_ready: usize =
        subsets.iter().map(|s| s.not_ready_addresses.as_ref().map_or(0, Vec::len)).sum();
    if ready + not_ready <= MAX_CAPACITY {
        return false;
    }
    let cut_ready = ready > MAX_CAPACITY;
    let (room, total) =
        if cut_ready { (MAX_CAPACITY, ready) } else { (MAX_CAPACITY - ready, not_ready) };
    let mut left = room;
    for s in subsets.iter_mut() {
        let list = if cut_ready { &mut s.addresses } else { &mut s.not_ready_addresses };
        let n = list.as_ref().map_or(0, Vec::len);
        let share = ((n as f64 / total as f64) * room as f64).ceil() as usize;
        let keep = share.min(left);
        if let Some(l) = list.as_mut() {
            l.truncate(keep);
        }
        left -= keep.min(n);
        if cut_ready {
            s.not_ready_addresses = None;
        }
    }
    true
}

/// Which services select which pods, so a pod event (even one that changed its labels) queues
/// every service it concerns, before and after.
#[derive(Clone)]
pub struct PodServices {
    services: Store<Service>,
    last: Arc<Mutex<HashMap<String, Vec<String>>>>,
}

impl PodServices {
    pub fn new(services: Store<Service>) -> PodServices {
        PodServices { services, last: Default::default() }
    }

    /// The keys of the services that selected the pod before this event or select it now.
    pub fn changed(&self, pod: &Pod, deleted: bool) -> Vec<String> {
        let key = key_of(pod);
        let ns = pod.namespace().unwrap_or_default();
        let labels = pod.labels();
        let now: Vec<String> = self
            .services
            .state()
            .iter()
            .filter(|s| s.namespace().as_deref() == Some(ns.as_str()))
            .filter(|s| {
                service_selector(s)
                    .is_some_and(|sel| sel.iter().all(|(k, v)| labels.get(k) == Some(v)))
            })
            .map(|s| key_of(s.as_ref()))
            .collect();
        let mut last = self.last.lock();
        let mut out = if deleted { last.remove(&key) } else { last.insert(key, now.clone()) }
            .unwrap_or_default();
        for k in now {
            if !out.contains(&k) {
                out.push(k);
            }
        }
        out
    }
}

/// Upstream's trigger time tracker: for each service, the trigger times (Ready transition) of
/// its pods and its own creation time as last seen. The first sync of a service is triggered by
/// its creation; a later one by the earliest of the times that moved since the previous sync.
#[derive(Default)]
pub struct TriggerTimeTracker {
    state: Mutex<HashMap<String, TriggerState>>,
}

/// The trigger times a sync saw.
#[derive(Default)]
pub struct TriggerState {
    service: Option<DateTime<Utc>>,
    pods: HashMap<String, DateTime<Utc>>,
}

impl TriggerTimeTracker {
    /// The trigger time of a sync of `svc` over `pods` (None: nothing changed), and the state
    /// to [`save`] once the sync has written what it computed (a failed write is retried with
    /// the same trigger time).
    ///
    /// [`save`]: TriggerTimeTracker::save
    pub fn compute(
        &self,
        key: &str,
        svc: &Service,
        pods: &[Arc<Pod>],
    ) -> (Option<DateTime<Utc>>, TriggerState) {
        let state = self.state.lock();
        let known = state.contains_key(key);
        let empty = TriggerState::default();
        let st = state.get(key).unwrap_or(&empty);
        let mut min: Option<DateTime<Utc>> = None;
        let mut consider = |t: DateTime<Utc>| min = Some(min.map_or(t, |m| m.min(t)));
        let mut seen = HashMap::with_capacity(pods.len());
        for pod in pods {
            let Some(t) = pod_trigger_time(pod) else { continue };
            if st.pods.get(&pod.name_any()).is_none_or(|last| t > *last) {
                consider(t);
            }
            seen.insert(pod.name_any(), t);
        }
        let svc_time = svc.metadata.creation_timestamp.as_ref().map(podutil::time_of);
        if let Some(t) = svc_time {
            if st.service.is_none_or(|last| t > last) {
                consider(t);
            }
        }
        let next = TriggerState { service: svc_time, pods: seen };
        (if known { min } else { svc_time }, next)
    }

    /// Records what a sync has seen.
    pub fn save(&self, key: &str, state: TriggerState) {
        self.state.lock().insert(key.to_string(), state);
    }

    pub fn delete_service(&self, key: &str) {
        self.state.lock().remove(key);
    }
}

/// When the pod last changed in a way that matters to endpoints: its Ready condition's
/// transition.
fn pod_trigger_time(pod: &Pod) -> Option<DateTime<Utc>> {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"))
        .and_then(|c| c.last_transition_time.as_ref())
        .map(podutil::time_of)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn addr(ip: &str) -> EndpointAddress {
        EndpointAddress { ip: ip.into(), ..Default::default() }
    }

    fn port(name: &str, n: i32) -> Option<EndpointPort> {
        Some(EndpointPort {
            name: Some(name.into()),
            port: n,
            protocol: Some("TCP".into()),
            app_protocol: None,
        })
    }

    #[test]
    fn repack_groups_ports_by_address_sets() {
        let subsets = repack(vec![
            (addr("10.0.0.2"), port("http", 80), true),
            (addr("10.0.0.1"), port("http", 80), true),
            (addr("10.0.0.1"), port("admin", 90), true),
            (addr("10.0.0.2"), port("admin", 90), true),
            (addr("10.0.0.3"), port("http", 80), false),
        ]);
        assert_eq!(subsets.len(), 2, "{subsets:?}");
        let both: Vec<_> = subsets.iter().filter(|s| s.not_ready_addresses.is_none()).collect();
        assert_eq!(both[0].ports.as_ref().unwrap().len(), 1);
        let ips: Vec<_> =
            subsets[0].addresses.as_ref().unwrap().iter().map(|a| a.ip.as_str()).collect();
        assert_eq!(ips, ["10.0.0.1", "10.0.0.2"]);
    }

    #[test]
    fn named_target_ports_resolve_per_pod() {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "p"},
            "spec": {"containers": [{"name": "c", "ports": [
                {"name": "web", "containerPort": 8080, "protocol": "TCP"},
                {"name": "dns", "containerPort": 53, "protocol": "UDP"},
            ]}]},
        }))
        .unwrap();
        let sp = |target: IntOrString, proto: &str| ServicePort {
            port: 80,
            target_port: Some(target),
            protocol: Some(proto.into()),
            ..Default::default()
        };
        assert_eq!(find_port(&pod, &sp(IntOrString::String("web".into()), "TCP")), Some(8080));
        assert_eq!(find_port(&pod, &sp(IntOrString::String("dns".into()), "TCP")), None);
        assert_eq!(find_port(&pod, &sp(IntOrString::String("dns".into()), "UDP")), Some(53));
        assert_eq!(find_port(&pod, &sp(IntOrString::Int(9000), "TCP")), Some(9000));
    }

    #[test]
    fn truncation_keeps_ready_addresses_first() {
        let many = |n: usize, base: usize| -> Option<Vec<EndpointAddress>> {
            Some(
                (0..n)
                    .map(|i| addr(&format!("10.1.{}.{}", (base + i) / 256, (base + i) % 256)))
                    .collect(),
            )
        };
        let mut subsets = vec![EndpointSubset {
            addresses: many(900, 0),
            not_ready_addresses: many(300, 1000),
            ports: None,
        }];
        assert!(truncate(&mut subsets));
        assert_eq!(subsets[0].addresses.as_ref().unwrap().len(), 900);
        assert_eq!(subsets[0].not_ready_addresses.as_ref().unwrap().len(), 100);
    }
}
