//! Records in flight: how many of an incoming channel's records run at once, and which of them
//! must not overlap.

mod held;
mod ordering;
mod places;
mod slots;

pub use held::HeldRecords;
pub(crate) use ordering::Ordering;
pub(crate) use places::{Place, Places};
pub(crate) use slots::{Slot, Slots};
