//! The XDP classifier against its host-side reference
//! (`gateway_common::reference::classify_frame`): the same reason, verdict
//! and listener for named fixtures, for every truncation of every fixture,
//! and for tens of thousands of random and mutated frames per run.
use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
};

use aya::programs::{TestRun, TestRunOptions};
use gateway_common::{
    IPPROTO_TCP, IPPROTO_UDP, LOCAL_ADDR_SLOTS, ListenerKey, ListenerValue, PolicyKey, PolicyValue,
    PortValue, Reason, Settings, allowed_port_bit,
    reference::{Decision, Tables, classify_frame},
};
use gateway_tests::{
    fixtures::hosts_plan,
    frame::{ACK, Frame, SYN},
    require_root,
    rng::Rng,
};
use gateway_userspace::{
    dataplane::{Dataplane, Stats, StatsReader},
    plan::{Plan, PortPolicy, addr_key},
};

const GW_V4: [u8; 4] = [192, 0, 2, 1];
const GW_V6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
const OTHER_V4: [u8; 4] = [198, 51, 100, 9];
const OTHER_V6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9];
const SETTINGS: Settings = Settings {
    ephemeral_first: 32768,
    ephemeral_last: 60999,
};
const XDP_DROP: u32 = 1;
/// The shortest frame BPF_PROG_TEST_RUN runs XDP on: an Ethernet header.
const ETH_HLEN: usize = 14;
const XDP_PASS: u32 = 2;

/// The maps' contents as the daemon writes them, for the reference.
struct Reference {
    ports: BTreeMap<u32, PortValue>,
    listeners: BTreeMap<ListenerKey, ListenerValue>,
    local: BTreeSet<[u8; 16]>,
    allowed: BTreeMap<u32, u64>,
    deny: BTreeMap<PolicyKey, PolicyValue>,
    allow: BTreeMap<PolicyKey, PolicyValue>,
}

/// The longest entry of `trie` whose prefix `key` starts with: an LPM
/// trie's lookup, by scanning.
fn longest_match(trie: &BTreeMap<PolicyKey, PolicyValue>, key: &PolicyKey) -> Option<PolicyValue> {
    let bytes = |k: &PolicyKey| -> [u8; 18] {
        let mut b = [0u8; 18];
        b[..2].copy_from_slice(&k.data.port);
        b[2..].copy_from_slice(&k.data.addr);
        b
    };
    let starts_with = |entry: &PolicyKey| {
        let (e, k) = (bytes(entry), bytes(key));
        (0..entry.prefixlen as usize).all(|bit| {
            let mask = 0x80u8 >> (bit % 8);
            e[bit / 8] & mask == k[bit / 8] & mask
        })
    };
    trie.iter()
        .filter(|(entry, _)| starts_with(entry))
        .max_by_key(|(entry, _)| entry.prefixlen)
        .map(|(_, value)| *value)
}

impl Tables for Reference {
    fn port(&self, index: u32) -> PortValue {
        self.ports.get(&index).copied().unwrap_or_default()
    }
    fn listener(&self, key: &ListenerKey) -> Option<ListenerValue> {
        self.listeners.get(key).copied()
    }
    fn is_local(&self, addr: &[u8; 16]) -> bool {
        self.local.contains(addr)
    }
    fn settings(&self) -> Settings {
        SETTINGS
    }
    fn allowed_word(&self, word: u32) -> u64 {
        self.allowed.get(&word).copied().unwrap_or(0)
    }
    fn policy_deny(&self, key: &PolicyKey) -> Option<PolicyValue> {
        longest_match(&self.deny, key)
    }
    fn policy_allowed(&self, key: &PolicyKey) -> bool {
        longest_match(&self.allow, key).is_some()
    }
}

