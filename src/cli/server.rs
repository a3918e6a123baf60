//! `skiff server`: flags to [`ServerConfig`], then run until SIGTERM/SIGINT or a failure.

use std::net::IpAddr;
use std::path::PathBuf;

use clap::Args;

use super::CliError;
use crate::apiserver::config::{
    default_data_dir, Datastore, EtcdTlsFiles, ServerConfig, DEFAULT_MAX_REQUESTS_INFLIGHT,
};
use crate::apiserver::server;
use crate::controllers::ComponentOptions;

#[derive(Debug, Args)]
pub struct ServerArgs {
    /// Directory for the database, certificates and kubeconfig [default: /var/lib/skiff for root,
    /// else $XDG_DATA_HOME/skiff or ~/.local/share/skiff]
    #[arg(long, value_name = "DIR", env = "SKIFF_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Address to listen on.
    #[arg(long, value_name = "IP", default_value = "0.0.0.0")]
    pub bind_address: IpAddr,
    /// HTTPS port (0: any free port; the kubeconfig names the one bound).
    #[arg(long, value_name = "PORT", default_value_t = 6443)]
    pub secure_port: u16,
    /// Where to write the admin kubeconfig [default: DATA_DIR/kubeconfig.yaml]
    #[arg(long, value_name = "PATH")]
    pub write_kubeconfig: Option<PathBuf>,
    /// etcd://host:port[,host:port...] or etcds://... (default: embedded SQLite in the data dir)
    #[arg(long, value_name = "URL")]
    pub datastore_endpoint: Option<String>,
    /// CA bundle to verify etcd's serving certificate.
    #[arg(long, value_name = "FILE")]
    pub etcd_cafile: Option<PathBuf>,
    /// Client certificate for etcd.
    #[arg(long, value_name = "FILE")]
    pub etcd_certfile: Option<PathBuf>,
    /// Client key for etcd.
    #[arg(long, value_name = "FILE")]
    pub etcd_keyfile: Option<PathBuf>,
    /// Static bearer tokens, one per line: token,user,uid,"group1,group2"
    #[arg(long, value_name = "FILE")]
    pub token_auth_file: Option<PathBuf>,
    /// Another host name or IP for the serving certificate (repeatable).
    #[arg(long = "tls-san", value_name = "NAME")]
    pub tls_sans: Vec<String>,
    /// Do not run the node agent in this process.
    #[arg(long)]
    pub disable_agent: bool,
    /// Requests served at once (watches excluded) before new ones get 429.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_REQUESTS_INFLIGHT)]
    pub max_requests_inflight: usize,
    /// Register this many simulated nodes (kwok-style: pods bound to them run without
    /// containers).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub simulate_nodes: usize,
    /// Run no controllers, scheduler or simulated nodes (the API alone).
    #[arg(long)]
    pub disable_controllers: bool,
    /// Run the controllers and the scheduler only while holding the kube-system/skiff-controllers
    /// Lease, so servers sharing an etcd run them once (a single SQLite server needs none).
    #[arg(long, value_name = "BOOL", default_value_t = true, action = clap::ArgAction::Set)]
    pub leader_elect: bool,
    /// How long a node may go without renewing its Lease before it is marked unknown.
    #[arg(long, value_name = "DURATION", default_value = "40s", value_parser = super::duration::parse)]
    pub node_monitor_grace_period: std::time::Duration,
    /// How often the node lifecycle controller checks node health.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = super::duration::parse)]
    pub node_monitor_period: std::time::Duration,
    #[command(flatten)]
    pub capacity: super::simulate::NodeCapacityArgs,
}

