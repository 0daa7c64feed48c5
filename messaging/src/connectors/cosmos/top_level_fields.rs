//! Reads a few top-level fields of a JSON document (its id and partition key values) in one
//! pass over the payload, without building the document, and checks the rest as parsing it
//! whole would: syntax, numbers in range, strings valid, depth. It also refuses what a whole
//! parse reads in its own way: an object with a field twice (the last wins there) and
//! serde_json's raw-value token.
//!
//! The sink then hands the payload itself to the SDK ([`super::document_body::Body`]), so a
//! document is parsed once for these fields and once as the SDK encodes it, instead of into a
//! tree that is encoded and dropped. What this pass accepts, the encoding cannot refuse.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use smallvec::SmallVec;

/// The field that makes serde_json read an object as a `RawValue`.
const RAW_VALUE_TOKEN: &str = "$serde_json::private::RawValue";

/// Field names of one object held without allocating (a document's top level, or any object in
/// it); more spill to the heap.
const FIELDS_HELD_INLINE: usize = 16;

/// The most fields read at once: an id and a partition key of up to three levels.
pub(crate) const MOST_FIELDS: usize = 4;

/// A field's value, as far as an id or a partition key needs it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Field<'a> {
    Absent,
    Null,
    Bool(bool),
    /// As `serde_json::Number::as_f64` reads it.
    Number(f64),
    String(Cow<'a, str>),
    /// An object or an array.
    Composite,
}

/// The value at a JSON pointer of a parsed document (`None`: nothing there).
impl<'a> From<Option<&'a serde_json::Value>> for Field<'a> {
    fn from(value: Option<&'a serde_json::Value>) -> Self {
        use serde_json::Value;
        match value {
            None => Field::Absent,
            Some(Value::Null) => Field::Null,
            Some(Value::Bool(flag)) => Field::Bool(*flag),
            Some(Value::Number(number)) => Field::Number(number.as_f64().unwrap_or(f64::NAN)),
            Some(Value::String(text)) => Field::String(Cow::Borrowed(text)),
            Some(Value::Array(_) | Value::Object(_)) => Field::Composite,
        }
    }
}

/// `names[i]`'s value in `fields[i]` (a name may repeat). `None` when the payload is not one
/// JSON object, is not valid JSON, or has an object with a field twice: the caller's whole parse
/// then says what is wrong, or keeps the last of each field, as it always did.
pub(crate) fn read<'a>(payload: &'a [u8], names: &[String]) -> Option<[Field<'a>; MOST_FIELDS]> {
    debug_assert!(names.len() <= MOST_FIELDS);
    let mut deserializer = serde_json::Deserializer::from_slice(payload);
    let fields = deserializer.deserialize_map(FieldsVisitor { names }).ok()?;
    deserializer.end().ok()?;
    Some(fields)
}

struct FieldsVisitor<'n> {
    names: &'n [String],
}

impl<'de> Visitor<'de> for FieldsVisitor<'_> {
    type Value = [Field<'de>; MOST_FIELDS];

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut fields = [const { Field::Absent }; MOST_FIELDS];
        let mut keys = FieldNames::default();
        while let Some(key) = map.next_key::<Key>()? {
            let wanted = self.names.iter().position(|name| *name == *key.0);
            keys.push(key.0);
            match wanted {
                Some(index) => {
                    fields[index] = map.next_value::<FieldValue>()?.0;
                    // A name asked for twice (the id's path is also the partition key's).
                    for again in index + 1..self.names.len() {
                        if self.names[again] == self.names[index] {
                            fields[again] = fields[index].clone();
                        }
                    }
                }
                None => {
                    map.next_value::<Checked>()?;
                }
            }
        }
        keys.check()?;
        Ok(fields)
    }
}

/// An object's field names, to find one given twice. Held inline up to
/// [`FIELDS_HELD_INLINE`]: this runs on the consumer's thread for every record, where each
/// allocation contends with the writers freeing theirs.
#[derive(Default)]
struct FieldNames<'de>(SmallVec<[Cow<'de, str>; FIELDS_HELD_INLINE]>);

impl<'de> FieldNames<'de> {
    fn push(&mut self, name: Cow<'de, str>) {
        self.0.push(name);
    }

