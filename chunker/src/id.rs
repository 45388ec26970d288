//! [`BlobId`]: the content address of every blob in cairn.

use std::fmt;
use std::str::FromStr;

/// A blob's content address: BLAKE3-256 of its plaintext (uncompressed)
/// bytes, in keyed mode with a key per blob kind ([`BlobId::keyed`]; the
/// store derives the keys), or plain ([`BlobId::of`]) in stores of format 1
/// and 2.
///
/// `Display` prints the full 64-digit hex form; `{:#}` (alternate) prints the
/// short 12-digit prefix used in tables and messages.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct BlobId(pub [u8; 32]);

/// Hashes the first 8 bytes only: an id is already a uniform hash, so 64
/// of its bits key a hash map as well as 256, and the map's hasher (keyed
/// SipHash) then reads one word instead of five. Sessions and commits keep
/// a map entry per blob written, which made this a visible cost of `put`.
impl std::hash::Hash for BlobId {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        state.write_u64(u64::from_le_bytes(self.0[..8].try_into().expect("8 bytes")));
    }
}

impl BlobId {
    /// Length of an id in bytes.
    pub const LEN: usize = 32;

    /// Plain BLAKE3 of `bytes`: the id in stores of format 1 and 2, and a
    /// stand-in id in tests.
    pub fn of(bytes: &[u8]) -> BlobId {
        BlobId(*blake3::hash(bytes).as_bytes())
    }

    /// BLAKE3 of `bytes` in keyed mode: the same speed as plain BLAKE3, and
    /// the same bytes under two keys get unrelated ids.
    pub fn keyed(key: &[u8; 32], bytes: &[u8]) -> BlobId {
        BlobId(*blake3::keyed_hash(key, bytes).as_bytes())
    }

    /// [`BlobId::keyed`] using BLAKE3's own multithreading (worth it above
    /// ~128 KiB).
    pub fn keyed_large(key: &[u8; 32], bytes: &[u8]) -> BlobId {
        let mut hasher = blake3::Hasher::new_keyed(key);
        hasher.update_rayon(bytes);
        BlobId(*hasher.finalize().as_bytes())
    }

    /// The id's bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Reads an id from the first 32 bytes of `bytes`, if there are that many.
    pub fn from_slice(bytes: &[u8]) -> Option<BlobId> {
        bytes.get(..32)?.try_into().ok().map(BlobId)
    }

    /// The low 32 bits of the id, used where a uniformly distributed number
    /// derived from content is needed (content-list split points).
    pub fn low_u32(&self) -> u32 {
        u32::from_le_bytes([self.0[28], self.0[29], self.0[30], self.0[31]])
    }

    /// Full lowercase hex.
    pub fn to_hex(&self) -> String {
        let mut out = String::with_capacity(64);
        for byte in self.0 {
            out.push_str(&format!("{byte:02x}"));
        }
        out
    }
}

impl fmt::Display for BlobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hex = self.to_hex();
        if f.alternate() { f.write_str(&hex[..12]) } else { f.write_str(&hex) }
    }
}

impl fmt::Debug for BlobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BlobId({:#})", self)
    }
}

/// A string that is not 64 hex digits.
#[derive(Debug, thiserror::Error)]
#[error("'{0}' is not a blob id: expected 64 hex digits")]
pub struct ParseBlobIdError(String);

impl FromStr for BlobId {
    type Err = ParseBlobIdError;

    fn from_str(text: &str) -> Result<BlobId, ParseBlobIdError> {
        let error = || ParseBlobIdError(text.to_string());
        if text.len() != 64 || !text.is_ascii() {
            return Err(error());
        }
        let mut bytes = [0u8; 32];
        for (i, byte) in bytes.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).map_err(|_| error())?;
        }
        Ok(BlobId(bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trips_and_matches_blake3() {
        let id = BlobId::of(b"cairn");
        assert_eq!(id.to_hex(), blake3::hash(b"cairn").to_hex().as_str());
        assert_eq!(id.to_hex().parse::<BlobId>().unwrap(), id);
        assert_eq!(format!("{id:#}").len(), 12);
        assert!("xyz".parse::<BlobId>().is_err());
    }

    #[test]
    fn large_keyed_hash_equals_keyed_hash() {
        let data: Vec<u8> = (0..1_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let key = [7u8; 32];
        assert_eq!(BlobId::keyed(&key, &data), BlobId::keyed_large(&key, &data));
        assert_ne!(BlobId::keyed(&key, &data), BlobId::of(&data));
        assert_ne!(BlobId::keyed(&key, &data), BlobId::keyed(&[8u8; 32], &data));
    }
}
