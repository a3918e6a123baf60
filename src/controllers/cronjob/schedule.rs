//! CronJob schedules: standard five-field cron expressions and the @-descriptors (with
//! `@every <duration>`), evaluated in a time zone, and the questions the controller asks of
//! them: the most recent start time it missed, how many it missed, and the next one.

use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use chrono_tz::Tz;
use croner::parser::{CronParser, Seconds, Year};
use croner::Cron;

/// More missed start times than this are reported as "too many" (upstream's 100).
pub const MANY_MISSED: i64 = 100;

/// A parsed schedule.
#[derive(Clone, Debug)]
pub enum Schedule {
    /// A cron expression, evaluated in a time zone.
    Cron(Box<Cron>, Tz),
    /// `@every <duration>`: a fixed delay (whole seconds, at least one).
    Every(Duration),
}

/// Why a schedule or time zone is unusable.
#[derive(Debug, thiserror::Error)]
pub enum ScheduleError {
    #[error("unparseable schedule {schedule:?}: {why}")]
    Schedule { schedule: String, why: String },
    #[error("unknown time zone {0}")]
    TimeZone(String),
}

/// Parses `schedule` in `time_zone` (None: UTC, the zone of skiff's controller manager).
pub fn parse(schedule: &str, time_zone: Option<&str>) -> Result<Schedule, ScheduleError> {
    let tz: Tz = match time_zone {
        None => Tz::UTC,
        Some(name) => name.parse().map_err(|_| ScheduleError::TimeZone(name.to_string()))?,
    };
    let bad = |why: String| ScheduleError::Schedule { schedule: schedule.to_string(), why };
    let s = schedule.trim();
    if let Some(d) = s.strip_prefix("@every ") {
        let d = parse_go_duration(d.trim())
            .ok_or_else(|| bad(format!("failed to parse duration {s}")))?;
        return Ok(Schedule::Every(Duration::from_secs(d.as_secs().max(1))));
    }
    if s.eq_ignore_ascii_case("@midnight") {
        return parse("0 0 * * *", time_zone);
    }
    let parser = CronParser::builder()
        .seconds(Seconds::Disallowed)
        .year(Year::Disallowed)
        .sloppy_ranges(true)
        .build();
    let cron = parser.parse(s).map_err(|e| bad(e.to_string()))?;
    Ok(Schedule::Cron(Box::new(cron), tz))
}

impl Schedule {
    /// The first start time strictly after `t`.
    pub fn next(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self {
            Schedule::Every(d) => {
                let base = DateTime::from_timestamp(t.timestamp(), 0)?;
                Some(base + chrono::Duration::from_std(*d).ok()?)
            }
            Schedule::Cron(cron, tz) => {
                let local = tz.from_utc_datetime(&t.naive_utc());
                cron.find_next_occurrence(&local, false).ok().map(|n| n.with_timezone(&Utc))
            }
        }
    }

    /// The zone start times are shown in (the scheduled-timestamp annotation).
    pub fn zone(&self) -> Tz {
        match self {
            Schedule::Cron(_, tz) => *tz,
            Schedule::Every(_) => Tz::UTC,
        }
    }
}

/// How many start times were missed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Missed {
    None,
    Few,
    Many,
}

/// The latest start time in (`earliest`, `now`] and how many were missed — `earliest` being
/// the last schedule time or creation time, moved up to `now - startingDeadlineSeconds` when
/// that is later. Missed counts are estimated from the gap between two consecutive starts.
pub fn most_recent(
    schedule: &Schedule,
    earliest: DateTime<Utc>,
    starting_deadline: Option<i64>,
    now: DateTime<Utc>,
) -> Result<(Option<DateTime<Utc>>, Missed), String> {
    let mut earliest = earliest;
    if let Some(sds) = starting_deadline {
        let limit = now - chrono::Duration::seconds(sds);
        if limit > earliest {
            earliest = limit;
        }
    }
    let Some(t1) = schedule.next(earliest) else { return Ok((None, Missed::None)) };
    if now < t1 {
        return Ok((None, Missed::None));
    }
    let Some(t2) = schedule.next(t1) else { return Ok((Some(t1), Missed::None)) };
    if now < t2 {
        return Ok((Some(t1), Missed::None));
    }
    let gap = (t2 - t1).num_seconds();
    if gap < 1 {
        return Err("time difference between two schedules is less than 1 second".into());
    }
    let missed = (now - t1).num_seconds() / gap + 1;
    // Start a couple of gaps before now and walk forward to the last start not after now.
    let from = t1 + chrono::Duration::seconds((missed - 2).max(0) * gap);
    let mut latest = None;
    let mut t = schedule.next(from);
    while let Some(x) = t.filter(|x| *x <= now) {
        latest = Some(x);
        t = schedule.next(x);
    }
    let latest = latest.or(Some(t1));
    let kind = if missed > MANY_MISSED { Missed::Many } else { Missed::Few };
    Ok((latest, kind))
}

