//! The egress guard (`tc_egress_guard`), run on crafted workload frames
//! with BPF_PROG_TEST_RUN: maps seeded through the daemon's own
//! `EgressMaps`, verdicts, the reset's bytes, counters and refusal events
//! checked.
use std::collections::BTreeSet;

use aya::programs::{TestRun, TestRunOptions};
use gateway_common::{REFUSAL_V6_LEN, REFUSED_NOT_IN_REGISTRY, Syn, ipv4_mapped, refusal_frame};
use gateway_tests::{
    frame::{ACK, Frame, SYN, checksum_is_valid},
    require_root,
};
use gateway_userspace::{
    dataplane::{Dataplane, EgressMaps, refusal_log},
    model::Subnet as Cidr,
};

const TC_ACT_OK: u32 = 0;
const TC_ACT_SHOT: u32 = 2;
const TC_ACT_REDIRECT: u32 = 7;

/// What the frames in `gateway_tests::frame` carry.
const WORKLOAD_V4: [u8; 4] = [192, 0, 2, 2];
const WORKLOAD_V6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
const WORKLOAD_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
const NEXT_HOP_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
/// Test runs see the loopback device as the interface.
const LOOPBACK: u32 = 1;

const UNKNOWN_V4: [u8; 4] = [198, 51, 100, 9];
const REGISTERED_V4: [u8; 4] = [198, 51, 100, 10];
const EXCLUDED_V4: [u8; 4] = [203, 0, 113, 5];
const UNKNOWN_V6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 9, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9];
const OPEN_PORT: u16 = 8443;

fn cidr(text: &str) -> Cidr {
    text.parse().expect("cidr")
}

struct Guard {
    dataplane: Dataplane,
    maps: EgressMaps,
}

impl Guard {
    fn new(allow_any: bool) -> Self {
        require_root();
        let mut dataplane = Dataplane::load().expect("load the programs");
        dataplane
            .set_egress(&[], &[cidr("203.0.113.0/24")])
            .expect("exclusions");
        let mut maps = dataplane.take_egress_maps().expect("egress maps");
        maps.set_policy(allow_any).expect("policy");
        let allowed: BTreeSet<Cidr> = [cidr("198.51.100.10"), cidr("2001:db8:a::/48")].into();
        maps.set_allowed(&allowed, &[OPEN_PORT].into())
            .expect("registry");
        Self { dataplane, maps }
    }

    /// The verdict and the frame as the program left it.
    fn run(&mut self, frame: &Frame) -> (u32, Vec<u8>) {
        let bytes = frame.build();
        let mut out = vec![0u8; 512];
        let program = self.dataplane.egress_guard_program().expect("guard");
        let result = program
            .test_run(TestRunOptions {
                data_in: Some(&bytes),
                data_out: Some(&mut out),
                ..Default::default()
            })
            .expect("BPF_PROG_TEST_RUN");
        out.truncate(result.data_size_out as usize);
        (result.return_value, out)
    }

    fn verdict(&mut self, frame: Frame) -> u32 {
        self.run(&frame).0
    }

    /// (connections, refused) the kernel counted for the IPv4 workload.
    fn counted(&self) -> (u64, u64) {
        self.maps
            .workloads()
            .all()
            .iter()
            .find(|w| w.addr == std::net::IpAddr::from(WORKLOAD_V4) && w.ifindex == LOOPBACK)
            .map_or((0, 0), |w| (w.counters.connections, w.counters.refused))
    }
}

fn expected_reset(syn: Syn) -> Vec<u8> {
    let mut frame = [0u8; REFUSAL_V6_LEN];
    let len = refusal_frame(&syn, &mut frame);
    frame[..len].to_vec()
}

fn syn_v4(dst: [u8; 4], port: u16) -> Syn {
    Syn {
        ipv6: false,
        src_mac: WORKLOAD_MAC,
        dst_mac: NEXT_HOP_MAC,
        src: ipv4_mapped(WORKLOAD_V4),
        dst: ipv4_mapped(dst),
        src_port: 40000,
        dst_port: port,
        seq: 0,
        payload_len: 0,
    }
}

