//! Frames: consecutive chunks compressed together (issue "Space").
//!
//! Each 8 KiB chunk compressed alone gives zstd 8 KiB of context and makes
//! it build its entropy tables for every chunk (about 8% of a backup's CPU
//! on `/usr/lib`, perf); a frame of many chunks compresses as one input
//! and stays deduplicated at the chunk, since each member keeps its id.
//! `cargo bench --bench frames` measures what each frame size buys.
//!
//! This module is the codec; a frame is one container record (flag bit
//! [`FLAG_FRAME`](super::FLAG_FRAME)), each member listed in the footer and
//! the index (docs/format.md, ARCHITECTURE.md "Frames, as built").
//!
//! A frame's stored bytes:
//!
//! ```text
//! n u16 | member length u32 x n | payload: the members' plaintexts,
//!                                 concatenated, compressed per `flags`
//! ```
//!
//! The member table is kept outside the compressed payload so that a
//! reader checks it, and bounds what decoding allocates, before it
//! decompresses anything.

use crate::container::encode::{Codec, compress, decompress};

/// Plaintext bytes a frame holds at most (unless its only member is
/// larger) in stores of formats 4 and 5. Chosen by `cargo bench --bench
/// frames`: see ARCHITECTURE.md.
pub const FRAME_TARGET: usize = 256 << 10;
/// The same for stores of format 6 on: with zstd's tables sized for it
/// (`encode.rs`), a frame twice as large compresses as well as level 3
/// does 256 KiB, a quarter faster (ARCHITECTURE.md, "Frames of 512 KiB").
/// Its records carry [`FLAG_WIDE`](super::FLAG_WIDE) when they hold more
/// than [`FRAME_TARGET`].
pub const WIDE_FRAME_TARGET: usize = 512 << 10;
/// Most members a frame may hold: a frame of the smallest chunks (2 KiB
/// at the default 8 KiB average) reaches a 512 KiB target at 256.
pub const MAX_FRAME_MEMBERS: usize = 4096;
/// Most plaintext a frame may hold, whatever its bytes claim.
pub const MAX_FRAME_RAW: usize = 16 << 20;

/// Chunks gathered into one frame, in order.
#[derive(Debug, Default)]
pub struct FrameBuilder {
    data: Vec<u8>,
    ends: Vec<u32>,
}

impl FrameBuilder {
    /// Adds a member; returns its place in the frame.
    pub fn push(&mut self, member: &[u8]) -> usize {
        if self.data.capacity() == 0 {
            // A frame's whole plaintext at once: grown by doubling, each
            // frame was copied five more times on its way to 256 KiB.
            // A narrower frame (a format-5 store's) leaves the rest
            // untouched: address space more than memory.
            self.data.reserve(WIDE_FRAME_TARGET.max(member.len()));
        }
        self.data.extend_from_slice(member);
        self.ends.push(u32::try_from(self.data.len()).expect("frames stay far below 4 GiB"));
        self.ends.len() - 1
    }

    /// Plaintext bytes so far.
    pub fn raw_len(&self) -> usize {
        self.data.len()
    }

    /// Members so far.
    pub fn members(&self) -> usize {
        self.ends.len()
    }

    /// Whether the frame must be closed before a member of `next` bytes
    /// goes in: it would pass `target` bytes or the member limit. An
    /// empty frame takes any member.
    pub fn is_full(&self, next: usize, target: usize) -> bool {
        !self.ends.is_empty() && (self.data.len() + next > target || self.ends.len() >= MAX_FRAME_MEMBERS)
    }

    /// The frame's stored bytes with `codec`, and the flag that says how
    /// its payload is stored (0 when compressing did not make it smaller).
    pub fn encode(&self, codec: Codec) -> (u8, Vec<u8>) {
        let (flags, payload) = compress(&self.data, codec);
        let mut out = Vec::with_capacity(2 + 4 * self.ends.len() + payload.len());
        out.extend_from_slice(&(self.ends.len() as u16).to_le_bytes());
        let mut start = 0;
        for &end in &self.ends {
            out.extend_from_slice(&(end - start).to_le_bytes());
            start = end;
        }
        out.extend_from_slice(&payload);
        (flags, out)
    }
}

/// A blob's checked plaintext: its own bytes, or a member of a decoded
/// frame, borrowed from the frame the cache holds (a restore writes it
/// from there: copying each 8 KiB member out cost a restore a few percent).
pub struct Plain(PlainBytes);

enum PlainBytes {
    Owned(Vec<u8>),
    /// A frame and a member of it whose bytes exist (checked on making).
    Member(std::sync::Arc<Frame>, usize),
}

impl Plain {
    /// Member `index` of `frame`, which must exist.
    pub(crate) fn member(frame: std::sync::Arc<Frame>, index: usize) -> Plain {
        debug_assert!(frame.member(index).is_some());
        Plain(PlainBytes::Member(frame, index))
    }

    /// The bytes, owned (a member's are copied out of its frame).
    pub fn into_vec(self) -> Vec<u8> {
        match self.0 {
            PlainBytes::Owned(bytes) => bytes,
            PlainBytes::Member(..) => self.to_vec(),
        }
    }
}

impl From<Vec<u8>> for Plain {
    fn from(bytes: Vec<u8>) -> Plain {
        Plain(PlainBytes::Owned(bytes))
    }
}

impl std::ops::Deref for Plain {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match &self.0 {
            PlainBytes::Owned(bytes) => bytes,
            PlainBytes::Member(frame, index) => frame.member(*index).unwrap_or_default(),
        }
    }
}

