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
        Ok(ChunkerConfig::Cdc {
            min_size: avg / 4,
            avg_size: avg,
            max_size: avg * 8,
            masks: v2020::select_masks(avg as usize, Normalization::Level2),
        })
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
            ChunkerConfig::Cdc { min_size, avg_size, max_size, masks: (mask_s, mask_l) } => {
                let (_hash, count) = v2020::cut(
                    data,
                    *min_size as usize,
                    *avg_size as usize,
                    *max_size as usize,
                    *mask_s,
                    *mask_l,
                    mask_s << 1,
                    mask_l << 1,
                );
                count.max(1).min(data.len())
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
}
