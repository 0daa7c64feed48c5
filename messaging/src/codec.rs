//! Payload decoding and encoding.
//!
//! `String` and `Vec<u8>` are the record's bytes as they are (UTF-8 text, raw bytes); every
//! other type is JSON through serde. The choice is made on the concrete type with `TypeId`,
//! which the compiler folds away, so one bound (`DeserializeOwned + 'static`) serves every
//! handler and the builder API needs no wrapper types.

use std::any::{Any, TypeId};

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::failure::Failure;
use crate::retry::ErrorClass;

/// The library kind of a payload that could not be decoded (`dead-letter-exception-class-name`).
pub const DECODE_FAILURE: &str = "messaging::DecodeError";

/// Decodes a record value. `None` is a record without a value (a tombstone): it decodes as
/// JSON `null` does, so a type with a value for that (`Option<T>` gives `None`,
/// `serde_json::Value` gives `Null`) receives it, and any other type fails.
#[inline]
pub(crate) fn decode<T: DeserializeOwned + 'static>(value: Option<&[u8]>) -> Result<T, String> {
    let wanted = TypeId::of::<T>();
    let Some(bytes) = value else {
        let raw = wanted == TypeId::of::<Vec<u8>>() || wanted == TypeId::of::<String>();
        let as_null = if raw {
            None
        } else {
            serde_json::from_slice(b"null").ok()
        };
        return as_null.ok_or_else(|| {
            "the record has no value (a tombstone); a handler taking Option<T> receives it as None"
                .to_owned()
        });
    };
    // The raw value goes through a slot seen as `dyn Any` rather than a box: no allocation
    // beyond the value's own, on every record.
    let mut raw: Option<T> = None;
    let slot: &mut dyn Any = &mut raw;
    if let Some(slot) = slot.downcast_mut::<Option<Vec<u8>>>() {
        *slot = Some(bytes.to_vec());
    } else if let Some(slot) = slot.downcast_mut::<Option<String>>() {
        let text = std::str::from_utf8(bytes)
            .map_err(|error| format!("the value is not UTF-8 text: {error}"))?;
        *slot = Some(text.to_owned());
    } else {
        return serde_json::from_slice(bytes).map_err(|error| {
            format!(
                "the value is not valid JSON for this type: {}",
                shortened(error.to_string())
            )
        });
    }
    Ok(raw.expect("the raw value was just set"))
}

/// The most of serde's message a decode failure's reason keeps.
const MESSAGE_LIMIT: usize = 240;
/// Of which the end, where serde names the line and column.
const MESSAGE_TAIL: usize = 40;

/// serde quotes a rejected string in full ("invalid type: string \"...\", expected u32"): one
/// of 600 KB would be repeated in the dead letter's reason header (a dead letter twice the
/// record's size, which a topic sized for the record refuses: the channel fails, restarts and
/// meets the record again), in log lines and on `/health`. The middle of a longer message is
/// left out, saying how much.
fn shortened(message: String) -> String {
    if message.len() <= MESSAGE_LIMIT {
        return message;
    }
    let mut head = MESSAGE_LIMIT - MESSAGE_TAIL;
    while !message.is_char_boundary(head) {
        head -= 1;
    }
    let mut tail = message.len() - MESSAGE_TAIL;
    while !message.is_char_boundary(tail) {
        tail += 1;
    }
    format!(
        "{} [{} bytes left out] {}",
        &message[..head],
        tail - head,
        &message[tail..]
    )
}

/// Whether `encoded`, a `T` encoded, stands for no value: an `Option`'s `None` or a
/// `serde_json::Value::Null`. Not the text "null" of a `String`, nor a unit struct or `()`,
/// which serialize as JSON `null` too but are values (a keyed event with no fields): written
/// as a tombstone, they would delete their key from a compacted topic.
pub(crate) fn is_no_value<T: 'static>(encoded: &[u8]) -> bool {
    // `Option<_>` of any `_` has no one TypeId: its name says it (checked by the tests, so a
    // change in how the compiler spells it would show).
    encoded == b"null"
        && (TypeId::of::<T>() == TypeId::of::<serde_json::Value>()
            || std::any::type_name::<T>().starts_with("core::option::Option<"))
}

/// Encodes a payload for an outgoing record.
pub(crate) fn encode<T: Serialize + 'static>(value: &T) -> Result<Vec<u8>, Failure> {
    let value: &dyn Any = value;
    if let Some(bytes) = value.downcast_ref::<Vec<u8>>() {
        return Ok(bytes.clone());
    }
    if let Some(text) = value.downcast_ref::<String>() {
        return Ok(text.as_bytes().to_vec());
    }
    if let Some(text) = value.downcast_ref::<&'static str>() {
        return Ok(text.as_bytes().to_vec());
    }
    let value = value
        .downcast_ref::<T>()
        .expect("the same value, seen as its own type");
    // Permanent: a value of this type fails the same way on every attempt (a map with
    // non-text keys, a Serialize that refuses).
    serde_json::to_vec(value).map_err(|error| {
        Failure::of_kind(
            "serde_json::Error",
            format!("cannot encode the payload as JSON: {error}"),
        )
        .marked(ErrorClass::Permanent)
    })
}

