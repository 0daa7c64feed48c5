//! Which failures are worth retrying.
//!
//! A user marks an error in one of two ways: their own error type implements [`Classify`] and is
//! registered with [`AppBuilder::classify`](crate::AppBuilder::classify), or a one-off error is
//! wrapped in [`Permanent`] or [`Transient`]. Classification walks the error's `source()` chain
//! and the first marked error decides; an unmarked one is transient, as in Spring Kafka, so
//! `retry.max-retries` alone retries a plain error type. Decode failures and panics are
//! permanent: the same bytes decode the same way, and a panic is a bug.

use std::error::Error;
use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Duration;

use crate::failure::Failure;

/// Whether retrying a failure can help.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorClass {
    /// Retrying cannot help (bad data, a bug): the channel's failure strategy applies at once.
    Permanent,
    /// Retrying may help (a timeout, throttling, a dependency briefly down). `retry_after` is
    /// how long the dependency asked to be left alone (an HTTP `Retry-After`, Cosmos DB's
    /// `x-ms-retry-after-ms`): that wait replaces the computed backoff, capped by
    /// `retry.max-delay.ms`.
    Transient { retry_after: Option<Duration> },
}

/// Classifies the errors of your own type, once the type is registered with
/// [`AppBuilder::classify`](crate::AppBuilder::classify). It is found as the handler's error
/// or anywhere in its `source()` chain.
///
/// ```no_run
/// use std::time::Duration;
/// use messaging::{App, Classify, ErrorClass};
///
/// #[derive(Debug, thiserror::Error)]
/// enum StockError {
///     #[error("unknown product {0}")]
///     UnknownProduct(String),
///     #[error("the stock service is throttling us")]
///     Throttled { retry_after: Duration },
///     #[error("the stock service is unreachable")]
///     Unreachable(#[source] std::io::Error),
/// }
///
/// impl Classify for StockError {
///     fn class(&self) -> ErrorClass {
///         match self {
///             StockError::UnknownProduct(_) => ErrorClass::Permanent,
///             StockError::Throttled { retry_after } => ErrorClass::Transient {
///                 retry_after: Some(*retry_after),
///             },
///             StockError::Unreachable(_) => ErrorClass::Transient { retry_after: None },
///         }
///     }
/// }
///
/// # async fn run() -> messaging::Result<()> {
/// App::builder()
///     .discover()
///     .environment()
///     .classify::<StockError>()
///     .build()?
///     .run()
///     .await
/// # }
/// ```
pub trait Classify {
    fn class(&self) -> ErrorClass;
}

/// Marks an error as permanent: no retry, the channel's failure strategy applies at once.
///
/// The failure it makes is the inner error's: a dead-letter record names the inner error's type
/// (`dead-letter-exception-class-name`), message and cause, not this wrapper.
///
/// ```no_run
/// use std::time::Duration;
/// use messaging::prelude::*;
/// use messaging::{Permanent, Transient};
///
/// #[derive(Debug, Deserialize)]
/// struct Payment { amount_cents: i64 }
///
/// async fn call_bank(_amount_cents: u64) -> Result<(), std::io::Error> { Ok(()) }
///
/// #[incoming("payments")]
/// async fn charge(payment: Payment) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
///     // A negative amount stays negative however often it is retried.
///     let amount = u64::try_from(payment.amount_cents).map_err(Permanent::new)?;
///     call_bank(amount)
///         .await
///         .map_err(|error| Transient::after(error, Duration::from_secs(5)))?;
///     Ok(())
/// }
/// ```
pub struct Permanent {
    error: Box<dyn Error + Send + Sync>,
    /// The inner error's type, for the failure's class name.
    class_name: &'static str,
}

/// Marks an error as transient: it is retried (within `retry.max-retries`), optionally after
/// a wait the error asks for instead of the computed backoff. See [`Permanent`] for an example.
///
/// Unmarked errors are transient already; this wrapper says so where a registered
/// [`Classify`] type would say otherwise, or carries a retry-after.
pub struct Transient {
    error: Box<dyn Error + Send + Sync>,
    class_name: &'static str,
    retry_after: Option<Duration>,
}

impl Permanent {
    pub fn new<E>(error: E) -> Self
    where
        E: Into<Box<dyn Error + Send + Sync>> + 'static,
    {
        Self {
            error: error.into(),
            class_name: std::any::type_name::<E>(),
        }
    }
}

