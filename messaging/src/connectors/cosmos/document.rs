//! From an outgoing message to a Cosmos DB write: the document, its `id` (by `id.strategy`) and
//! its partition key (by the container's partition key paths).
//!
//! Anything wrong here is wrong with the record, not with Cosmos DB: a permanent failure, which
//! the inbound channel's failure strategy takes (with the record's original bytes).

use std::hash::{Hash, Hasher};

use azure_data_cosmos::models::{PartitionKey, PartitionKeyValue};
use serde_json::Value;

use super::answer::cosmos_failure;
use super::document_body::{payloads_stream_exactly, Body};
use super::top_level_fields::{self, Field, MOST_FIELDS};
use crate::config::{IdStrategy, TemplatePart};
use crate::connectors::kafka::KafkaMetadata;
use crate::failure::Failure;
use crate::metadata::Metadata;

/// What to do with one document.
pub(crate) enum Operation {
    Upsert(Body),
    Create(Body),
    /// A tombstone (an empty or `null` payload) with `delete-on-tombstone = true`.
    Delete,
}

/// One prepared write.
pub(crate) struct Write {
    pub(crate) id: String,
    pub(crate) partition_key: PartitionKey,
    /// A hash of the document's identity in its container (partition key and id), for ordering
    /// writes: two documents with one hash only wait for each other, never overwrite.
    pub(crate) identity: u64,
    pub(crate) operation: Operation,
}

/// How a sink turns payloads into writes.
pub(crate) struct DocumentShape {
    id: IdStrategy,
    create: bool,
    delete_on_tombstone: bool,
    /// The container's partition key paths, read from its definition (1 to 3: hierarchical).
    partition_key_paths: Vec<String>,
    /// When the partition key paths (and a `value` id's path) are all one level deep: the
    /// field names to read from the payload as it is, the partition key's first and the id's
    /// last. `None`: each document is parsed whole (also when streaming a payload would not be
    /// exact in this build: see `payloads_stream_exactly`).
    top_level: Option<Vec<String>>,
}

/// Characters Cosmos DB does not accept in an id: a generated id has them replaced with `_`.
const FORBIDDEN_IN_ID: [char; 4] = ['/', '\\', '?', '#'];

impl DocumentShape {
    pub(crate) fn new(
        id: IdStrategy,
        create: bool,
        delete_on_tombstone: bool,
        partition_key_paths: Vec<String>,
    ) -> Self {
        let id_path = match &id {
            IdStrategy::Value { pointer } => Some(pointer.as_str()),
            _ => None,
        };
        let top_level = partition_key_paths
            .iter()
            .map(String::as_str)
            .chain(id_path)
            .map(top_level_name)
            .collect::<Option<Vec<_>>>()
            .filter(|names| names.len() <= MOST_FIELDS && payloads_stream_exactly());
        Self {
            id,
            create,
            delete_on_tombstone,
            partition_key_paths,
            top_level,
        }
    }

    pub(crate) fn prepare(&self, payload: Vec<u8>, metadata: &Metadata) -> Result<Write, Failure> {
        let input = metadata.get::<KafkaMetadata>();
        let tombstone = payload.is_empty() || payload.trim_ascii() == b"null";
        if tombstone {
            if !self.delete_on_tombstone {
                return Err(rejected(
                    "a tombstone (empty or null value) reached the Cosmos DB sink; set delete-on-tombstone = true to delete the document instead",
                ));
            }
            let id = match &self.id {
                IdStrategy::Value { .. } => {
                    return Err(rejected(
                        "a tombstone has no document to read the id from; use id.strategy = key or template to delete by tombstone",
                    ))
                }
                generated => generated_id(generated, input)?,
            };
            // A tombstone carries no document, so its partition key is its id: the start
            // refuses delete-on-tombstone unless the container is partitioned by /id.
            let partition_key = PartitionKey::from(id.clone());
            return Ok(self.write(id, partition_key, Operation::Delete));
        }
        if let Some(names) = &self.top_level {
            if let Some(fields) = top_level_fields::read(&payload, names) {
                let (id, values, replace_id) = self.identify(input, &fields)?;
                // The fields are read (and copied where needed): the payload can go.
                drop(fields);
                let body = Body::Payload {
                    json: payload,
                    id: replace_id.then(|| id.clone()),
                };
                return self.document_write(id, values, body);
            }
            // Not one valid JSON object, or an object with a field twice: the whole parse
            // below says what is wrong, or keeps the last of each field, as it always did.
        }
        self.prepare_tree(&payload, input)
    }

