//! The input half of the codec: a pull parser over a byte slice.
//!
//! Generated code asks for exactly the token it expects next, so no intermediate tree is built.
//! The parser enforces RFC 8259 syntax on everything it reads, skipped values included:
//! strings are UTF-8 checked one at a time (so an error can name the field), unescaped control
//! characters and lone surrogates are rejected, numbers follow the JSON grammar (no `+1`, `01`,
//! `.5`), and nesting is limited to [`MAX_DEPTH`].

use std::borrow::Cow;

use super::error::{DecodeError, DecodeErrorKind};
use super::options::JsonOptions;
use super::{swar, MAX_DEPTH};

/// Reads protobuf JSON. Generated code drives it; it is not meant to be used by hand.
#[derive(Debug)]
pub struct Parser<'a> {
    input: &'a [u8],
    pos: usize,
    depth: usize,
    options: JsonOptions,
    /// The depth of the object whose `@type` key is not an unknown field: the fields of a
    /// message packed in an `Any`. `usize::MAX` when there is none.
    type_key_depth: usize,
}

/// A JSON number's text, or the text of a string that may hold a number.
#[derive(Debug, Clone)]
pub struct NumberText<'a> {
    /// The characters, without quotes, unescaped.
    pub text: Cow<'a, str>,
    /// Whether the value was a JSON string.
    pub quoted: bool,
}

impl<'a> Parser<'a> {
    /// A parser at the start of `input`, with the queue's options.
    pub fn new(input: &'a [u8]) -> Self {
        Parser::with_options(input, JsonOptions::queue())
    }

    /// A parser at the start of `input`, reading with `options`.
    pub fn with_options(input: &'a [u8], options: JsonOptions) -> Self {
        Parser {
            input,
            pos: 0,
            depth: 0,
            options,
            type_key_depth: usize::MAX,
        }
    }

    /// The options this parser reads with.
    #[inline]
    pub fn options(&self) -> &JsonOptions {
        &self.options
    }

    /// Skip the value of a key the message does not declare, or, when the options reject
    /// unknown fields, fail naming it. `@type` in the object of a message packed in an `Any`
    /// is not unknown.
    #[inline]
    pub fn unknown_field(&mut self, key: &str) -> Result<(), DecodeError> {
        let allowed = self.options.ignores_unknown_fields()
            || (key == "@type" && self.depth == self.type_key_depth);
        if !allowed {
            return Err(self.unknown_field_error(key));
        }
        self.skip_value()
    }

    #[cold]
    fn unknown_field_error(&self, key: &str) -> DecodeError {
        const MAX: usize = 64;
        let mut name: String = key.chars().take(MAX).collect();
        if key.chars().nth(MAX).is_some() {
            name.push('…');
        }
        DecodeError::new(DecodeErrorKind::UnknownField(name), self.pos)
    }

    /// Run `read` on the object of a message packed in an `Any`, whose `@type` key is then not
    /// an unknown field.
    pub(crate) fn packed_message<T>(
        &mut self,
        read: impl FnOnce(&mut Self) -> Result<T, DecodeError>,
    ) -> Result<T, DecodeError> {
        let outer = std::mem::replace(&mut self.type_key_depth, self.depth + 1);
        let result = read(self);
        self.type_key_depth = outer;
        result
    }

    /// Current byte offset.
    pub fn offset(&self) -> usize {
        self.pos
    }

    /// Where the parser is, to come back to with [`Parser::rewind`].
    pub fn checkpoint(&self) -> (usize, usize) {
        (self.pos, self.depth)
    }

    /// Go back to a [`Parser::checkpoint`].
    pub fn rewind(&mut self, checkpoint: (usize, usize)) {
        (self.pos, self.depth) = checkpoint;
    }

    /// Require that nothing but white space is left.
    pub fn finish(&mut self) -> Result<(), DecodeError> {
        match self.peek() {
            None => Ok(()),
            Some(_) => Err(self.syntax("unexpected data after the end of the value")),
        }
    }

    #[inline]
    fn peek(&mut self) -> Option<u8> {
        while let Some(&b) = self.input.get(self.pos) {
            match b {
                b' ' | b'\n' | b'\r' | b'\t' => self.pos += 1,
                _ => return Some(b),
            }
        }
        None
    }

    /// The first byte of the next token, without consuming it.
    pub fn peek_token(&mut self) -> Option<u8> {
        self.peek()
    }

