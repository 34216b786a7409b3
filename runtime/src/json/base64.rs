//! Base64 for `bytes` fields: written in the standard alphabet with padding (RFC 4648 §4);
//! read in the standard or the URL-safe alphabet (§5), padded or not.

const STANDARD: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Value of each input byte, or `INVALID`. Both `+`/`/` and `-`/`_` are accepted.
const INVALID: u8 = 0xff;
static DECODE: [u8; 256] = {
    let mut table = [INVALID; 256];
    let mut i = 0;
    while i < 64 {
        table[STANDARD[i] as usize] = i as u8;
        i += 1;
    }
    table[b'-' as usize] = 62;
    table[b'_' as usize] = 63;
    table
};

pub(crate) fn encode_into(input: &[u8], out: &mut Vec<u8>) {
    out.reserve(input.len().div_ceil(3) * 4);
    let mut chunks = input.chunks_exact(3);
    for c in &mut chunks {
        let n = (u32::from(c[0]) << 16) | (u32::from(c[1]) << 8) | u32::from(c[2]);
        out.extend_from_slice(&[
            STANDARD[(n >> 18) as usize & 63],
            STANDARD[(n >> 12) as usize & 63],
            STANDARD[(n >> 6) as usize & 63],
            STANDARD[n as usize & 63],
        ]);
    }
    match *chunks.remainder() {
        [a] => {
            let n = u32::from(a) << 16;
            out.extend_from_slice(&[
                STANDARD[(n >> 18) as usize & 63],
                STANDARD[(n >> 12) as usize & 63],
                b'=',
                b'=',
            ]);
        }
        [a, b] => {
            let n = (u32::from(a) << 16) | (u32::from(b) << 8);
            out.extend_from_slice(&[
                STANDARD[(n >> 18) as usize & 63],
                STANDARD[(n >> 12) as usize & 63],
                STANDARD[(n >> 6) as usize & 63],
                b'=',
            ]);
        }
        _ => {}
    }
}

/// Decode base64; the error says what is wrong, for the caller to place.
pub(crate) fn decode(input: &[u8]) -> Result<Vec<u8>, &'static str> {
    let body = match input {
        [rest @ .., b'=', b'='] => rest,
        [rest @ .., b'='] => rest,
        _ => input,
    };
    let padded = body.len() != input.len();
    if padded && input.len() % 4 != 0 {
        return Err("invalid base64: wrong padding");
    }
    if body.len() % 4 == 1 {
        return Err("invalid base64: wrong length");
    }
    let mut out = Vec::with_capacity(body.len() / 4 * 3 + 2);
    let mut chunks = body.chunks_exact(4);
    let acc = |bytes: &[u8]| -> Result<u32, &'static str> {
        let mut n = 0u32;
        for &b in bytes {
            let v = DECODE[b as usize];
            if v == INVALID {
                return Err(if b == b'=' {
                    "invalid base64: padding inside the data"
                } else {
                    "invalid base64: character outside the alphabet"
                });
            }
            n = (n << 6) | u32::from(v);
        }
        Ok(n)
    };
    for c in &mut chunks {
        let n = acc(c)?;
        out.extend_from_slice(&[(n >> 16) as u8, (n >> 8) as u8, n as u8]);
    }
    match chunks.remainder() {
        [] => {}
        r @ [_, _] => {
            let n = acc(r)? << 12;
            out.push((n >> 16) as u8);
        }
        r @ [_, _, _] => {
            let n = acc(r)? << 6;
            out.extend_from_slice(&[(n >> 16) as u8, (n >> 8) as u8]);
        }
        _ => unreachable!("length checked above"),
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(b: &[u8]) -> String {
        let mut out = Vec::new();
        encode_into(b, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn rfc4648_vectors() {
        for (plain, coded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(enc(plain.as_bytes()), coded);
            assert_eq!(decode(coded.as_bytes()).unwrap(), plain.as_bytes());
            assert_eq!(
                decode(coded.trim_end_matches('=').as_bytes()).unwrap(),
                plain.as_bytes()
            );
        }
    }

    #[test]
    fn url_safe_alphabet_is_accepted() {
        assert_eq!(decode(b"-_8=").unwrap(), decode(b"+/8=").unwrap());
        assert_eq!(enc(&[0xfb, 0xff]), "+/8=");
    }

    #[test]
    fn malformed_base64_is_rejected() {
        assert!(decode(b"Zm9v!").is_err());
        assert!(decode(b"Z").is_err());
        assert!(decode(b"Zg=").is_err());
        assert!(decode(b"Z=g=").is_err());
    }
}
