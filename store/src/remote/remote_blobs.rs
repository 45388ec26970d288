//! [`RemoteBlobs`]: where each of a remote's blobs is, and how many
//! references the dataset trees give it, while an attach rebuilds the
//! index. In memory up to [`MEMORY_BLOBS`] blobs (a hash map, about 100
//! bytes each), then on disk, in a [`ScratchMap`], so that an attach's
//! memory does not grow with the remote: a hash map of every blob would
//! take 1.3 TB for the 13 billion chunks of a 100 TB store. On disk is
//! slower (an attach of 150,000 blobs took 1.35 s instead of 0.40 s), so
//! a remote that fits stays in memory.
//!
//! On disk, one map holds three kinds of keys, a byte ahead of the id:
//! - `L` id: the blob's container (u64 LE) and its footer entry. A blob
//!   named by several containers (copies left by racing backups, or moved
//!   by a compaction whose old container is not deleted yet) keeps the
//!   newest, whatever order the deltas are read in: locations are written
//!   by merge, and the merge keeps the largest container id (in memory,
//!   the insert does the same).
//! - `C` id: the references counted so far (i64 LE), added to by merge.
//! - `S` id: present once a metadata blob's children have been counted.

use std::collections::{HashMap, HashSet};
use std::iter::Peekable;

use crate::container::{FOOTER_ENTRY_LEN, TableEntry};
use crate::error::Result;
use crate::ids::{BlobId, ContainerId};
use crate::scratch::ScratchMap;

const LOCATION: u8 = b'L';
const COUNT: u8 = b'C';
const SEEN: u8 = b'S';
const LOCATION_LEN: usize = 8 + FOOTER_ENTRY_LEN;

/// Blobs an attach holds in memory before it moves them to disk; the
/// environment's `CAIRN_ATTACH_MEMORY_BLOBS` overrides it (tests set 0 to
/// take the disk's path).
pub const MEMORY_BLOBS: usize = 1_000_000;

/// A remote's blobs during an attach (see the module's doc).
pub(super) enum RemoteBlobs {
    Memory(InMemory),
    Disk(OnDisk),
}

/// The blobs in hash maps.
#[derive(Default)]
pub(super) struct InMemory {
    locations: HashMap<BlobId, (ContainerId, TableEntry)>,
    counts: HashMap<BlobId, i64>,
    seen: HashSet<BlobId>,
}

/// The blobs in a scratch map.
pub(super) struct OnDisk {
    map: ScratchMap,
}

fn key(kind: u8, id: &BlobId) -> [u8; 33] {
    let mut key = [kind; 33];
    key[1..].copy_from_slice(id.as_bytes());
    key
}

/// Combines a key's values: the newest location, or the sum of counts.
/// Values of the wrong length (none are written) are passed over.
fn combine(key: &[u8], existing: Option<&[u8]>, operands: &rocksdb::MergeOperands) -> Option<Vec<u8>> {
    let values = existing.into_iter().chain(operands);
    match key.first() {
        Some(&LOCATION) => {
            values.filter(|v| v.len() == LOCATION_LEN).max_by_key(|v| container_of(v)).map(<[u8]>::to_vec)
        }
        Some(&COUNT) => {
            let sum = values
                .filter_map(|v| v.try_into().ok().map(i64::from_le_bytes))
                .fold(0i64, |sum, n| sum.saturating_add(n));
            Some(sum.to_le_bytes().to_vec())
        }
        _ => operands.into_iter().last().or(existing).map(<[u8]>::to_vec),
    }
}

fn container_of(location: &[u8]) -> u64 {
    location.get(..8).and_then(|b| b.try_into().ok()).map_or(0, u64::from_le_bytes)
}

fn decode_location(value: &[u8]) -> Option<(ContainerId, TableEntry)> {
    (value.len() == LOCATION_LEN).then_some(())?;
    Some((ContainerId(container_of(value)), TableEntry::decode_footer(&value[8..])?))
}

impl RemoteBlobs {
    /// None yet, in memory.
    pub(super) fn new() -> RemoteBlobs {
        RemoteBlobs::Memory(InMemory::default())
    }

