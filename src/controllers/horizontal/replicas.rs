//! The replica calculation for Resource metrics, as upstream's replica calculator does it: pods
//! are grouped (ignored: being deleted or failed; unready: pending, or for CPU not yet ready in
//! their start-up period; missing: no sample), the usage ratio to the target is taken over the
//! ready pods with samples, and a change smaller than the tolerance proposes no change. Missing
//! pods count as using nothing on a scale-up and their whole request (or the target) on a
//! scale-down, unready pods count as using nothing on a scale-up; if that reverses the
//! direction or brings the ratio within the tolerance, the count stays.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1::{Container, Pod};

use super::metrics::{PodMetric, PodMetrics};
use crate::controllers::podutil::time_of;
use crate::registry::admission::quantity::Quantity;

/// Upstream's --horizontal-pod-autoscaler-tolerance.
pub const DEFAULT_TOLERANCE: f64 = 0.1;
/// Upstream's --horizontal-pod-autoscaler-cpu-initialization-period.
pub const CPU_INITIALIZATION_PERIOD: Duration = Duration::from_secs(300);
/// Upstream's --horizontal-pod-autoscaler-initial-readiness-delay.
pub const INITIAL_READINESS_DELAY: Duration = Duration::from_secs(30);

/// What a Resource metric aims at.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Target {
    /// Percent of the pods' requests.
    Utilization(i32),
    /// Usage per pod, in milli-units.
    AverageValue(i64),
}

/// What the calculation proposes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Proposal {
    pub replicas: i32,
    /// Current average utilization, percent of request (Utilization targets only).
    pub utilization: Option<i32>,
    /// Current average usage per pod, milli-units.
    pub average_milli: i64,
}

/// Why no count could be proposed (upstream's words).
#[derive(Debug, thiserror::Error)]
pub enum CalcError {
    #[error("no pods returned by selector while calculating replica count")]
    NoPods,
    #[error("did not receive metrics for targeted pods (pods might be unready)")]
    NoReadyMetrics,
    #[error("missing request for {resource} in container {container} of Pod {pod}")]
    MissingRequest { resource: String, container: String, pod: String },
    #[error("no metrics returned matched known pods")]
    NoMatchingMetrics,
}

/// The knobs of the calculation.
#[derive(Clone, Copy, Debug)]
pub struct CalcOptions {
    pub tolerance: f64,
    pub cpu_initialization_period: Duration,
    pub initial_readiness_delay: Duration,
}

impl Default for CalcOptions {
    fn default() -> Self {
        CalcOptions {
            tolerance: DEFAULT_TOLERANCE,
            cpu_initialization_period: CPU_INITIALIZATION_PERIOD,
            initial_readiness_delay: INITIAL_READINESS_DELAY,
        }
    }
}

struct Groups {
    ready: usize,
    unready: HashSet<String>,
    missing: HashSet<String>,
    ignored: HashSet<String>,
}

fn name_of(pod: &Pod) -> String {
    pod.metadata.name.clone().unwrap_or_default()
}

fn group_pods(
    pods: &[Pod],
    metrics: &PodMetrics,
    resource: &str,
    opts: &CalcOptions,
    now: DateTime<Utc>,
) -> Groups {
    let mut g = Groups {
        ready: 0,
        unready: HashSet::new(),
        missing: HashSet::new(),
        ignored: HashSet::new(),
    };
    for pod in pods {
        let name = name_of(pod);
        let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("");
        if pod.metadata.deletion_timestamp.is_some() || phase == "Failed" {
            g.ignored.insert(name);
            continue;
        }
        if phase == "Pending" {
            g.unready.insert(name);
            continue;
        }
        let Some(metric) = metrics.get(&name) else {
            g.missing.insert(name);
            continue;
        };
        if resource == "cpu" && cpu_unready(pod, metric, opts, now) {
            g.unready.insert(name);
            continue;
        }
        g.ready += 1;
    }
    g
}

/// Whether a CPU sample should be set aside: in the start-up period, a pod that is not ready or
/// whose sample was not taken a whole window after it became ready; later, a pod that is not
/// ready and never was.
fn cpu_unready(pod: &Pod, metric: &PodMetric, opts: &CalcOptions, now: DateTime<Utc>) -> bool {
    let status = pod.status.as_ref();
    let ready = status
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"));
    let start = status.and_then(|s| s.start_time.as_ref()).map(time_of);
    let (Some(cond), Some(start)) = (ready, start) else { return true };
    let transition = cond.last_transition_time.as_ref().map(time_of).unwrap_or(start);
    let span = |d: Duration| chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX);
    if start + span(opts.cpu_initialization_period) > now {
        cond.status == "False" || metric.timestamp < transition + span(metric.window)
    } else {
        cond.status == "False" && start + span(opts.initial_readiness_delay) > transition
    }
}

fn quantity_milli(q: &k8s_openapi::apimachinery::pkg::api::resource::Quantity) -> Option<i64> {
    Quantity::parse(q.0.trim()).map(|q| i64::try_from(q.milli()).unwrap_or(i64::MAX))
}

