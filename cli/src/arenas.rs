//! glibc's malloc arenas, limited to two per core.
//!
//! glibc gives each thread that finds the arenas busy an arena of its own,
//! up to eight per core, and memory freed into an arena stays there for
//! that arena's next allocations. A backup runs four walking threads per
//! core, a compression pool and RocksDB's threads, each allocating and
//! freeing chunk batches and frames of up to a few MiB, so the freed
//! memory sat in up to 16 arenas (on 2 cores) that other threads could not
//! reuse. Measured (2 cores, release build, runs taking turns, 2026-12-04):
//!
//! | arenas | backup `/usr/lib`, peak RSS | wall | million-file backup |
//! | --- | --- | --- | --- |
//! | glibc's default (16) | 245-261 MB | 13.2-13.3 s | 158.1 MiB |
//! | two per core (4) | 170-172 MB | 12.7-13.6 s | 132.8 MiB |
//! | one per core (2) | 144-150 MB | 13.1-13.9 s | |
//!
//! One per core saves more but makes threads wait on the arenas' locks
//! (puts ran 8% slower with it in an earlier measurement); two per core
//! cost no speed in any of the runs. A user's own `MALLOC_ARENA_MAX` (or
//! glibc tunable) wins.

/// Environment variables through which a user sets the arena limit.
const USER_SETTINGS: [&str; 2] = ["MALLOC_ARENA_MAX", "GLIBC_TUNABLES"];

/// The arena limit to set for `cores` cores, or `None` where the user set
/// one: `env` reads an environment variable.
fn arena_limit(cores: usize, env: impl Fn(&str) -> Option<String>) -> Option<i32> {
    let user_set = USER_SETTINGS.iter().any(|name| match env(name) {
        Some(value) if *name == "GLIBC_TUNABLES" => value.contains("glibc.malloc.arena_max"),
        Some(_) => true,
        None => false,
    });
    (!user_set).then(|| i32::try_from(cores.saturating_mul(2)).unwrap_or(i32::MAX).max(2))
}

/// Limits the process to two malloc arenas per core unless the user set a
/// limit; returns the limit set. Called first thing, before cairn starts
/// any thread (arenas made before the call would stay).
pub fn limit() -> Option<i32> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let limit = arena_limit(cores, |name| std::env::var(name).ok())?;
    set_arena_max(limit).then_some(limit)
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn set_arena_max(limit: i32) -> bool {
    // SAFETY: `mallopt` takes two integers and touches only malloc's own
    // settings (under its own lock); M_ARENA_MAX accepts any positive value.
    unsafe { libc::mallopt(libc::M_ARENA_MAX, limit) == 1 }
}

/// Other C libraries' allocators have no such setting.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn set_arena_max(_limit: i32) -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_arenas_per_core_unless_the_user_chose() {
        let none = |_: &str| None;
        assert_eq!(arena_limit(2, none), Some(4));
        assert_eq!(arena_limit(48, none), Some(96));
        assert_eq!(arena_limit(0, none), Some(2));
        assert_eq!(arena_limit(usize::MAX, none), Some(i32::MAX));
        let arena_max = |name: &str| (name == "MALLOC_ARENA_MAX").then(|| "1".to_string());
        assert_eq!(arena_limit(2, arena_max), None);
        let tunable = |name: &str| (name == "GLIBC_TUNABLES").then(|| "glibc.malloc.arena_max=3".to_string());
        assert_eq!(arena_limit(2, tunable), None);
        let other_tunable = |name: &str| (name == "GLIBC_TUNABLES").then(|| "glibc.malloc.tcache_count=0".to_string());
        assert_eq!(arena_limit(2, other_tunable), Some(4));
    }
}
