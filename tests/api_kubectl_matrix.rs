//! Every stock kubectl (kubectl.1.NN, 1.27 onwards) against one in-process server with
//! controllers and two simulated nodes, each version in its own namespaces: client-side apply
//! twice and diff, patch (json, merge, strategic) on every kind, label/annotate/scale, edit,
//! replace (and --force), wait (conditions, jsonpath, delete), get -w, the three delete cascade
//! modes, output formats (wide, yaml, json, jsonpath, custom-columns), server-side apply
//! conflicts, and error cases whose text must be exactly what kubectl prints against a real
//! cluster. `tests/api_kubectl.rs` covers discovery, generators, describe and tables.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use futures::StreamExt;
use skiff::testing::skiff_server::{kubectl_binaries, InProcessServer, Kubectl};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::ChildStdout;

/// How many kubectl versions run at once.
const CONCURRENT_VERSIONS: usize = 4;
/// How long polling for an eventual state may take.
const EVENTUALLY: Duration = Duration::from_secs(45);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kubectl_matrix() {
    // SKIFF_KUBECTL_ONLY=1.32,1.33 narrows the run to those versions while debugging.
    let only = std::env::var("SKIFF_KUBECTL_ONLY").ok();
    let binaries: Vec<Kubectl> = kubectl_binaries()
        .into_iter()
        .filter(|k| only.as_deref().is_none_or(|v| v.split(',').any(|v| v == k.version)))
        .collect();
    if binaries.is_empty() {
        eprintln!("no kubectl.1.NN binaries on PATH; skipping");
        return;
    }
    let server = InProcessServer::start_with(|c| {
        if let Some(components) = c.components.as_mut() {
            components.simulate_nodes = 2;
        }
    })
    .await
    .expect("server starts");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path();
    futures::stream::iter(binaries.iter().map(|k| {
        let kc = Kc::new(k, &server.kubeconfig, path);
        async move { kc.scenarios().await }
    }))
    .buffer_unordered(CONCURRENT_VERSIONS)
    .collect::<Vec<()>>()
    .await;
}

/// What one kubectl run produced.
struct Out {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// One kubectl version, its namespace and a scratch dir.
struct Kc {
    version: String,
    path: PathBuf,
    kubeconfig: PathBuf,
    cache: PathBuf,
    scratch: PathBuf,
    /// The namespace this version's namespaced objects live in.
    ns: String,
}

impl Kc {
    fn new(k: &Kubectl, kubeconfig: &Path, dir: &Path) -> Kc {
        let tag = format!("m{}", k.version.replace('.', "-"));
        let scratch = dir.join(&tag);
        std::fs::create_dir_all(&scratch).unwrap();
        Kc {
            version: k.version.clone(),
            path: k.path.clone(),
            kubeconfig: kubeconfig.to_path_buf(),
            cache: scratch.join("cache"),
            scratch,
            ns: tag,
        }
    }

    async fn scenarios(&self) {
        self.ok(&["create", "namespace", &self.ns]).await;
        let started = Instant::now();
        macro_rules! timed {
            ($($step:ident),*) => {$(
                let t = Instant::now();
                self.$step().await;
                eprintln!("kubectl {}: {} took {:?}", self.version, stringify!($step), t.elapsed());
            )*};
        }
        timed!(
            apply_twice_and_diff,
            server_side_apply_conflict,
            patches,
            label_annotate_scale,
            output_formats,
            edit,
            replace,
            wait,
            watch,
            cascades,
            errors
        );
        eprintln!("kubectl {}: all took {:?}", self.version, started.elapsed());
        self.ok(&["delete", "namespace", &self.ns, "--wait=false"]).await;
    }

    // ---- running kubectl ----

    async fn run_with(&self, args: &[&str], stdin: Option<&str>, env: &[(&str, &str)]) -> Out {
        let mut cmd = tokio::process::Command::new(&self.path);
        cmd.args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            .env("KUBECACHEDIR", &self.cache)
            .env_remove("KUBE_EDITOR")
            .env_remove("EDITOR")
            .envs(env.iter().copied())
            .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd.spawn().expect("kubectl starts");
        if let Some(input) = stdin {
            let mut pipe = child.stdin.take().unwrap();
            pipe.write_all(input.as_bytes()).await.unwrap();
            drop(pipe);
        }
        let out = tokio::time::timeout(Duration::from_secs(90), child.wait_with_output())
            .await
            .unwrap_or_else(|_| panic!("kubectl {} {args:?} timed out", self.version))
            .expect("kubectl runs");
        Out {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    async fn run(&self, args: &[&str]) -> Out {
        self.run_with(args, None, &[]).await
    }

    /// `-n NS args...`
    async fn run_ns(&self, args: &[&str], stdin: Option<&str>) -> Out {
        let mut full = vec!["-n", self.ns.as_str()];
        full.extend_from_slice(args);
        self.run_with(&full, stdin, &[]).await
    }

    fn check(&self, args: &[&str], out: &Out, want_code: i32) {
        assert_eq!(
            out.code,
            Some(want_code),
            "kubectl {} {args:?} exited {:?}:\nstdout: {}\nstderr: {}",
            self.version,
            out.code,
            out.stdout,
            out.stderr
        );
    }

    async fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args).await;
        self.check(args, &out, 0);
        out.stdout
    }

    /// Runs in this version's namespace and expects success; returns stdout.
    async fn ok_ns(&self, args: &[&str]) -> String {
        let out = self.run_ns(args, None).await;
        self.check(args, &out, 0);
        out.stdout
    }

    async fn ok_stdin(&self, args: &[&str], stdin: &str) -> String {
        let out = self.run_ns(args, Some(stdin)).await;
        self.check(args, &out, 0);
        out.stdout
    }

    /// Runs in this version's namespace, expects exit code 1; returns stderr.
    async fn fails_ns(&self, args: &[&str], stdin: Option<&str>) -> String {
        let out = self.run_ns(args, stdin).await;
        self.check(args, &out, 1);
        out.stderr
    }

    async fn jsonpath(&self, resource: &str, path: &str) -> String {
        self.ok_ns(&["get", resource, "-o", &format!("jsonpath={path}")]).await
    }