    fn memory_blobs() -> usize {
        std::env::var("CAIRN_ATTACH_MEMORY_BLOBS").ok().and_then(|v| v.parse().ok()).unwrap_or(MEMORY_BLOBS)
    }

    /// Notes that `container` holds the blobs of `table`; past
    /// [`MEMORY_BLOBS`], moves everything to disk.
    pub(super) fn add_container(&mut self, container: ContainerId, table: &[TableEntry]) -> Result<()> {
        let memory = match self {
            RemoteBlobs::Disk(disk) => return disk.add_container(container, table),
            RemoteBlobs::Memory(memory) => memory,
        };
        for entry in table {
            let slot = memory.locations.entry(entry.id).or_insert((container, *entry));
            if slot.0 < container {
                *slot = (container, *entry);
            }
        }
        if memory.locations.len() > RemoteBlobs::memory_blobs() {
            let disk = OnDisk::new()?;
            let mut by_container: HashMap<ContainerId, Vec<TableEntry>> = HashMap::new();
            for (container, entry) in std::mem::take(&mut memory.locations).into_values() {
                by_container.entry(container).or_default().push(entry);
            }
            for (container, table) in by_container {
                disk.add_container(container, &table)?;
            }
            disk.add_counts(memory.counts.iter().map(|(id, n)| (*id, *n)))?;
            disk.first_seen(&memory.seen.drain().collect::<Vec<_>>())?;
            tracing::debug!(blobs = RemoteBlobs::memory_blobs(), "attach: the remote's blobs moved to disk");
            *self = RemoteBlobs::Disk(disk);
        }
        Ok(())
    }

    /// Where each of `ids` is, if any container holds it.
    pub(super) fn locate(&self, ids: &[BlobId]) -> Result<Vec<Option<(ContainerId, TableEntry)>>> {
        match self {
            RemoteBlobs::Memory(memory) => Ok(ids.iter().map(|id| memory.locations.get(id).copied()).collect()),
            RemoteBlobs::Disk(disk) => disk.locate(ids),
        }
    }

    /// Adds a reference to each of `ids` (an id twice gets two).
    pub(super) fn count(&mut self, ids: &[BlobId]) -> Result<()> {
        match self {
            RemoteBlobs::Memory(memory) => {
                for id in ids {
                    *memory.counts.entry(*id).or_default() += 1;
                }
                Ok(())
            }
            RemoteBlobs::Disk(disk) => disk.count(ids),
        }
    }

    /// Of `ids`, those not marked seen before; marks them all.
    pub(super) fn first_seen(&mut self, ids: &[BlobId]) -> Result<Vec<bool>> {
        match self {
            RemoteBlobs::Memory(memory) => Ok(ids.iter().map(|id| memory.seen.insert(*id)).collect()),
            RemoteBlobs::Disk(disk) => disk.first_seen(ids),
        }
    }

    /// Every located blob in id order, with its references (0 if never
    /// counted).
    pub(super) fn located(&self) -> Box<dyn Iterator<Item = Result<LocatedBlob>> + '_> {
        match self {
            RemoteBlobs::Memory(memory) => {
                let mut ids: Vec<&BlobId> = memory.locations.keys().collect();
                ids.sort_unstable();
                Box::new(ids.into_iter().map(|id| {
                    let (container, entry) = memory.locations[id];
                    Ok((*id, container, entry, memory.counts.get(id).copied().unwrap_or(0)))
                }))
            }
            RemoteBlobs::Disk(disk) => Box::new(disk.located()),
        }
    }
}

impl OnDisk {
    fn new() -> Result<OnDisk> {
        Ok(OnDisk { map: ScratchMap::with_merge("making scratch space for the attach", combine)? })
    }

    /// Notes that `container` holds the blobs of `table`.
    fn add_container(&self, container: ContainerId, table: &[TableEntry]) -> Result<()> {
        self.map.merge(table.iter().map(|entry| {
            let mut value = Vec::with_capacity(LOCATION_LEN);
            value.extend_from_slice(&container.0.to_le_bytes());
            entry.encode_footer(&mut value);
            (key(LOCATION, &entry.id), value)
        }))
    }

