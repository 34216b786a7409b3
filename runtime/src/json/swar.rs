//! Word-at-a-time byte tests: eight bytes packed little-endian in a `u64`, checked at once for
//! the bytes that end a plain run of a JSON string.

const ONES: u64 = 0x0101_0101_0101_0101;
/// The high bit of every byte: set in a word exactly when some byte is not ASCII.
pub(crate) const HIGH_BITS: u64 = 0x8080_8080_8080_8080;

/// High bit set in bytes that are below `n` (`n` at most 0x80). The lowest flagged byte is
/// always a true one; a borrow can also flag bytes above it.
#[inline(always)]
fn below(w: u64, n: u8) -> u64 {
    w.wrapping_sub(ONES * u64::from(n)) & !w & HIGH_BITS
}

/// High bit set in bytes that are `"`, `\\` or a control character (below 0x20). Zero when
/// there are none; otherwise its lowest set bit marks the first such byte exactly.
#[inline(always)]
pub(crate) fn special_mask(w: u64) -> u64 {
    below(w ^ (ONES * u64::from(b'"')), 1)
        | below(w ^ (ONES * u64::from(b'\\')), 1)
        | below(w, 0x20)
}

/// Whether some byte is `"`, `\\` or a control character.
#[inline(always)]
pub(crate) fn has_special(w: u64) -> bool {
    special_mask(w) != 0
}

/// Index (0..8) of the first `"`, `\\` or control character, if any.
#[inline(always)]
pub(crate) fn first_special(w: u64) -> Option<usize> {
    let mask = special_mask(w);
    (mask != 0).then(|| (mask.trailing_zeros() / 8) as usize)
}

/// Whether any of the first `n` bytes (0..8) is not ASCII.
#[inline(always)]
pub(crate) fn non_ascii_before(w: u64, n: usize) -> bool {
    let low = if n == 0 { 0 } else { u64::MAX >> (64 - 8 * n) };
    w & HIGH_BITS & low != 0
}

/// The next eight bytes of `bytes` from `at`, as a word.
#[inline(always)]
pub(crate) fn word_at(bytes: &[u8], at: usize) -> Option<u64> {
    bytes
        .get(at..at + 8)
        .map(|c| u64::from_le_bytes(c.try_into().expect("eight bytes")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_ascii_prefix() {
        let w = u64::from_le_bytes([b'a', b'b', 0xc3, 0xa9, b'c', b'd', b'e', b'f']);
        assert!(!non_ascii_before(w, 2));
        assert!(non_ascii_before(w, 3));
        assert!(!non_ascii_before(w, 0));
        assert!(non_ascii_before(w, 8));
    }

    #[test]
    fn finds_every_special_byte_in_every_position() {
        for pos in 0..8 {
            for special in [b'"', b'\\', 0x00, 0x1f, b'\n'] {
                let mut bytes = *b"abcdefgh";
                bytes[pos] = special;
                assert!(
                    has_special(u64::from_le_bytes(bytes)),
                    "{special:#x} at {pos}"
                );
            }
            let mut bytes = *b"abcdefgh";
            bytes[pos] = b'"';
            bytes[7] = b'\\';
            assert_eq!(first_special(u64::from_le_bytes(bytes)), Some(pos));
            for plain in [b' ', b'~', 0x7f, 0x80, 0xff, b'!', b'#', b'[', b']'] {
                let mut bytes = *b"abcdefgh";
                bytes[pos] = plain;
                assert!(
                    !has_special(u64::from_le_bytes(bytes)),
                    "{plain:#x} at {pos}"
                );
            }
        }
    }
}
