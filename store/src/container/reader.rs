//! Reading containers: single blobs by offset (verified against their id),
//! the footer table, and whole-file verification.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::container::container_path;
use crate::container::encode::{EncodedBlob, decode_blob};
use crate::container::format::{FOOTER_ENTRY_LEN, HEADER_LEN, MAGIC, RECORD_HEADER_LEN, TRAILER_LEN, TableEntry};
use crate::error::{Error, Result};
use crate::ids::{BlobId, ContainerId};

/// Open container files, shared by readers. Holds at most `MAX_OPEN` handles;
/// when full it simply forgets them all (reads come in runs per container, so
/// anything smarter buys little).
pub struct ContainerFiles {
    dir: PathBuf,
    open: Mutex<HashMap<ContainerId, Arc<File>>>,
}

const MAX_OPEN: usize = 256;

impl ContainerFiles {
    /// Readers of the containers under `dir`.
    pub fn new(dir: PathBuf) -> ContainerFiles {
        ContainerFiles { dir, open: Mutex::new(HashMap::new()) }
    }

    /// The `containers/` directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file of a container.
    pub fn path(&self, id: ContainerId) -> PathBuf {
        container_path(&self.dir, id)
    }

    fn file(&self, id: ContainerId) -> Result<Arc<File>> {
        let mut open = self.open.lock().expect("container file cache poisoned");
        if let Some(file) = open.get(&id) {
            return Ok(file.clone());
        }
        let path = self.path(id);
        let file = Arc::new(File::open(&path).map_err(|e| Error::io("opening container", &path, e))?);
        if open.len() >= MAX_OPEN {
            open.clear();
        }
        open.insert(id, file.clone());
        Ok(file)
    }

    /// Forgets an open handle (before a container is deleted).
    pub fn forget(&self, id: ContainerId) {
        self.open.lock().expect("container file cache poisoned").remove(&id);
    }

    /// Reads one blob's plaintext, checked against its id.
    pub fn read_blob(&self, container: ContainerId, entry: &TableEntry) -> Result<Vec<u8>> {
        self.read_checked(container, entry)
    }

    /// Reads records as stored (compressed or not), after checking that
    /// each decodes to its id: what compaction copies into new containers
    /// without compressing again. The file is read once, whole (containers
    /// are a few MiB), and the records are checked on all cores.
    pub fn read_encoded(&self, container: ContainerId, entries: &[TableEntry]) -> Result<Vec<EncodedBlob>> {
        use rayon::prelude::*;
        let path = self.path(container);
        let file = std::fs::read(&path).map_err(|e| Error::io("reading container", &path, e))?;
        entries
            .par_iter()
            .map(|entry| {
                let start = entry.offset as usize;
                let end = start + RECORD_HEADER_LEN + entry.stored_len as usize;
                let record = file.get(start..end).ok_or_else(|| Error::CorruptBlob {
                    container,
                    blob: entry.id,
                    reason: "the container is shorter than its index entry says".into(),
                })?;
                check_record(container, entry, record)?;
                let bytes = record[RECORD_HEADER_LEN..].to_vec();
                Ok(EncodedBlob { id: entry.id, kind: entry.kind, flags: entry.flags, raw_len: entry.raw_len, bytes })
            })
            .collect()
    }

    /// Reads one blob's plaintext, checked.
    fn read_checked(&self, container: ContainerId, entry: &TableEntry) -> Result<Vec<u8>> {
        let file = self.file(container)?;
        let mut record = vec![0u8; RECORD_HEADER_LEN + entry.stored_len as usize];
        file.read_exact_at(&mut record, entry.offset).map_err(|e| {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                Error::CorruptBlob {
                    container,
                    blob: entry.id,
                    reason: "the container is shorter than its index entry says".into(),
                }
            } else {
                Error::io("reading container", self.path(container), e)
            }
        })?;
        check_record(container, entry, &record)
    }
}

