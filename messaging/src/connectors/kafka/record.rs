//! What the consumer loop reads from a fetched record, whichever queue it came through: a
//! partition's own queue (read in batches, kept as librdkafka's message) or the main queue
//! (one poll at a time, copied out so it can outlive the poll).

use rdkafka::message::{OwnedHeaders, OwnedMessage};
use rdkafka::Message as _;
use rdkafka::Timestamp;

use super::metadata::Header;
use super::native_headers;
use super::queued_record::QueuedRecord;

pub(crate) trait FetchedRecord {
    fn offset(&self) -> i64;
    fn key(&self) -> Option<&[u8]>;
    fn value(&self) -> Option<&[u8]>;
    /// Milliseconds since the Unix epoch, if the record has a timestamp.
    fn timestamp(&self) -> Option<i64>;
    /// Copies of the headers, in record order.
    fn headers(&self) -> Vec<Header>;
}

impl FetchedRecord for OwnedMessage {
    fn offset(&self) -> i64 {
        rdkafka::Message::offset(self)
    }

    fn key(&self) -> Option<&[u8]> {
        rdkafka::Message::key(self)
    }

    fn value(&self) -> Option<&[u8]> {
        self.payload()
    }

    fn timestamp(&self) -> Option<i64> {
        rdkafka::Message::timestamp(self).to_millis()
    }

    fn headers(&self) -> Vec<Header> {
        let Some(headers) = rdkafka::Message::headers(self) else {
            return Vec::new();
        };
        // SAFETY: the message owns its headers and is borrowed for the call.
        let read =
            unsafe { native_headers::read(native_headers::native_pointer(headers.as_borrowed())) };
        // rdkafka's own count: the pointer is the headers rdkafka reads (tests run this).
        debug_assert_eq!(read.len(), rdkafka::message::Headers::count(headers));
        read
    }
}

/// A record the consumer loop holds from its fetch until it is settled: while it waits for its
/// turn, while its handler runs (again, on a retry) and while it is dead-lettered.
pub(crate) enum HeldRecord {
    /// From a partition's own queue: librdkafka's message, no copy.
    Queued(QueuedRecord),
    /// From the main queue (a partition whose queue could not be split), or copied out of the
    /// fetch buffer for a wait: a copy. Boxed so that the common case, and every record's
    /// handling future that holds one, stays small (moving them is a per-record cost).
    Polled(Box<OwnedMessage>),
}

impl HeldRecord {
    /// The record copied out of librdkafka's fetch buffer (a no-op for a copy already).
    pub(crate) fn detached(self, topic: &str) -> Self {
        let HeldRecord::Queued(queued) = self else {
            return self;
        };
        let headers = queued.headers();
        let headers =
            (!headers.is_empty()).then(|| Header::append_all(OwnedHeaders::new(), &headers));
        HeldRecord::Polled(Box::new(OwnedMessage::new(
            queued.value().map(<[u8]>::to_vec),
            queued.key().map(<[u8]>::to_vec),
            topic.to_owned(),
            queued
                .timestamp()
                .map_or(Timestamp::NotAvailable, Timestamp::CreateTime),
            queued.partition(),
            queued.offset(),
            headers,
        )))
    }

    fn fetched(&self) -> &dyn FetchedRecord {
        match self {
            HeldRecord::Queued(record) => record,
            HeldRecord::Polled(record) => &**record,
        }
    }
}

impl FetchedRecord for HeldRecord {
    #[inline]
    fn offset(&self) -> i64 {
        self.fetched().offset()
    }

    #[inline]
    fn key(&self) -> Option<&[u8]> {
        self.fetched().key()
    }

    #[inline]
    fn value(&self) -> Option<&[u8]> {
        self.fetched().value()
    }

    fn timestamp(&self) -> Option<i64> {
        self.fetched().timestamp()
    }

    fn headers(&self) -> Vec<Header> {
        self.fetched().headers()
    }
}

#[cfg(test)]
mod tests {
    use rdkafka::bindings as native;
    use rdkafka::message::{Header as KafkaHeader, OwnedHeaders, OwnedMessage};
    use rdkafka::Timestamp;

    use super::{native_headers, FetchedRecord, HeldRecord};

    /// A header name that is not UTF-8 (rdkafka's reader would panic on it) is read lossily,
    /// its value untouched, through either way a record arrives.
    #[test]
    fn a_header_name_that_is_not_utf8_is_read_lossily() {
        let headers = OwnedHeaders::new().insert(KafkaHeader {
            key: "traceparent",
            value: Some("00-abc"),
        });
        let name = [b'x', 0xff, 0xfe];
        let value = b"v";
        // SAFETY: the headers are ours and writable; the name and value outlive the call.
        let added = unsafe {
            native::rd_kafka_header_add(
                native_headers::native_pointer(headers.as_borrowed()).cast_mut(),
                name.as_ptr().cast(),
                name.len() as isize,
                value.as_ptr().cast(),
                value.len() as isize,
            )
        };
        assert_eq!(
            added,
            rdkafka::types::RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR
        );
        let record = HeldRecord::Polled(Box::new(OwnedMessage::new(
            Some(b"payload".to_vec()),
            None,
            "movies".into(),
            Timestamp::NotAvailable,
            0,
            7,
            Some(headers),
        )));
        let read = record.headers();
        assert_eq!(read.len(), 2);
        assert_eq!(read[0].key, "traceparent");
        assert_eq!(read[0].value.as_deref(), Some(&b"00-abc"[..]));
        assert_eq!(read[1].key, "x\u{fffd}\u{fffd}");
        assert_eq!(read[1].value.as_deref(), Some(&b"v"[..]));
    }
}
