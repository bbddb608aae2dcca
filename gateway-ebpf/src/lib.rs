//! Empty on purpose: the program is the `gateway-xdp` binary target, built
//! for bpfel-unknown-none by gateway-userspace/build.rs.
#![no_std]
