//! How to test your own handlers without a broker: the in-memory connector.
//!
//! The handlers below are ordinary `#[incoming]`/`#[outgoing]` functions, as in a service. The
//! test discovers them like `App::from_env()` would, switches their channels to the memory
//! connector, sends payloads in and reads what came out. Each `send` returns the handler's
//! verdict: `Ok(())` when the message was acked, the failure when it was nacked.

use std::convert::Infallible;
use std::sync::{Arc, OnceLock};

use messaging::health::{Check, Status};
use messaging::prelude::*;

#[derive(Debug, Deserialize, Serialize, PartialEq)]
struct Order {
    id: u32,
    quantity: u32,
}

#[derive(Debug, thiserror::Error)]
#[error("order {0} has no items")]
struct EmptyOrder(u32);

#[incoming("orders")]
async fn validate(order: Order) -> Result<(), EmptyOrder> {
    if order.quantity == 0 {
        return Err(EmptyOrder(order.id));
    }
    Ok(())
}

#[incoming("prices")]
#[outgoing("prices-eur")]
async fn convert(usd: f64) -> Result<f64, Infallible> {
    Ok(usd * 0.5)
}

#[incoming("audit")]
async fn audit(entry: Message<String>) -> messaging::Result<()> {
    if entry.payload().is_empty() {
        return entry.nack(Failure::new("empty audit entry")).await;
    }
    entry.ack().await
}

/// `builder` with no health server (tests run side by side), built and started.
async fn started(builder: messaging::AppBuilder) -> messaging::RunningApp {
    builder
        .set("messaging.health.enabled", false)
        .build()
        .expect("valid configuration")
        .start()
        .await
        .expect("started")
}

/// Every discovered channel on the memory connector, no health server.
async fn start_in_memory(failure_strategy: &str) -> messaging::RunningApp {
    let mut builder = App::builder().discover();
    for channel in [
        "messaging.incoming.orders",
        "messaging.incoming.prices",
        "messaging.outgoing.prices-eur",
        "messaging.incoming.audit",
    ] {
        builder = builder.set(&format!("{channel}.connector"), "memory");
    }
    started(builder.set(
        "messaging.incoming.orders.failure-strategy",
        failure_strategy,
    ))
    .await
}

#[tokio::test]
async fn a_processor_sends_its_result_to_the_outgoing_channel() {
    let app = start_in_memory("fail").await;
    let prices = app.in_memory_source("prices").unwrap();
    let euros = app.in_memory_sink("prices-eur").unwrap();
    prices.send(10.0).await.expect("acked");
    prices.send(3.0).await.expect("acked");
    assert_eq!(euros.received::<f64>().unwrap(), [5.0, 1.5]);
    app.shutdown().await;
}

#[tokio::test]
async fn a_rejected_message_comes_back_as_the_failure() {
    let app = start_in_memory("ignore").await;
    let orders = app.in_memory_source("orders").unwrap();
    orders
        .send(Order { id: 1, quantity: 2 })
        .await
        .expect("a valid order is acked");
    let failure = orders.send(Order { id: 2, quantity: 0 }).await.unwrap_err();
    assert_eq!(failure.reason(), "order 2 has no items");
    assert!(failure.class_name().ends_with("EmptyOrder"));
    orders
        .send(Order { id: 3, quantity: 1 })
        .await
        .expect("ignore: the channel goes on");
    let undecodable = orders.send("not an order".to_owned()).await.unwrap_err();
    assert!(
        undecodable.reason().contains("cannot decode"),
        "{undecodable}"
    );
    app.shutdown().await;
}

#[tokio::test]
async fn with_the_fail_strategy_a_rejection_stops_the_channel() {
    let app = start_in_memory("fail").await;
    let orders = app.in_memory_source("orders").unwrap();
    orders.send(Order { id: 2, quantity: 0 }).await.unwrap_err();
    assert_eq!(app.health().check(Check::Liveness).status, Status::Down);
    assert_eq!(
        app.health().check(Check::Liveness).data["orders"],
        Err("order 2 has no items".to_owned())
    );
    let after = orders.send(Order { id: 3, quantity: 1 }).await.unwrap_err();
    assert!(after.reason().contains("has stopped"), "{after}");
    app.shutdown().await;
}

#[tokio::test]
async fn a_message_handler_settles_by_hand() {
    let app = start_in_memory("fail").await;
    let audit = app.in_memory_source("audit").unwrap();
    audit
        .send("logged in".to_owned())
        .await
        .expect("acked by the handler");
    assert_eq!(
        audit.send(String::new()).await.unwrap_err().reason(),
        "empty audit entry"
    );
    app.shutdown().await;
}

