//! Entry points for the cargo-fuzz targets under `fuzz/`: each takes raw fuzzer bytes and runs
//! them through the same code a request takes (body decoding, patches, selectors), so a panic
//! found there is a panic a client could cause. Not used by the server itself.
//!
//! Inputs start with header bytes that pick the resource and the format; the rest is the
//! payload. None of these functions may panic on any input.

use serde_json::{json, Value};

use crate::apiserver::handlers::decode::{decode_object, FieldValidation};
use crate::apiserver::handlers::patch::apply_patch;
use crate::apiserver::request::{parse_body, BodyFormat};
use crate::registry::catalog::{catalog, ResourceInfo};
use crate::registry::meta;
use crate::registry::options::check_body;
use crate::registry::selector::{FieldSelector, LabelSelector};
use crate::registry::strategy::Ctx;

/// A create or update body: `[resource, format, body...]`. Parses it as JSON, YAML or protobuf,
/// checks it against the URL's resource, decodes it through its type under every
/// fieldValidation mode, then defaults, prepares and validates it as a create and as an update,
/// and renders its table cells.
pub fn decode_body(data: &[u8]) {
    let [r, f, body @ ..] = data else { return };
    let res = resource(*r);
    let format = match f % 3 {
        0 => BodyFormat::Json,
        1 => BodyFormat::Yaml,
        _ => BodyFormat::Protobuf,
    };
    let Ok(mut value) = parse_body(body, format) else { return };
    let namespace = res.namespaced.then_some("default");
    let name = object_name(&value);
    if check_body(res, namespace, name.as_deref(), &mut value).is_err() {
        return;
    }
    let mut decoded = None;
    for validation in [FieldValidation::Strict, FieldValidation::Warn, FieldValidation::Ignore] {
        if let Ok((obj, _)) = decode_object(res, value.clone(), validation) {
            decoded = Some(obj);
        }
    }
    if let Some(obj) = decoded {
        exercise_strategy(res, obj, None);
    }
}

/// A patch: `[resource, format, current... 0xff patch...]`. `current` is the stored object (a
/// minimal object of the resource when it is not a JSON object); the patch is a JSON patch, a
/// merge patch or a strategic merge patch, applied as the PATCH handler does, and the result
/// is decoded and validated as an update.
pub fn patch(data: &[u8]) {
    let [r, f, rest @ ..] = data else { return };
    let res = resource(*r);
    let format = match f % 3 {
        0 => BodyFormat::JsonPatch,
        1 => BodyFormat::MergePatch,
        _ => BodyFormat::StrategicMergePatch,
    };
    let (current, patch) = match rest.iter().position(|b| *b == 0xff) {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (&[][..], rest),
    };
    let current = serde_json::from_slice::<Value>(current)
        .ok()
        .filter(Value::is_object)
        .unwrap_or_else(|| minimal_object(res));
    let Ok(patch) = parse_body(patch, format) else { return };
    let Ok(patched) = apply_patch(&res.api_version(), res.kind, format, &current, &patch) else {
        return;
    };
    if let Ok((obj, _)) = decode_object(res, patched, FieldValidation::Warn) {
        exercise_strategy(res, obj, Some(&current));
    }
}

/// A selector: the input as a labelSelector and as a fieldSelector query value (and as a
/// metav1.LabelSelector when it is JSON). Whatever parses must print as something that parses
/// back and prints the same, and must be matchable against an object.
pub fn selectors(data: &[u8]) {
    let input = String::from_utf8_lossy(data);
    let obj = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "web-0", "namespace": "default",
                      "labels": {"app": "web", "tier": "front", "n": "7"}},
        "spec": {"nodeName": "node-1"},
        "status": {"phase": "Running"},
    });
    if let Ok(sel) = LabelSelector::parse(&input) {
        // Printing sorts the requirements (as upstream); what it prints parses back to the same.
        let printed = sel.to_string();
        let again = LabelSelector::parse(&printed).map(|s| s.to_string());
        assert_eq!(
            again.as_deref().ok(),
            Some(printed.as_str()),
            "{input:?} printed as {printed:?}"
        );
        sel.matches(&[("app", "web"), ("n", "7")]);
        sel.matches_object(&obj);
    }
    if let Ok(sel) = FieldSelector::parse(&input) {
        sel.matches(|field| crate::registry::object::path(&obj, field).map(|v| v.to_string()));
        for r in &sel.requirements {
            sel.exact(&r.field);
        }
    }
    if let Ok(value) = serde_json::from_slice::<Value>(data) {
        if let Ok(sel) = LabelSelector::from_metav1(Some(&value)) {
            sel.matches_object(&obj);
            let _ = LabelSelector::parse(&sel.to_string());
        }
    }
}

