//! Crash points, for tests that crash the real binary at each step of the
//! commit protocol. When the environment variable `CAIRN_CRASH_AT` names a
//! point, the process aborts there: no destructors, no cleanup, like a
//! power cut as far as the store's files are concerned. One environment
//! lookup per process; nothing happens when the variable is unset.
//!
//! `CAIRN_FAULT` injects the faults a crash cannot: an index write whose
//! outcome is unknown (`lost-ack:POINT`), and a missing fsync
//! (`skip-sync:WHAT`), for the tests that show the harness would notice;
//! and a pause (`pause:POINT:NAME:FILE`) in which a test changes the files a
//! backup is reading at exactly the moment a race would.

use std::sync::OnceLock;

/// A commit's crash points, in the order it passes them.
/// From `commit:logged` on, the commit's log record is durable: a crash
/// there leaves a commit that the next writer redoes (`log/redo.rs`).
pub const CRASH_POINTS: [&str; 5] =
    ["session:container-sealed", "commit:sealed", "commit:logged", "commit:resolved", "commit:written"];

/// The crash points at which a commit's log record is durable but its
/// index batch is not.
pub const LOGGED_CRASH_POINTS: [&str; 2] = ["commit:logged", "commit:resolved"];

/// A commit too large for one batch (`apply.rs`): its final batch saved
/// beside its durable stage, and its first entries applied. The next
/// writer's open finishes it.
pub const STAGED_CRASH_POINTS: [&str; 2] = ["commit:staged", "commit:applying"];

/// Redoing a commit at open, and `cairn repair`: before and after the
/// redo's batch; the rebuilt index complete beside the old; the old moved
/// aside before the new takes its place.
pub const REPAIR_CRASH_POINTS: [&str; 4] = ["redo:resolved", "redo:written", "repair:built", "repair:moved-aside"];

/// The delete job's crash points: a cascade batch before and after its
/// batch is durable; compaction after its new containers are sealed, before
/// and after the index is repointed, and after the old files are removed.
pub const GC_CRASH_POINTS: [&str; 7] = [
    "reclaim:resolved",
    "reclaim:written",
    "compact:sealed",
    "compact:logged",
    "compact:resolved",
    "compact:written",
    "compact:unlinked",
];

/// An attach's crash point: the store and its `remotes.json` are made, the
/// index is not filled yet.
pub const ATTACH_CRASH_POINTS: [&str; 1] = ["attach:remotes-saved"];

/// Aborts the process if `CAIRN_CRASH_AT` is `name`.
pub fn crash_point(name: &'static str) {
    static AT: OnceLock<Option<String>> = OnceLock::new();
    debug_assert!(
        CRASH_POINTS.contains(&name)
            || GC_CRASH_POINTS.contains(&name)
            || ATTACH_CRASH_POINTS.contains(&name)
            || REPAIR_CRASH_POINTS.contains(&name)
            || STAGED_CRASH_POINTS.contains(&name)
    );
    if AT.get_or_init(|| std::env::var("CAIRN_CRASH_AT").ok()).as_deref() == Some(name) {
        // `CAIRN_CRASH_MODE=panic` panics instead: for the test that a
        // panic's backtrace names file and line in the built binary.
        if std::env::var("CAIRN_CRASH_MODE").as_deref() == Ok("panic") {
            panic!("crashing at {name} (CAIRN_CRASH_AT)");
        }
        eprintln!("cairn: crashing at {name} (CAIRN_CRASH_AT)");
        std::process::abort();
    }
}

/// Whether `CAIRN_FAULT` is `skip-sync:WHAT`: the power-loss tests remove
/// one fsync this way (`container`: a container's fdatasync at seal;
/// `commit`: the commit batch's sync; `stage`: the flush that makes a
/// large commit's staged entries durable) to show that they then fail. Never
/// set it on a store you care about.
pub fn skip_sync(what: &str) -> bool {
    fault().and_then(|f| f.strip_prefix("skip-sync:")) == Some(what)
}

/// `CAIRN_FAULT`, read once.
fn fault() -> Option<&'static str> {
    static FAULT: OnceLock<Option<String>> = OnceLock::new();
    FAULT.get_or_init(|| std::env::var("CAIRN_FAULT").ok()).as_deref()
}

/// Fails with an error if `CAIRN_FAULT` is `lost-ack:NAME`: for tests of a
/// write whose outcome is unknown, called just after the write at crash
/// point `NAME` reached the index, as if RocksDB had written its log and
/// then reported an error.
pub fn lost_acknowledgement(name: &'static str) -> crate::error::Result<()> {
    match fault().and_then(|f| f.strip_prefix("lost-ack:")) {
        Some(point) if point == name => Err(crate::error::Error::io(
            "writing the index",
            std::path::Path::new("index"),
            std::io::Error::other(format!("injected fault after {name} (CAIRN_FAULT)")),
        )),
        _ => Ok(()),
    }
}

/// The pause points: a backup has listed a directory and is about to
/// `lstat` a name in it, or has `lstat`ed a regular file and is about to
/// open it; a restore has made its directories, or has written its files
/// and is about to put the directories' metadata back (the windows in
/// which a hostile user swaps what is there).
pub const PAUSE_POINTS: [&str; 4] =
    ["backup:before-lstat", "backup:before-open", "restore:dirs-made", "restore:files-written"];

/// Pauses at `point` if `CAIRN_FAULT` is `pause:POINT:NAME:FILE` and `name`
/// (the file the process is at) is NAME, or `pause:POINT:FILE` for a point
/// that has no name (`None`): creates FILE, then waits until the test removes it
/// (a handshake, so the test needs no guessed sleeps), for a minute at
/// most. Once per process.
pub fn pause_point(point: &'static str, name: Option<&[u8]>) {
    use std::sync::atomic::{AtomicBool, Ordering};
    static PAUSED: AtomicBool = AtomicBool::new(false);
    debug_assert!(PAUSE_POINTS.contains(&point));
    let Some(rest) = fault().and_then(|f| f.strip_prefix("pause:")?.strip_prefix(point)?.strip_prefix(':')) else {
        return;
    };
    let file = match name {
        None => rest,
        Some(name) => {
            let Some((wanted, file)) = rest.split_once(':') else { return };
            if wanted.as_bytes() != name {
                return;
            }
            file
        }
    };
    if PAUSED.swap(true, Ordering::SeqCst) {
        return;
    }
    let file = std::path::Path::new(file);
    if let Err(e) = std::fs::write(file, point) {
        eprintln!("cairn: cannot pause at {point} (CAIRN_FAULT): writing {}: {e}", file.display());
        return;
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while file.exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}
