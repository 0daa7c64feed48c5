use messaging_macros::incoming;

#[incoming("movies")]
async fn consume() {}

fn main() {}
