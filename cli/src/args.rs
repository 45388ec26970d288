//! Command-line arguments (clap derive).

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

/// cairn: a deduplicating, content-addressed store for versioned backups.
#[derive(Parser, Debug)]
#[command(name = "cairn", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    /// The store directory [default: $XDG_DATA_HOME/cairn, usually ~/.local/share/cairn]
    #[arg(long, global = true, env = "CAIRN_STORE", value_name = "DIR")]
    pub store: Option<PathBuf>,

    /// Print machine-readable JSON instead of tables.
    #[arg(long, global = true)]
    pub json: bool,

    /// Never draw progress bars (they are drawn only on a terminal anyway).
    #[arg(long, global = true)]
    pub no_progress: bool,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Chunker choice for `init`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ChunkerKind {
    /// Content-defined chunking (FastCDC 2020): best for files that shift.
    Cdc,
    /// Fixed blocks at aligned offsets: for VM images and databases.
    Fixed,
}

/// The subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Create a store (`put` creates a default one on first use).
    Init {
        /// How to cut data into chunks.
        #[arg(long, value_enum, default_value = "cdc")]
        chunker: ChunkerKind,
        /// Average chunk size (cdc) or block size (fixed).
        #[arg(long, default_value = "8KiB", value_name = "SIZE")]
        avg_size: bytesize::ByteSize,
        /// Size at which containers are sealed.
        #[arg(long, default_value = "4MiB", value_name = "SIZE")]
        container_size: bytesize::ByteSize,
    },
    /// Store a file (or standard input) under a key.
    Put {
        /// The object's key.
        key: String,
        /// The file to read; `-` or nothing for standard input.
        file: Option<PathBuf>,
    },
    /// Write an object to a file (or standard output).
    Get {
        /// The object's key.
        key: String,
        /// The file to write; `-` or nothing for standard output.
        file: Option<PathBuf>,
    },
    /// List objects.
    Objects {
        /// Only keys starting with this.
        prefix: Option<String>,
    },
    /// Remove an object (its space is reclaimed by garbage collection).
    Rm {
        /// The object's key.
        key: String,
    },
    /// Make DST a copy of object SRC in O(1): no data is copied.
    Clone {
        /// The existing object.
        source: String,
        /// The new key.
        destination: String,
    },
    /// Show sizes, dedup and compression ratios, blobs and containers.
    Stats,
    /// Verify containers, the index and every reference count.
    Check {
        /// Also read and verify every stored byte.
        #[arg(long)]
        read_data: bool,
    },
}
