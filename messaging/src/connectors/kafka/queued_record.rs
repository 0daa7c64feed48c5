//! A record taken from a partition's own queue in a batch: librdkafka's message, owned until
//! dropped.

use std::ffi::{c_void, CStr};
use std::ptr::{self, NonNull};

use rdkafka::bindings as native;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::types::RDKafkaRespErr;

use super::metadata::Header;
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
}

/// The bytes at `data`, or `None` for a null pointer (an absent key or value).
///
/// # Safety
/// A non-null `data` must point to `length` bytes that live as long as `'a`.
unsafe fn bytes<'a>(data: *const c_void, length: usize) -> Option<&'a [u8]> {
    // SAFETY: the caller's guarantee.
    (!data.is_null()).then(|| unsafe { std::slice::from_raw_parts(data.cast::<u8>(), length) })
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
        let mut all = Vec::new();
        for index in 0.. {
            let (mut name, mut value, mut length) = (ptr::null(), ptr::null(), 0);
            // SAFETY: `headers` is live; an index past the end returns an error and writes nothing.
            let status = unsafe {
                native::rd_kafka_header_get_all(headers, index, &mut name, &mut value, &mut length)
            };
            if status != RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR {
                break;
            }
            // SAFETY: librdkafka returned a NUL-terminated name and `length` value bytes.
            let (name, value) = unsafe { (CStr::from_ptr(name), bytes(value, length)) };
            all.push(Header {
                key: name.to_string_lossy().into_owned(),
                value: value.map(<[u8]>::to_vec),
            });
        }
        all
    }
}

impl Drop for QueuedRecord {
    fn drop(&mut self) {
        // SAFETY: we own the message (see `from_native`) and drop it once.
        unsafe { native::rd_kafka_message_destroy(self.0.as_ptr()) }
    }
}
