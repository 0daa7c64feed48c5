//! `wait_for_shutdown_signal` listens from its call, not from the first poll of its future: a
//! program takes it, then says it is ready, then awaits it, and a SIGTERM sent as soon as the
//! program said so is a graceful shutdown, not the default action that kills the process.
//!
//! A test binary of its own: it sends SIGTERM to its own process.
#![cfg(unix)]

mod common;

use std::time::Duration;

use messaging::App;

use common::PATIENCE;

#[tokio::test]
async fn a_sigterm_between_the_call_and_the_await_is_not_missed() {
    let app = App::builder()
        .set("messaging.health.enabled", false)
        .build()
        .expect("valid configuration")
        .start()
        .await
        .expect("app starts");
    let shutdown_requested = app.wait_for_shutdown_signal();

    // SAFETY: sending a signal to our own process; the listener taken above receives it. Were it
    // not listening yet, the default action would end this test binary (the test fails).
    assert_eq!(unsafe { libc::kill(libc::getpid(), libc::SIGTERM) }, 0);

    tokio::time::timeout(PATIENCE, shutdown_requested)
        .await
        .expect("the SIGTERM sent before the first poll resolves the wait");
    // A signal, not the call, resolves it: a new wait, with no signal since, does not.
    assert!(
        tokio::time::timeout(Duration::from_millis(100), app.wait_for_shutdown_signal())
            .await
            .is_err(),
        "a wait without a signal resolved"
    );
    app.shutdown().await;
}