/// A decoded frame: its members' plaintexts.
#[derive(Debug)]
pub struct Frame {
    data: Vec<u8>,
    ends: Vec<u32>,
}

impl Frame {
    /// Member `index`'s plaintext.
    pub fn member(&self, index: usize) -> Option<&[u8]> {
        let end = *self.ends.get(index)? as usize;
        let start = if index == 0 { 0 } else { self.ends[index - 1] as usize };
        self.data.get(start..end)
    }

    /// How many members it holds.
    pub fn members(&self) -> usize {
        self.ends.len()
    }

    /// Plaintext bytes of all its members.
    pub fn raw_len(&self) -> usize {
        self.data.len()
    }
}

/// Decodes a frame's stored bytes (`flags` as [`FrameBuilder::encode`]
/// returned them), or says why they do not decode. Bytes from a container
/// are not trusted: the member table is checked against the bounds above
/// before the payload is decompressed, and the payload must decode to
/// exactly the members' total.
pub fn decode_frame(flags: u8, stored: &[u8]) -> Result<Frame, String> {
    let count: [u8; 2] = stored.get(..2).and_then(|b| b.try_into().ok()).ok_or("a frame shorter than its count")?;
    let count = u16::from_le_bytes(count) as usize;
    if count == 0 || count > MAX_FRAME_MEMBERS {
        return Err(format!("a frame of {count} members (1 to {MAX_FRAME_MEMBERS})"));
    }
    let table = stored.get(2..2 + 4 * count).ok_or_else(|| format!("a frame shorter than its {count} lengths"))?;
    let mut ends = Vec::with_capacity(count);
    let mut total = 0u64;
    for length in table.chunks_exact(4) {
        total += u64::from(u32::from_le_bytes(length.try_into().expect("chunks of 4")));
        if total > MAX_FRAME_RAW as u64 {
            return Err(format!("members of more than {MAX_FRAME_RAW} bytes in one frame"));
        }
        ends.push(total as u32);
    }
    let data = decompress(flags, total as u32, &stored[2 + 4 * count..])?;
    Ok(Frame { data, ends })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::container::encode::DEFAULT_ZSTD_LEVEL;

    fn members() -> Vec<Vec<u8>> {
        (0..40u32).map(|i| format!("member {i} ").repeat(50 + i as usize * 7).into_bytes()).chain([vec![]]).collect()
    }

    fn built(members: &[Vec<u8>]) -> FrameBuilder {
        let mut frame = FrameBuilder::default();
        for (i, member) in members.iter().enumerate() {
            assert_eq!(frame.push(member), i);
        }
        frame
    }

    #[test]
    fn every_member_comes_back_with_every_codec() {
        let members = members();
        let frame = built(&members);
        for codec in [Codec::None, Codec::Lz4, Codec::Zstd(DEFAULT_ZSTD_LEVEL)] {
            let (flags, stored) = frame.encode(codec);
            let decoded = decode_frame(flags, &stored).unwrap();
            assert_eq!(decoded.members(), members.len(), "{codec}");
            assert_eq!(decoded.raw_len(), frame.raw_len());
            for (i, member) in members.iter().enumerate() {
                assert_eq!(decoded.member(i), Some(&member[..]), "{codec}: member {i}");
            }
            assert_eq!(decoded.member(members.len()), None);
        }
    }

    #[test]
    fn a_frame_compresses_better_than_its_members_alone() {
        let members = members();
        let codec = Codec::Zstd(DEFAULT_ZSTD_LEVEL);
        let alone: usize = members.iter().map(|m| compress(m, codec).1.len()).sum();
        let (_, framed) = built(&members).encode(codec);
        assert!(framed.len() * 2 < alone, "framed {} against {alone} alone", framed.len());
    }

    #[test]
    fn crafted_frames_are_refused_without_panicking_or_allocating_their_claims() {
        let (flags, stored) = built(&members()).encode(Codec::Zstd(DEFAULT_ZSTD_LEVEL));
        let refused = |bytes: &[u8]| decode_frame(flags, bytes).unwrap_err();
        assert!(refused(&[]).contains("shorter than its count"));
        assert!(refused(&[0, 0]).contains("0 members"));
        assert!(refused(&[0xff, 0xff]).contains("65535 members"));
        assert!(refused(&stored[..10]).contains("shorter than its"));
        // One member claiming 4 GiB: refused before anything is allocated.
        let mut huge = vec![1, 0];
        huge.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(refused(&huge).contains("more than"));
        // A length one byte longer than the payload holds.
        let mut longer = stored.clone();
        longer[2] = longer[2].wrapping_add(1);
        assert!(refused(&longer).contains("bytes"), "{}", refused(&longer));
        // Every truncation and every single flipped byte of the table.
        for cut in 0..stored.len() {
            assert!(decode_frame(flags, &stored[..cut]).is_err(), "cut at {cut}");
        }
        for at in 0..2 + 4 * 41 {
            let mut bad = stored.clone();
            bad[at] ^= 0x40;
            let _ = decode_frame(flags, &bad);
        }
        assert!(decode_frame(0x7f, &stored).unwrap_err().contains("unknown record flags"));
    }

    #[test]
    fn a_frame_is_full_at_its_target_or_its_member_limit() {
        let mut frame = FrameBuilder::default();
        assert!(!frame.is_full(11, 10), "an empty frame takes anything");
        frame.push(&[0; 4]);
        assert!(!frame.is_full(6, 10));
        assert!(frame.is_full(7, 10));
        let mut frame = FrameBuilder::default();
        for _ in 0..MAX_FRAME_MEMBERS {
            frame.push(&[]);
        }
        assert!(frame.is_full(0, usize::MAX));
    }
}
