//! The write order of [`apply`], against the in-memory maps: each test
//! fails when the rule it names is broken.
use std::{collections::BTreeMap, net::IpAddr, path::PathBuf};

use gateway_common::{
    HostBucket, HostKey, HostValue, ListenerKey, ListenerValue, LocalAddrList, LocalAddrValue,
    PortValue, Settings, map_names,
};

use super::*;
use crate::{
    compile,
    dataplane::fake::{FakeMaps, Op},
    model::Instance,
    plan::Plan,
};

const SETTINGS: Settings = Settings {
    ephemeral_first: 32768,
    ephemeral_last: 60999,
};

/// The plan of one HTTP Gateway on `port` serving `hosts`, for a gateway
/// whose addresses are `addrs`.
fn plan(port: u16, hosts: &[&str], addrs: &[&str]) -> Plan {
    let hosts = hosts.join(", ");
    let yaml = format!(
        "apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: gw, namespace: istio-system}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
  - port: {{number: {port}, name: http, protocol: HTTP}}
    hosts: [{hosts}]
"
    );
    let config = crate::config::load_sources(&[(PathBuf::from("gw.yaml"), yaml)]);
    let instance = Instance {
        labels: [("istio".to_string(), "ingressgateway".to_string())].into(),
        namespace: "istio-system".to_string(),
        locality: Default::default(),
        trusted_proxies: 0,
    };
    let addrs: Vec<IpAddr> = addrs.iter().map(|a| a.parse().unwrap()).collect();
    compile::plan(&config.model, &instance, &addrs).expect("compiles")
}

/// `maps` with `plan` applied, and its writes forgotten.
fn applied(plan: &Plan) -> (FakeMaps, Synced) {
    let mut maps = FakeMaps::default();
    let mut synced = Synced::default();
    apply(&mut maps, &mut synced, plan, SETTINGS).expect("applies");
    maps.writes.clear();
    (maps, synced)
}

/// Everything the maps hold, zeroed array slots left out (an array slot
/// written back to zero is the same as one never written).
#[derive(Debug, PartialEq)]
struct Snapshot {
    listeners: BTreeMap<ListenerKey, ListenerValue>,
    ports: BTreeMap<u32, PortValue>,
    local_addrs: BTreeMap<[u8; 16], LocalAddrValue>,
    local_list: BTreeMap<u32, LocalAddrList>,
    hosts: BTreeMap<HostKey, HostValue>,
    buckets: BTreeMap<u32, HostBucket>,
    settings: BTreeMap<u32, Settings>,
}

fn nonzero<V: PartialEq + Default>(map: BTreeMap<u32, V>) -> BTreeMap<u32, V> {
    map.into_iter()
        .filter(|(_, v)| *v != V::default())
        .collect()
}

fn snapshot(maps: &FakeMaps) -> Snapshot {
    Snapshot {
        listeners: maps.contents(map_names::LISTENERS),
        ports: nonzero(maps.contents(map_names::PORTS)),
        local_addrs: maps.contents(map_names::LOCAL_ADDRS),
        local_list: nonzero(maps.contents(map_names::LOCAL_ADDR_LIST)),
        hosts: maps.contents(map_names::HOSTS),
        buckets: nonzero(maps.contents(map_names::HOST_BUCKETS)),
        settings: maps.contents(map_names::SETTINGS),
    }
}

#[test]
fn listeners_are_written_before_the_ports_that_point_at_them() {
    let (mut maps, mut synced) = applied(&plan(8080, &["a.example"], &["192.0.2.1"]));
    let next = plan(80, &["a.example"], &["192.0.2.1"]);
    apply(&mut maps, &mut synced, &next, SETTINGS).unwrap();
    let listener = maps
        .last(map_names::LISTENERS, Op::Upsert)
        .expect("a listener");
    let port = maps.first(map_names::PORTS, Op::Set(0)).expect("a port");
    assert!(listener < port, "{:?}", maps.writes);
    assert_eq!(
        snapshot(&maps).ports.len(),
        1,
        "the old port is zeroed, the new one set"
    );
}

#[test]
fn hosts_gain_keys_before_their_buckets_and_lose_them_after() {
    let (mut maps, mut synced) = applied(&plan(80, &["a.example"], &["192.0.2.1"]));
    apply(
        &mut maps,
        &mut synced,
        &plan(80, &["b.example"], &["192.0.2.1"]),
        SETTINGS,
    )
    .unwrap();
    let upsert = maps.last(map_names::HOSTS, Op::Upsert).expect("b added");
    let first_bucket = maps.first(map_names::HOST_BUCKETS, Op::Set(0));
    let last_bucket = maps.last(map_names::HOST_BUCKETS, Op::Set(0));
    let removal = maps.first(map_names::HOSTS, Op::Remove).expect("a removed");
    let (Some(first_bucket), Some(last_bucket)) = (first_bucket, last_bucket) else {
        panic!("no bucket written: {:?}", maps.writes);
    };
    assert!(
        upsert < first_bucket && last_bucket < removal,
        "{:?}",
        maps.writes
    );
}

