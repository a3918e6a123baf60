//! Jobs: defaults (completions and parallelism 1, backoffLimit 6, NonIndexed, not suspended),
//! the generated selector and the controller-uid / job-name labels on the template, restart
//! policy and immutability rules, and the STATUS / COMPLETIONS / DURATION columns.

use serde_json::{json, Value};

use super::podspec::{self, default_template, non_negative, validate_pod_spec};
use crate::apiserver::status::StatusCause;
use crate::registry::object::{self, default_field};
use crate::registry::selector::LabelSelector;
use crate::registry::strategy::{Column, Ctx, Strategy};
use crate::registry::validation as v;

/// The Job strategy.
pub struct JobStrategy;

/// The label holding the job's uid, on its selector and pods.
pub const CONTROLLER_UID: &str = "batch.kubernetes.io/controller-uid";
/// The label holding the job's name, on its pods.
pub const JOB_NAME: &str = "batch.kubernetes.io/job-name";
const LEGACY_CONTROLLER_UID: &str = "controller-uid";
const LEGACY_JOB_NAME: &str = "job-name";

impl Strategy for JobStrategy {
    fn default(&self, obj: &mut Value) {
        if let Some(spec) = object::ensure_object(obj, "spec") {
            default_job_spec(spec);
        }
        default_labels_from_template(obj);
    }

    fn prepare_for_create(&self, _ctx: &Ctx, obj: &mut Value) {
        if object::path(obj, "spec.manualSelector").and_then(Value::as_bool) == Some(true) {
            return;
        }
        generate_selector(obj);
        // Upstream defaults again when it reads the stored job: the generated labels show.
        default_labels_from_template(obj);
    }

    fn validate(&self, obj: &Value) -> Vec<StatusCause> {
        let mut out = vec![];
        for f in [
            "spec.parallelism",
            "spec.completions",
            "spec.backoffLimit",
            "spec.activeDeadlineSeconds",
            "spec.ttlSecondsAfterFinished",
        ] {
            non_negative(obj, f, &mut out);
        }
        if let Some(p) = object::path(obj, "spec.template.spec.restartPolicy") {
            if p != "OnFailure" && p != "Never" {
                out.push(v::not_supported(
                    "spec.template.spec.restartPolicy",
                    p,
                    &["OnFailure", "Never"],
                ));
            }
        }
        match object::str_at(obj, "spec.completionMode") {
            None | Some("NonIndexed" | "Indexed") => {}
            Some(m) => out.push(v::not_supported(
                "spec.completionMode",
                &json!(m),
                &["NonIndexed", "Indexed"],
            )),
        }
        if object::str_at(obj, "spec.completionMode") == Some("Indexed")
            && object::path(obj, "spec.completions").is_none()
        {
            out.push(v::required("spec.completions", "when completion mode is Indexed"));
        }
        let sel = LabelSelector::from_metav1(object::path(obj, "spec.selector"));
        match sel {
            Ok(s) if !s.is_empty() && !s.nothing => {
                if !s.matches(&object::string_map(object::path(
                    obj,
                    "spec.template.metadata.labels",
                ))) {
                    out.push(v::invalid(
                        "spec.template.metadata.labels",
                        object::path(obj, "spec.template.metadata.labels").unwrap_or(&Value::Null),
                        "`selector` does not match template `labels`",
                    ));
                }
            }
            Ok(_) => out.push(v::required("spec.selector", "")),
            Err(e) => out.push(v::invalid("spec.selector", &Value::Null, &e.to_string())),
        }
        validate_failure_handling(obj, &mut out);
        out.extend(validate_pod_spec(
            object::path(obj, "spec.template.spec"),
            "spec.template.spec",
        ));
        out
    }

