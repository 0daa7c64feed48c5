//! A record taken from a partition's own queue in a batch: librdkafka's message, owned until
//! dropped.

use std::ptr::{self, NonNull};

use rdkafka::bindings as native;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::types::RDKafkaRespErr;

use super::metadata::Header;
use super::native_headers::{self, bytes};
use super::record::FetchedRecord;

pub(crate) struct QueuedRecord(NonNull<native::rd_kafka_message_t>);

// SAFETY: a consumed message is not tied to the thread that consumed it; librdkafka frees it
// (and its share of the fetch buffer, reference-counted atomically) from any thread.
unsafe impl Send for QueuedRecord {}

impl QueuedRecord {
    /// # Safety
    /// `message` must come from `rd_kafka_consume_batch_queue` and not be destroyed elsewhere.
    pub(crate) unsafe fn from_native(message: *mut native::rd_kafka_message_t) -> Option<Self> {
        NonNull::new(message).map(Self)
    }

    fn native(&self) -> &native::rd_kafka_message_t {
        // SAFETY: the message is live until `drop`, and librdkafka does not change it meanwhile.
        unsafe { self.0.as_ref() }
    }

    pub(crate) fn partition(&self) -> i32 {
        self.native().partition
    }

    /// A consumer error delivered in the record's place (for example, an offset out of range).
    pub(crate) fn error(&self) -> Option<KafkaError> {
        let code = self.native().err;
        (code != RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR).then(|| match code {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__PARTITION_EOF => {
                KafkaError::PartitionEOF(self.native().partition)
            }
            code => KafkaError::MessageConsumption(RDKafkaErrorCode::from(code)),
        })
    }

    /// What librdkafka says of the error delivered in the record's place: its text travels as
    /// the payload (as `rd_kafka_message_errstr` reads it), or only its code is known.
    pub(crate) fn error_text(&self) -> String {
        match self.value() {
            Some(text) if !text.is_empty() => String::from_utf8_lossy(text).into_owned(),
            _ => RDKafkaErrorCode::from(self.native().err).to_string(),
        }
    }
}

impl FetchedRecord for QueuedRecord {
    fn offset(&self) -> i64 {
        self.native().offset
    }

    fn key(&self) -> Option<&[u8]> {
        // SAFETY: librdkafka keeps the key for the message's life, which `&self` bounds.
        unsafe { bytes(self.native().key, self.native().key_len) }
    }

    fn value(&self) -> Option<&[u8]> {
        // SAFETY: as for the key.
        unsafe { bytes(self.native().payload, self.native().len) }
    }

    fn timestamp(&self) -> Option<i64> {
        let mut kind = native::rd_kafka_timestamp_type_t::RD_KAFKA_TIMESTAMP_NOT_AVAILABLE;
        // SAFETY: the message is live; `kind` is a valid place for the type.
        let millis = unsafe { native::rd_kafka_message_timestamp(self.0.as_ptr(), &mut kind) };
        (kind != native::rd_kafka_timestamp_type_t::RD_KAFKA_TIMESTAMP_NOT_AVAILABLE
            && millis != -1)
            .then_some(millis)
    }

    fn headers(&self) -> Vec<Header> {
        let mut headers = ptr::null_mut();
        // SAFETY: the message is live; librdkafka keeps the headers it points us to as long.
        let found = unsafe { native::rd_kafka_message_headers(self.0.as_ptr(), &mut headers) };
        if found != RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR {
            return Vec::new();
        }
        // SAFETY: the headers live as long as the message, which nothing changes.
        unsafe { native_headers::read(headers) }
    }
}

impl Drop for QueuedRecord {
    fn drop(&mut self) {
        // SAFETY: we own the message (see `from_native`) and drop it once.
        unsafe { native::rd_kafka_message_destroy(self.0.as_ptr()) }
    }
}
