//! The log: the store's own write-once history, kept in its containers.
//!
//! Every commit appends one *log record* (blob kind `log`) to a metadata
//! container of its session, under the commit lock, naming the previous
//! record: the records form a hash chain whose head is `meta/log_head`. The
//! record holds the commit's tid, time, host, user and command, the record
//! changes it made (datasets, objects) and the containers it wrote
//! ([`record`]). Because a commit's reference changes follow from its record
//! changes (`commit.rs`), the record is enough to redo the commit from the
//! containers; and replaying the chain from a checkpoint gives every live
//! record, which is how `cairn repair` rebuilds an index from the containers
//! alone ([`repair`]).
//!
//! **The commit point.** The container holding the record is sealed
//! (fdatasync'ed, directory fsynced) before the index batch is written. A
//! commit whose record is durable but whose batch is not (a crash between
//! the two, or an index that lost its newest writes) is *redone* by the
//! next writer to open the store ([`redo`]): a commit is durable once its
//! log record is. Readers see it after that.
//!
//! **Keeping records alive.** The log holds one reference on each record in
//! `log` (tid → record id): records since the newest checkpoint. A
//! checkpoint record names *pieces* holding every live record as of just
//! before it; when a checkpoint commits, the older records leave `log` and
//! lose that reference, so the delete job collects them. `gc` writes a
//! checkpoint once [`CHECKPOINT_EVERY`] records have accumulated, and the
//! first commit of a store without a log (made before there was one) is a
//! checkpoint, so the chain always starts from one.

pub mod chain;
pub mod record;
pub mod redo;
pub mod repair;
pub(crate) mod write;

use std::sync::OnceLock;

pub use chain::LogEntry;
pub use record::{Body, Change, Family, LogBlob, LogRecord, Piece};
pub use repair::{RepairOptions, RepairReport};

/// Records between checkpoints (`gc` writes one past this).
pub const CHECKPOINT_EVERY: u64 = 1024;

static COMMAND: OnceLock<String> = OnceLock::new();

/// Names the command line that log records of this process carry (the
/// binary calls this once; a library user need not).
pub fn set_command(command: String) {
    let _ = COMMAND.set(command);
}

/// Host, user and command line of this process, for log records.
pub(crate) fn identity() -> (String, String, String) {
    let host = nix::unistd::gethostname().ok().and_then(|h| h.into_string().ok()).unwrap_or_default();
    let uid = nix::unistd::Uid::current();
    let user = match nix::unistd::User::from_uid(uid) {
        Ok(Some(user)) => user.name,
        _ => uid.to_string(),
    };
    let command = COMMAND.get().cloned().unwrap_or_else(|| "cairn (library)".to_string());
    (host, user, command)
}
