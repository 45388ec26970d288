//! A FUSE filesystem in memory that forgets, on a simulated power cut,
//! everything that was not made durable (like LazyFS).
//!
//! Every inode has two states: what readers see now, and what would
//! survive a power cut. A file's bytes become durable with `fsync` or
//! `fdatasync` on it; a directory's entries (names created, removed or
//! renamed in it) with `fsync` on the directory. Nothing else makes
//! anything durable: no ordering, no implicit flush, no journal. That is
//! stricter than ext4 (which usually keeps a new file's name when the
//! file is fsynced), on purpose: it is what POSIX promises, so a missing
//! fsync shows up here even where a real disk would hide it.
//!
//! [`PowerCutFs::cut`] replaces every current state by its durable one and
//! drops what is no longer reachable. The kernel's caches must not outlive
//! a cut, so the harness unmounts and mounts again around it.

use std::collections::{BTreeMap, HashMap};
use std::ffi::{OsStr, OsString};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, LockOwner, OpenFlags,
    RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs,
    ReplyWrite, Request, TimeOrNow, WriteFlags,
};

/// The kernel caches nothing: attributes and names are asked for every time.
const TTL: Duration = Duration::ZERO;

#[derive(Clone, Debug)]
enum Body {
    File { data: Vec<u8>, durable: Vec<u8> },
    Dir { entries: BTreeMap<OsString, u64>, durable: BTreeMap<OsString, u64> },
    Symlink { target: OsString },
}

#[derive(Clone, Debug)]
struct Inode {
    body: Body,
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: SystemTime,
    atime: SystemTime,
    ctime: SystemTime,
}

/// What the filesystem holds; shared by the mounted sessions and the harness.
#[derive(Debug)]
pub struct State {
    inodes: HashMap<u64, Inode>,
    next_ino: u64,
    /// Counters, to see that the harness exercised what it should.
    pub syncs: u64,
    pub cuts: u64,
}

const ROOT: u64 = 1;

impl State {
    fn new() -> State {
        let root = Inode::new(Body::Dir { entries: BTreeMap::new(), durable: BTreeMap::new() }, 0o755, 0, 0);
        State { inodes: HashMap::from([(ROOT, root)]), next_ino: ROOT + 1, syncs: 0, cuts: 0 }
    }

    fn get(&self, ino: INodeNo) -> Result<&Inode, Errno> {
        self.inodes.get(&ino.0).ok_or(Errno::ENOENT)
    }

    fn get_mut(&mut self, ino: INodeNo) -> Result<&mut Inode, Errno> {
        self.inodes.get_mut(&ino.0).ok_or(Errno::ENOENT)
    }

    fn entries(&self, dir: INodeNo) -> Result<&BTreeMap<OsString, u64>, Errno> {
        match &self.get(dir)?.body {
            Body::Dir { entries, .. } => Ok(entries),
            _ => Err(Errno::ENOTDIR),
        }
    }

    fn entries_mut(&mut self, dir: INodeNo) -> Result<&mut BTreeMap<OsString, u64>, Errno> {
        match &mut self.get_mut(dir)?.body {
            Body::Dir { entries, .. } => Ok(entries),
            _ => Err(Errno::ENOTDIR),
        }
    }

    fn child(&self, dir: INodeNo, name: &OsStr) -> Result<u64, Errno> {
        self.entries(dir)?.get(name).copied().ok_or(Errno::ENOENT)
    }

    fn attr(&self, ino: u64) -> Result<FileAttr, Errno> {
        let inode = self.inodes.get(&ino).ok_or(Errno::ENOENT)?;
        let (kind, size, nlink) = match &inode.body {
            Body::File { data, .. } => (FileType::RegularFile, data.len() as u64, 1),
            Body::Dir { entries, .. } => (FileType::Directory, 0, 2 + entries.len() as u32),
            Body::Symlink { target } => (FileType::Symlink, target.len() as u64, 1),
        };
        Ok(FileAttr {
            ino: INodeNo(ino),
            size,
            blocks: size.div_ceil(512),
            atime: inode.atime,
            mtime: inode.mtime,
            ctime: inode.ctime,
            crtime: inode.ctime,
            kind,
            perm: (inode.mode & 0o7777) as u16,
            nlink,
            uid: inode.uid,
            gid: inode.gid,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        })
    }

