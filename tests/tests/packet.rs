//! The real XDP program, run on crafted frames with BPF_PROG_TEST_RUN:
//! each test seeds the maps through the same `Dataplane::apply` the daemon
//! uses, then checks the verdict and the counters.
use std::net::IpAddr;

use aya::programs::{TestRun, TestRunOptions};
use gateway_common::{MAX_LISTENERS, Reason, Settings};
use gateway_tests::{
    frame::{ACK, Frame, SYN},
    require_root,
};
use gateway_userspace::{
    compile,
    dataplane::{Dataplane, Stats, StatsReader},
    management,
    model::{
        Bind, Destination, EndpointAddress, ExportTo, Gateway, Instance, Model, Port, Protocol,
        Resolution, Server, ServiceEntry, ServicePort, TcpRoute, VirtualService, WorkloadEntry,
    },
    plan::{Plan, PortPolicy, Subnet},
};

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;

const GW_V4: [u8; 4] = [192, 0, 2, 1];
const OTHER_V4: [u8; 4] = [198, 51, 100, 9];
const BIND_V4: [u8; 4] = [192, 0, 2, 7];
const GW_V6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
const EPHEMERAL: Settings = Settings {
    ephemeral_first: 32768,
    ephemeral_last: 60999,
};

fn server(port: u16, protocol: Protocol, bind: Option<[u8; 4]>) -> Server {
    Server {
        port: Port {
            number: port,
            name: format!("p{port}"),
            protocol,
        },
        hosts: vec!["dataengine.com".into()],
        bind: bind.map_or(Bind::Any, |ip| Bind::Ip(IpAddr::from(ip))),
        tls: None,
    }
}

/// HTTP on 80 and UDP 5353 on every gateway address, TCP 9000 on 192.0.2.7 only.
fn test_plan() -> Plan {
    let gateway = Gateway {
        namespace: "istio-system".into(),
        name: "packet-test".into(),
        creation_timestamp: None,
        defined_at: None,
        selector: Default::default(),
        servers: vec![
            server(80, Protocol::Http, None),
            server(5353, Protocol::Udp, None),
            server(9000, Protocol::Tcp, Some(BIND_V4)),
        ],
    };
    let model = Model {
        gateways: vec![gateway],
        // TCP and UDP servers only get a listener when a tcp route binds them.
        virtual_services: vec![VirtualService {
            namespace: "istio-system".into(),
            name: "tcp-all".into(),
            creation_timestamp: None,
            hosts: vec!["*".into()],
            gateways: vec!["istio-system/packet-test".into()],
            export_to: ExportTo::default(),
            http: Vec::new(),
            tls: Vec::new(),
            tcp: vec![TcpRoute {
                matches: Vec::new(),
                route: vec![Destination {
                    host: "backend.internal".into(),
                    subset: None,
                    port: None,
                    weight: 100,
                    headers: Default::default(),
                }],
            }],
        }],
        authorization_policies: Vec::new(),
        request_authentications: Vec::new(),
        destination_rules: Vec::new(),
        service_entries: vec![ServiceEntry {
            namespace: "istio-system".into(),
            name: "backend".into(),
            hosts: vec!["backend.internal".into()],
            addresses: Vec::new(),
            ports: vec![ServicePort {
                number: 9000,
                name: "tcp".into(),
                protocol: None,
                target_port: None,
            }],
            resolution: Resolution::Static,
            endpoints: vec![WorkloadEntry {
                address: EndpointAddress::Ip(IpAddr::from([198, 51, 100, 50])),
                ports: Default::default(),
                labels: Default::default(),
                weight: 1,
                locality: Default::default(),
            }],
            mesh_internal: false,
            export_to: ExportTo::default(),
        }],
        ..Default::default()
    };
    let plan = compile::plan(
        &model,
        &Instance::default(),
        &[IpAddr::from(GW_V4), IpAddr::from(GW_V6)],
    )
    .expect("plan");
    assert!(plan.dropped.is_empty(), "{:?}", plan.dropped);
    plan
}

struct Harness {
    dataplane: Dataplane,
    counters: StatsReader,
    plan: Plan,
}

impl Harness {
    fn new() -> Self {
        Self::with_plan(test_plan())
    }