/// The resource a header byte picks.
fn resource(byte: u8) -> &'static ResourceInfo {
    let all = &catalog().resources;
    &all[byte as usize % all.len()]
}

fn object_name(obj: &Value) -> Option<String> {
    obj.get("metadata")?.get("name")?.as_str().map(str::to_string)
}

fn minimal_object(res: &ResourceInfo) -> Value {
    let mut meta = json!({"name": "fuzz", "resourceVersion": "7", "uid": "u"});
    if res.namespaced {
        meta["namespace"] = json!("default");
    }
    json!({"apiVersion": res.api_version(), "kind": res.kind, "metadata": meta})
}

/// Runs what the registry does to a decoded object on create (or on update, given the old
/// object), and renders its table row.
fn exercise_strategy(res: &ResourceInfo, mut obj: Value, old: Option<&Value>) {
    let strategy = &res.strategy;
    let ctx = Ctx { user: None, dry_run: true };
    strategy.default(&mut obj);
    match old {
        None => {
            meta::init_for_create(&mut obj, strategy.tracks_generation().unwrap_or(true));
            strategy.prepare_for_create(&ctx, &mut obj);
            meta::validate_create(res, strategy.name_rule(), &obj);
            strategy.validate(&obj);
        }
        Some(old) => {
            let mut old = old.clone();
            strategy.default(&mut old);
            meta::carry_over_for_update(&mut obj, &old);
            strategy.prepare_for_update(&ctx, &mut obj, &old);
            meta::validate_update(&obj, &old);
            strategy.validate_update(&obj, &old);
            strategy.prepare_for_status_update(&mut obj, &old);
            strategy.validate_status_update(&obj, &old);
        }
    }
    for column in strategy.columns() {
        (column.cell)(&obj);
    }
    for field in strategy.field_labels() {
        strategy.field_value(&obj, field);
    }
}

