use messaging_macros::incoming;

struct Movie;

#[incoming("movies")]
fn consume(_movie: Movie) {}

fn main() {}
