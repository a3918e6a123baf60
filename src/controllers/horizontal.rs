//! The HorizontalPodAutoscaler controller (autoscaling/v2), as upstream's podautoscaler: every
//! sync period each HPA reads its target's scale subresource (Deployments, ReplicaSets,
//! StatefulSets, ReplicationControllers), proposes a count from each metric (Resource metrics
//! with Utilization or AverageValue targets, from a [`metrics::MetricsSource`]; see
//! [`replicas`]), takes the largest, stabilizes and rate-limits it ([`behavior`]), writes the
//! new count through the scale subresource, and publishes status and conditions ([`status`])
//! and SuccessfulRescale / failure events in upstream's words.
//!
//! Usage comes from [`metrics::SimulatedMetrics`] (what pods on simulated nodes declare) until
//! the node agent reports real figures. Only Resource metrics are computed: Pods, Object and
//! External metrics need a custom or external metrics API, which a cluster without one lacks
//! upstream too, and ContainerResource needs per-container samples the simulation has not.

pub mod behavior;
pub mod metrics;
pub mod replicas;
pub mod status;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::autoscaling::v2::{
    HorizontalPodAutoscaler, HorizontalPodAutoscalerSpec, HorizontalPodAutoscalerStatus,
    MetricSpec, MetricStatus,
};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{ApiResource, DynamicObject, ListParams, Patch, PatchParams};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Api, Client};
use parking_lot::Mutex;
use serde_json::json;

use self::behavior::{Args, Behavior, Normalizer};
use self::metrics::{MetricsSource, SimulatedMetrics};
use self::replicas::{resource_replicas, CalcOptions, Target};
use self::status::{set_condition, ABLE_TO_SCALE, SCALING_ACTIVE, SCALING_LIMITED};
use super::informer::Change;
use super::informers::{Informers, StoreReady};
use super::podutil::{key_of, split_key};
use super::queue::WorkQueue;
use super::worker::{run_workers, Action};
use crate::registry::selector::LabelSelector;

/// Upstream's --horizontal-pod-autoscaler-sync-period.
pub const DEFAULT_SYNC_PERIOD: Duration = Duration::from_secs(15);
/// The component events are recorded as.
pub const COMPONENT: &str = "horizontal-pod-autoscaler";
/// A warning identical to the HPA's last one with that reason is not recorded again within
/// this long (upstream's event correlator folds such repeats into one event's count).
const WARNING_REPEAT: Duration = Duration::from_secs(600);
const MANAGER: &str = "horizontal-pod-autoscaler";

/// The controller's settings (upstream's --horizontal-pod-autoscaler-* flags).
#[derive(Clone, Debug)]
pub struct HpaOptions {
    /// How often each HPA is synced.
    pub sync_period: Duration,
    /// Changes of the usage ratio within this fraction of 1.0 are ignored.
    pub tolerance: f64,
    /// The scale-down stabilization window of HPAs that do not set one in spec.behavior.
    pub downscale_stabilization: Duration,
    /// After a pod starts, CPU samples count only once it is ready.
    pub cpu_initialization_period: Duration,
    /// A pod not ready within this long after starting is taken as never ready.
    pub initial_readiness_delay: Duration,
}

impl Default for HpaOptions {
    fn default() -> Self {
        HpaOptions {
            sync_period: DEFAULT_SYNC_PERIOD,
            tolerance: replicas::DEFAULT_TOLERANCE,
            downscale_stabilization: behavior::DEFAULT_DOWNSCALE_STABILIZATION,
            cpu_initialization_period: replicas::CPU_INITIALIZATION_PERIOD,
            initial_readiness_delay: replicas::INITIAL_READINESS_DELAY,
        }
    }
}

/// What can go wrong syncing HPAs.
#[derive(Debug, thiserror::Error)]
pub enum HpaError {
    #[error("cannot {action} for horizontal pod autoscaler {key}")]
    Api {
        action: &'static str,
        key: String,
        #[source]
        source: kube::Error,
    },
    #[error("the horizontal pod autoscaler informer stopped")]
    InformerStopped,
}

struct Ctx {
    client: Client,
    hpas: Store<HorizontalPodAutoscaler>,
    metrics: Arc<dyn MetricsSource>,
    normalizer: Normalizer,
    /// The HPAs being synced every period (a newly seen one is synced at once).
    known: Arc<Mutex<HashSet<String>>>,
    opts: HpaOptions,
    /// The last warning recorded per HPA and reason: (message, when).
    warned: Mutex<HashMap<(String, String), (String, Instant)>>,
}

