//! A record's headers read straight from librdkafka, for both ways a record arrives.
//!
//! rdkafka's own reader turns every header name into a `&str` with `unwrap()`: a producer that
//! wrote a name that is not UTF-8 would panic the consumer loop and fail the channel. Here a
//! name is decoded lossily instead, and the record goes on to its handler like any other.

use std::ffi::{c_void, CStr};
use std::ptr;

use rdkafka::bindings as native;
use rdkafka::message::BorrowedHeaders;
use rdkafka::types::RDKafkaRespErr;

use super::metadata::Header;

/// Copies of the headers at `headers`, in record order.
///
/// # Safety
/// `headers` must point to live headers that nothing changes during the call.
pub(crate) unsafe fn read(headers: *const native::rd_kafka_headers_t) -> Vec<Header> {
    let mut all = Vec::new();
    for index in 0.. {
        let (mut name, mut value, mut length) = (ptr::null(), ptr::null(), 0);
        // SAFETY: `headers` is live (the caller's guarantee); an index past the end returns an
        // error and writes nothing.
        let status = unsafe {
            native::rd_kafka_header_get_all(headers, index, &mut name, &mut value, &mut length)
        };
        if status != RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR {
            break;
        }
        // SAFETY: librdkafka returned a NUL-terminated name and `length` value bytes, alive as
        // long as the headers.
        let (name, value) = unsafe { (CStr::from_ptr(name), bytes(value, length)) };
        all.push(Header {
            key: name.to_string_lossy().into_owned(),
            value: value.map(<[u8]>::to_vec),
        });
    }
    all
}

/// The librdkafka headers behind rdkafka's `BorrowedHeaders`: rdkafka hands them out as a
/// reference whose address is librdkafka's pointer (that is how it reads them itself).
pub(crate) fn native_pointer(headers: &BorrowedHeaders) -> *const native::rd_kafka_headers_t {
    ptr::from_ref(headers).cast()
}

/// The bytes at `data`, or `None` for a null pointer (an absent key or value).
///
/// # Safety
/// A non-null `data` must point to `length` bytes that live as long as `'a`.
pub(crate) unsafe fn bytes<'a>(data: *const c_void, length: usize) -> Option<&'a [u8]> {
    // SAFETY: the caller's guarantee.
    (!data.is_null()).then(|| unsafe { std::slice::from_raw_parts(data.cast::<u8>(), length) })
}
