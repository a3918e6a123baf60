//! HorizontalPodAutoscalers across autoscaling/v1 and autoscaling/v2: a v2 object with several
//! metrics, behavior, current metrics and conditions read through v1 and written back unchanged
//! keeps all of it (carried in upstream's autoscaling.alpha.kubernetes.io annotations, which v2
//! never shows). And `kubectl get hpa` (1.33) showing TARGETS for AverageValue metrics as
//! upstream prints them ("cpu: 250m/500m").

use std::path::Path;

use serde_json::{json, Value};
use skiff::testing::skiff_server::{request, run_kubectl, InProcessServer, RawResponse};

const KUBECTL: &str = "/usr/lib/google-cloud-sdk/bin/kubectl.1.33";

const V1: &str = "/apis/autoscaling/v1/namespaces/default/horizontalpodautoscalers";
const V2: &str = "/apis/autoscaling/v2/namespaces/default/horizontalpodautoscalers";

async fn send(
    client: &kube::Client,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> RawResponse {
    let bytes = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
    let headers = [("content-type", "application/json"), ("accept", "application/json")];
    let r = request(client, method, path, &headers, bytes).await.expect("request is answered");
    assert!(r.status < 300, "{method} {path}: {} {}", r.status, r.body);
    r
}

fn metrics() -> Value {
    json!([
        {"type": "Resource", "resource": {"name": "memory", "target": {"type": "AverageValue", "averageValue": "500Mi"}}},
        {"type": "Pods", "pods": {"metric": {"name": "packets-per-second"}, "target": {"type": "AverageValue", "averageValue": "1k"}}},
        {"type": "Object", "object": {
            "describedObject": {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "name": "main-route"},
            "metric": {"name": "requests-per-second", "selector": {"matchLabels": {"verb": "GET"}}},
            "target": {"type": "Value", "value": "10k"}}},
        {"type": "External", "external": {"metric": {"name": "queue-length"}, "target": {"type": "AverageValue", "averageValue": "30"}}},
        {"type": "ContainerResource", "containerResource": {"name": "cpu", "container": "app", "target": {"type": "Utilization", "averageUtilization": 60}}},
        {"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 50}}},
    ])
}

fn behavior() -> Value {
    json!({
        "scaleUp": {"stabilizationWindowSeconds": 0, "selectPolicy": "Max",
                    "policies": [{"type": "Pods", "value": 4, "periodSeconds": 15},
                                 {"type": "Percent", "value": 100, "periodSeconds": 15}]},
        "scaleDown": {"stabilizationWindowSeconds": 300, "selectPolicy": "Min",
                      "policies": [{"type": "Percent", "value": 10, "periodSeconds": 60}]},
    })
}

fn annotations(obj: &Value) -> Value {
    obj.pointer("/metadata/annotations").cloned().unwrap_or(Value::Null)
}

/// A server without the controllers: no HPA controller writes status behind the test's back.
async fn api_only() -> InProcessServer {
    InProcessServer::start_with(|c| c.components = None).await.expect("server starts")
}

#[tokio::test]
async fn v2_fields_survive_a_v1_read_and_write_back() {
    let server = api_only().await;
    let c = &server.client;
    let hpa = json!({
        "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "web", "annotations": {"team": "payments"}},
        "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
                 "minReplicas": 2, "maxReplicas": 10, "metrics": metrics(), "behavior": behavior()},
    });
    send(c, "POST", V2, Some(&hpa)).await;
    let mut created = send(c, "GET", &format!("{V2}/web"), None).await.json();
    assert_eq!(created["spec"]["metrics"], metrics());
    assert_eq!(created["spec"]["behavior"], behavior());

    // Status as the controller would write it.
    created["status"] = json!({
        "currentReplicas": 3, "desiredReplicas": 3,
        "currentMetrics": [
            {"type": "Resource", "resource": {"name": "memory", "current": {"averageValue": "300Mi"}}},
            {"type": "Pods", "pods": {"metric": {"name": "packets-per-second"}, "current": {"averageValue": "250"}}},
            {"type": "Resource", "resource": {"name": "cpu", "current": {"averageValue": "120m", "averageUtilization": 40}}},
        ],
        "conditions": [{"type": "AbleToScale", "status": "True", "reason": "ReadyForNewScale",
                        "message": "recommended size matches current size",
                        "lastTransitionTime": "2025-01-01T00:00:00Z"}],
    });
    let before = send(c, "PUT", &format!("{V2}/web/status"), Some(&created)).await.json();

    // Read through v1: the CPU target is a field, the rest are annotations.
    let v1 = send(c, "GET", &format!("{V1}/web"), None).await.json();
    assert_eq!(v1["apiVersion"], "autoscaling/v1");
    assert_eq!(v1["spec"]["targetCPUUtilizationPercentage"], 50);
    assert_eq!(v1["status"]["currentCPUUtilizationPercentage"], 40);
    let notes = annotations(&v1);
    assert_eq!(notes["team"], "payments");
    for key in ["metrics", "current-metrics", "conditions", "behavior"] {
        let key = format!("autoscaling.alpha.kubernetes.io/{key}");
        let text = notes[&key].as_str().unwrap_or_else(|| panic!("{key} in {notes}"));
        assert!(serde_json::from_str::<Value>(text).is_ok(), "{key} holds JSON: {text}");
    }

    // Write the v1 object back unchanged, then read through v2.
    send(c, "PUT", &format!("{V1}/web"), Some(&v1)).await;
    let after = send(c, "GET", &format!("{V2}/web"), None).await.json();
    assert_eq!(after["spec"]["metrics"], metrics());
    assert_eq!(after["spec"]["behavior"], behavior());
    assert_eq!(after["spec"], before["spec"]);
    assert_eq!(annotations(&after), json!({"team": "payments"}), "no round-trip annotation leaks");
    assert_eq!(after["status"]["conditions"], before["status"]["conditions"]);
    assert_eq!(after["status"]["currentMetrics"], before["status"]["currentMetrics"]);

    // A v1 list shows the same annotations; a v2 list none of them.
    let list = send(c, "GET", V2, None).await.json();
    assert_eq!(annotations(&list["items"][0]), json!({"team": "payments"}));
    let list = send(c, "GET", V1, None).await.json();
    assert!(annotations(&list["items"][0])
        .get("autoscaling.alpha.kubernetes.io/metrics")
        .is_some());
}

#[tokio::test]
async fn v2_writes_drop_round_trip_annotations() {
    let server = api_only().await;
    let c = &server.client;
    let hpa = json!({
        "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "api", "annotations": {
            "autoscaling.alpha.kubernetes.io/metrics": "[{\"type\":\"Pods\",\"pods\":{\"metricName\":\"x\",\"targetAverageValue\":\"1\"}}]",
            "autoscaling.alpha.kubernetes.io/behavior": "{\"ScaleUp\":null,\"ScaleDown\":null}"}},
        "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "api"}, "maxReplicas": 3,
                 "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 70}}}]},
    });
    let created = send(c, "POST", V2, Some(&hpa)).await.json();
    assert_eq!(annotations(&created), Value::Null);
    let v1 = send(c, "GET", &format!("{V1}/api"), None).await.json();
    assert_eq!(v1["spec"]["targetCPUUtilizationPercentage"], 70);
    assert_eq!(annotations(&v1), Value::Null, "only the CPU target: nothing to carry");
}

