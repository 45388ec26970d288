//! Putting an entry's metadata back on what a restore made: owners (by name
//! where the name exists here), mode, xattrs (POSIX ACLs included), times.
//!
//! Everything goes through a descriptor the restore holds: the open file or
//! directory itself, or, for symlinks and device nodes (which cannot be
//! opened safely for writing), the directory that holds them and a name
//! that is never followed. So no call here can be redirected by a symlink
//! or a directory swapped in while the restore runs.

use std::ffi::OsStr;
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;

use nix::fcntl::{AtFlags, OFlag, openat};
use nix::sys::stat::{FchmodatFlags, Mode, SFlag, UtimensatFlags, fchmodat, fstat, futimens, utimensat};
use nix::sys::time::TimeSpec;
use nix::unistd::{Gid, Uid, fchownat};

use super::beneath::proc_path;
use super::fsmeta::Names;
use super::tree::{Entry, EntryKind};

/// Which parts of the metadata a restore puts back.
#[derive(Clone, Copy, Debug)]
pub struct ApplyOptions {
    /// Owners (only root can give files away).
    pub owners: bool,
    /// Extended attributes, ACLs included.
    pub xattrs: bool,
    /// setuid and setgid bits (dropped by `--no-special`).
    pub setid: bool,
}

/// What metadata is put on.
#[derive(Clone, Copy)]
pub enum Target<'a> {
    /// A file or directory the restore holds open.
    File(&'a File),
    /// The entry called `name` in the directory `dir` (a symlink or a
    /// device node the restore just made there), never followed.
    At(BorrowedFd<'a>, &'a OsStr),
}

/// Mode bits that make a program run as its owner or group.
const SETID_BITS: u32 = 0o6000;

/// The owner and mode a file the restore has just made already has (one
/// `fstat`, which unlike `fchown` and `fchmod` changes nothing), so that
/// [`apply`] makes only the calls that change something: most files are
/// created with the owner and mode they are to have, and those two calls
/// were two of the seven a restored file cost.
#[derive(Clone, Copy, Debug)]
pub struct Has {
    uid: u32,
    gid: u32,
    mode: u32,
}

impl Has {
    /// What `file` has now; `None` if it cannot be read (then every call
    /// is made, as for a file found in place).
    pub fn of(file: &File) -> Option<Has> {
        use std::os::unix::fs::MetadataExt;
        let m = file.metadata().ok()?;
        Some(Has { uid: m.uid(), gid: m.gid(), mode: m.mode() & 0o7777 })
    }
}

/// The permission bits to create a file for `entry` with: its mode without
/// the setuid and setgid bits, which only [`apply`] puts on, after `chown`
/// (which clears them).
pub fn creation_mode(entry: &Entry) -> u32 {
    entry.mode & 0o777
}

/// The mode to restore for `entry`.
fn restored_mode(entry: &Entry, options: &ApplyOptions) -> u32 {
    if options.setid { entry.mode & 0o7777 } else { entry.mode & 0o7777 & !SETID_BITS }
}

