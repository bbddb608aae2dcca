extern crate std;

use std::{vec, vec::Vec};

use super::*;

/// The one's-complement sum of `bytes` as big-endian words, folded.
fn ones_sum(bytes: &[u8]) -> u16 {
    let mut sum: u32 = bytes
        .chunks(2)
        .map(|pair| u32::from(pair[0]) << 8 | u32::from(*pair.get(1).unwrap_or(&0)))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// A TCP header with options (`options` bytes) and PSH|ACK.
fn tcp_header(options: usize) -> Vec<u8> {
    let len = 20 + options;
    let mut tcp = vec![0u8; len];
    tcp[0..2].copy_from_slice(&40000u16.to_be_bytes());
    tcp[2..4].copy_from_slice(&443u16.to_be_bytes());
    tcp[4..8].copy_from_slice(&0x1234_5678u32.to_be_bytes());
    tcp[8..12].copy_from_slice(&0x9abc_def0u32.to_be_bytes());
    tcp[12] = ((len / 4) as u8) << 4;
    tcp[13] = 0x18;
    tcp[14..16].copy_from_slice(&64240u16.to_be_bytes());
    tcp[16..18].copy_from_slice(&0xbeefu16.to_be_bytes());
    for (i, byte) in tcp[20..].iter_mut().enumerate() {
        *byte = if i % 4 == 3 { 0 } else { 1 };
    }
    tcp
}

fn ipv4_header(options: usize, total: usize) -> Vec<u8> {
    let len = 20 + options;
    let mut ip = vec![0u8; len];
    ip[0] = 0x40 | (len / 4) as u8;
    ip[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    ip[8] = 64;
    ip[9] = 6;
    ip[10..12].copy_from_slice(&0x1111u16.to_be_bytes());
    ip[12..16].copy_from_slice(&[198, 51, 100, 7]);
    ip[16..20].copy_from_slice(&[192, 0, 2, 1]);
    for byte in &mut ip[20..] {
        *byte = 1;
    }
    ip
}

fn ipv6_header(payload: usize) -> Vec<u8> {
    let mut ip = vec![0u8; 40];
    ip[0] = 0x60;
    ip[4..6].copy_from_slice(&(payload as u16).to_be_bytes());
    ip[6] = 6;
    ip[7] = 64;
    ip[8..24].copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7]);
    ip[24..40].copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
    ip
}

fn reset(headers: &[u8], ipv6: bool, tcp: usize) -> Vec<u8> {
    let mut buf = [0xaau8; MAX_RESET_HEADERS];
    buf[..headers.len()].copy_from_slice(headers);
    make_reset(
        &mut buf,
        ResetHeaders {
            ipv6,
            tcp,
            len: headers.len(),
        },
    );
    buf[..headers.len()].to_vec()
}

/// The TCP checksum over `tcp` with the given pseudo-header addresses.
fn tcp_checksum_ok(addresses: &[u8], tcp: &[u8]) -> bool {
    let mut pseudo = addresses.to_vec();
    pseudo.extend([0, 6]);
    pseudo.extend((tcp.len() as u16).to_be_bytes());
    pseudo.extend(tcp);
    ones_sum(&pseudo) == 0xffff
}

#[test]
fn an_ipv4_segment_becomes_a_bare_reset_with_valid_checksums() {
    for (ip_options, tcp_options) in [(0, 0), (0, 12), (8, 20), (40, 40)] {
        let ip = ipv4_header(ip_options, 20 + ip_options + 20 + tcp_options + 100);
        let tcp = tcp_header(tcp_options);
        let headers = [ip.clone(), tcp.clone()].concat();
        let out = reset(&headers, false, ip.len());
        let (out_ip, out_tcp) = out.split_at(ip.len());
        assert_eq!(
            u16::from_be_bytes([out_ip[2], out_ip[3]]) as usize,
            headers.len()
        );
        assert_eq!(ones_sum(out_ip), 0xffff, "IPv4 checksum");
        assert_eq!(out_tcp[13], 0x14, "RST|ACK");
        assert_eq!(out_tcp[4..12], tcp[4..12], "sequence numbers kept");
        assert!(tcp_checksum_ok(&out_ip[12..20], out_tcp), "TCP checksum");
        // Nothing else changed.
        assert_eq!(out_ip[12..], ip[12..]);
        assert_eq!(out_tcp[18..], tcp[18..]);
    }
}

#[test]
fn an_ipv6_segment_becomes_a_bare_reset_with_a_valid_checksum() {
    for tcp_options in [0, 12, 40] {
        let tcp = tcp_header(tcp_options);
        let ip = ipv6_header(tcp.len() + 500);
        let headers = [ip.clone(), tcp.clone()].concat();
        let out = reset(&headers, true, 40);
        let (out_ip, out_tcp) = out.split_at(40);
        assert_eq!(
            u16::from_be_bytes([out_ip[4], out_ip[5]]) as usize,
            tcp.len()
        );
        assert_eq!(out_tcp[13], 0x14);
        assert!(tcp_checksum_ok(&out_ip[8..40], out_tcp), "TCP checksum");
    }
}

#[test]
fn the_flow_names_both_ends_and_nothing_else() {
    let ip = ipv4_header(8, 200);
    let tcp = tcp_header(0);
    let headers = [ip.clone(), tcp].concat();
    let mut buf = [0xaau8; MAX_RESET_HEADERS];
    buf[..headers.len()].copy_from_slice(&headers);
    let flow = reset_flow(
        &buf,
        ResetHeaders {
            ipv6: false,
            tcp: ip.len(),
            len: headers.len(),
        },
    );
    assert_eq!(flow.src[..4], [198, 51, 100, 7]);
    assert_eq!(flow.dst[..4], [192, 0, 2, 1]);
    assert_eq!(flow.src[4..], [0; 12]);
    assert_eq!(flow.dst[4..], [0; 12]);
    assert_eq!(flow.ports, [0x9c, 0x40, 0x01, 0xbb]);
    assert_eq!(flow.family, 6);
    let ip6 = ipv6_header(20);
    let headers = [ip6.clone(), tcp_header(0)].concat();
    buf[..headers.len()].copy_from_slice(&headers);
    let flow6 = reset_flow(
        &buf,
        ResetHeaders {
            ipv6: true,
            tcp: 40,
            len: headers.len(),
        },
    );
    assert_eq!(flow6.src[..], ip6[8..24]);
    assert_eq!(flow6.dst[..], ip6[24..40]);
    assert_eq!(flow6.family, 41);
}
