//! The PROXY protocol header (HAProxy's `proxy-protocol.txt`, versions 1
//! and 2) that starts each new upstream connection of a cluster whose
//! DestinationRule sets `proxyProtocol`, as Envoy's
//! `envoy.transport_sockets.upstream_proxy_protocol` writes it
//! (`source/extensions/transport_sockets/proxy_protocol/proxy_protocol.cc`,
//! `source/extensions/common/proxy_protocol/proxy_protocol_header.cc`):
//! written first, before TLS origination's ClientHello, naming the
//! downstream client's address as the source and the address it
//! connected to as the destination. No TLVs.
use std::net::{IpAddr, SocketAddr};

use crate::plan::ProxyProtocolVersion;

/// The version 2 signature: the first 12 bytes of every v2 header.
pub const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";

/// The downstream connection an upstream connection is opened for: the
/// header's source (the client) and destination (the address it
/// connected to). A pool with `proxyProtocol` keeps connections per pair,
/// as Envoy's pool hash includes them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Ends {
    pub source: SocketAddr,
    pub destination: SocketAddr,
}

/// The header for `ends`. `None` (no downstream connection: a mirror's
/// copy) is Envoy's default: v1 names the upstream connection's own
/// addresses (`own`), v2 is a LOCAL header.
pub fn header(version: ProxyProtocolVersion, ends: Option<Ends>, own: Ends) -> Vec<u8> {
    match (version, ends) {
        (ProxyProtocolVersion::V1, ends) => v1(ends.unwrap_or(own)),
        (ProxyProtocolVersion::V2, Some(ends)) => v2(ends),
        (ProxyProtocolVersion::V2, None) => v2_local(),
    }
}