    fn check<E: de::Error>(&mut self) -> Result<(), E> {
        // serde_json's `raw_value` (on in this build) reads an object with this field as raw
        // JSON: streamed, it would be a plain object. The whole parse does what it always did.
        if self.0.iter().any(|name| name == RAW_VALUE_TOKEN) {
            return Err(E::custom("an object that serde_json reads as a raw value"));
        }
        self.0.sort_unstable();
        if self.0.windows(2).any(|pair| pair[0] == pair[1]) {
            return Err(E::custom("an object has a field twice"));
        }
        Ok(())
    }
}

/// A field name, borrowed from the payload unless it has escapes.
pub(crate) struct Key<'de>(pub(crate) Cow<'de, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_str(KeyVisitor)
    }
}

struct KeyVisitor;

impl<'de> Visitor<'de> for KeyVisitor {
    type Value = Key<'de>;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("a field name")
    }

    fn visit_borrowed_str<E>(self, name: &'de str) -> Result<Self::Value, E> {
        Ok(Key(Cow::Borrowed(name)))
    }

    fn visit_str<E>(self, name: &str) -> Result<Self::Value, E> {
        Ok(Key(Cow::Owned(name.to_owned())))
    }
}

/// A value checked as a whole parse would check it, then dropped: unlike serde's
/// `IgnoredAny`, which serde_json skips by syntax alone (`1e400`, a lone surrogate, invalid
/// UTF-8 in a string or deep nesting would pass it).
struct Checked;

impl<'de> Deserialize<'de> for Checked {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(CheckedVisitor)
    }
}

struct CheckedVisitor;

impl<'de> Visitor<'de> for CheckedVisitor {
    type Value = Checked;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("a JSON value")
    }

    fn visit_unit<E>(self) -> Result<Checked, E> {
        Ok(Checked)
    }

    fn visit_bool<E>(self, _: bool) -> Result<Checked, E> {
        Ok(Checked)
    }

    fn visit_u64<E>(self, _: u64) -> Result<Checked, E> {
        Ok(Checked)
    }

    fn visit_i64<E>(self, _: i64) -> Result<Checked, E> {
        Ok(Checked)
    }

    fn visit_f64<E>(self, _: f64) -> Result<Checked, E> {
        Ok(Checked)
    }

    fn visit_str<E>(self, _: &str) -> Result<Checked, E> {
        Ok(Checked)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Checked, A::Error> {
        let mut keys = FieldNames::default();
        while let Some(key) = map.next_key::<Key>()? {
            keys.push(key.0);
            map.next_value::<Checked>()?;
        }
        keys.check()?;
        Ok(Checked)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Checked, A::Error> {
        while seq.next_element::<Checked>()?.is_some() {}
        Ok(Checked)
    }
}

/// A wanted field's value; nested objects and arrays are checked, not built.
struct FieldValue<'de>(Field<'de>);

impl<'de> Deserialize<'de> for FieldValue<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(FieldValueVisitor)
    }
}

struct FieldValueVisitor;

