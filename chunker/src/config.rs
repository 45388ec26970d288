//! Chunker settings and the one function that finds a cut point.

use fastcdc::v2020::{self, Normalization};
use std::io::Read;

use crate::stream::ChunkStream;

/// Default average chunk size for content-defined chunking: 8 KiB.
pub const DEFAULT_AVG_SIZE: u32 = 8 * 1024;
/// Default block size for fixed chunking: 8 KiB.
pub const DEFAULT_FIXED_SIZE: u32 = 8 * 1024;
/// Largest average [`ChunkerConfig::cdc`] accepts, and largest fixed block.
const MAX_CONFIGURED_SIZE: u64 = 1024 * 1024;
/// The longest chunk any valid configuration cuts: a CDC maximum is eight
/// times its average, at most 1 MiB, and fixed blocks are at most 1 MiB.
/// Readers refuse a data blob longer than this before decompressing it, so
/// a crafted record cannot make them allocate what its length field claims.
pub const MAX_CHUNK_SIZE: usize = 8 * MAX_CONFIGURED_SIZE as usize;

/// How a store cuts data into chunks. Fixed when the store is created: two
/// stores with different settings do not dedupe against each other.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChunkerConfig {
    /// FastCDC 2020, normalized chunking level 2.
    Cdc {
        /// No chunk is shorter, except the last of a stream.
        min_size: u32,
        /// The target average.
        avg_size: u32,
        /// No chunk is longer.
        max_size: u32,
        /// Precomputed masks for `avg_size` (small and large).
        masks: (u64, u64),
        /// Where a chunk that starts with `max_size` zero bytes is cut. The
        /// same wherever such a chunk starts (FastCDC's hash starts from
        /// zero at every chunk), so runs of zeros (holes, preallocated
        /// images) are cut without running the hash over them.
        zero_cut: u32,
    },
    /// Blocks of `size` bytes at offsets that are multiples of `size`.
    Fixed {
        /// Block size in bytes.
        size: u32,
    },
}

/// Settings the chunker cannot work with.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The average size is outside what FastCDC supports.
    #[error("average chunk size {0} is out of range: use a power of two between 1 KiB and 1 MiB")]
    AvgSize(u64),
    /// The fixed block size is unusable.
    #[error("fixed block size {0} is out of range: use a power of two between 512 bytes and 1 MiB")]
    FixedSize(u64),
}

impl ChunkerConfig {
    /// FastCDC with the given average; minimum is a quarter of it and maximum
    /// eight times it (2 KiB / 8 KiB / 64 KiB by default).
    pub fn cdc(avg_size: u64) -> Result<ChunkerConfig, ConfigError> {
        if !(1024..=MAX_CONFIGURED_SIZE).contains(&avg_size) || !avg_size.is_power_of_two() {
            return Err(ConfigError::AvgSize(avg_size));
        }
        let avg = avg_size as u32;
        let (min_size, max_size) = (avg / 4, avg * 8);
        let masks = v2020::select_masks(avg as usize, Normalization::Level2);
        let zero_cut = gear_cut(&vec![0; max_size as usize], min_size, avg, max_size, masks) as u32;
        Ok(ChunkerConfig::Cdc { min_size, avg_size: avg, max_size, masks, zero_cut })
    }

    /// Fixed blocks of `size` bytes.
    pub fn fixed(size: u64) -> Result<ChunkerConfig, ConfigError> {
        if !(512..=MAX_CONFIGURED_SIZE).contains(&size) || !size.is_power_of_two() {
            return Err(ConfigError::FixedSize(size));
        }
        Ok(ChunkerConfig::Fixed { size: size as u32 })
    }

    /// The default: FastCDC with an 8 KiB average.
    pub fn default_cdc() -> ChunkerConfig {
        ChunkerConfig::cdc(DEFAULT_AVG_SIZE as u64).expect("the default average is valid")
    }

    /// The longest chunk this configuration can produce.
    pub fn max_size(&self) -> usize {
        match self {
            ChunkerConfig::Cdc { max_size, .. } => *max_size as usize,
            ChunkerConfig::Fixed { size } => *size as usize,
        }
    }

    /// The average (or fixed) chunk size.
    pub fn avg_size(&self) -> usize {
        match self {
            ChunkerConfig::Cdc { avg_size, .. } => *avg_size as usize,
            ChunkerConfig::Fixed { size } => *size as usize,
        }
    }