impl Transient {
    pub fn new<E>(error: E) -> Self
    where
        E: Into<Box<dyn Error + Send + Sync>> + 'static,
    {
        Self {
            error: error.into(),
            class_name: std::any::type_name::<E>(),
            retry_after: None,
        }
    }

    /// Retried after `retry_after` (capped by `retry.max-delay.ms`) instead of the computed
    /// backoff.
    pub fn after<E>(error: E, retry_after: Duration) -> Self
    where
        E: Into<Box<dyn Error + Send + Sync>> + 'static,
    {
        Self {
            retry_after: Some(retry_after),
            ..Self::new(error)
        }
    }
}

impl fmt::Display for Permanent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.error, f)
    }
}

impl fmt::Display for Transient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.error, f)
    }
}

impl fmt::Debug for Permanent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Permanent").field(&self.error).finish()
    }
}

impl fmt::Debug for Transient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Transient")
            .field(&self.error)
            .field(&self.retry_after)
            .finish()
    }
}

/// The wrapper stands in for its inner error, so the chain a report or a dead-letter cause
/// shows continues below the inner error, as it would without the wrapper.
impl Error for Permanent {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        self.error.source()
    }
}

impl Error for Transient {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        self.error.source()
    }
}

/// A wrapper taken apart: its mark, the error it wrapped and that error's type name.
pub(crate) struct Unwrapped {
    pub(crate) class: ErrorClass,
    pub(crate) class_name: &'static str,
    pub(crate) inner: Box<dyn Error + Send + Sync>,
}

/// Takes a [`Permanent`] or [`Transient`] apart; any other error is handed back.
pub(crate) fn unwrap_mark(
    error: Box<dyn Error + Send + Sync>,
) -> Result<Unwrapped, Box<dyn Error + Send + Sync>> {
    let error = match error.downcast::<Permanent>() {
        Ok(permanent) => {
            return Ok(Unwrapped {
                class: ErrorClass::Permanent,
                class_name: permanent.class_name,
                inner: permanent.error,
            })
        }
        Err(error) => error,
    };
    error.downcast::<Transient>().map(|transient| Unwrapped {
        class: ErrorClass::Transient {
            retry_after: transient.retry_after,
        },
        class_name: transient.class_name,
        inner: transient.error,
    })
}

