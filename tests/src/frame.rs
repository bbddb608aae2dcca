//! Builds Ethernet frames for packet tests, in the spirit of the kernel
//! selftests' `pkt_v4` / `pkt_v6`, with the knobs the parser must honour:
//! VLAN tags, IPv4 options and fragments, IPv6 extension headers, truncation.

pub const TCP: u8 = 6;
pub const UDP: u8 = 17;
pub const ICMP: u8 = 1;
pub const SYN: u8 = 0x02;
pub const ACK: u8 = 0x10;

const SRC_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
const DST_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];

/// A frame under construction.
#[derive(Clone, Debug)]
pub struct Frame {
    vlans: Vec<u16>,
    l3: L3,
    protocol: u8,
    l4: Vec<u8>,
    padding: usize,
    truncate_to: Option<usize>,
    /// The IPv4 or IPv6 source address (192.0.2.2, 2001:db8::2 unless set).
    src4: [u8; 4],
    src6: [u8; 16],
}

const SRC_V4: [u8; 4] = [192, 0, 2, 2];
const SRC_V6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];

#[derive(Clone, Debug)]
enum L3 {
    V4 {
        dst: [u8; 4],
        options: Vec<u8>,
        frag_offset: u16,
        ihl_override: Option<u8>,
    },
    V6 {
        dst: [u8; 16],
        /// (header type, bytes including next-header and length fields)
        ext: Vec<(u8, Vec<u8>)>,
    },
    Arp,
}

fn tcp_header(dport: u16, flags: u8) -> Vec<u8> {
    let mut h = vec![0u8; 20];
    h[0..2].copy_from_slice(&40000u16.to_be_bytes());
    h[2..4].copy_from_slice(&dport.to_be_bytes());
    h[12] = 5 << 4;
    h[13] = flags;
    h[14..16].copy_from_slice(&64240u16.to_be_bytes());
    h
}

fn udp_header(dport: u16) -> Vec<u8> {
    let mut h = vec![0u8; 8];
    h[0..2].copy_from_slice(&40000u16.to_be_bytes());
    h[2..4].copy_from_slice(&dport.to_be_bytes());
    h[4..6].copy_from_slice(&8u16.to_be_bytes());
    h
}

impl Frame {
    fn v4(dst: [u8; 4], protocol: u8, l4: Vec<u8>) -> Self {
        Self {
            vlans: Vec::new(),
            l3: L3::V4 {
                dst,
                options: Vec::new(),
                frag_offset: 0,
                ihl_override: None,
            },
            protocol,
            l4,
            padding: 0,
            truncate_to: None,
            src4: SRC_V4,
            src6: SRC_V6,
        }
    }

    fn v6(dst: [u8; 16], protocol: u8, l4: Vec<u8>) -> Self {
        Self {
            vlans: Vec::new(),
            l3: L3::V6 {
                dst,
                ext: Vec::new(),
            },
            protocol,
            l4,
            padding: 0,
            truncate_to: None,
            src4: SRC_V4,
            src6: SRC_V6,
        }
    }

    /// IPv4 TCP segment with the given flags.
    pub fn tcp4(dst: [u8; 4], dport: u16, flags: u8) -> Self {
        Self::v4(dst, TCP, tcp_header(dport, flags))
    }

    /// IPv4 UDP datagram.
    pub fn udp4(dst: [u8; 4], dport: u16) -> Self {
        Self::v4(dst, UDP, udp_header(dport))
    }

    /// IPv4 ICMP echo request.
    pub fn icmp4(dst: [u8; 4]) -> Self {
        Self::v4(dst, ICMP, vec![8, 0, 0, 0, 0, 1, 0, 1])
    }

    /// IPv6 TCP segment with the given flags.
    pub fn tcp6(dst: [u8; 16], dport: u16, flags: u8) -> Self {
        Self::v6(dst, TCP, tcp_header(dport, flags))
    }

    /// IPv6 UDP datagram.
    pub fn udp6(dst: [u8; 16], dport: u16) -> Self {
        Self::v6(dst, UDP, udp_header(dport))
    }

    /// An ARP request (not IP).
    pub fn arp() -> Self {
        Self {
            vlans: Vec::new(),
            l3: L3::Arp,
            protocol: 0,
            l4: Vec::new(),
            padding: 0,
            truncate_to: None,
            src4: SRC_V4,
            src6: SRC_V6,
        }
    }

    /// Sets the IPv4 source address.
    pub fn src4(mut self, src: [u8; 4]) -> Self {
        self.src4 = src;
        self
    }

    /// Sets the IPv6 source address.
    pub fn src6(mut self, src: [u8; 16]) -> Self {
        self.src6 = src;
        self
    }

    /// Adds an 802.1Q tag (outermost first).
    pub fn vlan(mut self, id: u16) -> Self {
        self.vlans.push(id);
        self
    }

    /// Adds IPv4 options (padded to 4-byte words); IHL grows accordingly.
    pub fn ipv4_options(mut self, bytes: &[u8]) -> Self {
        if let L3::V4 { options, .. } = &mut self.l3 {
            options.extend_from_slice(bytes);
            while options.len() % 4 != 0 {
                options.push(0);
            }
        }
        self
    }

    /// Writes this IHL instead of the real one.
    pub fn ipv4_ihl(mut self, ihl: u8) -> Self {
        if let L3::V4 { ihl_override, .. } = &mut self.l3 {
            *ihl_override = Some(ihl);
        }
        self
    }

