//! Completion indexes of Indexed Jobs: the interval notation of status.completedIndexes and
//! status.failedIndexes ("1,3-5,7"), and the index a pod carries.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::Pod;

use super::COMPLETION_INDEX;

/// Parses "1,3-5,7" into its indexes, keeping only those below `limit`; malformed parts are
/// skipped.
pub fn parse(s: &str, limit: i32) -> BTreeSet<i32> {
    let mut out = BTreeSet::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (lo, hi) = match part.split_once('-') {
            Some((a, b)) => (a.parse::<i32>(), b.parse::<i32>()),
            None => (part.parse::<i32>(), part.parse::<i32>()),
        };
        if let (Ok(lo), Ok(hi)) = (lo, hi) {
            for i in lo.max(0)..=hi.min(limit - 1) {
                out.insert(i);
            }
        }
    }
    out
}

/// Formats indexes in interval notation, ranges of three or more as "a-b".
pub fn format(set: &BTreeSet<i32>) -> String {
    let mut parts: Vec<String> = vec![];
    let mut iter = set.iter().copied().peekable();
    while let Some(start) = iter.next() {
        let mut end = start;
        while iter.peek() == Some(&(end + 1)) {
            end += 1;
            iter.next();
        }
        match end - start {
            0 => parts.push(start.to_string()),
            1 => parts.push(format!("{start},{end}")),
            _ => parts.push(format!("{start}-{end}")),
        }
    }
    parts.join(",")
}

/// The completion index of a pod (annotation, else label), if it has a valid one.
pub fn of_pod(pod: &Pod) -> Option<i32> {
    let from = |m: Option<&std::collections::BTreeMap<String, String>>| {
        m.and_then(|m| m.get(COMPLETION_INDEX)).and_then(|v| v.parse::<i32>().ok())
    };
    from(pod.metadata.annotations.as_ref())
        .or_else(|| from(pod.metadata.labels.as_ref()))
        .filter(|i| *i >= 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interval_notation_round_trips() {
        let set: BTreeSet<i32> = [0, 1, 2, 4, 6, 7].into_iter().collect();
        assert_eq!(format(&set), "0-2,4,6,7");
        assert_eq!(parse("0-2,4,6,7", 10), set);
        assert_eq!(parse("0-2,4,6,7", 5), [0, 1, 2, 4].into_iter().collect());
        assert_eq!(format(&BTreeSet::new()), "");
        assert!(parse("x,3-", 5).is_empty());
    }
}
