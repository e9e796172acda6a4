//! Fuzz target `image`: see `workspace_tests::fuzz::image` (tests/fuzz.rs), which the corpus
//! replay calls too.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| workspace_tests::fuzz::image(data));
