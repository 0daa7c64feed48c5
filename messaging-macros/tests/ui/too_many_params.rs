use messaging_macros::incoming;

struct Movie;
struct Metadata;

#[incoming("movies")]
async fn consume(_movie: Movie, _metadata: Metadata, _extra: u32) {}

fn main() {}
