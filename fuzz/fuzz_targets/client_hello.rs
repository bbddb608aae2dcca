//! Any bytes as the first bytes of a TLS connection: the ClientHello inspector never panics and never changes its mind.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    gateway_userspace::fuzzing::client_hello(data);
});
