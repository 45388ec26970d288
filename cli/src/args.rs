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

    /// Read straight from a remote instead of a store: `--remote
    /// s3://BUCKET/PREFIX datasets` (also ls, find, stat, cat, diff, restore).
    #[arg(long, global = true, env = "CAIRN_REMOTE", value_name = "s3://BUCKET/PREFIX")]
    pub remote: Option<String>,

    /// An S3-compatible endpoint, for `--remote`, `attach` and `remote add`
    /// (`http://127.0.0.1:9000`) [default: AWS, or $AWS_ENDPOINT_URL].
    #[arg(long, global = true, value_name = "URL")]
    pub endpoint_url: Option<String>,

    /// The S3 region [default: from the AWS config, else us-east-1].
    #[arg(long, global = true, value_name = "REGION")]
    pub region: Option<String>,

    /// Path-style S3 addressing (ENDPOINT/BUCKET/KEY), which most
    /// S3-compatible servers (MinIO, Ceph, Garage) need.
    #[arg(long, global = true)]
    pub path_style: bool,

    /// For commands that write: when another process (a backup, gc) holds
    /// the store, wait for it, without limit or for at most SPAN
    /// (`--wait=10m`). Without --wait they fail at once; readers never wait.
    #[arg(
        long,
        global = true,
        value_name = "SPAN",
        num_args = 0..=1,
        default_missing_value = "forever",
        value_parser = crate::span::lock_wait
    )]
    pub wait: Option<cairn_store::LockWait>,

    /// Memory for the index's block cache, in MiB (its index and filter
    /// blocks first). Every command's memory grows with it; a store of
    /// hundreds of millions of chunks may look them up faster with more.
    #[arg(
        long,
        global = true,
        env = "CAIRN_INDEX_CACHE_MIB",
        value_name = "MIB",
        default_value_t = cairn_store::index::DEFAULT_CACHE_MIB as u32,
        value_parser = clap::value_parser!(u32).range(8..=65536)
    )]
    pub index_cache_mib: u32,

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
        /// How new chunks are compressed: zstd (level 3, the default), lz4
        /// (fastest; about a quarter larger on real files), zstd:LEVEL (1 to
        /// 19) or none.
        #[arg(long, default_value_t = cairn_store::config::DEFAULT_CODEC, value_name = "CODEC")]
        compression: cairn_store::container::Codec,
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
    /// Copy in O(1), no data copied: `clone SRC DST` makes object DST a copy
    /// of object SRC; `clone DATASET[:PATH] --name LABEL` makes a new dataset
    /// of a dataset, or of a directory or file in one.
    Clone {
        /// The existing object, or DATASET[:PATH] with --name.
        source: String,
        /// The new key (objects).
        #[arg(required_unless_present = "name")]
        destination: Option<String>,
        /// Clone a dataset: the new dataset's label.
        #[arg(long, value_name = "LABEL", conflicts_with = "destination")]
        name: Option<String>,
    },
    /// Show sizes, dedup and compression ratios, blobs and containers.
    Stats,
    /// Verify containers, the index, every reference count and the log.
    ///
    /// A commit whose log record is durable but which the index lacks (an
    /// interrupted commit, or an index that lost its newest writes) is
    /// redone first, when no other cairn is writing, and listed.
    Check {
        /// Also read and verify every stored byte.
        #[arg(long)]
        read_data: bool,
    },
    /// Rebuild the index from the containers alone.
    ///
    /// For an index that is missing, damaged, or disagrees with the
    /// containers: entries come from the container footers, dataset and
    /// object records from replaying the log, reference counts from a
    /// recount. The old index is moved aside, not deleted.
    Repair {
        /// Build the new index and say what would change, changing nothing.
        #[arg(long, short = 'n')]
        dry_run: bool,
    },
    /// Move a store made by an older cairn to this one's format, so that
    /// what it writes from now on uses what the format adds (format 6:
    /// frames of 512 KiB, 1-2% smaller and a quarter faster to compress;
    /// format 5: smaller container footers and content lists, about half
    /// a percent of the store). Nothing stored is rewritten; cairns older
    /// than the format refuse the store afterwards.
    Upgrade,
    /// Show the store's history: who committed what, and when.
    ///
    /// Lists the commits since the newest checkpoint (older ones are
    /// collected by gc), oldest first.
    Log {
        /// Only the life of this dataset: a number (forgotten ones too),
        /// `latest`, or a label.
        dataset: Option<String>,
    },
    /// Back up files and directories as a new dataset.
    ///
    /// Exits 3 ("partial") when some entries could not be read; the dataset
    /// is committed without them and they are listed.
    Backup {
        /// Files and directories to back up.
        #[arg(required = true, value_name = "PATH")]
        paths: Vec<PathBuf>,
        /// A label to find the dataset by (`cairn ls LABEL`).
        #[arg(long, value_name = "LABEL")]
        name: Option<String>,
        /// A tag (repeatable).
        #[arg(long = "tag", value_name = "TAG")]
        tags: Vec<String>,
        /// Leave out matching paths (repeatable). A glob without `/` matches
        /// a name anywhere (`*.tmp`, `.cache`); one with `/` matches the
        /// absolute path (`/home/*/Downloads`).
        #[arg(long = "exclude", value_name = "GLOB")]
        excludes: Vec<String>,
        /// Stay on the file systems of the sources (mount points are kept, empty).
        #[arg(long, short = 'x')]
        one_file_system: bool,
        /// The dataset whose unchanged files are not read again
        /// [default: the latest of the same sources on this host].
        #[arg(long, value_name = "DATASET")]
        parent: Option<String>,
        /// Read every file, even those the parent saw unchanged.
        #[arg(long)]
        read_all: bool,
        /// Let `forget --expired` drop this dataset after this span (`30d`, `1y`).
        #[arg(long, value_name = "SPAN", value_parser = crate::span::future_span)]
        expire_after: Option<jiff::Span>,
        /// Push to this remote afterwards [default: the default remote, if
        /// one is set with `remote add --default`].
        #[arg(long, value_name = "REMOTE")]
        push: Option<String>,
        /// Do not push, even to a default remote.
        #[arg(long, conflicts_with = "push")]
        no_push: bool,
    },
    /// Manage remotes: S3 buckets that hold a copy of the store.
    Remote {
        /// What to do.
        #[command(subcommand)]
        command: RemoteCommand,
    },
    /// Upload what a remote lacks (containers, index deltas, dataset
    /// records), then delete there what this store has reclaimed.
    /// Idempotent: an interrupted push is finished by the next.
    Push {
        /// The remote [default: the default remote, or the only one].
        name: Option<String>,
        /// Uploads in flight at once.
        #[arg(long, short = 'j', default_value_t = 4, value_name = "N")]
        jobs: usize,
    },
    /// Make a store (--store DIR) from a remote, reading its index and
    /// metadata but not its data: restores fetch just the chunks they need.
    Attach {
        /// The remote, `s3://BUCKET/PREFIX`.
        #[arg(value_name = "s3://BUCKET/PREFIX")]
        url: String,
        /// The name the remote gets in the new store.
        #[arg(long, default_value = "origin")]
        name: String,
    },
    /// List datasets, oldest first.
    Datasets,
    /// List a directory of a dataset.
    Ls {
        /// An id, `latest`, `latest~N` or a label.
        dataset: String,
        /// The directory (or file) inside the dataset.
        #[arg(default_value = "/")]
        path: String,
        /// Long listing: mode, owner, size, time.
        #[arg(short = 'l', long)]
        long: bool,
    },
    /// List everything under a path of a dataset, optionally filtered.
    Find {
        /// An id, `latest`, `latest~N` or a label.
        dataset: String,
        /// Where to start.
        #[arg(default_value = "/")]
        path: String,
        /// Only names matching this glob (`*.rs`).
        #[arg(long, value_name = "GLOB")]
        name: Option<String>,
        /// Only this kind.
        #[arg(long = "type", value_enum, value_name = "TYPE")]
        kind: Option<FindType>,
    },
    /// Show all metadata of one path, with how its chunks are shared.
    Stat {
        /// An id, `latest`, `latest~N` or a label.
        dataset: String,
        /// The path inside the dataset.
        path: String,
    },
    /// Write a file of a dataset to standard output.
    Cat {
        /// An id, `latest`, `latest~N` or a label.
        dataset: String,
        /// The file inside the dataset.
        path: String,
    },
    /// What changed between two datasets: added, removed, modified.
    Diff {
        /// The older dataset.
        old: String,
        /// The newer dataset.
        new: String,
        /// Only under this path.
        #[arg(default_value = "/")]
        path: String,
    },
    /// Restore a dataset (or some of its paths) into a directory.
    ///
    /// Exits 3 when some metadata or paths could not be restored.
    Restore {
        /// An id, `latest`, `latest~N` or a label.
        dataset: String,
        /// Paths inside the dataset [default: everything].
        paths: Vec<String>,
        /// The directory to restore into (created if missing).
        #[arg(long, value_name = "DIR")]
        to: PathBuf,
        /// What to do with paths that exist in DIR.
        #[arg(long, value_enum, default_value = "never")]
        overwrite: OverwriteArg,
        /// Only say what would be done.
        #[arg(long, short = 'n')]
        dry_run: bool,
        /// Leave owners alone: everything restored belongs to you (root
        /// restores owners by default, as tar and rsync do).
        #[arg(long)]
        no_owner: bool,
        /// Leave out extended attributes and ACLs.
        #[arg(long)]
        no_xattrs: bool,
        /// Leave out device nodes, and setuid and setgid bits.
        #[arg(long)]
        no_special: bool,
        /// From a remote: requests in flight at once.
        #[arg(long, short = 'j', default_value_t = cairn_store::dataset::STAGE_JOBS, value_name = "N")]
        jobs: usize,
        /// From a remote: bytes fetched ahead to hold in memory at most
        /// (past that, they wait in files under the store's staging/).
        #[arg(long, default_value = "256MiB", value_name = "SIZE")]
        memory: bytesize::ByteSize,
        /// Entries planned and restored at a time: memory holds one batch
        /// (about a kilobyte an entry). For tests, which need many batches
        /// from small trees.
        #[arg(long, hide = true, default_value_t = cairn_store::dataset::PLAN_BATCH, value_name = "N")]
        batch: usize,
    },
    /// Reclaim the space of what no dataset or object names any more:
    /// collect blobs whose references reached zero, then rewrite containers
    /// that are mostly dead. It holds the store lock while it runs: other
    /// writers (backup, put, forget) given `--wait` wait for it, and without
    /// it fail at once; readers go on. Ctrl-C ends the current batch cleanly.
    Gc {
        /// Only report what would be reclaimed and rewritten.
        #[arg(long, short = 'n')]
        dry_run: bool,
        /// Rewrite a container once this share of it is dead (0 to 1).
        #[arg(long, default_value_t = 0.2, value_name = "SHARE", value_parser = share)]
        compact_threshold: f64,
        /// Run again every SPAN (`1h`, `30m`) until interrupted; the store
        /// lock is let go between runs, and each run waits for it.
        #[arg(long, value_name = "SPAN", value_parser = crate::span::period)]
        every: Option<jiff::Span>,
        /// Queue entries per commit (smaller holds the commit lock for less).
        #[arg(long, default_value_t = 10_000, value_name = "N", hide = true)]
        batch: usize,
    },
    /// Deduplication: where the space goes, or what a directory would save.
    Dedupe {
        /// What to show.
        #[command(subcommand)]
        command: DedupeCommand,
    },
    /// List containers (size, dead share), or show one container's blobs.
    Containers {
        /// A container id, in hex as listed.
        id: Option<String>,
    },
    /// Drop datasets a retention policy does not keep (the delete job
    /// reclaims their space). Within each group, going back from the newest:
    /// `--keep-daily 7` keeps the newest dataset of each of the last 7 days
    /// that have one; likewise hourly, weekly (ISO weeks), monthly, yearly.
    Forget {
        /// Forget exactly these datasets (an id, `latest`, `latest~N` or a
        /// label) instead of applying --keep-* rules.
        #[arg(value_name = "DATASET", conflicts_with_all = ["keep_last", "keep_hourly", "keep_daily", "keep_weekly", "keep_monthly", "keep_yearly", "keep_within", "keep_tags", "expired"])]
        datasets: Vec<String>,
        /// Keep the N newest.
        #[arg(long, value_name = "N", default_value_t = 0)]
        keep_last: usize,
        /// Keep the newest of each of the last N hours.
        #[arg(long, value_name = "N", default_value_t = 0)]
        keep_hourly: usize,
        /// Keep the newest of each of the last N days.
        #[arg(long, value_name = "N", default_value_t = 0)]
        keep_daily: usize,
        /// Keep the newest of each of the last N weeks.
        #[arg(long, value_name = "N", default_value_t = 0)]
        keep_weekly: usize,
        /// Keep the newest of each of the last N months.
        #[arg(long, value_name = "N", default_value_t = 0)]
        keep_monthly: usize,
        /// Keep the newest of each of the last N years.
        #[arg(long, value_name = "N", default_value_t = 0)]
        keep_yearly: usize,
        /// Keep everything within this span of the group's newest (`7d`, `2w`, `1y 6mo`).
        #[arg(long, value_name = "SPAN", value_parser = crate::span::past_span)]
        keep_within: Option<jiff::Span>,
        /// Keep datasets with this tag (repeatable).
        #[arg(long = "keep-tag", value_name = "TAG")]
        keep_tags: Vec<String>,
        /// Drop datasets whose `backup --expire-after` has passed (and keep
        /// those that have not, or have no expiry).
        #[arg(long)]
        expired: bool,
        /// With --expired: always keep the N newest of each group.
        #[arg(long, value_name = "N", default_value_t = 0, requires = "expired")]
        reserve: usize,
        /// How to group datasets before applying the rules.
        #[arg(long, value_enum, default_value = "source")]
        group_by: GroupByArg,
        /// Only print what would be kept and removed, and why.
        #[arg(long, short = 'n')]
        dry_run: bool,
    },
}

