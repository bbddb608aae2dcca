//! Writing a plan into the maps, as a diff and in the order that keeps
//! every reader of them right while it happens:
//!
//! 1. nothing is written when the plan's hosts do not fit the kernel's
//!    table (`TooManyHosts`);
//! 2. `LISTENERS` before `PORTS`, so a port never points at a bound
//!    listener that is not there yet;
//! 3. per hash map with an array in front of it (`HOSTS` behind
//!    `HOST_BUCKETS`, `LOCAL_ADDRS` behind `LOCAL_ADDR_LIST`): the map's
//!    new and changed entries, then the front, then the map's removals
//!    ([`sync_around`]), so the front never names a key the map lacks;
//! 4. the AuthorizationPolicy tries around the listeners: their new and
//!    changed entries before `LISTENERS` and `PORTS` (so a port turned
//!    allow-listed finds its set, and a new allow block is in before an
//!    old one goes), their removals after (so a port's flags are off
//!    before its entries go);
//! 5. the policy tables before `LISTENERS`: a table is written to a
//!    `POLICY_TABLES` slot no listener points at, then the listeners are
//!    pointed at it, so the kernel never reads a table being written.
//!
//! Every write goes through [`MapStore`], so the order is unit-tested
//! against `fake::FakeMaps`.
use std::collections::{BTreeMap, BTreeSet};

use aya::Pod;
use gateway_common::{
    ALLOWED_PORT_WORDS, HostBucket, HostKey, HostValue, IPPROTO_TCP, LISTENER_POLICY_TABLE,
    ListenerKey, ListenerValue, LocalAddrList, LocalAddrValue, MAX_HOSTS, MAX_POLICY_ENTRIES,
    MAX_POLICY_TABLES, PolicyKey, PolicyValue, PortValue, Settings, map_names, policy_table_flags,
    policy_table_slot,
};

use super::{Changes, DataplaneError, MapStore, diff, fronts};
use crate::plan::{KernelHost, Plan, PolicyTables, PortTable, addr_key, ports_of};

/// What applying a plan remembers between plans, besides the maps.
#[derive(Debug, Default)]
pub struct Synced {
    /// The non-zero `PORTS` entries as last written: the array has 131072
    /// slots, and reading them all back for every diff would cost as many
    /// system calls.
    pub ports: BTreeMap<u32, PortValue>,
    /// `HOST_BUCKETS` or `LOCAL_ADDR_LIST` is new while the hash map
    /// behind it may have been adopted (a daemon of an earlier build
    /// pinned it): the next `apply` fills them from every host and
    /// address, not just from the changed ones.
    pub rebuild_fronts: bool,
    /// The policy tables written, by `POLICY_TABLES` slot, so a table the
    /// next plan keeps is not written again. Empty after a restart: the
    /// slots the pinned listeners point at are then left alone and the
    /// plan's tables go to the others.
    pub policy_tables: BTreeMap<u32, PortTable>,
}

/// Makes the maps equal to `plan`: inserts and updates what it has,
/// removes what it no longer has; entries that do not change are not
/// touched, so traffic to them never sees a gap.
pub fn apply(
    store: &mut impl MapStore,
    synced: &mut Synced,
    plan: &Plan,
    settings: Settings,
) -> Result<(), DataplaneError> {
    // Before any write: a plan the tables cannot hold changes nothing
    // (`compile::plan` refuses it first; this keeps the maps whole
    // whatever hands a plan in).
    let kernel_hosts = plan.kernel_hosts();
    if kernel_hosts.len() > MAX_HOSTS as usize {
        return Err(DataplaneError::TooManyHosts {
            count: kernel_hosts.len(),
            max: MAX_HOSTS as usize,
        });
    }
    let policy = [
        (map_names::POLICY_DENY, plan.ip_policy.deny_entries()),
        (map_names::POLICY_ALLOW, plan.ip_policy.allow_entries()),
    ];
    for (trie, entries) in &policy {
        if entries.len() > MAX_POLICY_ENTRIES as usize {
            return Err(DataplaneError::TooManyPolicyEntries {
                trie,
                count: entries.len(),
                max: MAX_POLICY_ENTRIES as usize,
            });
        }
    }
    let written = write(store, synced, plan, &kernel_hosts, &policy, settings);
    if written.is_err() {
        // A front written part way may lack keys its map keeps, which the
        // next diff (the rollback) would not see: rebuild the fronts then.
        synced.rebuild_fronts = true;
    }
    written
}

