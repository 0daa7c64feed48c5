use messaging_macros::incoming;

struct Movie;

#[incoming("movies", colour = "red")]
async fn consume(_movie: Movie) {}

fn main() {}
