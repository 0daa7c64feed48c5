use messaging_macros::incoming;

struct Movie;

#[incoming(movies)]
async fn consume(_movie: Movie) {}

fn main() {}
