//! Harnesses for the privileged tests: a frame builder for
//! BPF_PROG_TEST_RUN packet tests, and network-namespace topologies with a
//! running daemon for end-to-end tests. Everything created is removed on
//! drop, also when a test fails.
pub mod backend;
pub mod daemon;
pub mod fixtures;
pub mod frame;
pub mod hello;
pub mod hostile;
pub mod kube;
pub mod kube_load;
pub mod netns;
pub mod pki;
pub mod rng;
pub mod steer;
pub mod tls_clients;
pub mod usage;

/// Fails fast, with the reason, when the tests are not run as root.
pub fn require_root() {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "these tests load BPF programs and create network namespaces: run them as root (`sudo -E cargo xtask test`)"
    );
}
