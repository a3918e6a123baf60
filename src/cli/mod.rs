//! The `skiff` command line: `server`, `agent`, `snapshot save|restore` and `version`.
//!
//! Every failure ends as one line on stderr ("error: what: why") and a non-zero exit status;
//! usage errors are clap's (status 2).

pub mod agent;
pub mod debug;
pub mod duration;
pub mod server;
pub mod simulate;
pub mod snapshot;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::apiserver::server::{error_chain, ServerError};

/// What went wrong running a command.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("invalid {flag}: {reason}")]
    InvalidFlag { flag: &'static str, reason: String },
    #[error(transparent)]
    Server(#[from] ServerError),
    #[error("cannot {action} the snapshot {path}")]
    Snapshot {
        action: &'static str,
        path: std::path::PathBuf,
        #[source]
        source: crate::store::StoreError,
    },
    #[error("{0}")]
    Debug(String),
    #[error(transparent)]
    Agent(#[from] agent::AgentError),
    #[error("cannot start the async runtime")]
    Runtime(#[source] std::io::Error),
}

#[derive(Debug, Parser)]
#[command(name = "skiff", version, about = "Kubernetes in one small binary")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the API server (and, unless disabled, the node agent).
    Server(server::ServerArgs),
    /// Join a server as a node agent (simulated nodes for now).
    Agent(agent::AgentArgs),
    /// Save or restore a consistent copy of the SQLite datastore.
    #[command(subcommand)]
    Snapshot(snapshot::SnapshotCommand),
    /// Print the version.
    Version,
    /// Tools for tests and troubleshooting.
    #[command(subcommand, hide = true)]
    Debug(debug::DebugCommand),
}

/// Runs the command line and returns the process exit status.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(2));
        }
    };
    init_logging();
    let result = match cli.command {
        Command::Server(args) => server::run(args),
        Command::Agent(args) => agent::run(args),
        Command::Snapshot(cmd) => snapshot::run(cmd),
        Command::Debug(cmd) => debug::run(cmd),
        Command::Version => {
            print_version();
            Ok(())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", error_chain(&e));
            ExitCode::FAILURE
        }
    }
}

fn print_version() {
    let info = crate::apiserver::version::info();
    println!("skiff {}", env!("CARGO_PKG_VERSION"));
    println!("Kubernetes API {} ({})", info.git_version, info.platform);
}

/// Logs to stderr, filtered by RUST_LOG (default: info).
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr)
        .try_init();
}
