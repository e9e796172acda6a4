//! Tests over the whole repository rather than one crate; see `tidy.rs`.
