//! See `gateway_userspace::fuzzing::certificate`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    gateway_userspace::fuzzing::certificate(data);
});
