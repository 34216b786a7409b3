//! JSON forms of the well-known types (prost-types' structs, re-exported as
//! [`crate::wkt`]). Wrappers and `Empty` are not here: prost maps them to `Option<primitive>`
//! and `()`, handled by the scalar codecs and [`codec::Empty`](super::codec::Empty).

use std::collections::BTreeMap;

use prost_types::{
    value::Kind, Duration, FieldMask, ListValue, NullValue, Struct, Timestamp, Value,
};

use super::codec::{Codec, Double};
use super::error::{DecodeError, DecodeErrorKind, EncodeError, PathSegment};
use super::read::Parser;
use super::write::Writer;
use super::{JsonEnum, JsonMessage};

/// 0001-01-01T00:00:00Z and 9999-12-31T23:59:59Z, in seconds since the Unix epoch.
const MIN_TIMESTAMP: i64 = -62_135_596_800;
const MAX_TIMESTAMP: i64 = 253_402_300_799;
/// ±10,000 years, the documented range of a Duration.
const MAX_DURATION: i64 = 315_576_000_000;
const NANOS: i32 = 1_000_000_000;

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let year_of_era = y - era * 400;
    let shifted_month = i64::from((month + 9) % 12);
    let day_of_year = (153 * shifted_month + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// Proleptic Gregorian date of a day count since 1970-01-01.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Write `nanos` as 0, 3, 6 or 9 fractional digits, as the reference implementations do.
fn write_fraction(w: &mut Writer, nanos: u32) {
    if nanos == 0 {
        return;
    }
    let (value, width) = if nanos % 1_000_000 == 0 {
        (nanos / 1_000_000, 3)
    } else if nanos % 1_000 == 0 {
        (nanos / 1_000, 6)
    } else {
        (nanos, 9)
    };
    w.byte(b'.');
    write_padded(w, u64::from(value), width);
}

fn write_padded(w: &mut Writer, value: u64, width: usize) {
    let mut digits = [b'0'; 20];
    let mut v = value;
    for slot in digits[..width].iter_mut().rev() {
        *slot = b'0' + (v % 10) as u8;
        v /= 10;
    }
    w.raw(&digits[..width]);
}

/// Parse `.fffffffff` (1 to 9 digits) into nanoseconds.
fn parse_fraction(digits: &[u8]) -> Option<i32> {
    if digits.is_empty() || digits.len() > 9 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let mut nanos = 0i32;
    for i in 0..9 {
        nanos = nanos * 10 + digits.get(i).map_or(0, |d| i32::from(d - b'0'));
    }
    Some(nanos)
}

fn digits_value(text: &[u8]) -> Option<u32> {
    if text.is_empty() || !text.iter().all(u8::is_ascii_digit) {
        return None;
    }
    text.iter().try_fold(0u32, |acc, d| {
        acc.checked_mul(10)?.checked_add(u32::from(d - b'0'))
    })
}

impl JsonMessage for Timestamp {
    fn encode_json(&self, w: &mut Writer) -> Result<(), EncodeError> {
        if !(MIN_TIMESTAMP..=MAX_TIMESTAMP).contains(&self.seconds)
            || !(0..NANOS).contains(&self.nanos)
        {
            return Err(EncodeError::new(format!(
                "Timestamp {{ seconds: {}, nanos: {} }} is outside 0001-01-01T00:00:00Z..=9999-12-31T23:59:59.999999999Z",
                self.seconds, self.nanos
            )));
        }
        let days = self.seconds.div_euclid(86_400);
        let secs_of_day = self.seconds.rem_euclid(86_400) as u64;
        let (year, month, day) = civil_from_days(days);
        w.byte(b'"');
        write_padded(w, year as u64, 4);
        w.byte(b'-');
        write_padded(w, month.into(), 2);
        w.byte(b'-');
        write_padded(w, day.into(), 2);
        w.byte(b'T');
        write_padded(w, secs_of_day / 3600, 2);
        w.byte(b':');
        write_padded(w, secs_of_day / 60 % 60, 2);
        w.byte(b':');
        write_padded(w, secs_of_day % 60, 2);
        write_fraction(w, self.nanos as u32);
        w.raw(b"Z\"");
        Ok(())
    }

    fn decode_json(p: &mut Parser<'_>) -> Result<Self, DecodeError> {
        let start = p.offset();
        let text = p.string()?;
        parse_timestamp(text.as_bytes()).ok_or_else(|| {
            p.invalid(
                start,
                "invalid Timestamp: expected RFC 3339 such as \"1972-01-01T10:00:20.021Z\" between years 0001 and 9999",
            )
        })
    }
}

fn parse_timestamp(t: &[u8]) -> Option<Timestamp> {
    // YYYY-MM-DDTHH:MM:SS
    if t.len() < 20
        || t[4] != b'-'
        || t[7] != b'-'
        || t[10] != b'T'
        || t[13] != b':'
        || t[16] != b':'
    {
        return None;
    }
    let year = i64::from(digits_value(&t[0..4])?);
    let month = digits_value(&t[5..7])?;
    let day = digits_value(&t[8..10])?;
    let hour = i64::from(digits_value(&t[11..13])?);
    let minute = i64::from(digits_value(&t[14..16])?);
    let second = i64::from(digits_value(&t[17..19])?);
    if !(1..=12).contains(&month)
        || day == 0
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 59
    {
        return None;
    }
    let mut rest = &t[19..];
    let mut nanos = 0;
    if let Some(after_dot) = rest.strip_prefix(b".") {
        let end = after_dot
            .iter()
            .position(|b| !b.is_ascii_digit())
            .unwrap_or(after_dot.len());
        nanos = parse_fraction(&after_dot[..end])?;
        rest = &after_dot[end..];
    }
    let offset = match rest {
        b"Z" => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let h = i64::from(digits_value(&[*h1, *h2])?);
            let m = i64::from(digits_value(&[*m1, *m2])?);
            if h > 23 || m > 59 {
                return None;
            }
            let off = h * 3600 + m * 60;
            if *sign == b'+' {
                off
            } else {
                -off
            }
        }
        _ => return None,
    };
    let seconds =
        days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second - offset;
    (MIN_TIMESTAMP..=MAX_TIMESTAMP)
        .contains(&seconds)
        .then_some(Timestamp { seconds, nanos })
}

