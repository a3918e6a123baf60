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
        if let Some(tz) = object::path(obj, "spec.timeZone").filter(|v| !v.is_null()) {
            match tz.as_str() {
                Some(name) => {
                    if let Err(why) = check_time_zone(name) {
                        out.push(v::invalid("spec.timeZone", tz, &why));
                    }
                }
                None => out.push(v::invalid("spec.timeZone", tz, "must be a string")),
            }
        }
        for f in [
            "spec.startingDeadlineSeconds",
            "spec.successfulJobsHistoryLimit",
            "spec.failedJobsHistoryLimit",
        ] {
            super::podspec::non_negative(obj, f, &mut out);
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

/// Checks a cron schedule as upstream's parser does: five fields of numbers, ranges, steps,
/// lists, `*` or `?` (month and weekday names in their fields), or a descriptor (@yearly,
/// @annually, @monthly, @weekly, @daily, @midnight, @hourly, `@every <duration>`). Time zones
/// belong in spec.timeZone, not in the schedule.
pub fn check_schedule(s: &str) -> Result<(), String> {
    if s.contains("TZ") {
        return Err("cannot use TZ or CRON_TZ in schedule, use timeZone field instead".into());
    }
    let body = s.trim();
    if let Some(d) = body.strip_prefix('@') {
        if let Some(duration) = d.strip_prefix("every ") {
            return match crate::controllers::cronjob::schedule::parse_go_duration(duration.trim()) {
                Some(_) => Ok(()),
                None => Err(format!(
                    "failed to parse duration {body}: time: invalid duration {:?}",
                    duration.trim()
                )),
            };
        }
        return match d {
            "yearly" | "annually" | "monthly" | "weekly" | "daily" | "midnight" | "hourly" => {
                Ok(())
            }
            _ => Err(format!("unrecognized descriptor: {body}")),
        };
    }
    let fields: Vec<&str> = body.split_whitespace().collect();
    if fields.len() != 5 {
        return Err(format!("expected exactly 5 fields, found {}: {body}", fields.len()));
    }
    const MONTHS: [&str; 12] =
        ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"];
    const DAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];
    let bounds: [(u32, u32, &[&str], u32); 5] =
        [(0, 59, &[], 0), (0, 23, &[], 0), (1, 31, &[], 0), (1, 12, &MONTHS, 1), (0, 6, &DAYS, 0)];
    for (field, (lo, hi, names, first)) in fields.iter().zip(bounds) {
        for part in field.split(',') {
            let pieces: Vec<&str> = part.split('/').collect();
            if pieces.len() > 2 {
                return Err(format!("too many slashes: {part}"));
            }
            let range = pieces[0];
            let value = |v: &str| -> Result<u32, String> {
                if let Some(i) = names.iter().position(|n| n.eq_ignore_ascii_case(v)) {
                    return Ok(i as u32 + first);
                }
                v.parse::<u32>().map_err(|_| {
                    format!(
                        "failed to parse int from {v}: strconv.Atoi: parsing {v:?}: invalid syntax"
                    )
                })
            };
            let (start, end) = if range == "*" || range == "?" {
                (lo, hi)
            } else {
                let ends: Vec<&str> = range.split('-').collect();
                if ends.len() > 2 {
                    return Err(format!("too many hyphens: {range}"));
                }
                let start = value(ends[0])?;
                let end = match ends.get(1) {
                    Some(e) => value(e)?,
                    None if pieces.len() == 2 => hi,
                    None => start,
                };
                (start, end)
            };
            if let Some(step) = pieces.get(1) {
                let n = value(step)?;
                if n == 0 {
                    return Err(format!("step of range should be a positive number: {part}"));
                }
            }
            if start < lo {
                return Err(format!("beginning of range ({start}) below minimum ({lo}): {part}"));
            }
            if end > hi {
                return Err(format!("end of range ({end}) above maximum ({hi}): {part}"));
            }
            if start > end {
                return Err(format!(
                    "beginning of range ({start}) beyond end of range ({end}): {part}"
                ));
            }
        }
    }
    Ok(())
}

/// Checks spec.timeZone as upstream does: an explicit IANA zone name that is known.
pub fn check_time_zone(tz: &str) -> Result<(), String> {
    if tz.is_empty() {
        return Err("timeZone must be nil or non-empty string".into());
    }
    let valid = |part: &str| {
        part != "."
            && part != ".."
            && !part.starts_with('-')
            && !part.is_empty()
            && part.len() <= 14
            && part.chars().all(|c| c.is_ascii_alphanumeric() || "_-+".contains(c))
    };
    if !tz.split('/').all(valid) {
        return Err("must be a valid IANA time zone name".into());
    }
    if tz.eq_ignore_ascii_case("local") {
        return Err(
            "timeZone must be an explicit time zone as defined in https://www.iana.org/time-zones"
                .into(),
        );
    }
    match tz.parse::<chrono_tz::Tz>() {
        Ok(_) => Ok(()),
        Err(_) => Err(format!("unknown time zone {tz}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules() {
        for ok in [
            "*/5 * * * *",
            "0 0 * * MON-FRI",
            "@hourly",
            "@midnight",
            "@every 1h30m",
            "15,45 1-3 * * 0",
            "5/15 * ? jan-mar sat",
        ] {
            assert!(check_schedule(ok).is_ok(), "{ok}");
        }
        for bad in [
            "* * * *",
            "61 * * * *",
            "TZ=UTC * * * * *",
            "CRON_TZ=UTC * * * *",
            "x * * * *",
            "0 0 * * 7",
            "0 0 0 * *",
            "5-1 * * * *",
            "*/0 * * * *",
            "0 0 * * L",
            "@every x",
            "@fortnightly",
            "0 0 * mon *",
        ] {
            assert!(check_schedule(bad).is_err(), "{bad}");
        }
        assert!(check_time_zone("Europe/Berlin").is_ok());
        assert!(check_time_zone("Etc/GMT+5").is_ok());
        for bad in ["", "Local", "Mars/Olympus", "../etc/passwd", "Europe/ Berlin"] {
            assert!(check_time_zone(bad).is_err(), "{bad}");
        }
        let mut cj = json!({"spec": {"schedule": "* * * * *", "jobTemplate": {"spec": {"template": {"spec": {}}}}}});
        CronJobStrategy.default(&mut cj);
        assert_eq!(cj["spec"]["successfulJobsHistoryLimit"], 3);
        assert_eq!(cj["spec"]["failedJobsHistoryLimit"], 1);
        assert_eq!(cj["spec"]["concurrencyPolicy"], "Allow");
    }
}
