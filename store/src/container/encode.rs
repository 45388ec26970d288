//! Turning a blob's plaintext into what a container stores: its id, and the
//! bytes compressed with the store's codec when that makes them smaller.
//!
//! Two codecs: lz4 (`lz4_flex`, the brief's codec: fastest to compress and
//! to read) and zstd (smaller: its entropy stage typically saves another
//! third on text; about half lz4's compression speed). Each record says in
//! its flags how it was stored, so a store may hold both, and changing the
//! codec never rewrites anything.

use std::cell::RefCell;
use std::fmt;
use std::str::FromStr;

use crate::container::format::{FLAG_LZ4, FLAG_ZSTD};
use crate::ids::{BlobId, BlobKind};

/// How new blobs are compressed; displayed and parsed as users write it
/// (`lz4`, `zstd`, `zstd:LEVEL`, `none`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Codec {
    /// Stored as they are.
    None,
    /// lz4 block format.
    Lz4,
    /// zstd frame at this level.
    Zstd(i32),
}

/// The zstd level `zstd` alone means: zstd's own default, where its ratio
/// is close to its best for its speed.
pub const DEFAULT_ZSTD_LEVEL: i32 = 3;

impl fmt::Display for Codec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Codec::None => f.write_str("none"),
            Codec::Lz4 => f.write_str("lz4"),
            Codec::Zstd(DEFAULT_ZSTD_LEVEL) => f.write_str("zstd"),
            Codec::Zstd(level) => write!(f, "zstd:{level}"),
        }
    }
}

impl FromStr for Codec {
    type Err = String;

    fn from_str(text: &str) -> Result<Codec, String> {
        let bad = || format!("unknown compression '{text}': use lz4, zstd, zstd:LEVEL (1 to 19) or none");
        match text {
            "none" => Ok(Codec::None),
            "lz4" => Ok(Codec::Lz4),
            "zstd" => Ok(Codec::Zstd(DEFAULT_ZSTD_LEVEL)),
            _ => {
                let level = text.strip_prefix("zstd:").ok_or_else(bad)?;
                match level.parse::<i32>() {
                    Ok(level) if (1..=19).contains(&level) => Ok(Codec::Zstd(level)),
                    _ => Err(bad()),
                }
            }
        }
    }
}

/// A blob ready to be appended to a container.
#[derive(Clone, Debug)]
pub struct EncodedBlob {
    /// BLAKE3 of the plaintext.
    pub id: BlobId,
    /// What the blob holds.
    pub kind: BlobKind,
    /// Record flags ([`FLAG_LZ4`] or [`FLAG_ZSTD`] when `bytes` is compressed).
    pub flags: u8,
    /// Length of the plaintext.
    pub raw_len: u32,
    /// The bytes to store.
    pub bytes: Vec<u8>,
}

thread_local! {
    // A zstd context costs about a megabyte to set up; chunks are 8 KiB, so
    // each thread keeps one per level it uses (rayon's workers live long).
    static ZSTD_COMPRESSOR: RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> = const { RefCell::new(None) };
    static ZSTD_DECOMPRESSOR: RefCell<Option<zstd::bulk::Decompressor<'static>>> = const { RefCell::new(None) };
}

fn zstd_compress(raw: &[u8], level: i32) -> Option<Vec<u8>> {
    ZSTD_COMPRESSOR.with(|cell| {
        let mut cell = cell.borrow_mut();
        if cell.as_ref().is_none_or(|(l, _)| *l != level) {
            *cell = Some((level, zstd::bulk::Compressor::new(level).ok()?));
        }
        let (_, compressor) = cell.as_mut()?;
        // Only a result smaller than the input is kept, so that is the bound.
        let mut out = Vec::with_capacity(raw.len());
        compressor.compress_to_buffer(raw, &mut out).ok()?;
        Some(out)
    })
}

fn zstd_decompress(stored: &[u8], raw_len: usize) -> Result<Vec<u8>, String> {
    ZSTD_DECOMPRESSOR.with(|cell| {
        let mut cell = cell.borrow_mut();
        if cell.is_none() {
            *cell = Some(zstd::bulk::Decompressor::new().map_err(|e| format!("zstd: {e}"))?);
        }
        let decompressor = cell.as_mut().expect("set above");
        let mut out = Vec::with_capacity(raw_len);
        decompressor.decompress_to_buffer(stored, &mut out).map_err(|e| format!("zstd: {e}"))?;
        Ok(out)
    })
}

