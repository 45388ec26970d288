//! cairn-chunker: cuts byte streams into chunks and names them.
//!
//! Two ways to cut, chosen per store:
//! - [`ChunkerConfig::Cdc`]: FastCDC 2020 with normalized chunking (the
//!   `fastcdc` crate's cut-point search), so an insertion moves only the
//!   boundaries near it and everything after re-aligns;
//! - [`ChunkerConfig::Fixed`]: fixed-size blocks at aligned offsets, for VM
//!   images and databases whose writes are block-aligned (OneFS style).
//!
//! Every chunk is named by a [`BlobId`], the BLAKE3-256 of its bytes, keyed
//! by a key the store chooses (one per blob kind).
//!
//! This crate is pure: it reads bytes from any [`std::io::Read`] and returns
//! chunks. It knows nothing about containers, RocksDB or S3.

mod config;
mod id;
mod stream;

pub use config::{ChunkerConfig, ConfigError, DEFAULT_AVG_SIZE, DEFAULT_FIXED_SIZE, MAX_CHUNK_SIZE, all_zero};
pub use id::{BlobId, ParseBlobIdError};
pub use stream::{Chunk, ChunkBatch, ChunkStream};

/// Chunks a whole in-memory buffer and returns the chunk lengths, in order.
///
/// This is the reference the streaming chunker is tested against; callers that
/// have a reader should use [`ChunkerConfig::stream`].
pub fn chunk_lengths(config: &ChunkerConfig, data: &[u8]) -> Vec<usize> {
    let mut lengths = Vec::new();
    let mut start = 0;
    while start < data.len() {
        let length = config.cut(&data[start..], true);
        lengths.push(length);
        start += length;
    }
    lengths
}

#[cfg(test)]
pub(crate) mod test_data {
    /// Pseudo-random but reproducible bytes (xorshift), so chunk boundaries
    /// actually depend on content.
    pub fn noise(len: usize, seed: u64) -> Vec<u8> {
        let mut state = seed | 1;
        (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 24) as u8
            })
            .collect()
    }
}
