//! The build keeps line tables for cairn's own code (Cargo.toml's profiles
//! drop all other debug info, and the binary is linked with compressed
//! debug sections and no local symbols, see `build.rs`): a panic's
//! backtrace must still name the function, file and line, in the test
//! binary and in the `cairn` binary.

#[test]
fn backtraces_name_file_and_line() {
    let line = line!() + 1;
    let backtrace = std::backtrace::Backtrace::force_capture().to_string();
    let here = format!("tests/backtraces.rs:{line}");
    assert!(backtrace.contains(&here), "no {here} in:\n{backtrace}");
}

#[test]
fn the_binary_names_file_and_line_when_it_panics() {
    let fixture = crate::util::Fixture::new();
    let data = fixture.file("data", b"some bytes");
    let output = fixture
        .command(&["put", "k", &data])
        .env("CAIRN_CRASH_AT", "commit:sealed")
        .env("CAIRN_CRASH_MODE", "panic")
        .env("RUST_BACKTRACE", "1")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("crashing at commit:sealed"), "{stderr}");
    assert!(stderr.contains("store/src/fault.rs:"), "no file and line in:\n{stderr}");
    assert!(stderr.contains("store/src/session.rs:"), "no caller's file and line in:\n{stderr}");
    assert!(stderr.contains("crash_point") && stderr.contains("put_object"), "no function names in:\n{stderr}");
}
