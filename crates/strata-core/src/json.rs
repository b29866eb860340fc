//! The one JSON checker: stored JSON (payloads and metadata) is checked with it on the way in,
//! and stored metadata again on the way out, so that what a store accepts every reader can
//! parse.

use std::fmt;

use serde::de::{DeserializeSeed, MapAccess, SeqAccess, Visitor};

/// Checks that `bytes` are one JSON document that parses into a `serde_json::Value`: every
/// string decoded (escapes, surrogate pairs, UTF-8), every number converted (`1e400` is out of
/// range), nothing after the document but whitespace, and arrays and objects nested at most
/// `max_depth` levels (`None`: only serde_json's own recursion limit of 128). Nothing is built.
pub(crate) fn check(bytes: &[u8], max_depth: Option<usize>) -> Result<(), serde_json::Error> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    Check {
        depth_left: max_depth,
    }
    .deserialize(&mut de)?;
    de.end()
}

/// A value to check, with how many more levels of nesting it may open.
#[derive(Clone, Copy)]
struct Check {
    depth_left: Option<usize>,
}

impl Check {
    /// The check for the values inside an array or object, or an error when this value may
    /// not open another level.
    fn inner<E: serde::de::Error>(self) -> Result<Check, E> {
        match self.depth_left {
            None => Ok(self),
            Some(0) => Err(E::custom(format_args!(
                "arrays and objects are nested deeper than {} levels",
                crate::limits::JSON_NESTING_MAX_DEPTH
            ))),
            Some(n) => Ok(Check {
                depth_left: Some(n - 1),
            }),
        }
    }
}

impl<'de> DeserializeSeed<'de> for Check {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Check {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let inner = self.inner()?;
        while seq.next_element_seed(inner)?.is_some() {}
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let inner = self.inner()?;
        while map.next_key_seed(Key)?.is_some() {
            map.next_value_seed(inner)?;
        }
        Ok(())
    }
}

/// Object keys that serde_json takes for its own markers when they come first in an object
/// (with its `raw_value` and `arbitrary_precision` features, which readers of Strata's pages
/// may have on): such an object does not parse as a `Value` there.
const RESERVED_KEYS: [&str; 2] = [
    "$serde_json::private::RawValue",
    "$serde_json::private::Number",
];

/// An object key: any string but serde_json's markers.
#[derive(Clone, Copy)]
struct Key;

impl<'de> DeserializeSeed<'de> for Key {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for Key {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object key")
    }
    fn visit_str<E: serde::de::Error>(self, key: &str) -> Result<(), E> {
        if RESERVED_KEYS.contains(&key) {
            return Err(E::custom(format_args!(
                "the object key {key:?} is reserved: JSON readers built on serde_json take it for a marker"
            )));
        }
        Ok(())
    }
}

/// serde_json's recursion limit: a reader using serde_json (the server's client, `strata read`,
/// `strata tail`, the toolkit's decoders) refuses a document nested deeper than this.
pub(crate) const SERDE_JSON_RECURSION_LIMIT: usize = 128;

// An event's payload and metadata sit three levels deep in a read page (the page, its `events`
// array, the event); a bounded document there still parses with serde_json, with room to spare.
const _: () = assert!(crate::limits::JSON_NESTING_MAX_DEPTH + 3 < SERDE_JSON_RECURSION_LIMIT);

/// Whether JSON text holds the escape `\u0000` (the character U+0000), which PostgreSQL's
/// `jsonb` cannot store.
///
/// ```
/// assert!(strata_core::json_has_nul_escape(br#"{"a":"x\u0000"}"#));
/// assert!(!strata_core::json_has_nul_escape(br#"{"a":"x\\u0000"}"#));
/// ```
pub fn has_nul_escape(json: &[u8]) -> bool {
    let mut backslashes = 0usize;
    for (i, &b) in json.iter().enumerate() {
        if b == b'\\' {
            backslashes += 1;
            continue;
        }
        if backslashes % 2 == 1 && b == b'u' && json.get(i + 1..i + 5).is_some_and(|h| h == b"0000")
        {
            return true;
        }
        backslashes = 0;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::JSON_NESTING_MAX_DEPTH;

    fn nested(levels: usize) -> String {
        format!("{}1{}", "[".repeat(levels), "]".repeat(levels))
    }

    #[test]
    fn what_a_value_parse_refuses_is_refused() {
        for bad in [
            &br#""\ud800""#[..],
            br#"{"a":"\udc00x"}"#,
            br#"1e400"#,
            br#"[-1e400]"#,
            b"\"\xff\"",
            br#""\q""#,
            br#"{"a":1} {"b":2}"#,
            br#"{"a":1} x"#,
            br#"{"a":1"#,
        ] {
            let text = String::from_utf8_lossy(bad);
            assert!(
                serde_json::from_slice::<serde_json::Value>(bad).is_err(),
                "{text}"
            );
            assert!(check(bad, None).is_err(), "{text} was accepted");
            assert!(
                check(bad, Some(JSON_NESTING_MAX_DEPTH)).is_err(),
                "{text} was accepted"
            );
        }
        for fine in [
            &br#""\ud83d\ude00""#[..],
            br#"  {"a": [1, {"b": "}\"{"}], "c": null, "n": -0.5e-3}  "#,
            br#"123456789012345678901234567890"#,
            b"null",
        ] {
            assert!(serde_json::from_slice::<serde_json::Value>(fine).is_ok());
            assert!(check(fine, Some(JSON_NESTING_MAX_DEPTH)).is_ok());
        }
    }

    #[test]
    fn serde_json_markers_are_refused_as_keys() {
        // With its `raw_value` feature, serde_json reads the first as the number 1 (a reader
        // would see another value than the one stored) and refuses the second.
        for bad in [
            &br#"{"a":[{"$serde_json::private::RawValue":"1"}]}"#[..],
            br#"{"$serde_json::private::RawValue":[1]}"#,
            br#"{"x":1,"$serde_json::private::Number":"1"}"#,
        ] {
            let e = check(bad, Some(JSON_NESTING_MAX_DEPTH)).unwrap_err();
            assert!(e.to_string().contains("is reserved"), "{e}");
        }
        assert!(check(br#"{"$serde_json::private::RawValueX":1}"#, None).is_ok());
    }

    #[test]
    fn nesting_is_bounded() {
        let at_limit = nested(JSON_NESTING_MAX_DEPTH);
        assert!(check(at_limit.as_bytes(), Some(JSON_NESTING_MAX_DEPTH)).is_ok());
        let over = nested(JSON_NESTING_MAX_DEPTH + 1);
        let e = check(over.as_bytes(), Some(JSON_NESTING_MAX_DEPTH)).unwrap_err();
        assert!(e.to_string().contains("nested deeper than"), "{e}");
        // Objects count as arrays do.
        let objects = format!(
            "{}1{}",
            r#"{"a":"#.repeat(JSON_NESTING_MAX_DEPTH + 1),
            "}".repeat(JSON_NESTING_MAX_DEPTH + 1)
        );
        assert!(check(objects.as_bytes(), Some(JSON_NESTING_MAX_DEPTH)).is_err());
        // Without a bound of its own, serde_json's applies (and 100,000 levels do not
        // overflow the stack).
        assert!(check(nested(SERDE_JSON_RECURSION_LIMIT - 1).as_bytes(), None).is_ok());
        assert!(check(nested(100_000).as_bytes(), None).is_err());
        assert!(check(nested(100_000).as_bytes(), Some(JSON_NESTING_MAX_DEPTH)).is_err());
    }
}