/// Puts the entry's metadata on `target`: owners (when asked), mode,
/// xattrs, then times last (everything else changes ctime, and writing
/// xattrs may touch mtime on some file systems). Returns what could not be
/// put back; the restore goes on. `has` is what the target has already
/// (a file just made); an owner or mode it has is not set again.
pub fn apply(
    target: Target<'_>,
    entry: &Entry,
    options: &ApplyOptions,
    names: &Names,
    has: Option<Has>,
) -> Vec<String> {
    use xattr::FileExt;
    let mut problems = Vec::new();
    let mut note = |what: &str, e: &dyn std::fmt::Display| problems.push(format!("{what}: {e}"));
    let (local_uid, local_gid) = (names.local_uid(entry), names.local_gid(entry));
    let owned = has.is_some_and(|h| (h.uid, h.gid) == (local_uid, local_gid));
    if options.owners && !owned {
        let (uid, gid) = (Some(Uid::from_raw(local_uid)), Some(Gid::from_raw(local_gid)));
        let chowned = match target {
            Target::File(file) => fchownat(file.as_fd(), "", uid, gid, AtFlags::AT_EMPTY_PATH),
            Target::At(dir, name) => fchownat(dir, name, uid, gid, AtFlags::AT_SYMLINK_NOFOLLOW),
        };
        if let Err(e) = chowned {
            note("setting owner", &e);
        }
    }
    // After chown: chown clears setuid and setgid. Linux symlinks have no
    // mode of their own.
    // A chown that was made cleared nothing here: `has` is only given for
    // a file created without setuid and setgid bits.
    let mode = restored_mode(entry, options);
    if entry.kind != EntryKind::Symlink && has.is_none_or(|h| h.mode != mode) {
        let chmodded = match target {
            Target::File(file) => {
                use std::os::unix::fs::PermissionsExt;
                file.set_permissions(std::fs::Permissions::from_mode(mode))
            }
            Target::At(dir, name) => chmod_at(dir, name, entry.kind, mode).map_err(std::io::Error::from),
        };
        if let Err(e) = chmodded {
            note("setting mode", &e);
        }
    }
    if options.xattrs {
        for (name, value) in &entry.xattrs {
            let name = OsStr::from_bytes(name);
            let set = match target {
                Target::File(file) => file.set_xattr(name, value),
                // lsetxattr: the parent through its descriptor, the name not followed.
                Target::At(dir, child) => xattr::set(proc_path(dir, child), name, value),
            };
            if let Err(e) = set {
                note(&format!("setting xattr {}", name.to_string_lossy()), &e);
            }
        }
    }
    let (atime, mtime) = (timespec(entry.atime_ns), timespec(entry.mtime_ns));
    let timed = match target {
        Target::File(file) => futimens(file, &atime, &mtime),
        Target::At(dir, name) => utimensat(dir, name, &atime, &mtime, UtimensatFlags::NoFollowSymlink),
    };
    if let Err(e) = timed {
        note("setting times", &e);
    }
    problems
}

fn timespec(ns: i64) -> TimeSpec {
    TimeSpec::new(ns.div_euclid(1_000_000_000), ns.rem_euclid(1_000_000_000))
}

/// chmod of `name` in `dir` without following it: Linux has no
/// `fchmodat(AT_SYMLINK_NOFOLLOW)` before 6.6, so the node is opened with
/// `O_PATH | O_NOFOLLOW` (which opens nothing: no device is touched),
/// checked to be the kind that was made, and changed through its
/// `/proc/self/fd` link, which names exactly that inode.
fn chmod_at(dir: BorrowedFd<'_>, name: &OsStr, kind: EntryKind, mode: u32) -> nix::Result<()> {
    let node = openat(dir, name, OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC, Mode::empty())?;
    let expected = match kind {
        EntryKind::Fifo => SFlag::S_IFIFO,
        EntryKind::CharDevice => SFlag::S_IFCHR,
        EntryKind::BlockDevice => SFlag::S_IFBLK,
        _ => return Err(nix::Error::EINVAL),
    };
    if SFlag::from_bits_truncate(fstat(&node)?.st_mode) & SFlag::S_IFMT != expected {
        return Err(nix::Error::ESTALE);
    }
    let link = format!("/proc/self/fd/{}", node.as_raw_fd());
    fchmodat(nix::fcntl::AT_FDCWD, link.as_str(), Mode::from_bits_truncate(mode), FchmodatFlags::FollowSymlink)
}

/// Makes a fifo or device node called `name` in `dir`, private (0600)
/// until its metadata is put on last.
pub fn make_special_at(dir: BorrowedFd<'_>, name: &OsStr, entry: &Entry) -> std::io::Result<()> {
    let kind = match entry.kind {
        EntryKind::Fifo => SFlag::S_IFIFO,
        EntryKind::CharDevice => SFlag::S_IFCHR,
        EntryKind::BlockDevice => SFlag::S_IFBLK,
        other => return Err(std::io::Error::other(format!("{other:?} is not a special file"))),
    };
    nix::sys::stat::mknodat(dir, name, kind, Mode::from_bits_truncate(0o600), entry.rdev).map_err(std::io::Error::from)
}
