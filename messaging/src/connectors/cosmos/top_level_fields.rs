//! Reads a few top-level fields of a JSON document (its id and partition key values) in one
//! pass over the payload, without building the document: every other field is only checked
//! for syntax and skipped.
//!
//! The sink then hands the payload itself to the SDK ([`super::document_body::Body`]), so a
//! document is parsed once for these fields and once as the SDK encodes it, instead of into a
//! tree that is encoded and dropped.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};

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

/// `names[i]`'s value in `fields[i]` (a name may repeat); `None` when the payload is not one JSON object, or names a
/// wanted field twice (the caller's full parse then says what is wrong, or keeps the last).
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
        let mut seen = [false; MOST_FIELDS];
        while let Some(wanted) = map.next_key_seed(WantedKey { names: self.names })? {
            match wanted {
                Some(index) if seen[index] => {
                    return Err(de::Error::custom("a wanted field appears twice"))
                }
                Some(index) => {
                    seen[index] = true;
                    fields[index] = map.next_value::<FieldValue>()?.0;
                    // A name asked for twice (the id's path is also the partition key's).
                    for again in index + 1..self.names.len() {
                        if self.names[again] == self.names[index] {
                            seen[again] = true;
                            fields[again] = fields[index].clone();
                        }
                    }
                }
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(fields)
    }
}

/// A key, compared with the wanted names where it lies in the payload (no copy).
struct WantedKey<'n> {
    names: &'n [String],
}

impl<'de> DeserializeSeed<'de> for WantedKey<'_> {
    type Value = Option<usize>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for WantedKey<'_> {
    type Value = Option<usize>;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("a field name")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<Self::Value, E> {
        Ok(self.names.iter().position(|name| name == key))
    }
}

/// A wanted field's value; nested objects and arrays are skipped, not built.
struct FieldValue<'de>(Field<'de>);

impl<'de> de::Deserialize<'de> for FieldValue<'de> {
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
        IgnoredAny.visit_map(map)?;
        Ok(FieldValue(Field::Composite))
    }

    fn visit_seq<A: de::SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        IgnoredAny.visit_seq(seq)?;
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
    fn refuses_what_is_not_one_json_object_or_names_a_wanted_field_twice() {
        for payload in [
            &br#"["id"]"#[..],
            br#""id""#,
            br#"{"id":"a""#,
            br#"{"id":"a"} {}"#,
            br#"{"id":"a","id":"b"}"#,
            br#"{"id":"a",}"#,
            b"\xff",
        ] {
            assert_eq!(read(payload, &["id"]), None, "{payload:?}");
        }
        // A field not wanted may appear twice: it is passed on as it is.
        assert!(read(br#"{"id":"a","x":1,"x":2}"#, &["id"]).is_some());
    }
}