    /// Marks the packet as an IPv4 fragment at `offset` 8-byte units
    /// (IPv6: adds a fragment header).
    pub fn fragment(mut self, offset: u16) -> Self {
        match &mut self.l3 {
            L3::V4 { frag_offset, .. } => *frag_offset = offset,
            L3::V6 { ext, .. } => {
                let off = (offset << 3) | 1; // more-fragments set
                let mut h = vec![0, 0];
                h.extend_from_slice(&off.to_be_bytes());
                h.extend_from_slice(&[0, 0, 0, 7]);
                ext.push((44, h));
            }
            L3::Arp => {}
        }
        self
    }

    /// Adds an IPv6 extension header of `kind` (0, 43 or 60) with `words`
    /// extra 8-byte units of padding options.
    pub fn ipv6_ext(mut self, kind: u8, words: u8) -> Self {
        if let L3::V6 { ext, .. } = &mut self.l3 {
            let mut h = vec![0, words];
            h.extend(std::iter::repeat_n(0u8, 6 + 8 * words as usize));
            // PadN option covering the padding, so the header is well formed.
            h[2] = 1;
            h[3] = (4 + 8 * words as usize) as u8;
            ext.push((kind, h));
        }
        self
    }

    /// Adds an IPv6 Authentication Header (RFC 4302) with an ICV of
    /// `icv_words` 4-byte words. Its length field counts 4-byte words minus
    /// 2, unlike the 8-byte units of the other extension headers.
    pub fn ipv6_auth(mut self, icv_words: u8) -> Self {
        if let L3::V6 { ext, .. } = &mut self.l3 {
            let mut h = vec![0, 1 + icv_words, 0, 0];
            h.extend_from_slice(&0x100u32.to_be_bytes()); // SPI
            h.extend_from_slice(&1u32.to_be_bytes()); // sequence number
            h.extend(std::iter::repeat_n(0xaa, 4 * icv_words as usize));
            ext.push((51, h));
        }
        self
    }

    /// Cuts the frame to `len` bytes.
    /// Appends `bytes` to the L4 payload (after the TCP or UDP header).
    pub fn payload(mut self, bytes: &[u8]) -> Self {
        self.l4.extend_from_slice(bytes);
        self
    }

    /// Adds `bytes` of Ethernet padding after the IP packet, as a NIC does
    /// to reach the 60-byte minimum: in the frame, not in the IP length.
    pub fn pad(mut self, bytes: usize) -> Self {
        self.padding = bytes;
        self
    }

    pub fn truncate(mut self, len: usize) -> Self {
        self.truncate_to = Some(len);
        self
    }

    /// The frame's bytes.
    pub fn build(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&DST_MAC);
        out.extend_from_slice(&SRC_MAC);
        for vlan in &self.vlans {
            out.extend_from_slice(&0x8100u16.to_be_bytes());
            out.extend_from_slice(&vlan.to_be_bytes());
        }
        match &self.l3 {
            L3::V4 {
                dst,
                options,
                frag_offset,
                ihl_override,
            } => {
                out.extend_from_slice(&0x0800u16.to_be_bytes());
                let ihl = ihl_override.unwrap_or(5 + (options.len() / 4) as u8);
                let total = (20 + options.len() + self.l4.len()) as u16;
                let mut ip = vec![0x40 | ihl, 0];
                ip.extend_from_slice(&total.to_be_bytes());
                ip.extend_from_slice(&[0x12, 0x34]);
                ip.extend_from_slice(&frag_offset.to_be_bytes());
                ip.extend_from_slice(&[64, self.protocol, 0, 0]);
                ip.extend_from_slice(&self.src4);
                ip.extend_from_slice(dst);
                ip.extend_from_slice(options);
                let checksum = ipv4_checksum(&ip);
                ip[10..12].copy_from_slice(&checksum.to_be_bytes());
                out.extend_from_slice(&ip);
                out.extend_from_slice(&self.l4);
            }
            L3::V6 { dst, ext } => {
                out.extend_from_slice(&0x86DDu16.to_be_bytes());
                let ext_len: usize = ext.iter().map(|(_, h)| h.len()).sum();
                let payload = (ext_len + self.l4.len()) as u16;
                out.extend_from_slice(&[0x60, 0, 0, 0]);
                out.extend_from_slice(&payload.to_be_bytes());
                let first = ext.first().map_or(self.protocol, |(kind, _)| *kind);
                out.extend_from_slice(&[first, 64]);
                out.extend_from_slice(&self.src6);
                out.extend_from_slice(dst);
                for (index, (_, header)) in ext.iter().enumerate() {
                    let next = ext.get(index + 1).map_or(self.protocol, |(kind, _)| *kind);
                    let mut header = header.clone();
                    header[0] = next;
                    out.extend_from_slice(&header);
                }
                out.extend_from_slice(&self.l4);
            }
            L3::Arp => {
                out.extend_from_slice(&0x0806u16.to_be_bytes());
                out.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
                out.extend_from_slice(&SRC_MAC);
                out.extend_from_slice(&[192, 0, 2, 2]);
                out.extend_from_slice(&[0; 6]);
                out.extend_from_slice(&[192, 0, 2, 1]);
            }
        }
        out.resize(out.len() + self.padding, 0);
        if let Some(len) = self.truncate_to {
            out.truncate(len);
        }
        out
    }
}

/// Whether `bytes` (an IPv4 header, or a TCP pseudo-header and segment)
/// carry a valid Internet checksum: their one's-complement sum is all ones.
pub fn checksum_is_valid(bytes: &[u8]) -> bool {
    ipv4_checksum(bytes) == 0
}

fn ipv4_checksum(header: &[u8]) -> u16 {
    let mut sum: u32 = header
        .chunks(2)
        .map(|pair| u32::from(u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}
