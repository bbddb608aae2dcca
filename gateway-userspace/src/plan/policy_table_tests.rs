use std::net::Ipv4Addr;

use std::net::Ipv6Addr;

use gateway_common::{MAX_POLICY_TABLES_IN_USE, POLICY_ALLOW_LIST, V6_INTERVALS, code_slot};

use super::*;

fn v4(text: &str) -> Subnet {
    let (addr, prefix) = text.split_once('/').expect("a/len");
    Subnet {
        addr: IpAddr::V4(addr.parse().expect("IPv4")),
        prefix: prefix.parse().expect("prefix"),
    }
}

fn v6(text: &str) -> Subnet {
    let (addr, prefix) = text.split_once('/').expect("a/len");
    Subnet {
        addr: IpAddr::V6(addr.parse().expect("IPv6")),
        prefix: prefix.parse().expect("prefix"),
    }
}

fn addr(text: &str) -> u32 {
    u32::from(text.parse::<Ipv4Addr>().expect("IPv4"))
}

/// What the tries answer for `src` (`gateway_common::policy_decision`
/// over a longest match), by brute force: the reference the table must
/// equal at every address.
fn reference(policy: &PortPolicy, src: u32) -> Option<u32> {
    reference_in(policy, Family::V4, u128::from(src))
}

/// [`reference`] for a source of `family`.
fn reference_in(policy: &PortPolicy, family: Family, src: u128) -> Option<u32> {
    let holds =
        |block: &Subnet| Range::of(block, family).is_some_and(|r| r.start <= src && src <= r.end);
    let deny = policy
        .deny
        .iter()
        .filter(|(block, _)| holds(block))
        .map(|(block, slot)| (block.prefix, *slot))
        // The longest; of equal blocks, the first (`max_by_key` keeps the last).
        .rev()
        .max_by_key(|(prefix, _)| *prefix)
        .map(|(_, slot)| slot);
    if deny.is_some() {
        return deny;
    }
    match &policy.allow {
        Some(allow) if !allow.iter().any(holds) => Some(POLICY_ALLOW_LIST),
        _ => None,
    }
}

fn decision(table: &PolicyTable, src: u32) -> Option<u32> {
    code_slot(gateway_common::v4_code(table, src))
}

/// The table's decision for an IPv6 source (panics if it left IPv6 to
/// the tries).
fn decision6(table: &PolicyTable, src: u128) -> Option<u32> {
    code_slot(gateway_common::v6_code(table, &src.to_be_bytes()).expect("IPv6 intervals"))
}

fn addr6(text: &str) -> u128 {
    u128::from(text.parse::<Ipv6Addr>().expect("IPv6"))
}

/// The kernel's value of `policy`'s table.
fn table(policy: &PortPolicy) -> Box<PolicyTable> {
    PortTable::build(policy).expect("fits the pool").to_kernel()
}

/// xorshift64: the same blocks on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// `rounds` random policies of blocks from `block` (an allow list every
/// other round), each table checked against [`reference_in`] at every
/// block's edges, one address either side, the family's ends, and
/// `random` more sources.
fn check_random_policies(
    family: Family,
    rounds: usize,
    rng: &mut Rng,
    block: impl Fn(&mut Rng) -> Subnet,
    random: impl Fn(&mut Rng) -> u128,
) {
    for round in 0..rounds {
        let mut policy = PortPolicy::default();
        for _ in 0..rng.below(60) {
            let b = block(rng);
            policy.deny.insert(b, 1 + rng.below(4) as u32);
        }
        if round % 2 == 0 {
            let mut allow = BTreeSet::new();
            for _ in 0..rng.below(60) {
                allow.insert(block(rng));
            }
            policy.allow = Some(allow);
        }
        let table = table(&policy);
        let mut probes: Vec<u128> = vec![0, family.last()];
        for b in policy.deny.keys().chain(policy.allow.iter().flatten()) {
            let r = Range::of(b, family).expect("the family's block");
            probes.extend([
                r.start,
                r.end,
                r.start.saturating_sub(1),
                r.end.saturating_add(1),
            ]);
        }
        probes.extend((0..2000).map(|_| random(rng)));
        for src in probes.into_iter().filter(|src| *src <= family.last()) {
            let got = match family {
                Family::V4 => decision(&table, src as u32),
                Family::V6 => decision6(&table, src),
            };
            let shown = match family {
                Family::V4 => IpAddr::V4(Ipv4Addr::from(src as u32)),
                Family::V6 => IpAddr::V6(Ipv6Addr::from(src)),
            };
            assert_eq!(
                got,
                reference_in(&policy, family, src),
                "round {round}, source {shown}"
            );
        }
    }
}