/// The message of an API error as upstream's clients print it (the Status message).
pub(crate) fn api_message(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => s.message.clone(),
        other => other.to_string(),
    }
}

/// Runs the controller over simulated usage with `workers` concurrent syncs.
pub async fn run(
    client: Client,
    informers: Informers,
    workers: usize,
    opts: HpaOptions,
) -> Result<(), HpaError> {
    let metrics = Arc::new(SimulatedMetrics::new(client.clone()));
    run_with(client, informers, workers, opts, metrics).await
}

/// Like [`run`] with another metrics source.
pub async fn run_with(
    client: Client,
    informers: Informers,
    workers: usize,
    opts: HpaOptions,
    metrics: Arc<dyn MetricsSource>,
) -> Result<(), HpaError> {
    let queue = WorkQueue::new();
    let q = queue.clone();
    // A new HPA is synced at once; after that every sync period (each sync queues the next),
    // so the controller's own status writes do not make it sync faster.
    let known: Arc<Mutex<HashSet<String>>> = Arc::default();
    let k = known.clone();
    let (hpas, task) = informers.spawn(
        "horizontal-informer",
        Api::<HorizontalPodAutoscaler>::all(client.clone()),
        watcher::Config::default(),
        move |c| match c {
            Change::Applied(h) => {
                if k.lock().insert(key_of(h)) {
                    q.add(key_of(h));
                }
            }
            Change::Deleted(h) => {
                k.lock().remove(&key_of(h));
                q.add(key_of(h));
            }
            Change::Synced => {}
        },
    );
    let _guard = super::AbortOnDrop(vec![task.abort_handle()]);
    if hpas.ready().await.is_err() {
        return Err(HpaError::InformerStopped);
    }
    let ctx = Arc::new(Ctx {
        client,
        hpas,
        metrics,
        normalizer: Normalizer::default(),
        known,
        opts,
        warned: Mutex::new(HashMap::new()),
    });
    let run = run_workers("horizontal", queue, workers, move |key| {
        let ctx = ctx.clone();
        async move { sync(&ctx, &key).await }
    });
    tokio::select! {
        _ = run => {}
        _ = task => {}
    }
    Err(HpaError::InformerStopped)
}

/// What the metrics propose.
enum Computed {
    /// A count (and the metric that asked for it), with each metric's status.
    Replicas { replicas: i32, metric: String, statuses: Vec<MetricStatus> },
    /// No count: every metric failed, or some failed and the others would scale down.
    Failed { statuses: Vec<MetricStatus>, error: String },
}

impl Ctx {
    fn normal(&self, hpa: &HorizontalPodAutoscaler, reason: &str, message: String) {
        super::events::record(&self.client, COMPONENT, hpa, false, reason, message);
    }

    fn warning(&self, key: &str, hpa: &HorizontalPodAutoscaler, reason: &str, message: String) {
        let now = Instant::now();
        {
            let mut warned = self.warned.lock();
            let k = (key.to_string(), reason.to_string());
            if let Some((m, at)) = warned.get(&k) {
                if *m == message && now.duration_since(*at) < WARNING_REPEAT {
                    return;
                }
            }
            warned.insert(k, (message.clone(), now));
        }
        super::events::record(&self.client, COMPONENT, hpa, true, reason, message);
    }
}

/// The resource behind a scaleTargetRef, as a REST mapping would find it.
fn target_resource(api_version: &str, kind: &str) -> Result<ApiResource, String> {
    let group = match api_version.split_once('/') {
        Some((_, v)) if v.contains('/') => {
            return Err(format!("unexpected GroupVersion string: {api_version}"))
        }
        Some((g, _)) => g,
        None => "",
    };
    let (version, plural) = match (group, kind) {
        ("apps", "Deployment") => ("v1", "deployments"),
        ("apps", "ReplicaSet") => ("v1", "replicasets"),
        ("apps", "StatefulSet") => ("v1", "statefulsets"),
        ("", "ReplicationController") => ("v1", "replicationcontrollers"),
        _ => return Err(format!("no matches for kind \"{kind}\" in group \"{group}\"")),
    };
    Ok(ApiResource {
        group: group.into(),
        version: version.into(),
        api_version: if group.is_empty() { version.into() } else { format!("{group}/{version}") },
        kind: kind.into(),
        plural: plural.into(),
    })
}

