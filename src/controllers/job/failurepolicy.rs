//! Pod failure policies: which rule of spec.podFailurePolicy a failed pod matches (by the exit
//! codes of its terminated containers or by its conditions), and what the job does about it.

use k8s_openapi::api::batch::v1::{PodFailurePolicy, PodFailurePolicyOnExitCodesRequirement};
use k8s_openapi::api::core::v1::{ContainerStatus, Pod};

/// What a matched rule asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Fail the whole job; the message says which container or condition matched.
    FailJob(String),
    /// Fail the pod's index (jobs with backoffLimitPerIndex).
    FailIndex,
    /// Do not count the failure.
    Ignore,
    /// Count the failure toward the backoff limit (also the verdict when no rule matches).
    Count,
}

/// The verdict of the first rule that matches `pod`, or [`Verdict::Count`].
pub fn evaluate(policy: &PodFailurePolicy, pod: &Pod) -> Verdict {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("");
    let name = pod.metadata.name.as_deref().unwrap_or("");
    for (index, rule) in policy.rules.iter().enumerate() {
        let why = if let Some(req) = &rule.on_exit_codes {
            matching_container(pod, req).map(|(c, code)| {
                format!(
                    "Container {c} for pod {ns}/{name} failed with exit code {code} matching {} rule at index {index}",
                    rule.action
                )
            })
        } else if let Some(patterns) = &rule.on_pod_conditions {
            let conds = pod.status.as_ref().and_then(|s| s.conditions.as_deref()).unwrap_or(&[]);
            patterns
                .iter()
                .find(|p| conds.iter().any(|c| c.type_ == p.type_ && c.status == p.status))
                .map(|p| {
                    format!(
                        "Pod {ns}/{name} has condition {} matching {} rule at index {index}",
                        p.type_, rule.action
                    )
                })
        } else {
            None
        };
        let Some(why) = why else { continue };
        return match rule.action.as_str() {
            "FailJob" => Verdict::FailJob(why),
            "FailIndex" => Verdict::FailIndex,
            "Ignore" => Verdict::Ignore,
            _ => Verdict::Count,
        };
    }
    Verdict::Count
}

/// The first terminated container (init containers included) with a non-zero exit code that
/// the requirement matches: its name and exit code.
fn matching_container(
    pod: &Pod,
    req: &PodFailurePolicyOnExitCodesRequirement,
) -> Option<(String, i32)> {
    let status = pod.status.as_ref()?;
    let all = status
        .container_statuses
        .iter()
        .flatten()
        .chain(status.init_container_statuses.iter().flatten());
    all.filter(|c| req.container_name.as_ref().is_none_or(|n| *n == c.name))
        .filter_map(|c: &ContainerStatus| {
            let code = c.state.as_ref()?.terminated.as_ref()?.exit_code;
            (code != 0).then(|| (c.name.clone(), code))
        })
        .find(|(_, code)| match req.operator.as_str() {
            "In" => req.values.contains(code),
            "NotIn" => !req.values.contains(code),
            _ => false,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(code: i32, conditions: serde_json::Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "ns"},
            "status": {"phase": "Failed", "conditions": conditions, "containerStatuses": [
                {"name": "main", "image": "x", "imageID": "", "ready": false, "restartCount": 0,
                 "state": {"terminated": {"exitCode": code}}}]},
        }))
        .unwrap()
    }

    #[test]
    fn rules_match_in_order_by_exit_code_and_condition() {
        let policy: PodFailurePolicy = serde_json::from_value(json!({"rules": [
            {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
            {"action": "FailJob", "onExitCodes": {"containerName": "main", "operator": "In", "values": [42]}},
            {"action": "Count", "onExitCodes": {"operator": "NotIn", "values": [1]}},
        ]}))
        .unwrap();
        assert_eq!(
            evaluate(&policy, &pod(42, json!([]))),
            Verdict::FailJob(
                "Container main for pod ns/p failed with exit code 42 matching FailJob rule at index 1"
                    .into()
            )
        );
        let disrupted = json!([{"type": "DisruptionTarget", "status": "True"}]);
        assert_eq!(evaluate(&policy, &pod(42, disrupted)), Verdict::Ignore);
        assert_eq!(evaluate(&policy, &pod(1, json!([]))), Verdict::Count);
        assert_eq!(evaluate(&policy, &pod(3, json!([]))), Verdict::Count);
    }
}