#[test]
fn the_table_answers_as_the_tries_at_every_block_edge_and_between_them() {
    // Blocks crowded into two /16s (so runs share a /16) plus a few wide
    // ones that nest around them.
    let block = |rng: &mut Rng| {
        let base = [addr("10.1.0.0"), addr("10.2.0.0"), addr("192.0.2.0")][rng.below(3) as usize];
        let prefix = match rng.below(4) {
            0 => rng.below(17) as u8,
            _ => 16 + rng.below(17) as u8,
        };
        Subnet {
            addr: IpAddr::V4(Ipv4Addr::from(base | rng.below(1 << 16) as u32)),
            prefix,
        }
    };
    let random = |rng: &mut Rng| match rng.below(2) {
        0 => u128::from(rng.next() as u32),
        _ => u128::from(addr("10.1.0.0") | rng.below(1 << 17) as u32),
    };
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    check_random_policies(Family::V4, 40, &mut rng, block, random);
}

#[test]
fn a_slash16_split_by_slash24_answers_as_the_tries_at_every_address() {
    // Enough nested and adjacent blocks in one /16 to pass
    // `V4_SPLIT_OVER`, with an allow list, so the /24 index is used.
    let mut rng = Rng(0x0123_4567_89ab_cdef);
    for _ in 0..3 {
        let mut policy = PortPolicy {
            deny: BTreeMap::new(),
            allow: Some(BTreeSet::new()),
        };
        for _ in 0..400 {
            let block = Subnet {
                addr: IpAddr::V4(Ipv4Addr::from(addr("10.7.0.0") | rng.below(1 << 16) as u32)),
                prefix: 18 + rng.below(15) as u8,
            };
            if rng.below(3) == 0 {
                policy.allow.as_mut().expect("allow list").insert(block);
            } else {
                policy.deny.insert(block, 1 + rng.below(5) as u32);
            }
        }
        let built = PortTable::build(&policy).expect("fits");
        let root = built.roots[usize::from(10u16 << 8 | 7)];
        assert_ne!(built.pool[root as usize] & V4_SPLIT, 0, "not split");
        let table = built.to_kernel();
        for low in 0..=0xffffu32 {
            let src = addr("10.7.0.0") | low;
            assert_eq!(
                decision(&table, src),
                reference(&policy, src),
                "{}",
                Ipv4Addr::from(src)
            );
        }
    }
}

#[test]
fn the_longest_deny_block_names_the_slot_that_counts_the_drop() {
    let policy = PortPolicy {
        deny: [
            (v4("10.0.0.0/8"), 1),
            (v4("10.1.2.0/24"), 2),
            (v4("10.1.2.128/25"), 3),
        ]
        .into(),
        allow: None,
    };
    let table = table(&policy);
    assert_eq!(decision(&table, addr("10.9.9.9")), Some(1));
    assert_eq!(decision(&table, addr("10.1.2.0")), Some(2));
    assert_eq!(decision(&table, addr("10.1.2.127")), Some(2));
    assert_eq!(decision(&table, addr("10.1.2.128")), Some(3));
    assert_eq!(decision(&table, addr("10.1.2.255")), Some(3));
    assert_eq!(decision(&table, addr("10.1.3.0")), Some(1));
    assert_eq!(decision(&table, addr("11.0.0.0")), None);
    assert_eq!(decision(&table, addr("9.255.255.255")), None);
}

