//! Tree blobs: one directory of a dataset's manifest.
//!
//! A tree is `[version u8 = 1]` followed by the postcard encoding of its
//! entries, sorted by name (names are bytes, not assumed UTF-8). Decoding
//! rejects what a restore must never act on: names that are empty, `.`,
//! `..`, contain `/` or NUL, and entries out of order or repeated. So a
//! crafted manifest cannot name a path outside the directory it describes.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::ids::BlobId;

const TREE_VERSION: u8 = 1;

/// The longest tree blob, encoded: 256 MiB. Writers refuse a directory
/// whose tree would be longer (`WriteSession::write_metadata`), and readers
/// refuse a record claiming more before allocating for it. An entry with a
/// 20-byte name, owner names and times takes about 120 bytes, so this is a
/// directory of about two million entries; decoding one takes a few times
/// its size in memory.
pub const MAX_TREE_LEN: usize = 256 << 20;

/// What an entry is. Sockets are not stored (they cannot be restored
/// meaningfully); a backup counts and skips them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryKind {
    /// A regular file; `blob` is its content list (none when empty).
    File,
    /// A directory; `blob` is its tree.
    Dir,
    /// A symbolic link; `target` is what it points to.
    Symlink,
    /// A named pipe.
    Fifo,
    /// A character device; `rdev` is its number.
    CharDevice,
    /// A block device; `rdev` is its number.
    BlockDevice,
}

impl EntryKind {
    /// The letter `find --type` and `ls -l` use.
    pub fn letter(self) -> char {
        match self {
            EntryKind::File => 'f',
            EntryKind::Dir => 'd',
            EntryKind::Symlink => 'l',
            EntryKind::Fifo => 'p',
            EntryKind::CharDevice => 'c',
            EntryKind::BlockDevice => 'b',
        }
    }
}

/// One name in a directory, with all its metadata.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The name within its directory (bytes).
    pub name: Vec<u8>,
    /// What it is.
    pub kind: EntryKind,
    /// Permission bits, with setuid, setgid and sticky (`st_mode & 0o7777`).
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// The owner's name on the machine that backed it up, if it had one.
    pub user: Option<String>,
    /// The group's name, likewise.
    pub group: Option<String>,
    /// Bytes (files), target length (symlinks), 0 otherwise.
    pub size: u64,
    /// Modification time, ns since the epoch.
    pub mtime_ns: i64,
    /// Access time, ns since the epoch.
    pub atime_ns: i64,
    /// Status change time, ns (compared by incremental backups; cannot be restored).
    pub ctime_ns: i64,
    /// Inode number on the source (incremental backups and hardlinks).
    pub inode: u64,
    /// Device of the source file system (hardlinks are grouped by device and inode).
    pub dev: u64,
    /// Hard links to this inode on the source.
    pub links: u64,
    /// Device number (character and block devices).
    pub rdev: u64,
    /// Extended attributes (POSIX ACLs are `system.posix_acl_*` ones), sorted by name.
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    /// Symlink target.
    pub target: Vec<u8>,
    /// The subtree (directories) or content list (non-empty files).
    #[serde(with = "raw_id")]
    pub blob: Option<BlobId>,
}

impl Entry {
    /// An entry with a name, kind, size and blob and no other metadata
    /// (mode 0755, owned by root, times 0): for trees that cairn makes
    /// itself, and for tests.
    pub fn bare(name: &[u8], kind: EntryKind, size: u64, blob: Option<BlobId>) -> Entry {
        Entry {
            name: name.to_vec(),
            kind,
            mode: 0o755,
            uid: 0,
            gid: 0,
            user: None,
            group: None,
            size,
            mtime_ns: 0,
            atime_ns: 0,
            ctime_ns: 0,
            inode: 0,
            dev: 0,
            links: 1,
            rdev: 0,
            xattrs: Vec::new(),
            target: Vec::new(),
            blob,
        }
    }

    /// The name for messages (lossy where it is not UTF-8).
    pub fn display_name(&self) -> String {
        String::from_utf8_lossy(&self.name).into_owned()
    }

    /// Whether a restore should join this file to others with the same
    /// (device, inode) as hard links.
    pub fn is_hardlinked(&self) -> bool {
        self.kind == EntryKind::File && self.links > 1
    }
}

/// A decoded tree: the entries of one directory, sorted by name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tree {
    /// The entries, sorted by name, names unique.
    pub entries: Vec<Entry>,
}

impl Tree {
    /// Serializes the tree. The entries must be sorted and unique.
    pub fn encode(&self) -> Vec<u8> {
        debug_assert!(self.entries.windows(2).all(|w| w[0].name < w[1].name));
        let mut out = vec![TREE_VERSION];
        postcard::to_io(&self.entries, &mut out).expect("writing to a Vec cannot fail");
        out
    }

