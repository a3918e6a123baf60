//! The Deployment controller against a lagging cache.

use super::*;
use crate::controllers::cluster::LocalCluster;
use crate::controllers::ComponentOptions;
use kube::runtime::reflector::store;

fn deployment() -> Deployment {
    serde_json::from_value(json!({
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {
            "replicas": 0,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}},
                         "spec": {"containers": [{"name": "c", "image": "pause"}]}},
        },
    }))
    .expect("deployment")
}

fn orphan() -> ReplicaSet {
    serde_json::from_value(json!({
        "metadata": {"name": "web-orphan", "namespace": "default", "labels": {"app": "web"}},
        "spec": {
            "replicas": 0,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}},
                         "spec": {"containers": [{"name": "c", "image": "other"}]}},
        },
    }))
    .expect("replica set")
}

/// A controller whose caches hold exactly the given objects, whatever the API holds now: a
/// lagging informer, on purpose.
fn lagging(client: &Client, d: &Deployment, rs: &ReplicaSet) -> Ctx {
    let (deployments, mut dw) = store::<Deployment>();
    dw.apply_watcher_event(&watcher::Event::Apply(d.clone()));
    let (sets, mut sw) = store::<ReplicaSet>();
    sw.apply_watcher_event(&watcher::Event::Apply(rs.clone()));
    let index = OwnerIndex::default();
    index.observe(&Change::Applied(rs));
    Ctx { client: client.clone(), deployments, sets, index }
}

async fn owners(api: &Api<ReplicaSet>) -> Vec<String> {
    let rs = api.get("web-orphan").await.expect("read replica set");
    rs.owner_references().iter().map(|o| format!("{}/{}", o.kind, o.name)).collect()
}

#[tokio::test]
async fn a_lagging_cache_adopts_no_orphan_for_a_deployment_deleted_meanwhile() {
    let cluster =
        LocalCluster::start_with(ComponentOptions { controllers: false, ..Default::default() })
            .await
            .expect("cluster");
    let client = cluster.client.clone();
    let d_api: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let rs_api: Api<ReplicaSet> = Api::namespaced(client.clone(), "default");
    let pp = PostParams::default();
    let d = d_api.create(&pp, &deployment()).await.expect("create deployment");
    let rs = rs_api.create(&pp, &orphan()).await.expect("create replica set");

    // Live and current: the orphan is adopted (the scenario can adopt at all).
    let ctx = lagging(&client, &d, &rs);
    sync(&ctx, "default/web").await.expect("sync");
    assert_eq!(owners(&rs_api).await, ["Deployment/web"]);

    // Released again, and the deployment deleted; the caches still show both as before.
    let released = json!({"metadata": {"ownerReferences": null}});
    let rs = rs_api
        .patch("web-orphan", &PatchParams::default(), &Patch::Merge(released))
        .await
        .expect("release");
    assert!(owners(&rs_api).await.is_empty());
    d_api.delete("web", &DeleteParams::default()).await.expect("delete deployment");
    let ctx = lagging(&client, &d, &rs);
    sync(&ctx, "default/web").await.expect("sync");
    assert!(owners(&rs_api).await.is_empty(), "adopted by a deleted deployment");

    // Replaced by a new deployment of the same name: the cached one's uid is not it.
    d_api.create(&pp, &deployment()).await.expect("create again");
    sync(&ctx, "default/web").await.expect("sync");
    assert!(owners(&rs_api).await.is_empty(), "adopted for another deployment's uid");
}
