//! Element identity and ordering for merged lists: which elements are "the same" (by merge key
//! for objects, by value for scalars), and the order a merged list ends up in. Patch elements
//! keep the order the patch (or `$setElementOrder`) gives them, server-only elements keep their
//! live order, and the two are interleaved by live order where both sides know an element.

use std::collections::{HashMap, HashSet};

use serde_json::Value;

use super::MergeError;

/// A hashable identity for a scalar (or any value): numbers compare numerically.
pub fn identity(value: &Value) -> String {
    match value {
        Value::Null => "null".into(),
        Value::Bool(b) => format!("b:{b}"),
        Value::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(i), _, _) => format!("n:{i}"),
            (_, Some(u), _) => format!("n:{u}"),
            (_, _, Some(f)) if f.fract() == 0.0 && f.abs() < 9.0e15 => format!("n:{}", f as i64),
            (_, _, Some(f)) => format!("n:{f}"),
            _ => format!("n:{n}"),
        },
        Value::String(s) => format!("s:{s}"),
        other => format!("j:{other}"),
    }
}

/// How list elements are identified.
#[derive(Debug, Clone, Copy)]
pub enum Identify<'a> {
    /// Objects, by the value of their merge key.
    ByKey(&'a str),
    /// Scalars, by value.
    ByValue,
}

impl Identify<'_> {
    /// The identity of an element, or `None` when an object lacks its merge key.
    pub fn of(&self, element: &Value) -> Option<String> {
        match self {
            Identify::ByKey(key) => element.as_object()?.get(*key).map(identity),
            Identify::ByValue => Some(identity(element)),
        }
    }

    /// The identity of an element; an object without its merge key is an error.
    pub fn require(&self, element: &Value) -> Result<String, MergeError> {
        self.of(element).ok_or_else(|| missing_merge_key(element, self.key()))
    }

    fn key(&self) -> &str {
        match self {
            Identify::ByKey(key) => key,
            Identify::ByValue => "",
        }
    }
}

/// The error for a list element that lacks its merge key.
pub fn missing_merge_key(element: &Value, key: &str) -> MergeError {
    MergeError::Invalid(format!("map: {element} does not contain declared merge key: {key}"))
}

/// Position of each identity in `order` (first occurrence wins).
pub fn positions(order: &[Value], how: Identify) -> Result<HashMap<String, usize>, MergeError> {
    let mut out = HashMap::with_capacity(order.len());
    for (i, item) in order.iter().enumerate() {
        out.entry(how.require(item)?).or_insert(i);
    }
    Ok(out)
}

/// Removes repeated scalars, keeping the first occurrence.
pub fn dedup_scalars(items: Vec<Value>) -> Vec<Value> {
    let mut seen = HashSet::new();
    items.into_iter().filter(|v| seen.insert(identity(v))).collect()
}

/// Splits `items` into those whose identity appears in `by` and the rest, keeping order.
pub fn partition(
    items: Vec<Value>,
    by: &[Value],
    how: Identify,
) -> Result<(Vec<Value>, Vec<Value>), MergeError> {
    let present = positions(by, how)?;
    let mut inside = Vec::new();
    let mut outside = Vec::new();
    for item in items {
        if present.contains_key(&how.require(&item)?) {
            inside.push(item);
        } else {
            outside.push(item);
        }
    }
    Ok((inside, outside))
}

/// The final order of a merged list: `patch_items` sorted by `patch_order`, `server_only`
/// sorted by `server_order`, then interleaved by `server_order` where both are known.
pub fn normalize(
    patch_items: Vec<Value>,
    server_only: Vec<Value>,
    patch_order: &[Value],
    server_order: &[Value],
    how: Identify,
) -> Result<Vec<Value>, MergeError> {
    let patch_items = sort_by_order(patch_items, patch_order, how)?;
    let server_only = sort_by_order(server_only, server_order, how)?;
    let live = positions(server_order, how)?;
    let rank = |v: &Value| how.of(v).and_then(|id| live.get(&id).copied());
    let mut out = Vec::with_capacity(patch_items.len() + server_only.len());
    let mut left = server_only.into_iter().peekable();
    let mut right = patch_items.into_iter().peekable();
    loop {
        let take_left = match (left.peek(), right.peek()) {
            (None, None) => break,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            // A server-only element goes first only when the live list puts it before the
            // patch element; a patch element the live list does not know goes first.
            (Some(l), Some(r)) => matches!((rank(l), rank(r)), (Some(a), Some(b)) if a < b),
        };
        let next = if take_left { left.next() } else { right.next() };
        out.extend(next);
    }
    Ok(out)
}

/// Sorts `items` by their position in `order`, stably. Elements `order` does not know move to
/// the front, as upstream's comparison does.
fn sort_by_order(
    items: Vec<Value>,
    order: &[Value],
    how: Identify,
) -> Result<Vec<Value>, MergeError> {
    let at = positions(order, how)?;
    let mut ranked: Vec<(Option<usize>, Value)> = Vec::with_capacity(items.len());
    for item in items {
        let rank = at.get(&how.require(&item)?).copied();
        ranked.push((rank, item));
    }
    if ranked.iter().all(|(r, _)| r.is_some()) {
        ranked.sort_by_key(|(r, _)| *r);
    } else {
        // Insertion sort with upstream's "less": unknown elements always compare smaller.
        for i in 1..ranked.len() {
            let mut j = i;
            while j > 0 {
                let less = match (ranked[j].0, ranked[j - 1].0) {
                    (Some(a), Some(b)) => a < b,
                    _ => true,
                };
                if !less {
                    break;
                }
                ranked.swap(j, j - 1);
                j -= 1;
            }
        }
    }
    Ok(ranked.into_iter().map(|(_, v)| v).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn names(v: &[Value]) -> Vec<&str> {
        v.iter().filter_map(|e| e["name"].as_str()).collect()
    }

    #[test]
    fn numbers_compare_numerically() {
        assert_eq!(identity(&json!(80)), identity(&json!(80.0)));
        assert_ne!(identity(&json!(80)), identity(&json!("80")));
    }

    #[test]
    fn new_patch_elements_go_first() {
        let by = Identify::ByKey("name");
        let live = vec![json!({"name": "a"}), json!({"name": "b"})];
        let patch = vec![json!({"name": "c"})];
        let out = normalize(patch.clone(), live.clone(), &patch, &live, by).expect("ok");
        assert_eq!(names(&out), ["c", "a", "b"]);
    }

    #[test]
    fn interleaves_by_live_order() {
        let by = Identify::ByKey("name");
        let live = vec![json!({"name": "a"}), json!({"name": "b"}), json!({"name": "c"})];
        let patch_items = vec![json!({"name": "b"})];
        let server_only = vec![json!({"name": "a"}), json!({"name": "c"})];
        let out = normalize(patch_items.clone(), server_only, &patch_items, &live, by).expect("ok");
        assert_eq!(names(&out), ["a", "b", "c"]);
    }
}
