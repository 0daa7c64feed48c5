use std::any::Any;
use std::error::Error as StdError;
use std::fmt;
use std::sync::Arc;

use crate::retry::{unwrap_mark, ErrorClass};

/// The reason a message was nacked: what went wrong, of which kind, and its cause if any.
///
/// These three parts become the `dead-letter-exception-class-name`, `dead-letter-reason` and
/// `dead-letter-cause` headers of a dead-letter record, and the `[KO] - <reason>` text of a
/// failed channel's health check. Rust has no runtime class of an error's *cause* (a
/// `dyn Error` does not know its type name), so there is no `dead-letter-cause-class-name`.
///
/// It also keeps what deciding on a retry needs: the original error, for the error types an
/// application registered with [`AppBuilder::classify`](crate::AppBuilder::classify), and the
/// class it was marked with ([`Permanent`](crate::Permanent), [`Transient`](crate::Transient),
/// or the library's own: decode failures and panics are permanent).
///
/// One pointer wide: it travels inside every handler future's `Result`, and failures are rare.
#[derive(Clone)]
pub struct Failure {
    parts: Box<Parts>,
}

#[derive(Clone)]
struct Parts {
    class_name: String,
    reason: String,
    cause: Option<Cause>,
    marked_class: Option<ErrorClass>,
    /// Shared, so that a failure stays cheap to clone.
    original: Option<Arc<dyn StdError + Send + Sync>>,
}

/// The message of the original error's source, kept as the failure's own `source()` so that
/// error reports show it under "Caused by:".
#[derive(Clone, PartialEq, Eq, Debug)]
struct Cause(String);

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl StdError for Cause {}

/// Standard types in a type name as code writes them: `Box<dyn Error + Send + Sync>`, not
/// `alloc::boxed::Box<dyn core::error::Error + core::marker::Send + core::marker::Sync>` (the
/// type of a handler's `"...".into()` error, in `dead-letter-exception-class-name` and the
/// metrics' `error_type`). Only these whole paths, where a path starts: `app::core::error::E`
/// stays as it is.
fn readable_type_name(type_name: &str) -> String {
    const PATHS: [(&str, &str); 7] = [
        ("alloc::boxed::Box", "Box"),
        ("alloc::string::String", "String"),
        ("alloc::sync::Arc", "Arc"),
        ("core::error::Error", "Error"),
        ("core::marker::Send", "Send"),
        ("core::marker::Sync", "Sync"),
        ("std::io::error::Error", "std::io::Error"),
    ];
    let part_of_a_path = |c: char| c.is_alphanumeric() || c == '_' || c == ':';
    let mut readable = String::with_capacity(type_name.len());
    let mut rest = type_name;
    'scan: while let Some(next) = rest.chars().next() {
        let at_start = readable
            .chars()
            .next_back()
            .is_none_or(|c| !part_of_a_path(c));
        if at_start {
            for (path, written) in PATHS {
                let ends_there = rest
                    .strip_prefix(path)
                    .is_some_and(|after| !after.starts_with(part_of_a_path));
                if ends_there {
                    readable.push_str(written);
                    rest = &rest[path.len()..];
                    continue 'scan;
                }
            }
        }
        readable.push(next);
        rest = &rest[next.len_utf8()..];
    }
    readable
}

impl Failure {
    /// A failure with a plain reason, e.g. `Failure::new("no price for this currency")`.
    pub fn new(reason: impl Into<String>) -> Self {
        Self::of_kind("messaging::Failure", reason)
    }

    /// Captures an error: its type name, its message and the message of its source. A
    /// [`Permanent`](crate::Permanent) or [`Transient`](crate::Transient) is captured as the
    /// error it wraps, marked with its class.
    pub fn from_error<E>(error: E) -> Self
    where
        E: Into<Box<dyn StdError + Send + Sync>> + 'static,
    {
        Self::capture(std::any::type_name::<E>(), error.into())
    }

    fn capture(class_name: &str, error: Box<dyn StdError + Send + Sync>) -> Self {
        let error = match error.downcast::<Failure>() {
            Ok(failure) => return *failure,
            Err(error) => error,
        };
        match unwrap_mark(error) {
            // Unwrapped from the outside in: the outermost mark is set last, and wins.
            Ok(unwrapped) => {
                Self::capture(unwrapped.class_name, unwrapped.inner).marked(unwrapped.class)
            }
            Err(error) => Self {
                parts: Box::new(Parts {
                    class_name: readable_type_name(class_name),
                    reason: error.to_string(),
                    cause: error.source().map(|source| Cause(source.to_string())),
                    marked_class: None,
                    original: Some(Arc::from(error)),
                }),
            },
        }
    }

    /// A failure of a given kind, for errors the library itself raises.
    pub(crate) fn of_kind(class_name: &str, reason: impl Into<String>) -> Self {
        Self {
            parts: Box::new(Parts {
                class_name: class_name.to_owned(),
                reason: reason.into(),
                cause: None,
                marked_class: None,
                original: None,
            }),
        }
    }

    /// The same failure, of the given class whatever its error says.
    pub(crate) fn marked(mut self, class: ErrorClass) -> Self {
        self.parts.marked_class = Some(class);
        self
    }

    /// The class this failure was marked with, if any.
    pub(crate) fn marked_class(&self) -> Option<ErrorClass> {
        self.parts.marked_class
    }

