//! The reset the kernel puts in place of a data segment whose host no
//! server on its listener accepts, when the listener asks for that.
//!
//! The segment's own headers become a RST|ACK with the same sequence
//! numbers and no payload, passed up to the local stack: its sequence
//! number is exactly the next one the socket expects, so the socket is
//! reset at once (RFC 5961 accepts only that). The kernel remembers the
//! flow ([`ResetFlow`]) and lets the client's retransmission of the same
//! segment through untouched: it meets no socket, and the stack itself
//! answers it with a reset, so both ends are told. The kernel works on a copy of the headers (see
//! gateway-ebpf's `host.rs`); this code is shared so host tests check the
//! same bytes the kernel writes. Every loop is branch-free with a
//! constant bound, so the verifier walks it once.

/// Bytes of headers (IP with options or extension headers, then TCP) a
/// reset is built from; a power of two, so indices are masked into range.
pub const MAX_RESET_HEADERS: usize = 256;

/// Where the headers lie in a copy that starts at the IP header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResetHeaders {
    /// IPv6 (else IPv4).
    pub ipv6: bool,
    /// Offset of the TCP header.
    pub tcp: usize,
    /// End of the TCP header: the headers' whole length.
    pub len: usize,
}

/// A connection the kernel has reset, as the key of its memory of them.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ResetFlow {
    /// Source and destination addresses; IPv4 in the first four bytes.
    pub src: [u8; 16],
    pub dst: [u8; 16],
    /// Source and destination ports, as on the wire.
    pub ports: [u8; 4],
    /// 6 for IPv4, 41 for IPv6 (IP versions are not mixed up).
    pub family: u32,
}

/// The flow of the copied headers (`buf`, as for [`make_reset`]).
#[inline(always)]
pub fn reset_flow(buf: &[u8; MAX_RESET_HEADERS], headers: ResetHeaders) -> ResetFlow {
    let mut flow = ResetFlow {
        src: [0; 16],
        dst: [0; 16],
        ports: [0; 4],
        family: if headers.ipv6 { 41 } else { 6 },
    };
    let (src, dst, len) = if headers.ipv6 {
        (8, 24, 16)
    } else {
        (12, 16, 4)
    };
    for i in 0..16 {
        // Past `len` both stay zero; masked instead of branched around.
        let keep = 0u8.wrapping_sub(((i as u64).wrapping_sub(len as u64) >> 63) as u8);
        flow.src[i] = buf[(src + i) & MASK] & keep;
        flow.dst[i] = buf[(dst + i) & MASK] & keep;
    }
    for i in 0..4 {
        flow.ports[i] = buf[(headers.tcp + i) & MASK];
    }
    flow
}

const _: () = assert!(size_of::<ResetFlow>() == 40);

const TCP_RST_ACK: u8 = 0x04 | 0x10;
const IPPROTO_TCP: u64 = 6;

/// Rewrites the copied headers `buf[..headers.len]` of a TCP segment into
/// those of a RST|ACK without payload: IP length, TCP flags and both
/// checksums. The caller checked `headers` against the real packet.
#[inline(always)]
pub fn make_reset(buf: &mut [u8; MAX_RESET_HEADERS], headers: ResetHeaders) {
    let ResetHeaders { ipv6, tcp, len } = headers;
    let tcp_len = len.wrapping_sub(tcp);
    if ipv6 {
        put16(buf, 4, len.wrapping_sub(40) as u16);
    } else {
        put16(buf, 2, len as u16);
        put16(buf, 10, 0);
        // The IPv4 header (with options) ends where TCP starts.
        let sum = sum_words(buf, 0, tcp, 30);
        put16(buf, 10, !fold(sum));
    }
    buf[(tcp + 13) & MASK] = TCP_RST_ACK;
    put16(buf, tcp + 16, 0);
    // Pseudo-header: both addresses, the protocol and the TCP length.
    let addresses = if ipv6 {
        sum_words(buf, 8, 32, 16)
    } else {
        sum_words(buf, 12, 8, 4)
    };
    let sum = addresses + IPPROTO_TCP + tcp_len as u64 + sum_words(buf, tcp, tcp_len, 30);
    put16(buf, tcp + 16, !fold(sum));
}

const MASK: usize = MAX_RESET_HEADERS - 1;

#[inline(always)]
fn put16(buf: &mut [u8; MAX_RESET_HEADERS], at: usize, value: u16) {
    let [high, low] = value.to_be_bytes();
    buf[at & MASK] = high;
    buf[(at + 1) & MASK] = low;
}

/// The sum of the big-endian words of `buf[start..start + len]`, `len`
/// even and at most `2 * max_words`. Words past `len` are masked out
/// instead of branched around.
#[inline(always)]
fn sum_words(buf: &[u8; MAX_RESET_HEADERS], start: usize, len: usize, max_words: usize) -> u64 {
    let mut sum = 0u64;
    for word in 0..max_words {
        let at = start + 2 * word;
        let value = u64::from(u16::from_be_bytes([buf[at & MASK], buf[(at + 1) & MASK]]));
        // All ones while `2 * word < len`: the difference is negative.
        let inside = ((2 * word) as u64).wrapping_sub(len as u64) >> 63;
        sum += value & 0u64.wrapping_sub(inside);
    }
    sum
}

/// One's-complement fold of a sum of at most a few hundred words: the
/// Internet checksum's last step, shared by every frame built here.
#[inline(always)]
pub(crate) fn fold(sum: u64) -> u16 {
    let sum = (sum & 0xffff) + (sum >> 16);
    let sum = (sum & 0xffff) + (sum >> 16);
    let sum = (sum & 0xffff) + (sum >> 16);
    sum as u16
}

#[cfg(test)]
mod tests;