/// A share between 0 and 1 (`--compact-threshold`).
fn share(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(share) if (0.0..=1.0).contains(&share) => Ok(share),
        _ => Err(format!("'{text}' is not a share between 0 and 1 (0.2 rewrites containers that are 20% dead)")),
    }
}

/// `cairn remote ...`.
#[derive(Subcommand, Debug)]
pub enum RemoteCommand {
    /// Add a remote (with --endpoint-url, --region, --path-style as needed).
    /// Credentials come from the AWS chain (environment, profile, web
    /// identity, instance metadata) and are never stored.
    Add {
        /// Its name.
        name: String,
        /// `s3://BUCKET/PREFIX`.
        #[arg(value_name = "s3://BUCKET/PREFIX")]
        url: String,
        /// Push to it after every backup.
        #[arg(long)]
        default: bool,
    },
    /// List remotes.
    List,
    /// Forget a remote (nothing on it is deleted).
    Rm {
        /// Its name.
        name: String,
    },
}

/// `cairn dedupe ...`.
#[derive(Subcommand, Debug)]
pub enum DedupeCommand {
    /// Store-wide savings; per dataset what it alone holds (what forgetting
    /// it frees) and what it shares; reference counts; container fill.
    Stats,
    /// Estimate how much PATH would deduplicate and compress, storing
    /// nothing (and, with an existing store, how much it holds already).
    Assess {
        /// A file or directory.
        path: PathBuf,
    },
}

/// `forget --group-by`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum GroupByArg {
    /// The same sources on the same host.
    Source,
    /// The same host.
    Host,
    /// The same set of tags.
    Tags,
    /// All datasets together.
    None,
}

/// `find --type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum FindType {
    /// Regular files.
    F,
    /// Directories.
    D,
    /// Symbolic links.
    L,
    /// Fifos.
    P,
    /// Character devices.
    C,
    /// Block devices.
    B,
}

impl FindType {
    /// The letter [`cairn_store::dataset::EntryKind::letter`] uses.
    pub fn letter(self) -> char {
        match self {
            FindType::F => 'f',
            FindType::D => 'd',
            FindType::L => 'l',
            FindType::P => 'p',
            FindType::C => 'c',
            FindType::B => 'b',
        }
    }
}

/// `restore --overwrite`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OverwriteArg {
    /// Leave existing paths alone, and count them.
    Never,
    /// Replace only files whose content differs (metadata is put back on all).
    IfChanged,
    /// Replace everything.
    Always,
}
