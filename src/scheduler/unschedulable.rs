//! What a pod that fits no node gets, as upstream: the FitError message ("0/3 nodes are
//! available: ... preemption: ..."), the PodScheduled=False condition with reason Unschedulable
//! (and status.nominatedNodeName when preemption chose a node), and a FailedScheduling Warning
//! event from default-scheduler. Repeated failures with the same message record an event at
//! most once per [`EVENT_REPEAT`].

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client, ResourceExt};
use parking_lot::Mutex;
use serde_json::json;

use super::preemption::histogram;
use super::DEFAULT_SCHEDULER_NAME;

/// How often the same failure is recorded again as an event.
pub const EVENT_REPEAT: Duration = Duration::from_secs(60);

/// Upstream's FitError message: the filter reasons histogram, then what preemption said.
pub fn fit_error_message(
    total: usize,
    reasons: &BTreeMap<String, usize>,
    post_filter: &str,
) -> String {
    let mut msg = format!("0/{total} nodes are available: {}.", histogram(reasons));
    if !post_filter.is_empty() {
        msg.push_str(" preemption: ");
        msg.push_str(post_filter);
    }
    msg
}

/// The last FailedScheduling event recorded per pod key.
#[derive(Default)]
pub struct Recorded(Mutex<HashMap<String, (String, Instant)>>);

impl Recorded {
    pub fn forget(&self, key: &str) {
        self.0.lock().remove(key);
    }

    fn should_record(&self, key: &str, message: &str) -> bool {
        let mut m = self.0.lock();
        match m.get(key) {
            Some((last, at)) if last == message && at.elapsed() < EVENT_REPEAT => false,
            _ => {
                m.insert(key.to_string(), (message.to_string(), Instant::now()));
                true
            }
        }
    }
}

/// Records the failure: the event (unless just recorded) and the PodScheduled condition with
/// the nominated node (None: leave as is; Some(""): clear).
pub fn record(
    client: &Client,
    recorded: &Recorded,
    key: &str,
    pod: &Pod,
    message: String,
    nominated: Option<&str>,
) {
    if recorded.should_record(key, &message) {
        crate::controllers::events::record(
            client,
            DEFAULT_SCHEDULER_NAME,
            pod,
            true,
            "FailedScheduling",
            message.clone(),
        );
    }
    let status = pod.status.as_ref();
    let current = status
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "PodScheduled"));
    let have_nominated = status.and_then(|s| s.nominated_node_name.as_deref()).unwrap_or("");
    let nominated_same = nominated.is_none_or(|n| n == have_nominated);
    if nominated_same
        && current.is_some_and(|c| {
            c.status == "False"
                && c.reason.as_deref() == Some("Unschedulable")
                && c.message.as_deref() == Some(&message)
        })
    {
        return;
    }
    let transition = match current {
        Some(c) if c.status == "False" => {
            c.last_transition_time.as_ref().map(crate::controllers::podutil::time_of)
        }
        _ => None,
    }
    .unwrap_or_else(chrono::Utc::now);
    let mut patch = json!({"status": {"conditions": [{
        "type": "PodScheduled",
        "status": "False",
        "reason": "Unschedulable",
        "message": message,
        "lastProbeTime": null,
        "lastTransitionTime": transition.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    }]}});
    if let Some(n) = nominated.filter(|n| *n != have_nominated) {
        patch["status"]["nominatedNodeName"] = if n.is_empty() { json!(null) } else { json!(n) };
    }
    let api: Api<Pod> = Api::namespaced(client.clone(), &pod.namespace().unwrap_or_default());
    let name = pod.name_any();
    tokio::spawn(async move {
        let pp = PatchParams {
            field_manager: Some(DEFAULT_SCHEDULER_NAME.into()),
            ..Default::default()
        };
        if let Err(e) = api.patch_status(&name, &pp, &Patch::Strategic(&patch)).await {
            tracing::debug!(pod = %name, error = %e, "cannot record the unschedulable condition");
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fit_errors_read_as_upstream() {
        let reasons: BTreeMap<String, usize> = [
            ("Insufficient cpu".to_string(), 2),
            ("node(s) had untolerated taint {dedicated: gpu}".to_string(), 1),
        ]
        .into_iter()
        .collect();
        assert_eq!(
            fit_error_message(3, &reasons, "0/3 nodes are available: 3 Preemption is not helpful for scheduling."),
            "0/3 nodes are available: 1 node(s) had untolerated taint {dedicated: gpu}, 2 Insufficient cpu. preemption: 0/3 nodes are available: 3 Preemption is not helpful for scheduling."
        );
        assert_eq!(
            fit_error_message(1, &reasons, "not eligible due to preemptionPolicy=Never."),
            "0/1 nodes are available: 1 node(s) had untolerated taint {dedicated: gpu}, 2 Insufficient cpu. preemption: not eligible due to preemptionPolicy=Never."
        );
    }
}
