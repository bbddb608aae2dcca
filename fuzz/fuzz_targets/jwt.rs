//! Any bytes as a JWT through the JWT phase, or as a fetched JSON Web Key Set: no panic, and no token accepted that the key set's key did not sign.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    gateway_userspace::fuzzing::jwt(data);
});
