//! The build keeps line tables for cairn's own code (Cargo.toml's profiles
//! drop all other debug info, see ARCHITECTURE.md "Building"): a panic's
//! backtrace must still name the file and line.

#[test]
fn backtraces_name_file_and_line() {
    let line = line!() + 1;
    let backtrace = std::backtrace::Backtrace::force_capture().to_string();
    let here = format!("tests/backtraces.rs:{line}");
    assert!(backtrace.contains(&here), "no {here} in:\n{backtrace}");
}
