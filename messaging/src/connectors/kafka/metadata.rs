use std::sync::Arc;

use rdkafka::message::OwnedHeaders;

use crate::message::Message;

/// A record header: a name and an optional value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    pub key: String,
    pub value: Option<Vec<u8>>,
}

impl Header {
    /// Adds `headers`, in order, to a record's headers.
    pub(crate) fn append_all<'a>(
        to: OwnedHeaders,
        headers: impl IntoIterator<Item = &'a Header>,
    ) -> OwnedHeaders {
        headers.into_iter().fold(to, |all, header| {
            all.insert(rdkafka::message::Header {
                key: &header.key,
                value: header.value.as_deref(),
            })
        })
    }
}

/// Where an incoming record came from: in every Kafka message's [`Metadata`](crate::Metadata).
#[derive(Clone, Debug)]
pub struct KafkaMetadata {
    pub(crate) topic: Arc<str>,
    pub(crate) partition: i32,
    pub(crate) offset: i64,
    pub(crate) timestamp: Option<i64>,
    pub(crate) key: Option<Vec<u8>>,
    pub(crate) headers: Vec<Header>,
}

impl KafkaMetadata {
    pub fn topic(&self) -> &str {
        &self.topic
    }

    pub fn partition(&self) -> i32 {
        self.partition
    }

    pub fn offset(&self) -> i64 {
        self.offset
    }

    /// Milliseconds since the Unix epoch, if the record has a timestamp.
    pub fn timestamp(&self) -> Option<i64> {
        self.timestamp
    }

    pub fn key(&self) -> Option<&[u8]> {
        self.key.as_deref()
    }

    /// The key as UTF-8 text, if it is text.
    pub fn key_str(&self) -> Option<&str> {
        self.key().and_then(|key| std::str::from_utf8(key).ok())
    }

    /// All headers, in record order (a name may repeat).
    pub fn headers(&self) -> &[Header] {
        &self.headers
    }

    /// The value of the last header with this name.
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .rev()
            .find(|header| header.key == name)
            .and_then(|header| header.value.as_deref())
    }

    /// The value of the last header with this name, as UTF-8 text.
    pub fn header_str(&self, name: &str) -> Option<&str> {
        self.header(name)
            .and_then(|value| std::str::from_utf8(value).ok())
    }
}

/// What an outgoing record should carry besides its value: put it in the metadata of the
/// `Message` a processor returns or an `Emitter` sends.
#[derive(Clone, Debug, Default)]
pub struct KafkaOutgoingMetadata {
    pub(crate) key: Option<Vec<u8>>,
    pub(crate) headers: Vec<Header>,
    pub(crate) topic: Option<String>,
    pub(crate) partition: Option<i32>,
}

impl KafkaOutgoingMetadata {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn key(mut self, key: impl Into<Vec<u8>>) -> Self {
        self.key = Some(key.into());
        self
    }

    pub fn header(mut self, name: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        self.headers.push(Header {
            key: name.into(),
            value: Some(value.into()),
        });
        self
    }

    /// Sends to this topic instead of the channel's.
    pub fn topic(mut self, topic: impl Into<String>) -> Self {
        self.topic = Some(topic.into());
        self
    }

    /// Sends to this partition instead of letting the partitioner choose.
    pub fn partition(mut self, partition: i32) -> Self {
        self.partition = Some(partition);
        self
    }
}

impl<T> Message<T> {
    /// The Kafka record this message came from, if it came from Kafka.
    pub fn kafka(&self) -> Option<&KafkaMetadata> {
        self.metadata().get::<KafkaMetadata>()
    }
}
