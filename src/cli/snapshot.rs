//! `skiff snapshot save FILE` and `skiff snapshot restore FILE --data-dir DIR [--force]`.

use std::path::PathBuf;

use clap::Subcommand;

use super::CliError;
use crate::apiserver::config::default_data_dir;
use crate::store::snapshot::{self, SnapshotInfo};
use crate::store::sqlite::SqliteBackend;

#[derive(Debug, Subcommand)]
pub enum SnapshotCommand {
    /// Write a consistent copy of the datastore (safe while the server runs).
    Save {
        /// The snapshot file to write.
        file: PathBuf,
        /// The server's data dir [default: as for `skiff server`]
        #[arg(long, value_name = "DIR", env = "SKIFF_DATA_DIR")]
        data_dir: Option<PathBuf>,
    },
    /// Install a snapshot as the datastore of a data dir (with the server stopped).
    Restore {
        /// The snapshot file to read.
        file: PathBuf,
        /// The data dir to restore into.
        #[arg(long, value_name = "DIR")]
        data_dir: PathBuf,
        /// Replace an existing database.
        #[arg(long)]
        force: bool,
    },
}

pub fn run(cmd: SnapshotCommand) -> Result<(), CliError> {
    match cmd {
        SnapshotCommand::Save { file, data_dir } => {
            let data_dir = data_dir.unwrap_or_else(default_data_dir);
            let db = SqliteBackend::db_path(&data_dir);
            let info = snapshot::save(&db, &file).map_err(|source| CliError::Snapshot {
                action: "save",
                path: file.clone(),
                source,
            })?;
            println!("Saved snapshot {} of {}: {}", file.display(), db.display(), describe(&info));
        }
        SnapshotCommand::Restore { file, data_dir, force } => {
            let info = snapshot::restore(&file, &data_dir, force).map_err(|source| {
                CliError::Snapshot { action: "restore", path: file.clone(), source }
            })?;
            println!(
                "Restored snapshot {} into {}: {}",
                file.display(),
                SqliteBackend::db_path(&data_dir).display(),
                describe(&info)
            );
        }
    }
    Ok(())
}

fn describe(info: &SnapshotInfo) -> String {
    format!("revision {}, {} keys, {} bytes", info.revision, info.keys, info.bytes)
}
