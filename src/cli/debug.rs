//! `skiff debug ...`: hidden tools for tests and operators. `store-load` runs concurrent writers
//! against a data dir's SQLite store and prints every acknowledged write (see
//! crate::testing::store_load), which the crash test kills at random moments.

use std::path::PathBuf;

use clap::Subcommand;

use super::CliError;

#[derive(Debug, Subcommand)]
pub enum DebugCommand {
    /// Write to the SQLite store with concurrent writers, printing each acknowledged write.
    StoreLoad {
        /// The data dir whose database to write.
        #[arg(long, value_name = "DIR")]
        data_dir: PathBuf,
        /// How many concurrent writers.
        #[arg(long, default_value_t = 64)]
        writers: usize,
        /// A tag in every key and value, so runs can be told apart.
        #[arg(long, default_value = "run")]
        run_id: String,
        /// Stop after this many writes per writer (default: run until killed).
        #[arg(long)]
        limit: Option<u64>,
    },
}

pub fn run(cmd: DebugCommand) -> Result<(), CliError> {
    match cmd {
        DebugCommand::StoreLoad { data_dir, writers, run_id, limit } => {
            let runtime = tokio::runtime::Runtime::new().map_err(CliError::Runtime)?;
            runtime
                .block_on(crate::testing::store_load::run(&data_dir, writers, &run_id, limit))
                .map_err(|e| CliError::Debug(e.to_string()))
        }
    }
}