    /// Adds a new inode named `name` in `parent`; fails if the name is taken.
    fn make(&mut self, parent: INodeNo, name: &OsStr, body: Body, mode: u32, req: &Request) -> Result<u64, Errno> {
        if self.entries(parent)?.contains_key(name) {
            return Err(Errno::EEXIST);
        }
        let ino = self.next_ino;
        self.next_ino += 1;
        self.inodes.insert(ino, Inode::new(body, mode, req.uid(), req.gid()));
        self.entries_mut(parent)?.insert(name.to_owned(), ino);
        self.touch(parent)?;
        Ok(ino)
    }

    fn touch(&mut self, ino: INodeNo) -> Result<(), Errno> {
        let inode = self.get_mut(ino)?;
        inode.mtime = SystemTime::now();
        inode.ctime = inode.mtime;
        Ok(())
    }

    fn data_mut(&mut self, ino: INodeNo) -> Result<&mut Vec<u8>, Errno> {
        match &mut self.get_mut(ino)?.body {
            Body::File { data, .. } => Ok(data),
            Body::Dir { .. } => Err(Errno::EISDIR),
            Body::Symlink { .. } => Err(Errno::EINVAL),
        }
    }

    fn sync(&mut self, ino: INodeNo) -> Result<(), Errno> {
        self.syncs += 1;
        match &mut self.get_mut(ino)?.body {
            Body::File { data, durable } => durable.clone_from(data),
            Body::Dir { entries, durable } => durable.clone_from(entries),
            Body::Symlink { .. } => {}
        }
        Ok(())
    }

    /// The power cut: every inode goes back to its durable state, and what
    /// no durable name reaches any more is gone.
    fn cut(&mut self) {
        self.cuts += 1;
        for inode in self.inodes.values_mut() {
            match &mut inode.body {
                Body::File { data, durable } => data.clone_from(durable),
                Body::Dir { entries, durable } => entries.clone_from(durable),
                Body::Symlink { .. } => {}
            }
        }
        let mut reachable = std::collections::HashSet::from([ROOT]);
        let mut stack = vec![ROOT];
        while let Some(ino) = stack.pop() {
            if let Some(Inode { body: Body::Dir { entries, .. }, .. }) = self.inodes.get(&ino) {
                for child in entries.values() {
                    if reachable.insert(*child) {
                        stack.push(*child);
                    }
                }
            }
        }
        self.inodes.retain(|ino, _| reachable.contains(ino));
    }
}

impl Inode {
    fn new(body: Body, mode: u32, uid: u32, gid: u32) -> Inode {
        let now = SystemTime::now();
        Inode { body, mode, uid, gid, mtime: now, atime: now, ctime: now }
    }
}

/// The filesystem as the kernel sees it: one mounted session's view of a
/// shared [`State`].
#[derive(Clone)]
pub struct PowerCutFs {
    state: Arc<Mutex<State>>,
}

impl PowerCutFs {
    /// An empty filesystem.
    pub fn new() -> PowerCutFs {
        PowerCutFs { state: Arc::new(Mutex::new(State::new())) }
    }

    /// The shared state.
    pub fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Cuts the power: see [`State::cut`].
    pub fn cut(&self) {
        self.state().cut();
    }

    /// Mounts the filesystem at `mountpoint` (which must be an empty
    /// directory), served by background threads until the session is dropped.
    pub fn mount(&self, mountpoint: &Path) -> std::io::Result<fuser::BackgroundSession> {
        let mut config = fuser::Config::default();
        config.mount_options = vec![fuser::MountOption::FSName("cairn-powercut".into())];
        config.n_threads = Some(4);
        fuser::spawn_mount(self.clone(), mountpoint, &config)
    }
}

/// A reply that can carry an error.
trait Fail {
    fn fail(self, errno: Errno);
}

