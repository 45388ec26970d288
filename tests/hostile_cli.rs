//! Hostile input at the command line (issue 15): spans of time that do not
//! fit in a record, store directories that other users can read or that
//! hold things of the user's, planted symlinks, file names that hold
//! terminal escape sequences, and a store another process holds.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cairn_store::{OpenMode, Store};
use serde_json::Value;

use crate::util::{Fixture, command_on, succeed};

/// A source directory with one small file.
fn source(fixture: &Fixture) -> String {
    let dir = fixture.path("src");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("file"), b"some bytes").unwrap();
    dir.to_str().unwrap().to_string()
}

/// Runs `cairn ARGS`, insists that clap refused them (exit 2), and
/// returns stderr.
fn usage_error(fixture: &Fixture, args: &[&str]) -> String {
    let started = Instant::now();
    let output = fixture.run(args);
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(output.status.code(), Some(2), "cairn {args:?} should be a usage error:\n{stderr}");
    assert!(started.elapsed() < Duration::from_secs(10), "cairn {args:?} took {:?}", started.elapsed());
    stderr
}

#[test]
fn spans_that_end_past_2262_are_usage_errors() {
    let fixture = Fixture::new();
    let src = source(&fixture);
    // 300 years from now does not fit in i64 nanoseconds: it wrapped to an
    // expiry in the 1700s, and `forget --expired` dropped the dataset.
    let error = usage_error(&fixture, &["backup", &src, "--expire-after", "300y"]);
    assert!(error.contains("2262") && error.contains("300y"), "{error}");
    assert!(!fixture.store().exists(), "a refused backup made a store");
    usage_error(&fixture, &["backup", &src, "--expire-after=-1d"]);
    // It wrapped to a negative period, and gc ran back to back for ever.
    let error = usage_error(&fixture, &["gc", "--every", "300y"]);
    assert!(error.contains("2262"), "{error}");
    usage_error(&fixture, &["gc", "--every", "0s"]);
    usage_error(&fixture, &["forget", "--keep-within=-7d"]);
    usage_error(&fixture, &["--wait=300y", "gc"]);

    // What fits is kept until it expires.
    fixture.ok(&["backup", &src, "--expire-after", "200y"]);
    let datasets: Value = serde_json::from_str(&fixture.ok(&["--json", "datasets"])).unwrap();
    let record = &datasets[0];
    let (time, expires) = (record["time_ns"].as_i64().unwrap(), record["expires_ns"].as_i64().unwrap());
    assert!(expires > time + 199 * 365 * 86_400_000_000_000, "{record}");
    let decisions: Value = serde_json::from_str(&fixture.ok(&["--json", "forget", "--expired", "-n"])).unwrap();
    assert_eq!(decisions["decisions"][0]["keep"], true, "{decisions}");
}

#[test]
fn keep_within_longer_than_the_calendar_keeps_everything() {
    let fixture = Fixture::new();
    let src = source(&fixture);
    fixture.ok(&["backup", &src]);
    fixture.ok(&["backup", &src]);
    // jiff's longest span: subtracting it from now leaves the calendar,
    // which used to mean "keep nothing within".
    let decisions: Value =
        serde_json::from_str(&fixture.ok(&["--json", "forget", "--keep-within", "19998y", "-n"])).unwrap();
    let decisions = decisions["decisions"].as_array().unwrap();
    assert_eq!(decisions.len(), 2);
    assert!(decisions.iter().all(|d| d["keep"] == true), "{decisions:#?}");
}