    /// Parses and validates a tree; `id` names it in errors.
    pub fn decode(id: BlobId, bytes: &[u8]) -> Result<Tree> {
        let malformed = |reason: String| Error::Malformed { what: "tree", blob: id, reason };
        let Some((&version, body)) = bytes.split_first() else {
            return Err(malformed("empty".into()));
        };
        if version != TREE_VERSION {
            return Err(malformed(format!("unknown tree version {version}")));
        }
        let entries: Vec<Entry> = postcard::from_bytes(body).map_err(|e| malformed(e.to_string()))?;
        for entry in &entries {
            check_name(&entry.name)
                .map_err(|reason| malformed(format!("entry {:?}: {reason}", entry.display_name())))?;
            let needs_blob = matches!(entry.kind, EntryKind::Dir);
            if needs_blob && entry.blob.is_none() {
                return Err(malformed(format!("directory {:?} has no tree", entry.display_name())));
            }
        }
        if let Some(pair) = entries.windows(2).find(|w| w[0].name >= w[1].name) {
            return Err(malformed(format!("entries out of order or repeated at {:?}", pair[1].display_name())));
        }
        Ok(Tree { entries })
    }

    /// The entry called `name`.
    pub fn get(&self, name: &[u8]) -> Option<&Entry> {
        self.entries.binary_search_by(|e| e.name.as_slice().cmp(name)).ok().map(|i| &self.entries[i])
    }

    /// Ids this tree names, with multiplicity (its references).
    pub fn children(&self) -> Vec<BlobId> {
        self.entries.iter().filter_map(|e| e.blob).collect()
    }
}

/// Why `name` cannot be one path component, if it cannot.
pub fn check_name(name: &[u8]) -> std::result::Result<(), &'static str> {
    match name {
        b"" => Err("empty name"),
        b"." | b".." => Err("'.' or '..' as a name"),
        _ if name.contains(&b'/') => Err("name contains '/'"),
        _ if name.contains(&0) => Err("name contains NUL"),
        _ => Ok(()),
    }
}

/// Serde helper: an optional [`BlobId`] as 32 raw bytes.
mod raw_id {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use crate::ids::BlobId;

    pub fn serialize<S: Serializer>(id: &Option<BlobId>, serializer: S) -> Result<S::Ok, S::Error> {
        id.map(|id| *id.as_bytes()).serialize(serializer)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<BlobId>, D::Error> {
        Ok(Option::<[u8; 32]>::deserialize(deserializer)?.map(BlobId))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &[u8], kind: EntryKind) -> Entry {
        Entry {
            name: name.to_vec(),
            kind,
            mode: 0o4755,
            uid: 1000,
            gid: 100,
            user: Some("ann".into()),
            group: None,
            size: 5,
            mtime_ns: -1,
            atime_ns: 1_700_000_000_123_456_789,
            ctime_ns: 3,
            inode: 4,
            dev: 5,
            links: 2,
            rdev: 0,
            xattrs: vec![(b"user.a".to_vec(), vec![0, 255])],
            target: Vec::new(),
            blob: (kind == EntryKind::Dir).then(|| BlobId::of(name)),
        }
    }

    #[test]
    fn trees_round_trip() {
        let tree = Tree { entries: vec![entry(b"a", EntryKind::File), entry(b"b\xff", EntryKind::Dir)] };
        let bytes = tree.encode();
        assert_eq!(Tree::decode(BlobId::of(&bytes), &bytes).unwrap(), tree);
        assert_eq!(tree.get(b"b\xff").unwrap().kind, EntryKind::Dir);
        assert_eq!(tree.children(), vec![BlobId::of(b"b\xff")]);
    }

    #[test]
    fn crafted_trees_are_refused() {
        for bad in [&b".."[..], b"", b".", b"a/b", b"a\0"] {
            let tree = Tree { entries: vec![entry(bad, EntryKind::File)] };
            let bytes = tree.encode();
            let error = Tree::decode(BlobId::of(&bytes), &bytes).unwrap_err().to_string();
            assert!(error.contains("tree"), "{error}");
        }
        let repeated = Tree { entries: vec![entry(b"a", EntryKind::File), entry(b"a", EntryKind::Symlink)] };
        let mut bytes = vec![TREE_VERSION];
        postcard::to_io(&repeated.entries, &mut bytes).unwrap();
        assert!(Tree::decode(BlobId::of(&bytes), &bytes).unwrap_err().to_string().contains("repeated"));
        assert!(Tree::decode(BlobId::of(b"x"), b"\x01\xff\xff").is_err());
    }
}
