//! How a proposed count becomes the count applied, as upstream's HPA controller normalizes it:
//! stabilization (the highest recommendation within the scale-down window, the lowest within
//! the scale-up window) and then the rate limits. Without spec.behavior: the controller's
//! scale-down window and at most max(2 × current, 4) on the way up. With spec.behavior: its
//! rules, filled in with upstream's defaults (up: no window, max of 4 pods or 100% per 15 s;
//! down: the controller's window unless set, 100% per 15 s), limited by the scale events of
//! each policy's period. The recommendations and scale events live in memory, per HPA.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::autoscaling::v2::{HPAScalingRules, HorizontalPodAutoscalerBehavior};
use parking_lot::Mutex;

/// Upstream's --horizontal-pod-autoscaler-downscale-stabilization.
pub const DEFAULT_DOWNSCALE_STABILIZATION: Duration = Duration::from_secs(300);

/// How the policies of a direction combine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Select {
    Max,
    Min,
    Disabled,
}

/// One scaling policy: at most `value` pods or percent per `period`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    pub percent: bool,
    pub value: i32,
    pub period: Duration,
}

/// The rules of one direction, defaults filled in.
#[derive(Clone, Debug, PartialEq)]
pub struct Rules {
    pub window: Duration,
    pub select: Select,
    pub policies: Vec<Policy>,
}

/// spec.behavior with upstream's defaults filled in.
#[derive(Clone, Debug, PartialEq)]
pub struct Behavior {
    pub up: Rules,
    pub down: Rules,
}

fn secs(s: i32) -> Duration {
    Duration::from_secs(u64::try_from(s).unwrap_or(0))
}

fn rules(spec: Option<&HPAScalingRules>, window: Duration, policies: Vec<Policy>) -> Rules {
    let select = match spec.and_then(|s| s.select_policy.as_deref()) {
        Some("Min") => Select::Min,
        Some("Disabled") => Select::Disabled,
        _ => Select::Max,
    };
    let given: Vec<Policy> = spec
        .and_then(|s| s.policies.as_ref())
        .map(|ps| {
            ps.iter()
                .map(|p| Policy {
                    percent: p.type_ == "Percent",
                    value: p.value,
                    period: secs(p.period_seconds),
                })
                .collect()
        })
        .unwrap_or_default();
    Rules {
        window: spec.and_then(|s| s.stabilization_window_seconds).map(secs).unwrap_or(window),
        select,
        policies: if given.is_empty() { policies } else { given },
    }
}

impl Behavior {
    /// `spec` with defaults; `down_window` is the controller's scale-down window.
    pub fn from_spec(spec: &HorizontalPodAutoscalerBehavior, down_window: Duration) -> Behavior {
        let period = Duration::from_secs(15);
        Behavior {
            up: rules(
                spec.scale_up.as_ref(),
                Duration::ZERO,
                vec![
                    Policy { percent: false, value: 4, period },
                    Policy { percent: true, value: 100, period },
                ],
            ),
            down: rules(
                spec.scale_down.as_ref(),
                down_window,
                vec![Policy { percent: true, value: 100, period }],
            ),
        }
    }
}

/// The inputs of one normalization.
#[derive(Clone, Copy, Debug)]
pub struct Args<'a> {
    pub current: i32,
    pub desired: i32,
    pub min: i32,
    pub max: i32,
    pub behavior: Option<&'a Behavior>,
}

/// The count to apply and the conditions it sets (status, reason, message).
#[derive(Clone, Debug, PartialEq)]
pub struct Normalized {
    pub replicas: i32,
    /// AbleToScale (always True here).
    pub able: (&'static str, &'static str),
    /// ScalingLimited.
    pub limited: (bool, &'static str, &'static str),
}

#[derive(Clone, Copy, Debug)]
struct ScaleEvent {
    change: i32,
    at: Instant,
    outdated: bool,
}

#[derive(Default)]
struct KeyState {
    recommendations: Vec<(i32, Instant)>,
    up: Vec<ScaleEvent>,
    down: Vec<ScaleEvent>,
}