    /// The error the failure was captured from (a wrapper's inner error).
    pub(crate) fn original_error(&self) -> Option<&(dyn StdError + 'static)> {
        self.parts
            .original
            .as_deref()
            .map(|error| error as &(dyn StdError + 'static))
    }

    /// A handler panicked: the panic text becomes the reason.
    pub(crate) fn from_panic(payload: Box<dyn Any + Send>) -> Self {
        Self::from_panic_in(payload, "handler")
    }

    /// User code other than the handler body panicked (`place` names it, e.g. "the
    /// payload's Deserialize"): the panic text becomes the reason.
    pub(crate) fn from_panic_in(payload: Box<dyn Any + Send>, place: &str) -> Self {
        let text = if let Some(text) = payload.downcast_ref::<&'static str>() {
            (*text).to_owned()
        } else if let Some(text) = payload.downcast_ref::<String>() {
            text.clone()
        } else {
            "a panic with a non-text payload".to_owned()
        };
        // A panic is a bug: the next attempt would most likely hit it again.
        Self::of_kind("panic", format!("{place} panicked: {text}")).marked(ErrorClass::Permanent)
    }

    /// The error's type name (`my_service::BadMovie`), or a library kind such as `panic`.
    pub fn class_name(&self) -> &str {
        &self.parts.class_name
    }

    /// The human-readable reason.
    pub fn reason(&self) -> &str {
        &self.parts.reason
    }

    /// The message of the error's source, when it has one.
    pub fn cause(&self) -> Option<&str> {
        self.parts.cause.as_ref().map(|cause| cause.0.as_str())
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.parts.reason)
    }
}

/// Equal when they read the same and are marked the same; the original errors cannot be
/// compared.
impl PartialEq for Failure {
    fn eq(&self, other: &Self) -> bool {
        let (this, other) = (&self.parts, &other.parts);
        this.class_name == other.class_name
            && this.reason == other.reason
            && this.cause == other.cause
            && this.marked_class == other.marked_class
    }
}

impl Eq for Failure {}

/// Shows what `Display` and the dead-letter headers show, never the original error's `Debug`,
/// which may hold what the message did not say (a request with its credentials, say).
impl fmt::Debug for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Failure")
            .field("class_name", &self.parts.class_name)
            .field("reason", &self.parts.reason)
            .field("cause", &self.cause())
            .field("marked_class", &self.parts.marked_class)
            .finish()
    }
}

impl StdError for Failure {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.parts
            .cause
            .as_ref()
            .map(|cause| cause as &(dyn StdError + 'static))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Outer(std::num::ParseIntError);
    impl fmt::Display for Outer {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("bad year")
        }
    }
    impl StdError for Outer {
        fn source(&self) -> Option<&(dyn StdError + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn captures_type_name_reason_and_cause() {
        let failure = Failure::from_error(Outer("x".parse::<u16>().unwrap_err()));
        assert!(
            failure.class_name().ends_with("::Outer"),
            "{}",
            failure.class_name()
        );
        assert_eq!(failure.reason(), "bad year");
        assert_eq!(failure.cause(), Some("invalid digit found in string"));
    }

    #[test]
    fn standard_types_are_named_as_code_writes_them() {
        let boxed: Box<dyn StdError + Send + Sync> = "out of stock".into();
        assert_eq!(
            Failure::from_error(boxed).class_name(),
            "Box<dyn Error + Send + Sync>"
        );
        assert_eq!(
            Failure::from_error(String::from("out of stock")).class_name(),
            "String"
        );
        assert_eq!(
            Failure::from_error(std::io::Error::other("reset")).class_name(),
            "std::io::Error"
        );
        // A user's own paths are not touched, even where they end like the standard ones.
        for name in [
            "myapp::core::error::AppError",
            "app::alloc::sync::Cache",
            "myalloc::boxed::Thing",
            "app::Wrapper<alloc::string::StringLike>",
        ] {
            assert_eq!(readable_type_name(name), name);
        }
        assert_eq!(
            readable_type_name("app::Wrapper<alloc::sync::Arc<alloc::string::String>>"),
            "app::Wrapper<Arc<String>>"
        );
    }

    #[test]
    fn a_failure_passed_as_an_error_is_kept_as_is() {
        let original = Failure::new("quota exceeded");
        assert_eq!(Failure::from_error(original.clone()), original);
    }

    #[test]
    fn debug_shows_what_display_shows_not_the_original_error() {
        #[derive(Debug)]
        struct Rejected {
            #[expect(dead_code, reason = "only its Debug shows it, which is what is tested")]
            api_key: &'static str,
        }
        impl fmt::Display for Rejected {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("the API rejected the call")
            }
        }
        impl StdError for Rejected {}
        let failure = Failure::from_error(Rejected { api_key: "hunter2" });
        let debug = format!("{failure:?}");
        assert!(debug.contains("the API rejected the call"), "{debug}");
        assert!(!debug.contains("hunter2"), "{debug}");
    }

    #[test]
    fn panic_text_becomes_the_reason() {
        let payload = std::panic::catch_unwind(|| panic!("boom {}", 7)).unwrap_err();
        let failure = Failure::from_panic(payload);
        assert_eq!(failure.class_name(), "panic");
        assert_eq!(failure.reason(), "handler panicked: boom 7");
    }
}