#[test]
fn addresses_gain_keys_before_their_list_and_lose_them_after() {
    let (mut maps, mut synced) = applied(&plan(80, &["a.example"], &["192.0.2.1"]));
    apply(
        &mut maps,
        &mut synced,
        &plan(80, &["a.example"], &["192.0.2.2"]),
        SETTINGS,
    )
    .unwrap();
    let upsert = maps
        .last(map_names::LOCAL_ADDRS, Op::Upsert)
        .expect("added");
    let list = maps.writes_to(map_names::LOCAL_ADDR_LIST);
    assert_eq!(list.len(), 2, "one slot, emptied then refilled: {list:?}");
    let first_list = maps.first(map_names::LOCAL_ADDR_LIST, Op::Set(0)).unwrap();
    let last_list = maps.last(map_names::LOCAL_ADDR_LIST, Op::Set(0)).unwrap();
    let removal = maps
        .first(map_names::LOCAL_ADDRS, Op::Remove)
        .expect("removed");
    assert!(
        upsert < first_list && last_list < removal,
        "{:?}",
        maps.writes
    );
}

#[test]
fn a_plan_past_the_host_table_writes_nothing() {
    let (mut maps, mut synced) = applied(&plan(80, &["a.example"], &["192.0.2.1"]));
    let before = snapshot(&maps);
    // More listeners' hosts than the kernel holds (compile refuses such a
    // plan; whatever hands one in, the maps stay whole).
    let mut huge = plan(8080, &["b.example"], &["192.0.2.2"]);
    let http = huge.http[0].clone();
    huge.http = (0..=MAX_HOSTS)
        .map(|id| crate::plan::HttpListener {
            listener_id: id,
            ..http.clone()
        })
        .collect();
    let err = apply(&mut maps, &mut synced, &huge, SETTINGS).unwrap_err();
    assert!(
        matches!(err, DataplaneError::TooManyHosts { .. }),
        "{err:?}"
    );
    assert!(maps.writes.is_empty(), "{:?}", maps.writes);
    assert_eq!(snapshot(&maps), before);
}

#[test]
fn a_write_that_fails_anywhere_is_undone_by_applying_the_previous_plan() {
    let old = plan(8080, &["a.example", "c.example"], &["192.0.2.1"]);
    let new = plan(80, &["b.example", "c.example"], &["192.0.2.2"]);
    let (maps, _) = applied(&old);
    let before = snapshot(&maps);
    let writes = {
        let (mut maps, mut synced) = applied(&old);
        apply(&mut maps, &mut synced, &new, SETTINGS).unwrap();
        maps.writes.len()
    };
    assert!(writes > 6, "the change touches every map");
    for failing in 0..writes {
        let (mut maps, mut synced) = applied(&old);
        maps.fail_write = Some(failing);
        assert!(apply(&mut maps, &mut synced, &new, SETTINGS).is_err());
        maps.fail_write = None;
        apply(&mut maps, &mut synced, &old, SETTINGS).expect("rolls back");
        assert_eq!(
            snapshot(&maps),
            before,
            "write {failing} ({:?}) failed",
            maps.writes[failing]
        );
    }
}

#[test]
fn applying_the_same_plan_again_writes_nothing() {
    let old = plan(80, &["a.example"], &["192.0.2.1"]);
    let (mut maps, mut synced) = applied(&old);
    apply(&mut maps, &mut synced, &old, SETTINGS).unwrap();
    assert!(maps.writes.is_empty(), "{:?}", maps.writes);
}

/// `plan(80, ...)` with port 80 allow-listed to `allow` and denying `deny`.
fn with_policy(mut plan: Plan, allow: &[&str], deny: &[&str]) -> Plan {
    let entry = crate::plan::PortPolicy {
        deny: deny.iter().map(|b| (b.parse().unwrap(), 1)).collect(),
        allow: Some(allow.iter().map(|b| b.parse().unwrap()).collect()),
    };
    plan.ip_policy.ports.insert(80, entry);
    plan.ip_policy
        .policies
        .insert(1, "istio-system/deny".into());
    plan.set_policy_flags();
    plan
}

#[test]
fn policy_entries_are_written_before_the_port_flags_turn_on() {
    let before = plan(80, &["a.example"], &["192.0.2.1"]);
    let (mut maps, mut synced) = applied(&before);
    let after = with_policy(before, &["198.51.100.0/24"], &["203.0.113.0/24"]);
    apply(&mut maps, &mut synced, &after, SETTINGS).expect("applies");
    let flags = maps.first(map_names::LISTENERS, Op::Upsert).expect("flags");
    for trie in [map_names::POLICY_ALLOW, map_names::POLICY_DENY] {
        let entry = maps.first(trie, Op::Upsert).expect("entries");
        assert!(entry < flags, "{trie} entry written after the flags");
    }
    let value: BTreeMap<ListenerKey, ListenerValue> = maps.contents(map_names::LISTENERS);
    assert!(
        value
            .values()
            .all(|v| v.flags & gateway_common::LISTENER_POLICY != 0)
    );
}

