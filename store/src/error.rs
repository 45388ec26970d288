//! The store's errors. Each names the thing it is about (path, container,
//! blob, key) and, where there is one, what the user can do next.

use std::io;
use std::path::PathBuf;

use crate::ids::{BlobId, BlobKind, ContainerId, Tid};

/// Result with the store's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in the store.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An I/O error on a named file.
    #[error("{}: {action}: {}", path.display(), describe_io(cause))]
    Io {
        /// What was being done ("reading", "creating container", ...).
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The underlying error (already part of the message, so not a `source`).
        cause: io::Error,
    },
    /// Reading input for the store failed (a source file or stdin).
    #[error("reading {what}: {}", describe_io(cause))]
    Input {
        /// What was being read.
        what: String,
        /// The underlying error (already part of the message, so not a `source`).
        cause: io::Error,
    },
    /// Writing output failed (a file being restored, stdout).
    #[error("writing {what}: {}", describe_io(cause))]
    Output {
        /// What was being written.
        what: String,
        /// The underlying error (already part of the message, so not a `source`).
        cause: io::Error,
    },
    /// Another process holds the store for writing.
    #[error(
        "the store at {} is in use by another cairn process{}; wait for it to finish (--wait waits for it), or \
         use a read-only command",
        path.display(),
        holder.as_ref().map(|h| format!(" ({h})")).unwrap_or_default()
    )]
    InUse {
        /// The store directory.
        path: PathBuf,
        /// "pid N: command line" of the holder, when it could be read.
        holder: Option<String>,
    },
    /// Another process held the store for writing for longer than the
    /// caller would wait.
    #[error(
        "gave up after waiting {:.1} s for the store at {}, still in use by another cairn process{}; wait \
         longer (--wait=30m), without a limit (--wait), or try again when it has finished",
        waited.as_secs_f64(),
        path.display(),
        holder.as_ref().map(|h| format!(" ({h})")).unwrap_or_default()
    )]
    LockTimeout {
        /// The store directory.
        path: PathBuf,
        /// "pid N: command line" of the holder, when it could be read.
        holder: Option<String>,
        /// How long the caller waited.
        waited: std::time::Duration,
    },
    /// There is no store at the path.
    #[error("no cairn store at {}: create one with `cairn init`, or point --store (or CAIRN_STORE) at an existing store", path.display())]
    NotAStore {
        /// The path that was tried.
        path: PathBuf,
    },
    /// Container files hold commits that the index lacks, and they cannot be
    /// redone one by one.
    #[error(
        "the index at {} lacks commits that the containers hold ({reason}); run `cairn repair` to rebuild it \
         from the containers (nothing was deleted)",
        path.display()
    )]
    IndexBehind {
        /// The index directory.
        path: PathBuf,
        /// What was found.
        reason: String,
    },
    /// The index is missing, or RocksDB cannot open it.
    #[error("the index at {} {reason}; run `cairn repair` to rebuild it from the containers", path.display())]
    IndexDamaged {
        /// The index directory.
        path: PathBuf,
        /// "is missing", "cannot be opened: ...".
        reason: String,
    },
    /// The store was written by a newer cairn, or is damaged.
    #[error("the store at {}: {reason}", path.display())]
    BadStore {
        /// The store directory.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A blob failed its check, or could not be decoded.
    #[error("blob {blob} in container {container} is corrupt: {reason}; run `cairn check` to list what it affects")]
    CorruptBlob {
        /// The container holding the blob.
        container: ContainerId,
        /// The blob.
        blob: BlobId,
        /// What failed.
        reason: String,
    },
    /// A container's header or footer is damaged.
    #[error("container {container} ({}) is corrupt: {reason}", path.display())]
    CorruptContainer {
        /// The container.
        container: ContainerId,
        /// Its file.
        path: PathBuf,
        /// What failed.
        reason: String,
    },
    /// A blob the caller needs is not in the index.
    #[error("blob {0} is not in the store's index; the store may be damaged: run `cairn check`")]
    MissingBlob(BlobId),
    /// A metadata blob does not parse.
    #[error("{what} {blob} is malformed: {reason}")]
    Malformed {
        /// "content list", "tree", ...
        what: &'static str,
        /// The blob.
        blob: BlobId,
        /// What is wrong.
        reason: String,
    },
    /// A metadata blob longer than readers accept: refused when written,
    /// so that nothing is stored that cannot be read back.
    #[error(
        "{what} would be a {kind} blob of {len} bytes, more than the {max} that cairn reads back; \
         split the directory, or exclude it"
    )]
    BlobTooLarge {
        /// What the blob was for ("the tree of directory /x", "a tree").
        what: String,
        /// Its kind.
        kind: BlobKind,
        /// Its length.
        len: u64,
        /// The kind's limit ([`BlobKind::max_len`]).
        max: u64,
    },
    /// No object has this key.
    #[error("no object named '{0}'; list them with `cairn objects`")]
    NoSuchObject(String),
    /// No dataset matches what the user named.
    #[error("no dataset '{0}': name one by number, `latest`, `latest~N` or label; list them with `cairn datasets`")]
    NoSuchDataset(String),
    /// No entry at a path inside a dataset.
    #[error("no '{path}' in dataset {dataset}; list what is there with `cairn ls {dataset}`")]
    NoSuchPath {
        /// The dataset as the user named it.
        dataset: String,
        /// The path inside it.
        path: String,
    },
    /// Something the user asked for does not make sense.
    #[error("{0}")]
    Usage(String),
    /// An object with this key exists already.
    #[error("an object named '{0}' exists already; remove it first with `cairn rm`")]
    ObjectExists(String),
    /// An object key that cannot be stored.
    #[error("bad object key '{key}': {reason}")]
    BadKey {
        /// The key.
        key: String,
        /// Why.
        reason: &'static str,
    },
    /// A new blob for a store of a format this cairn reads but never writes.
    #[error(
        "the store at {} is format {format}, which this cairn reads but does not add to: its blob ids do not tell \
         a data chunk from a tree or content list with the same bytes. Restore what you need, or make a new \
         store (`cairn init --store NEW`) and back up into it"
        , path.display()
    )]
    OldFormat {
        /// The store directory.
        path: PathBuf,
        /// Its format.
        format: u32,
    },
    /// Content whose length differs from what names it.
    #[error(
        "{what}: its content is {actual}{} bytes, but its record says {expected}; the store is damaged or was crafted: run `cairn check`",
        if *over { " or more" } else { "" }
    )]
    WrongLength {
        /// The file or object.
        what: String,
        /// What the record says.
        expected: u64,
        /// What the content came to (where reading stopped, if `over`).
        actual: u64,
        /// Reading stopped as soon as the content passed `expected`.
        over: bool,
    },
    /// The index reported an error on a commit's batch: it may or may not
    /// have been written.
    #[error(
        "the index did not confirm commit {tid} ({cause}); it may or may not have been written, so nothing was \
         removed: run the command again, and the next open of the store finds out which"
    )]
    CommitUnknown {
        /// The commit's tid.
        tid: Tid,
        /// The index's error.
        cause: String,
    },
    /// The process saw a commit of unknown outcome and takes no more.
    #[error("an earlier commit in this process has an unknown outcome; reopen the store (run the command again)")]
    Poisoned,
    /// A write on a store opened read-only.
    #[error("the store is open read-only")]
    ReadOnly,
    /// RocksDB failed.
    #[error("index (RocksDB) at {}: {cause}{}", path.display(), repair_hint(cause))]
    Index {
        /// The index directory.
        path: PathBuf,
        /// RocksDB's error (already part of the message).
        cause: rocksdb::Error,
    },
    /// A record in the index does not decode.
    #[error("index entry {what} is malformed: {reason}; run `cairn check`")]
    BadEntry {
        /// Which entry.
        what: String,
        /// Why.
        reason: String,
    },
    /// The user interrupted the work; what was done is kept.
    #[error("interrupted; what was done is kept, and running the command again goes on from there")]
    Interrupted,
    /// A remote could not be used: unreachable, refused, missing, damaged.
    #[error("{what}: {reason}")]
    Remote {
        /// What was being done, naming the remote (and the key).
        what: String,
        /// What went wrong, and what to do about it.
        reason: String,
    },
    /// An object the remote should hold is not there.
    #[error(
        "{what}: the remote does not have it (a push from the owning store may have deleted it; run the command again)"
    )]
    RemoteNotFound {
        /// What was being read.
        what: String,
    },
    /// Invalid chunker settings.
    #[error(transparent)]
    Chunker(#[from] cairn_chunker::ConfigError),
}