/// [`hosts_plan`] with kernel policy on port 9000: 192.0.2.0/30 (the
/// frames' IPv4 source) denied, and allow-listed to 192.0.2.0/24 and
/// 2001:db8::/64 (the IPv6 source), so mutated sources reach both drops.
fn policy_plan(addresses: &[IpAddr]) -> Plan {
    let mut plan = hosts_plan(addresses);
    plan.ip_policy.policies = [(1, "istio-system/deny".to_string())].into();
    plan.ip_policy.ports.insert(
        9000,
        PortPolicy {
            deny: [("192.0.2.0/30".parse().expect("block"), 1)].into(),
            allow: Some(
                ["192.0.2.0/24", "2001:db8::/64"]
                    .iter()
                    .map(|b| b.parse().expect("block"))
                    .collect(),
            ),
        },
    );
    plan.set_policy_flags();
    plan
}

struct Harness {
    dataplane: Dataplane,
    counters: StatsReader,
    plan: Plan,
    reference: Reference,
}

impl Harness {
    fn new() -> Self {
        Self::with_addresses(&[IpAddr::from(GW_V4), IpAddr::from(GW_V6)])
    }

    /// A harness whose gateway owns `addresses`.
    fn with_addresses(addresses: &[IpAddr]) -> Self {
        require_root();
        let plan = policy_plan(addresses);
        let mut allowed: BTreeMap<u32, u64> = BTreeMap::new();
        for protocol in [IPPROTO_TCP, IPPROTO_UDP] {
            if let Some((word, mask)) = allowed_port_bit(protocol, 22) {
                *allowed.entry(word).or_default() |= mask;
            }
        }
        let mut dataplane = Dataplane::load().expect("load");
        dataplane.apply(&plan, SETTINGS).expect("apply");
        dataplane.set_allowed_ports(&allowed).expect("allow-list");
        let counters = dataplane.take_stats_reader().expect("counters");
        let reference = Reference {
            ports: plan.ports(),
            listeners: plan
                .listeners
                .iter()
                .map(|l| (l.key(), l.value()))
                .collect(),
            local: plan.local_addrs.iter().map(|a| addr_key(*a)).collect(),
            allowed,
            deny: plan.ip_policy.deny_entries(),
            allow: plan.ip_policy.allow_entries(),
        };
        Self {
            dataplane,
            counters,
            plan,
            reference,
        }
    }

    fn stats(&self) -> Stats {
        self.counters
            .read(self.plan.listeners.iter().map(|l| l.id), std::iter::empty())
            .expect("stats")
    }

    /// What the kernel did with `frame`: its verdict and, from the counters
    /// that moved, its reason and listener.
    fn kernel(&mut self, frame: &[u8]) -> (u32, Decision) {
        let before = self.stats();
        let result = self
            .dataplane
            .program()
            .expect("program")
            .test_run(TestRunOptions {
                data_in: Some(frame),
                ..Default::default()
            })
            .expect("BPF_PROG_TEST_RUN");
        let after = self.stats();
        let moved: Vec<Reason> = Reason::ALL
            .into_iter()
            .filter(|r| after.reason(*r).packets != before.reason(*r).packets)
            .collect();
        assert_eq!(moved.len(), 1, "one reason per frame: {moved:?}");
        let listener_packets = |stats: &Stats, id: u32| {
            stats
                .listeners
                .iter()
                .find(|(l, _)| *l == id)
                .map_or(0, |(_, c)| c.packets)
        };
        let listeners: Vec<u32> = self
            .plan
            .listeners
            .iter()
            .map(|l| l.id)
            .filter(|id| listener_packets(&after, *id) != listener_packets(&before, *id))
            .collect();
        assert!(listeners.len() <= 1, "{listeners:?}");
        (
            result.return_value,
            Decision {
                reason: moved[0],
                listener: listeners.first().copied(),
            },
        )
    }

    /// Checks the kernel against the reference on `frame`.
    fn agree(&mut self, frame: &[u8], what: &str) -> Decision {
        let expected = classify_frame(frame, &self.reference);
        let (action, got) = self.kernel(frame);
        assert_eq!(got, expected, "{what}: {frame:02x?}");
        let verdict = if expected.reason.verdict() == gateway_common::Verdict::Drop {
            XDP_DROP
        } else {
            XDP_PASS
        };
        assert_eq!(action, verdict, "{what}: {frame:02x?}");
        expected
    }
}

