//! User code the library calls, with its panics caught: a panic becomes a nack of that one
//! record (class name `panic`, the panic text in the reason), never a dead consumer task and a
//! stuck partition.
//!
//! The handler body is not the only user code: a payload's `Deserialize`, an output's
//! `Serialize` and the `Display` of a returned error run it too, so each of those goes through
//! here. `catch_unwind` costs nothing unless something panics.

use std::error::Error as StdError;
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};

use futures_util::future::CatchUnwind;
use futures_util::FutureExt;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::codec::{self, DECODE_FAILURE};
use crate::failure::Failure;
use crate::retry::ErrorClass;

/// Starts a user call with panics caught, whether it panics before returning its future
/// (a closure) or while polled (an async fn).
/// The returned future yields the panic payload of a panic while polled.
pub(super) fn start_caught<Fut: Future>(
    make: impl FnOnce() -> Fut,
) -> Result<CatchUnwind<AssertUnwindSafe<Fut>>, Failure> {
    let future = catch_unwind(AssertUnwindSafe(make)).map_err(Failure::from_panic)?;
    Ok(AssertUnwindSafe(future).catch_unwind())
}

/// Decodes a record value; a failure, or a panic of the type's `Deserialize`, is a failure of
/// this record.
#[inline]
pub(super) fn decode<T: DeserializeOwned + 'static>(value: Option<&[u8]>) -> Result<T, Failure> {
    match catch_unwind(AssertUnwindSafe(|| codec::decode::<T>(value))) {
        Ok(Ok(payload)) => Ok(payload),
        Ok(Err(reason)) => Err(decode_failure::<T>(reason)),
        Err(panic) => Err(Failure::from_panic_in(panic, "the payload's Deserialize")),
    }
}

/// Permanent: the same bytes decode the same way on every attempt.
#[cold]
fn decode_failure<T>(reason: String) -> Failure {
    Failure::of_kind(
        DECODE_FAILURE,
        format!(
            "cannot decode the record value as {}: {reason}",
            std::any::type_name::<T>()
        ),
    )
    .marked(ErrorClass::Permanent)
}

/// Encodes a processor's output; a panic of its `Serialize` is a failure of the input record.
pub(super) fn encode<U: Serialize + 'static>(payload: U) -> Result<Vec<u8>, Failure> {
    catch_unwind(AssertUnwindSafe(|| codec::encode_owned(payload)))
        .unwrap_or_else(|panic| Err(Failure::from_panic_in(panic, "the output's Serialize")))
}

/// How the compiler names `Result<_, _>` (checked by a test, so a change would show).
const RESULT_TYPE_NAME: &str = "core::result::Result<";

/// [`encode`] for what a processor function returns as its plain output: one of type
/// `Result<U, E>` gets there whole when `E` is not an error type but is `Serialize` (serde
/// serializes a `Result` as `{"Ok": ..}` / `{"Err": ..}`). Sent as it is, an `Err` would be
/// published as data and its input acked, where a returned `Result` means Ok or Err. Every such
/// output fails its input instead (permanent: the type does not change), with the fix in the
/// reason. The attributes pick the error-aware shape for a function written to return
/// `Result`, so this is left for a type alias or a processor given to `AppBuilder::processor`
/// by hand. A `Result` inside (the `U` of `Result<U, E>`, a `Message<Result<..>>`) is data.
pub(super) fn encode_returned<U: Serialize + 'static>(payload: U) -> Result<Vec<u8>, Failure> {
    if std::any::type_name::<U>().starts_with(RESULT_TYPE_NAME) {
        return Err(result_output::<U>());
    }
    encode(payload)
}

#[cold]
fn result_output<U>() -> Failure {
    Failure::of_kind(
        "messaging::ResultOutput",
        format!(
            "the processor's output is a {}, whose error type is not a std::error::Error \
             (String, &str, anyhow::Error and Box<dyn Error> are too), so an Err cannot be told \
             from a value and nothing is sent: implement std::error::Error for the error type",
            std::any::type_name::<U>()
        ),
    )
    .marked(ErrorClass::Permanent)
}

/// The failure a handler's error stands for; a panic of the error's `Display` (which makes
/// the reason) becomes the reason instead.
pub(super) fn failure_from_error<E>(error: E) -> Failure
where
    E: Into<Box<dyn StdError + Send + Sync>> + 'static,
{
    catch_unwind(AssertUnwindSafe(|| Failure::from_error(error)))
        .unwrap_or_else(|panic| Failure::from_panic_in(panic, "the error's Display"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::retry::Classifiers;

    #[test]
    fn decode_failures_and_panics_in_user_code_are_permanent() {
        let classifiers = Classifiers::default();
        let undecodable = decode::<u32>(Some(b"not a number")).unwrap_err();
        assert_eq!(undecodable.class_name(), DECODE_FAILURE);
        assert_eq!(classifiers.class_of(&undecodable), ErrorClass::Permanent);
        let tombstone = decode::<u32>(None).unwrap_err();
        assert_eq!(classifiers.class_of(&tombstone), ErrorClass::Permanent);

        struct PanicsOnDisplay;
        impl std::fmt::Debug for PanicsOnDisplay {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("PanicsOnDisplay")
            }
        }
        impl std::fmt::Display for PanicsOnDisplay {
            fn fmt(&self, _: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                panic!("no words")
            }
        }
        impl StdError for PanicsOnDisplay {}
        let failure = failure_from_error(PanicsOnDisplay);
        assert_eq!(failure.class_name(), "panic");
        assert_eq!(classifiers.class_of(&failure), ErrorClass::Permanent);
    }

    #[test]
    fn an_output_that_is_a_result_is_a_permanent_failure_not_data() {
        assert!(std::any::type_name::<Result<u8, String>>().starts_with(RESULT_TYPE_NAME));
        let failure = encode_returned(Err::<f64, String>("negative".to_owned())).unwrap_err();
        assert_eq!(failure.class_name(), "messaging::ResultOutput");
        assert!(failure
            .reason()
            .contains("Result<f64, alloc::string::String>"));
        assert_eq!(
            Classifiers::default().class_of(&failure),
            ErrorClass::Permanent
        );
        assert!(encode_returned(Ok::<f64, String>(1.0)).is_err());
        assert_eq!(encode_returned(1.5f64).unwrap(), b"1.5");
        // Inside a message, or as the value of an error-aware return, a Result is data.
        assert_eq!(encode(Ok::<f64, String>(1.0)).unwrap(), br#"{"Ok":1.0}"#);
    }
}
