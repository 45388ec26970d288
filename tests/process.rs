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
