//! Any bytes as a listener's first data segment: the kernel's host classifier (SNI, Host) never panics, stays inside the segment, and never changes a verdict.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    gateway_userspace::fuzzing::host(data);
});