/// Recommendations and scale events of every HPA.
#[derive(Default)]
pub struct Normalizer {
    state: Mutex<HashMap<String, KeyState>>,
}

fn age(now: Instant, at: Instant) -> Duration {
    now.saturating_duration_since(at)
}

const STABILIZED_UP: (&str, &str) = (
    "ScaleUpStabilized",
    "recent recommendations were lower than current one, applying the lowest recent recommendation",
);
const STABILIZED_DOWN: (&str, &str) = (
    "ScaleDownStabilized",
    "recent recommendations were higher than current one, applying the highest recent recommendation",
);
const READY: (&str, &str) = ("ReadyForNewScale", "recommended size matches current size");
const WITHIN: (&str, &str) =
    ("DesiredWithinRange", "the desired count is within the acceptable range");
const TOO_MANY: (&str, &str) =
    ("TooManyReplicas", "the desired replica count is more than the maximum replica count");
const TOO_FEW: (&str, &str) =
    ("TooFewReplicas", "the desired replica count is less than the minimum replica count");
const UP_LIMIT: (&str, &str) =
    ("ScaleUpLimit", "the desired replica count is increasing faster than the maximum scale rate");
const DOWN_LIMIT: (&str, &str) = (
    "ScaleDownLimit",
    "the desired replica count is decreasing faster than the maximum scale rate",
);

fn changed_within(events: &[ScaleEvent], period: Duration, now: Instant) -> i32 {
    events.iter().filter(|e| age(now, e.at) < period).map(|e| e.change).fold(0, i32::saturating_add)
}

fn up_limit(current: i32, events: &[ScaleEvent], rules: &Rules, now: Instant) -> i32 {
    if rules.select == Select::Disabled {
        return current;
    }
    let proposals = rules.policies.iter().map(|p| {
        let start = current.saturating_sub(changed_within(events, p.period, now));
        if p.percent {
            let v = (f64::from(start) * (1.0 + f64::from(p.value) / 100.0)).ceil();
            v.clamp(f64::from(i32::MIN), f64::from(i32::MAX)) as i32
        } else {
            start.saturating_add(p.value)
        }
    });
    match rules.select {
        Select::Min => proposals.min().unwrap_or(i32::MAX),
        _ => proposals.max().unwrap_or(i32::MIN),
    }
}

fn down_limit(
    current: i32,
    down: &[ScaleEvent],
    up: &[ScaleEvent],
    rules: &Rules,
    now: Instant,
) -> i32 {
    if rules.select == Select::Disabled {
        return current;
    }
    let proposals = rules.policies.iter().map(|p| {
        let start = current
            .saturating_sub(changed_within(up, p.period, now))
            .saturating_add(changed_within(down, p.period, now));
        if p.percent {
            (f64::from(start) * (1.0 - f64::from(p.value) / 100.0))
                .clamp(f64::from(i32::MIN), f64::from(i32::MAX)) as i32
        } else {
            start.saturating_sub(p.value)
        }
    });
    match rules.select {
        Select::Min => proposals.max().unwrap_or(i32::MIN),
        _ => proposals.min().unwrap_or(i32::MAX),
    }
}

impl Normalizer {
    /// Records the target's count as the first recommendation of a new HPA.
    pub fn record_initial(&self, key: &str, current: i32, now: Instant) {
        let mut st = self.state.lock();
        let s = st.entry(key.to_string()).or_default();
        if s.recommendations.is_empty() {
            s.recommendations.push((current, now));
        }
    }

    /// Forgets a deleted HPA.
    pub fn forget(&self, key: &str) {
        self.state.lock().remove(key);
    }

    /// Stabilizes and limits `args.desired`.
    pub fn normalize(
        &self,
        key: &str,
        args: Args<'_>,
        down_window: Duration,
        now: Instant,
    ) -> Normalized {
        let mut st = self.state.lock();
        let s = st.entry(key.to_string()).or_default();
        match args.behavior {
            None => {
                let stabilized = stabilize(&mut s.recommendations, args.desired, down_window, now);
                let able = if stabilized != args.desired { STABILIZED_DOWN } else { READY };
                let (replicas, (reason, message)) =
                    with_rules(args.current, stabilized, args.min, args.max);
                Normalized { replicas, able, limited: (replicas != stabilized, reason, message) }
            }
            Some(b) => {
                let (stabilized, stable) = stabilize_with(&mut s.recommendations, &args, b, now);
                let able = if stabilized != args.desired { stable } else { READY };
                let (replicas, (reason, message)) = with_behavior(s, &args, b, stabilized, now);
                Normalized { replicas, able, limited: (replicas != stabilized, reason, message) }
            }
        }
    }

