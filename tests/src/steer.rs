//! BPF_PROG_TEST_RUN for the socket-lookup program, which aya's `TestRun`
//! does not cover: the context in (a connection's addresses and ports) and
//! out (the cookie of the socket the program chose), through bpf(2).
use std::{
    io,
    net::{IpAddr, SocketAddr},
    os::fd::{AsFd, AsRawFd, RawFd},
};

use aya::programs::SkLookup;

/// `struct bpf_sk_lookup` of the kernel's UAPI.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
struct SkLookupCtx {
    cookie: u64,
    family: u32,
    protocol: u32,
    remote_ip4: u32,
    remote_ip6: [u32; 4],
    remote_port: u16,
    pad: u16,
    local_ip4: u32,
    local_ip6: [u32; 4],
    local_port: u32,
    ingress_ifindex: u32,
    tail: u32,
}

/// The `test` member of `union bpf_attr`.
#[repr(C)]
#[derive(Default)]
struct TestRunAttr {
    prog_fd: u32,
    retval: u32,
    data_size_in: u32,
    data_size_out: u32,
    data_in: u64,
    data_out: u64,
    repeat: u32,
    duration: u32,
    ctx_size_in: u32,
    ctx_size_out: u32,
    ctx_in: u64,
    ctx_out: u64,
    flags: u32,
    cpu: u32,
    batch_size: u32,
    pad: [u32; 9],
}

const BPF_PROG_TEST_RUN: libc::c_long = 10;
/// `sizeof(struct bpf_sk_lookup)`, padded to 8 bytes.
const CTX_SIZE: u32 = size_of::<SkLookupCtx>() as u32;

/// What the program made of one lookup.
#[derive(Debug, PartialEq, Eq)]
pub struct Steered {
    /// `SK_PASS` (1) or `SK_DROP` (0).
    pub verdict: u32,
    /// The cookie of the socket it chose; 0 when none.
    pub cookie: u64,
}

/// Runs `program` on a lookup for `protocol` from `remote` to `local`.
pub fn run(
    program: &SkLookup,
    protocol: u8,
    remote: SocketAddr,
    local: SocketAddr,
) -> io::Result<Steered> {
    let lookup = Lookup {
        protocol,
        remote,
        local,
        ingress_ifindex: 0,
    };
    run_repeated(program, &lookup, 1).map(|(steered, _)| steered)
}

/// One socket lookup to run the program on.
#[derive(Clone, Copy, Debug)]
pub struct Lookup {
    pub protocol: u8,
    pub remote: SocketAddr,
    pub local: SocketAddr,
    /// The interface the SYN arrived on (0: none).
    pub ingress_ifindex: u32,
}

/// Runs `program` `repeat` times on `lookup`: what it made of it, and
/// the kernel's mean nanoseconds per run.
pub fn run_repeated(
    program: &SkLookup,
    lookup: &Lookup,
    repeat: u32,
) -> io::Result<(Steered, u32)> {
    let Lookup {
        protocol,
        remote,
        local,
        ingress_ifindex,
    } = *lookup;
    let mut ctx = SkLookupCtx {
        protocol: u32::from(protocol),
        remote_port: remote.port().to_be(),
        local_port: u32::from(local.port()),
        ingress_ifindex,
        ..Default::default()
    };
    match (remote.ip(), local.ip()) {
        (IpAddr::V4(r), IpAddr::V4(l)) => {
            ctx.family = libc::AF_INET as u32;
            ctx.remote_ip4 = u32::from_ne_bytes(r.octets());
            ctx.local_ip4 = u32::from_ne_bytes(l.octets());
        }
        (IpAddr::V6(r), IpAddr::V6(l)) => {
            ctx.family = libc::AF_INET6 as u32;
            ctx.remote_ip6 = words(r.octets());
            ctx.local_ip6 = words(l.octets());
        }
        _ => return Err(io::Error::other("mixed address families")),
    }
    let mut out = SkLookupCtx::default();
    let fd = program.fd().map_err(io::Error::other)?.as_fd().as_raw_fd();
    let mut attr = TestRunAttr {
        prog_fd: fd as u32,
        ctx_size_in: CTX_SIZE,
        ctx_size_out: CTX_SIZE,
        ctx_in: &ctx as *const SkLookupCtx as u64,
        ctx_out: &mut out as *mut SkLookupCtx as u64,
        repeat,
        ..Default::default()
    };
    // SAFETY: `attr` is a valid `bpf_attr` prefix of the size passed, and
    // the context buffers outlive the call.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_TEST_RUN,
            &mut attr as *mut TestRunAttr,
            size_of::<TestRunAttr>(),
        )
    };
    if ret != 0 {
        return Err(io::Error::last_os_error());
    }
    let steered = Steered {
        verdict: attr.retval,
        cookie: out.cookie,
    };
    Ok((steered, attr.duration))
}

fn words(octets: [u8; 16]) -> [u32; 4] {
    let mut out = [0u32; 4];
    for (i, word) in out.iter_mut().enumerate() {
        *word = u32::from_ne_bytes([
            octets[i * 4],
            octets[i * 4 + 1],
            octets[i * 4 + 2],
            octets[i * 4 + 3],
        ]);
    }
    out
}

/// The kernel's cookie of a socket (`SO_COOKIE`), as the program reports it.
pub fn cookie(socket: &impl AsRawFd) -> io::Result<u64> {
    let fd: RawFd = socket.as_raw_fd();
    let mut value = 0u64;
    let mut len = size_of::<u64>() as libc::socklen_t;
    // SAFETY: `value` and `len` are valid for the duration of the call.
    let ret = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_COOKIE,
            (&mut value as *mut u64).cast(),
            &mut len,
        )
    };
    if ret != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(value)
}
