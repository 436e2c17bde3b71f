//! The JSON model the signature is computed over.
//!
//! Parsing keeps members in the order received and rejects a member name that appears twice
//! in one object (parsers disagree on which copy wins, so a signed body could mean two things).
//! Numbers become IEEE doubles, as `JSON.parse` makes them. Two serialisations follow:
//! ECMAScript `JSON.stringify` ([`Value::write_as_sent`]) and RFC 8785 ([`Value::write_canonical`]).

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use std::collections::HashSet;
use std::fmt;

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Number(f64),
    String(String),
    Array(Vec<Value>),
    /// Members in the order received; names are unique.
    Object(Vec<(String, Value)>),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("the body is not valid JSON")]
    InvalidJson,
    #[error("the body is not a JSON object")]
    NotAnObject,
    #[error("a member name appears twice in one object")]
    DuplicateMember,
}

/// The most members an object has whose names are checked for duplicates by comparing each
/// with those before it.
const SMALL_OBJECT: usize = 16;

/// Marks our own error among serde_json's, which only carry a message.
const DUPLICATE_MARKER: &str = "keyward: duplicate member";

/// Parses `raw` as a JSON object.
pub fn parse_object(raw: &[u8]) -> Result<Vec<(String, Value)>, ParseError> {
    let value: Value = serde_json::from_slice(raw).map_err(|e| {
        if e.to_string().starts_with(DUPLICATE_MARKER) {
            ParseError::DuplicateMember
        } else {
            ParseError::InvalidJson
        }
    })?;
    match value {
        Value::Object(members) => Ok(members),
        _ => Err(ParseError::NotAnObject),
    }
}

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ValueVisitor)
    }
}

struct ValueVisitor;

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    // Integers become doubles, as in JavaScript. The conversion rounds to nearest, which is
    // what parsing the decimal text to a double does too.
    #[allow(clippy::cast_precision_loss)]
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v as f64))
    }

    #[allow(clippy::cast_precision_loss)]
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v as f64))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Value::Number(v))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut members: Vec<(String, Value)> = Vec::new();
        // Names are compared with those before them while an object is small (most are, and
        // a set costs a hash and a copy of every name); a large one gets a set of its names.
        let mut seen: Option<HashSet<String>> = None;
        while let Some(name) = map.next_key::<String>()? {
            let duplicate = match &mut seen {
                Some(seen) => !seen.insert(name.clone()),
                None => members.iter().any(|(earlier, _)| *earlier == name),
            };
            if duplicate {
                return Err(de::Error::custom(DUPLICATE_MARKER));
            }
            let value = map.next_value()?;
            members.push((name, value));
            if seen.is_none() && members.len() == SMALL_OBJECT {
                seen = Some(members.iter().map(|(name, _)| name.clone()).collect());
            }
        }
        Ok(Value::Object(members))
    }
}

impl Value {
    /// ECMAScript `JSON.stringify(value)`: members in the order received, no whitespace.
    pub fn write_as_sent(&self, out: &mut String) {
        self.write(out, false);
    }

    /// RFC 8785 (JCS): as [`Value::write_as_sent`], with members sorted by UTF-16 code units.
    pub fn write_canonical(&self, out: &mut String) {
        self.write(out, true);
    }

    fn write(&self, out: &mut String, sorted: bool) {
        match self {
            Value::Null => out.push_str("null"),
            Value::Bool(true) => out.push_str("true"),
            Value::Bool(false) => out.push_str("false"),
            Value::Number(n) => write_number(*n, out),
            Value::String(s) => write_string(s, out),
            Value::Array(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    item.write(out, sorted);
                }
                out.push(']');
            }
            Value::Object(members) => write_members(members, out, sorted),
        }
    }
}

/// Writes an object from its members (used for the body without its `signature`).
pub fn write_members(members: &[(String, Value)], out: &mut String, sorted: bool) {
    if sorted {
        let mut order: Vec<&(String, Value)> = members.iter().collect();
        order.sort_by(|(a, _), (b, _)| a.encode_utf16().cmp(b.encode_utf16()));
        write_object(order.into_iter(), out, sorted);
    } else {
        write_object(members.iter(), out, sorted);
    }
}

/// Writes an object from its members in the order given.
fn write_object<'a>(
    members: impl Iterator<Item = &'a (String, Value)>,
    out: &mut String,
    sorted: bool,
) {
    out.push('{');
    for (i, (name, value)) in members.enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_string(name, out);
        out.push(':');
        value.write(out, sorted);
    }
    out.push('}');
}

/// ECMAScript Number::toString; `JSON.stringify` writes non-finite numbers as `null`.
fn write_number(n: f64, out: &mut String) {
    if n.is_finite() {
        out.push_str(ryu_js::Buffer::new().format_finite(n));
    } else {
        out.push_str("null");
    }
}

