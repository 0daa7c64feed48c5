use messaging_macros::incoming;

struct Movie;

#[incoming("movies", failure_strategy = "retry")]
async fn consume(_movie: Movie) {}

fn main() {}
