//! A `skiff server` process with simulated nodes, driven through the real kubectl binaries (the
//! newest and the oldest installed): the harness of the `tests/kubectl_*.rs` stories. Panics on
//! failure, as a test wants.

use std::path::{Path, PathBuf};

use super::skiff_server::{
    kubectl_binaries, run_kubectl, KubectlOutput, SkiffProcess, SpawnOptions,
};

pub struct KubectlCluster {
    pub server: SkiffProcess,
    pub newest: PathBuf,
    pub oldest: PathBuf,
}

impl KubectlCluster {
    /// Spawns `skiff` (the binary under test) as `skiff server --simulate-nodes NODES ARGS...`.
    pub async fn start(skiff: &Path, nodes: usize, args: &[&str]) -> KubectlCluster {
        let kubectl = kubectl_binaries();
        let newest = kubectl.last().expect("kubectl binaries are installed").path.clone();
        let oldest = kubectl.first().expect("kubectl binaries are installed").path.clone();
        let mut all = vec!["--simulate-nodes".to_string(), nodes.to_string()];
        all.extend(args.iter().map(|s| s.to_string()));
        let server =
            SkiffProcess::spawn_with(skiff, SpawnOptions { args: all, ..Default::default() })
                .await
                .expect("skiff starts");
        KubectlCluster { server, newest, oldest }
    }

    /// Runs kubectl `bin` with the admin kubeconfig, whatever it answers.
    pub async fn run(&self, bin: &Path, args: &[&str]) -> KubectlOutput {
        run_kubectl(bin, &self.server.kubeconfig, args).await.expect("kubectl runs")
    }

    /// Runs the newest kubectl and expects success; returns stdout.
    pub async fn ok(&self, args: &[&str]) -> String {
        let out = self.run(&self.newest, args).await;
        assert!(out.success(), "kubectl {args:?}: {}{}", out.stdout, out.stderr);
        out.stdout
    }

    /// The same with the oldest kubectl.
    pub async fn ok_old(&self, args: &[&str]) -> String {
        let out = self.run(&self.oldest, args).await;
        assert!(out.success(), "kubectl(old) {args:?}: {}{}", out.stdout, out.stderr);
        out.stdout
    }

    /// Writes `manifest` into the data dir as NAME.json and `kubectl apply`s it.
    pub async fn apply(&self, name: &str, manifest: serde_json::Value) {
        let path = self.server.data_dir.join(format!("{name}.json"));
        std::fs::write(&path, manifest.to_string()).expect("write manifest");
        self.ok(&["apply", "-f", path.to_str().expect("utf-8 path")]).await;
    }

    /// `kubectl get ARGS -o name`, one line each.
    pub async fn names(&self, args: &[&str]) -> Vec<String> {
        let mut all = vec!["get"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["-o", "name"]);
        self.ok(&all).await.lines().map(str::to_string).collect()
    }
}
