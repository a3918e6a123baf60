//! The official Kubernetes Python client (`pip install kubernetes`) against a real skiff server:
//! runs tests/python/crud_watch.py with the kubeconfig skiff wrote (TLS verified with the
//! cluster CA, client-certificate auth): CRUD and patches on a ConfigMap and a Deployment and a
//! watch that sees ADDED, MODIFIED and DELETED. The Python package is required: without it the
//! test fails and says how to install it (`.ci/run` does).

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use skiff::testing::skiff_server::InProcessServer;

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/crud_watch.py");
const INSTALL_HINT: &str = "install the official Kubernetes Python client: \
     `python3 -m pip install kubernetes` (or `apt-get install python3-kubernetes`); \
     .ci/run installs it";

/// Runs the script against `kubeconfig`; returns (exit code, stdout, stderr).
async fn run_script(kubeconfig: &Path) -> (Option<i32>, String, String) {
    let child = tokio::process::Command::new("python3")
        .arg(SCRIPT)
        .arg(kubeconfig)
        .env("PYTHONUNBUFFERED", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot run python3 ({e}): install Python 3 and {INSTALL_HINT}")
        });
    let out = tokio::time::timeout(Duration::from_secs(180), child.wait_with_output())
        .await
        .expect("the Python client finished within 180 s")
        .expect("wait for python3");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_client_crud_patch_and_watch() {
    let server = InProcessServer::start().await.expect("server");
    let (code, stdout, stderr) = run_script(&server.kubeconfig).await;
    if stderr.contains("MISSING kubernetes module") {
        panic!("the Python `kubernetes` module is missing: {INSTALL_HINT}\n{stderr}");
    }
    assert_eq!(code, Some(0), "crud_watch.py failed\nstdout:\n{stdout}\nstderr:\n{stderr}");
    for line in [
        "ok TLS verification is on",
        "ok configmap strategic merge patch",
        "ok configmap merge patch",
        "ok configmap JSON patch",
        "ok configmap replace",
        "ok stale replace is a 409 (HTTP 409)",
        "ok deleted configmap is a 404 (HTTP 404)",
        "ok watch saw DELETED last",
        "ok deployment strategic merge merges env by name",
        "ok deployment scale subresource patch",
        "ok deployment replace",
        "ok deployment delete",
        "PASS",
    ] {
        assert!(stdout.lines().any(|l| l == line), "missing {line:?} in:\n{stdout}\n{stderr}");
    }
    let events: Vec<&str> = stdout.lines().filter(|l| l.starts_with("event ")).collect();
    assert_eq!(
        events,
        [
            "event ADDED py-config",
            "event MODIFIED py-config",
            "event MODIFIED py-config",
            "event MODIFIED py-config",
            "event MODIFIED py-config",
            "event DELETED py-config",
        ],
        "watch events in order"
    );
    server.stop().await.expect("stop");
}