/// Compresses `raw` with `codec` and keeps the compressed form only when it
/// is smaller; `id` must be `BlobId::of(raw)`.
pub fn encode_blob(id: BlobId, kind: BlobKind, raw: &[u8], codec: Codec) -> EncodedBlob {
    let raw_len = u32::try_from(raw.len()).expect("blobs are far smaller than 4 GiB");
    let compressed = match codec {
        Codec::None => None,
        Codec::Lz4 => Some((FLAG_LZ4, lz4_flex::block::compress(raw))),
        // A blob zstd cannot shrink fails to fit the buffer: stored raw.
        Codec::Zstd(level) => zstd_compress(raw, level).map(|bytes| (FLAG_ZSTD, bytes)),
    };
    match compressed {
        Some((flags, bytes)) if bytes.len() < raw.len() => EncodedBlob { id, kind, flags, raw_len, bytes },
        _ => EncodedBlob { id, kind, flags: 0, raw_len, bytes: raw.to_vec() },
    }
}

/// Recovers the plaintext of a stored record, or says why it cannot.
pub fn decode_blob(flags: u8, raw_len: u32, stored: &[u8]) -> Result<Vec<u8>, String> {
    let plain = match flags {
        FLAG_LZ4 => lz4_flex::block::decompress(stored, raw_len as usize).map_err(|e| format!("lz4: {e}"))?,
        FLAG_ZSTD => zstd_decompress(stored, raw_len as usize)?,
        0 => stored.to_vec(),
        other => return Err(format!("unknown record flags {other:#04x} (written by a newer cairn?)")),
    };
    if plain.len() != raw_len as usize {
        return Err(format!("decodes to {} bytes, the record says {raw_len}", plain.len()));
    }
    Ok(plain)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text() -> Vec<u8> {
        (0..3000u32).flat_map(|i| format!("cairn {} ", i % 97).into_bytes()).collect()
    }

    fn noise() -> Vec<u8> {
        (0..4096u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect()
    }

    #[test]
    fn every_codec_round_trips_and_random_blobs_stay_raw() {
        for codec in [Codec::None, Codec::Lz4, Codec::Zstd(1), Codec::Zstd(DEFAULT_ZSTD_LEVEL), Codec::Zstd(19)] {
            let text = text();
            let blob = encode_blob(BlobId::of(&text), BlobKind::Data, &text, codec);
            let expected = match codec {
                Codec::None => 0,
                Codec::Lz4 => FLAG_LZ4,
                Codec::Zstd(_) => FLAG_ZSTD,
            };
            assert_eq!(blob.flags, expected, "{codec}");
            if codec != Codec::None {
                assert!(blob.bytes.len() < text.len() / 3, "{codec}: {}", blob.bytes.len());
            }
            assert_eq!(decode_blob(blob.flags, blob.raw_len, &blob.bytes).unwrap(), text);

            let noise = noise();
            let blob = encode_blob(BlobId::of(&noise), BlobKind::Data, &noise, codec);
            if blob.flags == 0 {
                assert_eq!(blob.bytes, noise);
            }
            assert_eq!(decode_blob(blob.flags, blob.raw_len, &blob.bytes).unwrap(), noise);
        }
    }

    #[test]
    fn zstd_is_smaller_than_lz4_on_text() {
        let text = text();
        let lz4 = encode_blob(BlobId::of(&text), BlobKind::Data, &text, Codec::Lz4);
        let zstd = encode_blob(BlobId::of(&text), BlobKind::Data, &text, Codec::Zstd(DEFAULT_ZSTD_LEVEL));
        assert!(zstd.bytes.len() < lz4.bytes.len(), "zstd {} vs lz4 {}", zstd.bytes.len(), lz4.bytes.len());
    }

    #[test]
    fn damaged_or_unknown_records_are_refused() {
        let text = text();
        for codec in [Codec::Lz4, Codec::Zstd(DEFAULT_ZSTD_LEVEL)] {
            let blob = encode_blob(BlobId::of(&text), BlobKind::Data, &text, codec);
            assert!(decode_blob(blob.flags, blob.raw_len + 1, &blob.bytes).is_err(), "{codec}: wrong length");
            assert!(decode_blob(blob.flags, blob.raw_len, &blob.bytes[..blob.bytes.len() / 2]).is_err(), "{codec}");
        }
        assert!(decode_blob(0, 5, b"abcd").is_err());
        assert!(decode_blob(7, 4, b"abcd").unwrap_err().contains("unknown record flags"));
    }

    #[test]
    fn codec_names_parse_back() {
        for codec in [Codec::None, Codec::Lz4, Codec::Zstd(DEFAULT_ZSTD_LEVEL), Codec::Zstd(9)] {
            assert_eq!(codec.to_string().parse::<Codec>().unwrap(), codec);
        }
        assert_eq!("zstd:3".parse::<Codec>().unwrap(), Codec::Zstd(3));
        for bad in ["gzip", "zstd:0", "zstd:20", "zstd:", "lz4:1", ""] {
            assert!(bad.parse::<Codec>().is_err(), "{bad}");
        }
    }
}
