// Unused imports or dead code caused by the expansion would fail here.
#![deny(warnings)]

// The expansion names `::messaging`; this makes the test crate itself answer
// to that name, so the stand-in below plays the runtime.
extern crate self as messaging;

use messaging_macros::incoming;

pub struct AppBuilder {
    calls: Vec<String>,
}

impl AppBuilder {
    pub fn attribute(mut self, key: &str, value: &str) -> Self {
        self.calls.push(format!("{key}={value}"));
        self
    }

    pub fn incoming<F>(mut self, channel: &str, _handler: F) -> Self {
        self.calls.push(format!("incoming {channel}"));
        self
    }

    pub fn processor<F>(mut self, incoming: &str, outgoing: &str, _handler: F) -> Self {
        self.calls
            .push(format!("processor {incoming} -> {outgoing}"));
        self
    }

    pub fn __processor_returning_result<F>(self, incoming: &str, outgoing: &str, handler: F) -> Self {
        self.processor(incoming, outgoing, handler)
    }

    pub fn __processor_returning_result_of_message<F>(
        self,
        incoming: &str,
        outgoing: &str,
        handler: F,
    ) -> Self {
        self.processor(incoming, outgoing, handler)
    }
}

pub mod __private {
    pub struct Registration {
        pub register: fn(crate::AppBuilder) -> crate::AppBuilder,
    }

    pub mod inventory {
        pub use crate::__submit as submit;
    }
}

#[macro_export]
macro_rules! __submit {
    ($registration:expr) => {
        static _REGISTRATION: $crate::__private::Registration = $registration;
    };
}

pub struct Movie;
pub struct Metadata;
pub struct BadMovie;

#[incoming(
    "movies",
    topic = "movies",
    failure_strategy = "dead-letter-queue",
    group_id = "g"
)]
async fn consume(_movie: Movie) -> Result<(), BadMovie> {
    Ok(())
}

// A second handler in the same module must not clash with the first.
#[incoming("films", commit_strategy = "latest")]
async fn consume_with_metadata(_movie: Movie, _metadata: Metadata) -> Result<(), BadMovie> {
    Ok(())
}

// Each order in its own module: the attribute consumed by the other must not
// leave its explicit import unused.
mod incoming_on_top {
    use std::convert::Infallible;

    use messaging_macros::{incoming, outgoing};

    #[incoming("prices")]
    #[outgoing("prices-eur", topic = "eur")]
    pub async fn convert(usd: f64) -> Result<f64, Infallible> {
        Ok(usd * 0.92)
    }
}

mod outgoing_on_top {
    use std::convert::Infallible;

    use messaging_macros::{incoming, outgoing};

    #[outgoing("prices-chf")]
    #[incoming("prices")]
    pub async fn convert(usd: f64) -> Result<f64, Infallible> {
        Ok(usd * 0.8)
    }
}

mod qualified_sibling {
    use std::convert::Infallible;

    use messaging_macros::incoming;

    #[incoming("prices")]
    #[messaging_macros::outgoing("prices-gbp")]
    pub async fn convert(usd: f64) -> Result<f64, Infallible> {
        Ok(usd * 0.75)
    }
}

fn main() {
    // A handler local to a function body.
    #[incoming("local")]
    async fn local(_movie: Movie) {}

    // The functions stay callable as written.
    drop(consume(Movie));
    drop(consume_with_metadata(Movie, Metadata));
    drop(incoming_on_top::convert(1.0));
    drop(outgoing_on_top::convert(1.0));
    drop(qualified_sibling::convert(1.0));
    drop(local(Movie));

    let app = AppBuilder { calls: Vec::new() }.attribute("k", "v");
    assert_eq!(app.calls, ["k=v"]);
}
