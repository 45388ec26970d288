//! Reading a file's metadata into an [`Entry`]: owners (with their names),
//! modes with setuid/setgid/sticky, ns times, xattrs (POSIX ACLs included),
//! devices. `apply.rs` puts it back on restored files.

use std::collections::HashMap;
use std::fs::Metadata;
use std::hash::Hash;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;
use std::sync::Mutex;

use nix::unistd::{Gid, Group, Uid, User};

use super::tree::{Entry, EntryKind};

/// What `lstat` said a directory entry is, or that it cannot be stored.
pub enum Classified {
    /// A kind cairn stores.
    Kind(EntryKind),
    /// A socket: skipped and counted.
    Socket,
}

/// The kind of a file from its metadata.
pub fn classify(metadata: &Metadata) -> Classified {
    let t = metadata.file_type();
    Classified::Kind(if t.is_file() {
        EntryKind::File
    } else if t.is_dir() {
        EntryKind::Dir
    } else if t.is_symlink() {
        EntryKind::Symlink
    } else if t.is_fifo() {
        EntryKind::Fifo
    } else if t.is_char_device() {
        EntryKind::CharDevice
    } else if t.is_block_device() {
        EntryKind::BlockDevice
    } else {
        return Classified::Socket;
    })
}

/// Owner and group names by id, looked up once each.
#[derive(Default)]
pub struct Names {
    users: Mutex<HashMap<u32, Option<String>>>,
    groups: Mutex<HashMap<u32, Option<String>>>,
    uids: Mutex<HashMap<String, Option<u32>>>,
    gids: Mutex<HashMap<String, Option<u32>>>,
}

/// The value for `key` in `cache`, found with `find` the first time.
fn cached<K: Eq + Hash + Clone, V: Clone>(cache: &Mutex<HashMap<K, V>>, key: &K, find: impl FnOnce() -> V) -> V {
    let mut cache = cache.lock().expect("names poisoned");
    cache.entry(key.clone()).or_insert_with(find).clone()
}

impl Names {
    fn user(&self, uid: u32) -> Option<String> {
        cached(&self.users, &uid, || User::from_uid(Uid::from_raw(uid)).ok().flatten().map(|u| u.name))
    }

    fn group(&self, gid: u32) -> Option<String> {
        cached(&self.groups, &gid, || Group::from_gid(Gid::from_raw(gid)).ok().flatten().map(|g| g.name))
    }

    /// The uid to restore: the local uid of the entry's user name if this
    /// machine has that user, else the stored number (as tar and restic do).
    pub(super) fn local_uid(&self, entry: &Entry) -> u32 {
        let Some(name) = &entry.user else { return entry.uid };
        cached(&self.uids, name, || User::from_name(name).ok().flatten().map(|u| u.uid.as_raw())).unwrap_or(entry.uid)
    }

    pub(super) fn local_gid(&self, entry: &Entry) -> u32 {
        let Some(name) = &entry.group else { return entry.gid };
        cached(&self.gids, name, || Group::from_name(name).ok().flatten().map(|g| g.gid.as_raw())).unwrap_or(entry.gid)
    }
}

/// The entry for `path` (called `name`) from its `lstat` metadata, with
/// xattrs and symlink target; no content yet.
pub fn read_entry(path: &Path, name: &[u8], kind: EntryKind, m: &Metadata, names: &Names) -> std::io::Result<Entry> {
    let target =
        if kind == EntryKind::Symlink { std::fs::read_link(path)?.as_os_str().as_bytes().to_vec() } else { Vec::new() };
    Ok(Entry {
        name: name.to_vec(),
        kind,
        mode: m.mode() & 0o7777,
        uid: m.uid(),
        gid: m.gid(),
        user: names.user(m.uid()),
        group: names.group(m.gid()),
        size: if matches!(kind, EntryKind::File | EntryKind::Symlink) { m.size() } else { 0 },
        mtime_ns: m.mtime() * 1_000_000_000 + m.mtime_nsec(),
        atime_ns: m.atime() * 1_000_000_000 + m.atime_nsec(),
        ctime_ns: m.ctime() * 1_000_000_000 + m.ctime_nsec(),
        inode: m.ino(),
        dev: m.dev(),
        links: m.nlink(),
        rdev: if matches!(kind, EntryKind::CharDevice | EntryKind::BlockDevice) { m.rdev() } else { 0 },
        xattrs: read_xattrs(path)?,
        target,
        blob: None,
    })
}

/// Every xattr of `path` (not following symlinks), sorted by name. A file
/// system without xattr support has none.
fn read_xattrs(path: &Path) -> std::io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let names = match xattr::list(path) {
        Ok(names) => names,
        Err(e) if e.raw_os_error() == Some(libc::ENOTSUP) => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for name in names {
        // An attribute removed between list and get is simply gone.
        if let Some(value) = xattr::get(path, &name)? {
            out.push((name.as_bytes().to_vec(), value));
        }
    }
    out.sort();
    Ok(out)
}

/// Whether the file at `m` still looks as it did when `entry` was read
/// (size, mtime, ctime): a backup that read something else skips it.
pub fn unchanged_since(entry: &Entry, m: &Metadata) -> bool {
    entry.size == m.size()
        && entry.mtime_ns == m.mtime() * 1_000_000_000 + m.mtime_nsec()
        && entry.ctime_ns == m.ctime() * 1_000_000_000 + m.ctime_nsec()
}