impl JsonMessage for Duration {
    fn encode_json(&self, w: &mut Writer) -> Result<(), EncodeError> {
        let (s, n) = (self.seconds, self.nanos);
        if s.abs() > MAX_DURATION || n.abs() >= NANOS || (s > 0 && n < 0) || (s < 0 && n > 0) {
            return Err(EncodeError::new(format!(
                "Duration {{ seconds: {s}, nanos: {n} }} is outside ±315576000000s or its signs disagree"
            )));
        }
        w.byte(b'"');
        if s < 0 || n < 0 {
            w.byte(b'-');
        }
        w.u64(s.unsigned_abs());
        write_fraction(w, n.unsigned_abs());
        w.raw(b"s\"");
        Ok(())
    }

    fn decode_json(p: &mut Parser<'_>) -> Result<Self, DecodeError> {
        let start = p.offset();
        let text = p.string()?;
        parse_duration(text.as_bytes()).ok_or_else(|| {
            p.invalid(
                start,
                "invalid Duration: expected seconds with up to 9 fractional digits and an `s`, such as \"-1.5s\", within ±315576000000s",
            )
        })
    }
}

fn parse_duration(t: &[u8]) -> Option<Duration> {
    let t = t.strip_suffix(b"s")?;
    let (negative, t) = match t.strip_prefix(b"-") {
        Some(rest) => (true, rest),
        None => (false, t),
    };
    let (whole, frac) = match t.iter().position(|&b| b == b'.') {
        Some(dot) => (&t[..dot], Some(&t[dot + 1..])),
        None => (t, None),
    };
    if whole.is_empty() || whole.len() > 12 || !whole.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let seconds = whole
        .iter()
        .fold(0i64, |acc, d| acc * 10 + i64::from(d - b'0'));
    let nanos = match frac {
        Some(f) => parse_fraction(f)?,
        None => 0,
    };
    if seconds > MAX_DURATION {
        return None;
    }
    Some(if negative {
        Duration {
            seconds: -seconds,
            nanos: -nanos,
        }
    } else {
        Duration { seconds, nanos }
    })
}

impl JsonMessage for FieldMask {
    fn encode_json(&self, w: &mut Writer) -> Result<(), EncodeError> {
        let mut out = String::new();
        for (i, path) in self.paths.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let mut upper_next = false;
            for c in path.chars() {
                match c {
                    '_' if !upper_next => upper_next = true,
                    'a'..='z' if upper_next => {
                        out.push(c.to_ascii_uppercase());
                        upper_next = false;
                    }
                    c if upper_next || c.is_ascii_uppercase() => {
                        return Err(EncodeError::new(format!(
                            "FieldMask path {path:?} has no lowerCamelCase form that reads back the same"
                        )))
                    }
                    c => out.push(c),
                }
            }
            if upper_next {
                return Err(EncodeError::new(format!(
                    "FieldMask path {path:?} ends with `_`, which has no lowerCamelCase form"
                )));
            }
        }
        w.string(&out);
        Ok(())
    }

    fn decode_json(p: &mut Parser<'_>) -> Result<Self, DecodeError> {
        let start = p.offset();
        let text = p.string()?;
        let mut paths = Vec::new();
        if !text.is_empty() {
            for camel in text.split(',') {
                let mut path = String::with_capacity(camel.len() + 4);
                for c in camel.chars() {
                    match c {
                        '_' => return Err(p.invalid(
                            start,
                            "invalid FieldMask: paths are written in lowerCamelCase, without `_`",
                        )),
                        c if c.is_ascii_uppercase() => {
                            path.push('_');
                            path.push(c.to_ascii_lowercase());
                        }
                        c => path.push(c),
                    }
                }
                paths.push(path);
            }
        }
        Ok(FieldMask { paths })
    }
}

