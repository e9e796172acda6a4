//! Fuzz target `mqtt`: see `workspace_tests::fuzz::HubApi::mqtt` (tests/fuzz.rs), which the
//! corpus replay calls too.
#![no_main]

use std::sync::LazyLock;

use workspace_tests::fuzz::HubApi;

static API: LazyLock<HubApi> = LazyLock::new(HubApi::new);

libfuzzer_sys::fuzz_target!(|data: &[u8]| API.mqtt(data));
