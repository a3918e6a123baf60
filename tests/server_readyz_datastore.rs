//! /readyz follows the datastore after start-up: when etcd goes away the etcd-readiness check
//! fails (503, as kube-apiserver's does) while /livez stays up, and when etcd is back /readyz
//! passes again without a restart.

use std::path::Path;
use std::time::Duration;

use skiff::controllers::cluster::wait_for;
use skiff::testing::etcd_server::EtcdServer;
use skiff::testing::skiff_server::{get, SkiffProcess, SpawnOptions};

const SKIFF: &str = env!("CARGO_BIN_EXE_skiff");
/// Generous: the machine running the tests may be loaded.
const T: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_fails_while_etcd_is_down_and_recovers() {
    let mut etcd = tokio::task::spawn_blocking(EtcdServer::start)
        .await
        .expect("etcd task")
        .expect("start etcd-server");
    let args = vec![
        "--datastore-endpoint".to_string(),
        etcd.endpoint_url(),
        "--disable-controllers".to_string(),
    ];
    let server =
        SkiffProcess::spawn_with(Path::new(SKIFF), SpawnOptions { args, ..Default::default() })
            .await
            .expect("skiff starts");
    let client = server.client().await.expect("client");
    let ready = get(&client, "/readyz").await.expect("readyz");
    assert_eq!(ready.status, 200, "{}", ready.body);

    let mut etcd = tokio::task::spawn_blocking(move || {
        etcd.kill().expect("kill etcd");
        etcd
    })
    .await
    .expect("kill task");
    let failing = wait_for(T, "/readyz failing", || async {
        let r = get(&client, "/readyz?verbose").await.ok()?;
        (r.status == 503).then_some(r.body)
    })
    .await
    .expect("readyz notices");
    assert!(failing.contains("[-]etcd-readiness failed"), "{failing}");
    assert!(failing.contains("[+]ping ok"), "{failing}");
    let live = get(&client, "/livez").await.expect("livez");
    assert_eq!(live.status, 200, "the process itself is alive: {}", live.body);

    let _etcd = tokio::task::spawn_blocking(move || {
        etcd.restart().expect("restart etcd");
        etcd
    })
    .await
    .expect("restart task");
    let recovered = wait_for(T, "/readyz passing again", || async {
        let r = get(&client, "/readyz").await.ok()?;
        (r.status == 200).then_some(())
    })
    .await;
    let log = server.log();
    let tail: Vec<&str> = log.lines().rev().take(30).collect();
    assert!(recovered.is_ok(), "readyz recovers: {recovered:?}\n{}", tail.join("\n"));
    assert!(server.pid().is_some(), "the server kept running");
}