    fn with_plan(plan: Plan) -> Self {
        require_root();
        let mut dataplane = Dataplane::load().expect("load XDP program");
        dataplane.apply(&plan, EPHEMERAL).expect("apply plan");
        let counters = dataplane.take_stats_reader().expect("counter maps");
        Self {
            dataplane,
            counters,
            plan,
        }
    }

    /// Every reason's and listener slot's counters.
    fn stats(&self) -> Stats {
        self.counters.read(0..MAX_LISTENERS, 0..0).expect("stats")
    }

    fn run(&mut self, frame: &Frame) -> u32 {
        let bytes = frame.build();
        let program = self.dataplane.program().expect("program");
        let result = program
            .test_run(TestRunOptions {
                data_in: Some(&bytes),
                ..Default::default()
            })
            .expect("BPF_PROG_TEST_RUN");
        result.return_value
    }

    /// Runs `frame` and checks the action and that exactly one packet was
    /// counted, under `reason`, with the frame's length in bytes.
    fn expect(&mut self, frame: Frame, action: u32, reason: Reason) {
        let before = self.stats();
        let got = self.run(&frame);
        let after = self.stats();
        assert_eq!(got, action, "action for {frame:?}");
        for r in Reason::ALL {
            let delta = after.reason(r).packets - before.reason(r).packets;
            let want = u64::from(r == reason);
            assert_eq!(delta, want, "{} counter after {frame:?}", r.name());
        }
        let bytes = after.reason(reason).bytes - before.reason(reason).bytes;
        assert_eq!(bytes, frame.build().len() as u64, "byte counter");
    }

    fn listener_packets(&self, port: u16) -> u64 {
        let id = self
            .plan
            .listeners
            .iter()
            .find(|l| l.port == port)
            .expect("listener")
            .id;
        self.stats()
            .listeners
            .iter()
            .find(|(i, _)| *i == id)
            .map_or(0, |(_, c)| c.packets)
    }
}

#[test]
fn every_map_the_loader_names_exists_in_the_object() {
    // Dataplane::load checks every `map_names::ALL` entry resolves.
    let _ = Harness::new();
}

#[test]
fn syn_to_listener_passes_and_counts_the_listener() {
    let mut h = Harness::new();
    h.expect(Frame::tcp4(GW_V4, 80, SYN), XDP_PASS, Reason::Listener);
    assert_eq!(h.listener_packets(80), 1);
}

#[test]
fn syn_to_unlisted_port_on_gateway_address_is_dropped() {
    let mut h = Harness::new();
    h.expect(Frame::tcp4(GW_V4, 8081, SYN), XDP_DROP, Reason::NoListener);
    assert_eq!(h.listener_packets(80), 0);
}

#[test]
fn traffic_to_other_destinations_passes_untouched() {
    let mut h = Harness::new();
    h.expect(Frame::tcp4(OTHER_V4, 8081, SYN), XDP_PASS, Reason::NotLocal);
    h.expect(Frame::tcp4(OTHER_V4, 80, SYN), XDP_PASS, Reason::NotLocal);
    assert_eq!(
        h.listener_packets(80),
        0,
        "port 80 of another host is not our listener"
    );
}

#[test]
fn bound_listener_matches_only_its_address() {
    let mut h = Harness::new();
    h.expect(Frame::tcp4(BIND_V4, 9000, SYN), XDP_PASS, Reason::Listener);
    h.expect(Frame::tcp4(GW_V4, 9000, SYN), XDP_DROP, Reason::NoListener);
}

#[test]
fn protocol_is_part_of_the_listener() {
    let mut h = Harness::new();
    h.expect(Frame::udp4(GW_V4, 5353), XDP_PASS, Reason::Listener);
    h.expect(Frame::tcp4(GW_V4, 5353, SYN), XDP_DROP, Reason::NoListener);
    h.expect(Frame::udp4(GW_V4, 80), XDP_DROP, Reason::NoListener);
}

#[test]
fn replies_to_the_hosts_own_connections_pass_in_the_ephemeral_range() {
    let mut h = Harness::new();
    h.expect(
        Frame::tcp4(GW_V4, 40000, SYN | ACK),
        XDP_PASS,
        Reason::LocalReply,
    );
    h.expect(Frame::tcp4(GW_V4, 40000, ACK), XDP_PASS, Reason::LocalReply);
    h.expect(Frame::udp4(GW_V4, 40000), XDP_PASS, Reason::LocalReply);
    h.expect(Frame::tcp4(GW_V4, 40000, SYN), XDP_DROP, Reason::NoListener);
    h.expect(Frame::tcp4(GW_V4, 22, ACK), XDP_DROP, Reason::NoListener);
}

