//! Writing one container, front to back, and sealing it.
//!
//! Durability order (the first step of the commit protocol): a container is
//! sealed — footer written, file fdatasync'ed, then its directory fsynced —
//! before any index entry may name it. A crash before sealing leaves a file
//! that no commit names; opening the store deletes it.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::container::container_path;
use crate::container::direct::DirectFile;
use crate::container::encode::EncodedBlob;
use crate::container::footer::FooterLayout;
use crate::container::format::{
    ContainerKind, FLAG_FRAME, FLAG_WIDE, FOOTER_ENTRY_LEN, HEADER_LEN, MAGIC, TRAILER_LEN, TableEntry, encode_header,
};
use crate::container::frame::FRAME_TARGET;
use crate::error::{Error, Result};
use crate::ids::{BlobId, BlobKind, ContainerId};

/// A container being written.
pub struct ContainerWriter {
    id: ContainerId,
    kind: ContainerKind,
    path: PathBuf,
    file: DirectFile,
    len: u64,
    table: Vec<TableEntry>,
    layout: FooterLayout,
}

/// What sealing a container produced.
#[derive(Debug)]
pub struct SealedContainer {
    /// The container.
    pub id: ContainerId,
    /// What it holds.
    pub kind: ContainerKind,
    /// Final file length, footer included.
    pub len: u64,
    /// Every record, in file order.
    pub table: Vec<TableEntry>,
    /// How its footer table is laid out.
    pub layout: FooterLayout,
}

impl ContainerWriter {
    /// Creates the file of container `id` (which must not exist) and writes
    /// its header. The shard directory is created (and its parent fsynced) on
    /// first use. Its footer table is written in `layout` (the store's
    /// format decides which).
    pub fn create(
        containers_dir: &Path,
        id: ContainerId,
        kind: ContainerKind,
        layout: FooterLayout,
    ) -> Result<ContainerWriter> {
        let path = container_path(containers_dir, id);
        super::ensure_shard(containers_dir, &path)?;
        let file = DirectFile::create_new(&path).map_err(|e| Error::io("creating container", &path, e))?;
        let mut writer = ContainerWriter { id, kind, path, file, len: 0, table: Vec::new(), layout };
        writer.write(&encode_header(kind, id.0, layout.container_format()))?;
        Ok(writer)
    }

    /// The container's id.
    pub fn id(&self) -> ContainerId {
        self.id
    }

    /// What it holds.
    pub fn kind(&self) -> ContainerKind {
        self.kind
    }

    /// Bytes written so far (header and records).
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether no blob has been appended yet.
    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// Appends one blob and returns its table entry (offset of its record).
    pub fn append(&mut self, blob: &EncodedBlob) -> Result<TableEntry> {
        debug_assert_eq!(ContainerKind::for_blob(blob.kind), self.kind);
        let entry = TableEntry {
            id: blob.id,
            kind: blob.kind,
            flags: blob.flags,
            offset: self.len,
            raw_len: blob.raw_len,
            stored_len: u32::try_from(blob.bytes.len()).expect("blobs are far smaller than 4 GiB"),
            member: 0,
        };
        self.write(&entry.encode_record_header())?;
        self.write(&blob.bytes)?;
        self.table.push(entry);
        Ok(entry)
    }

    /// Appends one frame of data chunks (`stored`, as
    /// [`FrameBuilder::encode`](super::FrameBuilder::encode) made it with
    /// payload flag `flags`; `members` the chunks' ids and plaintext
    /// lengths, in the frame's order; `target` the plaintext the frame was
    /// filled to at most) and returns the members' table entries. The
    /// record header names the first member. A frame of a wide target
    /// that holds more than [`FRAME_TARGET`] is flagged [`FLAG_WIDE`], so
    /// that its members' shares are counted against that target.
    pub fn append_frame(
        &mut self,
        flags: u8,
        stored: &[u8],
        members: &[(BlobId, u32)],
        target: usize,
    ) -> Result<Vec<TableEntry>> {
        debug_assert_eq!(self.kind, ContainerKind::Data);
        let total: u64 = members.iter().map(|(_, len)| u64::from(*len)).sum();
        let wide = target > FRAME_TARGET && total > FRAME_TARGET as u64;
        let flags = flags | FLAG_FRAME | if wide { FLAG_WIDE } else { 0 };
        let stored_len = u32::try_from(stored.len()).expect("frames are far smaller than 4 GiB");
        let header = TableEntry {
            id: members.first().expect("a frame has members").0,
            kind: BlobKind::Data,
            flags,
            offset: self.len,
            raw_len: u32::try_from(total).expect("frames are far smaller than 4 GiB"),
            stored_len,
            member: 0,
        };
        self.write(&header.encode_record_header())?;
        self.write(stored)?;
        let entries: Vec<TableEntry> = members
            .iter()
            .enumerate()
            .map(|(place, (id, raw_len))| TableEntry {
                id: *id,
                raw_len: *raw_len,
                member: u16::try_from(place).expect("frames hold at most MAX_FRAME_MEMBERS"),
                ..header
            })
            .collect();
        self.table.extend_from_slice(&entries);
        Ok(entries)
    }

    /// Writes the footer, flushes and fdatasyncs the file, then fsyncs its
    /// directory. After this returns the container survives a crash.
    pub fn seal(mut self) -> Result<SealedContainer> {
        let table_offset = self.len;
        // The fixed layout's size bounds the compact one's (at most 44
        // bytes an entry).
        let mut footer = Vec::with_capacity(self.table.len() * FOOTER_ENTRY_LEN + TRAILER_LEN);
        self.layout.encode(&self.table, &mut footer);
        footer.extend_from_slice(&(self.table.len() as u32).to_le_bytes());
        footer.extend_from_slice(&self.layout.code().to_le_bytes());
        footer.extend_from_slice(&table_offset.to_le_bytes());
        self.write(&footer)?;
        let digest = self.file.digest();
        let mut tail = [0u8; 40];
        tail[..32].copy_from_slice(digest.as_bytes());
        tail[32..].copy_from_slice(&MAGIC);
        self.write(&tail)?;
        self.file.finish().map_err(|e| Error::io("writing container", &self.path, e))?;
        sync_dir(self.path.parent().expect("container paths have a parent"))?;
        debug_assert!(self.len >= (HEADER_LEN + TRAILER_LEN) as u64);
        Ok(SealedContainer { id: self.id, kind: self.kind, len: self.len, table: self.table, layout: self.layout })
    }

    /// Removes the unsealed file (a session that is abandoned).
    pub fn discard(self) -> Result<()> {
        drop(self.file);
        fs::remove_file(&self.path).map_err(|e| Error::io("removing abandoned container", &self.path, e))
    }

    fn write(&mut self, bytes: &[u8]) -> Result<()> {
        self.file.write_all(bytes).map_err(|e| Error::io("writing container", &self.path, e))?;
        self.len += bytes.len() as u64;
        Ok(())
    }
}

/// Fsyncs a directory so that the names created in it survive a crash.
pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(|e| Error::io("syncing directory", dir, e))
}

/// Fsyncs the directory that holds `path`.
pub fn sync_dir_of(path: &Path) -> Result<()> {
    sync_dir(path.parent().unwrap_or(Path::new(".")))
}
