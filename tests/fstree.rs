//! Building real file trees for tests, and snapshotting them (lstat,
//! xattrs, allocated blocks, hardlink structure, content hashes) so a test
//! can compare a source with its restore.

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsString;
use std::fs::File;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::sys::stat::{UtimensatFlags, utimensat};
use nix::sys::time::TimeSpec;

/// What a comparison sees of one path (ctime and inode numbers cannot be
/// restored, so they are left out; hardlinks are compared by group).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Meta {
    pub kind: char,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub mtime_ns: i64,
    pub atime_ns: i64,
    pub rdev: u64,
    pub links: u64,
    pub xattrs: Vec<(OsString, Vec<u8>)>,
    pub target: Option<PathBuf>,
    /// Allocated bytes (files only).
    pub allocated: Option<u64>,
    /// BLAKE3 of the content (files only).
    pub content: Option<String>,
    /// For a file with several links: the first path (in walk order) of its inode.
    pub link_group: Option<PathBuf>,
}

fn kind_letter(t: std::fs::FileType) -> char {
    if t.is_file() {
        'f'
    } else if t.is_dir() {
        'd'
    } else if t.is_symlink() {
        'l'
    } else if t.is_fifo() {
        'p'
    } else if t.is_char_device() {
        'c'
    } else if t.is_block_device() {
        'b'
    } else {
        's'
    }
}

/// Every path under `root` (relative; the root itself as ""), with its
/// metadata taken before the path is read or listed, so the snapshot
/// itself does not move atimes it records.
pub fn snapshot(root: &Path) -> BTreeMap<PathBuf, Meta> {
    let mut out = BTreeMap::new();
    let mut inodes: HashMap<(u64, u64), PathBuf> = HashMap::new();
    visit(root, Path::new(""), &mut out, &mut inodes);
    // Contents last, without touching atimes (tests run as root or owner).
    for (rel, meta) in out.iter_mut() {
        if meta.kind == 'f' {
            let file = File::options().read(true).custom_flags(libc::O_NOATIME).open(root.join(rel)).unwrap();
            let mut hasher = blake3::Hasher::new();
            hasher.update_reader(file).unwrap();
            meta.content = Some(hasher.finalize().to_hex().to_string());
        }
    }
    out
}

fn visit(root: &Path, rel: &Path, out: &mut BTreeMap<PathBuf, Meta>, inodes: &mut HashMap<(u64, u64), PathBuf>) {
    let path = root.join(rel);
    let m = std::fs::symlink_metadata(&path).unwrap();
    let kind = kind_letter(m.file_type());
    let xattrs = if kind == 'l' {
        Vec::new()
    } else {
        let mut list: Vec<(OsString, Vec<u8>)> = xattr::list(&path)
            .unwrap()
            .map(|name| {
                let value = xattr::get(&path, &name).unwrap().unwrap_or_default();
                (name, value)
            })
            .collect();
        list.sort();
        list
    };
    let link_group = (kind == 'f' && m.nlink() > 1)
        .then(|| inodes.entry((m.dev(), m.ino())).or_insert_with(|| rel.to_path_buf()).clone());
    out.insert(
        rel.to_path_buf(),
        Meta {
            kind,
            mode: if kind == 'l' { 0 } else { m.mode() & 0o7777 },
            uid: m.uid(),
            gid: m.gid(),
            size: if kind == 'd' { 0 } else { m.size() },
            mtime_ns: m.mtime() * 1_000_000_000 + m.mtime_nsec(),
            atime_ns: m.atime() * 1_000_000_000 + m.atime_nsec(),
            rdev: m.rdev(),
            links: if kind == 'd' { 0 } else { m.nlink() },
            xattrs,
            target: (kind == 'l').then(|| std::fs::read_link(&path).unwrap()),
            allocated: (kind == 'f').then(|| m.blocks() * 512),
            content: None,
            link_group,
        },
    );
    if kind == 'd' {
        let mut names: Vec<OsString> = std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().file_name()).collect();
        names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        for name in names {
            visit(root, &rel.join(name), out, inodes);
        }
    }
}

/// Asserts two snapshots are equal, naming the first path that differs.
pub fn assert_same(expected: &BTreeMap<PathBuf, Meta>, actual: &BTreeMap<PathBuf, Meta>) {
    let missing: Vec<_> = expected.keys().filter(|k| !actual.contains_key(*k)).collect();
    let extra: Vec<_> = actual.keys().filter(|k| !expected.contains_key(*k)).collect();
    assert!(missing.is_empty() && extra.is_empty(), "missing {missing:?}, extra {extra:?}");
    for (path, want) in expected {
        let got = &actual[path];
        assert_eq!(want, got, "{} differs", path.display());
    }
}

/// Sets a path's atime and mtime (ns since the epoch) without following symlinks.
pub fn set_times(path: &Path, atime_ns: i64, mtime_ns: i64) {
    let spec = |ns: i64| TimeSpec::new(ns.div_euclid(1_000_000_000), ns.rem_euclid(1_000_000_000));
    utimensat(nix::fcntl::AT_FDCWD, path, &spec(atime_ns), &spec(mtime_ns), UtimensatFlags::NoFollowSymlink).unwrap();
}

/// Now, in ns since the epoch.
pub fn now_ns() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as i64
}

/// Runs a command and insists it succeeds (for setfacl, mknod, cp, ...).
pub fn sh(program: &str, args: &[&std::ffi::OsStr]) {
    let status = std::process::Command::new(program).args(args).status().unwrap();
    assert!(status.success(), "{program} {args:?} failed");
}

/// Whether this process runs as root (devices, owners).
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}
