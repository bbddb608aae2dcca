//! Any bytes through the YAML loader: an error or documents within its limits, never a panic.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    gateway_userspace::fuzzing::yaml(data);
});
