use messaging_macros::incoming;

struct Movie;

#[incoming("movies", commit_strategy = latest)]
async fn consume(_movie: Movie) {}

fn main() {}
