//! Hostile input at the command line (issue 15): file names that hold
//! terminal escape sequences.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::process::{Command, Stdio};

use serde_json::Value;

use crate::util::Fixture;

/// A name that sets the terminal's title and clears its screen.
const HOSTILE: &[u8] = b"evil\x1b]0;owned\x07\x1b[2J\x1b[31mname";

/// `cairn ARGS` on `store` with its standard output and error on a
/// terminal (`script` runs it on a pseudo-terminal); what the terminal
/// got, whatever the exit code.
fn on_a_terminal(store: &std::path::Path, args: &[&str]) -> Vec<u8> {
    let mut line = format!("'{}' --store '{}'", env!("CARGO_BIN_EXE_cairn"), store.display());
    for arg in args {
        line.push_str(&format!(" '{arg}'"));
    }
    let output = Command::new("script")
        .args(["-qec", &line, "/dev/null"])
        .env_remove("CAIRN_STORE")
        .stdin(Stdio::null())
        .output()
        .expect("script (util-linux) runs");
    output.stdout
}

#[test]
fn names_with_escape_sequences_are_escaped_on_a_terminal_only() {
    let fixture = Fixture::new();
    let src = fixture.path("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join(OsStr::from_bytes(HOSTILE)), b"x").unwrap();
    std::os::unix::fs::symlink(OsStr::from_bytes(HOSTILE), src.join("link")).unwrap();
    fixture.ok(&["backup", src.to_str().unwrap()]);
    std::fs::write(src.join(OsStr::from_bytes(HOSTILE)), b"changed").unwrap();
    fixture.ok(&["backup", src.to_str().unwrap()]);
    let hostile_path = format!("/{}", String::from_utf8_lossy(HOSTILE));
    let commands: [&[&str]; 5] = [
        &["ls", "latest"],
        &["ls", "-l", "latest"],
        &["find", "latest"],
        &["stat", "latest", "/link"],
        &["diff", "1", "2"],
    ];
    let escaped = br"evil\033]0;owned\a\033[2J\033[31mname";
    for args in commands {
        // Piped: the exact bytes, for scripts.
        let piped = fixture.command(args).output().unwrap();
        assert!(piped.status.success(), "{args:?}: {piped:?}");
        let contains = |haystack: &[u8], needle: &[u8]| haystack.windows(needle.len()).any(|w| w == needle);
        assert!(contains(&piped.stdout, HOSTILE), "{args:?} piped: {:?}", String::from_utf8_lossy(&piped.stdout));
        // On a terminal: escaped, and no escape character reaches it.
        let shown = on_a_terminal(&fixture.store(), args);
        assert!(contains(&shown, escaped), "{args:?}: {:?}", String::from_utf8_lossy(&shown));
        assert!(!shown.contains(&0x1b) && !shown.contains(&0x07), "{args:?}: {:?}", String::from_utf8_lossy(&shown));
    }
    // An error that names the path, on a terminal's standard error.
    let shown = on_a_terminal(&fixture.store(), &["cat", "latest", &format!("{hostile_path}/nothing")]);
    assert!(!shown.contains(&0x1b), "{:?}", String::from_utf8_lossy(&shown));
    // JSON carries the name whole (its own escapes keep it harmless).
    let listed: Value = serde_json::from_str(&fixture.ok(&["--json", "ls", "latest"])).unwrap();
    assert!(listed.as_array().unwrap().iter().any(|e| e["path"] == hostile_path), "{listed}");
}