#[test]
fn deny_is_evaluated_before_the_allow_list_as_in_istio() {
    let policy = PortPolicy {
        deny: [(v4("192.0.2.7/32"), 4)].into(),
        allow: Some([v4("192.0.2.0/24")].into()),
    };
    let table = table(&policy);
    assert_eq!(decision(&table, addr("192.0.2.7")), Some(4));
    assert_eq!(decision(&table, addr("192.0.2.8")), None);
    assert_eq!(
        decision(&table, addr("198.51.100.1")),
        Some(POLICY_ALLOW_LIST)
    );
}

#[test]
fn an_allow_list_with_no_blocks_drops_every_ipv4_source() {
    let policy = PortPolicy {
        deny: BTreeMap::new(),
        allow: Some(BTreeSet::new()),
    };
    let table = table(&policy);
    for src in [0, addr("192.0.2.1"), u32::MAX] {
        assert_eq!(decision(&table, src), Some(POLICY_ALLOW_LIST));
    }
}

#[test]
fn blocks_at_both_ends_of_the_address_space_hold_their_edges() {
    let policy = PortPolicy {
        deny: [
            (v4("0.0.0.0/32"), 1),
            (v4("255.255.255.255/32"), 2),
            (v4("0.0.0.0/0"), 3),
        ]
        .into(),
        allow: None,
    };
    let table = table(&policy);
    assert_eq!(decision(&table, 0), Some(1));
    assert_eq!(decision(&table, 1), Some(3));
    assert_eq!(decision(&table, u32::MAX), Some(2));
    assert_eq!(decision(&table, u32::MAX - 1), Some(3));
}

#[test]
fn ipv6_blocks_hold_no_ipv4_source_and_ipv4_blocks_no_ipv6_one_as_in_envoy() {
    let policy = PortPolicy {
        deny: [(v6("2001:db8::/32"), 1), (v4("0.0.0.0/0"), 2)].into(),
        allow: Some([v6("::/0"), v6("::ffff:0:0/96")].into()),
    };
    let table = table(&policy);
    assert_eq!(decision(&table, addr("192.0.2.1")), Some(2));
    assert_eq!(decision6(&table, addr6("2001:db8::1")), Some(1));
    assert_eq!(decision6(&table, addr6("2001:db9::1")), None);
    assert_eq!(decision6(&table, addr6("::ffff:192.0.2.1")), None);
}

#[test]
fn the_ipv6_intervals_answer_as_the_tries_at_every_block_edge_and_between_them() {
    let block = |rng: &mut Rng| {
        let base = [
            addr6("2001:db8::"),
            addr6("2001:db8:ff00::"),
            addr6("fe80::"),
        ][rng.below(3) as usize];
        let start = base | (u128::from(rng.next()) << 32) >> rng.below(64);
        Subnet {
            addr: IpAddr::V6(Ipv6Addr::from(start)),
            prefix: match rng.below(4) {
                0 => rng.below(33) as u8,
                _ => 32 + rng.below(97) as u8,
            },
        }
    };
    let random = |rng: &mut Rng| addr6("2001:db8::") | u128::from(rng.next()) << 16;
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    check_random_policies(Family::V6, 20, &mut rng, block, random);
}

#[test]
fn ipv6_blocks_packed_in_one_slash64_are_found_through_the_index_at_every_address() {
    // 10,000 /128s six apart (the benchmark's worst case), and sources
    // before, between, on and after them.
    let base = addr6("2001:db8:0:bad::");
    let deny = (0..10_000u128)
        .map(|i| {
            let block = Subnet {
                addr: IpAddr::V6(Ipv6Addr::from(base + 6 * i)),
                prefix: 128,
            };
            (block, 1 + (i % 3) as u32)
        })
        .collect();
    let policy = PortPolicy { deny, allow: None };
    let table = table(&policy);
    for offset in 0..60_010u128 {
        let src = base + offset;
        let expected =
            (offset % 6 == 0 && offset < 60_000).then_some(1 + ((offset / 6) % 3) as u32);
        assert_eq!(decision6(&table, src), expected, "{}", Ipv6Addr::from(src));
    }
    assert_eq!(decision6(&table, base - 1), None);
    assert_eq!(decision6(&table, 0), None);
    assert_eq!(decision6(&table, u128::MAX), None);
}