    /// Where each of `ids` is, if any container holds it.
    fn locate(&self, ids: &[BlobId]) -> Result<Vec<Option<(ContainerId, TableEntry)>>> {
        let keys: Vec<[u8; 33]> = ids.iter().map(|id| key(LOCATION, id)).collect();
        Ok(self.map.get_many(&keys)?.into_iter().map(|value| value.as_deref().and_then(decode_location)).collect())
    }

    /// Adds a reference to each of `ids` (an id twice gets two).
    fn count(&self, ids: &[BlobId]) -> Result<()> {
        self.add_counts(ids.iter().map(|id| (*id, 1)))
    }

    /// Adds `n` references to each `(id, n)`.
    fn add_counts(&self, counts: impl IntoIterator<Item = (BlobId, i64)>) -> Result<()> {
        self.map.merge(counts.into_iter().map(|(id, n)| (key(COUNT, &id), n.to_le_bytes())))
    }

    /// Of `ids`, those not marked seen before; marks them all.
    fn first_seen(&self, ids: &[BlobId]) -> Result<Vec<bool>> {
        let keys: Vec<[u8; 33]> = ids.iter().map(|id| key(SEEN, id)).collect();
        let seen = self.map.get_many(&keys)?;
        self.map.merge(keys.iter().map(|key| (key, [])))?;
        Ok(seen.iter().map(Option::is_none).collect())
    }

    /// Every located blob in id order, with its references (0 if never
    /// counted).
    fn located(&self) -> Located<'_> {
        Located {
            locations: Box::new(self.map.iter_from(&[LOCATION]).take_while(starts(LOCATION))),
            counts: (Box::new(self.map.iter_from(&[COUNT]).take_while(starts(COUNT))) as Entries<'_>).peekable(),
        }
    }
}

type Entries<'a> = Box<dyn Iterator<Item = Result<(Box<[u8]>, Box<[u8]>)>> + 'a>;

/// Whether an entry's key is of `kind` (errors pass, to be reported).
fn starts(kind: u8) -> impl Fn(&Result<(Box<[u8]>, Box<[u8]>)>) -> bool {
    move |item| item.as_ref().map_or(true, |(key, _)| key.first() == Some(&kind))
}

/// See [`RemoteBlobs::located`]: the locations walked beside the counts.
pub(super) struct Located<'a> {
    locations: Entries<'a>,
    counts: Peekable<Entries<'a>>,
}

/// One located blob: its id, container, entry and references.
pub(super) type LocatedBlob = (BlobId, ContainerId, TableEntry, i64);