/// Encodes, taking ownership, so raw byte and text payloads are moved rather than copied.
pub(crate) fn encode_owned<T: Serialize + 'static>(value: T) -> Result<Vec<u8>, Failure> {
    // Seen as `dyn Any` through a slot rather than a box: no allocation on every record.
    let mut value = Some(value);
    let slot: &mut dyn Any = &mut value;
    if let Some(bytes) = slot.downcast_mut::<Option<Vec<u8>>>() {
        return Ok(bytes.take().expect("the value is in its slot"));
    }
    if let Some(text) = slot.downcast_mut::<Option<String>>() {
        return Ok(text.take().expect("the value is in its slot").into_bytes());
    }
    encode(&value.expect("the value is in its slot"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, serde::Deserialize, serde::Serialize)]
    struct Movie {
        title: String,
        year: u16,
    }

    #[test]
    fn a_rejected_value_is_quoted_in_the_reason_only_in_part() {
        let long = format!(r#"{{"title": "Heat", "year": "{}é"}}"#, "x".repeat(600_000));
        let reason = decode::<Movie>(Some(long.as_bytes()))
            .map(|_| ())
            .unwrap_err();
        assert!(reason.len() < 400, "{} bytes", reason.len());
        assert!(reason.starts_with("the value is not valid JSON for this type: "));
        assert!(reason.contains("bytes left out"), "{reason}");
        assert!(reason.contains("invalid type: string \"xxx"), "{reason}");
        assert!(reason.contains("at line 1 column "), "{reason}");

        let short = decode::<Movie>(Some(br#"{"title": 7, "year": 1995}"#))
            .map(|_| ())
            .unwrap_err();
        assert_eq!(
            short,
            "the value is not valid JSON for this type: invalid type: integer `7`, expected a string at line 1 column 11"
        );
    }

    #[test]
    fn text_and_bytes_are_taken_as_they_are() {
        assert_eq!(
            decode::<String>(Some(b"Schindler's List")).unwrap(),
            "Schindler's List"
        );
        assert_eq!(decode::<Vec<u8>>(Some(&[0, 255])).unwrap(), vec![0, 255]);
        assert_eq!(encode_owned("Heat".to_owned()).unwrap(), b"Heat");
        assert_eq!(encode(&"Heat").unwrap(), b"Heat");
        assert_eq!(encode_owned(vec![1u8, 2]).unwrap(), vec![1, 2]);
        assert_eq!(encode_owned("Heat").unwrap(), b"Heat");
    }

    #[test]
    fn optional_text_and_bytes_are_json() {
        // Only `String` and `Vec<u8>` themselves are raw: wrapped, they are JSON like any type.
        assert_eq!(
            decode::<Option<String>>(Some(br#""Heat""#)).unwrap(),
            Some("Heat".to_owned())
        );
        assert!(decode::<Option<String>>(Some(b"Heat")).is_err());
        assert_eq!(
            decode::<Option<Vec<u8>>>(Some(b"[0,255]")).unwrap(),
            Some(vec![0, 255])
        );
        assert_eq!(encode_owned(Some("Heat".to_owned())).unwrap(), br#""Heat""#);
        assert_eq!(encode_owned(Some(vec![1u8, 2])).unwrap(), b"[1,2]");
    }

    #[test]
    fn other_types_are_json() {
        let movie = Movie {
            title: "Heat".into(),
            year: 1995,
        };
        let bytes = encode_owned(Movie {
            title: "Heat".into(),
            year: 1995,
        })
        .unwrap();
        assert_eq!(bytes, br#"{"title":"Heat","year":1995}"#);
        assert_eq!(decode::<Movie>(Some(&bytes)).unwrap(), movie);
        assert_eq!(encode_owned(0.92f64).unwrap(), b"0.92");
    }

    #[test]
    fn none_and_json_null_are_no_value_but_the_text_null_is_a_value() {
        assert!(is_no_value::<Option<Movie>>(
            &encode_owned(None::<Movie>).unwrap()
        ));
        assert!(is_no_value::<serde_json::Value>(b"null"));
        assert!(!is_no_value::<Option<Movie>>(b"{}"));
        assert!(!is_no_value::<String>(
            &encode_owned("null".to_owned()).unwrap()
        ));
        assert!(!is_no_value::<Vec<u8>>(b"null"));
        #[derive(serde::Serialize)]
        struct Heartbeat;
        assert!(!is_no_value::<Heartbeat>(&encode_owned(Heartbeat).unwrap()));
        assert!(!is_no_value::<()>(&encode_owned(()).unwrap()));
    }

    #[test]
    fn a_payload_json_cannot_encode_is_not_retried() {
        let map: std::collections::BTreeMap<(u8, u8), u8> = [((1, 2), 3)].into();
        let failure = encode(&map).unwrap_err();
        assert_eq!(
            crate::retry::Classifiers::default().class_of(&failure),
            ErrorClass::Permanent
        );
    }

    #[test]
    fn failures_say_what_failed() {
        assert!(decode::<Movie>(Some(b"not json"))
            .unwrap_err()
            .contains("not valid JSON"));
        assert!(decode::<String>(Some(&[0xff]))
            .unwrap_err()
            .contains("not UTF-8"));
        assert!(decode::<Movie>(None).unwrap_err().contains("no value"));
        assert!(decode::<String>(None).unwrap_err().contains("tombstone"));
        assert!(decode::<Vec<u8>>(None).unwrap_err().contains("tombstone"));
    }

    #[test]
    fn a_tombstone_is_none_for_an_option_and_null_for_a_json_value() {
        assert_eq!(decode::<Option<Movie>>(None).unwrap(), None);
        assert_eq!(decode::<Option<String>>(None).unwrap(), None);
        assert_eq!(
            decode::<serde_json::Value>(None).unwrap(),
            serde_json::Value::Null
        );
    }
}
