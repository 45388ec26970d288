//! Crash points, for tests that crash the real binary at each step of the
//! commit protocol. When the environment variable `CAIRN_CRASH_AT` names a
//! point, the process aborts there: no destructors, no cleanup, like a
//! power cut as far as the store's files are concerned. One environment
//! lookup per process; nothing happens when the variable is unset.

use std::sync::OnceLock;

/// A commit's crash points, in the order it passes them.
pub const CRASH_POINTS: [&str; 4] = ["session:container-sealed", "commit:sealed", "commit:resolved", "commit:written"];

/// The delete job's crash points: a cascade batch before and after its
/// batch is durable; compaction after its new containers are sealed, before
/// and after the index is repointed, and after the old files are removed.
pub const GC_CRASH_POINTS: [&str; 6] = [
    "reclaim:resolved",
    "reclaim:written",
    "compact:sealed",
    "compact:resolved",
    "compact:written",
    "compact:unlinked",
];

/// Aborts the process if `CAIRN_CRASH_AT` is `name`.
pub fn crash_point(name: &'static str) {
    static AT: OnceLock<Option<String>> = OnceLock::new();
    debug_assert!(CRASH_POINTS.contains(&name) || GC_CRASH_POINTS.contains(&name));
    if AT.get_or_init(|| std::env::var("CAIRN_CRASH_AT").ok()).as_deref() == Some(name) {
        eprintln!("cairn: crashing at {name} (CAIRN_CRASH_AT)");
        std::process::abort();
    }
}
