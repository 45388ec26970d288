//! Turning a blob's plaintext into what a container stores: its id, and the
//! bytes compressed with lz4 when that makes them smaller.

use crate::container::format::FLAG_LZ4;
use crate::ids::{BlobId, BlobKind};

/// A blob ready to be appended to a container.
#[derive(Clone, Debug)]
pub struct EncodedBlob {
    /// BLAKE3 of the plaintext.
    pub id: BlobId,
    /// What the blob holds.
    pub kind: BlobKind,
    /// Record flags ([`FLAG_LZ4`] when `bytes` is compressed).
    pub flags: u8,
    /// Length of the plaintext.
    pub raw_len: u32,
    /// The bytes to store.
    pub bytes: Vec<u8>,
}

/// Compresses `raw` with lz4 (block format, no size prefix) and keeps the
/// compressed form only when it is smaller; `id` must be `BlobId::of(raw)`.
pub fn encode_blob(id: BlobId, kind: BlobKind, raw: Vec<u8>) -> EncodedBlob {
    let raw_len = u32::try_from(raw.len()).expect("blobs are far smaller than 4 GiB");
    let compressed = lz4_flex::block::compress(&raw);
    if compressed.len() < raw.len() {
        EncodedBlob { id, kind, flags: FLAG_LZ4, raw_len, bytes: compressed }
    } else {
        EncodedBlob { id, kind, flags: 0, raw_len, bytes: raw }
    }
}

/// Recovers the plaintext of a stored record, or says why it cannot.
pub fn decode_blob(flags: u8, raw_len: u32, stored: &[u8]) -> Result<Vec<u8>, String> {
    if flags & FLAG_LZ4 != 0 {
        lz4_flex::block::decompress(stored, raw_len as usize).map_err(|e| format!("lz4: {e}"))
    } else if stored.len() == raw_len as usize {
        Ok(stored.to_vec())
    } else {
        Err(format!("stored length {} differs from raw length {raw_len}", stored.len()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compressible_blobs_shrink_and_random_ones_stay_raw() {
        let text = b"cairn ".repeat(2000);
        let blob = encode_blob(BlobId::of(&text), BlobKind::Data, text.clone());
        assert_eq!(blob.flags, FLAG_LZ4);
        assert!(blob.bytes.len() < text.len() / 10);
        assert_eq!(decode_blob(blob.flags, blob.raw_len, &blob.bytes).unwrap(), text);

        let noise: Vec<u8> = (0..4096u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
        let blob = encode_blob(BlobId::of(&noise), BlobKind::Data, noise.clone());
        if blob.flags == 0 {
            assert_eq!(blob.bytes, noise);
        }
        assert_eq!(decode_blob(blob.flags, blob.raw_len, &blob.bytes).unwrap(), noise);
    }
}
