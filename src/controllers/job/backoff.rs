//! The back-off before a failed job pod is replaced: the base delay doubled with each
//! consecutive failure, capped, counted from the latest failure.

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::MAX_POD_FAILURE_BACKOFF;

/// Failures since the job's last success, and when the latest happened.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct BackoffRecord {
    pub(super) failures: u32,
    pub(super) last_failure: Option<DateTime<Utc>>,
}

/// How long to wait before creating pods after `rec`'s failures: base doubled per failure
/// beyond the first, at most [`MAX_POD_FAILURE_BACKOFF`], from the latest failure.
pub(super) fn remaining_backoff(
    rec: BackoffRecord,
    base: Duration,
    now: DateTime<Utc>,
) -> Duration {
    let Some(last) = rec.last_failure.filter(|_| rec.failures > 0) else { return Duration::ZERO };
    let delay = backoff_delay(rec.failures, base);
    let until = last + chrono::Duration::from_std(delay).unwrap_or_default();
    (until - now).to_std().unwrap_or(Duration::ZERO)
}

/// The back-off after `failures` consecutive failures.
pub fn backoff_delay(failures: u32, base: Duration) -> Duration {
    if failures == 0 {
        return Duration::ZERO;
    }
    base.saturating_mul(1u32 << (failures - 1).min(20)).min(MAX_POD_FAILURE_BACKOFF)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controllers::job::DEFAULT_POD_FAILURE_BACKOFF;

    #[test]
    fn backoff_doubles_from_the_base_and_is_capped() {
        let base = DEFAULT_POD_FAILURE_BACKOFF;
        assert_eq!(backoff_delay(0, base), Duration::ZERO);
        assert_eq!(backoff_delay(1, base), Duration::from_secs(10));
        assert_eq!(backoff_delay(2, base), Duration::from_secs(20));
        assert_eq!(backoff_delay(4, base), Duration::from_secs(80));
        assert_eq!(backoff_delay(7, base), Duration::from_secs(600));
        assert_eq!(backoff_delay(30, base), MAX_POD_FAILURE_BACKOFF);
        let now = Utc::now();
        let rec =
            BackoffRecord { failures: 2, last_failure: Some(now - chrono::Duration::seconds(5)) };
        let left = remaining_backoff(rec, base, now);
        assert!(left > Duration::from_secs(14) && left <= Duration::from_secs(15), "{left:?}");
    }
}
