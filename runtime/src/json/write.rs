//! The output half of the codec: a compact JSON writer into a byte buffer.
//!
//! Output is canonical: no insignificant white space, fields in field-number order, strings
//! escaped exactly as ECMAScript's `JSON.stringify` does (`"`, `\`, `\b \f \n \r \t` by their
//! short escapes, other control characters as lowercase `\u00xx`, everything else raw UTF-8).

use super::options::{FieldNames, JsonOptions};

/// Escape class of each byte: 0 = copy, otherwise the character after the backslash
/// (`u` for `\u00xx`).
static ESCAPE: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut b = 0;
    while b < 0x20 {
        table[b] = b'u';
        b += 1;
    }
    table[0x08] = b'b';
    table[0x09] = b't';
    table[0x0a] = b'n';
    table[0x0c] = b'f';
    table[0x0d] = b'r';
    table[b'"' as usize] = b'"';
    table[b'\\' as usize] = b'\\';
    table
};

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Writes protobuf JSON. Generated code drives it; it is not meant to be used by hand.
#[derive(Debug, Default)]
pub struct Writer {
    buf: Vec<u8>,
    options: JsonOptions,
}

impl Writer {
    /// A writer with room for `capacity` bytes, writing with `options`.
    pub fn with_capacity(capacity: usize, options: JsonOptions) -> Self {
        Writer {
            buf: Vec::with_capacity(capacity),
            options,
        }
    }

    /// A writer that appends to `buf`, writing with `options`.
    pub fn from_vec(buf: Vec<u8>, options: JsonOptions) -> Self {
        Writer { buf, options }
    }

    /// The options this writer writes with.
    #[inline]
    pub fn options(&self) -> &JsonOptions {
        &self.options
    }

    /// The bytes written so far.
    pub fn into_inner(self) -> Vec<u8> {
        self.buf
    }

