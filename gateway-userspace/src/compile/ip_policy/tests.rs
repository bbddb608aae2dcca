use std::collections::{BTreeMap, BTreeSet};

use gateway_common::{IPPROTO_TCP, IPPROTO_UDP, ListenerKind, MAX_POLICY_ENTRIES};

use super::*;
use crate::model::{Condition, PathMatch, PolicyTarget, ValueMatch, Values};

fn listener(port: u16, ip_protocol: u8) -> Listener {
    Listener {
        id: 0,
        bind: None,
        port,
        ip_protocol,
        kind: ListenerKind::Http,
        reset_unknown_hosts: false,
        policy_deny: false,
        policy_allow_list: false,
    }
}

/// TCP listeners on 80 and 443, UDP on 5353.
fn listeners() -> Vec<Listener> {
    vec![
        listener(80, IPPROTO_TCP),
        listener(443, IPPROTO_TCP),
        listener(5353, IPPROTO_UDP),
    ]
}

fn policy(name: &str, action: AuthzAction, rules: Vec<AuthzRule>) -> AuthorizationPolicy {
    AuthorizationPolicy {
        namespace: "istio-system".into(),
        name: name.into(),
        creation_timestamp: None,
        target: PolicyTarget::Namespace,
        action,
        dry_run: false,
        rules: Some(rules),
        defined_at: None,
    }
}

fn net(text: &str) -> Subnet {
    text.parse().expect("subnet")
}

fn from_ips(blocks: &[&str]) -> Option<Vec<Source>> {
    Some(vec![Source {
        ip_blocks: blocks.iter().map(|b| net(b)).collect(),
        ..Source::default()
    }])
}

fn from_remote(blocks: &[&str]) -> Option<Vec<Source>> {
    Some(vec![Source {
        remote_ip_blocks: blocks.iter().map(|b| net(b)).collect(),
        ..Source::default()
    }])
}

fn to_ports(ports: &[u16]) -> Option<Vec<Operation>> {
    Some(vec![Operation {
        ports: ports.to_vec(),
        ..Operation::default()
    }])
}

fn rule(from: Option<Vec<Source>>, to: Option<Vec<Operation>>) -> AuthzRule {
    AuthzRule {
        from,
        to,
        when: Vec::new(),
    }
}

fn compile(policies: &[AuthorizationPolicy], trusted_proxies: u32) -> IpPolicy {
    let refs: Vec<&AuthorizationPolicy> = policies.iter().collect();
    let instance = Instance {
        trusted_proxies,
        ..Instance::default()
    };
    ip_policy(&refs, &listeners(), &instance).expect("fits")
}

fn deny_of(policy: &IpPolicy, port: u16) -> BTreeMap<String, u32> {
    policy
        .ports
        .get(&port)
        .map(|p| p.deny.iter().map(|(b, s)| (b.to_string(), *s)).collect())
        .unwrap_or_default()
}

fn allow_of(policy: &IpPolicy, port: u16) -> Option<BTreeSet<String>> {
    policy
        .ports
        .get(&port)
        .and_then(|p| p.allow.as_ref())
        .map(|set| set.iter().map(ToString::to_string).collect())
}

