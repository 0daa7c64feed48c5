use std::any::{Any, TypeId};
use std::fmt;

use smallvec::SmallVec;

/// A typed map of entries travelling with a message: the Kafka record's coordinates
/// ([`KafkaMetadata`](crate::KafkaMetadata)), what an outgoing record should carry
/// ([`KafkaOutgoingMetadata`](crate::KafkaOutgoingMetadata)), or entries of your own.
///
/// One entry per type: inserting a second value of a type replaces the first.
/// A message carries few entries, so a small vector beats a hash map here. One entry is held
/// inline: a processor's output, which carries its input record's Kafka metadata alone, costs
/// one allocation for it, not two.
#[derive(Default)]
pub struct Metadata {
    entries: SmallVec<[Entry; 1]>,
}

struct Entry {
    type_id: TypeId,
    type_name: &'static str,
    value: Box<dyn Any + Send + Sync>,
}

impl Metadata {
    pub fn new() -> Self {
        Self::default()
    }

    /// The entry of type `M`, if present.
    pub fn get<M: Any>(&self) -> Option<&M> {
        let wanted = TypeId::of::<M>();
        self.entries
            .iter()
            .find(|entry| entry.type_id == wanted)
            .and_then(|entry| entry.value.downcast_ref())
    }

    /// Inserts `value`, replacing an entry of the same type.
    pub fn insert<M: Any + Send + Sync>(&mut self, value: M) {
        let type_id = TypeId::of::<M>();
        let entry = Entry {
            type_id,
            type_name: std::any::type_name::<M>(),
            value: Box::new(value),
        };
        match self
            .entries
            .iter_mut()
            .find(|existing| existing.type_id == type_id)
        {
            Some(existing) => *existing = entry,
            None => self.entries.push(entry),
        }
    }

    /// Builder form of [`insert`](Self::insert).
    pub fn with<M: Any + Send + Sync>(mut self, value: M) -> Self {
        self.insert(value);
        self
    }

    /// Adds the entries of `from` whose types this one lacks: an output keeps its input's
    /// metadata, and what it sets itself wins.
    pub(crate) fn inherit(&mut self, from: Metadata) {
        if self.entries.is_empty() {
            *self = from;
            return;
        }
        for entry in from.entries {
            if !self
                .entries
                .iter()
                .any(|existing| existing.type_id == entry.type_id)
            {
                self.entries.push(entry);
            }
        }
    }

    /// Removes and returns the entry of type `M`.
    pub fn remove<M: Any>(&mut self) -> Option<M> {
        let wanted = TypeId::of::<M>();
        let index = self
            .entries
            .iter()
            .position(|entry| entry.type_id == wanted)?;
        self.entries
            .swap_remove(index)
            .value
            .downcast()
            .ok()
            .map(|boxed| *boxed)
    }
}

impl fmt::Debug for Metadata {
    /// Lists entry types only: entries may hold record bytes or credentials-bearing values.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set()
            .entries(self.entries.iter().map(|entry| entry.type_name))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq)]
    struct TraceId(u64);

    #[test]
    fn one_entry_per_type() {
        let mut metadata = Metadata::new().with(TraceId(1)).with("tenant-a");
        metadata.insert(TraceId(2));
        assert_eq!(metadata.get::<TraceId>(), Some(&TraceId(2)));
        assert_eq!(metadata.get::<&str>(), Some(&"tenant-a"));
        assert_eq!(metadata.remove::<TraceId>(), Some(TraceId(2)));
        assert_eq!(metadata.get::<TraceId>(), None);
        assert!(format!("{metadata:?}").contains("&str"));
    }

    #[test]
    fn an_output_inherits_what_it_does_not_set_itself() {
        let mut output = Metadata::new().with(TraceId(2));
        output.inherit(Metadata::new().with(TraceId(1)).with("tenant-a"));
        assert_eq!(output.get::<TraceId>(), Some(&TraceId(2)));
        assert_eq!(output.get::<&str>(), Some(&"tenant-a"));
        let mut empty = Metadata::new();
        empty.inherit(Metadata::new().with(TraceId(1)));
        assert_eq!(empty.get::<TraceId>(), Some(&TraceId(1)));
    }
}