/// Seed inputs for each target (the committed fuzz/seeds/ are written from these by the ignored
/// test `fuzzing::tests::write_seeds`): typical bodies, patches and selectors.
pub fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    let index = |plural: &str| {
        catalog().resources.iter().position(|r| r.plural == plural).unwrap_or(0) as u8
    };
    let (cm, deploy, pod, svc) =
        (index("configmaps"), index("deployments"), index("pods"), index("services"));
    let with = |header: [u8; 2], body: &str| {
        let mut v = header.to_vec();
        v.extend_from_slice(body.as_bytes());
        v
    };
    let deployment = r#"{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"web","namespace":"default","labels":{"app":"web"}},"spec":{"replicas":2,"selector":{"matchLabels":{"app":"web"}},"template":{"metadata":{"labels":{"app":"web"}},"spec":{"containers":[{"name":"web","image":"nginx","ports":[{"containerPort":80}],"env":[{"name":"A","value":"1"}],"resources":{"limits":{"cpu":"500m","memory":"128Mi"}}}]}}}}"#;
    let pod_json = r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p","namespace":"default"},"spec":{"containers":[{"name":"c","image":"busybox","command":["sleep","1"]}],"tolerations":[{"key":"k","operator":"Exists"}]}}"#;
    let service = r#"{"apiVersion":"v1","kind":"Service","metadata":{"name":"s","namespace":"default"},"spec":{"ports":[{"port":80,"targetPort":8080,"protocol":"TCP"}],"selector":{"app":"web"}}}"#;
    let patch_with = |header: [u8; 2], current: &str, patch: &str| {
        let mut v = header.to_vec();
        v.extend_from_slice(current.as_bytes());
        v.push(0xff);
        v.extend_from_slice(patch.as_bytes());
        v
    };
    vec![
        ("decode_body", with([cm, 0], r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"a","namespace":"default","labels":{"x":"y"}},"data":{"k":"v"}}"#)),
        ("decode_body", with([cm, 1], "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\ndata:\n  k: v\n")),
        ("decode_body", with([deploy, 0], deployment)),
        ("decode_body", with([deploy, 1], "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec:\n  selector: {matchLabels: {app: web}}\n  template:\n    metadata: {labels: {app: web}}\n    spec:\n      containers: [{name: web, image: nginx}]\n")),
        ("decode_body", with([pod, 0], pod_json)),
        ("decode_body", with([svc, 0], service)),
        ("patch", patch_with([deploy, 2], deployment, r#"{"spec":{"template":{"spec":{"containers":[{"name":"web","image":"nginx:2","env":[{"name":"B","value":"2"}]}]}}}}"#)),
        ("patch", patch_with([deploy, 2], deployment, r#"{"spec":{"template":{"spec":{"containers":[{"name":"web","$patch":"delete"}],"$setElementOrder/containers":[{"name":"web"}]}}},"metadata":{"labels":{"$patch":"replace","b":"c"}}}"#)),
        ("patch", patch_with([deploy, 1], deployment, r#"{"metadata":{"labels":{"app":null,"new":"1"}},"spec":{"replicas":3}}"#)),
        ("patch", patch_with([deploy, 0], deployment, r#"[{"op":"replace","path":"/spec/replicas","value":5},{"op":"add","path":"/metadata/annotations","value":{"a":"b"}},{"op":"test","path":"/spec/replicas","value":5},{"op":"move","from":"/metadata/annotations","path":"/metadata/labels"}]"#)),
        ("patch", patch_with([pod, 2], pod_json, r#"{"spec":{"$retainKeys":["containers"],"containers":[{"name":"c","image":"busybox:2"}],"tolerations":[{"key":"k2","operator":"Exists"}]}}"#)),
        ("patch", patch_with([svc, 2], service, r#"{"spec":{"ports":[{"port":443,"protocol":"TCP","targetPort":8443}]}}"#)),
        ("selectors", b"app=web,tier!=back".to_vec()),
        ("selectors", b"env in (prod, staging),!canary,version notin (1,2),n>5,n<9,app".to_vec()),
        ("selectors", b"metadata.name=web-0,spec.nodeName!=node-2,status.phase==Running".to_vec()),
        ("selectors", br#"{"matchLabels":{"app":"web"},"matchExpressions":[{"key":"tier","operator":"In","values":["front"]},{"key":"x","operator":"DoesNotExist"}]}"#.to_vec()),
        ("selectors", b"example.com/role=a.b-c_d,!k8s.io/x".to_vec()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every seed runs cleanly, and the fuzz inputs that parse reach the deeper code.
    #[test]
    fn seeds_run_cleanly() {
        for (target, input) in seeds() {
            match target {
                "decode_body" => decode_body(&input),
                "patch" => patch(&input),
                _ => selectors(&input),
            }
        }
        decode_body(b"");
        patch(&[0, 0, 0xff]);
        selectors(&[0xff, b'=']);
    }

    /// Found by fuzzing: a JSON patch whose `move` fails half-way made json-patch's undo panic.
    #[test]
    fn failed_json_patch_move_is_an_error() {
        let deploy = catalog().resources.iter().find(|r| r.plural == "deployments").unwrap();
        let current = minimal_object(deploy);
        let ops = json!([
            {"op": "add", "path": "/metadata/annotations", "value": {"a": "b"}},
            {"op": "move", "from": "/metadata/annotations", "path": "/nowhere/labels"},
        ]);
        let err = apply_patch("apps/v1", "Deployment", BodyFormat::JsonPatch, &current, &ops)
            .expect_err("the move fails");
        assert_eq!(err.code, 422);
    }

    /// The committed seeds under fuzz/seeds/TARGET/seed-N are exactly [`seeds`]. After
    /// changing [`seeds`], rewrite them with `SKIFF_WRITE_SEEDS=1 cargo test --lib seeds_`.
    #[test]
    fn seeds_are_committed() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds");
        let write = std::env::var_os("SKIFF_WRITE_SEEDS").is_some();
        for (n, (target, input)) in seeds().into_iter().enumerate() {
            let file = root.join(target).join(format!("seed-{n:02}"));
            if write {
                std::fs::create_dir_all(file.parent().unwrap()).unwrap();
                std::fs::write(&file, &input).unwrap();
            }
            let committed = std::fs::read(&file)
                .unwrap_or_else(|e| panic!("{}: {e} (write the seeds, see above)", file.display()));
            assert_eq!(committed, input, "{} is out of date", file.display());
        }
    }
}