#[test]
fn policy_entries_are_removed_after_the_port_flags_turn_off() {
    let base = plan(80, &["a.example"], &["192.0.2.1"]);
    let on = with_policy(base.clone(), &["198.51.100.0/24"], &["203.0.113.0/24"]);
    let (mut maps, mut synced) = applied(&on);
    apply(&mut maps, &mut synced, &base, SETTINGS).expect("applies");
    let flags = maps.last(map_names::LISTENERS, Op::Upsert).expect("flags");
    for trie in [map_names::POLICY_ALLOW, map_names::POLICY_DENY] {
        let removal = maps.first(trie, Op::Remove).expect("removal");
        assert!(removal > flags, "{trie} entry removed before the flags");
        let left: BTreeMap<PolicyKey, PolicyValue> = maps.contents(trie);
        assert!(left.is_empty());
    }
}

#[test]
fn a_new_allow_block_is_written_before_the_old_one_is_removed() {
    let base = plan(80, &["a.example"], &["192.0.2.1"]);
    let old = with_policy(base.clone(), &["198.51.100.0/24"], &[]);
    let new = with_policy(base, &["203.0.113.0/24"], &[]);
    let (mut maps, mut synced) = applied(&old);
    apply(&mut maps, &mut synced, &new, SETTINGS).expect("applies");
    assert_eq!(
        maps.writes_to(map_names::POLICY_ALLOW),
        vec![Op::Upsert, Op::Remove]
    );
}

/// The `POLICY_TABLES` slot each listener points at, by port.
fn table_slots(maps: &FakeMaps) -> BTreeMap<u16, Option<u32>> {
    let listeners: BTreeMap<ListenerKey, ListenerValue> = maps.contents(map_names::LISTENERS);
    listeners
        .iter()
        .map(|(key, value)| {
            let slot =
                (value.flags & LISTENER_POLICY_TABLE != 0).then(|| policy_table_slot(value.flags));
            (key.port, slot)
        })
        .collect()
}

#[test]
fn a_changed_ipv4_table_goes_to_a_free_slot_before_the_listener_points_at_it() {
    let base = plan(80, &["a.example"], &["192.0.2.1"]);
    let old = with_policy(base.clone(), &["198.51.100.0/24"], &[]);
    let new = with_policy(base, &["203.0.113.0/24"], &[]);
    let (mut maps, mut synced) = applied(&old);
    let old_slot = table_slots(&maps)[&80].expect("a table");
    apply(&mut maps, &mut synced, &new, SETTINGS).expect("applies");
    let new_slot = table_slots(&maps)[&80].expect("a table");
    assert_ne!(new_slot, old_slot, "the table being read was rewritten");
    assert_eq!(
        maps.writes_to(map_names::POLICY_TABLES),
        vec![Op::Set(new_slot)]
    );
    let table = maps
        .first(map_names::POLICY_TABLES, Op::Set(0))
        .expect("table");
    let pointed = maps
        .first(map_names::LISTENERS, Op::Upsert)
        .expect("listener");
    assert!(
        table < pointed,
        "the listener pointed at an unwritten table"
    );
    let kernel = &maps.policy_tables[&new_slot];
    let code = |src: [u8; 4]| gateway_common::v4_code(kernel, u32::from_be_bytes(src));
    assert_eq!(code([203, 0, 113, 9]), 0);
    assert_eq!(
        code([198, 51, 100, 9]),
        gateway_common::slot_code(gateway_common::POLICY_ALLOW_LIST)
    );
}

#[test]
fn an_unchanged_ipv4_table_is_not_written_again() {
    let base = plan(80, &["a.example"], &["192.0.2.1"]);
    let policy = with_policy(base, &["198.51.100.0/24"], &["203.0.113.0/24"]);
    let (mut maps, mut synced) = applied(&policy);
    apply(&mut maps, &mut synced, &policy, SETTINGS).expect("applies");
    assert!(maps.writes.is_empty(), "{:?}", maps.writes);
}

#[test]
fn after_a_restart_the_tables_the_pinned_listeners_read_are_left_alone() {
    let base = plan(80, &["a.example"], &["192.0.2.1"]);
    let old = with_policy(base.clone(), &["198.51.100.0/24"], &[]);
    let (mut maps, _) = applied(&old);
    let pinned = table_slots(&maps)[&80].expect("a table");
    // A new daemon knows no tables, and its first plan is another.
    let mut synced = Synced::default();
    let new = with_policy(base, &["203.0.113.0/24"], &[]);
    apply(&mut maps, &mut synced, &new, SETTINGS).expect("applies");
    assert!(
        !maps
            .writes_to(map_names::POLICY_TABLES)
            .contains(&Op::Set(pinned))
    );
    assert_ne!(table_slots(&maps)[&80], Some(pinned));
}