/// Named fixtures: (name, frame, expected reason).
fn fixtures() -> Vec<(&'static str, Frame, Reason)> {
    let psh_ack = ACK | 0x08;
    vec![
        (
            "SYN to a listener",
            Frame::tcp4(GW_V4, 443, SYN),
            Reason::Listener,
        ),
        (
            "SYN to a listener over IPv6",
            Frame::tcp6(GW_V6, 80, SYN),
            Reason::Listener,
        ),
        (
            "data to a TCP listener",
            Frame::tcp4(GW_V4, 9000, psh_ack).payload(b"x"),
            Reason::Listener,
        ),
        (
            "SYN to an unlisted port",
            Frame::tcp4(GW_V4, 8081, SYN),
            Reason::NoListener,
        ),
        (
            "SYN over IPv6 to an unlisted port",
            Frame::tcp6(GW_V6, 8081, SYN),
            Reason::NoListener,
        ),
        (
            "SYN to the management port",
            Frame::tcp4(GW_V4, 22, SYN),
            Reason::AllowedPort,
        ),
        (
            "UDP to the management port",
            Frame::udp4(GW_V4, 22),
            Reason::AllowedPort,
        ),
        (
            "a reply into the ephemeral range",
            Frame::tcp4(GW_V4, 40000, SYN | ACK),
            Reason::LocalReply,
        ),
        (
            "a SYN into the ephemeral range",
            Frame::tcp4(GW_V4, 40000, SYN),
            Reason::NoListener,
        ),
        (
            "UDP to an unlisted port",
            Frame::udp4(GW_V4, 5353),
            Reason::NoListener,
        ),
        (
            "UDP reply into the ephemeral range",
            Frame::udp6(GW_V6, 50000),
            Reason::LocalReply,
        ),
        (
            "another destination",
            Frame::tcp4(OTHER_V4, 443, SYN),
            Reason::NotLocal,
        ),
        (
            "another IPv6 destination",
            Frame::tcp6(OTHER_V6, 8081, SYN),
            Reason::NotLocal,
        ),
        ("ARP", Frame::arp(), Reason::NotIp),
        ("ICMP", Frame::icmp4(GW_V4), Reason::NotTcpUdp),
        (
            "one VLAN tag",
            Frame::tcp4(GW_V4, 443, SYN).vlan(7),
            Reason::Listener,
        ),
        (
            "two VLAN tags",
            Frame::tcp4(GW_V4, 8081, SYN).vlan(7).vlan(8),
            Reason::NoListener,
        ),
        (
            "three VLAN tags",
            Frame::tcp4(GW_V4, 443, SYN).vlan(7).vlan(8).vlan(9),
            Reason::Unparsed,
        ),
        (
            "IPv4 options",
            Frame::tcp4(GW_V4, 443, SYN).ipv4_options(&[1, 1, 1, 1, 1, 1, 1, 0]),
            Reason::Listener,
        ),
        (
            "IHL below 5",
            Frame::tcp4(GW_V4, 443, SYN).ipv4_ihl(4),
            Reason::Malformed,
        ),
        (
            "a non-first IPv4 fragment",
            Frame::tcp4(GW_V4, 8081, SYN).fragment(185),
            Reason::Fragment,
        ),
        (
            "IPv6 hop-by-hop then TCP",
            Frame::tcp6(GW_V6, 443, SYN).ipv6_ext(0, 0),
            Reason::Listener,
        ),
        (
            "IPv6 authentication header",
            Frame::tcp6(GW_V6, 8081, SYN).ipv6_auth(4),
            Reason::NoListener,
        ),
        (
            "five IPv6 extension headers",
            Frame::tcp6(GW_V6, 443, SYN)
                .ipv6_ext(0, 0)
                .ipv6_ext(60, 0)
                .ipv6_ext(43, 0)
                .ipv6_ext(60, 1)
                .ipv6_ext(60, 0),
            Reason::Unparsed,
        ),
    ]
}

