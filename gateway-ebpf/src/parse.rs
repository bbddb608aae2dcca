//! Header parsing: one bounds-checked accessor and one `parse_<hdr>` step per
//! header, each returning where the next header starts.

use aya_ebpf::programs::{TcContext, XdpContext};
use gateway_common::{IPPROTO_TCP, IPPROTO_UDP, Reason, ipv4_mapped};
use network_types::{
    eth::EthHdr,
    ip::{Ipv4Hdr, Ipv6Hdr},
    tcp::TcpHdr,
    udp::UdpHdr,
    vlan::VlanHdr,
};

const ETH_P_IPV4: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86DD;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88A8;
/// 802.1ad QinQ carries at most two tags in practice.
const MAX_VLAN_TAGS: usize = 2;

const IPV6_HOP_BY_HOP: u8 = 0;
const IPV6_ROUTING: u8 = 43;
const IPV6_FRAGMENT: u8 = 44;
const IPV6_AUTH: u8 = 51;
const IPV6_DEST_OPTS: u8 = 60;
/// Extension headers followed before giving up with `Reason::Unparsed`.
const MAX_IPV6_EXT_HEADERS: usize = 4;

/// A packet the parser can read directly: XDP's frame, or TC's socket
/// buffer (whose linear part holds the headers of what the guard reads).
pub(crate) trait PacketBytes {
    /// Address of the first byte (the Ethernet header).
    fn start(&self) -> usize;
    /// Address one past the last directly readable byte.
    fn end(&self) -> usize;
}

impl PacketBytes for XdpContext {
    #[inline(always)]
    fn start(&self) -> usize {
        self.data()
    }
    #[inline(always)]
    fn end(&self) -> usize {
        self.data_end()
    }
}

impl PacketBytes for TcContext {
    #[inline(always)]
    fn start(&self) -> usize {
        self.data()
    }
    #[inline(always)]
    fn end(&self) -> usize {
        self.data_end()
    }
}

/// What the decision needs from a TCP or UDP packet.
pub(crate) struct Packet {
    /// Destination address, IPv4 mapped into IPv6.
    pub dst: [u8; 16],
    /// Destination port, host byte order.
    pub dst_port: u16,
    /// `IPPROTO_TCP` or `IPPROTO_UDP`.
    pub protocol: u8,
    /// TCP flags byte (0 for UDP).
    pub tcp_flags: u8,
    /// Offset of the TCP payload from the frame start (0 for UDP).
    pub payload: usize,
    /// End of the TCP payload: the IP length's end, or the frame's if that
    /// is shorter (a truncated frame); equal to `payload` when there is none.
    pub payload_end: usize,
    /// Offsets of the IP header and of the TCP or UDP header.
    pub ip: usize,
    pub l4: usize,
    /// IPv6 (else IPv4).
    pub ipv6: bool,
}

/// Parses Ethernet (with up to two VLAN tags), IPv4 or IPv6 (with options
/// and extension headers), then TCP or UDP. Anything it cannot or need not
/// classify comes back as the `Reason` to count it under.
#[inline(always)]
pub(crate) fn parse_packet<C: PacketBytes>(ctx: &C) -> Result<Packet, Reason> {
    let (ether_type, l3) = parse_eth(ctx)?;
    let (dst, protocol, l4, ip_end) = match ether_type {
        ETH_P_IPV4 => parse_ipv4(ctx, l3)?,
        ETH_P_IPV6 => parse_ipv6(ctx, l3)?,
        _ => return Err(Reason::NotIp),
    };
    match protocol {
        IPPROTO_TCP => {
            let tcp: *const TcpHdr = header_at(ctx, l4)?;
            // SAFETY: `header_at` checked the whole header lies inside the packet.
            let (dest, syn, ack, doff) =
                unsafe { ((*tcp).dest, (*tcp).syn(), (*tcp).ack(), (*tcp).doff()) };
            let flags = (if syn != 0 { gateway_common::TCP_SYN } else { 0 })
                | (if ack != 0 { gateway_common::TCP_ACK } else { 0 });
            let payload = l4 + usize::from(doff) * 4;
            let frame_end = ctx.end() - ctx.start();
            let payload_end = ip_end.min(frame_end).max(payload);
            Ok(Packet {
                dst,
                dst_port: u16::from_be_bytes(dest),
                protocol,
                tcp_flags: flags,
                payload,
                payload_end,
                ip: l3,
                l4,
                ipv6: ether_type == ETH_P_IPV6,
            })
        }
        IPPROTO_UDP => {
            let udp: *const UdpHdr = header_at(ctx, l4)?;
            // SAFETY: bounds checked by `header_at`.
            let dest = unsafe { (*udp).dst };
            Ok(Packet {
                dst,
                dst_port: u16::from_be_bytes(dest),
                protocol,
                tcp_flags: 0,
                payload: 0,
                payload_end: 0,
                ip: l3,
                l4,
                ipv6: ether_type == ETH_P_IPV6,
            })
        }
        _ => Err(Reason::NotTcpUdp),
    }
}

/// The packet's source address (IPv4 mapped), read only by the steps that
/// need it (a policy check, the egress guard's reset), through `header_at`.
#[inline(always)]
pub(crate) fn source_address<C: PacketBytes>(ctx: &C, packet: &Packet) -> Option<[u8; 16]> {
    if packet.ipv6 {
        let src: *const [u8; 16] = header_at(ctx, packet.ip + 8).ok()?;
        // SAFETY: bounds checked by `header_at`.
        Some(unsafe { *src })
    } else {
        let src: *const [u8; 4] = header_at(ctx, packet.ip + 12).ok()?;
        // SAFETY: bounds checked by `header_at`.
        Some(ipv4_mapped(unsafe { *src }))
    }
}