impl<'de> Visitor<'de> for FieldValueVisitor {
    type Value = FieldValue<'de>;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("a JSON value")
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(FieldValue(Field::Null))
    }

    fn visit_bool<E>(self, flag: bool) -> Result<Self::Value, E> {
        Ok(FieldValue(Field::Bool(flag)))
    }

    fn visit_u64<E>(self, number: u64) -> Result<Self::Value, E> {
        Ok(FieldValue(Field::Number(number as f64)))
    }

    fn visit_i64<E>(self, number: i64) -> Result<Self::Value, E> {
        Ok(FieldValue(Field::Number(number as f64)))
    }

    fn visit_f64<E>(self, number: f64) -> Result<Self::Value, E> {
        Ok(FieldValue(Field::Number(number)))
    }

    fn visit_borrowed_str<E>(self, text: &'de str) -> Result<Self::Value, E> {
        Ok(FieldValue(Field::String(Cow::Borrowed(text))))
    }

    // A string with escapes is unescaped into a copy.
    fn visit_str<E>(self, text: &str) -> Result<Self::Value, E> {
        Ok(FieldValue(Field::String(Cow::Owned(text.to_owned()))))
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        CheckedVisitor.visit_map(map)?;
        Ok(FieldValue(Field::Composite))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        CheckedVisitor.visit_seq(seq)?;
        Ok(FieldValue(Field::Composite))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn string(text: &str) -> Field<'_> {
        Field::String(Cow::Borrowed(text))
    }

    fn read<'a>(payload: &'a [u8], names: &[&str]) -> Option<[Field<'a>; MOST_FIELDS]> {
        let names: Vec<String> = names.iter().map(|name| name.to_string()).collect();
        super::read(payload, &names)
    }

    #[test]
    fn reads_the_wanted_fields_and_skips_the_rest() {
        let payload =
            br#" {"note":{"id":"nested"},"tenant":"t\"1","id":"a","n":[1,{"x":2}],"score":-2.5} "#;
        let fields = read(payload, &["id", "tenant", "score", "missing"]).unwrap();
        assert_eq!(
            fields,
            [
                string("a"),
                string("t\"1"),
                Field::Number(-2.5),
                Field::Absent
            ]
        );
    }

    #[test]
    fn a_name_asked_for_twice_gets_its_value_twice() {
        let fields = read(br#"{"id":"a"}"#, &["id", "id"]).unwrap();
        assert_eq!(fields[..2], [string("a"), string("a")]);
    }

    #[test]
    fn reads_every_kind_of_value() {
        let payload = br#"{"a":null,"b":true,"c":7,"d":[]}"#;
        let fields = read(payload, &["a", "b", "c", "d"]).unwrap();
        assert_eq!(
            fields,
            [
                Field::Null,
                Field::Bool(true),
                Field::Number(7.0),
                Field::Composite
            ]
        );
    }

    #[test]
    fn refuses_what_a_whole_parse_refuses() {
        let deep = format!(
            "{{\"id\":\"a\",\"x\":{}1{}}}",
            "[".repeat(200),
            "]".repeat(200)
        );
        for payload in [
            &br#"["id"]"#[..],
            br#""id""#,
            br#"{"id":"a""#,
            br#"{"id":"a"} {}"#,
            br#"{"id":"a",}"#,
            b"\xff",
            br#"{"id":"a","x":1e400}"#,
            br#"{"id":"a","x":{"y":[1e400]}}"#,
            br#"{"id":"a","x":"\ud800"}"#,
            br#"{"id":{"k":"\udc00"}}"#,
            b"{\"id\":\"a\",\"x\":\"\xff\"}",
            b"{\"id\":\"a\",\"x\":{\"\xff\":1}}",
            deep.as_bytes(),
        ] {
            let shown = String::from_utf8_lossy(payload);
            let whole = serde_json::from_slice::<serde_json::Value>(payload);
            assert!(whole.is_err() || !whole.unwrap().is_object(), "{shown}");
            assert_eq!(read(payload, &["id"]), None, "{shown}");
        }
    }

    #[test]
    fn refuses_a_field_twice_or_the_raw_value_token_at_any_depth() {
        for payload in [
            &br#"{"id":"a","id":"b"}"#[..],
            br#"{"id":"a","x":1,"x":2}"#,
            br#"{"id":"a","x":{"y":1,"y":2}}"#,
            br#"{"id":"a","x":[{"y":1,"\u0079":2}]}"#,
            br#"{"id":"a","x":{"$serde_json::private::RawValue":"5"}}"#,
        ] {
            assert_eq!(
                read(payload, &["id"]),
                None,
                "{}",
                String::from_utf8_lossy(payload)
            );
        }
        assert!(read(br#"{"id":"a","x":{"id":1},"y":[{"id":2}]}"#, &["id"]).is_some());
    }

    #[test]
    fn objects_with_more_fields_than_held_inline_are_checked_too() {
        let fields = |count: usize| -> String {
            (0..count)
                .map(|field| format!(r#","f{field}":{field}"#))
                .collect()
        };
        let many = FIELDS_HELD_INLINE + 4;
        let distinct = format!(
            r#"{{"id":"a"{},"x":{{"y":0{}}}}}"#,
            fields(many),
            fields(many)
        );
        assert_eq!(read(distinct.as_bytes(), &["id"]).unwrap()[0], string("a"));
        let repeated_late = format!(r#"{{"id":"a"{},"f{}":0}}"#, fields(many), many - 1);
        assert_eq!(read(repeated_late.as_bytes(), &["id"]), None);
    }

    #[test]
    fn a_field_name_is_read_unescaped() {
        let fields = read(br#"{"\u0069d":"a"}"#, &["id"]).unwrap();
        assert_eq!(fields[0], string("a"));
    }
}
