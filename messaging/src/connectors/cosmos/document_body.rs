//! The document a write sends, as the SDK serializes it (into Cosmos DB's binary JSON by
//! default, or text).

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::ser::{self, Serialize, SerializeMap, Serializer};
use serde_json::Value;

use super::top_level_fields::Key;

pub(crate) enum Body {
    /// The payload's JSON object, already checked as a whole parse would check it
    /// ([`super::top_level_fields::read`]), streamed into the SDK's serializer field by field
    /// in the payload's order: no tree is built.
    Payload {
        json: Vec<u8>,
        /// The id to send in place of the payload's own `id` field (a generated id, or one
        /// read from another field); `None` when the payload's `id` is the id.
        id: Option<String>,
    },
    /// A document parsed whole: its id or partition key lies deeper than the top level.
    Tree(Value),
}

impl Serialize for Body {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Tree(document) => document.serialize(serializer),
            Self::Payload { json, id: None } => serde_transcode::transcode(
                &mut serde_json::Deserializer::from_slice(json),
                serializer,
            ),
            Self::Payload { json, id: Some(id) } => serde_json::Deserializer::from_slice(json)
                .deserialize_map(IdFirst { serializer, id })
                .map_err(ser::Error::custom),
        }
    }
}

/// Whether a payload streamed field by field arrives as it would from a parsed tree. Not when
/// some crate in the application turns on serde_json's `arbitrary_precision`: every number
/// that is not a plain integer then reads as a one-field object, which a streamed payload
/// would hand on as an object (serde_json's serializers and the SDK's know it only from a
/// `serde_json::Number`). The sink then parses every document whole.
pub(crate) fn payloads_stream_exactly() -> bool {
    static EXACT: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    // Compared as text: that object reads back as the number, so comparing the values read
    // back would not see it.
    *EXACT.get_or_init(|| streams_unchanged(br#"{"n":1.5}"#))
}

/// Whether `json` streamed to text JSON is `json` byte for byte.
fn streams_unchanged(json: &[u8]) -> bool {
    let body = Body::Payload {
        json: json.to_vec(),
        id: None,
    };
    serde_json::to_vec(&body).is_ok_and(|streamed| streamed == json)
}

/// Writes `id` first, then every field of the payload's object but its own `id`.
struct IdFirst<'i, S> {
    serializer: S,
    id: &'i str,
}

impl<'de, S: Serializer> Visitor<'de> for IdFirst<'_, S> {
    type Value = S::Ok;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut fields: A) -> Result<S::Ok, A::Error> {
        let mut out = self
            .serializer
            .serialize_map(None)
            .map_err(de::Error::custom)?;
        out.serialize_entry("id", self.id)
            .map_err(de::Error::custom)?;
        while let Some(Key(name)) = fields.next_key::<Key>()? {
            if name == "id" {
                fields.next_value::<IgnoredAny>()?;
                continue;
            }
            out.serialize_key(&*name).map_err(de::Error::custom)?;
            fields.next_value_seed(FieldValue { out: &mut out })?;
        }
        out.end().map_err(de::Error::custom)
    }
}

/// A field's value, streamed from the payload into the map being serialized.
struct FieldValue<'m, M> {
    out: &'m mut M,
}

impl<'de, M: SerializeMap> DeserializeSeed<'de> for FieldValue<'_, M> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        self.out
            .serialize_value(&serde_transcode::Transcoder::new(deserializer))
            .map_err(de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn as_value(body: &Body) -> Value {
        serde_json::from_slice(&serde_json::to_vec(body).unwrap()).unwrap()
    }

    #[test]
    fn payloads_stream_exactly_in_this_build() {
        assert!(payloads_stream_exactly());
        // The check sees a number that streams as anything but itself (here as `300000.0`).
        assert!(!streams_unchanged(br#"{"n":3e5}"#));
    }

    #[test]
    fn a_payload_is_sent_as_it_is() {
        let json = br#"{"id":"a","tenant":"t","n":[1,{"x":"y\n"}],"f":1.5,"z":null}"#;
        let body = Body::Payload {
            json: json.to_vec(),
            id: None,
        };
        assert_eq!(
            as_value(&body),
            serde_json::from_slice::<Value>(json).unwrap()
        );
    }

    #[test]
    fn a_payload_with_an_id_of_its_own_gets_the_id_in_place_of_its_id_field() {
        let json = br#"{"tenant":"t","id":"old","n":{"id":"nested"},"k\"ey":true}"#;
        let body = Body::Payload {
            json: json.to_vec(),
            id: Some("new".into()),
        };
        assert_eq!(
            as_value(&body),
            serde_json::json!({"id": "new", "tenant": "t", "n": {"id": "nested"}, "k\"ey": true})
        );
        // The new id first, the other fields in the payload's order, the old id gone.
        assert_eq!(
            serde_json::to_string(&body).unwrap(),
            r#"{"id":"new","tenant":"t","n":{"id":"nested"},"k\"ey":true}"#
        );
    }

    // The driver crate (whose encoder the SDK uses) is a direct dependency with the emulator only.
    #[cfg(feature = "cosmos-embedded")]
    #[test]
    fn binary_json_gets_the_same_document_from_a_payload_as_from_its_tree() {
        use azure_data_cosmos_driver::binary_json;
        let json = br#"{"id":"a","tenant":"t","count":12345678901,"neg":-3,"f":0.25,"n":[true,{"k":"v"}]}"#;
        let tree = Body::Tree(serde_json::from_slice(json).unwrap());
        let payload = Body::Payload {
            json: json.to_vec(),
            id: None,
        };
        let decode =
            |body: &Body| binary_json::decode(&binary_json::to_vec(body).unwrap()).unwrap();
        assert_eq!(decode(&payload), decode(&tree));
        let replaced = Body::Payload {
            json: json.to_vec(),
            id: Some("b".into()),
        };
        let mut document: Value = serde_json::from_slice(json).unwrap();
        document["id"] = "b".into();
        assert_eq!(decode(&replaced), decode(&Body::Tree(document)));
    }
}