/// The one bounds-checked access to packet memory: a pointer to a `T` at
/// `offset` from the start of the frame, or `Malformed` if it does not fit.
#[inline(always)]
pub(crate) fn header_at<T, C: PacketBytes>(ctx: &C, offset: usize) -> Result<*const T, Reason> {
    let start = ctx.start();
    let end = ctx.end();
    // The verifier only accepts packet reads after a comparison of the
    // accessed range against data_end on this same path.
    if start + offset + size_of::<T>() > end {
        return Err(Reason::Malformed);
    }
    Ok((start + offset) as *const T)
}

/// Returns the EtherType after any VLAN tags and the offset of the L3 header.
#[inline(always)]
fn parse_eth<C: PacketBytes>(ctx: &C) -> Result<(u16, usize), Reason> {
    let eth: *const EthHdr = header_at(ctx, 0)?;
    // SAFETY: bounds checked by `header_at`.
    let mut ether_type = u16::from_be(unsafe { (*eth).ether_type });
    let mut offset = EthHdr::LEN;
    for _ in 0..MAX_VLAN_TAGS {
        if ether_type != ETH_P_8021Q && ether_type != ETH_P_8021AD {
            return Ok((ether_type, offset));
        }
        let vlan: *const VlanHdr = header_at(ctx, offset)?;
        // SAFETY: bounds checked by `header_at`.
        ether_type = u16::from_be(unsafe { (*vlan).ether_type });
        offset += VlanHdr::LEN;
    }
    if ether_type == ETH_P_8021Q || ether_type == ETH_P_8021AD {
        return Err(Reason::Unparsed);
    }
    Ok((ether_type, offset))
}

/// Returns (destination, L4 protocol, L4 offset, end of the IP packet),
/// honouring IHL so options are skipped.
#[inline(always)]
fn parse_ipv4<C: PacketBytes>(
    ctx: &C,
    offset: usize,
) -> Result<([u8; 16], u8, usize, usize), Reason> {
    let ip: *const Ipv4Hdr = header_at(ctx, offset)?;
    // SAFETY: bounds checked by `header_at`.
    let (vihl, frags, proto, dst, total_len) = unsafe {
        (
            (*ip).vihl,
            (*ip).frags,
            (*ip).proto,
            (*ip).dst_addr,
            (*ip).tot_len(),
        )
    };
    let ihl = (vihl & 0x0f) as usize;
    if vihl >> 4 != 4 || ihl < 5 {
        return Err(Reason::Malformed);
    }
    // Fragment offset is the low 13 bits; only the first fragment has ports.
    if u16::from_be_bytes(frags) & 0x1fff != 0 {
        return Err(Reason::Fragment);
    }
    Ok((
        ipv4_mapped(dst),
        proto,
        offset + ihl * 4,
        offset + usize::from(total_len),
    ))
}

/// Returns (destination, L4 protocol, L4 offset, end of the IP packet)
/// after walking up to `MAX_IPV6_EXT_HEADERS` extension headers.
#[inline(always)]
fn parse_ipv6<C: PacketBytes>(
    ctx: &C,
    offset: usize,
) -> Result<([u8; 16], u8, usize, usize), Reason> {
    let ip: *const Ipv6Hdr = header_at(ctx, offset)?;
    // SAFETY: bounds checked by `header_at`.
    let (vcf0, mut next, dst, payload_len) = unsafe {
        (
            (*ip).vcf[0],
            (*ip).next_hdr,
            (*ip).dst_addr,
            (*ip).payload_len(),
        )
    };
    if vcf0 >> 4 != 6 {
        return Err(Reason::Malformed);
    }
    let mut offset = offset + Ipv6Hdr::LEN;
    let ip_end = offset + usize::from(payload_len);
    for _ in 0..MAX_IPV6_EXT_HEADERS {
        let len = match next {
            IPV6_HOP_BY_HOP | IPV6_ROUTING | IPV6_DEST_OPTS => {
                let ext: *const [u8; 2] = header_at(ctx, offset)?;
                // SAFETY: bounds checked by `header_at`.
                let [nh, hdr_len] = unsafe { *ext };
                next = nh;
                (hdr_len as usize + 1) * 8
            }
            IPV6_AUTH => {
                let ext: *const [u8; 2] = header_at(ctx, offset)?;
                // SAFETY: bounds checked by `header_at`.
                let [nh, payload_len] = unsafe { *ext };
                next = nh;
                (payload_len as usize + 2) * 4
            }
            IPV6_FRAGMENT => {
                let frag: *const [u8; 4] = header_at(ctx, offset)?;
                // SAFETY: bounds checked by `header_at`.
                let [nh, _, off_hi, off_lo] = unsafe { *frag };
                if u16::from_be_bytes([off_hi, off_lo]) >> 3 != 0 {
                    return Err(Reason::Fragment);
                }
                next = nh;
                8
            }
            _ => return Ok((dst, next, offset, ip_end)),
        };
        offset += len;
    }
    match next {
        IPV6_HOP_BY_HOP | IPV6_ROUTING | IPV6_DEST_OPTS | IPV6_AUTH | IPV6_FRAGMENT => {
            Err(Reason::Unparsed)
        }
        _ => Ok((dst, next, offset, ip_end)),
    }
}
