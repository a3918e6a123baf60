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
        let Some(spec) = object::ensure_object(obj, "spec") else { return };
        default_job_spec(spec);
    }

    fn prepare_for_create(&self, _ctx: &Ctx, obj: &mut Value) {
        if object::path(obj, "spec.manualSelector").and_then(Value::as_bool) == Some(true) {
            return;
        }
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
        assert_eq!(job_status(&j), "Running");
    }
}