#[test]
fn ipv6_clusters_far_apart_share_a_bucket_and_are_still_searched_right() {
    // Edges with no common prefix: the index spreads nothing, the search
    // within one bucket does the work.
    let policy = PortPolicy {
        deny: [
            (v6("2001:db8:1::/48"), 1),
            (v6("2001:db8:1:2::/64"), 2),
            (v6("2001:db8:9::1/128"), 3),
            (v6("fe80::/10"), 4),
            (v6("::1/128"), 5),
        ]
        .into(),
        allow: Some([v6("2001:db8::/32")].into()),
    };
    let table = table(&policy);
    for (src, expected) in [
        ("::", Some(POLICY_ALLOW_LIST)),
        ("::1", Some(5)),
        ("::2", Some(POLICY_ALLOW_LIST)),
        ("2001:db8::1", None),
        ("2001:db8:1::", Some(1)),
        ("2001:db8:1:2::5", Some(2)),
        ("2001:db8:1:3::", Some(1)),
        ("2001:db8:9::1", Some(3)),
        ("2001:db8:9::2", None),
        ("2001:db9::", Some(POLICY_ALLOW_LIST)),
        ("fe80::1", Some(4)),
        ("febf:ffff:ffff:ffff:ffff:ffff:ffff:ffff", Some(4)),
        ("fec0::", Some(POLICY_ALLOW_LIST)),
    ] {
        assert_eq!(decision6(&table, addr6(src)), expected, "{src}");
        assert_eq!(
            reference_in(&policy, Family::V6, addr6(src)),
            expected,
            "{src}"
        );
    }
}

#[test]
fn an_ipv6_policy_of_one_block_decides_on_both_sides_of_it() {
    let policy = PortPolicy {
        deny: [(v6("2001:db8::7/128"), 1)].into(),
        allow: None,
    };
    let table = table(&policy);
    assert_eq!(decision6(&table, addr6("2001:db8::6")), None);
    assert_eq!(decision6(&table, addr6("2001:db8::7")), Some(1));
    assert_eq!(decision6(&table, addr6("2001:db8::8")), None);
    // One edge, 8000::, the whole region: the sources after it are in
    // the last interval, those before in the first, which differ.
    let from_zero = PortPolicy {
        deny: [(v6("::/1"), 1)].into(),
        allow: None,
    };
    let half = PortTable::build(&from_zero).expect("fits").to_kernel();
    assert_eq!(decision6(&half, addr6("7fff::")), Some(1));
    assert_eq!(decision6(&half, addr6("8000::")), None);
    assert_eq!(decision6(&half, addr6("8000::5")), None);
    let none = PortPolicy {
        deny: [(v4("192.0.2.0/24"), 1)].into(),
        allow: Some(BTreeSet::new()),
    };
    let table = PortTable::build(&none).expect("fits").to_kernel();
    assert_eq!(
        decision6(&table, addr6("2001:db8::6")),
        Some(POLICY_ALLOW_LIST)
    );
}

#[test]
fn ipv6_intervals_past_the_tables_room_leave_ipv6_to_the_tries() {
    // /128 blocks two apart: two intervals each.
    let deny = (0..=V6_INTERVALS as u128 / 2)
        .map(|i| {
            let block = Subnet {
                addr: IpAddr::V6(Ipv6Addr::from(addr6("2001:db8::") + 2 * i + 1)),
                prefix: 128,
            };
            (block, 1)
        })
        .collect();
    let table = table(&PortPolicy { deny, allow: None });
    assert_eq!(
        gateway_common::v6_code(&table, &addr6("2001:db8::1").to_be_bytes()),
        None
    );
    assert_eq!(
        decision(&table, addr("192.0.2.1")),
        None,
        "IPv4 keeps its table"
    );
}