/// Checks a whole record (header and stored bytes) against what `entry`
/// says, decodes it and checks the plaintext against the id; returns the
/// plaintext. Any mismatch is an error naming the container and the blob.
fn check_record(container: ContainerId, entry: &TableEntry, record: &[u8]) -> Result<Vec<u8>> {
    let corrupt = |reason: String| Error::CorruptBlob { container, blob: entry.id, reason };
    let header = TableEntry::decode_record_header(record, entry.offset)
        .ok_or_else(|| corrupt("record header does not decode".into()))?;
    if header.id != entry.id || header.stored_len != entry.stored_len || header.raw_len != entry.raw_len {
        return Err(corrupt(format!("record header names blob {:#} instead", header.id)));
    }
    if header.kind != entry.kind || header.flags != entry.flags {
        return Err(corrupt("record header disagrees with the index on kind or flags".into()));
    }
    let plain = decode_blob(header.flags, header.raw_len, &record[RECORD_HEADER_LEN..]).map_err(corrupt)?;
    let actual = BlobId::of(&plain);
    if actual != entry.id {
        return Err(corrupt(format!("content hashes to {actual:#}")));
    }
    Ok(plain)
}

/// Reads a sealed container's footer table. Checks the trailer's shape, not
/// the whole-file hash (see [`verify_container`]).
pub fn read_table(path: &Path, id: ContainerId) -> Result<Vec<TableEntry>> {
    let corrupt = |reason: String| Error::CorruptContainer { container: id, path: path.to_path_buf(), reason };
    let file = File::open(path).map_err(|e| Error::io("opening container", path, e))?;
    let len = file.metadata().map_err(|e| Error::io("reading container", path, e))?.len();
    if len < (HEADER_LEN + TRAILER_LEN) as u64 {
        return Err(corrupt(format!("only {len} bytes long; it was never sealed")));
    }
    let mut trailer = [0u8; TRAILER_LEN];
    file.read_exact_at(&mut trailer, len - TRAILER_LEN as u64).map_err(|e| Error::io("reading container", path, e))?;
    if trailer[48..] != MAGIC {
        return Err(corrupt("no footer magic; it was never sealed or is truncated".into()));
    }
    let n_entries = u32::from_le_bytes(trailer[..4].try_into().expect("4 bytes")) as u64;
    let table_offset = u64::from_le_bytes(trailer[8..16].try_into().expect("8 bytes"));
    let table_len = n_entries * FOOTER_ENTRY_LEN as u64;
    if table_offset < HEADER_LEN as u64 || table_offset + table_len + TRAILER_LEN as u64 != len {
        return Err(corrupt(format!("footer table ({n_entries} entries at {table_offset}) does not fit the file")));
    }
    let mut table = vec![0u8; table_len as usize];
    file.read_exact_at(&mut table, table_offset).map_err(|e| Error::io("reading container", path, e))?;
    table
        .chunks_exact(FOOTER_ENTRY_LEN)
        .map(|bytes| TableEntry::decode_footer(bytes).ok_or_else(|| corrupt("footer entry does not decode".into())))
        .collect()
}

/// Checks a whole container: the BLAKE3 in its trailer, its header, and every
/// record against its id. Returns the table on success.
pub fn verify_container(files: &ContainerFiles, id: ContainerId) -> Result<Vec<TableEntry>> {
    let path = files.path(id);
    let table = read_table(&path, id)?;
    let corrupt = |reason: String| Error::CorruptContainer { container: id, path: path.clone(), reason };
    let bytes = std::fs::read(&path).map_err(|e| Error::io("reading container", &path, e))?;
    let body_end = bytes.len() - 40;
    if blake3::hash(&bytes[..body_end]).as_bytes() != &bytes[body_end..body_end + 32] {
        return Err(corrupt("checksum mismatch: some bytes changed since it was sealed".into()));
    }
    if bytes[..8] != MAGIC || u64::from_le_bytes(bytes[16..24].try_into().expect("8 bytes")) != id.0 {
        return Err(corrupt("header does not belong to this container".into()));
    }
    for entry in &table {
        files.read_blob(id, entry)?;
    }
    Ok(table)
}
