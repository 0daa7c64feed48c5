use messaging_macros::{incoming, outgoing};

struct Movie;

#[incoming("my movies", colour = "red", failure_strategy = "retry")]
#[outgoing("out", connector = "rabbit")]
fn consume<T>(_movie: Movie, _a: u8, _b: T) {}

fn main() {}
