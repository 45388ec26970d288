//! Paths below a restore target, resolved through directory descriptors.
//!
//! A restore runs as root over a target that other users may be able to
//! write to while it runs. Resolving `target/a/b` by path would follow a
//! symlink that someone swapped in for `a` after the restore made it, and
//! write (or chmod) wherever it points. So every path below the target is
//! resolved from the target's descriptor without following any symlink:
//! `openat2` with `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS` where the kernel
//! has it (5.6+), else one `openat(O_NOFOLLOW | O_DIRECTORY)` per
//! component. Everything is then created, removed and changed relative to
//! the parent's descriptor (`mkdirat`, `openat(O_EXCL|O_NOFOLLOW)`,
//! `unlinkat`, `linkat` without following, `symlinkat`, `mknodat`).

use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::sync::OnceLock;
#[cfg(test)]
use std::sync::atomic::{AtomicBool, Ordering};

use nix::errno::Errno;
use nix::fcntl::{OFlag, OpenHow, ResolveFlag, openat, openat2};
use nix::sys::stat::{Mode, SFlag, fstatat};
use nix::unistd::{UnlinkatFlags, unlinkat};

/// Set by tests to take the per-component walk that older kernels get.
#[cfg(test)]
static FORCE_FALLBACK: AtomicBool = AtomicBool::new(false);

/// Whether `openat2` works here (Linux 5.6 and later, with no seccomp
/// filter refusing it): probed once per process. Restores (below) and
/// backups (`backup.rs`) resolve paths with it where it does.
pub(crate) fn has_openat2() -> bool {
    static PROBED: OnceLock<bool> = OnceLock::new();
    #[cfg(test)]
    if FORCE_FALLBACK.load(Ordering::Relaxed) {
        return false;
    }
    *PROBED.get_or_init(|| {
        let how = OpenHow::new().flags(DIR_FLAGS).resolve(ResolveFlag::RESOLVE_NO_SYMLINKS);
        openat2(nix::fcntl::AT_FDCWD, "/", how).is_ok()
    })
}

const DIR_FLAGS: OFlag = OFlag::O_RDONLY.union(OFlag::O_DIRECTORY).union(OFlag::O_NOFOLLOW).union(OFlag::O_CLOEXEC);

/// The restore target, open.
pub struct Beneath {
    root: OwnedFd,
}

impl Beneath {
    /// Opens the target directory (which the user named, so it may itself
    /// be reached through symlinks).
    pub fn open(target: &Path) -> io::Result<Beneath> {
        let root = openat(
            nix::fcntl::AT_FDCWD,
            target,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )?;
        Ok(Beneath { root })
    }

    /// The directory at `rel` (components checked when the tree was
    /// decoded; empty for the target itself), never through a symlink.
    pub fn dir(&self, rel: &Path) -> io::Result<OwnedFd> {
        if rel.as_os_str().is_empty() {
            return Ok(self.root.try_clone()?);
        }
        if has_openat2() {
            let how = OpenHow::new().flags(DIR_FLAGS).resolve(
                ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_SYMLINKS | ResolveFlag::RESOLVE_NO_MAGICLINKS,
            );
            // EAGAIN: a rename raced the lookup; the kernel asks for a retry.
            for _ in 0..16 {
                match openat2(self.root.as_fd(), rel, how) {
                    Err(Errno::EAGAIN) => continue,
                    other => return Ok(other?),
                }
            }
        }
        let mut fd = self.root.try_clone()?;
        for part in rel.components() {
            let Component::Normal(name) = part else {
                return Err(io::Error::new(io::ErrorKind::InvalidInput, "not a plain relative path"));
            };
            fd = openat(fd.as_fd(), name, DIR_FLAGS, Mode::empty())?;
        }
        Ok(fd)
    }

    /// The directory holding `rel`, and `rel`'s last component.
    pub fn parent<'p>(&self, rel: &'p Path) -> io::Result<(OwnedFd, &'p OsStr)> {
        let name = rel.file_name().ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no file name"))?;
        Ok((self.dir(rel.parent().unwrap_or(Path::new("")))?, name))
    }
}

/// The directory the last file went into, kept open for the next file if
/// it goes into the same one: a restore writes files in the order their
/// bytes were stored, which keeps a directory's files together, so this
/// saves an `openat2` and a `close` for most files (a restore of
/// `/usr/share`, 43,221 files, made 53,400 `openat2` and 96,857 `close`
/// calls). One per writing thread, so the descriptors held stay few
/// however many directories a restore has.
///
/// Holding a directory open is as safe as resolving it again for each
/// file: the descriptor names the directory the restore made (or found)
/// there, never anything a symlink swapped in later points at. A directory
/// moved away meanwhile gets the next files wherever it now is, as a file
/// already open gets its bytes.
#[derive(Default)]
pub struct LastDir {
    open: Option<(PathBuf, OwnedFd)>,
}

impl LastDir {
    /// The directory holding `rel`, and `rel`'s last component.
    pub fn parent<'p>(&mut self, root: &Beneath, rel: &'p Path) -> io::Result<(BorrowedFd<'_>, &'p OsStr)> {
        let name = rel.file_name().ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no file name"))?;
        let dir = rel.parent().unwrap_or(Path::new(""));
        let fd = match self.open.take() {
            Some((path, fd)) if path == dir => (path, fd),
            // The last one is closed before the next is opened.
            _ => (dir.to_path_buf(), root.dir(dir)?),
        };
        Ok((self.open.insert(fd).1.as_fd(), name))
    }
}