/// `JSON.stringify`'s string escaping: `"`, `\` and U+0000–U+001F only, short forms where they
/// exist, otherwise lower-case `\u00xx`; every other character raw.
fn write_string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn as_sent(raw: &str) -> String {
        let mut out = String::new();
        let members = parse_object(raw.as_bytes()).unwrap();
        write_members(&members, &mut out, false);
        out
    }

    #[test]
    fn numbers_take_their_ecmascript_form() {
        assert_eq!(
            as_sent(
                r#"{"a":1.50,"b":1E-7,"c":-0,"d":1e21,"e":12345678901234567890,"f":100,"g":-0.0}"#
            ),
            r#"{"a":1.5,"b":1e-7,"c":0,"d":1e+21,"e":12345678901234567000,"f":100,"g":0}"#
        );
        assert_eq!(
            as_sent(r#"{"a":0.1,"b":123e-20,"c":1e300}"#),
            r#"{"a":0.1,"b":1.23e-18,"c":1e+300}"#
        );
    }

    #[test]
    fn strings_are_escaped_like_json_stringify() {
        assert_eq!(
            as_sent(r#"{"m":"a\/b \u0001 \u001f \b\f\n\r\t \" \\ é 🚀 \u2028"}"#),
            "{\"m\":\"a/b \\u0001 \\u001f \\b\\f\\n\\r\\t \\\" \\\\ é 🚀 \u{2028}\"}"
        );
    }

    #[test]
    fn duplicates_are_found_at_any_depth() {
        assert_eq!(
            parse_object(br#"{"a":1,"a":2}"#),
            Err(ParseError::DuplicateMember)
        );
        assert_eq!(
            parse_object(br#"{"x":[{"a":1,"a":1}]}"#),
            Err(ParseError::DuplicateMember)
        );
        assert!(parse_object(br#"{"a":{"a":1}}"#).is_ok());
    }

    #[test]
    fn duplicates_are_found_in_large_objects_on_either_side_of_the_set() {
        let object = |names: &[String]| {
            let members: Vec<String> = names.iter().map(|n| format!("\"{n}\":1")).collect();
            format!("{{{}}}", members.join(","))
        };
        let distinct: Vec<String> = (0..40).map(|i| format!("m{i}")).collect();
        assert!(parse_object(object(&distinct).as_bytes()).is_ok());
        for (at, copy_of) in [(10, 3), (SMALL_OBJECT, 0), (30, 3), (39, 20)] {
            let mut names = distinct.clone();
            names[at] = names[copy_of].clone();
            assert_eq!(
                parse_object(object(&names).as_bytes()),
                Err(ParseError::DuplicateMember),
                "member {at} repeats member {copy_of}"
            );
        }
    }

    #[test]
    fn non_objects_and_garbage_are_told_apart() {
        assert_eq!(parse_object(b"[1]"), Err(ParseError::NotAnObject));
        assert_eq!(parse_object(b"\"x\""), Err(ParseError::NotAnObject));
        assert_eq!(parse_object(b"{\"a\":"), Err(ParseError::InvalidJson));
        assert_eq!(parse_object(b"{} {}"), Err(ParseError::InvalidJson));
        assert_eq!(parse_object(b"\xff"), Err(ParseError::InvalidJson));
        assert_eq!(parse_object(b""), Err(ParseError::InvalidJson));
    }

    #[test]
    fn canonical_form_sorts_by_utf16_code_units() {
        // In UTF-16 the emoji is the surrogate pair D83D DE00, which sorts before U+E000;
        // in UTF-8 (or by code point) it would sort after it.
        let members = parse_object("{\"\u{e000}\":1,\"😀\":2,\"b\":3,\"a\":4}".as_bytes()).unwrap();
        let mut out = String::new();
        write_members(&members, &mut out, true);
        assert_eq!(out, "{\"a\":4,\"b\":3,\"😀\":2,\"\u{e000}\":1}");
    }

    #[test]
    fn deep_nesting_is_invalid_json_not_a_crash() {
        let deep = format!("{{\"a\":{}{}}}", "[".repeat(10_000), "]".repeat(10_000));
        assert_eq!(parse_object(deep.as_bytes()), Err(ParseError::InvalidJson));
    }

    fn arb_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(Value::Number),
            any::<String>().prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 32, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::btree_map(any::<String>(), inner, 0..6)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn serialised_output_parses_back_to_the_same_value(members in prop::collection::btree_map(any::<String>(), arb_value(), 0..6)) {
            let members: Vec<_> = members.into_iter().collect();
            for sorted in [false, true] {
                let mut out = String::new();
                write_members(&members, &mut out, sorted);
                let reparsed = parse_object(out.as_bytes());
                prop_assert!(reparsed.is_ok());
                let mut again = String::new();
                write_members(&reparsed.unwrap(), &mut again, sorted);
                prop_assert_eq!(&out, &again);
            }
        }

        #[test]
        fn parse_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
            let _ = parse_object(&bytes);
        }
    }
}
