use messaging_macros::incoming;

struct Movie;

#[incoming]
async fn consume(_movie: Movie) {}

#[incoming(topic = "movies")]
async fn consume_topic(_movie: Movie) {}

fn main() {}