    /// Remembers a rescale for the rate limits (only HPAs with spec.behavior use them).
    pub fn record_scale(
        &self,
        key: &str,
        behavior: Option<&Behavior>,
        prev: i32,
        new: i32,
        now: Instant,
    ) {
        let Some(b) = behavior else { return };
        let mut st = self.state.lock();
        let s = st.entry(key.to_string()).or_default();
        let (events, rules, change) = if new > prev {
            (&mut s.up, &b.up, new - prev)
        } else {
            (&mut s.down, &b.down, prev - new)
        };
        let longest = rules.policies.iter().map(|p| p.period).max().unwrap_or_default();
        for e in events.iter_mut() {
            if age(now, e.at) > longest {
                e.outdated = true;
            }
        }
        let fresh = ScaleEvent { change, at: now, outdated: false };
        match events.iter().rposition(|e| e.outdated) {
            Some(i) => events[i] = fresh,
            None => events.push(fresh),
        }
    }
}

/// The highest recommendation within the window (no behavior); records `desired`.
fn stabilize(recs: &mut Vec<(i32, Instant)>, desired: i32, window: Duration, now: Instant) -> i32 {
    let mut highest = desired;
    let mut old = None;
    for (i, (r, at)) in recs.iter().enumerate() {
        if age(now, *at) > window {
            old = Some(i);
        } else if *r > highest {
            highest = *r;
        }
    }
    match old {
        Some(i) => recs[i] = (desired, now),
        None => recs.push((desired, now)),
    }
    highest
}

/// Stabilization with behavior windows; records `args.desired`.
fn stabilize_with(
    recs: &mut Vec<(i32, Instant)>,
    args: &Args<'_>,
    b: &Behavior,
    now: Instant,
) -> (i32, (&'static str, &'static str)) {
    let (mut up, mut down) = (args.desired, args.desired);
    let mut old = None;
    for (i, (r, at)) in recs.iter().enumerate() {
        let a = age(now, *at);
        if a < b.up.window {
            up = up.min(*r);
        }
        if a < b.down.window {
            down = down.max(*r);
        }
        if a > b.up.window && a > b.down.window {
            old = Some(i);
        }
    }
    let recommendation = args.current.max(up).min(down);
    match old {
        Some(i) => recs[i] = (args.desired, now),
        None => recs.push((args.desired, now)),
    }
    let why = if args.desired >= args.current { STABILIZED_UP } else { STABILIZED_DOWN };
    (recommendation, why)
}

fn with_rules(
    current: i32,
    desired: i32,
    min: i32,
    max: i32,
) -> (i32, (&'static str, &'static str)) {
    let up = current.saturating_mul(2).max(4);
    let (allowed, why) = if max > up { (up, UP_LIMIT) } else { (max, TOO_MANY) };
    if desired < min {
        (min, TOO_FEW)
    } else if desired > allowed {
        (allowed, why)
    } else {
        (desired, WITHIN)
    }
}