/// The writes of [`apply`], in order.
fn write(
    store: &mut impl MapStore,
    synced: &mut Synced,
    plan: &Plan,
    kernel_hosts: &[KernelHost],
    policy: &[(&'static str, BTreeMap<PolicyKey, PolicyValue>)],
    settings: Settings,
) -> Result<(), DataplaneError> {
    let mut current = Vec::new();
    for (trie, wanted) in policy {
        let held = store.read_policy(trie)?;
        for (key, value) in diff(&held, wanted).upserts {
            store.upsert_policy(trie, key, *value)?;
        }
        current.push((*trie, held));
    }
    let tables = place_policy_tables(store, synced, &plan.ip_policy.tables())?;
    let listeners: BTreeMap<ListenerKey, ListenerValue> = plan
        .listeners
        .iter()
        .map(|l| (l.key(), with_policy_table(l.key(), l.value(), &tables)))
        .collect();
    sync_around(store, map_names::LISTENERS, &listeners, |_, _| Ok(()))?;
    sync_ports(store, synced, ports_of(listeners.clone()))?;
    for ((trie, held), (_, wanted)) in current.iter().zip(policy) {
        for key in diff(held, wanted).removals {
            store.remove_policy(trie, key)?;
        }
    }
    let local: BTreeMap<[u8; 16], LocalAddrValue> = plan
        .local_addrs
        .iter()
        .map(|addr| (addr_key(*addr), LocalAddrValue { flags: 0 }))
        .collect();
    sync_local_addrs(store, synced.rebuild_fronts, &local)?;
    let hosts: BTreeMap<HostKey, HostValue> =
        kernel_hosts.iter().map(|h| (h.key(), h.value())).collect();
    sync_hosts(store, synced.rebuild_fronts, &hosts)?;
    synced.rebuild_fronts = false;
    if store.get_index::<Settings>(map_names::SETTINGS, 0).ok() != Some(settings) {
        store.set_index(map_names::SETTINGS, 0, settings)?;
    }
    Ok(())
}

/// Puts each of the plan's policy tables in a `POLICY_TABLES` slot: one
/// known to hold it already, else one no listener points at now (in
/// `LISTENERS`, or in `PORTS` as last written), written here, before any
/// listener is pointed at it. A slot left by the plan before last is
/// free: a program that read a listener pointing at it finished long ago.
/// Returns the slot per port; a port whose table finds none keeps the
/// tries, which hold all its blocks too.
fn place_policy_tables(
    store: &mut impl MapStore,
    synced: &mut Synced,
    tables: &PolicyTables,
) -> Result<BTreeMap<u16, u32>, DataplaneError> {
    let current: BTreeMap<ListenerKey, ListenerValue> = store.read_all(map_names::LISTENERS)?;
    let in_use: BTreeSet<u32> = current
        .values()
        .chain(synced.ports.values().map(|port| &port.wildcard))
        .filter(|value| value.flags & LISTENER_POLICY_TABLE != 0)
        .map(|value| policy_table_slot(value.flags))
        .collect();
    let mut placed: Vec<Option<u32>> = vec![None; tables.tables.len()];
    for (index, table) in tables.tables.iter().enumerate() {
        placed[index] = synced
            .policy_tables
            .iter()
            .find(|(slot, held)| *held == table && !placed.contains(&Some(**slot)))
            .map(|(slot, _)| *slot);
    }
    for (index, table) in tables.tables.iter().enumerate() {
        if placed[index].is_some() {
            continue;
        }
        let free = (0..MAX_POLICY_TABLES)
            .find(|slot| !in_use.contains(slot) && !placed.contains(&Some(*slot)));
        let Some(slot) = free else {
            log::warn!("no free policy table slot: its ports use the LPM tries");
            continue;
        };
        // Forgotten first: a write that fails part way leaves it unknown.
        synced.policy_tables.remove(&slot);
        store.write_policy_table(slot, &table.to_kernel())?;
        synced.policy_tables.insert(slot, table.clone());
        placed[index] = Some(slot);
    }
    Ok(tables
        .ports
        .iter()
        .filter_map(|(port, index)| Some((*port, placed[*index]?)))
        .collect())
}

/// `value` pointed at its port's policy table, if the port has one.
fn with_policy_table(
    key: ListenerKey,
    mut value: ListenerValue,
    tables: &BTreeMap<u16, u32>,
) -> ListenerValue {
    if key.protocol == IPPROTO_TCP {
        if let Some(slot) = tables.get(&key.port) {
            value.flags |= policy_table_flags(*slot);
        }
    }
    value
}

/// Makes the hash map `name` hold exactly `wanted`, writing only the
/// difference ([`diff`]), with `front` run between the new and changed
/// entries and the removals: it writes the array in front of the map from
/// the changes, so the front never names an entry the map lacks while the
/// front may overflow into it.
pub fn sync_around<S: MapStore, K: Pod + Ord, V: Pod + PartialEq>(
    store: &mut S,
    name: &'static str,
    wanted: &BTreeMap<K, V>,
    front: impl FnOnce(&mut S, &Changes<'_, K, V>) -> Result<(), DataplaneError>,
) -> Result<(), DataplaneError> {
    let current: BTreeMap<K, V> = store.read_all(name)?;
    let changes = diff(&current, wanted);
    for (key, value) in &changes.upserts {
        store.upsert(name, *key, **value)?;
    }
    front(store, &changes)?;
    for key in &changes.removals {
        store.remove::<K, V>(name, key)?;
    }
    Ok(())
}

/// Makes `HOSTS` hold exactly `wanted` and `HOST_BUCKETS` agree with it.
fn sync_hosts(
    store: &mut impl MapStore,
    rebuild: bool,
    wanted: &BTreeMap<HostKey, HostValue>,
) -> Result<(), DataplaneError> {
    sync_around(store, map_names::HOSTS, wanted, |store, changes| {
        // A bucket that cannot be read is an error, not an empty bucket:
        // rewriting it from the changes alone would drop its other keys.
        let writes = fronts::bucket_writes(changes, wanted, rebuild, |index| {
            store.get_index::<HostBucket>(map_names::HOST_BUCKETS, index)
        })?;
        for (index, bucket) in writes {
            store.set_index(map_names::HOST_BUCKETS, index, bucket)?;
        }
        Ok(())
    })
}

/// Makes `LOCAL_ADDRS` hold exactly `wanted` and `LOCAL_ADDR_LIST` agree
/// with it.
fn sync_local_addrs(
    store: &mut impl MapStore,
    rebuild: bool,
    wanted: &BTreeMap<[u8; 16], LocalAddrValue>,
) -> Result<(), DataplaneError> {
    sync_around(store, map_names::LOCAL_ADDRS, wanted, |store, changes| {
        let old = store.get_index::<LocalAddrList>(map_names::LOCAL_ADDR_LIST, 0)?;
        for value in fronts::list_writes(old, changes, wanted, rebuild) {
            store.set_index(map_names::LOCAL_ADDR_LIST, 0, value)?;
        }
        Ok(())
    })
}

/// Makes `PORTS` hold `wanted` (zero elsewhere), writing only the
/// difference from what was last written; removed entries are zeroed.
/// Runs after `LISTENERS` is synced, so a port never points at a bound
/// listener that is not there yet. `synced.ports` follows each write that
/// succeeds, so after a failure part way the next apply (the rollback)
/// diffs against what the array really holds.
fn sync_ports(
    store: &mut impl MapStore,
    synced: &mut Synced,
    wanted: BTreeMap<u32, PortValue>,
) -> Result<(), DataplaneError> {
    let current = synced.ports.clone();
    let changes = diff(&current, &wanted);
    for (index, value) in changes.upserts {
        store.set_index(map_names::PORTS, *index, *value)?;
        synced.ports.insert(*index, *value);
    }
    for index in changes.removals {
        store.set_index(map_names::PORTS, *index, PortValue::default())?;
        synced.ports.remove(index);
    }
    Ok(())
}

/// Makes the management allow-list bitmap equal to `words` (the non-zero
/// words, from `management::allowed_port_words`); words that do not
/// change are not written.
pub fn set_allowed_ports(
    store: &mut impl MapStore,
    words: &BTreeMap<u32, u64>,
) -> Result<(), DataplaneError> {
    for index in 0..ALLOWED_PORT_WORDS {
        let wanted = words.get(&index).copied().unwrap_or(0);
        if store.get_index::<u64>(map_names::ALLOWED_PORTS, index)? != wanted {
            store.set_index(map_names::ALLOWED_PORTS, index, wanted)?;
        }
    }
    Ok(())
}

#[cfg(test)]
#[path = "sync_tests.rs"]
mod tests;
