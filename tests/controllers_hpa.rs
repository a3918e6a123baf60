//! HorizontalPodAutoscalers (autoscaling/v2) on simulated nodes, with usage the pods declare in
//! the simulated-usage annotation: a deployment scales up when its pods use more than the
//! target (bounded by maxReplicas: ScalingLimited/TooManyReplicas) and down to minReplicas when
//! they use nothing, with upstream's status, conditions and SuccessfulRescale events; and the
//! real kubectl: `kubectl autoscale`, then `kubectl get hpa` showing TARGETS as "cpu: 80%/50%".

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::{
    HorizontalPodAutoscaler, HorizontalPodAutoscalerCondition,
};
use k8s_openapi::api::core::v1::{Event, Pod};
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::Api;
use serde_json::json;
use skiff::agent::simulated::pods::{CPU_USAGE_ANNOTATION, MEMORY_USAGE_ANNOTATION};
use skiff::controllers::cluster::{wait_for, ComponentOptions, LocalCluster};
use skiff::controllers::horizontal::HpaOptions;
use skiff::testing::skiff_server::{kubectl_binaries, run_kubectl, InProcessServer};

/// Generous: the machine running the tests may be loaded.
const T: Duration = Duration::from_secs(90);

fn components(nodes: usize) -> ComponentOptions {
    let mut opts = ComponentOptions { simulate_nodes: nodes, ..Default::default() };
    opts.controller_options.hpa =
        HpaOptions { sync_period: Duration::from_secs(1), ..Default::default() };
    opts
}

fn deployment(name: &str, cpu: &str) -> Deployment {
    serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "c", "image": "nginx",
                                         "resources": {"requests": {"cpu": cpu}}}]},
            },
        },
    }))
    .expect("valid deployment")
}

/// Declares `usage` on every live pod of `app` (new pods get it at the next call).
async fn declare_usage(pods: &Api<Pod>, app: &str, usage: &str) {
    let Ok(list) = pods.list(&ListParams::default().labels(&format!("app={app}"))).await else {
        return;
    };
    for p in list.items.iter().filter(|p| p.metadata.deletion_timestamp.is_none()) {
        let name = p.metadata.name.clone().unwrap_or_default();
        let current = p.metadata.annotations.as_ref().and_then(|a| a.get(CPU_USAGE_ANNOTATION));
        if current.map(String::as_str) != Some(usage) {
            let patch = json!({"metadata": {"annotations": {CPU_USAGE_ANNOTATION: usage}}});
            let _ = pods.patch(&name, &PatchParams::default(), &Patch::Merge(patch)).await;
        }
    }
}

fn condition<'a>(
    h: &'a HorizontalPodAutoscaler,
    kind: &str,
) -> Option<&'a HorizontalPodAutoscalerCondition> {
    h.status.as_ref()?.conditions.as_ref()?.iter().find(|c| c.type_ == kind)
}

fn has(h: &HorizontalPodAutoscaler, kind: &str, status: &str, reason: &str) -> bool {
    condition(h, kind).is_some_and(|c| c.status == status && c.reason.as_deref() == Some(reason))
}

fn message(h: &HorizontalPodAutoscaler, kind: &str) -> String {
    condition(h, kind).and_then(|c| c.message.clone()).unwrap_or_default()
}

fn current_cpu(h: &HorizontalPodAutoscaler) -> (Option<i32>, Option<String>) {
    let m = h.status.as_ref().and_then(|s| s.current_metrics.as_ref()).and_then(|m| m.first());
    let cur = m.and_then(|m| m.resource.as_ref()).map(|r| r.current.clone());
    (
        cur.as_ref().and_then(|c| c.average_utilization),
        cur.and_then(|c| c.average_value).map(|q| q.0),
    )
}

fn current_memory(h: &HorizontalPodAutoscaler) -> Option<String> {
    let m = h.status.as_ref()?.current_metrics.as_ref()?.first()?;
    m.resource.as_ref()?.current.average_value.as_ref().map(|q| q.0.clone())
}