/// Parses a Go duration ("1h30m", "90s", "1.5h", "500ms").
pub fn parse_go_duration(s: &str) -> Option<Duration> {
    if s.is_empty() {
        return None;
    }
    if s == "0" {
        return Some(Duration::ZERO);
    }
    let mut total = 0f64;
    let mut rest = s;
    while !rest.is_empty() {
        let num_len = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        if num_len == 0 {
            return None;
        }
        let n: f64 = rest[..num_len].parse().ok()?;
        rest = &rest[num_len..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let factor = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        total += n * factor;
        rest = &rest[unit_len..];
    }
    Some(Duration::from_secs_f64(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn standard_expressions_and_descriptors() {
        let cases = [
            ("*/15 * * * *", "2024-03-10T10:07:30Z", "2024-03-10T10:15:00Z"),
            ("0 0 * * MON-FRI", "2024-03-09T10:00:00Z", "2024-03-11T00:00:00Z"),
            ("@hourly", "2024-03-10T10:07:30Z", "2024-03-10T11:00:00Z"),
            ("@daily", "2024-03-10T10:07:30Z", "2024-03-11T00:00:00Z"),
            ("@midnight", "2024-03-10T10:07:30Z", "2024-03-11T00:00:00Z"),
            ("@weekly", "2024-03-10T10:07:30Z", "2024-03-17T00:00:00Z"),
            ("@monthly", "2024-03-10T10:07:30Z", "2024-04-01T00:00:00Z"),
            ("@yearly", "2024-03-10T10:07:30Z", "2025-01-01T00:00:00Z"),
            ("@annually", "2024-03-10T10:07:30Z", "2025-01-01T00:00:00Z"),
            ("5/20 * * * *", "2024-03-10T10:07:30Z", "2024-03-10T10:25:00Z"),
            ("0 12 1 jan *", "2024-03-10T10:07:30Z", "2025-01-01T12:00:00Z"),
            ("@every 90s", "2024-03-10T10:07:30.5Z", "2024-03-10T10:09:00Z"),
        ];
        for (expr, from, want) in cases {
            let s = parse(expr, None).unwrap_or_else(|e| panic!("{expr}: {e}"));
            assert_eq!(s.next(at(from)), Some(at(want)), "{expr}");
        }
        assert!(parse("* * * *", None).is_err());
        assert!(parse("* * * * *", Some("Mars/Olympus")).is_err());
    }

    #[test]
    fn time_zones_shift_start_times() {
        let s = parse("0 9 * * *", Some("America/New_York")).unwrap();
        // 09:00 in New York is 13:00 UTC in summer (EDT) and 14:00 UTC in winter (EST).
        assert_eq!(s.next(at("2024-07-01T00:00:00Z")), Some(at("2024-07-01T13:00:00Z")));
        assert_eq!(s.next(at("2024-01-01T00:00:00Z")), Some(at("2024-01-01T14:00:00Z")));
        let s = parse("30 1 * * *", Some("Asia/Kolkata")).unwrap();
        assert_eq!(s.next(at("2024-07-01T00:00:00Z")), Some(at("2024-07-01T20:00:00Z")));
    }

    #[test]
    fn most_recent_start_and_missed_counts() {
        let s = parse("* * * * *", None).unwrap();
        let created = at("2024-03-10T10:00:30Z");
        // Nothing due before the first minute boundary.
        assert_eq!(
            most_recent(&s, created, None, at("2024-03-10T10:00:59Z")).unwrap(),
            (None, Missed::None)
        );
        assert_eq!(
            most_recent(&s, created, None, at("2024-03-10T10:01:10Z")).unwrap(),
            (Some(at("2024-03-10T10:01:00Z")), Missed::None)
        );
        assert_eq!(
            most_recent(&s, created, None, at("2024-03-10T10:05:10Z")).unwrap(),
            (Some(at("2024-03-10T10:05:00Z")), Missed::Few)
        );
        // Hours later: too many missed, but the latest is still found.
        assert_eq!(
            most_recent(&s, created, None, at("2024-03-10T14:00:10Z")).unwrap(),
            (Some(at("2024-03-10T14:00:00Z")), Missed::Many)
        );
        // A starting deadline limits how far back to look.
        assert_eq!(
            most_recent(&s, created, Some(200), at("2024-03-10T14:00:10Z")).unwrap(),
            (Some(at("2024-03-10T14:00:00Z")), Missed::Few)
        );
        let every = parse("@every 1h", None).unwrap();
        assert_eq!(
            most_recent(&every, created, None, at("2024-03-10T13:30:00Z")).unwrap().0,
            Some(at("2024-03-10T13:00:30Z"))
        );
    }

    #[test]
    fn go_durations() {
        assert_eq!(parse_go_duration("1h30m"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_go_duration("1.5h"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_go_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_go_duration("5x"), None);
        assert_eq!(parse_go_duration("h"), None);
    }
}
