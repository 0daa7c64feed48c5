//! A channel draining a backlog with a handler that never waits must not starve the rest of
//! the process: on a current-thread runtime, `/health` still answers and SIGTERM still stops
//! the channel long before the backlog ends.
//!
//! A test binary of its own: it sends SIGTERM to its own process.
#![cfg(unix)]

mod common;

use std::io::{Read, Write};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use common::*;

const PARTITIONS: i32 = 3;
const PER_PARTITION: usize = 30_000;

#[test]
fn a_busy_channel_leaves_room_for_health_and_shutdown_on_a_current_thread_runtime() {
    busy_channel_leaves_room(false);
    // With tokio's clock paused (as in tests) the loop's time slice never ends: it yields
    // after a number of records instead.
    busy_channel_leaves_room(true);
}

fn busy_channel_leaves_room(clock_paused: bool) {
    let topic = unique("backlog");
    create_topic(&topic, PARTITIONS);
    let value = b"1".to_vec();
    for partition in 0..PARTITIONS {
        let records: Vec<Record<'_>> = (0..PER_PARTITION)
            .map(|_| Record {
                partition: Some(partition),
                ..Record::value(&value)
            })
            .collect();
        produce(&topic, &records);
    }
    let total = PARTITIONS as usize * PER_PARTITION;

    let handled = Arc::new(AtomicUsize::new(0));
    let (address_sender, address) = mpsc::channel();
    let (done_sender, done) = mpsc::channel();
    let app_thread = {
        let (topic, handled) = (topic.clone(), handled.clone());
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .start_paused(clock_paused)
                .build()
                .expect("runtime");
            runtime.block_on(async move {
                let app = start(
                    builder()
                        .set("messaging.health.enabled", true)
                        .set("messaging.health.port", 0)
                        .set("messaging.incoming.numbers.topic", &topic)
                        .incoming("numbers", move |_: u8| {
                            handled.fetch_add(1, Ordering::Relaxed);
                            async {}
                        }),
                )
                .await;
                // Listening before the test learns the address: it sends SIGTERM after that.
                let shutdown_requested = app.wait_for_shutdown_signal();
                address_sender
                    .send(app.health_address().expect("health server"))
                    .expect("test waits");
                shutdown_requested.await;
                app.shutdown().await;
            });
            done_sender.send(()).expect("test waits");
        })
    };
    let address = address.recv_timeout(PATIENCE).expect("app started");

    let deadline = std::time::Instant::now() + PATIENCE;
    while handled.load(Ordering::Relaxed) == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the channel never started handling its backlog"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let mut health = std::net::TcpStream::connect(address).expect("connect to /health");
    health.set_read_timeout(Some(PATIENCE)).expect("timeout");
    health
        .write_all(b"GET /health/live HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .expect("request");
    let mut response = String::new();
    health
        .read_to_string(&mut response)
        .expect("/health answers while the channel is busy");
    assert!(
        response.starts_with("HTTP/1.0 200") || response.starts_with("HTTP/1.1 200"),
        "{response}"
    );
    let handled_at_health = handled.load(Ordering::Relaxed);
    assert!(
        handled_at_health < total,
        "/health answered only after the backlog (clock paused: {clock_paused})"
    );

    // SAFETY: sending a signal to our own process; tokio's handler, installed by the app, takes it.
    assert_eq!(unsafe { libc::kill(libc::getpid(), libc::SIGTERM) }, 0);
    done.recv_timeout(PATIENCE)
        .expect("SIGTERM is honoured while the channel is busy");
    app_thread.join().expect("app thread");
    let handled = handled.load(Ordering::Relaxed);
    assert!(handled < total, "the shutdown waited for the whole backlog ({handled} of {total}; {handled_at_health} when /health answered; clock paused: {clock_paused})");
}
