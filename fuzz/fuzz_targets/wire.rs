//! Fuzz target `wire`: see `workspace_tests::fuzz::wire` (tests/fuzz.rs), which the corpus
//! replay calls too.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| workspace_tests::fuzz::wire(data));