#[test]
fn ephemeral_range_bounds_are_inclusive() {
    let mut h = Harness::new();
    let (first, last) = (EPHEMERAL.ephemeral_first, EPHEMERAL.ephemeral_last);
    h.expect(Frame::udp4(GW_V4, first), XDP_PASS, Reason::LocalReply);
    h.expect(Frame::tcp4(GW_V4, first, ACK), XDP_PASS, Reason::LocalReply);
    h.expect(Frame::udp4(GW_V4, last), XDP_PASS, Reason::LocalReply);
    h.expect(Frame::udp4(GW_V4, first - 1), XDP_DROP, Reason::NoListener);
    h.expect(Frame::udp4(GW_V4, last + 1), XDP_DROP, Reason::NoListener);
}

#[test]
fn ipv4_options_are_skipped_using_ihl() {
    let mut h = Harness::new();
    // Read without honouring IHL, these option bytes would look like a
    // segment to port 80 (bytes 2..4 = 0x0050), a listener.
    let options = [0x01, 0x01, 0x00, 0x50, 0x01, 0x01, 0x01, 0x01];
    h.expect(
        Frame::tcp4(GW_V4, 8081, SYN).ipv4_options(&options),
        XDP_DROP,
        Reason::NoListener,
    );
    h.expect(
        Frame::tcp4(GW_V4, 80, SYN).ipv4_options(&options),
        XDP_PASS,
        Reason::Listener,
    );
}

#[test]
fn ipv4_header_shorter_than_five_words_is_malformed() {
    let mut h = Harness::new();
    h.expect(
        Frame::tcp4(GW_V4, 8081, SYN).ipv4_ihl(4),
        XDP_PASS,
        Reason::Malformed,
    );
}

#[test]
fn truncated_tcp_header_is_malformed_not_dropped() {
    let mut h = Harness::new();
    // Ethernet 14 + IPv4 20 + 10 of the 20 TCP bytes.
    h.expect(
        Frame::tcp4(GW_V4, 8081, SYN).truncate(44),
        XDP_PASS,
        Reason::Malformed,
    );
}

#[test]
fn non_first_ipv4_fragment_passes_to_reassembly() {
    let mut h = Harness::new();
    h.expect(
        Frame::tcp4(GW_V4, 8081, SYN).fragment(185),
        XDP_PASS,
        Reason::Fragment,
    );
}

#[test]
fn ipv6_is_classified_like_ipv4() {
    let mut h = Harness::new();
    h.expect(Frame::tcp6(GW_V6, 80, SYN), XDP_PASS, Reason::Listener);
    h.expect(Frame::tcp6(GW_V6, 8081, SYN), XDP_DROP, Reason::NoListener);
    h.expect(Frame::udp6(GW_V6, 5353), XDP_PASS, Reason::Listener);
    let mut other = GW_V6;
    other[15] = 9;
    h.expect(Frame::tcp6(other, 8081, SYN), XDP_PASS, Reason::NotLocal);
}

#[test]
fn ipv6_extension_headers_are_walked() {
    let mut h = Harness::new();
    let frame = |port| Frame::tcp6(GW_V6, port, SYN).ipv6_ext(0, 0).ipv6_ext(60, 1);
    h.expect(frame(80), XDP_PASS, Reason::Listener);
    h.expect(frame(8081), XDP_DROP, Reason::NoListener);
}

#[test]
fn ipv6_authentication_header_length_is_in_4_byte_units() {
    let mut h = Harness::new();
    // A 24-byte AH (96-bit ICV) has length field 4: read in 8-byte units
    // like the other extension headers it would span 40 bytes, into TCP.
    let frame = |port| Frame::tcp6(GW_V6, port, SYN).ipv6_auth(3);
    h.expect(frame(80), XDP_PASS, Reason::Listener);
    h.expect(frame(8081), XDP_DROP, Reason::NoListener);
}

