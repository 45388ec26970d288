//! Unsigned LEB128 varints, for the compact layouts of footer tables and
//! content-list pieces (docs/format.md). The reader takes only the
//! shortest form of a value (no trailing zero groups) and at most ten
//! bytes, so each value has one encoding and bytes that decode encode back
//! the same; past the end of its input it fails instead of panicking.

/// Appends `value` (1 to 10 bytes).
pub fn put(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push(value as u8 | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// Reads the varint at `bytes[*at..]` and moves `at` past it. The error
/// says what is wrong; the caller names the thing that holds it.
pub fn take(bytes: &[u8], at: &mut usize) -> Result<u64, &'static str> {
    let mut value = 0u64;
    for i in 0..10 {
        let byte = *bytes.get(*at + i).ok_or("truncated in a length")?;
        if i == 9 && byte > 1 {
            return Err("a length past 2^64");
        }
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            if byte == 0 && i > 0 {
                return Err("a length not in its shortest form");
            }
            *at += i + 1;
            return Ok(value);
        }
    }
    Err("a length of more than ten bytes")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip_in_their_shortest_form_only() {
        for value in [0, 1, 127, 128, 8192, 70_000, u64::from(u32::MAX), 1 << 63, u64::MAX] {
            let mut bytes = Vec::new();
            put(&mut bytes, value);
            let mut at = 0;
            assert_eq!(take(&bytes, &mut at), Ok(value));
            assert_eq!(at, bytes.len());
            let mut at = 0;
            assert!(take(&bytes[..bytes.len() - 1], &mut at).is_err(), "{value} cut short");
        }
        let refused = |bytes: &[u8]| take(bytes, &mut 0).unwrap_err();
        assert_eq!(refused(&[0x80, 0x00]), "a length not in its shortest form");
        assert_eq!(refused(&[0xff; 9].iter().copied().chain([2]).collect::<Vec<_>>()), "a length past 2^64");
        assert_eq!(refused(&[0x80; 11]), "a length past 2^64");
        assert_eq!(refused(&[]), "truncated in a length");
    }
}
