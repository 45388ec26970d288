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

/// A time as ns since the epoch, or `None` if it does not fit the i64 an
/// entry stores (before 1677-09-21 or after 2262-04-11: `touch -d 2300-01-01`
/// makes one). Computed in i128, so no time wraps or panics on the way.
pub fn time_ns(seconds: i64, nanoseconds: i64) -> Option<i64> {
    i64::try_from(i128::from(seconds) * 1_000_000_000 + i128::from(nanoseconds)).ok()
}

/// `time_ns`, or an error naming the time (`what`: "modification" ...) and
/// saying the file is left out: a time cairn cannot record is never
/// recorded as a different one.
fn entry_time(what: &str, seconds: i64, nanoseconds: i64) -> std::io::Result<i64> {
    time_ns(seconds, nanoseconds).ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!(
                "its {what} time, {}, is outside the range cairn records (1677-09-21 to 2262-04-11, \
                 ns in an i64); left out rather than stored with a different time",
                utc_date(seconds, nanoseconds)
            ),
        )
    })
}

/// `seconds` since the epoch as a UTC date and time, for messages (any
/// i64; the proleptic Gregorian calendar, as `date -u` prints it).
fn utc_date(seconds: i64, nanoseconds: i64) -> String {
    let (days, secs) = (seconds.div_euclid(86_400), seconds.rem_euclid(86_400));
    // Howard Hinnant's civil_from_days, in i128 so no i64 input overflows.
    let z = i128::from(days) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i128::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}.{nanoseconds:09} UTC",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
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
        mtime_ns: entry_time("modification", m.mtime(), m.mtime_nsec())?,
        atime_ns: entry_time("access", m.atime(), m.atime_nsec())?,
        ctime_ns: entry_time("status change", m.ctime(), m.ctime_nsec())?,
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
/// (size, mtime, ctime): a backup that read something else skips it. A
/// time that no longer fits an entry is a change.
pub fn unchanged_since(entry: &Entry, m: &Metadata) -> bool {
    entry.size == m.size()
        && time_ns(m.mtime(), m.mtime_nsec()) == Some(entry.mtime_ns)
        && time_ns(m.ctime(), m.ctime_nsec()) == Some(entry.ctime_ns)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_outside_i64_ns_are_none_not_wrapped() {
        assert_eq!(time_ns(1, 5), Some(1_000_000_005));
        assert_eq!(time_ns(-1, 999_999_999), Some(-1));
        assert_eq!(time_ns(9_223_372_036, 854_775_807), Some(i64::MAX));
        assert_eq!(time_ns(9_223_372_036, 854_775_808), None);
        // i64::MIN ns is -9223372037 s + 145224192 ns: its seconds alone overflow in i64 ns.
        assert_eq!(time_ns(-9_223_372_037, 145_224_192), Some(i64::MIN));
        assert_eq!(time_ns(-9_223_372_037, 145_224_191), None);
        assert_eq!(time_ns(10_413_792_000, 0), None, "2300-01-01");
        assert_eq!(time_ns(-11_676_096_000, 0), None, "1600-01-01");
        assert_eq!(time_ns(i64::MAX, 999_999_999), None);
        assert_eq!(time_ns(i64::MIN, 0), None);
    }

    #[test]
    fn dates_in_messages() {
        assert_eq!(utc_date(0, 0), "1970-01-01 00:00:00.000000000 UTC");
        assert_eq!(utc_date(10_413_792_000, 0), "2300-01-01 00:00:00.000000000 UTC");
        assert_eq!(utc_date(-11_676_096_000, 5), "1600-01-01 00:00:00.000000005 UTC");
        assert_eq!(utc_date(951_782_400 + 3_723, 0), "2000-02-29 01:02:03.000000000 UTC");
        assert!(utc_date(i64::MAX, 0).starts_with("292277026596-12-04"), "{}", utc_date(i64::MAX, 0));
        assert!(utc_date(i64::MIN, 0).starts_with("-292277022657-01-27"), "{}", utc_date(i64::MIN, 0));
    }
}