async fn sync(ctx: &Ctx, key: &str) -> Result<Action, HpaError> {
    let (ns, name) = split_key(key);
    let ns = ns.unwrap_or("default");
    let Some(hpa) = ctx.hpas.get(&ObjectRef::new(name).within(ns)) else {
        ctx.normalizer.forget(key);
        // A relist may drop an HPA without a delete event: forget it here too.
        ctx.known.lock().remove(key);
        ctx.warned.lock().retain(|(k, _), _| k != key);
        return Ok(Action::Done);
    };
    let hpa = (*hpa).clone();
    let mut st = hpa.status.clone().unwrap_or_default();
    let original = status::status_patch(&st);
    reconcile(ctx, key, ns, &hpa, &mut st).await?;
    if status::status_patch(&st) != original {
        let api: Api<HorizontalPodAutoscaler> = Api::namespaced(ctx.client.clone(), ns);
        let pp = PatchParams { field_manager: Some(MANAGER.into()), ..Default::default() };
        match api.patch_status(name, &pp, &Patch::Merge(status::status_patch(&st))).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => return Ok(Action::Done),
            Err(source) => {
                return Err(HpaError::Api { action: "update status", key: key.into(), source })
            }
        }
    }
    Ok(Action::RequeueAfter(ctx.opts.sync_period))
}

/// One sync of `hpa`, leaving the status to write in `st`.
async fn reconcile(
    ctx: &Ctx,
    key: &str,
    ns: &str,
    hpa: &HorizontalPodAutoscaler,
    st: &mut HorizontalPodAutoscalerStatus,
) -> Result<(), HpaError> {
    let spec = hpa.spec.clone().unwrap_or_default();
    let target = &spec.scale_target_ref;
    let reference = format!("{}/{ns}/{}", target.kind, target.name);
    let resource = target_resource(target.api_version.as_deref().unwrap_or(""), &target.kind);
    let scaled = match resource {
        Ok(ar) => {
            let api: Api<DynamicObject> = Api::namespaced_with(ctx.client.clone(), ns, &ar);
            api.get_scale(&target.name).await.map(|s| (api, s)).map_err(|e| api_message(&e))
        }
        Err(e) => Err(e),
    };
    let (api, scale) = match scaled {
        Ok(v) => v,
        Err(e) => {
            ctx.warning(key, hpa, "FailedGetScale", e.clone());
            let message =
                format!("the HPA controller was unable to get the target's current scale: {e}");
            set_condition(st, ABLE_TO_SCALE, false, "FailedGetScale", message);
            tracing::debug!(hpa = %key, target = %reference, error = %e, "cannot get the target's scale");
            return Ok(());
        }
    };
    set_condition(
        st,
        ABLE_TO_SCALE,
        true,
        "SucceededGetScale",
        "the HPA controller was able to get the target's current scale",
    );
    let current = scale.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0);
    let now = Instant::now();
    ctx.normalizer.record_initial(key, current, now);
    let min = spec.min_replicas.unwrap_or(1);
    let max = spec.max_replicas;
    let behavior =
        spec.behavior.as_ref().map(|b| Behavior::from_spec(b, ctx.opts.downscale_stabilization));
    let selector = scale.status.as_ref().and_then(|s| s.selector.clone()).unwrap_or_default();

    let mut statuses = vec![];
    let mut desired = 0;
    let mut reason = String::new();
    let mut rescale = true;
    if current == 0 && min != 0 {
        rescale = false;
        set_condition(
            st,
            SCALING_ACTIVE,
            false,
            "ScalingDisabled",
            "scaling is disabled since the replica count of the target is zero",
        );
    } else if current > max {
        reason = "Current number of replicas above Spec.MaxReplicas".into();
        desired = max;
    } else if current < min {
        reason = "Current number of replicas below Spec.MinReplicas".into();
        desired = min;
    } else {
        match compute_replicas(ctx, key, ns, hpa, &spec, &selector, current, st).await? {
            Computed::Failed { statuses, error } => {
                st.current_replicas = Some(current);
                st.current_metrics = Some(statuses).filter(|s| !s.is_empty());
                ctx.warning(key, hpa, "FailedComputeMetricsReplicas", error.clone());
                tracing::debug!(hpa = %key, target = %reference, error = %error, "no replica count from the metrics");
                return Ok(());
            }
            Computed::Replicas { replicas, metric, statuses: s } => {
                statuses = s;
                let mut rescale_metric = String::new();
                if replicas > desired {
                    desired = replicas;
                    rescale_metric = metric;
                }
                if desired > current {
                    reason = format!("{rescale_metric} above target");
                }
                if desired < current {
                    reason = "All metrics below target".into();
                }
                let args = Args { current, desired, min, max, behavior: behavior.as_ref() };
                let n = ctx.normalizer.normalize(key, args, ctx.opts.downscale_stabilization, now);
                set_condition(st, ABLE_TO_SCALE, true, n.able.0, n.able.1);
                set_condition(st, SCALING_LIMITED, n.limited.0, n.limited.1, n.limited.2);
                desired = n.replicas;
                rescale = desired != current;
            }
        }
    }

    if rescale {
        let patch = Patch::Merge(json!({"spec": {"replicas": desired}}));
        let pp = PatchParams { field_manager: Some(MANAGER.into()), ..Default::default() };
        if let Err(e) = api.patch_scale(&target.name, &pp, &patch).await {
            let e = api_message(&e);
            ctx.warning(
                key,
                hpa,
                "FailedRescale",
                format!("New size: {desired}; reason: {reason}; error: {e}"),
            );
            let message = format!("the HPA controller was unable to update the target scale: {e}");
            set_condition(st, ABLE_TO_SCALE, false, "FailedUpdateScale", message);
            st.current_replicas = Some(current);
            st.current_metrics = Some(statuses).filter(|s| !s.is_empty());
            return Ok(());
        }
        let message =
            format!("the HPA controller was able to update the target scale to {desired}");
        set_condition(st, ABLE_TO_SCALE, true, "SucceededRescale", message);
        ctx.normal(hpa, "SuccessfulRescale", format!("New size: {desired}; reason: {reason}"));
        ctx.normalizer.record_scale(key, behavior.as_ref(), current, desired, now);
        tracing::info!(hpa = %key, target = %reference, from = current, to = desired, reason = %reason, "rescaled");
    } else {
        desired = current;
    }
    status::set_status(st, current, desired, statuses, rescale);
    Ok(())
}

