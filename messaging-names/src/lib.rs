//! The accepted values of the enumerated channel attributes (`failure-strategy`,
//! `commit-strategy`, `connector`, `ordering`), and of channel names, in one table.
//!
//! Both the runtime (`messaging`, which parses them at startup) and the attribute macros
//! (`messaging-macros`, which check them at compile time) read this table. A proc-macro crate
//! cannot export it to the runtime and the runtime cannot be a dependency of its own macros,
//! so the table lives in this dependency-free crate: a value the macro accepts is a value the
//! runtime accepts, and adding one is a change in one place.
#![no_std]

/// `failure-strategy`: what an incoming channel does with a nacked message.
pub mod failure_strategy {
    pub const KEY: &str = "failure-strategy";
    pub const FAIL: &str = "fail";
    pub const IGNORE: &str = "ignore";
    pub const DEAD_LETTER_QUEUE: &str = "dead-letter-queue";
    pub const DELAYED_RETRY_TOPIC: &str = "delayed-retry-topic";
    pub const ACCEPTED: &[&str] = &[FAIL, IGNORE, DEAD_LETTER_QUEUE, DELAYED_RETRY_TOPIC];
}

/// `commit-strategy`: when an incoming channel commits offsets.
pub mod commit_strategy {
    pub const KEY: &str = "commit-strategy";
    pub const THROTTLED: &str = "throttled";
    pub const LATEST: &str = "latest";
    pub const IGNORE: &str = "ignore";
    pub const ACCEPTED: &[&str] = &[THROTTLED, LATEST, IGNORE];
}

/// `connector`: which connector serves a channel.
pub mod connector {
    pub const KEY: &str = "connector";
    pub const KAFKA: &str = "kafka";
    pub const MEMORY: &str = "memory";
    /// Azure Cosmos DB, outgoing only (the `messaging` crate's `cosmos` feature).
    pub const COSMOS: &str = "cosmos";
    pub const ACCEPTED: &[&str] = &[KAFKA, MEMORY, COSMOS];
    /// The connectors an incoming channel can read from.
    pub const INCOMING_ACCEPTED: &[&str] = &[KAFKA, MEMORY];
}

/// `ordering`: which records of an incoming channel may be handled at the same time.
pub mod ordering {
    pub const KEY: &str = "ordering";
    pub const PARTITION: &str = "partition";
    pub const KEY_ORDER: &str = "key";
    pub const UNORDERED: &str = "unordered";
    pub const ACCEPTED: &[&str] = &[PARTITION, KEY_ORDER, UNORDERED];
}

/// Channel names: part of configuration keys (`messaging.incoming.<channel>.*`), the default
/// topic name (these are Kafka's legal topic characters), and the names health and metrics
/// report, where a retry topic's reader is `<channel>[<retry topic>]`. Environment variables
/// fold every character that is not a letter or a digit into `_`, so the runtime also refuses
/// two channels of one direction whose variables would be the same.
pub mod channel {
    /// What a channel name may hold, as error messages say it.
    pub const ACCEPTED: &str = "ASCII letters, digits, '.', '_' and '-'";

    /// The first character of `name` a channel name may not hold.
    pub fn first_refused(name: &str) -> Option<char> {
        name.chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    }
}
