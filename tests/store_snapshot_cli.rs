//! `skiff snapshot save` against a running server (while it takes writes), then
//! `skiff snapshot restore` into a new data dir, and a server started on that dir serves the
//! saved objects.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ObjectMeta, PostParams};
use skiff::testing::skiff_server::{SkiffProcess, SpawnOptions, TempDir};

const SKIFF: &str = env!("CARGO_BIN_EXE_skiff");

fn skiff(args: &[&str], dir: &Path) -> std::process::Output {
    Command::new(SKIFF).args(args).arg("--data-dir").arg(dir).output().expect("run skiff")
}

fn configmap(name: &str) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta { name: Some(name.into()), ..Default::default() },
        data: Some([("k".to_string(), name.to_string())].into()),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn save_from_a_running_server_and_restore_into_a_new_data_dir() {
    let work = TempDir::new("snapshot-cli").expect("temp dir");
    let data = work.path().join("data");
    let opts =
        || SpawnOptions { args: vec!["--disable-controllers".into()], ..SpawnOptions::default() };
    let mut server = SkiffProcess::spawn_with(
        Path::new(SKIFF),
        SpawnOptions { data_dir: Some(data.clone()), ..opts() },
    )
    .await
    .expect("start skiff");
    let client = server.client().await.expect("client");
    let cms: Api<ConfigMap> = Api::namespaced(client, "default");
    for i in 0..50 {
        cms.create(&PostParams::default(), &configmap(&format!("before-{i}")))
            .await
            .expect("create");
    }
    // Keep writing while the snapshot is taken.
    let writer = {
        let cms = cms.clone();
        tokio::spawn(async move {
            for i in 0..200 {
                let _ =
                    cms.create(&PostParams::default(), &configmap(&format!("during-{i}"))).await;
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    let snap = work.path().join("backup.db");
    let out = skiff(&["snapshot", "save", snap.to_str().expect("utf8")], &data);
    assert!(out.status.success(), "save failed: {}", String::from_utf8_lossy(&out.stderr));
    writer.await.expect("writer");
    // Saving over an existing file is refused.
    let again = skiff(&["snapshot", "save", snap.to_str().expect("utf8")], &data);
    assert!(!again.status.success());
    server.stop(Duration::from_secs(5)).await.expect("stop");

    // Restoring into a data dir that has a database is refused without --force.
    let refused = skiff(&["snapshot", "restore", snap.to_str().expect("utf8")], &data);
    assert!(!refused.status.success(), "restore over a live database must need --force");

    let restored = work.path().join("restored");
    let out = skiff(&["snapshot", "restore", snap.to_str().expect("utf8")], &restored);
    assert!(out.status.success(), "restore failed: {}", String::from_utf8_lossy(&out.stderr));

    let mut server = SkiffProcess::spawn_with(
        Path::new(SKIFF),
        SpawnOptions { data_dir: Some(restored), ..opts() },
    )
    .await
    .expect("start skiff on the restored data dir");
    let cms: Api<ConfigMap> = Api::namespaced(server.client().await.expect("client"), "default");
    let list = cms.list(&Default::default()).await.expect("list");
    let names: Vec<String> = list.items.iter().filter_map(|c| c.metadata.name.clone()).collect();
    for i in 0..50 {
        assert!(names.contains(&format!("before-{i}")), "before-{i} missing after restore");
    }
    // The snapshot is a consistent prefix of the writes made during it.
    let during: Vec<usize> = names
        .iter()
        .filter_map(|n| n.strip_prefix("during-").and_then(|i| i.parse().ok()))
        .collect();
    if let Some(max) = during.iter().max() {
        assert_eq!(during.len(), max + 1, "writes made during the snapshot form a prefix");
    }
    let cm = cms.get("before-7").await.expect("get restored object");
    assert_eq!(cm.data.unwrap_or_default().get("k").map(String::as_str), Some("before-7"));
    server.stop(Duration::from_secs(5)).await.expect("stop");
}
