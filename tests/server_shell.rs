//! The server shell driven from outside: the real binary on an ephemeral port, reached over TLS
//! verified with the cluster CA by kube-rs and by every stock kubectl found.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use skiff::testing::skiff_server::{
    client_for, get, kubectl_binaries, request, run_kubectl, Credentials, InProcessServer,
    SkiffProcess, SpawnOptions, TempDir, TestServerError,
};

const SKIFF: &str = env!("CARGO_BIN_EXE_skiff");

fn token_file(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("tokens.csv");
    std::fs::write(
        &path,
        "# token,user,uid,groups\nalice-token,alice,uid-alice,\"devs,ops\"\nroot-token,root,uid-root,system:masters\n",
    )
    .expect("write token file");
    path
}

fn status_of(body: &serde_json::Value) -> (&str, &str, i64) {
    (
        body["kind"].as_str().unwrap_or_default(),
        body["reason"].as_str().unwrap_or_default(),
        body["code"].as_i64().unwrap_or_default(),
    )
}

/// Valid semver 2.0: MAJOR.MINOR.PATCH[-prerelease][+build], no leading zeros in numbers.
fn is_semver(v: &str) -> bool {
    let v = v.split_once('+').map(|(a, _)| a).unwrap_or(v);
    let (core, pre) = match v.split_once('-') {
        Some((c, p)) => (c, Some(p)),
        None => (v, None),
    };
    let numeric_ok = |s: &str| {
        !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) && (s == "0" || !s.starts_with('0'))
    };
    let core_ok = core.split('.').count() == 3 && core.split('.').all(numeric_ok);
    let pre_ok = pre.is_none_or(|p| {
        p.split('.').all(|id| {
            !id.is_empty()
                && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && (!id.bytes().all(|b| b.is_ascii_digit()) || numeric_ok(id))
        })
    });
    core_ok && pre_ok
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_serves_health_auth_version_metrics_and_kubectl() {
    let extra = TempDir::new("shell-tokens").expect("temp dir");
    let tokens = token_file(extra.path());
    let mut server = SkiffProcess::spawn_with(
        Path::new(SKIFF),
        SpawnOptions {
            args: vec!["--token-auth-file".into(), tokens.display().to_string()],
            ..Default::default()
        },
    )
    .await
    .expect("skiff starts");
    let anon =
        client_for(&server.kubeconfig, Credentials::Anonymous).await.expect("anonymous client");
    let admin = server.client().await.expect("admin client");

    // Health endpoints need no credentials.
    for path in ["/readyz", "/livez", "/healthz", "/readyz/ping"] {
        let r = get(&anon, path).await.expect(path);
        assert_eq!((r.status, r.body.as_str()), (200, "ok"), "{path}");
    }
    let r = get(&anon, "/readyz?verbose").await.expect("verbose");
    assert!(
        r.body.contains("[+]ping ok") && r.body.ends_with("readyz check passed\n"),
        "{}",
        r.body
    );

    // Anything else needs credentials: 401 Status.
    let r = get(&anon, "/api/v1/namespaces").await.expect("anonymous list");
    assert_eq!(r.status, 401);
    assert_eq!(status_of(&r.json()), ("Status", "Unauthorized", 401), "{}", r.body);
    let wrong =
        client_for(&server.kubeconfig, Credentials::Token("nope".into())).await.expect("client");
    assert_eq!(get(&wrong, "/api/v1/namespaces").await.expect("bad token").status, 401);

    // A token from the token file authenticates; without system:masters, resources are forbidden.
    let alice = client_for(&server.kubeconfig, Credentials::Token("alice-token".into()))
        .await
        .expect("client");
    let r = get(&alice, "/api/v1/namespaces").await.expect("alice list");
    assert_eq!(r.status, 403, "{}", r.body);
    assert_eq!(status_of(&r.json()), ("Status", "Forbidden", 403));
    assert_eq!(
        r.json()["message"],
        "namespaces is forbidden: User \"alice\" cannot list resource \"namespaces\" in API group \"\" at the cluster scope"
    );
    let r = get(&alice, "/apis").await.expect("alice discovery");
    assert!(
        r.status != 401 && r.status != 403,
        "discovery is open to authenticated users: {}",
        r.status
    );
    let root = client_for(&server.kubeconfig, Credentials::Token("root-token".into()))
        .await
        .expect("client");
    assert_eq!(get(&root, "/metrics").await.expect("root metrics").status, 200);
    assert_eq!(get(&alice, "/metrics").await.expect("alice metrics").status, 403);

    // /version is public and shaped like upstream's.
    let r = get(&anon, "/version").await.expect("version");
    assert_eq!(r.status, 200);
    let v = r.json();
    assert_eq!((v["major"].as_str(), v["minor"].as_str()), (Some("1"), Some("33")));
    let git_version = v["gitVersion"].as_str().expect("gitVersion").to_string();
    assert!(git_version.starts_with("v1.33.0-skiff."), "{git_version}");
    assert!(is_semver(&git_version[1..]), "{git_version}");
    for field in ["buildDate", "goVersion", "compiler", "platform", "gitCommit", "gitTreeState"] {
        assert!(v[field].is_string(), "{field} missing: {v}");
    }

    // Bodies over 3 MiB are refused with a Status.
    let big = vec![b' '; 3 * 1024 * 1024 + 1];
    let r =
        request(&admin, "POST", "/api/v1/namespaces", &[("content-type", "application/json")], big)
            .await
            .expect("big body");
    assert_eq!(r.status, 413);
    assert_eq!(status_of(&r.json()), ("Status", "RequestEntityTooLarge", 413));

    // Large complete bodies are gzipped for clients that ask.
    let r = request(&admin, "GET", "/metrics", &[("accept-encoding", "gzip")], Vec::new())
        .await
        .expect("gzip");
    assert_eq!(r.headers.get("content-encoding").and_then(|v| v.to_str().ok()), Some("gzip"));

    // A watch, if the API serves it yet, shows in the long-running gauge while open.
    let watch = tokio::time::timeout(
        Duration::from_secs(2),
        request(&admin, "GET", "/api/v1/namespaces?watch=true&timeoutSeconds=1", &[], Vec::new()),
    )
    .await;
    let watched = matches!(watch, Ok(Ok(ref r)) if r.status == 200);

    let metrics = get(&admin, "/metrics").await.expect("metrics");
    assert_eq!(metrics.status, 200);
    let mut names = vec![
        "apiserver_request_total{",
        "apiserver_request_duration_seconds_bucket{",
        "apiserver_current_inflight_requests{",
        "skiff_store_revision",
        "process_resident_memory_bytes",
    ];
    if watched {
        names.push("apiserver_longrunning_requests{");
    }
    for name in names {
        assert!(metrics.body.contains(name), "{name} missing from /metrics:\n{}", metrics.body);
    }
    assert!(metrics.body.contains("code=\"401\""), "401s are counted");

    // The kubeconfig is private and works for every stock kubectl, TLS verified.
    let mode = std::fs::metadata(&server.kubeconfig).expect("kubeconfig").permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let kubectls = kubectl_binaries();
    if kubectls.is_empty() {
        eprintln!("no kubectl.1.NN binaries found: skipping the kubectl checks");
    }
    for k in &kubectls {
        let out = run_kubectl(&k.path, &server.kubeconfig, &["version", "-o", "json"])
            .await
            .expect("kubectl runs");
        assert!(out.success(), "kubectl {} version failed: {}", k.version, out.stderr);
        let json: serde_json::Value =
            serde_json::from_str(&out.stdout).expect("kubectl version json");
        assert_eq!(
            json["serverVersion"]["gitVersion"],
            git_version.as_str(),
            "kubectl {}",
            k.version
        );
        let out = run_kubectl(&k.path, &server.kubeconfig, &["get", "--raw", "/healthz"])
            .await
            .expect("kubectl runs");
        assert!(out.success(), "kubectl {} get --raw failed: {}", k.version, out.stderr);
        assert_eq!(out.stdout.trim(), "ok");
    }
    eprintln!(
        "kubectl versions checked: {:?}",
        kubectls.iter().map(|k| k.version.as_str()).collect::<Vec<_>>()
    );

    // Read late: the server logs "ready" just after /readyz turns 200.
    let ready_log = server.log();
    let server_ms = ready_log
        .lines()
        .find(|l| l.contains(" ready") && l.contains("elapsed_ms="))
        .and_then(|l| l.split("elapsed_ms=").nth(1))
        .and_then(|v| v.split_whitespace().next())
        .unwrap_or("?")
        .to_string();
    eprintln!(
        "cold start to /readyz 200 (polled): {:?}; server's own measure: {server_ms} ms",
        server.startup
    );

    // Idle memory after start-up and a handful of requests.
    tokio::time::sleep(Duration::from_millis(200)).await;
    if let Some(rss) = server.rss_bytes() {
        eprintln!("idle RSS: {:.1} MiB", rss as f64 / (1024.0 * 1024.0));
    }

    let status = server.stop(Duration::from_secs(10)).await.expect("stop");
    assert!(status.success(), "SIGTERM ends the server cleanly: {status}\n{}", server.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_reuses_the_pki() {
    let dir = TempDir::new("shell-restart").expect("temp dir");
    let data = dir.path().join("data");
    let options = SpawnOptions { data_dir: Some(data.clone()), ..Default::default() };
    let read = |name: &str| std::fs::read_to_string(data.join("pki").join(name)).expect(name);

    let mut first =
        SkiffProcess::spawn_with(Path::new(SKIFF), options.clone()).await.expect("first start");
    let (ca, serving, admin) = (read("ca.crt"), read("serving.crt"), read("admin.crt"));
    assert_eq!(
        std::fs::metadata(data.join("pki")).expect("pki").permissions().mode() & 0o777,
        0o700
    );
    assert_eq!(
        std::fs::metadata(data.join("pki/ca.key")).expect("key").permissions().mode() & 0o777,
        0o600
    );
    assert!(first.stop(Duration::from_secs(10)).await.expect("stop").success());

    let mut second =
        SkiffProcess::spawn_with(Path::new(SKIFF), options).await.expect("second start");
    assert_eq!(read("ca.crt"), ca, "the CA is reused");
    assert_eq!(read("serving.crt"), serving, "the serving certificate still fits and is reused");
    assert_eq!(read("admin.crt"), admin, "the admin certificate is reused");
    let client = second.client().await.expect("client");
    assert_eq!(get(&client, "/readyz").await.expect("readyz").status, 200);
    assert!(second.stop(Duration::from_secs(10)).await.expect("stop").success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unusable_database_exits_non_zero_with_the_reason() {
    let dir = TempDir::new("shell-baddb").expect("temp dir");
    let data = dir.path().join("data");
    std::fs::create_dir_all(data.join("db")).expect("db dir");
    std::fs::write(data.join("db/state.db"), vec![0x5a; 8192]).expect("garbage db");
    let options = SpawnOptions { data_dir: Some(data), ..Default::default() };
    match SkiffProcess::spawn_with(Path::new(SKIFF), options).await {
        Err(TestServerError::Exited { status, log }) => {
            assert!(!status.success());
            let last = log.lines().last().unwrap_or_default();
            assert!(
                last.starts_with("error: cannot open the datastore"),
                "last line: {last}\n{log}"
            );
            assert!(!log.contains("panicked"), "{log}");
        }
        Err(other) => panic!("unexpected failure: {other}"),
        Ok(_) => panic!("skiff started on a garbage database"),
    }
}

#[test]
fn cli_errors_are_one_clear_line() {
    let run =
        |args: &[&str]| std::process::Command::new(SKIFF).args(args).output().expect("run skiff");

    let out = run(&["server", "--data-dir", "/nonexistent", "--datastore-endpoint", "mysql://db"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with("error: invalid --datastore-endpoint"), "{stderr}");

    let dir = TempDir::new("shell-cli").expect("temp dir");
    let missing = dir.path().join("missing.snap");
    let target = dir.path().join("data");
    let out = run(&[
        "snapshot",
        "restore",
        missing.to_str().expect("utf8"),
        "--data-dir",
        target.to_str().expect("utf8"),
    ]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.lines().last().unwrap_or_default().starts_with("error: cannot restore the snapshot"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");

    let out = run(&["version"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("v1.33.0-skiff."));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_process_server_serves_over_tls_and_loopback() {
    let server = InProcessServer::start().await.expect("in-process server");
    assert_eq!(server.addr.ip(), std::net::IpAddr::from([127, 0, 0, 1]));
    let r = get(&server.client, "/version").await.expect("version over TLS");
    assert_eq!(r.status, 200);
    let loopback = server.handle().loopback_client(skiff::apiserver::server::loopback_admin());
    let r = get(&loopback, "/metrics").await.expect("metrics in-process");
    assert_eq!(r.status, 200);
    server.stop().await.expect("clean stop");
}

#[test]
fn semver_check_is_strict() {
    assert!(is_semver("1.33.0-skiff.0.1.0"));
    assert!(!is_semver("1.33-skiff"));
    assert!(!is_semver("1.33.0-skiff.01"));
}