    fn validate_update(&self, new: &Value, old: &Value) -> Vec<StatusCause> {
        let mut out = self.validate(new);
        v::check_immutable(new, old, "spec.selector", &mut out);
        v::check_immutable(new, old, "spec.completionMode", &mut out);
        let suspended = object::path(old, "spec.suspend").and_then(Value::as_bool) == Some(true);
        if !suspended {
            v::check_immutable(new, old, "spec.template", &mut out);
        }
        if object::str_at(new, "spec.completionMode") != Some("Indexed") {
            v::check_immutable(new, old, "spec.completions", &mut out);
        }
        out
    }

    fn field_labels(&self) -> &'static [&'static str] {
        &["status.successful"]
    }

    fn field_value(&self, obj: &Value, field: &str) -> String {
        match field {
            "status.successful" => object::path(obj, "status.succeeded")
                .and_then(Value::as_i64)
                .unwrap_or(0)
                .to_string(),
            other => object::scalar_string(object::path(obj, other)),
        }
    }

    fn columns(&self) -> Vec<Column> {
        vec![
            Column::NAME,
            Column::new("Status", "string", 0, |o| json!(job_status(o))),
            Column::new("Completions", "string", 0, |o| json!(completions(o))),
            Column::new("Duration", "string", 0, |o| json!(duration(o))),
            Column::AGE,
            podspec::CONTAINERS,
            podspec::IMAGES,
            podspec::SELECTOR,
        ]
    }
}

/// Checks backoffLimitPerIndex, maxFailedIndexes and podFailurePolicy as upstream does.
/// The generated selector (the job's uid) and the labels it and kubectl rely on.
fn generate_selector(obj: &mut Value) {
    let uid = object::uid(obj).to_string();
    let name = object::name(obj).to_string();
    object::set_at(obj, "spec.selector", json!({"matchLabels": {CONTROLLER_UID: uid}}));
    if let Some(labels) = object::ensure_object(obj, "spec.template.metadata.labels") {
        for (k, val) in [
            (CONTROLLER_UID, &uid),
            (JOB_NAME, &name),
            (LEGACY_CONTROLLER_UID, &uid),
            (LEGACY_JOB_NAME, &name),
        ] {
            labels.insert(k.into(), json!(val));
        }
    }
}

/// A job without labels of its own gets its pod template's (upstream's defaulting).
fn default_labels_from_template(obj: &mut Value) {
    let own = object::path(obj, "metadata.labels").and_then(Value::as_object);
    if own.is_some_and(|l| !l.is_empty()) {
        return;
    }
    let Some(template) = object::path(obj, "spec.template.metadata.labels").cloned() else {
        return;
    };
    if template.as_object().is_some_and(|l| !l.is_empty()) {
        object::meta_mut(obj).insert("labels".into(), template);
    }
}