async fn rescale_events(events: &Api<Event>) -> Vec<String> {
    let list = events.list(&ListParams::default()).await.expect("events");
    list.items
        .iter()
        .filter(|e| e.reason.as_deref() == Some("SuccessfulRescale"))
        .filter(|e| {
            e.source.as_ref().and_then(|s| s.component.as_deref())
                == Some("horizontal-pod-autoscaler")
        })
        .filter_map(|e| e.message.clone())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hpa_scales_a_deployment_up_to_max_and_down_to_min_on_simulated_usage() {
    let cluster = LocalCluster::start_with(components(2)).await.expect("cluster");
    let client = cluster.client.clone();
    let deployments: Api<Deployment> = Api::default_namespaced(client.clone());
    let hpas: Api<HorizontalPodAutoscaler> = Api::default_namespaced(client.clone());
    let pods: Api<Pod> = Api::default_namespaced(client.clone());
    let events: Api<Event> = Api::default_namespaced(client.clone());

    deployments.create(&PostParams::default(), &deployment("web", "200m")).await.unwrap();
    let hpa: HorizontalPodAutoscaler = serde_json::from_value(json!({
        "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "web"},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
            "minReplicas": 1, "maxReplicas": 3,
            "metrics": [{"type": "Resource", "resource": {"name": "cpu",
                         "target": {"type": "Utilization", "averageUtilization": 50}}}],
            "behavior": {"scaleDown": {"stabilizationWindowSeconds": 0}},
        },
    }))
    .expect("valid hpa");
    hpas.create(&PostParams::default(), &hpa).await.unwrap();

    // Running pods that declare no usage have no samples: the HPA cannot compute a count.
    let h = wait_for(T, "the HPA to report missing metrics", || async {
        let h = hpas.get("web").await.ok()?;
        has(&h, "ScalingActive", "False", "FailedGetResourceMetric").then_some(h)
    })
    .await
    .unwrap();
    assert!(has(&h, "AbleToScale", "True", "SucceededGetScale"), "{:?}", h.status);
    assert_eq!(
        message(&h, "ScalingActive"),
        "the HPA was unable to compute the replica count: failed to get cpu utilization: \
         unable to get metrics for resource cpu: no metrics returned from resource metrics API"
    );
    assert_eq!(h.status.as_ref().and_then(|s| s.current_replicas), Some(1));

    // 400m of 200m requested: 200% against 50% wants 4 pods; maxReplicas holds it at 3.
    let h = wait_for(T, "a scale-up to maxReplicas", || async {
        declare_usage(&pods, "web", "400m").await;
        let d = deployments.get("web").await.ok()?;
        let h = hpas.get("web").await.ok()?;
        let st = h.status.as_ref()?;
        let done = d.spec.as_ref()?.replicas == Some(3)
            && st.current_replicas == Some(3)
            && st.desired_replicas == 3
            && has(&h, "ScalingLimited", "True", "TooManyReplicas");
        done.then_some(h)
    })
    .await
    .unwrap();
    assert!(has(&h, "ScalingActive", "True", "ValidMetricFound"), "{:?}", h.status);
    assert_eq!(
        message(&h, "ScalingActive"),
        "the HPA was able to successfully calculate a replica count from cpu resource \
         utilization (percentage of request)"
    );
    assert_eq!(
        message(&h, "ScalingLimited"),
        "the desired replica count is more than the maximum replica count"
    );
    assert_eq!(condition(&h, "AbleToScale").map(|c| c.status.as_str()), Some("True"));
    assert_eq!(current_cpu(&h), (Some(200), Some("400m".into())));
    assert!(h.status.as_ref().and_then(|s| s.last_scale_time.as_ref()).is_some());
    let rescaled = rescale_events(&events).await;
    assert!(
        rescaled.contains(
            &"New size: 3; reason: cpu resource utilization (percentage of request) above target"
                .to_string()
        ),
        "{rescaled:?}"
    );

    // No usage: the count falls to minReplicas at once (a zero scale-down window).
    let h = wait_for(T, "a scale-down to minReplicas", || async {
        declare_usage(&pods, "web", "0").await;
        let d = deployments.get("web").await.ok()?;
        let h = hpas.get("web").await.ok()?;
        let st = h.status.as_ref()?;
        let done = d.spec.as_ref()?.replicas == Some(1)
            && st.current_replicas == Some(1)
            && st.desired_replicas == 1
            && has(&h, "ScalingLimited", "True", "TooFewReplicas");
        done.then_some(h)
    })
    .await
    .unwrap();
    assert_eq!(current_cpu(&h), (Some(0), Some("0".into())));
    assert_eq!(
        message(&h, "ScalingLimited"),
        "the desired replica count is less than the minimum replica count"
    );
    let rescaled = rescale_events(&events).await;
    assert!(
        rescaled.contains(&"New size: 1; reason: All metrics below target".to_string()),
        "{rescaled:?}"
    );
    assert!(!rescaled.iter().any(|m| m.starts_with("New size: 4")), "{rescaled:?}");
    assert!(cluster.running());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hpa_scales_on_average_memory_value() {
    let cluster = LocalCluster::start_with(components(1)).await.expect("cluster");
    let client = cluster.client.clone();
    let deployments: Api<Deployment> = Api::default_namespaced(client.clone());
    let hpas: Api<HorizontalPodAutoscaler> = Api::default_namespaced(client.clone());
    let pods: Api<Pod> = Api::default_namespaced(client.clone());

    let mut d = deployment("cache", "100m");
    if let Some(c) = d.spec.as_mut().and_then(|s| s.template.spec.as_mut()) {
        c.containers[0].resources = None; // AverageValue targets need no requests
    }
    deployments.create(&PostParams::default(), &d).await.unwrap();
    let hpa: HorizontalPodAutoscaler = serde_json::from_value(json!({
        "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "cache"},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "cache"},
            "maxReplicas": 2,
            "metrics": [{"type": "Resource", "resource": {"name": "memory",
                         "target": {"type": "AverageValue", "averageValue": "100Mi"}}}],
        },
    }))
    .expect("valid hpa");
    hpas.create(&PostParams::default(), &hpa).await.unwrap();

    // 300Mi a pod against 100Mi wants 3 pods; maxReplicas holds it at 2.
    let h = wait_for(T, "a scale-up on memory", || async {
        let list = pods.list(&ListParams::default().labels("app=cache")).await.ok()?;
        for p in &list.items {
            let name = p.metadata.name.clone().unwrap_or_default();
            let patch = json!({"metadata": {"annotations": {MEMORY_USAGE_ANNOTATION: "300Mi"}}});
            let _ = pods.patch(&name, &PatchParams::default(), &Patch::Merge(patch)).await;
        }
        let d = deployments.get("cache").await.ok()?;
        let h = hpas.get("cache").await.ok()?;
        let done = d.spec.as_ref()?.replicas == Some(2)
            && has(&h, "ScalingLimited", "True", "TooManyReplicas")
            && h.status.as_ref()?.current_replicas == Some(2);
        done.then_some(h)
    })
    .await
    .unwrap();
    assert_eq!(current_memory(&h), Some("314572800".into()));
    assert_eq!(
        message(&h, "ScalingActive"),
        "the HPA was able to successfully calculate a replica count from memory resource"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_autoscale_and_get_hpa_show_the_cpu_target() {
    let server =
        InProcessServer::start_with(|c| c.components = Some(components(2))).await.expect("server");
    let kubectl = kubectl_binaries();
    let newest = kubectl.last().expect("kubectl binaries are installed").path.clone();
    let oldest = kubectl.first().expect("kubectl binaries are installed").path.clone();
    let run = |bin: std::path::PathBuf, args: Vec<String>| {
        let kubeconfig = server.kubeconfig.clone();
        async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let out = run_kubectl(&bin, &kubeconfig, &args).await.expect("kubectl runs");
            assert!(out.success(), "kubectl {args:?}: {}{}", out.stdout, out.stderr);
            out.stdout
        }
    };
    let args = |s: &str| s.split_whitespace().map(str::to_string).collect::<Vec<_>>();

    let deployments: Api<Deployment> = Api::default_namespaced(server.client.clone());
    deployments.create(&PostParams::default(), &deployment("web", "200m")).await.unwrap();
    let out =
        run(newest.clone(), args("autoscale deployment web --cpu-percent=50 --min=1 --max=4"))
            .await;
    assert!(out.contains("horizontalpodautoscaler.autoscaling/web autoscaled"), "{out}");

    // 160m of 200m requested: 80% against 50%.
    let usage = format!("annotate pods -l app=web --overwrite {CPU_USAGE_ANNOTATION}=160m");
    let table = wait_for(T, "kubectl get hpa to show cpu: 80%/50% at maxReplicas", || {
        let (run, usage) = (run.clone(), args(&usage));
        let newest = newest.clone();
        async move {
            run(newest.clone(), usage).await;
            let table = run(newest, args("get hpa web")).await;
            let row = table.lines().nth(1)?.split_whitespace().collect::<Vec<_>>().join(" ");
            row.starts_with("web Deployment/web cpu: 80%/50% 1 4 4 ").then_some(table)
        }
    })
    .await
    .unwrap();
    let header: Vec<&str> = table.lines().next().unwrap_or("").split_whitespace().collect();
    assert_eq!(header, ["NAME", "REFERENCE", "TARGETS", "MINPODS", "MAXPODS", "REPLICAS", "AGE"]);
    let old = run(oldest, args("get hpa web")).await;
    assert!(old.contains("cpu: 80%/50%"), "{old}");

    // Once every pod declares its usage, 7 pods are wanted and maxReplicas limits them.
    let wanted = [
        "80% (160m) / 50%",
        "ValidMetricFound",
        "TooManyReplicas",
        "SuccessfulRescale",
        "New size: 2; reason: cpu resource utilization (percentage of request) above target",
        "New size: 4; reason: cpu resource utilization (percentage of request) above target",
    ];
    let described = wait_for(T, "kubectl describe hpa to show the limit and the rescales", || {
        let (run, usage) = (run.clone(), args(&usage));
        let newest = newest.clone();
        async move {
            run(newest.clone(), usage).await;
            let out = run(newest, args("describe hpa web")).await;
            wanted.iter().all(|w| out.contains(w)).then_some(out)
        }
    })
    .await;
    let described = match described {
        Ok(out) => out,
        Err(e) => {
            let now = run(newest.clone(), args("describe hpa web")).await;
            panic!("{e}: {wanted:?} in:\n{now}")
        }
    };
    assert!(!described.contains("New size: 5"), "{described}");
    server.stop().await.expect("stop");
}
