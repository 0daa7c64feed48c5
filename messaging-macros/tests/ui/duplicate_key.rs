use messaging_macros::incoming;

struct Movie;

#[incoming("movies", topic = "movies", topic = "films")]
async fn consume(_movie: Movie) {}

fn main() {}
