//! Retrying a failed record in process before the channel's failure strategy applies: the
//! backoff schedule ([`RetryPolicy`]), which errors are worth retrying ([`ErrorClass`] and how
//! users mark it), and the attempt number a handler can read ([`Attempt`]).
//!
//! Nothing here knows a transport: the Kafka consumer loop retries handlers with it, and a sink
//! retries its writes with the same policy and classification.

mod attempt;
mod classify;
mod policy;
mod retries;

pub use attempt::Attempt;
pub(crate) use classify::{unwrap_mark, Classifiers};
pub use classify::{Classify, ErrorClass, Permanent, Transient};
pub(crate) use policy::RetryPolicy;
pub(crate) use retries::Retries;