    /// Bytes written so far.
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf
    }

    /// Append bytes that are already valid JSON.
    #[inline]
    pub fn raw(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Append one byte of JSON punctuation.
    #[inline]
    pub fn byte(&mut self, b: u8) {
        self.buf.push(b);
    }

    /// Append an object key: `key` is the pre-rendered `"name":`; a comma goes first unless
    /// this is the first member of its object.
    #[inline]
    pub fn key(&mut self, first: &mut bool, key: &[u8]) {
        if !*first {
            self.buf.push(b',');
        }
        *first = false;
        self.buf.extend_from_slice(key);
    }

    /// Append a field's key: the pre-rendered `"proto_name":` or `"jsonName":`, as the options
    /// choose; an empty `json_key` means the two names are the same. Generated code passes
    /// constants: the proto name is then written inline (a few immediate stores), a field whose
    /// names agree has no choice to make at all, and the JSON name is written out of line, so
    /// that the two constants are not merged into one key of variable length (a `memcpy` call
    /// for every key, whatever the options).
    #[inline]
    pub fn field_key(&mut self, first: &mut bool, proto_key: &[u8], json_key: &[u8]) {
        if json_key.is_empty() || self.options.field_names() == FieldNames::Proto {
            self.key(first, proto_key);
        } else {
            self.json_key(first, json_key);
        }
    }

    #[inline(never)]
    fn json_key(&mut self, first: &mut bool, key: &[u8]) {
        self.key(first, key);
    }

    /// Append a JSON string, escaped.
    pub fn string(&mut self, s: &str) {
        let bytes = s.as_bytes();
        self.buf.reserve(bytes.len() + 2);
        self.buf.push(b'"');
        let mut start = 0;
        let mut i = 0;
        while i < bytes.len() {
            // Skip plain runs eight bytes at a time.
            if let Some(word) = super::swar::word_at(bytes, i) {
                if !super::swar::has_special(word) {
                    i += 8;
                    continue;
                }
            }
            let b = bytes[i];
            i += 1;
            let esc = ESCAPE[b as usize];
            if esc == 0 {
                continue;
            }
            let i = i - 1;
            self.buf.extend_from_slice(&bytes[start..i]);
            start = i + 1;
            if esc == b'u' {
                self.buf.extend_from_slice(b"\\u00");
                self.buf.push(HEX[(b >> 4) as usize]);
                self.buf.push(HEX[(b & 0xf) as usize]);
            } else {
                self.buf.push(b'\\');
                self.buf.push(esc);
            }
        }
        self.buf.extend_from_slice(&bytes[start..]);
        self.buf.push(b'"');
    }

    /// Append an unsigned integer as a JSON number.
    #[inline]
    pub fn u64(&mut self, mut v: u64) {
        let mut digits = [0u8; 20];
        let mut i = digits.len();
        loop {
            i -= 1;
            digits[i] = b'0' + (v % 10) as u8;
            v /= 10;
            if v == 0 {
                break;
            }
        }
        self.buf.extend_from_slice(&digits[i..]);
    }

    /// Append a signed integer as a JSON number.
    #[inline]
    pub fn i64(&mut self, v: i64) {
        if v < 0 {
            self.buf.push(b'-');
        }
        self.u64(v.unsigned_abs());
    }

    /// Append a boolean.
    #[inline]
    pub fn bool(&mut self, v: bool) {
        self.buf
            .extend_from_slice(if v { b"true" } else { b"false" });
    }

    /// Append a double: `"NaN"`, `"Infinity"`, `"-Infinity"` as strings, finite values as the
    /// shortest decimal that reads back to the same double, laid out as ECMAScript does, except
    /// negative zero, written `-0.0`: readers that parse `-0` as an integer (Python's `json`)
    /// would lose its sign.
    pub fn f64(&mut self, v: f64) {
        if v == 0.0 && v.is_sign_negative() {
            self.buf.extend_from_slice(b"-0.0");
        } else if !self.non_finite(v.is_nan(), v.is_infinite(), v.is_sign_negative()) {
            self.shortest(format_args!("{v:e}"));
        }
    }

    /// Append a float, like [`Writer::f64`] but with the shortest digits that read back to the
    /// same `f32`.
    ///
    /// Near the ends of the range the shortest digits (`3.4028235e+38` for `f32::MAX`) denote a
    /// number just past the largest float, which readers that range-check the double before
    /// rounding (Python's and C++'s protobuf) reject; there the float's exact value is written
    /// instead (`3.4028234663852886e+38`).
    pub fn f32(&mut self, v: f32) {
        if v == 0.0 && v.is_sign_negative() {
            self.buf.extend_from_slice(b"-0.0");
        } else if !self.non_finite(v.is_nan(), v.is_infinite(), v.is_sign_negative()) {
            if v.abs() > 3.402_823e38 {
                self.shortest(format_args!("{:e}", f64::from(v)));
            } else {
                self.shortest(format_args!("{v:e}"));
            }
        }
    }

    fn non_finite(&mut self, nan: bool, infinite: bool, negative: bool) -> bool {
        let text: &[u8] = if nan {
            b"\"NaN\""
        } else if infinite && negative {
            b"\"-Infinity\""
        } else if infinite {
            b"\"Infinity\""
        } else {
            return false;
        };
        self.buf.extend_from_slice(text);
        true
    }

    /// Lay out Rust's shortest round-trip digits (`{:e}`, e.g. `-1.2345e3`) as ECMAScript's
    /// `Number.prototype.toString` would: plain decimals for exponents in `-7..21`, otherwise
    /// `d.ddde+X`.
    fn shortest(&mut self, sci: std::fmt::Arguments<'_>) {
        use std::io::Write as _;
        let mut tmp = [0u8; 40];
        let len = {
            let mut cursor = std::io::Cursor::new(&mut tmp[..]);
            cursor
                .write_fmt(sci)
                .expect("a float's digits fit in 40 bytes");
            cursor.position() as usize
        };
        let text = &tmp[..len];
        let (negative, text) = match text.split_first() {
            Some((b'-', rest)) => (true, rest),
            _ => (false, text),
        };
        let e_at = text
            .iter()
            .position(|&b| b == b'e')
            .expect("`{:e}` always prints an exponent");
        let exponent: i32 = std::str::from_utf8(&text[e_at + 1..])
            .ok()
            .and_then(|s| s.parse().ok())
            .expect("`{:e}` prints a decimal exponent");
        let mut digits = [0u8; 40];
        let mut k = 0;
        for &b in &text[..e_at] {
            if b != b'.' {
                digits[k] = b;
                k += 1;
            }
        }
        let digits = &digits[..k];
        if negative {
            self.buf.push(b'-');
        }
        // n: position of the decimal point relative to the first digit.
        let n = exponent + 1;
        let k = k as i32;
        if k <= n && n <= 21 {
            self.buf.extend_from_slice(digits);
            self.buf.extend(std::iter::repeat_n(b'0', (n - k) as usize));
        } else if 0 < n && n <= 21 {
            self.buf.extend_from_slice(&digits[..n as usize]);
            self.buf.push(b'.');
            self.buf.extend_from_slice(&digits[n as usize..]);
        } else if -6 < n && n <= 0 {
            self.buf.extend_from_slice(b"0.");
            self.buf.extend(std::iter::repeat_n(b'0', (-n) as usize));
            self.buf.extend_from_slice(digits);
        } else {
            self.buf.push(digits[0]);
            if digits.len() > 1 {
                self.buf.push(b'.');
                self.buf.extend_from_slice(&digits[1..]);
            }
            self.buf.push(b'e');
            self.buf.push(if n - 1 < 0 { b'-' } else { b'+' });
            self.u64((n - 1).unsigned_abs() as u64);
        }
    }

    /// Append bytes as a standard, padded base64 string.
    pub fn base64(&mut self, bytes: &[u8]) {
        self.buf.push(b'"');
        super::base64::encode_into(bytes, &mut self.buf);
        self.buf.push(b'"');
    }
}

