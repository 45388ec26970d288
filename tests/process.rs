//! Settings the binary makes for its own process.

use crate::util::Fixture;

/// A backup limits glibc's malloc arenas to two per core (see
/// `cli/src/arenas.rs` for what that saves), and leaves a limit the user
/// set alone.
#[test]
fn malloc_arenas_are_limited_unless_the_user_set_a_limit() {
    let fixture = Fixture::new();
    fixture.ok(&["init"]);
    std::fs::create_dir(fixture.path("tree")).unwrap();
    fixture.file("tree/a", b"some bytes");
    let tree = fixture.path("tree");
    let backup = |limit: Option<&str>| {
        let mut command = fixture.command(&["backup", tree.to_str().unwrap()]);
        command.env("CAIRN_LOG", "cairn=debug").env_remove("MALLOC_ARENA_MAX").env_remove("GLIBC_TUNABLES");
        if let Some(limit) = limit {
            command.env("MALLOC_ARENA_MAX", limit);
        }
        let output = command.output().unwrap();
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8(output.stderr).unwrap()
    };
    let cores = std::thread::available_parallelism().unwrap().get();
    let logged = backup(None);
    assert!(logged.contains(&format!("malloc arenas limited arenas={}", 2 * cores)), "{logged}");
    let logged = backup(Some("1"));
    assert!(!logged.contains("malloc arenas limited"), "{logged}");
}

/// The index's block cache is a setting (`--index-cache-mib`, or
/// `CAIRN_INDEX_CACHE_MIB`): each index a command opens gets the size
/// given, 64 MiB without one, and a size out of range or not a number is
/// refused before anything opens, naming the flag.
#[test]
fn the_index_cache_is_a_setting_and_a_bad_size_is_refused() {
    let fixture = Fixture::new();
    fixture.ok(&["init"]);
    let stats = |flag: Option<&str>, env: Option<&str>| {
        let mut args = vec!["stats"];
        if let Some(flag) = flag {
            args.extend(["--index-cache-mib", flag]);
        }
        let mut command = fixture.command(&args);
        command.env("CAIRN_LOG", "cairn_store=debug").env_remove("CAIRN_INDEX_CACHE_MIB");
        if let Some(env) = env {
            command.env("CAIRN_INDEX_CACHE_MIB", env);
        }
        command.output().unwrap()
    };
    for (flag, env, mib) in [(None, None, 64), (Some("256"), None, 256), (None, Some("512"), 512)] {
        let output = stats(flag, env);
        let logged = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "{logged}");
        assert!(logged.contains(&format!("opening the index cache_mib={mib}")), "{flag:?} {env:?}: {logged}");
    }
    for (flag, env) in [(Some("4"), None), (Some("lots"), None), (None, Some("1G"))] {
        let output = stats(flag, env);
        let said = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{flag:?} {env:?}: {said}");
        assert!(said.contains("--index-cache-mib"), "{said}");
        assert!(!said.contains("opening the index"), "{said}");
    }
}