fn validate_failure_handling(obj: &Value, out: &mut Vec<StatusCause>) {
    let indexed = object::str_at(obj, "spec.completionMode") == Some("Indexed");
    let per_index = object::path(obj, "spec.backoffLimitPerIndex").filter(|v| !v.is_null());
    non_negative(obj, "spec.backoffLimitPerIndex", out);
    non_negative(obj, "spec.maxFailedIndexes", out);
    if let Some(v) = per_index {
        if !indexed {
            out.push(v::invalid(
                "spec.backoffLimitPerIndex",
                v,
                "requires indexed completion mode",
            ));
        }
    }
    if let Some(v) = object::path(obj, "spec.maxFailedIndexes").filter(|v| !v.is_null()) {
        if per_index.is_none() {
            out.push(v::required(
                "spec.backoffLimitPerIndex",
                "when maxFailedIndexes is specified",
            ));
        }
        let completions = object::path(obj, "spec.completions").and_then(Value::as_i64);
        if completions.is_some_and(|c| v.as_i64().unwrap_or(0) > c) {
            out.push(v::invalid(
                "spec.maxFailedIndexes",
                v,
                "must be less than or equal to completions",
            ));
        }
    }
    let Some(rules) = object::path(obj, "spec.podFailurePolicy.rules").and_then(Value::as_array)
    else {
        return;
    };
    if let Some(p) = object::path(obj, "spec.template.spec.restartPolicy") {
        if p != "Never" {
            out.push(v::invalid(
                "spec.template.spec.restartPolicy",
                p,
                "only \"Never\" is supported when podFailurePolicy is specified",
            ));
        }
    }
    for (i, rule) in rules.iter().enumerate() {
        let at = format!("spec.podFailurePolicy.rules[{i}]");
        let action = rule.get("action").unwrap_or(&Value::Null);
        match action.as_str() {
            Some("FailJob" | "Ignore" | "Count") => {}
            Some("FailIndex") if per_index.is_none() => out.push(v::invalid(
                &format!("{at}.action"),
                action,
                "requires the backoffLimitPerIndex to be set",
            )),
            Some("FailIndex") => {}
            _ => out.push(v::not_supported(
                &format!("{at}.action"),
                action,
                &["Count", "FailIndex", "FailJob", "Ignore"],
            )),
        }
        let codes = rule.get("onExitCodes").filter(|v| !v.is_null());
        let conds = rule.get("onPodConditions").filter(|v| !v.is_null());
        match (codes, conds) {
            (Some(_), Some(_)) => out.push(v::invalid(
                &at,
                &Value::Null,
                "specifying both OnExitCodes and OnPodConditions is not supported",
            )),
            (None, None) => out.push(v::invalid(
                &at,
                &Value::Null,
                "specifying one of OnExitCodes and OnPodConditions is required",
            )),
            _ => {}
        }
        if let Some(req) = codes {
            let op = req.get("operator").unwrap_or(&Value::Null);
            if !matches!(op.as_str(), Some("In" | "NotIn")) {
                out.push(v::not_supported(
                    &format!("{at}.onExitCodes.operator"),
                    op,
                    &["In", "NotIn"],
                ));
            }
            let values: Vec<i64> = req
                .get("values")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Value::as_i64).collect())
                .unwrap_or_default();
            if values.is_empty() {
                out.push(v::required(&format!("{at}.onExitCodes.values"), ""));
            }
            for (j, n) in values.iter().enumerate() {
                let field = format!("{at}.onExitCodes.values[{j}]");
                if *n == 0 && op.as_str() == Some("In") {
                    out.push(v::invalid(&field, &json!(n), "must not be 0 for the In operator"));
                } else if j > 0 && values[j - 1] == *n {
                    out.push(v::duplicate(&field, &json!(n)));
                } else if j > 0 && values[j - 1] > *n {
                    out.push(v::invalid(&field, &json!(n), "must be ordered"));
                }
            }
        }
        for (j, c) in conds.and_then(Value::as_array).into_iter().flatten().enumerate() {
            let status = c.get("status").unwrap_or(&Value::Null);
            if !matches!(status.as_str(), Some("True" | "False" | "Unknown")) {
                out.push(v::not_supported(
                    &format!("{at}.onPodConditions[{j}].status"),
                    status,
                    &["False", "True", "Unknown"],
                ));
            }
        }
    }
}

/// Job spec defaults (also applied to CronJob job templates).
pub fn default_job_spec(spec: &mut serde_json::Map<String, Value>) {
    let has_completions = spec.get("completions").is_some_and(|v| !v.is_null());
    let has_parallelism = spec.get("parallelism").is_some_and(|v| !v.is_null());
    if !has_completions && !has_parallelism {
        spec.insert("completions".into(), json!(1));
    }
    default_field(spec, "parallelism", json!(1));
    if spec.get("backoffLimitPerIndex").is_none_or(Value::is_null) {
        default_field(spec, "backoffLimit", json!(6));
    }
    default_field(spec, "completionMode", json!("NonIndexed"));
    default_field(spec, "suspend", json!(false));
    let policy = if spec.get("podFailurePolicy").is_some_and(|v| !v.is_null()) {
        "Failed"
    } else {
        "TerminatingOrFailed"
    };
    default_field(spec, "podReplacementPolicy", json!(policy));
    default_template(spec.get_mut("template"));
}

