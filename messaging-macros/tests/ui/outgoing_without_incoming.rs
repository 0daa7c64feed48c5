use messaging_macros::outgoing;

#[outgoing("prices-eur")]
async fn convert(usd: f64) -> f64 {
    usd * 0.92
}

fn main() {}