#[cfg(test)]
mod tests {
    use super::Writer;

    fn f64_text(v: f64) -> String {
        let mut w = Writer::default();
        w.f64(v);
        String::from_utf8(w.into_inner()).unwrap()
    }

    #[test]
    fn doubles_follow_ecmascript_layout() {
        assert_eq!(f64_text(1.0), "1");
        assert_eq!(f64_text(-1.5), "-1.5");
        assert_eq!(f64_text(0.1), "0.1");
        assert_eq!(f64_text(123456.789), "123456.789");
        assert_eq!(f64_text(1e21), "1e+21");
        assert_eq!(f64_text(1e20), "100000000000000000000");
        assert_eq!(f64_text(1e-7), "1e-7");
        assert_eq!(f64_text(1.5e-6), "0.0000015");
        assert_eq!(f64_text(f64::MAX), "1.7976931348623157e+308");
        assert_eq!(f64_text(f64::MIN_POSITIVE), "2.2250738585072014e-308");
        assert_eq!(f64_text(5e-324), "5e-324");
        assert_eq!(f64_text(-0.0), "-0.0");
        assert_eq!(f64_text(0.0), "0");
        assert_eq!(f64_text(f64::NAN), "\"NaN\"");
        assert_eq!(f64_text(f64::NEG_INFINITY), "\"-Infinity\"");
    }

    #[test]
    fn floats_use_shortest_f32_digits() {
        let mut w = Writer::default();
        w.f32(0.1);
        assert_eq!(w.as_bytes(), b"0.1");
        let mut w = Writer::default();
        w.f32(f32::MAX);
        assert_eq!(w.as_bytes(), b"3.4028234663852886e+38");
        assert_eq!("3.4028234663852886e+38".parse::<f32>().unwrap(), f32::MAX);
    }

    #[test]
    fn strings_escape_like_json_stringify() {
        let mut w = Writer::default();
        w.string("a\"b\\c\n\u{1}\u{7f}\u{2028}é😀");
        assert_eq!(
            std::str::from_utf8(w.as_bytes()).unwrap(),
            "\"a\\\"b\\\\c\\n\\u0001\u{7f}\u{2028}é😀\""
        );
    }

    #[test]
    fn integers() {
        let mut w = Writer::default();
        w.i64(i64::MIN);
        w.byte(b' ');
        w.u64(u64::MAX);
        w.byte(b' ');
        w.i64(0);
        assert_eq!(w.as_bytes(), b"-9223372036854775808 18446744073709551615 0");
    }
}