#[tokio::test]
async fn v1_writes_keep_their_target_and_default_it() {
    let server = api_only().await;
    let c = &server.client;
    let hpa = json!({
        "apiVersion": "autoscaling/v1", "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "plain"},
        "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "plain"}, "maxReplicas": 4},
    });
    send(c, "POST", V1, Some(&hpa)).await;
    let v2 = send(c, "GET", &format!("{V2}/plain"), None).await.json();
    let cpu80 = json!([{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}}}]);
    assert_eq!(v2["spec"]["metrics"], cpu80);
    let v1 = send(c, "GET", &format!("{V1}/plain"), None).await.json();
    assert_eq!(v1["spec"]["targetCPUUtilizationPercentage"], 80);
}

#[tokio::test]
async fn kubectl_get_hpa_prints_average_value_targets() {
    let server = api_only().await;
    let c = &server.client;
    let hpa = json!({
        "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "avg"},
        "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "avg"},
                 "maxReplicas": 5, "metrics": [
            {"type": "Resource", "resource": {"name": "cpu", "target": {"type": "AverageValue", "averageValue": "500m"}}},
            {"type": "Pods", "pods": {"metric": {"name": "packets-per-second"}, "target": {"type": "AverageValue", "averageValue": "1k"}}},
            {"type": "External", "external": {"metric": {"name": "queue-length"}, "target": {"type": "Value", "value": "30"}}},
        ]},
    });
    let mut created = send(c, "POST", V2, Some(&hpa)).await.json();
    created["status"] = json!({"currentReplicas": 1, "desiredReplicas": 1, "currentMetrics": [
        {"type": "Resource", "resource": {"name": "cpu", "current": {"averageValue": "250m"}}},
        {"type": "Pods", "pods": {"metric": {"name": "packets-per-second"}, "current": {"averageValue": "250"}}},
    ]});
    send(c, "PUT", &format!("{V2}/avg/status"), Some(&created)).await;

    // The Table the server renders (what every kubectl prints).
    let table = send_table(c, &format!("{V2}/avg")).await;
    assert_eq!(table["rows"][0]["cells"][2], "cpu: 250m/500m, 250/1k + 1 more...", "{table}");

    if !Path::new(KUBECTL).exists() {
        eprintln!("{KUBECTL} not installed; skipping the kubectl part");
        return;
    }
    let out = run_kubectl(Path::new(KUBECTL), &server.kubeconfig, &["get", "hpa", "avg"])
        .await
        .expect("kubectl runs");
    assert!(out.success(), "{}", out.stderr);
    assert!(out.stdout.contains("cpu: 250m/500m, 250/1k + 1 more..."), "{}", out.stdout);
    assert!(!out.stdout.contains("<unknown>"), "{}", out.stdout);
}

async fn send_table(client: &kube::Client, path: &str) -> Value {
    let accept = "application/json;as=Table;v=v1;g=meta.k8s.io";
    let r = request(client, "GET", path, &[("accept", accept)], Vec::new())
        .await
        .expect("request is answered");
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()
}
