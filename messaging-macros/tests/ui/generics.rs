use messaging_macros::incoming;

#[incoming("movies")]
async fn consume<T: Clone>(_movie: T) {}

fn main() {}
