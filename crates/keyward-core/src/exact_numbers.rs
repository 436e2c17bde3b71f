//! Digits the signature does not cover (SPEC §2, `KEYWARD_EXACT_NUMBERS`).
//!
//! The signed message holds each number in its ECMAScript form, the shortest decimal that
//! reads back as the same double. A number written with more digits than a double holds
//! (`12345678901234567891`, `0.10000000000000000001`, `1e400`) has the same message as its
//! neighbours, so the signature does not tell them apart, while an upstream that parses numbers
//! exactly does. [`first_inexact_number`] finds such a number in a body's text: one whose
//! decimal value differs from the value of its ECMAScript form. `1.50`, `1E2` and `-0` are
//! fine: same value, other spelling.

/// The path (`amount`, `items[2].price`) of the first number in `raw` whose value its
/// ECMAScript form does not keep; `None` when every number is exact. `raw` must be valid JSON
/// (it is scanned, not validated); the scan allocates only to name what it found.
pub fn first_inexact_number(raw: &[u8]) -> Option<String> {
    let mut path: Vec<Step> = Vec::new();
    let mut expect_name = false;
    let mut i = 0;
    while i < raw.len() {
        match raw[i] {
            b'{' => {
                path.push(Step::Member(0..0));
                expect_name = true;
            }
            b'[' => path.push(Step::Index(0)),
            b'}' | b']' => {
                path.pop();
            }
            b',' => match path.last_mut() {
                Some(Step::Index(n)) => *n += 1,
                Some(Step::Member(_)) => expect_name = true,
                None => {}
            },
            b'"' => {
                let end = string_end(raw, i);
                if expect_name {
                    if let Some(Step::Member(name)) = path.last_mut() {
                        *name = i..end;
                    }
                    expect_name = false;
                }
                i = end;
            }
            b'-' | b'0'..=b'9' => {
                let start = i;
                while i + 1 < raw.len()
                    && matches!(raw[i + 1], b'0'..=b'9' | b'.' | b'e' | b'E' | b'+' | b'-')
                {
                    i += 1;
                }
                let text = std::str::from_utf8(&raw[start..=i]).unwrap_or("");
                if !is_exact(text) {
                    return Some(describe(raw, &path));
                }
            }
            _ => {}
        }
        i += 1;
    }
    None
}

/// Where a scan is: in an object (the byte range of the current member's quoted name) or an
/// array (the current index).
enum Step {
    Member(std::ops::Range<usize>),
    Index(usize),
}

/// The index of the quote that closes the string opening at `start`. Strings are most of a
/// signed body (the signature alone is 128 digits): skipped with `memchr`, not byte by byte.
fn string_end(raw: &[u8], start: usize) -> usize {
    let mut i = start + 1;
    while let Some(found) = raw
        .get(i..)
        .and_then(|rest| memchr::memchr2(b'"', b'\\', rest))
    {
        i += found;
        if raw[i] == b'"' {
            return i;
        }
        i += 2; // an escape: the next byte is never the closing quote
    }
    raw.len()
}

fn describe(raw: &[u8], path: &[Step]) -> String {
    let mut out = String::new();
    for step in path {
        match step {
            Step::Member(range) => {
                let quoted = raw.get(range.start..=range.end).unwrap_or_default();
                let name: String = serde_json::from_slice(quoted).unwrap_or_default();
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(&name);
            }
            Step::Index(n) => out.push_str(&format!("[{n}]")),
        }
    }
    out
}

/// Whether the number written as `text` has the value of its ECMAScript form.
fn is_exact(text: &str) -> bool {
    // The common case without parsing: an integer of at most 15 digits is below 2^53, so its
    // double is exact and its ECMAScript form is the same digits.
    let digits = text.strip_prefix('-').unwrap_or(text);
    if (1..=15).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit()) {
        return true;
    }
    let Ok(double) = text.parse::<f64>() else {
        return false;
    };
    if !double.is_finite() {
        return false; // JSON.stringify writes it as null
    }
    let mut form = ryu_js::Buffer::new();
    Decimal::of(text) == Decimal::of(form.format_finite(double))
}