impl Error {
    /// Whether a container's footer says it was never sealed: the file a
    /// session was writing when its process died, not damage.
    pub fn is_never_sealed(&self) -> bool {
        matches!(self, Error::CorruptContainer { reason, .. } if reason.contains("never sealed"))
    }

    /// Whether this is an I/O error for a file that does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::Io { cause, .. } if cause.kind() == io::ErrorKind::NotFound)
            || matches!(self, Error::RemoteNotFound { .. })
    }

    /// An I/O error with the file and the action that failed.
    pub fn io(action: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Error {
        Error::Io { action, path: path.into(), cause: source }
    }

    /// True when output went to a closed pipe (`cairn get KEY - | head`).
    pub fn is_broken_pipe(&self) -> bool {
        matches!(self, Error::Output { cause, .. } if cause.kind() == io::ErrorKind::BrokenPipe)
    }

    /// True when stored data is damaged or missing (a failed check, an
    /// undecodable blob), as opposed to a problem with the caller's files.
    pub fn is_damage(&self) -> bool {
        matches!(
            self,
            Error::CorruptBlob { .. }
                | Error::CorruptContainer { .. }
                | Error::MissingBlob(_)
                | Error::Malformed { .. }
                | Error::WrongLength { .. }
        )
    }

    /// True when the error is a full disk, so callers can say so plainly.
    pub fn is_disk_full(&self) -> bool {
        match self {
            Error::Io { cause, .. } | Error::Input { cause, .. } | Error::Output { cause, .. } => {
                cause.raw_os_error() == Some(libc::ENOSPC)
            }
            _ => false,
        }
    }
}

/// Describes an I/O error, spelling out the cases users hit most.
fn describe_io(error: &io::Error) -> String {
    match error.raw_os_error() {
        Some(libc::ENOSPC) => {
            format!("{error}; the disk is full: free space or move the store, nothing committed was lost")
        }
        Some(libc::EACCES) | Some(libc::EPERM) => format!("{error}; check the file's permissions"),
        _ => error.to_string(),
    }
}

/// Whether RocksDB's error says its files are damaged or missing (rather
/// than, say, locked or unreadable for permissions).
pub(crate) fn is_damage(cause: &rocksdb::Error) -> bool {
    let message = cause.to_string();
    ["Corruption", "No such file", "does not exist", "truncated", "checksum mismatch"]
        .iter()
        .any(|m| message.contains(m))
}

fn repair_hint(cause: &rocksdb::Error) -> &'static str {
    if is_damage(cause) { "; the index is damaged: `cairn repair` rebuilds it from the containers" } else { "" }
}
