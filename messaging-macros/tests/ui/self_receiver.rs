use messaging_macros::incoming;

struct Movie;

struct Recommender;

impl Recommender {
    #[incoming("movies")]
    async fn consume(&self, _movie: Movie) {}
}

fn main() {}
