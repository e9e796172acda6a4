//! Fuzz target `device_api`: see `workspace_tests::fuzz::DeviceApi` (tests/fuzz.rs), which
//! the corpus replay calls too.
#![no_main]

use std::sync::LazyLock;

use workspace_tests::fuzz::DeviceApi;

static API: LazyLock<DeviceApi> = LazyLock::new(DeviceApi::new);

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    API.call(data);
});
