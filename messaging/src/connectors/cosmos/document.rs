//! From an outgoing message to a Cosmos DB write: the document, its `id` (by `id.strategy`) and
//! its partition key (by the container's partition key paths).
//!
//! Anything wrong here is wrong with the record, not with Cosmos DB: a permanent failure, which
//! the inbound channel's failure strategy takes (with the record's original bytes).

use azure_data_cosmos::models::{PartitionKey, PartitionKeyValue};
use serde_json::Value;

use super::answer::cosmos_failure;
use crate::config::{IdStrategy, TemplatePart};
use crate::connectors::kafka::KafkaMetadata;
use crate::failure::Failure;
use crate::metadata::Metadata;

/// What to do with one document.
pub(crate) enum Operation {
    Upsert(Value),
    Create(Value),
    /// A tombstone (an empty or `null` payload) with `delete-on-tombstone = true`.
    Delete,
}

/// One prepared write.
pub(crate) struct Write {
    pub(crate) id: String,
    pub(crate) partition_key: PartitionKey,
    /// The document's identity in its container (partition key and id), for ordering writes.
    pub(crate) identity: String,
    pub(crate) operation: Operation,
}

/// How a sink turns payloads into writes.
pub(crate) struct DocumentShape {
    pub(crate) id: IdStrategy,
    pub(crate) create: bool,
    pub(crate) delete_on_tombstone: bool,
    /// The container's partition key paths, read from its definition (1 to 3: hierarchical).
    pub(crate) partition_key_paths: Vec<String>,
}

/// Characters Cosmos DB does not accept in an id: a generated id has them replaced with `_`.
const FORBIDDEN_IN_ID: [char; 4] = ['/', '\\', '?', '#'];

impl DocumentShape {
    pub(crate) fn prepare(&self, payload: &[u8], metadata: &Metadata) -> Result<Write, Failure> {
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
            let partition_key = self.partition_key_of_id(&id)?;
            return Ok(self.write(id, partition_key, Operation::Delete));
        }
        let mut document: Value = serde_json::from_slice(payload)
            .map_err(|error| rejected(format!("the payload is not JSON: {error}")))?;
        if !document.is_object() {
            return Err(rejected(
                "the payload is JSON but not an object (a document)",
            ));
        }
        let id = match &self.id {
            IdStrategy::Value { pointer } => {
                let id = match document.pointer(pointer) {
                    Some(Value::String(id)) => id.clone(),
                    Some(_) => {
                        return Err(rejected(format!(
                            "the document's id at {pointer} is not a string"
                        )))
                    }
                    None => return Err(rejected(format!("the document has no id at {pointer}"))),
                };
                if id.is_empty() || id.contains(FORBIDDEN_IN_ID) {
                    return Err(rejected(
                        "the document's id is empty or contains one of / \\ ? # (Cosmos DB rejects those)",
                    ));
                }
                id
            }
            generated => generated_id(generated, input)?,
        };
        document["id"] = Value::String(id.clone());
        let values = self
            .partition_key_paths
            .iter()
            .map(|path| match document.pointer(path) {
                None => Ok(PartitionKeyValue::UNDEFINED),
                Some(Value::Null) => Ok(PartitionKeyValue::NULL),
                Some(Value::String(text)) => Ok(PartitionKeyValue::from(text.clone())),
                Some(Value::Bool(flag)) => Ok(PartitionKeyValue::from(*flag)),
                Some(Value::Number(number)) => number
                    .as_f64()
                    .and_then(|number| PartitionKeyValue::try_from(number).ok())
                    .ok_or_else(|| rejected(format!("the partition key at {path} is not a finite number"))),
                Some(_) => Err(rejected(format!(
                    "the partition key at {path} is an object or an array; Cosmos DB takes a string, number, boolean or null"
                ))),
            })
            .collect::<Result<Vec<_>, _>>()?;
        let partition_key = PartitionKey::try_from(values)
            .map_err(|_| rejected("the document's partition key values are not accepted"))?;
        let operation = if self.create {
            Operation::Create(document)
        } else {
            Operation::Upsert(document)
        };
        Ok(self.write(id, partition_key, operation))
    }

    fn write(&self, id: String, partition_key: PartitionKey, operation: Operation) -> Write {
        Write {
            identity: format!("{partition_key:?}\u{0}{id}"),
            id,
            partition_key,
            operation,
        }
    }

    /// A tombstone carries no document: its partition key can only be its id, when the
    /// container is partitioned by `/id`.
    fn partition_key_of_id(&self, id: &str) -> Result<PartitionKey, Failure> {
        match self.partition_key_paths.as_slice() {
            [path] if path == "/id" => Ok(PartitionKey::from(id.to_owned())),
            _ => Err(rejected(
                "a tombstone has no document to read the partition key from; deleting by tombstone needs a container partitioned by /id",
            )),
        }
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
