//! What the consumer loop reads from a fetched record, whichever queue it came through: a
//! partition's own queue (read in batches) or the main queue (one poll at a time).

use rdkafka::message::{BorrowedMessage, Headers};
use rdkafka::Message as _;

use super::metadata::Header;

pub(crate) trait FetchedRecord {
    fn partition(&self) -> i32;
    fn offset(&self) -> i64;
    fn key(&self) -> Option<&[u8]>;
    fn value(&self) -> Option<&[u8]>;
    /// Milliseconds since the Unix epoch, if the record has a timestamp.
    fn timestamp(&self) -> Option<i64>;
    /// Copies of the headers, in record order.
    fn headers(&self) -> Vec<Header>;
}

impl FetchedRecord for BorrowedMessage<'_> {
    fn partition(&self) -> i32 {
        rdkafka::Message::partition(self)
    }

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
        headers
            .iter()
            .map(|header| Header {
                key: header.key.to_owned(),
                value: header.value.map(<[u8]>::to_vec),
            })
            .collect()
    }
}