#[test]
fn ipv6_first_fragment_is_classified_and_later_ones_pass() {
    let mut h = Harness::new();
    h.expect(
        Frame::tcp6(GW_V6, 8081, SYN).fragment(0),
        XDP_DROP,
        Reason::NoListener,
    );
    h.expect(
        Frame::tcp6(GW_V6, 8081, SYN).fragment(100),
        XDP_PASS,
        Reason::Fragment,
    );
}

#[test]
fn too_many_ipv6_extension_headers_are_unparsed() {
    let mut h = Harness::new();
    let frame = Frame::tcp6(GW_V6, 8081, SYN)
        .ipv6_ext(0, 0)
        .ipv6_ext(60, 0)
        .ipv6_ext(43, 0)
        .ipv6_ext(60, 0)
        .ipv6_ext(60, 0);
    h.expect(frame, XDP_PASS, Reason::Unparsed);
}

#[test]
fn vlan_tags_are_skipped() {
    let mut h = Harness::new();
    h.expect(
        Frame::tcp4(GW_V4, 8081, SYN).vlan(10),
        XDP_DROP,
        Reason::NoListener,
    );
    h.expect(
        Frame::tcp4(GW_V4, 80, SYN).vlan(10).vlan(20),
        XDP_PASS,
        Reason::Listener,
    );
    h.expect(
        Frame::tcp4(GW_V4, 8081, SYN).vlan(1).vlan(2).vlan(3),
        XDP_PASS,
        Reason::Unparsed,
    );
}

#[test]
fn ports_on_the_management_allow_list_pass_and_only_those() {
    let mut h = Harness::new();
    h.expect(Frame::tcp4(GW_V4, 22, SYN), XDP_DROP, Reason::NoListener);
    let values: Vec<_> = ["22/tcp", "161/udp", "65535"]
        .iter()
        .map(|v| management::parse_allow_port(v).expect("value"))
        .collect();
    let allowed = management::allow_list(&values).expect("list");
    h.dataplane
        .set_allowed_ports(&management::allowed_port_words(&allowed))
        .expect("allow-list");
    h.expect(Frame::tcp4(GW_V4, 22, SYN), XDP_PASS, Reason::AllowedPort);
    h.expect(Frame::tcp6(GW_V6, 22, SYN), XDP_PASS, Reason::AllowedPort);
    h.expect(Frame::udp4(GW_V4, 161), XDP_PASS, Reason::AllowedPort);
    h.expect(
        Frame::tcp4(GW_V4, 65535, SYN),
        XDP_PASS,
        Reason::AllowedPort,
    );
    h.expect(Frame::udp4(GW_V4, 65535), XDP_PASS, Reason::AllowedPort);
    // The protocol counts, and neighbours stay dropped.
    h.expect(Frame::udp4(GW_V4, 22), XDP_DROP, Reason::NoListener);
    h.expect(Frame::tcp4(GW_V4, 161, SYN), XDP_DROP, Reason::NoListener);
    h.expect(Frame::tcp4(GW_V4, 21, SYN), XDP_DROP, Reason::NoListener);
    h.expect(Frame::tcp4(GW_V4, 23, SYN), XDP_DROP, Reason::NoListener);
    // Listeners and other hosts' traffic are decided before the list.
    h.expect(Frame::tcp4(GW_V4, 80, SYN), XDP_PASS, Reason::Listener);
    h.expect(Frame::tcp4(OTHER_V4, 23, SYN), XDP_PASS, Reason::NotLocal);
    // An emptied list drops again.
    h.dataplane
        .set_allowed_ports(&Default::default())
        .expect("allow-list");
    h.expect(Frame::tcp4(GW_V4, 22, SYN), XDP_DROP, Reason::NoListener);
}

#[test]
fn non_ip_and_non_tcp_udp_traffic_passes() {
    let mut h = Harness::new();
    h.expect(Frame::arp(), XDP_PASS, Reason::NotIp);
    h.expect(Frame::icmp4(GW_V4), XDP_PASS, Reason::NotTcpUdp);
}

