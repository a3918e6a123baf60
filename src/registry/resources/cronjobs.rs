//! CronJobs: defaults (concurrencyPolicy Allow, not suspended, history limits 3 and 1, the job
//! template's pod defaults), schedule and name-length validation, and the SCHEDULE ... LAST
//! SCHEDULE columns.

use serde_json::{json, Value};

use super::podspec::{self, default_template, validate_pod_spec};
use crate::apiserver::status::StatusCause;
use crate::registry::object::{self, default_field};
use crate::registry::strategy::{Column, Strategy};
use crate::registry::validation as v;

/// The CronJob strategy.
pub struct CronJobStrategy;

/// CronJob names leave room for the job name suffix.
pub const MAX_NAME_LEN: usize = 52;

impl Strategy for CronJobStrategy {
    fn default(&self, obj: &mut Value) {
        let Some(spec) = object::ensure_object(obj, "spec") else { return };
        default_field(spec, "concurrencyPolicy", json!("Allow"));
        default_field(spec, "suspend", json!(false));
        default_field(spec, "successfulJobsHistoryLimit", json!(3));
        default_field(spec, "failedJobsHistoryLimit", json!(1));
        if let Some(job) = spec.get_mut("jobTemplate").and_then(|t| t.get_mut("spec")) {
            default_template(job.get_mut("template"));
        }
    }

    fn validate(&self, obj: &Value) -> Vec<StatusCause> {
        let mut out = vec![];
        let name = object::name(obj);
        if name.len() > MAX_NAME_LEN {
            out.push(v::invalid(
                "metadata.name",
                &json!(name),
                "must be no more than 52 characters",
            ));
        }
        match object::str_at(obj, "spec.schedule") {
            None | Some("") => out.push(v::required("spec.schedule", "")),
            Some(s) => {
                if let Err(why) = check_schedule(s) {
                    out.push(v::invalid("spec.schedule", &json!(s), &why));
                }
            }
        }
        match object::str_at(obj, "spec.concurrencyPolicy") {
            None | Some("Allow" | "Forbid" | "Replace") => {}
            Some(p) => out.push(v::not_supported(
                "spec.concurrencyPolicy",
                &json!(p),
                &["Allow", "Forbid", "Replace"],
            )),
        }
        let tmpl = "spec.jobTemplate.spec.template.spec";
        if let Some(p) = object::path(obj, &format!("{tmpl}.restartPolicy")) {
            if p != "OnFailure" && p != "Never" {
                out.push(v::not_supported(
                    &format!("{tmpl}.restartPolicy"),
                    p,
                    &["OnFailure", "Never"],
                ));
            }
        }
        out.extend(validate_pod_spec(object::path(obj, tmpl), tmpl));
        out
    }

    fn columns(&self) -> Vec<Column> {
        vec![
            Column::NAME,
            Column::new("Schedule", "string", 0, |o| {
                json!(object::str_at(o, "spec.schedule").unwrap_or(""))
            }),
            Column::new("Timezone", "string", 0, |o| {
                super::pods::none_if_empty(object::str_at(o, "spec.timeZone"))
            }),
            Column::new("Suspend", "boolean", 0, |o| {
                json!(if object::path(o, "spec.suspend").and_then(Value::as_bool) == Some(true) {
                    "True"
                } else {
                    "False"
                })
            }),
            Column::new("Active", "integer", 0, |o| {
                json!(object::path(o, "status.active")
                    .and_then(Value::as_array)
                    .map_or(0, Vec::len))
            }),
            Column::new("Last Schedule", "string", 0, |o| {
                match object::path(o, "status.lastScheduleTime") {
                    Some(t) if !t.is_null() => json!(object::age(t)),
                    _ => json!("<none>"),
                }
            }),
            Column::AGE,
            podspec::CONTAINERS,
            podspec::IMAGES,
            podspec::SELECTOR,
        ]
    }
}

/// Checks a cron schedule: five fields of numbers, ranges, steps, lists, names or `*`, or a
/// predefined descriptor (@hourly, @every 1h, ...).
pub fn check_schedule(s: &str) -> Result<(), String> {
    let s = s.trim();
    let body = match s.strip_prefix("TZ=").or_else(|| s.strip_prefix("CRON_TZ=")) {
        Some(_) => {
            return Err("cannot use TZ or CRON_TZ in schedule, use timeZone field instead".into())
        }
        None => s,
    };
    if let Some(d) = body.strip_prefix('@') {
        return match d.split_whitespace().next() {
            Some(
                "yearly" | "annually" | "monthly" | "weekly" | "daily" | "midnight" | "hourly",
            ) => Ok(()),
            Some("every") => Ok(()),
            _ => Err(format!("unrecognized descriptor: {body}")),
        };
    }
    let fields: Vec<&str> = body.split_whitespace().collect();
    if fields.len() != 5 {
        return Err(format!("expected exactly 5 fields, found {}: {body}", fields.len()));
    }
    let ranges = [(0, 59), (0, 23), (1, 31), (1, 12), (0, 7)];
    for (field, (lo, hi)) in fields.iter().zip(ranges) {
        for part in field.split(',') {
            let (range, step) = match part.split_once('/') {
                Some((r, st)) => (r, Some(st)),
                None => (part, None),
            };
            if let Some(st) = step {
                st.parse::<u32>().map_err(|_| format!("failed to parse int from {st}"))?;
            }
            if range == "*" || range == "?" {
                continue;
            }
            for bound in range.split('-') {
                let n = match bound.parse::<u32>() {
                    Ok(n) => n,
                    Err(_)
                        if bound.len() == 3 && bound.chars().all(|c| c.is_ascii_alphabetic()) =>
                    {
                        continue
                    }
                    Err(_) => return Err(format!("failed to parse int from {bound}")),
                };
                if n < lo || n > hi {
                    return Err(format!("end of range ({n}) above maximum ({hi}): {part}"));
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules() {
        for ok in ["*/5 * * * *", "0 0 * * MON-FRI", "@hourly", "15,45 1-3 * * 0"] {
            assert!(check_schedule(ok).is_ok(), "{ok}");
        }
        for bad in ["* * * *", "61 * * * *", "TZ=UTC * * * * *", "x * * * *"] {
            assert!(check_schedule(bad).is_err(), "{bad}");
        }
        let mut cj = json!({"spec": {"schedule": "* * * * *", "jobTemplate": {"spec": {"template": {"spec": {}}}}}});
        CronJobStrategy.default(&mut cj);
        assert_eq!(cj["spec"]["successfulJobsHistoryLimit"], 3);
        assert_eq!(cj["spec"]["failedJobsHistoryLimit"], 1);
        assert_eq!(cj["spec"]["concurrencyPolicy"], "Allow");
    }
}