impl Iterator for Located<'_> {
    type Item = Result<LocatedBlob>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let (key, value) = match self.locations.next()? {
                Ok(item) => item,
                Err(error) => return Some(Err(error)),
            };
            // (Nothing but this module writes the map: an entry that does
            // not decode cannot come, but is skipped rather than trusted.)
            let (Some(id), Some((container, entry))) = (BlobId::from_slice(&key[1..]), decode_location(&value)) else {
                continue;
            };
            // Counts come in the same order: those of blobs no container
            // holds are passed over (a dataset naming one fails the
            // recount before this), then this blob's, if it has one.
            let id_bytes = id.as_bytes().as_slice();
            while self.counts.next_if(|item| matches!(item, Ok((k, _)) if &k[1..] < id_bytes)).is_some() {}
            let count = match self.counts.next_if(|item| !matches!(item, Ok((k, _)) if &k[1..] > id_bytes)) {
                Some(Ok((_, value))) => value.as_ref().try_into().map_or(0, i64::from_le_bytes),
                Some(Err(error)) => return Some(Err(error)),
                None => 0,
            };
            return Some(Ok((id, container, entry, count)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::BlobKind;

    fn entry(id: BlobId, offset: u64) -> TableEntry {
        TableEntry { id, kind: BlobKind::Data, flags: 0, offset, raw_len: 10, stored_len: 10, member: 0 }
    }

    /// Both kinds: in memory, and on disk.
    fn both() -> [RemoteBlobs; 2] {
        [RemoteBlobs::new(), RemoteBlobs::Disk(OnDisk::new().unwrap())]
    }

    #[test]
    fn the_newest_container_wins_whatever_order_they_come_in() {
        for mut blobs in both() {
            let (a, b) = (BlobId::of(b"a"), BlobId::of(b"b"));
            blobs.add_container(ContainerId(7), &[entry(a, 70)]).unwrap();
            blobs.add_container(ContainerId(9), &[entry(a, 90), entry(b, 91)]).unwrap();
            blobs.add_container(ContainerId(8), &[entry(a, 80)]).unwrap();
            let located = blobs.locate(&[a, b, BlobId::of(b"nowhere")]).unwrap();
            let want = vec![Some((ContainerId(9), entry(a, 90))), Some((ContainerId(9), entry(b, 91))), None];
            assert_eq!(located, want);
        }
    }

    #[test]
    fn located_blobs_come_in_id_order_with_their_counts() {
        for mut blobs in both() {
            let ids: Vec<BlobId> = (0..50u32).map(|i| BlobId::of(&i.to_le_bytes())).collect();
            let table: Vec<TableEntry> = ids.iter().enumerate().map(|(i, id)| entry(*id, i as u64)).collect();
            blobs.add_container(ContainerId(1), &table).unwrap();
            // Counts for every third blob (twice for every sixth), and for
            // blobs no container holds, which are passed over.
            let counted: Vec<BlobId> = ids.iter().step_by(3).chain(ids.iter().step_by(6)).copied().collect();
            blobs.count(&counted).unwrap();
            blobs.count(&(100..120u32).map(|i| BlobId::of(&i.to_le_bytes())).collect::<Vec<_>>()).unwrap();
            let got: Vec<(BlobId, i64)> = blobs.located().map(|r| r.map(|(id, _, _, n)| (id, n)).unwrap()).collect();
            let refs = |i: usize| [i % 3 == 0, i % 6 == 0].into_iter().filter(|&b| b).count() as i64;
            let mut want: Vec<(BlobId, i64)> = ids.iter().enumerate().map(|(i, id)| (*id, refs(i))).collect();
            want.sort_unstable();
            assert_eq!(got, want);
        }
    }

    #[test]
    fn a_blob_is_seen_first_once() {
        for mut blobs in both() {
            let (a, b) = (BlobId::of(b"a"), BlobId::of(b"b"));
            assert_eq!(blobs.first_seen(&[a]).unwrap(), vec![true]);
            assert_eq!(blobs.first_seen(&[a, b]).unwrap(), vec![false, true]);
            assert_eq!(blobs.first_seen(&[b]).unwrap(), vec![false]);
        }
    }

    #[test]
    fn past_the_limit_everything_moves_to_disk_as_it_was() {
        let mut blobs = RemoteBlobs::new();
        let ids: Vec<BlobId> = (0..(MEMORY_BLOBS as u32 + 10)).map(|i| BlobId::of(&i.to_le_bytes())).collect();
        let (first, rest) = ids.split_at(MEMORY_BLOBS / 2);
        blobs.add_container(ContainerId(1), &first.iter().map(|id| entry(*id, 1)).collect::<Vec<_>>()).unwrap();
        assert!(matches!(blobs, RemoteBlobs::Memory(_)));
        blobs.add_container(ContainerId(2), &rest.iter().map(|id| entry(*id, 2)).collect::<Vec<_>>()).unwrap();
        assert!(matches!(blobs, RemoteBlobs::Disk(_)));
        // A copy in an older container does not replace the newer.
        blobs.add_container(ContainerId(0), &[entry(ids[0], 0)]).unwrap();
        let located = blobs.locate(&[ids[0], *ids.last().unwrap()]).unwrap();
        assert_eq!(
            located,
            vec![Some((ContainerId(1), entry(ids[0], 1))), Some((ContainerId(2), entry(*ids.last().unwrap(), 2)))]
        );
        assert_eq!(blobs.located().count(), ids.len());
    }
}