/// What is at `name` in `dir`, not following a symlink: `None` if nothing.
pub fn kind_at(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<Option<SFlag>> {
    match fstatat(dir, name, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(Some(SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT)),
        Err(Errno::ENOENT) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Removes `name` from `dir`, a whole directory tree included, never
/// following a symlink (one planted inside is removed, not entered).
pub fn remove_at(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<()> {
    if kind_at(dir, name)? != Some(SFlag::S_IFDIR) {
        return Ok(unlinkat(dir, name, UnlinkatFlags::NoRemoveDir)?);
    }
    // Iterative, so a deep tree in the way cannot exhaust the stack: a
    // stack of open directories, each emptied before it is removed.
    let mut stack: Vec<(OwnedFd, std::ffi::OsString)> = Vec::new();
    let first = openat(dir, name, DIR_FLAGS, Mode::empty())?;
    stack.push((first, name.to_owned()));
    loop {
        let Some((fd, _)) = stack.last() else { return Ok(()) };
        let mut child_dir = None;
        let mut listing = nix::dir::Dir::from_fd(fd.try_clone()?)?;
        for entry in listing.iter() {
            let entry = entry?;
            let child = OsStr::from_bytes(entry.file_name().to_bytes());
            if child == "." || child == ".." {
                continue;
            }
            if kind_at(fd.as_fd(), child)? == Some(SFlag::S_IFDIR) {
                child_dir = Some(child.to_owned());
                break;
            }
            unlinkat(fd.as_fd(), child, UnlinkatFlags::NoRemoveDir)?;
        }
        match child_dir {
            Some(child) => {
                let sub = openat(fd.as_fd(), child.as_os_str(), DIR_FLAGS, Mode::empty())?;
                stack.push((sub, child));
            }
            None => {
                let (done, done_name) = stack.pop().expect("non-empty");
                drop(done);
                let parent = stack.last().map(|(fd, _)| fd.as_fd()).unwrap_or(dir);
                unlinkat(parent, done_name.as_os_str(), UnlinkatFlags::RemoveDir)?;
            }
        }
    }
}

/// A path for the xattr calls that have no `*at` form: the parent's
/// descriptor through `/proc/self/fd` (a magic link to exactly that
/// directory), then the name, which `lsetxattr` does not follow.
pub fn proc_path(dir: BorrowedFd<'_>, name: &OsStr) -> std::path::PathBuf {
    Path::new("/proc/self/fd").join(dir.as_raw_fd().to_string()).join(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symlinks_below_the_target_are_never_followed() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("real")).unwrap();
        std::os::unix::fs::symlink(outside.path(), dir.path().join("swapped")).unwrap();
        let beneath = Beneath::open(dir.path()).unwrap();
        assert!(beneath.dir(Path::new("real")).is_ok());
        assert!(beneath.dir(Path::new("swapped")).is_err());
        assert!(beneath.parent(Path::new("swapped/x")).is_err());
        // The fallback walk refuses it too.
        FORCE_FALLBACK.store(true, Ordering::Relaxed);
        assert!(beneath.dir(Path::new("swapped")).is_err());
        assert!(beneath.dir(Path::new("real")).is_ok());
        FORCE_FALLBACK.store(false, Ordering::Relaxed);
    }

    /// Files go into their own directories whatever order they come in;
    /// a directory swapped for a symlink after another one was used is
    /// refused, not followed.
    #[test]
    fn the_last_directory_is_kept_only_for_files_in_it() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        for sub in ["a", "b", "a/c"] {
            std::fs::create_dir(dir.path().join(sub)).unwrap();
        }
        let root = Beneath::open(dir.path()).unwrap();
        let mut last = LastDir::default();
        for rel in ["a/1", "a/2", "b/3", "a/4", "a/c/5", "top"] {
            let (fd, name) = last.parent(&root, Path::new(rel)).unwrap();
            let flags = OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW;
            drop(openat(fd, name, flags, Mode::from_bits_truncate(0o600)).unwrap());
            assert!(dir.path().join(rel).is_file(), "{rel}");
        }
        std::fs::rename(dir.path().join("b"), dir.path().join("b.old")).unwrap();
        std::os::unix::fs::symlink(outside.path(), dir.path().join("b")).unwrap();
        assert!(last.parent(&root, Path::new("b/6")).is_err());
        assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);
    }

    #[test]
    fn removing_a_tree_removes_planted_symlinks_not_their_targets() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("keep"), b"x").unwrap();
        let mut deep = dir.path().join("t");
        for _ in 0..50 {
            deep.push("d");
        }
        std::fs::create_dir_all(&deep).unwrap();
        std::fs::write(deep.join("f"), b"y").unwrap();
        std::os::unix::fs::symlink(outside.path(), dir.path().join("t/link")).unwrap();
        let root = Beneath::open(dir.path()).unwrap();
        remove_at(root.dir(Path::new("")).unwrap().as_fd(), OsStr::new("t")).unwrap();
        assert!(!dir.path().join("t").exists());
        assert!(outside.path().join("keep").exists());
    }
}
