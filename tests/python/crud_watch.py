#!/usr/bin/env python3
"""The official Kubernetes Python client against skiff.

Usage: crud_watch.py KUBECONFIG

Loads the kubeconfig skiff wrote (TLS verified with its CA, client certificate auth), then
creates, gets, lists, patches (strategic merge, merge and JSON patch), replaces and deletes a
ConfigMap and a Deployment, while a watch started at the list's resourceVersion must see the
ConfigMap's ADDED, MODIFIED and DELETED events in order. Prints one "ok ..." line per step and
"PASS" at the end; any failure raises (non-zero exit).
"""

import sys
import threading

try:
    from kubernetes import client, config, watch
    from kubernetes.client.rest import ApiException
except ImportError as e:  # the Rust test turns this into a clear failure
    print(f"MISSING kubernetes module: {e}", file=sys.stderr)
    sys.exit(3)

NS = "python-client"
CM = "py-config"
DEPLOY = "py-web"
# The watch thread and the main thread both print: one line at a time, never interleaved.
PRINT_LOCK = threading.Lock()


def say(line):
    with PRINT_LOCK:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def check(cond, what):
    if not cond:
        raise AssertionError(what)
    say(f"ok {what}")


def expect_status(code, fn, what):
    try:
        fn()
    except ApiException as e:
        check(e.status == code, f"{what} (HTTP {e.status})")
        return
    raise AssertionError(f"{what}: no error, expected HTTP {code}")


def configmap_crud(core, events, watcher_done):
    body = client.V1ConfigMap(
        metadata=client.V1ObjectMeta(name=CM, labels={"app": "py"}),
        data={"greeting": "hello"},
    )
    created = core.create_namespaced_config_map(NS, body)
    check(created.metadata.resource_version, "configmap created with a resourceVersion")
    check(created.metadata.uid, "configmap created with a uid")

    got = core.read_namespaced_config_map(CM, NS)
    check(got.data == {"greeting": "hello"}, "configmap get returns its data")

    listed = core.list_namespaced_config_map(NS, label_selector="app=py")
    check([i.metadata.name for i in listed.items] == [CM], "configmap list by label selector")
    none = core.list_namespaced_config_map(NS, label_selector="app=other")
    check(none.items == [], "configmap list with a selector that matches nothing")

    # A dict body is sent as a strategic merge patch by the client.
    patched = core.patch_namespaced_config_map(CM, NS, {"data": {"extra": "1"}})
    check(patched.data == {"greeting": "hello", "extra": "1"}, "configmap strategic merge patch")
    patched = core.patch_namespaced_config_map(
        CM,
        NS,
        {"data": {"extra": None, "merge": "yes"}},
        _content_type="application/merge-patch+json",
    )
    check(patched.data == {"greeting": "hello", "merge": "yes"}, "configmap merge patch")
    # A list body is a JSON patch.
    patched = core.patch_namespaced_config_map(
        CM, NS, [{"op": "replace", "path": "/data/greeting", "value": "bonjour"}]
    )
    check(patched.data["greeting"] == "bonjour", "configmap JSON patch")

    patched.data = {"replaced": "true"}
    replaced = core.replace_namespaced_config_map(CM, NS, patched)
    check(replaced.data == {"replaced": "true"}, "configmap replace")
    check(
        int(replaced.metadata.resource_version) > int(created.metadata.resource_version),
        "configmap resourceVersion grows",
    )
    # A replace with a stale resourceVersion is a conflict.
    stale = core.read_namespaced_config_map(CM, NS)
    stale.metadata.resource_version = created.metadata.resource_version
    expect_status(409, lambda: core.replace_namespaced_config_map(CM, NS, stale), "stale replace is a 409")

    status = core.delete_namespaced_config_map(CM, NS)
    check(status is not None, "configmap delete")
    expect_status(404, lambda: core.read_namespaced_config_map(CM, NS), "deleted configmap is a 404")

    watcher_done.wait(30)
    kinds = [t for (t, name) in events if name == CM]
    check(kinds[0] == "ADDED", f"watch saw ADDED first ({kinds})")
    check(kinds[-1] == "DELETED", "watch saw DELETED last")
    check(kinds.count("MODIFIED") == 4, "watch saw a MODIFIED for each of 3 patches and 1 replace")


