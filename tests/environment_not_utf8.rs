//! A variable that is not UTF-8 never panics the start: outside the `MESSAGING_` namespace it is
//! skipped, inside it is a configuration error naming it. Its own binary, because it changes the
//! process environment.
#![cfg(unix)]

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;

use messaging::{App, Error, Source};

fn not_utf8(bytes: &[u8]) -> OsString {
    OsString::from_vec(bytes.to_vec())
}

#[test]
fn non_utf8_variables_are_skipped_or_reported_never_a_panic() {
    // The end-to-end suite's own variable shares the prefix; this binary runs no e2e test.
    std::env::remove_var("MESSAGING_E2E_BOOTSTRAP");
    std::env::remove_var("MESSAGING_E2E_COSMOS_ENDPOINT");

    std::env::set_var("SOMEONE_ELSES_SETTING", not_utf8(b"caf\xe9"));
    App::builder()
        .environment()
        .build()
        .expect("a variable of someone else's that is not UTF-8 is skipped");

    std::env::set_var("MESSAGING_HEALTH_PORT", not_utf8(b"80\xff"));
    let Err(Error::Config(error)) = App::builder().environment().build() else {
        panic!("expected a configuration error")
    };
    assert_eq!(error.key(), "MESSAGING_HEALTH_PORT");
    assert_eq!(
        error.source(),
        Some(&Source::Environment("MESSAGING_HEALTH_PORT".into()))
    );
    assert!(
        error.to_string().contains("the value is not valid UTF-8"),
        "{error}"
    );
    std::env::remove_var("MESSAGING_HEALTH_PORT");

    let name = not_utf8(b"MESSAGING_HEALTH_\xffPORT");
    std::env::set_var(&name, "8080");
    let Err(Error::Config(error)) = App::builder().environment().build() else {
        panic!("expected a configuration error")
    };
    assert_eq!(error.key(), "MESSAGING_HEALTH_\u{fffd}PORT");
    assert!(
        error
            .to_string()
            .contains("the variable's name is not valid UTF-8"),
        "{error}"
    );
    std::env::remove_var(&name);

    App::builder()
        .environment()
        .build()
        .expect("readable again");
}
