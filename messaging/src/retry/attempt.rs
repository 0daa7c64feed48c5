/// Which attempt at a record this is, counting from 1: the first delivery is attempt 1, the
/// first retry attempt 2 (see the channel's `retry.max-retries`).
///
/// It is an entry of the record's [`Metadata`](crate::Metadata), so a handler that takes the
/// metadata can behave differently on a retry, e.g. log only the last attempt's failure, or
/// skip an expensive lookup it already made.
///
/// ```no_run
/// use messaging::prelude::*;
/// use messaging::Attempt;
///
/// #[derive(Debug, Deserialize)]
/// struct Order { id: u64 }
///
/// #[incoming("orders")]
/// async fn ship(order: Order, metadata: Metadata) -> Result<(), std::io::Error> {
///     let attempt = metadata.get::<Attempt>().map_or(1, |attempt| attempt.0);
///     if attempt > 1 {
///         tracing::info!(order = order.id, attempt, "shipping again");
///     }
///     Ok(())
/// }
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Attempt(pub u32);