def deployment_crud(apps):
    labels = {"app": DEPLOY}
    container = client.V1Container(
        name="web",
        image="nginx:1.25",
        ports=[client.V1ContainerPort(container_port=80)],
        env=[client.V1EnvVar(name="A", value="1")],
    )
    body = client.V1Deployment(
        metadata=client.V1ObjectMeta(name=DEPLOY, labels=labels),
        spec=client.V1DeploymentSpec(
            replicas=1,
            selector=client.V1LabelSelector(match_labels=labels),
            template=client.V1PodTemplateSpec(
                metadata=client.V1ObjectMeta(labels=labels),
                spec=client.V1PodSpec(containers=[container]),
            ),
        ),
    )
    created = apps.create_namespaced_deployment(NS, body)
    check(created.spec.replicas == 1, "deployment created")
    check(
        created.spec.strategy.type == "RollingUpdate",
        "deployment defaults applied (strategy RollingUpdate)",
    )

    got = apps.read_namespaced_deployment(DEPLOY, NS)
    check(got.spec.template.spec.containers[0].image == "nginx:1.25", "deployment get")
    listed = apps.list_namespaced_deployment(NS)
    check([d.metadata.name for d in listed.items] == [DEPLOY], "deployment list")

    # Strategic merge: containers merge by name, env merges by name.
    patch = {
        "spec": {
            "template": {
                "spec": {
                    "containers": [
                        {"name": "web", "image": "nginx:1.26", "env": [{"name": "B", "value": "2"}]}
                    ]
                }
            }
        }
    }
    patched = apps.patch_namespaced_deployment(DEPLOY, NS, patch)
    c = patched.spec.template.spec.containers
    check(len(c) == 1 and c[0].image == "nginx:1.26", "deployment strategic merge keeps one container")
    check(sorted(e.name for e in c[0].env) == ["A", "B"], "deployment strategic merge merges env by name")
    check(c[0].ports[0].container_port == 80, "deployment strategic merge keeps untouched fields")

    scaled = apps.patch_namespaced_deployment_scale(DEPLOY, NS, {"spec": {"replicas": 2}})
    check(scaled.spec.replicas == 2, "deployment scale subresource patch")

    # Controllers write the deployment's status meanwhile: read-modify-write until no conflict.
    for attempt in range(20):
        current = apps.read_namespaced_deployment(DEPLOY, NS)
        current.spec.replicas = 3
        current.metadata.annotations = {"note": "replaced"}
        try:
            replaced = apps.replace_namespaced_deployment(DEPLOY, NS, current)
            break
        except ApiException as e:
            if e.status != 409 or attempt == 19:
                raise
    check(replaced.spec.replicas == 3, "deployment replace")
    check(replaced.metadata.annotations.get("note") == "replaced", "deployment replace sets annotations")
    check(replaced.metadata.generation >= 3, "deployment generation counts spec changes")

    apps.delete_namespaced_deployment(
        DEPLOY, NS, body=client.V1DeleteOptions(propagation_policy="Foreground")
    )
    say("ok deployment delete")


def main():
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    config.load_kube_config(config_file=sys.argv[1])
    api_client = client.ApiClient()
    check(api_client.configuration.verify_ssl, "TLS verification is on")
    check(api_client.configuration.host.startswith("https://"), "the server is HTTPS")
    core = client.CoreV1Api(api_client)
    apps = client.AppsV1Api(api_client)

    version = client.VersionApi(api_client).get_code()
    check(version.major == "1", f"server version {version.git_version}")

    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=NS)))
    say(f"ok namespace {NS} created")

    start = core.list_namespaced_config_map(NS).metadata.resource_version
    events = []
    watcher_done = threading.Event()
    watch_errors = []

    def follow():
        w = watch.Watch()
        try:
            for ev in w.stream(
                core.list_namespaced_config_map,
                NS,
                resource_version=start,
                timeout_seconds=30,
            ):
                name = ev["object"].metadata.name
                events.append((ev["type"], name))
                say(f"event {ev['type']} {name}")
                if ev["type"] == "DELETED" and name == CM:
                    w.stop()
        except Exception as e:  # reported by the main thread
            watch_errors.append(repr(e))
        finally:
            watcher_done.set()

    thread = threading.Thread(target=follow, daemon=True)
    thread.start()

    configmap_crud(core, events, watcher_done)
    check(not watch_errors, f"watch had no errors {watch_errors}")
    deployment_crud(apps)

    core.delete_namespace(NS)
    say("ok namespace delete")
    say("PASS")
    return 0


if __name__ == "__main__":
    sys.exit(main())
