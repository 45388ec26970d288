//! Bad input gets a clear message naming the thing, a non-zero exit, and
//! changes nothing.

use cairn_store::{OpenMode, Store};

use crate::util::{Fixture, SmallDisk, command_on, succeed, text};

#[test]
fn missing_store_is_explained() {
    let fixture = Fixture::new();
    let error = fixture.fails(&["objects"]);
    assert!(error.contains("no cairn store at"), "{error}");
    assert!(error.contains("cairn init"), "{error}");
}

#[test]
fn missing_input_file_is_named_and_creates_nothing() {
    let fixture = Fixture::new();
    let error = fixture.fails(&["put", "k", "/nonexistent/file"]);
    assert!(error.contains("/nonexistent/file"), "{error}");
    assert!(!fixture.store().exists(), "a failed put created the store");
}

#[test]
fn unknown_key_and_bad_key_are_explained() {
    let fixture = Fixture::new();
    fixture.put("present", b"hello");
    let error = fixture.fails(&["get", "absent"]);
    assert!(error.contains("no object named 'absent'") && error.contains("cairn objects"), "{error}");
    let error = fixture.fails(&["rm", "absent"]);
    assert!(error.contains("absent"), "{error}");
    let error = fixture.fails(&["put", "", fixture.path("present.in").to_str().unwrap()]);
    assert!(error.contains("empty"), "{error}");
    assert_eq!(fixture.get("present"), b"hello");
}

#[test]
fn second_writer_is_told_the_store_is_in_use_and_by_whom() {
    let fixture = Fixture::new();
    fixture.put("a", b"a");
    let holder = Store::open(&fixture.store(), OpenMode::Write).unwrap();
    let error = fixture.fails(&["put", "b", fixture.path("a.in").to_str().unwrap()]);
    assert!(error.contains("in use"), "{error}");
    assert!(error.contains(&format!("pid {}", std::process::id())), "{error}");
    // Readers are not blocked by the writer.
    assert_eq!(fixture.get("a"), b"a");
    drop(holder);
    fixture.put("b", b"b");
}

#[test]
fn init_refuses_bad_sizes_and_an_existing_store() {
    let fixture = Fixture::new();
    let error = fixture.fails(&["init", "--avg-size", "3000"]);
    assert!(error.contains("power of two"), "{error}");
    fixture.ok(&["init"]);
    let error = fixture.fails(&["init"]);
    assert!(error.contains("already exists"), "{error}");
}

#[test]
fn store_directory_is_private() {
    use std::os::unix::fs::PermissionsExt;
    let fixture = Fixture::new();
    fixture.put("a", &text(1000, 1));
    let mode = std::fs::metadata(fixture.store()).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o700);
}

#[test]
fn get_into_a_closed_pipe_is_not_an_error() {
    let fixture = Fixture::new();
    fixture.put("big", &text(8 << 20, 2));
    let output = std::process::Command::new("bash")
        .arg("-c")
        .arg(format!(
            "'{}' --store '{}' get big | head -c 10 >/dev/null; echo ${{PIPESTATUS[0]}}",
            env!("CARGO_BIN_EXE_cairn"),
            fixture.store().display()
        ))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), "0", "{}", String::from_utf8_lossy(&output.stderr));
}

/// A put that fills the disk fails with a plain message, leaves no partial
/// containers behind, and loses nothing committed. Needs permission to
/// mount a small tmpfs (CI runs as root); elsewhere it says so and stops.
#[test]
fn full_disk_fails_cleanly_and_loses_nothing() {
    let fixture = Fixture::new();
    let Some(disk) = SmallDisk::mount(fixture.path("disk"), "24m") else {
        eprintln!("full_disk_fails_cleanly_and_loses_nothing: cannot mount a tmpfs here (not root); not run");
        return;
    };
    let store = disk.path.join("store");
    let small = crate::util::noise(2 << 20, 1);
    let small_file = fixture.file("small", &small);
    succeed(command_on(&store, &["put", "small", &small_file]));

    let big_file = fixture.file("big", &crate::util::noise(64 << 20, 2));
    let output = command_on(&store, &["put", "big", &big_file]).output().unwrap();
    assert_eq!(output.status.code(), Some(1));
    let error = String::from_utf8_lossy(&output.stderr);
    assert!(error.contains("disk is full"), "{error}");
    assert!(error.contains("nothing committed was lost"), "{error}");

    // What committed is intact, and the failed session's files are gone, so
    // there is room again.
    let out = fixture.path("small.out");
    succeed(command_on(&store, &["get", "small", out.to_str().unwrap()]));
    assert!(std::fs::read(&out).unwrap() == small);
    succeed(command_on(&store, &["check", "--read-data"]));
    succeed(command_on(&store, &["put", "small-again", &small_file]));
}

#[test]
fn restoring_onto_a_file_says_to_name_a_directory_and_changes_nothing() {
    let fixture = Fixture::new();
    let source = fixture.path("source");
    std::fs::create_dir(&source).unwrap();
    std::fs::write(source.join("a"), b"a").unwrap();
    fixture.ok(&["backup", source.to_str().unwrap()]);
    let file = fixture.path("file");
    std::fs::write(&file, b"mine").unwrap();
    let error = fixture.fails(&["restore", "latest", "--to", file.to_str().unwrap()]);
    assert!(error.contains("is not a directory") && error.contains("--to DIR"), "{error}");
    assert_eq!(std::fs::read(&file).unwrap(), b"mine");
}
