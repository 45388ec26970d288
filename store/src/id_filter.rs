//! [`IdFilter`]: a Bloom filter of blob ids in a fixed amount of memory,
//! to ask "might this id be in that RocksDB family?" before asking the
//! family, whose every lookup costs a memtable probe and a filter probe in
//! each of its table files.
//!
//! Blob ids are BLAKE3 outputs, so their bytes are already spread evenly:
//! the filter takes its probe positions straight from them instead of
//! hashing again. Ids chosen to collide (a crafted tree) can only make it
//! answer "maybe" more often; it never answers "no" for an id it holds,
//! so a caller that asks the family on "maybe" is always right. Its memory
//! is fixed: past a few million ids it answers "maybe" for most, and the
//! caller is as fast as without it, never slower.

use crate::ids::BlobId;

/// Positions probed per id: one from each 8-byte word of the id.
const PROBES: usize = 4;

/// A fixed-size Bloom filter of blob ids (see the module's doc).
pub(crate) struct IdFilter {
    words: Vec<u64>,
    /// Bit positions are taken modulo the filter's bits, a power of two.
    mask: u64,
}

impl IdFilter {
    /// A filter of `bytes` (rounded up to a power of two, at least 8).
    pub(crate) fn new(bytes: usize) -> IdFilter {
        let bits = (bytes.max(8) * 8).next_power_of_two() as u64;
        IdFilter { words: vec![0; (bits / 64) as usize], mask: bits - 1 }
    }

    fn positions(mask: u64, id: &BlobId) -> impl Iterator<Item = u64> + '_ {
        id.as_bytes()
            .chunks_exact(8)
            .take(PROBES)
            .map(move |word| u64::from_le_bytes(word.try_into().expect("chunks of eight bytes")) & mask)
    }

    /// Adds `id`.
    pub(crate) fn insert(&mut self, id: &BlobId) {
        for bit in Self::positions(self.mask, id) {
            self.words[(bit / 64) as usize] |= 1 << (bit % 64);
        }
    }

    /// False only if `id` was never inserted.
    pub(crate) fn may_contain(&self, id: &BlobId) -> bool {
        Self::positions(self.mask, id).all(|bit| self.words[(bit / 64) as usize] & (1 << (bit % 64)) != 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u64) -> BlobId {
        BlobId::of(&n.to_le_bytes())
    }

    #[test]
    fn holds_every_id_it_was_given_and_few_others() {
        let mut filter = IdFilter::new(1 << 20);
        let held = 500_000;
        for n in 0..held {
            filter.insert(&id(n));
        }
        assert!((0..held).all(|n| filter.may_contain(&id(n))), "an inserted id was not found");
        // 500,000 ids in 8 Mi bits with four probes: about 0.2% of other
        // ids get "maybe".
        let others = 100_000;
        let maybe = (held..held + others).filter(|&n| filter.may_contain(&id(n))).count();
        assert!(maybe < others as usize / 100, "{maybe} of {others} other ids passed");
    }

    #[test]
    fn an_empty_filter_holds_nothing_and_a_full_one_still_holds_its_ids() {
        let empty = IdFilter::new(64);
        assert!((0..1000).all(|n| !empty.may_contain(&id(n))));
        // Far past its size it answers "maybe" for nearly everything, but
        // still for everything it holds.
        let mut full = IdFilter::new(64);
        for n in 0..10_000 {
            full.insert(&id(n));
        }
        assert!((0..10_000).all(|n| full.may_contain(&id(n))));
    }
}