#[test]
fn a_failed_attach_removes_only_what_it_made() {
    let fixture = Fixture::new();
    let dir = fixture.path("mine");
    for sub in ["index", "containers"] {
        std::fs::create_dir_all(dir.join(sub)).unwrap();
        std::fs::write(dir.join(sub).join("keep"), b"the user's").unwrap();
    }
    std::fs::write(dir.join("notes"), b"the user's").unwrap();
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let endpoint = format!("http://{closed}");
    let mut attach = command_on(&dir, &["--endpoint-url", &endpoint, "attach", &crate::remote::url()]);
    crate::remote::aim(&mut attach);
    let output = attach.output().unwrap();
    assert_eq!(output.status.code(), Some(1), "{}", String::from_utf8_lossy(&output.stderr));
    for kept in ["index/keep", "containers/keep", "notes"] {
        assert_eq!(std::fs::read(dir.join(kept)).unwrap(), b"the user's", "{kept} was removed");
    }
    let mut left: Vec<String> =
        std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    left.sort();
    assert_eq!(left, ["containers", "index", "notes"], "what the attach made is gone, the rest stays");
}

#[test]
fn a_store_directory_open_to_others_is_warned_about() {
    let fixture = Fixture::new();
    // Made by cairn: 0700, no warning.
    fixture.put("a", b"a");
    let mode = std::fs::metadata(fixture.store()).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700);
    let quiet = fixture.run(&["objects"]);
    assert!(quiet.status.success());
    assert!(!String::from_utf8_lossy(&quiet.stderr).contains("chmod"), "{quiet:?}");
    // Opened up afterwards (or made by the user before `init`): cairn
    // leaves the mode alone, and says so on every open.
    std::fs::set_permissions(fixture.store(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let store = fixture.store().display().to_string();
    for args in [&["objects"][..], &["put", "b", fixture.path("a.in").to_str().unwrap()]] {
        let output = fixture.run(args);
        assert!(output.status.success(), "{output:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        let warnings: Vec<&str> = stderr.lines().filter(|l| l.contains("warning")).collect();
        assert_eq!(warnings.len(), 1, "one line: {stderr}");
        assert!(warnings[0].contains(&store) && warnings[0].contains(&format!("chmod 700 {store}")), "{stderr}");
    }
    let mode = std::fs::metadata(fixture.store()).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o755, "an existing directory's mode is the user's to change");

    let made = fixture.path("made-by-user");
    std::fs::create_dir(&made).unwrap();
    std::fs::set_permissions(&made, std::fs::Permissions::from_mode(0o750)).unwrap();
    let output = command_on(&made, &["init"]).output().unwrap();
    assert!(output.status.success(), "{output:?}");
    assert!(String::from_utf8_lossy(&output.stderr).contains("chmod 700"), "{output:?}");
}

#[test]
fn a_symlink_planted_where_the_store_writes_a_temporary_file_is_not_followed() {
    let fixture = Fixture::new();
    fixture.put("a", b"a");
    let victim = fixture.path("victim");
    std::fs::write(&victim, b"precious").unwrap();
    // `remotes.json` was written through `remotes.json.tmp`, a name
    // anyone could know; the write followed a symlink put there.
    std::os::unix::fs::symlink(&victim, fixture.store().join("remotes.json.tmp")).unwrap();
    std::os::unix::fs::symlink(&victim, fixture.store().join("config.json.tmp")).unwrap();
    fixture.ok(&["remote", "add", "r", "s3://bucket/prefix"]);
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
    let remotes = fixture.store().join("remotes.json");
    assert!(std::fs::symlink_metadata(&remotes).unwrap().is_file(), "remotes.json is a file of its own");
    let listed: Value = serde_json::from_str(&fixture.ok(&["--json", "remote", "list"])).unwrap();
    assert_eq!(listed["remotes"]["r"]["url"], "s3://bucket/prefix");
}

#[test]
fn get_leaves_no_temporary_file_and_keeps_the_umask() {
    let fixture = Fixture::new();
    fixture.put("a", b"bytes");
    let out = fixture.path("out");
    fixture.ok(&["get", "a", out.to_str().unwrap()]);
    assert_eq!(std::fs::read(&out).unwrap(), b"bytes");
    let mode = std::fs::metadata(&out).unwrap().permissions().mode() & 0o777;
    // The tests run with the umask they were given; a plain create would
    // get 0666 less it, not tempfile's 0600.
    let umask = {
        let status = String::from_utf8(Command::new("sh").args(["-c", "umask"]).output().unwrap().stdout).unwrap();
        u32::from_str_radix(status.trim(), 8).unwrap()
    };
    assert_eq!(mode, 0o666 & !umask);
    let names: Vec<_> = std::fs::read_dir(fixture.dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert!(!names.iter().any(|n| n.to_string_lossy().contains(".tmp")), "{names:?}");
}

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

/// The pid-and-command line the waiting message gives for this process.
fn waiting_for_us(stderr: &str) -> bool {
    stderr.contains("waiting for the store lock held by") && stderr.contains(&format!("(pid {})", std::process::id()))
}

#[test]
fn writers_wait_for_the_store_lock_only_when_asked() {
    let fixture = Fixture::new();
    let src = source(&fixture);
    fixture.put("a", b"a");
    let input = fixture.path("a.in");
    let input = input.to_str().unwrap();
    let holder = Store::open(&fixture.store(), OpenMode::Write).unwrap();

    // Without --wait: at once, "in use", naming the holder.
    let started = Instant::now();
    let error = fixture.fails(&["put", "b", input]);
    assert!(error.contains("in use") && error.contains(&format!("pid {}", std::process::id())), "{error}");
    assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());

    // --wait SPAN and --wait=SPAN: gives up after SPAN, having said once whom it waits for.
    for args in [&["put", "--wait", "1s", "b", input][..], &["--wait=1s", "gc"]] {
        let started = Instant::now();
        let error = fixture.fails(args);
        let waited = started.elapsed();
        assert!(waited >= Duration::from_secs(1) && waited < Duration::from_secs(10), "{args:?}: {waited:?}");
        assert!(error.contains("gave up after waiting") && error.contains("--wait"), "{error}");
        assert!(waiting_for_us(&error), "{error}");
        assert_eq!(error.matches("waiting for the store lock").count(), 1, "{error}");
    }

    // --wait alone: as long as it takes.
    let mut backup =
        fixture.command(&["backup", &src, "--wait"]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    assert!(backup.try_wait().unwrap().is_none(), "backup --wait did not wait");
    drop(holder);
    let output = backup.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(waiting_for_us(&stderr), "{stderr}");
    let datasets: Value = serde_json::from_str(&fixture.ok(&["--json", "datasets"])).unwrap();
    assert_eq!(datasets.as_array().unwrap().len(), 1);

    // A value that is no span is refused, with how to write a bare --wait.
    let error = usage_error(&fixture, &["put", "--wait", "b", input]);
    assert!(error.contains("--wait=forever"), "{error}");
}

/// A child process killed when the test ends, passed or failed (a
/// `gc --every` left behind would run for an hour).
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn gc_every_lets_go_of_the_store_between_runs() {
    let fixture = Fixture::new();
    let src = source(&fixture);
    fixture.ok(&["backup", &src]);
    let mut gc = KillOnDrop(fixture.command(&["gc", "--every", "1h"]).stdout(Stdio::piped()).spawn().unwrap());
    let gc = &mut gc.0;
    // Its first run ends with the "duration" line.
    let mut stdout = std::io::BufReader::new(gc.stdout.take().unwrap());
    let mut printed = String::new();
    while !printed.contains("duration") {
        let mut line = String::new();
        assert!(std::io::BufRead::read_line(&mut stdout, &mut line).unwrap() > 0, "gc ended: {printed}");
        printed.push_str(&line);
    }
    // Between runs the store is free: writers go ahead, without --wait.
    let backup = fixture.command(&["backup", &src]).output().unwrap();
    let stderr = String::from_utf8_lossy(&backup.stderr);
    assert!(backup.status.success(), "{stderr}");
    assert!(gc.try_wait().unwrap().is_none(), "gc --every exited on its own");
    let status = Command::new("kill").args(["-INT", &gc.id().to_string()]).status().unwrap();
    assert!(status.success());
    assert_eq!(gc.wait().unwrap().code(), Some(130));
    succeed(fixture.command(&["check"]));
}