#[test]
fn registry_only_answers_a_syn_to_an_unknown_address_with_a_reset_to_the_workload() {
    let mut guard = Guard::new(false);
    let (verdict, out) = guard.run(&Frame::tcp4(UNKNOWN_V4, 443, SYN));
    assert_eq!(verdict, TC_ACT_REDIRECT, "sent back out of the interface");
    assert_eq!(out, expected_reset(syn_v4(UNKNOWN_V4, 443)));
    assert!(checksum_is_valid(&out[14..34]), "IPv4 header checksum");
    let mut pseudo = out[26..34].to_vec();
    pseudo.extend_from_slice(&[0, 6, 0, 20]);
    pseudo.extend_from_slice(&out[34..54]);
    assert!(checksum_is_valid(&pseudo), "TCP checksum");
    assert_eq!(out[47], 0x14, "RST|ACK");
    assert_eq!(&out[42..46], &1u32.to_be_bytes(), "acknowledges the SYN");
    assert_eq!(guard.counted(), (1, 1));

    let mut events = guard.maps.take_refusals().expect("refusal events");
    let item = events.next().expect("one refusal reported");
    let refusal = refusal_log::decode(&item).expect("whole event");
    assert_eq!(refusal.workload, ipv4_mapped(WORKLOAD_V4));
    assert_eq!(refusal.dst, ipv4_mapped(UNKNOWN_V4));
    assert_eq!(refusal.dst_port, 443);
    assert_eq!(refusal.ifindex, LOOPBACK);
    assert_eq!(refusal.reason, REFUSED_NOT_IN_REGISTRY);
}

#[test]
fn an_ipv6_syn_with_fast_open_data_gets_a_reset_that_acknowledges_the_data() {
    let mut guard = Guard::new(false);
    let frame = Frame::tcp6(UNKNOWN_V6, 443, SYN).payload(b"early data");
    let (verdict, out) = guard.run(&frame);
    assert_eq!(verdict, TC_ACT_REDIRECT);
    let syn = Syn {
        ipv6: true,
        src: WORKLOAD_V6,
        dst: UNKNOWN_V6,
        payload_len: 10,
        ..syn_v4(UNKNOWN_V4, 443)
    };
    assert_eq!(out, expected_reset(syn));
    assert_eq!(&out[62..66], &11u32.to_be_bytes());
}

#[test]
fn registered_addresses_open_ports_exclusions_and_established_traffic_pass() {
    let mut guard = Guard::new(false);
    assert_eq!(
        guard.verdict(Frame::tcp4(REGISTERED_V4, 443, SYN)),
        TC_ACT_OK
    );
    assert_eq!(
        guard.verdict(Frame::tcp4(UNKNOWN_V4, OPEN_PORT, SYN)),
        TC_ACT_OK,
        "a port of an entry with no address is the proxy's to check"
    );
    let mut in_range = UNKNOWN_V6;
    in_range[5] = 0x0a;
    in_range[4] = 0;
    assert_eq!(
        guard.verdict(Frame::tcp6(in_range, 443, SYN)),
        TC_ACT_OK,
        "inside a registered range"
    );
    assert_eq!(guard.counted(), (2, 0));
    assert_eq!(guard.verdict(Frame::tcp4(EXCLUDED_V4, 443, SYN)), TC_ACT_OK);
    assert_eq!(guard.verdict(Frame::tcp4(UNKNOWN_V4, 443, ACK)), TC_ACT_OK);
    assert_eq!(
        guard.verdict(Frame::tcp4(UNKNOWN_V4, 443, SYN | ACK)),
        TC_ACT_OK
    );
    assert_eq!(guard.verdict(Frame::udp4(UNKNOWN_V4, 53)), TC_ACT_OK);
    assert_eq!(
        guard.counted(),
        (2, 0),
        "excluded destinations and non-SYNs are not connection attempts"
    );
}

#[test]
fn allow_any_refuses_nothing_but_still_counts() {
    let mut guard = Guard::new(true);
    assert_eq!(guard.verdict(Frame::tcp4(UNKNOWN_V4, 443, SYN)), TC_ACT_OK);
    assert_eq!(guard.counted(), (1, 0));
}

#[test]
fn a_syn_with_vlan_tags_in_the_frame_is_dropped_rather_than_answered() {
    let mut guard = Guard::new(false);
    assert_eq!(
        guard.verdict(Frame::tcp4(UNKNOWN_V4, 443, SYN).vlan(7)),
        TC_ACT_SHOT
    );
    assert_eq!(guard.counted(), (1, 1));
}

#[test]
fn a_registry_update_takes_effect_for_the_next_syn() {
    let mut guard = Guard::new(false);
    assert_eq!(
        guard.verdict(Frame::tcp4(UNKNOWN_V4, 443, SYN)),
        TC_ACT_REDIRECT
    );
    let moved: BTreeSet<Cidr> = [cidr("198.51.100.9")].into();
    let change = guard
        .maps
        .set_allowed(&moved, &BTreeSet::new())
        .expect("update");
    assert_eq!(change.added, [cidr("198.51.100.9")]);
    assert_eq!(change.removed.len(), 2);
    assert_eq!(guard.verdict(Frame::tcp4(UNKNOWN_V4, 443, SYN)), TC_ACT_OK);
    assert_eq!(
        guard.verdict(Frame::tcp4(REGISTERED_V4, 443, SYN)),
        TC_ACT_REDIRECT,
        "the old address is no longer allowed"
    );
}