#[test]
fn host_bits_of_a_block_are_ignored_and_a_block_written_twice_keeps_its_first_slot() {
    let policy = PortPolicy {
        deny: [(v4("10.0.0.0/8"), 5), (v4("10.0.0.1/8"), 6)].into(),
        allow: None,
    };
    let table = table(&policy);
    assert_eq!(decision(&table, addr("10.200.0.1")), Some(5));
    assert_eq!(
        decision(&table, addr("10.200.0.1")),
        reference(&policy, addr("10.200.0.1"))
    );
}

#[test]
fn a_slash16_crowded_with_blocks_is_searched_to_its_last_interval() {
    // 16,384 blocks, one every fourth address: 32,768 runs in one /16,
    // the deepest search a table that fits can hold but one.
    let deny = (0..16_384u32)
        .map(|i| {
            let start = addr("198.51.0.0") | (i * 4);
            (
                Subnet {
                    addr: IpAddr::V4(Ipv4Addr::from(start)),
                    prefix: 32,
                },
                1 + i % 3,
            )
        })
        .collect();
    let policy = PortPolicy { deny, allow: None };
    let table = table(&policy);
    for low in 0..=0xffffu32 {
        let src = addr("198.51.0.0") | low;
        let expected = (low % 4 == 0).then_some(1 + (low / 4) % 3);
        assert_eq!(decision(&table, src), expected, "{low}");
    }
    assert_eq!(decision(&table, addr("198.50.255.255")), None);
    assert_eq!(decision(&table, addr("198.52.0.0")), None);
}

#[test]
fn a_policy_whose_runs_overflow_the_pool_has_no_table() {
    // A /32 in each of 17,000 /16s: four pool entries apiece.
    let deny = (0..17_000u32)
        .map(|i| {
            let block = Subnet {
                addr: IpAddr::V4(Ipv4Addr::from((i << 16) | 1)),
                prefix: 32,
            };
            (block, 1)
        })
        .collect();
    assert_eq!(PortTable::build(&PortPolicy { deny, allow: None }), None);
}

#[test]
fn ports_with_equal_policies_share_one_table() {
    let same = PortPolicy {
        deny: [(v4("192.0.2.0/24"), 1)].into(),
        allow: None,
    };
    let other = PortPolicy {
        deny: [(v4("198.51.100.0/24"), 1)].into(),
        allow: None,
    };
    let policy = IpPolicy {
        policies: [(1, "ns/deny".to_string())].into(),
        ports: [(80, same.clone()), (443, same), (8443, other)].into(),
    };
    let tables = policy.tables();
    assert_eq!(tables.tables.len(), 2);
    assert_eq!(tables.ports[&80], tables.ports[&443]);
    assert_ne!(tables.ports[&80], tables.ports[&8443]);
}

#[test]
fn ports_beyond_the_distinct_tables_a_plan_may_use_keep_the_tries() {
    let ports = (0..=MAX_POLICY_TABLES_IN_USE as u16)
        .map(|i| {
            let block = Subnet {
                addr: IpAddr::V4(Ipv4Addr::new(192, 0, 2, i as u8)),
                prefix: 32,
            };
            (
                8000 + i,
                PortPolicy {
                    deny: [(block, 1)].into(),
                    allow: None,
                },
            )
        })
        .collect();
    let policy = IpPolicy {
        policies: [(1, "ns/deny".to_string())].into(),
        ports,
    };
    let tables = policy.tables();
    assert_eq!(tables.tables.len(), MAX_POLICY_TABLES_IN_USE);
    let last = 8000 + MAX_POLICY_TABLES_IN_USE as u16;
    assert!(!tables.ports.contains_key(&last));
    assert_eq!(tables.ports.len(), MAX_POLICY_TABLES_IN_USE);
}
