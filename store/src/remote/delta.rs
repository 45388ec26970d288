//! Index deltas: the footer tables of the containers one push uploads, in
//! one object, so a fresh machine rebuilds the locations of every blob from
//! a few GETs instead of one per container.
//!
//! ```text
//! "CAIRNIDX" | version u32 = 1 | n_containers u32
//! per container: id u64 | kind u8 | footer layout u8 | 0 u8 x2 | n_blobs u32 | file length u64
//!                then n_blobs footer entries (docs/format.md, 50 bytes each)
//! BLAKE3-256 of everything before it
//! ```
//!
//! The entries are always in the fixed layout; the layout byte says which
//! the container's own footer is in (0 fixed, 1 compact: deltas written
//! before compact footers have 0 there), for its record's byte counts.

use crate::container::{ContainerKind, FOOTER_ENTRY_LEN, FooterLayout, HEADER_LEN, TableEntry};
use crate::error::{Error, Result};
use crate::ids::ContainerId;

const MAGIC: [u8; 8] = *b"CAIRNIDX";
const VERSION: u32 = 1;
const CONTAINER_HEADER_LEN: usize = 24;

/// One container in a delta.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeltaContainer {
    /// Its id.
    pub id: ContainerId,
    /// Data or metadata.
    pub kind: ContainerKind,
    /// Its file's length.
    pub len: u64,
    /// Its footer table.
    pub table: Vec<TableEntry>,
    /// The layout its footer is in, in the container's file.
    pub layout: FooterLayout,
}

/// A decoded delta.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Delta {
    /// The containers it names.
    pub containers: Vec<DeltaContainer>,
}

impl Delta {
    /// Serializes the delta.
    pub fn encode(&self) -> Vec<u8> {
        let entries: usize = self.containers.iter().map(|c| c.table.len()).sum();
        let mut out =
            Vec::with_capacity(16 + self.containers.len() * CONTAINER_HEADER_LEN + entries * FOOTER_ENTRY_LEN + 32);
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&VERSION.to_le_bytes());
        out.extend_from_slice(&(self.containers.len() as u32).to_le_bytes());
        for container in &self.containers {
            out.extend_from_slice(&container.id.0.to_le_bytes());
            out.extend_from_slice(&[container.kind as u8, container.layout.code() as u8, 0, 0]);
            out.extend_from_slice(&(container.table.len() as u32).to_le_bytes());
            out.extend_from_slice(&container.len.to_le_bytes());
            for entry in &container.table {
                entry.encode_footer(&mut out);
            }
        }
        let hash = blake3::hash(&out);
        out.extend_from_slice(hash.as_bytes());
        out
    }

    /// Parses a delta; `key` names it in errors.
    pub fn decode(key: &str, bytes: &[u8]) -> Result<Delta> {
        let bad = |reason: &str| Error::Remote {
            what: format!("reading index delta {key}"),
            reason: format!("{reason}; the remote is damaged: push again from a store that has this data"),
        };
        if bytes.len() < 16 + 32 || bytes[..8] != MAGIC {
            return Err(bad("it is not an index delta"));
        }
        let (body, hash) = bytes.split_at(bytes.len() - 32);
        if blake3::hash(body).as_bytes() != hash {
            return Err(bad("its checksum does not match"));
        }
        if u32::from_le_bytes(body[8..12].try_into().expect("4 bytes")) != VERSION {
            return Err(bad("it has a format version this cairn does not know; upgrade cairn"));
        }
        let n = u32::from_le_bytes(body[12..16].try_into().expect("4 bytes")) as usize;
        let mut at = 16;
        // Sized by what the bytes can hold, not by what they claim.
        let mut containers = Vec::with_capacity(n.min((body.len() - at) / CONTAINER_HEADER_LEN));
        for _ in 0..n {
            let header = body.get(at..at + CONTAINER_HEADER_LEN).ok_or_else(|| bad("it is truncated"))?;
            let id = ContainerId(u64::from_le_bytes(header[..8].try_into().expect("8 bytes")));
            let kind = ContainerKind::from_byte(header[8]).ok_or_else(|| bad("a container kind is unknown"))?;
            let layout = FooterLayout::from_code(u32::from(header[9])).ok_or_else(|| {
                bad("a container's footer layout is unknown (a newer cairn pushed it; upgrade cairn)")
            })?;
            let n_blobs = u32::from_le_bytes(header[12..16].try_into().expect("4 bytes")) as usize;
            let len = u64::from_le_bytes(header[16..24].try_into().expect("8 bytes"));
            at += CONTAINER_HEADER_LEN;
            let table_end = n_blobs.checked_mul(FOOTER_ENTRY_LEN).and_then(|l| l.checked_add(at));
            let table_bytes = table_end.and_then(|end| body.get(at..end)).ok_or_else(|| bad("it is truncated"))?;
            let table = table_bytes
                .chunks_exact(FOOTER_ENTRY_LEN)
                .map(|e| {
                    let entry = TableEntry::decode_footer(e).ok_or_else(|| bad("an entry does not decode"))?;
                    // Its record must lie inside the container (checked: both
                    // numbers are the remote's), or it would enter the index.
                    let end = entry.offset.checked_add(entry.record_len());
                    if entry.offset < HEADER_LEN as u64 || end.is_none_or(|end| end > len) {
                        return Err(bad("an entry places its record outside its container"));
                    }
                    Ok(entry)
                })
                .collect::<Result<Vec<_>>>()?;
            at += n_blobs * FOOTER_ENTRY_LEN;
            containers.push(DeltaContainer { id, kind, len, table, layout });
        }
        if at != body.len() {
            return Err(bad("it has bytes after its last container"));
        }
        Ok(Delta { containers })
    }
}

