//! The attribute macros and an `Emitter` in one program, as the README shows it: `discover()`
//! adds the `#[incoming]` handlers, `outgoing(..)` declares the emitter's channel, and the
//! running application hands out the emitter (which `App::from_env()` cannot).

use messaging::prelude::*;
use messaging::{AppBuilder, RunningApp};

#[derive(Debug, Deserialize, Serialize, PartialEq)]
struct Alert {
    level: String,
}

#[incoming("watched", connector = "memory")]
async fn watch(title: String) -> Result<(), String> {
    if title.is_empty() {
        return Err("a title is required".to_owned());
    }
    Ok(())
}

/// The discovered handlers, `with` what a test adds, no health server, built and started.
async fn discovered(with: impl FnOnce(AppBuilder) -> AppBuilder) -> RunningApp {
    // The end-to-end suite's own variable shares the prefix; this binary runs no e2e test.
    std::env::remove_var("MESSAGING_E2E_BOOTSTRAP");
    std::env::remove_var("MESSAGING_E2E_COSMOS_ENDPOINT");
    with(App::builder().discover())
        .set("messaging.health.enabled", false)
        .build()
        .expect("valid configuration")
        .start()
        .await
        .expect("started")
}

#[tokio::test]
async fn attribute_handlers_and_an_emitter_run_in_one_application() {
    let running = discovered(|builder| {
        builder
            .environment()
            .outgoing("alerts")
            .set("messaging.outgoing.alerts.connector", "memory")
    })
    .await;

    let alerts = running.emitter::<Alert>("alerts").unwrap();
    alerts
        .send(Alert {
            level: "high".into(),
        })
        .await
        .expect("delivered");
    assert_eq!(
        running
            .in_memory_sink("alerts")
            .unwrap()
            .received::<Alert>()
            .unwrap(),
        [Alert {
            level: "high".into()
        }]
    );

    let watched = running.in_memory_source("watched").unwrap();
    watched
        .send("Alien".to_owned())
        .await
        .expect("acked by the #[incoming] handler");
    assert_eq!(
        watched.send(String::new()).await.unwrap_err().reason(),
        "a title is required"
    );
    running.shutdown().await;
}

/// `Result<U, String>`: `String` is `Serialize` as well as an error, so the plain shape would
/// fit too; written as a `Result`, an `Err` nacks the input and nothing is sent.
#[incoming("prices", connector = "memory")]
#[outgoing("prices-eur", connector = "memory")]
async fn to_euros(usd: f64) -> Result<f64, String> {
    if usd < 0.0 {
        return Err(format!("a price cannot be negative: {usd}"));
    }
    Ok(usd * 0.5)
}

#[tokio::test]
async fn a_processor_returning_a_serializable_error_nacks_it() {
    let running = discovered(|builder| builder).await;
    let prices = running.in_memory_source("prices").unwrap();
    prices.send(4.0).await.expect("converted and sent");
    assert_eq!(
        prices.send(-1.0).await.unwrap_err().reason(),
        "a price cannot be negative: -1"
    );
    assert_eq!(
        running
            .in_memory_sink("prices-eur")
            .unwrap()
            .received::<f64>()
            .unwrap(),
        [2.0]
    );
    running.shutdown().await;
}
