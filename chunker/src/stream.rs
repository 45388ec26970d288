//! Streaming chunking over any reader, with bounded memory.
//!
//! Why not `fastcdc::v2020::StreamCDC`: it keeps a buffer of exactly
//! `max_size` bytes and shifts it down after every chunk, so each byte is
//! moved about `max/avg` (8) times. Here the buffer holds many chunks and the
//! unconsumed tail is moved only when a refill is needed.
//!
//! Two ways to take chunks: one at a time ([`ChunkStream::next_chunk`], each
//! copied out into its own `Vec`), or a batch at a time
//! ([`ChunkStream::next_batch`]): the reader fills the batch's own buffer and
//! the chunks are ranges of it, so the only copy of the bytes is the read
//! itself (plus the tail past the last cut, carried to the next batch).

use std::io::{self, Read};

use crate::ChunkerConfig;

/// How many maximum-size chunks the read buffer holds.
const BUFFER_CHUNKS: usize = 16;

/// One chunk: where it starts in the stream, and its bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chunk {
    /// Offset of the first byte within the stream.
    pub offset: u64,
    /// The chunk's bytes.
    pub data: Vec<u8>,
}

/// Iterator of [`Chunk`]s read from a reader; see [`ChunkerConfig::stream`].
pub struct ChunkStream<R> {
    config: ChunkerConfig,
    reader: R,
    buffer: Vec<u8>,
    start: usize,
    end: usize,
    eof: bool,
    offset: u64,
}

/// Consecutive chunks of a stream in one buffer: what
/// [`ChunkStream::next_batch`] returns.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ChunkBatch {
    offset: u64,
    data: Vec<u8>,
    ends: Vec<usize>,
}

impl ChunkBatch {
    /// Offset of the batch's first byte within the stream.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Number of chunks.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// Whether the batch holds no chunk.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Bytes in all its chunks.
    pub fn bytes(&self) -> usize {
        self.data.len()
    }

    /// Chunk `i`'s bytes.
    pub fn chunk(&self, i: usize) -> &[u8] {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        &self.data[start..self.ends[i]]
    }

    /// The chunks in order.
    pub fn iter(&self) -> impl Iterator<Item = &[u8]> {
        (0..self.len()).map(|i| self.chunk(i))
    }
}

impl<R: Read> ChunkStream<R> {
    pub(crate) fn new(config: ChunkerConfig, reader: R) -> ChunkStream<R> {
        // The buffer is made on first use by `next_chunk`: `next_batch`
        // keeps only the tail past its last cut in it.
        ChunkStream { config, reader, buffer: Vec::new(), start: 0, end: 0, eof: false, offset: 0 }
    }

    /// The next chunks, together about `bytes` long and at most `bytes`
    /// plus the maximum chunk size (unless `next_chunk` was used before and
    /// left more than that in the stream's buffer); at least one chunk unless
    /// the stream has ended (`None`). The batch's buffer is filled by the
    /// reader directly and its chunks are ranges of it.
    pub fn next_batch(&mut self, bytes: usize) -> io::Result<Option<ChunkBatch>> {
        let max = self.config.max_size();
        let carried = &self.buffer[self.start..self.end];
        // More than that is carried only after `next_chunk` filled its buffer.
        let capacity = (bytes.max(1) + max).max(carried.len());
        let mut data = Vec::with_capacity(capacity);
        data.extend_from_slice(carried);
        if !self.eof {
            let want = capacity - data.len();
            // `read_to_end` reads into the spare capacity without zeroing it
            // first, and stops at the limit without a probing read.
            let got = (&mut self.reader).take(want as u64).read_to_end(&mut data)?;
            self.eof = got < want;
        }
        let mut ends = Vec::with_capacity(capacity / self.config.avg_size() + 1);
        let mut cut_at = 0;
        while cut_at < data.len() && (self.eof || data.len() - cut_at >= max) {
            cut_at += self.config.cut(&data[cut_at..], self.eof);
            ends.push(cut_at);
        }
        // What is past the last cut waits for more bytes, in the stream's buffer.
        self.buffer.clear();
        self.buffer.extend_from_slice(&data[cut_at..]);
        (self.start, self.end) = (0, self.buffer.len());
        data.truncate(cut_at);
        if ends.is_empty() {
            return Ok(None);
        }
        let batch = ChunkBatch { offset: self.offset, data, ends };
        self.offset += cut_at as u64;
        Ok(Some(batch))
    }