    /// A short name for messages and the store config: `cdc` or `fixed`.
    pub fn kind_name(&self) -> &'static str {
        match self {
            ChunkerConfig::Cdc { .. } => "cdc",
            ChunkerConfig::Fixed { .. } => "fixed",
        }
    }

    /// Length of the first chunk of `data`.
    ///
    /// `data` must hold at least `max_size()` bytes unless `at_end` says the
    /// stream ends with it; otherwise a chunk could be cut short by the
    /// buffer's end rather than by content, and streaming would disagree with
    /// in-memory chunking.
    pub fn cut(&self, data: &[u8], at_end: bool) -> usize {
        debug_assert!(at_end || data.len() >= self.max_size());
        match self {
            ChunkerConfig::Cdc { min_size, avg_size, max_size, masks, zero_cut } => {
                let max = *max_size as usize;
                if data.len() >= max && all_zero(&data[..max]) {
                    return *zero_cut as usize;
                }
                gear_cut(data, *min_size, *avg_size, *max_size, *masks)
            }
            ChunkerConfig::Fixed { size } => (*size as usize).min(data.len()),
        }
    }

    /// Streams chunks out of `reader` with bounded memory (a buffer of a few
    /// times the maximum chunk size).
    pub fn stream<R: Read>(&self, reader: R) -> ChunkStream<R> {
        ChunkStream::new(self.clone(), reader)
    }
}

/// FastCDC's cut point in `data` (at least 1 byte, at most all of it).
fn gear_cut(data: &[u8], min_size: u32, avg_size: u32, max_size: u32, (mask_s, mask_l): (u64, u64)) -> usize {
    let (_hash, count) = v2020::cut(
        data,
        min_size as usize,
        avg_size as usize,
        max_size as usize,
        mask_s,
        mask_l,
        mask_s << 1,
        mask_l << 1,
    );
    count.max(1).min(data.len())
}

/// Whether every byte of `data` is zero. Looks at 256 bytes at a time (a
/// loop the compiler vectorizes) and stops at the first block that is not
/// zero, so on ordinary data it costs a few nanoseconds.
pub fn all_zero(data: &[u8]) -> bool {
    data.chunks(256).all(|block| block.iter().fold(0, |acc, &byte| acc | byte) == 0)
}

impl Default for ChunkerConfig {
    fn default() -> ChunkerConfig {
        ChunkerConfig::default_cdc()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_valid_configuration_cuts_past_max_chunk_size() {
        let largest =
            [ChunkerConfig::cdc(MAX_CONFIGURED_SIZE).unwrap(), ChunkerConfig::fixed(MAX_CONFIGURED_SIZE).unwrap()];
        assert_eq!(largest.iter().map(ChunkerConfig::max_size).max(), Some(MAX_CHUNK_SIZE));
        assert!(ChunkerConfig::cdc(2 * MAX_CONFIGURED_SIZE).is_err());
        assert!(ChunkerConfig::fixed(2 * MAX_CONFIGURED_SIZE).is_err());
        let data = vec![0u8; MAX_CHUNK_SIZE + 1];
        assert_eq!(largest[0].cut(&data, true), MAX_CHUNK_SIZE);
    }

    /// The cuts FastCDC's hash makes over the whole of `data`, with no
    /// shortcut for zeros: what `cut` must agree with.
    fn gear_lengths(config: &ChunkerConfig, data: &[u8]) -> Vec<usize> {
        let ChunkerConfig::Cdc { min_size, avg_size, max_size, masks, .. } = *config else { unreachable!() };
        let mut lengths = Vec::new();
        let mut start = 0;
        while start < data.len() {
            lengths.push(gear_cut(&data[start..], min_size, avg_size, max_size, masks));
            start += lengths.last().unwrap();
        }
        lengths
    }

    #[test]
    fn zeros_are_recognised_and_nothing_else_is() {
        assert!(all_zero(&[]));
        assert!(all_zero(&[0; 100_000]));
        for at in [0, 1, 255, 256, 257, 65_535, 99_999] {
            let mut data = vec![0; 100_000];
            data[at] = 1;
            assert!(!all_zero(&data), "a 1 at {at}");
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

        /// Runs of zeros (long and short, at the start, the end and in
        /// between, touching data or not) are cut where the hash would cut
        /// them, for every average size.
        #[test]
        fn zeros_are_cut_where_the_hash_cuts_them(
            runs in proptest::collection::vec((0usize..300_000, 0usize..40_000, proptest::prelude::any::<u8>()), 1..8),
            avg_log in 10u32..15,
        ) {
            let config = ChunkerConfig::cdc(1 << avg_log).unwrap();
            let mut data = Vec::new();
            for (zeros, noise, seed) in runs {
                data.resize(data.len() + zeros, 0);
                data.extend(crate::test_data::noise(noise, u64::from(seed)));
            }
            proptest::prop_assert_eq!(crate::chunk_lengths(&config, &data), gear_lengths(&config, &data));
        }
    }
}