    /// The id, the partition key values, and whether the id replaces the document's own `id`,
    /// from the document's top-level fields.
    fn identify(
        &self,
        input: Option<&KafkaMetadata>,
        fields: &[Field<'_>; MOST_FIELDS],
    ) -> Result<(String, Vec<PartitionKeyValue>, bool), Failure> {
        let key_fields = self.partition_key_paths.len();
        let (id, replace_id) = match &self.id {
            IdStrategy::Value { pointer } => {
                let id = document_id(&fields[key_fields], pointer)?;
                // Read from a field other than `id`: the document gets it as its `id` too.
                (id, pointer != "/id")
            }
            generated => (generated_id(generated, input)?, true),
        };
        let names = self.top_level.as_deref().unwrap_or_default();
        // A partition key at `/id` is the id the document is written with.
        let written_id = Field::String(id.as_str().into());
        let values = fields[..key_fields]
            .iter()
            .zip(names)
            .map(|(field, name)| {
                if replace_id && name == "id" {
                    &written_id
                } else {
                    field
                }
            })
            .zip(&self.partition_key_paths)
            .map(|(field, path)| partition_key_value(field, path))
            .collect::<Result<Vec<_>, _>>()?;
        Ok((id, values, replace_id))
    }

    /// A document parsed whole, for paths deeper than the top level or a payload the reading
    /// of top-level fields refused.
    fn prepare_tree(
        &self,
        payload: &[u8],
        input: Option<&KafkaMetadata>,
    ) -> Result<Write, Failure> {
        let mut document: Value = serde_json::from_slice(payload)
            .map_err(|error| rejected(format!("the payload is not JSON: {error}")))?;
        if !document.is_object() {
            return Err(rejected(
                "the payload is JSON but not an object (a document)",
            ));
        }
        let id = match &self.id {
            IdStrategy::Value { pointer } => {
                document_id(&Field::from(document.pointer(pointer)), pointer)?
            }
            generated => generated_id(generated, input)?,
        };
        document["id"] = Value::String(id.clone());
        let values = self
            .partition_key_paths
            .iter()
            .map(|path| partition_key_value(&Field::from(document.pointer(path)), path))
            .collect::<Result<Vec<_>, _>>()?;
        self.document_write(id, values, Body::Tree(document))
    }

    fn document_write(
        &self,
        id: String,
        values: Vec<PartitionKeyValue>,
        body: Body,
    ) -> Result<Write, Failure> {
        let partition_key = PartitionKey::try_from(values)
            .map_err(|_| rejected("the document's partition key values are not accepted"))?;
        let operation = if self.create {
            Operation::Create(body)
        } else {
            Operation::Upsert(body)
        };
        Ok(self.write(id, partition_key, operation))
    }

    fn write(&self, id: String, partition_key: PartitionKey, operation: Operation) -> Write {
        let mut identity = rustc_hash::FxHasher::default();
        (&partition_key, &id).hash(&mut identity);
        Write {
            identity: identity.finish(),
            id,
            partition_key,
            operation,
        }
    }
}

/// The field name a JSON pointer of one segment names (`/a~1b` is `a/b`); `None` for a deeper
/// path.
fn top_level_name(pointer: &str) -> Option<String> {
    let name = pointer.strip_prefix('/')?;
    (!name.contains('/')).then(|| name.replace("~1", "/").replace("~0", "~"))
}

/// The id read from the document (`id.strategy = value`), from the field at `pointer`.
fn document_id(field: &Field<'_>, pointer: &str) -> Result<String, Failure> {
    let id = match field {
        Field::String(id) => id,
        Field::Absent => return Err(rejected(format!("the document has no id at {pointer}"))),
        _ => {
            return Err(rejected(format!(
                "the document's id at {pointer} is not a string"
            )))
        }
    };
    if id.is_empty() || id.contains(FORBIDDEN_IN_ID) {
        return Err(rejected(
            "the document's id is empty or contains one of / \\ ? # (Cosmos DB rejects those)",
        ));
    }
    Ok(id.clone().into_owned())
}

/// A partition key value, from the field at `path`.
fn partition_key_value(field: &Field<'_>, path: &str) -> Result<PartitionKeyValue, Failure> {
    match field {
        Field::Absent => Ok(PartitionKeyValue::UNDEFINED),
        Field::Null => Ok(PartitionKeyValue::NULL),
        Field::String(text) => Ok(PartitionKeyValue::from(text.clone().into_owned())),
        Field::Bool(flag) => Ok(PartitionKeyValue::from(*flag)),
        Field::Number(number) => PartitionKeyValue::try_from(*number)
            .map_err(|_| rejected(format!("the partition key at {path} is not a finite number"))),
        Field::Composite => Err(rejected(format!(
            "the partition key at {path} is an object or an array; Cosmos DB takes a string, number, boolean or null"
        ))),
    }
}

fn generated_id(strategy: &IdStrategy, input: Option<&KafkaMetadata>) -> Result<String, Failure> {
    let no_input = || {
        rejected("the id strategy needs the Kafka record the output came from, and this message has none (sent by an Emitter?)")
    };
    // A key that is not text (UUID bytes, Avro) is refused rather than read lossily: distinct
    // keys would collapse onto one id and overwrite each other's document.
    let key = |input: &KafkaMetadata| {
        match input.key() {
        None => Err(rejected("the id strategy needs the record key, and the record has none")),
        Some(key) => std::str::from_utf8(key).map(str::to_owned).map_err(|_| {
            rejected("the record key is not UTF-8 text, so it cannot be an id; use id.strategy = kafka-metadata or value")
        }),
    }
    };
    let id = match strategy {
        IdStrategy::Value { .. } => unreachable!("a value id is read from the document"),
        IdStrategy::Key => key(input.ok_or_else(no_input)?)?,
        IdStrategy::KafkaMetadata => {
            let input = input.ok_or_else(no_input)?;
            format!("{}-{}-{}", input.topic(), input.partition(), input.offset())
        }
        IdStrategy::Template(parts) => {
            let input = input.ok_or_else(no_input)?;
            let mut id = String::new();
            for part in parts {
                match part {
                    TemplatePart::Text(text) => id.push_str(text),
                    TemplatePart::Topic => id.push_str(input.topic()),
                    TemplatePart::Partition => id.push_str(&input.partition().to_string()),
                    TemplatePart::Offset => id.push_str(&input.offset().to_string()),
                    TemplatePart::Key => id.push_str(&key(input)?),
                }
            }
            id
        }
    };
    if id.is_empty() {
        return Err(rejected("the generated id is empty"));
    }
    Ok(id.replace(FORBIDDEN_IN_ID, "_"))
}

fn rejected(reason: impl Into<String>) -> Failure {
    cosmos_failure(reason.into())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn metadata() -> Metadata {
        Metadata::new().with(KafkaMetadata {
            topic: Arc::from("orders"),
            partition: 3,
            offset: 42,
            timestamp: None,
            key: Some(b"k/1".to_vec()),
            headers: Vec::new(),
        })
    }

    fn shape(id: IdStrategy, paths: &[&str]) -> DocumentShape {
        let paths = paths.iter().map(|path| path.to_string()).collect();
        DocumentShape::new(id, false, false, paths)
    }

    fn value_id(pointer: &str) -> IdStrategy {
        IdStrategy::Value {
            pointer: pointer.into(),
        }
    }

    /// What a write does, to compare the two ways of preparing it: its id, partition key,
    /// identity, and the document as text JSON sends it (fields sorted, as a tree has them).
    fn outcome(
        write: Result<Write, Failure>,
    ) -> Result<(String, PartitionKey, u64, Value), String> {
        let write = write.map_err(|failure| failure.reason().to_string())?;
        let document = serde_json::from_slice(&serde_json::to_vec(body(&write)).unwrap()).unwrap();
        Ok((write.id, write.partition_key, write.identity, document))
    }

    fn body(write: &Write) -> &Body {
        match &write.operation {
            Operation::Upsert(body) | Operation::Create(body) => body,
            Operation::Delete => panic!("a document write"),
        }
    }

    fn streamed(write: &Result<Write, Failure>) -> bool {
        write
            .as_ref()
            .is_ok_and(|write| matches!(body(write), Body::Payload { .. }))
    }

    /// Payloads with a field twice: parsed whole, which keeps the last of each.
    const REPEATED_FIELDS: [&str; 2] = [
        r#"{"id":"a","id":"b","tenant":"t","tenant":"u","orderId":"o","orderId":"p"}"#,
        r#"{"id":"a","x":1,"x":2,"tenant":"t","orderId":"o"}"#,
    ];

    #[test]
    fn a_document_read_at_the_top_level_is_written_as_when_parsed_whole() {
        let shapes = [
            shape(value_id("/id"), &["/id"]),
            shape(value_id("/id"), &["/tenant"]),
            shape(value_id("/tenant"), &["/tenant"]),
            shape(value_id("/orderId"), &["/tenant", "/user"]),
            shape(value_id("/orderId"), &["/id"]),
            shape(IdStrategy::KafkaMetadata, &["/id"]),
            shape(IdStrategy::Key, &["/tenant"]),
            shape(value_id("/"), &["/~01"]),
            shape(
                IdStrategy::Template(vec![
                    TemplatePart::Topic,
                    TemplatePart::Text("-".into()),
                    TemplatePart::Key,
                ]),
                &["/a~1b", "/c~0d"],
            ),
        ];
        let payloads = [
            r#"{"id":"a","tenant":"t","orderId":"o1","user":"u","a/b":"x","c~d":1}"#,
            r#"{"id":"a","tenant":7,"orderId":"o1","user":true,"a/b":null,"c~d":-0.5}"#,
            r#"{"id":"a","tenant":12345678901234567890,"orderId":"o\"1","user":"\u00e9"}"#,
            r#"{"id":"a","tenant":{"x":1},"orderId":"o1"}"#,
            r#"{"id":"a","tenant":[1],"orderId":"o1","a/b":[]}"#,
            r#"{"id":"a","orderId":"o1"}"#,
            r#"{"id":5,"tenant":"t","orderId":6}"#,
            r#"{"id":"","tenant":"t","orderId":""}"#,
            r#"{"id":"a/b","tenant":"t","orderId":"o#1"}"#,
            r#"{"tenant":"t"}"#,
            REPEATED_FIELDS[0],
            REPEATED_FIELDS[1],
            r#"[{"id":"a"}]"#,
            r#"{"id":"a""#,
            r#"not json"#,
            r#"{"id":"a","tenant":"t","orderId":"o"} trailing"#,
            r#"{"\u0069d":"a","tenant":"t","orderId":"o","n":{"k":[1,2.5,-0,18446744073709551615]}}"#,
            r#"{"id":"a","tenant":"t","orderId":"o","x":1e400}"#,
            r#"{"id":"a","tenant":"t","orderId":"o","x":"\ud800"}"#,
        ];
        for shape in &shapes {
            assert!(shape.top_level.is_some(), "every path is one level deep");
            for payload in payloads {
                let payload = payload.as_bytes();
                let input = metadata();
                let prepared = shape.prepare(payload.to_vec(), &input);
                let parsed_whole = shape.prepare_tree(payload, input.get());
                // Every payload here that makes a write is streamed, but those with a field
                // twice.
                let repeats = REPEATED_FIELDS
                    .iter()
                    .any(|repeated| repeated.as_bytes() == payload);
                assert_eq!(
                    streamed(&prepared),
                    prepared.is_ok() && !repeats,
                    "{}",
                    String::from_utf8_lossy(payload)
                );
                #[cfg(feature = "cosmos-embedded")]
                if let (Ok(prepared), Ok(parsed_whole)) = (&prepared, &parsed_whole) {
                    use azure_data_cosmos_driver::binary_json;
                    let binary = |write: &Write| {
                        binary_json::decode(&binary_json::to_vec(body(write)).unwrap()).unwrap()
                    };
                    assert_eq!(binary(prepared), binary(parsed_whole));
                }
                assert_eq!(
                    outcome(prepared),
                    outcome(parsed_whole),
                    "{}",
                    String::from_utf8_lossy(payload)
                );
            }
        }
    }

    #[test]
    fn what_a_whole_parse_refuses_is_refused_before_the_write() {
        let shape = shape(value_id("/id"), &["/tenant"]);
        for payload in [
            &br#"{"id":"a","tenant":"t","x":1e400}"#[..],
            br#"{"id":"a","tenant":"t","x":"\ud800"}"#,
            b"{\"id\":\"a\",\"tenant\":\"t\",\"x\":\"\xff\"}",
        ] {
            let failure = shape.prepare(payload.to_vec(), &metadata()).err().unwrap();
            assert!(
                failure.reason().starts_with("the payload is not JSON"),
                "{}",
                failure.reason()
            );
        }
    }

    #[test]
    fn a_create_streams_its_payload_too() {
        let paths = vec!["/tenant".to_string()];
        let shape = DocumentShape::new(value_id("/id"), true, false, paths);
        let write = shape.prepare(br#"{"id":"a","tenant":"t"}"#.to_vec(), &metadata());
        assert!(matches!(
            write.unwrap().operation,
            Operation::Create(Body::Payload { .. })
        ));
    }

    #[test]
    fn a_deeper_path_parses_the_document_whole() {
        assert!(shape(value_id("/meta/id"), &["/tenant"])
            .top_level
            .is_none());
        assert!(shape(IdStrategy::Key, &["/tenant/region"])
            .top_level
            .is_none());
        let nested = shape(value_id("/meta/id"), &["/tenant/region"]);
        let (id, _, _, document) = outcome(nested.prepare(
            br#"{"meta":{"id":"m"},"tenant":{"region":"eu"}}"#.to_vec(),
            &metadata(),
        ))
        .unwrap();
        assert_eq!(id, "m");
        assert_eq!(document["id"], "m");
    }

    #[test]
    fn a_generated_id_replaces_the_documents_own() {
        let (id, _, _, document) = outcome(
            shape(IdStrategy::KafkaMetadata, &["/tenant"])
                .prepare(br#"{"id":"mine","tenant":"t"}"#.to_vec(), &metadata()),
        )
        .unwrap();
        assert_eq!(id, "orders-3-42");
        assert_eq!(
            document,
            serde_json::json!({"id": "orders-3-42", "tenant": "t"})
        );
    }
}
