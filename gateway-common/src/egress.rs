//! The egress guard's contract: what the TC program on a captured
//! workload interface counts and reports, the registry policy it applies
//! to a workload's connection attempt, and the reset frame it answers a
//! refused attempt with.
//!
//! The refusal is a TCP RST|ACK reflected back out of the interface the
//! SYN came in on, so the workload's `connect()` fails at once with
//! "connection refused" instead of waiting out its SYN retries. The frame
//! is built here, a pure function, so host tests check the exact bytes
//! the kernel sends.
use crate::reset::fold;

/// Key of `EGRESS_WORKLOADS`: a workload, by source address and the
/// interface its packets arrive on.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WorkloadKey {
    /// Source address, IPv4 mapped (`::ffff:a.b.c.d`).
    pub addr: [u8; 16],
    /// Index of the captured interface.
    pub ifindex: u32,
}

/// Value of `EGRESS_WORKLOADS` (per CPU): the workload's outbound
/// connection attempts the guard saw, and how many it refused.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct WorkloadCounters {
    /// SYNs to destinations the capture takes (not the node, not excluded).
    pub connections: u64,
    /// Of those, refused in the kernel (no registry entry for the address).
    pub refused: u64,
}

/// Why the guard refused a connection; the `reason` of [`EgressRefusal`].
pub const REFUSED_NOT_IN_REGISTRY: u16 = 1;

/// One refusal, sent to the daemon (`EGRESS_REFUSALS` ring buffer) so
/// every refusal is logged with its workload, destination and reason.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct EgressRefusal {
    /// The workload's address, IPv4 mapped.
    pub workload: [u8; 16],
    /// The destination it asked for, IPv4 mapped.
    pub dst: [u8; 16],
    /// The captured interface the SYN arrived on.
    pub ifindex: u32,
    /// The destination port, host byte order.
    pub dst_port: u16,
    /// A `REFUSED_*` code.
    pub reason: u16,
}

/// The single entry of `EGRESS_POLICY`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct EgressPolicy {
    /// 1: `outboundTrafficPolicy` ALLOW_ANY (nothing refused in the
    /// kernel); 0: REGISTRY_ONLY, the default.
    pub allow_any: u32,
}

const _: () = assert!(size_of::<WorkloadKey>() == 20);
const _: () = assert!(size_of::<WorkloadCounters>() == 16);
const _: () = assert!(size_of::<EgressRefusal>() == 40);
const _: () = assert!(size_of::<EgressPolicy>() == 4);

/// Whether a workload's connection attempt may go on. `registered`: some
/// registry entry resolves to the destination address; `open_port`: the
/// port belongs to an entry that has no addresses at all (wildcard hosts,
/// resolution NONE), so only the proxy's SNI/Host check can decide.
#[inline(always)]
pub fn egress_allowed(policy: EgressPolicy, registered: bool, open_port: bool) -> bool {
    policy.allow_any != 0 || registered || open_port
}

/// What the reset is built from: the workload's SYN, as parsed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Syn {
    /// IPv6 (else IPv4, whose addresses are the last four bytes).
    pub ipv6: bool,
    /// Ethernet source and destination of the SYN.
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
    /// Addresses, IPv4 mapped.
    pub src: [u8; 16],
    pub dst: [u8; 16],
    /// Ports, host byte order.
    pub src_port: u16,
    pub dst_port: u16,
    /// The SYN's sequence number.
    pub seq: u32,
    /// Payload bytes the SYN carried (TCP Fast Open), acknowledged too.
    pub payload_len: u32,
}

/// Length of the IPv4 reset frame: Ethernet, IPv4 and TCP, no options.
pub const REFUSAL_V4_LEN: usize = 14 + 20 + 20;
/// Length of the IPv6 reset frame.
pub const REFUSAL_V6_LEN: usize = 14 + 40 + 20;

const TCP_RST_ACK: u8 = 0x04 | 0x10;
const REFUSAL_TTL: u8 = 64;