fn with_behavior(
    s: &KeyState,
    args: &Args<'_>,
    b: &Behavior,
    desired: i32,
    now: Instant,
) -> (i32, (&'static str, &'static str)) {
    if desired > args.current {
        let limit = up_limit(args.current, &s.up, &b.up, now).max(args.current);
        let (allowed, why) =
            if args.max > limit { (limit, UP_LIMIT) } else { (args.max, TOO_MANY) };
        if desired > allowed {
            return (allowed, why);
        }
    } else if desired < args.current {
        let limit = down_limit(args.current, &s.down, &s.up, &b.down, now).min(args.current);
        let (allowed, why) =
            if args.min < limit { (limit, DOWN_LIMIT) } else { (args.min, TOO_FEW) };
        if desired < allowed {
            return (allowed, why);
        }
    }
    (desired, WITHIN)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn behavior(down_window: i32) -> Behavior {
        let spec: HorizontalPodAutoscalerBehavior = serde_json::from_value(
            serde_json::json!({"scaleDown": {"stabilizationWindowSeconds": down_window}}),
        )
        .expect("behavior");
        Behavior::from_spec(&spec, DEFAULT_DOWNSCALE_STABILIZATION)
    }

    #[test]
    fn defaults_fill_in() {
        let b = behavior(0);
        assert_eq!(b.down.window, Duration::ZERO);
        assert_eq!(b.up.policies.len(), 2);
        let d = Behavior::from_spec(&Default::default(), Duration::from_secs(300));
        assert_eq!(d.down.window, Duration::from_secs(300));
        assert_eq!(d.up.window, Duration::ZERO);
    }

    #[test]
    fn without_behavior_scale_down_waits_for_the_window() {
        let n = Normalizer::default();
        let t0 = Instant::now();
        n.record_initial("k", 3, t0);
        let args = Args { current: 3, desired: 1, min: 1, max: 10, behavior: None };
        let w = Duration::from_secs(300);
        let r = n.normalize("k", args, w, t0 + Duration::from_secs(1));
        assert_eq!((r.replicas, r.able.0), (3, "ScaleDownStabilized"));
        let r = n.normalize("k", args, w, t0 + Duration::from_secs(400));
        assert_eq!((r.replicas, r.able.0, r.limited.0), (1, "ReadyForNewScale", false));
        // Up at most max(2x, 4), then the maximum.
        let up = Args { current: 1, desired: 9, min: 1, max: 10, behavior: None };
        let r = n.normalize("k", up, w, t0 + Duration::from_secs(401));
        assert_eq!((r.replicas, r.limited), (4, (true, UP_LIMIT.0, UP_LIMIT.1)));
        let up = Args { current: 6, desired: 20, min: 1, max: 10, behavior: None };
        let r = n.normalize("k", up, w, t0 + Duration::from_secs(402));
        assert_eq!((r.replicas, r.limited.1), (10, "TooManyReplicas"));
    }

    #[test]
    fn behavior_windows_and_rates() {
        let n = Normalizer::default();
        let b = behavior(0);
        let t0 = Instant::now();
        n.record_initial("k", 1, t0);
        let up = Args { current: 1, desired: 20, min: 1, max: 3, behavior: Some(&b) };
        let r = n.normalize("k", up, DEFAULT_DOWNSCALE_STABILIZATION, t0);
        assert_eq!((r.replicas, r.limited.1), (3, "TooManyReplicas"));
        n.record_scale("k", Some(&b), 1, 3, t0);
        // A zero down window: straight to the minimum (100% per 15 s allows it).
        let down = Args { current: 3, desired: 0, min: 1, max: 3, behavior: Some(&b) };
        let r = n.normalize("k", down, DEFAULT_DOWNSCALE_STABILIZATION, t0);
        assert_eq!((r.replicas, r.able.0, r.limited.1), (1, "ReadyForNewScale", "TooFewReplicas"));
        // Pods policy: 4 per 15 s, already used by a recent scale-up of 4.
        let n = Normalizer::default();
        let spec: HorizontalPodAutoscalerBehavior = serde_json::from_value(serde_json::json!(
            {"scaleUp": {"policies": [{"type": "Pods", "value": 4, "periodSeconds": 60}]}}
        ))
        .expect("behavior");
        let b = Behavior::from_spec(&spec, Duration::ZERO);
        n.record_scale("k", Some(&b), 2, 6, t0);
        let up = Args { current: 6, desired: 20, min: 1, max: 30, behavior: Some(&b) };
        let r = n.normalize("k", up, Duration::ZERO, t0 + Duration::from_secs(10));
        assert_eq!((r.replicas, r.limited.1), (6, "ScaleUpLimit"));
        let r = n.normalize("k", up, Duration::ZERO, t0 + Duration::from_secs(61));
        assert_eq!(r.replicas, 10);
    }
}