    /// What the next token is, in words, for a type error.
    fn found(&mut self) -> &'static str {
        match self.peek() {
            None => "end of input",
            Some(b'{') => "an object",
            Some(b'[') => "an array",
            Some(b'"') => "a string",
            Some(b'-' | b'0'..=b'9') => "a number",
            Some(b't' | b'f') => "a boolean",
            Some(b'n') => "null",
            Some(_) => "an invalid character",
        }
    }

    /// A type error at the next token.
    #[cold]
    pub fn expected(&mut self, expected: &'static str) -> DecodeError {
        let found = self.found();
        if found == "end of input" || found == "an invalid character" {
            return self.syntax(if found == "end of input" {
                "unexpected end of input"
            } else {
                "unexpected character"
            });
        }
        DecodeError::new(DecodeErrorKind::Type { expected, found }, self.pos)
    }

    /// A syntax error at the current offset.
    #[cold]
    pub fn syntax(&self, message: &str) -> DecodeError {
        DecodeError::new(DecodeErrorKind::Syntax(message.to_owned()), self.pos)
    }

    /// A value error that starts at `offset`.
    #[cold]
    pub fn invalid(&self, offset: usize, message: impl Into<String>) -> DecodeError {
        DecodeError::new(DecodeErrorKind::Value(message.into()), offset)
    }

    /// An error of the given kind at the current offset.
    #[cold]
    pub fn error(&self, kind: DecodeErrorKind) -> DecodeError {
        DecodeError::new(kind, self.pos)
    }

    fn literal(&mut self, word: &[u8]) -> bool {
        if self.input[self.pos..].starts_with(word) {
            self.pos += word.len();
            true
        } else {
            false
        }
    }

    /// Consume a `null` if one is next.
    #[inline]
    pub fn null(&mut self) -> bool {
        self.peek() == Some(b'n') && self.literal(b"null")
    }

    /// Whether the next token is a string, without consuming it.
    pub fn at_string(&mut self) -> bool {
        self.peek() == Some(b'"')
    }

    /// Whether the next token opens an object, without consuming it.
    pub fn at_object(&mut self) -> bool {
        self.peek() == Some(b'{')
    }

    /// Consume `true` or `false`.
    pub fn bool(&mut self) -> Result<bool, DecodeError> {
        match self.peek() {
            Some(b't') if self.literal(b"true") => Ok(true),
            Some(b'f') if self.literal(b"false") => Ok(false),
            _ => Err(self.expected("a boolean")),
        }
    }

    fn enter(&mut self) -> Result<(), DecodeError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(self.error(DecodeErrorKind::TooDeep));
        }
        self.pos += 1;
        Ok(())
    }

    /// Consume the `{` that opens an object.
    #[inline]
    pub fn begin_object(&mut self) -> Result<(), DecodeError> {
        if self.peek() != Some(b'{') {
            return Err(self.expected("an object"));
        }
        self.enter()
    }

    /// The next key of the object being read, or `None` after consuming its `}`.
    /// `first` tracks whether a comma is due; start it at `true`.
    #[inline]
    pub fn next_key(&mut self, first: &mut bool) -> Result<Option<Cow<'a, str>>, DecodeError> {
        match self.peek() {
            Some(b'}') => {
                self.pos += 1;
                self.depth -= 1;
                return Ok(None);
            }
            Some(b',') if !*first => {
                self.pos += 1;
                if self.peek() != Some(b'"') {
                    return Err(self.syntax("expected a quoted key after `,`"));
                }
            }
            Some(b'"') if *first => {}
            None => return Err(self.syntax("unexpected end of input inside an object")),
            Some(_) => {
                return Err(self.syntax(if *first {
                    "expected a quoted key or `}`"
                } else {
                    "expected `,` or `}` after an object member"
                }))
            }
        }
        *first = false;
        let key = self.string()?;
        if self.peek() != Some(b':') {
            return Err(self.syntax("expected `:` after an object key"));
        }
        self.pos += 1;
        Ok(Some(key))
    }

    /// Consume the `[` that opens an array.
    #[inline]
    pub fn begin_array(&mut self) -> Result<(), DecodeError> {
        if self.peek() != Some(b'[') {
            return Err(self.expected("an array"));
        }
        self.enter()
    }

    /// Whether another element follows in the array being read; consumes the `]` when not.
    #[inline]
    pub fn next_element(&mut self, first: &mut bool) -> Result<bool, DecodeError> {
        match self.peek() {
            Some(b']') => {
                self.pos += 1;
                self.depth -= 1;
                Ok(false)
            }
            Some(b',') if !*first => {
                self.pos += 1;
                if self.peek() == Some(b']') {
                    return Err(self.syntax("trailing comma in an array"));
                }
                Ok(true)
            }
            None => Err(self.syntax("unexpected end of input inside an array")),
            Some(_) if *first => {
                *first = false;
                Ok(true)
            }
            Some(_) => Err(self.syntax("expected `,` or `]` after an array element")),
        }
    }

    /// Read a string, unescaped. Borrowed from the input when it has no escapes.
    pub fn string(&mut self) -> Result<Cow<'a, str>, DecodeError> {
        if self.peek() != Some(b'"') {
            return Err(self.expected("a string"));
        }
        let input = self.input;
        let start = self.pos + 1;
        let mut i = start;
        let mut ascii = true;
        // Fast path: find the first quote, backslash or control character eight bytes at a
        // time, noting whether any byte before it is non-ASCII (only then is UTF-8 checked).
        loop {
            if let Some(word) = swar::word_at(input, i) {
                match swar::first_special(word) {
                    None => {
                        ascii &= !swar::non_ascii_before(word, 8);
                        i += 8;
                        continue;
                    }
                    Some(n) => {
                        ascii &= !swar::non_ascii_before(word, n);
                        i += n;
                    }
                }
            } else {
                while let Some(&b) = input.get(i) {
                    if b == b'"' || b == b'\\' || b < 0x20 {
                        break;
                    }
                    ascii &= b < 0x80;
                    i += 1;
                }
            }
            match input.get(i) {
                Some(b'"') => {
                    self.pos = i + 1;
                    let bytes = &input[start..i];
                    if ascii {
                        // SAFETY: every byte of `bytes` was checked above to be below 0x80
                        // (by word through `non_ascii_before`, by byte through `b < 0x80`),
                        // and ASCII is valid UTF-8.
                        return Ok(Cow::Borrowed(unsafe {
                            std::str::from_utf8_unchecked(bytes)
                        }));
                    }
                    return match std::str::from_utf8(bytes) {
                        Ok(s) => Ok(Cow::Borrowed(s)),
                        Err(e) => Err(DecodeError::new(
                            DecodeErrorKind::InvalidUtf8,
                            start + e.valid_up_to(),
                        )),
                    };
                }
                Some(&b) if b < 0x20 => {
                    self.pos = i;
                    return Err(self.syntax("control character inside a string must be escaped"));
                }
                // A backslash, or the end of input: the slow path handles both.
                _ => break,
            }
        }
        self.string_slow(start, i).map(Cow::Owned)
    }

    #[inline(never)]
    fn string_slow(&mut self, start: usize, mut i: usize) -> Result<String, DecodeError> {
        let input = self.input;
        let mut out = Vec::with_capacity(i - start + 16);
        out.extend_from_slice(&input[start..i]);
        loop {
            let Some(&b) = input.get(i) else {
                self.pos = i;
                return Err(self.syntax("unterminated string"));
            };
            match b {
                b'"' => break,
                b'\\' => {
                    self.pos = i;
                    let Some(&e) = input.get(i + 1) else {
                        return Err(self.syntax("unterminated string"));
                    };
                    i += 2;
                    let c = match e {
                        b'"' => b'"',
                        b'\\' => b'\\',
                        b'/' => b'/',
                        b'b' => 0x08,
                        b'f' => 0x0c,
                        b'n' => b'\n',
                        b'r' => b'\r',
                        b't' => b'\t',
                        b'u' => {
                            let ch = self.unicode_escape(&mut i)?;
                            let mut buf = [0u8; 4];
                            out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
                            continue;
                        }
                        _ => return Err(self.syntax("invalid escape sequence in a string")),
                    };
                    out.push(c);
                }
                0..=0x1f => {
                    self.pos = i;
                    return Err(self.syntax("control character inside a string must be escaped"));
                }
                _ => {
                    out.push(b);
                    i += 1;
                }
            }
        }
        self.pos = i + 1;
        String::from_utf8(out).map_err(|e| {
            DecodeError::new(
                DecodeErrorKind::InvalidUtf8,
                start + e.utf8_error().valid_up_to(),
            )
        })
    }

    /// Decode the `XXXX` of `\uXXXX` at `*i` (and a low surrogate's escape after a high one).
    fn unicode_escape(&mut self, i: &mut usize) -> Result<char, DecodeError> {
        let hi = self.hex4(*i)?;
        *i += 4;
        let code = match hi {
            0xd800..=0xdbff => {
                if self.input.get(*i..*i + 2) != Some(b"\\u") {
                    return Err(self.syntax("lone surrogate in a \\u escape"));
                }
                let lo = self.hex4(*i + 2)?;
                if !(0xdc00..=0xdfff).contains(&lo) {
                    return Err(self.syntax("lone surrogate in a \\u escape"));
                }
                *i += 6;
                0x10000 + ((hi - 0xd800) << 10) + (lo - 0xdc00)
            }
            0xdc00..=0xdfff => return Err(self.syntax("lone surrogate in a \\u escape")),
            _ => hi,
        };
        char::from_u32(code).ok_or_else(|| self.syntax("invalid \\u escape"))
    }

    fn hex4(&self, at: usize) -> Result<u32, DecodeError> {
        let digits = self
            .input
            .get(at..at + 4)
            .ok_or_else(|| self.syntax("truncated \\u escape"))?;
        let mut v = 0u32;
        for &d in digits {
            let n = match d {
                b'0'..=b'9' => d - b'0',
                b'a'..=b'f' => d - b'a' + 10,
                b'A'..=b'F' => d - b'A' + 10,
                _ => return Err(self.syntax("invalid hex digit in a \\u escape")),
            };
            v = (v << 4) | u32::from(n);
        }
        Ok(v)
    }

    /// Read a number, or a string (which may hold a number or a special name such as `NaN`).
    /// A bare number is checked against the JSON grammar here; a string's text is returned as
    /// is, for the caller to check.
    pub fn number_or_string(
        &mut self,
        expected: &'static str,
    ) -> Result<NumberText<'a>, DecodeError> {
        match self.peek() {
            Some(b'"') => Ok(NumberText {
                text: self.string()?,
                quoted: true,
            }),
            Some(b'-' | b'0'..=b'9') => {
                let start = self.pos;
                let end = scan_number(self.input, start)
                    .ok_or_else(|| self.syntax("malformed number"))?;
                self.pos = end;
                let text = std::str::from_utf8(&self.input[start..end])
                    .expect("a scanned number is ASCII");
                Ok(NumberText {
                    text: Cow::Borrowed(text),
                    quoted: false,
                })
            }
            _ => Err(self.expected(expected)),
        }
    }

    /// Skip one value of any type, checking its syntax.
    pub fn skip_value(&mut self) -> Result<(), DecodeError> {
        match self.peek() {
            Some(b'{') => {
                self.begin_object()?;
                let mut first = true;
                while self.next_key(&mut first)?.is_some() {
                    self.skip_value()?;
                }
                Ok(())
            }
            Some(b'[') => {
                self.begin_array()?;
                let mut first = true;
                while self.next_element(&mut first)? {
                    self.skip_value()?;
                }
                Ok(())
            }
            Some(b'"') => self.string().map(drop),
            Some(b'-' | b'0'..=b'9') => self.number_or_string("a number").map(drop),
            Some(b't' | b'f') => self.bool().map(drop),
            _ if self.null() => Ok(()),
            None => Err(self.syntax("unexpected end of input")),
            Some(_) => Err(self.syntax("unexpected character")),
        }
    }
}