/// Writes into `out` the RST|ACK that refuses `syn`, as sent from its
/// destination: Ethernet addresses swapped, a fresh IP header without
/// options, ACK = SEQ + 1 + payload (RFC 9293's reset for a SYN to a
/// closed port, which the client's stack accepts in SYN-SENT), full
/// checksums. Returns the frame's length, [`REFUSAL_V4_LEN`] or
/// [`REFUSAL_V6_LEN`].
#[inline(always)]
pub fn refusal_frame(syn: &Syn, out: &mut [u8; REFUSAL_V6_LEN]) -> usize {
    out[0..6].copy_from_slice(&syn.src_mac);
    out[6..12].copy_from_slice(&syn.dst_mac);
    let ack = syn.seq.wrapping_add(1).wrapping_add(syn.payload_len);
    if syn.ipv6 {
        out[12..14].copy_from_slice(&0x86ddu16.to_be_bytes());
        let ip = &mut out[14..54];
        ip[0..4].copy_from_slice(&0x6000_0000u32.to_be_bytes());
        ip[4..6].copy_from_slice(&20u16.to_be_bytes());
        ip[6] = 6;
        ip[7] = REFUSAL_TTL;
        ip[8..24].copy_from_slice(&syn.dst);
        ip[24..40].copy_from_slice(&syn.src);
        write_tcp(syn, ack, &mut out[54..74]);
        let sum = sum16(&syn.src) + sum16(&syn.dst) + 6 + 20 + sum16(&out[54..74]);
        out[70..72].copy_from_slice(&(!fold(sum)).to_be_bytes());
        REFUSAL_V6_LEN
    } else {
        out[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
        let ip = &mut out[14..34];
        ip[0] = 0x45;
        ip[1] = 0;
        ip[2..4].copy_from_slice(&40u16.to_be_bytes());
        ip[4..6].copy_from_slice(&[0, 0]);
        // Don't fragment: a 40-byte packet never needs it.
        ip[6..8].copy_from_slice(&0x4000u16.to_be_bytes());
        ip[8] = REFUSAL_TTL;
        ip[9] = 6;
        ip[10..12].copy_from_slice(&[0, 0]);
        ip[12..16].copy_from_slice(&syn.dst[12..16]);
        ip[16..20].copy_from_slice(&syn.src[12..16]);
        let ip_sum = !fold(sum16(&out[14..34]));
        out[24..26].copy_from_slice(&ip_sum.to_be_bytes());
        write_tcp(syn, ack, &mut out[34..54]);
        let sum = sum16(&syn.src[12..16]) + sum16(&syn.dst[12..16]) + 6 + 20 + sum16(&out[34..54]);
        out[50..52].copy_from_slice(&(!fold(sum)).to_be_bytes());
        REFUSAL_V4_LEN
    }
}

/// The 20-byte TCP header of the reset, checksum zero.
#[inline(always)]
fn write_tcp(syn: &Syn, ack: u32, tcp: &mut [u8]) {
    tcp[0..2].copy_from_slice(&syn.dst_port.to_be_bytes());
    tcp[2..4].copy_from_slice(&syn.src_port.to_be_bytes());
    tcp[4..8].copy_from_slice(&[0, 0, 0, 0]);
    tcp[8..12].copy_from_slice(&ack.to_be_bytes());
    tcp[12] = 5 << 4;
    tcp[13] = TCP_RST_ACK;
    tcp[14..20].copy_from_slice(&[0, 0, 0, 0, 0, 0]);
}

/// The sum of the big-endian 16-bit words of `bytes` (even length).
#[inline(always)]
fn sum16(bytes: &[u8]) -> u64 {
    let mut sum = 0u64;
    let mut i = 0;
    while i + 1 < bytes.len() {
        sum += u64::from(u16::from_be_bytes([bytes[i], bytes[i + 1]]));
        i += 2;
    }
    sum
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipv4_mapped;

    fn syn(ipv6: bool) -> Syn {
        let (src, dst) = if ipv6 {
            (
                [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2],
                [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0, 9],
            )
        } else {
            (ipv4_mapped([192, 0, 2, 2]), ipv4_mapped([198, 51, 100, 9]))
        };
        Syn {
            ipv6,
            src_mac: [2, 0, 0, 0, 0, 2],
            dst_mac: [2, 0, 0, 0, 0, 1],
            src,
            dst,
            src_port: 40_000,
            dst_port: 443,
            seq: 0xffff_fffe,
            payload_len: 0,
        }
    }

    /// The one's-complement sum over a header with its checksum in place
    /// is all ones: how a receiver checks it.
    fn verifies(words: u64) -> bool {
        fold(words) == 0xffff
    }

    #[test]
    fn an_ipv4_refusal_is_a_valid_rst_ack_from_the_destination() {
        let mut out = [0u8; REFUSAL_V6_LEN];
        let len = refusal_frame(&syn(false), &mut out);
        assert_eq!(len, REFUSAL_V4_LEN);
        let frame = &out[..len];
        assert_eq!(&frame[0..6], &[2, 0, 0, 0, 0, 2], "back to the workload");
        assert_eq!(&frame[6..12], &[2, 0, 0, 0, 0, 1]);
        assert_eq!(&frame[12..14], &[0x08, 0x00]);
        assert_eq!(&frame[26..30], &[198, 51, 100, 9], "from the destination");
        assert_eq!(&frame[30..34], &[192, 0, 2, 2]);
        assert!(verifies(sum16(&frame[14..34])), "IPv4 header checksum");
        assert_eq!(u16::from_be_bytes([frame[34], frame[35]]), 443);
        assert_eq!(u16::from_be_bytes([frame[36], frame[37]]), 40_000);
        let ack = u32::from_be_bytes([frame[42], frame[43], frame[44], frame[45]]);
        assert_eq!(ack, 0xffff_ffff, "SEQ + 1");
        assert_eq!(frame[46], 0x50, "no options");
        assert_eq!(frame[47], 0x14, "RST|ACK");
        let pseudo = sum16(&frame[26..34]) + 6 + 20;
        assert!(verifies(pseudo + sum16(&frame[34..54])), "TCP checksum");
    }

    #[test]
    fn an_ipv6_refusal_acknowledges_fast_open_data_and_checks_out() {
        let mut syn = syn(true);
        syn.payload_len = 100;
        let mut out = [0u8; REFUSAL_V6_LEN];
        assert_eq!(refusal_frame(&syn, &mut out), REFUSAL_V6_LEN);
        assert_eq!(&out[12..14], &[0x86, 0xdd]);
        assert_eq!(out[14] >> 4, 6);
        assert_eq!(u16::from_be_bytes([out[18], out[19]]), 20);
        assert_eq!(&out[22..38], &syn.dst);
        assert_eq!(&out[38..54], &syn.src);
        let ack = u32::from_be_bytes([out[62], out[63], out[64], out[65]]);
        assert_eq!(ack, 0xffff_fffe_u32.wrapping_add(101));
        let pseudo = sum16(&out[22..54]) + 6 + 20;
        assert!(verifies(pseudo + sum16(&out[54..74])), "TCP checksum");
    }

    #[test]
    fn only_allow_any_a_registered_address_or_an_open_port_lets_it_pass() {
        let registry_only = EgressPolicy { allow_any: 0 };
        assert!(!egress_allowed(registry_only, false, false));
        assert!(egress_allowed(registry_only, true, false));
        assert!(egress_allowed(registry_only, false, true));
        assert!(egress_allowed(EgressPolicy { allow_any: 1 }, false, false));
    }
}
