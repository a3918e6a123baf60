//! `skiff agent` on "another machine" (a second process) joins a server with the join token,
//! verifying the server's CA by the token's hash; its simulated nodes run pods. Killing the agent
//! is a node loss, seen through real kubectl: the node goes NotReady with the unreachable
//! NoExecute taint and its pods are evicted once their toleration runs out (Terminating until a
//! node confirms, as upstream); a restarted agent brings the node back, finishes them, and the
//! replacements run. Bad tokens are refused.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use serde_json::json;
use skiff::controllers::cluster::wait_for;
use skiff::testing::skiff_server::{kubectl_binaries, run_kubectl, SkiffProcess, SpawnOptions};
use tokio::process::{Child, Command};

const SKIFF: &str = env!("CARGO_BIN_EXE_skiff");
/// Generous: the machine running the tests may be loaded.
const T: Duration = Duration::from_secs(90);

fn agent(url: &str, token: &str, extra: &[&str]) -> Command {
    let mut cmd = Command::new(SKIFF);
    cmd.args(["agent", "--server", url, "--token", token])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd
}

fn spawn_agent(url: &str, token: &str) -> Child {
    let extra =
        ["--simulate", "1", "--node-name-prefix", "remote-", "--node-lease-duration-seconds", "2"];
    agent(url, token, &extra).spawn().expect("agent starts")
}

/// Runs an agent that must fail; returns its stderr.
async fn failing_agent(url: &str, token: &str) -> String {
    let run = agent(url, token, &["--simulate", "1"]).output();
    let out = tokio::time::timeout(T, run).await.expect("agent ends").expect("agent runs");
    assert!(!out.status.success(), "the agent must refuse token {token}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_joins_with_the_token_and_killing_it_is_a_node_loss() {
    let kubectl = kubectl_binaries();
    let newest = kubectl.last().expect("kubectl binaries are installed").path.clone();
    let oldest = kubectl.first().expect("kubectl binaries are installed").path.clone();
    let args = ["--simulate-nodes", "1", "--node-monitor-grace-period", "3s"];
    let mut args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    args.extend(["--node-monitor-period".into(), "500ms".into()]);
    let server =
        SkiffProcess::spawn_with(Path::new(SKIFF), SpawnOptions { args, ..Default::default() })
            .await
            .expect("skiff starts");
    let url = format!("https://{}", server.addr);
    let token_path = server.data_dir.join("agent-token");
    let token = std::fs::read_to_string(&token_path).expect("the server wrote a join token");
    let token = token.trim().to_string();
    let k = |bin: &Path, args: &[&str]| {
        let (bin, kc) = (bin.to_path_buf(), server.kubeconfig.clone());
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            run_kubectl(&bin, &kc, &args).await.expect("kubectl runs")
        }
    };

    // Tokens that are not the server's are refused: a CA hash that does not match, and the
    // right hash with the wrong secret.
    let (hash, _) = token.split_once("::").expect("K10<hash>::<secret>");
    let stderr = failing_agent(&url, &format!("K10{}::node:x", "0".repeat(64))).await;
    assert!(stderr.contains("does not match the join token's hash"), "{stderr}");
    let stderr = failing_agent(&url, &format!("{hash}::node:wrong")).await;
    assert!(stderr.contains("Unauthorized") || stderr.contains("401"), "{stderr}");

    let mut remote = spawn_agent(&url, &token);
    wait_for(T, "the agent's node Ready", || async {
        let out = k(&oldest, &["get", "nodes", "--no-headers"]).await;
        out.stdout
            .lines()
            .any(|l| l.split_whitespace().take(2).eq(["remote-0", "Ready"]))
            .then_some(())
    })
    .await
    .expect("agent node registered");

    // Pods that must run on the agent's node and tolerate its loss for two seconds.
    let toleration = |key: &str| json!({"key": key, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 2});
    let deployment = json!({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {
                    "nodeSelector": {"kubernetes.io/hostname": "remote-0"},
                    "containers": [{"name": "c", "image": "nginx"}],
                    "tolerations": [toleration("node.kubernetes.io/unreachable"),
                                    toleration("node.kubernetes.io/not-ready")],
                },
            },
        },
    });
    let manifest = server.data_dir.join("web.json");
    std::fs::write(&manifest, deployment.to_string()).expect("write manifest");
    let out = k(&newest, &["apply", "-f", manifest.to_str().expect("utf-8 path")]).await;
    assert!(out.success(), "{}{}", out.stdout, out.stderr);
    let out = k(&newest, &["rollout", "status", "deployment/web", "--timeout=90s"]).await;
    assert!(out.success(), "{}{}", out.stdout, out.stderr);
    let pods_on_remote = || async {
        let out = k(&newest, &["get", "pods", "-l", "app=web", "-o", "wide", "--no-headers"]).await;
        out.stdout
            .lines()
            .filter(|l| l.split_whitespace().nth(6) == Some("remote-0"))
            .filter_map(|l| l.split_whitespace().next().map(str::to_string))
            .collect::<Vec<String>>()
    };
    let first = pods_on_remote().await;
    assert_eq!(first.len(), 2, "both pods on the agent's node: {first:?}");

    // The machine goes away.
    remote.start_kill().expect("kill the agent");
    remote.wait().await.expect("agent reaped");
    wait_for(T, "the lost node NotReady", || async {
        let out = k(&newest, &["get", "nodes", "--no-headers"]).await;
        out.stdout
            .lines()
            .any(|l| l.split_whitespace().take(2).eq(["remote-0", "NotReady"]))
            .then_some(())
    })
    .await
    .expect("node NotReady");
    wait_for(T, "the unreachable NoExecute taint", || async {
        let out = k(&newest, &["describe", "node", "remote-0"]).await;
        out.stdout.contains("node.kubernetes.io/unreachable:NoExecute").then_some(())
    })
    .await
    .expect("tainted");
    let evicted = wait_for(T, "both pods evicted", || async {
        let out =
            k(&newest, &["get", "events", "--field-selector", "reason=TaintManagerEviction"]).await;
        first
            .iter()
            .all(|p| out.stdout.contains(&format!("Marking for deletion Pod default/{p}")))
            .then_some(out.stdout)
    })
    .await
    .expect("eviction events");
    assert!(evicted.contains("TaintManagerEviction"), "{evicted}");
    // As upstream, they stay Terminating while nobody can confirm their end.
    wait_for(T, "the evicted pods terminating", || async {
        let out = k(&newest, &["get", "pods", "--no-headers"]).await;
        let terminating = |p: &String| {
            out.stdout.lines().any(|l| l.starts_with(p.as_str()) && l.contains("Terminating"))
        };
        first.iter().all(terminating).then_some(())
    })
    .await
    .expect("evicted pods terminating");

    // The machine comes back: its node is Ready again and the replacements run there.
    let mut back = spawn_agent(&url, &token);
    let out = k(&newest, &["rollout", "status", "deployment/web", "--timeout=90s"]).await;
    assert!(out.success(), "{}{}", out.stdout, out.stderr);
    let now = wait_for(T, "the evicted pods gone and two replacements", || async {
        let now = pods_on_remote().await;
        (now.len() == 2).then_some(now)
    })
    .await
    .expect("replacements");
    assert!(now.iter().all(|p| !first.contains(p)), "new pods: {now:?} vs {first:?}");
    back.start_kill().expect("stop the agent");
    let _ = back.wait().await;
}