/// The count each metric proposes, and the largest (upstream's computeReplicasForMetrics).
#[allow(clippy::too_many_arguments)]
async fn compute_replicas(
    ctx: &Ctx,
    key: &str,
    ns: &str,
    hpa: &HorizontalPodAutoscaler,
    spec: &HorizontalPodAutoscalerSpec,
    selector: &str,
    current: i32,
    st: &mut HorizontalPodAutoscalerStatus,
) -> Result<Computed, HpaError> {
    if selector.is_empty() {
        ctx.warning(key, hpa, "SelectorRequired", "selector is required".into());
        set_condition(
            st,
            SCALING_ACTIVE,
            false,
            "InvalidSelector",
            "the HPA target's scale is missing a selector",
        );
        return Ok(Computed::Failed { statuses: vec![], error: "selector is required".into() });
    }
    if let Err(e) = LabelSelector::parse(selector) {
        let message =
            format!("couldn't convert selector into a corresponding internal selector object: {e}");
        ctx.warning(key, hpa, "InvalidSelector", message.clone());
        set_condition(st, SCALING_ACTIVE, false, "InvalidSelector", message.clone());
        return Ok(Computed::Failed { statuses: vec![], error: message });
    }
    let specs: Vec<MetricSpec> = spec.metrics.clone().unwrap_or_default();
    let mut statuses = vec![MetricStatus::default(); specs.len()];
    let mut pods: Option<Vec<Pod>> = None;
    let (mut replicas, mut metric) = (0, String::new());
    let mut invalid = 0;
    let mut first: Option<(String, String)> = None;
    for (i, m) in specs.iter().enumerate() {
        match compute_metric(ctx, ns, selector, current, m, &mut pods).await? {
            Ok((proposal, name, status)) => {
                statuses[i] = status;
                if replicas == 0 || proposal > replicas {
                    replicas = proposal;
                    metric = name;
                }
            }
            Err((reason, error)) => {
                ctx.warning(key, hpa, reason, error.clone());
                if first.is_none() {
                    first = Some((reason.to_string(), error));
                }
                invalid += 1;
            }
        }
    }
    if let Some((reason, error)) = first {
        if invalid >= specs.len() || replicas < current {
            let message = format!("the HPA was unable to compute the replica count: {error}");
            set_condition(st, SCALING_ACTIVE, false, &reason, message);
            let error = format!(
                "invalid metrics ({invalid} invalid out of {}), first error is: {error}",
                specs.len()
            );
            return Ok(Computed::Failed { statuses, error });
        }
    }
    if specs.is_empty() {
        return Ok(Computed::Failed { statuses, error: "no metrics to compute".into() });
    }
    let message =
        format!("the HPA was able to successfully calculate a replica count from {metric}");
    set_condition(st, SCALING_ACTIVE, true, "ValidMetricFound", message);
    Ok(Computed::Replicas { replicas, metric, statuses })
}

