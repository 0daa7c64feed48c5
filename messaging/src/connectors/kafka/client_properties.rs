//! The names of every property librdkafka knows, to suggest the one a misspelled property
//! meant: librdkafka's own refusal ("No such configuration property") names none.
//!
//! Read from the property table librdkafka prints (`rd_kafka_conf_properties_show`, its
//! CONFIGURATION.md), not from a configuration dump, which leaves out aliases such as
//! `linger.ms`, `acks` and `max.partition.fetch.bytes`: some of the names users know best.

use std::sync::OnceLock;

use rdkafka::bindings as native;

/// librdkafka's global and topic property names, aliases included, sorted.
pub(crate) fn known_property_names() -> &'static [String] {
    static NAMES: OnceLock<Vec<String>> = OnceLock::new();
    NAMES.get_or_init(|| {
        let mut names = property_table()
            .map(|table| names_in(&table))
            .unwrap_or_default();
        names.sort();
        names.dedup();
        names
    })
}

/// The first column of each row of the table (`name | C/P | range | default | ...`), but
/// the heading's (`Property`) and those of properties set through an API of their own, not a
/// configuration string (`ssl_key`, `dr_cb`: no use suggesting them).
fn names_in(table: &str) -> Vec<String> {
    table
        .lines()
        .filter(|row| !row.contains("see dedicated API"))
        .filter_map(|row| row.split_once('|'))
        .map(|(name, _)| name.trim())
        .filter(|name| {
            name.starts_with(|c: char| c.is_ascii_lowercase())
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '_')
        })
        .map(str::to_owned)
        .collect()
}

/// librdkafka's property table as it prints it, through a temporary C `FILE`; `None` if the
/// C library cannot make one (no suggestions then, nothing else changes).
fn property_table() -> Option<String> {
    // SAFETY: the file is created, written by librdkafka, read back and closed here, by the
    // C library's own functions; reads go into a buffer of the length given.
    unsafe {
        let file = libc::tmpfile();
        if file.is_null() {
            return None;
        }
        native::rd_kafka_conf_properties_show(file.cast());
        libc::rewind(file);
        let mut table = Vec::new();
        let mut buffer = [0u8; 8192];
        loop {
            let read = libc::fread(buffer.as_mut_ptr().cast(), 1, buffer.len(), file);
            if read == 0 {
                break;
            }
            table.extend_from_slice(&buffer[..read]);
        }
        libc::fclose(file);
        Some(String::from_utf8_lossy(&table).into_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn global_topic_and_alias_properties_are_known() {
        let names = known_property_names();
        for name in [
            "bootstrap.servers",
            "fetch.max.bytes",
            "auto.offset.reset",
            "linger.ms",
            "acks",
            "sasl.password",
        ] {
            assert!(names.iter().any(|known| known == name), "{name}");
        }
        for unsettable in ["Property", "ssl_key", "dr_cb", "log_cb"] {
            assert!(
                !names.iter().any(|known| known == unsettable),
                "{unsettable}"
            );
        }
    }
}