/// Each pod's request for `resource` (its containers and its restartable init containers);
/// every such container must request it.
fn pod_requests(pods: &[Pod], resource: &str) -> Result<HashMap<String, i64>, CalcError> {
    let mut out = HashMap::new();
    for pod in pods {
        let Some(spec) = pod.spec.as_ref() else { continue };
        let sidecars = spec
            .init_containers
            .iter()
            .flatten()
            .filter(|c| c.restart_policy.as_deref() == Some("Always"));
        let containers: Vec<&Container> = spec.containers.iter().chain(sidecars).collect();
        let mut sum = 0i64;
        for c in containers {
            let request = c
                .resources
                .as_ref()
                .and_then(|r| r.requests.as_ref())
                .and_then(|r| r.get(resource))
                .and_then(quantity_milli);
            match request {
                Some(m) => sum = sum.saturating_add(m),
                None => {
                    return Err(CalcError::MissingRequest {
                        resource: resource.to_string(),
                        container: c.name.clone(),
                        pod: name_of(pod),
                    })
                }
            }
        }
        out.insert(name_of(pod), sum);
    }
    Ok(out)
}

/// Usage over requests: (ratio to the target, utilization percent, average usage per pod).
fn utilization_ratio(
    metrics: &PodMetrics,
    requests: &HashMap<String, i64>,
    target: i32,
) -> Result<(f64, i32, i64), CalcError> {
    let (mut used, mut requested, mut n) = (0i64, 0i64, 0i64);
    for (name, m) in metrics {
        let Some(r) = requests.get(name) else { continue };
        used = used.saturating_add(m.milli);
        requested = requested.saturating_add(*r);
        n += 1;
    }
    if requested == 0 {
        return Err(CalcError::NoMatchingMetrics);
    }
    let utilization = i32::try_from(used.saturating_mul(100) / requested).unwrap_or(i32::MAX);
    Ok((f64::from(utilization) / f64::from(target.max(1)), utilization, used / n))
}

/// Average usage per pod: (ratio to the target, average usage).
fn usage_ratio(metrics: &PodMetrics, target: i64) -> (f64, i64) {
    let total: i64 = metrics.values().map(|m| m.milli).fold(0, i64::saturating_add);
    let average = total / (metrics.len().max(1) as i64);
    (average as f64 / target.max(1) as f64, average)
}

fn ceil_replicas(ratio: f64, pods: usize) -> i32 {
    let v = (ratio * pods as f64).ceil();
    if v >= f64::from(i32::MAX) {
        i32::MAX
    } else {
        v.max(0.0) as i32
    }
}

fn filled(metrics: &mut PodMetrics, names: &HashSet<String>, milli: impl Fn(&str) -> i64) {
    for name in names {
        let m = PodMetric { milli: milli(name), timestamp: Utc::now(), window: Duration::ZERO };
        metrics.insert(name.clone(), m);
    }
}

