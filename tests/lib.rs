//! Tests over the whole repository rather than one crate: `tidy.rs`, and the fuzz
//! corpora replayed (`fuzz_replay.rs`) through the entry points in [`fuzz`].

pub mod fuzz;