impl JsonEnum for NullValue {
    const NULL_IS_VALUE: bool = true;
    const FULL_NAME: &'static str = "google.protobuf.NullValue";

    fn json_name(value: i32) -> Option<&'static str> {
        (value == 0).then_some("NULL_VALUE")
    }

    fn from_json_name(name: &str) -> Option<i32> {
        (name == "NULL_VALUE").then_some(0)
    }
}

impl JsonMessage for Value {
    const NULL_IS_VALUE: bool = true;

    fn encode_json(&self, w: &mut Writer) -> Result<(), EncodeError> {
        match &self.kind {
            None => Err(EncodeError::new("google.protobuf.Value has no kind set")),
            Some(Kind::NullValue(_)) => {
                w.raw(b"null");
                Ok(())
            }
            Some(Kind::NumberValue(n)) if !n.is_finite() => Err(EncodeError::new(format!(
                "google.protobuf.Value cannot hold {n}: JSON numbers are finite"
            ))),
            Some(Kind::NumberValue(n)) => {
                w.f64(*n);
                Ok(())
            }
            Some(Kind::StringValue(s)) => {
                w.string(s);
                Ok(())
            }
            Some(Kind::BoolValue(b)) => {
                w.bool(*b);
                Ok(())
            }
            Some(Kind::StructValue(s)) => s.encode_json(w),
            Some(Kind::ListValue(l)) => l.encode_json(w),
        }
    }

    fn decode_json(p: &mut Parser<'_>) -> Result<Self, DecodeError> {
        let kind = match p.peek_token() {
            Some(b'n') if p.null() => Kind::NullValue(0),
            Some(b'"') => Kind::StringValue(p.string()?.into_owned()),
            Some(b'{') => Kind::StructValue(Struct::decode_json(p)?),
            Some(b'[') => {
                p.begin_array()?;
                Kind::ListValue(list_elements(p)?)
            }
            Some(b't' | b'f') => Kind::BoolValue(p.bool()?),
            // Not a string (checked above), so this reads a bare number or fails.
            _ => Kind::NumberValue(Double.decode(p)?.unwrap_or_default()),
        };
        Ok(Value { kind: Some(kind) })
    }
}

fn list_elements(p: &mut Parser<'_>) -> Result<ListValue, DecodeError> {
    let mut values = Vec::new();
    let mut first = true;
    while p.next_element(&mut first)? {
        let index = values.len();
        values.push(Value::decode_json(p).map_err(|e| e.push(PathSegment::Index(index)))?);
    }
    Ok(ListValue { values })
}

impl JsonMessage for ListValue {
    fn encode_json(&self, w: &mut Writer) -> Result<(), EncodeError> {
        w.byte(b'[');
        for (i, v) in self.values.iter().enumerate() {
            if i > 0 {
                w.byte(b',');
            }
            v.encode_json(w)?;
        }
        w.byte(b']');
        Ok(())
    }

    fn decode_json(p: &mut Parser<'_>) -> Result<Self, DecodeError> {
        p.begin_array()?;
        list_elements(p)
    }
}

impl JsonMessage for Struct {
    fn encode_json(&self, w: &mut Writer) -> Result<(), EncodeError> {
        w.byte(b'{');
        for (i, (k, v)) in self.fields.iter().enumerate() {
            if i > 0 {
                w.byte(b',');
            }
            w.string(k);
            w.byte(b':');
            v.encode_json(w)?;
        }
        w.byte(b'}');
        Ok(())
    }