/// An IPv4-mapped IPv6 address as the IPv4 address it is.
fn plain(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

/// `PROXY TCP4|TCP6 <src> <dst> <sport> <dport>\r\n`; `PROXY UNKNOWN\r\n`
/// when the two addresses are of different families (the spec's answer:
/// Envoy writes the source's family for both, a header no reader parses).
fn v1(ends: Ends) -> Vec<u8> {
    let (source, destination) = (plain(ends.source), plain(ends.destination));
    let family = match (source.ip(), destination.ip()) {
        (IpAddr::V4(_), IpAddr::V4(_)) => "TCP4",
        (IpAddr::V6(_), IpAddr::V6(_)) => "TCP6",
        _ => return b"PROXY UNKNOWN\r\n".to_vec(),
    };
    format!(
        "PROXY {family} {} {} {} {}\r\n",
        source.ip(),
        destination.ip(),
        source.port(),
        destination.port()
    )
    .into_bytes()
}

/// Version 2, command PROXY (0x21), TCP over IPv4 (0x11, 12 address
/// bytes) or IPv6 (0x21, 36); mixed families: AF_UNSPEC (0x00) with no
/// address block, which a reader treats as LOCAL.
fn v2(ends: Ends) -> Vec<u8> {
    let (source, destination) = (plain(ends.source), plain(ends.destination));
    let mut out = V2_SIGNATURE.to_vec();
    out.push(0x21);
    match (source.ip(), destination.ip()) {
        (IpAddr::V4(src), IpAddr::V4(dst)) => {
            out.extend_from_slice(&[0x11, 0, 12]);
            out.extend_from_slice(&src.octets());
            out.extend_from_slice(&dst.octets());
        }
        (IpAddr::V6(src), IpAddr::V6(dst)) => {
            out.extend_from_slice(&[0x21, 0, 36]);
            out.extend_from_slice(&src.octets());
            out.extend_from_slice(&dst.octets());
        }
        _ => {
            out.extend_from_slice(&[0x00, 0, 0]);
            return out;
        }
    }
    out.extend_from_slice(&source.port().to_be_bytes());
    out.extend_from_slice(&destination.port().to_be_bytes());
    out
}

/// Version 2, command LOCAL, no addresses (Envoy's `generateV2LocalHeader`).
fn v2_local() -> Vec<u8> {
    let mut out = V2_SIGNATURE.to_vec();
    out.extend_from_slice(&[0x20, 0x00, 0, 0]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ends(source: &str, destination: &str) -> Ends {
        Ends {
            source: source.parse().expect("source"),
            destination: destination.parse().expect("destination"),
        }
    }

    /// The upstream connection's own ends.
    fn own() -> Ends {
        ends("198.51.100.1:40000", "198.51.100.2:8080")
    }

    #[test]
    fn v1_names_the_client_and_the_address_it_connected_to() {
        let header = header(
            ProxyProtocolVersion::V1,
            Some(ends("192.0.2.2:51000", "192.0.2.1:80")),
            own(),
        );
        assert_eq!(header, b"PROXY TCP4 192.0.2.2 192.0.2.1 51000 80\r\n");
    }

    #[test]
    fn v1_over_ipv6_is_tcp6_with_compressed_addresses() {
        let header = header(
            ProxyProtocolVersion::V1,
            Some(ends("[2001:db8::2]:51000", "[2001:db8::1]:443")),
            own(),
        );
        assert_eq!(header, b"PROXY TCP6 2001:db8::2 2001:db8::1 51000 443\r\n");
    }

    #[test]
    fn mixed_families_are_unknown_in_v1_and_unspec_in_v2() {
        let mixed = Some(ends("192.0.2.2:51000", "[2001:db8::1]:443"));
        assert_eq!(
            header(ProxyProtocolVersion::V1, mixed, own()),
            b"PROXY UNKNOWN\r\n"
        );
        let v2 = header(ProxyProtocolVersion::V2, mixed, own());
        assert_eq!(&v2[..12], &V2_SIGNATURE);
        assert_eq!(&v2[12..], &[0x21, 0x00, 0, 0]);
    }

    #[test]
    fn an_ipv4_mapped_address_is_written_as_ipv4() {
        let header = header(
            ProxyProtocolVersion::V1,
            Some(ends("[::ffff:192.0.2.2]:51000", "192.0.2.1:80")),
            own(),
        );
        assert_eq!(header, b"PROXY TCP4 192.0.2.2 192.0.2.1 51000 80\r\n");
    }

    #[test]
    fn v2_over_ipv4_is_the_signature_proxy_command_inet_stream_and_12_bytes() {
        let header = header(
            ProxyProtocolVersion::V2,
            Some(ends("192.0.2.2:51000", "192.0.2.1:80")),
            own(),
        );
        let mut expected = V2_SIGNATURE.to_vec();
        expected.extend_from_slice(&[0x21, 0x11, 0, 12, 192, 0, 2, 2, 192, 0, 2, 1]);
        expected.extend_from_slice(&51000u16.to_be_bytes());
        expected.extend_from_slice(&80u16.to_be_bytes());
        assert_eq!(header, expected);
    }

    #[test]
    fn v2_over_ipv6_is_inet6_stream_and_36_bytes() {
        let header = header(
            ProxyProtocolVersion::V2,
            Some(ends("[2001:db8::2]:51000", "[2001:db8::1]:443")),
            own(),
        );
        assert_eq!(&header[12..16], &[0x21, 0x21, 0, 36]);
        assert_eq!(header.len(), 16 + 36);
        let source: [u8; 16] = "2001:db8::2"
            .parse::<std::net::Ipv6Addr>()
            .expect("v6")
            .octets();
        assert_eq!(&header[16..32], &source);
        assert_eq!(&header[48..50], &51000u16.to_be_bytes());
        assert_eq!(&header[50..52], &443u16.to_be_bytes());
    }

    #[test]
    fn without_a_downstream_v1_names_the_connection_itself_and_v2_is_local() {
        assert_eq!(
            header(ProxyProtocolVersion::V1, None, own()),
            b"PROXY TCP4 198.51.100.1 198.51.100.2 40000 8080\r\n"
        );
        let local = header(ProxyProtocolVersion::V2, None, own());
        assert_eq!(&local[12..], &[0x20, 0x00, 0, 0]);
    }
}