fn condition_true(o: &Value, kind: &str) -> bool {
    object::path(o, "status.conditions").and_then(Value::as_array).is_some_and(|cs| {
        cs.iter().any(|c| {
            c.get("type").and_then(Value::as_str) == Some(kind)
                && c.get("status").and_then(Value::as_str) == Some("True")
        })
    })
}

fn job_status(o: &Value) -> &'static str {
    if condition_true(o, "Complete") {
        "Complete"
    } else if condition_true(o, "Failed") {
        "Failed"
    } else if object::is_deleting(o) {
        "Terminating"
    } else if condition_true(o, "SuccessCriteriaMet") {
        "SuccessCriteriaMet"
    } else if condition_true(o, "FailureTarget") {
        "FailureTarget"
    } else if condition_true(o, "Suspended") {
        "Suspended"
    } else {
        "Running"
    }
}

fn completions(o: &Value) -> String {
    let succeeded = object::path(o, "status.succeeded").and_then(Value::as_i64).unwrap_or(0);
    match object::path(o, "spec.completions").and_then(Value::as_i64) {
        Some(c) => format!("{succeeded}/{c}"),
        None => match object::path(o, "spec.parallelism").and_then(Value::as_i64).unwrap_or(0) {
            p if p > 1 => format!("{succeeded}/1 of {p}"),
            _ => format!("{succeeded}/1"),
        },
    }
}

fn duration(o: &Value) -> String {
    let parse =
        |p: &str| object::str_at(o, p).and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok());
    let Some(start) = parse("status.startTime") else { return String::new() };
    let end = parse("status.completionTime")
        .map(|t| t.with_timezone(&chrono::Utc))
        .unwrap_or_else(chrono::Utc::now);
    object::human_duration((end - start.with_timezone(&chrono::Utc)).num_seconds())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_gets_defaults_selector_and_labels() {
        let mut j = json!({"metadata": {"name": "pi", "uid": "u-1"},
                           "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "perl"}]}}}});
        JobStrategy.default(&mut j);
        JobStrategy.prepare_for_create(&Ctx::default(), &mut j);
        assert_eq!(j["spec"]["completions"], 1);
        assert_eq!(j["spec"]["parallelism"], 1);
        assert_eq!(j["spec"]["backoffLimit"], 6);
        assert_eq!(j["spec"]["completionMode"], "NonIndexed");
        assert_eq!(j["spec"]["selector"]["matchLabels"][CONTROLLER_UID], "u-1");
        assert_eq!(j["spec"]["template"]["metadata"]["labels"][JOB_NAME], "pi");
        assert!(JobStrategy.validate(&j).is_empty(), "{:?}", JobStrategy.validate(&j));
        let mut always = j.clone();
        always["spec"]["template"]["spec"]["restartPolicy"] = json!("Always");
        assert_eq!(JobStrategy.validate(&always)[0].field, "spec.template.spec.restartPolicy");
        assert_eq!(completions(&j), "0/1");
        let mut policy = j.clone();
        policy["spec"]["podFailurePolicy"] = json!({"rules": [
            {"action": "FailIndex", "onExitCodes": {"operator": "In", "values": [0, 3]}},
            {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
        ]});
        let fields: Vec<String> =
            JobStrategy.validate(&policy).into_iter().map(|c| c.field).collect();
        assert_eq!(
            fields,
            [
                "spec.podFailurePolicy.rules[0].action",
                "spec.podFailurePolicy.rules[0].onExitCodes.values[0]"
            ]
        );
        policy["spec"]["template"]["spec"]["restartPolicy"] = json!("OnFailure");
        assert!(JobStrategy
            .validate(&policy)
            .iter()
            .any(|c| c.field == "spec.template.spec.restartPolicy"));
        let mut per_index = j.clone();
        per_index["spec"]["backoffLimitPerIndex"] = json!(1);
        assert_eq!(JobStrategy.validate(&per_index)[0].field, "spec.backoffLimitPerIndex");
        assert_eq!(job_status(&j), "Running");
    }
}