#[test]
fn applying_a_new_plan_removes_listeners_it_no_longer_has() {
    let mut h = Harness::new();
    h.expect(Frame::tcp4(GW_V4, 80, SYN), XDP_PASS, Reason::Listener);
    let only_8080 = Gateway {
        namespace: "istio-system".into(),
        name: "reloaded".into(),
        creation_timestamp: None,
        defined_at: None,
        selector: Default::default(),
        servers: vec![server(8080, Protocol::Http, None)],
    };
    let model = Model {
        gateways: vec![only_8080],
        ..Default::default()
    };
    let plan = compile::plan(&model, &Instance::default(), &[IpAddr::from(GW_V4)]).expect("plan");
    h.dataplane.apply(&plan, EPHEMERAL).expect("apply");
    h.expect(Frame::tcp4(GW_V4, 80, SYN), XDP_DROP, Reason::NoListener);
    h.expect(Frame::tcp4(GW_V4, 8080, SYN), XDP_PASS, Reason::Listener);
    // The IPv6 address is no longer the gateway's.
    h.expect(Frame::tcp6(GW_V6, 8081, SYN), XDP_PASS, Reason::NotLocal);
}

/// The plan of one Gateway serving HTTP on `ports` of both gateway
/// addresses, without policy.
fn http_ports_plan(ports: std::ops::RangeInclusive<u16>) -> Plan {
    let servers: String = ports
        .map(|port| {
            format!(
                "  - port: {{number: {port}, name: http{port}, protocol: HTTP}}\n    hosts: ['*']\n"
            )
        })
        .collect();
    let yaml = format!(
        "apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: gw, namespace: istio-system}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
{servers}"
    );
    gateway_tests::fixtures::plan_of(&yaml, &[IpAddr::from(GW_V4), IpAddr::from(GW_V6)])
}

/// HTTP on ports 80 to 83 of every gateway address, with kernel policy:
/// 80 denies 198.51.100.0/24 and 2001:db8:bad::/48 (slot 1), 203.0.113.7
/// and 2001:db8::dead (slot 2); 81 is allow-listed to 192.0.2.0/24 and
/// 2001:db8:1::/64; 82 is allow-listed to 0.0.0.0/0 only; 83 has none.
fn policy_plan() -> Plan {
    let mut plan = http_ports_plan(80..=83);
    let net = |text: &str| -> Subnet { text.parse().expect("block") };
    plan.ip_policy.policies = [
        (1, "istio-system/deny-a".into()),
        (2, "istio-system/deny-b".into()),
    ]
    .into();
    plan.ip_policy.ports.insert(
        80,
        PortPolicy {
            deny: [
                (net("198.51.100.0/24"), 1),
                (net("2001:db8:bad::/48"), 1),
                (net("203.0.113.7"), 2),
                (net("2001:db8::dead"), 2),
            ]
            .into(),
            allow: None,
        },
    );
    plan.ip_policy.ports.insert(
        81,
        PortPolicy {
            deny: Default::default(),
            allow: Some([net("192.0.2.0/24"), net("2001:db8:1::/64")].into()),
        },
    );
    plan.ip_policy.ports.insert(
        82,
        PortPolicy {
            deny: Default::default(),
            allow: Some([net("0.0.0.0/0")].into()),
        },
    );
    plan.set_policy_flags();
    plan
}

fn v6(text: &str) -> [u8; 16] {
    text.parse::<std::net::Ipv6Addr>().expect("IPv6").octets()
}

impl Harness {
    /// The drop counter of policy slot `slot`.
    fn policy_drops(&self, slot: u32) -> u64 {
        self.counters
            .read_policies([slot])
            .expect("policy counters")
            .first()
            .map_or(0, |(_, c)| c.packets)
    }
}

#[test]
fn a_syn_from_a_denied_ipv4_block_is_dropped_at_both_ends_of_the_block_and_counted_per_policy() {
    let mut h = Harness::with_plan(policy_plan());
    for src in [[198, 51, 100, 0], [198, 51, 100, 255]] {
        h.expect(
            Frame::tcp4(GW_V4, 80, SYN).src4(src),
            XDP_DROP,
            Reason::PolicyDenied,
        );
    }
    assert_eq!(h.policy_drops(1), 2);
    for src in [[198, 51, 99, 255], [198, 51, 101, 0]] {
        h.expect(
            Frame::tcp4(GW_V4, 80, SYN).src4(src),
            XDP_PASS,
            Reason::Listener,
        );
    }
    // A /32: only that address.
    h.expect(
        Frame::tcp4(GW_V4, 80, SYN).src4([203, 0, 113, 7]),
        XDP_DROP,
        Reason::PolicyDenied,
    );
    assert_eq!(h.policy_drops(2), 1);
    for src in [[203, 0, 113, 6], [203, 0, 113, 8]] {
        h.expect(
            Frame::tcp4(GW_V4, 80, SYN).src4(src),
            XDP_PASS,
            Reason::Listener,
        );
    }
    assert_eq!(h.policy_drops(1), 2, "passes count nothing");
    assert_eq!(
        h.listener_packets(80),
        4,
        "drops are not the listener's traffic"
    );
}

