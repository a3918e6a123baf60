//! Pod spec defaulting and validation shared by pods and every workload's pod template, and
//! the table columns workloads share (CONTAINERS, IMAGES, SELECTOR).

use serde_json::{json, Value};

use crate::apiserver::status::StatusCause;
use crate::registry::object::{self, default_field};
use crate::registry::selector::LabelSelector;
use crate::registry::strategy::Column;
use crate::registry::validation::{self as v, dns1123_label};

/// Upstream's defaults for a pod spec (SetDefaults_PodSpec, containers, probes, volumes).
pub fn default_pod_spec(spec: &mut Value) {
    let Some(m) = spec.as_object_mut() else { return };
    default_field(m, "restartPolicy", json!("Always"));
    default_field(m, "dnsPolicy", json!("ClusterFirst"));
    default_field(m, "terminationGracePeriodSeconds", json!(30));
    default_field(m, "securityContext", json!({}));
    default_field(m, "schedulerName", json!("default-scheduler"));
    default_field(m, "enableServiceLinks", json!(true));
    for list in ["containers", "initContainers"] {
        if let Some(cs) = m.get_mut(list).and_then(Value::as_array_mut) {
            for c in cs {
                default_container(c);
            }
        }
    }
    if let Some(cs) = m.get_mut("ephemeralContainers").and_then(Value::as_array_mut) {
        for c in cs {
            if let Some(cm) = c.as_object_mut() {
                default_field(cm, "terminationMessagePath", json!("/dev/termination-log"));
                default_field(cm, "terminationMessagePolicy", json!("File"));
                let policy = pull_policy(cm.get("image").and_then(Value::as_str).unwrap_or(""));
                default_field(cm, "imagePullPolicy", json!(policy));
            }
        }
    }
    if let Some(vols) = m.get_mut("volumes").and_then(Value::as_array_mut) {
        for vol in vols {
            default_volume(vol);
        }
    }
}

/// The image pull policy upstream defaults to: Always for `:latest` or untagged images,
/// IfNotPresent otherwise.
pub fn pull_policy(image: &str) -> &'static str {
    if image.contains('@') {
        return "IfNotPresent";
    }
    let last = image.rsplit('/').next().unwrap_or(image);
    match last.split_once(':') {
        Some((_, "latest")) | None => "Always",
        Some(_) => "IfNotPresent",
    }
}

fn default_container(c: &mut Value) {
    let Some(m) = c.as_object_mut() else { return };
    default_field(m, "terminationMessagePath", json!("/dev/termination-log"));
    default_field(m, "terminationMessagePolicy", json!("File"));
    let policy = pull_policy(m.get("image").and_then(Value::as_str).unwrap_or(""));
    default_field(m, "imagePullPolicy", json!(policy));
    default_field(m, "resources", json!({}));
    if let Some(ports) = m.get_mut("ports").and_then(Value::as_array_mut) {
        for p in ports {
            if let Some(pm) = p.as_object_mut() {
                default_field(pm, "protocol", json!("TCP"));
            }
        }
    }
    if let Some(env) = m.get_mut("env").and_then(Value::as_array_mut) {
        for e in env {
            if let Some(fr) = e.pointer_mut("/valueFrom/fieldRef").and_then(Value::as_object_mut) {
                default_field(fr, "apiVersion", json!("v1"));
            }
        }
    }
    for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
        if let Some(p) = m.get_mut(probe).and_then(Value::as_object_mut) {
            default_field(p, "timeoutSeconds", json!(1));
            default_field(p, "periodSeconds", json!(10));
            default_field(p, "successThreshold", json!(1));
            default_field(p, "failureThreshold", json!(3));
            if let Some(h) = p.get_mut("httpGet").and_then(Value::as_object_mut) {
                default_field(h, "path", json!("/"));
                default_field(h, "scheme", json!("HTTP"));
            }
        }
    }
}

fn default_volume(vol: &mut Value) {
    let Some(m) = vol.as_object_mut() else { return };
    for source in ["secret", "configMap", "downwardAPI", "projected"] {
        if let Some(s) = m.get_mut(source).and_then(Value::as_object_mut) {
            default_field(s, "defaultMode", json!(420));
        }
    }
    if let Some(h) = m.get_mut("hostPath").and_then(Value::as_object_mut) {
        default_field(h, "type", json!(""));
    }
}

/// Defaults for a pod template: its spec as a pod's.
pub fn default_template(template: Option<&mut Value>) {
    if let Some(spec) = template.and_then(|t| t.get_mut("spec")) {
        default_pod_spec(spec);
    }
}

