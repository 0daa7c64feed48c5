use messaging_macros::incoming;

struct Movie;

#[incoming("my movies")]
async fn consume(_movie: Movie) {}

#[incoming("")]
async fn consume_nothing(_movie: Movie) {}

fn main() {}
