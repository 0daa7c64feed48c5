//! Retrying a failed record in process before the channel's failure strategy applies: the
//! backoff schedule ([`RetryPolicy`]).
//!
//! Nothing here knows a transport: the Kafka consumer loop retries handlers with it, and a sink
//! retries its writes with the same policy.

mod policy;

pub(crate) use policy::RetryPolicy;
