//! The event recorder's correlation, as upstream's EventCorrelator shows it: a ReplicaSet that
//! creates 30 pods records 9 plain SuccessfulCreate events, then one combined event
//! ("(combined from similar events): Created pod: NAME") whose count rises with each further
//! creation until the spam filter (25 events per source and object) stops it at 16; `kubectl
//! describe` (the newest kubectl) shows the combined row with its count. A repeated event
//! raises the count of the Event already written, and is written anew if that Event is gone.

use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Event, Pod};
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::Api;
use serde_json::json;
use skiff::controllers::cluster::{wait_for, LocalCluster};
use skiff::controllers::events;
use skiff::testing::kubectl_cluster::KubectlCluster;

const SKIFF: &str = env!("CARGO_BIN_EXE_skiff");

/// Generous: the machine running the tests may be loaded.
const T: Duration = Duration::from_secs(120);

const COMBINED: &str = "(combined from similar events): ";

/// SuccessfulCreate events about ReplicaSet `name` in `default`.
async fn created_events(events: &Api<Event>, name: &str) -> Option<Vec<Event>> {
    let list = events.list(&ListParams::default()).await.ok()?;
    Some(
        list.items
            .into_iter()
            .filter(|e| e.involved_object.kind.as_deref() == Some("ReplicaSet"))
            .filter(|e| e.involved_object.name.as_deref() == Some(name))
            .filter(|e| e.reason.as_deref() == Some("SuccessfulCreate"))
            .collect(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_creations_are_nine_events_and_one_combined_event_counted_to_the_spam_limit() {
    let c = KubectlCluster::start(std::path::Path::new(SKIFF), 2, &[]).await;
    let client = c.server.client().await.expect("client");
    c.apply(
        "rs",
        json!({"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": "burst"},
               "spec": {"replicas": 30, "selector": {"matchLabels": {"app": "burst"}},
                        "template": {"metadata": {"labels": {"app": "burst"}},
                                     "spec": {"containers": [{"name": "c", "image": "nginx"}]}}}}),
    )
    .await;
    let pods: Api<Pod> = Api::default_namespaced(client.clone());
    let names: Vec<String> = wait_for(T, "30 pods", || async {
        let list = pods.list(&ListParams::default().labels("app=burst")).await.ok()?;
        let names: Vec<String> = list.items.into_iter().filter_map(|p| p.metadata.name).collect();
        (names.len() == 30).then_some(names)
    })
    .await
    .expect("pods");

    // Upstream's order: aggregate, count, then filter. Creations 1-9 are plain events; from the
    // 10th distinct message on, each one is the combined event (count 1, 2, ...); the spam
    // filter lets 25 through (creations 26-30 are dropped), so the combined count ends at 16.
    let events: Api<Event> = Api::default_namespaced(client.clone());
    let last = std::sync::Mutex::new(Vec::new());
    let settled = wait_for(T, "9 plain events and a combined one counted 16", || async {
        let got = created_events(&events, "burst").await?;
        *last.lock().unwrap() = got.clone();
        let combined: Vec<&Event> = got
            .iter()
            .filter(|e| e.message.as_deref().unwrap_or("").starts_with(COMBINED))
            .collect();
        (got.len() == 10 && combined.len() == 1 && combined[0].count == Some(16)).then_some(got)
    })
    .await;
    let got = settled.unwrap_or_else(|_| {
        let seen: Vec<(Option<String>, Option<i32>)> =
            last.lock().unwrap().iter().map(|e| (e.message.clone(), e.count)).collect();
        panic!("SuccessfulCreate events of burst: {seen:#?}")
    });
    let (combined, plain): (Vec<&Event>, Vec<&Event>) =
        got.iter().partition(|e| e.message.as_deref().unwrap_or("").starts_with(COMBINED));
    assert_eq!(plain.len(), 9);
    for e in &plain {
        assert_eq!(e.count, Some(1));
        let pod = e.message.as_deref().and_then(|m| m.strip_prefix("Created pod: "));
        assert!(pod.is_some_and(|p| names.iter().any(|n| n == p)), "{:?}", e.message);
    }
    let combined = combined[0];
    let pod = combined
        .message
        .as_deref()
        .and_then(|m| m.strip_prefix(COMBINED))
        .and_then(|m| m.strip_prefix("Created pod: "));
    assert!(pod.is_some_and(|p| names.iter().any(|n| n == p)), "{:?}", combined.message);
    assert!(combined.first_timestamp.is_some() && combined.last_timestamp.is_some());
    assert!(combined.first_timestamp <= combined.last_timestamp);
    let total: i32 = got.iter().filter_map(|e| e.count).sum();
    assert_eq!(total, 25, "the spam filter's burst");

    // kubectl describe shows the combined row with its count.
    let out = c.ok(&["describe", "replicaset", "burst"]).await;
    let section = out.split("Events:").nth(1).unwrap_or_else(|| panic!("no Events in:\n{out}"));
    let row = section
        .lines()
        .find(|l| l.contains(COMBINED))
        .unwrap_or_else(|| panic!("no combined row in:\n{out}"));
    assert!(row.contains("SuccessfulCreate") && row.contains("replicaset-controller"), "{row}");
    assert!(row.contains("(x16 over "), "{row}");
    assert!(row.contains(&format!("{COMBINED}Created pod: burst-")), "{row}");
    let plain_rows =
        section.lines().filter(|l| l.contains("SuccessfulCreate") && !l.contains(COMBINED)).count();
    assert_eq!(plain_rows, 9, "{out}");
}

/// Events about ConfigMap `name` with reason `reason`: (name, count) each.
async fn counts(events: &Api<Event>, name: &str, reason: &str) -> Option<Vec<(String, i32)>> {
    let list = events.list(&ListParams::default()).await.ok()?;
    Some(
        list.items
            .into_iter()
            .filter(|e| e.involved_object.name.as_deref() == Some(name))
            .filter(|e| e.reason.as_deref() == Some(reason))
            .map(|e| (e.metadata.name.unwrap_or_default(), e.count.unwrap_or(0)))
            .collect(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_event_is_counted_on_the_first_and_recreated_when_it_is_gone() {
    let cluster = LocalCluster::start(0).await.expect("cluster");
    let client = cluster.client.clone();
    let maps: Api<ConfigMap> = Api::default_namespaced(client.clone());
    let cm: ConfigMap =
        serde_json::from_value(json!({"metadata": {"name": "settings"}})).expect("config map");
    let cm = maps.create(&PostParams::default(), &cm).await.expect("create");
    let api: Api<Event> = Api::default_namespaced(client.clone());
    let say =
        || events::record(&client, "test-recorder", &cm, true, "Repeated", "same words".into());

    say();
    let first = wait_for(T, "the first event", || async {
        let got = counts(&api, "settings", "Repeated").await?;
        (got.len() == 1 && got[0].1 == 1).then(|| got[0].0.clone())
    })
    .await
    .expect("first event");
    say();
    say();
    wait_for(T, "the same event counted 3", || async {
        let got = counts(&api, "settings", "Repeated").await?;
        (got == vec![(first.clone(), 3)]).then_some(())
    })
    .await
    .expect("count 3 on the first event");

    // The Event expires (here: is deleted); the next one is created again, count carried on.
    api.delete(&first, &DeleteParams::default()).await.expect("delete event");
    wait_for(T, "the event gone", || async {
        counts(&api, "settings", "Repeated").await?.is_empty().then_some(())
    })
    .await
    .expect("gone");
    say();
    wait_for(T, "the event recreated with count 4", || async {
        let got = counts(&api, "settings", "Repeated").await?;
        (got == vec![(first.clone(), 4)]).then_some(())
    })
    .await
    .expect("recreated");
}
