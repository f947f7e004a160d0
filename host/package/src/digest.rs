//! Content digests (`sha256:<64 hex>`) and the canonical JSON a package digest is taken over.
//!
//! # Canonical JSON
//!
//! The package digest is the SHA-256 of the manifest written as canonical JSON. The form does
//! not depend on how serde_json was built (its `preserve_order` feature would keep insertion
//! order in maps; this writer sorts keys itself):
//!
//! 1. The value is written with no whitespace at all outside strings: `{"a":1,"b":[true,null]}`.
//! 2. Object members are ordered by their keys compared as byte strings (UTF-8), at every
//!    depth, including inside `config_schema`. Keys are unique.
//! 3. Strings are written in UTF-8. `"` and `\` are escaped as `\"` and `\\`; the control
//!    characters U+0008, U+0009, U+000A, U+000C, U+000D as `\b`, `\t`, `\n`, `\f`, `\r`; every
//!    other character below U+0020 as `\u00XX` with lowercase hex. Nothing else is escaped
//!    (not `/`, not non-ASCII characters).
//! 4. Numbers are written in plain decimal notation, never with an exponent, a `+` or leading
//!    zeros, and with a leading `-` when negative. An integer is written as its digits. Any
//!    other number (only a config schema holds them) is an IEEE-754 double, written with the
//!    fewest significant digits that read back as the same double (of those, the closest to
//!    its exact value), with a fractional part only when that is not zero: `0.5`, `1` for
//!    `1.0`, `0.00000015` for `1.5e-7`. Negative zero is written `0`. (This is Rust's `Display`
//!    of an `f64`; it does not depend on the serde_json version.)
//! 5. `true`, `false` and `null` are written as such.
//!
//! A verifier never needs to reproduce this form: the digest is over the bytes of
//! `manifest.json` as stored. Readers of this crate refuse a `manifest.json` that is not in
//! this form, so that one manifest has exactly one digest; building a package refuses a
//! manifest whose numbers would not read back to the same form.

use serde_json::Value;
use sha2::{Digest as _, Sha256};

/// The prefix of every digest this crate writes or accepts.
pub const DIGEST_PREFIX: &str = "sha256:";

/// `sha256:` followed by the lowercase hex SHA-256 of `bytes`.
pub fn content_digest(bytes: &[u8]) -> String {
    format!("{DIGEST_PREFIX}{}", hex::encode(Sha256::digest(bytes)))
}

/// Whether `text` is a digest as this crate writes them: `sha256:` and 64 lowercase hex digits.
pub fn is_digest(text: &str) -> bool {
    digest_hex(text).is_some()
}

/// The 64 hex digits of a well-formed digest, or `None` when `text` is not one.
pub fn digest_hex(text: &str) -> Option<&str> {
    let hex = text.strip_prefix(DIGEST_PREFIX)?;
    (hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))).then_some(hex)
}

/// Why `text` is not a digest, phrased to follow "`<what>` is not a digest: ".
pub(crate) fn digest_problem(text: &str) -> String {
    match text.strip_prefix(DIGEST_PREFIX) {
        None => format!("it must start with `{DIGEST_PREFIX}`"),
        Some(hex) if hex.len() != 64 => {
            format!("`{DIGEST_PREFIX}` must be followed by 64 hex digits, not {}", hex.len())
        }
        Some(_) => "the hex digits must be lowercase 0-9 and a-f".to_owned(),
    }
}

/// `value` written as canonical JSON (see the module docs).
pub fn canonical_json(value: &Value) -> String {
    let mut out = String::new();
    write_canonical(value, &mut out);
    out
}

fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut members: Vec<(&String, &Value)> = map.iter().collect();
            members.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push('{');
            for (i, (key, member)) in members.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_string(key, out);
                out.push(':');
                write_canonical(member, out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        Value::String(s) => write_string(s, out),
        Value::Number(n) => write_number(n, out),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Null => out.push_str("null"),
    }
}

/// Rule 4: integers as digits; other numbers as Rust's shortest round-trip `Display` of an
/// `f64` (plain notation), negative zero as `0`.
fn write_number(n: &serde_json::Number, out: &mut String) {
    if let Some(i) = n.as_i64() {
        out.push_str(&i.to_string());
    } else if let Some(u) = n.as_u64() {
        out.push_str(&u.to_string());
    } else {
        // A serde_json number is finite; without `arbitrary_precision` it is an i64, a u64 or
        // an f64, and with it `as_f64` still reads it.
        let f = n.as_f64().unwrap_or(0.0);
        if f == 0.0 {
            out.push('0');
        } else {
            out.push_str(&f.to_string());
        }
    }
}

fn write_string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{8}' => out.push_str("\\b"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\u{c}' => out.push_str("\\f"),
            '\r' => out.push_str("\\r"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn content_digest_is_sha256_hex() {
        // The SHA-256 of the empty string, as every implementation knows it.
        assert_eq!(content_digest(b""), "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
        assert!(is_digest(&content_digest(b"abc")));
    }

    #[test]
    fn malformed_digests_are_named() {
        assert!(!is_digest("md5:00"));
        assert!(digest_problem("md5:00").contains("must start with"));
        assert!(!is_digest("sha256:abc"));
        assert!(digest_problem("sha256:abc").contains("not 3"));
        let upper = format!("sha256:{}", "A".repeat(64));
        assert!(!is_digest(&upper));
        assert!(digest_problem(&upper).contains("lowercase"));
    }

    #[test]
    fn canonical_json_sorts_keys_at_every_depth_and_has_no_whitespace() {
        let value = json!({"b": 1, "a": {"z": [true, null, "x"], "m": -3}, "B": 0.5});
        assert_eq!(canonical_json(&value), r#"{"B":0.5,"a":{"m":-3,"z":[true,null,"x"]},"b":1}"#);
    }

    #[test]
    fn canonical_numbers_are_plain_decimals() {
        let cases = [
            (json!(1.0), "1"),
            (json!(0.5), "0.5"),
            (json!(-2.25), "-2.25"),
            (json!(1.5e-7), "0.00000015"),
            (json!(-0.0), "0"),
            (json!(0.1), "0.1"),
            (json!(u64::MAX), "18446744073709551615"),
            (json!(i64::MIN), "-9223372036854775808"),
            (json!(1e21), "1000000000000000000000"),
        ];
        for (value, text) in cases {
            assert_eq!(canonical_json(&value), text, "{value:?}");
        }
    }

    #[test]
    fn canonical_json_escapes_only_what_the_rules_say() {
        let value = json!("q\"b\\n\n\u{1}/é\t");
        assert_eq!(canonical_json(&value), "\"q\\\"b\\\\n\\n\\u0001/é\\t\"");
        // The same bytes serde_json writes for a string, so both agree.
        assert_eq!(canonical_json(&value), serde_json::to_string(&value).unwrap());
    }

    #[test]
    fn canonical_json_reads_back_to_itself() {
        let value = json!({"n": 1.0, "big": 1e100, "small": 1.5e-7, "i": -9007199254740993i64, "u": u64::MAX,
            "f": 0.1, "g": 123.456, "neg": -0.0});
        let text = canonical_json(&value);
        let again: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(canonical_json(&again), text);
    }
}