/// A decimal value: sign, significant digits (no leading or trailing zero) and the power of
/// ten of the first digit, so that equal values are equal whatever their spelling. Zero has
/// no digits and no sign (`-0` is `0`).
#[derive(Debug, PartialEq, Eq)]
struct Decimal {
    negative: bool,
    digits: Vec<u8>,
    exponent: i64,
}

impl Decimal {
    fn of(text: &str) -> Self {
        let (negative, unsigned) = match text.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, text),
        };
        let (mantissa, exponent) = match unsigned.find(['e', 'E']) {
            Some(at) => (&unsigned[..at], parse_exponent(&unsigned[at + 1..])),
            None => (unsigned, 0),
        };
        let (integer, fraction) = mantissa.split_once('.').unwrap_or((mantissa, ""));
        let mut digits: Vec<u8> = integer.bytes().chain(fraction.bytes()).collect();
        let mut exponent =
            exponent.saturating_add(i64::try_from(integer.len()).unwrap_or(i64::MAX));
        let leading = digits.iter().take_while(|&&d| d == b'0').count();
        digits.drain(..leading);
        exponent = exponent.saturating_sub(i64::try_from(leading).unwrap_or(0));
        while digits.last() == Some(&b'0') {
            digits.pop();
        }
        if digits.is_empty() {
            return Self {
                negative: false,
                digits,
                exponent: 0,
            };
        }
        Self {
            negative,
            digits,
            exponent,
        }
    }
}

fn parse_exponent(text: &str) -> i64 {
    let (negative, digits) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    let value = digits.bytes().fold(0_i64, |n, d| {
        n.saturating_mul(10).saturating_add(i64::from(d - b'0'))
    });
    if negative {
        -value
    } else {
        value
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_value_in_another_spelling_is_exact() {
        for text in [
            "1.50",
            "1E2",
            "-0",
            "0",
            "0.0",
            "1e21",
            "1e-7",
            "12345678901234567000",
            "0.1",
            "100",
            "-1.25e-3",
        ] {
            assert!(is_exact(text), "{text}");
        }
    }

    #[test]
    fn digits_beyond_double_precision_are_not() {
        for text in [
            "12345678901234567891",
            "12345678901234567890",
            "0.10000000000000000001",
            "9007199254740993",
            "1e400",
            "-1e400",
            "123456789012345678901234567890",
        ] {
            assert!(!is_exact(text), "{text}");
        }
    }

    #[test]
    fn integers_of_up_to_fifteen_digits_are_exact_and_the_fast_path_ends_there() {
        for text in ["999999999999999", "-999999999999999", "1", "-7"] {
            assert!(is_exact(text), "{text}");
        }
        // 16 digits take the full comparison: 2^53 + 1 has no double of its own.
        assert!(!is_exact("9007199254740993"));
        assert!(is_exact("9007199254740992"));
    }

    #[test]
    fn escapes_and_digits_inside_strings_are_skipped() {
        let raw = br#"{"a\\":"\\","b\"1":"x\"12345678901234567891\\","c":[12345678901234567891]}"#;
        assert_eq!(first_inexact_number(raw).as_deref(), Some("c[0]"));
        let raw = br#"{"unterminated":"\"#;
        assert_eq!(first_inexact_number(raw), None);
    }

    #[test]
    fn the_first_inexact_number_is_named_by_its_path() {
        let raw =
            br#"{"a":1.50,"n\"x":{"list":[1,2,12345678901234567891]},"b":"9007199254740993"}"#;
        assert_eq!(first_inexact_number(raw).as_deref(), Some("n\"x.list[2]"));
        let raw = br#"{"big":12345678901234567891,"signature":"ab"}"#;
        assert_eq!(first_inexact_number(raw).as_deref(), Some("big"));
        let raw = br#"{"s":"12345678901234567891","amount":10.5,"list":[{"x":-0}]}"#;
        assert_eq!(first_inexact_number(raw), None);
        let raw = br#"[0.10000000000000000001]"#;
        assert_eq!(first_inexact_number(raw).as_deref(), Some("[0]"));
    }
}