impl ServerArgs {
    /// The server configuration these flags describe.
    pub fn to_config(&self) -> Result<ServerConfig, CliError> {
        let mut config = ServerConfig::new(self.data_dir.clone().unwrap_or_else(default_data_dir));
        config.bind_address = self.bind_address;
        config.secure_port = self.secure_port;
        config.kubeconfig_path = self.write_kubeconfig.clone();
        config.token_auth_file = self.token_auth_file.clone();
        config.disable_agent = self.disable_agent;
        config.tls_sans = self.tls_sans.clone();
        if self.max_requests_inflight == 0 {
            return Err(CliError::InvalidFlag {
                flag: "--max-requests-inflight",
                reason: "must be at least 1".into(),
            });
        }
        config.max_requests_inflight = self.max_requests_inflight;
        if self.node_monitor_period.is_zero() || self.node_monitor_grace_period.is_zero() {
            return Err(CliError::InvalidFlag {
                flag: "--node-monitor-period/--node-monitor-grace-period",
                reason: "must be above zero".into(),
            });
        }
        let node_capacity = self.capacity.to_capacity()?;
        config.components = (!self.disable_controllers).then(|| {
            let mut c = ComponentOptions {
                simulate_nodes: self.simulate_nodes,
                node_capacity,
                ..ComponentOptions::default()
            };
            let lifecycle = &mut c.controller_options.node_lifecycle;
            lifecycle.grace_period = self.node_monitor_grace_period;
            lifecycle.monitor_period = self.node_monitor_period;
            c
        });
        let tls = EtcdTlsFiles {
            ca_file: self.etcd_cafile.clone(),
            cert_file: self.etcd_certfile.clone(),
            key_file: self.etcd_keyfile.clone(),
        };
        config.datastore = match &self.datastore_endpoint {
            None => {
                if tls != EtcdTlsFiles::default() {
                    return Err(CliError::InvalidFlag {
                        flag: "--etcd-cafile/--etcd-certfile/--etcd-keyfile",
                        reason: "only apply with --datastore-endpoint etcds://...".into(),
                    });
                }
                Datastore::Sqlite
            }
            Some(url) if url.starts_with("etcd://") || url.starts_with("etcds://") => {
                if tls.cert_file.is_some() != tls.key_file.is_some() {
                    return Err(CliError::InvalidFlag {
                        flag: "--etcd-certfile/--etcd-keyfile",
                        reason: "give both or neither".into(),
                    });
                }
                Datastore::Etcd { endpoint: url.clone(), tls }
            }
            Some(url) => {
                return Err(CliError::InvalidFlag {
                    flag: "--datastore-endpoint",
                    reason: format!("{url:?} is not an etcd:// or etcds:// URL"),
                })
            }
        };
        let elect = self.leader_elect && matches!(config.datastore, Datastore::Etcd { .. });
        if let Some(components) = config.components.as_mut().filter(|_| elect) {
            let identity = crate::controllers::leader::default_identity();
            components.leader_election =
                Some(crate::controllers::leader::LeaderElectionConfig::new(identity));
        }
        Ok(config)
    }
}

/// Runs the server until a signal or a failure.
pub fn run(args: ServerArgs) -> Result<(), CliError> {
    let config = args.to_config()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("skiff")
        .build()
        .map_err(CliError::Runtime)?;
    runtime.block_on(async move {
        tracing::info!(
            version = %crate::apiserver::version::git_version(),
            data_dir = %config.data_dir.display(),
            "starting skiff server"
        );
        let mut handle = server::start(config).await?;
        let trigger = handle.shutdown_trigger();
        tokio::spawn(async move {
            let Some(name) = next_signal().await else {
                return;
            };
            tracing::info!(signal = name, "stopping; send it again to exit at once");
            trigger.trigger();
            if let Some(name) = next_signal().await {
                tracing::warn!(signal = name, "exiting without waiting");
                std::process::exit(1);
            }
        });
        handle.wait().await?;
        tracing::info!("stopped");
        Ok(())
    })
}

/// The next SIGTERM or SIGINT (None if signals cannot be watched).
pub(super) async fn next_signal() -> Option<&'static str> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).ok()?;
    let mut int = signal(SignalKind::interrupt()).ok()?;
    tokio::select! {
        _ = term.recv() => Some("SIGTERM"),
        _ = int.recv() => Some("SIGINT"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Wrap {
        #[command(flatten)]
        args: ServerArgs,
    }

    fn parse(args: &[&str]) -> Result<ServerConfig, CliError> {
        let mut argv = vec!["skiff"];
        argv.extend_from_slice(args);
        Wrap::try_parse_from(argv)
            .map_err(|e| CliError::InvalidFlag { flag: "", reason: e.to_string() })?
            .args
            .to_config()
    }

    #[test]
    fn flags_map_to_config() {
        let c = parse(&["--data-dir", "/d", "--secure-port", "0", "--bind-address", "127.0.0.1"])
            .expect("ok");
        assert_eq!(c.secure_port, 0);
        assert_eq!(c.kubeconfig_path(), PathBuf::from("/d/kubeconfig.yaml"));
        assert_eq!(c.datastore, Datastore::Sqlite);
        let c = parse(&[
            "--data-dir",
            "/d",
            "--datastore-endpoint",
            "etcds://h:2379",
            "--etcd-cafile",
            "ca",
        ])
        .expect("ok");
        assert!(matches!(c.datastore, Datastore::Etcd { .. }));
        assert!(parse(&["--data-dir", "/d", "--datastore-endpoint", "mysql://x"]).is_err());
        assert!(parse(&["--data-dir", "/d", "--max-requests-inflight", "0"]).is_err());
    }

    #[test]
    fn leader_election_runs_with_etcd_unless_disabled() {
        let elects = |args: &[&str]| {
            let c = parse(args).expect("ok");
            c.components.and_then(|o| o.leader_election).is_some()
        };
        let etcd = ["--data-dir", "/d", "--datastore-endpoint", "etcd://h:2379"];
        assert!(elects(&etcd));
        assert!(!elects(&[&etcd[..], &["--leader-elect=false"]].concat()));
        assert!(!elects(&["--data-dir", "/d"]));
    }
}