fn strings(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

#[test]
fn deny_on_ip_blocks_and_ports_denies_each_port_times_each_block() {
    let p = compile(
        &[policy(
            "deny-bad",
            AuthzAction::Deny,
            vec![rule(
                from_ips(&["192.0.2.0/24", "2001:db8::/32"]),
                to_ports(&[443]),
            )],
        )],
        0,
    );
    assert_eq!(
        deny_of(&p, 443),
        BTreeMap::from([("192.0.2.0/24".into(), 1), ("2001:db8::/32".into(), 1)])
    );
    assert!(deny_of(&p, 80).is_empty());
    assert_eq!(
        p.policies,
        BTreeMap::from([(1, "istio-system/deny-bad".into())])
    );
}

#[test]
fn deny_without_to_covers_every_tcp_listener_port_and_no_udp_one() {
    let p = compile(
        &[policy(
            "d",
            AuthzAction::Deny,
            vec![rule(from_ips(&["198.51.100.7"]), None)],
        )],
        0,
    );
    assert_eq!(deny_of(&p, 80).len(), 1);
    assert_eq!(deny_of(&p, 443).len(), 1);
    assert!(!p.ports.contains_key(&5353));
}

#[test]
fn deny_without_from_denies_every_ipv4_and_ipv6_source_on_its_ports() {
    let p = compile(
        &[policy(
            "d",
            AuthzAction::Deny,
            vec![rule(None, to_ports(&[80]))],
        )],
        0,
    );
    let denied: BTreeSet<String> = deny_of(&p, 80).into_keys().collect();
    assert!(denied.contains("0.0.0.0/0"));
    // ::/0 without the IPv4-mapped range: 96 blocks around it.
    assert_eq!(denied.len(), 1 + 96);
    assert!(denied.contains("8000::/1"));
    assert!(!denied.iter().any(|b| b.starts_with("::ffff:0.0.0.0")));
}

#[test]
fn deny_to_ports_that_are_not_listeners_adds_nothing() {
    let p = compile(
        &[policy(
            "d",
            AuthzAction::Deny,
            vec![rule(from_ips(&["192.0.2.1"]), to_ports(&[8080]))],
        )],
        0,
    );
    assert!(p.ports.is_empty());
    assert!(p.policies.is_empty());
}

#[test]
fn a_deny_rule_with_a_path_is_not_in_the_kernel() {
    let to = Some(vec![Operation {
        ports: vec![443],
        paths: vec![PathMatch::Value(ValueMatch::Prefix("/admin".into()))],
        ..Operation::default()
    }]);
    let p = compile(
        &[policy(
            "d",
            AuthzAction::Deny,
            vec![rule(from_ips(&["192.0.2.0/24"]), to)],
        )],
        0,
    );
    assert!(p.ports.is_empty());
}

#[test]
fn a_deny_rule_with_not_ports_methods_or_hosts_is_not_in_the_kernel() {
    let cases = [
        Operation {
            not_ports: vec![80],
            ..Operation::default()
        },
        Operation {
            ports: vec![80],
            methods: vec![ValueMatch::Exact("POST".into())],
            ..Operation::default()
        },
        Operation {
            ports: vec![80],
            hosts: vec![ValueMatch::Exact("a.example".into())],
            ..Operation::default()
        },
        Operation::default(),
    ];
    for op in cases {
        let p = compile(
            &[policy(
                "d",
                AuthzAction::Deny,
                vec![rule(from_ips(&["192.0.2.0/24"]), Some(vec![op.clone()]))],
            )],
            0,
        );
        assert!(p.ports.is_empty(), "{op:?}");
    }
}

#[test]
fn a_deny_rule_with_a_when_condition_is_not_in_the_kernel() {
    let mut r = rule(from_ips(&["192.0.2.0/24"]), None);
    r.when = vec![Condition::SourceIp(Values {
        values: vec![net("192.0.2.0/24")],
        not_values: Vec::new(),
    })];
    let p = compile(&[policy("d", AuthzAction::Deny, vec![r])], 0);
    assert!(p.ports.is_empty());
}

#[test]
fn a_deny_source_with_not_ip_blocks_or_both_block_lists_is_not_in_the_kernel() {
    let sources = [
        Source {
            ip_blocks: vec![net("192.0.2.0/24")],
            not_ip_blocks: vec![net("192.0.2.1")],
            ..Source::default()
        },
        Source {
            ip_blocks: vec![net("192.0.2.0/24")],
            remote_ip_blocks: vec![net("192.0.2.0/24")],
            ..Source::default()
        },
        Source::default(),
    ];
    for source in sources {
        let p = compile(
            &[policy(
                "d",
                AuthzAction::Deny,
                vec![rule(Some(vec![source.clone()]), None)],
            )],
            0,
        );
        assert!(p.ports.is_empty(), "{source:?}");
    }
}

#[test]
fn deny_on_remote_ip_blocks_is_in_the_kernel_only_without_trusted_proxies() {
    let policies = [policy(
        "d",
        AuthzAction::Deny,
        vec![rule(from_remote(&["203.0.113.0/24"]), None)],
    )];
    assert_eq!(deny_of(&compile(&policies, 0), 80).len(), 1);
    assert!(compile(&policies, 1).ports.is_empty());
}

#[test]
fn dry_run_and_audit_policies_never_reach_the_kernel() {
    let mut dry = policy(
        "dry",
        AuthzAction::Deny,
        vec![rule(from_ips(&["192.0.2.0/24"]), None)],
    );
    dry.dry_run = true;
    let audit = policy(
        "audit",
        AuthzAction::Audit,
        vec![rule(from_ips(&["192.0.2.0/24"]), None)],
    );
    let mut dry_allow = policy("dry-allow", AuthzAction::Allow, Vec::new());
    dry_allow.dry_run = true;
    let p = compile(&[dry, audit, dry_allow], 0);
    assert_eq!(p, IpPolicy::default());
}

#[test]
fn a_block_denied_by_two_policies_counts_against_the_first_in_istio_order() {
    let p = compile(
        &[
            policy(
                "first",
                AuthzAction::Deny,
                vec![rule(from_ips(&["192.0.2.0/24"]), None)],
            ),
            policy(
                "second",
                AuthzAction::Deny,
                vec![rule(from_ips(&["192.0.2.9/24", "198.51.100.0/24"]), None)],
            ),
        ],
        0,
    );
    assert_eq!(
        deny_of(&p, 80),
        BTreeMap::from([("192.0.2.0/24".into(), 1), ("198.51.100.0/24".into(), 2)])
    );
}

#[test]
fn ipv6_deny_blocks_inside_the_ipv4_mapped_range_are_left_to_the_proxy() {
    let p = compile(
        &[policy(
            "d",
            AuthzAction::Deny,
            vec![rule(from_ips(&["::ffff:192.0.2.0/120"]), None)],
        )],
        0,
    );
    assert!(p.ports.is_empty());
}

#[test]
fn allow_on_ip_blocks_allow_lists_the_port_with_their_union() {
    let p = compile(
        &[
            policy(
                "a",
                AuthzAction::Allow,
                vec![rule(from_ips(&["192.0.2.0/24"]), to_ports(&[443]))],
            ),
            policy(
                "b",
                AuthzAction::Allow,
                vec![rule(from_remote(&["2001:db8::/48"]), None)],
            ),
        ],
        0,
    );
    assert_eq!(
        allow_of(&p, 443),
        Some(strings(&["192.0.2.0/24", "2001:db8::/48"]))
    );
    assert_eq!(allow_of(&p, 80), Some(strings(&["2001:db8::/48"])));
}

#[test]
fn an_allow_rule_without_ip_makes_the_port_not_allow_listed() {
    let path_only = rule(
        None,
        Some(vec![Operation {
            paths: vec![PathMatch::Value(ValueMatch::Prefix("/public".into()))],
            ..Operation::default()
        }]),
    );
    let p = compile(
        &[
            policy(
                "ips",
                AuthzAction::Allow,
                vec![rule(from_ips(&["192.0.2.0/24"]), None)],
            ),
            policy("public", AuthzAction::Allow, vec![path_only]),
        ],
        0,
    );
    assert_eq!(allow_of(&p, 80), None);
    assert_eq!(allow_of(&p, 443), None);
}

#[test]
fn an_allow_rule_with_one_from_entry_without_ip_makes_the_port_not_allow_listed() {
    let from = Some(vec![
        Source {
            ip_blocks: vec![net("192.0.2.0/24")],
            ..Source::default()
        },
        Source {
            not_ip_blocks: vec![net("198.51.100.0/24")],
            ..Source::default()
        },
    ]);
    let p = compile(
        &[policy("a", AuthzAction::Allow, vec![rule(from, None)])],
        0,
    );
    assert_eq!(allow_of(&p, 80), None);
}

#[test]
fn an_allow_rule_on_other_ports_does_not_stop_a_port_being_allow_listed() {
    let p = compile(
        &[
            policy(
                "ips",
                AuthzAction::Allow,
                vec![rule(from_ips(&["192.0.2.0/24"]), to_ports(&[80]))],
            ),
            policy(
                "open-443",
                AuthzAction::Allow,
                vec![rule(None, to_ports(&[443]))],
            ),
        ],
        0,
    );
    assert_eq!(allow_of(&p, 80), Some(strings(&["192.0.2.0/24"])));
    assert_eq!(allow_of(&p, 443), None);
}

#[test]
fn an_allow_rule_with_not_ports_could_apply_to_every_port() {
    let not_ports = rule(
        None,
        Some(vec![Operation {
            not_ports: vec![80],
            ..Operation::default()
        }]),
    );
    let p = compile(
        &[
            policy(
                "ips",
                AuthzAction::Allow,
                vec![rule(from_ips(&["192.0.2.0/24"]), None)],
            ),
            policy("not-80", AuthzAction::Allow, vec![not_ports]),
        ],
        0,
    );
    assert_eq!(allow_of(&p, 80), None);
    assert_eq!(allow_of(&p, 443), None);
}

#[test]
fn allow_policies_with_no_rule_for_a_port_allow_list_it_empty() {
    let p = compile(
        &[
            policy("nothing", AuthzAction::Allow, Vec::new()),
            policy(
                "only-80",
                AuthzAction::Allow,
                vec![rule(from_ips(&["192.0.2.0/24"]), to_ports(&[80]))],
            ),
        ],
        0,
    );
    assert_eq!(allow_of(&p, 443), Some(BTreeSet::new()));
    let mut none = policy("none", AuthzAction::Allow, Vec::new());
    none.rules = None;
    let p = compile(&[none], 0);
    assert_eq!(allow_of(&p, 80), Some(BTreeSet::new()));
}

#[test]
fn allow_on_remote_ip_blocks_is_not_used_with_trusted_proxies() {
    let policies = [policy(
        "a",
        AuthzAction::Allow,
        vec![rule(from_remote(&["203.0.113.0/24"]), None)],
    )];
    assert_eq!(
        allow_of(&compile(&policies, 0), 80),
        Some(strings(&["203.0.113.0/24"]))
    );
    assert_eq!(allow_of(&compile(&policies, 1), 80), None);
}

#[test]
fn no_allow_policy_means_no_port_is_allow_listed() {
    let p = compile(
        &[policy(
            "d",
            AuthzAction::Deny,
            vec![rule(from_ips(&["192.0.2.0/24"]), None)],
        )],
        0,
    );
    assert!(p.ports.values().all(|e| e.allow.is_none()));
}

#[test]
fn too_many_entries_fail_the_plan_whole() {
    let blocks: Vec<Subnet> = (0..=u16::MAX)
        .map(|i| Subnet {
            addr: IpAddr::from([10, (i >> 8) as u8, i as u8, 0]),
            prefix: 24,
        })
        .collect();
    let from = Some(vec![Source {
        ip_blocks: blocks,
        ..Source::default()
    }]);
    let refs = [policy("big", AuthzAction::Deny, vec![rule(from, None)])];
    let refs: Vec<&AuthorizationPolicy> = refs.iter().collect();
    let err = ip_policy(&refs, &listeners(), &Instance::default()).unwrap_err();
    assert!(
        matches!(
            err,
            CompileError::TooManyPolicyEntries { trie: "DENY", count, limit, .. }
                if count == 2 * 65_536 && limit == MAX_POLICY_ENTRIES
        ),
        "{err}"
    );
}

#[test]
fn the_listener_flags_follow_the_ports_policy() {
    let mut plan = crate::plan::Plan {
        listeners: listeners(),
        ..Default::default()
    };
    plan.ip_policy = compile(
        &[
            policy(
                "d",
                AuthzAction::Deny,
                vec![rule(from_ips(&["192.0.2.0/24"]), to_ports(&[80]))],
            ),
            policy(
                "a",
                AuthzAction::Allow,
                vec![rule(from_ips(&["198.51.100.0/24"]), to_ports(&[443]))],
            ),
        ],
        0,
    );
    plan.set_policy_flags();
    let flags: Vec<(u16, bool, bool)> = plan
        .listeners
        .iter()
        .map(|l| (l.port, l.policy_deny, l.policy_allow_list))
        .collect();
    // 80: denies 192.0.2.0/24, and no ALLOW rule could apply: allow-listed empty.
    assert_eq!(
        flags,
        vec![(80, true, true), (443, false, true), (5353, false, false)]
    );
}

#[test]
fn deny_policies_keep_their_counter_slots_across_a_reload() {
    let deny = |name: &str, block: &str| {
        policy(
            name,
            AuthzAction::Deny,
            vec![rule(from_ips(&[block]), None)],
        )
    };
    let plan_of = |policies: &[AuthorizationPolicy]| crate::plan::Plan {
        listeners: listeners(),
        ip_policy: compile(policies, 0),
        ..Default::default()
    };
    let old = plan_of(&[deny("a", "192.0.2.0/24"), deny("b", "198.51.100.0/24")]);
    let mut new = plan_of(&[deny("c", "203.0.113.0/24"), deny("b", "198.51.100.0/24")]);
    // Alone, c would take slot 1 and b slot 2 again; a's slot 1 is free.
    new.keep_ids_from(&old);
    assert_eq!(
        new.ip_policy.policies,
        BTreeMap::from([(1, "istio-system/c".into()), (2, "istio-system/b".into())])
    );
    let mut swapped = plan_of(&[deny("b", "198.51.100.0/24")]);
    swapped.keep_ids_from(&old);
    assert_eq!(
        swapped.ip_policy.policies,
        BTreeMap::from([(2, "istio-system/b".into())])
    );
    assert_eq!(
        deny_of(&swapped.ip_policy, 80),
        BTreeMap::from([("198.51.100.0/24".into(), 2)])
    );
}
