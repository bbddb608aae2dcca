//! Any bytes, as Istio YAML, through load + validate + compile + report: must never panic.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    gateway_userspace::fuzzing::config(data);
});