    fn decode_json(p: &mut Parser<'_>) -> Result<Self, DecodeError> {
        p.begin_object()?;
        let mut fields = BTreeMap::new();
        let mut first = true;
        while let Some(key) = p.next_key(&mut first)? {
            let value =
                Value::decode_json(p).map_err(|e| e.push(PathSegment::Key(key.to_string())))?;
            if fields.insert(key.into_owned(), value).is_some() {
                return Err(p.error(DecodeErrorKind::DuplicateKey));
            }
        }
        Ok(Struct { fields })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::json::{from_str, to_string};

    #[test]
    fn calendar_round_trips() {
        for days in [-719_162, -1, 0, 1, 10_957, 2_932_896] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(-719_162), (1, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
    }

    #[test]
    fn timestamps() {
        let t = Timestamp {
            seconds: 63_108_020,
            nanos: 21_000_000,
        };
        assert_eq!(to_string(&t).unwrap(), "\"1972-01-01T10:00:20.021Z\"");
        assert_eq!(
            from_str::<Timestamp>("\"1972-01-01T10:00:20.021Z\"").unwrap(),
            t
        );
        assert_eq!(
            from_str::<Timestamp>("\"1970-01-01T08:00:01+08:00\"").unwrap(),
            Timestamp {
                seconds: 1,
                nanos: 0
            }
        );
        let max = Timestamp {
            seconds: MAX_TIMESTAMP,
            nanos: 999_999_999,
        };
        assert_eq!(
            to_string(&max).unwrap(),
            "\"9999-12-31T23:59:59.999999999Z\""
        );
        assert_eq!(
            to_string(&Timestamp {
                seconds: MIN_TIMESTAMP,
                nanos: 0
            })
            .unwrap(),
            "\"0001-01-01T00:00:00Z\""
        );
        assert!(to_string(&Timestamp {
            seconds: MAX_TIMESTAMP + 1,
            nanos: 0
        })
        .is_err());
        assert!(to_string(&Timestamp {
            seconds: 0,
            nanos: -1
        })
        .is_err());
        for bad in [
            "\"0000-01-01T00:00:00Z\"",
            "\"10000-01-01T00:00:00Z\"",
            "\"1970-01-01t00:00:00Z\"",
            "\"1970-01-01T00:00:00z\"",
            "\"1970-01-01T00:00:00\"",
            "\"1970-02-30T00:00:00Z\"",
            "\"1970-01-01T00:00:00.Z\"",
            "\"1970-01-01T00:00:00.0000000001Z\"",
            "\"0001-01-01T00:00:00+00:01\"",
        ] {
            assert!(from_str::<Timestamp>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn durations() {
        for (s, n, text) in [
            (1, 500_000_000, "\"1.500s\""),
            (-1, -500_000_000, "\"-1.500s\""),
            (0, -1_000, "\"-0.000001s\""),
            (0, 0, "\"0s\""),
            (MAX_DURATION, 999_999_999, "\"315576000000.999999999s\""),
        ] {
            let d = Duration {
                seconds: s,
                nanos: n,
            };
            assert_eq!(to_string(&d).unwrap(), text);
            assert_eq!(from_str::<Duration>(text).unwrap(), d);
        }
        assert!(to_string(&Duration {
            seconds: 1,
            nanos: -1
        })
        .is_err());
        assert!(to_string(&Duration {
            seconds: MAX_DURATION + 1,
            nanos: 0
        })
        .is_err());
        for bad in [
            "\"1\"",
            "\"1.s\"",
            "\"315576000001s\"",
            "\"+1s\"",
            "\"1.0000000001s\"",
            "\"s\"",
        ] {
            assert!(from_str::<Duration>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn field_masks() {
        let m = FieldMask {
            paths: vec!["foo_bar".into(), "baz.qux_quux".into()],
        };
        assert_eq!(to_string(&m).unwrap(), "\"fooBar,baz.quxQuux\"");
        assert_eq!(from_str::<FieldMask>("\"fooBar,baz.quxQuux\"").unwrap(), m);
        assert!(to_string(&FieldMask {
            paths: vec!["fooBar".into()]
        })
        .is_err());
        assert!(to_string(&FieldMask {
            paths: vec!["foo__bar".into()]
        })
        .is_err());
        assert!(from_str::<FieldMask>("\"foo,bar_bar\"").is_err());
        assert_eq!(
            from_str::<FieldMask>("\"\"").unwrap(),
            FieldMask { paths: vec![] }
        );
    }

    #[test]
    fn values() {
        let text = r#"{"a":[1,"x",true,null,{"b":-2.5}],"c":{}}"#;
        let v: Value = from_str(text).unwrap();
        assert_eq!(to_string(&v).unwrap(), text);
        assert_eq!(
            to_string(&from_str::<Value>("null").unwrap()).unwrap(),
            "null"
        );
        assert!(to_string(&Value {
            kind: Some(Kind::NumberValue(f64::NAN))
        })
        .is_err());
        assert!(from_str::<Struct>(r#"{"a":1,"a":2}"#).is_err());
        assert!(from_str::<Value>("1e400").is_err());
    }
}