/// The count a Resource metric proposes for pods `pods` (those the target's selector matches)
/// with samples `metrics`, from `current` (the target's spec.replicas).
pub fn resource_replicas(
    current: i32,
    target: Target,
    resource: &str,
    pods: &[Pod],
    mut metrics: PodMetrics,
    opts: &CalcOptions,
    now: DateTime<Utc>,
) -> Result<Proposal, CalcError> {
    if pods.is_empty() {
        return Err(CalcError::NoPods);
    }
    let g = group_pods(pods, &metrics, resource, opts, now);
    metrics.retain(|name, _| !g.ignored.contains(name) && !g.unready.contains(name));
    if metrics.is_empty() {
        return Err(CalcError::NoReadyMetrics);
    }
    let requests = match target {
        Target::Utilization(_) => pod_requests(pods, resource)?,
        Target::AverageValue(_) => HashMap::new(),
    };
    let ratio_of = |m: &PodMetrics| -> Result<(f64, Option<i32>, i64), CalcError> {
        match target {
            Target::Utilization(t) => {
                utilization_ratio(m, &requests, t).map(|(r, u, a)| (r, Some(u), a))
            }
            Target::AverageValue(t) => {
                let (r, a) = usage_ratio(m, t);
                Ok((r, None, a))
            }
        }
    };
    let (ratio, utilization, average_milli) = ratio_of(&metrics)?;
    let proposal = |replicas| Proposal { replicas, utilization, average_milli };
    let up_with_unready = !g.unready.is_empty() && ratio > 1.0;
    if !up_with_unready && g.missing.is_empty() {
        if (1.0 - ratio).abs() <= opts.tolerance {
            return Ok(proposal(current));
        }
        return Ok(proposal(ceil_replicas(ratio, g.ready)));
    }
    if !g.missing.is_empty() {
        if ratio < 1.0 {
            match target {
                Target::Utilization(t) => {
                    let fallback = i64::from(t.max(100));
                    filled(&mut metrics, &g.missing, |n| {
                        requests.get(n).copied().unwrap_or(0).saturating_mul(fallback) / 100
                    });
                }
                Target::AverageValue(t) => filled(&mut metrics, &g.missing, |_| t),
            }
        } else if ratio > 1.0 {
            filled(&mut metrics, &g.missing, |_| 0);
        }
    }
    if up_with_unready {
        filled(&mut metrics, &g.unready, |_| 0);
    }
    let (new_ratio, _, _) = ratio_of(&metrics)?;
    if (1.0 - new_ratio).abs() <= opts.tolerance
        || (ratio < 1.0 && new_ratio > 1.0)
        || (ratio > 1.0 && new_ratio < 1.0)
    {
        return Ok(proposal(current));
    }
    let replicas = ceil_replicas(new_ratio, metrics.len());
    if (new_ratio < 1.0 && replicas > current) || (new_ratio > 1.0 && replicas < current) {
        return Ok(proposal(current));
    }
    Ok(proposal(replicas))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(name: &str, phase: &str, request: &str, ready: bool) -> Pod {
        let at = (Utc::now() - chrono::Duration::minutes(10)).to_rfc3339();
        serde_json::from_value(json!({
            "metadata": {"name": name},
            "spec": {"containers": [{"name": "c", "resources": {"requests": {"cpu": request}}}]},
            "status": {"phase": phase, "startTime": at,
                       "conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"},
                                       "lastTransitionTime": at}]},
        }))
        .expect("pod")
    }

    fn samples(list: &[(&str, i64)]) -> PodMetrics {
        list.iter()
            .map(|(n, m)| {
                let s =
                    PodMetric { milli: *m, timestamp: Utc::now(), window: Duration::from_secs(30) };
                (n.to_string(), s)
            })
            .collect()
    }

    fn calc(current: i32, target: Target, pods: &[Pod], m: PodMetrics) -> Proposal {
        resource_replicas(current, target, "cpu", pods, m, &CalcOptions::default(), Utc::now())
            .expect("proposal")
    }

    #[test]
    fn utilization_scales_by_the_ratio() {
        let pods = vec![pod("a", "Running", "200m", true), pod("b", "Running", "200m", true)];
        let p = calc(2, Target::Utilization(50), &pods, samples(&[("a", 200), ("b", 200)]));
        assert_eq!(p, Proposal { replicas: 4, utilization: Some(100), average_milli: 200 });
        // Within the tolerance: no change.
        let p = calc(2, Target::Utilization(50), &pods, samples(&[("a", 105), ("b", 105)]));
        assert_eq!(p.replicas, 2);
        let p = calc(2, Target::Utilization(50), &pods, samples(&[("a", 0), ("b", 0)]));
        assert_eq!((p.replicas, p.utilization), (0, Some(0)));
    }

    #[test]
    fn missing_pods_damp_changes() {
        let pods = vec![pod("a", "Running", "200m", true), pod("b", "Running", "200m", true)];
        // Scale-up: b counts as 0 -> (400+0)/400 = 100% of 50% -> ratio 2 -> 4.
        let p = calc(2, Target::Utilization(50), &pods, samples(&[("a", 400)]));
        assert_eq!((p.replicas, p.utilization), (4, Some(200)));
        // Scale-down: b counts as its whole request -> (20+200)/400 = 55%: the ratio (1.1)
        // reverses the direction, so the count stays.
        let p = calc(2, Target::Utilization(50), &pods, samples(&[("a", 20)]));
        assert_eq!(p.replicas, 2);
    }

    #[test]
    fn unready_and_ignored_pods() {
        let mut gone = pod("c", "Running", "200m", true);
        gone.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::now(),
            ));
        let pods =
            vec![pod("a", "Running", "200m", true), pod("b", "Pending", "200m", false), gone];
        // a at 200%: b (pending) counts 0 on the way up: (400+0)/400 -> ratio 2 -> 4.
        let p = calc(3, Target::Utilization(50), &pods, samples(&[("a", 400), ("c", 400)]));
        assert_eq!(p.replicas, 4);
        let err = resource_replicas(
            1,
            Target::Utilization(50),
            "cpu",
            &pods[1..2],
            samples(&[]),
            &CalcOptions::default(),
            Utc::now(),
        )
        .expect_err("no ready samples");
        assert!(matches!(err, CalcError::NoReadyMetrics));
    }

    #[test]
    fn average_value_and_missing_requests() {
        let pods = vec![pod("a", "Running", "200m", true), pod("b", "Running", "200m", true)];
        let p = calc(2, Target::AverageValue(100), &pods, samples(&[("a", 300), ("b", 300)]));
        assert_eq!(p, Proposal { replicas: 6, utilization: None, average_milli: 300 });
        let mut bare = pod("x", "Running", "1", true);
        bare.spec.as_mut().expect("spec").containers[0].resources = None;
        let err = resource_replicas(
            1,
            Target::Utilization(50),
            "cpu",
            &[bare],
            samples(&[("x", 1)]),
            &CalcOptions::default(),
            Utc::now(),
        )
        .expect_err("no request");
        assert_eq!(err.to_string(), "missing request for cpu in container c of Pod x");
    }
}