#[test]
fn the_kernel_agrees_with_the_reference_on_every_fixture_and_every_truncation() {
    let mut h = Harness::new();
    for (name, frame, reason) in fixtures() {
        let bytes = frame.build();
        let decision = h.agree(&bytes, name);
        assert_eq!(decision.reason, reason, "{name}");
        // Cut at every byte: every header boundary and everything between
        // (from the Ethernet header on: BPF_PROG_TEST_RUN, like a NIC,
        // never hands XDP less).
        for len in ETH_HLEN..bytes.len() {
            h.agree(&bytes[..len], &format!("{name}, cut to {len} bytes"));
        }
    }
}

/// One random frame: a fixture's shape with random ports and addresses,
/// then a few random byte changes and sometimes a cut.
fn random_frame(rng: &mut Rng, shapes: &[Vec<u8>]) -> Vec<u8> {
    let mut bytes = shapes[rng.below(shapes.len())].clone();
    for _ in 0..rng.below(4) {
        if bytes.is_empty() {
            break;
        }
        let at = rng.below(bytes.len());
        bytes[at] = match rng.below(4) {
            0 => bytes[at] ^ (1 << rng.below(8)),
            1 => [0x00, 0xff, 0x06, 0x11, 0x2c, 0x33, 0x81, 0x86][rng.below(8)],
            _ => rng.next_u64() as u8,
        };
    }
    if rng.below(4) == 0 && bytes.len() > ETH_HLEN {
        let len = ETH_HLEN + rng.below(bytes.len() - ETH_HLEN + 1);
        bytes.truncate(len);
    }
    bytes
}

#[test]
fn the_kernel_agrees_with_the_reference_on_random_and_mutated_frames() {
    let mut h = Harness::new();
    let mut rng = Rng::from_env("FRAME_PROPERTY_SEED");
    let ports = [80u16, 443, 9000, 22, 8081, 40000, 65535, 1];
    let mut shapes = Vec::new();
    for port in ports {
        let psh = ACK | 0x08;
        for flags in [SYN, ACK, SYN | ACK, psh] {
            shapes.push(Frame::tcp4(GW_V4, port, flags).build());
            shapes.push(Frame::tcp6(GW_V6, port, flags).build());
            shapes.push(Frame::tcp4(OTHER_V4, port, flags).vlan(3).build());
        }
        shapes.push(Frame::udp4(GW_V4, port).build());
        shapes.push(Frame::udp6(GW_V6, port).ipv6_ext(60, 0).build());
    }
    for (_, frame, _) in fixtures() {
        shapes.push(frame.build());
    }
    let cases = 20_000;
    let mut reasons = BTreeSet::new();
    for case in 0..cases {
        let frame = random_frame(&mut rng, &shapes);
        let decision = h.agree(&frame, &format!("case {case}"));
        reasons.insert(decision.reason);
    }
    // The generator reaches every reason, so every path was compared.
    assert_eq!(
        reasons.len(),
        Reason::ALL.len(),
        "reasons reached: {reasons:?}"
    );
}

#[test]
fn addresses_past_the_kernel_list_are_found_in_the_hash_map() {
    // More gateway addresses than LOCAL_ADDR_LIST holds: the last ones are
    // in LOCAL_ADDRS only, and must still be taken for the gateway's.
    let addresses: Vec<IpAddr> = (1..=LOCAL_ADDR_SLOTS as u8 + 2)
        .map(|last| IpAddr::from([192, 0, 2, last]))
        .collect();
    let mut h = Harness::with_addresses(&addresses);
    for last in [1, LOCAL_ADDR_SLOTS as u8 + 2] {
        let dst = [192, 0, 2, last];
        let listener = h.agree(&Frame::tcp4(dst, 443, SYN).build(), "listener");
        assert_eq!(listener.reason, Reason::Listener, "192.0.2.{last}");
        let unlisted = h.agree(&Frame::tcp4(dst, 8081, SYN).build(), "unlisted");
        assert_eq!(unlisted.reason, Reason::NoListener, "192.0.2.{last}");
    }
    let other = h.agree(&Frame::tcp4(OTHER_V4, 443, SYN).build(), "other");
    assert_eq!(other.reason, Reason::NotLocal);
}