/// Validates a pod spec at `path` ("spec" or "spec.template.spec").
pub fn validate_pod_spec(spec: Option<&Value>, path: &str) -> Vec<StatusCause> {
    let mut out = vec![];
    let Some(spec) = spec else {
        out.push(v::required(path, ""));
        return out;
    };
    let volumes: Vec<&str> = spec
        .get("volumes")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(|x| x.get("name").and_then(Value::as_str)).collect())
        .unwrap_or_default();
    let mut seen = std::collections::HashSet::new();
    for (i, name) in volumes.iter().enumerate() {
        if !seen.insert(*name) {
            out.push(v::duplicate(&format!("{path}.volumes[{i}].name"), &json!(name)));
        }
    }
    let containers = spec.get("containers").and_then(Value::as_array);
    if containers.is_none_or(|c| c.is_empty()) {
        out.push(v::required(&format!("{path}.containers"), ""));
    }
    let mut names = std::collections::HashSet::new();
    for list in ["initContainers", "containers"] {
        for (i, c) in spec.get(list).and_then(Value::as_array).into_iter().flatten().enumerate() {
            let cpath = format!("{path}.{list}[{i}]");
            validate_container(c, &cpath, &volumes, &mut names, &mut out);
        }
    }
    if let Some(p) = spec.get("restartPolicy").and_then(Value::as_str) {
        if !["Always", "OnFailure", "Never"].contains(&p) {
            out.push(v::not_supported(
                &format!("{path}.restartPolicy"),
                &json!(p),
                &["Always", "Never", "OnFailure"],
            ));
        }
    }
    if let Some(p) = spec.get("dnsPolicy").and_then(Value::as_str) {
        let ok = ["ClusterFirstWithHostNet", "ClusterFirst", "Default", "None"];
        if !ok.contains(&p) {
            out.push(v::not_supported(&format!("{path}.dnsPolicy"), &json!(p), &ok));
        }
    }
    if let Some(g) = spec.get("terminationGracePeriodSeconds").and_then(Value::as_i64) {
        if g < 0 {
            out.push(v::invalid(
                &format!("{path}.terminationGracePeriodSeconds"),
                &json!(g),
                "must be greater than or equal to 0",
            ));
        }
    }
    out
}

fn validate_container(
    c: &Value,
    path: &str,
    volumes: &[&str],
    names: &mut std::collections::HashSet<String>,
    out: &mut Vec<StatusCause>,
) {
    let name = c.get("name").and_then(Value::as_str).unwrap_or("");
    if name.is_empty() {
        out.push(v::required(&format!("{path}.name"), ""));
    } else {
        for why in dns1123_label(name) {
            out.push(v::invalid(&format!("{path}.name"), &json!(name), &why));
        }
        if !names.insert(name.to_string()) {
            out.push(v::duplicate(&format!("{path}.name"), &json!(name)));
        }
    }
    if c.get("image").and_then(Value::as_str).unwrap_or("").trim().is_empty() {
        out.push(v::required(&format!("{path}.image"), ""));
    }
    if let Some(p) = c.get("imagePullPolicy").and_then(Value::as_str) {
        let ok = ["Always", "IfNotPresent", "Never"];
        if !ok.contains(&p) {
            out.push(v::not_supported(&format!("{path}.imagePullPolicy"), &json!(p), &ok));
        }
    }
    for (j, port) in c.get("ports").and_then(Value::as_array).into_iter().flatten().enumerate() {
        let n = port.get("containerPort").and_then(Value::as_i64).unwrap_or(0);
        if !(1..=65535).contains(&n) {
            out.push(v::invalid(
                &format!("{path}.ports[{j}].containerPort"),
                &json!(n),
                "must be between 1 and 65535, inclusive",
            ));
        }
        if let Some(p) = port.get("protocol").and_then(Value::as_str) {
            if !["TCP", "UDP", "SCTP"].contains(&p) {
                out.push(v::not_supported(
                    &format!("{path}.ports[{j}].protocol"),
                    &json!(p),
                    &["SCTP", "TCP", "UDP"],
                ));
            }
        }
    }
    for (j, m) in c.get("volumeMounts").and_then(Value::as_array).into_iter().flatten().enumerate()
    {
        let vname = m.get("name").and_then(Value::as_str).unwrap_or("");
        if !volumes.contains(&vname) {
            out.push(StatusCause {
                reason: "FieldValueNotFound".into(),
                message: format!("Not found: {vname:?}"),
                field: format!("{path}.volumeMounts[{j}].name"),
            });
        }
        if m.get("mountPath").and_then(Value::as_str).unwrap_or("").is_empty() {
            out.push(v::required(&format!("{path}.volumeMounts[{j}].mountPath"), ""));
        }
    }
}

