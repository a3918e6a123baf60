//! `skiff agent`: a node agent on another machine, joined to a server with the server's join
//! token (`DATA_DIR/agent-token`, see [`crate::apiserver::join`]). For now it runs simulated
//! nodes (`--simulate N`); containers through CRI come later. Killing it is a node loss: the
//! nodes' Leases expire and the server's node lifecycle controller takes over.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use kube::Client;

use super::simulate::NodeCapacityArgs;
use super::CliError;
use crate::agent::simulated::{self, SimulatedOptions};
use crate::apiserver::join::{JoinError, JoinToken, CA_PATH};

#[derive(Debug, Args)]
pub struct AgentArgs {
    /// The server to join (https://HOST:PORT).
    #[arg(long, value_name = "URL", env = "SKIFF_SERVER")]
    pub server: String,
    /// The server's join token (the file agent-token in its data dir).
    #[arg(long, value_name = "TOKEN", env = "SKIFF_TOKEN", hide_env_values = true)]
    pub token: String,
    /// The CA certificate to verify the server with [default: fetched from the server and checked
    /// against the token's hash].
    #[arg(long, value_name = "FILE")]
    pub certificate_authority: Option<PathBuf>,
    /// Run this many simulated nodes (kwok-style: pods run without containers).
    #[arg(long, value_name = "N")]
    pub simulate: Option<usize>,
    /// Simulated nodes are named PREFIX<index> [default: <host name>-sim-].
    #[arg(long, value_name = "PREFIX")]
    pub node_name_prefix: Option<String>,
    /// How long the nodes' Leases last; they are renewed every quarter of it (the kubelet's
    /// --node-lease-duration-seconds).
    #[arg(long, value_name = "SECONDS", default_value_t = 40)]
    pub node_lease_duration_seconds: u32,
    #[command(flatten)]
    pub capacity: NodeCapacityArgs,
}

/// What stops the agent.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Join(#[from] JoinError),
    #[error("invalid --server {url:?}: {reason}")]
    ServerUrl { url: String, reason: String },
    #[error("cannot read the CA certificate {path}")]
    ReadCa {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot fetch the CA certificate from {url}")]
    FetchCa {
        url: String,
        #[source]
        source: kube::Error,
    },
    #[error("the CA certificate is not PEM")]
    CaNotPem,
    #[error("cannot build a client for {url}")]
    Client {
        url: String,
        #[source]
        source: kube::Error,
    },
    #[error("only simulated nodes are supported so far: give --simulate N")]
    NoSimulate,
    #[error("--node-lease-duration-seconds must be at least 1")]
    LeaseDuration,
    #[error(transparent)]
    Simulated(#[from] simulated::SimulatedError),
}

/// Runs the agent until a signal or a failure.
pub fn run(args: AgentArgs) -> Result<(), CliError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("skiff-agent")
        .build()
        .map_err(CliError::Runtime)?;
    runtime.block_on(async move {
        let count = args.simulate.filter(|n| *n > 0).ok_or(AgentError::NoSimulate)?;
        if args.node_lease_duration_seconds == 0 {
            return Err(AgentError::LeaseDuration.into());
        }
        let capacity = args.capacity.to_capacity()?;
        let token = JoinToken::parse(&args.token).map_err(AgentError::from)?;
        crate::apiserver::tls::install_crypto_provider();
        let client = connect(&args, &token).await?;
        let mut opts = SimulatedOptions::new(count, capacity);
        opts.name_prefix = args.node_name_prefix.clone().unwrap_or_else(default_prefix);
        opts.lease_renew = Duration::from_secs(u64::from(args.node_lease_duration_seconds)) / 4;
        tracing::info!(server = %args.server, nodes = count, prefix = %opts.name_prefix, "starting simulated nodes");
        tokio::select! {
            result = simulated::run(client, opts) => result.map_err(|e| AgentError::from(e).into()),
            signal = super::server::next_signal() => {
                tracing::info!(signal = signal.unwrap_or("none"), "stopping");
                Ok(())
            }
        }
    })
}

/// A client for the server that verifies it against the CA (given, or fetched and checked
/// against the token) and authenticates with the token.
async fn connect(args: &AgentArgs, token: &JoinToken) -> Result<Client, AgentError> {
    let url: axum::http::Uri = args.server.parse().map_err(|e: axum::http::uri::InvalidUri| {
        AgentError::ServerUrl { url: args.server.clone(), reason: e.to_string() }
    })?;
    if url.scheme_str() != Some("https") {
        let reason = "the server speaks HTTPS only".to_string();
        return Err(AgentError::ServerUrl { url: args.server.clone(), reason });
    }
    let ca_pem = match &args.certificate_authority {
        Some(path) => std::fs::read_to_string(path)
            .map_err(|source| AgentError::ReadCa { path: path.clone(), source })?,
        None => {
            let pem = fetch_ca(&url).await?;
            token.verify_ca(&pem)?;
            pem
        }
    };
    let der = crate::apiserver::pki::pem_to_der(&ca_pem).ok_or(AgentError::CaNotPem)?;
    let mut config = kube::Config::new(url);
    config.root_cert = Some(vec![der]);
    config.auth_info.token = Some(token.raw.clone().into());
    Client::try_from(config)
        .map_err(|source| AgentError::Client { url: args.server.clone(), source })
}

/// The server's CA certificate from its public path, over a connection not yet verified (the
/// caller checks the result against the join token's hash).
async fn fetch_ca(url: &axum::http::Uri) -> Result<String, AgentError> {
    let err = |source| AgentError::FetchCa { url: format!("{url}{}", &CA_PATH[1..]), source };
    let mut config = kube::Config::new(url.clone());
    config.accept_invalid_certs = true;
    let client = Client::try_from(config).map_err(err)?;
    let request = axum::http::Request::get(CA_PATH)
        .body(Vec::new())
        .map_err(|e| err(kube::Error::HttpError(e)))?;
    client.request_text(request).await.map_err(err)
}

fn default_prefix() -> String {
    let host = hostname::get()
        .ok()
        .and_then(|h| h.into_string().ok())
        .map(|h| h.to_ascii_lowercase())
        .filter(|h| !h.is_empty() && h.len() <= 40)
        .unwrap_or_else(|| "agent".into());
    format!("{host}-sim-")
}