    /// Bytes read from the reader so far.
    pub fn bytes_read(&self) -> u64 {
        self.offset + (self.end - self.start) as u64
    }

    /// Moves the unconsumed tail to the front and reads until the buffer is
    /// full or the reader ends.
    fn refill(&mut self) -> io::Result<()> {
        let capacity = self.config.max_size() * BUFFER_CHUNKS;
        if self.buffer.len() < capacity {
            self.buffer.resize(capacity, 0);
        }
        self.buffer.copy_within(self.start..self.end, 0);
        self.end -= self.start;
        self.start = 0;
        while self.end < self.buffer.len() {
            match self.reader.read(&mut self.buffer[self.end..]) {
                Ok(0) => {
                    self.eof = true;
                    break;
                }
                Ok(n) => self.end += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// The next chunk, `None` at the end of the stream.
    pub fn next_chunk(&mut self) -> io::Result<Option<Chunk>> {
        if self.end - self.start < self.config.max_size() && !self.eof {
            self.refill()?;
        }
        if self.start == self.end {
            return Ok(None);
        }
        let length = self.config.cut(&self.buffer[self.start..self.end], self.eof);
        let data = self.buffer[self.start..self.start + length].to_vec();
        let chunk = Chunk { offset: self.offset, data };
        self.start += length;
        self.offset += length as u64;
        Ok(Some(chunk))
    }
}

impl<R: Read> Iterator for ChunkStream<R> {
    type Item = io::Result<Chunk>;

    fn next(&mut self) -> Option<io::Result<Chunk>> {
        self.next_chunk().transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chunk_lengths;
    use crate::test_data::noise;
    use proptest::prelude::*;

    /// A reader that returns at most `step` bytes per call, to exercise refills
    /// at awkward places.
    struct Trickle<'a> {
        data: &'a [u8],
        step: usize,
    }

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.step.min(buf.len()).min(self.data.len());
            buf[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    fn stream_lengths(config: &ChunkerConfig, data: &[u8], step: usize) -> Vec<usize> {
        config.stream(Trickle { data, step }).map(|chunk| chunk.unwrap().data.len()).collect()
    }

    #[test]
    fn cdc_sizes_stay_within_bounds_and_average_near_target() {
        let config = ChunkerConfig::default_cdc();
        let data = noise(8 << 20, 7);
        let lengths = chunk_lengths(&config, &data);
        let (last, body) = lengths.split_last().unwrap();
        assert!(body.iter().all(|&n| (2048..=65536).contains(&n)));
        assert!(*last <= 65536);
        let average = data.len() / lengths.len();
        assert!((6 * 1024..=12 * 1024).contains(&average), "average chunk {average}");
    }

    #[test]
    fn fixed_chunks_are_aligned_blocks() {
        let config = ChunkerConfig::fixed(8192).unwrap();
        let data = noise(8192 * 5 + 100, 3);
        let chunks: Vec<Chunk> = config.stream(&data[..]).map(Result::unwrap).collect();
        assert_eq!(chunks.len(), 6);
        for (i, chunk) in chunks.iter().enumerate() {
            assert_eq!(chunk.offset, i as u64 * 8192);
        }
        assert_eq!(chunks[5].data.len(), 100);
    }

    #[test]
    fn empty_input_has_no_chunks() {
        let config = ChunkerConfig::default_cdc();
        assert_eq!(config.stream(&[][..]).count(), 0);
        assert!(chunk_lengths(&config, &[]).is_empty());
    }

    #[test]
    fn bad_sizes_are_rejected_with_advice() {
        let error = ChunkerConfig::cdc(3000).unwrap_err().to_string();
        assert!(error.contains("power of two"), "{error}");
        assert!(ChunkerConfig::fixed(100).is_err());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]

        #[test]
        fn concatenated_chunks_equal_input(len in 0usize..400_000, seed: u64, fixed: bool, step in 1usize..200_000) {
            let config = if fixed { ChunkerConfig::fixed(8192).unwrap() } else { ChunkerConfig::default_cdc() };
            let data = noise(len, seed);
            let mut joined = Vec::with_capacity(len);
            let mut expected_offset = 0;
            for chunk in config.stream(Trickle { data: &data, step }) {
                let chunk = chunk.unwrap();
                prop_assert_eq!(chunk.offset, expected_offset);
                expected_offset += chunk.data.len() as u64;
                joined.extend_from_slice(&chunk.data);
            }
            prop_assert_eq!(joined, data);
        }

        #[test]
        fn batches_agree_with_in_memory_chunking(len in 0usize..600_000, seed: u64, fixed: bool, step in 1usize..300_000, bytes in 1usize..200_000, singles in 0usize..4) {
            let config = if fixed { ChunkerConfig::fixed(8192).unwrap() } else { ChunkerConfig::default_cdc() };
            let data = noise(len, seed);
            let mut stream = config.stream(Trickle { data: &data, step });
            let (mut lengths, mut joined) = (Vec::new(), Vec::new());
            // A few single chunks first: the two ways share the stream's state.
            for _ in 0..singles {
                if let Some(chunk) = stream.next_chunk().unwrap() {
                    prop_assert_eq!(chunk.offset, joined.len() as u64);
                    lengths.push(chunk.data.len());
                    joined.extend_from_slice(&chunk.data);
                }
            }
            while let Some(batch) = stream.next_batch(bytes).unwrap() {
                prop_assert!(!batch.is_empty());
                prop_assert_eq!(batch.offset(), joined.len() as u64);
                prop_assert!(singles > 0 || batch.bytes() <= bytes + config.max_size());
                for chunk in batch.iter() {
                    lengths.push(chunk.len());
                    joined.extend_from_slice(chunk);
                }
            }
            prop_assert_eq!(stream.bytes_read(), data.len() as u64);
            prop_assert_eq!(lengths, chunk_lengths(&config, &data));
            prop_assert_eq!(joined, data);
        }

        #[test]
        fn streaming_agrees_with_in_memory(len in 0usize..600_000, seed: u64, step in 1usize..300_000) {
            let config = ChunkerConfig::default_cdc();
            let data = noise(len, seed);
            prop_assert_eq!(stream_lengths(&config, &data, step), chunk_lengths(&config, &data));
        }

        #[test]
        fn insertion_near_start_keeps_later_boundaries(seed: u64, at in 0usize..4096, inserted in proptest::collection::vec(any::<u8>(), 1..64)) {
            let config = ChunkerConfig::default_cdc();
            let data = noise(1 << 20, seed);
            let mut edited = data[..at].to_vec();
            edited.extend_from_slice(&inserted);
            edited.extend_from_slice(&data[at..]);
            let boundaries = |lengths: Vec<usize>, shift: usize| -> Vec<usize> {
                lengths.iter().scan(0, |end, n| { *end += n; Some(*end - shift) }).collect()
            };
            let before = boundaries(chunk_lengths(&config, &data), 0);
            let after: std::collections::HashSet<usize> =
                boundaries(chunk_lengths(&config, &edited), inserted.len()).into_iter().collect();
            // The edit disturbs a few chunks; once one original boundary is
            // found again, cutting is back in step and every later boundary
            // is the same. Usually that is the first or second chunk; a cut
            // moved by the edit can push the next past a boundary (the
            // minimum size), so allow a handful.
            let resync = before.iter().position(|b| after.contains(b));
            prop_assert!(resync.is_some_and(|i| i < 8), "no boundary found again in the first 8 chunks: {:?}", resync);
            for boundary in &before[resync.unwrap_or(0)..] {
                prop_assert!(after.contains(boundary), "boundary {} moved after the chunker was back in step", boundary);
            }
        }
    }
}