/// End of the JSON number starting at `start`, if it is one: `-?(0|[1-9]\d*)(\.\d+)?([eE][+-]?\d+)?`.
pub(crate) fn scan_number(input: &[u8], start: usize) -> Option<usize> {
    let digits = |mut i: usize| {
        let from = i;
        while input.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        (i > from).then_some(i)
    };
    let mut i = start;
    if input.get(i) == Some(&b'-') {
        i += 1;
    }
    match input.get(i) {
        Some(b'0') => i += 1,
        Some(b'1'..=b'9') => i = digits(i)?,
        _ => return None,
    }
    if input.get(i) == Some(&b'.') {
        i = digits(i + 1)?;
    }
    if matches!(input.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(input.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        i = digits(i)?;
    }
    Some(i)
}

/// The exact integer a JSON number's text denotes, as sign and magnitude: `1e5`, `100000.000`
/// and `100000` all give 100000; `0.5` and values past `u64` give an error.
pub(crate) fn integer_value(text: &[u8]) -> Result<(bool, u64), &'static str> {
    if scan_number(text, 0) != Some(text.len()) {
        return Err("not a number");
    }
    let (negative, text) = match text.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, text),
    };
    let mantissa_end = text
        .iter()
        .position(|&b| b == b'e' || b == b'E')
        .unwrap_or(text.len());
    let mut exponent: i64 = 0;
    if mantissa_end < text.len() {
        let exp_text = &text[mantissa_end + 1..];
        let (neg, digits) = match exp_text.split_first() {
            Some((b'-', d)) => (true, d),
            Some((b'+', d)) => (false, d),
            _ => (false, exp_text),
        };
        for &d in digits {
            exponent = (exponent * 10 + i64::from(d - b'0')).min(1 << 40);
        }
        if neg {
            exponent = -exponent;
        }
    }
    let mantissa = &text[..mantissa_end];
    let (int_part, frac_part) = match mantissa.iter().position(|&b| b == b'.') {
        Some(dot) => (&mantissa[..dot], &mantissa[dot + 1..]),
        None => (mantissa, &[][..]),
    };
    exponent -= frac_part.len() as i64;
    // All significant digits, leading zeros dropped, trailing zeros folded into the exponent.
    let mut digits: Vec<u8> = int_part
        .iter()
        .chain(frac_part)
        .copied()
        .skip_while(|&d| d == b'0')
        .collect();
    while digits.last() == Some(&b'0') {
        digits.pop();
        exponent += 1;
    }
    if digits.is_empty() {
        return Ok((negative, 0));
    }
    if exponent < 0 {
        return Err("not an integer");
    }
    if digits.len() as i64 + exponent > 20 {
        return Err("out of range");
    }
    let mut value: u64 = 0;
    for &d in digits
        .iter()
        .chain(std::iter::repeat_n(&b'0', exponent as usize))
    {
        value = value
            .checked_mul(10)
            .and_then(|v| v.checked_add(u64::from(d - b'0')))
            .ok_or("out of range")?;
    }
    Ok((negative, value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integer_forms() {
        assert_eq!(integer_value(b"100000"), Ok((false, 100000)));
        assert_eq!(integer_value(b"1e5"), Ok((false, 100000)));
        assert_eq!(integer_value(b"100000.000"), Ok((false, 100000)));
        assert_eq!(integer_value(b"2.147483647e9"), Ok((false, 2147483647)));
        assert_eq!(integer_value(b"-0"), Ok((true, 0)));
        assert_eq!(integer_value(b"0.0e9999999999"), Ok((false, 0)));
        assert_eq!(
            integer_value(b"18446744073709551615"),
            Ok((false, u64::MAX))
        );
        assert_eq!(integer_value(b"18446744073709551616"), Err("out of range"));
        assert_eq!(integer_value(b"1e20"), Err("out of range"));
        assert_eq!(integer_value(b"0.5"), Err("not an integer"));
        assert_eq!(integer_value(b"1e-1"), Err("not an integer"));
        assert_eq!(integer_value(b"01"), Err("not a number"));
        assert_eq!(integer_value(b"+1"), Err("not a number"));
        assert_eq!(integer_value(b" 1"), Err("not a number"));
    }

    #[test]
    fn strings_unescape_and_validate() {
        let mut p = Parser::new(br#""a\u00e9\ud83d\ude00\n\/""#);
        assert_eq!(p.string().unwrap(), "aé😀\n/");
        for bad in [
            &br#""\ud800""#[..],
            br#""\udc00x""#,
            br#""\x""#,
            b"\"a\x01\"",
            b"\"\xff\"",
            b"\"abc",
        ] {
            assert!(Parser::new(bad).string().is_err(), "{:?}", bad);
        }
    }

    #[test]
    fn skipping_checks_syntax() {
        assert!(Parser::new(br#"{"a":[1,2,{"b":null}],"c":"d"}"#)
            .skip_value()
            .is_ok());
        for bad in [
            &b"[1,]"[..],
            b"{\"a\":1,}",
            b"{\"a\" 1}",
            b"[01]",
            b"tru",
            b"{",
        ] {
            assert!(Parser::new(bad).skip_value().is_err(), "{:?}", bad);
        }
    }

    #[test]
    fn nesting_is_bounded() {
        let deep = "[".repeat(MAX_DEPTH + 1) + &"]".repeat(MAX_DEPTH + 1);
        assert_eq!(
            Parser::new(deep.as_bytes())
                .skip_value()
                .unwrap_err()
                .kind(),
            &DecodeErrorKind::TooDeep
        );
        let ok = "[".repeat(MAX_DEPTH) + &"]".repeat(MAX_DEPTH);
        assert!(Parser::new(ok.as_bytes()).skip_value().is_ok());
    }
}
