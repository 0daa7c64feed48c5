use messaging_macros::{incoming, outgoing};

struct Movie;

#[incoming("movies")]
#[incoming("films")]
async fn consume(_movie: Movie) {}

#[outgoing("a")]
#[incoming("prices")]
#[outgoing("b")]
async fn convert(usd: f64) -> f64 {
    usd
}

fn main() {}
