//! librdkafka's second names of its properties.

/// librdkafka's second names of properties ("Alias for" in its `CONFIGURATION.md`), each with
/// the name the library keeps the property under. A client's configuration is a map that
/// librdkafka applies in no fixed order, so a property set under both names (a user's
/// `request.required.acks` and the library's `acks=all`, or a connector-wide
/// `delivery.timeout.ms` and the dead-letter producer's `message.timeout.ms`) would take either
/// value from one start to the next. Kept under one name, the property has one setting, found
/// as any other's: the environment's over the file's over the code's, a channel's over a
/// connector-wide one, and the user's over the library's defaults.
const ALIASES: &[(&str, &str)] = &[
    ("metadata.broker.list", "bootstrap.servers"),
    ("request.required.acks", "acks"),
    ("delivery.timeout.ms", "message.timeout.ms"),
    ("fetch.message.max.bytes", "max.partition.fetch.bytes"),
    ("queue.buffering.max.ms", "linger.ms"),
    ("message.send.max.retries", "retries"),
    ("compression.codec", "compression.type"),
    ("max.in.flight", "max.in.flight.requests.per.connection"),
    ("sasl.mechanism", "sasl.mechanisms"),
    (
        "sasl.oauthbearer.client.credentials.client.id",
        "sasl.oauthbearer.client.id",
    ),
    (
        "sasl.oauthbearer.client.credentials.client.secret",
        "sasl.oauthbearer.client.secret",
    ),
];

/// The name the library keeps `property` under (see [`ALIASES`]).
pub(crate) fn property_name(property: &str) -> &str {
    ALIASES
        .iter()
        .find(|(alias, _)| *alias == property)
        .map_or(property, |(_, kept)| kept)
}