/// Validates a workload's selector and pod template: the selector is required, non-empty and
/// must select the template's labels.
pub fn validate_selector_and_template(obj: &Value, out: &mut Vec<StatusCause>) {
    let sel = object::path(obj, "spec.selector");
    match LabelSelector::from_metav1(sel) {
        Ok(s) if s.is_empty() || s.nothing => {
            out.push(v::invalid(
                "spec.selector",
                sel.unwrap_or(&Value::Null),
                "empty selector is invalid for deployment",
            ));
        }
        Ok(s) => {
            let labels = object::string_map(object::path(obj, "spec.template.metadata.labels"));
            if !s.matches(&labels) {
                out.push(v::invalid(
                    "spec.template.metadata.labels",
                    object::path(obj, "spec.template.metadata.labels").unwrap_or(&Value::Null),
                    "`selector` does not match template `labels`",
                ));
            }
        }
        Err(e) => {
            out.push(v::invalid("spec.selector", sel.unwrap_or(&Value::Null), &e.to_string()))
        }
    }
    out.extend(validate_pod_spec(object::path(obj, "spec.template.spec"), "spec.template.spec"));
}

/// A non-negative integer field check.
pub fn non_negative(obj: &Value, path: &str, out: &mut Vec<StatusCause>) {
    if let Some(n) = object::path(obj, path).and_then(Value::as_i64) {
        if n < 0 {
            out.push(v::invalid(path, &json!(n), "must be greater than or equal to 0"));
        }
    }
}

/// The wide CONTAINERS column of a workload (template at `spec.template`).
pub const CONTAINERS: Column = Column::new("Containers", "string", 1, |o| {
    Value::from(template_containers(o).iter().map(|c| c.0.clone()).collect::<Vec<_>>().join(","))
});
/// The wide IMAGES column of a workload.
pub const IMAGES: Column = Column::new("Images", "string", 1, |o| {
    Value::from(template_containers(o).iter().map(|c| c.1.clone()).collect::<Vec<_>>().join(","))
});
/// The wide SELECTOR column of a workload.
pub const SELECTOR: Column = Column::new("Selector", "string", 1, |o| {
    let s = LabelSelector::from_metav1(object::path(o, "spec.selector"))
        .map(|s| s.to_string())
        .unwrap_or_default();
    Value::from(if s.is_empty() { "<none>".to_string() } else { s })
});

fn template_containers(o: &Value) -> Vec<(String, String)> {
    let spec = object::path(o, "spec.template.spec")
        .or_else(|| object::path(o, "spec.jobTemplate.spec.template.spec"));
    spec.and_then(|s| s.get("containers"))
        .and_then(Value::as_array)
        .map(|cs| {
            cs.iter()
                .map(|c| {
                    (
                        c.get("name").and_then(Value::as_str).unwrap_or("").to_string(),
                        c.get("image").and_then(Value::as_str).unwrap_or("").to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// An integer cell at a dotted path (0 when absent).
pub fn int_cell(o: &Value, path: &str) -> Value {
    Value::from(object::path(o, path).and_then(Value::as_i64).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pull_policy_follows_tag() {
        for (image, want) in [
            ("nginx", "Always"),
            ("nginx:latest", "Always"),
            ("nginx:1.25", "IfNotPresent"),
            ("registry:5000/app", "Always"),
            ("registry:5000/app:v1", "IfNotPresent"),
            ("app@sha256:abc", "IfNotPresent"),
        ] {
            assert_eq!(pull_policy(image), want, "{image}");
        }
    }

    #[test]
    fn pod_spec_defaults() {
        let mut spec = json!({"containers": [{"name": "c", "image": "nginx:1", "ports": [{"containerPort": 80}]}],
                              "volumes": [{"name": "s", "secret": {"secretName": "x"}}]});
        default_pod_spec(&mut spec);
        assert_eq!(spec["restartPolicy"], "Always");
        assert_eq!(spec["terminationGracePeriodSeconds"], 30);
        assert_eq!(spec["schedulerName"], "default-scheduler");
        assert_eq!(spec["containers"][0]["imagePullPolicy"], "IfNotPresent");
        assert_eq!(spec["containers"][0]["terminationMessagePath"], "/dev/termination-log");
        assert_eq!(spec["containers"][0]["ports"][0]["protocol"], "TCP");
        assert_eq!(spec["volumes"][0]["secret"]["defaultMode"], 420);
    }

    #[test]
    fn pod_spec_validation() {
        let spec = json!({"containers": [{"name": "c"}, {"name": "c", "image": "x", "volumeMounts": [{"name": "v", "mountPath": "/v"}]}]});
        let errs = validate_pod_spec(Some(&spec), "spec");
        let fields: Vec<&str> = errs.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            vec![
                "spec.containers[0].image",
                "spec.containers[1].name",
                "spec.containers[1].volumeMounts[0].name"
            ]
        );
    }
}
