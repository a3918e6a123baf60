//! Stock kubectl (every version installed as kubectl.1.NN) against an in-process server:
//! discovery, apply (client- and server-side), tables, scale, label, field validation, delete.

use std::path::Path;

use skiff::testing::skiff_server::{
    kubectl_binaries, run_kubectl, InProcessServer, Kubectl, KubectlOutput,
};

const MANIFEST: &str = r#"
apiVersion: v1
kind: ConfigMap
metadata:
  name: cfg
data:
  a: "1"
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  labels:
    app: web
spec:
  replicas: 2
  selector:
    matchLabels:
      app: web
  template:
    metadata:
      labels:
        app: web
    spec:
      containers:
      - name: nginx
        image: nginx:1.25
        ports:
        - containerPort: 80
        resources:
          limits:
            cpu: 500m
            memory: 128Mi
---
apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  selector:
    app: web
  ports:
  - port: 80
    targetPort: 80
"#;

const UNKNOWN_FIELD: &str = r#"
apiVersion: v1
kind: ConfigMap
metadata:
  name: strict
data:
  a: "1"
spec:
  foo: bar
"#;

struct Run<'a> {
    kubectl: &'a Kubectl,
    kubeconfig: &'a Path,
}

impl Run<'_> {
    async fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args).await;
        assert!(
            out.success(),
            "kubectl {} {:?} failed:\n{}\n{}",
            self.kubectl.version,
            args,
            out.stdout,
            out.stderr
        );
        out.stdout
    }

    async fn run(&self, args: &[&str]) -> KubectlOutput {
        run_kubectl(&self.kubectl.path, self.kubeconfig, args).await.expect("kubectl runs")
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn kubectl_versions_work() {
    let binaries = kubectl_binaries();
    if binaries.is_empty() {
        eprintln!("no kubectl.1.NN binaries on PATH; skipping");
        return;
    }
    let server = InProcessServer::start().await.expect("server starts");
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("app.yaml");
    std::fs::write(&manifest, MANIFEST).unwrap();
    let strict = dir.path().join("strict.yaml");
    std::fs::write(&strict, UNKNOWN_FIELD).unwrap();
    let manifest = manifest.to_str().unwrap();
    for k in &binaries {
        let run = Run { kubectl: k, kubeconfig: &server.kubeconfig };
        let ns = format!("t{}", k.version.replace('.', "-"));
        let ns = ns.as_str();

        let out = run.ok(&["get", "namespaces"]).await;
        assert!(out.contains("kube-system") && out.contains("Active"), "{out}");
        let out = run.ok(&["api-resources"]).await;
        assert!(
            out.contains("deployments") && out.contains("deploy") && out.contains("apps/v1"),
            "{out}"
        );

        run.ok(&["create", "namespace", ns]).await;
        let out = run.ok(&["-n", ns, "apply", "-f", manifest]).await;
        assert!(out.contains("deployment.apps/web created"), "{out}");
        let out = run.ok(&["-n", ns, "apply", "-f", manifest]).await;
        assert!(out.contains("deployment.apps/web unchanged"), "kubectl {}: {out}", k.version);

        let out = run.ok(&["-n", ns, "get", "deploy,svc,cm"]).await;
        assert!(
            out.contains("deployment.apps/web")
                && out.contains("service/web")
                && out.contains("configmap/cfg"),
            "{out}"
        );
        let out = run.ok(&["-n", ns, "get", "all"]).await;
        assert!(out.contains("deployment.apps/web") && out.contains("service/web"), "{out}");
        let out = run.ok(&["-n", ns, "get", "svc", "web", "-o", "wide"]).await;
        assert!(
            out.contains("10.43.") && out.contains("80/TCP") && out.contains("app=web"),
            "{out}"
        );

        let out = run.ok(&["-n", ns, "describe", "deploy", "web"]).await;
        assert!(out.contains("Replicas:") && out.contains("nginx:1.25"), "{out}");
        run.ok(&["-n", ns, "describe", "svc", "web"]).await;
        run.ok(&["-n", ns, "get", "events"]).await;
        run.ok(&["get", "pods", "-A", "-o", "wide"]).await;
        run.ok(&["-n", ns, "scale", "deploy", "web", "--replicas=3"]).await;
        let out =
            run.ok(&["-n", ns, "get", "deploy", "web", "-o", "jsonpath={.spec.replicas}"]).await;
        assert_eq!(out.trim(), "3");

        run.ok(&["-n", ns, "label", "cm", "cfg", "tier=front"]).await;
        let out = run.ok(&["-n", ns, "get", "cm", "-l", "tier=front", "-o", "name"]).await;
        assert_eq!(out.trim(), "configmap/cfg");
        run.ok(&["-n", ns, "annotate", "cm", "cfg", "note=hi"]).await;
        let out = run.ok(&["-n", ns, "get", "cm", "cfg", "-o", "yaml"]).await;
        assert!(out.contains("note: hi") && out.contains("tier: front"), "{out}");

        let bad = run.run(&["-n", ns, "create", "-f", strict.to_str().unwrap()]).await;
        assert!(!bad.success(), "strict create should fail");
        assert!(
            bad.stderr.contains("unknown field \"spec\""),
            "kubectl {}: {}",
            k.version,
            bad.stderr
        );

        let out = run
            .ok(&["-n", ns, "apply", "--server-side", "-f", manifest, "--force-conflicts"])
            .await;
        assert!(out.contains("serverside-applied"), "{out}");

        // Generators build typed objects (sent as protobuf by kubectl 1.32+).
        for args in [
            vec!["create", "configmap", "gen-cm", "--from-literal=a=b"],
            vec!["create", "secret", "generic", "gen-secret", "--from-literal=pw=s3cr3t"],
            vec![
                "create",
                "deployment",
                "gen-deploy",
                "--image=nginx:1.25",
                "--replicas=2",
                "--port=80",
            ],
            vec!["create", "service", "clusterip", "gen-svc", "--tcp=80:8080"],
            vec!["create", "serviceaccount", "gen-sa"],
            vec!["create", "job", "gen-job", "--image=busybox"],
            vec!["create", "cronjob", "gen-cj", "--image=busybox", "--schedule=*/5 * * * *"],
            vec!["create", "role", "gen-role", "--verb=get", "--resource=pods"],
            vec!["create", "rolebinding", "gen-rb", "--role=gen-role", "--user=alice"],
            vec!["create", "quota", "gen-quota", "--hard=pods=10"],
            vec![
                "create",
                "poddisruptionbudget",
                "gen-pdb",
                "--selector=app=web",
                "--min-available=1",
            ],
            vec!["create", "ingress", "gen-ing", "--rule=example.com/=gen-svc:80"],
        ] {
            let mut full = vec!["-n", ns];
            full.extend(args.iter().copied());
            let out = run.ok(&full).await;
            assert!(out.contains("created"), "kubectl {} {args:?}: {out}", k.version);
        }
        let out =
            run.ok(&["-n", ns, "get", "secret", "gen-secret", "-o", "jsonpath={.data.pw}"]).await;
        assert_eq!(out.trim(), "czNjcjN0");
        let out = run
            .ok(&["-n", ns, "get", "deploy", "gen-deploy", "-o", "jsonpath={.spec.replicas}"])
            .await;
        assert_eq!(out.trim(), "2");
        let out = run
            .ok(&[
                "-n",
                ns,
                "get",
                "job",
                "gen-job",
                "-o",
                "jsonpath={.spec.template.spec.restartPolicy}",
            ])
            .await;
        assert_eq!(out.trim(), "Never");
        let gen_ns = format!("{ns}-gen");
        run.ok(&["create", "namespace", &gen_ns]).await;
        run.ok(&["delete", "namespace", &gen_ns, "--wait=false"]).await;

        let out = run.ok(&["-n", ns, "delete", "cm", "cfg"]).await;
        assert!(out.contains("configmap \"cfg\" deleted"), "{out}");
        let out = run.run(&["-n", ns, "get", "cm", "cfg"]).await;
        assert!(
            out.stderr.contains("NotFound") || out.stderr.contains("not found"),
            "{}",
            out.stderr
        );
        run.ok(&["delete", "namespace", ns, "--wait=false"]).await;
    }
}
