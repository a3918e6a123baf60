//! The OpenAPI v3 documents as every stock kubectl found uses them: `kubectl explain`,
//! `kubectl create -f` and `kubectl apply -f` under default (server-side, detected from
//! /openapi/v3) field validation, and apply's strategic merge patch computation (kubectl 1.29+
//! reads merge keys from /openapi/v3), against an in-process server.

use std::path::Path;

use skiff::testing::skiff_server::{
    get, kubectl_binaries, run_kubectl, InProcessServer, KubectlOutput, TempDir,
};

fn deployment(name: &str, image: &str, env: &[(&str, &str)]) -> String {
    let env: String = env
        .iter()
        .map(|(k, v)| format!("        - name: {k}\n          value: \"{v}\"\n"))
        .collect();
    format!(
        "apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
  namespace: default
spec:
  replicas: 1
  selector:
    matchLabels:
      app: {name}
  strategy:
    type: RollingUpdate
  template:
    metadata:
      labels:
        app: {name}
    spec:
      containers:
      - name: web
        image: {image}
        env:
{env}      - name: sidecar
        image: busybox
"
    )
}

async fn kubectl(bin: &Path, kubeconfig: &Path, args: &[&str]) -> KubectlOutput {
    let out = run_kubectl(bin, kubeconfig, args).await.expect("kubectl runs");
    assert!(out.success(), "{} {}: {}\n{}", bin.display(), args.join(" "), out.stdout, out.stderr);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_explains_creates_and_applies_with_openapi_v3() {
    let binaries = kubectl_binaries();
    if binaries.is_empty() {
        eprintln!("no kubectl found: skipped");
        return;
    }
    let server = InProcessServer::start().await.expect("server starts");
    let index = get(&server.client, "/openapi/v3").await.expect("index");
    assert_eq!(index.status, 200, "{}", index.body);
    let dir = TempDir::new("openapi-kubectl").expect("temp dir");

    for k in &binaries {
        let bin = k.path.as_path();
        let kc = server.kubeconfig.as_path();
        let explained = kubectl(bin, kc, &["explain", "deployment.spec.strategy"]).await;
        assert!(explained.stdout.contains("rollingUpdate"), "{}", explained.stdout);
        assert!(explained.stdout.contains("Deployment"), "{}", explained.stdout);
        let explained = kubectl(bin, kc, &["explain", "pods.spec.containers.env"]).await;
        assert!(explained.stdout.contains("valueFrom"), "{}", explained.stdout);

        let name = format!("web-{}", k.version.replace('.', "-"));
        let file = dir.path().join(format!("{name}.yaml"));
        let file_arg = file.to_string_lossy().to_string();
        std::fs::write(&file, deployment(&name, "nginx:1", &[("A", "1")])).expect("write");
        kubectl(bin, kc, &["create", "-f", &file_arg]).await;
        kubectl(bin, kc, &["delete", "deployment", &name, "-n", "default"]).await;

        // apply, then apply a change: env merged by name, containers by name.
        kubectl(bin, kc, &["apply", "-f", &file_arg]).await;
        std::fs::write(&file, deployment(&name, "nginx:2", &[("A", "1"), ("B", "2")]))
            .expect("write");
        kubectl(bin, kc, &["apply", "-f", &file_arg]).await;
        std::fs::write(&file, deployment(&name, "nginx:3", &[("B", "2")])).expect("write");
        kubectl(bin, kc, &["apply", "-f", &file_arg]).await;

        let path = format!("/apis/apps/v1/namespaces/default/deployments/{name}");
        let live = get(&server.client, &path).await.expect("get").json();
        let containers = &live["spec"]["template"]["spec"]["containers"];
        assert_eq!(containers[0]["name"], "web", "{} {live}", k.version);
        assert_eq!(containers[0]["image"], "nginx:3", "{} {live}", k.version);
        assert_eq!(
            containers[0]["env"],
            serde_json::json!([{"name": "B", "value": "2"}]),
            "{} {live}",
            k.version
        );
        assert_eq!(containers[1]["name"], "sidecar", "{} {live}", k.version);
    }
    server.stop().await.expect("stops");
}