/// The mark of a wrapper met in a `source()` chain.
fn mark_of(error: &(dyn Error + 'static)) -> Option<ErrorClass> {
    if error.is::<Permanent>() {
        return Some(ErrorClass::Permanent);
    }
    error
        .downcast_ref::<Transient>()
        .map(|transient| ErrorClass::Transient {
            retry_after: transient.retry_after,
        })
}

/// Recognises one registered error type and asks it for its class.
type Classifier = fn(&(dyn Error + 'static)) -> Option<ErrorClass>;

/// The error types registered with [`AppBuilder::classify`](crate::AppBuilder::classify).
#[derive(Default)]
pub(crate) struct Classifiers {
    registered: Vec<Classifier>,
}

impl Classifiers {
    pub(crate) fn register<E: Classify + Error + 'static>(&mut self) {
        self.registered
            .push(|error| error.downcast_ref::<E>().map(Classify::class));
    }

    /// The class of a failure: the mark it was made with (a wrapper, a decode failure, a
    /// panic), else that of the first marked or registered error along the original error's
    /// `source()` chain, else transient; permanent when a registered classifier or a `source()`
    /// panics.
    pub(crate) fn class_of(&self, failure: &Failure) -> ErrorClass {
        if let Some(class) = failure.marked_class() {
            return class;
        }
        // A registered `Classify::class` and the errors' `source()` are user code. A panic in
        // them must not unwind into the consumer loop or a delivery's task: that would end the
        // channel (and again after each restart, as the record comes back), or leave the record
        // unsettled. It is a bug, which the next attempt would most likely hit again.
        catch_unwind(AssertUnwindSafe(|| self.class_along_sources(failure))).unwrap_or_else(
            |panic| {
                let panicked = Failure::from_panic_in(
                    panic,
                    "a registered Classify::class (or an error's source())",
                );
                tracing::warn!(error_type = %failure.class_name(), reason = %panicked.reason(), "the failure counts as permanent: its class could not be told");
                ErrorClass::Permanent
            },
        )
    }

    fn class_along_sources(&self, failure: &Failure) -> ErrorClass {
        let mut next = failure.original_error();
        while let Some(error) = next {
            let found = mark_of(error).or_else(|| {
                self.registered
                    .iter()
                    .find_map(|classifier| classifier(error))
            });
            if let Some(class) = found {
                return class;
            }
            next = error.source();
        }
        ErrorClass::Transient { retry_after: None }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    enum StockError {
        UnknownProduct,
        Throttled,
    }

    impl fmt::Display for StockError {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(match self {
                StockError::UnknownProduct => "unknown product",
                StockError::Throttled => "throttled",
            })
        }
    }

    impl Error for StockError {}

    impl Classify for StockError {
        fn class(&self) -> ErrorClass {
            match self {
                StockError::UnknownProduct => ErrorClass::Permanent,
                StockError::Throttled => ErrorClass::Transient {
                    retry_after: Some(Duration::from_millis(700)),
                },
            }
        }
    }

    /// A user's error with another error as its source.
    #[derive(Debug)]
    struct Reserving(Box<dyn Error + Send + Sync>);

    impl fmt::Display for Reserving {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("cannot reserve the stock")
        }
    }

    impl Error for Reserving {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            Some(&*self.0)
        }
    }

    fn with_stock_errors() -> Classifiers {
        let mut classifiers = Classifiers::default();
        classifiers.register::<StockError>();
        classifiers
    }

    const TRANSIENT: ErrorClass = ErrorClass::Transient { retry_after: None };

    #[test]
    fn an_unmarked_error_is_transient() {
        let failure = Failure::from_error(std::io::Error::other("connection reset"));
        assert_eq!(with_stock_errors().class_of(&failure), TRANSIENT);
        assert_eq!(
            with_stock_errors().class_of(&Failure::new("no quota")),
            TRANSIENT
        );
    }

    #[test]
    fn wrappers_mark_their_error() {
        let classifiers = Classifiers::default();
        let permanent = Failure::from_error(Permanent::new(std::io::Error::other("bad")));
        assert_eq!(classifiers.class_of(&permanent), ErrorClass::Permanent);
        let transient = Failure::from_error(Transient::new("busy"));
        assert_eq!(classifiers.class_of(&transient), TRANSIENT);
        let later = Failure::from_error(Transient::after("busy", Duration::from_secs(3)));
        assert_eq!(
            classifiers.class_of(&later),
            ErrorClass::Transient {
                retry_after: Some(Duration::from_secs(3))
            }
        );
    }

    #[test]
    fn the_outermost_mark_wins() {
        let failure = Failure::from_error(Transient::new(Permanent::new(StockError::Throttled)));
        assert_eq!(with_stock_errors().class_of(&failure), TRANSIENT);
        let failure = Failure::from_error(Permanent::new(StockError::Throttled));
        assert_eq!(
            with_stock_errors().class_of(&failure),
            ErrorClass::Permanent
        );
    }

    #[test]
    fn a_registered_type_classifies_itself_also_as_a_source() {
        let classifiers = with_stock_errors();
        let direct = Failure::from_error(StockError::UnknownProduct);
        assert_eq!(classifiers.class_of(&direct), ErrorClass::Permanent);
        let nested = Failure::from_error(Reserving(Box::new(StockError::Throttled)));
        assert_eq!(
            classifiers.class_of(&nested),
            ErrorClass::Transient {
                retry_after: Some(Duration::from_millis(700))
            }
        );
        assert_eq!(
            Classifiers::default().class_of(&direct),
            TRANSIENT,
            "an unregistered type is not asked"
        );
    }

    #[test]
    fn a_wrapper_in_the_source_chain_marks_it() {
        let failure = Failure::from_error(Reserving(Box::new(Permanent::new("sold out"))));
        assert_eq!(
            Classifiers::default().class_of(&failure),
            ErrorClass::Permanent
        );
    }

    #[test]
    fn a_wrapped_error_is_reported_as_the_inner_error() {
        let failure = Failure::from_error(Permanent::new(Reserving(Box::new(
            StockError::UnknownProduct,
        ))));
        assert!(
            failure.class_name().ends_with("::Reserving"),
            "{}",
            failure.class_name()
        );
        assert_eq!(failure.reason(), "cannot reserve the stock");
        assert_eq!(failure.cause(), Some("unknown product"));
        assert_eq!(
            Permanent::new(StockError::Throttled).to_string(),
            "throttled"
        );
    }

    #[test]
    fn panics_are_permanent() {
        let payload = std::panic::catch_unwind(|| panic!("boom")).unwrap_err();
        assert_eq!(
            Classifiers::default().class_of(&Failure::from_panic(payload)),
            ErrorClass::Permanent
        );
    }
}