    /// Polls `kubectl -n NS args` until `done(stdout)` holds.
    async fn eventually(&self, args: &[&str], what: &str, done: impl Fn(&Out) -> bool) -> Out {
        let deadline = Instant::now() + EVENTUALLY;
        loop {
            let out = self.run_ns(args, None).await;
            if done(&out) {
                return out;
            }
            assert!(
                Instant::now() < deadline,
                "kubectl {}: {what}: last {args:?}: {} {}",
                self.version,
                out.stdout,
                out.stderr
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The next line a running `get -w` prints (recorded in `seen`).
    async fn next_line(
        &self,
        lines: &mut Lines<BufReader<ChildStdout>>,
        seen: &mut Vec<String>,
    ) -> String {
        let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .unwrap_or_else(|_| {
                panic!("kubectl {}: get -w printed {seen:?} then nothing", self.version)
            })
            .unwrap()
            .unwrap_or_else(|| panic!("kubectl {}: get -w ended after {seen:?}", self.version));
        seen.push(line.clone());
        line
    }

    /// `replicaset.apps/NAME` of the deployment `name` (once there is exactly one).
    async fn replica_set_of(&self, name: &str) -> String {
        let selector = format!("app={name}");
        let out = self
            .eventually(&["get", "rs", "-l", &selector, "-o", "name"], "one replica set", |o| {
                o.stdout.lines().count() == 1
            })
            .await;
        out.stdout.trim().to_string()
    }

    fn file(&self, name: &str, content: &str) -> String {
        let path = self.scratch.join(name);
        std::fs::write(&path, content).unwrap();
        path.to_str().unwrap().to_string()
    }

    fn is(&self, what: &str, got: &str, want: &str) {
        assert_eq!(got.trim_end(), want.trim_end(), "kubectl {}: {what}", self.version);
    }

    fn has(&self, what: &str, got: &str, want: &str) {
        assert!(got.contains(want), "kubectl {}: {what}: {want:?} not in:\n{got}", self.version);
    }

    // ---- scenarios ----

    /// Client-side apply twice, one container's image of two changing; diff before and after.
    async fn apply_twice_and_diff(&self) {
        let first = self.file("two.yaml", &two_containers("nginx:1.25"));
        let second = self.file("two-changed.yaml", &two_containers("nginx:1.27"));
        let out = self.ok_ns(&["apply", "-f", &first]).await;
        self.is("first apply", &out, "deployment.apps/two created");

        let same = self.run_ns(&["diff", "-f", &first], None).await;
        self.check(&["diff", "unchanged"], &same, 0);
        self.is("diff of an unchanged manifest", &same.stdout, "");
        let changed = self.run_ns(&["diff", "-f", &second], None).await;
        self.check(&["diff", "changed"], &changed, 1);
        self.has("diff", &changed.stdout, "-      - image: nginx:1.25\n");
        self.has("diff", &changed.stdout, "+      - image: nginx:1.27\n");
        self.has("diff", &changed.stdout, "-  generation: 1\n+  generation: 2\n");
        let changed_lines: Vec<&str> = changed
            .stdout
            .lines()
            .filter(|l| {
                (l.starts_with('-') || l.starts_with('+'))
                    && !l.starts_with("---")
                    && !l.starts_with("+++")
            })
            .collect();
        assert_eq!(changed_lines.len(), 4, "kubectl {}: diff: {}", self.version, changed.stdout);

        let out = self.ok_ns(&["apply", "-f", &second]).await;
        self.is("second apply", &out, "deployment.apps/two configured");
        let images = self.jsonpath("deploy/two", "{.spec.template.spec.containers[*].image}").await;
        self.is("images after apply", &images, "nginx:1.27 busybox:1.36");
        let command =
            self.jsonpath("deploy/two", "{.spec.template.spec.containers[1].command}").await;
        self.is("untouched container", &command, r#"["sleep","3600"]"#);
        let applied = self
            .jsonpath(
                "deploy/two",
                r"{.metadata.annotations.kubectl\.kubernetes\.io/last-applied-configuration}",
            )
            .await;
        self.has("last-applied", &applied, "\"image\":\"nginx:1.27\"");
        let out = self.ok_ns(&["apply", "-f", &second]).await;
        self.is("third apply", &out, "deployment.apps/two unchanged");
        let same = self.run_ns(&["diff", "-f", &second], None).await;
        self.check(&["diff", "after apply"], &same, 0);
    }

    /// Server-side apply of a field client-side apply owns conflicts; forcing takes it over.
    async fn server_side_apply_conflict(&self) {
        let manifest = two_containers("nginx:1.28");
        let err = self.fails_ns(&["apply", "--server-side", "-f", "-"], Some(&manifest)).await;
        let first = err.lines().next().unwrap_or_default();
        self.is(
            "server-side apply conflict",
            first,
            "error: Apply failed with 1 conflict: conflict with \"kubectl-client-side-apply\" \
             using apps/v1: .spec.template.spec.containers[name=\"a\"].image",
        );
        self.has("conflict help", &err, "--force-conflicts");
        let out = self
            .ok_stdin(&["apply", "--server-side", "--force-conflicts", "-f", "-"], &manifest)
            .await;
        self.is("forced server-side apply", &out, "deployment.apps/two serverside-applied");
        let images = self.jsonpath("deploy/two", "{.spec.template.spec.containers[*].image}").await;
        self.is("images after server-side apply", &images, "nginx:1.28 busybox:1.36");
        let managers = self.jsonpath("deploy/two", "{.metadata.managedFields[*].manager}").await;
        self.has("managers", &managers, "kubectl");
    }

    /// Patches of every type on every kind; each kind's result checked by one jsonpath.
    async fn patches(&self) {
        self.ok_stdin(&["apply", "-f", "-"], KINDS).await;
        let ns_res = format!("namespace/{}", self.ns);
        // (resource, [(type, patch)], jsonpath, expected after all of them)
        let cases: Vec<(&str, Vec<(&str, &str)>, &str, &str)> = vec![
            (
                "cm/cm1",
                vec![
                    ("merge", r#"{"data":{"b":"2","c":"3"}}"#),
                    ("json", r#"[{"op":"replace","path":"/data/a","value":"x"}]"#),
                    ("strategic", r#"{"data":{"c":null}}"#),
                ],
                "{.data}",
                r#"{"a":"x","b":"2"}"#,
            ),
            (
                "secret/s1",
                vec![
                    ("merge", r#"{"data":{"b":"Mg=="}}"#),
                    ("json", r#"[{"op":"remove","path":"/data/a"}]"#),
                    ("strategic", r#"{"type":"Opaque","data":{"c":"Mw=="}}"#),
                ],
                "{.data}",
                r#"{"b":"Mg==","c":"Mw=="}"#,
            ),
            (
                // Strategic merges ports by port (new ones first, as upstream orders them);
                // merge replaces the list.
                "svc/svc1",
                vec![
                    (
                        "merge",
                        r#"{"spec":{"ports":[{"name":"http","port":8080,"targetPort":8080}]}}"#,
                    ),
                    ("json", r#"[{"op":"replace","path":"/spec/selector","value":{"app":"y"}}]"#),
                    (
                        "strategic",
                        r#"{"spec":{"ports":[{"name":"https","port":443,"targetPort":8443}]}}"#,
                    ),
                ],
                "{.spec.ports[*].port} {.spec.selector}",
                r#"443 8080 {"app":"y"}"#,
            ),
            (
                "pod/pod1",
                vec![
                    ("strategic", r#"{"spec":{"containers":[{"name":"c","image":"nginx:1.26"}]}}"#),
                    (
                        "json",
                        r#"[{"op":"replace","path":"/spec/containers/1/image","value":"busybox:1.37"}]"#,
                    ),
                    ("merge", r#"{"metadata":{"annotations":{"m":"1"}}}"#),
                ],
                "{.spec.containers[*].image} {.metadata.annotations.m}",
                "nginx:1.26 busybox:1.37 1",
            ),
            (
                "job/job1",
                vec![
                    ("merge", r#"{"spec":{"activeDeadlineSeconds":600}}"#),
                    ("json", r#"[{"op":"replace","path":"/spec/parallelism","value":2}]"#),
                    (
                        "strategic",
                        r#"{"metadata":{"labels":{"tier":"batch"}},"spec":{"backoffLimit":3}}"#,
                    ),
                ],
                // A job without labels of its own has its template's (with the generated ones).
                "{.spec.activeDeadlineSeconds} {.spec.parallelism} {.metadata.labels.tier} \
                 {.spec.backoffLimit} {.metadata.labels.job-name}",
                "600 2 batch 3 job1",
            ),
            (
                // Strategic merges containers by name: one image changes, the other stays.
                "deploy/two",
                vec![
                    (
                        "strategic",
                        r#"{"spec":{"template":{"spec":{"containers":[{"name":"b","image":"busybox:1.37"}]}}}}"#,
                    ),
                    (
                        "json",
                        r#"[{"op":"replace","path":"/spec/template/spec/containers/0/image","value":"nginx:1.29"}]"#,
                    ),
                    ("merge", r#"{"spec":{"minReadySeconds":1}}"#),
                ],
                "{.spec.template.spec.containers[*].image} {.spec.minReadySeconds}",
                "nginx:1.29 busybox:1.37 1",
            ),
            (
                &ns_res,
                vec![
                    ("merge", r#"{"metadata":{"labels":{"m":"1"}}}"#),
                    ("json", r#"[{"op":"add","path":"/metadata/labels/j","value":"2"}]"#),
                    ("strategic", r#"{"metadata":{"labels":{"m":null}}}"#),
                ],
                "{.metadata.labels.m}/{.metadata.labels.j}",
                "/2",
            ),
        ];
        for (res, patches, path, want) in cases {
            for (kind, patch) in patches {
                let out = self.ok_ns(&["patch", res, "--type", kind, "-p", patch]).await;
                self.has(&format!("{kind} patch {patch} of {res}"), &out, " patched\n");
            }
            self.is(&format!("patches of {res}"), &self.jsonpath(res, path).await, want);
        }
        // A patch that changes nothing says so.
        let out = self
            .ok_ns(&["patch", "cm/cm1", "--type", "merge", "-p", r#"{"data":{"b":"2"}}"#])
            .await;
        self.is("no-op patch", &out, "configmap/cm1 patched (no change)");
        // kubectl patch sends no fieldValidation: unknown fields are dropped with a warning.
        let args = ["patch", "cm/cm1", "--type", "merge", "-p", r#"{"spec":{"x":1}}"#];
        let out = self.run_ns(&args, None).await;
        self.check(&args, &out, 0);
        self.is("patch with an unknown field", &out.stdout, "configmap/cm1 patched (no change)");
        self.is("unknown field warning", &out.stderr, "Warning: unknown field \"spec\"");
    }

    /// label and annotate (with --overwrite and removal) every kind at once; scale.
    async fn label_annotate_scale(&self) {
        let ns_res = format!("namespace/{}", self.ns);
        // Label values name the version: namespaces are shared with the other versions.
        let (red, blue) = (format!("red-{}", self.ns), format!("blue-{}", self.ns));
        let all =
            ["cm/cm1", "secret/s1", "svc/svc1", "pod/pod1", "job/job1", "deploy/two", &ns_res];
        let printed = [
            "configmap/cm1",
            "secret/s1",
            "service/svc1",
            "pod/pod1",
            "job.batch/job1",
            "deployment.apps/two",
            &ns_res,
        ];
        let on_all = |verb: &str, arg: &str, overwrite: bool| -> Vec<String> {
            let mut args = vec![verb.to_string()];
            args.extend(all.iter().map(|s| s.to_string()));
            args.push(arg.to_string());
            if overwrite {
                args.push("--overwrite".into());
            }
            args
        };
        let state = format!(
            "jsonpath={{range .items[*]}}{{.kind}}:{{.metadata.labels.color}}:\
             {{.metadata.annotations.note}} {{end}}"
        );
        let mut get_state = vec!["get".to_string()];
        get_state.extend(all.iter().map(|s| s.to_string()));
        get_state.extend(["-o".to_string(), state]);
        let get_state: Vec<&str> = get_state.iter().map(String::as_str).collect();
        let expect_state = |color: &str, note: &str| -> String {
            ["ConfigMap", "Secret", "Service", "Pod", "Job", "Deployment", "Namespace"]
                .iter()
                .map(|k| format!("{k}:{color}:{note} "))
                .collect()
        };
        let strs = |v: &[String]| -> Vec<String> { v.to_vec() };
        let run = async |args: Vec<String>| -> String {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            self.ok_ns(&args).await
        };

        let out = run(strs(&on_all("label", &format!("color={red}"), false))).await;
        let want: Vec<String> = printed.iter().map(|p| format!("{p} labeled")).collect();
        self.is("label", &out, &want.join("\n"));
        let err = self.fails_ns(&["label", "cm/cm1", &format!("color={blue}")], None).await;
        self.is(
            "label without --overwrite",
            &err,
            &format!("error: 'color' already has a value ({red}), and --overwrite is false"),
        );
        run(strs(&on_all("label", &format!("color={blue}"), true))).await;
        let listed = self
            .ok_ns(&[
                "get",
                "cm,secret,svc,pod,job,deploy,ns",
                "-l",
                &format!("color={blue}"),
                "-o",
                "name",
            ])
            .await;
        let mut want: Vec<&str> = printed.to_vec();
        want.sort();
        let mut got: Vec<&str> = listed.lines().collect();
        got.sort();
        assert_eq!(got, want, "kubectl {}: label selector across kinds", self.version);

        let out = run(strs(&on_all("annotate", "note=first", false))).await;
        for p in printed {
            self.has("annotate", &out, &format!("{p} annotate"));
        }
        let err = self.fails_ns(&["annotate", "deploy/two", "note=second"], None).await;
        self.has("annotate without --overwrite", &err, "'note' already has a value (first)");
        run(strs(&on_all("annotate", "note=second", true))).await;
        self.is(
            "labels and annotations",
            &self.ok_ns(&get_state).await,
            &expect_state(&blue, "second"),
        );
        let out = run(strs(&on_all("label", "color-", false))).await;
        let want: Vec<String> = printed.iter().map(|p| format!("{p} unlabeled")).collect();
        self.is("unlabel", &out, &want.join("\n"));
        run(strs(&on_all("annotate", "note-", false))).await;
        self.is("removed", &self.ok_ns(&get_state).await, &expect_state("", ""));

        let out = self.ok_ns(&["scale", "deploy/two", "--replicas=3"]).await;
        self.is("scale", &out, "deployment.apps/two scaled");
        self.is("scaled", &self.jsonpath("deploy/two", "{.spec.replicas}").await, "3");
        let err = self
            .fails_ns(&["scale", "deploy/two", "--replicas=1", "--current-replicas=2"], None)
            .await;
        self.is("scale precondition", &err, "error: Expected replicas to be 2, was 3");
        self.ok_ns(&["scale", "deploy/two", "--replicas=2", "--current-replicas=3"]).await;
        self.is("scaled back", &self.jsonpath("deploy/two", "{.spec.replicas}").await, "2");
    }

    /// -o wide (the server's columns), yaml, json, jsonpath, custom-columns and name on every
    /// kind.
    async fn output_formats(&self) {
        let ns_res = format!("namespace/{}", self.ns);
        let ns_name = self.ns.as_str();
        // (resource, kind, wide header)
        let kinds: Vec<(&str, &str, &str)> = vec![
            ("cm/cm1", "ConfigMap", "NAME DATA AGE"),
            ("secret/s1", "Secret", "NAME TYPE DATA AGE"),
            ("svc/svc1", "Service", "NAME TYPE CLUSTER-IP EXTERNAL-IP PORT(S) AGE SELECTOR"),
            (
                "pod/pod1",
                "Pod",
                "NAME READY STATUS RESTARTS AGE IP NODE NOMINATED NODE READINESS GATES",
            ),
            ("job/job1", "Job", "NAME STATUS COMPLETIONS DURATION AGE CONTAINERS IMAGES SELECTOR"),
            (
                "deploy/two",
                "Deployment",
                "NAME READY UP-TO-DATE AVAILABLE AGE CONTAINERS IMAGES SELECTOR",
            ),
            (&ns_res, "Namespace", "NAME STATUS AGE"),
        ];
        let names: Vec<&str> = kinds.iter().map(|(r, _, _)| r.split('/').nth(1).unwrap()).collect();
        let resources: Vec<&str> = kinds.iter().map(|(r, _, _)| *r).collect();
        let get = async |format: &str| -> String {
            let mut args = vec!["get"];
            args.extend(resources.iter().copied());
            args.extend(["-o", format]);
            self.ok_ns(&args).await
        };

        // wide: one table per kind, each with the server's columns and one row.
        let wide = get("wide").await;
        let tables: Vec<&str> =
            wide.split("\n\n").map(str::trim).filter(|t| !t.is_empty()).collect();
        assert_eq!(tables.len(), kinds.len(), "kubectl {}: -o wide:\n{wide}", self.version);
        for ((res, _, header), table) in kinds.iter().zip(&tables) {
            let mut lines = table.lines();
            let head: Vec<&str> = lines.next().unwrap_or_default().split_whitespace().collect();
            self.is(&format!("{res} -o wide header"), &head.join(" "), header);
            let row = lines.next().unwrap_or_default();
            let (prefix, name) = res.split_once('/').unwrap();
            let _ = prefix;
            assert!(
                row.split_whitespace().next().is_some_and(|n| n.ends_with(&format!("/{name}"))),
                "kubectl {}: {res} -o wide row: {row}",
                self.version
            );
        }
        let wide = self.ok_ns(&["get", "svc", "svc1", "-o", "wide"]).await;
        let row: Vec<&str> = wide.lines().nth(1).unwrap_or_default().split_whitespace().collect();
        assert!(
            row.len() == 7
                && row[1] == "ClusterIP"
                && row[2].starts_with("10.43.")
                && row[3] == "<none>",
            "kubectl {}: {wide}",
            self.version
        );
        self.is("service ports", row[4], "443/TCP,8080/TCP");
        self.is("service selector", row[6], "app=y");

        // json and yaml: a List of the objects, in order.
        let json = get("json").await;
        let list: serde_json::Value = serde_json::from_str(&json).expect("-o json is JSON");
        self.is("-o json list", list["kind"].as_str().unwrap_or_default(), "List");
        let items = list["items"].as_array().cloned().unwrap_or_default();
        assert_eq!(items.len(), kinds.len(), "kubectl {}: {json}", self.version);
        for ((_, kind, _), (item, name)) in kinds.iter().zip(items.iter().zip(&names)) {
            self.is("-o json kind", item["kind"].as_str().unwrap_or_default(), kind);
            self.is("-o json name", item["metadata"]["name"].as_str().unwrap_or_default(), name);
            assert!(
                item["metadata"]["uid"].is_string()
                    && item["metadata"]["resourceVersion"].is_string()
            );
        }
        let yaml = get("yaml").await;
        self.has("-o yaml", &yaml, "apiVersion: v1\nitems:\n- apiVersion: v1\n  data:\n");
        for (_, kind, _) in &kinds {
            self.has("-o yaml", &yaml, &format!("\n  kind: {kind}\n"));
        }
        let single = self.ok_ns(&["get", "cm/cm1", "-o", "yaml"]).await;
        self.has(
            "-o yaml",
            &single,
            "apiVersion: v1\ndata:\n  a: x\n  b: \"2\"\nkind: ConfigMap\nmetadata:\n",
        );

        // jsonpath and custom-columns over the same list.
        let jp = get("jsonpath={range .items[*]}{.kind}/{.metadata.name} {end}").await;
        let want: String =
            kinds.iter().zip(&names).map(|((_, k, _), n)| format!("{k}/{n} ")).collect();
        self.is("-o jsonpath", &jp, &want);
        let custom = get("custom-columns=KIND:.kind,NAME:.metadata.name,UID:.metadata.uid").await;
        let rows: Vec<Vec<&str>> = custom.lines().map(|l| l.split_whitespace().collect()).collect();
        assert_eq!(
            rows.len(),
            kinds.len() + 1,
            "kubectl {}: custom-columns: {custom}",
            self.version
        );
        assert_eq!(rows[0], ["KIND", "NAME", "UID"], "kubectl {}", self.version);
        for (row, (item, name)) in rows[1..].iter().zip(items.iter().zip(&names)) {
            assert_eq!(
                row,
                &[item["kind"].as_str().unwrap(), name, item["metadata"]["uid"].as_str().unwrap()],
                "kubectl {}: custom-columns",
                self.version
            );
        }
        let names_out = get("name").await;
        let want: Vec<String> = [
            "configmap/cm1",
            "secret/s1",
            "service/svc1",
            "pod/pod1",
            "job.batch/job1",
            "deployment.apps/two",
        ]
        .iter()
        .map(|s| s.to_string())
        .chain([format!("namespace/{ns_name}")])
        .collect();
        self.is("-o name", &names_out, &want.join("\n"));
    }

    /// kubectl edit with an editor that rewrites the file; an unchanged edit is cancelled.
    async fn edit(&self) {
        self.ok_ns(&["create", "configmap", "ed", "--from-literal=k=before-edit"]).await;
        self.ok_ns(&["create", "deployment", "ed", "--image=nginx:before-edit", "--replicas=1"])
            .await;
        for (res, printed, path, want) in [
            ("cm/ed", "configmap/ed", "{.data.k}", "after-edit"),
            (
                "deploy/ed",
                "deployment.apps/ed",
                "{.spec.template.spec.containers[0].image}",
                "nginx:after-edit",
            ),
        ] {
            let out = self
                .run_with(
                    &["-n", &self.ns, "edit", res],
                    None,
                    &[("KUBE_EDITOR", "sed -i -e s/before-edit/after-edit/")],
                )
                .await;
            self.check(&["edit", res], &out, 0);
            self.is("edit", &out.stdout, &format!("{printed} edited"));
            self.is("edited", &self.jsonpath(res, path).await, want);
            let out =
                self.run_with(&["-n", &self.ns, "edit", res], None, &[("EDITOR", "true")]).await;
            self.check(&["edit", "unchanged"], &out, 0);
            self.is("unchanged edit", &out.stderr, "Edit cancelled, no changes made.");
        }
        // An edit the server rejects leaves the object alone and reports the error.
        let out = self
            .run_with(
                &["-n", &self.ns, "edit", "deploy/ed"],
                None,
                &[("KUBE_EDITOR", "sed -i -e s/replicas:\\ 1/replicas:\\ -1/")],
            )
            .await;
        self.check(&["edit", "invalid"], &out, 1);
        // kubectl reopens the editor with the causes as comments, gives up when nothing changes,
        // and keeps a copy of the file.
        self.has("invalid edit", &out.stderr, "error: deployments.apps \"ed\" is invalid\n");
        self.has(
            "invalid edit",
            &out.stderr,
            "error: Edit cancelled, no valid changes were saved.",
        );
        let copy = out
            .stderr
            .split('"')
            .find(|s| s.ends_with(".yaml") && s.contains("-edit-"))
            .unwrap_or_else(|| panic!("kubectl {}: no copy in {}", self.version, out.stderr));
        let kept = std::fs::read_to_string(copy).unwrap_or_default();
        let _ = std::fs::remove_file(copy);
        self.has("edit copy", &kept, "# deployments.apps \"ed\" was not valid:\n");
        self.has(
            "edit copy",
            &kept,
            "# * spec.replicas: Invalid value: -1: must be greater than or equal to 0\n",
        );
        self.is("unedited", &self.jsonpath("deploy/ed", "{.spec.replicas}").await, "1");
    }

    /// replace from a file, a stale resourceVersion conflict, and replace --force.
    async fn replace(&self) {
        self.ok_ns(&["create", "configmap", "rep", "--from-literal=k=one"]).await;
        let yaml = self.ok_ns(&["get", "cm/rep", "-o", "yaml"]).await;
        let two = yaml.replace("k: one", "k: two");
        let out = self.ok_stdin(&["replace", "-f", "-"], &two).await;
        self.is("replace", &out, "configmap/rep replaced");
        self.is("replaced", &self.jsonpath("cm/rep", "{.data.k}").await, "two");

        let three = yaml.replace("k: one", "k: three");
        let err = self.fails_ns(&["replace", "-f", "-"], Some(&three)).await;
        self.is(
            "stale replace",
            &err,
            "Error from server (Conflict): error when replacing \"STDIN\": Operation cannot be \
             fulfilled on configmaps \"rep\": the object has been modified; please apply your \
             changes to the latest version and try again",
        );

        let uid = self.jsonpath("cm/rep", "{.metadata.uid}").await;
        let file = self.file("rep.yaml", &three);
        let out = self.ok_ns(&["replace", "--force", "-f", &file]).await;
        self.is("replace --force", &out, "configmap \"rep\" deleted\nconfigmap/rep replaced");
        self.is("forced", &self.jsonpath("cm/rep", "{.data.k}").await, "three");
        assert_ne!(
            self.jsonpath("cm/rep", "{.metadata.uid}").await,
            uid,
            "replace --force recreates"
        );

        // Replace of a deployment: the new template rolls out.
        let yaml = self.ok_ns(&["get", "deploy/ed", "-o", "yaml"]).await;
        let out = self
            .ok_stdin(&["replace", "-f", "-"], &yaml.replace("nginx:after-edit", "nginx:replaced"))
            .await;
        self.is("replace deployment", &out, "deployment.apps/ed replaced");
        self.eventually(
            &[
                "get",
                "rs",
                "-l",
                "app=ed",
                "-o",
                "jsonpath={.items[*].spec.template.spec.containers[0].image}",
            ],
            "a replica set for the replaced template",
            |o| o.stdout.contains("nginx:replaced"),
        )
        .await;
    }

    /// wait for conditions, a jsonpath value, deletion, and a timeout.
    async fn wait(&self) {
        let out =
            self.ok_ns(&["wait", "--for=condition=Available", "deploy/two", "--timeout=60s"]).await;
        self.is("wait available", &out, "deployment.apps/two condition met");
        let out = self.ok_ns(&["wait", "--for=condition=Ready", "pod/pod1", "--timeout=60s"]).await;
        self.is("wait ready", &out, "pod/pod1 condition met");
        let out = self
            .ok_ns(&["wait", "--for=jsonpath={.status.phase}=Running", "pod/pod1", "--timeout=60s"])
            .await;
        self.is("wait jsonpath", &out, "pod/pod1 condition met");
        let out = self
            .ok_ns(&["wait", "--for=condition=Available", "deploy", "--all", "--timeout=60s"])
            .await;
        self.has("wait --all", &out, "deployment.apps/two condition met");

        let err =
            self.fails_ns(&["wait", "--for=condition=Nope", "cm/cm1", "--timeout=1s"], None).await;
        self.is(
            "wait timeout",
            &err,
            "error: timed out waiting for the condition on configmaps/cm1",
        );

        // A finalizer holds the object until the waiter is running.
        self.ok_stdin(
            &["create", "-f", "-"],
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: held\n  finalizers: [skiff.test/hold]\n",
        )
        .await;
        let out = self.ok_ns(&["delete", "cm/held", "--wait=false"]).await;
        self.is("delete held", &out, "configmap \"held\" deleted");
        let ts = self.jsonpath("cm/held", "{.metadata.deletionTimestamp}").await;
        assert!(!ts.is_empty(), "kubectl {}: deletionTimestamp set", self.version);
        let wait_args =
            ["-n", self.ns.as_str(), "wait", "--for=delete", "cm/held", "--timeout=60s"];
        let waiter = self.run_with(&wait_args, None, &[]);
        let release = async {
            tokio::time::sleep(Duration::from_millis(500)).await;
            self.ok_ns(&[
                "patch",
                "cm/held",
                "--type=merge",
                "-p",
                r#"{"metadata":{"finalizers":null}}"#,
            ])
            .await
        };
        let (waited, _) = tokio::join!(waiter, release);
        self.check(&["wait", "--for=delete"], &waited, 0);
        self.is("wait for delete", &waited.stdout, "configmap/held condition met");
        let err = self.fails_ns(&["get", "cm/held"], None).await;
        self.is("gone", &err, "Error from server (NotFound): configmaps \"held\" not found");
    }

    /// get -w prints the initial list and then each change.
    async fn watch(&self) {
        self.ok_ns(&["create", "configmap", "watch-a"]).await;
        let mut child = tokio::process::Command::new(&self.path)
            .args([
                "-n",
                &self.ns,
                "get",
                "configmaps",
                "--watch",
                "--field-selector=metadata.name!=kube-root-ca.crt",
            ])
            .env("KUBECONFIG", &self.kubeconfig)
            .env("KUBECACHEDIR", &self.cache)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("kubectl get -w starts");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut seen = Vec::new();
        let header = self.next_line(&mut lines, &mut seen).await;
        let head: Vec<&str> = header.split_whitespace().collect();
        assert_eq!(head, ["NAME", "DATA", "AGE"], "kubectl {}", self.version);
        loop {
            let line = self.next_line(&mut lines, &mut seen).await;
            if line.starts_with("watch-a ") {
                break;
            }
        }
        self.ok_ns(&["create", "configmap", "watch-b", "--from-literal=x=y"]).await;
        let line = self.next_line(&mut lines, &mut seen).await;
        let cols: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(cols[..2], ["watch-b", "1"], "kubectl {}: {seen:?}", self.version);
        self.ok_ns(&["label", "cm/watch-a", "seen=yes"]).await;
        let line = self.next_line(&mut lines, &mut seen).await;
        assert!(line.starts_with("watch-a "), "kubectl {}: {seen:?}", self.version);
        self.ok_ns(&["delete", "cm/watch-b"]).await;
        let line = self.next_line(&mut lines, &mut seen).await;
        assert!(line.starts_with("watch-b "), "kubectl {}: {seen:?}", self.version);
        child.start_kill().unwrap();
        let _ = child.wait().await;

        // With --output-watch-events and -o json every event names its type.
        let mut child = tokio::process::Command::new(&self.path)
            .args([
                "-n",
                &self.ns,
                "get",
                "configmap",
                "watch-a",
                "--watch",
                "--output-watch-events",
                "-o",
                "jsonpath={.type} {.object.metadata.name}{\"\\n\"}",
            ])
            .env("KUBECONFIG", &self.kubeconfig)
            .env("KUBECACHEDIR", &self.cache)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("kubectl get -w starts");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut seen = Vec::new();
        self.is("first watch event", &self.next_line(&mut lines, &mut seen).await, "ADDED watch-a");
        self.ok_ns(&["annotate", "cm/watch-a", "seen=yes"]).await;
        self.is(
            "second watch event",
            &self.next_line(&mut lines, &mut seen).await,
            "MODIFIED watch-a",
        );
        self.ok_ns(&["delete", "cm/watch-a"]).await;
        self.is(
            "third watch event",
            &self.next_line(&mut lines, &mut seen).await,
            "DELETED watch-a",
        );
        child.start_kill().unwrap();
        let _ = child.wait().await;
    }

    /// delete --cascade=background|orphan|foreground on deployments.
    async fn cascades(&self) {
        for name in ["bg", "orphan", "fg"] {
            self.ok_ns(&["create", "deployment", name, "--image=nginx:1.25", "--replicas=1"]).await;
        }
        for name in ["bg", "orphan", "fg"] {
            self.ok_ns(&[
                "wait",
                "--for=condition=Available",
                &format!("deploy/{name}"),
                "--timeout=60s",
            ])
            .await;
        }
        // background: the deployment goes at once, its replica set and pods after it.
        let rs = self.replica_set_of("bg").await;
        let out = self.ok_ns(&["delete", "deploy/bg", "--cascade=background"]).await;
        self.is("delete background", &out, "deployment.apps \"bg\" deleted");
        self.ok_ns(&["wait", "--for=delete", &rs, "--timeout=60s"]).await;
        self.eventually(&["get", "pods", "-l", "app=bg", "-o", "name"], "pods of bg gone", |o| {
            o.stdout.is_empty()
        })
        .await;

        // orphan: the replica set and its pods stay, without an owner.
        let rs = self.replica_set_of("orphan").await;
        let out = self.ok_ns(&["delete", "deploy/orphan", "--cascade=orphan"]).await;
        self.is("delete orphan", &out, "deployment.apps \"orphan\" deleted");
        let err = self.fails_ns(&["get", "deploy/orphan"], None).await;
        self.is(
            "orphaning owner gone",
            &err,
            "Error from server (NotFound): deployments.apps \"orphan\" not found",
        );
        let owners = self.jsonpath(&rs, "{.metadata.ownerReferences}").await;
        self.is("orphaned replica set owners", &owners, "");
        let yaml = self.ok_ns(&["get", &rs, "-o", "yaml"]).await;
        assert!(!yaml.contains("ownerReferences"), "kubectl {}: {yaml}", self.version);
        self.is(
            "orphaned replica set replicas",
            &self.jsonpath(&rs, "{.spec.replicas}").await,
            "1",
        );
        let pods = self
            .ok_ns(&[
                "get",
                "pods",
                "-l",
                "app=orphan",
                "-o",
                "jsonpath={.items[*].metadata.ownerReferences[0].kind}",
            ])
            .await;
        self.is("orphaned pods keep their replica set", &pods, "ReplicaSet");

        // foreground: the deployment stays (deleting) until its dependents are gone; a finalizer
        // on the replica set holds it so the order is observable.
        let rs = self.replica_set_of("fg").await;
        self.ok_ns(&[
            "patch",
            &rs,
            "--type=merge",
            "-p",
            r#"{"metadata":{"finalizers":["skiff.test/hold"]}}"#,
        ])
        .await;
        let out =
            self.ok_ns(&["delete", "deploy/fg", "--cascade=foreground", "--wait=false"]).await;
        self.is("delete foreground", &out, "deployment.apps \"fg\" deleted");
        let finalizers = self.jsonpath("deploy/fg", "{.metadata.finalizers}").await;
        self.is("foreground finalizer", &finalizers, r#"["foregroundDeletion"]"#);
        // The replica set is being deleted, its pods go, and only the test's finalizer is left.
        self.eventually(
            &["get", &rs, "-o", "jsonpath={.metadata.finalizers}"],
            "replica set deleted in the foreground",
            |o| o.stdout == r#"["skiff.test/hold"]"#,
        )
        .await;
        self.eventually(&["get", "pods", "-l", "app=fg", "-o", "name"], "pods of fg gone", |o| {
            o.stdout.is_empty()
        })
        .await;
        let ts = self.jsonpath(&rs, "{.metadata.deletionTimestamp}").await;
        assert!(!ts.is_empty(), "kubectl {}: replica set deleting", self.version);
        let still = self.jsonpath("deploy/fg", "{.metadata.deletionTimestamp}").await;
        assert!(
            !still.is_empty(),
            "kubectl {}: the deployment waits for its dependents",
            self.version
        );
        self.ok_ns(&["patch", &rs, "--type=merge", "-p", r#"{"metadata":{"finalizers":null}}"#])
            .await;
        let out = self.ok_ns(&["wait", "--for=delete", "deploy/fg", "--timeout=60s"]).await;
        assert!(out.is_empty() || out.trim() == "deployment.apps/fg condition met", "{out}");
        let err = self.fails_ns(&["get", &rs], None).await;
        self.has("replica set gone", &err, "Error from server (NotFound): replicasets.apps");
    }

    /// Errors, printed exactly as kubectl prints them against a real cluster.
    async fn errors(&self) {
        let subdomain = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric \
                         characters, '-' or '.', and must start and end with an alphanumeric \
                         character (e.g. 'example.com', regex used for validation is \
                         '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
        let label = "a lowercase RFC 1123 label must consist of lower case alphanumeric \
                     characters or '-', and must start and end with an alphanumeric character \
                     (e.g. 'my-name',  or '123-abc', regex used for validation is \
                     '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";
        let dns1035 = "a DNS-1035 label must consist of lower case alphanumeric characters or \
                       '-', start with an alphabetic character, and end with an alphanumeric \
                       character (e.g. 'my-name',  or 'abc-123', regex used for validation is \
                       '[a-z]([-a-z0-9]*[a-z0-9])?')";
        let cm = |name: &str, extra: &str| {
            format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n{extra}")
        };
        let bad_cm = cm("Bad_Name", "");
        let unknown = cm("strict", "spec:\n  foo: bar\n");
        let unknown_deploy = two_containers("nginx:1.25")
            .replace("name: two", "name: strict")
            .replace("      - name: a\n", "      - name: a\n        bogus: 1\n");
        let bad_svc = "apiVersion: v1\nkind: Service\nmetadata:\n  name: Bad_Svc\nspec:\n  ports: [{port: 80}]\n";
        let bad_ns = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: Bad_NS\n";
        let existing = cm("cm1", "");
        let in_missing_ns =
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n  namespace: nope\n";
        // (args, stdin, stderr)
        let cases: Vec<(Vec<&str>, Option<&str>, String)> = vec![
            (
                vec!["get", "configmap", "nope"],
                None,
                "Error from server (NotFound): configmaps \"nope\" not found".into(),
            ),
            (
                vec!["get", "deploy", "nope"],
                None,
                "Error from server (NotFound): deployments.apps \"nope\" not found".into(),
            ),
            (
                vec!["delete", "job", "nope"],
                None,
                "Error from server (NotFound): jobs.batch \"nope\" not found".into(),
            ),
            (
                vec!["get", "namespace", "nope"],
                None,
                "Error from server (NotFound): namespaces \"nope\" not found".into(),
            ),
            (
                vec!["patch", "secret", "nope", "-p", "{}"],
                None,
                "Error from server (NotFound): secrets \"nope\" not found".into(),
            ),
            (
                vec!["create", "-f", "-"],
                Some(&bad_cm),
                format!(
                    "The ConfigMap \"Bad_Name\" is invalid: metadata.name: Invalid value: \
                     \"Bad_Name\": {subdomain}"
                ),
            ),
            (
                vec!["create", "configmap", "Bad_Name"],
                None,
                format!(
                    "error: failed to create configmap: ConfigMap \"Bad_Name\" is invalid: \
                     metadata.name: Invalid value: \"Bad_Name\": {subdomain}"
                ),
            ),
            (
                vec!["create", "-f", "-"],
                Some(bad_svc),
                format!(
                    "The Service \"Bad_Svc\" is invalid: metadata.name: Invalid value: \
                     \"Bad_Svc\": {dns1035}"
                ),
            ),
            (
                vec!["create", "-f", "-"],
                Some(bad_ns),
                format!(
                    "The Namespace \"Bad_NS\" is invalid: metadata.name: Invalid value: \
                     \"Bad_NS\": {label}"
                ),
            ),
            (
                vec!["create", "-f", "-"],
                Some(&unknown),
                "Error from server (BadRequest): error when creating \"STDIN\": ConfigMap in \
                 version \"v1\" cannot be handled as a ConfigMap: strict decoding error: unknown \
                 field \"spec\""
                    .into(),
            ),
            (
                vec!["create", "-f", "-"],
                Some(&unknown_deploy),
                "Error from server (BadRequest): error when creating \"STDIN\": Deployment in \
                 version \"v1\" cannot be handled as a Deployment: strict decoding error: \
                 unknown field \"spec.template.spec.containers[0].bogus\""
                    .into(),
            ),
            (
                vec!["create", "-f", "-"],
                Some(&existing),
                "Error from server (AlreadyExists): error when creating \"STDIN\": configmaps \
                 \"cm1\" already exists"
                    .into(),
            ),
            (
                // The last -n wins.
                vec!["create", "-n", "nope", "-f", "-"],
                Some(&in_missing_ns),
                "Error from server (NotFound): error when creating \"STDIN\": namespaces \"nope\" \
                 not found"
                    .into(),
            ),
            (
                vec!["get", "configmaps", "--field-selector=bogus=1"],
                None,
                "Error from server (BadRequest): Unable to find \"/v1, Resource=configmaps\" that \
                 match label selector \"\", field selector \"bogus=1\": \"bogus\" is not a known \
                 field selector: only \"metadata.name\", \"metadata.namespace\""
                    .into(),
            ),
            (
                vec!["get", "pods", "--field-selector=bogus=1"],
                None,
                "Error from server (BadRequest): Unable to find \"/v1, Resource=pods\" that match \
                 label selector \"\", field selector \"bogus=1\": field label not supported: bogus"
                    .into(),
            ),
            (
                vec!["create", "configmap", "cm1"],
                None,
                "error: failed to create configmap: configmaps \"cm1\" already exists".into(),
            ),
        ];
        for (args, stdin, want) in cases {
            let err = self.fails_ns(&args, stdin).await;
            self.is(&format!("error of {args:?}"), &err, &want);
        }
        // Nothing was written by the failed creates.
        let names = self.ok_ns(&["get", "cm", "-o", "name"]).await;
        assert!(!names.contains("strict") && !names.contains("Bad_Name"), "{names}");
    }
}

/// A deployment with two containers; `image` is the first one's.
fn two_containers(image: &str) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: two
spec:
  replicas: 2
  selector:
    matchLabels:
      app: two
  template:
    metadata:
      labels:
        app: two
    spec:
      containers:
      - name: a
        image: {image}
      - name: b
        image: busybox:1.36
        command: ["sleep", "3600"]
"#
    )
}

/// One object of each namespaced kind the patch and output cases use.
const KINDS: &str = r#"
apiVersion: v1
kind: ConfigMap
metadata: {name: cm1}
data: {a: "1"}
---
apiVersion: v1
kind: Secret
metadata: {name: s1}
stringData: {a: "1"}
---
apiVersion: v1
kind: Service
metadata: {name: svc1}
spec:
  selector: {app: x}
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Pod
metadata: {name: pod1, labels: {app: x}}
spec:
  containers:
  - {name: c, image: "nginx:1.25"}
  - {name: d, image: "busybox:1.36", command: [sleep, "3600"]}
---
apiVersion: batch/v1
kind: Job
metadata: {name: job1}
spec:
  suspend: true
  template:
    spec:
      restartPolicy: Never
      containers: [{name: c, image: "busybox:1.36", command: [sh, -c, "exit 0"]}]
"#;
