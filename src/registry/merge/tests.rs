//! Data-driven strategic merge patch cases (`testdata/cases.yaml`).

use serde::Deserialize;
use serde_json::Value;

use super::strategic_merge_patch;

#[derive(Deserialize)]
struct Case {
    name: String,
    /// `apiVersion/Kind`, e.g. `apps/v1/Deployment` or `v1/Pod`.
    kind: String,
    original: Value,
    patch: Value,
    expected: Option<Value>,
    /// The HTTP status the error maps to.
    error: Option<u16>,
}

#[test]
fn cases() {
    let cases: Vec<Case> =
        serde_norway::from_str(include_str!("testdata/cases.yaml")).expect("cases parse");
    assert!(cases.len() > 40);
    let mut failures = Vec::new();
    for case in &cases {
        let (api_version, kind) = case.kind.rsplit_once('/').expect("apiVersion/Kind");
        let got = strategic_merge_patch(api_version, kind, &case.original, &case.patch);
        match (&case.expected, case.error, got) {
            (Some(want), None, Ok(got)) if *want == got => {}
            (None, Some(status), Err(e)) if e.status_code() == status => {}
            (_, _, got) => failures.push(format!("{}: got {got:?}", case.name)),
        }
    }
    assert!(failures.is_empty(), "failing cases:\n{}", failures.join("\n"));
}

#[test]
fn original_is_not_modified_and_result_is_deterministic() {
    let original = serde_json::json!({"spec": {"containers": [{"name": "a"}, {"name": "b"}]}});
    let patch =
        serde_json::json!({"spec": {"containers": [{"name": "c"}, {"name": "b", "image": "x"}]}});
    let first = strategic_merge_patch("v1", "Pod", &original, &patch).expect("merges");
    let second = strategic_merge_patch("v1", "Pod", &original, &patch).expect("merges");
    assert_eq!(first, second);
    assert_eq!(original["spec"]["containers"].as_array().map(Vec::len), Some(2));
}