#[test]
fn a_syn_from_a_denied_ipv6_block_is_dropped_at_both_ends_of_the_block() {
    let mut h = Harness::with_plan(policy_plan());
    for src in ["2001:db8:bad::", "2001:db8:bad:ffff:ffff:ffff:ffff:ffff"] {
        h.expect(
            Frame::tcp6(GW_V6, 80, SYN).src6(v6(src)),
            XDP_DROP,
            Reason::PolicyDenied,
        );
    }
    assert_eq!(h.policy_drops(1), 2);
    for src in ["2001:db8:bac:ffff:ffff:ffff:ffff:ffff", "2001:db8:bae::"] {
        h.expect(
            Frame::tcp6(GW_V6, 80, SYN).src6(v6(src)),
            XDP_PASS,
            Reason::Listener,
        );
    }
    // A /128.
    h.expect(
        Frame::tcp6(GW_V6, 80, SYN).src6(v6("2001:db8::dead")),
        XDP_DROP,
        Reason::PolicyDenied,
    );
    h.expect(
        Frame::tcp6(GW_V6, 80, SYN).src6(v6("2001:db8::deae")),
        XDP_PASS,
        Reason::Listener,
    );
    assert_eq!(h.policy_drops(2), 1);
}

#[test]
fn only_a_syn_without_ack_is_checked_established_traffic_passes() {
    let mut h = Harness::with_plan(policy_plan());
    let denied = [198, 51, 100, 1];
    h.expect(
        Frame::tcp4(GW_V4, 80, ACK).src4(denied),
        XDP_PASS,
        Reason::Listener,
    );
    h.expect(
        Frame::tcp4(GW_V4, 80, SYN | ACK).src4(denied),
        XDP_PASS,
        Reason::Listener,
    );
    h.expect(
        Frame::tcp4(GW_V4, 81, ACK).src4([192, 0, 3, 0]),
        XDP_PASS,
        Reason::Listener,
    );
    h.expect(
        Frame::tcp4(GW_V4, 80, SYN).src4(denied),
        XDP_DROP,
        Reason::PolicyDenied,
    );
    assert_eq!(h.policy_drops(1), 1);
}

#[test]
fn an_allow_listed_port_drops_a_syn_from_outside_its_blocks_under_the_allow_list_slot() {
    let mut h = Harness::with_plan(policy_plan());
    for src in [[192, 0, 2, 0], [192, 0, 2, 255]] {
        h.expect(
            Frame::tcp4(GW_V4, 81, SYN).src4(src),
            XDP_PASS,
            Reason::Listener,
        );
    }
    for src in [[192, 0, 1, 255], [192, 0, 3, 0]] {
        h.expect(
            Frame::tcp4(GW_V4, 81, SYN).src4(src),
            XDP_DROP,
            Reason::PolicyDenied,
        );
    }
    for src in ["2001:db8:1::", "2001:db8:1:0:ffff:ffff:ffff:ffff"] {
        h.expect(
            Frame::tcp6(GW_V6, 81, SYN).src6(v6(src)),
            XDP_PASS,
            Reason::Listener,
        );
    }
    h.expect(
        Frame::tcp6(GW_V6, 81, SYN).src6(v6("2001:db8:1:1::")),
        XDP_DROP,
        Reason::PolicyDenied,
    );
    assert_eq!(h.policy_drops(gateway_common::POLICY_ALLOW_LIST), 3);
}