macro_rules! fail {
    ($($reply:ty),*) => {
        $(impl Fail for $reply {
            fn fail(self, errno: Errno) {
                self.error(errno)
            }
        })*
    };
}

fail!(ReplyEntry, ReplyAttr, ReplyEmpty, ReplyOpen, ReplyCreate, ReplyWrite, ReplyData);

/// Replies with `ok` on the value, or with the error.
fn answer<R: Fail, T>(reply: R, result: Result<T, Errno>, ok: impl FnOnce(R, T)) {
    match result {
        Ok(value) => ok(reply, value),
        Err(errno) => reply.fail(errno),
    }
}

impl Filesystem for PowerCutFs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let state = self.state();
        answer(reply, state.child(parent, name).and_then(|ino| state.attr(ino)), |reply, attr| {
            reply.entry(&TTL, &attr, Generation(0))
        });
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        answer(reply, self.state().attr(ino.0), |reply, attr| reply.attr(&TTL, &attr));
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let mut state = self.state();
        let result = (|| {
            if let Some(size) = size {
                state.data_mut(ino)?.resize(size as usize, 0);
            }
            let inode = state.get_mut(ino)?;
            let time = |t: TimeOrNow| match t {
                TimeOrNow::SpecificTime(t) => t,
                TimeOrNow::Now => SystemTime::now(),
            };
            if let Some(mode) = mode {
                inode.mode = mode;
            }
            inode.uid = uid.unwrap_or(inode.uid);
            inode.gid = gid.unwrap_or(inode.gid);
            inode.atime = atime.map_or(inode.atime, time);
            inode.mtime = mtime.map_or(inode.mtime, time);
            inode.ctime = SystemTime::now();
            state.attr(ino.0)
        })();
        answer(reply, result, |reply, attr| reply.attr(&TTL, &attr));
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        let state = self.state();
        match state.get(ino).map(|i| &i.body) {
            Ok(Body::Symlink { target }) => reply.data(std::os::unix::ffi::OsStrExt::as_bytes(target.as_os_str())),
            Ok(_) => reply.error(Errno::EINVAL),
            Err(e) => reply.error(e),
        }
    }

    fn mkdir(&self, req: &Request, parent: INodeNo, name: &OsStr, mode: u32, umask: u32, reply: ReplyEntry) {
        let mut state = self.state();
        let body = Body::Dir { entries: BTreeMap::new(), durable: BTreeMap::new() };
        let result = state.make(parent, name, body, mode & !umask, req).and_then(|ino| state.attr(ino));
        answer(reply, result, |reply, attr| reply.entry(&TTL, &attr, Generation(0)));
    }

    fn symlink(&self, req: &Request, parent: INodeNo, name: &OsStr, target: &Path, reply: ReplyEntry) {
        let mut state = self.state();
        let body = Body::Symlink { target: target.as_os_str().to_owned() };
        let result = state.make(parent, name, body, 0o777, req).and_then(|ino| state.attr(ino));
        answer(reply, result, |reply, attr| reply.entry(&TTL, &attr, Generation(0)));
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let mut state = self.state();
        let result = (|| {
            let ino = state.child(parent, name)?;
            if matches!(state.inodes[&ino].body, Body::Dir { .. }) {
                return Err(Errno::EISDIR);
            }
            state.entries_mut(parent)?.remove(name);
            state.touch(parent)
        })();
        answer(reply, result, |reply, ()| reply.ok());
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let mut state = self.state();
        let result = (|| {
            let ino = state.child(parent, name)?;
            if !state.entries(INodeNo(ino))?.is_empty() {
                return Err(Errno::ENOTEMPTY);
            }
            state.entries_mut(parent)?.remove(name);
            state.touch(parent)
        })();
        answer(reply, result, |reply, ()| reply.ok());
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let mut state = self.state();
        let result = (|| {
            let ino = state.child(parent, name)?;
            if let Ok(existing) = state.child(newparent, newname) {
                if flags.contains(RenameFlags::RENAME_NOREPLACE) {
                    return Err(Errno::EEXIST);
                }
                if let Body::Dir { entries, .. } = &state.inodes[&existing].body
                    && !entries.is_empty()
                {
                    return Err(Errno::ENOTEMPTY);
                }
            }
            state.entries_mut(parent)?.remove(name);
            state.entries_mut(newparent)?.insert(newname.to_owned(), ino);
            state.touch(parent)?;
            state.touch(newparent)
        })();
        answer(reply, result, |reply, ()| reply.ok());
    }

    fn open(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        answer(reply, self.state().attr(ino.0), |reply, _| reply.opened(FileHandle(0), FopenFlags::empty()));
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        let mut state = self.state();
        let body = Body::File { data: Vec::new(), durable: Vec::new() };
        let result = state.make(parent, name, body, mode & !umask, req).and_then(|ino| state.attr(ino));
        answer(reply, result, |reply, attr| {
            reply.created(&TTL, &attr, Generation(0), FileHandle(0), FopenFlags::empty())
        });
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let mut state = self.state();
        match state.data_mut(ino) {
            Ok(data) => {
                let start = (offset as usize).min(data.len());
                let end = (start + size as usize).min(data.len());
                reply.data(&data[start..end]);
            }
            Err(e) => reply.error(e),
        }
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        bytes: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let mut state = self.state();
        let result = state.data_mut(ino).map(|data| {
            let end = offset as usize + bytes.len();
            if data.len() < end {
                data.resize(end, 0);
            }
            data[offset as usize..end].copy_from_slice(bytes);
        });
        answer(reply, result.and_then(|()| state.touch(ino)), |reply, ()| reply.written(bytes.len() as u32));
    }

    fn flush(&self, _req: &Request, _ino: INodeNo, _fh: FileHandle, _lock_owner: LockOwner, reply: ReplyEmpty) {
        // close() makes nothing durable.
        reply.ok();
    }

    fn fsync(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, _datasync: bool, reply: ReplyEmpty) {
        answer(reply, self.state().sync(ino), |reply, ()| reply.ok());
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        answer(reply, self.state().entries(ino).map(|_| ()), |reply, ()| {
            reply.opened(FileHandle(0), FopenFlags::empty())
        });
    }

    fn readdir(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, offset: u64, mut reply: ReplyDirectory) {
        let state = self.state();
        let entries = match state.entries(ino) {
            Ok(entries) => entries,
            Err(e) => return reply.error(e),
        };
        let dots = [(OsString::from("."), ino.0), (OsString::from(".."), ino.0)];
        let all = dots.iter().map(|(n, i)| (n, i)).chain(entries.iter());
        for (i, (name, child)) in all.enumerate().skip(offset as usize) {
            let kind = match state.inodes.get(child).map(|c| &c.body) {
                Some(Body::Dir { .. }) => FileType::Directory,
                Some(Body::Symlink { .. }) => FileType::Symlink,
                _ => FileType::RegularFile,
            };
            if reply.add(INodeNo(*child), i as u64 + 1, kind, name) {
                break;
            }
        }
        reply.ok();
    }

    fn fsyncdir(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, _datasync: bool, reply: ReplyEmpty) {
        answer(reply, self.state().sync(ino), |reply, ()| reply.ok());
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        reply.statfs(1 << 24, 1 << 23, 1 << 23, 1 << 20, 1 << 19, 4096, 255, 4096);
    }

    fn access(&self, _req: &Request, ino: INodeNo, _mask: fuser::AccessFlags, reply: ReplyEmpty) {
        answer(reply, self.state().attr(ino.0).map(|_| ()), |reply, ()| reply.ok());
    }

    fn fallocate(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        let mut state = self.state();
        let result = state.data_mut(ino).map(|data| {
            // Only growing the file matters here; KEEP_SIZE preallocation is a no-op.
            let end = (offset + length) as usize;
            if mode & libc::FALLOC_FL_KEEP_SIZE == 0 && data.len() < end {
                data.resize(end, 0);
            }
        });
        answer(reply, result, |reply, ()| reply.ok());
    }
}
