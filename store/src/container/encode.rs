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

/// zstd's tables for the default level on inputs past 256 KiB (a 512 KiB
/// frame): windowLog, chainLog, hashLog, minMatch. zstd's own for that
/// size (windowLog 21, chainLog 16, hashLog 17, minMatch 5) compress a
/// 512 KiB frame of `/usr/lib`'s files 2% better than level 3 does 256
/// KiB, at the same speed; these compress it as well as level 3 does 256
/// KiB (2.474 against 2.471), a quarter faster (313-318 against 249-252
/// MB/s a core, `zstd -b3 -B512KiB --zstd=wlog=19,clog=13,hlog=15,mml=4`
/// on a 603 MB sample; ARCHITECTURE.md, "Frames of 512 KiB"). Smaller
/// inputs, and other levels, keep zstd's own tables.
const WIDE_FRAME_TABLES: [u32; 4] = [19, 13, 15, 4];

fn zstd_compress(raw: &[u8], level: i32) -> Option<Vec<u8>> {
    use zstd::zstd_safe::CParameter;
    ZSTD_COMPRESSOR.with(|cell| {
        let mut cell = cell.borrow_mut();
        if cell.as_ref().is_none_or(|(l, _)| *l != level) {
            *cell = Some((level, zstd::bulk::Compressor::new(level).ok()?));
        }
        let (_, compressor) = cell.as_mut()?;
        // 0 is "zstd's own" for each; set on every call, as the context
        // keeps what the last call set.
        let [window, chain, hash, min_match] =
            if level == DEFAULT_ZSTD_LEVEL && raw.len() > super::FRAME_TARGET { WIDE_FRAME_TABLES } else { [0; 4] };
        for parameter in [
            CParameter::WindowLog(window),
            CParameter::ChainLog(chain),
            CParameter::HashLog(hash),
            CParameter::MinMatch(min_match),
        ] {
            compressor.set_parameter(parameter).ok()?;
        }
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
///
/// `raw` must be at most [`BlobKind::max_len`] long (`WriteSession` refuses
/// longer metadata; chunks are shorter by construction).
pub fn encode_blob(id: BlobId, kind: BlobKind, raw: &[u8], codec: Codec) -> EncodedBlob {
    debug_assert!(raw.len() <= kind.max_len(), "a {kind} blob of {} bytes", raw.len());
    let raw_len = u32::try_from(raw.len()).expect("blobs are at most 256 MiB (BlobKind::max_len)");
    let (flags, bytes) = compress(raw, codec);
    EncodedBlob { id, kind, flags, raw_len, bytes }
}

/// `raw` compressed with `codec` and the flag that says how, or `raw`
/// itself and flag 0 when compressing does not make it smaller.
pub(crate) fn compress(raw: &[u8], codec: Codec) -> (u8, Vec<u8>) {
    let compressed = match codec {
        Codec::None => None,
        Codec::Lz4 => Some((FLAG_LZ4, lz4_flex::block::compress(raw))),
        // Bytes zstd cannot shrink fail to fit the buffer: stored raw.
        Codec::Zstd(level) => zstd_compress(raw, level).map(|bytes| (FLAG_ZSTD, bytes)),
    };
    match compressed {
        Some((flags, bytes)) if bytes.len() < raw.len() => (flags, bytes),
        _ => (0, raw.to_vec()),
    }
}

/// Checks a record's lengths against what its kind can hold, before anyone
/// allocates for them: the plaintext at most [`BlobKind::max_len`], and the
/// stored bytes no longer than the plaintext (a writer stores a blob raw
/// when compressing does not make it smaller).
pub fn check_lengths(kind: BlobKind, raw_len: u32, stored_len: u32) -> Result<(), String> {
    if raw_len as usize > kind.max_len() {
        return Err(format!("the record says {raw_len} bytes, more than a {kind} blob can hold ({})", kind.max_len()));
    }
    if stored_len > raw_len {
        return Err(format!("{stored_len} stored bytes for {raw_len} bytes of plaintext"));
    }
    Ok(())
}

/// Recovers the plaintext of a stored record of `kind`, or says why it
/// cannot. Allocates at most the kind's limit, whatever `raw_len` says.
pub fn decode_blob(kind: BlobKind, flags: u8, raw_len: u32, stored: &[u8]) -> Result<Vec<u8>, String> {
    let stored_len = u32::try_from(stored.len()).map_err(|_| format!("{} stored bytes", stored.len()))?;
    check_lengths(kind, raw_len, stored_len)?;
    decompress(flags, raw_len, stored)
}

/// The inverse of [`compress`]: `stored` decoded per `flags` to exactly
/// `raw_len` bytes, which the caller has bounded.
pub(crate) fn decompress(flags: u8, raw_len: u32, stored: &[u8]) -> Result<Vec<u8>, String> {
    let stored_len = stored.len() as u64;
    // An lz4 block expands at most 255 times (a match of 255 more bytes
    // costs one more byte), so a longer claim is false and is refused
    // before the output is allocated.
    if flags == FLAG_LZ4 && u64::from(raw_len) > 255 * stored_len + 64 {
        return Err(format!("{stored_len} bytes of lz4 cannot decode to the {raw_len} bytes the record says"));
    }
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
            assert_eq!(decode_blob(BlobKind::Data, blob.flags, blob.raw_len, &blob.bytes).unwrap(), text);

            let noise = noise();
            let blob = encode_blob(BlobId::of(&noise), BlobKind::Data, &noise, codec);
            if blob.flags == 0 {
                assert_eq!(blob.bytes, noise);
            }
            assert_eq!(decode_blob(BlobKind::Data, blob.flags, blob.raw_len, &blob.bytes).unwrap(), noise);
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
            assert!(
                decode_blob(BlobKind::Data, blob.flags, blob.raw_len + 1, &blob.bytes).is_err(),
                "{codec}: wrong length"
            );
            assert!(
                decode_blob(BlobKind::Data, blob.flags, blob.raw_len, &blob.bytes[..blob.bytes.len() / 2]).is_err(),
                "{codec}"
            );
        }
        assert!(decode_blob(BlobKind::Data, 0, 5, b"abcd").is_err());
        assert!(decode_blob(BlobKind::Data, 7, 4, b"abcd").unwrap_err().contains("unknown record flags"));
        // The frame bits mean nothing on a record that is not a frame.
        for flags in
            [crate::container::FLAG_WIDE, crate::container::FLAG_WIDE | FLAG_ZSTD, crate::container::FLAG_FRAME]
        {
            let error = decode_blob(BlobKind::Data, flags, 4, b"abcd").unwrap_err();
            assert!(error.contains("unknown record flags"), "{flags:#04x}: {error}");
        }
    }

    /// Regression (issue 15): `raw_len` is a u32 from disk, and decoding
    /// allocated whatever it said (4 GiB for a crafted record).
    #[test]
    fn lengths_no_blob_of_the_kind_can_have_are_refused_before_decoding() {
        let text = text();
        let zstd = encode_blob(BlobId::of(&text), BlobKind::Data, &text, Codec::Zstd(DEFAULT_ZSTD_LEVEL));
        let too_long = cairn_chunker::MAX_CHUNK_SIZE as u32 + 1;
        let error = decode_blob(BlobKind::Data, FLAG_ZSTD, too_long, &zstd.bytes).unwrap_err();
        assert!(error.contains("more than a data blob can hold"), "{error}");
        let error = decode_blob(BlobKind::Tree, FLAG_ZSTD, u32::MAX, &zstd.bytes).unwrap_err();
        assert!(error.contains("more than a tree blob can hold"), "{error}");
        let piece = crate::content::MAX_PIECE_LEN as u32 + 1;
        let error = decode_blob(BlobKind::ContentList, 0, piece, &vec![0; piece as usize]).unwrap_err();
        assert!(error.contains("more than a content-list blob can hold"), "{error}");
        // Stored bytes longer than the plaintext: no writer stores that.
        let error = decode_blob(BlobKind::Data, 0, 3, b"abcd").unwrap_err();
        assert!(error.contains("4 stored bytes for 3"), "{error}");
        // 16 bytes of lz4 cannot make a MiB.
        let error = decode_blob(BlobKind::Data, FLAG_LZ4, 1 << 20, &[0u8; 16]).unwrap_err();
        assert!(error.contains("cannot decode to"), "{error}");
        // The largest real ones still decode.
        let zeros = vec![0u8; cairn_chunker::MAX_CHUNK_SIZE];
        for codec in [Codec::Lz4, Codec::Zstd(1)] {
            let blob = encode_blob(BlobId::of(&zeros), BlobKind::Data, &zeros, codec);
            assert_eq!(decode_blob(BlobKind::Data, blob.flags, blob.raw_len, &blob.bytes).unwrap(), zeros, "{codec}");
        }
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