/// A small valid delta: two containers, one naming a record twice.
#[cfg(test)]
pub(crate) fn sample() -> Delta {
    let entry = TableEntry {
        id: crate::ids::BlobId::of(b"x"),
        kind: crate::ids::BlobKind::Data,
        flags: 1,
        offset: 32,
        raw_len: 9,
        stored_len: 7,
        member: 0,
    };
    Delta {
        containers: vec![
            DeltaContainer {
                id: ContainerId(3),
                kind: ContainerKind::Data,
                len: 4096,
                table: vec![entry, entry],
                layout: FooterLayout::Compact,
            },
            DeltaContainer {
                id: ContainerId(9),
                kind: ContainerKind::Metadata,
                len: 88,
                table: vec![],
                layout: FooterLayout::Fixed,
            },
        ],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_delta_claiming_four_billion_containers_allocates_nothing_for_them() {
        let mut body = Vec::new();
        body.extend_from_slice(&MAGIC);
        body.extend_from_slice(&VERSION.to_le_bytes());
        body.extend_from_slice(&u32::MAX.to_le_bytes());
        let hash = blake3::hash(&body);
        body.extend_from_slice(hash.as_bytes());
        let error = Delta::decode("index/x", &body).unwrap_err().to_string();
        assert!(error.contains("truncated"), "{error}");
    }

    #[test]
    fn deltas_round_trip_and_reject_damage() {
        let delta = sample();
        let entry = delta.containers[0].table[0];
        let bytes = delta.encode();
        assert_eq!(Delta::decode("k", &bytes).unwrap(), delta);
        // A record outside its container is refused, even under a good checksum.
        let outside = Delta {
            containers: vec![DeltaContainer {
                id: ContainerId(3),
                kind: ContainerKind::Data,
                len: 48,
                table: vec![entry],
                layout: FooterLayout::Fixed,
            }],
        };
        let error = Delta::decode("k", &outside.encode()).unwrap_err().to_string();
        assert!(error.contains("outside its container"), "{error}");
        // A layout this cairn does not know is refused by name.
        let mut unknown = bytes[..bytes.len() - 32].to_vec();
        unknown[16 + 9] = 7;
        unknown.extend_from_slice(blake3::hash(&unknown).as_bytes());
        let error = Delta::decode("k", &unknown).unwrap_err().to_string();
        assert!(error.contains("footer layout is unknown") && error.contains("upgrade cairn"), "{error}");
        let mut flipped = bytes.clone();
        flipped[30] ^= 1;
        assert!(Delta::decode("k", &flipped).is_err());
        assert!(Delta::decode("k", &bytes[..bytes.len() - 1]).is_err());
    }
}
