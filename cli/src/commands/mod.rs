//! One function per subcommand; `run` dispatches.

mod check;
mod init;
mod objects;
mod stats;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use cairn_store::{OpenMode, Store};

use crate::args::{Cli, Command};

/// Global settings every command sees.
pub struct Globals {
    /// The store directory.
    pub store: PathBuf,
    /// `--json`.
    pub json: bool,
    /// Whether progress bars may be drawn.
    pub progress: bool,
}

impl Globals {
    /// Opens the store for reading.
    pub fn open_read(&self) -> Result<Store> {
        Ok(Store::open(&self.store, OpenMode::ReadOnly)?)
    }

    /// Opens the store for writing.
    pub fn open_write(&self) -> Result<Store> {
        Ok(Store::open(&self.store, OpenMode::Write)?)
    }

    /// Opens the store for writing, creating it with defaults if needed.
    pub fn open_or_create(&self) -> Result<Store> {
        Ok(Store::open_or_create(&self.store)?)
    }
}

/// The default store: `$XDG_DATA_HOME/cairn`.
fn default_store() -> Result<PathBuf> {
    let base = dirs::data_dir().context("cannot find a data directory (set HOME, or pass --store DIR)")?;
    Ok(base.join("cairn"))
}

/// Runs the parsed command line.
pub fn run(cli: Cli) -> Result<ExitCode> {
    let globals = Globals {
        store: match cli.store {
            Some(path) => path,
            None => default_store()?,
        },
        json: cli.json,
        progress: !cli.no_progress,
    };
    match cli.command {
        Command::Init { chunker, avg_size, container_size } => {
            init::init(&globals, chunker, avg_size.0, container_size.0)
        }
        Command::Put { key, file } => objects::put(&globals, &key, file),
        Command::Get { key, file } => objects::get(&globals, &key, file),
        Command::Objects { prefix } => objects::list(&globals, prefix.as_deref().unwrap_or("")),
        Command::Rm { key } => objects::remove(&globals, &key),
        Command::Clone { source, destination } => objects::clone(&globals, &source, &destination),
        Command::Stats => stats::stats(&globals),
        Command::Check { read_data } => check::check(&globals, read_data),
    }?;
    Ok(ExitCode::SUCCESS)
}