type MetricResult = Result<(i32, String, MetricStatus), (&'static str, String)>;

/// One metric's proposal, or the reason and error it failed with.
async fn compute_metric(
    ctx: &Ctx,
    ns: &str,
    selector: &str,
    current: i32,
    m: &MetricSpec,
    pods: &mut Option<Vec<Pod>>,
) -> Result<MetricResult, HpaError> {
    let failed = |reason: &'static str, error: String| Ok(Err((reason, error)));
    let source = match m.type_.as_str() {
        "Resource" => m.resource.as_ref(),
        "Pods" => {
            let name = m.pods.as_ref().map(|p| p.metric.name.clone()).unwrap_or_default();
            return failed("FailedGetPodsMetric", format!("unable to get metric {name}: unable to fetch metrics from custom metrics API: no custom metrics API (custom.metrics.k8s.io) registered"));
        }
        "Object" => {
            let name = m.object.as_ref().map(|p| p.metric.name.clone()).unwrap_or_default();
            return failed("FailedGetObjectMetric", format!("unable to get metric {name}: unable to fetch metrics from custom metrics API: no custom metrics API (custom.metrics.k8s.io) registered"));
        }
        "External" => {
            let name = m.external.as_ref().map(|p| p.metric.name.clone()).unwrap_or_default();
            return failed("FailedGetExternalMetric", format!("unable to get external metric {ns}/{name}: unable to fetch metrics from external metrics API: no external metrics API (external.metrics.k8s.io) registered"));
        }
        "ContainerResource" => {
            let name = m.container_resource.as_ref().map(|c| c.name.clone()).unwrap_or_default();
            return failed("FailedGetContainerResourceMetric", format!("failed to get {name} utilization: unable to get metrics for resource {name}: no per-container samples from simulated nodes"));
        }
        other => {
            return failed(
                "InvalidMetricSourceType",
                format!("unknown metric source type \"{other}\""),
            )
        }
    };
    let Some(source) = source else {
        return failed(
            "InvalidMetricSourceType",
            "invalid resource metric source: no resource".into(),
        );
    };
    let resource = source.name.as_str();
    let target = match (&source.target.average_value, source.target.average_utilization) {
        (Some(q), _) => {
            let milli = crate::registry::admission::quantity::Quantity::parse(q.0.trim())
                .map(|q| i64::try_from(q.milli()).unwrap_or(i64::MAX));
            match milli {
                Some(v) => Target::AverageValue(v),
                None => {
                    return failed("FailedGetResourceMetric", format!("invalid average value {:?}", q.0))
                }
            }
        }
        (None, Some(u)) => Target::Utilization(u),
        (None, None) => {
            return failed(
                "FailedGetResourceMetric",
                "invalid resource metric source: neither a utilization target nor a value target was set".into(),
            )
        }
    };
    let samples = match ctx.metrics.pod_usage(ns, selector, resource).await {
        Ok(s) => s,
        Err(e) => {
            return failed(
                "FailedGetResourceMetric",
                format!("failed to get {resource} utilization: unable to get metrics for resource {resource}: {e}"),
            )
        }
    };
    if pods.is_none() {
        let api: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);
        let list = api.list(&ListParams::default().labels(selector)).await.map_err(|source| {
            HpaError::Api { action: "list pods", key: format!("{ns}/{selector}"), source }
        })?;
        *pods = Some(list.items);
    }
    let calc = CalcOptions {
        tolerance: ctx.opts.tolerance,
        cpu_initialization_period: ctx.opts.cpu_initialization_period,
        initial_readiness_delay: ctx.opts.initial_readiness_delay,
    };
    let all = pods.as_deref().unwrap_or_default();
    match resource_replicas(current, target, resource, all, samples, &calc, chrono::Utc::now()) {
        Ok(p) => {
            let name = match target {
                Target::Utilization(_) => {
                    format!("{resource} resource utilization (percentage of request)")
                }
                Target::AverageValue(_) => format!("{resource} resource"),
            };
            let s = status::resource_status(resource, p.utilization, p.average_milli);
            Ok(Ok((p.replicas, name, s)))
        }
        Err(e) => {
            failed("FailedGetResourceMetric", format!("failed to get {resource} utilization: {e}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scale_targets_map_as_upstream() {
        assert_eq!(
            target_resource("apps/v1", "Deployment").map(|a| a.plural),
            Ok("deployments".into())
        );
        assert_eq!(
            target_resource("v1", "ReplicationController").map(|a| a.api_version),
            Ok("v1".into())
        );
        assert_eq!(
            target_resource("apps/v1", "Foo").map(|a| a.plural),
            Err("no matches for kind \"Foo\" in group \"apps\"".into())
        );
        assert!(target_resource("a/b/c", "Deployment").is_err());
    }
}