/// A handler that never returns does not hold the shutdown past `messaging.shutdown.timeout.ms`
/// (on a paused clock, so the timeout passes at once): its message is abandoned, and its
/// sender hears that it was not handled.
#[tokio::test(start_paused = true)]
async fn a_handler_that_never_returns_does_not_hold_the_shutdown() {
    let (started, mut handler_started) = tokio::sync::mpsc::unbounded_channel();
    let app = App::builder()
        .set("messaging.health.enabled", false)
        .set("messaging.shutdown.timeout.ms", 500)
        .set("messaging.incoming.stuck.connector", "memory")
        .incoming("stuck", move |_: String| {
            let _ = started.send(());
            std::future::pending::<()>()
        })
        .build()
        .expect("valid configuration")
        .start()
        .await
        .expect("started");
    let stuck = app.in_memory_source("stuck").unwrap();
    let sending = tokio::spawn(async move { stuck.send("hello".to_owned()).await });
    handler_started.recv().await.expect("the handler is called");
    let began = tokio::time::Instant::now();
    tokio::time::timeout(std::time::Duration::from_secs(3600), app.shutdown())
        .await
        .expect("the shutdown ends");
    assert!(
        began.elapsed() <= std::time::Duration::from_millis(500),
        "ended by the timeout"
    );
    let sent = sending.await.expect("the sending task");
    assert!(
        sent.is_err(),
        "the sender hears its message was not handled"
    );
}

/// An error type that is `Serialize` but not an error: `Result<f64, Refusal>` is then a
/// `Serialize` value, and a processor given to the builder by hand would have sent an `Err` as
/// `{"Err": ..}` and acked its input. Every such output fails its input instead, with the fix.
#[derive(Debug, Serialize)]
struct Refusal {
    why: String,
}

#[tokio::test]
async fn an_output_whose_error_is_not_an_error_type_is_refused_not_sent() {
    let app = started(
        App::builder()
            .processor("quotes", "quotes-out", |usd: f64| async move {
                if usd < 0.0 {
                    return Err(Refusal {
                        why: "negative".to_owned(),
                    });
                }
                Ok(usd)
            })
            .set("messaging.incoming.quotes.connector", "memory")
            .set("messaging.outgoing.quotes-out.connector", "memory")
            .set("messaging.incoming.quotes.failure-strategy", "ignore"),
    )
    .await;
    let quotes = app.in_memory_source("quotes").unwrap();
    for usd in [-1.0, 2.0] {
        let refused = quotes.send(usd).await.unwrap_err();
        assert!(
            refused.reason().contains("is not a std::error::Error"),
            "{refused}"
        );
    }
    assert!(app
        .in_memory_sink("quotes-out")
        .unwrap()
        .received::<serde_json::Value>()
        .unwrap()
        .is_empty());
    app.shutdown().await;
}

/// A message derived from an incoming one (`Message::map`) and sent through an emitter: when
/// its payload cannot be encoded, the incoming message is nacked with that reason, not as
/// dropped unsettled.
#[tokio::test]
async fn an_emitted_message_that_cannot_be_encoded_nacks_its_input_with_the_reason() {
    type NoTextKeys = std::collections::HashMap<(u8, u8), u8>;
    let emitter: Arc<OnceLock<Emitter<NoTextKeys>>> = Arc::default();
    let forwarding = emitter.clone();
    let app = started(
        App::builder()
            .incoming("forward", move |message: Message<String>| {
                let emitter = forwarding.clone();
                async move {
                    let unencodable = message.map(|_| NoTextKeys::from([((1, 2), 3)]));
                    let _ = emitter.get().expect("set").send_message(unencodable).await;
                }
            })
            .outgoing("forwarded")
            .set("messaging.incoming.forward.connector", "memory")
            .set("messaging.incoming.forward.failure-strategy", "ignore")
            .set("messaging.outgoing.forwarded.connector", "memory"),
    )
    .await;
    let _ = emitter.set(app.emitter("forwarded").unwrap());
    let refused = app
        .in_memory_source("forward")
        .unwrap()
        .send("x".to_owned())
        .await
        .unwrap_err();
    assert!(
        refused
            .reason()
            .contains("cannot encode the payload as JSON"),
        "{refused}"
    );
    app.shutdown().await;
}
