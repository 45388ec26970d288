//! Backup sources that other users control (issue 15): files swapped
//! between `lstat` and open, trees thousands of levels deep, and times
//! outside what an entry's i64 ns can hold. A backup running as root must
//! neither hang, nor fill the store, nor crash, nor record a time that is
//! not the file's.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use crate::util::{Fixture, noise};

/// How long a backup of a few small files may take before it counts as hung.
const HUNG: Duration = Duration::from_secs(60);

/// Runs `cairn backup SOURCE`, paused (`CAIRN_FAULT=pause:backup:before-open`)
/// after it has `lstat`ed the file called `victim` and before it opens it;
/// `swap` runs in that window. A backup that has not
/// ended `HUNG` after the swap is killed and the test fails.
fn backup_swapping(fixture: &Fixture, source: &Path, swap: impl FnOnce()) -> Output {
    let marker = fixture.path("paused");
    let (out, err) = (fixture.path("backup.out"), fixture.path("backup.err"));
    let mut command = fixture.command(&["backup", source.to_str().unwrap()]);
    command.env("CAIRN_FAULT", format!("pause:backup:before-open:victim:{}", marker.display()));
    command.stdout(Stdio::from(fs::File::create(&out).unwrap()));
    command.stderr(Stdio::from(fs::File::create(&err).unwrap()));
    let mut child = command.spawn().unwrap();
    let output = |child: &mut std::process::Child| Output {
        status: child.wait().unwrap(),
        stdout: fs::read(&out).unwrap(),
        stderr: fs::read(&err).unwrap(),
    };

    let deadline = Instant::now() + HUNG;
    while !marker.exists() {
        if child.try_wait().unwrap().is_some() || Instant::now() > deadline {
            let _ = child.kill();
            let output = output(&mut child);
            panic!("the backup never paused before opening a file: {}", String::from_utf8_lossy(&output.stderr));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    swap();
    fs::remove_file(&marker).unwrap();

    let deadline = Instant::now() + HUNG;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            child.kill().unwrap();
            let output = output(&mut child);
            panic!(
                "the backup hung after the file was swapped (killed after {HUNG:?}); stderr: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    output(&mut child)
}

/// A source with a small file to keep and `victim`, `victim_len` bytes.
fn source_with_victim(fixture: &Fixture, victim_len: usize) -> (PathBuf, PathBuf) {
    let source = fixture.path("source");
    fs::create_dir(&source).unwrap();
    fs::write(source.join("keep.txt"), b"kept").unwrap();
    let victim = source.join("victim");
    fs::write(&victim, noise(victim_len, 7)).unwrap();
    (source, victim)
}

/// The swapped file is named, the backup exits 3 (partial), and the
/// dataset holds the rest.
fn assert_left_out(fixture: &Fixture, output: &Output, now: &str) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("victim") && stderr.contains("replaced after it was listed"), "{stderr}");
    assert!(stderr.contains(now), "{stderr}");
    assert_eq!(fixture.ok(&["find", "latest", "--type", "f"]), "/keep.txt\n");
    fixture.ok(&["check"]);
}

/// A file swapped for a fifo between lstat and open: opening it for reading
/// used to block until a writer came, which hung the backup forever.
#[test]
fn a_file_swapped_for_a_fifo_is_left_out_without_hanging() {
    let fixture = Fixture::new();
    let (source, victim) = source_with_victim(&fixture, 1000);
    let output = backup_swapping(&fixture, &source, || {
        fs::remove_file(&victim).unwrap();
        nix::unistd::mkfifo(&victim, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
    });
    assert_left_out(&fixture, &output, "not a regular file");
}

/// A file swapped for a symlink to `/dev/zero`: following it read zeros
/// without end (a file above 4 MiB had no bound on what was read; with
/// `/dev/urandom` the store grew until the disk was full).
#[test]
fn a_file_swapped_for_a_symlink_to_dev_zero_is_left_out_unread() {
    let fixture = Fixture::new();
    let (source, victim) = source_with_victim(&fixture, 5 << 20);
    let output = backup_swapping(&fixture, &source, || {
        fs::remove_file(&victim).unwrap();
        symlink("/dev/zero", &victim).unwrap();
    });
    assert_left_out(&fixture, &output, "a symlink");
    assert!(fixture.stored_bytes() < 1 << 20, "{} bytes stored", fixture.stored_bytes());
}

/// A file swapped for another regular file (a hard link to someone else's
/// file, say): not the inode that was listed, so it is not read.
#[test]
fn a_file_swapped_for_another_file_is_left_out() {
    let fixture = Fixture::new();
    let (source, victim) = source_with_victim(&fixture, 1000);
    let elsewhere = fixture.path("secret");
    fs::write(&elsewhere, noise(1000, 8)).unwrap();
    let output = backup_swapping(&fixture, &source, || {
        fs::remove_file(&victim).unwrap();
        fs::hard_link(&elsewhere, &victim).unwrap();
    });
    assert_left_out(&fixture, &output, "another file");
}
