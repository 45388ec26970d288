//! The writer lock: one process owns a store for writing.
//!
//! RocksDB has a lock of its own, but its error does not say who holds it.
//! `STORE/lock` is locked with `flock` (released by the kernel when the
//! process dies, even by SIGKILL) and holds the owner's pid and command line
//! so that a second writer can be told who is in the way. A writer may
//! also wait for it ([`LockWait`]: `--wait` on the command line), which is
//! how a backup started while `gc` runs goes ahead when the job ends.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// How long a writer waits for a store another process holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LockWait {
    /// Not at all: fail at once with [`Error::InUse`].
    #[default]
    No,
    /// Until the holder lets go.
    Forever,
    /// At most this long, then fail with [`Error::LockTimeout`].
    For(Duration),
}

/// How often a bounded wait tries the lock again.
const POLL: Duration = Duration::from_millis(50);

/// Holds the lock until dropped.
#[derive(Debug)]
pub struct WriterLock {
    _file: File,
}

impl WriterLock {
    /// Takes the lock of the store at `root`, waiting for it as `wait`
    /// says (or saying who holds it); `waiting` is called once, with who
    /// holds it, when the lock is taken and the wait begins.
    pub fn acquire_waiting(root: &Path, wait: LockWait, waiting: &mut dyn FnMut(Option<&str>)) -> Result<WriterLock> {
        let path = root.join("lock");
        // O_NOFOLLOW: a symlink planted at `lock` must not make us lock
        // (and truncate) a file elsewhere.
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&path)
            .map_err(|e| Error::io("opening store lock", &path, e))?;
        let holder_of = |file: &mut File| {
            let mut holder = String::new();
            let _ = file.rewind().and_then(|()| file.read_to_string(&mut holder));
            let holder = holder.trim();
            (!holder.is_empty()).then(|| holder.to_string())
        };
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let holder = holder_of(&mut file);
                let started = Instant::now();
                let deadline = match wait {
                    LockWait::No => return Err(Error::InUse { path: root.to_path_buf(), holder }),
                    LockWait::Forever => None,
                    LockWait::For(limit) => Some(started.checked_add(limit)),
                };
                waiting(holder.as_deref());
                match deadline {
                    None => file.lock().map_err(|e| Error::io("locking store", &path, e))?,
                    Some(deadline) => loop {
                        match file.try_lock() {
                            Ok(()) => break,
                            Err(TryLockError::WouldBlock) => {}
                            Err(TryLockError::Error(e)) => return Err(Error::io("locking store", &path, e)),
                        }
                        // A deadline past what the clock can hold is no deadline.
                        let left = deadline.map_or(POLL, |d| d.saturating_duration_since(Instant::now()));
                        if left.is_zero() {
                            return Err(Error::LockTimeout {
                                path: root.to_path_buf(),
                                holder: holder_of(&mut file).or(holder),
                                waited: started.elapsed(),
                            });
                        }
                        std::thread::sleep(left.min(POLL));
                    },
                }
            }
            Err(TryLockError::Error(e)) => return Err(Error::io("locking store", &path, e)),
        }
        let command: Vec<String> = std::env::args().collect();
        let holder = format!("pid {}: {}", std::process::id(), command.join(" "));
        file.set_len(0)
            .and_then(|()| file.rewind())
            .and_then(|()| file.write_all(holder.as_bytes()))
            .map_err(|e| Error::io("writing store lock", &path, e))?;
        Ok(WriterLock { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acquire(root: &Path) -> Result<WriterLock> {
        WriterLock::acquire_waiting(root, LockWait::No, &mut |_| {})
    }

    #[test]
    fn a_bounded_wait_times_out_and_an_unbounded_one_gets_the_lock() {
        let dir = tempfile::tempdir().unwrap();
        let held = acquire(dir.path()).unwrap();
        assert!(matches!(acquire(dir.path()), Err(Error::InUse { .. })));
        let mut told = 0;
        let started = Instant::now();
        let error = WriterLock::acquire_waiting(dir.path(), LockWait::For(Duration::from_millis(200)), &mut |holder| {
            told += 1;
            assert!(holder.is_some_and(|h| h.starts_with(&format!("pid {}", std::process::id()))), "{holder:?}");
        })
        .unwrap_err();
        assert!(matches!(error, Error::LockTimeout { .. }), "{error}");
        assert!(started.elapsed() >= Duration::from_millis(200));
        assert_eq!(told, 1, "the wait is announced once");
        let releaser = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            drop(held);
        });
        WriterLock::acquire_waiting(dir.path(), LockWait::Forever, &mut |_| {}).unwrap();
        releaser.join().unwrap();
    }

    #[test]
    fn a_symlink_in_place_of_the_lock_is_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let elsewhere = dir.path().join("elsewhere");
        std::fs::write(&elsewhere, b"precious").unwrap();
        let root = dir.path().join("store");
        std::fs::create_dir(&root).unwrap();
        std::os::unix::fs::symlink(&elsewhere, root.join("lock")).unwrap();
        assert!(acquire(&root).is_err());
        assert_eq!(std::fs::read(&elsewhere).unwrap(), b"precious");
    }
}