#[test]
fn an_ipv4_slash_0_allow_list_passes_every_ipv4_source_and_no_ipv6_one() {
    let mut h = Harness::with_plan(policy_plan());
    for src in [[0, 0, 0, 0], [1, 2, 3, 4], [255, 255, 255, 255]] {
        h.expect(
            Frame::tcp4(GW_V4, 82, SYN).src4(src),
            XDP_PASS,
            Reason::Listener,
        );
    }
    h.expect(
        Frame::tcp6(GW_V6, 82, SYN).src6(v6("2001:db8::2")),
        XDP_DROP,
        Reason::PolicyDenied,
    );
    // An IPv6 packet from an IPv4-mapped source is left to the proxy,
    // even when the IPv4 address it maps is denied (Envoy never matches
    // an IPv6 peer against IPv4 blocks).
    h.expect(
        Frame::tcp6(GW_V6, 82, SYN).src6(v6("::ffff:1.2.3.4")),
        XDP_PASS,
        Reason::Listener,
    );
    h.expect(
        Frame::tcp6(GW_V6, 80, SYN).src6(v6("::ffff:198.51.100.1")),
        XDP_PASS,
        Reason::Listener,
    );
}

#[test]
fn a_port_without_policy_is_untouched_by_the_others_policy() {
    let mut h = Harness::with_plan(policy_plan());
    h.expect(
        Frame::tcp4(GW_V4, 83, SYN).src4([198, 51, 100, 1]),
        XDP_PASS,
        Reason::Listener,
    );
    h.expect(
        Frame::tcp4(GW_V4, 83, SYN).src4([192, 0, 3, 0]),
        XDP_PASS,
        Reason::Listener,
    );
    h.expect(
        Frame::tcp6(GW_V6, 83, SYN).src6(v6("2001:db8:bad::1")),
        XDP_PASS,
        Reason::Listener,
    );
    assert_eq!(h.policy_drops(1) + h.policy_drops(0), 0);
}

#[test]
fn a_reload_that_removes_the_policy_passes_what_it_dropped() {
    let mut h = Harness::with_plan(policy_plan());
    let denied = Frame::tcp4(GW_V4, 80, SYN).src4([198, 51, 100, 1]);
    h.expect(denied.clone(), XDP_DROP, Reason::PolicyDenied);
    let mut plain = policy_plan();
    plain.ip_policy = Default::default();
    plain.set_policy_flags();
    h.dataplane.apply(&plain, EPHEMERAL).expect("apply");
    h.expect(denied, XDP_PASS, Reason::Listener);
}

#[test]
fn a_reload_that_changes_a_ports_blocks_drops_by_the_new_table_only() {
    let mut h = Harness::with_plan(policy_plan());
    let old = Frame::tcp4(GW_V4, 80, SYN).src4([198, 51, 100, 1]);
    let new = Frame::tcp4(GW_V4, 80, SYN).src4([192, 0, 2, 200]);
    h.expect(old.clone(), XDP_DROP, Reason::PolicyDenied);
    h.expect(new.clone(), XDP_PASS, Reason::Listener);
    let mut moved = policy_plan();
    let port80 = moved.ip_policy.ports.get_mut(&80).expect("port 80");
    port80.deny = [("192.0.2.192/26".parse().expect("block"), 2)].into();
    h.dataplane.apply(&moved, EPHEMERAL).expect("apply");
    h.expect(old, XDP_PASS, Reason::Listener);
    h.expect(new, XDP_DROP, Reason::PolicyDenied);
    assert_eq!(h.policy_drops(2), 1);
}

#[test]
fn sources_on_a_port_beyond_the_tables_are_decided_by_the_tries() {
    // One more port with a policy of its own than a plan has tables for:
    // the last port (`plan::PolicyTables` fills them in port order) keeps
    // the tries for both families.
    let ports = 90..=(90 + gateway_common::MAX_POLICY_TABLES_IN_USE as u16);
    let mut plan = http_ports_plan(ports.clone());
    plan.ip_policy.policies = [(1, "istio-system/deny".into())].into();
    for port in ports.clone() {
        let v4 = format!("198.51.100.{}/32", port - 90);
        let v6 = format!("2001:db8:bad::{}/128", port - 90);
        plan.ip_policy.ports.insert(
            port,
            PortPolicy {
                deny: [
                    (v4.parse().expect("block"), 1),
                    (v6.parse().expect("block"), 1),
                ]
                .into(),
                allow: None,
            },
        );
    }
    plan.set_policy_flags();
    assert!(!plan.ip_policy.tables().ports.contains_key(ports.end()));
    let mut h = Harness::with_plan(plan);
    for port in ports {
        let n = (port - 90) as u8;
        h.expect(
            Frame::tcp4(GW_V4, port, SYN).src4([198, 51, 100, n]),
            XDP_DROP,
            Reason::PolicyDenied,
        );
        h.expect(
            Frame::tcp4(GW_V4, port, SYN).src4([198, 51, 100, 99]),
            XDP_PASS,
            Reason::Listener,
        );
        h.expect(
            Frame::tcp6(GW_V6, port, SYN).src6(v6(&format!("2001:db8:bad::{n}"))),
            XDP_DROP,
            Reason::PolicyDenied,
        );
        h.expect(
            Frame::tcp6(GW_V6, port, SYN).src6(v6("2001:db8:bad::99")),
            XDP_PASS,
            Reason::Listener,
        );
    }
}

