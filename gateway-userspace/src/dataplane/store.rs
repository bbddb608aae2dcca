//! The seam between applying a plan and the kernel's maps: [`MapStore`]
//! is every map operation [`super::sync`] needs (read a hash map whole,
//! upsert, remove, read and set an array slot), implemented for the
//! loaded object by [`EbpfStore`] and in memory by `fake::FakeMaps`, so
//! the order of the writes is unit-tested without root (as aya's
//! `sys/fake.rs` does for its syscalls).
use std::collections::BTreeMap;

use aya::{
    Ebpf, Pod,
    maps::{
        Array, HashMap, MapData,
        lpm_trie::{Key, LpmTrie},
    },
};
use gateway_common::{PolicyData, PolicyKey, PolicyTable, PolicyValue, map_names};

use super::{DataplaneError, map};

/// The map operations a plan is written with; `name` is one of
/// `gateway_common::map_names`.
pub trait MapStore {
    /// Every entry of the hash map `name`.
    fn read_all<K: Pod + Ord, V: Pod>(
        &mut self,
        name: &'static str,
    ) -> Result<BTreeMap<K, V>, DataplaneError>;

    /// Inserts or overwrites `key` in the hash map `name`.
    fn upsert<K: Pod + Ord, V: Pod>(
        &mut self,
        name: &'static str,
        key: &K,
        value: V,
    ) -> Result<(), DataplaneError>;

    /// Removes `key` from the hash map `name` (of values `V`).
    fn remove<K: Pod + Ord, V: Pod>(
        &mut self,
        name: &'static str,
        key: &K,
    ) -> Result<(), DataplaneError>;

    /// Slot `index` of the array `name` (zeroed until written).
    fn get_index<V: Pod + Default>(
        &mut self,
        name: &'static str,
        index: u32,
    ) -> Result<V, DataplaneError>;

    /// Writes slot `index` of the array `name`.
    fn set_index<V: Pod>(
        &mut self,
        name: &'static str,
        index: u32,
        value: V,
    ) -> Result<(), DataplaneError>;

    /// Every entry of the policy LPM trie `name` (`POLICY_DENY`, `POLICY_ALLOW`).
    fn read_policy(
        &mut self,
        name: &'static str,
    ) -> Result<BTreeMap<PolicyKey, PolicyValue>, DataplaneError>;

    /// Inserts or overwrites `key` in the policy trie `name`.
    fn upsert_policy(
        &mut self,
        name: &'static str,
        key: &PolicyKey,
        value: PolicyValue,
    ) -> Result<(), DataplaneError>;

    /// Removes `key` from the policy trie `name`.
    fn remove_policy(&mut self, name: &'static str, key: &PolicyKey) -> Result<(), DataplaneError>;

    /// Writes `POLICY_TABLES` slot `slot` (by reference: the value is 512 KiB).
    fn write_policy_table(&mut self, slot: u32, table: &PolicyTable) -> Result<(), DataplaneError>;
}

/// The loaded object's maps, written with BPF syscalls through aya.
pub struct EbpfStore<'a>(pub &'a mut Ebpf);

fn error(name: &'static str) -> impl Fn(aya::maps::MapError) -> DataplaneError {
    move |source| DataplaneError::Map { name, source }
}

impl MapStore for EbpfStore<'_> {
    fn read_all<K: Pod + Ord, V: Pod>(
        &mut self,
        name: &'static str,
    ) -> Result<BTreeMap<K, V>, DataplaneError> {
        let table: HashMap<&mut MapData, K, V> = map(self.0, name)?;
        Ok(table.iter().filter_map(Result::ok).collect())
    }

    fn upsert<K: Pod + Ord, V: Pod>(
        &mut self,
        name: &'static str,
        key: &K,
        value: V,
    ) -> Result<(), DataplaneError> {
        let mut table: HashMap<&mut MapData, K, V> = map(self.0, name)?;
        table.insert(key, value, 0).map_err(error(name))
    }

    fn remove<K: Pod + Ord, V: Pod>(
        &mut self,
        name: &'static str,
        key: &K,
    ) -> Result<(), DataplaneError> {
        let mut table: HashMap<&mut MapData, K, V> = map(self.0, name)?;
        table.remove(key).map_err(error(name))
    }

    fn get_index<V: Pod + Default>(
        &mut self,
        name: &'static str,
        index: u32,
    ) -> Result<V, DataplaneError> {
        let array: Array<&mut MapData, V> = map(self.0, name)?;
        array.get(&index, 0).map_err(error(name))
    }

    fn set_index<V: Pod>(
        &mut self,
        name: &'static str,
        index: u32,
        value: V,
    ) -> Result<(), DataplaneError> {
        let mut array: Array<&mut MapData, V> = map(self.0, name)?;
        array.set(index, value, 0).map_err(error(name))
    }

    fn read_policy(
        &mut self,
        name: &'static str,
    ) -> Result<BTreeMap<PolicyKey, PolicyValue>, DataplaneError> {
        let trie: LpmTrie<&mut MapData, PolicyData, PolicyValue> = map(self.0, name)?;
        Ok(trie
            .iter()
            .filter_map(Result::ok)
            .map(|(key, value)| {
                let key = PolicyKey {
                    prefixlen: key.prefix_len(),
                    data: key.data(),
                };
                (key, value)
            })
            .collect())
    }

    fn upsert_policy(
        &mut self,
        name: &'static str,
        key: &PolicyKey,
        value: PolicyValue,
    ) -> Result<(), DataplaneError> {
        let mut trie: LpmTrie<&mut MapData, PolicyData, PolicyValue> = map(self.0, name)?;
        trie.insert(&Key::new(key.prefixlen, key.data), value, 0)
            .map_err(error(name))
    }

    fn remove_policy(&mut self, name: &'static str, key: &PolicyKey) -> Result<(), DataplaneError> {
        let mut trie: LpmTrie<&mut MapData, PolicyData, PolicyValue> = map(self.0, name)?;
        trie.remove(&Key::new(key.prefixlen, key.data))
            .map_err(error(name))
    }

    fn write_policy_table(&mut self, slot: u32, table: &PolicyTable) -> Result<(), DataplaneError> {
        let name = map_names::POLICY_TABLES;
        let mut array: Array<&mut MapData, PolicyTable> = map(self.0, name)?;
        array.set(slot, table, 0).map_err(error(name))
    }
}