#[test]
fn ipv6_sources_past_the_tables_room_are_decided_by_the_tries_and_ipv4_by_the_table() {
    // /128 blocks two apart, two intervals each: one more than a table's
    // IPv6 room.
    let base = u128::from_be_bytes(v6("2001:db8:bad::"));
    let mut plan = policy_plan();
    let port80 = plan.ip_policy.ports.get_mut(&80).expect("port 80");
    for i in 0..=(gateway_common::V6_INTERVALS as u128 / 2) {
        let block = Subnet {
            addr: IpAddr::from((base + 2 * i + 1).to_be_bytes()),
            prefix: 128,
        };
        port80.deny.insert(block, 2);
    }
    assert!(plan.ip_policy.tables().ports.contains_key(&80));
    let mut h = Harness::with_plan(plan);
    h.expect(
        Frame::tcp6(GW_V6, 80, SYN).src6((base + 2 * 700 + 1).to_be_bytes()),
        XDP_DROP,
        Reason::PolicyDenied,
    );
    // Inside the /48 that `policy_plan` denies under slot 1: the trie's
    // longest match is that block, as between the /128s.
    h.expect(
        Frame::tcp6(GW_V6, 80, SYN).src6((base + 2 * 700).to_be_bytes()),
        XDP_DROP,
        Reason::PolicyDenied,
    );
    h.expect(
        Frame::tcp6(GW_V6, 80, SYN).src6(v6("2001:db8:bac::1")),
        XDP_PASS,
        Reason::Listener,
    );
    h.expect(
        Frame::tcp4(GW_V4, 80, SYN).src4([198, 51, 100, 7]),
        XDP_DROP,
        Reason::PolicyDenied,
    );
    assert_eq!(h.policy_drops(2), 1);
    assert_eq!(h.policy_drops(1), 2);
}

/// Max entries of the map pinned at `path`, from bpftool.
fn pinned_max_entries(path: &std::path::Path) -> u64 {
    let out = std::process::Command::new("bpftool")
        .args(["-j", "map", "show", "pinned"])
        .arg(path)
        .output()
        .expect("bpftool");
    let info: serde_json::Value = serde_json::from_slice(&out.stdout).expect("bpftool JSON");
    info["max_entries"].as_u64().expect("max_entries")
}

#[test]
fn reason_counters_pinned_by_a_build_with_fewer_reasons_are_made_anew() {
    require_root();
    use gateway_userspace::dataplane::{EbpfLog, pins};
    let interface = format!("xpol{}", std::process::id() % 100_000);
    let dir = pins::pin_dir(&interface).expect("pin dir");
    let path = pins::map_path(&dir, gateway_common::map_names::REASON_STATS);
    // What a daemon of the build before `PolicyDenied` pinned: 10 reasons.
    let made = std::process::Command::new("bpftool")
        .args(["map", "create"])
        .arg(&path)
        .args([
            "type",
            "percpu_array",
            "key",
            "4",
            "value",
            "16",
            "entries",
            "10",
            "name",
            "REASON_STATS",
        ])
        .status()
        .expect("bpftool");
    assert!(made.success());
    assert_eq!(pinned_max_entries(&path), 10);
    let loaded = Dataplane::load_pinned(&interface, EbpfLog::Off);
    let entries = pinned_max_entries(&path);
    drop(loaded);
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(entries, u64::from(Reason::COUNT));
}
